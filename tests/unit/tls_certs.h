/*
 * tls_certs.h - test certificates made at run time with the OpenSSL API (no key material is
 * committed): a key (RSA or EC P-256), a CA, a leaf signed by it with DNS SANs, and PEM
 * export. Header-only, for unit tests.
 */
#ifndef RV_TEST_TLS_CERTS_H
#define RV_TEST_TLS_CERTS_H

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

static inline EVP_PKEY *tc_key(int rsa)
{
    return rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048) : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static inline void tc_ext(X509 *issuer, X509 *c, int nid, const char *val)
{
    X509V3_CTX v;
    X509V3_set_ctx_nodb(&v);
    X509V3_set_ctx(&v, issuer ? issuer : c, c, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v, nid, val);
    if (e) {
        X509_add_ext(c, e, -1);
        X509_EXTENSION_free(e);
    }
}

/* A certificate for key with subject CN=cn, signed by (ca, cakey) or self-signed when ca is
 * NULL. sans: "DNS:a.example.com,DNS:*.b.example.com" or NULL. is_ca marks a CA. */
static inline X509 *tc_cert(EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *cakey, const char *sans, int is_ca)
{
    static long serial = 1;
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial++);
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), 86400L * 30);
    X509_set_pubkey(c, key);
    X509_NAME *n = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c, ca ? X509_get_subject_name(ca) : n);
    if (is_ca) {
        tc_ext(ca, c, NID_basic_constraints, "critical,CA:TRUE");
        tc_ext(ca, c, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        tc_ext(ca, c, NID_basic_constraints, "CA:FALSE");
        if (sans)
            tc_ext(ca, c, NID_subject_alt_name, sans);
    }
    X509_sign(c, ca ? cakey : key, EVP_sha256());
    return c;
}

/* PEM text of a certificate or a private key (malloc'd, NUL-terminated). */
static inline char *tc_pem_cert(X509 *c)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, c);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = 0;
    BIO_free(b);
    return out;
}

static inline char *tc_pem_key(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = 0;
    BIO_free(b);
    return out;
}

#endif
