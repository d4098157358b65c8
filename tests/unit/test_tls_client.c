/*
 * test_tls_client.c - upstream TLS client contexts (src/tls/client.c) and their place in a
 * snapshot build: PEM loading and its failures (named), verification names, the salted
 * fingerprint, and an Upstream's sslConfig.sslFiles / useTls translated into a cluster (SNI
 * per endpoint, Rejected naming the file, no key material in the JSON dump).
 * Certificates are made here with OpenSSL's API (no files needed but the ones written).
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config-internal.h"
#include "config/secret.h"
#include "core/err.h"
#include "tdir.h"
#include "test.h"
#include "tls/client.h"

/* ---- certificates ------------------------------------------------------------------- */

typedef struct pem_s {
    char cert[8192], key[8192];
} pem_t;

static void bio_text(BIO *b, char *out, size_t cap)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    size_t k = n > 0 ? (size_t)n : 0;
    if (k >= cap)
        k = cap - 1;
    memcpy(out, p, k);
    out[k] = '\0';
}

/* A self-signed EC certificate for cn (with a DNS SAN) and its key, as PEM. */
static bool make_cert(const char *cn, pem_t *out)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    bool ok = false;
    if (!pk || !x)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    char san[300];
    snprintf(san, sizeof(san), "DNS:%s", cn);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    if (!ext)
        goto out;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, pk, EVP_sha256()))
        goto out;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    bio_text(b, out->cert, sizeof(out->cert));
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
    bio_text(b, out->key, sizeof(out->key));
    BIO_free(b);
    ok = true;
out:
    X509_free(x);
    EVP_PKEY_free(pk);
    return ok;
}

static pem_t a, b;

/* ---- contexts ----------------------------------------------------------------------- */

static int mk(rv_tls_client_opts_t *o, rv_tls_client_t **c, char *err)
{
    if (!o->cert_src)
        o->cert_src = "cert.pem";
    if (!o->key_src)
        o->key_src = "key.pem";
    if (!o->ca_src)
        o->ca_src = "ca.pem";
    return rv_tls_client_new(o, c, err, 512);
}

static void test_contexts(void)
{
    char err[512];
    rv_tls_client_t *c = NULL, *c2 = NULL;
    rv_tls_client_opts_t o = { .cert = a.cert, .cert_len = strlen(a.cert), .key = a.key, .key_len = strlen(a.key),
                               .ca = b.cert, .ca_len = strlen(b.cert) };
    CHECK(mk(&o, &c, err) == 0 && c && c->has_cert && c->has_ca && !c->check_san && c->id != 0,
          "client context with certificate, key and rootCa (%s)", err);
    rv_tls_client_opts_t o2 = o;
    CHECK(mk(&o2, &c2, err) == 0 && c2 && c2->id == c->id, "same inputs, same fingerprint");
    rv_tls_client_free(c2);
    o2.ca = a.cert;
    o2.ca_len = strlen(a.cert);
    CHECK(mk(&o2, &c2, err) == 0 && c2 && c2->id != c->id, "another rootCa, another fingerprint");
    rv_tls_client_free(c2);
    o2 = o;
    o2.one_way = true;
    CHECK(mk(&o2, &c2, err) == 0 && c2 && !c2->has_cert, "oneWayTls: no client certificate presented");
    rv_tls_client_free(c2);

    SSL *ssl = SSL_new(c->ctx);
    CHECK(ssl && rv_tls_client_verify_name(c, ssl, RV_STR("api.test")) == 0 &&
              !strcmp(SSL_get0_peername(ssl) ? SSL_get0_peername(ssl) : X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0),
                      "api.test"),
          "the host name to verify is set on the SSL");
    SSL_free(ssl);
    ssl = SSL_new(c->ctx);
    CHECK(ssl && rv_tls_client_verify_name(c, ssl, RV_STR("127.0.0.1")) == 0 &&
              !X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0),
          "an IP endpoint is checked as an IP, not a host name");
    CHECK(ssl && rv_tls_client_verify_name(c, ssl, RV_STR_NULL) == RV_EINVAL, "no name: refused (never unchecked)");
    SSL_free(ssl);
    rv_tls_client_free(c);

    /* failures name the source and the problem */
    o2 = o;
    o2.key = b.key;
    o2.key_len = strlen(b.key);
    CHECK(mk(&o2, &c2, err) == RV_EPARSE && !c2 && strstr(err, "key.pem: the private key does not match"),
          "mismatched key refused (%s)", err);
    o2 = o;
    o2.cert = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    o2.cert_len = strlen(o2.cert);
    CHECK(mk(&o2, &c2, err) == RV_EPARSE && strstr(err, "cert.pem: no PEM certificate could be read"),
          "bad certificate PEM refused (%s)", err);
    o2 = o;
    o2.key = "junk";
    o2.key_len = 4;
    CHECK(mk(&o2, &c2, err) == RV_EPARSE && strstr(err, "key.pem: no PEM private key"), "bad key PEM refused (%s)", err);
    o2 = o;
    o2.ca = "nothing here";
    o2.ca_len = 12;
    CHECK(mk(&o2, &c2, err) == RV_EPARSE && strstr(err, "ca.pem: no PEM CA certificate"), "bad rootCa refused (%s)", err);
    o2 = o;
    const char *bad_cipher[] = { "NO-SUCH-CIPHER" };
    o2.ciphers = bad_cipher;
    o2.nciphers = 1;
    CHECK(mk(&o2, &c2, err) == RV_EPARSE && strstr(err, "parameters.cipherSuites"), "unknown cipher refused (%s)", err);
    o2 = o;
    const char *ok_ciphers[] = { "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256" };
    o2.ciphers = ok_ciphers;
    o2.nciphers = 2;
    CHECK(mk(&o2, &c2, err) == 0, "TLS 1.2 and 1.3 cipher names together accepted (%s)", err);
    rv_tls_client_free(c2);
    o2 = o;
    const char *bad_curve[] = { "P-999" };
    o2.curves = bad_curve;
    o2.ncurves = 1;
    CHECK(mk(&o2, &c2, err) == RV_EPARSE && strstr(err, "parameters.ecdhCurves"), "unknown curve refused (%s)", err);
    o2 = o;
    const char *sans[] = { "api.test", "other.test" };
    o2.san = sans;
    o2.nsan = 2;
    CHECK(mk(&o2, &c2, err) == 0 && c2->check_san, "verifySubjectAltName checked by the context");
    ssl = c2 ? SSL_new(c2->ctx) : NULL;
    CHECK(ssl && rv_tls_client_verify_name(c2, ssl, RV_STR_NULL) == 0, "with SAN names the endpoint name is not needed");
    SSL_free(ssl);
    rv_tls_client_free(c2);
    o2 = (rv_tls_client_opts_t){ 0 };
    CHECK(mk(&o2, &c2, err) == 0 && c2 && !c2->has_ca && !c2->has_cert, "useTls alone: system store, no certificate");
    rv_tls_client_free(c2);
}

/* ---- snapshot builds ---------------------------------------------------------------- */

static const rv_status_t *status_of(const rv_snapshot_t *snap, const char *name)
{
    for (uint32_t i = 0; snap && i < snap->nstatuses; i++)
        if (rv_str_eq(snap->statuses[i].kind, RV_STR("Upstream")) && rv_str_eq(snap->statuses[i].name, rv_cstr(name)))
            return &snap->statuses[i];
    return NULL;
}

static const rv_cluster_t *cluster_of(const rv_snapshot_t *snap, const char *name)
{
    char full[128];
    snprintf(full, sizeof(full), "gloo-system.%s", name);
    for (uint32_t i = 0; snap && i < snap->nclusters; i++)
        if (rv_str_eq(snap->clusters[i].name, rv_cstr(full)))
            return &snap->clusters[i];
    return NULL;
}

static void test_build(void)
{
    char buf[4096];
    if (!tdir_new("tls")) {
        CHECK(0, "mkdtemp");
        return;
    }
    tdir_put("pki/a.crt", a.cert);
    tdir_put("pki/a.key", a.key);
    tdir_put("pki/b.key", b.key);
    tdir_put("pki/ca.crt", b.cert);
    snprintf(buf, sizeof(buf),
             "metadata: {name: files}\nstatic:\n  hosts:\n  - {addr: localhost, port: 8443}\n"
             "  - {addr: 127.0.0.1, port: 8444, sniAddr: pinned.test}\n  - {addr: 127.0.0.1, port: 8445}\n"
             "sslConfig:\n  sslFiles: {tlsCert: %s/pki/a.crt, tlsKey: %s/pki/a.key, rootCa: %s/pki/ca.crt}\n",
             tdir, tdir, tdir);
    tdir_put("upstreams/gloo-system/files.yaml", buf);
    snprintf(buf, sizeof(buf), "metadata: {name: nofile}\nstatic: {hosts: [{addr: 127.0.0.1, port: 1}]}\n"
                               "sslConfig: {sslFiles: {rootCa: %s/pki/missing.crt}}\n", tdir);
    tdir_put("upstreams/gloo-system/nofile.yaml", buf);
    snprintf(buf, sizeof(buf), "metadata: {name: badkey}\nstatic: {hosts: [{addr: 127.0.0.1, port: 1}]}\n"
                               "sslConfig: {sslFiles: {tlsCert: %s/pki/a.crt, tlsKey: %s/pki/b.key}}\n", tdir, tdir);
    tdir_put("upstreams/gloo-system/badkey.yaml", buf);
    tdir_put("upstreams/gloo-system/auto.yaml", "metadata: {name: auto}\nstatic: {hosts: [{addr: localhost, port: 443}]}\n");
    tdir_put("upstreams/gloo-system/sni.yaml", "metadata: {name: sni}\nstatic: {hosts: [{addr: localhost, port: 9443}],"
                                          " useTls: true}\nsslConfig: {sni: fixed.test}\n");
    tdir_put("upstreams/gloo-system/nosni.yaml", "metadata: {name: nosni}\nstatic: {hosts: [{addr: localhost, port: 9443}],"
                                            " useTls: true, autoSniRewrite: false}\n");
    tdir_put("upstreams/gloo-system/plain.yaml", "metadata: {name: plain}\nstatic: {hosts: [{addr: localhost, port: 443}],"
                                            " useTls: false}\n");
    tdir_put("upstreams/gloo-system/ref.yaml", "metadata: {name: ref}\nstatic: {hosts: [{addr: localhost, port: 1}]}\n"
                                          "sslConfig: {secretRef: {name: nope}}\n");

    rv_settings_t s;
    char err[1024];
    rv_store_t *st = NULL;
    rv_snapshot_t *snap = NULL;
    if (rv_settings_load(tdir, NULL, &s, err, sizeof(err)) != 0) {
        CHECK(0, "settings: %s", err);
        return;
    }
    st = rv_store_new();
    CHECK(rv_store_scan_dir(st, &s) >= 0 && rv_snapshot_build(st, &s, &snap) == 0 && snap, "build");

    const rv_cluster_t *c = cluster_of(snap, "files");
    const rv_status_t *ss = status_of(snap, "files");
    CHECK(ss && ss->state == RV_STATE_ACCEPTED, "sslFiles upstream accepted (%s)", ss ? ss->reason.ptr : "-");
    CHECK(c && c->tls && c->tls->has_cert && c->tls->has_ca && c->sni.len == 0, "cluster has a client context (mTLS)");
    if (c && c->neps == 3) {
        CHECK_STRN(c->eps[0].sni.ptr, c->eps[0].sni.len, "localhost", "autoSniRewrite: SNI is the host name");
        CHECK_STRN(c->eps[1].sni.ptr, c->eps[1].sni.len, "pinned.test", "sniAddr wins");
        CHECK(c->eps[2].sni.len == 0, "an IP host without sniAddr sends no SNI");
    } else {
        CHECK(0, "three endpoints");
    }
    ss = status_of(snap, "nofile");
    c = cluster_of(snap, "nofile");
    CHECK(ss && ss->state == RV_STATE_REJECTED && strstr(ss->reason.ptr, "sslFiles.rootCa: cannot read") &&
              strstr(ss->reason.ptr, "missing.crt: no such file"),
          "missing file: Rejected naming the file (%s)", ss ? ss->reason.ptr : "-");
    CHECK(c && c->neps == 0 && !c->tls, "a rejected TLS upstream has no endpoint (never plain text)");
    ss = status_of(snap, "badkey");
    CHECK(ss && ss->state == RV_STATE_REJECTED && strstr(ss->reason.ptr, "b.key: the private key does not match"),
          "mismatched key: Rejected naming the key file (%s)", ss ? ss->reason.ptr : "-");
    ss = status_of(snap, "ref");
    CHECK(ss && ss->state == RV_STATE_REJECTED && strstr(ss->reason.ptr, "secret gloo-system/nope"),
          "secretRef to a missing secret: Rejected naming it (%s)", ss ? ss->reason.ptr : "-");
    c = cluster_of(snap, "auto");
    CHECK(c && c->tls && !c->tls->has_ca && !c->tls->has_cert, "port 443 without useTls: TLS, system trust store");
    CHECK(c && c->neps >= 1 && rv_str_eq(c->eps[0].sni, RV_STR("localhost")), "auto TLS: SNI is the host name");
    c = cluster_of(snap, "sni");
    CHECK(c && c->tls && rv_str_eq(c->sni, RV_STR("fixed.test")) && c->neps >= 1 && c->eps[0].sni.len == 0,
          "sslConfig.sni is the cluster's SNI (over autoSniRewrite)");
    c = cluster_of(snap, "nosni");
    CHECK(c && c->tls && c->neps >= 1 && c->eps[0].sni.len == 0, "autoSniRewrite: false sends no SNI");
    c = cluster_of(snap, "plain");
    CHECK(c && !c->tls, "useTls: false on port 443 stays plain");
    CHECK(snap && strstr(snap->config_json, "\"tls\":{\"context\":") && strstr(snap->config_json, "\"trust\":\"rootCa\"") &&
              !strstr(snap->config_json, "PRIVATE KEY") && !strstr(snap->config_json, "BEGIN CERTIFICATE"),
          "the dump describes the contexts and holds no PEM");
    rv_snapshot_release(snap);
    rv_store_free(st);
    rv_settings_free(&s);
    tdir_remove();
}

/* "  " + each line of pem (a YAML block scalar's body) appended to out */
static void indent_into(char *out, size_t cap, const char *pem)
{
    size_t o = strlen(out);
    for (const char *p = pem; *p && o + 4 < cap;) {
        out[o++] = ' ';
        out[o++] = ' ';
        while (*p && *p != '\n' && o + 2 < cap)
            out[o++] = *p++;
        if (*p == '\n')
            p++;
        out[o++] = '\n';
    }
    out[o] = '\0';
}

static void put_secret(const char *name, const char *cert, const char *key, const char *ca)
{
    static char doc[40000];
    snprintf(doc, sizeof(doc), "metadata: {name: %s, namespace: gloo-system}\ntls:\n", name);
    if (cert) {
        strcat(doc, " certChain: |\n");
        indent_into(doc, sizeof(doc), cert);
    }
    if (key) {
        strcat(doc, " privateKey: |\n");
        indent_into(doc, sizeof(doc), key);
    }
    if (ca) {
        strcat(doc, " rootCa: |\n");
        indent_into(doc, sizeof(doc), ca);
    }
    char rel[256];
    snprintf(rel, sizeof(rel), "secrets/gloo-system/%s.yaml", name);
    tdir_put(rel, doc);
}

/* secretRef through the secret table (directory source), as rivet run wires it. */
static void test_secret_ref(void)
{
    if (!tdir_new("tls")) {
        CHECK(0, "mkdtemp");
        return;
    }
    put_secret("mtls", a.cert, a.key, b.cert);
    put_secret("caonly", NULL, NULL, b.cert);
    put_secret("mismatch", a.cert, b.key, NULL);
    tdir_put("secrets/gloo-system/broken.yaml", "metadata: {name: broken, namespace: gloo-system}\ntls: {bogus: 1}\n");
    const char *names[] = { "mtls", "caonly", "mismatch", "broken", "absent" };
    char buf[512];
    for (size_t i = 0; i < RV_ARRAY_LEN(names); i++) {
        snprintf(buf, sizeof(buf), "metadata: {name: u-%s}\nstatic: {hosts: [{addr: localhost, port: 8443}]}\n"
                                   "sslConfig: {secretRef: {name: %s, namespace: gloo-system}}\n", names[i], names[i]);
        char rel[128];
        snprintf(rel, sizeof(rel), "config/upstreams/gloo-system/u-%s.yaml", names[i]);
        tdir_put(rel, buf);
    }
    char cdir[300], sdir[300], err[1024];
    snprintf(cdir, sizeof(cdir), "%s/config", tdir);
    snprintf(sdir, sizeof(sdir), "%s/secrets", tdir);
    rv_settings_t s;
    if (rv_settings_load(cdir, NULL, &s, err, sizeof(err)) != 0) {
        CHECK(0, "settings: %s", err);
        return;
    }
    rv_secrets_t *sec = rv_secrets_new();
    rv_store_t *st = rv_store_new();
    rv_snapshot_t *snap = NULL;
    CHECK(sec && rv_secrets_scan_dir(sec, 0, sdir) >= 0, "secret directory scanned");
    rv_store_attach_secrets(st, sec);
    CHECK(rv_store_scan_dir(st, &s) >= 0 && rv_snapshot_build(st, &s, &snap) == 0 && snap, "build with secrets");
    const rv_cluster_t *c = cluster_of(snap, "u-mtls");
    const rv_status_t *ss = status_of(snap, "u-mtls");
    CHECK(ss && ss->state == RV_STATE_ACCEPTED && c && c->tls && c->tls->has_cert && c->tls->has_ca,
          "secretRef with certChain, privateKey, rootCa: mTLS context (%s)", ss ? ss->reason.ptr : "-");
    c = cluster_of(snap, "u-caonly");
    CHECK(c && c->tls && !c->tls->has_cert && c->tls->has_ca, "secretRef with rootCa only: verification, no client cert");
    ss = status_of(snap, "u-mismatch");
    CHECK(ss && ss->state == RV_STATE_REJECTED && strstr(ss->reason.ptr, "secret gloo-system/mismatch privateKey") &&
              strstr(ss->reason.ptr, "does not match"),
          "key not matching its certificate: Rejected naming the secret (%s)", ss ? ss->reason.ptr : "-");
    ss = status_of(snap, "u-broken");
    CHECK(ss && ss->state == RV_STATE_REJECTED && strstr(ss->reason.ptr, "secret gloo-system/broken"),
          "undecodable secret: Rejected naming it with the reason (%s)", ss ? ss->reason.ptr : "-");
    ss = status_of(snap, "u-absent");
    CHECK(ss && ss->state == RV_STATE_REJECTED && strstr(ss->reason.ptr, "secret gloo-system/absent not found"),
          "missing secret: Rejected naming it (%s)", ss ? ss->reason.ptr : "-");
    CHECK(snap && !strstr(snap->config_json, "PRIVATE KEY") && !strstr(snap->config_json, "CERTIFICATE"),
          "no PEM from secrets in the dump");
    /* a rotated secret changes the context id, and so the dump (which control compares) */
    uint64_t id0 = (c = cluster_of(snap, "u-mtls")) && c->tls ? c->tls->id : 0;
    char *dump0 = snap ? strdup(snap->config_json) : NULL;
    put_secret("mtls", b.cert, b.key, a.cert);
    rv_snapshot_release(snap);
    snap = NULL;
    CHECK(rv_secrets_scan_dir(sec, 0, sdir) == 1 && rv_snapshot_build(st, &s, &snap) == 0 && snap, "rebuild after rotation");
    c = cluster_of(snap, "u-mtls");
    CHECK(c && c->tls && c->tls->id != id0 && dump0 && strcmp(dump0, snap->config_json) != 0,
          "rotated secret: new context id, new dump");
    free(dump0);
    /* a rotation caught half way (new certificate, old key): Rejected, the last working
     * material keeps serving, and the dump says so (so the status is published) */
    uint64_t id1 = c && c->tls ? c->tls->id : 0;
    dump0 = snap ? strdup(snap->config_json) : NULL;
    put_secret("mtls", a.cert, b.key, a.cert);
    rv_snapshot_release(snap);
    snap = NULL;
    CHECK(rv_secrets_scan_dir(sec, 0, sdir) == 1 && rv_snapshot_build(st, &s, &snap) == 0 && snap, "rebuild half way");
    c = cluster_of(snap, "u-mtls");
    ss = status_of(snap, "u-mtls");
    CHECK(ss && ss->state == RV_STATE_REJECTED && strstr(ss->reason.ptr, "does not match") &&
              strstr(ss->reason.ptr, "last working certificate, key and CA keep serving"),
          "half-way rotation: Rejected, saying the last working material serves (%s)", ss ? ss->reason.ptr : "-");
    CHECK(c && c->tls && c->tls->id == id1 && c->tls_stale && c->neps == 1,
          "half-way rotation: the last working context, endpoints kept");
    CHECK(dump0 && snap && strcmp(dump0, snap->config_json) != 0 && strstr(snap->config_json, "\"material\":\"last working\""),
          "half-way rotation: the dump changes");
    free(dump0);
    rv_snapshot_release(snap);
    rv_store_free(st);
    rv_secrets_free(sec);
    rv_settings_free(&s);
    tdir_remove();
}

int main(void)
{
    CHECK(make_cert("api.test", &a) && make_cert("ca.test", &b), "test certificates made");
    test_contexts();
    test_build();
    test_secret_ref();
    TEST_DONE();
}
