/*
 * worker.h - the data plane: N worker threads, each with its own epoll loop and its own
 * SO_REUSEPORT listening sockets, serving the snapshot the control thread publishes.
 * Behaviour, defaults (timeouts, buffer sizes) and the access log format are described in
 * doc/internals/dataplane.md.
 */
#ifndef RV_WORKER_H
#define RV_WORKER_H

#include "config/snapshot-t.h"

typedef struct rv_dataplane_opts_s {
    int nworkers;               /* >= 1 */
    bool access_log;            /* default true: one line per request on stdout */
    bool access_log_json;       /* JSON lines instead of text */
} rv_dataplane_opts_t;

/*
 * Check that listener l can be bound now: its address is valid and its port free or already
 * served by our workers (a socket with SO_REUSEPORT is bound, not listened on, and closed).
 * Returns 0, or the positive errno of the failure (EADDRINUSE: another process holds the
 * port). Any thread (rivet run's control thread uses it as the build's rv_bind_check_fn).
 */
int rv_dataplane_check_listener(const rv_listener_cfg_t *l);

/*
 * Check that every listener of snap can be bound (address valid, port free or already ours).
 * Control thread, before publishing. Returns 0, or RV_EIO with a message in err.
 */
int rv_dataplane_check_listeners(const rv_snapshot_t *snap, char *err, size_t errlen);

/*
 * Start the workers serving snap. The data plane takes references of its own
 * (rv_snapshot_ref); the caller keeps its reference and releases it when it likes.
 * Listening sockets are open (bound, listening) when this returns 0. Control thread.
 * Returns 0; RV_EINVAL (already started, bad opts); RV_EIO when a listener cannot be bound
 * (nothing keeps running); RV_ENOMEM.
 */
int rv_dataplane_start(const rv_dataplane_opts_t *o, rv_snapshot_t *snap);

/*
 * Publish a new snapshot (the data plane takes its own references as for start; the previous
 * one is released once every worker moved off it and its in-flight requests finished).
 * Workers adopt it at their next loop iteration: new listeners opened, removed ones closed,
 * others untouched. No-op when the data plane is not running. Control thread.
 */
void rv_dataplane_publish(rv_snapshot_t *snap);

/*
 * Publish an endpoint set of the snapshot last published (es->snap must be it): each worker
 * gets a reference through its pending slot and switches to it at its next loop boundary,
 * keeping its snapshot generation (route tables, listeners, stats series) as it is. Requests
 * already running finish on the set they pinned; a worker frees a set's state when no
 * request of its own uses it. The caller keeps its reference. Returns 0, or RV_EINVAL when
 * es belongs to another snapshot or the data plane is not running. Control thread.
 */
int rv_dataplane_publish_endpoints(rv_endpoint_set_t *es);

/*
 * Wait until every worker serves the last published snapshot (its listeners are open), at
 * most timeout_ms. Returns true when they do. Control thread (tests, status reporting).
 */
bool rv_dataplane_wait_adopted(int timeout_ms);

/*
 * Graceful stop: close listeners, let in-flight requests finish (their responses carry
 * "Connection: close"), close idle keep-alive and pooled upstream connections, and stop the
 * workers by deadline_ms at the latest (then the rest is closed). Blocks until every worker
 * exited and released its snapshot references. Control thread; no-op when not running.
 */
void rv_dataplane_stop(int deadline_ms);

/* Number of live downstream connections across workers (approximate, for /metrics).
 * Any thread. */
long rv_dataplane_active_connections(void);

#endif
