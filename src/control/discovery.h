/*
 * discovery.h - Consul service discovery: the catalog/health watcher and the immutable
 * "endpoint view" it hands to the control thread.
 *
 * The watcher runs on its own thread (never a worker, never the control loop). It keeps
 * blocking queries open on /v1/catalog/services (per datacenter) and /v1/health/service/<name>
 * (per service and datacenter), resolves host names there (getaddrinfo), and after each
 * change publishes a new view: an immutable, refcounted set of services and instances. The
 * control thread is woken through an eventfd, takes the latest view with rv_disc_latest()
 * and rebuilds its snapshot from the store and that view. A failing query keeps the last
 * answer it had: an error is never "zero instances".
 *
 * Design: doc/internals/discovery.md. User doc: doc/consul.md, "Service discovery".
 */
#ifndef RV_DISCOVERY_H
#define RV_DISCOVERY_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "config/config.h"
#include "config/snapshot-t.h"
#include "control/consul.h"
#include "core/arena.h"
#include "core/common.h"

/* ---- the endpoint view (immutable once published) ----------------------------------- */

/* An IPv4 or IPv6 socket address in 28 bytes (a sockaddr_storage is 128, and there is one
 * per instance in the state: 7 MB at 75 000 instances). ss_family aliases the family field
 * of every member, so `a.sa.ss_family` reads as it would on a sockaddr_storage. */
typedef union rv_disc_sockaddr_u {
    sa_family_t ss_family;
    struct sockaddr any;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} rv_disc_sockaddr_t;

typedef struct rv_disc_addr_s {
    rv_disc_sockaddr_t sa;          /* address with the instance's port */
    socklen_t len;
} rv_disc_addr_t;

typedef struct rv_disc_inst_s {
    rv_str_t id;                /* Service.ID */
    rv_str_t node;              /* Node.Node */
    rv_str_t dc;                /* datacenter it was read from */
    rv_str_t host;              /* Service.Address, else Node.Address (IP text or host name) */
    uint16_t port;              /* Service.Port */
    bool passing;               /* every check of the entry (service and node checks) is passing */
    rv_str_t *tags;             /* Service.Tags, as registered */
    uint32_t ntags;
    rv_disc_addr_t *addrs;      /* resolved addresses (deduplicated); naddrs 0: unresolvable */
    uint32_t naddrs;
} rv_disc_inst_t;

typedef struct rv_disc_svc_s {
    rv_str_t name;              /* Consul service name, as registered */
    rv_str_t *dcs;              /* datacenters where the catalog lists it (sorted) */
    uint32_t ndcs;
    rv_str_t *tags;             /* union of its tags over datacenters (sorted) */
    uint32_t ntags;
    rv_disc_inst_t *insts;      /* every instance (passing or not), by datacenter, then node, id;
                                 * shared with the watcher's state (read-only) */
    uint32_t ninsts;
    bool known;                 /* the instances of every datacenter were read at least once */
} rv_disc_svc_t;

typedef struct rv_disc_view_s {
    rv_arena_t arena;           /* owns everything below */
    _Atomic long refs;
    uint64_t seq;               /* increases with every view the watcher publishes */
    bool health;                /* only passing instances receive traffic (rivet's default) */
    bool synced;                /* the service list and every service were read at least once */
    rv_disc_svc_t *svcs;        /* sorted by name (strcmp) */
    uint32_t nsvcs;
    uint64_t ninsts;            /* total instances */
    uint64_t npassing;          /* of which passing */
    /* private: the state's instance blocks this view shares (one reference each), so that a
     * view costs O(services) to build and holds no copy of the instances */
    struct rv_disc_iblk_s **blks;
    uint32_t nblks;
} rv_disc_view_t;

/* Take / drop a reference; the last release frees the view. Any thread; NULL is ignored. */
void rv_disc_view_ref(rv_disc_view_t *v);
void rv_disc_view_release(rv_disc_view_t *v);

/* Service by exact name (binary search), or NULL. */
const rv_disc_svc_t *rv_disc_find(const rv_disc_view_t *v, const char *name);

/*
 * Gloo's name for the Upstream discovered from a Consul service (kubeutils.SanitizeNameV2):
 * '*', '/', '.', ':', '_', ' ' become '-'; '[', ']', '\n', '"', '\'' are dropped; a name
 * longer than 63 bytes becomes its first 31 bytes, '-', and the hex MD5 of the whole name,
 * cut at 63; then lower-cased. Writes at most outlen-1 bytes plus NUL; returns out.
 */
char *rv_disc_upstream_name(const char *service, char *out, size_t outlen);

/* ---- the state a view is built from (the watcher's; unit tests drive it directly) --- */

typedef struct rv_disc_state_s rv_disc_state_t;

/* New empty state; health selects passing-only traffic. NULL on OOM. */
rv_disc_state_t *rv_disc_state_new(bool health);
void rv_disc_state_free(rv_disc_state_t *st);

/*
 * Apply a /v1/catalog/services answer (JSON object name -> tags) for dc: services no longer
 * listed in dc lose dc's instances. Returns 1 when the state changed, 0 when not, RV_EPARSE
 * (state untouched) when json is not such an object, RV_ENOMEM.
 */
int rv_disc_set_services(rv_disc_state_t *st, const char *dc, const char *json, size_t len);

/*
 * Apply a /v1/health/service/<name> answer (JSON array of {Node, Service, Checks}) for
 * service name in dc. Addresses: Service.Address, else Node.Address; IP literals parsed,
 * host names resolved with getaddrinfo (blocking: the watcher's thread only). Returns 1 when
 * the state changed, 0 when not, RV_EPARSE (state untouched), RV_ENOMEM.
 */
int rv_disc_set_health(rv_disc_state_t *st, const char *name, const char *dc, const char *json, size_t len);

/*
 * consulDiscovery.serviceTagsAllowlist: from now on only services whose catalog tags (in a
 * datacenter) include at least one of tags are kept, as Gloo does; n == 0 allows every service.
 * Takes effect at the next rv_disc_set_services of each datacenter. tags are copied.
 * Returns 0 or RV_ENOMEM (state untouched).
 */
int rv_disc_state_allow_tags(rv_disc_state_t *st, char *const *tags, uint32_t n);

/* Number of distinct services the state lists (any datacenter). */
uint32_t rv_disc_service_count(const rv_disc_state_t *st);

/* Build an immutable view of the state (refs == 1, the caller's); NULL on OOM. The view
 * shares the state's instance arrays (refcounted blocks, never modified once filled): cost
 * O(services + datacenters), not O(instances). */
rv_disc_view_t *rv_disc_view_build(rv_disc_state_t *st);

/* ---- the watcher ---------------------------------------------------------------------- */

typedef struct rv_disc_opts_s {
    const rv_consul_cfg_t *consul;  /* address, token, TLS (copied) */
    char **dcs;                 /* datacenters; NULL/0 = every one (/v1/catalog/datacenters) */
    uint32_t ndcs;
    bool health;                /* default true: only passing instances get traffic */
    bool stale;                 /* ?stale on discovery reads */
    char **tags_allow;          /* serviceTagsAllowlist (copied); NULL/0 = every service */
    uint32_t ntags_allow;
    int wait_ms;                /* blocking wait (Settings consul.waitTime); 0 = 300 000 */
    uint32_t max_queries;       /* blocking queries held at once; 0 = rv_disc_max_queries() */
} rv_disc_opts_t;

/* Default cap on the blocking queries held open at once (one per (service, datacenter) up to
 * it; beyond it the watches take turns with shorter waits). Each holds one connection. */
#define RV_DISC_DEFAULT_MAX_QUERIES 8192u

/*
 * Process-wide cap for `rivet run --consul-discovery-max-queries N` (0 restores the default);
 * read by rv_disc_start when opts.max_queries is 0. Main thread, before rv_control_run.
 */
void rv_disc_set_max_queries(uint32_t n);
uint32_t rv_disc_max_queries(void);

typedef struct rv_disc_s rv_disc_t;

/*
 * Start the watcher thread. *notify_fd receives an eventfd (owned by the watcher) that
 * becomes readable whenever a new view is available. Raises the soft RLIMIT_NOFILE (up to the
 * hard limit) when it is too low for the query cap plus what the process had, and lowers the
 * cap (logged) when even the hard limit is too low. Returns NULL on failure (OOM, thread).
 * Control thread.
 */
rv_disc_t *rv_disc_start(const rv_disc_opts_t *o, int *notify_fd);

/*
 * The latest view with a reference taken (release it), or NULL before the first. Reading the
 * eventfd is the caller's business. Any thread.
 */
rv_disc_view_t *rv_disc_latest(rv_disc_t *d);

/* Health of the source for /ready detail and logs: true when the last queries succeeded. */
bool rv_disc_healthy(rv_disc_t *d);

/* Stop the thread (wakes blocked queries) and free everything. NULL is ignored. */
void rv_disc_stop(rv_disc_t *d);

/*
 * Process-wide switch for `rivet run --consul-discovery[=passing|catalog]`: enable discovery
 * whatever Settings say; catalog_only lets instances whose checks fail receive traffic too
 * (Gloo's behaviour). Main thread, before rv_control_run.
 */
void rv_disc_override(bool enable, bool catalog_only);
/* Whether the override enabled discovery, and its catalog_only. */
bool rv_disc_override_enabled(bool *catalog_only);

/* ---- implemented in config/translate.c (the snapshot side of discovery) ---------------- */

/*
 * rv_snapshot_build with discovery: view (may be NULL) supplies the instances of explicit
 * `consul` Upstreams and route `consul` destinations, and, when discover is true, one
 * Upstream per Consul service in the discovery namespace (named by rv_disc_upstream_name;
 * a user's Upstream of the same name wins). Same returns and thread as rv_snapshot_build.
 */
int rv_snapshot_build_disc(rv_store_t *st, const rv_settings_t *s, const rv_disc_view_t *view, bool discover,
                           rv_snapshot_t **out);

/* Whether snap has an explicit consul Upstream or a route consul destination (the watcher
 * must run even when discovery of every service is off). Any thread holding a reference. */
bool rv_snapshot_uses_consul(const rv_snapshot_t *snap);

/*
 * A new endpoint set for snap from a newer discovery view, without translating anything:
 * snap's cluster table copied, the endpoints of its Consul-fed clusters recomputed from view
 * with the selection each was built with (datacenters, tags, health); static clusters keep
 * snap's arrays. version is prev_version + 1.
 * Returns 0 and *out (one reference), or RV_EAGAIN when view cannot be applied without a
 * rebuild: snap was built without a view, the service list (names, tags, known, health mode,
 * synced) differs from the one snap was built with, or a cluster went from some endpoints to
 * none or back (its Upstream's Warning status would change). RV_ENOMEM. Control thread.
 */
int rv_endpoint_set_build(rv_snapshot_t *snap, const rv_disc_view_t *view, uint64_t prev_version,
                          rv_endpoint_set_t **out);

#endif
