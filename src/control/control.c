/*
 * control.c - the control thread (the process's main thread).
 *
 * One epoll loop over: a signalfd (SIGHUP re-read, SIGTERM/SIGINT drain and stop), an
 * inotify fd on every directory of the config tree and on the Settings directory, a debounce
 * timer (a burst of file events becomes one rebuild), and the refreshRate timer (full resync,
 * which also re-resolves static hostnames). Every rebuild runs here, off the data path:
 * scan -> build -> router index -> stats ids -> listener check -> publish. A rebuild that
 * fails keeps the previous snapshot; a resource that fails keeps its last accepted version
 * (the store does that) and is reported once per change in the log and always in /status.
 */
#include "control/control.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
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
#include "core/err.h"
#include "core/log.h"
#include "proxy/router.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

/* A burst of inotify events (an editor's write + rename) settles within this many ms. */
#define DEBOUNCE_MS 10

static pthread_mutex_t cur_mu = PTHREAD_MUTEX_INITIALIZER;
static rv_snapshot_t *cur;          /* holds one reference; guarded by cur_mu */
static atomic_bool is_ready;

typedef struct ctl_s {
    const rv_control_opts_t *o;
    rv_settings_t settings;
    rv_store_t *store;
    int ep, sfd, ifd, debounce_fd, refresh_fd;
    bool serving;
} ctl_t;

rv_snapshot_t *rv_control_current(void)
{
    pthread_mutex_lock(&cur_mu);
    rv_snapshot_t *s = cur;
    if (s)
        rv_snapshot_ref(s);
    pthread_mutex_unlock(&cur_mu);
    return s;
}

bool rv_control_ready(void) { return atomic_load(&is_ready); }

static void set_current(rv_snapshot_t *s)
{
    rv_snapshot_ref(s);
    pthread_mutex_lock(&cur_mu);
    rv_snapshot_t *old = cur;
    cur = s;
    pthread_mutex_unlock(&cur_mu);
    if (old)
        rv_snapshot_release(old);
}

static const rv_status_t *find_status(const rv_snapshot_t *s, const rv_status_t *st)
{
    if (!s)
        return NULL;
    for (uint32_t i = 0; i < s->nstatuses; i++) {
        const rv_status_t *o = &s->statuses[i];
        if (rv_str_eq(o->kind, st->kind) && rv_str_eq(o->ns, st->ns) && rv_str_eq(o->name, st->name))
            return o;
    }
    return NULL;
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
    watch_tree(c, c->settings.config_dir, 2);
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
    int changed = rv_store_scan_dir(c->store, &c->settings);
    if (changed < 0) {
        rv_log_error("config directory %s cannot be read; keeping the current config", c->settings.config_dir);
        rv_stats_reload(false);
        return changed;
    }
    if (!changed && !force && c->serving)
        return 0;

    rv_snapshot_t *s = NULL;
    int rc = rv_snapshot_build(c->store, &c->settings, &s);
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
    char err[512];
    if (rv_dataplane_check_listeners(s, err, sizeof err) != 0) {
        rv_log_error("listener problem: %s; keeping the current config", err);
        rv_snapshot_release(s);
        if (old)
            rv_snapshot_release(old);
        rv_stats_reload(false);
        return RV_EIO;
    }
    s->version = old ? old->version + 1 : 1;
    log_status_changes(old, s);
    rv_stats_config_errors(s->nrejected);
    set_current(s);
    if (c->serving)
        rv_dataplane_publish(s);
    rv_stats_reload(true);
    rv_log_info("config version %llu published (%u listeners, %u routes, %u upstreams, %u rejected)",
                (unsigned long long)s->version, s->nlisteners, s->nroutes, s->nclusters, s->nrejected);
    if (old)
        rv_snapshot_release(old);
    rv_snapshot_release(s);
    return 0;
}

/* Re-read the Settings file; when it changed the sources, start from a fresh store. */
static void reload_settings(ctl_t *c)
{
    rv_settings_t ns;
    char err[512];
    int rc = rv_settings_load(c->o->dir, c->o->ns, &ns, err, sizeof err);
    if (rc != 0) {
        rv_log_error("%s; keeping the current settings", err);
        return;
    }
    bool same_dir = strcmp(ns.config_dir, c->settings.config_dir) == 0;
    bool same_rate = ns.refresh_ms == c->settings.refresh_ms;
    rv_settings_free(&c->settings);
    c->settings = ns;
    if (!same_dir) {
        rv_log_info("settings changed the config directory to %s", ns.config_dir);
        rv_store_free(c->store);
        c->store = rv_store_new();
    }
    if (!same_rate)
        arm_timer(c->refresh_fd, c->settings.refresh_ms > 0 ? c->settings.refresh_ms : 60000, true);
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
    if (c->ep < 0 || c->sfd < 0 || c->ifd < 0 || c->debounce_fd < 0 || c->refresh_fd < 0)
        return RV_EIO;
    int fds[] = { c->sfd, c->ifd, c->debounce_fd, c->refresh_fd };
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
    ctl_t c = { .o = o, .ep = -1, .sfd = -1, .ifd = -1, .debounce_fd = -1, .refresh_fd = -1 };
    char err[512];
    int code = 1;

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
    c.store = rv_store_new();
    if (!c.store || setup_fds(&c) != 0) {
        rv_log_error("startup failed: %s", strerror(errno));
        goto out;
    }
    rc = reload(&c, true);
    if (rc != 0) {
        code = rc == RV_ENOTFOUND ? 2 : 1;
        goto out;
    }
    if (rv_admin_start(o->admin_addr, err, sizeof err) != 0) {
        rv_log_error("admin listener: %s", err);
        goto out;
    }
    rv_snapshot_t *first = rv_control_current();
    rv_dataplane_opts_t dopts = { .nworkers = o->workers, .access_log = o->access_log,
                                  .access_log_json = o->access_log_json };
    rc = rv_dataplane_start(&dopts, first);
    rv_snapshot_release(first);
    if (rc != 0) {
        rv_log_error("data plane failed to start: %s", rv_strerror(rc));
        rv_admin_stop();
        goto out;
    }
    c.serving = true;
    atomic_store(&is_ready, true);
    watch_all(&c);
    arm_timer(c.refresh_fd, c.settings.refresh_ms > 0 ? c.settings.refresh_ms : 60000, true);
    rv_log_info("rivet serving config from %s (%d workers, admin %s)", c.settings.config_dir, o->workers,
                o->admin_addr);

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
            int fd = evs[i].data.fd;
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
            }
        }
        if (stop)
            break;
    }
    rv_dataplane_stop(o->drain_ms);
    rv_admin_stop();
    atomic_store(&is_ready, false);
    code = 0;
out:
    pthread_mutex_lock(&cur_mu);
    rv_snapshot_t *s = cur;
    cur = NULL;
    pthread_mutex_unlock(&cur_mu);
    if (s)
        rv_snapshot_release(s);
    if (c.store)
        rv_store_free(c.store);
    rv_settings_free(&c.settings);
    int fds[] = { c.ep, c.sfd, c.ifd, c.debounce_fd, c.refresh_fd };
    for (size_t i = 0; i < RV_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return code;
}
