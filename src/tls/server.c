/*
 * server.c - downstream TLS listeners: chain contexts, SNI selection in the ClientHello
 * callback, client certificate checks, OCSP stapling, ALPN, session ticket keys and the
 * x-forwarded-client-cert identity. The contract and the rules are in server.h.
 */
#include "tls/server.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/err.h"

typedef struct chain_s {
    SSL_CTX *ctx;
    uint32_t index;
    char **sni;
    uint32_t nsni;
    char **san;
    uint32_t nsan;
    int min_ver, max_ver;
    char *ciphers, *curves;     /* ':'-joined, NULL = defaults */
    int verify_mode;
    bool mtls, required, no_resume;
    unsigned char *ocsp;
    size_t ocsp_len;
} chain_t;

typedef struct name_s {
    const char *name;           /* exact name, or the suffix of "*.suffix" */
    size_t len;
    uint32_t chain;
} name_t;

struct rv_tls_server_s {
    SSL_CTX *base;
    chain_t **chains;
    uint32_t n, cap;
    name_t *exact, *wild;
    uint32_t nexact, nwild;
    uint32_t def;
};

static int idx_server = -1, idx_chain = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static void free_server(rv_tls_server_t *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n; i++) {
        chain_t *c = s->chains[i];
        SSL_CTX_free(c->ctx);
        for (uint32_t k = 0; k < c->nsni; k++)
            free(c->sni[k]);
        free(c->sni);
        for (uint32_t k = 0; k < c->nsan; k++)
            free(c->san[k]);
        free(c->san);
        free(c->ciphers);
        free(c->curves);
        free(c->ocsp);
        free(c);
    }
    free(s->chains);
    free(s->exact);
    free(s->wild);
    free(s);
}

/* ex_data free of the base context: the last session using the listener is gone. */
static void server_exfree(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free_server(ptr);
}

static void idx_init(void)
{
    idx_server = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, server_exfree);
    idx_chain = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* ---- session tickets -------------------------------------------------------------------- */

#define TICKET_EPOCH_S 3600

static unsigned char ticket_master[32];
static pthread_once_t ticket_once = PTHREAD_ONCE_INIT;

static void ticket_init(void)
{
    if (RAND_bytes(ticket_master, sizeof(ticket_master)) != 1)
        abort();    /* no randomness at boot: nothing safe to do */
}

void rv_tls_tickets_init(void)
{
    pthread_once(&ticket_once, ticket_init);
}

typedef struct tkeys_s {
    uint64_t epoch;
    bool valid;
    unsigned char name[16], aes[32], mac[32];
} tkeys_t;

static __thread tkeys_t tk_cache[2];

static void derive(const char *label, uint64_t epoch, unsigned char out[32])
{
    unsigned char msg[16];
    size_t l = strlen(label);
    memcpy(msg, label, l);
    for (int i = 0; i < 8; i++)
        msg[l + (size_t)i] = (unsigned char)(epoch >> (56 - 8 * i));
    unsigned int outlen = 32;
    HMAC(EVP_sha256(), ticket_master, sizeof(ticket_master), msg, l + 8, out, &outlen);
}

/* The keys of an epoch (cached per thread: the current and the previous one). */
static const tkeys_t *tkeys(uint64_t epoch)
{
    tkeys_t *k = &tk_cache[epoch & 1];
    if (k->valid && k->epoch == epoch)
        return k;
    unsigned char tag[32];
    derive("name", epoch, tag);
    memcpy(k->name, "rvtk", 4);
    for (int i = 0; i < 8; i++)
        k->name[4 + i] = (unsigned char)(epoch >> (56 - 8 * i));
    memcpy(k->name + 12, tag, 4);
    derive("aes", epoch, k->aes);
    derive("mac", epoch, k->mac);
    k->epoch = epoch;
    k->valid = true;
    return k;
}

static int64_t ticket_clock_offset;    /* tests only */

void rv_tls_tickets_test_offset(int64_t seconds)
{
    ticket_clock_offset = seconds;
}

static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
                     EVP_MAC_CTX *hctx, int enc)
{
    uint64_t now = (uint64_t)(time(NULL) + ticket_clock_offset) / TICKET_EPOCH_S;
    const tkeys_t *k;
    int ret = 1;
    if (enc) {
        k = tkeys(now);
        memcpy(key_name, k->name, 16);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        if (!EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv))
            return -1;
    } else {
        if (memcmp(key_name, "rvtk", 4) != 0)
            return 0;
        uint64_t e = 0;
        for (int i = 0; i < 8; i++)
            e = (e << 8) | key_name[4 + i];
        if (e != now && e + 1 != now)
            return 0;               /* expired key: full handshake, new ticket */
        k = tkeys(e);
        if (memcmp(key_name, k->name, 16) != 0)
            return 0;
        if (!EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv))
            return -1;
        /* 2: valid, and issue a new ticket. Always in TLS 1.3, as OpenSSL does with its own
         * keys: clients use a ticket once (RFC 8446 C.4), so a resumption that hands out no
         * new ticket leaves them a full handshake for their next connection (measured: wrk
         * alternated full and resumed handshakes, half of nginx's resumption rate). TLS 1.2
         * tickets are reusable: renewed only when issued under the previous key. */
        ret = e == now && SSL_version(ssl) < TLS1_3_VERSION ? 1 : 2;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->mac, sizeof(k->mac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_MAC_CTX_set_params(hctx, params))
        return -1;
    return ret;
}

/* ---- callbacks ------------------------------------------------------------------------- */

static bool san_matches(X509 *cert, char *const *want, uint32_t n)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool ok = false;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !ok; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const ASN1_STRING *v = NULL;
        if (g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL)
            v = g->d.ia5;
        if (!v)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(v);
        size_t l = (size_t)ASN1_STRING_length(v);
        for (uint32_t k = 0; k < n && !ok; k++)
            ok = strlen(want[k]) == l && memcmp(want[k], p, l) == 0;
    }
    GENERAL_NAMES_free(gens);
    return ok;
}

/* verifySubjectAltName: the client's leaf certificate must carry one of the names. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
    if (!ok || X509_STORE_CTX_get_error_depth(x) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    const chain_t *c = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), idx_chain) : NULL;
    if (!c || !c->nsan)
        return ok;
    if (san_matches(X509_STORE_CTX_get_current_cert(x), c->san, c->nsan))
        return 1;
    X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

static int ocsp_cb(SSL *ssl, void *arg)
{
    const chain_t *c = arg;
    if (!c || !c->ocsp)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = OPENSSL_malloc(c->ocsp_len);
    if (!copy)
        return SSL_TLSEXT_ERR_NOACK;
    memcpy(copy, c->ocsp, c->ocsp_len);
    if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)c->ocsp_len)) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* rivet speaks HTTP/1.1: select it when offered, otherwise go on without ALPN. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *o = NULL;
    if (SSL_select_next_proto(&o, outlen, h11, sizeof(h11) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

/* Server name from a raw server_name extension (RFC 6066 3), or len 0. */
static size_t parse_sni(const unsigned char *p, size_t len, char *out, size_t cap)
{
    if (len < 5)
        return 0;
    size_t list = ((size_t)p[0] << 8) | p[1];
    if (list + 2 > len || list < 3 || p[2] != TLSEXT_NAMETYPE_host_name)
        return 0;
    size_t n = ((size_t)p[3] << 8) | p[4];
    if (n == 0 || n + 5 > len || n >= cap)
        return 0;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)((p[5 + i] >= 'A' && p[5 + i] <= 'Z') ? p[5 + i] + 32 : p[5 + i]);
    out[n] = 0;
    return n;
}

/* Before version negotiation: pick the chain and put its settings on this session. */
static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
    const rv_tls_server_t *s = arg;
    const unsigned char *ext;
    size_t extlen;
    char name[256];
    size_t nlen = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &extlen))
        nlen = parse_sni(ext, extlen, name, sizeof(name));
    const chain_t *c = s->chains[rv_tls_server_select(s, nlen ? name : NULL, nlen)];
    if (SSL_set_SSL_CTX(ssl, c->ctx) != c->ctx)
        goto fail;
    SSL_clear_options(ssl, SSL_get_options(ssl));
    SSL_set_options(ssl, SSL_CTX_get_options(c->ctx));
    if (!SSL_set_min_proto_version(ssl, c->min_ver ? c->min_ver : TLS1_2_VERSION) ||
        !SSL_set_max_proto_version(ssl, c->max_ver))
        goto fail;
    if (c->ciphers && !SSL_set_cipher_list(ssl, c->ciphers))
        goto fail;
    if (c->curves && !SSL_set1_groups_list(ssl, c->curves))
        goto fail;
    SSL_set_verify(ssl, c->verify_mode, c->nsan ? verify_cb : NULL);
    if (c->no_resume)
        SSL_set_num_tickets(ssl, 0);
    return SSL_CLIENT_HELLO_SUCCESS;
fail:
    *al = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
}

/* ---- building -------------------------------------------------------------------------- */

rv_tls_server_t *rv_tls_server_new(void)
{
    pthread_once(&idx_once, idx_init);
    rv_tls_tickets_init();
    if (idx_server < 0 || idx_chain < 0)
        return NULL;
    return calloc(1, sizeof(rv_tls_server_t));
}

static const char *last_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

static char *join(const char *const *v, uint32_t n)
{
    size_t len = 1;
    for (uint32_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *s = malloc(len), *p = s;
    if (!s)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]);
        if (i)
            *p++ = ':';
        memcpy(p, v[i], l);
        p += l;
    }
    *p = 0;
    return s;
}

static char **dup_list(const char *const *v, uint32_t n)
{
    char **out = n ? calloc(n, sizeof(char *)) : NULL;
    for (uint32_t i = 0; out && i < n; i++)
        if (!(out[i] = strdup(v[i]))) {
            while (i--)
                free(out[i]);
            free(out);
            return NULL;
        }
    return out;
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); rc = RV_EPARSE; goto out; } while (0)

static int load_cert_chain(SSL_CTX *ctx, const rv_tls_chain_cfg_t *c, char *err, size_t errlen)
{
    int rc = 0;
    BIO *b = BIO_new_mem_buf(c->cert_pem, -1);
    X509 *leaf = NULL;
    if (!b)
        return RV_ENOMEM;
    leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
    if (!leaf)
        FAIL("certificate (%s): no PEM certificate found", c->cert_src);
    if (!SSL_CTX_use_certificate(ctx, leaf))
        FAIL("certificate (%s): %s", c->cert_src, last_reason());
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x)
            break;
        if (!SSL_CTX_add0_chain_cert(ctx, x)) {
            X509_free(x);
            FAIL("certificate (%s): chain: %s", c->cert_src, last_reason());
        }
    }
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
        FAIL("certificate (%s): bad PEM after the first certificate: %s", c->cert_src, last_reason());
out:
    X509_free(leaf);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

static int load_key(SSL_CTX *ctx, const rv_tls_chain_cfg_t *c, char *err, size_t errlen)
{
    int rc = 0;
    BIO *b = BIO_new_mem_buf(c->key_pem, -1);
    EVP_PKEY *k = NULL;
    if (!b)
        return RV_ENOMEM;
    k = PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"");
    if (!k)
        FAIL("private key (%s): no PEM private key found (or it is encrypted)", c->key_src);
    if (!SSL_CTX_use_PrivateKey(ctx, k))
        FAIL("private key (%s) does not match the certificate (%s)", c->key_src, c->cert_src);
    if (!SSL_CTX_check_private_key(ctx))
        FAIL("private key (%s) does not match the certificate (%s)", c->key_src, c->cert_src);
out:
    EVP_PKEY_free(k);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

static int load_ca(SSL_CTX *ctx, const rv_tls_chain_cfg_t *c, char *err, size_t errlen)
{
    int rc = 0, n = 0;
    BIO *b = BIO_new_mem_buf(c->ca_pem, -1);
    X509_STORE *st = X509_STORE_new();
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    if (!b || !st || !names) {
        rc = RV_ENOMEM;
        goto out;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x)
            break;
        n++;
        X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(x));
        if (!X509_STORE_add_cert(st, x) || !nm || !sk_X509_NAME_push(names, nm)) {
            X509_NAME_free(nm);
            X509_free(x);
            FAIL("rootCa (%s): %s", c->ca_src, last_reason());
        }
        X509_free(x);
    }
    if (n == 0)
        FAIL("rootCa (%s): no PEM certificate found", c->ca_src);
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
        FAIL("rootCa (%s): bad PEM: %s", c->ca_src, last_reason());
    SSL_CTX_set_cert_store(ctx, st);
    st = NULL;
    SSL_CTX_set_client_CA_list(ctx, names);
    names = NULL;
out:
    X509_STORE_free(st);
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

int rv_tls_server_add(rv_tls_server_t *s, const rv_tls_chain_cfg_t *c, char *err, size_t errlen)
{
    int rc = 0;
    err[0] = 0;
    chain_t *ch = calloc(1, sizeof(*ch));
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ch || !ctx || rv_tls_ctx_defaults(ctx, true) < 0) {
        rc = RV_ENOMEM;
        goto out;
    }
    ch->ctx = ctx;
    if ((rc = load_cert_chain(ctx, c, err, errlen)) < 0 || (rc = load_key(ctx, c, err, errlen)) < 0)
        goto out;
    ch->verify_mode = SSL_VERIFY_NONE;
    if (c->ca_pem) {
        if ((rc = load_ca(ctx, c, err, errlen)) < 0)
            goto out;
        ch->mtls = true;
        ch->required = !c->one_way;
        ch->verify_mode = SSL_VERIFY_PEER | (c->one_way ? 0 : SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    } else if (c->nsan) {
        FAIL("verifySubjectAltName needs a rootCa to verify client certificates against");
    }
    SSL_CTX_set_verify(ctx, ch->verify_mode, c->nsan ? verify_cb : NULL);
    ch->min_ver = c->min_ver;
    ch->max_ver = c->max_ver;
    if ((c->min_ver && !SSL_CTX_set_min_proto_version(ctx, c->min_ver)) ||
        (c->max_ver && !SSL_CTX_set_max_proto_version(ctx, c->max_ver)))
        FAIL("parameters: protocol version not available");
    for (uint32_t i = 0; i < c->nciphers; i++)
        if (!SSL_CTX_set_cipher_list(ctx, c->ciphers[i]))
            FAIL("parameters.cipherSuites: '%s' is not a known TLS 1.2 cipher suite", c->ciphers[i]);
    if (c->nciphers) {
        if (!(ch->ciphers = join(c->ciphers, c->nciphers)))
            goto oom;
        if (!SSL_CTX_set_cipher_list(ctx, ch->ciphers))
            FAIL("parameters.cipherSuites: %s", last_reason());
    }
    for (uint32_t i = 0; i < c->ncurves; i++)
        if (!SSL_CTX_set1_groups_list(ctx, c->curves[i]))
            FAIL("parameters.ecdhCurves: '%s' is not a known curve", c->curves[i]);
    if (c->ncurves) {
        if (!(ch->curves = join(c->curves, c->ncurves)))
            goto oom;
        if (!SSL_CTX_set1_groups_list(ctx, ch->curves))
            FAIL("parameters.ecdhCurves: %s", last_reason());
    }
    if (c->ocsp) {
        const unsigned char *p = c->ocsp;
        OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)c->ocsp_len);
        if (!r)
            FAIL("ocspStaple (%s): not a DER OCSP response", c->ocsp_src ? c->ocsp_src : c->cert_src);
        OCSP_RESPONSE_free(r);
        if (!(ch->ocsp = malloc(c->ocsp_len)))
            goto oom;
        memcpy(ch->ocsp, c->ocsp, c->ocsp_len);
        ch->ocsp_len = c->ocsp_len;
    } else if (c->ocsp_policy == RV_TLS_OCSP_MUST) {
        FAIL("ocspStaplePolicy MUST_STAPLE needs an ocspStaple");
    }
    SSL_CTX_set_tlsext_status_cb(ctx, ocsp_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, ch);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    ch->no_resume = c->no_resumption;
    if (c->no_resumption) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    /* session id context: stable across rebuilds for the same certificate and client-cert
     * policy (tickets survive reloads), different between chains */
    unsigned char md[32];
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    unsigned char pol[2] = { (unsigned char)ch->verify_mode, (unsigned char)c->nsan };
    if (!mctx || !EVP_DigestInit_ex(mctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(mctx, c->cert_pem, strlen(c->cert_pem)) ||
        (c->ca_pem && !EVP_DigestUpdate(mctx, c->ca_pem, strlen(c->ca_pem))) ||
        !EVP_DigestUpdate(mctx, pol, sizeof(pol))) {
        EVP_MD_CTX_free(mctx);
        goto oom;
    }
    for (uint32_t i = 0; i < c->nsan; i++)
        EVP_DigestUpdate(mctx, c->san[i], strlen(c->san[i]) + 1);
    EVP_DigestFinal_ex(mctx, md, NULL);
    EVP_MD_CTX_free(mctx);
    if (!SSL_CTX_set_session_id_context(ctx, md, SSL_MAX_SID_CTX_LENGTH))
        goto oom;
    if ((c->nsni && !(ch->sni = dup_list(c->sni, c->nsni))) || (c->nsan && !(ch->san = dup_list(c->san, c->nsan))))
        goto oom;
    ch->nsni = c->nsni;
    ch->nsan = c->nsan;
    if (s->n == s->cap) {
        uint32_t nc = s->cap ? s->cap * 2 : 4;
        chain_t **v = realloc(s->chains, nc * sizeof(*v));
        if (!v)
            goto oom;
        s->chains = v;
        s->cap = nc;
    }
    if (!SSL_CTX_set_ex_data(ctx, idx_chain, ch))
        goto oom;
    ch->index = s->n;
    s->chains[s->n++] = ch;
    ERR_clear_error();
    return (int)ch->index;
oom:
    rc = RV_ENOMEM;
    snprintf(err, errlen, "out of memory");
out:
    ERR_clear_error();
    if (ch) {
        for (uint32_t k = 0; k < ch->nsni; k++)
            free(ch->sni[k]);
        free(ch->sni);
        for (uint32_t k = 0; k < ch->nsan; k++)
            free(ch->san[k]);
        free(ch->san);
        free(ch->ciphers);
        free(ch->curves);
        free(ch->ocsp);
        free(ch);
    }
    SSL_CTX_free(ctx);
    return rc;
}

static int name_cmp(const void *x, const void *y)
{
    const name_t *a = x, *b = y;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    int r = memcmp(a->name, b->name, a->len);
    if (r)
        return r;
    return (a->chain > b->chain) - (a->chain < b->chain);
}

/* Sort and keep the first chain of each name (the earliest chain wins a duplicate). */
static uint32_t sort_unique(name_t *v, uint32_t n)
{
    if (n > 1)
        qsort(v, n, sizeof(*v), name_cmp);
    uint32_t w = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!w || v[w - 1].len != v[i].len || memcmp(v[w - 1].name, v[i].name, v[i].len))
            v[w++] = v[i];
    return w;
}

int rv_tls_server_finish(rv_tls_server_t *s)
{
    if (!s || !s->n)
        return RV_EINVAL;
    uint32_t total = 0;
    s->def = UINT32_MAX;
    for (uint32_t i = 0; i < s->n; i++) {
        total += s->chains[i]->nsni;
        if (!s->chains[i]->nsni && s->def == UINT32_MAX)
            s->def = i;
    }
    if (s->def == UINT32_MAX)
        s->def = 0;
    s->exact = total ? calloc(total, sizeof(name_t)) : NULL;
    s->wild = total ? calloc(total, sizeof(name_t)) : NULL;
    if (total && (!s->exact || !s->wild))
        return RV_ENOMEM;
    for (uint32_t i = 0; i < s->n; i++)
        for (uint32_t k = 0; k < s->chains[i]->nsni; k++) {
            const char *nm = s->chains[i]->sni[k];
            if (nm[0] == '*' && nm[1] == '.')
                s->wild[s->nwild++] = (name_t){ nm + 2, strlen(nm + 2), i };
            else
                s->exact[s->nexact++] = (name_t){ nm, strlen(nm), i };
        }
    s->nexact = sort_unique(s->exact, s->nexact);
    s->nwild = sort_unique(s->wild, s->nwild);

    SSL_CTX *base = SSL_CTX_new(TLS_server_method());
    if (!base || rv_tls_ctx_defaults(base, true) < 0) {
        SSL_CTX_free(base);
        return RV_ENOMEM;
    }
    SSL_CTX_set_client_hello_cb(base, client_hello_cb, s);
    SSL_CTX_set_session_cache_mode(base, SSL_SESS_CACHE_OFF);   /* stateless tickets only */
    SSL_CTX_set_timeout(base, 2 * TICKET_EPOCH_S);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(base, ticket_cb);
    SSL_CTX_set_session_id_context(base, (const unsigned char *)"rivet", 5);
    if (!SSL_CTX_set_ex_data(base, idx_server, s)) {
        SSL_CTX_free(base);
        return RV_ENOMEM;
    }
    s->base = base;
    return 0;
}

void rv_tls_server_free(rv_tls_server_t *s)
{
    if (!s)
        return;
    if (s->base)
        SSL_CTX_free(s->base);  /* frees s through the ex_data callback once unused */
    else
        free_server(s);
}

SSL_CTX *rv_tls_server_ctx(const rv_tls_server_t *s)
{
    return s->base;
}

uint32_t rv_tls_server_nchains(const rv_tls_server_t *s)
{
    return s->n;
}

bool rv_tls_server_chain_mtls(const rv_tls_server_t *s, uint32_t i)
{
    return i < s->n && s->chains[i]->required;
}

static const name_t *find_name(const name_t *v, uint32_t n, const char *p, size_t len)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int r = v[mid].len != len ? (v[mid].len < len ? -1 : 1) : memcmp(v[mid].name, p, len);
        if (r == 0)
            return &v[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

uint32_t rv_tls_server_select(const rv_tls_server_t *s, const char *sni, size_t len)
{
    if (!sni || !len || len > 255)
        return s->def;
    char buf[256];
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)((sni[i] >= 'A' && sni[i] <= 'Z') ? sni[i] + 32 : sni[i]);
    const name_t *m = find_name(s->exact, s->nexact, buf, len);
    if (m)
        return m->chain;
    /* "*.suffix": the closest (longest) suffix first, as Envoy's server_names */
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '.' && i + 1 < len && (m = find_name(s->wild, s->nwild, buf + i + 1, len - i - 1)))
            return m->chain;
    return s->def;
}

/* ---- identity ---------------------------------------------------------------------------- */

bool rv_tls_peer_verified(const rv_tls_t *t)
{
    return t->ssl && SSL_get0_peer_certificate(t->ssl) && SSL_get_verify_result(t->ssl) == X509_V_OK;
}

int rv_tls_peer_xfcc(const rv_tls_t *t, char *out, size_t cap)
{
    if (!rv_tls_peer_verified(t) || cap < 80)
        return 0;
    X509 *c = SSL_get0_peer_certificate(t->ssl);
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!X509_digest(c, EVP_sha256(), md, &mdlen))
        return RV_ENOMEM;
    size_t o = 0;
    int rc = 0;
#define PUT(str, n)                                                                                \
    do {                                                                                           \
        if (o + (n) >= cap) {                                                                      \
            rc = RV_ETOOBIG;                                                                       \
            goto out;                                                                              \
        }                                                                                          \
        memcpy(out + o, (str), (n));                                                               \
        o += (n);                                                                                  \
    } while (0)
    static const char hex[] = "0123456789abcdef";
    BIO *b = NULL;
    GENERAL_NAMES *gens = NULL;
    PUT("Hash=", 5);
    for (unsigned i = 0; i < mdlen; i++) {
        char h[2] = { hex[md[i] >> 4], hex[md[i] & 15] };
        PUT(h, 2);
    }
    b = BIO_new(BIO_s_mem());
    if (!b) {
        rc = RV_ENOMEM;
        goto out;
    }
    X509_NAME_print_ex(b, X509_get_subject_name(c), 0, XN_FLAG_RFC2253);
    char *subj;
    long sl = BIO_get_mem_data(b, &subj);
    size_t esc = 0;
    for (long i = 0; i < sl; i++)
        esc += (subj[i] == '"' || subj[i] == '\\') ? 2 : 1;
    if (o + 11 + esc < cap) {   /* the whole Subject or none of it */
        PUT(";Subject=\"", 10);
        for (long i = 0; i < sl; i++) {
            if (subj[i] == '"' || subj[i] == '\\')
                PUT("\\", 1);
            PUT(&subj[i], 1);
        }
        PUT("\"", 1);
    }
    gens = X509_get_ext_d2i(c, NID_subject_alt_name, NULL, NULL);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
            if (g->type != (pass == 0 ? GEN_URI : GEN_DNS))
                continue;
            const unsigned char *p = ASN1_STRING_get0_data(g->d.ia5);
            int l = ASN1_STRING_length(g->d.ia5);
            bool clean = true;
            for (int k = 0; k < l; k++)
                if (p[k] < 0x21 || p[k] > 0x7e || p[k] == ';' || p[k] == ',' || p[k] == '"')
                    clean = false;
            if (!clean)
                continue;       /* never forward a value that could forge another element */
            if (o + 5 + (size_t)l >= cap)
                goto done;      /* this SAN and every later one left out (a prefix is kept) */
            PUT(pass == 0 ? ";URI=" : ";DNS=", 5);
            PUT(p, (size_t)l);
        }
done:
    out[o] = 0;
    rc = (int)o;
out:
#undef PUT
    GENERAL_NAMES_free(gens);
    BIO_free(b);
    return rc;
}
