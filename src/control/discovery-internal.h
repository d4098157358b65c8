/*
 * discovery-internal.h - what the Consul discovery files share: the watcher's state types
 * (services per datacenter, instance blocks, the host cache), the watcher itself (watches,
 * shards, rv_disc_s) and a few helpers. Not for use outside src/control/discovery*.c.
 *
 *   discovery-name.c   Gloo's Upstream name for a service (MD5 for long names)
 *   discovery-state.c  the state: catalog and health answers, host name resolution
 *   discovery-view.c   instance blocks and the immutable views built from the state
 *   discovery-query.c  the watches: their HTTP queries, answers, rate limits, scheduling
 *   discovery.c        the watcher thread: start/stop, the epoll loop, publishing views
 *
 * Threads: the state, the watches and every curl handle belong to the watcher thread (unit
 * tests drive a state directly). Views and instance blocks are shared, immutable, refcounted.
 */
#ifndef RV_DISCOVERY_INTERNAL_H
#define RV_DISCOVERY_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/discovery.h"
#include "control/httpc.h"

/* ---- small helpers ------------------------------------------------------------------- */

static inline int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Free n strings and the array (NULL with n == 0 is fine). */
static inline void free_strs(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- instance blocks (discovery-view.c) ------------------------------------------------ */

/* An immutable array of instances (one health answer of one (service, datacenter)) and the
 * strings it points to. The state holds one reference while it is current, each view that
 * shares it one more; freed by the last release (any thread). */
typedef struct rv_disc_iblk_s {
    _Atomic long refs;
    rv_arena_t a;
} iblk_t;

/* A block with one reference (the caller's) and an arena of chunk bytes; NULL on OOM. */
iblk_t *disc_iblk_new(size_t chunk);
/* Drop a reference; the last frees the block. Any thread; NULL is ignored. */
void disc_iblk_release(iblk_t *b);

/* ---- the state (discovery-state.c) ------------------------------------------------------ */

/* One service in one datacenter. */
typedef struct sdc_s {
    char *dc;
    char **tags;                /* from /v1/catalog/services */
    uint32_t ntags;
    bool known;                 /* instances read at least once */
    bool names;                 /* some instance's host is a name (re-resolved on each answer) */
    bool watched;               /* the watcher has a health watch for it */
    uint64_t body_hash;         /* of the last health answer applied (FNV-1a) */
    iblk_t *blk;                /* owns insts (shared with views); NULL before the first answer */
    rv_disc_inst_t *insts;
    uint32_t ninsts;
} sdc_t;

typedef struct ssvc_s {
    char *name;
    sdc_t *dcs;                 /* sorted by dc */
    uint32_t ndcs;
} ssvc_t;

/* Host name resolutions, kept HOST_TTL_MS (Gloo's dnsPollingInterval default). */
#define HOST_TTL_MS 5000
#define HOST_BUCKETS 1024
typedef struct hent_s {
    struct hent_s *next;
    char *host;
    uint16_t port;
    rv_disc_addr_t *addrs;
    uint32_t n;
    int64_t at;
} hent_t;

struct rv_disc_state_s {
    bool health;
    ssvc_t **svcs;              /* sorted by name */
    uint32_t n, cap;
    char **dcs_read;            /* datacenters whose service list was read */
    uint32_t ndcs_read;
    hent_t *hosts[HOST_BUCKETS];
    char **allow;               /* serviceTagsAllowlist; 0 = every service */
    uint32_t nallow;
};

/* Service name of st, or NULL when absent; create adds it (NULL on OOM). Watcher thread. */
ssvc_t *disc_svc_get(rv_disc_state_t *st, const char *name, bool create);
/* Datacenter dc of service s, or NULL when absent; create adds it (NULL on OOM). */
sdc_t *disc_sdc_get(ssvc_t *s, const char *dc, bool create);

/* ---- the watcher (discovery-query.c, discovery.c) ---------------------------------------- */

enum { WK_DCS = 0, WK_SERVICES, WK_HEALTH };

#define PLAIN_INFLIGHT 128          /* plain reads (first reads, reads after errors) at once */

/*
 * One curl multi handle and its connection pool. Watches are spread over several: when a
 * transfer starts, libcurl looks for an idle connection by walking every pooled connection to
 * the host (7.88 ConnectionExists), the largest single cost of starting 5 000 queries with one
 * pool; with pools of about SHARD_WATCHES the walk is 30 times shorter (measured at 5 000:
 * 2.2 -> 1.1 s of CPU to converge, 1.2 -> 0.75 s per round of idle timeouts). Epoll events
 * carry the shard index next to the descriptor.
 */
#define SHARD_WATCHES 256
typedef struct shard_s {
    struct rv_disc_s *d;
    uint32_t idx;
    CURLM *multi;
    int64_t timer_at;           /* CURLMOPT_TIMERFUNCTION's deadline (monotonic ms), -1: none */
} shard_t;

typedef struct watch_s {
    int kind;
    uint32_t shard;             /* its multi handle (d->sh[shard]) */
    char *svc, *dc;
    uint64_t index;
    unsigned failures;
    int64_t not_before;         /* monotonic ms */
    double tokens;
    int64_t tok_at;
    CURL *h;
    bool inflight, dead, ok;
    bool blocking;              /* the request in flight is a blocking query */
    rv_httpc_body_t body;       /* the answer being read (freed after each: thousands of watches) */
    uint64_t got_index;
    char err[CURL_ERROR_SIZE];  /* curl's detail of a failed transfer (CURLOPT_ERRORBUFFER) */
} watch_t;

struct rv_disc_s {
    rv_disc_opts_t o;
    char *base;                 /* "http://host:port" */
    char *token, *ca_file, *ca_path, *cert_file, *key_file, *basic_auth, *tls_server_name;
    bool insecure;
    char **dcs;
    uint32_t ndcs;
    bool fixed_dcs;
    pthread_t th;
    bool started;
    int efd;
    _Atomic bool stop;
    _Atomic bool healthy;
    pthread_mutex_t mu;
    rv_disc_view_t *latest;     /* guarded by mu */
    rv_disc_state_t *st;
    watch_t **w;
    uint32_t nw, capw;
    uint32_t inflight, cursor;
    uint32_t inflight_blocking;
    uint32_t max_blocking;      /* effective cap on blocking queries (opts, fd limit, 429s) */
    uint32_t cap_blocking;      /* what opts and the fd limit allow (max_blocking goes back to it) */
    uint32_t max_plain;         /* plain reads at once: PLAIN_INFLIGHT, less after a 429 */
    int64_t pushed_back_at;     /* last 429 that lowered the cap (monotonic ms), 0: none */
    int ep;                     /* epoll: curl's sockets and wake_fd */
    int wake_fd;                /* eventfd: rv_disc_stop wakes the loop */
    shard_t *sh;                /* multi handles; a watch stays in one (w->shard) */
    uint32_t nsh, next_sh;
    uint32_t nw_scanned;        /* watches at the last scan (a new one triggers a scan) */
    int64_t trim_at;            /* when to hand the first sync's transient memory back, 0: not */
    bool trimmed;
    uint32_t nhealth;           /* live health watches */
    uint32_t nfailing;
    bool was_healthy;
    uint64_t rng, seq;
    bool dirty;
    int64_t dirty_at, last_pub;
    struct curl_slist *hdrs;
    struct curl_slist *connect_to;  /* CONSUL_TLS_SERVER_NAME (rv_consul_tls_target), or NULL */
};

/* Watches (discovery-query.c); all on the watcher thread. */

/* A new watch of kind (svc and dc copied, either may be NULL), due at once; NULL on OOM. */
watch_t *disc_add_watch(rv_disc_t *d, int kind, const char *svc, const char *dc);
/* Free w, taking its transfer out of its multi handle when in flight. */
void disc_watch_free(rv_disc_t *d, watch_t *w);
/* Drop dead watches that are not in flight. */
void disc_sweep_watches(rv_disc_t *d);
/* A transfer of w is done (cc, at now): apply its answer, or count the failure. */
void disc_finish(rv_disc_t *d, watch_t *w, CURLcode cc, int64_t now);
/* After 10 min without a 429, double the cap lowered by one (up to the configured cap). */
void disc_recover_cap(rv_disc_t *d, int64_t now);
/* Start the watches that may start now; returns when the next scan is due (monotonic ms). */
int64_t disc_start_due(rv_disc_t *d, int64_t now);

#endif
