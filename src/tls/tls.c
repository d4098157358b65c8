/*
 * tls.c - the TLS connection layer over OpenSSL 3 (see tls.h for the contract).
 *
 * Readiness: OpenSSL's socket BIO turns EAGAIN into SSL_ERROR_WANT_READ/WRITE; we keep which
 * one in t->want so the caller clears the matching edge-triggered flag. Reads loop until the
 * socket would block (one extra read syscall per batch compared to plain TCP, which can stop
 * at a short read: a TLS record's boundaries say nothing about the socket being drained).
 *
 * Writes: SSL_write produces one record per call with SSL_MODE_ENABLE_PARTIAL_WRITE. Small
 * iovecs (a response head, a small body) are gathered into a 16 KiB stack buffer so that a
 * typical response is one record and one write syscall; a retried write after WANT_WRITE may
 * then come from another address with the same leading bytes, which
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows (OpenSSL checks only the length and type).
 */
#include "tls/tls.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "core/err.h"
#include "core/sock.h"

int rv_tls_ctx_defaults(SSL_CTX *ctx, bool server)
{
    if (!ctx)
        return RV_EINVAL;
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY);
    uint64_t opts = SSL_OP_NO_COMPRESSION;
    if (server)
        opts |= SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF;
    SSL_CTX_set_options(ctx, opts);
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
        return RV_EINVAL;
    return 0;
}

/* ---- the socket BIO ----------------------------------------------------------------------
 * OpenSSL's socket BIO with one addition: a read that returns less than asked (or EAGAIN)
 * sets t->drained, so rv_tls_read can stop without a read that returns EAGAIN. Records are
 * read ahead (SSL_set_read_ahead), so one recv(2) takes everything the socket holds, up to
 * OpenSSL's buffer. Writes use send(MSG_NOSIGNAL). The BIO never closes the fd. */

static BIO_METHOD *sock_method;
static pthread_once_t sock_once = PTHREAD_ONCE_INIT;

static int sock_read(BIO *b, char *buf, size_t len, size_t *got)
{
    rv_tls_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = rv_sock_recv(t->fd, buf, len);
    if (n > 0) {
        *got = (size_t)n;
        if ((size_t)n < len)
            t->drained = true;
        return 1;
    }
    *got = 0;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        t->drained = true;
        BIO_set_retry_read(b);
    } else if (n == 0) {
        errno = 0;      /* end of stream: BIO_eof() says so (SSL_OP_IGNORE_UNEXPECTED_EOF needs it) */
        BIO_set_flags(b, BIO_FLAGS_IN_EOF);
    }
    return 0;
}

static int sock_write(BIO *b, const char *buf, size_t len, size_t *put)
{
    rv_tls_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) {
        *put = (size_t)n;
        return 1;
    }
    *put = 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        BIO_set_retry_write(b);
    return 0;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    rv_tls_t *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    case BIO_C_GET_FD:
        if (ptr)
            *(int *)ptr = t ? t->fd : -1;
        return t ? t->fd : -1;
    case BIO_CTRL_GET_CLOSE:
        return BIO_NOCLOSE;
    case BIO_CTRL_SET_CLOSE:
        return 1;
    default:
        return 0;
    }
}

static int sock_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void sock_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "rivet socket");
    if (m && BIO_meth_set_read_ex(m, sock_read) && BIO_meth_set_write_ex(m, sock_write) &&
        BIO_meth_set_ctrl(m, sock_ctrl) && BIO_meth_set_create(m, sock_create))
        sock_method = m;
    else
        BIO_meth_free(m);
}

int rv_tls_new(rv_tls_t *t, SSL_CTX *ctx, int fd, bool server, const char *sni)
{
    memset(t, 0, sizeof(*t));
    pthread_once(&sock_once, sock_method_init);
    t->fd = fd;
    SSL *ssl = SSL_new(ctx);
    BIO *bio = sock_method ? BIO_new(sock_method) : NULL;
    if (!ssl || !bio) {
        BIO_free(bio);
        goto fail;
    }
    BIO_set_data(bio, t);
    SSL_set_bio(ssl, bio, bio);     /* the SSL owns the BIO (one reference for both ends) */
    SSL_set_read_ahead(ssl, 1);
    /* Without AUTO_RETRY, SSL_read returns WANT_READ after a non-data record (a TLS 1.3
     * session ticket, a key update) even when more records wait in the socket: with
     * edge-triggered epoll that would stall the connection. On a nonblocking socket
     * AUTO_RETRY only means "keep processing what is there". Writes need the moving-buffer
     * mode for rv_tls_writev's gathering, whatever the context says. */
    SSL_set_mode(ssl, SSL_MODE_AUTO_RETRY | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (sni && sni[0] && !SSL_set_tlsext_host_name(ssl, sni))
            goto fail;
    }
    t->ssl = ssl;
    t->server = server;
    return 0;
fail:
    SSL_free(ssl);
    ERR_clear_error();
    memset(t, 0, sizeof(*t));
    return RV_ENOMEM;
}

void rv_tls_free(rv_tls_t *t)
{
    if (!t)
        return;
    /* A session whose handshake completed and never failed stays resumable: without this,
     * SSL_free of a connection closed without a close_notify exchange marks its session
     * not resumable (OpenSSL's "bad session" rule), and a client could never resume. */
    if (t->ssl && t->done && !t->failed)
        SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(t->ssl);
    memset(t, 0, sizeof(*t));
}

/* A reason for the error at the head of the queue (or errno), kept static. */
static const char *failure_reason(rv_tls_t *t, int ssl_err, int sys_errno)
{
    unsigned long e = ERR_peek_error();
    if (ssl_err == SSL_ERROR_SYSCALL && e == 0) {
        if (sys_errno == 0)
            return "unexpected eof";
        if (sys_errno == ECONNRESET)
            return "connection reset";
        if (sys_errno == EPIPE)
            return "broken pipe";
        return "socket error";
    }
    t->err = e;
    if (e == 0)
        return "tls error";
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(t->ssl);
        if (v != X509_V_OK)
            return X509_verify_cert_error_string(v);
    }
    const char *r = ERR_reason_error_string(e);
    return r ? r : "tls error";
}

/*
 * Classify a failed OpenSSL call. Returns RV_EAGAIN (want set), 0 (clean end of stream:
 * closed set), or RV_EIO (failed and reason set). The error queue is left empty.
 */
static int classify(rv_tls_t *t, int ret)
{
    int sys = errno;
    int e = SSL_get_error(t->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        t->want = RV_TLS_WANT_READ;
        return RV_EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        t->want = RV_TLS_WANT_WRITE;
        return RV_EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        t->closed = true;
        ERR_clear_error();
        return 0;
    default:
        if (e == SSL_ERROR_SYSCALL && sys == EINTR && ERR_peek_error() == 0) {
            t->want = RV_TLS_WANT_READ;     /* cannot happen on a nonblocking socket; retry */
            return RV_EAGAIN;
        }
        t->reason = failure_reason(t, e, sys);
        t->failed = true;
        ERR_clear_error();
        return RV_EIO;
    }
}

int rv_tls_handshake(rv_tls_t *t)
{
    if (t->failed)
        return RV_EIO;
    if (t->done)
        return 0;
    t->want = RV_TLS_WANT_NONE;
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->done = true;
        return 0;
    }
    int c = classify(t, r);
    if (c == 0) {               /* close_notify during the handshake */
        t->failed = true;
        t->reason = "closed during handshake";
        return RV_EIO;
    }
    return c;
}

ssize_t rv_tls_read(rv_tls_t *t, void *buf, size_t len)
{
    if (t->failed)
        return RV_EIO;
    if (t->closed)
        return 0;
    t->want = RV_TLS_WANT_NONE;
    t->drained = false;
    size_t got = 0;
    while (got < len) {
        ERR_clear_error();
        errno = 0;
        size_t chunk = len - got;
        int want = chunk > INT32_MAX ? INT32_MAX : (int)chunk;
        int r = SSL_read(t->ssl, (char *)buf + got, want);
        if (r > 0) {
            got += (size_t)r;
            if (t->drained && !SSL_has_pending(t->ssl)) {
                /* the socket had no more and no record is buffered: as if EAGAIN */
                t->want = RV_TLS_WANT_READ;
                break;
            }
            continue;
        }
        int c = classify(t, r);
        if (!t->done && SSL_is_init_finished(t->ssl))
            t->done = true;
        if (c == RV_EAGAIN)
            return got ? (ssize_t)got : RV_EAGAIN;
        if (c == 0)
            return (ssize_t)got;    /* 0 now, or the bytes first and 0 on the next call */
        return got ? (ssize_t)got : RV_EIO;
    }
    if (!t->done && SSL_is_init_finished(t->ssl))
        t->done = true;
    return (ssize_t)got;
}

ssize_t rv_tls_writev(rv_tls_t *t, const struct iovec *iov, int n)
{
    if (t->failed)
        return RV_EIO;
    t->want = RV_TLS_WANT_NONE;
    char gather[RV_TLS_RECORD_MAX];
    size_t written = 0;
    int i = 0;
    size_t off = 0;
    for (;;) {
        while (i < n && off >= iov[i].iov_len) {
            i++;
            off = 0;
        }
        if (i >= n)
            break;
        const char *p;
        size_t plen;
        size_t rest = iov[i].iov_len - off;
        if (rest >= RV_TLS_RECORD_MAX) {
            p = (const char *)iov[i].iov_base + off;
            plen = rest > INT32_MAX ? INT32_MAX : rest;
        } else {
            /* gather from (i, off) on, up to one record */
            size_t g = 0;
            int j = i;
            size_t o = off;
            while (j < n && g < sizeof(gather)) {
                size_t k = RV_TLS_RECORD_MAX - g;
                if (k > iov[j].iov_len - o)
                    k = iov[j].iov_len - o;
                if (k)
                    memcpy(gather + g, (const char *)iov[j].iov_base + o, k);
                g += k;
                o += k;
                if (o >= iov[j].iov_len) {
                    j++;
                    o = 0;
                }
            }
            p = gather;
            plen = g;
        }
        ERR_clear_error();
        errno = 0;
        int r = SSL_write(t->ssl, p, (int)plen);
        if (r <= 0) {
            int c = classify(t, r);
            if (c == 0) {       /* the peer's close_notify seen while writing */
                t->failed = true;
                t->reason = "peer closed";
                c = RV_EIO;
            }
            if (written)
                return (ssize_t)written;    /* an error repeats on the next call */
            return c;
        }
        if (!t->done)
            t->done = true;
        written += (size_t)r;
        /* advance (i, off) by r */
        size_t left = (size_t)r;
        while (left && i < n) {
            size_t k = iov[i].iov_len - off;
            if (k > left)
                k = left;
            off += k;
            left -= k;
            if (off >= iov[i].iov_len) {
                i++;
                off = 0;
            }
        }
    }
    return (ssize_t)written;
}

int rv_tls_shutdown(rv_tls_t *t)
{
    if (!t->ssl || t->shut || t->failed || !t->done)
        return 0;
    t->want = RV_TLS_WANT_NONE;
    ERR_clear_error();
    errno = 0;
    int r = SSL_shutdown(t->ssl);
    if (r >= 0) {
        t->shut = true;
        return 0;
    }
    int c = classify(t, r);
    if (c == RV_EAGAIN)
        return RV_EAGAIN;
    t->shut = true;
    return c == 0 ? 0 : RV_EIO;
}

const char *rv_tls_reason(const rv_tls_t *t)
{
    return t && t->reason ? t->reason : "";
}

const char *rv_tls_version(const rv_tls_t *t)
{
    if (!t->ssl || !t->done)
        return "";
    return SSL_get_version(t->ssl);
}

const char *rv_tls_sni(const rv_tls_t *t)
{
    return t->ssl ? SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

bool rv_tls_resumed(const rv_tls_t *t)
{
    return t->ssl && SSL_session_reused(t->ssl);
}
