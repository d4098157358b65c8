/*
 * control.c - the control thread (the process's main thread).
 *
 * One epoll loop over: a signalfd (SIGHUP re-read, SIGTERM/SIGINT drain and stop), an
 * inotify fd on every directory of the config tree and on the Settings directory, a debounce
 * timer (a burst of file events becomes one rebuild), and the refreshRate timer (full resync,
 * which also re-resolves static hostnames). Every rebuild runs here, off the data path:
 * scan -> build (with a bind check of each listener) -> router index -> stats ids -> publish.
 * A rebuild that fails (out of memory, unreadable directory) keeps the previous snapshot; a
 * resource that fails - a decode error, a conflict, a listener that cannot bind - keeps its
 * last accepted version (store + translate) and is reported once per change in the log and
 * always in /status; so does a refused Settings file (the previous settings stay in force).
 *
 * With Consul KV as the config source (Settings consulKvSource, or rivet run --consul), a
 * watcher thread (kvsource.c) does the blocking reads and signals an eventfd in this loop;
 * each new listing is loaded into the store and rebuilt at once (no debounce: Consul hands
 * over a whole consistent listing). Serving starts with the first successful read; when
 * Consul fails later, the last good config keeps serving and the source reports unhealthy.
 *
 * Consul service discovery (Settings consul.serviceDiscovery, rivet run --consul-discovery, or
 * any consul Upstream/destination in the config) runs its own watcher thread (discovery.c),
 * which hands over immutable endpoint views through another eventfd; each new view rebuilds
 * the snapshot from the store and that view (route tables included: see
 * doc/internals/discovery.md). A failing Consul keeps the last view.
 */
#include "control/control.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "config/config.h"
#include "control/consul.h"
#include "control/discovery.h"
#include "control/health.h"
#include "control/kvsource.h"
#include "control/secretsrc.h"
#include "control/vault.h"
#include "core/err.h"
#include "core/log.h"
#include "proxy/router.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

/* How long startup waits for Consul discovery's first complete view. */
#define DISC_WARM_MS 5000

/* A burst of inotify events (an editor's write + rename) settles within this many ms. */
#define DEBOUNCE_MS 10

static pthread_mutex_t cur_mu = PTHREAD_MUTEX_INITIALIZER;
static rv_snapshot_t *cur;          /* holds one reference; guarded by cur_mu */
static rv_endpoint_set_t *cur_es;   /* endpoint set of cur published since, or NULL (cur's own
                                     * endpoints); one reference; guarded by cur_mu */
static atomic_bool is_ready;

typedef struct ctl_s {
    const rv_control_opts_t *o;
    rv_settings_t settings;
    rv_store_t *store;
    int ep, sfd, ifd, debounce_fd, refresh_fd;
    int tls_fd;                 /* 1 s tick: sslFiles of the served config changed on disk? */
    bool serving;
    rv_kvsource_t *kv;          /* Consul KV watcher when settings.consul_kv */
    char *kv_ident;             /* what the watcher was started with (restart when it changes) */
    bool kv_loaded;             /* a first listing went into the store */
    int kv_changed;             /* result of the last rv_store_load_kv, for reload() */
    rv_disc_t *disc;            /* Consul discovery watcher, when wanted */
    int disc_fd;                /* its eventfd (owned by the watcher) */
    char *disc_ident;           /* what it was started with (restart when it changes) */
    rv_disc_view_t *view;       /* the latest endpoint view (one reference), or NULL */
    bool view_changed;          /* a new view arrived since the last build */
    bool settings_moved;        /* the Settings status changed (refused, or fixed): rebuild */
    rv_secrets_t *secrets;      /* every secret source's secrets; attached to store */
    char *secrets_ident;        /* the secret sources it was made for (new table when they change) */
    rv_vault_srcs_t *vault;     /* the Vault sources' watchers (vault.h), or NULL */
    bool vault_moved;           /* a Vault source changed a secret: rebuild (PEM is not in config_json) */
    rv_health_t *health;        /* active health checker, while the served config has healthChecks */
    rv_endpoint_set_t *raw_es;  /* cur's endpoints from the last discovery view before health
                                 * filtering (one reference), or NULL: cur's own */
    bool hc_filtered;           /* cur_es is a health-filtered set (health.h) */
} ctl_t;

/* The running watcher, for /ready and /metrics (admin thread): set before, cleared after its life. */
static _Atomic(rv_disc_t *) disc_running;

bool rv_control_sources_healthy(char *detail, size_t n)
{
    if (detail && n)
        detail[0] = '\0';
    bool ok = rv_kvsource_healthy(detail, n);
    ok &= rv_secretsrc_ready_detail(detail, n);
    rv_disc_t *d = atomic_load(&disc_running);
    if (d && !rv_disc_healthy(d)) {
        size_t used = detail ? strlen(detail) : 0;
        if (detail && used + 1 < n)
            snprintf(detail + used, n - used, "%sconsul discovery: unavailable; serving the last known instances",
                     used ? "\n" : "");
        ok = false;
    }
    return ok;
}

void rv_control_sources_prometheus(FILE *f)
{
    rv_kvsource_prometheus(f);
    rv_secretsrc_prometheus(f);
    rv_vault_prometheus(f);
    rv_health_prometheus(f);
    rv_disc_t *d = atomic_load(&disc_running);
    if (d) /* its own family: samples of one family must be contiguous in the exposition */
        fprintf(f,
                "# HELP rivet_discovery_source_healthy Whether service discovery answered its last read (1) or not (0).\n"
                "# TYPE rivet_discovery_source_healthy gauge\n"
                "rivet_discovery_source_healthy{source=\"consul\"} %d\n",
                rv_disc_healthy(d) ? 1 : 0);
}

rv_snapshot_t *rv_control_current(void)
{
    pthread_mutex_lock(&cur_mu);
    rv_snapshot_t *s = cur;
    if (s)
        rv_snapshot_ref(s);
    pthread_mutex_unlock(&cur_mu);
    return s;
}

bool rv_control_current_pair(rv_snapshot_t **snap, rv_endpoint_set_t **es)
{
    pthread_mutex_lock(&cur_mu);
    *snap = cur;
    *es = cur ? cur_es : NULL;
    if (*snap)
        rv_snapshot_ref(*snap);
    if (*es)
        rv_endpoint_set_ref(*es);
    pthread_mutex_unlock(&cur_mu);
    return *snap != NULL;
}

bool rv_control_ready(void) { return atomic_load(&is_ready); }

static void set_current(rv_snapshot_t *s)
{
    rv_snapshot_ref(s);
    pthread_mutex_lock(&cur_mu);
    rv_snapshot_t *old = cur;
    rv_endpoint_set_t *old_es = cur_es;
    cur = s;
    cur_es = NULL;
    pthread_mutex_unlock(&cur_mu);
    rv_endpoint_set_release(old_es);
    if (old)
        rv_snapshot_release(old);
}

/* Make es (one reference, taken) cur's endpoint set and hand it to the workers. 0, or the
 * publication's error (es released either way). Control thread. */
static int publish_set(rv_endpoint_set_t *es)
{
    int rc = rv_dataplane_publish_endpoints(es);
    if (rc != 0) {
        rv_endpoint_set_release(es);
        return rc;
    }
    pthread_mutex_lock(&cur_mu);
    rv_endpoint_set_t *old = cur_es;
    cur_es = es;
    pthread_mutex_unlock(&cur_mu);
    rv_endpoint_set_release(old);
    return 0;
}

/*
 * Active health checks (health.h): start or stop the checker with the served config's
 * healthChecks, hand it the endpoints to check when they changed (targets), and publish the
 * endpoints workers should use: cur's raw endpoints (c->raw_es, else the snapshot's own) with
 * unhealthy endpoints of checked Upstreams left out. raw_unpublished: c->raw_es was just built
 * and is published here even when nothing is filtered. Returns 0, or the publication's error
 * (the caller rebuilds). Control thread.
 */
static int health_sync(ctl_t *c, bool targets, bool raw_unpublished)
{
    bool flip = !targets && !raw_unpublished;   /* called for a health change alone */
    struct timespec t0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    rv_snapshot_t *snap = rv_control_current();
    if (!snap)
        return RV_EAGAIN;
    bool want = rv_snapshot_has_health_checks(snap);
    if (want && !c->health) {
        c->health = rv_health_start();
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = c->health ? rv_health_fd(c->health) : -1 };
        if (!c->health || epoll_ctl(c->ep, EPOLL_CTL_ADD, ev.data.fd, &ev) < 0) {
            rv_log_error("health check: cannot start the checker; every endpoint gets traffic");
            rv_health_stop(c->health);
            c->health = NULL;
        } else {
            rv_log_info("health check: checker started");
            targets = true;
        }
    } else if (!want && c->health) {
        epoll_ctl(c->ep, EPOLL_CTL_DEL, rv_health_fd(c->health), NULL);
        rv_health_stop(c->health);
        c->health = NULL;
        rv_log_info("health check: no Upstream has healthChecks; checker stopped");
    }
    if (c->health && targets &&
        rv_health_set_targets(c->health, c->raw_es ? c->raw_es->clusters : snap->clusters, snap->nclusters) != 0)
        rv_log_error("health check: out of memory handing over the endpoints; the previous ones stay checked");
    int rc = 0;
    if (c->serving) {
        pthread_mutex_lock(&cur_mu);
        uint64_t version = (cur_es ? cur_es->version : 1) + 1;
        pthread_mutex_unlock(&cur_mu);
        rv_endpoint_set_t *f = NULL;
        bool published = false;
        rc = rv_health_filter(c->health, snap, c->raw_es, version, &f);
        if (rc != 0) {
            rv_log_error("health check: endpoints could not be filtered: %s", rv_strerror(rc));
        } else if (f) {
            rc = publish_set(f);
            c->hc_filtered = published = rc == 0;
        } else if (raw_unpublished || c->hc_filtered) {
            /* nothing left out (any more): the raw endpoints as they are */
            rv_endpoint_set_t *r = c->raw_es;
            if (r)
                rv_endpoint_set_ref(r);
            else if ((r = rv_endpoint_set_initial(snap)))
                r->version = version;
            rc = r ? publish_set(r) : RV_ENOMEM;
            if (rc == 0)
                c->hc_filtered = false;
            published = rc == 0;
        }
        if (flip && published) {
            struct timespec t1;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
            pthread_mutex_lock(&cur_mu);
            unsigned long long nend = cur_es ? (unsigned long long)cur_es->nendpoints : 0;
            pthread_mutex_unlock(&cur_mu);
            rv_log_info("health check: endpoints updated in place, config version %llu kept (endpoint set %llu, "
                        "%llu endpoints served, %lld us control-thread CPU)", (unsigned long long)snap->version,
                        (unsigned long long)version, nend,
                        (long long)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
        }
    }
    rv_snapshot_release(snap);
    return rc;
}

/*
 * A discovery view changed only instances: build an endpoint set for the current snapshot and
 * publish it (health-filtered), leaving route tables, listeners, TLS and statuses as they are.
 * Returns 0 when published (or nothing moved), RV_EAGAIN when the view needs a rebuild
 * (service list, tags or an Upstream's emptiness changed: see rv_endpoint_set_build), another
 * error otherwise (the caller rebuilds). Control thread.
 */
static int publish_view_endpoints(ctl_t *c)
{
    rv_snapshot_t *snap = rv_control_current();
    if (!snap)
        return RV_EAGAIN;
    pthread_mutex_lock(&cur_mu);
    uint64_t prev = cur_es ? cur_es->version : 1;
    pthread_mutex_unlock(&cur_mu);
    struct timespec t0, t1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    rv_endpoint_set_t *es = NULL;
    int rc = rv_endpoint_set_build(snap, c->view, prev, &es);
    if (rc == 0) {
        rv_endpoint_set_release(c->raw_es);
        c->raw_es = es;
        rc = health_sync(c, true, true);
    }
    if (rc == 0) {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
        long long us = (long long)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
        pthread_mutex_lock(&cur_mu);
        unsigned long long nend = cur_es ? (unsigned long long)cur_es->nendpoints : 0;
        pthread_mutex_unlock(&cur_mu);
        rv_log_info("consul discovery: endpoints updated in place, config version %llu kept (endpoint set %llu, "
                    "%llu endpoints, %lld us control-thread CPU)", (unsigned long long)snap->version,
                    (unsigned long long)prev + 1, nend, us);
    }
    rv_snapshot_release(snap);
    return rc;
}

static int status_key_cmp(const rv_status_t *a, const rv_status_t *b)
{
    int r = strcmp(a->kind.ptr, b->kind.ptr);
    if (!r)
        r = strcmp(a->ns.ptr, b->ns.ptr);
    return r ? r : strcmp(a->name.ptr, b->name.ptr);
}

/* Statuses are sorted by kind, namespace, name (translate.c): binary search (thousands of
 * discovered Upstreams make a linear scan per status quadratic). */
static const rv_status_t *find_status(const rv_snapshot_t *s, const rv_status_t *st)
{
    if (!s)
        return NULL;
    uint32_t lo = 0, hi = s->nstatuses;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (status_key_cmp(&s->statuses[mid], st) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->nstatuses && status_key_cmp(&s->statuses[lo], st) == 0 ? &s->statuses[lo] : NULL;
}

/* Log each status that changed since the previous snapshot: once per change, never per request. */
static void log_status_changes(const rv_snapshot_t *old, const rv_snapshot_t *s)
{
    for (uint32_t i = 0; i < s->nstatuses; i++) {
        const rv_status_t *st = &s->statuses[i];
        const rv_status_t *o = find_status(old, st);
        if (o && o->state == st->state && rv_str_eq(o->reason, st->reason))
            continue;
        if (st->state == RV_STATE_REJECTED)
            rv_log_error("%.*s %.*s/%.*s rejected: %.*s", (int)st->kind.len, st->kind.ptr, (int)st->ns.len,
                         st->ns.ptr, (int)st->name.len, st->name.ptr, (int)st->reason.len, st->reason.ptr);
        else if (st->state == RV_STATE_WARNING)
            rv_log_warn("%.*s %.*s/%.*s warning: %.*s", (int)st->kind.len, st->kind.ptr, (int)st->ns.len,
                        st->ns.ptr, (int)st->name.len, st->name.ptr, (int)st->reason.len, st->reason.ptr);
        else if (o)
            rv_log_info("%.*s %.*s/%.*s accepted", (int)st->kind.len, st->kind.ptr, (int)st->ns.len, st->ns.ptr,
                        (int)st->name.len, st->name.ptr);
    }
}

/* Add an inotify watch on every directory of the config tree (idempotent for known ones). */
static void watch_tree(ctl_t *c, const char *dir, int depth)
{
    const uint32_t mask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
                          IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB;
    if (inotify_add_watch(c->ifd, dir, mask | IN_ONLYDIR) < 0)
        return;
    if (depth <= 0)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
            continue;
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            watch_tree(c, p, depth - 1);
    }
    closedir(d);
}

static void watch_all(ctl_t *c)
{
    if (!c->settings.consul_kv && c->settings.config_dir)
        watch_tree(c, c->settings.config_dir, 2);
    /* secret directories: <dir>/<ns>/; one that does not exist yet is seen through its parent */
    for (uint32_t i = 0; i < c->settings.nsecret_srcs; i++) {
        const rv_secret_src_t *src = &c->settings.secret_srcs[i];
        struct stat sb;
        if (src->type != RV_SECRET_SRC_DIRECTORY)
            continue;
        if (stat(src->directory, &sb) == 0) {
            watch_tree(c, src->directory, 1);
        } else {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s", src->directory);
            char *slash = strrchr(p, '/');
            if (slash && slash != p) {
                *slash = '\0';
                watch_tree(c, p, 0);
            }
        }
    }
    if (c->settings.bootstrap_dir)
        watch_tree(c, c->settings.bootstrap_dir, 0);
    if (c->settings.settings_file) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s", c->settings.settings_file);
        char *slash = strrchr(p, '/');
        if (slash) {
            *slash = '\0';
            watch_tree(c, p, 0);
        }
    }
}

static void arm_timer(int fd, int64_t ms, bool periodic)
{
    struct itimerspec its = { 0 };
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = (ms % 1000) * 1000000;
    if (ms > 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    if (periodic)
        its.it_interval = its.it_value;
    timerfd_settime(fd, 0, &its, NULL);
}

/*
 * Scan and, when something changed (or force), build and publish a snapshot.
 * Returns 0 when the served config is current, negative when the build could not be published.
 */
static int reload(ctl_t *c, bool force)
{
    int changed;
    if (c->settings.consul_kv) {
        if (!c->kv_loaded)
            return 0;   /* nothing to build before the first read */
        changed = c->kv_changed;
        c->kv_changed = 0;
    } else {
        changed = rv_store_scan_dir(c->store, &c->settings);
    }
    if (changed < 0) {
        if (c->settings.consul_kv)
            rv_log_error("consul kv listing could not be loaded: %s; keeping the current config", rv_strerror(changed));
        else
            rv_log_error("config directory %s cannot be read; keeping the current config", c->settings.config_dir);
        rv_stats_reload(false);
        return changed;
    }
    /* secrets: a change of any secret rebuilds (TLS contexts are built from them) */
    int sc = rv_secretsrc_scan_dirs(c->secrets, &c->settings, force);
    if (sc < 0) {
        rv_log_error("secrets could not be scanned: %s; keeping the current config", rv_strerror(sc));
        rv_stats_reload(false);
        return sc;
    }
    if (sc > 0)
        changed = 1;
    if (c->vault_moved) {
        changed = 1;    /* a Vault source changed a secret (vault_event) */
        c->vault_moved = false;
    }
    if (c->view_changed && !changed && !c->settings_moved && !force && c->serving &&
        publish_view_endpoints(c) == 0) {
        c->view_changed = false;    /* only instances moved: no re-translation */
        return 0;
    }
    if (c->view_changed) {
        changed = 1;    /* endpoints (and statuses) moved: never skipped as "identical" */
        c->view_changed = false;
    }
    if (c->settings_moved) {
        changed = 1;    /* the Settings status is part of the snapshot */
        c->settings_moved = false;
    }
    if (!changed && !force && c->serving)
        return 0;

    rv_snapshot_t *s = NULL;
    struct timespec cpu0, cpu1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    bool catalog_only;
    bool discover = rv_disc_override_enabled(&catalog_only) || c->settings.consul_discovery;
    int rc = rv_snapshot_build_disc(c->store, &c->settings, c->view, discover, &s);
    if (rc == 0)
        rc = rv_router_build(s);
    if (rc == 0)
        rc = rv_stats_assign(s);
    if (rc != 0) {
        rv_log_error("config build failed: %s; keeping the current config", rv_strerror(rc));
        if (s)
            rv_snapshot_release(s);
        rv_stats_reload(false);
        return rc;
    }
    rv_snapshot_t *old = rv_control_current();
    if (old && !changed && old->config_json_len == s->config_json_len &&
        memcmp(old->config_json, s->config_json, s->config_json_len) == 0) {
        /* periodic resync found nothing new (hostnames resolved the same): keep the current one */
        rv_snapshot_release(old);
        rv_snapshot_release(s);
        return 0;
    }
    /* listeners were checked one by one during the build (rv_config_set_bind_check): a Gateway
     * that cannot bind is Rejected there, and everything else publishes */
    s->version = old ? old->version + 1 : 1;
    log_status_changes(old, s);
    rv_stats_config_errors(s->nrejected);
    set_current(s);
    rv_endpoint_set_release(c->raw_es);     /* a new snapshot starts from its own endpoints */
    c->raw_es = NULL;
    c->hc_filtered = false;
    if (c->serving)
        rv_dataplane_publish(s);
    health_sync(c, true, false);
    rv_stats_reload(true);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    rv_log_info("config version %llu published (%u listeners, %u routes, %u upstreams, %u rejected; %lld us "
                "control-thread CPU)", (unsigned long long)s->version, s->nlisteners, s->nroutes, s->nclusters,
                s->nrejected, (long long)(cpu1.tv_sec - cpu0.tv_sec) * 1000000 + (cpu1.tv_nsec - cpu0.tv_nsec) / 1000);
    if (old)
        rv_snapshot_release(old);
    rv_snapshot_release(s);
    return 0;
}

/* One string naming everything the KV watcher depends on; NULL when KV is off or on OOM. */
static char *kv_ident(const rv_settings_t *s)
{
    if (!s->consul_kv)
        return NULL;
    char *p = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&p, &n);
    if (!f)
        return NULL;
    const char *v[] = { s->consul_address, s->consul_root_key, s->consul_datacenter, s->consul_token,
                        s->consul_basic_auth, s->consul_ca_file, s->consul_ca_path, s->consul_cert_file,
                        s->consul_key_file };
    for (size_t i = 0; i < RV_ARRAY_LEN(v); i++)
        fprintf(f, "%s\n", v[i] ? v[i] : "");
    fprintf(f, "%d %d %lld %lld\n", s->consul_insecure_skip_verify, s->consul_kv_stale, (long long)s->consul_wait_ms,
            (long long)s->refresh_ms);
    fclose(f);
    return p;
}


/*
 * The Consul client settings both Consul users (KV source, discovery) share: Settings'
 * consul{...} fields, then Consul's environment variables for what is unset. with_dc: also the
 * single datacenter (the KV source; discovery takes a list). On failure *cc may hold copies:
 * the caller frees it with rv_consul_cfg_free either way. Returns 0, or -1 with err set.
 */
static int consul_cfg_from_settings(const rv_settings_t *s, bool with_dc, rv_consul_cfg_t *cc, char *err,
                                    size_t errlen)
{
    bool oom = false;
#define DUP(dst, src) do { if ((src) && !((dst) = strdup(src))) oom = true; } while (0)
    DUP(cc->address, s->consul_address);
    if (with_dc)
        DUP(cc->datacenter, s->consul_datacenter);
    DUP(cc->token, s->consul_token);
    DUP(cc->basic_auth, s->consul_basic_auth);
    DUP(cc->ca_file, s->consul_ca_file);
    DUP(cc->ca_path, s->consul_ca_path);
    DUP(cc->cert_file, s->consul_cert_file);
    DUP(cc->key_file, s->consul_key_file);
#undef DUP
    cc->insecure_skip_verify = s->consul_insecure_skip_verify;
    if (oom) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return rv_consul_cfg_from_env(cc, err, errlen) != 0 ? -1 : 0;
}

/* Stop the KV watcher (if any) and start one for the current settings (if KV). 0 or -1. */
static int kv_restart(ctl_t *c)
{
    if (c->kv) {
        epoll_ctl(c->ep, EPOLL_CTL_DEL, rv_kvsource_fd(c->kv), NULL);
        rv_kvsource_stop(c->kv);
        c->kv = NULL;
    }
    free(c->kv_ident);
    c->kv_ident = NULL;
    c->kv_loaded = false;
    c->kv_changed = 0;
    const rv_settings_t *s = &c->settings;
    if (!s->consul_kv)
        return 0;
    rv_consul_cfg_t cc = { 0 };
    char err[300];
    int rc = -1;
    cc.stale = s->consul_kv_stale;
    if (consul_cfg_from_settings(s, true, &cc, err, sizeof err) != 0) {
        rv_log_error("consul kv: %s", err);
        goto out;
    }
    int64_t wait = s->consul_wait_ms > 0 ? s->consul_wait_ms : s->refresh_ms;
    if (wait <= 0 || wait > 300000)
        wait = 300000;
    rv_kvsource_opts_t ko = { .consul = &cc, .root = s->consul_root_key ? s->consul_root_key : RV_CONSUL_DEFAULT_ROOT,
                              .wait_ms = (int)wait };
    c->kv = rv_kvsource_start(&ko);
    if (!c->kv) {
        rv_log_error("consul kv: cannot start the watcher: %s", strerror(errno));
        goto out;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = rv_kvsource_fd(c->kv) };
    if (epoll_ctl(c->ep, EPOLL_CTL_ADD, ev.data.fd, &ev) < 0) {
        rv_log_error("consul kv: epoll: %s", strerror(errno));
        rv_kvsource_stop(c->kv);
        c->kv = NULL;
        goto out;
    }
    c->kv_ident = kv_ident(s);
    rv_log_info("config source: consul kv %s%s at %s%s", ko.root, "/", cc.address,
                cc.stale ? " (stale reads)" : "");
    rc = 0;
out:
    rv_consul_cfg_free(&cc);
    return rc;
}

/* The watcher signalled: load its latest listing (if any) into the store. */
static void kv_event(ctl_t *c)
{
    rv_kv_listing_t *l;
    if (!c->kv || rv_kvsource_take(c->kv, &l) != 1)
        return;     /* a health change only: /ready and /metrics read it themselves */
    int rc = rv_store_load_kv(c->store, &c->settings,
                              c->settings.consul_root_key ? c->settings.consul_root_key : RV_CONSUL_DEFAULT_ROOT,
                              l->pairs, l->n);
    rv_kv_listing_free(l);
    c->kv_changed = rc;
    if (!c->kv_loaded && rc >= 0)
        c->kv_changed = 1;  /* the first listing always builds, even an empty one */
    if (rc >= 0)
        c->kv_loaded = true;
}

/* What the discovery watcher depends on; NULL when it is not wanted (or OOM). */
static char *disc_ident(const ctl_t *c)
{
    const rv_settings_t *s = &c->settings;
    bool catalog_only = false;
    bool want = rv_disc_override_enabled(&catalog_only) || s->consul_discovery;
    catalog_only |= s->consul_disc_catalog_only;
    rv_snapshot_t *cur_snap = rv_control_current();
    if (cur_snap) {
        want |= rv_snapshot_uses_consul(cur_snap);
        rv_snapshot_release(cur_snap);
    }
    if (!want)
        return NULL;
    char *p = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&p, &n);
    if (!f)
        return NULL;
    const char *v[] = { s->consul_address, s->consul_token, s->consul_basic_auth, s->consul_ca_file,
                        s->consul_ca_path, s->consul_cert_file, s->consul_key_file };
    for (size_t i = 0; i < RV_ARRAY_LEN(v); i++)
        fprintf(f, "%s\n", v[i] ? v[i] : "");
    for (uint32_t i = 0; i < s->nconsul_dcs; i++)
        fprintf(f, "dc=%s\n", s->consul_dcs[i]);
    for (uint32_t i = 0; i < s->nconsul_tags_allow; i++)
        fprintf(f, "allow=%s\n", s->consul_tags_allow[i]);
    fprintf(f, "%d %d %d %lld\n", s->consul_insecure_skip_verify, s->consul_consistency, catalog_only,
            (long long)s->consul_wait_ms);
    fclose(f);
    return p;
}

static void disc_stop(ctl_t *c)
{
    if (!c->disc)
        return;
    epoll_ctl(c->ep, EPOLL_CTL_DEL, c->disc_fd, NULL);
    atomic_store(&disc_running, NULL);
    rv_disc_stop(c->disc);
    c->disc = NULL;
    c->disc_fd = -1;
}

/*
 * Start, restart or stop the discovery watcher so that it matches the settings and the
 * current config. The last view is kept across a restart (a new watcher's first view
 * replaces it), and dropped when discovery is no longer wanted.
 */
static void disc_sync(ctl_t *c)
{
    char *ident = disc_ident(c);
    if (ident && c->disc_ident && !strcmp(ident, c->disc_ident) && c->disc) {
        free(ident);
        return;
    }
    if (!ident && !c->disc_ident)
        return;
    disc_stop(c);
    free(c->disc_ident);
    c->disc_ident = ident;
    if (!ident) {
        if (c->view) {
            rv_disc_view_release(c->view);
            c->view = NULL;
            c->view_changed = true;
        }
        rv_log_info("consul discovery: stopped");
        return;
    }
    const rv_settings_t *s = &c->settings;
    rv_consul_cfg_t cc = { 0 };
    char err[300];
    /* no single datacenter: discovery reads the dataCenters it is given */
    if (consul_cfg_from_settings(s, false, &cc, err, sizeof err) != 0) {
        rv_log_error("consul discovery: %s", err);
        goto out;
    }
    bool catalog_only = false;
    rv_disc_override_enabled(&catalog_only);
    catalog_only |= s->consul_disc_catalog_only;
    rv_disc_opts_t o = { .consul = &cc, .dcs = s->consul_dcs, .ndcs = s->nconsul_dcs, .health = !catalog_only,
                         .stale = s->consul_consistency == RV_CONSUL_STALE,
                         .tags_allow = s->consul_tags_allow, .ntags_allow = s->nconsul_tags_allow,
                         .wait_ms = (int)s->consul_wait_ms /* consul.waitTime; 0: the default */ };
    c->disc = rv_disc_start(&o, &c->disc_fd);
    if (!c->disc) {
        rv_log_error("consul discovery: cannot start the watcher");
        goto out;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = c->disc_fd };
    if (epoll_ctl(c->ep, EPOLL_CTL_ADD, c->disc_fd, &ev) < 0) {
        rv_log_error("consul discovery: epoll: %s", strerror(errno));
        rv_disc_stop(c->disc);
        c->disc = NULL;
        goto out;
    }
    atomic_store(&disc_running, c->disc);
    rv_log_info("consul discovery: watching the catalog at %s (%s)", cc.address ? cc.address : "127.0.0.1:8500",
                catalog_only ? "every registered instance gets traffic" : "instances passing their health checks");
out:
    rv_consul_cfg_free(&cc);
}

static bool disc_event(ctl_t *c);

/*
 * Before the first publication: wait up to ms for the watcher's first complete view (every
 * service read once), so discovered Upstreams do not start out empty. Consul being down only
 * delays startup by ms; the config then serves and endpoints arrive when Consul answers.
 */
static void disc_warm(ctl_t *c, int ms)
{
    if (!c->disc)
        return;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0) {
            rv_log_warn("consul discovery: the catalog was not read within %d ms; starting without it", ms);
            return;
        }
        struct pollfd p = { .fd = c->disc_fd, .events = POLLIN };
        if (poll(&p, 1, (int)left) > 0)
            disc_event(c);
        if (c->view && c->view->synced)
            return;
    }
}

/* The watcher published a view: take the latest (intermediate ones are skipped). */
static bool disc_event(ctl_t *c)
{
    uint64_t n;
    if (read(c->disc_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        return false;
    rv_disc_view_t *v = rv_disc_latest(c->disc);
    if (!v || v == c->view) {
        rv_disc_view_release(v);
        return false;
    }
    rv_disc_view_release(c->view);
    c->view = v;
    c->view_changed = true;
    rv_log_debug("consul discovery: view %llu (%u services, %llu instances, %llu passing)",
                 (unsigned long long)v->seq, v->nsvcs, (unsigned long long)v->ninsts,
                 (unsigned long long)v->npassing);
    return true;
}

/* What the secret table depends on: the list of sources (type, directory, Vault client). */
static char *secrets_ident(const rv_settings_t *s)
{
    /* a digest, not the text: the Vault token is part of it and must not linger in memory */
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;
    char *out = NULL;
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto done;
    for (uint32_t i = 0; i < s->nsecret_srcs; i++) {
        const rv_secret_src_t *src = &s->secret_srcs[i];
        const rv_vault_cfg_t *v = &src->vault;
        const char *fields[] = { src->directory, v->address, v->path_prefix, v->root_key, v->ca_cert, v->ca_path,
                                 v->client_cert, v->client_key, v->tls_server_name, v->access_token };
        unsigned char head[3] = { (unsigned char)src->type, (unsigned char)v->insecure, 0xff };
        EVP_DigestUpdate(md, head, sizeof(head));
        for (size_t k = 0; k < RV_ARRAY_LEN(fields); k++)
            EVP_DigestUpdate(md, fields[k] ? fields[k] : "", fields[k] ? strlen(fields[k]) + 1 : 1);
    }
    if (EVP_DigestFinal_ex(md, h, &hl) != 1 || !(out = malloc(2 * hl + 1)))
        goto done;
    for (unsigned int i = 0; i < hl; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
done:
    EVP_MD_CTX_free(md);
    return out;
}

/*
 * Make the secret table match the settings' sources: when they changed (or on the first
 * call), a new empty table attached to the store (the next reload scans it and rebuilds), the
 * sources registered for /ready and /metrics, and each Vault source started. 0 or RV_ENOMEM.
 */
static int secrets_sync(ctl_t *c)
{
    char *ident = secrets_ident(&c->settings);
    if (!ident)
        return RV_ENOMEM;
    if (c->secrets && c->secrets_ident && !strcmp(ident, c->secrets_ident)) {
        free(ident);
        /* same sources; the watched namespaces may have moved (a rebuild when they did) */
        int w = rv_secrets_watch(c->secrets, c->settings.watch_ns, c->settings.nwatch_ns);
        if (w > 0)
            c->settings_moved = true;
        return w < 0 ? w : 0;
    }
    rv_secrets_t *t = rv_secrets_new();
    if (!t || rv_secrets_watch(t, c->settings.watch_ns, c->settings.nwatch_ns) < 0) {
        rv_secrets_free(t);
        free(ident);
        return RV_ENOMEM;
    }
    rv_store_attach_secrets(c->store, t);
    rv_secrets_free(c->secrets);
    c->secrets = t;
    free(c->secrets_ident);
    c->secrets_ident = ident;
    c->settings_moved = true;   /* every secretRef resolves anew: rebuild */
    rv_secretsrc_configure(&c->settings);
    for (uint32_t i = 0; i < c->settings.nsecret_srcs; i++) {
        const rv_secret_src_t *src = &c->settings.secret_srcs[i];
        if (src->type == RV_SECRET_SRC_DIRECTORY)
            rv_log_info("secret source %u: directory %s", i, src->directory);
    }
    /* one watcher per Vault source (vault.h), feeding the new table from its first poll */
    rv_vault_srcs_stop(c->vault);
    c->vault = rv_vault_srcs_start(&c->settings, c->ep, c->secrets);
    /* the next build resolves Vault secretRefs (the first config, or the one after a change of
     * sources): wait, bounded, for the first polls rather than reject what needs them */
    rv_vault_srcs_warm(c->vault, c->secrets, DISC_WARM_MS);
    return c->vault ? 0 : RV_ENOMEM;
}

/*
 * Re-read the Settings file; when it changed the sources, start from a fresh store. A file
 * that is refused leaves the current settings in force and puts the reason in their
 * `rejected`, which the next build shows as the Settings status (Rejected); that status
 * change is what gets logged, once per change.
 */
/* The upstreams' circuit breaker defaults (Settings.gloo.circuitBreakers) of a and b agree. */
static bool cb_defaults_same(const rv_settings_t *a, const rv_settings_t *b)
{
    return a->has_cb_max_connections == b->has_cb_max_connections && a->cb_max_connections == b->cb_max_connections &&
           a->has_cb_max_pending == b->has_cb_max_pending && a->cb_max_pending == b->cb_max_pending &&
           a->has_cb_max_requests == b->has_cb_max_requests && a->cb_max_requests == b->cb_max_requests &&
           a->has_cb_max_retries == b->has_cb_max_retries && a->cb_max_retries == b->cb_max_retries;
}

static void reload_settings(ctl_t *c)
{
    rv_settings_t ns;
    char err[512];
    int rc = rv_settings_load(c->o->dir, c->o->ns, &ns, err, sizeof err);
    if (rc != 0) {
        /* "Settings <ns>/default: <problem>": the status already names the resource */
        const char *why = err;
        if (!strncmp(why, "Settings ", 9) && strstr(why, ": "))
            why = strstr(why, ": ") + 2;
        char reason[640];
        snprintf(reason, sizeof reason, "%s (the previous settings stay in force)", why);
        if (!c->settings.rejected || strcmp(c->settings.rejected, reason) != 0) {
            free(c->settings.rejected);
            c->settings.rejected = strdup(reason);
            if (!c->settings.rejected)
                rv_log_error("%s; keeping the current settings", err);
            c->settings_moved = true;
        }
        return;
    }
    if (c->settings.rejected)
        c->settings_moved = true;   /* fixed: the status goes back to Accepted */
    bool same_dir = ns.consul_kv == c->settings.consul_kv &&
                    (ns.consul_kv || (ns.config_dir && c->settings.config_dir &&
                                      strcmp(ns.config_dir, c->settings.config_dir) == 0));
    char *ident = kv_ident(&ns);
    bool same_kv = (!ident && !c->kv_ident) || (ident && c->kv_ident && !strcmp(ident, c->kv_ident));
    free(ident);
    bool same_rate = ns.refresh_ms == c->settings.refresh_ms;
    if (!cb_defaults_same(&ns, &c->settings))
        c->settings_moved = true;   /* every cluster's limits follow: rebuild */
    rv_settings_free(&c->settings);
    c->settings = ns;
    if (!same_dir || !same_kv) {
        if (ns.consul_kv)
            rv_log_info("settings changed the config source to consul kv %s/", ns.consul_root_key);
        else
            rv_log_info("settings changed the config directory to %s", ns.config_dir);
        rv_store_free(c->store);
        c->store = rv_store_new();
        rv_store_attach_secrets(c->store, c->secrets);
        if (!same_kv)
            kv_restart(c);  /* the current config keeps serving until the new source's first read */
    }
    if (!same_rate) {
        arm_timer(c->refresh_fd, c->settings.refresh_ms > 0 ? c->settings.refresh_ms : 60000, true);
        rv_vault_srcs_set_refresh(c->vault, c->settings.refresh_ms);
    }
    secrets_sync(c);
    watch_all(c);
}

static int setup_fds(ctl_t *c)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    c->ep = epoll_create1(EPOLL_CLOEXEC);
    c->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    c->ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    c->debounce_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    c->refresh_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    c->tls_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (c->ep < 0 || c->sfd < 0 || c->ifd < 0 || c->debounce_fd < 0 || c->refresh_fd < 0 || c->tls_fd < 0)
        return RV_EIO;
    int fds[] = { c->sfd, c->ifd, c->debounce_fd, c->refresh_fd, c->tls_fd };
    arm_timer(c->tls_fd, 1000, true);
    for (size_t i = 0; i < RV_ARRAY_LEN(fds); i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[i] };
        if (epoll_ctl(c->ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
            return RV_EIO;
    }
    return 0;
}

static void drain_fd(int fd)
{
    char buf[4096] __attribute__((aligned(8)));
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

int rv_control_run(const rv_control_opts_t *o)
{
    ctl_t c = { .o = o, .ep = -1, .sfd = -1, .ifd = -1, .debounce_fd = -1, .refresh_fd = -1, .tls_fd = -1,
                .disc_fd = -1 };
    char err[512];
    int code = 1;
    bool failed = false;

    /* Signals are taken by the signalfd: block them before any thread starts so all inherit it. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = rv_settings_load(o->dir, o->ns, &c.settings, err, sizeof err);
    if (rc != 0) {
        rv_log_error("%s", err);
        return rc == RV_ENOTFOUND ? 2 : 1;
    }
    /* a Gateway whose listener cannot be bound is Rejected by the build, the rest serves */
    rv_config_set_bind_check(rv_dataplane_check_listener);
    c.store = rv_store_new();
    if (!c.store || setup_fds(&c) != 0 || secrets_sync(&c) != 0) {
        rv_log_error("startup failed: %s", strerror(errno));
        goto out;
    }
    rv_dataplane_opts_t dopts = { .nworkers = o->workers, .access_log = o->access_log,
                                  .access_log_json = o->access_log_json };
    disc_sync(&c);
    disc_warm(&c, DISC_WARM_MS);
    if (c.settings.consul_kv) {
        /* admin first (/ready says what we wait for); serving starts with the first read */
        if (kv_restart(&c) != 0)
            goto out;
        if (rv_admin_start(o->admin_addr, err, sizeof err) != 0) {
            rv_log_error("admin listener: %s", err);
            goto out;
        }
    } else {
        rc = reload(&c, true);
        if (rc != 0) {
            code = rc == RV_ENOTFOUND ? 2 : 1;
            goto out;
        }
        if (!c.disc && (disc_sync(&c), c.disc)) {
            /* the config itself uses consul: give the catalog a moment before serving */
            disc_warm(&c, DISC_WARM_MS);
            reload(&c, true);
        }
        if (rv_admin_start(o->admin_addr, err, sizeof err) != 0) {
            rv_log_error("admin listener: %s", err);
            goto out;
        }
        rv_snapshot_t *first = rv_control_current();
        rc = rv_dataplane_start(&dopts, first);
        rv_snapshot_release(first);
        if (rc != 0) {
            rv_log_error("data plane failed to start: %s", rv_strerror(rc));
            rv_admin_stop();
            goto out;
        }
        c.serving = true;
        health_sync(&c, false, false);
        atomic_store(&is_ready, true);
        rv_log_info("rivet serving config from %s (%d workers, admin %s)", c.settings.config_dir, o->workers,
                    o->admin_addr);
    }
    watch_all(&c);
    arm_timer(c.refresh_fd, c.settings.refresh_ms > 0 ? c.settings.refresh_ms : 60000, true);

    for (;;) {
        struct epoll_event evs[8];
        int n = epoll_wait(c.ep, evs, 8, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rv_log_error("epoll_wait: %s", strerror(errno));
            break;
        }
        bool stop = false;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd, vc;
            if (fd == c.sfd) {
                struct signalfd_siginfo si;
                while (read(c.sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                    if (si.ssi_signo == SIGHUP) {
                        rv_log_info("SIGHUP: re-reading config");
                        reload_settings(&c);
                        reload(&c, true);
                    } else {
                        rv_log_info("%s: draining (deadline %d ms)", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT",
                                    o->drain_ms);
                        stop = true;
                    }
                }
            } else if (fd == c.ifd) {
                drain_fd(c.ifd);
                arm_timer(c.debounce_fd, DEBOUNCE_MS, false);
            } else if (fd == c.debounce_fd) {
                drain_fd(c.debounce_fd);
                reload_settings(&c); /* a Settings file may have appeared, changed or gone */
                reload(&c, false);
                watch_all(&c);
            } else if (fd == c.refresh_fd) {
                drain_fd(c.refresh_fd);
                reload(&c, true);
                watch_all(&c);
            } else if (fd == c.tls_fd) {
                /* a rotated certificate/key file (sslFiles) reaches new connections within a
                 * second; established ones keep the contexts they hold */
                drain_fd(c.tls_fd);
                rv_snapshot_t *now = rv_control_current();
                bool moved = now && rv_snapshot_tls_files_changed(now);
                rv_snapshot_release(now);
                if (moved)
                    reload(&c, true);
            } else if (c.kv && fd == rv_kvsource_fd(c.kv)) {
                kv_event(&c);
                if (c.kv_changed || !c.serving)
                    reload(&c, false);
                if (!c.serving && c.kv_loaded) {
                    /* first read from Consul: start serving */
                    rv_snapshot_t *first = rv_control_current();
                    if (!first) {
                        rv_log_error("consul kv: the first config could not be built");
                        stop = true;
                        failed = true;
                        continue;
                    }
                    rc = rv_dataplane_start(&dopts, first);
                    rv_snapshot_release(first);
                    if (rc != 0) {
                        rv_log_error("data plane failed to start: %s", rv_strerror(rc));
                        stop = true;
                        failed = true;
                        continue;
                    }
                    c.serving = true;
                    health_sync(&c, false, false);
                    atomic_store(&is_ready, true);
                    rv_log_info("rivet serving config from consul kv %s/ (%d workers, admin %s)",
                                c.settings.consul_root_key, o->workers, o->admin_addr);
                }
            } else if (c.vault && (vc = rv_vault_srcs_event(c.vault, fd, c.secrets)) >= 0) {
                if (vc > 0) {
                    c.vault_moved = true;
                    reload(&c, false);
                }
            } else if (c.disc && fd == c.disc_fd) {
                if (disc_event(&c))
                    reload(&c, false);
            } else if (c.health && fd == rv_health_fd(c.health)) {
                rv_health_clear(c.health);  /* an endpoint's health flipped */
                if (health_sync(&c, false, false) != 0)
                    reload(&c, true);
            }
        }
        if (stop)
            break;
        disc_sync(&c);  /* the settings or the config may have turned discovery on or off */
    }
    disc_stop(&c);
    rv_health_stop(c.health);
    c.health = NULL;
    rv_kvsource_stop(c.kv);
    c.kv = NULL;
    rv_vault_srcs_stop(c.vault);
    c.vault = NULL;
    if (c.serving)
        rv_dataplane_stop(o->drain_ms);
    rv_admin_stop();
    atomic_store(&is_ready, false);
    code = failed ? 1 : 0;
out:
    disc_stop(&c);
    rv_health_stop(c.health);
    rv_endpoint_set_release(c.raw_es);
    free(c.disc_ident);
    rv_disc_view_release(c.view);
    rv_kvsource_stop(c.kv);
    free(c.kv_ident);
    rv_vault_srcs_stop(c.vault);
    pthread_mutex_lock(&cur_mu);
    rv_snapshot_t *s = cur;
    rv_endpoint_set_t *ses = cur_es;
    cur = NULL;
    cur_es = NULL;
    pthread_mutex_unlock(&cur_mu);
    rv_endpoint_set_release(ses);
    if (s)
        rv_snapshot_release(s);
    if (c.store)
        rv_store_free(c.store);
    rv_secrets_free(c.secrets);     /* after the snapshots and the store: wipes every key */
    free(c.secrets_ident);
    rv_secretsrc_configure(NULL);
    rv_config_set_bind_check(NULL);
    rv_settings_free(&c.settings);
    int fds[] = { c.ep, c.sfd, c.ifd, c.debounce_fd, c.refresh_fd, c.tls_fd };
    for (size_t i = 0; i < RV_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return code;
}
