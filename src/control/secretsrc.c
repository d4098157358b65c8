/*
 * secretsrc.c - secret sources on the control thread: directory scans, per-source health for
 * /ready and /metrics, and one log line per secret change (see secretsrc.h).
 *
 * What a source held at its last report is kept as (ns/name, version, reason) so a change is
 * logged once: a secret that failed to decode is logged with its file and reason when it
 * first fails and again only when the reason changes; a loaded or rotated one with its new
 * version, which is also how a rotation can be observed from outside.
 */
#include "control/secretsrc.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "proxy/stats.h"

typedef struct known_s {
    char *key;                  /* "ns/name" */
    uint64_t version;           /* 0 when it failed */
    char *reason;               /* why it failed, or NULL */
} known_t;

typedef struct sstate_s {
    bool used;
    int type;                   /* enum rv_secret_src_type */
    char label[256];            /* directory path or Vault address, for messages and metrics */
    int health;                 /* -1 not reported yet, 0 unhealthy, 1 healthy */
    char detail[384];
    size_t nok, nbad;
    known_t *known;             /* sorted by key; control thread only */
    size_t nknown;
} sstate_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;   /* guards all but known */
static sstate_t st[RV_SECRETS_MAX_SOURCES];

static void known_free(known_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(k[i].key);
        free(k[i].reason);
    }
    free(k);
}

void rv_secretsrc_configure(const rv_settings_t *s)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < RV_SECRETS_MAX_SOURCES; i++) {
        known_free(st[i].known, st[i].nknown);
        memset(&st[i], 0, sizeof(st[i]));
        st[i].health = -1;
    }
    for (uint32_t i = 0; s && i < s->nsecret_srcs && i < RV_SECRETS_MAX_SOURCES; i++) {
        const rv_secret_src_t *src = &s->secret_srcs[i];
        st[i].used = true;
        st[i].type = src->type;
        if (src->type == RV_SECRET_SRC_DIRECTORY)
            snprintf(st[i].label, sizeof(st[i].label), "%s", src->directory);
        else
            snprintf(st[i].label, sizeof(st[i].label), "%s",
                     src->vault.address ? src->vault.address : "(VAULT_ADDR)");
    }
    pthread_mutex_unlock(&mu);
}

void rv_secretsrc_health(int src, bool healthy, const char *fmt, ...)
{
    if (src < 0 || src >= RV_SECRETS_MAX_SOURCES)
        return;
    va_list ap;
    pthread_mutex_lock(&mu);
    st[src].health = healthy ? 1 : 0;
    va_start(ap, fmt);
    vsnprintf(st[src].detail, sizeof(st[src].detail), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&mu);
}

static int cmp_known(const void *a, const void *b)
{
    return strcmp(((const known_t *)a)->key, ((const known_t *)b)->key);
}

static char *key_of(const char *ns, const char *name)
{
    size_t n = strlen(ns) + strlen(name) + 2;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s/%s", ns, name);
    return k;
}

void rv_secretsrc_changed(const rv_secrets_t *t, int src)
{
    if (src < 0 || src >= RV_SECRETS_MAX_SOURCES)
        return;
    sstate_t *s = &st[src];
    const rv_secret_t *const *good;
    const rv_secret_bad_t *bad;
    size_t ng = rv_secrets_list(t, src, &good), nb = rv_secrets_bad(t, src, &bad);
    known_t *nk = calloc(ng + nb + 1, sizeof(*nk));
    size_t n = 0;
    if (!nk)
        goto oom;
    for (size_t i = 0; i < ng; i++, n++) {
        nk[n].version = good[i]->version;
        if (!(nk[n].key = key_of(good[i]->ns, good[i]->name)))
            goto oom;
    }
    for (size_t i = 0; i < nb; i++, n++) {
        nk[n].key = key_of(bad[i].ns, bad[i].name);
        nk[n].reason = strdup(bad[i].reason ? bad[i].reason : "unknown reason");
        if (!nk[n].key || !nk[n].reason)
            goto oom;
    }
    qsort(nk, n, sizeof(*nk), cmp_known);
    /* merge the two sorted lists */
    size_t i = 0, j = 0;
    while (i < n || j < s->nknown) {
        int c = i == n ? 1 : j == s->nknown ? -1 : strcmp(nk[i].key, s->known[j].key);
        if (c > 0) {
            rv_log_info("secret %s removed from source %d (%s)", s->known[j].key, src, s->label);
            j++;
            continue;
        }
        const known_t *o = c == 0 ? &s->known[j] : NULL;
        const known_t *k = &nk[i];
        if (k->reason) {
            if (!o || !o->reason || strcmp(o->reason, k->reason) != 0)
                rv_log_error("secret %s cannot be used: %s", k->key, k->reason);
        } else if (!o || o->version != k->version) {
            rv_log_info("secret %s %s (version %llu, source %d: %s)", k->key, !o ? "loaded" : o->reason ? "fixed" :
                        "changed", (unsigned long long)k->version, src, s->label);
        }
        i++;
        if (c == 0)
            j++;
    }
    known_free(s->known, s->nknown);
    s->known = nk;
    s->nknown = n;
    pthread_mutex_lock(&mu);
    s->nok = ng;
    s->nbad = nb;
    pthread_mutex_unlock(&mu);
    return;
oom:
    known_free(nk, n + 1);
    rv_log_error("secrets: out of memory logging the changes of source %d", src);
}

int rv_secretsrc_scan_dirs(rv_secrets_t *t, const rv_settings_t *s, bool force)
{
    int any = 0;
    for (uint32_t i = 0; i < s->nsecret_srcs && i < RV_SECRETS_MAX_SOURCES; i++) {
        const rv_secret_src_t *src = &s->secret_srcs[i];
        if (src->type != RV_SECRET_SRC_DIRECTORY)
            continue;
        if (force)
            rv_secrets_forget_files(t, (int)i);
        int rc = rv_secrets_scan_dir(t, (int)i, src->directory);
        if (rc == RV_ENOMEM)
            return rc;
        if (rc < 0) {
            int e = errno;
            rv_secretsrc_health((int)i, false, "secrets directory %s: unhealthy: cannot be listed (%s); serving the "
                                "secrets read before", src->directory, strerror(e));
            continue;
        }
        if (rc == 1) {
            any = 1;
            rv_secretsrc_changed(t, (int)i);
        }
        size_t nok, nbad;
        pthread_mutex_lock(&mu);
        nok = st[i].nok;
        nbad = st[i].nbad;
        pthread_mutex_unlock(&mu);
        char failed[64] = "";
        if (nbad)
            snprintf(failed, sizeof(failed), ", %zu failed to decode", nbad);
        rv_secretsrc_health((int)i, true, "secrets directory %s: healthy (%zu secrets%s)", src->directory, nok,
                            failed);
    }
    return any;
}

bool rv_secretsrc_ready_detail(char *detail, size_t n)
{
    bool ok = true;
    size_t used = detail ? strlen(detail) : 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < RV_SECRETS_MAX_SOURCES; i++) {
        if (!st[i].used || st[i].health < 0)
            continue;
        if (st[i].health == 0)
            ok = false;
        if (detail && used + 1 < n) {
            int w = snprintf(detail + used, n - used, "%s%s", used ? "\n" : "", st[i].detail);
            if (w > 0)
                used = used + (size_t)w < n ? used + (size_t)w : n - 1;
        }
    }
    pthread_mutex_unlock(&mu);
    return ok;
}

void rv_secretsrc_prometheus(FILE *f)
{
    sstate_t copy[RV_SECRETS_MAX_SOURCES];
    bool any = false;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < RV_SECRETS_MAX_SOURCES; i++) {
        copy[i] = st[i];
        copy[i].known = NULL;
        any |= st[i].used && st[i].health >= 0;
    }
    pthread_mutex_unlock(&mu);
    if (!any)
        return;
    /* one family at a time: samples of a family must be contiguous */
    fputs("# HELP rivet_secret_source_healthy Whether the secret source's last read succeeded (1) or not (0).\n"
          "# TYPE rivet_secret_source_healthy gauge\n", f);
    for (int i = 0; i < RV_SECRETS_MAX_SOURCES; i++) {
        if (!copy[i].used || copy[i].health < 0)
            continue;
        fprintf(f, "rivet_secret_source_healthy{source=\"%s\",index=\"%d\",location=\"",
                copy[i].type == RV_SECRET_SRC_VAULT ? "vault" : "directory", i);
        rv_prom_label(f, copy[i].label, strlen(copy[i].label));
        fprintf(f, "\"} %d\n", copy[i].health);
    }
    fputs("# HELP rivet_secret_source_secrets Secrets a source holds: decoded (ok) or failing to decode (failed).\n"
          "# TYPE rivet_secret_source_secrets gauge\n", f);
    for (int i = 0; i < RV_SECRETS_MAX_SOURCES; i++) {
        if (!copy[i].used || copy[i].health < 0)
            continue;
        const char *kind = copy[i].type == RV_SECRET_SRC_VAULT ? "vault" : "directory";
        fprintf(f, "rivet_secret_source_secrets{source=\"%s\",index=\"%d\",state=\"ok\"} %zu\n", kind, i, copy[i].nok);
        fprintf(f, "rivet_secret_source_secrets{source=\"%s\",index=\"%d\",state=\"failed\"} %zu\n", kind, i,
                copy[i].nbad);
    }
}
