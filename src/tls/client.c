/*
 * client.c - TLS client contexts for upstream connections (see client.h): PEM loading from
 * memory, verification setup, protocol parameters, the salted context fingerprint that keys
 * the upstream pool, and the failure text the access log shows.
 */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "tls/client.h"
#include "tls/tls.h"

static unsigned char id_salt[32];
static pthread_once_t salt_once = PTHREAD_ONCE_INIT;
static _Atomic(rv_tls_session_hook_t) session_hook;

/* A random salt, so the fingerprint of a context (which /config_dump shows) says nothing
 * about the key material that went into it. */
static void salt_init(void)
{
    if (RAND_bytes(id_salt, sizeof(id_salt)) != 1)
        abort();    /* no randomness at all: nothing TLS can be trusted */
}

void rv_tls_client_set_session_hook(rv_tls_session_hook_t hook)
{
    atomic_store(&session_hook, hook);
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    rv_tls_session_hook_t h = atomic_load_explicit(&session_hook, memory_order_relaxed);
    return h ? h(ssl, sess) : 0;
}

/* The first queued OpenSSL error as text (queue cleared), or "" */
static void ssl_errtext(char *out, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    out[0] = '\0';
    if (e) {
        const char *r = ERR_reason_error_string(e);
        if (r)
            snprintf(out, cap, "%s", r);
        else
            ERR_error_string_n(e, out, cap);
    }
    ERR_clear_error();
}

static void hash_part(EVP_MD_CTX *h, const void *p, size_t n)
{
    uint64_t len = n;
    EVP_DigestUpdate(h, &len, sizeof(len));
    if (n)
        EVP_DigestUpdate(h, p, n);
}

static void hash_strs(EVP_MD_CTX *h, const char *const *v, uint32_t n)
{
    hash_part(h, &n, sizeof(n));
    for (uint32_t i = 0; i < n; i++)
        hash_part(h, v[i], strlen(v[i]));
}

static uint64_t fingerprint(const rv_tls_client_opts_t *o)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    uint64_t id = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (!h)
        return 0;
    uint8_t flags[4] = { (uint8_t)o->min_ver, (uint8_t)o->max_ver, o->allow_reneg, o->one_way };
    if (EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1) {
        hash_part(h, id_salt, sizeof(id_salt));
        hash_part(h, o->cert, o->cert ? o->cert_len : 0);
        hash_part(h, o->key, o->key ? o->key_len : 0);
        hash_part(h, o->ca, o->ca ? o->ca_len : 0);
        hash_part(h, flags, sizeof(flags));
        hash_strs(h, o->ciphers, o->nciphers);
        hash_strs(h, o->curves, o->ncurves);
        hash_strs(h, o->san, o->nsan);
        if (EVP_DigestFinal_ex(h, md, &mdlen) == 1 && mdlen >= 8)
            memcpy(&id, md, sizeof(id));
    }
    EVP_MD_CTX_free(h);
    return id ? id : 1;
}

/* Join names with ':' for OpenSSL's list setters; which: 1 = TLS 1.3 suites ("TLS_*"), 0 =
 * the others, -1 = all. malloc'd, NULL on OOM; "" when none match. */
static char *join_names(const char *const *v, uint32_t n, int which)
{
    size_t len = 1;
    for (uint32_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *s = malloc(len), *p = s;
    if (!s)
        return NULL;
    *p = '\0';
    for (uint32_t i = 0; i < n; i++) {
        bool tls13 = !strncmp(v[i], "TLS_", 4);
        if (which >= 0 && tls13 != (which == 1))
            continue;
        size_t k = strlen(v[i]);
        if (p != s)
            *p++ = ':';
        memcpy(p, v[i], k);
        p += k;
        *p = '\0';
    }
    return s;
}

static const int proto_of[] = { 0, TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION };

static int fail(char *err, size_t errlen, int rc, const char *fmt, const char *a, const char *b)
{
    snprintf(err, errlen, fmt, a, b);
    return rc;
}

/* Certificate chain from PEM: the first certificate is the leaf, the rest its chain. */
static int load_chain(SSL_CTX *ctx, const rv_tls_client_opts_t *o, char *err, size_t errlen)
{
    char why[200];
    BIO *bio = BIO_new_mem_buf(o->cert, (int)o->cert_len);
    if (!bio)
        return RV_ENOMEM;
    int rc = 0;
    X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    if (!leaf) {
        ssl_errtext(why, sizeof(why));
        rc = fail(err, errlen, RV_EPARSE, "%s: no PEM certificate could be read (%s)", o->cert_src,
                  why[0] ? why : "empty");
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
        ssl_errtext(why, sizeof(why));
        rc = fail(err, errlen, RV_EPARSE, "%s: certificate refused (%s)", o->cert_src, why);
        goto out;
    }
    X509 *ca;
    while ((ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
            X509_free(ca);
            ssl_errtext(why, sizeof(why));
            rc = fail(err, errlen, RV_EPARSE, "%s: chain certificate refused (%s)", o->cert_src, why);
            goto out;
        }
    ERR_clear_error();      /* the end of the PEM stream */
out:
    X509_free(leaf);
    BIO_free(bio);
    return rc;
}

static int load_key(SSL_CTX *ctx, const rv_tls_client_opts_t *o, char *err, size_t errlen)
{
    char why[200];
    BIO *bio = BIO_new_mem_buf(o->key, (int)o->key_len);
    if (!bio)
        return RV_ENOMEM;
    int rc = 0;
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
    if (!pk) {
        ssl_errtext(why, sizeof(why));
        rc = fail(err, errlen, RV_EPARSE, "%s: no PEM private key could be read (%s)", o->key_src,
                  why[0] ? why : "empty");
    } else if (SSL_CTX_use_PrivateKey(ctx, pk) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        rc = fail(err, errlen, RV_EPARSE, "%s: the private key does not match the certificate of %s", o->key_src,
                  o->cert_src);
    }
    EVP_PKEY_free(pk);
    BIO_free(bio);
    return rc;
}

static int load_ca(SSL_CTX *ctx, const rv_tls_client_opts_t *o, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(o->ca, (int)o->ca_len);
    if (!bio)
        return RV_ENOMEM;
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    int n = 0, rc = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(st, x) == 1)
            n++;
        X509_free(x);
    }
    ERR_clear_error();
    if (!n)
        rc = fail(err, errlen, RV_EPARSE, "%s: no PEM CA certificate could be read%s", o->ca_src, "");
    BIO_free(bio);
    return rc;
}

int rv_tls_client_new(const rv_tls_client_opts_t *o, rv_tls_client_t **out, char *err, size_t errlen)
{
    char why[200];
    int rc = RV_ENOMEM;
    *out = NULL;
    err[0] = '\0';
    pthread_once(&salt_once, salt_init);
    ERR_clear_error();
    rv_tls_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return RV_ENOMEM;
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx)
        goto bad;
    SSL_CTX *ctx = c->ctx;
    if (rv_tls_ctx_defaults(ctx, false) != 0)
        goto bad;
    if (!o->allow_reneg)
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_min_proto_version(ctx, o->min_ver > 0 && o->min_ver <= 4 ? proto_of[o->min_ver] : TLS1_2_VERSION);
    if (o->max_ver > 0 && o->max_ver <= 4)
        SSL_CTX_set_max_proto_version(ctx, proto_of[o->max_ver]);
    if (o->nciphers) {
        char *l12 = join_names(o->ciphers, o->nciphers, 0), *l13 = join_names(o->ciphers, o->nciphers, 1);
        bool ok = l12 && l13;
        if (ok && l12[0] && SSL_CTX_set_cipher_list(ctx, l12) != 1)
            ok = false;
        if (ok && l13[0] && SSL_CTX_set_ciphersuites(ctx, l13) != 1)
            ok = false;
        if (ok && !l13[0] && l12[0])
            SSL_CTX_set_max_proto_version(ctx, o->max_ver > 0 && o->max_ver < 4 ? proto_of[o->max_ver]
                                                                                 : TLS1_2_VERSION);
        bool oom = !l12 || !l13;
        free(l12);
        free(l13);
        if (oom)
            goto bad;
        if (!ok) {
            ssl_errtext(why, sizeof(why));
            rc = fail(err, errlen, RV_EPARSE, "parameters.cipherSuites: no usable cipher suite in the list (%s)%s",
                      why, "");
            goto bad;
        }
    }
    if (o->ncurves) {
        char *l = join_names(o->curves, o->ncurves, -1);
        if (!l)
            goto bad;
        int ok = SSL_CTX_set1_groups_list(ctx, l);
        free(l);
        if (ok != 1) {
            ssl_errtext(why, sizeof(why));
            rc = fail(err, errlen, RV_EPARSE, "parameters.ecdhCurves: unknown curve in the list (%s)%s", why, "");
            goto bad;
        }
    }
    if (o->cert && o->key && !o->one_way) {
        if ((rc = load_chain(ctx, o, err, errlen)) != 0 || (rc = load_key(ctx, o, err, errlen)) != 0)
            goto bad;
        c->has_cert = true;
    }
    if (o->ca) {
        if ((rc = load_ca(ctx, o, err, errlen)) != 0)
            goto bad;
        c->has_ca = true;
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ssl_errtext(why, sizeof(why));
        rc = fail(err, errlen, RV_EPARSE, "the system trust store cannot be loaded (%s)%s", why, "");
        goto bad;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (o->nsan) {
        X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        for (uint32_t i = 0; i < o->nsan; i++)
            if (X509_VERIFY_PARAM_add1_host(vp, o->san[i], 0) != 1) {
                ERR_clear_error();
                rc = fail(err, errlen, RV_EPARSE, "verifySubjectAltName: '%s' cannot be checked%s", o->san[i], "");
                goto bad;
            }
        c->check_san = true;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    /* rivet speaks HTTP/1.1 upstream: say so, so an ALPN-aware server never picks h2 */
    static const unsigned char alpn[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn)) != 0)
        goto bad;
    c->id = fingerprint(o);
    ERR_clear_error();
    *out = c;
    return 0;
bad:
    ERR_clear_error();
    if (rc == RV_ENOMEM && !err[0])
        snprintf(err, errlen, "out of memory");
    rv_tls_client_free(c);
    return rc;
}

void rv_tls_client_free(rv_tls_client_t *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

int rv_tls_client_verify_name(const rv_tls_client_t *c, SSL *ssl, rv_str_t verify_name)
{
    char name[256];
    if (c->check_san)
        return 0;
    if (!verify_name.len || verify_name.len >= sizeof(name))
        return RV_EINVAL;
    memcpy(name, verify_name.ptr, verify_name.len);
    name[verify_name.len] = '\0';
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) : SSL_set1_host(ssl, name);
    if (ok != 1) {
        ERR_clear_error();
        return RV_EINVAL;
    }
    if (!is_ip)
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return 0;
}

size_t rv_tls_client_failure(SSL *ssl, const char *what, char *out, size_t cap)
{
    char why[200];
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    int n;
    if (v != X509_V_OK) {
        ERR_clear_error();
        n = snprintf(out, cap, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    } else {
        ssl_errtext(why, sizeof(why));
        n = snprintf(out, cap, "%s", why[0] ? why : what ? what : "TLS handshake failed");
    }
    if (n < 0)
        n = 0;
    return (size_t)n >= cap ? cap - 1 : (size_t)n;
}
