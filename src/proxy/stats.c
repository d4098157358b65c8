/*
 * stats.c - stable stat ids by name, per-worker counter blocks, Prometheus exposition.
 *
 * Ids: rv_stats_assign() interns every virtual service, route (keyed by virtual service and
 * route name) and upstream name in a process-wide registry, so the same name keeps the same
 * id across reloads and the workers' slots keep counting. The registry is guarded by a mutex
 * taken only by the control thread (assign) and the admin thread (scrape).
 */
#include "proxy/stats.h"

#include <stdlib.h>

#include "core/err.h"
#include "proxy/stats-internal.h"

/* Upper bounds of the duration histogram, in microseconds and as printed. */
static const int64_t hist_us[RV_HIST_NB] = { 1000,   5000,   10000,   25000,   50000,   100000,
                                             250000, 500000, 1000000, 2500000, 5000000, 10000000 };
static const char *const hist_le[RV_HIST_NB] = { "0.001", "0.005", "0.01", "0.025", "0.05", "0.1",
                                                 "0.25",  "0.5",   "1",    "2.5",   "5",    "10" };

/* ---- name registry ------------------------------------------------------------------- */

typedef struct name_s {
    char *a;            /* name (route: virtual service) */
    char *b;            /* route name, NULL for other kinds */
    size_t alen, blen;
    rv_cb_state_t *cbs; /* upstreams: circuit breaker counts, created with the first cluster that
                         * has limits; never freed (in-flight counts outlive any snapshot) */
} name_t;

typedef struct reg_s {
    name_t *v;
    uint32_t n, cap;
    uint32_t *tab;      /* open addressing: id + 1, 0 empty */
    uint32_t tcap;
} reg_t;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static reg_t reg_vs, reg_route, reg_cluster;
static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static rv_wstats_t *blocks;
static _Atomic uint64_t reloads_ok, reloads_fail;
static _Atomic uint32_t config_errors;

static uint32_t hash2(rv_str_t a, rv_str_t b)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < a.len; i++)
        h = (h ^ (unsigned char)a.ptr[i]) * 16777619u;
    h = (h ^ 0x1f) * 16777619u;
    for (size_t i = 0; i < b.len; i++)
        h = (h ^ (unsigned char)b.ptr[i]) * 16777619u;
    return h;
}

static bool name_eq(const name_t *n, rv_str_t a, rv_str_t b)
{
    return n->alen == a.len && memcmp(n->a, a.ptr, a.len) == 0 && n->blen == b.len &&
           (b.len == 0 || memcmp(n->b, b.ptr, b.len) == 0);
}

static int reg_grow_tab(reg_t *r)
{
    uint32_t ncap = r->tcap ? r->tcap * 2 : 64;
    uint32_t *t = calloc(ncap, sizeof(*t));
    if (!t)
        return RV_ENOMEM;
    for (uint32_t i = 0; i < r->n; i++) {
        uint32_t h = hash2(rv_str(r->v[i].a, r->v[i].alen), rv_str(r->v[i].b, r->v[i].blen));
        uint32_t j = h & (ncap - 1);
        while (t[j])
            j = (j + 1) & (ncap - 1);
        t[j] = i + 1;
    }
    free(r->tab);
    r->tab = t;
    r->tcap = ncap;
    return 0;
}

/* Id for (a, b) in r, created when new. Holding reg_mu. Returns the id or -1 on OOM. */
static int64_t reg_intern(reg_t *r, rv_str_t a, rv_str_t b)
{
    if ((r->n + 1) * 2 > r->tcap && reg_grow_tab(r) < 0)
        return -1;
    uint32_t h = hash2(a, b), j = h & (r->tcap - 1);
    while (r->tab[j]) {
        name_t *n = &r->v[r->tab[j] - 1];
        if (name_eq(n, a, b))
            return r->tab[j] - 1;
        j = (j + 1) & (r->tcap - 1);
    }
    if (r->n == r->cap) {
        uint32_t nc = r->cap ? r->cap * 2 : 64;
        name_t *nv = realloc(r->v, nc * sizeof(*nv));
        if (!nv)
            return -1;
        r->v = nv;
        r->cap = nc;
    }
    name_t *n = &r->v[r->n];
    n->a = malloc(a.len + 1);
    n->b = malloc(b.len + 1);
    if (!n->a || !n->b) {
        free(n->a);
        free(n->b);
        return -1;
    }
    if (a.len)
        memcpy(n->a, a.ptr, a.len);
    if (b.len)
        memcpy(n->b, b.ptr, b.len);
    n->a[a.len] = '\0';
    n->b[b.len] = '\0';
    n->alen = a.len;
    n->blen = b.len;
    n->cbs = NULL;
    r->tab[j] = r->n + 1;
    return r->n++;
}

int rv_stats_assign(rv_snapshot_t *snap)
{
    int rc = 0;
    pthread_mutex_lock(&reg_mu);
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        rv_listener_cfg_t *l = &snap->listeners[i];
        for (uint32_t v = 0; v < l->nvhosts; v++) {
            rv_vhost_t *vh = &l->vhosts[v];
            int64_t id = reg_intern(&reg_vs, vh->name, RV_STR(""));
            if (id < 0)
                goto oom;
            vh->stat_id = (uint32_t)id;
            for (uint32_t r = 0; r < vh->nroutes; r++) {
                rv_route_t *rt = &vh->routes[r];
                rv_str_t vs = rt->vs.len ? rt->vs : vh->name;
                id = reg_intern(&reg_route, vs, rt->name);
                if (id < 0)
                    goto oom;
                rt->stat_id = (uint32_t)id;
            }
        }
    }
    for (uint32_t c = 0; c < snap->nclusters; c++) {
        int64_t id = reg_intern(&reg_cluster, snap->clusters[c].name, RV_STR(""));
        if (id < 0)
            goto oom;
        snap->clusters[c].stat_id = (uint32_t)id;
        if (!snap->clusters[c].cb.on)
            continue;
        name_t *n = &reg_cluster.v[id];
        if (!n->cbs && !(n->cbs = calloc(1, sizeof(*n->cbs))))
            goto oom;
        snap->clusters[c].cbs = n->cbs;
    }
    goto done;
oom:
    rc = RV_ENOMEM;
done:
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

void rv_stats_reload(bool ok)
{
    atomic_fetch_add(ok ? &reloads_ok : &reloads_fail, 1);
}

void rv_stats_config_errors(uint32_t n)
{
    atomic_store(&config_errors, n);
}

/* ---- worker blocks ------------------------------------------------------------------- */

rv_wstats_t *rv_wstats_new(void)
{
    rv_wstats_t *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return NULL;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_mutex_lock(&blocks_mu);
    ws->next = blocks;
    blocks = ws;
    pthread_mutex_unlock(&blocks_mu);
    return ws;
}

rv_series_t *rv_wstats_series(rv_wstats_t *ws, uint32_t route_id, uint32_t cluster_id)
{
    uint32_t h = (route_id * 2654435761u) ^ (cluster_id * 40503u);
    h = (h ^ (h >> 16)) & 255;
    for (rv_series_t *s = ws->htab[h]; s; s = s->hnext)
        if (s->route_id == route_id && s->cluster_id == cluster_id)
            return s;
    rv_series_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->route_id = route_id;
    s->cluster_id = cluster_id;
    s->hnext = ws->htab[h];
    ws->htab[h] = s;
    s->lnext = ws->series;
    ws->series = s;
    return s;
}

int rv_wstats_clusters(rv_wstats_t *ws, uint32_t n)
{
    if (n <= ws->nclusters)
        return 0;
    uint32_t nc = ws->nclusters ? ws->nclusters : 16;
    while (nc < n)
        nc *= 2;
    rv_cstats_t *c = realloc(ws->clusters, nc * sizeof(*c));
    if (!c)
        return RV_ENOMEM;
    memset(c + ws->nclusters, 0, (nc - ws->nclusters) * sizeof(*c));
    ws->clusters = c;
    ws->nclusters = nc;
    return 0;
}

void rv_series_observe(rv_series_t *s, int status, int64_t dur_us)
{
    int cls = status >= 100 && status <= 599 ? status / 100 : 0;
    rv_ctr_add(&s->cls[cls], 1);
    int b = 0;
    while (b < RV_HIST_NB && dur_us > hist_us[b])
        b++;
    rv_ctr_add(&s->bucket[b], 1);
    rv_ctr_add(&s->sum_us, dur_us > 0 ? (uint64_t)dur_us : 0);
}

/* ---- exposition ---------------------------------------------------------------------- */

typedef struct agg_s {
    uint32_t route_id, cluster_id;
    uint64_t cls[6];
    uint64_t bucket[RV_HIST_NB + 1];
    uint64_t sum_us;
} agg_t;

static int agg_cmp(const void *pa, const void *pb)
{
    const agg_t *a = pa, *b = pb;
    if (a->route_id != b->route_id)
        return a->route_id < b->route_id ? -1 : 1;
    if (a->cluster_id != b->cluster_id)
        return a->cluster_id < b->cluster_id ? -1 : 1;
    return 0;
}

void rv_prom_label(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\')
            fputs("\\\\", f);
        else if (c == '"')
            fputs("\\\"", f);
        else if (c == '\n')
            fputs("\\n", f);
        else
            fputc(c, f);
    }
}

static void put_series_labels(FILE *f, const agg_t *a)
{
    const name_t *r = a->route_id < reg_route.n ? &reg_route.v[a->route_id] : NULL;
    const name_t *c = a->cluster_id < reg_cluster.n ? &reg_cluster.v[a->cluster_id] : NULL;
    fputs("virtual_service=\"", f);
    if (r)
        rv_prom_label(f, r->a, r->alen);
    fputs("\",route=\"", f);
    if (r)
        rv_prom_label(f, r->b, r->blen);
    fputs("\",upstream=\"", f);
    if (c)
        rv_prom_label(f, c->a, c->alen);
    fputc('"', f);
}

static void put_upstream_counter(FILE *f, const char *name, const char *help, const uint64_t *v,
                                 uint32_t n)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    /* every known upstream gets a sample, zero included, so the family is always visible */
    for (uint32_t i = 0; i < n && i < reg_cluster.n; i++) {
        fprintf(f, "%s{upstream=\"", name);
        rv_prom_label(f, reg_cluster.v[i].a, reg_cluster.v[i].alen);
        fprintf(f, "\"} %llu\n", (unsigned long long)v[i]);
    }
}

/* A per-upstream family that only TLS upstreams feed: samples for the upstreams that have a
 * count (the family's HELP/TYPE always), so thousands of plain upstreams add no lines. */
static void put_upstream_counter_nz(FILE *f, const char *name, const char *help, const uint64_t *v, uint32_t n)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (uint32_t i = 0; i < n && i < reg_cluster.n; i++) {
        if (!v[i])
            continue;
        fprintf(f, "%s{upstream=\"", name);
        rv_prom_label(f, reg_cluster.v[i].a, reg_cluster.v[i].alen);
        fprintf(f, "\"} %llu\n", (unsigned long long)v[i]);
    }
}

int rv_stats_write_prometheus(FILE *f)
{
    int rc = 0;
    agg_t *agg = NULL;
    size_t nagg = 0, cap = 0;
    uint64_t *cf = NULL, *cr = NULL, *ct = NULL, *tf = NULL, *tr = NULL, *tn = NULL;
    uint64_t *ov = NULL, *rov = NULL, *cov = NULL;
    uint32_t ncl = 0;
    int64_t active = 0;
    uint64_t total = 0, oom = 0, dropped = 0, dfull = 0, dres = 0, dfail = 0;

    pthread_mutex_lock(&reg_mu);
    ncl = reg_cluster.n;
    cf = calloc(ncl + 1, sizeof(*cf));
    cr = calloc(ncl + 1, sizeof(*cr));
    ct = calloc(ncl + 1, sizeof(*ct));
    tf = calloc(ncl + 1, sizeof(*tf));
    tr = calloc(ncl + 1, sizeof(*tr));
    tn = calloc(ncl + 1, sizeof(*tn));
    ov = calloc(ncl + 1, sizeof(*ov));
    rov = calloc(ncl + 1, sizeof(*rov));
    cov = calloc(ncl + 1, sizeof(*cov));
    if (!cf || !cr || !ct || !tf || !tr || !tn || !ov || !rov || !cov)
        goto oom;
    pthread_mutex_lock(&blocks_mu);
    for (rv_wstats_t *ws = blocks; ws; ws = ws->next) {
        pthread_mutex_lock(&ws->mu);
        for (rv_series_t *s = ws->series; s; s = s->lnext) {
            if (nagg == cap) {
                size_t nc = cap ? cap * 2 : 64;
                agg_t *na = realloc(agg, nc * sizeof(*na));
                if (!na) {
                    pthread_mutex_unlock(&ws->mu);
                    pthread_mutex_unlock(&blocks_mu);
                    goto oom;
                }
                agg = na;
                cap = nc;
            }
            agg_t *a = &agg[nagg++];
            a->route_id = s->route_id;
            a->cluster_id = s->cluster_id;
            for (int i = 0; i < 6; i++)
                a->cls[i] = atomic_load_explicit(&s->cls[i], memory_order_relaxed);
            for (int i = 0; i <= RV_HIST_NB; i++)
                a->bucket[i] = atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
            a->sum_us = atomic_load_explicit(&s->sum_us, memory_order_relaxed);
        }
        for (uint32_t i = 0; i < ws->nclusters && i < ncl; i++) {
            cf[i] += atomic_load_explicit(&ws->clusters[i].connect_fail, memory_order_relaxed);
            cr[i] += atomic_load_explicit(&ws->clusters[i].retries, memory_order_relaxed);
            ct[i] += atomic_load_explicit(&ws->clusters[i].timeouts, memory_order_relaxed);
            tf[i] += atomic_load_explicit(&ws->clusters[i].tls_fail, memory_order_relaxed);
            tr[i] += atomic_load_explicit(&ws->clusters[i].tls_resumed, memory_order_relaxed);
            tn[i] += atomic_load_explicit(&ws->clusters[i].tls_full, memory_order_relaxed);
            ov[i] += atomic_load_explicit(&ws->clusters[i].overflow, memory_order_relaxed);
            rov[i] += atomic_load_explicit(&ws->clusters[i].retry_overflow, memory_order_relaxed);
            cov[i] += atomic_load_explicit(&ws->clusters[i].cx_overflow, memory_order_relaxed);
        }
        active += atomic_load_explicit(&ws->conns_active, memory_order_relaxed);
        total += atomic_load_explicit(&ws->conns_total, memory_order_relaxed);
        oom += atomic_load_explicit(&ws->oom, memory_order_relaxed);
        dropped += atomic_load_explicit(&ws->log_dropped, memory_order_relaxed);
        dfull += atomic_load_explicit(&ws->ds_tls_full, memory_order_relaxed);
        dres += atomic_load_explicit(&ws->ds_tls_resumed, memory_order_relaxed);
        dfail += atomic_load_explicit(&ws->ds_tls_fail, memory_order_relaxed);
        pthread_mutex_unlock(&ws->mu);
    }
    pthread_mutex_unlock(&blocks_mu);

    /* merge the workers' series of the same (route, upstream) */
    if (nagg)
        qsort(agg, nagg, sizeof(*agg), agg_cmp);
    size_t m = 0;
    for (size_t i = 0; i < nagg; i++) {
        if (m && agg_cmp(&agg[m - 1], &agg[i]) == 0) {
            for (int k = 0; k < 6; k++)
                agg[m - 1].cls[k] += agg[i].cls[k];
            for (int k = 0; k <= RV_HIST_NB; k++)
                agg[m - 1].bucket[k] += agg[i].bucket[k];
            agg[m - 1].sum_us += agg[i].sum_us;
        } else {
            agg[m++] = agg[i];
        }
    }
    nagg = m;

    static const char *const cls_name[6] = { "none", "1xx", "2xx", "3xx", "4xx", "5xx" };
    fputs("# HELP rivet_requests_total Requests answered, by virtual service, route, upstream and "
          "status class.\n# TYPE rivet_requests_total counter\n",
          f);
    for (size_t i = 0; i < nagg; i++)
        for (int k = 0; k < 6; k++) {
            if (!agg[i].cls[k])
                continue;
            fputs("rivet_requests_total{", f);
            put_series_labels(f, &agg[i]);
            fprintf(f, ",code_class=\"%s\"} %llu\n", cls_name[k], (unsigned long long)agg[i].cls[k]);
        }
    fputs("# HELP rivet_request_duration_seconds Time from the first byte of the request head to "
          "the last byte of the response.\n# TYPE rivet_request_duration_seconds histogram\n",
          f);
    for (size_t i = 0; i < nagg; i++) {
        uint64_t cum = 0;
        for (int k = 0; k <= RV_HIST_NB; k++) {
            cum += agg[i].bucket[k];
            fputs("rivet_request_duration_seconds_bucket{", f);
            put_series_labels(f, &agg[i]);
            fprintf(f, ",le=\"%s\"} %llu\n", k < RV_HIST_NB ? hist_le[k] : "+Inf", (unsigned long long)cum);
        }
        fputs("rivet_request_duration_seconds_sum{", f);
        put_series_labels(f, &agg[i]);
        fprintf(f, "} %llu.%06llu\n", (unsigned long long)(agg[i].sum_us / 1000000),
                (unsigned long long)(agg[i].sum_us % 1000000));
        fputs("rivet_request_duration_seconds_count{", f);
        put_series_labels(f, &agg[i]);
        fprintf(f, "} %llu\n", (unsigned long long)cum);
    }
    put_upstream_counter(f, "rivet_upstream_connect_failures_total", "Failed upstream connection attempts.",
                         cf, ncl);
    put_upstream_counter(f, "rivet_upstream_retries_total", "Retries of upstream requests.", cr, ncl);
    put_upstream_counter(f, "rivet_upstream_timeouts_total", "Upstream requests that timed out.", ct, ncl);
    put_upstream_counter(f, "rivet_upstream_overflow_total",
                         "Requests answered 503 UO by a circuit breaker (maxRequests, maxPendingRequests).", ov, ncl);
    put_upstream_counter_nz(f, "rivet_upstream_retry_overflow_total",
                            "Retries not made because the upstream's maxRetries were in flight.", rov, ncl);
    put_upstream_counter_nz(f, "rivet_upstream_connection_overflow_total",
                            "Requests that waited for a connection because the upstream held maxConnections.", cov,
                            ncl);
    put_upstream_counter_nz(f, "rivet_upstream_tls_handshake_failures_total",
                            "Upstream TLS handshakes that failed (certificate verification or other).", tf, ncl);
    put_upstream_counter_nz(f, "rivet_upstream_tls_handshakes_total",
                            "Upstream TLS handshakes completed, by whether a session was resumed.", NULL, 0);
    for (uint32_t i = 0; i < ncl && i < reg_cluster.n; i++)
        for (int k = 0; k < 2; k++) {
            uint64_t v = k ? tr[i] : tn[i];
            if (!v)
                continue;
            fputs("rivet_upstream_tls_handshakes_total{upstream=\"", f);
            rv_prom_label(f, reg_cluster.v[i].a, reg_cluster.v[i].alen);
            fprintf(f, "\",resumed=\"%s\"} %llu\n", k ? "true" : "false", (unsigned long long)v);
        }
    fprintf(f,
            "# HELP rivet_downstream_tls_handshakes_total Client TLS handshakes completed, by whether a "
            "session was resumed.\n# TYPE rivet_downstream_tls_handshakes_total counter\n"
            "rivet_downstream_tls_handshakes_total{resumed=\"false\"} %llu\n"
            "rivet_downstream_tls_handshakes_total{resumed=\"true\"} %llu\n"
            "# HELP rivet_downstream_tls_handshake_failures_total Client TLS handshakes that failed "
            "(no shared version or cipher, client certificate refused, reset...).\n"
            "# TYPE rivet_downstream_tls_handshake_failures_total counter\n"
            "rivet_downstream_tls_handshake_failures_total %llu\n",
            (unsigned long long)dfull, (unsigned long long)dres, (unsigned long long)dfail);
    fprintf(f,
            "# HELP rivet_downstream_connections_active Open client connections.\n"
            "# TYPE rivet_downstream_connections_active gauge\n"
            "rivet_downstream_connections_active %lld\n"
            "# HELP rivet_downstream_connections_total Client connections accepted.\n"
            "# TYPE rivet_downstream_connections_total counter\n"
            "rivet_downstream_connections_total %llu\n"
            "# HELP rivet_memory_failures_total Requests failed with 503 for lack of memory.\n"
            "# TYPE rivet_memory_failures_total counter\n"
            "rivet_memory_failures_total %llu\n"
            "# HELP rivet_access_log_dropped_total Access log lines dropped (stdout not writable).\n"
            "# TYPE rivet_access_log_dropped_total counter\n"
            "rivet_access_log_dropped_total %llu\n"
            "# HELP rivet_config_reloads_total Configuration snapshots built, by result.\n"
            "# TYPE rivet_config_reloads_total counter\n"
            "rivet_config_reloads_total{result=\"success\"} %llu\n"
            "rivet_config_reloads_total{result=\"failure\"} %llu\n"
            "# HELP rivet_config_errors Resources rejected in the current configuration.\n"
            "# TYPE rivet_config_errors gauge\n"
            "rivet_config_errors %u\n",
            (long long)(active < 0 ? 0 : active), (unsigned long long)total, (unsigned long long)oom,
            (unsigned long long)dropped, (unsigned long long)atomic_load(&reloads_ok),
            (unsigned long long)atomic_load(&reloads_fail), (unsigned)atomic_load(&config_errors));
    if (ferror(f))
        rc = RV_EIO;
    goto done;
oom:
    rc = RV_ENOMEM;
done:
    pthread_mutex_unlock(&reg_mu);
    free(agg);
    free(cf);
    free(cr);
    free(ct);
    free(tf);
    free(tr);
    free(tn);
    free(ov);
    free(rov);
    free(cov);
    return rc;
}

long rv_stats_active_connections(void)
{
    long n = 0;
    pthread_mutex_lock(&blocks_mu);
    for (rv_wstats_t *ws = blocks; ws; ws = ws->next)
        n += (long)atomic_load_explicit(&ws->conns_active, memory_order_relaxed);
    pthread_mutex_unlock(&blocks_mu);
    return n;
}
