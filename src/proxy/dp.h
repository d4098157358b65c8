/*
 * dp.h - data plane internals shared by worker.c (threads, snapshots, listeners), conn.c
 * (downstream connections and the request state machine), upstream.c (upstream connections,
 * keep-alive pool, forwarding, retries), headers.c (forwarded head construction),
 * accesslog.c and stats.c. Not a public interface: nothing outside src/proxy/ includes it.
 *
 * Threading: everything reachable from an rv_dp_worker_t belongs to that worker's thread,
 * except the fields marked "shared" (pending snapshot, stop request, stats block).
 *
 * Memory: downstream/upstream connection structs, 64 KiB I/O buffers and per-request arenas
 * come from per-worker free lists, so a steady stream of requests allocates nothing.
 */
#ifndef RV_DP_H
#define RV_DP_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>

#include "config/snapshot-t.h"
#include "core/arena.h"
#include "core/loop.h"
#include "http/h1.h"
#include "proxy/lb.h"
#include "proxy/stats-internal.h"
#include "proxy/worker.h"
#include "tls/tls.h"

/* ---- defaults (documented in doc/internals/dataplane.md) ------------------------------- */

#define DP_BUF_SIZE           (64u * 1024u)  /* one I/O buffer: request head+body, or response */
#define DP_MAX_HEADERS        100            /* must match rv_h1_default_limits.max_headers */
_Static_assert(DP_MAX_HEADERS == RV_UP_MAX_HEADERS, "a cluster's maxHeadersCount must fit w->hdrs");
#define DP_HEADER_TIMEOUT_MS  10000          /* whole request head (slowloris) -> 408 */
#define DP_IDLE_TIMEOUT_MS    60000          /* downstream keep-alive idle */
#define DP_BODY_IDLE_MS       60000          /* no request body byte from the client -> 408 */
#define DP_STREAM_IDLE_MS     300000         /* no progress either way (Envoy stream_idle_timeout) */
/* upstream connect timeout and pooled connection idle reap: per cluster (rv_conn_cfg_t),
 * defaults RV_UP_CONNECT_TIMEOUT_MS and RV_UP_IDLE_TIMEOUT_MS (snapshot-t.h) */
#define DP_POOL_HOUSEKEEP_MS  30000          /* sweep of a pool whose connections never expire */
#define DP_PENDING_POLL_MS    10             /* a request waiting for a connection (maxConnections) looks again */
#define DP_UP_POOL_MAX        1024           /* idle connections kept per endpoint per worker */
#define DP_TLS_SESS_KEEP_MS   300000         /* an empty pool entry keeps its TLS session this long */
#define DP_DRAIN_MAX          (1u << 20)     /* request body discarded to keep a connection */
#define DP_LINGER_MS          2000           /* read-and-discard after a closing response */
#define DP_BACKOFF_BASE_MS    25
#define DP_BACKOFF_MAX_MS     250
#define DP_ACCEPT_PAUSE_MS    100            /* listener paused after EMFILE */
#define DP_ACCEPT_WARN_MS     10000          /* at most one 'pausing listener' warning per worker this often */
#define DP_ACCEPT_PER_EVENT   1              /* accepts per listener event (worker.c) */

/* response flags (Envoy's letters, printed in the access log) */
enum {
    DP_F_NR = 1u << 0,   /* no route */
    DP_F_UH = 1u << 1,   /* no healthy upstream */
    DP_F_UF = 1u << 2,   /* upstream connection failure */
    DP_F_UC = 1u << 3,   /* upstream connection termination */
    DP_F_UT = 1u << 4,   /* upstream request timeout */
    DP_F_URX = 1u << 5,  /* retry limit exceeded */
    DP_F_DC = 1u << 6,   /* downstream connection termination */
    DP_F_UPE = 1u << 7,  /* upstream protocol error */
    DP_F_DPE = 1u << 8,  /* downstream protocol error */
    DP_F_SI = 1u << 9,   /* stream idle / request header timeout */
    DP_F_OM = 1u << 10,  /* out of memory (Envoy: overload manager) */
    DP_F_UO = 1u << 11,  /* upstream overflow (circuit breaker) */
};

typedef struct rv_dp_worker_s rv_dp_worker_t;
typedef struct rv_dp_conn_s rv_dp_conn_t;
typedef struct rv_dp_upconn_s rv_dp_upconn_t;

/* One snapshot as seen by one worker: the worker's own reference plus a local count of the
 * requests pinned on it (no shared refcount per request). */
typedef struct rv_dp_gen_s {
    rv_snapshot_t *snap;
    long inflight;
    struct rv_dp_gen_s *next;       /* retired list */
    rv_series_t **series;           /* per route index: first of (ndests or 1) slots */
    uint32_t *series_off;           /* route index -> offset in series */
    rv_series_t *noroute;           /* requests answered before a route was chosen */
} rv_dp_gen_t;

/* One endpoint set as seen by one worker, pinned per request like rv_dp_gen_t. Its
 * load-balancer state follows the set's endpoint arrays: a request decrements the active
 * counters of the set it started on, so counters never index another set's array. */
typedef struct rv_dp_epgen_s {
    rv_endpoint_set_t *es;          /* the worker's reference */
    long inflight;
    struct rv_dp_epgen_s *next;     /* retired list */
    rv_lb_state_t *lb;              /* one per cluster */
    uint32_t *active;               /* every cluster's active[] in one block */
} rv_dp_epgen_t;

typedef struct rv_dp_listener_s {
    rv_io_t io;
    rv_dp_worker_t *w;
    int fd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    const rv_listener_cfg_t *cfg;   /* in the worker's current snapshot; NULL once removed */
    uint32_t nconns;                /* connections accepted here and still open */
    bool paused;
    rv_timer_t resume;
    struct rv_dp_listener_s *next;
} rv_dp_listener_t;

/* UP_WAIT: a retry's backoff; UP_PENDING: waiting for the cluster to drop below maxConnections */
enum dp_up_state { UP_NONE = 0, UP_WAIT, UP_CONNECTING, UP_ACTIVE, UP_PENDING };
enum dp_resp_state { RS_NONE = 0, RS_STREAM, RS_DONE };

/* Upstream connection (owned by one stream while busy, by the pool while idle). */
struct rv_dp_upconn_s {
    rv_io_t io;
    rv_dp_worker_t *w;
    char *in;                       /* pool buffer or NULL */
    uint32_t in_len;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    rv_dp_conn_t *owner;            /* downstream connection using it; NULL when idle */
    int64_t idle_since;             /* pooled at (loop ms); reaped by the pool's sweep */
    int64_t idle_ms;                /* its cluster's idle timeout (< 0 = none); same for its whole pool */
    uint32_t nreq;                  /* requests sent on it (tries) */
    uint32_t max_req;               /* its cluster's maxRequestsPerConnection; 0 = unlimited */
    rv_cb_state_t *cbs;             /* counted in these circuit breaker counts (connections); NULL none */
    bool connected, can_read, can_write, rdhup, eof, err, dead, reused, noreuse;
    uint64_t key;                   /* pool key beside the address: 0 plain, else TLS context + SNI */
    rv_tls_t tls;                   /* tls.ssl NULL: plain TCP */
    struct rv_dp_upconn_s *pnext, *pprev;   /* idle list of its pool entry */
    struct rv_dp_upool_s *pool;     /* set while idle */
    struct rv_dp_upool_s *home;     /* its pool entry from connect to close (counted in its nconn) */
    struct rv_dp_upconn_s *znext;   /* zombie list */
};

/* The request in flight on a downstream connection (one at a time: pipelined requests wait
 * in the input buffer). Every rv_str_t points into conn->in (the head stays there until the
 * request ends), the arena, or the pinned snapshot. */
typedef struct rv_dp_stream_s {
    rv_timer_t t_route, t_try;      /* disarmed whenever the stream is not in use */
    rv_dp_conn_t *d;                /* the connection it belongs to */
    struct rv_dp_stream_s *fnext;   /* worker free list */
    rv_dp_gen_t *gen;
    rv_dp_epgen_t *eg;              /* endpoint set pinned with gen (same snapshot) */
    const rv_listener_cfg_t *lcfg;
    const rv_vhost_t *vh;
    const rv_route_t *route;
    const rv_cluster_t *cluster;
    const rv_dest_t *dest;
    rv_series_t *series;
    rv_arena_t *arena;
    int ep;                         /* endpoint index, -1 none */
    int ep_counted;                 /* endpoint index counted in lb active[], -1 none */

    /* request */
    rv_str_t method, target, path, fwd_path, query, host, reqid;
    bool has_query, keep_alive, expect, sent100, is_head, has_host;
    uint32_t nhdrs;                 /* headers of the head (valid in w->hdrs during start) */
    uint8_t minor;
    int req_body;                   /* enum rv_h1_body */
    uint64_t req_remaining;         /* LENGTH: bytes still to receive */
    rv_h1_chunked_t req_ck;
    uint32_t tr_cut;                /* CHUNKED: trailer field bytes cut from conn->in so far */
    uint8_t tr_fin;                 /* CHUNKED: bytes of the final CRLF scanned so far */
    uint32_t head_len;              /* request head is conn->in[0..head_len) */
    uint32_t body_scan;             /* conn->in offset: bytes before it are known body */
    uint32_t body_fwd;              /* conn->in offset: first body byte not yet sent/discarded */
    bool req_done;                  /* whole body received */
    bool retain;                    /* body bytes kept from head_len for a replay */
    bool drain;                     /* discard the body (local reply / upstream finished) */
    uint64_t req_bytes;             /* body payload bytes received (log) */
    uint64_t drained;

    /* upstream */
    rv_dp_upconn_t *u;
    int up_state;                   /* enum dp_up_state */
    struct iovec *uh;               /* upstream request head of the current try */
    int uh_n, uh_i;
    uint32_t retries;               /* retries done (policy) */
    /* circuit breaker counts held (shared by the workers, released when the request ends) */
    rv_cb_state_t *cb_rq;           /* one of the cluster's requests */
    rv_cb_state_t *cb_retry;        /* one of its retries (from the first retry on) */
    rv_cb_state_t *cb_pend;         /* one of its pending requests (while UP_PENDING) */
    struct rv_dp_stream_s *wnext, *wprev;   /* the worker's waiters (listed while cb_pend) */
    bool overloaded;                /* 503 by a circuit breaker: x-envoy-overloaded: true */
    bool stale_retried;
    bool up_sent_all;               /* head and whole body written upstream */
    bool up_started;                /* any byte of the current try written */
    int64_t try_start, req_done_at;
    char reqid_buf[36];

    /* response */
    int resp_state;                 /* enum dp_resp_state */
    int status;
    bool resp_local, resp_started, resp_src_done, resp_up_keepalive, dechunk;
    /* re-chunking of a close-delimited upstream body for an HTTP/1.1 client (keeps the
     * client connection): the chunk being written is ck_hdr + ck_data bytes + CRLF */
    bool rechunk, ck_open;
    uint8_t ck_len, ck_off, ck_trail, ck_last;  /* ck_last: bytes of "0 CRLF CRLF" written */
    uint32_t ck_data;
    char ck_hdr[12];
    bool resp_head_done;            /* dh fully written */
    bool upe;                       /* response framing error after headers */
    int resp_body;                  /* enum rv_h1_body (upstream framing) */
    uint64_t resp_remaining;
    rv_h1_chunked_t resp_ck;
    struct rv_dp_dechunk_s {
        int st;
        uint64_t left;
    } dk;
    uint32_t resp_off, resp_scan;   /* u->in: body bytes [off, scan) ready for the client */
    uint32_t resp_raw;              /* u->in: first byte not yet scanned (== scan unless de-chunking) */
    uint32_t u_scan;                /* response head terminator search position */
    struct iovec *dh;
    int dh_n, dh_i;
    struct iovec dh_inline[2];
    uint64_t resp_bytes;            /* body bytes sent to the client (log) */
    uint64_t resp_any;              /* bytes received from upstream in this try */

    /* log */
    int64_t start_ms, start_wall_ms;
    uint32_t flags;                 /* DP_F_* */
    uint32_t up_attempts;
    rv_str_t up_fail;               /* transport failure reason of the last try (request arena) */
} rv_dp_stream_t;

enum dp_conn_state { DS_IDLE = 0, DS_REQ, DS_LINGER };

/* TLS state of a downstream connection on an ssl listener (allocated per connection: the SSL
 * object dwarfs it; a plain connection pays one pointer). */
typedef struct rv_dp_tls_s {
    rv_tls_t t;
    char *xfcc;                     /* verified client identity (x-forwarded-client-cert), malloc */
    int xfcc_len;                   /* -1 not computed yet, 0 no verified client certificate */
    bool counted;                   /* handshake outcome counted in the stats */
} rv_dp_tls_t;

struct rv_dp_conn_s {
    rv_io_t io;
    rv_dp_worker_t *w;
    rv_dp_listener_t *l;
    rv_timer_t timer;
    char *in;
    uint32_t in_len;
    uint32_t scan_pos;              /* head terminator search resumes here */
    int state;                      /* enum dp_conn_state */
    bool can_read, can_write, rdhup, rd_eof, dead, close_after, queued;
    bool rd_reset;                  /* the input ended by a reset or error (not a FIN): nobody reads */
    bool in_head;                   /* first byte of a head arrived: header timeout runs */
    uint8_t pre_len;                /* "100 Continue" bytes still to write */
    const char *pre;
    int64_t last_in, last_any;      /* last client read, last progress */
    char peer[48];
    uint8_t peer_len;
    rv_dp_conn_t *next, *prev;      /* worker's connection list */
    rv_dp_conn_t *qnext;            /* ready list / zombie list */
    rv_dp_stream_t *s;              /* the request in flight (DS_REQ), else NULL: an idle
                                     * keep-alive connection costs only this struct */
    rv_dp_tls_t *tls;               /* ssl listener: the session; NULL for plain TCP */
};

/* Idle connections of one endpoint (address, and for TLS the context and SNI: key). No timer per connection (parking and taking one costs
 * no heap operation): one sweep timer per pool, due when the oldest (the tail) reaches the
 * idle timeout. An empty pool stays until a sweep finds it empty. */
struct rv_dp_upool_s {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t hash;
    uint64_t key;                   /* 0 plain; else TLS context id + SNI (never mixed) */
    SSL_SESSION *sess;              /* TLS: last session the server gave, resumed by new connections */
    int64_t sess_at;                /* loop ms it arrived */
    rv_dp_upconn_t *idle;           /* most recently used first */
    rv_dp_upconn_t *tail;           /* least recently used */
    uint32_t nidle;
    uint32_t nconn;                 /* connections of this entry open on its worker (connecting,
                                     * busy or idle): the entry lives while any does */
    rv_timer_t sweep;
    int64_t idle_ms;                /* idle timeout of its connections (< 0 = none): the cluster
                                     * settings are part of the key, so one value per pool */
    rv_dp_worker_t *w;
    struct rv_dp_upool_s *next;
};

#define DP_POOL_BUCKETS 256

struct rv_dp_worker_s {
    int id;
    int64_t accept_warn_next;           /* loop ms: next 'pausing listener' warning allowed */
    uint32_t accept_pauses;             /* pauses not reported since the last warning */
    pthread_t thr;
    rv_loop_t loop;
    int evfd;
    rv_io_t evio;
    _Atomic(rv_endpoint_set_t *) pending; /* shared: next endpoint set (a reference for us); a
                                         * set of another snapshot brings that snapshot along */
    _Atomic uint64_t adopted;           /* shared: version of the snapshot being served */
    _Atomic(const void *) adopted_es;   /* shared: the endpoint set being served (identity only) */
    _Atomic bool stop_req;              /* shared */
    _Atomic bool shed;                  /* shared: close idle connections other workers' pending
                                         * requests wait for (rv_dp_shed_all) */
    int64_t stop_deadline;
    bool stopping;
    rv_dp_gen_t *cur, *retired;
    rv_dp_epgen_t *ecur, *eretired;     /* ecur->es->snap == cur->snap */
    rv_dp_listener_t *listeners;
    int *preopened;                     /* start(): fds for the first snapshot's listeners */
    rv_dp_conn_t *conns;                /* live downstream connections */
    uint32_t nconns;
    rv_dp_conn_t *ready, *zconns;
    rv_dp_upconn_t *zups;
    rv_dp_conn_t *free_conns;
    rv_dp_upconn_t *free_ups;
    rv_dp_stream_t *free_streams;
    rv_dp_stream_t *waiters;            /* pending requests (maxConnections), oldest first */
    rv_dp_stream_t *waiters_tail;       /* the newest of them (O(1) append) */
    uint32_t nfree_streams;
    void *free_bufs;
    uint32_t nfree_bufs, nfree_conns, nfree_ups, nfree_arenas;
    rv_arena_t *free_arenas[1024];
    struct rv_dp_upool_s *pool[DP_POOL_BUCKETS];
    rv_header_t hdrs[DP_MAX_HEADERS];
    bool drop[DP_MAX_HEADERS];
    char *scratch;                      /* DP_BUF_SIZE: path normalisation */
    uint64_t rng;
    /* access log */
    int log_fd;
    bool log_on, log_json, log_pipe;
    char *logbuf;
    uint32_t log_len;
    int64_t wall_base;                  /* wall ms - monotonic ms, refreshed each second */
    int64_t wall_checked;
    int64_t date_sec;
    char date[80];                      /* "YYYY-MM-DDTHH:MM:SS" of date_sec (UTC) */
    rv_wstats_t *st;
};

/* ---- worker.c ------------------------------------------------------------------------ */
char *rv_dp_buf_get(rv_dp_worker_t *w);
void rv_dp_buf_put(rv_dp_worker_t *w, char *b);
rv_arena_t *rv_dp_arena_get(rv_dp_worker_t *w);
rv_dp_stream_t *rv_dp_stream_get(rv_dp_worker_t *w, rv_dp_conn_t *d);
void rv_dp_stream_put(rv_dp_worker_t *w, rv_dp_stream_t *s);
void rv_dp_arena_put(rv_dp_worker_t *w, rv_arena_t *a);
void rv_dp_gen_unpin(rv_dp_worker_t *w, rv_dp_gen_t *g);
void rv_dp_epgen_unpin(rv_dp_worker_t *w, rv_dp_epgen_t *e);
void rv_dp_listener_unref(rv_dp_worker_t *w, rv_dp_listener_t *l);
int64_t rv_dp_wall_ms(rv_dp_worker_t *w);
void rv_dp_shed_all(void);

/* ---- conn.c -------------------------------------------------------------------------- */
void rv_dp_conn_accepted(rv_dp_worker_t *w, rv_dp_listener_t *l, int fd, const struct sockaddr *sa);
void rv_dp_pump(rv_dp_conn_t *d);
void rv_dp_conn_free(rv_dp_worker_t *w, rv_dp_conn_t *d);
void rv_dp_conn_stop(rv_dp_conn_t *d, bool force);
int rv_dp_local_reply(rv_dp_conn_t *d, int status, rv_str_t body, rv_str_t location, uint32_t flag);
void rv_dp_abort(rv_dp_conn_t *d, uint32_t flag);
void rv_dp_touch(rv_dp_conn_t *d);
void rv_dp_compact_in(rv_dp_conn_t *d);
/* Longest x-forwarded-client-cert value rivet sends and logs (Hash and Subject always fit;
 * SANs past it are left out, see rv_tls_peer_xfcc). */
#define RV_DP_XFCC_MAX 4096
/* The verified client certificate as an x-forwarded-client-cert value (computed once per
 * connection); len 0 when none, or on OOM (whether the client verified is
 * rv_tls_peer_verified's answer, never this length). */
rv_str_t rv_dp_client_identity(rv_dp_conn_t *d);

/* ---- upstream.c ---------------------------------------------------------------------- */
void rv_dp_proxy_start(rv_dp_conn_t *d);
bool rv_dp_up_step(rv_dp_conn_t *d);
void rv_dp_up_release(rv_dp_conn_t *d, bool reuse);
void rv_dp_upconn_free(rv_dp_worker_t *w, rv_dp_upconn_t *u);
void rv_dp_pool_close_all(rv_dp_worker_t *w);
void rv_dp_pool_shed(rv_dp_worker_t *w);
void rv_dp_req_complete(rv_dp_conn_t *d);
void rv_dp_cb_unpend(rv_dp_stream_t *s);
void rv_dp_cb_release(rv_dp_stream_t *s);

/* ---- headers.c ----------------------------------------------------------------------- */
int rv_dp_build_up_head(rv_dp_conn_t *d, const rv_endpoint_t *ep, bool parsed);
int rv_dp_build_resp_head(rv_dp_conn_t *d, const rv_h1_response_t *r);
int rv_dp_build_local_head(rv_dp_conn_t *d, int status, size_t body_len, bool has_body, rv_str_t location,
                           char **out, size_t *out_len);
void rv_dp_gen_reqid(rv_dp_worker_t *w, char out[36]);
size_t rv_dp_find_head_end(const char *buf, size_t len, uint32_t *scan_pos);

/* ---- accesslog.c --------------------------------------------------------------------- */
void rv_dp_log_request(rv_dp_conn_t *d);
void rv_dp_log_flush(rv_dp_worker_t *w);
int rv_dp_log_init(rv_dp_worker_t *w, const rv_dataplane_opts_t *o);
void rv_dp_log_free(rv_dp_worker_t *w);
size_t rv_dp_fmt_addr(const struct sockaddr *sa, char *out, size_t cap, bool with_port);

#endif
