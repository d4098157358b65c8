/*
 * consul.h - a small Consul HTTP API client for the control plane (never a worker): KV reads
 * with blocking queries, writes with CAS, catalog/health reads. Built on libcurl; one client
 * per thread (it reuses its connection). Follows ../shared/reference/protocols.md sections
 * 1 and 2: X-Consul-Index handling, plain-text errors, CONSUL_* environment variables.
 */
#ifndef RV_CONSUL_H
#define RV_CONSUL_H

#include "core/common.h"

typedef struct rv_consul_cfg_s {
    char *address;          /* "host:port", "http://host:port" or "https://host:port" */
    char *scheme;           /* "http" or "https" (https forced by an https:// address) */
    char *datacenter;       /* ?dc= when set */
    char *token;            /* X-Consul-Token */
    char *ca_file, *ca_path, *cert_file, *key_file, *tls_server_name;
    bool insecure_skip_verify;
    bool stale;             /* ?stale on reads */
    char *basic_auth;       /* "user[:pass]" from CONSUL_HTTP_AUTH */
} rv_consul_cfg_t;

/*
 * Fill unset fields from Consul's own environment variables exactly as Consul's Go client
 * does (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE (wins over the token),
 * CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME,
 * CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_HTTP_AUTH); default address 127.0.0.1:8500.
 * Returns 0, or RV_EINVAL with a message in err (e.g. unreadable token file).
 */
int rv_consul_cfg_from_env(rv_consul_cfg_t *c, char *err, size_t errlen);
void rv_consul_cfg_free(rv_consul_cfg_t *c);

typedef struct rv_consul_resp_s {
    int status;             /* HTTP status; 0 when no response (connection error, timeout) */
    uint64_t index;         /* X-Consul-Index (0 when absent) */
    bool known_leader;      /* X-Consul-KnownLeader */
    bool has_known_leader;  /* the header was present (absent: say nothing about the leader) */
    char *body;             /* response body, NUL-terminated (malloc'd; free with _resp_free) */
    size_t len;
    char err[256];          /* transport error or the server's plain-text error, for logs */
} rv_consul_resp_t;

typedef struct rv_consul_s rv_consul_t;

/* New client for cfg (copied). NULL on OOM. */
rv_consul_t *rv_consul_new(const rv_consul_cfg_t *cfg);
void rv_consul_free(rv_consul_t *c);

/*
 * GET /v1/<path> (path may carry a query string). index > 0 makes it a blocking query
 * (?index=&wait=<wait_ms>ms); the transfer times out at wait + wait/16 + 5 s. Returns 0 when
 * an HTTP response arrived (any status: check out->status), RV_EIO on transport failure.
 * Body sizes are capped (64 MiB) -> RV_ETOOBIG.
 */
int rv_consul_get(rv_consul_t *c, const char *path, uint64_t index, int wait_ms, rv_consul_resp_t *out);

/* PUT /v1/<path> with body (raw bytes). Same returns as rv_consul_get. */
int rv_consul_put(rv_consul_t *c, const char *path, const void *body, size_t len, rv_consul_resp_t *out);

/* DELETE /v1/<path>. Same returns as rv_consul_get. */
int rv_consul_delete(rv_consul_t *c, const char *path, rv_consul_resp_t *out);

void rv_consul_resp_free(rv_consul_resp_t *r);

/*
 * CONSUL_TLS_SERVER_NAME with libcurl, which takes the TLS name (SNI and certificate check)
 * from the URL's host and has no option to set it apart: for an https base URL
 * ("https://host[:port][/prefix]") and a server name, *url_base becomes
 * "https://<server_name>:<port>[/prefix]" and *connect_to "<server_name>:<port>:<host>:<port>"
 * (for CURLOPT_CONNECT_TO), so the connection still goes to host:port. Both malloc'd. When
 * nothing applies (no name, not https), both are NULL. Returns 0, RV_EINVAL (base without a
 * host), RV_ENOMEM. Any thread.
 */
int rv_consul_tls_target(const char *base, const char *server_name, char **url_base, char **connect_to);

/*
 * Make the request c is blocked in (and every later one) fail at once with RV_EIO and err
 * "cancelled". Any thread; the client must stay allocated until its owner's call returns.
 * (Added by the KV source: stopping a watcher must not wait for a 5-minute blocking query.)
 */
void rv_consul_cancel(rv_consul_t *c);

/*
 * The index to send on the next blocking query, by Consul's rules: reset to 0 when the
 * returned index went backwards, never below 1 otherwise.
 */
uint64_t rv_consul_next_index(uint64_t prev, uint64_t got);

/*
 * Delay before the next attempt after `failures` consecutive failures: exponential with full
 * jitter, base 250 ms, cap 60 s (hardening.md section 4). rng: caller's PRNG state.
 */
int64_t rv_consul_backoff_ms(unsigned failures, uint64_t *rng);

/* Go's strconv.ParseBool (1 t T TRUE true True / 0 f F FALSE false False), for the
 * environment variables of the Consul and Vault clients: 0/1, or -1 when invalid. */
int rv_go_bool(const char *s);

#endif
