/*
 * client.h - TLS client contexts for upstream connections (an Upstream's sslConfig, or
 * static.useTls).
 *
 * A context is built on the control thread during a snapshot build (translate-clusters.c)
 * from PEM text (a Gloo tls secret or sslFiles read by the build) and the Upstream's
 * parameters, and freed with the snapshot. Workers only read it: they make one SSL per new
 * upstream connection (rv_tls_client_ssl) and the SSL holds its own reference on the
 * SSL_CTX, so a pooled connection outlives the snapshot that made it safely.
 *
 * The server certificate is always verified: against rootCa when one is configured, else
 * against the system trust store (stricter than Gloo, whose Envoy does not verify without a
 * rootCa). The name checked is each of verifySubjectAltName when listed, else the SNI (or,
 * without SNI, the endpoint's host name or IP).
 *
 * Sessions: the context keeps no internal session cache; the new-session callback hands each
 * session to the hook the data plane registered (rv_tls_client_set_session_hook), which keeps
 * the last one per pool entry on its worker (no locks).
 */
#ifndef RV_TLS_CLIENT_H
#define RV_TLS_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef struct rv_tls_client_s {
    SSL_CTX *ctx;
    uint64_t id;            /* salted fingerprint of everything that shaped ctx; never 0 */
    bool has_cert;          /* presents a client certificate (mTLS) */
    bool check_san;         /* verifySubjectAltName listed: ctx checks those names */
    bool has_ca;            /* rootCa given (else the system store) */
} rv_tls_client_t;

/* What a context is made of. PEM buffers need no NUL; NULL/0 = absent. */
typedef struct rv_tls_client_opts_s {
    const char *cert, *key, *ca;
    size_t cert_len, key_len, ca_len;
    const char *cert_src, *key_src, *ca_src;    /* names for messages (a file, "secret ns/name") */
    int min_ver, max_ver;           /* 0 auto, 1 TLSv1.0 .. 4 TLSv1.3 (Gloo's enum) */
    const char *const *ciphers;     /* OpenSSL names; "TLS_*" are TLS 1.3 suites */
    uint32_t nciphers;
    const char *const *curves;
    uint32_t ncurves;
    const char *const *san;         /* verifySubjectAltName */
    uint32_t nsan;
    bool allow_reneg;               /* accept a server's renegotiation (TLS 1.2) */
    bool one_way;                   /* never present the client certificate */
} rv_tls_client_opts_t;

/*
 * Build a client context. Returns 0 with *out (free with rv_tls_client_free), RV_EPARSE with
 * the reason in err (naming the source and the problem: unreadable PEM, key not matching the
 * certificate, unknown cipher...), or RV_ENOMEM. Never logs key material. Control thread (or
 * the CLI).
 */
int rv_tls_client_new(const rv_tls_client_opts_t *o, rv_tls_client_t **out, char *err, size_t errlen);

/* Free (NULL ignored). Live SSLs keep the SSL_CTX alive by their own reference. */
void rv_tls_client_free(rv_tls_client_t *c);

/*
 * Set the certificate name check of a client SSL (made from c->ctx, before its handshake) to
 * verify_name - a host name or an IP literal, not NUL-terminated - unless the context checks
 * verifySubjectAltName instead. Returns 0, or RV_EINVAL for an unusable name (empty or too
 * long: the handshake must not go ahead unchecked). Any thread.
 */
int rv_tls_client_verify_name(const rv_tls_client_t *c, SSL *ssl, rv_str_t verify_name);

/*
 * The hook every context's new-session callback calls: it takes ownership of sess when it
 * returns 1 (else the session is freed). Registered once by the data plane before any
 * connection; NULL keeps no session.
 */
typedef int (*rv_tls_session_hook_t)(SSL *ssl, SSL_SESSION *sess);
void rv_tls_client_set_session_hook(rv_tls_session_hook_t hook);

/*
 * Why a handshake on ssl failed, for the access log: "certificate verify failed: <reason>"
 * when the peer's certificate was refused, else the first OpenSSL error of the thread's queue
 * (which is cleared), else what (e.g. "connection closed during handshake"). Returns the
 * length written to out (NUL-terminated, truncated to cap).
 */
size_t rv_tls_client_failure(SSL *ssl, const char *what, char *out, size_t cap);

#endif
