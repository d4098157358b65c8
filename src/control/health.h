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
 * starts unhealthy and is checked at once, one no longer listed is dropped. 0 or RV_ENOMEM.
 * Control thread.
 */
int rv_health_set_targets(rv_health_t *h, const rv_cluster_t *clusters, uint32_t n);

/*
 * The endpoint set workers should use: raw's clusters (raw NULL: snap's own) with the
 * unhealthy endpoints of checked clusters left out (all of them when none is healthy and
 * the panic threshold is 0: the cluster then answers 503), except in a cluster below the panic
 * threshold (all of its endpoints stay; entering and leaving panic are logged once). An
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
