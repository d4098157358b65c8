/*
 * secret.c - Gloo Secrets (tls, aws) decoded from Gloo's stored form or a Kubernetes Secret,
 * the secret table every source feeds (directory here, Vault in src/control/vault.c), and the
 * directory secret source.
 *
 * Decoding reuses the config loader: cfg_yaml_parse for YAML and JSON, cfg_decode_msg with the
 * field tables below for Gloo's stored form (so spelling, oneof and "not supported" messages
 * are the same as for every other resource). The parse arena holds key material while a
 * document is decoded; it is wiped (rv_arena_wipe) before it is freed, and so is the file
 * buffer. Error messages name fields and files, never a value of a secret.
 *
 * The table keeps one sorted array of secrets per source, plus the names that failed to
 * decode with their reasons. A replace compares content: an unchanged secret keeps its
 * pointer and version and costs no generation bump.
 */
#include <dirent.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "config/config-internal.h"
#include "config/secret.h"
#include "core/err.h"

#define FLD(n, t, ...) { .name = (n), .type = (t), __VA_ARGS__ }
#define OFF(T, f)      .off = (uint16_t)offsetof(T, f)
#define DESC(var, T, fl, chk) \
    static const msgdesc_t var = { #T, sizeof(T), fl, (uint32_t)RV_ARRAY_LEN(fl), chk, false }

#define MAX_SOURCES RV_SECRETS_MAX_SOURCES
#define MAX_NAME 253
#define KIND_NOTE "(rivet reads tls and aws secrets)"

/* ---- Gloo's stored form ------------------------------------------------------------- */

typedef struct tls_doc_s { mhdr_t h; char *cert_chain, *private_key, *root_ca, *ocsp; } tls_doc_t;
typedef struct aws_doc_s { mhdr_t h; char *access_key, *secret_key, *session_token; } aws_doc_t;
typedef struct sec_doc_s { mhdr_t h; meta_t meta; tls_doc_t tls; aws_doc_t aws; } sec_doc_t;

static const field_t tls_fields[] = {
    FLD("certChain", F_STR, OFF(tls_doc_t, cert_chain)),
    FLD("privateKey", F_STR, OFF(tls_doc_t, private_key)),
    FLD("rootCa", F_STR, OFF(tls_doc_t, root_ca)),
    FLD("ocspStaple", F_STR, OFF(tls_doc_t, ocsp)),
};
DESC(tls_desc, tls_doc_t, tls_fields, NULL);

static const field_t aws_fields[] = {
    FLD("accessKey", F_STR, OFF(aws_doc_t, access_key)),
    FLD("secretKey", F_STR, OFF(aws_doc_t, secret_key)),
    FLD("sessionToken", F_STR, OFF(aws_doc_t, session_token)),
};
DESC(aws_desc, aws_doc_t, aws_fields, NULL);

static const field_t sec_fields[] = {
    FLD("metadata", F_MSG, OFF(sec_doc_t, meta), .sub = &cfg_meta_desc),
    FLD("tls", F_MSG, OFF(sec_doc_t, tls), .sub = &tls_desc, .oneof = 1),
    FLD("aws", F_MSG, OFF(sec_doc_t, aws), .sub = &aws_desc, .oneof = 1),
    FLD("azure", F_UNSUP, .oneof = 1, .note = KIND_NOTE),
    FLD("header", F_UNSUP, .oneof = 1, .note = KIND_NOTE),
    FLD("credentials", F_UNSUP, .oneof = 1, .note = KIND_NOTE),
    FLD("oauth", F_UNSUP, .oneof = 1, .note = KIND_NOTE),
    FLD("apiKey", F_UNSUP, .oneof = 1, .note = KIND_NOTE),
    FLD("encryption", F_UNSUP, .oneof = 1, .note = KIND_NOTE),
    FLD("extensions", F_UNSUP, .oneof = 1, .note = KIND_NOTE),
};
DESC(sec_desc, sec_doc_t, sec_fields, NULL);

/* ---- helpers ----------------------------------------------------------------------- */

static void wipe_free(void *p, size_t len)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* Copy of s[0..len) with a NUL after it; NULL when len is 0 (absent) or on OOM (*oom set). */
static char *dup_mem(const char *s, size_t len, bool *oom)
{
    if (!s || !len)
        return NULL;
    char *p = malloc(len + 1);
    if (!p) {
        *oom = true;
        return NULL;
    }
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static int b64val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

/*
 * Base64 (standard or URL-safe alphabet, as protobuf's JSON mapping accepts; padding optional;
 * line breaks ignored, as base64 -w76 writes them) into a malloc'd buffer (one spare byte for
 * a NUL). Returns 0 with *out and *outlen, RV_EPARSE when malformed, RV_ENOMEM.
 */
static int b64_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
    unsigned char *p = malloc(len / 4 * 3 + 4);
    uint32_t acc = 0;
    size_t n = 0, o = 0, pad = 0;
    if (!p)
        return RV_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '\n' || ch == '\r')
            continue;
        if (ch == '=') {
            pad++;
            continue;
        }
        int v = b64val(ch);
        if (v < 0 || pad)
            goto bad;
        acc = (acc << 6) | (uint32_t)v;
        if (++n == 4) {
            p[o++] = (unsigned char)(acc >> 16);
            p[o++] = (unsigned char)(acc >> 8);
            p[o++] = (unsigned char)acc;
            n = 0;
            acc = 0;
        }
    }
    if (n == 1 || pad > 2 || (pad && (n + pad) % 4 != 0))
        goto bad;
    if (n == 2) {
        p[o++] = (unsigned char)(acc >> 4);
    } else if (n == 3) {
        p[o++] = (unsigned char)(acc >> 10);
        p[o++] = (unsigned char)(acc >> 2);
    }
    p[o] = '\0';
    *out = p;
    *outlen = o;
    return 0;
bad:
    wipe_free(p, len / 4 * 3 + 4);
    return RV_EPARSE;
}

/* Printable ASCII, tab, CR, LF: what PEM and AWS key ids are made of. */
static bool is_text(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') || p[i] > 0x7e)
            return false;
    return true;
}

/* A name rivet can use as a path component: 1..253 bytes, no '/', no control byte, no
 * leading '.', no whitespace. */
static bool good_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > MAX_NAME || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '/' || ch == '\\')
            return false;
    }
    return true;
}

void rv_secret_free(rv_secret_t *s)
{
    if (!s)
        return;
    free(s->ns);
    free(s->name);
    free(s->source);
    wipe_free(s->cert_chain, s->cert_chain_len);
    wipe_free(s->private_key, s->private_key_len);
    wipe_free(s->root_ca, s->root_ca_len);
    wipe_free(s->ocsp_staple, s->ocsp_staple_len);
    if (s->access_key)
        wipe_free(s->access_key, strlen(s->access_key));
    if (s->secret_key)
        wipe_free(s->secret_key, strlen(s->secret_key));
    if (s->session_token)
        wipe_free(s->session_token, strlen(s->session_token));
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

/* ---- decode ------------------------------------------------------------------------ */

/* The TLS / AWS values of one document, pointing into the parse arena (or malloc for base64). */
typedef struct vals_s {
    int kind;
    const char *v[7];       /* cert, key, ca, ocsp (base64 text), access, secret, token */
    size_t len[7];
    unsigned char *dec[7];  /* malloc'd decoded copies (Kubernetes data), wiped on free */
    size_t declen[7];
} vals_t;

enum { V_CERT = 0, V_KEY, V_CA, V_OCSP, V_ACCESS, V_SECRET, V_TOKEN };

static void vals_free(vals_t *v)
{
    for (int i = 0; i < 7; i++)
        wipe_free(v->dec[i], v->declen[i] + 1);
}

static void set_val(vals_t *v, int i, const char *s)
{
    v->v[i] = s && s[0] ? s : NULL;
    v->len[i] = v->v[i] ? strlen(s) : 0;
}

/* Kubernetes Secret: apiVersion v1, kind Secret, metadata, type, data (base64), stringData. */
static int decode_kube(dctx_t *c, const ynode_t *root, meta_t *meta, vals_t *v)
{
    static const struct { const char *key; int idx; bool tls; } keys[] = {
        { "tls.crt", V_CERT, true }, { "tls.key", V_KEY, true }, { "ca.crt", V_CA, true },
        { "aws_access_key_id", V_ACCESS, false }, { "aws_secret_access_key", V_SECRET, false },
        { "aws_session_token", V_TOKEN, false },
    };
    const ynode_t *data = NULL, *sdata = NULL, *type = NULL, *mn = NULL;
    for (uint32_t i = 0; i < root->n; i++) {
        const ynode_t *k = root->kids[2 * i], *val = root->kids[2 * i + 1];
        if (!strcmp(k->s, "apiVersion")) {
            if (val->type != YN_SCALAR || strcmp(val->s, "v1") != 0)
                return cfg_derr(c, val, "apiVersion", "expected v1 for a Kubernetes Secret");
        } else if (!strcmp(k->s, "kind")) {
            if (val->type != YN_SCALAR || strcmp(val->s, "Secret") != 0)
                return cfg_derr(c, val, "kind", "expected Secret");
        } else if (!strcmp(k->s, "metadata")) {
            mn = val;
        } else if (!strcmp(k->s, "type")) {
            type = val;
        } else if (!strcmp(k->s, "data")) {
            data = val;
        } else if (!strcmp(k->s, "stringData")) {
            sdata = val;
        } else if (!strcmp(k->s, "immutable")) {
            if (val->type != YN_SCALAR)
                return cfg_derr(c, val, "immutable", "expected a boolean");
        } else {
            return cfg_derr(c, k, cfg_key_name(c, k), "unknown field (a Kubernetes Secret has apiVersion, kind, metadata, "
                                        "type, data, stringData and immutable)");
        }
    }
    if (!cfg_ymap_get(root, "apiVersion"))
        return cfg_derr(c, root, "apiVersion", "is required in the Kubernetes form (v1)");
    if (mn && !(mn->type == YN_SCALAR && mn->is_null)) {
        size_t old = cfg_path_push(c, "metadata");
        int rc = cfg_decode_msg(c, &cfg_meta_desc, mn, meta);
        cfg_path_pop(c, old);
        if (rc < 0)
            return -1;
    }
    const char *t = "Opaque";
    if (type && !(type->type == YN_SCALAR && type->is_null)) {
        if (type->type != YN_SCALAR)
            return cfg_derr(c, type, "type", "expected a string");
        t = type->s;
    }
    bool tls = !strcmp(t, "kubernetes.io/tls");
    if (!tls && strcmp(t, "Opaque") != 0)
        return cfg_derr(c, type, "type", "'%s' is not supported (rivet reads kubernetes.io/tls secrets and Opaque "
                                         "secrets with aws_access_key_id and aws_secret_access_key)", t);
    const ynode_t *maps[2] = { data, sdata };
    const char *mname[2] = { "data", "stringData" };
    for (int m = 0; m < 2; m++) {
        const ynode_t *d = maps[m];
        if (!d || (d->type == YN_SCALAR && d->is_null))
            continue;
        if (d->type != YN_MAP)
            return cfg_derr(c, d, mname[m], "expected a mapping of strings");
        for (uint32_t i = 0; i < d->n; i++) {
            const ynode_t *k = d->kids[2 * i], *val = d->kids[2 * i + 1];
            size_t ki;
            for (ki = 0; ki < RV_ARRAY_LEN(keys); ki++)
                if (!strcmp(k->s, keys[ki].key))
                    break;
            size_t old = cfg_path_push(c, mname[m]);
            int rc = 0;
            if (ki == RV_ARRAY_LEN(keys))
                rc = cfg_derr(c, k, cfg_key_name(c, k), "is not a key rivet reads (tls.crt, tls.key, ca.crt for kubernetes.io/tls; "
                                          "aws_access_key_id, aws_secret_access_key, aws_session_token for Opaque)");
            else if (keys[ki].tls != tls)
                rc = cfg_derr(c, k, k->s, "does not belong in a secret of type %s", t);
            else if (val->type != YN_SCALAR)
                rc = cfg_derr(c, val, k->s, "expected a string");
            cfg_path_pop(c, old);
            if (rc < 0)
                return -1;
            int idx = keys[ki].idx;
            if (val->is_null && !val->force_str)
                continue;
            if (m == 0) {
                unsigned char *b;
                size_t bl;
                int r = b64_decode(val->s, val->len, &b, &bl);
                if (r == RV_ENOMEM)
                    return cfg_derrp(c, val, "out of memory");
                if (r < 0) {
                    old = cfg_path_push(c, mname[m]);
                    cfg_derr(c, val, k->s, "is not valid base64");
                    cfg_path_pop(c, old);
                    return -1;
                }
                if (!is_text(b, bl)) {
                    wipe_free(b, bl + 1);
                    old = cfg_path_push(c, mname[m]);
                    cfg_derr(c, val, k->s, "holds bytes that are not text (PEM or an ASCII key id expected)");
                    cfg_path_pop(c, old);
                    return -1;
                }
                wipe_free(v->dec[idx], v->declen[idx] + 1);
                v->dec[idx] = b;
                v->declen[idx] = bl;
                v->v[idx] = bl ? (const char *)b : NULL;
                v->len[idx] = bl;
            } else {
                set_val(v, idx, val->s);    /* stringData wins over data, as in Kubernetes */
            }
        }
    }
    v->kind = tls ? RV_SECRET_TLS : RV_SECRET_AWS;
    return 0;
}

int rv_secret_decode(const char *src, const char *doc, size_t len, const char *ns_default, const char *name_default,
                     rv_secret_t **out, char *err, size_t errlen)
{
    rv_arena_t a;
    char yerr[CFG_ERRLEN];
    int eline, ecol, rc = RV_EPARSE;
    vals_t v = { 0 };
    meta_t meta = { 0 };
    rv_secret_t *s = NULL;
    dctx_t c = { .a = &a, .file = src, .err = err, .errlen = errlen, .redact_keys = true };

    *out = NULL;
    if (errlen)
        err[0] = '\0';
    rv_arena_init(&a, 0);
    ynode_t *root = cfg_yaml_parse(&a, doc, len, yerr, sizeof(yerr), &eline, &ecol);
    if (!root) {
        /* a tag or alias name is document text, which in a secret may be key material:
         * say what is wrong, not what was written */
        static const char *const echo[] = { "tag '", "alias '*" };
        for (size_t i = 0; i < RV_ARRAY_LEN(echo); i++) {
            char *q = strstr(yerr, echo[i]);
            if (q)
                snprintf(q + strlen(echo[i]), sizeof(yerr) - (size_t)(q - yerr) - strlen(echo[i]), "...' (name "
                         "not shown: secret file)");
        }
        ynode_t at = { .line = eline, .col = ecol };
        cfg_derrp(&c, &at, "%s", yerr);
        goto out;
    }
    if (root->type != YN_MAP) {
        cfg_derr(&c, root, NULL, "expected a mapping at the top level");
        goto out;
    }
    if (cfg_ymap_get(root, "apiVersion") || cfg_ymap_get(root, "kind")) {
        if (decode_kube(&c, root, &meta, &v) < 0)
            goto out;
    } else {
        sec_doc_t *d = RV_ARENA_NEW(&a, sec_doc_t);
        if (!d) {
            cfg_derrp(&c, root, "out of memory");
            goto out;
        }
        if (cfg_decode_msg(&c, &sec_desc, root, d) < 0)
            goto out;
        meta = d->meta;
        if (d->tls.h.set) {
            v.kind = RV_SECRET_TLS;
            set_val(&v, V_CERT, d->tls.cert_chain);
            set_val(&v, V_KEY, d->tls.private_key);
            set_val(&v, V_CA, d->tls.root_ca);
            if (d->tls.ocsp && d->tls.ocsp[0]) {
                int r = b64_decode(d->tls.ocsp, strlen(d->tls.ocsp), &v.dec[V_OCSP], &v.declen[V_OCSP]);
                if (r == RV_ENOMEM) {
                    cfg_derrp(&c, root, "out of memory");
                    goto out;
                }
                if (r < 0) {
                    cfg_derr(&c, cfg_field_node(cfg_field_node(root, "tls"), "ocspStaple"), "tls.ocspStaple",
                             "is not valid base64");
                    goto out;
                }
            }
        } else if (d->aws.h.set) {
            v.kind = RV_SECRET_AWS;
            set_val(&v, V_ACCESS, d->aws.access_key);
            set_val(&v, V_SECRET, d->aws.secret_key);
            set_val(&v, V_TOKEN, d->aws.session_token);
        } else {
            cfg_derr(&c, root, NULL, "a secret needs tls or aws (rivet reads tls and aws secrets)");
            goto out;
        }
    }
    cfg_path_pop(&c, 0);
    /* what makes a usable secret of its kind */
    if (v.kind == RV_SECRET_TLS) {
        const char *pre = root && cfg_ymap_get(root, "kind") ? "data" : "tls";
        const char *cn = root && cfg_ymap_get(root, "kind") ? "tls.crt" : "certChain";
        const char *kn = root && cfg_ymap_get(root, "kind") ? "tls.key" : "privateKey";
        if (v.v[V_CERT] && !v.v[V_KEY]) {
            cfg_derrp(&c, root, "%s.%s is required with %s.%s", pre, kn, pre, cn);
            goto out;
        }
        if (v.v[V_KEY] && !v.v[V_CERT]) {
            cfg_derrp(&c, root, "%s.%s is required with %s.%s", pre, cn, pre, kn);
            goto out;
        }
        if (!v.v[V_CERT] && !v.v[V_CA]) {
            cfg_derrp(&c, root, "a tls secret needs %s.%s and %s.%s, or %s.%s", pre, cn, pre, kn, pre,
                      cfg_ymap_get(root, "kind") ? "ca.crt" : "rootCa");
            goto out;
        }
    } else {
        bool k8s = cfg_ymap_get(root, "kind") != NULL;
        if (!v.v[V_ACCESS] || !v.v[V_SECRET]) {
            cfg_derrp(&c, root, "an aws secret needs %s and %s", k8s ? "data.aws_access_key_id" : "aws.accessKey",
                      k8s ? "data.aws_secret_access_key" : "aws.secretKey");
            goto out;
        }
    }
    const char *ns = meta.ns && meta.ns[0] ? meta.ns : ns_default;
    const char *name = meta.name && meta.name[0] ? meta.name : name_default;
    if (!name || !name[0]) {
        cfg_derrp(&c, root, "metadata.name is required");
        goto out;
    }
    if (!ns || !ns[0])
        ns = RV_DEFAULT_NAMESPACE;
    if (!good_name(name)) {
        cfg_derrp(&c, root, "metadata.name '%.64s' cannot name a file (1-253 characters, no '/', no leading '.', "
                            "no whitespace or control characters)", name);
        goto out;
    }
    if (!good_name(ns)) {
        cfg_derrp(&c, root, "metadata.namespace '%.64s' cannot name a directory (1-253 characters, no '/', no "
                            "leading '.', no whitespace or control characters)", ns);
        goto out;
    }
    bool oom = false;
    if (!(s = calloc(1, sizeof(*s))))
        goto oom;
    s->kind = v.kind;
    s->ns = strdup(ns);
    s->name = strdup(name);
    s->source = src ? strdup(src) : NULL;
    oom = !s->ns || !s->name || (src && !s->source);
    if (v.kind == RV_SECRET_TLS) {
        s->cert_chain = dup_mem(v.v[V_CERT], v.len[V_CERT], &oom);
        s->cert_chain_len = s->cert_chain ? v.len[V_CERT] : 0;
        s->private_key = dup_mem(v.v[V_KEY], v.len[V_KEY], &oom);
        s->private_key_len = s->private_key ? v.len[V_KEY] : 0;
        s->root_ca = dup_mem(v.v[V_CA], v.len[V_CA], &oom);
        s->root_ca_len = s->root_ca ? v.len[V_CA] : 0;
        if (v.dec[V_OCSP] && v.declen[V_OCSP]) {
            s->ocsp_staple = v.dec[V_OCSP];     /* ownership moves */
            s->ocsp_staple_len = v.declen[V_OCSP];
            v.dec[V_OCSP] = NULL;
        }
    } else {
        s->access_key = dup_mem(v.v[V_ACCESS], v.len[V_ACCESS], &oom);
        s->secret_key = dup_mem(v.v[V_SECRET], v.len[V_SECRET], &oom);
        s->session_token = dup_mem(v.v[V_TOKEN], v.len[V_TOKEN], &oom);
    }
    if (oom)
        goto oom;
    *out = s;
    s = NULL;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "%s: out of memory", src ? src : "secret");
    rc = RV_ENOMEM;
out:
    rv_secret_free(s);
    vals_free(&v);
    rv_arena_wipe(&a);
    rv_arena_free(&a);
    if (rc == RV_EPARSE && errlen && !err[0])
        snprintf(err, errlen, "%s: invalid secret", src ? src : "secret");
    return rc;
}

/* ---- the stored form ---------------------------------------------------------------- */

/* A writer that only counts on its first pass (p NULL), so the output is allocated once, at
 * its exact size, and never reallocated (a realloc would leave a copy of key material behind). */
typedef struct sw_s { char *p; size_t n; } sw_t;

static void sw_raw(sw_t *w, const char *s, size_t n)
{
    if (w->p)
        memcpy(w->p + w->n, s, n);
    w->n += n;
}

static void sw_cstr(sw_t *w, const char *s)
{
    sw_raw(w, s, strlen(s));
}

/* A JSON string (also a YAML 1.2 double-quoted scalar). */
static void sw_quoted(sw_t *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sw_raw(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[6];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            sw_raw(w, e, 2);
        } else if (c == '\n') {
            sw_raw(w, "\\n", 2);
        } else if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
                                                (unsigned char)s[i + 1] <= 0x9f)) {
            /* C0 controls, DEL and the C1 controls (U+0080..U+009F, not printable in YAML) */
            if (c == 0xc2)
                c = (unsigned char)s[++i];
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            sw_raw(w, e, 6);
        } else {
            sw_raw(w, (const char *)&s[i], 1);
        }
    }
    sw_raw(w, "\"", 1);
}

/* One "key": value member; first tells whether a comma is needed (JSON). */
static void sw_field(sw_t *w, bool json, bool *first, const char *key, const char *v, size_t n)
{
    if (!v)
        return;
    if (json) {
        sw_cstr(w, *first ? "" : ",");
        sw_quoted(w, key, strlen(key));
        sw_raw(w, ":", 1);
    } else {
        sw_cstr(w, "  ");
        sw_cstr(w, key);
        sw_cstr(w, ": ");
    }
    sw_quoted(w, v, n);
    if (!json)
        sw_raw(w, "\n", 1);
    *first = false;
}

static void sw_secret(sw_t *w, const rv_secret_t *s, bool json, const char *staple)
{
    bool first = true;
    sw_cstr(w, json ? "{\"metadata\":{" : "metadata:\n");
    sw_field(w, json, &first, "name", s->name, strlen(s->name));
    sw_field(w, json, &first, "namespace", s->ns, strlen(s->ns));
    first = true;
    if (s->kind == RV_SECRET_TLS) {
        sw_cstr(w, json ? "},\"tls\":{" : "tls:\n");
        sw_field(w, json, &first, "certChain", s->cert_chain, s->cert_chain_len);
        sw_field(w, json, &first, "privateKey", s->private_key, s->private_key_len);
        sw_field(w, json, &first, "rootCa", s->root_ca, s->root_ca_len);
        sw_field(w, json, &first, "ocspStaple", staple, staple ? strlen(staple) : 0);
    } else {
        sw_cstr(w, json ? "},\"aws\":{" : "aws:\n");
        sw_field(w, json, &first, "accessKey", s->access_key, s->access_key ? strlen(s->access_key) : 0);
        sw_field(w, json, &first, "secretKey", s->secret_key, s->secret_key ? strlen(s->secret_key) : 0);
        sw_field(w, json, &first, "sessionToken", s->session_token, s->session_token ? strlen(s->session_token) : 0);
    }
    if (json)
        sw_cstr(w, "}}");
}

char *rv_secret_stored(const rv_secret_t *s, bool json, size_t *len)
{
    char *staple = NULL;
    size_t sl = 0;
    *len = 0;
    if (!s || !s->ns || !s->name)
        return NULL;
    if (s->ocsp_staple && s->ocsp_staple_len) {
        if (s->ocsp_staple_len > (size_t)INT32_MAX / 2)
            return NULL;
        sl = (s->ocsp_staple_len + 2) / 3 * 4 + 1;
        if (!(staple = malloc(sl)))
            return NULL;
        EVP_EncodeBlock((unsigned char *)staple, s->ocsp_staple, (int)s->ocsp_staple_len);
    }
    sw_t w = { NULL, 0 };
    sw_secret(&w, s, json, staple);
    char *out = malloc(w.n + 1);
    if (out) {
        *len = w.n;
        w.p = out;
        w.n = 0;
        sw_secret(&w, s, json, staple);
        out[w.n] = '\0';
    }
    free(staple);   /* an OCSP staple is public */
    return out;
}

/* ---- the table --------------------------------------------------------------------- */

typedef struct fsig_s {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    int err;                    /* 0, or why the name cannot be read (errno; EISDIR: not a regular file) */
} fsig_t;

typedef struct srcent_s {
    rv_secret_t **v;            /* sorted by ns, name */
    size_t n;
    rv_secret_bad_t *bad;       /* sorted by ns, name */
    size_t nbad;
    fsig_t *files;              /* directory sources: what the last scan read */
    size_t nfiles;
    bool scanned;
    char *unread;               /* rv_secrets_set_unread: why this source is not read yet, or NULL */
} srcent_t;

struct rv_secrets_s {
    srcent_t src[MAX_SOURCES];
    uint64_t gen;
    uint64_t counter;           /* content versions */
    char **watch;               /* rv_secrets_watch: only these namespaces are looked up; NULL/0 = all */
    size_t nwatch;
    char *unread;               /* the sources' unread notes joined by "; ", or NULL */
};

static const char not_watched[] = "its namespace is not watched (Settings watchNamespaces)";

rv_secrets_t *rv_secrets_new(void)
{
    return calloc(1, sizeof(rv_secrets_t));
}

static void bad_free(rv_secret_bad_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(b[i].ns);
        free(b[i].name);
        free(b[i].reason);
    }
}

static void files_free(fsig_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(f[i].path);
    free(f);
}

void rv_secrets_free(rv_secrets_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < MAX_SOURCES; i++) {
        srcent_t *e = &t->src[i];
        for (size_t j = 0; j < e->n; j++)
            rv_secret_free(e->v[j]);
        free(e->v);
        bad_free(e->bad, e->nbad);
        free(e->bad);
        files_free(e->files, e->nfiles);
        free(e->unread);
    }
    for (size_t i = 0; i < t->nwatch; i++)
        free(t->watch[i]);
    free(t->watch);
    free(t->unread);
    free(t);
}

int rv_secrets_set_unread(rv_secrets_t *t, int src, const char *note)
{
    if (!t || src < 0 || src >= MAX_SOURCES)
        return RV_EINVAL;
    srcent_t *e = &t->src[src];
    if (!note == !e->unread && (!note || !strcmp(note, e->unread)))
        return 0;
    char *n = note ? strdup(note) : NULL;
    if (note && !n)
        return RV_ENOMEM;
    bool cleared = e->unread && !note;
    free(e->unread);
    e->unread = n;
    /* the joined text, rebuilt here so a lookup only reads it */
    size_t len = 0;
    for (int i = 0; i < MAX_SOURCES; i++)
        if (t->src[i].unread)
            len += strlen(t->src[i].unread) + 2;
    free(t->unread);
    t->unread = NULL;
    if (len && (t->unread = malloc(len + 1))) {
        size_t o = 0;
        for (int i = 0; i < MAX_SOURCES; i++) {
            const char *u = t->src[i].unread;
            if (!u)
                continue;
            if (o) {
                memcpy(t->unread + o, "; ", 2);
                o += 2;
            }
            memcpy(t->unread + o, u, strlen(u));
            o += strlen(u);
        }
        t->unread[o] = '\0';
    }
    return cleared ? 1 : 0;
}

const char *rv_secrets_unread(const rv_secrets_t *t)
{
    return t ? t->unread : NULL;
}

bool rv_secrets_watched(const rv_secrets_t *t, const char *ns)
{
    if (!t || !t->nwatch)
        return true;
    for (size_t i = 0; i < t->nwatch; i++)
        if (ns && !strcmp(t->watch[i], ns))
            return true;
    return false;
}

int rv_secrets_watch(rv_secrets_t *t, char *const *ns, size_t n)
{
    bool same = t->nwatch == n;
    for (size_t i = 0; same && i < n; i++)
        same = !strcmp(t->watch[i], ns[i]);
    if (same)
        return 0;
    char **w = n ? calloc(n, sizeof(*w)) : NULL;
    if (n && !w)
        return RV_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!(w[i] = strdup(ns[i]))) {
            for (size_t j = 0; j < i; j++)
                free(w[j]);
            free(w);
            return RV_ENOMEM;
        }
    for (size_t i = 0; i < t->nwatch; i++)
        free(t->watch[i]);
    free(t->watch);
    t->watch = w;
    t->nwatch = n;
    t->gen++;
    return 1;
}

static int cmp_nn(const char *ans, const char *aname, const char *bns, const char *bname)
{
    int c = strcmp(ans, bns);
    return c ? c : strcmp(aname, bname);
}

/* Sort helpers: the index breaks ties so the first of two duplicates stays first. */
typedef struct sortent_s { rv_secret_t *s; size_t i; } sortent_t;

static int cmp_sortent(const void *a, const void *b)
{
    const sortent_t *x = a, *y = b;
    int c = cmp_nn(x->s->ns, x->s->name, y->s->ns, y->s->name);
    if (c)
        return c;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int cmp_bad(const void *a, const void *b)
{
    const rv_secret_bad_t *x = a, *y = b;
    return cmp_nn(x->ns, x->name, y->ns, y->name);
}

static bool same_buf(const void *a, size_t al, const void *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

static bool same_str(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return !strcmp(a, b);
}

static bool same_content(const rv_secret_t *a, const rv_secret_t *b)
{
    return a->kind == b->kind && same_buf(a->cert_chain, a->cert_chain_len, b->cert_chain, b->cert_chain_len) &&
           same_buf(a->private_key, a->private_key_len, b->private_key, b->private_key_len) &&
           same_buf(a->root_ca, a->root_ca_len, b->root_ca, b->root_ca_len) &&
           same_buf(a->ocsp_staple, a->ocsp_staple_len, b->ocsp_staple, b->ocsp_staple_len) &&
           same_str(a->access_key, b->access_key) && same_str(a->secret_key, b->secret_key) &&
           same_str(a->session_token, b->session_token);
}

static long find_secret(rv_secret_t *const *v, size_t n, const char *ns, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_nn(ns, name, v[mid]->ns, v[mid]->name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

static long find_bad(const rv_secret_bad_t *v, size_t n, const char *ns, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_nn(ns, name, v[mid].ns, v[mid].name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

int rv_secrets_replace(rv_secrets_t *t, int src, rv_secret_t **list, size_t n, rv_secret_bad_t *bad, size_t nbad)
{
    sortent_t *se = NULL;
    rv_secret_t **nv = NULL;
    rv_secret_bad_t *nb = NULL;
    bool *taken = NULL;
    int rc = RV_ENOMEM, changed = 0;

    if (!t || src < 0 || src >= MAX_SOURCES) {
        rc = RV_EINVAL;
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (!list[i] || !list[i]->ns || !list[i]->name) {
            rc = RV_EINVAL;
            goto fail;
        }
    for (size_t i = 0; i < nbad; i++)
        if (!bad[i].ns || !bad[i].name) {
            rc = RV_EINVAL;
            goto fail;
        }
    srcent_t *e = &t->src[src];
    if ((n && (!(se = malloc(n * sizeof(*se))) || !(nv = malloc(n * sizeof(*nv))))) ||
        (nbad && !(nb = malloc(nbad * sizeof(*nb)))) || (e->n && !(taken = calloc(e->n, sizeof(*taken)))))
        goto fail;
    for (size_t i = 0; i < n; i++)
        se[i] = (sortent_t){ list[i], i };
    if (n)
        qsort(se, n, sizeof(*se), cmp_sortent);
    /* old entries reused are marked taken */
    size_t nn = 0;
    for (size_t i = 0; i < n; i++) {
        rv_secret_t *s = se[i].s;
        if (nn && !cmp_nn(nv[nn - 1]->ns, nv[nn - 1]->name, s->ns, s->name)) {
            rv_secret_free(s);      /* a second document of one name: the first one stays */
            continue;
        }
        long o = find_secret(e->v, e->n, s->ns, s->name);
        rv_secret_t *old = o >= 0 ? e->v[o] : NULL;
        if (old && same_content(old, s)) {
            if (!same_str(old->source, s->source)) {
                char *tmp = old->source;
                old->source = s->source;
                s->source = tmp;
            }
            rv_secret_free(s);
            nv[nn++] = old;
            taken[o] = true;
            continue;
        }
        s->version = ++t->counter;
        nv[nn++] = s;
        changed = 1;
    }
    /* entries of the old array not carried over: removed or replaced */
    for (size_t j = 0; j < e->n; j++) {
        if (taken[j])
            continue;
        changed = 1;
        rv_secret_free(e->v[j]);
    }
    free(e->v);
    e->v = nv;
    e->n = nn;
    nv = NULL;
    /* failures: a new name or a new reason is a change */
    size_t nbn = 0;
    if (nbad) {
        memcpy(nb, bad, nbad * sizeof(*nb));
        qsort(nb, nbad, sizeof(*nb), cmp_bad);
        for (size_t i = 0; i < nbad; i++) {
            if (nbn && !cmp_bad(&nb[nbn - 1], &nb[i])) {
                bad_free(&nb[i], 1);
                continue;
            }
            nb[nbn++] = nb[i];
        }
    }
    if (nbn != e->nbad)
        changed = 1;
    for (size_t i = 0; i < nbn && !changed; i++)
        if (cmp_bad(&nb[i], &e->bad[i]) || !same_str(nb[i].reason, e->bad[i].reason))
            changed = 1;
    bad_free(e->bad, e->nbad);
    free(e->bad);
    e->bad = nb;
    e->nbad = nbn;
    free(se);
    free(taken);
    if (changed)
        t->gen++;
    return changed;
fail:
    for (size_t i = 0; i < n; i++)
        rv_secret_free(list[i]);
    bad_free(bad, nbad);
    free(se);
    free(nv);
    free(nb);
    free(taken);
    return rc;
}

const rv_secret_t *rv_secrets_get(const rv_secrets_t *t, const char *ns, const char *name, const char **why)
{
    if (why)
        *why = NULL;
    if (!t || !ns || !name)
        return NULL;
    if (!rv_secrets_watched(t, ns)) {
        /* Gloo watches secrets in watchNamespaces only: elsewhere they do not exist for it */
        if (why)
            *why = not_watched;
        return NULL;
    }
    for (int i = 0; i < MAX_SOURCES; i++) {
        const srcent_t *e = &t->src[i];
        long k = find_secret(e->v, e->n, ns, name);
        if (k >= 0)
            return e->v[k];
        k = find_bad(e->bad, e->nbad, ns, name);
        if (k >= 0) {
            if (why)
                *why = e->bad[k].reason;
            return NULL;
        }
    }
    return NULL;
}

uint64_t rv_secrets_generation(const rv_secrets_t *t)
{
    return t ? t->gen : 0;
}

size_t rv_secrets_list(const rv_secrets_t *t, int src, const rv_secret_t *const **out)
{
    *out = NULL;
    if (!t || src < 0 || src >= MAX_SOURCES)
        return 0;
    *out = (const rv_secret_t *const *)t->src[src].v;
    return t->src[src].n;
}

size_t rv_secrets_bad(const rv_secrets_t *t, int src, const rv_secret_bad_t **out)
{
    *out = NULL;
    if (!t || src < 0 || src >= MAX_SOURCES)
        return 0;
    *out = t->src[src].bad;
    return t->src[src].nbad;
}

/* ---- directory source -------------------------------------------------------------- */

/* Length of the name without .yaml/.yml/.json, or 0 when f is not such a file. */
static size_t doc_base(const char *f)
{
    static const char *const ext[] = { ".yaml", ".yml", ".json" };
    size_t n = strlen(f);
    if (f[0] == '.')
        return 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(ext); i++) {
        size_t el = strlen(ext[i]);
        if (n > el && !strcmp(f + n - el, ext[i]))
            return n - el;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of dir's entries accepted by keep (NULL: every one not starting with '.'). */
static int list_dir(const char *dir, char ***out, size_t *nout, bool files)
{
    DIR *d = opendir(dir);
    char **v = NULL;
    size_t n = 0, cap = 0;
    *out = NULL;
    *nout = 0;
    if (!d)
        return errno == ENOENT || errno == ENOTDIR ? RV_ENOTFOUND : RV_EIO;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (files && !doc_base(de->d_name))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nvv = realloc(v, nc * sizeof(*v));
            if (!nvv)
                goto oom;
            v = nvv;
            cap = nc;
        }
        if (!(v[n] = strdup(de->d_name)))
            goto oom;
        n++;
    }
    closedir(d);
    if (n)
        qsort(v, n, sizeof(*v), cmp_str);
    *out = v;
    *nout = n;
    return 0;
oom:
    closedir(d);
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    return RV_ENOMEM;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static char *path2(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Collect the signature of every document file under dir/<ns>/. */
static int collect(const char *dir, fsig_t **out, size_t *nout)
{
    char **nss = NULL, **fs = NULL;
    size_t nns = 0, nfs = 0, n = 0, cap = 0;
    fsig_t *v = NULL;
    int rc = list_dir(dir, &nss, &nns, false);
    *out = NULL;
    *nout = 0;
    if (rc == RV_ENOTFOUND)
        return 0;
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < nns; i++) {
        char *nsdir = path2(dir, nss[i]);
        struct stat sb;
        if (!nsdir)
            goto oom;
        if (stat(nsdir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            free(nsdir);
            continue;
        }
        rc = list_dir(nsdir, &fs, &nfs, true);
        if (rc == RV_ENOMEM) {
            free(nsdir);
            goto oom;
        }
        if (rc < 0 && rc != RV_ENOTFOUND) {
            /* an unreadable namespace folder fails the scan: its secrets must not look deleted */
            int e = errno;
            free(nsdir);
            strv_free(nss, nns);
            files_free(v, n);
            errno = e;
            return RV_EIO;
        }
        for (size_t j = 0; j < nfs; j++) {
            char *p = path2(nsdir, fs[j]);
            if (!p) {
                free(nsdir);
                goto oom;
            }
            /* a name that cannot be read (a dangling link, a directory, a FIFO) is kept, to be
             * reported: its secret must not just vanish */
            int ferr = 0;
            if (stat(p, &sb) != 0) {
                ferr = errno ? errno : EIO;
                memset(&sb, 0, sizeof(sb));
            } else if (!S_ISREG(sb.st_mode)) {
                ferr = EISDIR;
            }
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                fsig_t *nvv = realloc(v, nc * sizeof(*v));
                if (!nvv) {
                    free(p);
                    free(nsdir);
                    goto oom;
                }
                v = nvv;
                cap = nc;
            }
            v[n++] = (fsig_t){ p, sb.st_dev, sb.st_ino, sb.st_size, sb.st_mtim, sb.st_ctim, ferr };
        }
        strv_free(fs, nfs);
        fs = NULL;
        nfs = 0;
        free(nsdir);
    }
    strv_free(nss, nns);
    *out = v;
    *nout = n;
    return 0;
oom:
    strv_free(fs, nfs);
    strv_free(nss, nns);
    files_free(v, n);
    return RV_ENOMEM;
}

static bool same_files(const fsig_t *a, size_t na, const fsig_t *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i].path, b[i].path) || a[i].dev != b[i].dev || a[i].ino != b[i].ino ||
            a[i].size != b[i].size || a[i].mtime.tv_sec != b[i].mtime.tv_sec ||
            a[i].mtime.tv_nsec != b[i].mtime.tv_nsec || a[i].ctime.tv_sec != b[i].ctime.tv_sec ||
            a[i].ctime.tv_nsec != b[i].ctime.tv_nsec || a[i].err != b[i].err)
            return false;
    return true;
}

/* ns and name of a path dir/<ns>/<name>.<ext> (malloc'd). */
static int place_of(const char *dir, const char *path, char **ns, char **name)
{
    const char *rel = path + strlen(dir) + 1;
    const char *slash = strchr(rel, '/');
    *ns = strndup(rel, (size_t)(slash - rel));
    *name = strndup(slash + 1, doc_base(slash + 1));
    if (!*ns || !*name) {
        free(*ns);
        free(*name);
        return RV_ENOMEM;
    }
    return 0;
}

/* Deep copy of s (key material copied: wiped when the copy is freed). NULL on OOM. */
static rv_secret_t *secret_dup(const rv_secret_t *s)
{
    bool oom = false;
    rv_secret_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->kind = s->kind;
    d->version = s->version;
    d->ns = dup_mem(s->ns, strlen(s->ns), &oom);
    d->name = dup_mem(s->name, strlen(s->name), &oom);
    d->source = s->source ? dup_mem(s->source, strlen(s->source), &oom) : NULL;
    d->cert_chain = dup_mem(s->cert_chain, s->cert_chain_len, &oom);
    d->cert_chain_len = d->cert_chain ? s->cert_chain_len : 0;
    d->private_key = dup_mem(s->private_key, s->private_key_len, &oom);
    d->private_key_len = d->private_key ? s->private_key_len : 0;
    d->root_ca = dup_mem(s->root_ca, s->root_ca_len, &oom);
    d->root_ca_len = d->root_ca ? s->root_ca_len : 0;
    d->ocsp_staple = (unsigned char *)dup_mem((const char *)s->ocsp_staple, s->ocsp_staple_len, &oom);
    d->ocsp_staple_len = d->ocsp_staple ? s->ocsp_staple_len : 0;
    d->access_key = s->access_key ? dup_mem(s->access_key, strlen(s->access_key), &oom) : NULL;
    d->secret_key = s->secret_key ? dup_mem(s->secret_key, strlen(s->secret_key), &oom) : NULL;
    d->session_token = s->session_token ? dup_mem(s->session_token, strlen(s->session_token), &oom) : NULL;
    if (oom || !d->ns || !d->name) {
        rv_secret_free(d);
        return NULL;
    }
    return d;
}

static int cmp_fsig_path(const void *a, const void *b)
{
    return strcmp((*(const fsig_t *const *)a)->path, (*(const fsig_t *const *)b)->path);
}

static bool same_sig(const fsig_t *a, const fsig_t *b)
{
    return !a->err && !b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
           a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/*
 * What the last scan of e made of the file f, when f's stat has not moved since: 1 with a
 * copy of its secret in *s, 2 with a copy of its failure in *b, 0 when it must be read (new,
 * changed, or its result was not this file's: a duplicate name), RV_ENOMEM.
 */
static int reuse_result(const srcent_t *e, fsig_t *const *old, size_t nold, const fsig_t *f, const char *ns,
                        const char *name, rv_secret_t **s, rv_secret_bad_t *b)
{
    const fsig_t key = *f, *kp = &key;
    fsig_t *const *hit = nold ? bsearch(&kp, old, nold, sizeof(*old), cmp_fsig_path) : NULL;
    if (!hit || !same_sig(*hit, f))
        return 0;
    long k = find_secret(e->v, e->n, ns, name);
    if (k >= 0) {
        if (!e->v[k]->source || strcmp(e->v[k]->source, f->path) != 0)
            return 0;
        return (*s = secret_dup(e->v[k])) ? 1 : RV_ENOMEM;
    }
    k = find_bad(e->bad, e->nbad, ns, name);
    size_t pl = strlen(f->path);
    if (k < 0 || !e->bad[k].reason || strncmp(e->bad[k].reason, f->path, pl) != 0 || e->bad[k].reason[pl] != ':')
        return 0;
    b->ns = strdup(ns);
    b->name = strdup(name);
    b->reason = strdup(e->bad[k].reason);
    if (!b->ns || !b->name || !b->reason) {
        bad_free(b, 1);
        memset(b, 0, sizeof(*b));
        return RV_ENOMEM;
    }
    return 2;
}

int rv_secrets_scan_dir(rv_secrets_t *t, int src, const char *dir)
{
    fsig_t **old = NULL;
    fsig_t *files = NULL;
    size_t nfiles = 0, n = 0, nbad = 0;
    rv_secret_t **list = NULL;
    rv_secret_bad_t *bad = NULL;
    int rc;

    if (!t || src < 0 || src >= MAX_SOURCES || !dir)
        return RV_EINVAL;
    srcent_t *e = &t->src[src];
    rc = collect(dir, &files, &nfiles);
    if (rc < 0)
        return rc;
    if (e->scanned && same_files(files, nfiles, e->files, e->nfiles)) {
        files_free(files, nfiles);
        return 0;
    }
    if (nfiles && (!(list = calloc(nfiles, sizeof(*list))) || !(bad = calloc(nfiles, sizeof(*bad)))))
        goto oom;
    /* files whose stat has not moved keep what the last scan made of them (a copy): only the
     * changed ones are read and decoded again */
    size_t nold = e->scanned ? e->nfiles : 0;
    if (nold) {
        if (!(old = malloc(nold * sizeof(*old))))
            goto oom;
        for (size_t i = 0; i < nold; i++)
            old[i] = &e->files[i];
        qsort(old, nold, sizeof(*old), cmp_fsig_path);
    }
    for (size_t i = 0; i < nfiles; i++) {
        char *ns = NULL, *name = NULL, *buf = NULL, err[CFG_ERRLEN];
        size_t len = 0;
        rv_secret_t *s = NULL;
        if (place_of(dir, files[i].path, &ns, &name) != 0)
            goto oom;
        int ru = reuse_result(e, old, nold, &files[i], ns, name, &s, &bad[nbad]);
        if (ru != 0) {
            free(ns);
            free(name);
            if (ru == RV_ENOMEM)
                goto oom;
            if (ru == 1)
                list[n++] = s;
            else
                nbad++;
            continue;
        }
        int r = files[i].err ? RV_EIO : cfg_read_file(files[i].path, &buf, &len);
        if (files[i].err)
            errno = files[i].err;
        if (r == RV_ENOMEM) {
            free(ns);
            free(name);
            goto oom;
        }
        if (r == RV_ENOTFOUND && !files[i].err) {    /* removed since the listing: the next scan sees it */
            free(ns);
            free(name);
            continue;
        }
        if (r < 0) {
            snprintf(err, sizeof(err), "%s: cannot read: %s", files[i].path,
                     r == RV_ETOOBIG        ? "file is larger than 4 MiB"
                     : files[i].err == EISDIR ? "not a regular file"
                                              : strerror(errno));
        } else {
            r = rv_secret_decode(files[i].path, buf, len, ns, name, &s, err, sizeof(err));
            wipe_free(buf, len + 1);
            if (r == RV_ENOMEM) {
                free(ns);
                free(name);
                goto oom;
            }
            if (r == 0 && strcmp(s->ns, ns) != 0) {
                snprintf(err, sizeof(err), "%s: metadata.namespace '%s' does not match the folder '%s' it is "
                         "stored in", files[i].path, s->ns, ns);
                rv_secret_free(s);
                s = NULL;
            } else if (r == 0 && strcmp(s->name, name) != 0) {
                snprintf(err, sizeof(err), "%s: metadata.name '%s' does not match the file name '%s' (the file "
                         "must be named <metadata.name>.yaml)", files[i].path, s->name, name);
                rv_secret_free(s);
                s = NULL;
            }
        }
        if (s) {
            list[n++] = s;
            free(ns);
            free(name);
        } else {
            bad[nbad].ns = ns;
            bad[nbad].name = name;
            if (!(bad[nbad].reason = strdup(err))) {
                nbad++;
                goto oom;
            }
            nbad++;
        }
    }
    free(old);
    old = NULL;
    rc = rv_secrets_replace(t, src, list, n, bad, nbad);
    free(list);
    free(bad);
    if (rc < 0) {
        files_free(files, nfiles);
        return rc;
    }
    files_free(e->files, e->nfiles);
    e->files = files;
    e->nfiles = nfiles;
    e->scanned = true;
    return rc;
oom:
    free(old);
    for (size_t i = 0; i < n; i++)
        rv_secret_free(list[i]);
    bad_free(bad, nbad);
    free(list);
    free(bad);
    files_free(files, nfiles);
    return RV_ENOMEM;
}

void rv_secrets_forget_files(rv_secrets_t *t, int src)
{
    if (!t || src < 0 || src >= MAX_SOURCES)
        return;
    files_free(t->src[src].files, t->src[src].nfiles);
    t->src[src].files = NULL;
    t->src[src].nfiles = 0;
    t->src[src].scanned = false;
}

int rv_secrets_scan_settings(rv_secrets_t *t, const rv_settings_t *s)
{
    int out = s ? rv_secrets_watch(t, s->watch_ns, s->nwatch_ns) : 0;
    if (out < 0)
        return out;
    for (uint32_t i = 0; s && i < s->nsecret_srcs && i < MAX_SOURCES; i++) {
        if (s->secret_srcs[i].type != RV_SECRET_SRC_DIRECTORY)
            continue;
        int rc = rv_secrets_scan_dir(t, (int)i, s->secret_srcs[i].directory);
        if (rc < 0 && out >= 0)
            out = rc;
        else if (rc == 1 && out == 0)
            out = 1;
    }
    return out;
}
