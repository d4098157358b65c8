/*
 * health.h - active health checks of Upstream endpoints (Gloo's Upstream healthChecks[],
 * Envoy's core HealthCheck): a checker thread that checks every endpoint of every checked
 * cluster every interval (HTTP GET or TCP connect, with libcurl's multi interface), the
 * threshold logic that turns results into healthy/unhealthy, and the filter the control
 * thread applies to the endpoints it publishes (unhealthy endpoints left out; Envoy's panic
 * mode when fewer than half are healthy). Workers never see any of it: they only get
 * endpoint sets. Design: doc/internals/health.md.
 */
#ifndef RV_CONTROL_HEALTH_H
#define RV_CONTROL_HEALTH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/snapshot-t.h"

/* ---- threshold logic (pure; unit-tested) ------------------------------------------- */

/* What one check found. */
enum rv_hc_result {
    RV_HC_OK = 0,           /* connected (tcp) / an expected status (http) */
    RV_HC_BAD_STATUS,       /* http: a status outside expectedStatuses (Envoy: an "active" failure) */
    RV_HC_TIMEOUT,          /* no answer within timeout (Envoy: NETWORK_TIMEOUT) */
    RV_HC_NETWORK,          /* connect refused/reset, bad response (Envoy: NETWORK) */
};

/* The health of one endpoint under check. A new endpoint starts unhealthy and unchecked
 * (Envoy marks hosts added to a checked cluster FAILED_ACTIVE_HC until a check passes). */
typedef struct rv_hc_state_s {
    bool healthy;
    bool checked;           /* at least one result arrived */
    uint32_t nok, nfail;    /* consecutive successes / failures counted towards a threshold */
} rv_hc_state_t;

/*
 * Apply one result to st with cfg's thresholds, as Envoy does: the first result of an
 * endpoint decides alone (one success makes it healthy); later, a healthy endpoint turns
 * unhealthy after unhealthy_threshold consecutive network failures or timeouts, or at once
 * on an unexpected HTTP status; an unhealthy one turns healthy after healthy_threshold
 * consecutive successes. Returns true when st->healthy flipped. Any thread (pure).
 */
bool rv_hc_apply(rv_hc_state_t *st, const rv_hc_cfg_t *cfg, int result);

/* Whether status is expected by cfg (its ranges, or 200 when it lists none). Pure. */
bool rv_hc_status_ok(const rv_hc_cfg_t *cfg, long status);

/* Envoy's healthy panic threshold (loadBalancerConfig.healthyPanicThreshold, default 50 %):
 * true when total > 0 and healthy is below pct percent of total (pct 0: never); the cluster
 * then sends traffic to every endpoint. Pure. */
bool rv_hc_panic(uint32_t healthy, uint32_t total, double pct);

/* ---- scheduling (pure; unit-tested) ----------------------------------------------- */

/* A check's place in the checker's queue of due checks (a binary min-heap on due). */
typedef struct rv_hc_timer_s {
    int64_t due;            /* monotonic ms */
    uint32_t idx;           /* position in the heap, RV_HC_NOT_QUEUED when out of it */
} rv_hc_timer_t;

#define RV_HC_NOT_QUEUED UINT32_MAX

typedef struct rv_hc_heap_s {
    rv_hc_timer_t **v;
    uint32_t n, cap;
} rv_hc_heap_t;

/* Room for n timers (grows by doubling; push never allocates). 0 or RV_ENOMEM. */
int rv_hc_heap_reserve(rv_hc_heap_t *q, uint32_t n);

/* Queue t (not queued; room reserved): O(log n). */
void rv_hc_heap_push(rv_hc_heap_t *q, rv_hc_timer_t *t);

/* The earliest timer, or NULL when the heap is empty. O(1). */
rv_hc_timer_t *rv_hc_heap_top(const rv_hc_heap_t *q);

/* Take the earliest timer out (NULL when empty). O(log n). */
rv_hc_timer_t *rv_hc_heap_pop(rv_hc_heap_t *q);

/* Take t out wherever it is; nothing when it is not queued. O(log n). */
void rv_hc_heap_remove(rv_hc_heap_t *q, rv_hc_timer_t *t);

/* Free the heap's array (the timers are the caller's). */
void rv_hc_heap_free(rv_hc_heap_t *q);

/* When the first check of the k-th of n endpoints added to a cluster at once runs: ms after
 * the merge, k * interval / n (the first at once, the rest evenly over one interval, so a
 * cluster's checks never start in one burst and stay apart in later rounds). */
int64_t rv_hc_spread_ms(uint32_t k, uint32_t n, int64_t interval_ms);

/* The checks in flight the checker asks a descriptor budget for, with `endpoints` checked:
 * the power of two at or above endpoints, at least RV_HC_INFLIGHT_MIN, at most
 * RV_HC_INFLIGHT_MAX (asked again only when it grows, so the soft limit is raised a few
 * times at most). */
#define RV_HC_INFLIGHT_MIN 64
#define RV_HC_INFLIGHT_MAX 1024
uint32_t rv_hc_want_inflight(uint32_t endpoints);

/* Panic-mode logging of one cluster, at most one line per RV_HC_PANIC_LOG_MS. */
#define RV_HC_PANIC_LOG_MS 10000
typedef struct rv_hc_plog_s {
    bool state;             /* the last state noted */
    bool logged_state;      /* the last state logged */
    uint32_t changes;       /* changes not logged yet */
    int64_t next;           /* monotonic ms before which nothing more is logged */
} rv_hc_plog_t;

/* Note a change of panic state at now: true when it is to be logged now, with *changes the
 * changes since the last line (this one included); false when it is held back (a later
 * rv_hc_plog_flush logs it). Pure. */
bool rv_hc_plog_change(rv_hc_plog_t *p, bool panic, int64_t now, uint32_t *changes);

/* Whether changes held back are due for a line at now: true with *changes (and p->state the
 * state to log) once the window is over. Pure. */
bool rv_hc_plog_flush(rv_hc_plog_t *p, int64_t now, uint32_t *changes);

/* ---- the checker ------------------------------------------------------------------- */

typedef struct rv_health_s rv_health_t;

/*
 * Start the checker thread with no targets. rv_health_fd() becomes readable when an
 * endpoint's health flipped. NULL on failure (OOM, thread, curl). Control thread.
 */
rv_health_t *rv_health_start(void);

/* The eventfd to poll, and clearing it (call before rv_health_filter). Control thread. */
int rv_health_fd(const rv_health_t *h);
void rv_health_clear(rv_health_t *h);

/*
 * The endpoints to check: every endpoint of every cluster of clusters[0..n) that has a
 * health check (cluster->hc). Copied; the checker merges the list on its own thread: an
 * endpoint already checked (same cluster name and address) keeps its state, a new one
 * starts unhealthy and is checked first within one interval (the first of a cluster's new
 * endpoints at once, the rest spread: rv_hc_spread_ms), one no longer listed is dropped.
 * Checks in flight are capped by a descriptor budget (core/fdlimit.h, asked again when the
 * endpoints grow past it); due checks beyond it wait. A check rivet could not run (no
 * descriptor, memory or local port) leaves the endpoint's state as it was. 0 or RV_ENOMEM.
 * Control thread.
 */
int rv_health_set_targets(rv_health_t *h, const rv_cluster_t *clusters, uint32_t n);

/*
 * The endpoint set workers should use: raw's clusters (raw NULL: snap's own) with the
 * unhealthy endpoints of checked clusters left out (all of them when none is healthy and
 * the panic threshold is 0: the cluster then answers 503), except in a cluster below the panic
 * threshold (all of its endpoints stay; entering and leaving panic are logged, at most one
 * line per cluster per RV_HC_PANIC_LOG_MS, a held-back change by the checker later). An
 * endpoint the checker does not know yet counts as unhealthy. Returns 0 with *out NULL when
 * nothing is left out (publish raw as it is), or 0 with *out (one reference; version
 * `version`; holding snap and raw), RV_ENOMEM. h may be NULL (nothing filtered). Control
 * thread.
 */
int rv_health_filter(rv_health_t *h, rv_snapshot_t *snap, rv_endpoint_set_t *raw, uint64_t version,
                     rv_endpoint_set_t **out);

/* Whether any cluster of snap has a health check. Any thread holding a reference. */
bool rv_snapshot_has_health_checks(const rv_snapshot_t *snap);

/* Stop the thread, abort checks in flight, free everything. NULL is ignored. Control thread. */
void rv_health_stop(rv_health_t *h);

/*
 * Prometheus families of the running checker (none when it is not running):
 * rivet_upstream_healthy_endpoints{upstream} (gauge) and
 * rivet_upstream_health_check_failures_total{upstream} (counter). Admin thread.
 */
void rv_health_prometheus(FILE *f);

#endif
