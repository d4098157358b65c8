/*
 * httpc.h - the blocking, cancellable HTTP request loop shared by the Consul client (consul.c)
 * and the Vault client (vault.c): one libcurl easy handle run on a multi handle until it is done
 * or another thread cancels it, its body collected under a size cap.
 *
 * Each client keeps its own URL, headers, timeouts and the meaning of an error status; this file
 * holds only what both do the same way. Nothing here logs.
 */
#ifndef RV_CONTROL_HTTPC_H
#define RV_CONTROL_HTTPC_H

#include <curl/curl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* A response body being collected (rv_httpc_on_body). Zero it, then set max (and wipe). */
typedef struct rv_httpc_body_s {
    char *body;         /* NUL-terminated once anything arrived */
    size_t len, cap;
    size_t max;         /* more than max bytes stops the transfer with too_big */
    bool wipe;          /* the body may hold key material: grow by copy and wipe, never realloc */
    bool too_big;
} rv_httpc_body_t;

/* curl_global_init once per process (thread-safe). */
void rv_httpc_global_init(void);

/* A client's easy handle and the multi handle rv_httpc_run drives it on. 0, or RV_ENOMEM with
 * both NULL. */
int rv_httpc_handles_new(CURL **easy, CURLM **multi);

/* Clean up what rv_httpc_handles_new made (either may be NULL). */
void rv_httpc_handles_free(CURL *easy, CURLM *multi);

/* Overwrite n bytes of p and free it (NULL is fine). */
void rv_httpc_wipe_free(char *p, size_t n);

/* "scheme://hostport" without trailing slashes (malloc'd), or NULL when out of memory. */
char *rv_httpc_base(const char *scheme, const char *hostport);

/*
 * Point a client at a TLS server name (rv_consul_tls_target): when *base is an https:// URL,
 * *base becomes the URL naming server_name (SNI, certificate check) and *connect_to the
 * CURLOPT_CONNECT_TO entry to the configured address; nothing changes otherwise. 0, RV_EINVAL
 * (no host in *base) or RV_ENOMEM.
 */
int rv_httpc_server_name(char **base, const char *server_name, struct curl_slist **connect_to);

/* CURLOPT_WRITEFUNCTION appending to the rv_httpc_body_t in the WRITEDATA pointer. */
size_t rv_httpc_on_body(char *p, size_t sz, size_t nm, void *ud);

/*
 * Reset e and set what every request of both clients sets: url (http and https only), no
 * signals, the connect and whole-request timeouts (ms), and the body collected into b
 * (rv_httpc_on_body).
 */
void rv_httpc_prepare(CURL *e, const char *url, long connect_timeout_ms, long timeout_ms, rv_httpc_body_t *b);

/*
 * Set the TLS options of e: CA file / path, client certificate and key (each when non-NULL),
 * no peer or host verification when insecure, and CURLOPT_CONNECT_TO (rv_consul_tls_target)
 * when connect_to is non-NULL.
 */
void rv_httpc_tls(CURL *e, const char *ca_file, const char *ca_path, const char *cert, const char *key,
                  bool insecure, struct curl_slist *connect_to);

/*
 * Describe a failed transfer in out: curl's text for res, then ": " and detail (what curl
 * wrote to the transfer's CURLOPT_ERRORBUFFER, e.g. OpenSSL's reason for a certificate that
 * does not verify) when detail is set and says more than the text.
 */
void rv_httpc_why(char *out, size_t outlen, CURLcode res, const char *detail);

/*
 * Run e (options set, its WRITEDATA being b) on multi until it completes or *cancelled is set
 * (checked between polls of at most 1 s; curl_multi_wakeup ends a poll early). e is removed
 * from multi before returning.
 *
 * 0: *status is the HTTP status and b->body is non-NULL (an empty string when there was no body).
 * Else *status is 0, b->body is freed (wiped when b->wipe) and err says why: RV_ETOOBIG (body
 * over b->max; "response body larger than N MiB"), RV_ENOMEM, RV_EIO ("cancelled", curl's
 * error with its detail, rv_httpc_why). RV_ENOMEM with *status set when the empty body could not be allocated.
 */
int rv_httpc_run(CURLM *multi, CURL *e, _Atomic bool *cancelled, rv_httpc_body_t *b, int *status, char *err,
                 size_t errlen);

#endif
