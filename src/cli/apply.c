/*
 * apply.c - `rivet apply -f FILE|DIR|-`: validate every document with the strict decoder,
 * then write each resource to the configured store (Consul KV in Gloo's layout, or the config
 * directory) with compare-and-set, so a concurrent edit is reported rather than overwritten.
 * Also the store selection shared by apply, get and delete (cli.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "control/consul.h"
#include "control/kvsource.h"
#include "core/err.h"

#define APPLY_MAX_INPUT (16u << 20)

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

/* Whole file (NUL-terminated) or NULL when absent (*exists false) or unreadable. */
static char *slurp(const char *path, size_t *len, bool *exists, struct stat *sb)
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
            if (cap > APPLY_MAX_INPUT + 65537) {
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
    char *cur = slurp(path, &cl, &ex, NULL);
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
    size_t tn = strlen(path) + 32;
    char *tmp = malloc(tn);
    if (!tmp)
        return -1;
    const char *slash = strrchr(path, '/');
    snprintf(tmp, tn, "%.*s/.rivet-apply.%ld.tmp", (int)(slash - path), path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int out = -1;
    if (fd < 0 || write(fd, val, len) != (ssize_t)len || fsync(fd) != 0) {
        fprintf(stderr, "rivet %s: writing %s: %s\n", cmd, tmp, strerror(errno));
        goto done;
    }
    /* last check right before the switch: a change in between is reported, not overwritten */
    cur = slurp(path, &cl, &ex, NULL);
    bool same = ex == oldexists && (!ex || (cur && cl == oldlen && !memcmp(cur, old, cl)));
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

typedef struct doc_s {
    char *src;                  /* "file.yaml#2" for messages */
    char *text;
    size_t len;
    int kind;
    char *ns, *name;
    bool kube;
} doc_t;

typedef struct docs_s { doc_t *v; size_t n, cap; } docs_t;

static int add_doc(docs_t *d, const char *src, size_t idx, const char *p, size_t len)
{
    /* skip documents that hold only blanks and comments */
    bool empty = true;
    for (size_t i = 0; i < len && empty;) {
        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
            i++;
        if (i < len && p[i] != '\n' && p[i] != '#')
            empty = false;
        while (i < len && p[i] != '\n')
            i++;
        i++;
    }
    if (empty)
        return 0;
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 16;
        doc_t *nv = realloc(d->v, nc * sizeof(*nv));
        if (!nv)
            return RV_ENOMEM;
        d->v = nv;
        d->cap = nc;
    }
    doc_t *x = &d->v[d->n];
    memset(x, 0, sizeof(*x));
    size_t sn = strlen(src) + 24;
    x->src = malloc(sn);
    x->text = strndup(p, len);
    if (!x->src || !x->text) {
        free(x->src);
        free(x->text);
        return RV_ENOMEM;
    }
    snprintf(x->src, sn, idx ? "%s#%zu" : "%s", src, idx + 1);
    x->len = len;
    x->kind = -1;
    d->n++;
    return 0;
}

/* Split a multi-document stream on "---" lines ("..." ends a document). */
static int split_docs(docs_t *d, const char *src, const char *buf, size_t len)
{
    size_t start = 0, idx = 0, i = 0;
    bool multi = false;
    size_t first = d->n;
    while (i <= len) {
        size_t e = i;
        while (e < len && buf[e] != '\n')
            e++;
        size_t ll = e - i;
        bool sep = ll >= 3 && !strncmp(buf + i, "---", 3) && (ll == 3 || buf[i + 3] == ' ' || buf[i + 3] == '\t' ||
                                                                buf[i + 3] == '\r');
        bool end = ll >= 3 && !strncmp(buf + i, "...", 3) && (ll == 3 || buf[i + 3] == '\r');
        if (sep || end) {
            multi = true;
            if (add_doc(d, src, idx++, buf + start, i - start) != 0)
                return RV_ENOMEM;
            /* "--- {a: 1}": content after the marker starts the next document */
            start = sep && ll > 3 ? i + 4 : e + 1;
        }
        i = e + 1;
    }
    if (start < len && add_doc(d, src, idx, buf + start, len - start) != 0)
        return RV_ENOMEM;
    /* a single document keeps the bare file name in messages */
    if (!multi && d->n == first + 1) {
        char *p = strchr(d->v[first].src, '#');
        if (p && strrchr(src, '#') != p)
            *p = '\0';
    }
    return 0;
}

static bool input_name(const char *f)
{
    size_t n = strlen(f);
    return f[0] != '.' && ((n > 5 && !strcmp(f + n - 5, ".yaml")) || (n > 4 && !strcmp(f + n - 4, ".yml")) ||
                           (n > 5 && !strcmp(f + n - 5, ".json")));
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read -f input: a file, a directory (its *.yaml, *.yml, *.json, recursively, sorted) or "-". */
static int read_input(docs_t *d, const char *path)
{
    if (!strcmp(path, "-")) {
        char *buf = NULL;
        size_t len = 0, cap = 0;
        for (;;) {
            if (len + 65536 + 1 > cap) {
                cap = cap ? cap * 2 : 65537;
                if (cap > APPLY_MAX_INPUT * 2) {
                    fprintf(stderr, "rivet apply: standard input is larger than 16 MiB\n");
                    free(buf);
                    return -1;
                }
                char *nb = realloc(buf, cap);
                if (!nb) {
                    free(buf);
                    return -1;
                }
                buf = nb;
            }
            size_t r = fread(buf + len, 1, 65536, stdin);
            len += r;
            if (r == 0)
                break;
        }
        int rc = split_docs(d, "<stdin>", buf ? buf : "", len);
        free(buf);
        return rc ? -1 : 0;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "rivet apply: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(sb.st_mode)) {
        DIR *dh = opendir(path);
        if (!dh) {
            fprintf(stderr, "rivet apply: %s: %s\n", path, strerror(errno));
            return -1;
        }
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        int rc = 0;
        while ((de = readdir(dh))) {
            if (de->d_name[0] == '.')
                continue;
            size_t pl = strlen(path) + strlen(de->d_name) + 2;
            char *p = malloc(pl);
            if (!p)
                continue;
            snprintf(p, pl, "%s/%s", path, de->d_name);
            struct stat cs;
            if (stat(p, &cs) != 0 || (!S_ISDIR(cs.st_mode) && !input_name(de->d_name))) {
                free(p);
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 32;
                char **nn = realloc(names, cap * sizeof(*nn));
                if (!nn) {
                    free(p);
                    break;
                }
                names = nn;
            }
            names[n++] = p;
        }
        closedir(dh);
        if (n)
            qsort(names, n, sizeof(*names), cmpstr);
        for (size_t i = 0; i < n; i++) {
            if (rc == 0 && read_input(d, names[i]) != 0)
                rc = -1;
            free(names[i]);
        }
        free(names);
        return rc;
    }
    size_t len;
    bool ex;
    char *buf = slurp(path, &len, &ex, NULL);
    if (!buf) {
        fprintf(stderr, "rivet apply: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = split_docs(d, path, buf, len);
    free(buf);
    return rc ? -1 : 0;
}

static void apply_usage(FILE *f)
{
    fprintf(f,
            "usage: rivet apply -f FILE|DIR|- [-f ...] [--kind KIND] [-n NS] [store flags]\n"
            "\n"
            "Write Gloo Edge resources to the store rivet reads: Consul KV (keys\n"
            "<root>/<group>/<version>/<Kind>/<namespace>/<name>) or the config directory\n"
            "(<plural>/<namespace>/<name>.yaml). Both YAML forms are accepted (Kubernetes form with\n"
            "apiVersion/kind/spec, or Gloo's stored form), several documents per file (---). A\n"
            "stored-form document is recognised by its fields (virtualHost, bindPort/httpGateway,\n"
            "routes, destinations, an upstream type) unless --kind says. Every document is validated\n"
            "first with the same strict decoder `rivet run` uses: one invalid document and nothing is\n"
            "written. Writes are compare-and-set: a resource changed by someone else between the read\n"
            "and the write is reported as a conflict, not overwritten.\n"
            "\n"
            "flags:\n"
            "  -f, --filename PATH       file, directory (*.yaml *.yml *.json, recursively) or - (stdin)\n"
            "      --kind KIND           kind of every document (VirtualService, vs, upstream, ...)\n"
            "  -n, --namespace NS        namespace for documents without metadata.namespace (default\n"
            "                            " RV_DEFAULT_NAMESPACE "); a document naming another namespace is refused\n"
            "      --dry-run             validate and print what would be written, write nothing\n"
            "  -h, --help                this help\n"
            "%s"
            "\n"
            "exit status: 0 all written, 1 a document is invalid or a write conflicted/failed,\n"
            "2 usage error or the store is unusable\n",
            cli_store_help);
}

static void free_docs(docs_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].src);
        free(d->v[i].text);
        free(d->v[i].ns);
        free(d->v[i].name);
    }
    free(d->v);
}

static int apply_main(int argc, char **argv)
{
    cli_store_opts_t so = { 0 };
    const char *kind_s = NULL, *ns_flag = NULL;
    const char *files[64];
    size_t nfiles = 0;
    bool dry = false;
    docs_t d = { 0 };
    cli_store_t cs;
    bool opened = false;
    int rc = 2;

    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        int sf;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            apply_usage(stdout);
            return 0;
        } else if ((v = cli_flag(argc, argv, &i, "--filename", "-f", &missing))) {
            if (nfiles == RV_ARRAY_LEN(files)) {
                fprintf(stderr, "rivet apply: at most %zu -f flags\n", RV_ARRAY_LEN(files));
                return 2;
            }
            files[nfiles++] = v;
        } else if ((v = cli_flag(argc, argv, &i, "--kind", NULL, &missing))) {
            kind_s = v;
        } else if ((v = cli_flag(argc, argv, &i, "--namespace", "-n", &missing))) {
            ns_flag = v;
        } else if (!strcmp(argv[i], "--dry-run")) {
            dry = true;
        } else if ((sf = cli_store_flag(argc, argv, &i, &so, "apply")) != 0) {
            if (sf < 0)
                return 2;
        } else {
            if (missing)
                fprintf(stderr, "rivet apply: %s needs a value\n", argv[i]);
            else
                fprintf(stderr, "rivet apply: unknown flag '%s' (see rivet apply --help)\n", argv[i]);
            return 2;
        }
    }
    if (!nfiles) {
        fprintf(stderr, "rivet apply: -f FILE|DIR|- is required (see rivet apply --help)\n");
        return 2;
    }
    int forced = -1;
    if (kind_s && (forced = rv_kind_parse(kind_s)) < 0) {
        fprintf(stderr, "rivet apply: unknown kind '%s' (Gateway/gw, VirtualService/vs, RouteTable/rt, "
                        "Upstream/us, UpstreamGroup/ug)\n", kind_s);
        return 2;
    }
    for (size_t i = 0; i < nfiles; i++)
        if (read_input(&d, files[i]) != 0)
            goto out;
    if (!d.n) {
        fprintf(stderr, "rivet apply: no document found\n");
        goto out;
    }

    /* 1. validate everything; write nothing if one document fails */
    size_t bad = 0;
    for (size_t i = 0; i < d.n; i++) {
        doc_t *x = &d.v[i];
        char err[1200];
        x->kind = forced >= 0 ? forced : rv_kind_detect(x->text, x->len, err, sizeof(err));
        if (x->kind < 0) {
            fprintf(stderr, "rivet apply: %s: %s\n", x->src, err);
            bad++;
            continue;
        }
        int r = rv_resource_check(x->kind, x->src, x->text, x->len, ns_flag, &x->ns, &x->name, &x->kube, err,
                                  sizeof(err));
        if (r != 0) {
            fprintf(stderr, "rivet apply: %s %s invalid: %s\n", rv_kind_name(x->kind), x->src,
                    r == RV_ENOMEM ? "out of memory" : err);
            bad++;
            continue;
        }
        if (ns_flag && strcmp(ns_flag, x->ns) != 0) {
            fprintf(stderr, "rivet apply: %s: metadata.namespace '%s' does not match -n %s\n", x->src, x->ns, ns_flag);
            bad++;
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (d.v[j].kind == x->kind && d.v[j].ns && !strcmp(d.v[j].ns, x->ns) && !strcmp(d.v[j].name, x->name)) {
                fprintf(stderr, "rivet apply: %s: %s %s/%s is also defined by %s\n", x->src, rv_kind_name(x->kind),
                        x->ns, x->name, d.v[j].src);
                bad++;
                break;
            }
    }
    if (bad) {
        fprintf(stderr, "rivet apply: %zu of %zu document%s invalid; nothing written\n", bad, d.n, d.n > 1 ? "s" : "");
        rc = 1;
        goto out;
    }

    /* 2. write each with compare-and-set */
    if ((rc = cli_store_open(&cs, &so, "apply")) != 0)
        goto out;
    opened = true;
    size_t failed = 0;
    for (size_t i = 0; i < d.n; i++) {
        doc_t *x = &d.v[i];
        const char *what = rv_kind_name(x->kind);
        char *val = x->text;
        size_t vlen = x->len;
        char *conv = NULL;
        char key[2048];
        if (cs.kv) {
            /* Gloo keeps the stored form, with metadata.namespace: convert what differs */
            bool has_ns = strstr(x->text, "namespace:") || strstr(x->text, "\"namespace\"");
            if (x->kube || !has_ns) {
                conv = rv_resource_stored_json(x->kind, x->text, x->len, x->ns, x->name, &vlen);
                if (!conv) {
                    fprintf(stderr, "rivet apply: out of memory\n");
                    failed++;
                    continue;
                }
                val = conv;
            }
            if (rv_kv_key(key, sizeof(key), cs.root, x->kind, x->ns, x->name) != 0) {
                fprintf(stderr, "rivet apply: %s: key too long\n", x->src);
                failed++;
                free(conv);
                continue;
            }
            if (dry) {
                printf("%s %s/%s -> consul key %s (dry run)\n", what, x->ns, x->name, key);
                free(conv);
                continue;
            }
            char *old;
            size_t olen;
            uint64_t mi;
            int ex = cli_kv_read(&cs, key, &old, &olen, &mi, "apply");
            int w = ex < 0 ? -1 : (ex && olen == vlen && !memcmp(old, val, vlen)) ? 2
                                                                                   : cli_kv_cas(&cs, key, val, vlen,
                                                                                                ex ? mi : 0, false,
                                                                                                "apply");
            free(old);
            if (w == 2)
                printf("%s %s/%s unchanged\n", what, x->ns, x->name);
            else if (w == 1)
                printf("%s %s/%s %s\n", what, x->ns, x->name, ex ? "configured" : "created");
            else if (w == 0)
                fprintf(stderr, "rivet apply: conflict: %s %s/%s (%s) was changed by someone else since it was "
                        "read; not overwritten (read it again and re-apply)\n", what, x->ns, x->name, key);
            if (w != 1 && w != 2)
                failed++;
        } else {
            char *path = cli_dir_path(&cs, x->kind, x->ns, x->name);
            if (!path) {
                failed++;
                continue;
            }
            if (dry) {
                printf("%s %s/%s -> %s (dry run)\n", what, x->ns, x->name, path);
                free(path);
                continue;
            }
            size_t olen;
            bool ex;
            char *old = slurp(path, &olen, &ex, NULL);
            int w;
            if (ex && !old) {
                fprintf(stderr, "rivet apply: %s: %s\n", path, strerror(errno));
                w = -1;
            } else if (ex && olen == vlen && !memcmp(old, val, vlen)) {
                w = 2;
            } else {
                w = cli_dir_cas(path, old, olen, ex, val, vlen, false, "apply");
            }
            free(old);
            if (w == 2)
                printf("%s %s/%s unchanged\n", what, x->ns, x->name);
            else if (w == 1)
                printf("%s %s/%s %s\n", what, x->ns, x->name, ex ? "configured" : "created");
            else if (w == 0)
                fprintf(stderr, "rivet apply: conflict: %s %s/%s (%s) was changed by someone else since it was "
                        "read; not overwritten (read it again and re-apply)\n", what, x->ns, x->name, path);
            if (w != 1 && w != 2)
                failed++;
            free(path);
        }
        free(conv);
    }
    rc = failed ? 1 : 0;
out:
    if (opened)
        cli_store_close(&cs);
    free_docs(&d);
    return rc;
}

const rv_cmd_t rv_cmd_apply = { "apply", "write resources to the store (Consul KV or directory), validated, CAS",
                                apply_main };
