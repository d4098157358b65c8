/*
 * test_secretsrc.c - the control thread's secret-source bookkeeping (src/control/secretsrc.c):
 * one log line per change (loaded, changed, failed once per reason, fixed, removed), the
 * /ready detail and the /metrics samples, health of a source that cannot be listed, and that
 * none of it carries key material.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config.h"
#include "config/secret.h"
#include "control/secretsrc.h"
#include "core/log.h"
#include "tdir.h"
#include "test.h"

#define MARK "SUPERSECRETKEYBYTES"

static char tdir[256], logpath[300];
static int saved_err = -1;

/* Send the log (stderr) to a file; log_text() reads what was written since. */
static void log_to_file(void)
{
    snprintf(logpath, sizeof(logpath), "%s.log", tdir);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fflush(stderr);
    saved_err = dup(2);
    dup2(fd, 2);
    close(fd);
}

static void log_restore(void)
{
    fflush(stderr);
    dup2(saved_err, 2);
    close(saved_err);
    unlink(logpath);
}

static char logbuf[65536];

static const char *log_text(void)
{
    FILE *f = fopen(logpath, "r");
    size_t n = f ? fread(logbuf, 1, sizeof(logbuf) - 1, f) : 0;
    if (f)
        fclose(f);
    logbuf[n] = '\0';
    return logbuf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static char *metrics(void)
{
    char *p = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&p, &n);
    rv_secretsrc_prometheus(f);
    fclose(f);
    return p;
}

int main(void)
{
    tdir_new("secretsrc");
    rv_log_level = RV_LOG_INFO;
    log_to_file();

    rv_secret_src_t srcs[2] = { { .type = RV_SECRET_SRC_DIRECTORY }, { .type = RV_SECRET_SRC_DIRECTORY } };
    char d0[300], d1[300];
    snprintf(d0, sizeof(d0), "%s/a", tdir);
    snprintf(d1, sizeof(d1), "%s/missing", tdir);
    srcs[0].directory = d0;
    srcs[1].directory = d1;
    rv_settings_t s = { .secret_srcs = srcs, .nsecret_srcs = 2 };
    rv_secrets_t *t = rv_secrets_new();

    char detail[1024] = "";
    rv_secretsrc_configure(&s);
    CHECK(rv_secretsrc_ready_detail(detail, sizeof(detail)) && detail[0] == '\0', "nothing reported before a scan");
    char *m = metrics();
    CHECK(m && m[0] == '\0', "no samples before a scan");
    free(m);

    tdir_put_atomic("a/ns/good.yaml", "metadata: {name: good}\ntls: {certChain: c, privateKey: " MARK "}\n");
    tdir_put_atomic("a/ns/bad.yaml", "metadata: {name: bad}\ntls: {privateKey: " MARK "}\n");
    CHECK_INT(rv_secretsrc_scan_dirs(t, &s, false), 1, "first scan changes");
    const char *l = log_text();
    CHECK(count(l, "secret ns/good loaded (version") == 1, "loaded logged");
    CHECK(count(l, "secret ns/bad cannot be used: ") == 1 && strstr(l, "a/ns/bad.yaml"), "failure logged with file");
    CHECK(!strstr(l, MARK), "no key material in the log");

    CHECK(rv_secretsrc_ready_detail(detail, sizeof(detail)), "healthy");
    CHECK(strstr(detail, "healthy (1 secrets, 1 failed to decode)") != NULL, "/ready detail counts");
    CHECK(strstr(detail, "missing: healthy (0 secrets)") != NULL, "a missing directory is healthy and empty");
    m = metrics();
    CHECK(m && strstr(m, "rivet_secret_source_secrets{source=\"directory\",index=\"0\",state=\"ok\"} 1\n") &&
              strstr(m, "rivet_secret_source_secrets{source=\"directory\",index=\"0\",state=\"failed\"} 1\n") &&
              strstr(m, "rivet_secret_source_healthy{source=\"directory\",index=\"1\",location=\""),
          "metrics samples");
    CHECK(m && count(m, "# TYPE rivet_secret_source_healthy gauge") == 1 &&
              count(m, "# TYPE rivet_secret_source_secrets gauge") == 1,
          "one TYPE line per family");
    free(m);

    /* nothing changed: nothing logged; forced re-read: nothing logged either */
    size_t before = strlen(log_text());
    CHECK_INT(rv_secretsrc_scan_dirs(t, &s, false), 0, "rescan: no change");
    CHECK_INT(rv_secretsrc_scan_dirs(t, &s, true), 0, "forced rescan: no change");
    CHECK_INT(strlen(log_text()), before, "no log line without a change");

    /* another change elsewhere: the failure is not logged again */
    tdir_put_atomic("a/ns/other.yaml", "metadata: {name: other}\ntls: {rootCa: ca}\n");
    CHECK_INT(rv_secretsrc_scan_dirs(t, &s, false), 1, "new secret: change");
    l = log_text();
    CHECK(count(l, "secret ns/bad cannot be used") == 1, "failure logged once per reason");
    CHECK(count(l, "secret ns/other loaded") == 1, "new secret logged");

    /* a different reason is logged; rotation, fix and removal each once */
    tdir_put_atomic("a/ns/bad.yaml", "metadata: {name: bad}\ntls: {certChain: c}\n");
    tdir_put_atomic("a/ns/good.yaml", "metadata: {name: good}\ntls: {certChain: c2, privateKey: k2}\n");
    CHECK_INT(rv_secretsrc_scan_dirs(t, &s, false), 1, "changes");
    l = log_text();
    CHECK(count(l, "secret ns/bad cannot be used") == 2, "new reason logged");
    CHECK(count(l, "secret ns/good changed (version") == 1, "rotation logged");
    tdir_put_atomic("a/ns/bad.yaml", "metadata: {name: bad}\ntls: {rootCa: x}\n");
    char p[400];
    snprintf(p, sizeof(p), "%s/a/ns/other.yaml", tdir);
    unlink(p);
    CHECK_INT(rv_secretsrc_scan_dirs(t, &s, false), 1, "fix and removal");
    l = log_text();
    CHECK(count(l, "secret ns/bad fixed (version") == 1, "fix logged");
    CHECK(count(l, "secret ns/other removed from source 0") == 1, "removal logged");
    rv_secretsrc_ready_detail((detail[0] = '\0', detail), sizeof(detail));
    CHECK(strstr(detail, "healthy (2 secrets)") != NULL, "counts follow");

    /* a source reported unhealthy turns /ready's answer */
    rv_secretsrc_health(1, false, "secrets directory %s: unhealthy: test", d1);
    detail[0] = '\0';
    CHECK(!rv_secretsrc_ready_detail(detail, sizeof(detail)) && strstr(detail, "unhealthy: test"), "unhealthy");
    m = metrics();
    CHECK(m && strstr(m, "index=\"1\",location=\"") && strstr(m, "missing\"} 0\n"), "healthy gauge 0");
    free(m);
    /* a tiny detail buffer stays terminated */
    char small[16];
    small[0] = '\0';
    rv_secretsrc_ready_detail(small, sizeof(small));
    CHECK(strlen(small) < sizeof(small), "detail truncated safely");

    rv_secretsrc_configure(NULL);
    m = metrics();
    CHECK(m && m[0] == '\0', "configure(NULL) forgets every source");
    free(m);
    rv_secrets_free(t);
    log_restore();
    tdir_remove();
    TEST_DONE();
}
