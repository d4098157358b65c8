/*
 * stats-internal.h - per-worker counter blocks behind stats.h.
 *
 * Each worker owns one rv_wstats_t. Counters have a single writer (their worker) and are
 * updated with relaxed load+store - a plain add on x86, no lock prefix - so the admin thread
 * can read them concurrently without tearing. The block's structure (series table, cluster
 * array) only changes on its worker at a snapshot adoption, under ws->mu, which the admin
 * thread also takes while it reads; the request path never takes the mutex.
 */
#ifndef RV_STATS_INTERNAL_H
#define RV_STATS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/common.h"

#define RV_HIST_NB 12       /* upper bounds in stats.c: 1 ms .. 10 s, plus +Inf */
#define RV_STAT_NONE UINT32_MAX

/* Requests of one (route, upstream) pair on one worker. */
typedef struct rv_series_s {
    uint32_t route_id;              /* rv_route_t.stat_id, RV_STAT_NONE before routing */
    uint32_t cluster_id;            /* rv_cluster_t.stat_id, RV_STAT_NONE for local replies */
    _Atomic uint64_t cls[6];        /* [0] no status (client gone), [1..5] 1xx..5xx */
    _Atomic uint64_t bucket[RV_HIST_NB + 1];    /* not cumulative; last = above the top bound */
    _Atomic uint64_t sum_us;
    struct rv_series_s *hnext;      /* hash chain */
    struct rv_series_s *lnext;      /* all series of the block */
} rv_series_t;

typedef struct rv_cstats_s {
    _Atomic uint64_t connect_fail, retries, timeouts;
    _Atomic uint64_t tls_fail;      /* upstream TLS handshakes failed (verification or other) */
    _Atomic uint64_t tls_resumed;   /* upstream TLS handshakes that resumed a session */
    _Atomic uint64_t tls_full;      /* upstream TLS handshakes that did not */
    _Atomic uint64_t overflow;      /* requests answered 503 UO (maxRequests, maxPendingRequests) */
    _Atomic uint64_t retry_overflow;/* retries not made (maxRetries) */
    _Atomic uint64_t cx_overflow;   /* requests that found maxConnections reached (waited, or connected over it) */
} rv_cstats_t;

typedef struct rv_wstats_s {
    pthread_mutex_t mu;             /* structure only (see above) */
    rv_series_t *series;            /* list */
    rv_series_t *htab[256];
    rv_cstats_t *clusters;          /* indexed by cluster stat_id */
    uint32_t nclusters;
    _Atomic int64_t conns_active;
    _Atomic uint64_t conns_total, oom, log_dropped;
    _Atomic uint64_t ds_tls_full, ds_tls_resumed, ds_tls_fail;  /* downstream TLS handshakes */
    struct rv_wstats_s *next;       /* global list */
} rv_wstats_t;

static inline void rv_ctr_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void rv_gauge_add(_Atomic int64_t *c, int64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

/* New block, registered for rv_stats_write_prometheus() for the life of the process (so
 * counters stay monotonic across dataplane restarts). NULL on OOM. Any thread. */
rv_wstats_t *rv_wstats_new(void);

/* Find or create the series (route_id, cluster_id). Owner worker, holding ws->mu. NULL on OOM. */
rv_series_t *rv_wstats_series(rv_wstats_t *ws, uint32_t route_id, uint32_t cluster_id);

/* Make ws->clusters hold at least n entries. Owner worker, holding ws->mu. 0 or RV_ENOMEM. */
int rv_wstats_clusters(rv_wstats_t *ws, uint32_t n);

/* Count one finished request: status 0 when no response was sent. Owner worker. */
void rv_series_observe(rv_series_t *s, int status, int64_t dur_us);

#endif
