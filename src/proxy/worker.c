/*
 * worker.c - the data plane's threads: start/publish/stop, one epoll loop per worker,
 * snapshot adoption at loop boundaries, SO_REUSEPORT listeners, accept, and the per-worker
 * free lists (buffers, arenas) the request path draws from.
 *
 * Hand-off: publish() gives each worker its own reference to the snapshot's initial endpoint
 * set, publish_endpoints() to a later set of the same snapshot, through an atomic "pending"
 * slot, and wakes it with an eventfd. The worker adopts it between two loop iterations (the
 * set's snapshot too when it is new); requests pin the snapshot generation and the endpoint
 * generation they started on with worker-local counters, and the worker drops its references
 * when a retired generation's counter reaches zero. So no atomic operation happens per
 * request, and an endpoint change touches neither route tables nor listeners.
 */
#include "proxy/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "proxy/dp.h"
#include "proxy/stats.h"

static rv_dp_worker_t **workers;
static int nworkers;
static rv_snapshot_t *current;          /* the dataplane's own reference to the last published */
static rv_endpoint_set_t *current_es;   /* its endpoint set now published (one reference) */
static pthread_mutex_t pub_mu = PTHREAD_MUTEX_INITIALIZER;

#define DP_FREE_BUFS_MAX 512
#define DP_FREE_CONNS_MAX 1024

/* ---- free lists ---------------------------------------------------------------------- */

/* A DP_BUF_SIZE buffer from the worker's free list (malloc when empty). NULL on OOM. */
char *rv_dp_buf_get(rv_dp_worker_t *w)
{
    if (w->free_bufs) {
        char *b = w->free_bufs;
        memcpy(&w->free_bufs, b, sizeof(void *));
        w->nfree_bufs--;
        return b;
    }
    return malloc(DP_BUF_SIZE);
}

/* Return b (may be NULL) to the free list; beyond DP_FREE_BUFS_MAX it goes back to malloc. */
void rv_dp_buf_put(rv_dp_worker_t *w, char *b)
{
    if (!b)
        return;
    if (w->nfree_bufs >= DP_FREE_BUFS_MAX) {
        free(b);
        return;
    }
    memcpy(b, &w->free_bufs, sizeof(void *));
    w->free_bufs = b;
    w->nfree_bufs++;
}

/* A reset arena for one request. NULL on OOM. */
rv_arena_t *rv_dp_arena_get(rv_dp_worker_t *w)
{
    if (w->nfree_arenas)
        return w->free_arenas[--w->nfree_arenas];
    rv_arena_t *a = malloc(sizeof(*a));
    if (a)
        rv_arena_init(a, 4096);
    return a;
}

void rv_dp_arena_put(rv_dp_worker_t *w, rv_arena_t *a)
{
    if (!a)
        return;
    rv_arena_reset(a);
    if (w->nfree_arenas < RV_ARRAY_LEN(w->free_arenas)) {
        w->free_arenas[w->nfree_arenas++] = a;
        return;
    }
    rv_arena_free(a);
    free(a);
}

void rv_dp_on_route_timer(rv_loop_t *loop, rv_timer_t *t);
void rv_dp_on_try_timer(rv_loop_t *loop, rv_timer_t *t);

/* A zeroed stream for a request on d (free list first). NULL on OOM. Worker. */
rv_dp_stream_t *rv_dp_stream_get(rv_dp_worker_t *w, rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = w->free_streams;
    if (s) {
        w->free_streams = s->fnext;
        w->nfree_streams--;
    } else if (!(s = malloc(sizeof(*s)))) {
        return NULL;
    }
    memset(s, 0, sizeof(*s));
    rv_timer_init(&s->t_route, rv_dp_on_route_timer);
    rv_timer_init(&s->t_try, rv_dp_on_try_timer);
    s->d = d;
    return s;
}

/* Return a finished stream (timers already stopped). */
void rv_dp_stream_put(rv_dp_worker_t *w, rv_dp_stream_t *s)
{
    if (w->nfree_streams >= DP_FREE_CONNS_MAX) {
        free(s);
        return;
    }
    s->fnext = w->free_streams;
    w->free_streams = s;
    w->nfree_streams++;
}

/* Wall clock in ms for the access log, derived from the loop's monotonic time; the offset
 * is re-read once a second so that the request path makes no extra clock call. */
int64_t rv_dp_wall_ms(rv_dp_worker_t *w)
{
    int64_t now = rv_loop_now(&w->loop);
    if (now - w->wall_checked >= 1000 || w->wall_checked == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        w->wall_base = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - now;
        w->wall_checked = now;
    }
    return now + w->wall_base;
}

/* ---- snapshot generations ------------------------------------------------------------ */

static void gen_free(rv_dp_gen_t *g)
{
    if (!g)
        return;
    free(g->series);
    free(g->series_off);
    rv_snapshot_release(g->snap);
    free(g);
}

/* Build the worker-local state for snap (takes over the caller's reference). NULL on OOM
 * (the reference is then still the caller's). */
static rv_dp_gen_t *gen_new(rv_dp_worker_t *w, rv_snapshot_t *snap)
{
    rv_dp_gen_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->snap = snap;
    g->series_off = calloc(snap->nroutes ? snap->nroutes : 1, sizeof(uint32_t));
    if (!g->series_off)
        goto oom;
    uint32_t maxcl = 0;
    for (uint32_t i = 0; i < snap->nclusters; i++) {
        const rv_cluster_t *c = &snap->clusters[i];
        if (c->stat_id != RV_STAT_NONE && c->stat_id + 1 > maxcl)
            maxcl = c->stat_id + 1;
    }
    /* series slots: per route, one per destination (or one for non-ROUTE actions) */
    size_t nslots = 0;
    for (uint32_t i = 0; i < snap->nlisteners; i++)
        for (uint32_t v = 0; v < snap->listeners[i].nvhosts; v++)
            for (uint32_t r = 0; r < snap->listeners[i].vhosts[v].nroutes; r++) {
                const rv_route_t *rt = &snap->listeners[i].vhosts[v].routes[r];
                nslots += rt->action.kind == RV_ACTION_ROUTE && rt->action.ndests ? rt->action.ndests : 1;
            }
    g->series = calloc(nslots ? nslots : 1, sizeof(*g->series));
    if (!g->series)
        goto oom;
    pthread_mutex_lock(&w->st->mu);
    int rc = rv_wstats_clusters(w->st, maxcl);
    g->noroute = rv_wstats_series(w->st, RV_STAT_NONE, RV_STAT_NONE);
    if (!g->noroute)
        rc = RV_ENOMEM;
    size_t k = 0;
    for (uint32_t i = 0; i < snap->nlisteners && rc == 0; i++)
        for (uint32_t v = 0; v < snap->listeners[i].nvhosts && rc == 0; v++)
            for (uint32_t r = 0; r < snap->listeners[i].vhosts[v].nroutes && rc == 0; r++) {
                const rv_route_t *rt = &snap->listeners[i].vhosts[v].routes[r];
                if (rt->index < snap->nroutes)
                    g->series_off[rt->index] = (uint32_t)k;
                uint32_t nd = rt->action.kind == RV_ACTION_ROUTE && rt->action.ndests ? rt->action.ndests : 1;
                for (uint32_t d = 0; d < nd; d++) {
                    uint32_t cid = RV_STAT_NONE;
                    if (rt->action.kind == RV_ACTION_ROUTE && rt->action.ndests &&
                        rt->action.dests[d].cluster < snap->nclusters)
                        cid = snap->clusters[rt->action.dests[d].cluster].stat_id;
                    g->series[k] = rv_wstats_series(w->st, rt->stat_id, cid);
                    if (!g->series[k++])
                        rc = RV_ENOMEM;
                }
            }
    pthread_mutex_unlock(&w->st->mu);
    if (rc < 0)
        goto oom;
    return g;
oom:
    g->snap = NULL;
    free(g->series);
    free(g->series_off);
    free(g);
    return NULL;
}

/* A request finished on g: drop the pin; free g when it is retired and unused. Worker. */
void rv_dp_gen_unpin(rv_dp_worker_t *w, rv_dp_gen_t *g)
{
    if (!g || --g->inflight > 0 || g == w->cur)
        return;
    for (rv_dp_gen_t **pp = &w->retired; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    gen_free(g);
}

static void epgen_free(rv_dp_epgen_t *e)
{
    if (!e)
        return;
    free(e->lb);
    free(e->active);
    rv_endpoint_set_release(e->es);
    free(e);
}

/*
 * Worker-local load-balancer state for endpoint set es (takes over the caller's reference):
 * one rv_lb_state_t per cluster, the active counters of every cluster in one block (two
 * allocations whatever the number of clusters). Round-robin cursors carry over from prev
 * when it serves the same snapshot, so an endpoint change does not restart every rotation.
 * NULL on OOM (the reference is then still the caller's). Worker thread (or start()).
 */
static rv_dp_epgen_t *epgen_new(rv_dp_worker_t *w, rv_endpoint_set_t *es, const rv_dp_epgen_t *prev)
{
    rv_dp_epgen_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->lb = calloc(es->nclusters ? es->nclusters : 1, sizeof(*e->lb));
    e->active = calloc(es->nendpoints ? es->nendpoints : 1, sizeof(uint32_t));
    if (!e->lb || !e->active) {
        free(e->lb);
        free(e->active);
        free(e);
        return NULL;
    }
    e->es = es;
    bool same = prev && prev->es->snap == es->snap;
    uint64_t off = 0;
    for (uint32_t i = 0; i < es->nclusters; i++) {
        e->lb[i].rng = rv_rand_next(&w->rng) | 1;
        e->lb[i].rr = same ? prev->lb[i].rr : 0;
        e->lb[i].active = e->active + off;
        off += es->clusters[i].neps;
    }
    return e;
}

/* A request finished on endpoint generation e: as rv_dp_gen_unpin. Worker. */
void rv_dp_epgen_unpin(rv_dp_worker_t *w, rv_dp_epgen_t *e)
{
    if (!e || --e->inflight > 0 || e == w->ecur)
        return;
    for (rv_dp_epgen_t **pp = &w->eretired; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    epgen_free(e);
}

/* ---- listeners ----------------------------------------------------------------------- */

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/* Socket bound to l's address with SO_REUSEPORT (IPv6 dual-stack); listening when do_listen.
 * Returns the fd or -errno. */
static int bind_socket(const rv_listener_cfg_t *l, bool do_listen)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (l->addr.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0)
        goto fail;
    if (do_listen && listen(fd, 4096) < 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

static void on_accept(rv_loop_t *loop, rv_io_t *io, uint32_t events);

static void listener_resume(rv_loop_t *loop, rv_timer_t *t)
{
    rv_dp_listener_t *l = RV_CONTAINER_OF(t, rv_dp_listener_t, resume);
    if (l->paused && l->fd >= 0 && rv_io_add(loop, &l->io, l->fd, EPOLLIN, on_accept) == 0)
        l->paused = false;
}

static void on_accept(rv_loop_t *loop, rv_io_t *io, uint32_t events)
{
    rv_dp_listener_t *l = RV_CONTAINER_OF(io, rv_dp_listener_t, io);
    rv_dp_worker_t *w = l->w;
    /* Level-triggered, so a connection left in the backlog is reported again by the next
     * epoll_wait: accept one per iteration (nginx's default, multi_accept off). Work for
     * the connections already open (requests, responses, handshakes under way) is served
     * between two accepts instead of behind a batch of new handshakes, and no accept4 is
     * spent on EAGAIN. Measured against a batch of 64 (doc/internals/tls.md section 7): TLS
     * connection per request, p99 6.5-6.7 ms against 7.2-8.1 at the same CPU and rate;
     * plain HTTP connection per request, 26-27 us of CPU per connection against 29-30. */
    for (int i = 0; i < DP_ACCEPT_PER_EVENT && l->fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors lasts as long as the load that caused it: one warning
                 * per DP_ACCEPT_WARN_MS per worker, with the count of pauses in between */
                int64_t now = rv_loop_now(loop);
                w->accept_pauses++;
                if (now >= w->accept_warn_next) {
                    if (w->accept_pauses > 1)
                        rv_log_warn("worker %d: accept: %s; pausing listener for %d ms (%u pauses since the "
                                    "last warning)", w->id, strerror(errno), DP_ACCEPT_PAUSE_MS, w->accept_pauses);
                    else
                        rv_log_warn("worker %d: accept: %s; pausing listener for %d ms", w->id, strerror(errno),
                                    DP_ACCEPT_PAUSE_MS);
                    w->accept_pauses = 0;
                    w->accept_warn_next = now + DP_ACCEPT_WARN_MS;
                }
                rv_io_del(loop, &l->io);
                l->paused = true;
                rv_timer_after(loop, &l->resume, DP_ACCEPT_PAUSE_MS);
            }
            return;
        }
        rv_dp_conn_accepted(w, l, fd, (const struct sockaddr *)&ss);
    }
}

static rv_dp_listener_t *listener_open(rv_dp_worker_t *w, const rv_listener_cfg_t *cfg, int fd)
{
    rv_dp_listener_t *l = calloc(1, sizeof(*l));
    if (!l)
        goto fail;
    if (fd < 0)
        fd = bind_socket(cfg, true);
    if (fd < 0) {
        rv_log_error("worker %d: listener %.*s (%.*s:%u): %s", w->id, (int)cfg->name.len, cfg->name.ptr,
                     (int)cfg->bind_address.len, cfg->bind_address.ptr, cfg->port, strerror(-fd));
        goto fail;
    }
    l->w = w;
    l->fd = fd;
    l->addr = cfg->addr;
    l->addrlen = cfg->addrlen;
    l->cfg = cfg;
    rv_timer_init(&l->resume, listener_resume);
    if (rv_io_add(&w->loop, &l->io, fd, EPOLLIN, on_accept) < 0)
        goto fail;
    l->next = w->listeners;
    w->listeners = l;
    return l;
fail:
    if (fd >= 0)
        close(fd);
    free(l);
    return NULL;
}

/* Close l's socket; the struct lives on while connections accepted on it are open. */
static void listener_close(rv_dp_worker_t *w, rv_dp_listener_t *l)
{
    if (l->fd >= 0) {
        if (!l->paused)
            rv_io_del(&w->loop, &l->io);
        close(l->fd);
        l->fd = -1;
    }
    rv_timer_stop(&w->loop, &l->resume);
    l->cfg = NULL;
}

static void listener_free_if_unused(rv_dp_worker_t *w, rv_dp_listener_t *l)
{
    if (l->fd >= 0 || l->nconns > 0)
        return;
    for (rv_dp_listener_t **pp = &w->listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    free(l);
}

/* A connection of l closed. Worker. */
void rv_dp_listener_unref(rv_dp_worker_t *w, rv_dp_listener_t *l)
{
    if (l->nconns)
        l->nconns--;
    listener_free_if_unused(w, l);
}

/* Switch the worker to snap (carrying a reference for this worker). Loop boundary only.
 * Returns false (reference released) on OOM: the previous snapshot keeps serving. */
static bool adopt_snap(rv_dp_worker_t *w, rv_snapshot_t *snap)
{
    rv_dp_gen_t *g = gen_new(w, snap);
    if (!g) {
        rv_log_error("worker %d: out of memory adopting snapshot %llu; keeping the previous one", w->id,
                     (unsigned long long)snap->version);
        rv_snapshot_release(snap);
        return false;
    }
    for (rv_dp_listener_t *l = w->listeners; l; l = l->next)
        if (l->fd >= 0)
            l->cfg = NULL;      /* marks "not in the new snapshot" until matched below */
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        const rv_listener_cfg_t *cfg = &snap->listeners[i];
        rv_dp_listener_t *found = NULL;
        for (rv_dp_listener_t *l = w->listeners; l; l = l->next)
            if (l->fd >= 0 && !l->cfg && same_addr(&l->addr, &cfg->addr)) {
                found = l;
                break;
            }
        if (found) {
            found->cfg = cfg;
            continue;
        }
        int fd = w->preopened ? w->preopened[i] : -1;
        if (w->preopened)
            w->preopened[i] = -1;
        if (!w->stopping)
            listener_open(w, cfg, fd);
        else if (fd >= 0)
            close(fd);
    }
    free(w->preopened);
    w->preopened = NULL;
    for (rv_dp_listener_t *l = w->listeners, *n; l; l = n) {
        n = l->next;
        if (l->fd >= 0 && !l->cfg) {
            listener_close(w, l);
            listener_free_if_unused(w, l);
        }
    }
    rv_dp_gen_t *old = w->cur;
    w->cur = g;
    atomic_store(&w->adopted, snap->version);
    if (old) {
        if (old->inflight == 0) {
            gen_free(old);
        } else {
            old->next = w->retired;
            w->retired = old;
        }
    }
    return true;
}

/*
 * Switch the worker to endpoint set es (carrying a reference for this worker). When es
 * belongs to another snapshot than the one served, that snapshot is adopted first (a
 * snapshot publication is the publication of its initial set). Requests already running keep
 * the generations they pinned. Loop boundary only. On OOM the previous state keeps serving.
 */
static void adopt(rv_dp_worker_t *w, rv_endpoint_set_t *es)
{
    rv_dp_epgen_t *e = epgen_new(w, es, w->ecur);
    if (!e) {
        rv_log_error("worker %d: out of memory adopting an endpoint set; keeping the previous one", w->id);
        rv_endpoint_set_release(es);
        return;
    }
    if (!w->cur || w->cur->snap != es->snap) {
        rv_snapshot_ref(es->snap);
        if (!adopt_snap(w, es->snap)) {
            epgen_free(e);
            return;
        }
    }
    rv_dp_epgen_t *old = w->ecur;
    w->ecur = e;
    atomic_store(&w->adopted_es, (const void *)es);
    if (old) {
        if (old->inflight == 0) {
            epgen_free(old);
        } else {
            old->next = w->eretired;
            w->eretired = old;
        }
    }
}

/* ---- the worker thread --------------------------------------------------------------- */

static void on_wake(rv_loop_t *loop, rv_io_t *io, uint32_t events)
{
    uint64_t v;
    rv_dp_worker_t *w = RV_CONTAINER_OF(io, rv_dp_worker_t, evio);
    while (read(w->evfd, &v, sizeof(v)) > 0)
        ;
    if (atomic_exchange(&w->shed, false))
        rv_dp_pool_shed(w);
}

static void begin_stop(rv_dp_worker_t *w)
{
    w->stopping = true;
    for (rv_dp_listener_t *l = w->listeners, *n; l; l = n) {
        n = l->next;
        listener_close(w, l);
        listener_free_if_unused(w, l);
    }
    /* idle connections close now, busy ones after their current response */
    for (rv_dp_conn_t *d = w->conns, *n; d; d = n) {
        n = d->next;
        rv_dp_conn_stop(d, false);
    }
    rv_dp_pool_close_all(w);
}

static void reap(rv_dp_worker_t *w)
{
    while (w->zconns) {
        rv_dp_conn_t *d = w->zconns;
        w->zconns = d->qnext;
        rv_dp_conn_free(w, d);
    }
    while (w->zups) {
        rv_dp_upconn_t *u = w->zups;
        w->zups = u->znext;
        rv_dp_upconn_free(w, u);
    }
}

static void *worker_main(void *arg)
{
    rv_dp_worker_t *w = arg;
    /* a write to a peer that closed must return EPIPE, whatever the host program did with
     * SIGPIPE: the signal is thread-directed, so blocking it here is enough */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        rv_endpoint_set_t *p = atomic_exchange(&w->pending, NULL);
        if (p)
            adopt(w, p);
        if (!w->stopping && atomic_load_explicit(&w->stop_req, memory_order_acquire))
            begin_stop(w);
        if (w->stopping) {
            if (!w->conns)
                break;
            if (rv_loop_now(&w->loop) >= w->stop_deadline) {
                for (rv_dp_conn_t *d = w->conns, *n; d; d = n) {
                    n = d->next;
                    rv_dp_conn_stop(d, true);
                }
                reap(w);
                break;
            }
        }
        int wait = -1;
        if (w->ready)
            wait = 0;
        else if (w->stopping)
            wait = (int)RV_MIN(100, RV_MAX(0, w->stop_deadline - rv_loop_now(&w->loop)));
        if (w->log_len)
            wait = wait < 0 || wait > 50 ? 50 : wait;  /* a log line waits at most 50 ms */
        rv_loop_poll(&w->loop, wait);
        /* connections that yielded (fairness) get another turn */
        rv_dp_conn_t *r = w->ready;
        w->ready = NULL;
        while (r) {
            rv_dp_conn_t *d = r;
            r = d->qnext;
            d->queued = false;
            d->qnext = NULL;
            if (!d->dead)
                rv_dp_pump(d);
        }
        reap(w);
        rv_dp_log_flush(w);
    }
    rv_dp_pool_close_all(w);
    reap(w);
    rv_dp_log_flush(w);
    return NULL;
}

static void worker_free(rv_dp_worker_t *w)
{
    if (!w)
        return;
    for (rv_dp_listener_t *l = w->listeners, *n; l; l = n) {
        n = l->next;
        if (l->fd >= 0)
            close(l->fd);
        free(l);
    }
    if (w->preopened) {
        for (uint32_t i = 0; w->preopened[i] != -2; i++)
            if (w->preopened[i] >= 0)
                close(w->preopened[i]);
        free(w->preopened);
    }
    rv_endpoint_set_t *p = atomic_exchange(&w->pending, NULL);
    if (p)
        rv_endpoint_set_release(p);
    while (w->eretired) {
        rv_dp_epgen_t *e = w->eretired;
        w->eretired = e->next;
        epgen_free(e);
    }
    epgen_free(w->ecur);
    while (w->retired) {
        rv_dp_gen_t *g = w->retired;
        w->retired = g->next;
        gen_free(g);
    }
    gen_free(w->cur);
    while (w->free_conns) {
        rv_dp_conn_t *d = w->free_conns;
        w->free_conns = d->qnext;
        free(d);
    }
    while (w->free_streams) {
        rv_dp_stream_t *s = w->free_streams;
        w->free_streams = s->fnext;
        free(s);
    }
    while (w->free_ups) {
        rv_dp_upconn_t *u = w->free_ups;
        w->free_ups = u->znext;
        free(u);
    }
    while (w->free_bufs) {
        char *b = w->free_bufs;
        memcpy(&w->free_bufs, b, sizeof(void *));
        free(b);
    }
    for (uint32_t i = 0; i < w->nfree_arenas; i++) {
        rv_arena_free(w->free_arenas[i]);
        free(w->free_arenas[i]);
    }
    rv_dp_log_free(w);
    free(w->scratch);
    if (w->evfd >= 0)
        close(w->evfd);
    rv_loop_free(&w->loop);
    free(w);
}

static rv_dp_worker_t *worker_new(int id, const rv_dataplane_opts_t *o)
{
    rv_dp_worker_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->id = id;
    w->evfd = -1;
    w->log_fd = -1;
    w->loop.epfd = -1;
    if (rv_loop_init(&w->loop) < 0)
        goto fail;
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->evfd < 0 || rv_io_add(&w->loop, &w->evio, w->evfd, EPOLLIN, on_wake) < 0)
        goto fail;
    w->scratch = malloc(DP_BUF_SIZE);
    w->st = rv_wstats_new();
    if (!w->scratch || !w->st || rv_dp_log_init(w, o) < 0)
        goto fail;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)(id + 1) * 0x9E3779B97F4A7C15ull) ^
             (uint64_t)(uintptr_t)w;
    if (!w->rng)
        w->rng = 0x2545F4914F6CDD1Dull;
    return w;
fail:
    worker_free(w);
    return NULL;
}

static void wake(rv_dp_worker_t *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->evfd, &one, sizeof(one));
    RV_UNUSED(r);
}

/* A request waits for a connection slot of a cluster (maxConnections): ask every worker, this
 * one included, to close its idle connections counted against a cluster with waiters (each
 * worker's pool is its own, so only it can). Any worker thread; an eventfd write per worker. */
void rv_dp_shed_all(void)
{
    for (int i = 0; i < nworkers; i++) {
        if (!workers[i] || atomic_exchange(&workers[i]->shed, true))
            continue;   /* already asked, not yet done */
        wake(workers[i]);
    }
}

/* ---- public API ---------------------------------------------------------------------- */

int rv_dataplane_check_listener(const rv_listener_cfg_t *l)
{
    int fd = bind_socket(l, false);
    if (fd < 0)
        return -fd;
    close(fd);
    return 0;
}

int rv_dataplane_check_listeners(const rv_snapshot_t *snap, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        const rv_listener_cfg_t *l = &snap->listeners[i];
        int e = rv_dataplane_check_listener(l);
        if (e) {
            if (err && errlen)
                snprintf(err, errlen, "listener %.*s: cannot bind %.*s:%u: %s", (int)l->name.len, l->name.ptr,
                         (int)l->bind_address.len, l->bind_address.ptr, l->port, strerror(e));
            return RV_EIO;
        }
    }
    return 0;
}

int rv_dataplane_start(const rv_dataplane_opts_t *o, rv_snapshot_t *snap)
{
    int rc = RV_ENOMEM;
    if (workers || !o || o->nworkers < 1 || !snap)
        return RV_EINVAL;
    workers = calloc((size_t)o->nworkers, sizeof(*workers));
    if (!workers)
        return RV_ENOMEM;
    nworkers = o->nworkers;
    for (int i = 0; i < nworkers; i++) {
        rv_dp_worker_t *w = worker_new(i, o);
        if (!w)
            goto fail;
        workers[i] = w;
        /* listening sockets are opened here so that bind errors are reported and the ports
         * accept connections as soon as start returns */
        w->preopened = malloc(sizeof(int) * (snap->nlisteners + 1));
        if (!w->preopened)
            goto fail;
        for (uint32_t k = 0; k <= snap->nlisteners; k++)
            w->preopened[k] = k < snap->nlisteners ? -1 : -2;
        for (uint32_t k = 0; k < snap->nlisteners; k++) {
            int fd = bind_socket(&snap->listeners[k], true);
            if (fd < 0) {
                const rv_listener_cfg_t *l = &snap->listeners[k];
                rv_log_error("listener %.*s: cannot listen on %.*s:%u: %s", (int)l->name.len, l->name.ptr,
                             (int)l->bind_address.len, l->bind_address.ptr, l->port, strerror(-fd));
                rc = RV_EIO;
                goto fail;
            }
            w->preopened[k] = fd;
        }
    }
    current_es = rv_endpoint_set_initial(snap);
    if (!current_es) {
        rc = RV_ENOMEM;
        goto fail;
    }
    current = snap;
    rv_snapshot_ref(snap);
    for (int i = 0; i < nworkers; i++) {
        rv_endpoint_set_ref(current_es);
        /* adopt on this thread: the worker's loop is not running yet */
        adopt(workers[i], current_es);
        if (!workers[i]->ecur) {
            rc = RV_ENOMEM;
            goto fail;
        }
    }
    for (int i = 0; i < nworkers; i++) {
        if (pthread_create(&workers[i]->thr, NULL, worker_main, workers[i]) != 0) {
            rv_log_error("cannot start worker %d", i);
            /* stop the ones already running */
            for (int k = 0; k < i; k++) {
                atomic_store(&workers[k]->stop_req, true);
                workers[k]->stop_deadline = 0;
                wake(workers[k]);
                pthread_join(workers[k]->thr, NULL);
            }
            rc = RV_EIO;
            goto fail;
        }
    }
    return 0;
fail:
    for (int i = 0; i < nworkers; i++)
        worker_free(workers[i]);
    free(workers);
    workers = NULL;
    nworkers = 0;
    if (current) {
        rv_snapshot_release(current);
        current = NULL;
    }
    rv_endpoint_set_release(current_es);
    current_es = NULL;
    return rc;
}

/* Hand es (the caller's reference) to every worker; pub_mu held, workers running. */
static void publish_set_locked(rv_endpoint_set_t *es)
{
    rv_endpoint_set_t *old = current_es;
    current_es = es;
    for (int i = 0; i < nworkers; i++) {
        rv_endpoint_set_ref(es);
        rv_endpoint_set_t *prev = atomic_exchange(&workers[i]->pending, es);
        if (prev)
            rv_endpoint_set_release(prev);  /* never adopted: superseded */
        wake(workers[i]);
    }
    rv_endpoint_set_release(old);
}

int rv_dataplane_publish_endpoints(rv_endpoint_set_t *es)
{
    pthread_mutex_lock(&pub_mu);
    if (!workers || es->snap != current) {
        pthread_mutex_unlock(&pub_mu);
        return RV_EINVAL;
    }
    rv_endpoint_set_ref(es);
    publish_set_locked(es);
    pthread_mutex_unlock(&pub_mu);
    return 0;
}

void rv_dataplane_publish(rv_snapshot_t *snap)
{
    pthread_mutex_lock(&pub_mu);
    if (!workers) {
        pthread_mutex_unlock(&pub_mu);
        return;
    }
    rv_endpoint_set_t *es = rv_endpoint_set_initial(snap);
    if (!es) {
        pthread_mutex_unlock(&pub_mu);
        rv_log_error("out of memory publishing snapshot %llu; workers keep the previous one",
                     (unsigned long long)snap->version);
        return;
    }
    rv_snapshot_ref(snap);
    rv_snapshot_t *old = current;
    current = snap;
    publish_set_locked(es);
    pthread_mutex_unlock(&pub_mu);
    if (old)
        rv_snapshot_release(old);
}

bool rv_dataplane_wait_adopted(int timeout_ms)
{
    int64_t end = rv_clock_ms() + timeout_ms;
    for (;;) {
        pthread_mutex_lock(&pub_mu);
        bool all = workers != NULL;
        for (int i = 0; all && i < nworkers; i++)
            if (atomic_load(&workers[i]->adopted) != current->version || atomic_load(&workers[i]->pending) ||
                atomic_load(&workers[i]->adopted_es) != (const void *)current_es)
                all = false;
        pthread_mutex_unlock(&pub_mu);
        if (all)
            return true;
        if (rv_clock_ms() >= end)
            return false;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

void rv_dataplane_stop(int deadline_ms)
{
    pthread_mutex_lock(&pub_mu);
    if (!workers) {
        pthread_mutex_unlock(&pub_mu);
        return;
    }
    int64_t deadline = rv_clock_ms() + (deadline_ms > 0 ? deadline_ms : 0);
    for (int i = 0; i < nworkers; i++) {
        workers[i]->stop_deadline = deadline;
        atomic_store_explicit(&workers[i]->stop_req, true, memory_order_release);
        wake(workers[i]);
    }
    for (int i = 0; i < nworkers; i++)
        pthread_join(workers[i]->thr, NULL);
    for (int i = 0; i < nworkers; i++)
        worker_free(workers[i]);
    free(workers);
    workers = NULL;
    nworkers = 0;
    rv_snapshot_t *c = current;
    current = NULL;
    rv_endpoint_set_t *ce = current_es;
    current_es = NULL;
    pthread_mutex_unlock(&pub_mu);
    rv_endpoint_set_release(ce);
    if (c)
        rv_snapshot_release(c);
}

long rv_dataplane_active_connections(void)
{
    return rv_stats_active_connections();
}
