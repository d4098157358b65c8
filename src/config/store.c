/*
 * store.c - the resource store: one record per file of the config directory, holding the
 * last accepted decoded version and why the current content is rejected, if it is.
 *
 * A rescan runs on every inotify event and every refreshRate, so it must cost a stat per
 * file when nothing changed: files are re-read only when dev/inode/size/mtime/ctime moved,
 * and re-decoded only when their bytes differ from what was read last time.
 *
 * The same records hold resources read from Consul KV (rv_store_load_kv): path and rel are
 * then the key, and a full listing replaces the previous one (values compared byte for byte).
 * Also here: the kind names, kind recognition and stored-form conversion the CLI needs.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>

#include "config/config-internal.h"
#include "config/secret.h"
#include "core/err.h"
#include "core/log.h"

rv_store_t *rv_store_new(void)
{
    return calloc(1, sizeof(rv_store_t));
}

static void res_free(res_t *r)
{
    if (!r)
        return;
    free(r->path);
    free(r->rel);
    free(r->ns);
    free(r->name);
    free(r->content);
    free(r->error);
    free(r->fb_reason);
    rv_arena_free(&r->arena);
    rv_arena_free(&r->good_arena);
    free(r);
}

/*
 * Make obj (owned by *a) r's decoded version. The version the last build accepted stays
 * (moved to good_arena when it was obj); a decoded version no build accepted is freed.
 */
static void res_set_obj(res_t *r, rv_arena_t *a, void *obj)
{
    if (r->obj && r->obj == r->good) {
        rv_arena_free(&r->good_arena);
        r->good_arena = r->arena;
    } else {
        rv_arena_free(&r->arena);
    }
    r->arena = *a;
    r->obj = obj;
}

void cfg_res_accept(res_t *r)
{
    if (!r->obj || r->good == r->obj)
        return;
    rv_arena_free(&r->good_arena);
    rv_arena_init(&r->good_arena, 0);
    r->good = r->obj;
}

void rv_store_free(rv_store_t *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->nres; i++)
        res_free(st->res[i]);
    free(st->res);
    free(st);
}

/* Index of path in st->res (kept sorted by path), or the insertion point as -(i+1). */
static long find_path(const rv_store_t *st, const char *path)
{
    long lo = 0, hi = (long)st->nres - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        int c = strcmp(st->res[mid]->path, path);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -(lo + 1);
}

static bool same_stat(const res_t *r, const struct stat *sb)
{
    return r->have_content && r->dev == sb->st_dev && r->ino == sb->st_ino && r->size == sb->st_size &&
           r->mtime.tv_sec == sb->st_mtim.tv_sec && r->mtime.tv_nsec == sb->st_mtim.tv_nsec &&
           r->ctime.tv_sec == sb->st_ctim.tv_sec && r->ctime.tv_nsec == sb->st_ctim.tv_nsec;
}

static void set_error(res_t *r, const char *msg)
{
    free(r->error);
    r->error = msg ? strdup(msg) : NULL;
    if (msg && !r->error)
        rv_log_error("config: out of memory recording the status of %s", r->rel);
}

/*
 * Bring record r up to date with its file (already stat'ed into sb). Returns 1 when its
 * accepted version or its rejection changed, 0 when not, RV_ENOMEM.
 */
static int refresh(res_t *r, const struct stat *sb)
{
    char *buf = NULL;
    size_t len = 0;
    char err[CFG_ERRLEN];

    if (same_stat(r, sb))
        return 0;
    int rc = cfg_read_file(r->path, &buf, &len);
    r->dev = sb->st_dev;
    r->ino = sb->st_ino;
    r->size = sb->st_size;
    r->mtime = sb->st_mtim;
    r->ctime = sb->st_ctim;
    if (rc == RV_ENOMEM)
        return RV_ENOMEM;
    if (rc != 0) {
        /* unreadable: forget the content so the next scan tries again */
        snprintf(err, sizeof(err), "%s: %s", r->rel,
                 rc == RV_ETOOBIG ? "file is larger than 4 MiB" : strerror(errno));
        bool changed = !r->error || strcmp(r->error, err) != 0;
        set_error(r, err);
        free(r->content);
        r->content = NULL;
        r->clen = 0;
        r->have_content = rc == RV_ETOOBIG;
        return changed;
    }
    if (r->have_content && r->content && len == r->clen && memcmp(buf, r->content, len) == 0) {
        free(buf);
        return 0;
    }
    free(r->content);
    r->content = buf;
    r->clen = len;
    r->have_content = true;

    rv_arena_t a;
    void *obj;
    rv_arena_init(&a, 0);
    if (cfg_decode_resource(&a, r->kind, r->rel, NULL, r->ns, r->name, buf, len, &obj, err, sizeof(err)) == 0) {
        res_set_obj(r, &a, obj);
        set_error(r, NULL);
    } else {
        rv_arena_free(&a);
        set_error(r, err);
    }
    return 1;
}

static bool yaml_name(const char *f, size_t *base)
{
    size_t n = strlen(f);
    if (f[0] == '.')
        return false;
    if (n > 5 && !strcmp(f + n - 5, ".yaml")) {
        *base = n - 5;
        return true;
    }
    if (n > 4 && !strcmp(f + n - 4, ".yml")) {
        *base = n - 4;
        return true;
    }
    return false;
}

static bool watched(const rv_settings_t *s, const char *ns)
{
    if (!s->nwatch_ns)
        return true;
    for (uint32_t i = 0; i < s->nwatch_ns; i++)
        if (!strcmp(s->watch_ns[i], ns))
            return true;
    return false;
}

static char *pathf(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Scan <config>/<plural>/<ns>/ for one namespace. Returns changed (0/1) or RV_ENOMEM. */
static int scan_ns(rv_store_t *st, int kind, const char *nsdir, const char *ns)
{
    DIR *d = opendir(nsdir);
    int changed = 0;
    if (!d) {
        rv_log_warn("config: cannot read %s: %s", nsdir, strerror(errno));
        return 0;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t base;
        if (!yaml_name(de->d_name, &base))
            continue;
        char *path = pathf(nsdir, de->d_name);
        if (!path)
            goto oom;
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(path);
            continue;
        }
        long i = find_path(st, path);
        res_t *r;
        if (i >= 0) {
            r = st->res[i];
            free(path);
        } else {
            if (st->nres == st->cap) {
                uint32_t ncap = st->cap ? st->cap * 2 : 64;
                res_t **nr = realloc(st->res, ncap * sizeof(*nr));
                if (!nr) {
                    free(path);
                    goto oom;
                }
                st->res = nr;
                st->cap = ncap;
            }
            r = calloc(1, sizeof(*r));
            size_t rl = strlen(cfg_kinds[kind].plural) + strlen(ns) + strlen(de->d_name) + 3;
            if (r) {
                r->path = path;
                r->kind = kind;
                r->ns = strdup(ns);
                r->name = strndup(de->d_name, base);
                r->rel = malloc(rl);
                rv_arena_init(&r->arena, 0);
                rv_arena_init(&r->good_arena, 0);
            } else {
                free(path);
            }
            if (!r || !r->ns || !r->name || !r->rel) {
                res_free(r);
                goto oom;
            }
            snprintf(r->rel, rl, "%s/%s/%s", cfg_kinds[kind].plural, ns, de->d_name);
            long at = -i - 1;
            memmove(&st->res[at + 1], &st->res[at], (st->nres - (uint32_t)at) * sizeof(*st->res));
            st->res[at] = r;
            st->nres++;
            changed = 1;
        }
        r->seen = true;
        int rc = refresh(r, &sb);
        if (rc < 0)
            goto oom;
        changed |= rc;
    }
    closedir(d);
    return changed;
oom:
    closedir(d);
    return RV_ENOMEM;
}

int rv_store_scan_dir(rv_store_t *st, const rv_settings_t *s)
{
    int changed = 0;
    DIR *top = opendir(s->config_dir);
    if (!top) {
        rv_log_error("config: cannot read %s: %s", s->config_dir, strerror(errno));
        return RV_ENOTFOUND;
    }
    closedir(top);
    for (uint32_t i = 0; i < st->nres; i++)
        st->res[i]->seen = false;
    for (int kind = 0; kind < RK_SETTINGS; kind++) {
        char *kdir = pathf(s->config_dir, cfg_kinds[kind].plural);
        if (!kdir)
            return RV_ENOMEM;
        DIR *d = opendir(kdir);
        if (!d) {
            if (errno != ENOENT && errno != ENOTDIR)
                rv_log_warn("config: cannot read %s: %s", kdir, strerror(errno));
            free(kdir);
            continue;
        }
        struct dirent *de;
        int rc = 0;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.' || !watched(s, de->d_name))
                continue;
            char *nsdir = pathf(kdir, de->d_name);
            struct stat sb;
            if (!nsdir) {
                rc = RV_ENOMEM;
                break;
            }
            if (stat(nsdir, &sb) == 0 && S_ISDIR(sb.st_mode))
                rc = scan_ns(st, kind, nsdir, de->d_name);
            free(nsdir);
            if (rc < 0)
                break;
            changed |= rc;
        }
        closedir(d);
        free(kdir);
        if (rc < 0)
            return rc;
    }
    /* files that disappeared (or left the watched namespaces) drop their resource */
    uint32_t w = 0;
    for (uint32_t i = 0; i < st->nres; i++) {
        if (st->res[i]->seen) {
            st->res[w++] = st->res[i];
        } else {
            res_free(st->res[i]);
            changed = 1;
        }
    }
    st->nres = w;
    return changed;
}

/* ---- kinds for the CLI and the Consul KV layout ------------------------------------------ */

_Static_assert((int)RV_KIND_GATEWAY == (int)RK_GATEWAY && (int)RV_KIND_VS == (int)RK_VS &&
                   (int)RV_KIND_RT == (int)RK_RT && (int)RV_KIND_US == (int)RK_US && (int)RV_KIND_UG == (int)RK_UG &&
                   (int)RV_KIND_COUNT == (int)RK_SETTINGS,
               "public kinds follow the store's");

const char *rv_kind_name(int kind)
{
    if (kind == RV_KIND_SECRET)
        return "Secret";
    return kind >= 0 && kind < RV_KIND_COUNT ? cfg_kinds[kind].kind : "?";
}

const char *rv_kind_plural(int kind)
{
    if (kind == RV_KIND_SECRET)
        return "secrets";
    return kind >= 0 && kind < RV_KIND_COUNT ? cfg_kinds[kind].plural : "?";
}

const char *rv_kind_api(int kind)
{
    return kind >= 0 && kind < RV_KIND_COUNT ? cfg_kinds[kind].api : "?";
}

int rv_kind_parse(const char *s)
{
    static const char *const shorts[RV_KIND_COUNT] = { "gw", "vs", "rt", "us", "ug" };
    if (!s)
        return -1;
    if (!strcasecmp(s, "secret") || !strcasecmp(s, "secrets"))
        return RV_KIND_SECRET;
    size_t n = strlen(s);
    for (int k = 0; k < RV_KIND_COUNT; k++) {
        const char *plural = cfg_kinds[k].plural;
        size_t pl = strlen(plural);
        if (!strcasecmp(s, cfg_kinds[k].kind) || !strcasecmp(s, plural) || !strcasecmp(s, shorts[k]) ||
            (n == pl - 1 && !strncasecmp(s, plural, pl - 1)))
            return k;
    }
    return -1;
}

int rv_kind_detect(const char *doc, size_t len, char *err, size_t errlen)
{
    static const char *const us_types[] = { "static", "kube", "consul", "aws", "awsEc2", "azure", "pipe", "gcp" };
    rv_arena_t a;
    char yerr[CFG_ERRLEN];
    int eline, ecol, kind = -1;
    rv_arena_init(&a, 0);
    ynode_t *root = cfg_yaml_parse(&a, doc, len, yerr, sizeof(yerr), &eline, &ecol);
    if (!root) {
        snprintf(err, errlen, "%d:%d: %s", eline, ecol, yerr);
        goto out;
    }
    if (root->type != YN_MAP) {
        snprintf(err, errlen, "expected a mapping at the top level");
        goto out;
    }
    const ynode_t *kn = cfg_ymap_get(root, "kind");
    if (kn) {
        for (int k = 0; k < RV_KIND_COUNT && kn->type == YN_SCALAR; k++)
            if (!strcmp(kn->s, cfg_kinds[k].kind))
                kind = k;
        if (kn->type == YN_SCALAR && !strcmp(kn->s, "Secret"))
            kind = RV_KIND_SECRET;
        if (kind < 0)
            snprintf(err, errlen, "kind '%s' is not one rivet serves (Gateway, VirtualService, RouteTable, "
                     "Upstream, UpstreamGroup, Secret)", kn->type == YN_SCALAR ? kn->s : "?");
        goto out;
    }
    static const char *const secret_kinds[] = { "tls", "oauth", "apiKey", "header", "credentials", "encryption",
                                                "extensions" };
    for (size_t i = 0; i < RV_ARRAY_LEN(secret_kinds); i++)
        if (cfg_field_node(root, secret_kinds[i])) {
            kind = RV_KIND_SECRET;  /* the secret decoder names the kinds it refuses */
            goto out;
        }
    const ynode_t *awsn = cfg_field_node(root, "aws");
    if ((awsn && (cfg_field_node(awsn, "accessKey") || cfg_field_node(awsn, "secretKey") ||
                  cfg_field_node(awsn, "sessionToken")))) {
        kind = RV_KIND_SECRET;
        goto out;
    }
    if (cfg_field_node(root, "virtualHost"))
        kind = RK_VS;
    else if (cfg_field_node(root, "bindPort") || cfg_field_node(root, "httpGateway") ||
             cfg_field_node(root, "tcpGateway") || cfg_field_node(root, "hybridGateway"))
        kind = RK_GATEWAY;
    else if (cfg_field_node(root, "destinations"))
        kind = RK_UG;
    else if (cfg_field_node(root, "routes"))
        kind = RK_RT;
    for (size_t i = 0; kind < 0 && i < RV_ARRAY_LEN(us_types); i++)
        if (cfg_field_node(root, us_types[i]))
            kind = RK_US;
    if (kind < 0)
        snprintf(err, errlen, "cannot tell the kind of this document (no apiVersion/kind, and none of "
                 "virtualHost, bindPort, httpGateway, routes, destinations or an upstream type): use --kind");
out:
    rv_arena_free(&a);
    return kind;
}

int rv_resource_check(int kind, const char *src, const char *doc, size_t len, const char *ns_default, char **ns,
                      char **name, bool *kube, char *err, size_t errlen)
{
    rv_arena_t a;
    void *obj;
    int rc = RV_EPARSE;
    *ns = *name = NULL;
    rv_arena_init(&a, 0);
    if (kind < 0 || kind >= RV_KIND_COUNT) {
        snprintf(err, errlen, "%s: unknown kind", src);
        goto out;
    }
    if (cfg_decode_resource(&a, kind, src, NULL, NULL, NULL, doc, len, &obj, err, errlen) != 0)
        goto out;
    const meta_t *m = (const meta_t *)((const char *)obj + offsetof(vs_t, meta));
    const char *n = m->ns && m->ns[0] ? m->ns : ns_default;
    if (!n || !n[0])
        n = RV_DEFAULT_NAMESPACE;
    *ns = strdup(n);
    *name = strdup(m->name);
    if (!*ns || !*name) {
        free(*ns);
        free(*name);
        *ns = *name = NULL;
        rc = RV_ENOMEM;
        goto out;
    }
    ynode_t *root = cfg_yaml_parse(&a, doc, len, err, errlen, &(int){ 0 }, &(int){ 0 });
    *kube = root && (cfg_ymap_get(root, "apiVersion") || cfg_ymap_get(root, "kind") || cfg_ymap_get(root, "spec"));
    rc = 0;
out:
    rv_arena_free(&a);
    return rc;
}

/* Comma or nothing before a raw JSON token (json.c's rule for strings). */
static void jb_sep(jbuf_t *b)
{
    uint64_t bit = UINT64_C(1) << (b->depth & 63);
    if (b->after_key) {
        b->after_key = false;
        return;
    }
    if (b->commas & bit)
        cfg_jb_raw(b, ",", 1);
    b->commas |= bit;
}

/* A plain scalar JSON can carry as it is (null, booleans, JSON numbers). */
static const char *json_literal(const ynode_t *n)
{
    static const char *const t[] = { "true", "True", "TRUE" }, *const f[] = { "false", "False", "FALSE" };
    if (n->is_null)
        return "null";
    for (size_t i = 0; i < 3; i++) {
        if (!strcmp(n->s, t[i]))
            return "true";
        if (!strcmp(n->s, f[i]))
            return "false";
    }
    /* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    const char *p = n->s;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return NULL;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p ? NULL : n->s;
}

static void emit_json(jbuf_t *b, const ynode_t *n)
{
    if (n->type == YN_MAP) {
        cfg_jb_open(b, '{');
        for (uint32_t i = 0; i < n->n; i++) {
            cfg_jb_key(b, n->kids[2 * i]->s);
            emit_json(b, n->kids[2 * i + 1]);
        }
        cfg_jb_close(b, '}');
    } else if (n->type == YN_SEQ) {
        cfg_jb_open(b, '[');
        for (uint32_t i = 0; i < n->n; i++)
            emit_json(b, n->kids[i]);
        cfg_jb_close(b, ']');
    } else {
        const char *lit = n->plain && !n->force_str ? json_literal(n) : NULL;
        if (lit) {
            jb_sep(b);
            cfg_jb_raw(b, lit, strlen(lit));
        } else {
            cfg_jb_str(b, n->s, n->len);
        }
    }
}

char *rv_resource_stored_json(int kind, const char *doc, size_t len, const char *ns, const char *name,
                              size_t *outlen)
{
    rv_arena_t a;
    jbuf_t b = { 0 };
    char yerr[CFG_ERRLEN];
    int el, ec;
    char *res = NULL;
    rv_arena_init(&a, 0);
    ynode_t *root = cfg_yaml_parse(&a, doc, len, yerr, sizeof(yerr), &el, &ec);
    if (!root || root->type != YN_MAP || kind < 0 || kind >= RV_KIND_COUNT)
        goto out;
    bool k8s = cfg_ymap_get(root, "apiVersion") || cfg_ymap_get(root, "kind") || cfg_ymap_get(root, "spec");
    const ynode_t *body = k8s ? cfg_ymap_get(root, "spec") : root;
    const ynode_t *meta = cfg_ymap_get(root, "metadata");
    cfg_jb_open(&b, '{');
    cfg_jb_key(&b, "metadata");
    cfg_jb_open(&b, '{');
    for (uint32_t i = 0; meta && meta->type == YN_MAP && i < meta->n; i++) {
        const char *k = meta->kids[2 * i]->s;
        if (!strcmp(k, "name") || !strcmp(k, "namespace") || !strcmp(k, "resourceVersion"))
            continue;
        cfg_jb_key(&b, k);
        emit_json(&b, meta->kids[2 * i + 1]);
    }
    cfg_jb_kstr(&b, "name", rv_cstr(name));
    cfg_jb_kstr(&b, "namespace", rv_cstr(ns));
    cfg_jb_close(&b, '}');
    for (uint32_t i = 0; body && body->type == YN_MAP && i < body->n; i++) {
        const char *k = body->kids[2 * i]->s;
        if (!strcmp(k, "metadata") || !strcmp(k, "status") || !strcmp(k, "namespacedStatuses"))
            continue;
        cfg_jb_key(&b, k);
        emit_json(&b, body->kids[2 * i + 1]);
    }
    cfg_jb_close(&b, '}');
    cfg_jb_raw(&b, "\n", 1);
    if (b.oom)
        goto out;
    res = b.p;
    *outlen = b.len;
    b.p = NULL;
out:
    free(b.p);
    rv_arena_free(&a);
    return res;
}

/* ---- Consul KV ---------------------------------------------------------------------------- */

/* Gloo kinds kept in the same layout that rivet does not serve (skipped, with a note). */
static const char *const other_kinds[] = {
    "gloo.solo.io/v1/Proxy", "gloo.solo.io/v1/Artifact", "gloo.solo.io/v1/Settings", "gloo.solo.io/v1/Secret",
    "gateway.solo.io/v1/MatchableHttpGateway", "gateway.solo.io/v1/MatchableTcpGateway",
    "gateway.solo.io/v1/VirtualHostOption", "gateway.solo.io/v1/RouteOption", "gateway.solo.io/v1/ListenerOption",
    "gateway.solo.io/v1/HttpListenerOption", "enterprise.gloo.solo.io/v1/AuthConfig",
    "ratelimit.solo.io/v1alpha1/RateLimitConfig", "graphql.gloo.solo.io/v1beta1/GraphQLApi",
};

int rv_kv_key(char *buf, size_t n, const char *root, int kind, const char *ns, const char *name)
{
    if (kind < 0 || kind >= RV_KIND_COUNT)
        return RV_EINVAL;
    int w = snprintf(buf, n, "%s/%s/%s/%s/%s", root, cfg_kinds[kind].api, cfg_kinds[kind].kind, ns, name);
    return w < 0 || (size_t)w >= n ? RV_ETOOBIG : 0;
}

int rv_kv_parse_key(const char *root, const char *key, int *kind, const char **ns, size_t *nslen,
                    const char **name, size_t *namelen)
{
    size_t rl = strlen(root);
    *kind = -1;
    if (strncmp(key, root, rl) != 0 || key[rl] != '/')
        return RV_ENOTFOUND;
    const char *rest = key + rl + 1;
    /* <group>/<version>/<Kind>/<ns>/<name>: exactly five non-empty segments */
    const char *seg[6];
    size_t nseg = 0;
    const char *p = rest;
    seg[nseg++] = p;
    for (; *p; p++) {
        if (*p == '/') {
            if (nseg == 6)
                return RV_ENOTFOUND;
            seg[nseg++] = p + 1;
        }
    }
    if (nseg != 5)
        return RV_ENOTFOUND;
    for (size_t i = 0; i < 4; i++)
        if (seg[i + 1] - seg[i] < 2)
            return RV_ENOTFOUND;
    if (!*seg[4])
        return RV_ENOTFOUND;
    size_t gvk = (size_t)(seg[3] - rest - 1);
    for (int k = 0; k < RV_KIND_COUNT; k++) {
        size_t al = strlen(cfg_kinds[k].api), kl = strlen(cfg_kinds[k].kind);
        if (gvk == al + 1 + kl && !strncmp(rest, cfg_kinds[k].api, al) && rest[al] == '/' &&
            !strncmp(rest + al + 1, cfg_kinds[k].kind, kl)) {
            *kind = k;
            *ns = seg[3];
            *nslen = (size_t)(seg[4] - seg[3] - 1);
            *name = seg[4];
            *namelen = strlen(seg[4]);
            return 0;
        }
    }
    for (size_t i = 0; i < RV_ARRAY_LEN(other_kinds); i++)
        if (gvk == strlen(other_kinds[i]) && !strncmp(rest, other_kinds[i], gvk))
            return RV_EUNSUPPORTED;
    return RV_ENOTFOUND;
}

/* Decode r's new content (a KV value at key r->path); 1 (changed). */
static int refresh_kv(res_t *r)
{
    char err[CFG_ERRLEN];
    rv_arena_t a;
    void *obj;
    rv_arena_init(&a, 0);
    if (cfg_decode_resource(&a, r->kind, r->rel, NULL, NULL, NULL, r->content, r->clen, &obj, err, sizeof(err)) !=
        0) {
        rv_arena_free(&a);
        set_error(r, err);
        return 1;
    }
    meta_t *m = (meta_t *)((char *)obj + offsetof(vs_t, meta));
    if (strcmp(m->name, r->name) != 0 || (m->ns && m->ns[0] && strcmp(m->ns, r->ns) != 0)) {
        bool bad_name = strcmp(m->name, r->name) != 0;
        snprintf(err, sizeof(err),
                 "%s:%d:%d: metadata.%s '%s' does not match the key, which says '%s' (keys are "
                 "<root>/<group>/<version>/<Kind>/<namespace>/<name>)",
                 r->rel, m->h.line, m->h.col, bad_name ? "name" : "namespace", bad_name ? m->name : m->ns,
                 bad_name ? r->name : r->ns);
        rv_arena_free(&a);
        set_error(r, err);
        return 1;
    }
    if (!m->ns || !m->ns[0])
        m->ns = rv_arena_strndup(&a, r->ns, strlen(r->ns));
    res_set_obj(r, &a, obj);
    set_error(r, NULL);
    return 1;
}

/* Insert a record for key at the sorted position -(i+1). NULL on OOM. */
static res_t *insert_kv(rv_store_t *st, long i, const char *key, int kind, const char *ns, size_t nsl,
                        const char *name, size_t namel)
{
    if (st->nres == st->cap) {
        uint32_t ncap = st->cap ? st->cap * 2 : 64;
        res_t **nr = realloc(st->res, ncap * sizeof(*nr));
        if (!nr)
            return NULL;
        st->res = nr;
        st->cap = ncap;
    }
    res_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    rv_arena_init(&r->arena, 0);
    rv_arena_init(&r->good_arena, 0);
    r->kind = kind;
    r->path = strdup(key);
    r->rel = strdup(key);
    r->ns = strndup(ns, nsl);
    r->name = strndup(name, namel);
    if (!r->path || !r->rel || !r->ns || !r->name) {
        res_free(r);
        return NULL;
    }
    long at = -i - 1;
    memmove(&st->res[at + 1], &st->res[at], (st->nres - (uint32_t)at) * sizeof(*st->res));
    st->res[at] = r;
    st->nres++;
    return r;
}

int rv_store_load_kv(rv_store_t *st, const rv_settings_t *s, const char *root, const rv_kv_pair_t *kv, size_t n)
{
    int changed = 0;
    for (uint32_t i = 0; i < st->nres; i++)
        st->res[i]->seen = false;
    for (size_t i = 0; i < n; i++) {
        int kind;
        const char *ns, *name;
        size_t nsl, namel;
        int pk = rv_kv_parse_key(root, kv[i].key, &kind, &ns, &nsl, &name, &namel);
        if (pk != 0) {
            rv_log_debug("consul: key %s skipped (%s)", kv[i].key,
                         pk == RV_EUNSUPPORTED ? "a Gloo kind rivet does not serve" : "not a resource key");
            continue;
        }
        char nsbuf[256];
        snprintf(nsbuf, sizeof(nsbuf), "%.*s", (int)nsl, ns);
        if (!watched(s, nsbuf))
            continue;
        long at = find_path(st, kv[i].key);
        res_t *r = at >= 0 ? st->res[at] : insert_kv(st, at, kv[i].key, kind, ns, nsl, name, namel);
        if (!r)
            return RV_ENOMEM;
        if (at < 0)
            changed = 1;
        r->seen = true;
        if (r->have_content && r->clen == kv[i].len && (kv[i].len == 0 || !memcmp(r->content, kv[i].value, kv[i].len)))
            continue;
        char *c = malloc(kv[i].len + 1);
        if (!c)
            return RV_ENOMEM;
        if (kv[i].len)
            memcpy(c, kv[i].value, kv[i].len);
        c[kv[i].len] = '\0';
        free(r->content);
        r->content = c;
        r->clen = kv[i].len;
        r->have_content = true;
        changed |= refresh_kv(r);
    }
    uint32_t w = 0;
    for (uint32_t i = 0; i < st->nres; i++) {
        if (st->res[i]->seen) {
            st->res[w++] = st->res[i];
        } else {
            res_free(st->res[i]);
            changed = 1;
        }
    }
    st->nres = w;
    return changed;
}

/* ---- secrets seen by builds ------------------------------------------------------------ */

void rv_store_attach_secrets(rv_store_t *st, const rv_secrets_t *t)
{
    if (st)
        st->secrets = t;
}

const rv_secret_t *rv_store_secret(const rv_store_t *st, const char *ns, const char *name, const char **why)
{
    if (why)
        *why = NULL;
    if (!st || !st->secrets)
        return NULL;
    return rv_secrets_get(st->secrets, ns, name, why);
}

const char *rv_store_secrets_unread(const rv_store_t *st)
{
    return st ? rv_secrets_unread(st->secrets) : NULL;
}
