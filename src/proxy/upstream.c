/*
 * upstream.c - the upstream half of a proxied request: destination, cluster and endpoint
 * choice, the per-worker keep-alive pool (keyed by endpoint address, so it survives
 * reloads), non-blocking connect, sending the head and streaming the request body,
 * reading and framing the response (verbatim, or de-chunked for HTTP/1.0 clients),
 * failures, timeouts and retries.
 *
 * Upstream TLS (a cluster with a client context, src/tls/client.h) layers the TLS session of
 * src/tls/tls.h over the socket: the handshake runs while the try is still "connecting" (the
 * connect timeout covers it), a failed handshake is a connect failure (503 UF, retriable as
 * connect-failure) whose reason goes to the access log and /metrics. The pool is keyed by
 * address and, for TLS, by the context's fingerprint and the SNI, so plain and TLS connections
 * (or two SNIs) never mix; each pool entry keeps the last TLS session the server issued, and
 * new connections to that entry resume it (per worker, no locks).
 *
 * Failure policy (Envoy's): before any response byte reached the client, a failure is
 * retried when the route's retry policy allows it and the request body is still complete in
 * the input buffer, else answered with 503/502/504 and a response flag; after that, the
 * client connection is closed (truncation). A pooled connection that dies before answering
 * is retried once on a fresh connection regardless of policy: it was stale.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdio.h>

#include "core/sock.h"
#include "core/err.h"
#include "proxy/dp.h"
#include "tls/client.h"

static const char resp_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

enum fail_kind { F_CONNECT, F_RESET, F_PROTOCOL, F_TRY_TIMEOUT, F_ROUTE_TIMEOUT, F_OOM, F_TLS };
enum try_mode { TRY_FIRST, TRY_RETRY, TRY_STALE, TRY_PENDING };

static void u_on_io(rv_loop_t *loop, rv_io_t *io, uint32_t events);
static void pool_on_sweep(rv_loop_t *loop, rv_timer_t *t);
static void start_try(rv_dp_conn_t *d, int mode);
static uint64_t pool_key(const rv_cluster_t *c, const rv_endpoint_t *e);
static void kick_waiter(rv_dp_worker_t *w, const rv_cb_state_t *cbs);

/* ---- connections and pool ------------------------------------------------------------ */

static uint32_t addr_hash(const struct sockaddr_storage *a, uint64_t key)
{
    uint32_t h = 2166136261u;
    h = (h ^ (uint32_t)key) * 16777619u;
    h = (h ^ (uint32_t)(key >> 32)) * 16777619u;
    const unsigned char *p;
    size_t n;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a;
        h = (h ^ x->sin_port) * 16777619u;
        p = (const void *)&x->sin_addr;
        n = sizeof(x->sin_addr);
    } else {
        const struct sockaddr_in6 *x = (const void *)a;
        h = (h ^ x->sin6_port) * 16777619u;
        p = (const void *)&x->sin6_addr;
        n = sizeof(x->sin6_addr);
    }
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static bool addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static struct rv_dp_upool_s **pool_slot(rv_dp_worker_t *w, const struct sockaddr_storage *a, uint64_t key,
                                        uint32_t h)
{
    struct rv_dp_upool_s **pp = &w->pool[h % DP_POOL_BUCKETS];
    while (*pp && !((*pp)->hash == h && (*pp)->key == key && addr_eq(&(*pp)->addr, a)))
        pp = &(*pp)->next;
    return pp;
}

/* The pool entry of (addr, key), created (with idle timeout idle_ms, < 0 = none) when missing
 * and create is set; NULL otherwise or on OOM. */
static struct rv_dp_upool_s *pool_entry(rv_dp_worker_t *w, const struct sockaddr_storage *addr, socklen_t addrlen,
                                        uint64_t key, int64_t idle_ms, bool create)
{
    uint32_t h = addr_hash(addr, key);
    struct rv_dp_upool_s **pp = pool_slot(w, addr, key, h);
    struct rv_dp_upool_s *p = *pp;
    if (p || !create)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->addr = *addr;
    p->addrlen = addrlen;
    p->hash = h;
    p->key = key;
    p->idle_ms = idle_ms;
    p->w = w;
    rv_timer_init(&p->sweep, pool_on_sweep);
    *pp = p;
    return p;
}

static void pool_unlink(rv_dp_worker_t *w, rv_dp_upconn_t *u)
{
    struct rv_dp_upool_s *p = u->pool;
    if (!p)
        return;
    if (u->pprev)
        u->pprev->pnext = u->pnext;
    else
        p->idle = u->pnext;
    if (u->pnext)
        u->pnext->pprev = u->pprev;
    else
        p->tail = u->pprev;
    u->pnext = u->pprev = NULL;
    u->pool = NULL;
    p->nidle--;
}

/* Remove a pool entry with no connection (none idle, nconn 0) from its bucket and free it. */
static void pool_free(rv_dp_worker_t *w, struct rv_dp_upool_s *p)
{
    struct rv_dp_upool_s **pp = pool_slot(w, &p->addr, p->key, p->hash);
    if (*pp == p)
        *pp = p->next;
    rv_timer_stop(&w->loop, &p->sweep);
    SSL_SESSION_free(p->sess);
    free(p);
}

/* Pool entry p may have no connection left: its sweep runs from the loop at once and frees it
 * (or keeps it for its TLS session a while). Never frees p here: callers still use it. */
static void pool_check_empty(rv_dp_worker_t *w, struct rv_dp_upool_s *p)
{
    if (!p->nconn && !p->idle && !p->sweep.active)
        rv_timer_at(&w->loop, &p->sweep, rv_loop_now(&w->loop));
}

/* Close an upstream connection; its memory is freed after this loop iteration. */
static void up_close(rv_dp_upconn_t *u)
{
    rv_dp_worker_t *w = u->w;
    if (u->dead)
        return;
    u->dead = true;
    pool_unlink(w, u);
    if (u->home) {
        struct rv_dp_upool_s *p = u->home;
        u->home = NULL;
        p->nconn--;
        pool_check_empty(w, p);
    }
    if (u->cbs) {
        rv_cb_state_t *cbs = u->cbs;
        u->cbs = NULL;
        atomic_fetch_sub_explicit(&cbs->connections, 1, memory_order_relaxed);
        if (atomic_load_explicit(&cbs->pending, memory_order_relaxed) > 0)
            kick_waiter(w, cbs);    /* a slot is free: a request of ours may take it now */
    }
    if (u->tls.ssl) {
        if (u->tls.done && !u->tls.failed)
            (void)rv_tls_shutdown(&u->tls);     /* close_notify, best effort (never waits) */
        rv_tls_free(&u->tls);
    }
    close(u->io.fd);
    rv_dp_buf_put(w, u->in);
    u->in = NULL;
    u->owner = NULL;
    u->znext = w->zups;
    w->zups = u;
}

void rv_dp_upconn_free(rv_dp_worker_t *w, rv_dp_upconn_t *u)
{
    if (w->nfree_ups < 1024) {
        u->znext = w->free_ups;
        w->free_ups = u;
        w->nfree_ups++;
    } else {
        free(u);
    }
}

/* When the pool's sweep is next due for its idle connections: the oldest one's expiry, or,
 * when they never expire (idleTimeout 0), a housekeeping period that frees the pool once the
 * servers closed them all. */
static int64_t pool_due(const struct rv_dp_upool_s *p, int64_t now)
{
    return p->idle_ms > 0 ? p->tail->idle_since + p->idle_ms : now + DP_POOL_HOUSEKEEP_MS;
}

/* Reap the connections idle for the pool's idle timeout (the oldest are at the tail); free the
 * pool when it has no connection left (idle or in use) and no TLS session to keep, else wait
 * for the next oldest idle one (connections in use re-arm it when the last one closes). */
static void pool_on_sweep(rv_loop_t *loop, rv_timer_t *t)
{
    struct rv_dp_upool_s *p = RV_CONTAINER_OF(t, struct rv_dp_upool_s, sweep);
    int64_t now = rv_loop_now(loop);
    while (p->idle_ms > 0 && p->tail && p->tail->idle_since + p->idle_ms <= now)
        up_close(p->tail);
    if (p->tail)
        rv_timer_at(loop, &p->sweep, pool_due(p, now));
    else if (p->sess && p->sess_at + DP_TLS_SESS_KEEP_MS > now)
        rv_timer_at(loop, &p->sweep, p->sess_at + DP_TLS_SESS_KEEP_MS);   /* keep the session a while */
    else if (!p->nconn)
        pool_free(p->w, p);
}

/* Waiting request s would use idle connection u: same endpoint address and pool key. */
static bool waits_for(const rv_dp_stream_t *s, const rv_dp_upconn_t *u)
{
    if (!s->cluster || s->ep < 0 || (uint32_t)s->ep >= s->cluster->neps)
        return false;
    const rv_endpoint_t *e = &s->cluster->eps[s->ep];
    return addr_eq(&e->addr, &u->addr) && pool_key(s->cluster, e) == u->key;
}

/* A connection slot of cbs was freed on this worker: the oldest of our requests waiting for
 * one looks again at once instead of at its next poll. */
static void kick_waiter(rv_dp_worker_t *w, const rv_cb_state_t *cbs)
{
    for (rv_dp_stream_t *s = w->waiters; s; s = s->wnext)
        if (s->cb_pend == cbs) {
            rv_timer_after(&w->loop, &s->t_try, 0);
            return;
        }
}

/* Waiters in some worker's pending state (pending count > 0) hold for a connection slot of
 * u's cluster. */
static bool slot_wanted(const rv_dp_upconn_t *u)
{
    return u->cbs && atomic_load_explicit(&u->cbs->pending, memory_order_relaxed) > 0;
}

/* Park u in its endpoint's idle list (or close it when the pool is full or stopping). */
static void pool_put(rv_dp_worker_t *w, rv_dp_upconn_t *u)
{
    u->owner = NULL;
    /* TLS: bytes the server sent past the response may sit inside the SSL (read-ahead), where
     * no readiness event reports them: such a connection is never parked (they would be taken
     * for the next request's response) */
    if (w->stopping || (u->tls.ssl && SSL_has_pending(u->tls.ssl))) {
        up_close(u);
        return;
    }
    /* requests wait for a slot of its cluster's maxConnections (one relaxed load per release;
     * waiters exist only at the limit): one of ours for this endpoint takes the connection
     * (parked, and the waiter runs at once); else free the slot for a waiter elsewhere - unless
     * it is this worker's last connection to the endpoint: without it, our next request there
     * would open one over the limit anyway (start_try, Envoy's rule), a close and a reconnect
     * per request */
    bool handed = false;
    if (slot_wanted(u)) {
        rv_dp_stream_t *ws = w->waiters;
        while (ws && !waits_for(ws, u))
            ws = ws->wnext;
        if (ws) {
            handed = true;
            rv_timer_after(&w->loop, &ws->t_try, 0);
        } else if (!u->home || u->home->nconn > 1) {
            up_close(u);
            return;
        }
    }
    struct rv_dp_upool_s *p = u->home ? u->home : pool_entry(w, &u->addr, u->addrlen, u->key, u->idle_ms, true);
    if (!p) {
        up_close(u);
        return;
    }
    if (p->nidle >= DP_UP_POOL_MAX && !handed) {
        up_close(u);
        return;
    }
    rv_dp_buf_put(w, u->in);
    u->in = NULL;
    u->in_len = 0;
    u->pool = p;
    u->pprev = NULL;
    u->pnext = p->idle;
    if (p->idle)
        p->idle->pprev = u;
    else
        p->tail = u;
    p->idle = u;
    p->nidle++;
    u->idle_since = rv_loop_now(&w->loop);
    /* the sweep may be waiting for a session's end, later than this connection's idle end */
    int64_t due = pool_due(p, u->idle_since);
    if (!p->sweep.active || p->sweep.when > due)
        rv_timer_at(&w->loop, &p->sweep, due);
}

/* Most recently used idle connection to (addr, key), or NULL. */
static rv_dp_upconn_t *pool_get(rv_dp_worker_t *w, const struct sockaddr_storage *addr, uint64_t key)
{
    struct rv_dp_upool_s *p = *pool_slot(w, addr, key, addr_hash(addr, key));
    if (!p || !p->idle)
        return NULL;
    rv_dp_upconn_t *u = p->idle;
    pool_unlink(w, u);
    u->reused = true;
    u->noreuse = false;
    return u;
}

/* Close the idle connections whose cluster has requests waiting for a connection slot (they
 * may be on another worker, which cannot use this worker's pool), the last ones included: a
 * request starting to wait asked for this, once, and its slot may be parked here. Owner
 * worker. */
void rv_dp_pool_shed(rv_dp_worker_t *w)
{
    for (int i = 0; i < DP_POOL_BUCKETS; i++)
        for (struct rv_dp_upool_s *p = w->pool[i]; p; p = p->next)
            for (rv_dp_upconn_t *u = p->idle, *n; u; u = n) {
                n = u->pnext;
                if (slot_wanted(u))
                    up_close(u);
            }
}

/* Close every idle connection and free the pool entries left without connections; an entry
 * with connections in use stays until they close (its sweep frees it, or the worker's final
 * call here once every request ended). Owner worker. */
void rv_dp_pool_close_all(rv_dp_worker_t *w)
{
    for (int i = 0; i < DP_POOL_BUCKETS; i++)
        for (struct rv_dp_upool_s *p = w->pool[i], *n; p; p = n) {
            n = p->next;
            while (p->idle)
                up_close(p->idle);
            if (!p->nconn)
                pool_free(w, p);
        }
}

/* ---- upstream TLS -------------------------------------------------------------------- */

/* SNI of endpoint e of TLS cluster c: the endpoint's (sniAddr, autoSniRewrite), else the
 * cluster's (sslConfig.sni); len 0 = none. NUL-terminated (snapshot arena strings). */
static rv_str_t ep_sni(const rv_cluster_t *c, const rv_endpoint_t *e)
{
    return e->sni.len ? e->sni : c->sni;
}

/* Pool key beside the address: the cluster's connection settings digest (0 for the defaults)
 * for plain; for TLS the context fingerprint and the settings digest mixed with the SNI
 * (FNV-1a 64), never 0. */
static uint64_t pool_key(const rv_cluster_t *c, const rv_endpoint_t *e)
{
    if (!c->tls)
        return c->conn.pool_key;
    rv_str_t sni = ep_sni(c, e);
    uint64_t h = (0xcbf29ce484222325ull ^ c->tls->id) * 0x100000001b3ull ^ c->conn.pool_key;
    for (size_t i = 0; i < sni.len; i++)
        h = (h ^ (unsigned char)sni.ptr[i]) * 0x100000001b3ull;
    return h ? h : 1;
}

/*
 * The client context's new-session callback (src/tls/client.c), on the worker that owns the
 * connection: keep the session as its pool entry's latest (the entry is created if needed, so
 * a session outlives the entry's last idle connection for DP_TLS_SESS_KEEP_MS). Returns 1 (we
 * own sess) or 0 (OpenSSL frees it).
 */
static int up_session_hook(SSL *ssl, SSL_SESSION *sess)
{
    rv_dp_upconn_t *u = SSL_get_app_data(ssl);
    if (!u || u->dead || !SSL_SESSION_is_resumable(sess))
        return 0;
    rv_dp_worker_t *w = u->w;
    struct rv_dp_upool_s *p = pool_entry(w, &u->addr, u->addrlen, u->key, u->idle_ms, true);
    if (!p)
        return 0;
    SSL_SESSION_free(p->sess);
    p->sess = sess;
    p->sess_at = rv_loop_now(&w->loop);
    if (!p->sweep.active)
        rv_timer_at(&w->loop, &p->sweep, p->sess_at + DP_TLS_SESS_KEEP_MS);
    return 1;
}

/* Layer a client TLS session over u's socket for endpoint e of cluster c: SNI, the name the
 * certificate must carry, and the entry's last session to resume. 0 or RV_ENOMEM. */
static int up_tls_start(rv_dp_worker_t *w, rv_dp_upconn_t *u, const rv_cluster_t *c, const rv_endpoint_t *e)
{
    rv_str_t sni = ep_sni(c, e);
    rv_tls_client_set_session_hook(up_session_hook);
    if (rv_tls_new(&u->tls, c->tls->ctx, u->io.fd, false, sni.len ? sni.ptr : NULL) != 0)
        return RV_ENOMEM;
    if (rv_tls_client_verify_name(c->tls, u->tls.ssl, sni.len ? sni : e->hostname) != 0) {
        rv_tls_free(&u->tls);
        return RV_ENOMEM;
    }
    SSL_set_app_data(u->tls.ssl, u);
    struct rv_dp_upool_s *p = pool_entry(w, &e->addr, e->addrlen, u->key, u->idle_ms, false);
    if (p && p->sess)
        SSL_set_session(u->tls.ssl, p->sess);
    return 0;
}

/* tcpKeepalive: SO_KEEPALIVE, and the counts the cluster sets (0 keeps the OS default). The
 * values were range-checked by the config (schema.c), so a failure is the kernel's: -1, the
 * connect fails (UF) rather than run without the keepalive the config asked for. */
static int set_keepalive(int fd, const rv_conn_cfg_t *k)
{
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0)
        return -1;
    int v;
    if (k->ka_time_s && (v = (int)k->ka_time_s, setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v)) < 0))
        return -1;
    if (k->ka_intvl_s && (v = (int)k->ka_intvl_s, setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v)) < 0))
        return -1;
    if (k->ka_probes && (v = (int)k->ka_probes, setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v)) < 0))
        return -1;
    return 0;
}

/* The idle timeout of cluster c's pooled connections (ms, < 0 = never reaped). */
static int64_t conn_idle_ms(const rv_cluster_t *c)
{
    return c->conn.idle_timeout_ms ? c->conn.idle_timeout_ms : RV_UP_IDLE_TIMEOUT_MS;
}

/* Start a non-blocking connect to e. NULL when it failed at once (or out of memory). */
static rv_dp_upconn_t *up_connect(rv_dp_worker_t *w, const rv_cluster_t *c, const rv_endpoint_t *e, uint64_t key,
                                  bool *oom)
{
    rv_dp_upconn_t *u = w->free_ups;
    *oom = false;
    if (u) {
        w->free_ups = u->znext;
        w->nfree_ups--;
    } else if (!(u = malloc(sizeof(*u)))) {
        *oom = true;
        return NULL;
    }
    memset(u, 0, sizeof(*u));
    u->w = w;
    int fd = socket(e->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (c->conn.keepalive && set_keepalive(fd, &c->conn) < 0)
        goto fail;
    if (connect(fd, (const struct sockaddr *)&e->addr, e->addrlen) == 0)
        u->connected = u->can_write = true;
    else if (errno != EINPROGRESS)
        goto fail;
    if (rv_io_add(&w->loop, &u->io, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, u_on_io) < 0)
        goto fail;
    u->addr = e->addr;
    u->addrlen = e->addrlen;
    u->key = key;
    u->idle_ms = conn_idle_ms(c);
    u->max_req = c->conn.max_requests;
    if (c->tls && up_tls_start(w, u, c, e) != 0) {
        *oom = true;
        goto fail;
    }
    return u;
fail:
    if (fd >= 0)
        close(fd);
    rv_dp_upconn_free(w, u);
    return NULL;
}

/* Detach the stream's upstream connection: back to the pool when reuse, else closed. */
void rv_dp_up_release(rv_dp_conn_t *d, bool reuse)
{
    rv_dp_upconn_t *u = d->s->u;
    if (!u)
        return;
    d->s->u = NULL;
    /* maxRequestsPerConnection: the connection that served its last allowed request closes */
    if (reuse && !(u->max_req && u->nreq >= u->max_req))
        pool_put(d->w, u);
    else
        up_close(u);
}

static void u_on_io(rv_loop_t *loop, rv_io_t *io, uint32_t events)
{
    rv_dp_upconn_t *u = RV_CONTAINER_OF(io, rv_dp_upconn_t, io);
    if (u->dead)
        return;
    if (!u->owner) {
        /* idle: the server closed, reset or sent unsolicited bytes - it is no longer usable.
         * An EPOLLIN edge alone may be stale: the last response can reach the socket in two
         * wakeups, the first event's read takes all of it and the connection is pooled before
         * the second edge is delivered. Closing on that edge would churn the pool (a new
         * upstream connection per request under load), so look for a byte first.
         * A late EPOLLOUT edge must still be remembered: it will not come again. */
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            up_close(u);
            return;
        }
        if ((events & EPOLLIN) && u->tls.ssl) {
            /* TLS: records that carry no data (a late session ticket, a key update) are
             * consumed and keep the connection; data, close_notify or an error end it */
            char c;
            ssize_t n = rv_tls_read(&u->tls, &c, 1);
            if (n != RV_EAGAIN) {
                up_close(u);
                return;
            }
        } else if (events & EPOLLIN) {
            char c;
            ssize_t n = recv(u->io.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                up_close(u);
                return;
            }
        }
        if (events & EPOLLOUT)
            u->can_write = true;
        return;
    }
    if (!u->connected) {
        if (events & (EPOLLERR | EPOLLHUP))
            u->err = true;
        else if (events & EPOLLOUT)
            u->connected = true;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        u->can_read = true;
    if (events & EPOLLRDHUP)
        u->rdhup = true;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        u->can_write = true;
    rv_dp_pump(u->owner);
}

/* ---- timers -------------------------------------------------------------------------- */

static int64_t connect_timeout(const rv_cluster_t *c)
{
    return c->conn.connect_timeout_ms ? c->conn.connect_timeout_ms : RV_UP_CONNECT_TIMEOUT_MS;
}

/* Per-try timer: connect timeout while connecting, per-try timeout once the request is
 * complete (Envoy starts it then), or nothing. */
static void arm_try_timer(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    rv_loop_t *loop = &d->w->loop;
    int64_t dl = INT64_MAX;
    if (s->up_state == UP_WAIT || s->up_state == UP_PENDING)
        return;     /* the timer measures the backoff or the pending poll; the next try re-arms it */
    if (s->up_state == UP_CONNECTING)
        dl = s->try_start + connect_timeout(s->cluster);
    int64_t pt = s->route->opts.retries.per_try_timeout_ms;
    if (pt > 0 && s->req_done && (s->up_state == UP_CONNECTING || s->up_state == UP_ACTIVE))
        dl = RV_MIN(dl, RV_MAX(s->try_start, s->req_done_at) + pt);
    if (dl == INT64_MAX)
        rv_timer_stop(loop, &s->t_try);
    else
        rv_timer_at(loop, &s->t_try, dl);
}

/* The whole request body was received: the route timeout starts now (Envoy: the time the
 * upstream has to answer completely, after the downstream request is complete). */
void rv_dp_req_complete(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    if (s->resp_local || !s->route || s->resp_state == RS_DONE || s->resp_src_done)
        return;     /* answered already (early response): no timeout to run */
    if (s->up_state == UP_NONE && !s->u)
        return;
    int64_t to = s->route->opts.timeout_ms;
    if (to > 0)
        rv_timer_after(&d->w->loop, &s->t_route, to);
    arm_try_timer(d);
}

static void fail(rv_dp_conn_t *d, int kind);

void rv_dp_on_route_timer(rv_loop_t *loop, rv_timer_t *t)
{
    rv_dp_conn_t *d = RV_CONTAINER_OF(t, rv_dp_stream_t, t_route)->d;
    if (d->dead || d->state != DS_REQ)
        return;
    fail(d, F_ROUTE_TIMEOUT);
    rv_dp_pump(d);
}

void rv_dp_on_try_timer(rv_loop_t *loop, rv_timer_t *t)
{
    rv_dp_stream_t *s = RV_CONTAINER_OF(t, rv_dp_stream_t, t_try);
    rv_dp_conn_t *d = s->d;
    if (d->dead || d->state != DS_REQ)
        return;
    if (s->up_state == UP_WAIT)
        start_try(d, TRY_RETRY);   /* backoff elapsed */
    else if (s->up_state == UP_PENDING)
        start_try(d, TRY_PENDING); /* is there a connection for it now? */
    else if (s->up_state == UP_CONNECTING &&
             rv_loop_now(loop) >= s->try_start + connect_timeout(s->cluster)) {
        rv_dp_upconn_t *u = s->u;
        if (u && u->connected && u->tls.ssl && !rv_tls_handshake_done(&u->tls)) {
            /* TCP is up, the TLS handshake is not: say so (the server may not speak TLS) */
            s->up_fail = s->arena ? rv_arena_str(s->arena, RV_STR("handshake timed out")) : RV_STR_NULL;
            fail(d, F_TLS);
        } else {
            fail(d, F_CONNECT);
        }
    }
    else
        fail(d, F_TRY_TIMEOUT);
    rv_dp_pump(d);
}

/* ---- tries, failures, retries -------------------------------------------------------- */

static rv_cstats_t *cstats(rv_dp_conn_t *d)
{
    rv_wstats_t *ws = d->w->st;
    const rv_cluster_t *c = d->s->cluster;
    return c && c->stat_id < ws->nclusters ? &ws->clusters[c->stat_id] : NULL;
}

/* The request can be sent again: no body, or the whole body so far is still buffered. */
static bool replayable(const rv_dp_stream_t *s)
{
    return s->req_body == RV_H1_BODY_NONE || s->retain;
}

/* ---- circuit breakers ---------------------------------------------------------------- */

/* Take one unit of the shared count c under limit max: false (nothing taken) when max units
 * are in use. One atomic add (and a subtract on overflow); no lock. The check and the add are
 * one operation, so the workers together never hold more than max. */
static bool cb_take(_Atomic int64_t *c, uint32_t max)
{
    if (atomic_fetch_add_explicit(c, 1, memory_order_relaxed) < (int64_t)max)
        return true;
    atomic_fetch_sub_explicit(c, 1, memory_order_relaxed);
    return false;
}

static void cb_put(rv_cb_state_t **held, size_t off)
{
    if (*held) {
        atomic_fetch_sub_explicit((_Atomic int64_t *)((char *)*held + off), 1, memory_order_relaxed);
        *held = NULL;
    }
}

/* Leave the pending state: its count and the worker's waiter list (local replies, a
 * connection found, request end). Owner worker. */
void rv_dp_cb_unpend(rv_dp_stream_t *s)
{
    if (!s->cb_pend)
        return;
    rv_dp_worker_t *w = s->d->w;
    if (s->wprev)
        s->wprev->wnext = s->wnext;
    else
        w->waiters = s->wnext;
    if (s->wnext)
        s->wnext->wprev = s->wprev;
    else
        w->waiters_tail = s->wprev;
    s->wnext = s->wprev = NULL;
    cb_put(&s->cb_pend, offsetof(rv_cb_state_t, pending));
}

/* Give back every circuit breaker count the request holds (request end). Owner worker. */
void rv_dp_cb_release(rv_dp_stream_t *s)
{
    cb_put(&s->cb_rq, offsetof(rv_cb_state_t, requests));
    cb_put(&s->cb_retry, offsetof(rv_cb_state_t, retries));
    rv_dp_cb_unpend(s);
}

/* A circuit breaker refused the request (maxRequests, maxPendingRequests): Envoy's answer,
 * 503 with the overflow reset reason, flag UO and x-envoy-overloaded: true. */
static void overflow(rv_dp_conn_t *d)
{
    rv_cstats_t *cs = cstats(d);
    if (cs)
        rv_ctr_add(&cs->overflow, 1);
    d->s->overloaded = true;
    rv_dp_local_reply(d, 503, RV_STR("upstream connect error or disconnect/reset before headers. reset reason: overflow"),
                      RV_STR_NULL, DP_F_UO);
}

/* May the request retry (maxRetries)? It holds one of the cluster's retries from its first
 * retry to its end (Envoy holds it from the retry's decision to the next one). false: the
 * retry is not made; the caller answers with what it has, flag UO (Envoy's NoOverflow). */
static bool retry_allowed(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    const rv_cluster_t *c = s->cluster;
    if (!c->cbs || s->cb_retry)
        return true;
    if (cb_take(&c->cbs->retries, c->cb.max_retries)) {
        s->cb_retry = c->cbs;
        return true;
    }
    rv_cstats_t *cs = cstats(d);
    if (cs)
        rv_ctr_add(&cs->retry_overflow, 1);
    return false;
}

/* No connection can be opened (the cluster holds maxConnections): wait as a pending request
 * (maxPendingRequests, else 503 UO) and look again every DP_PENDING_POLL_MS - a connection
 * freed on another worker sends no event here. The route timeout still runs. */
static void pend(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    const rv_cluster_t *c = s->cluster;
    if (!s->cb_pend) {
        if (!cb_take(&c->cbs->pending, c->cb.max_pending)) {
            s->up_state = UP_NONE;
            overflow(d);
            return;
        }
        s->cb_pend = c->cbs;
        rv_dp_worker_t *w = d->w;
        s->wprev = w->waiters_tail;     /* appended: the list is oldest first */
        s->wnext = NULL;
        if (w->waiters_tail)
            w->waiters_tail->wnext = s;
        else
            w->waiters = s;
        w->waiters_tail = s;
        rv_cstats_t *cs = cstats(d);
        if (cs)
            rv_ctr_add(&cs->cx_overflow, 1);
        rv_dp_shed_all();   /* idle connections parked before it waited free their slots */
    }
    s->up_state = UP_PENDING;
    rv_timer_after(&d->w->loop, &s->t_try, DP_PENDING_POLL_MS);
}

static void schedule_retry(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    const rv_retry_policy_t *pol = &s->route->opts.retries;
    s->retries++;
    rv_cstats_t *cs = cstats(d);
    if (cs)
        rv_ctr_add(&cs->retries, 1);
    /* fully jittered exponential backoff, as Envoy: random in [0, min(max, base * 2^(n-1))) */
    int64_t base = pol->backoff_base_ms > 0 ? pol->backoff_base_ms : DP_BACKOFF_BASE_MS;
    int64_t max = pol->backoff_max_ms > 0 ? pol->backoff_max_ms : RV_MAX(DP_BACKOFF_MAX_MS, base * 10);
    int64_t upper = base;
    for (uint32_t i = 1; i < s->retries && upper < max; i++)
        upper *= 2;
    if (upper > max)
        upper = max;
    int64_t delay = upper > 0 ? (int64_t)(rv_rand_next(&d->w->rng) % (uint64_t)upper) : 0;
    s->up_state = UP_WAIT;
    rv_timer_after(&d->w->loop, &s->t_try, delay);
}

static bool retry_on_failure(uint32_t on, int kind)
{
    switch (kind) {
    case F_CONNECT:
    case F_TLS:
        return on & (RV_RETRY_5XX | RV_RETRY_GATEWAY_ERROR | RV_RETRY_CONNECT_FAILURE | RV_RETRY_RESET);
    case F_RESET:
    case F_PROTOCOL:
    case F_TRY_TIMEOUT:
        return on & (RV_RETRY_5XX | RV_RETRY_GATEWAY_ERROR | RV_RETRY_RESET);
    default:
        return false;
    }
}

/*
 * An attempt failed (or the route timed out). Decides between a transparent retry on a fresh
 * connection (stale pooled connection), a policy retry after a backoff, an error response,
 * or - when the response already started - closing the client connection.
 */
static void fail(rv_dp_conn_t *d, int kind)
{
    rv_dp_stream_t *s = d->s;
    static const uint32_t flag_of[] = { DP_F_UF, DP_F_UC, DP_F_UPE, DP_F_UT, DP_F_UT, DP_F_OM, DP_F_UF };
    uint32_t flag = flag_of[kind];
    rv_cstats_t *cs = cstats(d);
    if (cs && kind == F_CONNECT)
        rv_ctr_add(&cs->connect_fail, 1);
    if (cs && kind == F_TLS)
        rv_ctr_add(&cs->tls_fail, 1);
    if (cs && (kind == F_TRY_TIMEOUT || kind == F_ROUTE_TIMEOUT))
        rv_ctr_add(&cs->timeouts, 1);
    if (kind == F_OOM)
        rv_ctr_add(&d->w->st->oom, 1);
    if (s->resp_started) {
        rv_dp_abort(d, flag);
        return;
    }
    bool was_reused = s->u && s->u->reused;
    rv_dp_up_release(d, false);
    rv_timer_stop(&d->w->loop, &s->t_try);
    s->up_state = UP_NONE;
    /* a response head may have been prepared but not written: drop it */
    s->resp_state = RS_NONE;
    s->resp_src_done = false;
    s->dechunk = s->rechunk = false;
    if (kind == F_RESET && was_reused && s->resp_any == 0 && !s->stale_retried && replayable(s)) {
        s->stale_retried = true;
        start_try(d, TRY_STALE);
        return;
    }
    const rv_retry_policy_t *pol = &s->route->opts.retries;
    if (retry_on_failure(pol->on, kind) && replayable(s)) {
        if (s->retries >= pol->num_retries) {
            flag |= DP_F_URX;
        } else if (retry_allowed(d)) {
            schedule_retry(d);
            return;
        } else {
            flag |= DP_F_UO;
        }
    }
    switch (kind) {
    case F_CONNECT:
    case F_RESET:
        rv_dp_local_reply(d, 503, RV_STR("upstream connect error or disconnect/reset before headers"),
                          RV_STR_NULL, flag);
        break;
    case F_TLS: {
        /* Envoy's wording, with the transport failure reason */
        static const char pre[] = "upstream connect error or disconnect/reset before headers. reset reason: "
                                  "connection failure, transport failure reason: TLS error: ";
        char *body = s->arena ? rv_arena_alloc(s->arena, sizeof(pre) - 1 + s->up_fail.len) : NULL;
        if (body) {
            memcpy(body, pre, sizeof(pre) - 1);
            memcpy(body + sizeof(pre) - 1, s->up_fail.ptr, s->up_fail.len);
        }
        rv_dp_local_reply(d, 503, body ? rv_str(body, sizeof(pre) - 1 + s->up_fail.len) : RV_STR("upstream TLS error"),
                          RV_STR_NULL, flag);
        break;
    }
    case F_PROTOCOL:
        rv_dp_local_reply(d, 502,
                          RV_STR("upstream connect error or disconnect/reset before headers. "
                                 "reset reason: protocol error"),
                          RV_STR_NULL, flag);
        break;
    case F_TRY_TIMEOUT:
    case F_ROUTE_TIMEOUT:
        rv_dp_local_reply(d, 504, RV_STR("upstream request timeout"), RV_STR_NULL, flag);
        break;
    default:
        rv_dp_local_reply(d, 503, RV_STR("out of memory"), RV_STR_NULL, flag);
        break;
    }
}

/* Begin an attempt: choose the endpoint, take a pooled connection or connect (when the
 * cluster's maxConnections allows, or - Envoy's rule - when this worker has no connection at
 * all to the endpoint; else wait, pend()), build the head. TRY_STALE reuses the endpoint on a
 * fresh connection; TRY_PENDING looks again for the endpoint chosen before. */
static void start_try(rv_dp_conn_t *d, int mode)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    const rv_cluster_t *c = s->cluster;
    rv_lb_state_t *lb = &s->eg->lb[c->index];
    int ep = s->ep;
    if ((mode != TRY_STALE && mode != TRY_PENDING) || ep < 0) {
        ep = rv_lb_pick(c, lb, mode == TRY_RETRY && s->ep >= 0 ? (uint32_t)s->ep : UINT32_MAX);
        if (ep < 0 || (uint32_t)ep >= c->neps) {
            rv_dp_local_reply(d, 503, RV_STR("no healthy upstream"), RV_STR_NULL, DP_F_UH);
            return;
        }
    }
    if (s->ep_counted != ep) {
        if (s->ep_counted >= 0 && lb->active[s->ep_counted])
            lb->active[s->ep_counted]--;
        lb->active[ep]++;
        s->ep_counted = ep;
    }
    s->ep = ep;
    const rv_endpoint_t *e = &c->eps[ep];
    uint64_t key = pool_key(c, e);
    rv_dp_upconn_t *u = mode == TRY_STALE ? NULL : pool_get(w, &e->addr, key);
    rv_cb_state_t *counted = NULL;
    struct rv_dp_upool_s *home = NULL;
    if (!u)
        home = pool_entry(w, &e->addr, e->addrlen, key, conn_idle_ms(c), false);
    if (!u && c->cbs) {
        if (!cb_take(&c->cbs->connections, c->cb.max_connections)) {
            /* at the limit. Envoy (ConnPoolImplBase::tryCreateNewConnection): a worker's pool
             * with no connection to the endpoint - none connecting, busy or idle - opens one
             * anyway, counted over the limit, so connections parked on other workers never
             * leave this one with nothing to send on (nor a waiter with nothing to wait for) */
            if (home && home->nconn > 0) {
                pend(d);
                return;
            }
            atomic_fetch_add_explicit(&c->cbs->connections, 1, memory_order_relaxed);
            if (!s->cb_pend) {
                rv_cstats_t *cs = cstats(d);
                if (cs)
                    rv_ctr_add(&cs->cx_overflow, 1);    /* Envoy counts upstream_cx_overflow too */
            }
        }
        counted = c->cbs;
    }
    rv_dp_cb_unpend(s);
    /* the first try runs in the call that parsed the head (unless it had to wait) */
    if (rv_dp_build_up_head(d, e, mode == TRY_FIRST) < 0) {
        if (u)
            up_close(u);
        if (counted)
            atomic_fetch_sub_explicit(&counted->connections, 1, memory_order_relaxed);
        fail(d, F_OOM);
        return;
    }
    s->body_fwd = s->head_len;      /* (re)send the retained body from its start */
    s->up_sent_all = false;
    s->up_started = false;
    s->resp_any = 0;
    s->u_scan = 0;
    s->resp_off = s->resp_scan = s->resp_raw = 0;
    s->up_attempts++;
    s->try_start = rv_loop_now(&w->loop);
    if (!u) {
        /* the connection belongs to its pool entry from now to its close (nconn) */
        bool oom = false;
        if (!home)
            home = pool_entry(w, &e->addr, e->addrlen, key, conn_idle_ms(c), true);
        u = home ? up_connect(w, c, e, key, &oom) : NULL;
        if (!u) {
            if (counted)
                atomic_fetch_sub_explicit(&counted->connections, 1, memory_order_relaxed);
            if (home)
                pool_check_empty(w, home);
            s->up_state = UP_CONNECTING;
            fail(d, oom || !home ? F_OOM : F_CONNECT);
            return;
        }
        u->cbs = counted;
        u->home = home;
        home->nconn++;
    }
    u->owner = d;
    u->nreq++;
    s->u = u;
    s->up_state = u->connected ? UP_ACTIVE : UP_CONNECTING;
    arm_try_timer(d);
}

/* Route action ROUTE: pick the destination and cluster, then the first attempt. */
void rv_dp_proxy_start(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    const rv_action_t *a = &s->route->action;
    const rv_snapshot_t *snap = s->gen->snap;
    if (a->ndests == 0) {
        rv_dp_local_reply(d, 503, RV_STR("no healthy upstream"), RV_STR_NULL, DP_F_UH);
        return;
    }
    uint32_t di = a->ndests > 1 ? rv_pick_dest(a, &w->rng) : 0;
    if (di >= a->ndests)
        di = 0;
    s->dest = &a->dests[di];
    if (s->route->index < snap->nroutes)
        s->series = s->gen->series[s->gen->series_off[s->route->index] + di];
    /* endpoints come from the endpoint set the request pinned (same cluster indexes) */
    const rv_endpoint_set_t *es = s->eg->es;
    if (s->dest->cluster == RV_NO_CLUSTER || s->dest->cluster >= es->nclusters ||
        es->clusters[s->dest->cluster].neps == 0) {
        if (s->dest->cluster < es->nclusters)
            s->cluster = &es->clusters[s->dest->cluster];
        rv_dp_local_reply(d, 503, RV_STR("no healthy upstream"), RV_STR_NULL, DP_F_UH);
        return;
    }
    s->cluster = &es->clusters[s->dest->cluster];
    if (s->cluster->cbs) {
        /* maxRequests: the one shared atomic add of a request (and its subtract at the end) */
        if (!cb_take(&s->cluster->cbs->requests, s->cluster->cb.max_requests)) {
            overflow(d);
            return;
        }
        s->cb_rq = s->cluster->cbs;
    }
    if (!s->arena && !(s->arena = rv_dp_arena_get(w))) {
        rv_ctr_add(&w->st->oom, 1);
        rv_dp_local_reply(d, 503, RV_STR("out of memory"), RV_STR_NULL, DP_F_OM);
        return;
    }
    /* Expect: 100-continue is answered here, when we are about to read the body (Envoy) */
    if (s->expect && s->req_body != RV_H1_BODY_NONE && d->in_len == s->head_len) {
        d->pre = resp_100;
        d->pre_len = sizeof(resp_100) - 1;
        s->sent100 = true;
    }
    start_try(d, TRY_FIRST);
    if (d->state == DS_REQ && !d->dead && s->req_done)
        rv_dp_req_complete(d);
}

/* ---- response ------------------------------------------------------------------------ */

static bool status_retriable(const rv_retry_policy_t *pol, int status)
{
    if ((pol->on & RV_RETRY_5XX) && status >= 500 && status <= 599)
        return true;
    if ((pol->on & RV_RETRY_GATEWAY_ERROR) && status >= 502 && status <= 504)
        return true;
    if (pol->on & RV_RETRY_RETRIABLE_STATUS)
        for (uint32_t i = 0; i < pol->nstatus_codes; i++)
            if (pol->status_codes[i] == status)
                return true;
    return false;
}

/* In-place de-chunking for HTTP/1.0 clients: decode the (already validated) bytes
 * u->in[resp_raw, resp_raw + n) and move their payload down to resp_scan. */
static void dechunk(rv_dp_stream_t *s, char *buf, size_t n)
{
    enum { K_SIZE = 0, K_EXT, K_DATA, K_DATA_END, K_TRAILER_BOL, K_TRAILER, K_DONE };
    struct rv_dp_dechunk_s *k = &s->dk;
    size_t i = s->resp_raw, end = s->resp_raw + n;
    while (i < end) {
        char c = buf[i];
        switch (k->st) {
        case K_SIZE:
        case K_EXT:
            if (c == '\n') {
                k->st = k->left ? K_DATA : K_TRAILER_BOL;
            } else if (k->st == K_SIZE && c == ';') {
                k->st = K_EXT;
            } else if (k->st == K_SIZE && c != '\r' && c != ' ' && c != '\t') {
                int v = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
                k->left = k->left * 16 + (uint64_t)v;
            }
            i++;
            break;
        case K_DATA: {
            size_t take = (size_t)RV_MIN((uint64_t)(end - i), k->left);
            if (s->resp_scan != i)
                memmove(buf + s->resp_scan, buf + i, take);
            s->resp_scan += (uint32_t)take;
            i += take;
            k->left -= take;
            if (!k->left)
                k->st = K_DATA_END;
            break;
        }
        case K_DATA_END:
            if (c == '\n')
                k->st = K_SIZE;
            i++;
            break;
        case K_TRAILER_BOL:
            k->st = c == '\n' ? K_DONE : c == '\r' ? K_TRAILER_BOL : K_TRAILER;
            i++;
            break;
        case K_TRAILER:
            if (c == '\n')
                k->st = K_TRAILER_BOL;
            i++;
            break;
        default:
            i = end;
            break;
        }
    }
    s->resp_raw = (uint32_t)end;
}

/* Frame the response body bytes that arrived: [resp_raw, in_len). Returns progress. */
static bool resp_body_scan(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    rv_dp_upconn_t *u = s->u;
    if (s->resp_src_done)
        return false;
    size_t avail = u->in_len - s->resp_raw;
    bool p = false;
    switch (s->resp_body) {
    case RV_H1_BODY_LENGTH: {
        size_t take = (size_t)RV_MIN((uint64_t)avail, s->resp_remaining);
        s->resp_remaining -= take;
        s->resp_raw += (uint32_t)take;
        s->resp_scan = s->resp_raw;
        p = take > 0;
        if (s->resp_remaining == 0) {
            s->resp_src_done = true;
            p = true;
        }
        break;
    }
    case RV_H1_BODY_CHUNKED: {
        if (!avail)
            break;
        size_t used = 0;
        int r = rv_h1_chunked_scan(&s->resp_ck, u->in + s->resp_raw, avail, &used, NULL);
        if (s->dechunk)
            dechunk(s, u->in, used);
        else
            s->resp_scan = s->resp_raw = s->resp_raw + (uint32_t)used;
        p = used > 0;
        if (r == 1) {
            s->resp_src_done = true;
            p = true;
        } else if (r < 0) {
            /* bad framing after the head went out: forward what was valid, then cut */
            s->upe = true;
            u->noreuse = true;
            s->flags |= DP_F_UPE;
            if (!s->resp_started) {
                fail(d, F_PROTOCOL);
                return true;
            }
            rv_dp_abort(d, DP_F_UPE);
            return true;
        }
        break;
    }
    case RV_H1_BODY_EOF:
        s->resp_raw = s->resp_scan = u->in_len;
        p = avail > 0;
        if (u->eof) {
            s->resp_src_done = true;
            p = true;
        }
        break;
    default:
        s->resp_src_done = true;
        p = true;
        break;
    }
    if (!s->resp_src_done && u->eof && s->resp_raw == u->in_len) {
        /* the upstream closed before the end of a framed body */
        if (!s->resp_started) {
            fail(d, F_RESET);
        } else {
            rv_dp_abort(d, DP_F_UC);
        }
        return true;
    }
    if (s->resp_src_done) {
        rv_timer_stop(&d->w->loop, &s->t_route);
        rv_timer_stop(&d->w->loop, &s->t_try);
    }
    return p;
}

/* Parse the response head once complete; 1xx heads are skipped. Returns progress. */
static bool resp_head(rv_dp_conn_t *d)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    rv_dp_upconn_t *u = s->u;
    if (u->in_len == 0) {
        if (u->eof) {
            fail(d, F_RESET);
            return true;
        }
        return false;
    }
    size_t end = rv_dp_find_head_end(u->in, u->in_len, &s->u_scan);
    bool garbage = memcmp(u->in, "HTTP/", RV_MIN(u->in_len, 5u)) != 0;    /* not a status line */
    rv_h1_response_t r;
    memset(&r, 0, sizeof(r));
    rv_h1_limits_t lim = rv_h1_default_limits;
    if (s->cluster->conn.max_headers)
        lim.max_headers = s->cluster->conn.max_headers; /* maxHeadersCount: more -> 502 UPE */
    if (!end && !garbage && u->in_len < rv_h1_default_limits.max_head && u->in_len < DP_BUF_SIZE) {
        if (!u->eof)
            return false;
        /* closed mid-head: a malformed head is a protocol error, a truncated one a reset */
        int pr = rv_h1_parse_response(u->in, u->in_len, &lim, w->hdrs, s->is_head, &r);
        u->noreuse = true;
        fail(d, pr == RV_EAGAIN ? F_RESET : F_PROTOCOL);
        return true;
    }
    int rc = garbage ? RV_EPARSE
                     : rv_h1_parse_response(u->in, u->in_len, &lim, w->hdrs, s->is_head, &r);
    if (rc == RV_EAGAIN)
        rc = RV_ETOOBIG;    /* limit reached without a complete head */
    if (rc < 0 || r.status == 101) {
        u->noreuse = true;
        fail(d, F_PROTOCOL);
        return true;
    }
    if (r.status < 200) {
        /* interim response (100, 103): not forwarded; the final one follows */
        memmove(u->in, u->in + r.head_len, u->in_len - r.head_len);
        u->in_len -= (uint32_t)r.head_len;
        s->u_scan = 0;
        return true;
    }
    const rv_retry_policy_t *pol = &s->route->opts.retries;
    if (pol->on && status_retriable(pol, r.status) && replayable(s)) {
        if (s->retries >= pol->num_retries) {
            s->flags |= DP_F_URX;
        } else if (retry_allowed(d)) {
            rv_dp_up_release(d, false);
            rv_timer_stop(&w->loop, &s->t_try);
            schedule_retry(d);
            return true;
        } else {
            s->flags |= DP_F_UO;    /* maxRetries in flight: this response is the answer */
        }
    }
    s->status = r.status;
    s->resp_body = r.body;
    s->resp_remaining = r.content_length;
    s->resp_up_keepalive = r.keep_alive;
    s->retain = false;      /* no replay once a response is being forwarded */
    memset(&s->resp_ck, 0, sizeof(s->resp_ck));
    memset(&s->dk, 0, sizeof(s->dk));
    if (r.body == RV_H1_BODY_CHUNKED && s->minor == 0) {
        s->dechunk = true;  /* HTTP/1.0 client: payload only, delimited by close */
        d->close_after = true;
    } else if (r.body == RV_H1_BODY_EOF) {
        /* close-delimited: re-chunked for HTTP/1.1 clients (their connection stays open),
         * close-delimited again for HTTP/1.0 ones */
        if (s->minor == 1)
            s->rechunk = true;
        else
            d->close_after = true;
    }
    if (rv_dp_build_resp_head(d, &r) < 0) {
        fail(d, F_OOM);
        return true;
    }
    s->resp_off = s->resp_scan = s->resp_raw = (uint32_t)r.head_len;
    s->resp_state = RS_STREAM;
    s->dh_i = 0;
    if (r.body == RV_H1_BODY_NONE) {
        s->resp_src_done = true;
        if (u->in_len > r.head_len)
            u->noreuse = true;  /* bytes after a body-less response: never reuse */
        rv_timer_stop(&w->loop, &s->t_route);
        rv_timer_stop(&w->loop, &s->t_try);
    }
    return true;
}

/* ---- the upstream step --------------------------------------------------------------- */

/* Move data between the stream and its upstream connection. Returns progress. */
bool rv_dp_up_step(rv_dp_conn_t *d)
{
    rv_dp_stream_t *s = d->s;
    rv_dp_upconn_t *u = s->u;
    bool p = false;
    if (!u || s->up_state == UP_WAIT)
        return false;
    if (s->up_state == UP_CONNECTING) {
        if (u->err) {
            fail(d, F_CONNECT);
            return true;
        }
        if (!u->connected)
            return false;
        if (u->tls.ssl && !rv_tls_handshake_done(&u->tls)) {
            int hr = rv_tls_handshake(&u->tls);
            if (hr == RV_EAGAIN) {
                if (rv_tls_want(&u->tls) == RV_TLS_WANT_READ)
                    u->can_read = false;
                else if (rv_tls_want(&u->tls) == RV_TLS_WANT_WRITE)
                    u->can_write = false;
                return false;
            }
            if (hr != 0) {
                char why[256];
                size_t n = rv_tls_client_failure(u->tls.ssl, rv_tls_reason(&u->tls), why, sizeof(why));
                s->up_fail = s->arena ? rv_arena_str(s->arena, rv_str(why, n)) : RV_STR_NULL;
                fail(d, F_TLS);
                return true;
            }
            rv_cstats_t *cs = cstats(d);
            if (cs)
                rv_ctr_add(rv_tls_resumed(&u->tls) ? &cs->tls_resumed : &cs->tls_full, 1);
        }
        s->up_state = UP_ACTIVE;
        arm_try_timer(d);
        p = true;
    }
    /* send head and body */
    if (!s->up_sent_all && u->can_write) {
        struct iovec iov[48];
        int n = 0;
        for (int i = s->uh_i; i < s->uh_n && n < 47; i++)
            iov[n++] = s->uh[i];
        size_t body = 0;
        if (s->uh_i + n == s->uh_n && s->body_scan > s->body_fwd) {
            body = s->body_scan - s->body_fwd;
            iov[n++] = (struct iovec){ d->in + s->body_fwd, body };
        }
        if (n > 0) {
            ssize_t wr;
            if (u->tls.ssl) {
                wr = rv_tls_writev(&u->tls, iov, n);
                if (wr == RV_EAGAIN) {
                    errno = EAGAIN;
                    wr = -1;
                } else if (wr < 0) {
                    errno = EIO;
                    wr = -1;
                }
            } else {
                wr = rv_sock_sendv(u->io.fd, iov, n);
            }
            if (wr < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    /* TLS may wait for the socket to be readable (renegotiation): then
                     * the next readable event retries */
                    if (!u->tls.ssl || rv_tls_want(&u->tls) == RV_TLS_WANT_WRITE)
                        u->can_write = false;
                } else if (errno != EINTR) {
                    u->noreuse = true;
                    if (s->resp_any == 0 && s->resp_state == RS_NONE) {
                        fail(d, F_RESET);
                        return true;
                    }
                    s->up_sent_all = true;  /* stop sending; let the response finish */
                }
            } else {
                size_t left = (size_t)wr, total = 0;
                for (int i = 0; i < n; i++)
                    total += iov[i].iov_len;
                if ((size_t)wr < total && (!u->tls.ssl || rv_tls_want(&u->tls) == RV_TLS_WANT_WRITE))
                    u->can_write = false;
                while (left && s->uh_i < s->uh_n) {
                    struct iovec *v = &s->uh[s->uh_i];
                    size_t k = RV_MIN(left, v->iov_len);
                    v->iov_base = (char *)v->iov_base + k;
                    v->iov_len -= k;
                    left -= k;
                    if (v->iov_len == 0)
                        s->uh_i++;
                }
                s->body_fwd += (uint32_t)left;
                s->up_started = true;
                p = p || wr > 0;
            }
        }
        if (!s->up_sent_all && s->uh_i == s->uh_n && s->req_done && s->body_fwd == s->body_scan)
            s->up_sent_all = true;
        rv_dp_compact_in(d);
    }
    /* receive */
    if (u->can_read && !u->eof && u->in_len < DP_BUF_SIZE) {
        if (!u->in && !(u->in = rv_dp_buf_get(d->w))) {
            fail(d, F_OOM);
            return true;
        }
        size_t space = DP_BUF_SIZE - u->in_len;
        ssize_t n;
        if (u->tls.ssl) {
            n = rv_tls_read(&u->tls, u->in + u->in_len, space);
            if (n == RV_EAGAIN && rv_tls_want(&u->tls) == RV_TLS_WANT_WRITE) {
                u->can_write = false;   /* the read resumes when writable: can_read stays set */
                n = -1;
                errno = EINTR;          /* nothing else to do below */
            } else if (n == RV_EAGAIN) {
                errno = EAGAIN;
                n = -1;
            } else if (n < 0) {
                errno = EIO;
                n = -1;
            }
        } else {
            n = rv_sock_recv(u->io.fd, u->in + u->in_len, space);
        }
        if (n > 0) {
            u->in_len += (uint32_t)n;
            s->resp_any += (uint64_t)n;
            if (u->tls.ssl ? (size_t)n < space && rv_tls_want(&u->tls) == RV_TLS_WANT_READ
                           : (size_t)n < space && !u->rdhup)
                u->can_read = false;
            p = true;
        } else if (n == 0) {
            u->eof = true;
            p = true;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            u->can_read = false;
        } else if (errno != EINTR) {
            u->eof = u->err = true;
            p = true;
        }
    }
    /* response */
    if (s->resp_state == RS_NONE)
        p |= resp_head(d);
    if (!d->dead && d->state == DS_REQ && s->u && s->resp_state == RS_STREAM && !s->resp_local)
        p |= resp_body_scan(d);
    return p;
}
