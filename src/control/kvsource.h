/*
 * kvsource.h - the Consul KV config source: one watcher thread per source, with its own
 * Consul client, runs blocking recursive reads of <rootKey>/ and hands each new listing to
 * the control thread through an eventfd plus a mutex-protected "latest result" slot. The
 * control thread never waits on Consul.
 *
 * Watch rules (protocols.md 1, hardening.md 4): index reset when it goes backwards, never
 * below 1; a token bucket (burst 2, 10 reads/s) bounds the loop whatever Consul answers;
 * wait bounded by refreshRate (5 min at most); errors back off exponentially with full jitter
 * (consul.h); consistent reads unless stale is asked for.
 *
 * Health (for /ready and /metrics, any thread): a source is healthy after a successful read
 * and unhealthy from its first failure until the next success; each change is logged once.
 */
#ifndef RV_KVSOURCE_H
#define RV_KVSOURCE_H

#include <stdio.h>

#include "config/config.h"
#include "control/consul.h"

typedef struct rv_kv_listing_s {
    rv_kv_pair_t *pairs;        /* keys and decoded values (each malloc'd) */
    size_t n;
    uint64_t index;             /* X-Consul-Index of the read */
} rv_kv_listing_t;

void rv_kv_listing_free(rv_kv_listing_t *l);

/*
 * Parse the body of GET /v1/kv/<prefix>?recurse (a JSON array of entries with base64
 * values; null for empty values). Returns 0 with *out (free with rv_kv_listing_free), or
 * RV_EPARSE with a message in err, or RV_ENOMEM.
 */
int rv_kv_parse_listing(const char *body, size_t len, rv_kv_listing_t **out, char *err, size_t errlen);

/* Standard base64 (with padding) into out (at least 3 * len / 4 + 3 bytes). Bytes written, or -1. */
long rv_base64_decode(const char *in, size_t len, unsigned char *out);

typedef struct rv_kvsource_opts_s {
    const rv_consul_cfg_t *consul;  /* copied; CONSUL_* environment already applied */
    const char *root;               /* root key without slashes, e.g. "gloo" */
    int wait_ms;                    /* blocking wait (refreshRate, at most 5 min) */
} rv_kvsource_opts_t;

typedef struct rv_kvsource_s rv_kvsource_t;

/* Start the watcher thread. NULL on OOM or when the thread cannot start. Control thread. */
rv_kvsource_t *rv_kvsource_start(const rv_kvsource_opts_t *o);

/* The eventfd the control thread polls (readable after a new listing or a health change). */
int rv_kvsource_fd(const rv_kvsource_t *k);

/*
 * Control thread, after the fd is readable: drains it; returns 1 with *out the latest listing
 * not yet taken (older ones were superseded and freed), 0 when there is none.
 */
int rv_kvsource_take(rv_kvsource_t *k, rv_kv_listing_t **out);

/* Stop (cancels a blocked read at once), join and free. NULL is fine. Control thread. */
void rv_kvsource_stop(rv_kvsource_t *k);

/*
 * Health of the Consul KV source, any thread: true when healthy or when no KV source runs;
 * false when reads fail, and when they answer (?stale) but Consul reports no known leader
 * (X-Consul-KnownLeader: false): "degraded", the config keeps serving either way.
 * detail gets one line ("consul kv gloo/: healthy (index 42)", "... unhealthy: ...",
 * "... degraded: no known leader ...").
 */
bool rv_kvsource_healthy(char *detail, size_t n);

/* Whether a KV source is running (any thread). */
bool rv_kvsource_active(void);

/*
 * Prometheus text for the KV source (nothing when none runs):
 *   rivet_config_source_healthy{source="consul"} 0|1   (0 when failing or degraded)
 *   rivet_config_source_reads_total{source="consul",result="ok|error"} N
 *   rivet_config_source_known_leader{source="consul"} 0|1   (0: degraded, no known leader)
 * Any thread.
 */
void rv_kvsource_prometheus(FILE *f);

#endif
