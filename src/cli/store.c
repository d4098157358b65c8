/*
 * store.c - what apply, get and delete share (cli.h): flag parsing, choosing and opening the
 * store (Consul KV in Gloo's layout, or the config directory), reading and compare-and-set
 * writes in either, and reading a whole file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/vaultstore.h"
#include "config/secret.h"
#include "control/consul.h"
#include "control/kvsource.h"
#include "core/err.h"

/* ---- shared: flags and store ------------------------------------------------------------- */

const char *cli_flag(int argc, char **argv, int *i, const char *name, const char *sname, bool *missing)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (sname && !strcmp(a, sname)) {
        if (*i + 1 >= argc) {
            *missing = true;
            return NULL;
        }
        return argv[++*i];
    }
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

const char cli_store_help[] =
    "store (default: the Settings `rivet run` reads from --dir, else Consul KV when --consul):\n"
    "  --dir DIR                 Gloo bootstrap directory (DIR/<NS>/default.yaml picks the source:\n"
    "                            directoryConfigSource or consulKvSource), else DIR is the config dir\n"
    "  --settings-namespace NS   folder of the Settings file (default " RV_DEFAULT_NAMESPACE ")\n"
    "  --consul ADDR             Consul KV at ADDR (\"\" = CONSUL_HTTP_ADDR or 127.0.0.1:8500)\n"
    "  --consul-root-key KEY     root key (default: Settings consulKvSource.rootKey, else gloo)\n"
    "  --consul-allow-stale      ?stale reads\n"
    "  CONSUL_HTTP_TOKEN(_FILE), CONSUL_CACERT, CONSUL_HTTP_SSL ... are honoured as by consul itself\n";

int cli_store_flag(int argc, char **argv, int *i, cli_store_opts_t *o, const char *cmd)
{
    bool missing = false;
    const char *v;
    if ((v = cli_flag(argc, argv, i, "--dir", NULL, &missing))) {
        o->dir = v;
    } else if ((v = cli_flag(argc, argv, i, "--settings-namespace", NULL, &missing))) {
        o->settings_ns = v;
    } else if ((v = cli_flag(argc, argv, i, "--consul-root-key", NULL, &missing))) {
        o->root_key = v;
    } else if ((v = cli_flag(argc, argv, i, "--consul", NULL, &missing))) {
        o->consul = v;
        o->consul_set = true;
    } else if (!strcmp(argv[*i], "--consul-allow-stale")) {
        o->stale = true;
    } else {
        if (missing) {
            fprintf(stderr, "rivet %s: %s needs a value\n", cmd, argv[*i]);
            return -1;
        }
        return 0;
    }
    return 1;
}

int cli_store_open(cli_store_t *cs, const cli_store_opts_t *o, const char *cmd)
{
    char err[1024];
    memset(cs, 0, sizeof(*cs));
    if (!o->dir && !o->consul_set) {
        fprintf(stderr, "rivet %s: no store: give --dir DIR or --consul ADDR\n", cmd);
        return 2;
    }
    if (o->consul_set || o->root_key || o->stale)
        rv_settings_consul_override(o->consul && o->consul[0] ? o->consul : NULL, o->root_key, o->stale);
    if (rv_settings_load(o->dir, o->settings_ns ? o->settings_ns : RV_DEFAULT_NAMESPACE, &cs->s, err, sizeof(err)) !=
        0) {
        fprintf(stderr, "rivet %s: %s\n", cmd, err);
        return 2;
    }
    cs->kv = cs->s.consul_kv;
    if (!cs->kv)
        return 0;
    cs->root = cs->s.consul_root_key ? cs->s.consul_root_key : RV_CONSUL_DEFAULT_ROOT;
    rv_consul_cfg_t cc = { .insecure_skip_verify = cs->s.consul_insecure_skip_verify, .stale = cs->s.consul_kv_stale };
    const char *src[] = { cs->s.consul_address, cs->s.consul_datacenter, cs->s.consul_token, cs->s.consul_basic_auth,
                          cs->s.consul_ca_file, cs->s.consul_ca_path, cs->s.consul_cert_file, cs->s.consul_key_file };
    char **dst[] = { &cc.address, &cc.datacenter, &cc.token, &cc.basic_auth,
                     &cc.ca_file, &cc.ca_path, &cc.cert_file, &cc.key_file };
    for (size_t i = 0; i < RV_ARRAY_LEN(src); i++)
        if (src[i])
            *dst[i] = strdup(src[i]);
    int rc = rv_consul_cfg_from_env(&cc, err, sizeof(err));
    if (rc == 0)
        cs->consul = rv_consul_new(&cc);
    rv_consul_cfg_free(&cc);
    if (rc != 0 || !cs->consul) {
        fprintf(stderr, "rivet %s: consul: %s\n", cmd, rc ? err : "out of memory");
        rv_settings_free(&cs->s);
        return 2;
    }
    return 0;
}

void cli_store_close(cli_store_t *cs)
{
    rv_secrets_free(cs->secrets);
    cs->secrets = NULL;
    rv_consul_free(cs->consul);
    rv_settings_free(&cs->s);
}

/* "kv/<key>" percent-encoded outside [A-Za-z0-9-._~/], plus an optional query. malloc'd. */
static char *kv_url(const char *key, const char *query)
{
    size_t n = strlen(key) * 3 + (query ? strlen(query) : 0) + 8;
    char *p = malloc(n);
    if (!p)
        return NULL;
    size_t o = (size_t)snprintf(p, n, "kv/");
    for (const char *s = key; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                  strchr("-._~/", ch);
        o += (size_t)snprintf(p + o, n - o, ok ? "%c" : "%%%02X", ch);
    }
    if (query)
        snprintf(p + o, n - o, "%s", query);
    return p;
}

/* Shared with get.c/delete.c through cli_kv_*: read one key. 1 found, 0 absent, -1 error (printed). */
int cli_kv_read(cli_store_t *cs, const char *key, char **val, size_t *len, uint64_t *modify, const char *cmd)
{
    char *url = kv_url(key, NULL);
    rv_consul_resp_t r;
    int out = -1;
    *val = NULL;
    *len = 0;
    *modify = 0;
    if (!url)
        return -1;
    int rc = rv_consul_get(cs->consul, url, 0, 0, &r);
    free(url);
    if (rc == 0 && r.status == 404) {
        out = 0;
    } else if (rc == 0 && r.status == 200) {
        rv_kv_listing_t *l = NULL;
        char err[256];
        if (rv_kv_parse_listing(r.body, r.len, &l, err, sizeof(err)) == 0 && l->n == 1) {
            *val = (char *)l->pairs[0].value;
            l->pairs[0].value = NULL;
            *len = l->pairs[0].len;
            *modify = l->pairs[0].modify_index;
            out = 1;
        } else {
            fprintf(stderr, "rivet %s: unexpected answer from consul for %s\n", cmd, key);
        }
        rv_kv_listing_free(l);
    } else {
        fprintf(stderr, "rivet %s: consul: reading %s: %s\n", cmd, key, r.err[0] ? r.err : rv_strerror(rc));
    }
    rv_consul_resp_free(&r);
    return out;
}

/* PUT (write) or DELETE key with ?cas=index. 1 done, 0 CAS refused (concurrent change), -1 error. */
int cli_kv_cas(cli_store_t *cs, const char *key, const char *val, size_t len, uint64_t index, bool del,
               const char *cmd)
{
    char q[40];
    snprintf(q, sizeof(q), "?cas=%llu", (unsigned long long)index);
    char *url = kv_url(key, q);
    rv_consul_resp_t r;
    if (!url)
        return -1;
    int rc = del ? rv_consul_delete(cs->consul, url, &r) : rv_consul_put(cs->consul, url, val, len, &r);
    free(url);
    int out = -1;
    if (rc == 0 && r.status == 200)
        out = r.body && !strncmp(r.body, "true", 4) ? 1 : 0;
    else
        fprintf(stderr, "rivet %s: consul: %s %s: %s\n", cmd, del ? "deleting" : "writing", key,
                r.err[0] ? r.err : rv_strerror(rc));
    rv_consul_resp_free(&r);
    return out;
}

int cli_store_load(cli_store_t *cs, rv_store_t **st, rv_snapshot_t **snap, struct rv_kv_listing_s **listing,
                   const char *cmd)
{
    *st = rv_store_new();
    *snap = NULL;
    *listing = NULL;
    if (!*st)
        goto oom;
    if (cs->kv) {
        char *url = kv_url(cs->root, "/?recurse");
        rv_consul_resp_t r;
        if (!url)
            goto oom;
        int rc = rv_consul_get(cs->consul, url, 0, 0, &r);
        free(url);
        char err[256] = "";
        if (rc == 0 && r.status == 404) {
            *listing = calloc(1, sizeof(rv_kv_listing_t));
        } else if (rc != 0 || r.status != 200 || rv_kv_parse_listing(r.body, r.len, listing, err, sizeof(err)) != 0) {
            fprintf(stderr, "rivet %s: consul: listing %s/: %s\n", cmd, cs->root,
                    err[0] ? err : r.err[0] ? r.err : rv_strerror(rc));
            rv_consul_resp_free(&r);
            return 2;
        }
        rv_consul_resp_free(&r);
        if (!*listing || rv_store_load_kv(*st, &cs->s, cs->root, (*listing)->pairs, (*listing)->n) < 0)
            goto oom;
    } else if (rv_store_scan_dir(*st, &cs->s) < 0) {
        fprintf(stderr, "rivet %s: cannot read config directory %s\n", cmd, cs->s.config_dir);
        return 2;
    }
    /* secretRefs resolve as in rivet run (directory sources; a failure shows in the statuses) */
    if (!cs->secrets && !(cs->secrets = rv_secrets_new()))
        goto oom;
    if (rv_secrets_scan_settings(cs->secrets, &cs->s) == RV_ENOMEM)
        goto oom;
    cli_vault_load_settings(&cs->s, cs->secrets, cmd);         /* and the Vault sources */
    rv_store_attach_secrets(*st, cs->secrets);
    if (rv_snapshot_build(*st, &cs->s, snap) != 0)
        goto oom;
    return 0;
oom:
    fprintf(stderr, "rivet %s: out of memory\n", cmd);
    return 2;
}

/* ---- directory store --------------------------------------------------------------------- */

/* <config>/<plural>/<ns>/<name>.yaml (or the .yml that exists). malloc'd. */
char *cli_dir_path(const cli_store_t *cs, int kind, const char *ns, const char *name)
{
    size_t n = strlen(cs->s.config_dir) + strlen(rv_kind_plural(kind)) + strlen(ns) + strlen(name) + 16;
    char *p = malloc(n);
    if (!p)
        return NULL;
    snprintf(p, n, "%s/%s/%s/%s.yml", cs->s.config_dir, rv_kind_plural(kind), ns, name);
    if (access(p, F_OK) != 0)
        snprintf(p, n, "%s/%s/%s/%s.yaml", cs->s.config_dir, rv_kind_plural(kind), ns, name);
    return p;
}

/* Whole file (NUL-terminated, at most CLI_MAX_INPUT bytes) or NULL when absent (*exists false),
 * too large (errno EFBIG) or unreadable. sb (may be NULL) gets its stat. */
char *cli_slurp(const char *path, size_t *len, bool *exists, struct stat *sb)
{
    FILE *f = fopen(path, "re");
    *exists = false;
    *len = 0;
    if (!f)
        return NULL;
    *exists = true;
    if (sb)
        fstat(fileno(f), sb);
    char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        if (*len + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 65536 + 1;
            if (cap > CLI_MAX_INPUT + 65537) {
                free(buf);
                fclose(f);
                errno = EFBIG;
                return NULL;
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + *len, 1, 65536, f);
        *len += r;
        if (r < 65536)
            break;
    }
    fclose(f);
    buf[*len] = '\0';
    return buf;
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return 0;
}

/*
 * Write val to path unless the file changed since (old, oldlen, oldexists) was read: temp file
 * in the same directory + fsync, then a last comparison and rename (or link for a new file,
 * which fails when someone created it meanwhile). 1 written, 0 concurrent change, -1 error.
 * del: unlink instead (same check).
 */
int cli_dir_cas(const char *path, const char *old, size_t oldlen, bool oldexists, const char *val, size_t len,
                bool del, const char *cmd)
{
    size_t cl;
    bool ex;
    char *cur = cli_slurp(path, &cl, &ex, NULL);
    if (ex != oldexists || (ex && (!cur || cl != oldlen || memcmp(cur, old, cl) != 0))) {
        free(cur);
        return 0;
    }
    free(cur);
    if (del) {
        if (unlink(path) != 0) {
            fprintf(stderr, "rivet %s: %s: %s\n", cmd, path, strerror(errno));
            return errno == ENOENT ? 0 : -1;
        }
        return 1;
    }
    if (mkdirs(path) != 0) {
        fprintf(stderr, "rivet %s: cannot create the directory of %s: %s\n", cmd, path, strerror(errno));
        return -1;
    }
    return cli_write_swap(path, old, oldlen, oldexists, val, len, false, cmd);
}

int cli_write_swap(const char *path, const char *old, size_t oldlen, bool oldexists, const char *val, size_t len,
                   bool secret, const char *cmd)
{
    size_t tn = strlen(path) + 40;
    char *tmp = malloc(tn);
    if (!tmp)
        return -1;
    const char *slash = strrchr(path, '/');
    snprintf(tmp, tn, "%.*s/.rivet-apply.%ld.tmp", (int)(slash - path), path, (long)getpid());
    int fd = secret ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600)
                    : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int out = -1;
    if (fd < 0 || write(fd, val, len) != (ssize_t)len || fsync(fd) != 0) {
        fprintf(stderr, "rivet %s: writing %s: %s\n", cmd, tmp, strerror(errno));
        goto done;
    }
    /* last check right before the switch: a change in between is reported, not overwritten */
    size_t cl;
    bool ex;
    char *cur = cli_slurp(path, &cl, &ex, NULL);
    bool same = ex == oldexists && (!ex || (cur && cl == oldlen && !memcmp(cur, old, cl)));
    if (cur && secret)
        OPENSSL_cleanse(cur, cl);
    free(cur);
    if (!same) {
        out = 0;
        goto done;
    }
    if (oldexists ? rename(tmp, path) != 0 : link(tmp, path) != 0) {
        if (errno == EEXIST) {
            out = 0;
            goto done;
        }
        fprintf(stderr, "rivet %s: writing %s: %s\n", cmd, path, strerror(errno));
        goto done;
    }
    out = 1;
done:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return out;
}

/* ---- apply --------------------------------------------------------------------------------- */

