/*
 * snapshot-t.h - types of the compiled, immutable configuration snapshot.
 *
 * A snapshot is what the control thread builds from the accepted Gloo resources (the
 * translation of Gateways, VirtualServices, RouteTables, Upstreams and UpstreamGroups, like
 * Gloo's Proxy) and publishes to the workers with one atomic pointer swap. Everything it
 * points to lives in snap->arena and is never modified after publication, so workers read it
 * without locks. Delegation is already flattened, options are already merged, and every
 * route has exactly one matcher (Gloo emits one Envoy route per matcher).
 *
 * Owners: config/ builds it (translate.c), proxy/router.c adds its compiled lookup index,
 * control/ publishes and retires it (refcount), workers pin it per request.
 */
#ifndef RV_SNAPSHOT_T_H
#define RV_SNAPSHOT_T_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "core/arena.h"
#include "core/common.h"

/* Opaque to everyone but src/proxy/router.c. */
typedef struct rv_router_index_s rv_router_index_t;
/* pcre2_code, kept opaque here so headers need not include pcre2.h */
typedef struct rv_regex_s rv_regex_t;

#define RV_NO_CLUSTER UINT32_MAX
#define RV_TIMEOUT_UNSET (-1)

/* ---- matching ---------------------------------------------------------------------- */

enum rv_path_kind { RV_PATH_PREFIX = 0, RV_PATH_EXACT, RV_PATH_REGEX };

typedef struct rv_header_matcher_s {
    rv_str_t name;          /* lower-cased; ":authority" matches Host, ":method"/":path" too */
    rv_str_t value;         /* exact value when has_value && !is_regex */
    rv_regex_t *re;         /* whole-value regex when is_regex */
    bool has_value;         /* false: presence match */
    bool is_regex;
    bool invert;            /* invertMatch */
} rv_header_matcher_t;

typedef struct rv_query_matcher_s {
    rv_str_t name;          /* compared exactly (case-sensitive), after percent-decoding */
    rv_str_t value;
    rv_regex_t *re;
    bool has_value;         /* false: presence match */
    bool is_regex;
} rv_query_matcher_t;

typedef struct rv_matcher_s {
    int path_kind;              /* enum rv_path_kind */
    rv_str_t path;              /* prefix or exact text (prefix "/" when the route had none) */
    rv_regex_t *path_re;        /* RV_PATH_REGEX: anchored whole-path regex */
    bool case_sensitive;        /* default true */
    rv_header_matcher_t *headers;
    uint32_t nheaders;
    rv_query_matcher_t *query;
    uint32_t nquery;
    rv_str_t *methods;          /* upper-case method names; nmethods 0 = any */
    uint32_t nmethods;
} rv_matcher_t;

/* ---- options ----------------------------------------------------------------------- */

typedef struct rv_header_add_s {
    rv_str_t name;              /* as written in config (case kept) */
    rv_str_t value;
    bool append;                /* true (default): add beside existing; false: replace */
} rv_header_add_t;

typedef struct rv_header_ops_s {
    rv_header_add_t *req_add;
    uint32_t nreq_add;
    rv_str_t *req_remove;       /* lower-cased */
    uint32_t nreq_remove;
    rv_header_add_t *resp_add;
    uint32_t nresp_add;
    rv_str_t *resp_remove;      /* lower-cased */
    uint32_t nresp_remove;
} rv_header_ops_t;

enum rv_retry_on {
    RV_RETRY_5XX = 1u << 0,
    RV_RETRY_GATEWAY_ERROR = 1u << 1,       /* 502, 503, 504 */
    RV_RETRY_CONNECT_FAILURE = 1u << 2,
    RV_RETRY_RESET = 1u << 3,               /* reset/close before response headers */
    RV_RETRY_RETRIABLE_STATUS = 1u << 4,    /* status in status_codes */
    RV_RETRY_REFUSED_STREAM = 1u << 5,
};

typedef struct rv_retry_policy_s {
    uint32_t on;                    /* enum rv_retry_on bits; 0 = no retries */
    uint32_t num_retries;           /* Envoy default 1 when retryOn set and numRetries absent */
    int64_t per_try_timeout_ms;     /* RV_TIMEOUT_UNSET = the route timeout bounds each try */
    int64_t backoff_base_ms;        /* default 25 */
    int64_t backoff_max_ms;         /* default 10 * base */
    uint16_t *status_codes;
    uint32_t nstatus_codes;
} rv_retry_policy_t;

typedef struct rv_route_opts_s {
    bool has_prefix_rewrite;
    rv_str_t prefix_rewrite;        /* replaces the matched prefix (prefix matchers only) */
    rv_regex_t *regex_rewrite;      /* regexRewrite.pattern.regex; NULL if unset */
    rv_str_t regex_substitution;    /* may hold \1..\9 references */
    int64_t timeout_ms;             /* 0 = no timeout; default 15000 */
    rv_retry_policy_t retries;      /* effective: route's own, else the virtual host's */
    rv_str_t host_rewrite;          /* len 0 = unset */
    bool auto_host_rewrite;         /* Host := the chosen endpoint's hostname (static hosts) */
} rv_route_opts_t;

/* ---- actions ----------------------------------------------------------------------- */

enum rv_action_kind { RV_ACTION_ROUTE = 0, RV_ACTION_REDIRECT, RV_ACTION_DIRECT };

typedef struct rv_dest_s {
    uint32_t cluster;           /* index into snap->clusters, or RV_NO_CLUSTER (missing ref -> 503 UH) */
    uint32_t weight;            /* > 0 */
    rv_header_ops_t headers;    /* weighted destination options.headerManipulation */
} rv_dest_t;

enum rv_redirect_path_kind { RV_REDIRECT_PATH_KEEP = 0, RV_REDIRECT_PATH_REPLACE, RV_REDIRECT_PREFIX };

typedef struct rv_redirect_s {
    rv_str_t host;              /* len 0 = keep request host */
    int path_kind;              /* enum rv_redirect_path_kind */
    rv_str_t path;              /* pathRedirect, or prefixRewrite replacement */
    uint16_t code;              /* 301 default, 302, 303, 307, 308 */
    uint16_t port;              /* 0 = keep/none */
    bool https;                 /* httpsRedirect */
    bool strip_query;
} rv_redirect_t;

typedef struct rv_action_s {
    int kind;                   /* enum rv_action_kind */
    /* RV_ACTION_ROUTE */
    rv_dest_t *dests;
    uint32_t ndests;
    uint32_t total_weight;
    /* RV_ACTION_REDIRECT */
    rv_redirect_t redirect;
    /* RV_ACTION_DIRECT */
    uint16_t status;
    rv_str_t body;
} rv_action_t;

typedef struct rv_route_s {
    rv_str_t name;              /* stats/log name: route.name if set, else "<vs-ns>.<vs-name>.<index>" */
    rv_str_t vs;                /* owning VirtualService "<ns>.<name>" (metrics label) */
    rv_matcher_t match;
    rv_action_t action;
    rv_route_opts_t opts;       /* effective options (route over virtual host) */
    const rv_header_ops_t *vhost_headers;   /* applied after route headers; may be NULL */
    rv_header_ops_t headers;    /* route's own headerManipulation */
    uint32_t index;             /* position in snapshot-wide route list */
    uint32_t stat_id;           /* stable metrics slot, set by rv_stats_assign() */
} rv_route_t;

typedef struct rv_vhost_s {
    rv_str_t name;              /* "<ns>.<name>" of the VirtualService */
    rv_str_t *domains;          /* lower-cased as written: "a.com", "*.a.com", "a.*", "*", "a.com:8080" */
    uint32_t ndomains;
    rv_route_t *routes;
    uint32_t nroutes;
    rv_header_ops_t headers;    /* virtualHost.options.headerManipulation */
    uint32_t stat_id;           /* stable metrics slot, set by rv_stats_assign() */
    uint32_t tls_chain;         /* ssl listener: the TLS chain serving it (rv_tls_server_select) */
    rv_str_t tls_source;        /* ssl listener: "secretRef ns/name" or the sslFiles paths (dump) */
} rv_vhost_t;

/* src/tls/server.h: a listener's TLS contexts and server-name table (opaque here). */
struct rv_tls_server_s;

typedef struct rv_listener_cfg_s {
    rv_str_t name;              /* Gateway "<ns>.<name>" */
    rv_str_t bind_address;      /* as configured, e.g. "::" */
    uint16_t port;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    rv_vhost_t *vhosts;
    uint32_t nvhosts;
    rv_router_index_t *index;   /* built by rv_router_build(); NULL before */
    bool ssl;                   /* Gateway ssl: true: connections are TLS */
    struct rv_tls_server_s *tls;/* ssl: the contexts (NULL when no VirtualService could be
                                 * served: connections are then closed at once); freed by
                                 * the snapshot's free hook, sessions keep their references */
} rv_listener_cfg_t;

/* ---- clusters ---------------------------------------------------------------------- */

enum rv_lb_kind { RV_LB_ROUND_ROBIN = 0, RV_LB_LEAST_REQUEST, RV_LB_RANDOM };

/* Defaults of an Upstream's connectionConfig (doc/internals/dataplane.md sections 6, 7). */
#define RV_UP_CONNECT_TIMEOUT_MS 5000   /* Envoy's connect_timeout */
#define RV_UP_IDLE_TIMEOUT_MS    30000  /* pooled upstream connection idle reap */
#define RV_UP_MAX_HEADERS        100    /* response header fields (rv_h1_default_limits.max_headers) */

/* Per-cluster connection settings (Upstream connectionConfig); read by the workers when they
 * connect, pool, or parse a response. All zeros = every default (a cluster built without an
 * Upstream, e.g. a discovered service, needs no initialisation). */
typedef struct rv_conn_cfg_s {
    int64_t connect_timeout_ms;     /* 0 = RV_UP_CONNECT_TIMEOUT_MS */
    int64_t idle_timeout_ms;        /* pooled connection idle: 0 = RV_UP_IDLE_TIMEOUT_MS, -1 = never reaped */
    uint32_t max_requests;          /* requests per upstream connection; 0 = unlimited */
    uint32_t max_headers;           /* response header fields, 0 = RV_UP_MAX_HEADERS; more -> 502 UPE */
    bool keepalive;                 /* tcpKeepalive set: SO_KEEPALIVE on upstream sockets */
    uint32_t ka_probes;             /* TCP_KEEPCNT; 0 = the OS default */
    uint32_t ka_time_s;             /* TCP_KEEPIDLE; 0 = the OS default */
    uint32_t ka_intvl_s;            /* TCP_KEEPINTVL; 0 = the OS default */
    uint64_t pool_key;              /* 0 when every setting is the default; else a digest mixed into the
                                     * pool key, so connections are shared only between clusters
                                     * whose settings agree (Envoy pools per cluster) */
} rv_conn_cfg_t;

typedef struct rv_endpoint_s {
    struct sockaddr_storage addr;   /* resolved address and port */
    socklen_t addrlen;
    uint32_t weight;                /* loadBalancingWeight, default 1 */
    rv_str_t hostname;              /* the configured addr (IP text or DNS name) */
    rv_str_t authority;             /* "host:port" ("host" for port 80): Host when the client sent none */
    rv_str_t host_header;           /* Host for autoHostRewrite: hostname, "[v6]" for an IPv6 literal */
    rv_str_t sni;                   /* TLS clusters: SNI of this endpoint (sniAddr, or autoSniRewrite's
                                     * host name); len 0 = the cluster's sni */
} rv_endpoint_t;

/* An Upstream's active health check (healthChecks[0]; control/health.c runs it, workers never
 * read it). Durations in ms; statuses are [start, end) ranges, none = 200 only. */
typedef struct rv_hc_range_s { uint16_t start, end; } rv_hc_range_t;
typedef struct rv_hc_cfg_s {
    int64_t timeout_ms, interval_ms, jitter_ms;
    uint32_t unhealthy_threshold, healthy_threshold;
    bool http;                  /* httpHealthCheck; false: tcpHealthCheck (connect only) */
    rv_str_t path;              /* http: request path */
    rv_str_t host;              /* http: Host header (the config's, else "<name>_<namespace>") */
    rv_hc_range_t *statuses;    /* expectedStatuses; nstatuses 0 = 200 only */
    uint32_t nstatuses;
    double panic_pct;           /* loadBalancerConfig.healthyPanicThreshold (default 50; 0 = never) */
} rv_hc_cfg_t;
/* Envoy's circuit breaker defaults, applied when an Upstream has no circuitBreakers (Envoy
 * applies them to every cluster). */
#define RV_CB_MAX_CONNECTIONS 1024
#define RV_CB_MAX_PENDING     1024
#define RV_CB_MAX_REQUESTS    1024
#define RV_CB_MAX_RETRIES     3

/* An Upstream's circuit breaker limits (circuitBreakers, else the defaults). on is false for a
 * cluster built without the translator (unit tests): no limits. */
typedef struct rv_cb_limits_s {
    bool on;
    uint32_t max_connections;       /* upstream connections open, all endpoints, all workers */
    uint32_t max_pending;           /* requests waiting for a connection (maxConnections reached) */
    uint32_t max_requests;          /* requests in flight */
    uint32_t max_retries;           /* requests retrying at once */
} rv_cb_limits_t;

/* The counts the limits apply to, shared by the workers (atomic adds, no lock). One per
 * upstream name for the life of the process (src/proxy/stats.c keeps them beside the name's
 * stat id), so a reload - whatever it changes - carries the counts of what is in flight. */
typedef struct rv_cb_state_s {
    _Atomic int64_t connections;
    _Atomic int64_t pending;
    _Atomic int64_t requests;
    _Atomic int64_t retries;
} rv_cb_state_t;

typedef struct rv_cluster_s {
    rv_str_t name;              /* Upstream "<ns>.<name>" */
    int lb;                     /* enum rv_lb_kind */
    uint32_t choice_count;      /* leastRequest, default 2 */
    rv_endpoint_t *eps;         /* resolved endpoints; neps 0 = no healthy upstream (503 UH) */
    uint32_t neps;
    uint32_t total_weight;
    uint32_t index;             /* position in snap->clusters */
    uint32_t stat_id;           /* stable metrics slot, set by rv_stats_assign() */
    /* upstream TLS (src/tls/client.h): NULL = plain TCP. Owned by the snapshot (freed with
     * it); an endpoint set's copy of the cluster shares it */
    const struct rv_tls_client_s *tls;
    rv_str_t sni;               /* sslConfig.sni; len 0 = none unless the endpoint has one */
    uint64_t tls_stale;         /* != 0: tls built from the last working material; a digest of why
                                 * the current material is unusable (so the dump changes with it) */
    rv_conn_cfg_t conn;         /* connectionConfig (zeros = defaults) */
    const rv_hc_cfg_t *hc;      /* active health check; NULL = none (every endpoint gets traffic) */
    rv_cb_limits_t cb;          /* circuitBreakers */
    rv_cb_state_t *cbs;         /* the shared counts, set by rv_stats_assign() when cb.on; NULL = no limits */
} rv_cluster_t;

/* ---- status ------------------------------------------------------------------------ */

enum rv_res_state { RV_STATE_PENDING = 0, RV_STATE_ACCEPTED = 1, RV_STATE_REJECTED = 2, RV_STATE_WARNING = 3 };

typedef struct rv_status_s {
    rv_str_t kind;              /* "Gateway", "VirtualService", "RouteTable", "Upstream", "UpstreamGroup", "Settings" */
    rv_str_t ns;
    rv_str_t name;
    rv_str_t file;              /* source (file path or key); may be empty */
    int state;                  /* enum rv_res_state */
    rv_str_t reason;            /* empty when Accepted */
} rv_status_t;

/* ---- the snapshot ------------------------------------------------------------------ */

typedef struct rv_snapshot_s {
    rv_arena_t arena;           /* owns everything below */
    _Atomic long refs;          /* publication holds one; each pinned request one */
    uint64_t version;           /* increases with every publication */
    rv_listener_cfg_t *listeners;
    uint32_t nlisteners;
    rv_cluster_t *clusters;
    uint32_t nclusters;
    uint32_t nroutes;           /* total routes across listeners (stats slots) */
    rv_status_t *statuses;      /* one per resource seen, sorted kind, ns, name */
    uint32_t nstatuses;
    uint32_t nrejected;         /* statuses with RV_STATE_REJECTED */
    char *config_json;          /* JSON dump for /config_dump (no secrets), NUL-terminated */
    size_t config_json_len;
    void (*free_hook)(struct rv_snapshot_s *); /* releases regex codes etc.; may be NULL */
} rv_snapshot_t;

/* ---- endpoint sets ----------------------------------------------------------------- */

/*
 * The endpoints the workers use, per cluster of one snapshot, published apart from the
 * snapshot so that a Consul endpoint change does not rebuild route tables or TLS contexts.
 * clusters[i] is snap->clusters[i] (same name, lb, index, stat_id) with eps/neps/total_weight
 * of this set. A snapshot's initial set shares snap->clusters (initial = true); a set built
 * from a newer discovery view (rv_endpoint_set_build) copies the cluster table into its own
 * arena. Immutable once published; holds a reference on snap. Workers adopt sets the way they
 * adopt snapshots (one pending slot per worker) and requests pin the set they started on.
 */
typedef struct rv_endpoint_set_s {
    rv_arena_t arena;           /* owns the copied cluster table and endpoints (unless initial) */
    _Atomic long refs;          /* publication holds one; each worker generation one */
    rv_snapshot_t *snap;        /* the snapshot whose cluster indexes this set follows (ref held) */
    uint64_t version;           /* 1 for a snapshot's initial set, +1 for each later one */
    rv_cluster_t *clusters;     /* snap->nclusters entries */
    uint32_t nclusters;
    uint64_t nendpoints;        /* sum of neps */
    bool initial;               /* clusters == snap->clusters */
    struct rv_endpoint_set_s *base; /* a set whose endpoint arrays this one shares (health
                                     * filtering of a discovery set), reference held; or NULL */
} rv_endpoint_set_t;

#endif
