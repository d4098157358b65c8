/*
 * test_tls_server.c - downstream TLS listeners (src/tls/server.c) over socketpairs: chain
 * selection by SNI (exact, closest wildcard, default without sniDomains, else the first),
 * the selected certificate really served, per-chain versions, bad material refused with a
 * message naming the source and never the key, client certificates (required, one-way,
 * verifySubjectAltName) and the x-forwarded-client-cert element, session tickets: resumed
 * within the chain, refused on another chain, accepted one epoch later, refused two epochs
 * later, a TLS 1.3 resumption handing out a new ticket (TLS 1.2 only under the previous key),
 * and the contexts outliving rv_tls_server_free while a session uses them.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "core/err.h"
#include "test.h"
#include "tls/server.h"
#include "tls_certs.h"

static EVP_PKEY *ca_key, *other_key;
static X509 *ca, *other;
static char *ca_pem, *other_pem;

typedef struct leaf_s {
    char *cert, *key;
    X509 *x;
} leaf_t;

static leaf_t mk(int rsa, const char *cn, const char *sans, X509 *issuer, EVP_PKEY *ikey)
{
    EVP_PKEY *k = tc_key(rsa);
    leaf_t l;
    l.x = tc_cert(k, cn, issuer, ikey, sans, 0);
    l.cert = tc_pem_cert(l.x);
    l.key = tc_pem_key(k);
    EVP_PKEY_free(k);
    return l;
}

static void pair(int fds[2])
{
    socketpair(AF_UNIX, SOCK_STREAM, 0, fds);
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
}

typedef struct hs_s {
    int rc;                 /* 0 both done */
    char cn[64];
    char version[16];
    bool resumed;
    SSL_SESSION *sess;      /* client's session (caller frees) */
    char xfcc[1024];
    int xfcc_len;
} hs_t;

/* Handshake a client (sni, optional client cert, optional session) against server s, then
 * exchange a byte so TLS 1.3 tickets arrive. */
static hs_t run(rv_tls_server_t *s, const char *sni, const leaf_t *client, SSL_SESSION *sess, int maxver)
{
    hs_t h;
    memset(&h, 0, sizeof(h));
    h.rc = -1;
    int fds[2];
    pair(fds);
    SSL_CTX *cc = SSL_CTX_new(TLS_client_method());
    rv_tls_ctx_defaults(cc, false);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(cc), ca);
    SSL_CTX_set_verify(cc, SSL_VERIFY_PEER, NULL);
    if (maxver)
        SSL_CTX_set_max_proto_version(cc, maxver);
    if (client) {
        BIO *b = BIO_new_mem_buf(client->key, -1);
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        SSL_CTX_use_certificate(cc, client->x);
        SSL_CTX_use_PrivateKey(cc, k);
        EVP_PKEY_free(k);
        BIO_free(b);
    }
    rv_tls_t st, ct;
    rv_tls_new(&st, rv_tls_server_ctx(s), fds[0], true, NULL);
    rv_tls_new(&ct, cc, fds[1], false, sni);
    if (sess)
        SSL_set_session(ct.ssl, sess);
    for (int i = 0; i < 100; i++) {
        int a = rv_tls_handshake(&ct), b = rv_tls_handshake(&st);
        if (a == 0 && b == 0) {
            h.rc = 0;
            break;
        }
        if (a == RV_EIO || b == RV_EIO)
            break;
    }
    if (h.rc == 0) {
        struct iovec v = { "x", 1 };
        char buf[8];
        rv_tls_writev(&st, &v, 1);
        rv_tls_read(&ct, buf, sizeof(buf));
        /* the client's certificate check may fail only now (TLS 1.3: after the handshake) */
        if (rv_tls_writev(&ct, &v, 1) < 0 || rv_tls_read(&st, buf, sizeof(buf)) < 0)
            h.rc = -2;
        X509 *peer = SSL_get0_peer_certificate(ct.ssl);
        if (peer)
            X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, h.cn, sizeof(h.cn));
        snprintf(h.version, sizeof(h.version), "%s", rv_tls_version(&ct));
        h.resumed = rv_tls_resumed(&st);
        h.sess = SSL_get1_session(ct.ssl);
        h.xfcc_len = rv_tls_peer_xfcc(&st, h.xfcc, sizeof(h.xfcc));
    }
    rv_tls_free(&st);
    rv_tls_free(&ct);
    SSL_CTX_free(cc);
    close(fds[0]);
    close(fds[1]);
    ERR_clear_error();
    return h;
}

/* Whether two client sessions carry the same ticket (both must have one). */
static bool same_ticket(const SSL_SESSION *x, const SSL_SESSION *y)
{
    const unsigned char *a, *b;
    size_t la = 0, lb = 0;
    if (!x || !y || !SSL_SESSION_has_ticket(x) || !SSL_SESSION_has_ticket(y))
        return false;
    SSL_SESSION_get0_ticket(x, &a, &la);
    SSL_SESSION_get0_ticket(y, &b, &lb);
    return la == lb && memcmp(a, b, la) == 0;
}

static int add(rv_tls_server_t *s, const leaf_t *l, const char *const *sni, uint32_t nsni, rv_tls_chain_cfg_t *extra)
{
    rv_tls_chain_cfg_t c = extra ? *extra : (rv_tls_chain_cfg_t){ 0 };
    c.cert_pem = l->cert;
    c.cert_src = "file cert.pem";
    c.key_pem = l->key;
    c.key_src = "file key.pem";
    c.sni = sni;
    c.nsni = nsni;
    char err[512];
    int rc = rv_tls_server_add(s, &c, err, sizeof(err));
    if (rc < 0)
        printf("# add: %s\n", err);
    return rc;
}

int main(void)
{
    ca_key = tc_key(0);
    ca = tc_cert(ca_key, "ca", NULL, NULL, NULL, 1);
    ca_pem = tc_pem_cert(ca);
    other_key = tc_key(0);
    other = tc_cert(other_key, "other", NULL, NULL, NULL, 1);
    other_pem = tc_pem_cert(other);
    leaf_t a = mk(1, "a", "DNS:a.example.com", ca, ca_key);
    leaf_t w = mk(0, "w", "DNS:*.w.example.com", ca, ca_key);
    leaf_t ww = mk(0, "ww", "DNS:*.x.w.example.com", ca, ca_key);
    leaf_t d = mk(1, "d", "DNS:d.example.com", ca, ca_key);
    leaf_t cl = mk(0, "client", "URI:spiffe://t/c,DNS:c.example.com", ca, ca_key);
    leaf_t bad = mk(0, "intruder", "URI:spiffe://t/bad", other, other_key);

    /* ---- selection */
    rv_tls_server_t *s = rv_tls_server_new();
    const char *sa[] = { "a.example.com" }, *sw[] = { "*.w.example.com" }, *sww[] = { "*.x.w.example.com" };
    CHECK_INT(add(s, &a, sa, 1, NULL), 0, "chain a");
    CHECK_INT(add(s, &w, sw, 1, NULL), 1, "chain *.w");
    CHECK_INT(add(s, &ww, sww, 1, NULL), 2, "chain *.x.w");
    CHECK_INT(add(s, &d, NULL, 0, NULL), 3, "chain without sniDomains");
    CHECK_INT(rv_tls_server_finish(s), 0, "finish");
    CHECK_INT(rv_tls_server_select(s, "a.example.com", 13), 0, "exact");
    CHECK_INT(rv_tls_server_select(s, "A.Example.COM", 13), 0, "exact, any case");
    CHECK_INT(rv_tls_server_select(s, "b.w.example.com", 15), 1, "wildcard");
    CHECK_INT(rv_tls_server_select(s, "c.b.w.example.com", 17), 1, "wildcard covers deeper names");
    CHECK_INT(rv_tls_server_select(s, "y.x.w.example.com", 17), 2, "the closest wildcard wins");
    CHECK_INT(rv_tls_server_select(s, "w.example.com", 13), 3, "*.w does not cover w itself");
    CHECK_INT(rv_tls_server_select(s, "zzz.org", 7), 3, "unknown: the chain without names");
    CHECK_INT(rv_tls_server_select(s, NULL, 0), 3, "no SNI: the chain without names");
    CHECK(!rv_tls_server_chain_mtls(s, 0), "no client certs on a");

    hs_t h = run(s, "a.example.com", NULL, NULL, 0);
    CHECK(h.rc == 0 && !strcmp(h.cn, "a"), "SNI a.example.com served cert a (%s)", h.cn);
    SSL_SESSION *sess_a = h.sess;
    CHECK(sess_a && SSL_SESSION_is_resumable(sess_a), "the client's session stays resumable after a close");
    h = run(s, "q.x.w.example.com", NULL, NULL, TLS1_2_VERSION);
    CHECK(h.rc == 0 && !strcmp(h.cn, "ww") && !strcmp(h.version, "TLSv1.2"), "wildcard chain, TLS 1.2 (%s %s)", h.cn,
          h.version);
    SSL_SESSION_free(h.sess);
    h = run(s, NULL, NULL, NULL, 0);
    CHECK(h.rc == 0 && !strcmp(h.cn, "d"), "no SNI: default chain's certificate (%s)", h.cn);
    SSL_SESSION_free(h.sess);

    /* ---- tickets */
    h = run(s, "a.example.com", NULL, sess_a, 0);
    CHECK(h.rc == 0 && h.resumed, "resumed on the same chain");
    /* TLS 1.3 clients use a ticket once: each resumption must hand out its successor, or
     * the client's next connection is a full handshake */
    CHECK(h.sess && SSL_SESSION_has_ticket(h.sess) && !same_ticket(h.sess, sess_a),
          "a TLS 1.3 resumption hands out a new ticket");
    hs_t h2 = run(s, "a.example.com", NULL, h.sess, 0);
    CHECK(h2.rc == 0 && h2.resumed && h2.sess && !same_ticket(h2.sess, h.sess),
          "the new ticket resumes and is replaced in turn");
    SSL_SESSION_free(h2.sess);
    SSL_SESSION_free(h.sess);
    /* TLS 1.2 tickets are reusable: renewed only when issued under the previous key */
    h = run(s, "a.example.com", NULL, NULL, TLS1_2_VERSION);
    SSL_SESSION *sess12 = h.sess;
    CHECK(h.rc == 0 && !h.resumed && sess12 && SSL_SESSION_has_ticket(sess12), "TLS 1.2: a ticket");
    h = run(s, "a.example.com", NULL, sess12, TLS1_2_VERSION);
    CHECK(h.rc == 0 && h.resumed && same_ticket(h.sess, sess12), "TLS 1.2: resumed, the ticket is kept");
    SSL_SESSION_free(h.sess);
    rv_tls_tickets_test_offset(3600);
    h = run(s, "a.example.com", NULL, sess12, TLS1_2_VERSION);
    CHECK(h.rc == 0 && h.resumed && h.sess && SSL_SESSION_has_ticket(h.sess) && !same_ticket(h.sess, sess12),
          "TLS 1.2: resumed under the previous key, the ticket is renewed");
    rv_tls_tickets_test_offset(0);
    SSL_SESSION_free(h.sess);
    SSL_SESSION_free(sess12);
    h = run(s, "b.w.example.com", NULL, sess_a, 0);
    CHECK(h.rc == 0 && !h.resumed && !strcmp(h.cn, "w"), "a ticket of chain a does not resume on chain *.w");
    SSL_SESSION_free(h.sess);
    rv_tls_tickets_test_offset(3600);
    h = run(s, "a.example.com", NULL, sess_a, 0);
    CHECK(h.rc == 0 && h.resumed, "one epoch later the ticket still resumes (previous key)");
    SSL_SESSION_free(h.sess);
    rv_tls_tickets_test_offset(3 * 3600);
    h = run(s, "a.example.com", NULL, sess_a, 0);
    CHECK(h.rc == 0 && !h.resumed, "three epochs later the key is gone: full handshake");
    SSL_SESSION_free(h.sess);
    rv_tls_tickets_test_offset(0);
    SSL_SESSION_free(sess_a);

    /* contexts live while a session uses them */
    int fds[2];
    pair(fds);
    rv_tls_t held;
    CHECK_INT(rv_tls_new(&held, rv_tls_server_ctx(s), fds[0], true, NULL), 0, "a session on the listener");
    rv_tls_server_free(s);  /* the snapshot goes away */
    SSL_CTX *cc = SSL_CTX_new(TLS_client_method());
    rv_tls_t ct;
    rv_tls_new(&ct, cc, fds[1], false, "b.w.example.com");
    int done = -1;
    for (int i = 0; i < 100 && done < 0; i++) {
        int x = rv_tls_handshake(&ct), y = rv_tls_handshake(&held);
        if (x == 0 && y == 0)
            done = 0;
        else if (x == RV_EIO || y == RV_EIO)
            done = 1;
    }
    CHECK_INT(done, 0, "a handshake after the builder freed the listener still selects and completes");
    rv_tls_free(&ct);
    rv_tls_free(&held);     /* last reference: everything freed (ASan/LSan check) */
    SSL_CTX_free(cc);
    close(fds[0]);
    close(fds[1]);

    /* ---- first chain is the default when every chain has names */
    s = rv_tls_server_new();
    const char *sd[] = { "d.example.com" };
    add(s, &a, sa, 1, NULL);
    add(s, &d, sd, 1, NULL);
    rv_tls_server_finish(s);
    CHECK_INT(rv_tls_server_select(s, "nope.example.com", 16), 0, "all named: the first chain");
    rv_tls_server_free(s);

    /* ---- bad material */
    s = rv_tls_server_new();
    char err[512];
    rv_tls_chain_cfg_t c = { .cert_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                             .cert_src = "file /x/c.pem", .key_pem = a.key, .key_src = "file /x/k.pem" };
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "bad PEM refused");
    CHECK(strstr(err, "/x/c.pem") && strstr(err, "certificate"), "names the file: %s", err);
    c.cert_pem = a.cert;
    c.key_pem = d.key;
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "key of another certificate refused");
    CHECK(strstr(err, "does not match") && strstr(err, "/x/k.pem") && !strstr(err, "PRIVATE"), "%s", err);
    c.key_pem = "garbage";
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "no key refused");
    CHECK(strstr(err, "no PEM private key"), "%s", err);
    c.key_pem = a.key;
    const char *bogus[] = { "NOT-A-SUITE" };
    c.ciphers = bogus;
    c.nciphers = 1;
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "unknown cipher refused");
    CHECK(strstr(err, "NOT-A-SUITE"), "%s", err);
    c.nciphers = 0;
    c.curves = bogus;
    c.ncurves = 1;
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "unknown curve refused");
    c.ncurves = 0;
    c.ocsp_policy = RV_TLS_OCSP_MUST;
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "MUST_STAPLE without a staple refused");
    c.ocsp_policy = 0;
    c.ocsp = (const unsigned char *)"junk";
    c.ocsp_len = 4;
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "a staple that is no OCSP response refused");
    c.ocsp = NULL;
    c.ocsp_len = 0;
    const char *san[] = { "spiffe://t/c" };
    c.san = san;
    c.nsan = 1;
    CHECK_INT(rv_tls_server_add(s, &c, err, sizeof(err)), RV_EPARSE, "verifySubjectAltName without rootCa refused");
    CHECK_INT(rv_tls_server_finish(s), RV_EINVAL, "no chain: finish refuses");
    rv_tls_server_free(s);

    /* ---- client certificates */
    s = rv_tls_server_new();
    const char *sm[] = { "m.example.com" }, *so[] = { "o.example.com" }, *ss[] = { "s.example.com" };
    rv_tls_chain_cfg_t m = { .ca_pem = ca_pem, .ca_src = "file ca.pem" };
    CHECK_INT(add(s, &a, sm, 1, &m), 0, "mTLS chain");
    rv_tls_chain_cfg_t o = m;
    o.one_way = true;
    CHECK_INT(add(s, &a, so, 1, &o), 1, "one-way chain");
    rv_tls_chain_cfg_t sn = m;
    const char *want[] = { "spiffe://t/other", "spiffe://t/c" };
    sn.san = want;
    sn.nsan = 2;
    CHECK_INT(add(s, &a, ss, 1, &sn), 2, "verifySubjectAltName chain");
    rv_tls_server_finish(s);
    CHECK(rv_tls_server_chain_mtls(s, 0) && !rv_tls_server_chain_mtls(s, 1), "required vs one-way");
    h = run(s, "m.example.com", NULL, NULL, 0);
    CHECK(h.rc != 0, "mTLS: no client certificate refused");
    SSL_SESSION_free(h.sess);
    h = run(s, "m.example.com", &bad, NULL, 0);
    CHECK(h.rc != 0, "mTLS: a certificate of another CA refused");
    SSL_SESSION_free(h.sess);
    h = run(s, "m.example.com", &cl, NULL, 0);
    CHECK(h.rc == 0 && h.xfcc_len > 0, "mTLS: good client certificate");
    CHECK(h.xfcc_len > 0 && !strncmp(h.xfcc, "Hash=", 5) && strstr(h.xfcc, ";Subject=\"CN=client\"") &&
              strstr(h.xfcc, ";URI=spiffe://t/c") && strstr(h.xfcc, ";DNS=c.example.com"),
          "xfcc: %s", h.xfcc);
    SSL_SESSION_free(h.sess);
    h = run(s, "o.example.com", NULL, NULL, 0);
    CHECK(h.rc == 0 && h.xfcc_len == 0, "one-way: no certificate is fine, no identity");
    SSL_SESSION_free(h.sess);
    h = run(s, "s.example.com", &cl, NULL, 0);
    CHECK(h.rc == 0, "verifySubjectAltName: a listed URI SAN passes");
    SSL_SESSION_free(h.sess);
    leaf_t cl2 = mk(0, "client2", "URI:spiffe://t/nope", ca, ca_key);
    h = run(s, "s.example.com", &cl2, NULL, 0);
    CHECK(h.rc != 0, "verifySubjectAltName: an unlisted SAN refused");
    SSL_SESSION_free(h.sess);
    char tiny[8];
    rv_tls_t none = { 0 };
    CHECK_INT(rv_tls_peer_xfcc(&none, tiny, sizeof(tiny)), 0, "no session: no identity");
    rv_tls_server_free(s);

    leaf_t *all[] = { &a, &w, &ww, &d, &cl, &bad, &cl2 };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        free(all[i]->cert);
        free(all[i]->key);
        X509_free(all[i]->x);
    }
    free(ca_pem);
    free(other_pem);
    X509_free(ca);
    X509_free(other);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(other_key);
    TEST_DONE();
}
