/*
 * server.h - downstream TLS: the contexts of one TLS listener (one per Gateway with
 * `ssl: true`), certificate selection by SNI, client certificates (mTLS), session tickets and
 * the verified client identity.
 *
 * A listener's TLS is a list of *chains* (Envoy's filter chains; one per distinct VirtualService
 * sslConfig, VirtualServices whose sslConfigs differ only in sniDomains share one, as Gloo
 * merges them). Each chain has its own SSL_CTX (certificate, key, client CA, parameters) and
 * server names. Selection (rv_tls_server_select): the SNI's exact name, then the longest
 * wildcard `*.suffix` covering it (a.b.example.com tries *.b.example.com, then *.example.com),
 * then the first chain without server names, then the first chain. The connection's SSL
 * starts on a base context whose ClientHello callback applies the selected chain (context,
 * versions, ciphers, curves, verify mode, tickets) before the version is negotiated.
 *
 * Lifetime: everything is owned by the base SSL_CTX (ex_data), so a connection's SSL - which
 * references the base and the chain it selected - keeps it all alive after the snapshot that
 * built it is freed. The builder (control thread, snapshot build) holds one reference, dropped
 * by rv_tls_server_free (the snapshot's free hook).
 *
 * Session tickets: keys are derived from a process-wide random secret by epoch (one hour):
 * tickets are issued under the current epoch's key and accepted under the current and the
 * previous one, so keys rotate hourly, survive every snapshot rebuild, and no state is shared
 * between threads (each worker caches its derived keys). A TLS 1.3 resumption always gets a
 * new ticket (clients use each one once); a TLS 1.2 ticket is renewed under the previous key. A chain's session id context is
 * distinct, so a ticket from one chain never resumes on another (an mTLS chain cannot be
 * entered with a session made without a client certificate).
 *
 * Threads: building on the control thread; select, the callbacks and the identity functions
 * on the worker that owns the connection.
 */
#ifndef RV_TLS_SERVER_H
#define RV_TLS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "tls/tls.h"

typedef struct rv_tls_server_s rv_tls_server_t;

enum { RV_TLS_OCSP_LENIENT = 0, RV_TLS_OCSP_STRICT, RV_TLS_OCSP_MUST };

/* One chain's configuration (all strings NUL-terminated; PEM buffers may hold several
 * certificates; the *_src strings name the secret or file in messages, never the content). */
typedef struct rv_tls_chain_cfg_s {
    const char *cert_pem, *cert_src;
    const char *key_pem, *key_src;
    const char *ca_pem, *ca_src;            /* NULL: no client certificates requested */
    const unsigned char *ocsp;              /* DER OCSP response or NULL */
    size_t ocsp_len;
    const char *ocsp_src;
    const char *const *sni;                 /* lower-case host names or "*.suffix" */
    uint32_t nsni;
    const char *const *san;                 /* verifySubjectAltName (exact match, any SAN type) */
    uint32_t nsan;
    int min_ver, max_ver;                   /* TLS1_2_VERSION / TLS1_3_VERSION, 0 = default */
    const char *const *ciphers;             /* TLS <= 1.2 suites (OpenSSL/BoringSSL names) */
    uint32_t nciphers;
    const char *const *curves;
    uint32_t ncurves;
    bool one_way;                           /* CA given, but a client certificate is optional */
    bool no_resumption;
    int ocsp_policy;                        /* RV_TLS_OCSP_* */
} rv_tls_chain_cfg_t;

/* New empty listener TLS (control thread). NULL on OOM. */
rv_tls_server_t *rv_tls_server_new(void);

/*
 * Build chain c and append it. Returns its index (>= 0) or RV_EPARSE with a message in err
 * naming the source and the problem ("certificate (file /x/cert.pem): no PEM certificate
 * found", "private key (secret ns/name) does not match the certificate", "cipherSuites: 'X'
 * is not a known cipher suite"...), RV_ENOMEM. Never puts key material in err.
 */
int rv_tls_server_add(rv_tls_server_t *s, const rv_tls_chain_cfg_t *c, char *err, size_t errlen);

/* After the last add: build the server-name table and the base context. 0, RV_EINVAL (no
 * chain), RV_ENOMEM. */
int rv_tls_server_finish(rv_tls_server_t *s);

/* Drop the builder's reference (NULL ok); sessions still using it keep it alive. */
void rv_tls_server_free(rv_tls_server_t *s);

/* The context new downstream sessions start on (rv_tls_new(..., server=true, NULL)). */
SSL_CTX *rv_tls_server_ctx(const rv_tls_server_t *s);

uint32_t rv_tls_server_nchains(const rv_tls_server_t *s);

/* The chain serving server name sni (NULL or "" = none sent); see the rule above. */
uint32_t rv_tls_server_select(const rv_tls_server_t *s, const char *sni, size_t len);

/* Whether chain i requires a verified client certificate (rootCa given, not oneWayTls). */
bool rv_tls_server_chain_mtls(const rv_tls_server_t *s, uint32_t i);

/* Whether session t carries a client certificate that verified (present, verify result OK).
 * This, not the formatted identity below, decides whether a request has a verified client. */
bool rv_tls_peer_verified(const rv_tls_t *t);

/*
 * The verified client certificate of session t as Envoy's x-forwarded-client-cert element
 * (`Hash=<sha256 hex>;Subject="<RFC 2253>";URI=<uri>;DNS=<dns>...`, with `"` and `\`
 * escaped in Subject) into out (cap bytes, NUL-terminated). Bounded by cap, never cut inside
 * an element: Hash always; Subject whole or left out when it does not fit; then the URI SANs
 * and the DNS SANs in certificate order up to the first one that does not fit, which and all
 * later ones are left out. Returns its length, 0 when the session has no verified peer
 * certificate or cap < 80, or RV_ENOMEM.
 */
int rv_tls_peer_xfcc(const rv_tls_t *t, char *out, size_t cap);

/* Process-wide ticket key secret, made once (control thread, before workers start; also
 * done lazily by rv_tls_server_new). */
void rv_tls_tickets_init(void);

/* Tests only: shift the ticket clock by seconds (epoch rotation without waiting an hour). */
void rv_tls_tickets_test_offset(int64_t seconds);

#endif
