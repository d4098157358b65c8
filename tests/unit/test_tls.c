/*
 * test_tls.c - the TLS connection layer (src/tls/tls.c) over nonblocking socketpairs, both
 * ends in this thread: handshakes (TLS 1.3, TLS 1.2, RSA, ECDSA, SNI), gathered and large
 * writes with small socket buffers (WANT_WRITE / WANT_READ reported and retried), partial
 * reads, close_notify and plain EOF, a verification failure with its reason, and refused
 * client-initiated renegotiation. Certificates are made at run time (tls_certs.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "core/err.h"
#include "test.h"
#include "tls/tls.h"
#include "tls_certs.h"

static EVP_PKEY *ca_key, *rsa_key, *ec_key, *other_ca_key;
static X509 *ca, *rsa_cert, *ec_cert, *other_ca;

static void pair(int fds[2], int sndbuf)
{
    socketpair(AF_UNIX, SOCK_STREAM, 0, fds);
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        if (sndbuf) {
            setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
            setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
        }
    }
}

static SSL_CTX *server_ctx(X509 *cert, EVP_PKEY *key)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    rv_tls_ctx_defaults(c, true);
    SSL_CTX_use_certificate(c, cert);
    SSL_CTX_use_PrivateKey(c, key);
    return c;
}

static SSL_CTX *client_ctx(X509 *trust, int maxver)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    rv_tls_ctx_defaults(c, false);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(c), trust);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    if (maxver)
        SSL_CTX_set_max_proto_version(c, maxver);
    return c;
}

/* Both ends of one TLS connection over a socketpair, with the contexts they were made from. */
typedef struct duo_s {
    int fds[2];
    SSL_CTX *sc, *cc;
    rv_tls_t s, c;
} duo_t;

/* A server session (cert, key) on fds[0] and a client session (trusting trust, at most maxver,
 * 0: any) on fds[1] of a socketpair with sndbuf as pair(); no handshake yet. */
static void duo_open(duo_t *d, X509 *cert, EVP_PKEY *key, X509 *trust, int maxver, int sndbuf)
{
    pair(d->fds, sndbuf);
    d->sc = server_ctx(cert, key);
    d->cc = client_ctx(trust, maxver);
    rv_tls_new(&d->s, d->sc, d->fds[0], true, NULL);
    rv_tls_new(&d->c, d->cc, d->fds[1], false, NULL);
}

/* Free both sessions, close the descriptors still open (-1: already closed), free the contexts. */
static void duo_close(duo_t *d)
{
    rv_tls_free(&d->s);
    rv_tls_free(&d->c);
    for (int i = 0; i < 2; i++)
        if (d->fds[i] >= 0)
            close(d->fds[i]);
    SSL_CTX_free(d->sc);
    SSL_CTX_free(d->cc);
}

/* Drive both handshakes until both are done or one fails. Returns 0 when both completed. */
static int handshake_both(rv_tls_t *s, rv_tls_t *c, int *wants)
{
    for (int i = 0; i < 200; i++) {
        int rc = rv_tls_handshake(c);
        if (rc == RV_EAGAIN && wants)
            *wants |= rv_tls_want(c);
        int rs = rv_tls_handshake(s);
        if (rs == RV_EAGAIN && wants)
            *wants |= rv_tls_want(s);
        if (rc == RV_EIO || rs == RV_EIO) {
            /* let the other side see the alert */
            rv_tls_handshake(c);
            rv_tls_handshake(s);
            return -1;
        }
        if (rc == 0 && rs == 0)
            return 0;
    }
    return -2;
}

/* Read everything available into out (cap), ignoring EAGAIN. */
static size_t drain(rv_tls_t *t, char *out, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = rv_tls_read(t, out + got, cap - got);
        if (n <= 0 || got + (size_t)n >= cap) {
            if (n > 0)
                got += (size_t)n;
            return got;
        }
        got += (size_t)n;
    }
}

static void test_basic(void)
{
    int fds[2];
    pair(fds, 0);
    SSL_CTX *sc = server_ctx(rsa_cert, rsa_key), *cc = client_ctx(ca, 0);
    rv_tls_t s, c;
    CHECK_INT(rv_tls_new(&s, sc, fds[0], true, NULL), 0, "server session");
    CHECK_INT(rv_tls_new(&c, cc, fds[1], false, "a.example.com"), 0, "client session");
    SSL_set1_host(c.ssl, "a.example.com");
    SSL_CTX_free(sc);   /* the sessions hold their own references */
    SSL_CTX_free(cc);
    int wants = 0;
    CHECK_INT(handshake_both(&s, &c, &wants), 0, "RSA handshake completes (reason '%s' / '%s')", rv_tls_reason(&s),
              rv_tls_reason(&c));
    CHECK(wants & RV_TLS_WANT_READ, "a handshake step waited for the peer (WANT_READ)");
    CHECK(strcmp(rv_tls_version(&s), "TLSv1.3") == 0, "TLS 1.3 by default: %s", rv_tls_version(&s));
    CHECK(rv_tls_sni(&s) && strcmp(rv_tls_sni(&s), "a.example.com") == 0, "server sees the SNI");
    CHECK(rv_tls_handshake_done(&s) && rv_tls_handshake_done(&c), "both report done");

    /* a gathered write: head + body in 3 iovecs, read back exactly */
    struct iovec iov[3] = { { "HTTP/1.1 200 OK\r\n", 17 }, { "content-length: 5\r\n\r\n", 21 }, { "hello", 5 } };
    CHECK_INT(rv_tls_writev(&s, iov, 3), 43, "writev of three iovecs");
    char buf[256];
    size_t got = drain(&c, buf, sizeof(buf));
    CHECK_STRN(buf, got, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", "client reads the gathered bytes");
    CHECK_INT(rv_tls_read(&c, buf, sizeof(buf)), RV_EAGAIN, "then nothing");
    CHECK_INT(rv_tls_want(&c), RV_TLS_WANT_READ, "and waits for readability");

    /* a partial read leaves the rest in the session, readable without a new socket event */
    struct iovec one = { "0123456789abcdefghij", 20 };
    CHECK_INT(rv_tls_writev(&c, &one, 1), 20, "client writes 20 bytes");
    CHECK_INT(rv_tls_read(&s, buf, 8), 8, "server reads 8 of them (buffer full)");
    CHECK_INT(rv_tls_want(&s), RV_TLS_WANT_NONE, "no want: the buffer filled");
    CHECK_INT(rv_tls_read(&s, buf + 8, 100), 12, "the other 12 next time");
    CHECK_STRN(buf, 20, "0123456789abcdefghij", "in order");

    /* close_notify -> 0 at the peer */
    CHECK_INT(rv_tls_shutdown(&s), 0, "server sends close_notify");
    CHECK_INT(rv_tls_read(&c, buf, sizeof(buf)), 0, "client reads end of stream");
    CHECK_INT(rv_tls_read(&c, buf, sizeof(buf)), 0, "and again");
    rv_tls_free(&s);
    rv_tls_free(&c);
    rv_tls_free(&c);    /* freeing an empty session is harmless */
    close(fds[0]);
    close(fds[1]);
}

static void test_tls12_ecdsa_and_plain_eof(void)
{
    duo_t d;
    duo_open(&d, ec_cert, ec_key, ca, TLS1_2_VERSION, 0);
    CHECK_INT(handshake_both(&d.s, &d.c, NULL), 0, "ECDSA TLS 1.2 handshake");
    CHECK(strcmp(rv_tls_version(&d.c), "TLSv1.2") == 0, "TLS 1.2 negotiated: %s", rv_tls_version(&d.c));
    CHECK(rv_tls_sni(&d.s) == NULL, "no SNI sent, none seen");
    const char *name = SSL_get_cipher_name(d.s.ssl);
    CHECK(name && strstr(name, "ECDSA"), "an ECDSA suite: %s", name ? name : "-");
    /* the client vanishes without close_notify: a server sees a plain end of stream */
    rv_tls_free(&d.c);
    close(d.fds[1]);
    d.fds[1] = -1;
    char buf[64];
    CHECK_INT(rv_tls_read(&d.s, buf, sizeof(buf)), 0, "plain EOF is end of stream for a server");
    duo_close(&d);
}

/* 1 MiB through 4 KiB socket buffers: writes block (WANT_WRITE), partial counts are retried
 * with advanced iovecs, nothing is lost or reordered. */
static void test_large(void)
{
    duo_t d;
    duo_open(&d, rsa_cert, rsa_key, ca, 0, 4096);
    CHECK_INT(handshake_both(&d.s, &d.c, NULL), 0, "handshake");
    size_t total = 1u << 20;
    unsigned char *src = malloc(total), *dst = malloc(total);
    for (size_t i = 0; i < total; i++)
        src[i] = (unsigned char)(i * 7 + (i >> 13));
    /* iovec shapes: a small head, a big middle, small pieces, a big tail */
    size_t cuts[] = { 0, 100, 300000, 300007, 300100, 301000, total };
    size_t sent = 0, recvd = 0;
    int blocked = 0, loops = 0, errors = 0;
    while (recvd < total && loops++ < 100000) {
        if (sent < total) {
            struct iovec iov[8];
            int n = 0;
            for (int k = 0; k + 1 < (int)(sizeof(cuts) / sizeof(cuts[0])); k++) {
                size_t a = cuts[k] > sent ? cuts[k] : sent, b = cuts[k + 1];
                if (a < b)
                    iov[n++] = (struct iovec){ src + a, b - a };
            }
            ssize_t w = rv_tls_writev(&d.s, iov, n);
            if (w == RV_EAGAIN || (w >= 0 && sent + (size_t)w < total)) {
                blocked += rv_tls_want(&d.s) == RV_TLS_WANT_WRITE;
            } else if (w < 0) {
                errors++;
                break;
            }
            if (w > 0)
                sent += (size_t)w;
        }
        ssize_t r = rv_tls_read(&d.c, dst + recvd, total - recvd);
        if (r > 0)
            recvd += (size_t)r;
        else if (r != RV_EAGAIN) {
            errors++;
            break;
        }
    }
    CHECK_INT(errors, 0, "no error");
    CHECK(sent == total && recvd == total, "1 MiB sent (%zu) and received (%zu)", sent, recvd);
    CHECK(blocked > 0, "writes blocked on the small buffer and reported WANT_WRITE (%d)", blocked);
    CHECK(memcmp(src, dst, total) == 0, "bytes identical and in order");
    free(src);
    free(dst);
    duo_close(&d);
}

static void test_verify_failure(void)
{
    duo_t d;
    duo_open(&d, rsa_cert, rsa_key, other_ca, 0, 0);
    CHECK_INT(handshake_both(&d.s, &d.c, NULL), -1, "handshake against the wrong CA fails");
    CHECK(strlen(rv_tls_reason(&d.c)) > 0 && strstr(rv_tls_reason(&d.c), "certificate"),
          "client reason names the certificate: %s", rv_tls_reason(&d.c));
    CHECK_INT(rv_tls_handshake(&d.s), RV_EIO, "the server failed too");
    CHECK(strlen(rv_tls_reason(&d.s)) > 0, "server reason: %s", rv_tls_reason(&d.s));
    char buf[16];
    CHECK_INT(rv_tls_read(&d.c, buf, sizeof(buf)), RV_EIO, "a failed session stays failed");
    struct iovec v = { "x", 1 };
    CHECK_INT(rv_tls_writev(&d.c, &v, 1), RV_EIO, "for writes too");
    CHECK_INT(rv_tls_shutdown(&d.c), 0, "shutdown of a failed session does nothing");
    duo_close(&d);
}

static void test_renegotiation_refused(void)
{
    duo_t d;
    duo_open(&d, rsa_cert, rsa_key, ca, TLS1_2_VERSION, 0);
    CHECK_INT(handshake_both(&d.s, &d.c, NULL), 0, "TLS 1.2 handshake");
    CHECK_INT(SSL_renegotiate(d.c.ssl), 1, "client asks to renegotiate");
    int reneg_ok = 0, client_failed = 0;
    char buf[64];
    for (int i = 0; i < 50; i++) {
        ERR_clear_error();
        int r = SSL_do_handshake(d.c.ssl);
        if (r == 1 && !SSL_renegotiate_pending(d.c.ssl)) {
            reneg_ok = 1;
            break;
        }
        if (r <= 0) {
            int e = SSL_get_error(d.c.ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                client_failed = 1;
                break;
            }
        }
        (void)rv_tls_read(&d.s, buf, sizeof(buf));
        if (SSL_read(d.c.ssl, buf, sizeof(buf)) <= 0) {
            int e = SSL_get_error(d.c.ssl, -1);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                client_failed = 1;
                break;
            }
        }
    }
    ERR_clear_error();
    CHECK(!reneg_ok, "renegotiation never completes");
    CHECK(client_failed, "the client's renegotiation attempt fails (no_renegotiation)");
    duo_close(&d);
}

static void test_modes(void)
{
    SSL_CTX *sc = SSL_CTX_new(TLS_server_method());
    CHECK_INT(rv_tls_ctx_defaults(sc, true), 0, "server defaults");
    long m = SSL_CTX_get_mode(sc);
    CHECK((m & SSL_MODE_RELEASE_BUFFERS) && (m & SSL_MODE_ENABLE_PARTIAL_WRITE) &&
              (m & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) && (m & SSL_MODE_AUTO_RETRY),
          "modes set");
    uint64_t o = SSL_CTX_get_options(sc);
    CHECK((o & SSL_OP_NO_RENEGOTIATION) && (o & SSL_OP_IGNORE_UNEXPECTED_EOF), "server options");
    CHECK_INT(SSL_CTX_get_min_proto_version(sc), TLS1_2_VERSION, "TLS 1.2 minimum");
    SSL_CTX_free(sc);
    CHECK_INT(rv_tls_ctx_defaults(NULL, true), RV_EINVAL, "NULL context refused");
}

int main(void)
{
    ca_key = tc_key(0);
    ca = tc_cert(ca_key, "rivet test CA", NULL, NULL, NULL, 1);
    other_ca_key = tc_key(0);
    other_ca = tc_cert(other_ca_key, "other CA", NULL, NULL, NULL, 1);
    rsa_key = tc_key(1);
    rsa_cert = tc_cert(rsa_key, "a.example.com", ca, ca_key, "DNS:a.example.com", 0);
    ec_key = tc_key(0);
    ec_cert = tc_cert(ec_key, "b.example.com", ca, ca_key, "DNS:b.example.com", 0);
    CHECK(ca && rsa_cert && ec_cert, "test certificates generated");

    test_modes();
    test_basic();
    test_tls12_ecdsa_and_plain_eof();
    test_large();
    test_verify_failure();
    test_renegotiation_refused();

    X509_free(ca);
    X509_free(other_ca);
    X509_free(rsa_cert);
    X509_free(ec_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(other_ca_key);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(ec_key);
    TEST_DONE();
}
