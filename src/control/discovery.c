/*
 * discovery.c - the Consul discovery watcher thread: start and stop, the loop that drives the
 * watches' transfers with libcurl's multi socket interface on an epoll set, and publishing a
 * new view when the state changed. The watches themselves are in discovery-query.c, the
 * state in discovery-state.c, the views in discovery-view.c.
 *
 * Why not the rv_consul client: that client runs one request at a time, and discovery needs
 * one blocking query per service and datacenter (thousands), so the watcher drives its own
 * multi handles with a bounded number of transfers in flight. It shares the client's rules
 * (rv_consul_next_index, rv_consul_backoff_ms) and configuration (rv_consul_cfg_t).
 *
 * Threads: the state and every curl handle belong to the watcher thread. The only shared
 * things are `latest` (mutex), the eventfd, and two atomics (stop, healthy).
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "control/discovery-internal.h"
#include "core/err.h"
#include "core/fdlimit.h"
#include "core/log.h"

#define FD_RESERVE 1024             /* descriptors kept for the rest of the process */
#define PUBLISH_GAP_MS 20           /* coalesce a burst of answers into one view */
#define PUBLISH_GAP_SYNCING_MS 250  /* while the first answers arrive */
#define TRIM_DELAY_MS 3000          /* after the first synced view: the snapshot built from it */
#define WAKE_TAG UINT64_MAX     /* epoll data of the wake eventfd */

/* ---- process-wide override (rivet run --consul-discovery) ---------------------------- */

static bool ovr_enable, ovr_catalog_only;
static _Atomic uint32_t ovr_max_queries;

void rv_disc_set_max_queries(uint32_t n)
{
    atomic_store(&ovr_max_queries, n);
}

uint32_t rv_disc_max_queries(void)
{
    uint32_t n = atomic_load(&ovr_max_queries);
    return n ? n : RV_DISC_DEFAULT_MAX_QUERIES;
}

void rv_disc_override(bool enable, bool catalog_only)
{
    ovr_enable = enable;
    ovr_catalog_only = catalog_only;
}

bool rv_disc_override_enabled(bool *catalog_only)
{
    if (catalog_only)
        *catalog_only = ovr_catalog_only;
    return ovr_enable;
}

/* ---- the watcher thread ------------------------------------------------------------------ */

/* A new view from the state, handed over as `latest` (the eventfd wakes the control thread). */
static void publish(rv_disc_t *d, int64_t now)
{
    rv_disc_view_t *v = rv_disc_view_build(d->st);
    if (!v) {
        rv_log_error("consul discovery: out of memory building the endpoint view; keeping the last one");
        return;
    }
    v->seq = ++d->seq;
    pthread_mutex_lock(&d->mu);
    rv_disc_view_t *old = d->latest;
    d->latest = v;
    pthread_mutex_unlock(&d->mu);
    rv_disc_view_release(old);
    uint64_t one = 1;
    if (write(d->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        rv_log_error("consul discovery: eventfd: %s", strerror(errno));
    d->dirty = false;
    d->last_pub = now;
    if (v->synced && !d->trimmed && !d->trim_at)
        d->trim_at = now + TRIM_DELAY_MS;
}

/* CURLMOPT_SOCKETFUNCTION: follow curl's interest in each socket in the watcher's epoll. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *sockp)
{
    shard_t *sh = ud;
    rv_disc_t *d = sh->d;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(d->ep, EPOLL_CTL_DEL, fd, NULL);
        curl_multi_assign(sh->multi, fd, NULL);
        return 0;
    }
    struct epoll_event ev = { .data.u64 = ((uint64_t)sh->idx << 32) | (uint32_t)fd };
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (sockp) {
        if (epoll_ctl(d->ep, EPOLL_CTL_MOD, fd, &ev) == 0)
            return 0;
    }
    /* new to us (or curl reused a number we had dropped): add, else modify */
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev) != 0 &&
        (errno != EEXIST || epoll_ctl(d->ep, EPOLL_CTL_MOD, fd, &ev) != 0)) {
        rv_log_error("consul discovery: epoll_ctl: %s", strerror(errno));
        return -1;
    }
    curl_multi_assign(sh->multi, fd, sh);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when curl wants CURL_SOCKET_TIMEOUT (-1: no timer). */
static int on_timer(CURLM *multi, long timeout_ms, void *ud)
{
    shard_t *sh = ud;
    sh->timer_at = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    return 0;
}

/*
 * The loop: curl's multi socket interface on an epoll set, so that a turn costs what its
 * events cost, not O(transfers) (thousands of blocking queries are open at once). Watches are
 * scanned for starts only when a transfer finished, a watch was added, or a watch's time
 * (backoff, rate limit) has come.
 */
static void *run(void *arg)
{
    rv_disc_t *d = arg;
    if (d->fixed_dcs)
        for (uint32_t i = 0; i < d->ndcs; i++)
            disc_add_watch(d, WK_SERVICES, NULL, d->dcs[i]);
    else
        disc_add_watch(d, WK_DCS, NULL, NULL);
    int64_t scan_at = 0;
    int running = 0;
    struct epoll_event evs[256];
    while (!atomic_load(&d->stop)) {
        int64_t now = mono_ms();
        if (scan_at <= now || d->nw != d->nw_scanned) {
            d->nw_scanned = d->nw;
            scan_at = disc_start_due(d, now);
        }
        /* transfers just added: curl sets a 0 ms timer for them */
        int64_t tnow = mono_ms();
        for (uint32_t k = 0; k < d->nsh; k++)
            if (d->sh[k].timer_at >= 0 && d->sh[k].timer_at <= tnow) {
                d->sh[k].timer_at = -1;
                curl_multi_socket_action(d->sh[k].multi, CURL_SOCKET_TIMEOUT, 0, &running);
            }
        CURLMsg *m;
        int left;
        bool any = false;
        for (uint32_t k = 0; k < d->nsh; k++) {
            while ((m = curl_multi_info_read(d->sh[k].multi, &left))) {
                if (m->msg != CURLMSG_DONE)
                    continue;
                watch_t *w = NULL;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&w);
                if (w) {
                    disc_finish(d, w, m->data.result, now);
                    /* thousands of watches: no body buffer kept between answers */
                    free(w->body.body);
                    w->body.body = NULL;
                    w->body.len = w->body.cap = 0;
                }
                any = true;
            }
        }
        if (any) {
            disc_sweep_watches(d);
            scan_at = now;   /* slots freed, and the finished watches may go again */
        }
        bool healthy = d->nfailing == 0;
        if (healthy != d->was_healthy) {
            if (healthy && d->seq)
                rv_log_info("consul discovery: Consul answers again");
            d->was_healthy = healthy;
            atomic_store(&d->healthy, healthy);
        }
        now = mono_ms();
        int64_t next = scan_at;
        disc_recover_cap(d, now);
        /* The first sync parses every service and the control thread builds its first big
         * snapshot from it (JSON dumps included): freed memory that glibc keeps in its arenas
         * unless asked. Once, a few seconds after the first synced view. */
        if (d->trim_at && now >= d->trim_at) {
            d->trim_at = 0;
            d->trimmed = true;
            malloc_trim(0);
        } else if (d->trim_at && d->trim_at < next) {
            next = d->trim_at;
        }
        if (d->dirty) {
            bool syncing = !d->latest || !d->latest->synced;
            int64_t due = d->dirty_at + (syncing ? PUBLISH_GAP_SYNCING_MS : PUBLISH_GAP_MS);
            int64_t gap = d->last_pub + PUBLISH_GAP_MS;
            if (due < gap)
                due = gap;
            /* syncing ends with the last first answer: publish at once then */
            if (syncing && due > now) {
                bool all = d->st->ndcs_read > 0;
                for (uint32_t i = 0; i < d->nw && all; i++)
                    all = d->w[i]->kind != WK_HEALTH || d->w[i]->ok || d->w[i]->dead;
                if (all)
                    due = now;
            }
            if (due <= now)
                publish(d, now);
            else if (due < next)
                next = due;
        }
        for (uint32_t k = 0; k < d->nsh; k++)
            if (d->sh[k].timer_at >= 0 && d->sh[k].timer_at < next)
                next = d->sh[k].timer_at;
        if (any || d->nw != d->nw_scanned)
            continue;   /* starts may be due now */
        int64_t timeout = next - mono_ms();
        if (timeout < 0)
            timeout = 0;
        if (timeout > 1000)
            timeout = 1000;
        int n = epoll_wait(d->ep, evs, (int)RV_ARRAY_LEN(evs), (int)timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == WAKE_TAG) {
                uint64_t v;
                if (read(d->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    rv_log_debug("consul discovery: wake eventfd: %s", strerror(errno));
                continue;
            }
            int mask = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                mask |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
            if (evs[i].events & EPOLLERR)
                mask |= CURL_CSELECT_ERR;
            uint32_t k = (uint32_t)(evs[i].data.u64 >> 32);
            if (k < d->nsh)
                curl_multi_socket_action(d->sh[k].multi, (curl_socket_t)(uint32_t)evs[i].data.u64, mask, &running);
        }
    }
    return NULL;
}

static char *base_url(const char *addr, const char *scheme)
{
    const char *a = addr && addr[0] ? addr : "127.0.0.1:8500";
    char buf[1024];
    if (strstr(a, "://"))
        snprintf(buf, sizeof(buf), "%s", a);
    else
        snprintf(buf, sizeof(buf), "%s://%s", scheme && scheme[0] ? scheme : "http", a);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '/')
        buf[--n] = '\0';
    return strdup(buf);
}

/*
 * The blocking-query cap the descriptor limit allows (core/fdlimit.h): the soft RLIMIT_NOFILE is
 * raised (up to the hard limit) to what the process had plus one descriptor per query and plain
 * read; when even the hard limit is lower, the cap is what fits under it, keeping FD_RESERVE for
 * the rest.
 */
static uint32_t fd_cap(uint32_t want)
{
    return rv_fd_budget("consul discovery", "blocking queries", want, PLAIN_INFLIGHT, FD_RESERVE, 8);
}

static void disc_free(rv_disc_t *d)
{
    for (uint32_t i = 0; i < d->nw; i++)
        disc_watch_free(d, d->w[i]);
    free(d->w);
    for (uint32_t k = 0; k < d->nsh; k++)
        if (d->sh[k].multi)
            curl_multi_cleanup(d->sh[k].multi);
    free(d->sh);
    curl_slist_free_all(d->hdrs);
    curl_slist_free_all(d->connect_to);
    rv_disc_state_free(d->st);
    rv_disc_view_release(d->latest);
    free_strs(d->dcs, d->ndcs);
    free(d->base);
    free(d->token);
    free(d->ca_file);
    free(d->ca_path);
    free(d->cert_file);
    free(d->key_file);
    free(d->basic_auth);
    free(d->tls_server_name);
    if (d->efd >= 0)
        close(d->efd);
    if (d->ep >= 0)
        close(d->ep);
    if (d->wake_fd >= 0)
        close(d->wake_fd);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

rv_disc_t *rv_disc_start(const rv_disc_opts_t *o, int *notify_fd)
{
    rv_httpc_global_init();
    rv_disc_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->efd = d->ep = d->wake_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    d->o = *o;
    const rv_consul_cfg_t *c = o->consul;
    d->base = base_url(c ? c->address : NULL, c ? c->scheme : NULL);
    if (c) {
        d->token = xstrdup(c->token);
        d->ca_file = xstrdup(c->ca_file);
        d->ca_path = xstrdup(c->ca_path);
        d->cert_file = xstrdup(c->cert_file);
        d->key_file = xstrdup(c->key_file);
        d->basic_auth = xstrdup(c->basic_auth);
        d->insecure = c->insecure_skip_verify;
        d->tls_server_name = xstrdup(c->tls_server_name);
    }
    if (d->base && d->tls_server_name && rv_httpc_server_name(&d->base, d->tls_server_name, &d->connect_to) != 0)
        goto fail;
    if (d->token) {
        char hdr[1024];
        snprintf(hdr, sizeof(hdr), "X-Consul-Token: %s", d->token);
        d->hdrs = curl_slist_append(NULL, hdr);
    }
    d->fixed_dcs = o->ndcs > 0;
    for (uint32_t i = 0; i < o->ndcs; i++) {
        char **p = realloc(d->dcs, (d->ndcs + 1) * sizeof(*p));
        if (!p || !(p[d->ndcs] = strdup(o->dcs[i]))) {
            if (p)
                d->dcs = p;
            goto fail;
        }
        d->dcs = p;
        d->ndcs++;
    }
    d->o.dcs = NULL;
    d->o.ndcs = 0;
    d->o.consul = NULL;
    d->rng = (uint64_t)mono_ms() * 6364136223846793005ull + (uint64_t)getpid();
    d->st = rv_disc_state_new(o->health);
    if (d->st && rv_disc_state_allow_tags(d->st, o->tags_allow, o->ntags_allow) != 0)
        goto fail;
    d->o.tags_allow = NULL;
    d->o.ntags_allow = 0;
    d->max_blocking = d->cap_blocking = fd_cap(o->max_queries ? o->max_queries : rv_disc_max_queries());
    d->max_plain = PLAIN_INFLIGHT;
    uint32_t nsh = (d->max_blocking + PLAIN_INFLIGHT + SHARD_WATCHES - 1) / SHARD_WATCHES;
    d->sh = calloc(nsh, sizeof(*d->sh));
    bool multis = d->sh != NULL;
    for (uint32_t k = 0; multis && k < nsh; k++) {
        shard_t *sh = &d->sh[k];
        sh->d = d;
        sh->idx = k;
        sh->timer_at = -1;
        if (!(sh->multi = curl_multi_init())) {
            multis = false;
            break;
        }
        d->nsh++;
        /* every finished query's connection stays open for the next one (no reconnect per
         * answer): room for all of the shard's watches and then some (assignment is round
         * robin, so a shard holds about its share) */
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, (long)(2 * SHARD_WATCHES + 8));
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
    }
    d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    d->ep = epoll_create1(EPOLL_CLOEXEC);
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!d->base || !d->st || !multis || d->efd < 0 || d->ep < 0 || d->wake_fd < 0 || (d->token && !d->hdrs))
        goto fail;
    struct epoll_event wev = { .events = EPOLLIN, .data.u64 = WAKE_TAG };
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, d->wake_fd, &wev) != 0)
        goto fail;
    atomic_init(&d->healthy, true);
    d->was_healthy = true;
    if (pthread_create(&d->th, NULL, run, d) != 0)
        goto fail;
    d->started = true;
    *notify_fd = d->efd;
    return d;
fail:
    disc_free(d);
    return NULL;
}

rv_disc_view_t *rv_disc_latest(rv_disc_t *d)
{
    pthread_mutex_lock(&d->mu);
    rv_disc_view_t *v = d->latest;
    rv_disc_view_ref(v);
    pthread_mutex_unlock(&d->mu);
    return v;
}

bool rv_disc_healthy(rv_disc_t *d)
{
    return atomic_load(&d->healthy);
}

void rv_disc_stop(rv_disc_t *d)
{
    if (!d)
        return;
    atomic_store(&d->stop, true);
    uint64_t one = 1;
    if (d->wake_fd >= 0 && write(d->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        rv_log_error("consul discovery: wake eventfd: %s", strerror(errno));
    if (d->started)
        pthread_join(d->th, NULL);
    disc_free(d);
}
