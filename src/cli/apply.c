/*
 * apply.c - `rivet apply -f FILE|DIR|-`: validate every document with the strict decoder,
 * then write each resource to the configured store (Consul KV in Gloo's layout, or the config
 * directory) with compare-and-set, so a concurrent edit is reported rather than overwritten.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "config/secret.h"
#include "control/consul.h"
#include "control/kvsource.h"
#include "core/err.h"

#define APPLY_MAX_INPUT CLI_MAX_INPUT

typedef struct doc_s {
    char *src;                  /* "file.yaml#2" for messages */
    char *text;
    size_t len;
    int kind;
    char *ns, *name;
    bool kube;
    rv_secret_t *secret;        /* kind RV_KIND_SECRET: the decoded secret */
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
    char *buf = cli_slurp(path, &len, &ex, NULL);
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
            "routes, destinations, an upstream type; tls or aws credentials for a Secret) unless --kind\n"
            "says. Secrets (Gloo's stored form, or a Kubernetes Secret: kubernetes.io/tls, Opaque aws\n"
            "keys) go to the first secret source of the Settings, in Gloo's stored form (default\n"
            "DIR/secrets/<namespace>/<name>.yaml, mode 0600), never to the config store. Every\n"
            "document is validated\n"
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
        if (d->v[i].text)
            OPENSSL_cleanse(d->v[i].text, d->v[i].len);   /* may hold key material */
        free(d->v[i].text);
        rv_secret_free(d->v[i].secret);
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
                        "Upstream/us, UpstreamGroup/ug, Secret)\n", kind_s);
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
        int r;
        if (x->kind == RV_KIND_SECRET) {
            r = rv_secret_decode(x->src, x->text, x->len, ns_flag ? ns_flag : RV_DEFAULT_NAMESPACE, NULL, &x->secret,
                                 err, sizeof(err));
            if (r == 0 && (!(x->ns = strdup(x->secret->ns)) || !(x->name = strdup(x->secret->name))))
                r = RV_ENOMEM;
        } else {
            r = rv_resource_check(x->kind, x->src, x->text, x->len, ns_flag, &x->ns, &x->name, &x->kube, err,
                                  sizeof(err));
        }
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
    /* secrets need a secret store: refuse before writing anything rather than half-apply */
    for (size_t i = 0; i < d.n && !cs.s.nsecret_srcs; i++)
        if (d.v[i].kind == RV_KIND_SECRET) {
            fprintf(stderr, "rivet apply: %s: Secret %s/%s: no secret store (give --dir DIR: DIR/secrets, or "
                    "Settings directorySecretSource / vaultSecretSource / secretOptions); nothing written\n",
                    d.v[i].src, d.v[i].ns, d.v[i].name);
            rc = 2;
            goto out;
        }
    size_t failed = 0;
    for (size_t i = 0; i < d.n; i++) {
        doc_t *x = &d.v[i];
        const char *what = rv_kind_name(x->kind);
        char *val = x->text;
        size_t vlen = x->len;
        char *conv = NULL;
        char key[2048];
        if (x->kind == RV_KIND_SECRET) {
            /* secrets go to the secret store, whatever holds the config */
            if (cli_secret_put(&cs, x->secret, dry) != 0)
                failed++;
            continue;
        }
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
            char *old = cli_slurp(path, &olen, &ex, NULL);
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
