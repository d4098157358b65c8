/*
 * stats.h - counters for /metrics. Workers increment their own slots (no atomics on the
 * request path, no sharing); the admin thread sums the workers' slots when scraped.
 * Slots are keyed by stable ids assigned per name (virtual service, route, cluster), so
 * counters survive reloads.
 */
#ifndef RV_STATS_H
#define RV_STATS_H

#include <stdio.h>

#include "config/snapshot-t.h"

/* Give every vhost, route and cluster of snap its stat_id, and every cluster with circuit
 * breaker limits (cb.on) the shared counts of its upstream name (cbs: one per name for the
 * life of the process, so they carry over reloads). Control thread, before publish. 0 or
 * RV_ENOMEM. */
int rv_stats_assign(rv_snapshot_t *snap);

/* Control-plane counters (control thread writes, admin reads). */
void rv_stats_reload(bool ok);          /* a snapshot was published (ok) or a build failed */
void rv_stats_config_errors(uint32_t n);/* rejected resources in the current snapshot */

/*
 * Write the Prometheus text exposition of all counters and histograms to f.
 * Admin thread (any thread; takes the registry and per-worker structure mutexes, never
 * blocks a worker's request path). Returns 0, RV_EIO when f reports an error, RV_ENOMEM.
 */
int rv_stats_write_prometheus(FILE *f);

/* Write s[0..n) as a Prometheus label value (text format): backslash, double quote and newline
 * escaped. Any thread. */
void rv_prom_label(FILE *f, const char *s, size_t n);

/* Open downstream connections summed over every worker block (any thread). */
long rv_stats_active_connections(void);

#endif
