/*
 * health.c - active health checks (health.h): the threshold logic, the checker thread and the
 * control thread's endpoint filter.
 *
 * The checker thread owns a libcurl multi handle and one easy handle per check in flight;
 * each check is a new connection to the endpoint's address (HTTP GET of path with the
 * configured Host, or a bare TCP connect), bounded by the check's timeout. The endpoints whose
 * check is not in flight wait in a min-heap by due time, so a wake-up costs O(log n) per check
 * it starts; checks in flight are capped by a descriptor budget (core/fdlimit.h) and the due
 * ones beyond it wait their turn. A check that rivet itself could not run (socket() EMFILE,
 * OOM) leaves the endpoint's state alone. Its table
 * (checked clusters, their endpoints and states) is guarded by the watcher mutex: the checker
 * changes it, the control thread reads it when it filters and hands new targets through a
 * pending slot the checker merges on its own thread. A flip wakes the control thread through
 * the watcher's eventfd. Nothing here runs on a worker.
 */
#include "control/health.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "control/httpc.h"
#include "control/watcher.h"
#include "core/err.h"
#include "core/fdlimit.h"
#include "core/log.h"
#include "proxy/stats.h"

/* ---- threshold logic --------------------------------------------------------------- */

bool rv_hc_status_ok(const rv_hc_cfg_t *cfg, long status)
{
    if (!cfg->nstatuses)
        return status == 200;
    for (uint32_t i = 0; i < cfg->nstatuses; i++)
        if (status >= cfg->statuses[i].start && status < cfg->statuses[i].end)
            return true;
    return false;
}

bool rv_hc_apply(rv_hc_state_t *st, const rv_hc_cfg_t *cfg, int result)
{
    bool first = !st->checked;
    st->checked = true;
    if (result == RV_HC_OK) {
        st->nfail = 0;
        if (st->healthy)
            return false;
        if (first || ++st->nok >= cfg->healthy_threshold) {
            st->healthy = true;
            st->nok = 0;
            return true;
        }
        return false;
    }
    st->nok = 0;
    if (!st->healthy)
        return false;
    /* an unexpected status is an answer from the application: no threshold (Envoy) */
    if (result == RV_HC_BAD_STATUS || ++st->nfail >= cfg->unhealthy_threshold) {
        st->healthy = false;
        st->nfail = 0;
        return true;
    }
    return false;
}

bool rv_hc_panic(uint32_t healthy, uint32_t total, double pct)
{
    return total > 0 && pct > 0 && (double)healthy * 100.0 < (double)total * pct;
}

/* ---- scheduling -------------------------------------------------------------------- */

int rv_hc_heap_reserve(rv_hc_heap_t *q, uint32_t n)
{
    if (n <= q->cap)
        return 0;
    uint32_t cap = q->cap ? q->cap : 64;
    while (cap < n)
        cap = cap > UINT32_MAX / 2 ? n : cap * 2;
    rv_hc_timer_t **v = realloc(q->v, (size_t)cap * sizeof(*v));
    if (!v)
        return RV_ENOMEM;
    q->v = v;
    q->cap = cap;
    return 0;
}

static void heap_set(rv_hc_heap_t *q, uint32_t i, rv_hc_timer_t *t)
{
    q->v[i] = t;
    t->idx = i;
}

static void heap_up(rv_hc_heap_t *q, uint32_t i)
{
    rv_hc_timer_t *t = q->v[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (q->v[p]->due <= t->due)
            break;
        heap_set(q, i, q->v[p]);
        i = p;
    }
    heap_set(q, i, t);
}

static void heap_down(rv_hc_heap_t *q, uint32_t i)
{
    rv_hc_timer_t *t = q->v[i];
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        int64_t best = t->due;
        if (l < q->n && q->v[l]->due < best)
            best = q->v[m = l]->due;
        if (l + 1 < q->n && q->v[l + 1]->due < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(q, i, q->v[m]);
        i = m;
    }
    heap_set(q, i, t);
}

void rv_hc_heap_push(rv_hc_heap_t *q, rv_hc_timer_t *t)
{
    if (t->idx != RV_HC_NOT_QUEUED || q->n >= q->cap)
        return;     /* cannot happen: the caller reserved room and pushes a timer once */
    q->v[q->n] = t;
    t->idx = q->n++;
    heap_up(q, t->idx);
}

rv_hc_timer_t *rv_hc_heap_top(const rv_hc_heap_t *q)
{
    return q->n ? q->v[0] : NULL;
}

void rv_hc_heap_remove(rv_hc_heap_t *q, rv_hc_timer_t *t)
{
    uint32_t i = t->idx;
    if (i == RV_HC_NOT_QUEUED || i >= q->n || q->v[i] != t)
        return;
    t->idx = RV_HC_NOT_QUEUED;
    rv_hc_timer_t *last = q->v[--q->n];
    if (i == q->n)
        return;
    heap_set(q, i, last);
    if (i > 0 && q->v[(i - 1) / 2]->due > last->due)
        heap_up(q, i);
    else
        heap_down(q, i);
}

rv_hc_timer_t *rv_hc_heap_pop(rv_hc_heap_t *q)
{
    rv_hc_timer_t *t = rv_hc_heap_top(q);
    if (t)
        rv_hc_heap_remove(q, t);
    return t;
}

void rv_hc_heap_free(rv_hc_heap_t *q)
{
    free(q->v);
    memset(q, 0, sizeof(*q));
}

int64_t rv_hc_spread_ms(uint32_t k, uint32_t n, int64_t interval_ms)
{
    if (n <= 1 || k >= n || interval_ms <= 0)
        return 0;
    return interval_ms * (int64_t)k / (int64_t)n;
}

uint32_t rv_hc_want_inflight(uint32_t endpoints)
{
    uint32_t w = RV_HC_INFLIGHT_MIN;
    while (w < endpoints && w < RV_HC_INFLIGHT_MAX)
        w *= 2;
    return w;
}

bool rv_hc_plog_change(rv_hc_plog_t *p, bool panic, int64_t now, uint32_t *changes)
{
    p->state = panic;
    p->changes++;
    if (now < p->next)
        return false;
    *changes = p->changes;
    p->changes = 0;
    p->logged_state = panic;
    p->next = now + RV_HC_PANIC_LOG_MS;
    return true;
}

bool rv_hc_plog_flush(rv_hc_plog_t *p, int64_t now, uint32_t *changes)
{
    if (!p->changes || now < p->next)
        return false;
    *changes = p->changes;
    p->changes = 0;
    p->logged_state = p->state;
    p->next = now + RV_HC_PANIC_LOG_MS;
    return true;
}

/* ---- the checker's table ----------------------------------------------------------- */

typedef struct hcl_s hcl_t;

typedef struct hep_s {
    hcl_t *owner;                       /* its cluster (stable: clusters are heap objects) */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char text[INET6_ADDRSTRLEN + 8];    /* "ip:port" or "[v6]:port" (logs, URL) */
    rv_hc_state_t st;
    rv_hc_timer_t tm;                   /* the next check, queued while no check is in flight */
    CURL *easy;                         /* the check in flight, or NULL */
    struct curl_slist *hdrs;            /* its request headers */
    char errbuf[CURL_ERROR_SIZE];
    int local_errno;                    /* the check's socket() failed with it (rivet's, not the endpoint's) */
    bool seen;                          /* merge marker */
} hep_t;

#define HEP_OF(t) ((hep_t *)((char *)(t) - offsetof(hep_t, tm)))

/* A cluster's health check, owned copy (strings malloc'd). */
typedef struct hcfg_s {
    rv_hc_cfg_t c;
    char *path, *host;
    rv_hc_range_t *statuses;
} hcfg_t;

struct hcl_s {
    char *name;                         /* "<ns>.<name>" (the metrics label) */
    hcfg_t cfg;
    hep_t **eps;
    uint32_t neps;
    uint64_t failures;                  /* checks that failed, since the cluster was first checked */
    bool panic;                         /* the control thread's last panic state */
    rv_hc_plog_t plog;                  /* its logging, at most a line per RV_HC_PANIC_LOG_MS */
    uint32_t plog_healthy, plog_total;  /* the counts of the last change (for a held-back line) */
    bool seen;
};

/* What the control thread wants checked (rv_health_set_targets), merged by the checker. */
typedef struct want_s {
    char *name;
    hcfg_t cfg;
    struct sockaddr_storage *addrs;
    socklen_t *lens;
    uint32_t n;
} want_t;

typedef struct wants_s {
    want_t *v;
    uint32_t n;
} wants_t;

struct rv_health_s {
    rv_watcher_t w;             /* thread, eventfd, mutex (guards everything below) */
    CURLM *multi;
    hcl_t **cl;
    uint32_t ncl;
    wants_t *pending;           /* new targets not merged yet, or NULL */
    uint64_t rnd;
    rv_hc_heap_t q;             /* endpoints whose check is not in flight, by due time */
    uint32_t neps_total;        /* endpoints in the table (q has room for all of them) */
    uint32_t inflight;          /* checks in flight (easy handles in the multi) */
    uint32_t cap;               /* at most that many: the descriptor budget (core/fdlimit.h) */
    uint32_t asked;             /* the budget asked for (rv_hc_want_inflight) */
    int64_t delay_log_next;     /* the next "checks wait for the cap" line, not before */
    uint32_t local_fails;       /* checks not run for rivet's own failure since the last line */
    int64_t local_log_next;
    bool plog_pending;          /* a panic line is held back (control thread sets, checker flushes) */
};

#define HC_FD_RESERVE 1024      /* descriptors kept for the rest of the process (as discovery) */
#define HC_FD_MIN 8             /* the smallest budget */
#define HC_WARN_MS 10000        /* at most one "checks not run" line that long */
#define HC_DELAY_WARN_MS 60000  /* at most one "checks wait for the cap" line that long */

/* The running checker for /metrics; g_mu keeps it alive while the admin thread reads. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static rv_health_t *g_running;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hcfg_free(hcfg_t *f)
{
    free(f->path);
    free(f->host);
    free(f->statuses);
    memset(f, 0, sizeof(*f));
}

/* Deep copy of a snapshot's rv_hc_cfg_t (the snapshot may go before the checker uses it). */
static int hcfg_copy(hcfg_t *o, const rv_hc_cfg_t *c)
{
    memset(o, 0, sizeof(*o));
    o->c = *c;
    o->c.path = o->c.host = (rv_str_t){ 0 };
    o->c.statuses = NULL;
    if (c->http) {
        o->path = strndup(c->path.ptr ? c->path.ptr : "/", c->path.ptr ? c->path.len : 1);
        o->host = strndup(c->host.ptr ? c->host.ptr : "", c->host.len);
        if (!o->path || !o->host)
            goto oom;
        o->c.path = (rv_str_t){ o->path, strlen(o->path) };
        o->c.host = (rv_str_t){ o->host, strlen(o->host) };
    }
    if (c->nstatuses) {
        if (!(o->statuses = malloc(c->nstatuses * sizeof(*o->statuses))))
            goto oom;
        memcpy(o->statuses, c->statuses, c->nstatuses * sizeof(*o->statuses));
        o->c.statuses = o->statuses;
    }
    return 0;
oom:
    hcfg_free(o);
    return RV_ENOMEM;
}

static void wants_free(wants_t *w)
{
    if (!w)
        return;
    for (uint32_t i = 0; i < w->n; i++) {
        free(w->v[i].name);
        hcfg_free(&w->v[i].cfg);
        free(w->v[i].addrs);
        free(w->v[i].lens);
    }
    free(w->v);
    free(w);
}

static void addr_text(const struct sockaddr_storage *a, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, ntohs(s4->sin_port));
    }
}

/* End e's check in flight, if any (mutex held). */
static void check_abort(rv_health_t *h, hep_t *e)
{
    if (!e->easy)
        return;
    h->inflight--;
    curl_multi_remove_handle(h->multi, e->easy);
    curl_easy_cleanup(e->easy);
    e->easy = NULL;
    curl_slist_free_all(e->hdrs);
    e->hdrs = NULL;
}

/* Drop e from the table's bookkeeping and free it (mutex held). */
static void hep_free(rv_health_t *h, hep_t *e)
{
    check_abort(h, e);
    rv_hc_heap_remove(&h->q, &e->tm);
    h->neps_total--;
    free(e);
}

static void hcl_free(rv_health_t *h, hcl_t *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->neps; i++)
        hep_free(h, c->eps[i]);
    free(c->eps);
    free(c->name);
    hcfg_free(&c->cfg);
    free(c);
}

static hcl_t *hcl_find(const rv_health_t *h, const char *name, size_t len)
{
    for (uint32_t i = 0; i < h->ncl; i++)
        if (strlen(h->cl[i]->name) == len && !memcmp(h->cl[i]->name, name, len))
            return h->cl[i];
    return NULL;
}

/* Order of a cluster's endpoints (address length, then bytes): lookups are binary searches,
 * so merging and filtering a cluster of n endpoints is O(n log n), not O(n^2). */
static int addr_cmp(const struct sockaddr_storage *a, socklen_t la, const hep_t *e)
{
    if (la != e->addrlen)
        return la < e->addrlen ? -1 : 1;
    return memcmp(a, &e->addr, la);
}

static int hep_sort_cmp(const void *x, const void *y)
{
    const hep_t *a = *(const hep_t *const *)x, *b = *(const hep_t *const *)y;
    return addr_cmp(&a->addr, a->addrlen, b);
}

/* The endpoint of address a among the first n of c (sorted), or NULL. */
static hep_t *hep_find_n(const hcl_t *c, uint32_t n, const struct sockaddr_storage *a, socklen_t len)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int r = addr_cmp(a, len, c->eps[mid]);
        if (r == 0)
            return c->eps[mid];
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static hep_t *hep_find(const hcl_t *c, const struct sockaddr_storage *a, socklen_t len)
{
    return hep_find_n(c, c->neps, a, len);
}

/*
 * Merge the pending targets into the table (checker thread, mutex held): kept endpoints keep
 * their state and schedule, new ones are queued with their first checks spread over one
 * interval (rv_hc_spread_ms), the rest are dropped with their checks in flight. Then the
 * descriptor budget is asked again when the endpoints outgrew it. On OOM the table keeps what
 * it could merge; the next set_targets retries.
 */
static void merge(rv_health_t *h, wants_t *w)
{
    int64_t now = now_ms();
    for (uint32_t i = 0; i < h->ncl; i++)
        h->cl[i]->seen = false;
    for (uint32_t i = 0; i < w->n; i++) {
        want_t *t = &w->v[i];
        hcl_t *c = hcl_find(h, t->name, strlen(t->name));
        if (!c) {
            hcl_t **ncl = realloc(h->cl, (h->ncl + 1) * sizeof(*ncl));
            if (!ncl)
                continue;
            h->cl = ncl;
            if (!(c = calloc(1, sizeof(*c))))
                continue;
            c->name = t->name;
            t->name = NULL;
            h->cl[h->ncl++] = c;
        }
        c->seen = true;
        hcfg_free(&c->cfg);
        c->cfg = t->cfg;   /* moved: checks in flight keep their own header list */
        memset(&t->cfg, 0, sizeof(t->cfg));
        for (uint32_t k = 0; k < c->neps; k++)
            c->eps[k]->seen = false;
        hep_t **neps = t->n ? realloc(c->eps, (c->neps + t->n) * sizeof(*neps)) : c->eps;
        if (!neps)
            continue;
        c->eps = neps;
        uint32_t nold = c->neps;    /* sorted; new endpoints go after them until the sort below */
        for (uint32_t k = 0; k < t->n; k++) {
            hep_t *e = hep_find_n(c, nold, &t->addrs[k], t->lens[k]);
            if (e) {
                e->seen = true;
                continue;
            }
            if (rv_hc_heap_reserve(&h->q, h->neps_total + 1) != 0 || !(e = calloc(1, sizeof(*e))))
                continue;
            e->owner = c;
            memcpy(&e->addr, &t->addrs[k], t->lens[k]);
            e->addrlen = t->lens[k];
            addr_text(&e->addr, e->text, sizeof(e->text));
            e->tm.idx = RV_HC_NOT_QUEUED;
            e->seen = true;
            c->eps[c->neps++] = e;
            h->neps_total++;
        }
        /* the new ones (after nold until the sort): first checks spread over an interval */
        for (uint32_t k = nold; k < c->neps; k++) {
            c->eps[k]->tm.due = now + rv_hc_spread_ms(k - nold, c->neps - nold, c->cfg.c.interval_ms);
            rv_hc_heap_push(&h->q, &c->eps[k]->tm);
        }
        /* drop the endpoints no longer listed (the new ones are all seen), sort, and drop a
         * new endpoint listed twice (two host names with one address) */
        uint32_t o = 0;
        for (uint32_t k = 0; k < c->neps; k++) {
            if (c->eps[k]->seen)
                c->eps[o++] = c->eps[k];
            else
                hep_free(h, c->eps[k]);
        }
        c->neps = o;
        qsort(c->eps, c->neps, sizeof(*c->eps), hep_sort_cmp);
        o = 0;
        for (uint32_t k = 0; k < c->neps; k++) {
            if (o && hep_sort_cmp(&c->eps[o - 1], &c->eps[k]) == 0) {
                /* keep the one with a state (a kept endpoint), free the fresh copy */
                hep_t *drop = c->eps[k]->st.checked || c->eps[k]->easy ? c->eps[o - 1] : c->eps[k];
                c->eps[o - 1] = drop == c->eps[k] ? c->eps[o - 1] : c->eps[k];
                hep_free(h, drop);
                continue;
            }
            c->eps[o++] = c->eps[k];
        }
        c->neps = o;
    }
    uint32_t o = 0;
    for (uint32_t i = 0; i < h->ncl; i++) {
        if (h->cl[i]->seen)
            h->cl[o++] = h->cl[i];
        else
            hcl_free(h, h->cl[i]);
    }
    h->ncl = o;
    uint32_t want = rv_hc_want_inflight(h->neps_total);
    if (want > h->asked) {
        h->asked = want;
        h->cap = rv_fd_budget("health check", "checks in flight", want, 0, HC_FD_RESERVE, HC_FD_MIN);
    }
}

int rv_health_set_targets(rv_health_t *h, const rv_cluster_t *clusters, uint32_t n)
{
    wants_t *w = calloc(1, sizeof(*w));
    uint32_t nhc = 0;
    for (uint32_t i = 0; i < n; i++)
        nhc += clusters[i].hc != NULL;
    if (!w || (nhc && !(w->v = calloc(nhc, sizeof(*w->v)))))
        goto oom;
    for (uint32_t i = 0; i < n; i++) {
        const rv_cluster_t *c = &clusters[i];
        if (!c->hc)
            continue;
        want_t *t = &w->v[w->n++];
        t->name = strndup(c->name.ptr, c->name.len);
        if (!t->name || hcfg_copy(&t->cfg, c->hc) != 0)
            goto oom;
        if (c->neps && (!(t->addrs = calloc(c->neps, sizeof(*t->addrs))) || !(t->lens = calloc(c->neps, sizeof(*t->lens)))))
            goto oom;
        for (uint32_t k = 0; k < c->neps; k++) {
            memcpy(&t->addrs[k], &c->eps[k].addr, c->eps[k].addrlen);
            t->lens[k] = c->eps[k].addrlen;
        }
        t->n = c->neps;
    }
    pthread_mutex_lock(&h->w.mu);
    wants_t *old = h->pending;
    h->pending = w;
    pthread_mutex_unlock(&h->w.mu);
    wants_free(old);
    curl_multi_wakeup(h->multi);
    return 0;
oom:
    wants_free(w);
    return RV_ENOMEM;
}

/* ---- checks ------------------------------------------------------------------------ */

static size_t discard(char *p, size_t sz, size_t nm, void *ud)
{
    (void)p;
    (void)ud;
    return sz * nm;
}

/* curl's socket for a check: socket() as curl would, with the failure's errno kept on the
 * endpoint, so that a descriptor rivet could not open is told from an endpoint that failed. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    hep_t *e = ud;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0) {
        e->local_errno = errno;
        return CURL_SOCKET_BAD;
    }
    return fd;
}

/* Start e's check (mutex held). When curl cannot start it (OOM), e->easy stays NULL and the
 * caller tries again an interval later. */
static void check_start(rv_health_t *h, hcl_t *c, hep_t *e)
{
    char url[INET6_ADDRSTRLEN + 16 + 2048];
    const rv_hc_cfg_t *cfg = &c->cfg.c;
    CURL *x = curl_easy_init();
    if (!x)
        return;
    snprintf(url, sizeof(url), "http://%s%s", e->text, cfg->http ? c->cfg.path : "/");
    curl_easy_setopt(x, CURLOPT_URL, url);
    curl_easy_setopt(x, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x, CURLOPT_NOPROXY, "*");         /* straight to the endpoint */
    curl_easy_setopt(x, CURLOPT_FORBID_REUSE, 1L);     /* a new connection per check */
    curl_easy_setopt(x, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
    curl_easy_setopt(x, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->timeout_ms);
    curl_easy_setopt(x, CURLOPT_PRIVATE, e);
    curl_easy_setopt(x, CURLOPT_ERRORBUFFER, e->errbuf);
    curl_easy_setopt(x, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(x, CURLOPT_OPENSOCKETDATA, e);
    e->errbuf[0] = '\0';
    e->local_errno = 0;
    if (cfg->http) {
        char host[600];
        snprintf(host, sizeof(host), "Host: %s", c->cfg.host);
        struct curl_slist *l = curl_slist_append(NULL, host);
        struct curl_slist *l2 = l ? curl_slist_append(l, "User-Agent: Envoy/HC") : NULL;
        if (!l2) {
            curl_slist_free_all(l);
            curl_easy_cleanup(x);
            return;
        }
        e->hdrs = l2;
        curl_easy_setopt(x, CURLOPT_HTTPHEADER, e->hdrs);
        curl_easy_setopt(x, CURLOPT_PATH_AS_IS, 1L);
        curl_easy_setopt(x, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(x, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    } else {
        curl_easy_setopt(x, CURLOPT_CONNECT_ONLY, 1L);
    }
    if (curl_multi_add_handle(h->multi, x) != CURLM_OK) {
        curl_slist_free_all(e->hdrs);
        e->hdrs = NULL;
        curl_easy_cleanup(x);
        return;
    }
    e->easy = x;
    h->inflight++;
}

/* The errno of a check that failed for a reason of rivet's own (out of descriptors or memory),
 * 0 when the failure is the endpoint's (or there is none). EADDRNOTAVAIL is left to the
 * endpoint: it also means an address that cannot be reached from here. */
static int local_failure(hep_t *e, CURL *x, CURLcode res)
{
    if (res == CURLE_OK)
        return 0;
    if (e->local_errno)
        return e->local_errno;
    if (res == CURLE_OUT_OF_MEMORY || res == CURLE_FAILED_INIT)
        return ENOMEM;
    long oserr = 0;
    if (res == CURLE_COULDNT_CONNECT && curl_easy_getinfo(x, CURLINFO_OS_ERRNO, &oserr) == CURLE_OK &&
        (oserr == EMFILE || oserr == ENFILE || oserr == ENOBUFS || oserr == ENOMEM))
        return (int)oserr;
    return 0;
}

/* The next check of e (mutex held): an interval (+ jitter) from now. */
static void schedule(rv_health_t *h, hep_t *e, int64_t now)
{
    const rv_hc_cfg_t *cfg = &e->owner->cfg.c;
    int64_t next = cfg->interval_ms;
    if (cfg->jitter_ms > 0) {
        h->rnd ^= h->rnd << 13;
        h->rnd ^= h->rnd >> 7;
        h->rnd ^= h->rnd << 17;
        next += (int64_t)(h->rnd % (uint64_t)(cfg->jitter_ms + 1));
    }
    e->tm.due = now + next;
    rv_hc_heap_push(&h->q, &e->tm);
}

/* A check not run, or not finished, for rivet's own reason err (mutex held): the endpoint's
 * state is untouched (not checked, not failed) and it is tried again an interval later;
 * logged at most once per HC_WARN_MS with the count since the last line. */
static void check_not_run(rv_health_t *h, hep_t *e, int err)
{
    int64_t now = now_ms();
    h->local_fails++;
    if (now >= h->local_log_next) {
        rv_log_warn("health check: %u check(s) not run (upstream %s endpoint %s: %s): rivet's own limit, not "
                    "counted against the endpoint; tried again an interval later",
                    h->local_fails, e->owner->name, e->text, strerror(err));
        h->local_fails = 0;
        h->local_log_next = now + HC_WARN_MS;
    }
    schedule(h, e, now);
}

/* A finished check (mutex held): apply it, log a flip, schedule the next. True on a flip. */
static bool check_done(rv_health_t *h, CURL *x, CURLcode res)
{
    hep_t *e = NULL;
    curl_easy_getinfo(x, CURLINFO_PRIVATE, (char **)&e);
    hcl_t *c = e ? e->owner : NULL;
    if (!c)
        return false;   /* cannot happen: every check is started with its endpoint */
    const rv_hc_cfg_t *cfg = &c->cfg.c;
    int local = local_failure(e, x, res);
    long status = 0;
    int r;
    char why[300];
    if (res == CURLE_OK && cfg->http) {
        curl_easy_getinfo(x, CURLINFO_RESPONSE_CODE, &status);
        r = rv_hc_status_ok(cfg, status) ? RV_HC_OK : RV_HC_BAD_STATUS;
        snprintf(why, sizeof(why), "HTTP status %ld", status);
    } else if (res == CURLE_OK) {
        r = RV_HC_OK;
        snprintf(why, sizeof(why), "connected");
    } else if (res == CURLE_OPERATION_TIMEDOUT) {
        r = RV_HC_TIMEOUT;
        snprintf(why, sizeof(why), "no answer within %lld ms", (long long)cfg->timeout_ms);
    } else {
        r = RV_HC_NETWORK;
        rv_httpc_why(why, sizeof(why), res, e->errbuf);
    }
    curl_multi_remove_handle(h->multi, x);
    curl_easy_cleanup(x);
    e->easy = NULL;
    h->inflight--;
    curl_slist_free_all(e->hdrs);
    e->hdrs = NULL;
    if (local) {
        check_not_run(h, e, local);
        return false;
    }
    if (r != RV_HC_OK)
        c->failures++;
    bool first = !e->st.checked;
    bool flip = rv_hc_apply(&e->st, cfg, r);
    if (flip && e->st.healthy && first)  /* the usual start: one line per endpoint would flood */
        rv_log_debug("health check: upstream %s endpoint %s is healthy (%s, first check)", c->name, e->text, why);
    else if (flip && e->st.healthy)
        rv_log_info("health check: upstream %s endpoint %s is healthy (%s)", c->name, e->text, why);
    else if (flip)
        rv_log_warn("health check: upstream %s endpoint %s is unhealthy (%s)", c->name, e->text, why);
    else if (first && r != RV_HC_OK)
        rv_log_warn("health check: upstream %s endpoint %s fails its first check (%s); no traffic until one passes",
                    c->name, e->text, why);
    schedule(h, e, now_ms());
    return flip;
}

/*
 * Start the checks that are due (mutex held), earliest first, while fewer than the budget are
 * in flight; the rest wait in the queue and run late (logged at most once per HC_DELAY_WARN_MS).
 * O(log n) per check started. Returns the ms to sleep before the next is due (at most 1 s).
 */
static int64_t start_due(rv_health_t *h, int64_t now)
{
    rv_hc_timer_t *t;
    bool waiting = false;
    while ((t = rv_hc_heap_top(&h->q)) && t->due <= now) {
        if (h->inflight >= h->cap) {
            waiting = true;
            break;
        }
        rv_hc_heap_pop(&h->q);
        hep_t *e = HEP_OF(t);
        check_start(h, e->owner, e);
        if (!e->easy)
            check_not_run(h, e, ENOMEM);
    }
    if (waiting) {
        if (now >= h->delay_log_next) {
            rv_log_warn("health check: %u checks in flight, the most the open files limit allows; the other due "
                        "checks wait and run late", h->inflight);
            h->delay_log_next = now + HC_DELAY_WARN_MS;
        }
        return 1000;   /* until a check ends (curl's sockets wake the poll) */
    }
    t = rv_hc_heap_top(&h->q);
    int64_t wait = t ? t->due - now : 1000;
    return wait < 0 ? 0 : wait > 1000 ? 1000 : wait;
}

/* Log the panic lines held back whose window is over (mutex held; checker thread). */
static void plog_flush(rv_health_t *h, int64_t now)
{
    if (!h->plog_pending)
        return;
    bool still = false;
    for (uint32_t i = 0; i < h->ncl; i++) {
        hcl_t *c = h->cl[i];
        uint32_t n;
        if (rv_hc_plog_flush(&c->plog, now, &n)) {
            if (c->plog.state)
                rv_log_warn("health check: upstream %s is in panic mode, every endpoint gets traffic (%u of %u "
                            "endpoints healthy; %u changes since the last line)", c->name, c->plog_healthy,
                            c->plog_total, n);
            else
                rv_log_info("health check: upstream %s leaves panic mode (%u of %u endpoints healthy; %u changes "
                            "since the last line)", c->name, c->plog_healthy, c->plog_total, n);
        }
        still |= c->plog.changes > 0;
    }
    h->plog_pending = still;
}

static void *health_main(void *arg)
{
    rv_health_t *h = arg;
    while (!rv_watcher_stopping(&h->w)) {
        pthread_mutex_lock(&h->w.mu);
        wants_t *w = h->pending;
        h->pending = NULL;
        if (w)
            merge(h, w);
        start_due(h, now_ms());
        pthread_mutex_unlock(&h->w.mu);
        wants_free(w);
        int running = 0;
        curl_multi_perform(h->multi, &running);
        bool changed = false;
        CURLMsg *m;
        int left;
        pthread_mutex_lock(&h->w.mu);
        while ((m = curl_multi_info_read(h->multi, &left)))
            if (m->msg == CURLMSG_DONE)
                changed |= check_done(h, m->easy_handle, m->data.result);
        int64_t now = now_ms();
        plog_flush(h, now);
        int64_t wait = start_due(h, now);   /* slots freed by the checks that ended */
        pthread_mutex_unlock(&h->w.mu);
        if (changed)
            rv_watcher_wake(&h->w);
        curl_multi_poll(h->multi, NULL, 0, (int)wait, NULL);
    }
    return NULL;
}

static void wake_multi(void *arg)
{
    curl_multi_wakeup(((rv_health_t *)arg)->multi);
}

rv_health_t *rv_health_start(void)
{
    rv_httpc_global_init();
    rv_health_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    rv_watcher_init(&h->w, free);
    h->rnd = rv_watcher_seed(h);
    h->w.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    h->multi = curl_multi_init();
    if (h->w.efd < 0 || !h->multi || rv_watcher_run(&h->w, health_main, h) != 0) {
        if (h->multi)
            curl_multi_cleanup(h->multi);
        rv_watcher_destroy(&h->w);
        free(h);
        return NULL;
    }
    pthread_mutex_lock(&g_mu);
    g_running = h;
    pthread_mutex_unlock(&g_mu);
    return h;
}

int rv_health_fd(const rv_health_t *h)
{
    return h->w.efd;
}

void rv_health_clear(rv_health_t *h)
{
    uint64_t v;
    ssize_t r = read(h->w.efd, &v, sizeof(v));
    (void)r;
}

void rv_health_stop(rv_health_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&g_mu);
    if (g_running == h)
        g_running = NULL;
    pthread_mutex_unlock(&g_mu);
    rv_watcher_stop(&h->w, wake_multi, h);
    for (uint32_t i = 0; i < h->ncl; i++)
        hcl_free(h, h->cl[i]);
    free(h->cl);
    rv_hc_heap_free(&h->q);
    wants_free(h->pending);
    curl_multi_cleanup(h->multi);
    rv_watcher_destroy(&h->w);
    free(h);
}

/* ---- the control thread's filter --------------------------------------------------- */

bool rv_snapshot_has_health_checks(const rv_snapshot_t *snap)
{
    for (uint32_t i = 0; snap && i < snap->nclusters; i++)
        if (snap->clusters[i].hc)
            return true;
    return false;
}

/* Healthy endpoints of cluster c by the table (mutex held); unknown ones are unhealthy.
 * *unchecked (optional): how many have no result yet (unknown ones included). */
static uint32_t count_healthy(const hcl_t *t, const rv_cluster_t *c, bool *keep, uint32_t *unchecked)
{
    uint32_t n = 0, u = 0;
    for (uint32_t k = 0; k < c->neps; k++) {
        const hep_t *e = t ? hep_find(t, &c->eps[k].addr, c->eps[k].addrlen) : NULL;
        bool ok = e && e->st.healthy;
        if (keep)
            keep[k] = ok;
        n += ok;
        u += !e || !e->st.checked;
    }
    if (unchecked)
        *unchecked = u;
    return n;
}

int rv_health_filter(rv_health_t *h, rv_snapshot_t *snap, rv_endpoint_set_t *raw, uint64_t version,
                     rv_endpoint_set_t **out)
{
    *out = NULL;
    if (!h)
        return 0;
    const rv_cluster_t *src = raw ? raw->clusters : snap->clusters;
    uint32_t n = raw ? raw->nclusters : snap->nclusters;
    rv_endpoint_set_t *es = NULL;
    int rc = 0;
    pthread_mutex_lock(&h->w.mu);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const rv_cluster_t *c = &src[i];
        if (!c->hc || !c->neps)
            continue;
        hcl_t *t = hcl_find(h, c->name.ptr, c->name.len);
        uint32_t unchecked = 0;
        uint32_t healthy = count_healthy(t, c, NULL, &unchecked);
        bool panic = rv_hc_panic(healthy, c->neps, c->hc->panic_pct);
        /* panic while first checks are still out is the normal start (every endpoint begins
         * unhealthy): not worth a warning; it is logged if it lasts once every endpoint has a result */
        if (t && panic != t->panic && !(panic && unchecked)) {
            /* one line per RV_HC_PANIC_LOG_MS at most (flapping); a held-back change is logged by
             * the checker thread once the window is over (plog_flush) */
            uint32_t nch = 0;
            char since[64] = "";
            t->panic = panic;
            t->plog_healthy = healthy;
            t->plog_total = c->neps;
            bool now_line = rv_hc_plog_change(&t->plog, panic, now_ms(), &nch);
            if (nch > 1)
                snprintf(since, sizeof(since), "; %u changes since the last line", nch);
            if (!now_line)
                h->plog_pending = true;
            else if (panic)
                rv_log_warn("health check: upstream %s has %u of %u endpoints healthy (below %g %%): panic mode, "
                            "every endpoint gets traffic%s", t->name, healthy, c->neps, c->hc->panic_pct, since);
            else
                rv_log_info("health check: upstream %s leaves panic mode (%u of %u endpoints healthy%s)", t->name,
                            healthy, c->neps, since);
        }
        if (panic || healthy == c->neps)
            continue;
        if (!es) {
            /* the first cluster to filter: copy the cluster table into a new set */
            if (!(es = calloc(1, sizeof(*es)))) {
                rc = RV_ENOMEM;
                break;
            }
            rv_arena_init(&es->arena, 4096);
            atomic_init(&es->refs, 1);
            rv_snapshot_ref(snap);
            es->snap = snap;
            es->version = version;
            es->nclusters = n;
            if (raw && !raw->initial) {
                rv_endpoint_set_ref(raw);
                es->base = raw;     /* its endpoint arrays are shared below */
            }
            es->clusters = rv_arena_alloc(&es->arena, n * sizeof(rv_cluster_t));
            if (!es->clusters) {
                rc = RV_ENOMEM;
                break;
            }
            memcpy(es->clusters, src, n * sizeof(rv_cluster_t));
        }
        rv_cluster_t *d = &es->clusters[i];
        rv_endpoint_t *eps = rv_arena_alloc(&es->arena, healthy * sizeof(rv_endpoint_t) + c->neps * sizeof(bool));
        if (!eps) {
            rc = RV_ENOMEM;
            break;
        }
        bool *keep = (bool *)(eps + healthy);
        count_healthy(t, c, keep, NULL);
        uint32_t o = 0, w = 0;
        for (uint32_t k = 0; k < c->neps; k++)
            if (keep[k]) {
                eps[o++] = c->eps[k];
                w += c->eps[k].weight;
            }
        d->eps = eps;
        d->neps = o;
        d->total_weight = w;
    }
    pthread_mutex_unlock(&h->w.mu);
    if (rc != 0) {
        rv_endpoint_set_release(es);
        return rc;
    }
    if (es)
        for (uint32_t i = 0; i < es->nclusters; i++)
            es->nendpoints += es->clusters[i].neps;
    *out = es;
    return 0;
}

/* ---- metrics ----------------------------------------------------------------------- */

void rv_health_prometheus(FILE *f)
{
    pthread_mutex_lock(&g_mu);
    rv_health_t *h = g_running;
    if (!h) {
        pthread_mutex_unlock(&g_mu);
        return;
    }
    pthread_mutex_lock(&h->w.mu);
    fputs("# HELP rivet_upstream_healthy_endpoints Endpoints of a health-checked upstream whose active check "
          "passes.\n# TYPE rivet_upstream_healthy_endpoints gauge\n", f);
    for (uint32_t i = 0; i < h->ncl; i++) {
        uint32_t n = 0;
        for (uint32_t k = 0; k < h->cl[i]->neps; k++)
            n += h->cl[i]->eps[k]->st.healthy;
        fputs("rivet_upstream_healthy_endpoints{upstream=\"", f);
        rv_prom_label(f, h->cl[i]->name, strlen(h->cl[i]->name));
        fprintf(f, "\"} %u\n", n);
    }
    fputs("# HELP rivet_upstream_health_check_failures_total Active health checks that failed (status, timeout "
          "or connection).\n# TYPE rivet_upstream_health_check_failures_total counter\n", f);
    for (uint32_t i = 0; i < h->ncl; i++) {
        fputs("rivet_upstream_health_check_failures_total{upstream=\"", f);
        rv_prom_label(f, h->cl[i]->name, strlen(h->cl[i]->name));
        fprintf(f, "\"} %llu\n", (unsigned long long)h->cl[i]->failures);
    }
    pthread_mutex_unlock(&h->w.mu);
    pthread_mutex_unlock(&g_mu);
}
