/*
 * translate-internal.h - what translate.c (resources -> snapshot) and translate-clusters.c
 * (Upstreams -> clusters, Consul-fed endpoints, endpoint sets) share: the build context, the
 * per-resource translation record, and a few helpers. Not for use outside src/config/.
 */
#ifndef RV_TRANSLATE_INTERNAL_H
#define RV_TRANSLATE_INTERNAL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config-internal.h"
#include "control/discovery.h"
#include "core/err.h"
#include "core/log.h"
#include "core/regex.h"
#define MAX_ROUTES_PER_VS 100000u      /* after delegation, per VirtualService */
#define MAX_ROUTES_TOTAL 1000000u      /* translated routes per build */
#define MAX_SNAPSHOT_ROUTES 2000000u   /* routes across all listeners (one copy per Gateway) */
#define MSG_CAP 4096

/* The snapshot and what only this file knows about it. */
typedef struct snap_priv_s {
    rv_snapshot_t snap;         /* first: rv_snapshot_t * and snap_priv_t * convert */
    rv_regex_t **re;
    const char **pat;           /* source of re[i] (arena), for the JSON dump */
    uint32_t nre, capre;
    bool uses_consul;           /* explicit consul Upstream or consul destination present */
    struct csel_s *csel;        /* Consul-fed clusters and how they select instances (arena) */
    uint32_t ncsel;
    bool has_view;              /* built with a discovery view (view_fp is its fingerprint) */
    uint64_t view_fp;           /* rv_disc_view fingerprint: services, known, tags, health, synced */
    struct rv_tls_client_s **tls;   /* upstream TLS contexts the clusters use (freed with the snapshot) */
    uint32_t ntls, captls;
    struct tls_file_s *tls_files;   /* sslFiles read by the build (rotation watch), malloc */
    uint32_t ntls_files, captls_files;
} snap_priv_t;

/* A file an ssl listener was built from, as it was when read (translate-tls.c). */
typedef struct tls_file_s {
    char *path;                 /* malloc */
    bool missing;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} tls_file_t;

/* CSEL_*: how a Consul-fed cluster takes instances (rv_endpoint_set_build redoes it). */
enum { CSEL_UPSTREAM = 1, CSEL_DISCOVERED, CSEL_DEST };

/* One Consul-fed cluster: enough to recompute its endpoints from a newer view. */
typedef struct csel_s {
    uint32_t cluster;           /* index in snap->clusters */
    int kind;                   /* CSEL_* */
    const char *service;        /* Consul service name (arena) */
    strs_t dcs, want, deny;     /* copies in the arena */
    bool empty;                 /* had no endpoint at build time (its owner carries a Warning) */
    bool nomatch;               /* ... and no instance was selected (the Warning's wording) */
} csel_t;

/* One resource during a build. */
typedef struct tres_s {
    int kind;
    const char *ns, *name, *file, *rel;
    res_t *r;                   /* NULL for the default Gateway */
    void *obj;                  /* accepted version, NULL when none */
    bool dup;                   /* another file defines the same kind/ns/name */
    char *rej, *warn;           /* "; "-joined messages (malloc) */
    uint32_t cluster;           /* Upstream: its cluster index */
    const rv_disc_svc_t *dsvc;  /* discovered Upstream: its Consul service */
    /* VirtualService: translated routes (malloc'd template) */
    rv_route_t *routes;
    uint32_t nroutes;
    bool vs_done, vs_empty;
    bool in_chain;              /* RouteTable: on the current delegation path */
} tres_t;

typedef struct vec_s {
    void *v;
    uint32_t n, cap;
} vec_t;

typedef struct bctx_s {
    snap_priv_t *sp;
    const struct rv_store_s *st;    /* secrets (rv_store_secret); NULL in endpoint-set builds */
    rv_arena_t *a;
    const rv_settings_t *s;
    tres_t *all;
    uint32_t nall;
    tres_t **by[RK_COUNT];      /* per kind, usable (obj && !dup), sorted by ns, name */
    uint32_t nby[RK_COUNT];
    uint32_t ngw_files;
    tres_t defgw;
    gw_t defgw_obj;
    tres_t defgw_ssl;           /* gateway-proxy-ssl ([::]:8443), when a service has sslConfig */
    gw_t defgw_ssl_obj;
    uint64_t prefix_work;       /* child routes checked against parent prefixes (bounded) */
    const rv_disc_view_t *view; /* Consul instances, NULL when discovery is not running */
    bool discover;              /* one Upstream per Consul service */
    tres_t *disc;               /* discovered Upstreams, sorted by name (discovery namespace) */
    uint32_t ndisc;
    vec_t clusters;             /* rv_cluster_t, copied into the arena when complete */
    vec_t cdests;               /* cdest_key_t: clusters made for route consul destinations */
    bool uses_consul;
    vec_t csels;                /* csel_t of the Consul-fed clusters */
    uint32_t routes_total;      /* routes translated so far (bounded) */
    bool oom;
} bctx_t;

/* Bound on delegation prefix checks per build: hostile fan-out cannot stall the control thread. */
#define MAX_PREFIX_WORK 20000000u

/* Builds of one snapshot at most: a round per cascade of fallbacks to last accepted versions. */
#define MAX_BUILD_ROUNDS 8

/* ---- helpers (translate.c) ---- */

/* Append a zeroed element of size bytes to v (malloc'd array); NULL (b->oom set) on OOM. */
void *cfg_vec_push(bctx_t *b, vec_t *v, size_t size);
/* Add a Rejected (reject) or Warning message to t's status, once per distinct text. */
void cfg_addmsg(bctx_t *b, tres_t *t, bool reject, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Copy s (or the formatted text) into the snapshot arena; b->oom set on failure. */
rv_str_t cfg_astr(bctx_t *b, const char *s);
rv_str_t cfg_astrf(bctx_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* n zeroed bytes in the snapshot arena; NULL (b->oom set) on failure. */
void *cfg_anew(bctx_t *b, size_t n);
/* Whether s is one of l's strings. */
bool cfg_in_list(const strs_t *l, const char *s);
/* qsort/bsearch orders: tres_t * by (ns, name); discovered tres_t by name. */
int cfg_tres_cmp(const void *x, const void *y);
int cfg_disc_cmp(const void *x, const void *y);

/* ---- downstream TLS (translate-tls.c) ---- */

/*
 * Gateway ssl: build l->tls from the sslConfigs of the selected services vs[0..n) not yet
 * dropped; a service whose TLS cannot be built is Rejected (reason naming the secret or file
 * and the problem) and dropped. Sets each kept service's chain in chain_of[i] and its dump
 * text in src_of[i].
 */
void cfg_build_tls(bctx_t *b, tres_t *gt, rv_listener_cfg_t *l, tres_t **vs, uint32_t n, bool *drop,
                   uint32_t *chain_of, rv_str_t *src_of);
/* Record a file a TLS context of this build was read from (path, inode, size, times): the
 * control thread rebuilds within a second when it changes (rv_snapshot_tls_files_changed).
 * Any build step reading TLS files may call it. */
void cfg_tls_note_file(bctx_t *b, const char *path);
/* Free hook part: the listeners' TLS and the watched file list. */
void cfg_free_dtls(rv_snapshot_t *snap);

/* ---- clusters (translate-clusters.c) ---- */

/* One cluster per usable Upstream (static hosts resolved, Consul-fed from the view). */
void cfg_build_clusters(bctx_t *b);
/* Record an sslFiles path the build reads (stat now), so that rv_snapshot_tls_files_changed
 * notices it rotated (translate-tls.c; upstream sslFiles use it too). b->oom on failure. */
void cfg_tls_note_file(bctx_t *b, const char *path);
/* Free the snapshot's upstream TLS contexts (its free hook). */
void cfg_free_tls(snap_priv_t *sp);
/* Copy the clusters into the snapshot arena once every route made its own. */
void cfg_finish_clusters(bctx_t *b);
/* Cluster of a route's consul destination (made once per distinct selection). */
uint32_t cfg_consul_dest_cluster(bctx_t *b, tres_t *owner, bool warn, const char *where, const cdest_t *d);
/* Fingerprint of what a full rebuild depends on in a discovery view. */
uint64_t rv_disc_view_fingerprint(const rv_disc_view_t *v);

#endif
