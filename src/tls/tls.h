/*
 * tls.h - the TLS connection layer: one TLS session (OpenSSL 3 SSL) on a nonblocking socket,
 * for downstream (server) and upstream (client) connections of the workers.
 *
 * The layer sits where read()/writev() sit in the plain path and keeps the data plane's
 * edge-triggered readiness model: every call either makes progress or stops with RV_EAGAIN
 * and says which socket readiness it waits for (rv_tls_want): clear can_read on
 * RV_TLS_WANT_READ, can_write on RV_TLS_WANT_WRITE, and retry the same call when that flag
 * is set again. Either direction may wait for the other (TLS 1.3 post-handshake messages,
 * a pending write inside a read), so the caller must retry a blocked read when can_write
 * comes back and vice versa - the connection state machines already retry every step on
 * any event.
 *
 * Contexts (SSL_CTX) are built by the control thread (snapshot build) and only referenced
 * here: rv_tls_new takes its own reference (SSL_new), so a session keeps working after the
 * snapshot that built its context is freed.
 *
 * Errors: a failed session keeps a short static reason (rv_tls_reason), e.g. "handshake:
 * certificate verify failed", for the access log and /status; never key material.
 *
 * Thread: a session belongs to one worker thread. rv_tls_ctx_defaults runs on the control
 * thread while building a context.
 */
#ifndef RV_TLS_H
#define RV_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <openssl/ssl.h>

/* rv_tls_want(): the readiness a blocked call waits for. */
enum { RV_TLS_WANT_NONE = 0, RV_TLS_WANT_READ = 1, RV_TLS_WANT_WRITE = 2 };

/* Largest plaintext of one TLS record; writes gather small iovecs up to this size. */
#define RV_TLS_RECORD_MAX 16384

typedef struct rv_tls_s {
    SSL *ssl;
    const char *reason;         /* static; NULL while no error */
    unsigned long err;          /* first OpenSSL error code of the failure (0 none) */
    unsigned char want;         /* RV_TLS_WANT_* of the last RV_EAGAIN */
    bool server, done, failed, closed, shut;
    bool drained;               /* the last socket read of this rv_tls_read was short or EAGAIN */
    int fd;
} rv_tls_t;

/*
 * Apply rivet's defaults to a context being built (control thread):
 * SSL_MODE_RELEASE_BUFFERS (an idle session holds no 34 KiB of record buffers),
 * SSL_MODE_ENABLE_PARTIAL_WRITE and SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER (rv_tls_writev gathers
 * into a stack buffer, so a retried write comes from another address), SSL_MODE_AUTO_RETRY
 * (on a nonblocking socket: keep processing records already received after a non-data one;
 * rv_tls_new sets these three on every session whatever the context says), TLS >= 1.2, no
 * compression; for a server also SSL_OP_NO_RENEGOTIATION (client-initiated renegotiation
 * refused), SSL_OP_CIPHER_SERVER_PREFERENCE and SSL_OP_IGNORE_UNEXPECTED_EOF (a client that
 * closes without close_notify is an ordinary EOF for HTTP/1.1, whose framing detects
 * truncation). Returns 0 or RV_EINVAL.
 */
int rv_tls_ctx_defaults(SSL_CTX *ctx, bool server);

/*
 * Start a session on fd (nonblocking, connected/accepted) from ctx; the session takes its own
 * reference on ctx. server selects accept or connect state. For a client, sni (NUL-terminated,
 * may be NULL) is sent as server_name. t is caller-owned storage (embedded or pooled).
 * Returns 0, RV_ENOMEM (t is then empty: rv_tls_free is harmless).
 */
int rv_tls_new(rv_tls_t *t, SSL_CTX *ctx, int fd, bool server, const char *sni);

/*
 * One handshake step. Returns 0 when the handshake is complete (and on every later call),
 * RV_EAGAIN blocked (rv_tls_want says on what), RV_EIO failed (rv_tls_reason; the session is
 * unusable: close the socket).
 */
int rv_tls_handshake(rv_tls_t *t);

/*
 * Read decrypted bytes into buf[0..len) until it is full or the socket is drained (so an
 * edge-triggered socket needs no further read before its next event; len > 0). Drained is
 * known without an extra read: records are read ahead into OpenSSL's buffer through rivet's
 * own socket BIO, which notes a short read - the plain path's signal. Completes the handshake first when needed.
 * Returns the bytes read (> 0; when fewer than len, rv_tls_want() tells whether the socket
 * was drained), 0 at the peer's end of stream (close_notify, or a plain EOF on a server
 * context with SSL_OP_IGNORE_UNEXPECTED_EOF), RV_EAGAIN with nothing read, RV_EIO error
 * (reason set; bytes read before it in the same call are returned first, the error on the
 * next call).
 */
ssize_t rv_tls_read(rv_tls_t *t, void *buf, size_t len);

/*
 * Write iov[0..n) as TLS records. Small iovecs are gathered into one record (one write
 * syscall for a typical response head + body); an iovec of a full record or more is written
 * directly. Returns the bytes written (>= 0): fewer than the total means blocked (rv_tls_want)
 * and the caller retries with the iovecs advanced by the count (as with writev). RV_EAGAIN
 * when nothing could be written, RV_EIO error (reason set).
 */
ssize_t rv_tls_writev(rv_tls_t *t, const struct iovec *iov, int n);

/*
 * Send close_notify once (no wait for the peer's). Returns 0 sent (or nothing to do),
 * RV_EAGAIN blocked on the socket (retry or just close), RV_EIO.
 */
int rv_tls_shutdown(rv_tls_t *t);

/* Free the session (SSL_free drops its context reference); the fd is not closed. NULL and an
 * empty t are fine; t is left empty. A session that completed its handshake and never failed
 * stays resumable (a session taken with SSL_get1_session can be offered again) even when the
 * connection ends without close_notify. */
void rv_tls_free(rv_tls_t *t);

static inline int rv_tls_want(const rv_tls_t *t) { return t->want; }
static inline bool rv_tls_handshake_done(const rv_tls_t *t) { return t->done; }

/* Static reason of the failure, or "" when none. */
const char *rv_tls_reason(const rv_tls_t *t);

/* Negotiated protocol version name ("TLSv1.3") or "" before the handshake. */
const char *rv_tls_version(const rv_tls_t *t);

/* The SNI the client sent (server side), or NULL. */
const char *rv_tls_sni(const rv_tls_t *t);

/* The session was resumed (ticket or cache). */
bool rv_tls_resumed(const rv_tls_t *t);

#endif
