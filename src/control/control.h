/*
 * control.h - the control thread: watches the config directory, rebuilds and validates
 * snapshots off the data path, publishes them to the workers, serves the admin listener,
 * and handles signals (SIGHUP re-read, SIGTERM/SIGINT graceful stop).
 */
#ifndef RV_CONTROL_H
#define RV_CONTROL_H

#include <stdio.h>

#include "config/snapshot-t.h"

typedef struct rv_control_opts_s {
    const char *dir;            /* bootstrap directory (--dir) */
    const char *ns;             /* Settings namespace (--namespace) */
    const char *admin_addr;     /* "host:port" */
    int workers;
    bool access_log;
    bool access_log_json;
    int drain_ms;               /* graceful stop deadline */
} rv_control_opts_t;

/*
 * Run rivet until SIGTERM/SIGINT. Main thread; blocks. Returns the process exit code:
 * 0 after a graceful stop, 1 when startup fails (bad Settings, admin port busy, listener
 * cannot be bound), 2 when the directory cannot be read.
 */
int rv_control_run(const rv_control_opts_t *o);

/*
 * The snapshot currently served, with a reference taken (release with rv_snapshot_release),
 * or NULL before the first publication. Any thread.
 */
rv_snapshot_t *rv_control_current(void);

/*
 * The snapshot currently served and the endpoint set published for it since (NULL when it
 * still serves its own endpoints), each with a reference taken (release both). Returns false
 * (both NULL) before the first publication. Any thread.
 */
bool rv_control_current_pair(rv_snapshot_t **snap, rv_endpoint_set_t **es);

/* Whether the first snapshot is serving (for /ready). Any thread. */
bool rv_control_ready(void);

/*
 * Health of the config sources (Consul KV today), for /ready's detail. Any thread. Returns
 * true when every source answered its last read (or none is remote); detail gets one line per
 * source ("" when there is nothing to say). Serving the last good config goes on either way.
 */
bool rv_control_sources_healthy(char *detail, size_t n);

/* Prometheus lines of the config sources (rivet_config_source_healthy{source="consul"} ...). Any thread. */
void rv_control_sources_prometheus(FILE *f);

#endif
