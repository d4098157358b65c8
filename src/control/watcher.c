/*
 * watcher.c - the watcher-thread plumbing of watcher.h (kvsource.c, vault.c).
 */
#include "control/watcher.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

void rv_watcher_init(rv_watcher_t *w, void (*free_latest)(void *))
{
    w->efd = -1;
    w->free_latest = free_latest;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
}

uint64_t rv_watcher_seed(const void *self)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)self;
}

int rv_watcher_run(rv_watcher_t *w, void *(*fn)(void *), void *arg)
{
    if (pthread_create(&w->thread, NULL, fn, arg) != 0)
        return -1;
    w->started = true;
    return 0;
}

bool rv_watcher_nap(rv_watcher_t *w, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->stop && !w->kick && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT) {
    }
    bool stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    return stop;
}

bool rv_watcher_stopping(rv_watcher_t *w)
{
    pthread_mutex_lock(&w->mu);
    bool s = w->stop;
    pthread_mutex_unlock(&w->mu);
    return s;
}

void rv_watcher_wake(rv_watcher_t *w)
{
    uint64_t one = 1;
    ssize_t n = write(w->efd, &one, sizeof(one));
    (void)n;    /* EAGAIN: the counter is already non-zero, the control thread will wake */
}

void rv_watcher_hand_over(rv_watcher_t *w, void *l)
{
    pthread_mutex_lock(&w->mu);
    void *old = w->latest;
    w->latest = l;
    pthread_mutex_unlock(&w->mu);
    if (old)
        w->free_latest(old);
    rv_watcher_wake(w);
}

int rv_watcher_take(rv_watcher_t *w, void **out)
{
    uint64_t v;
    ssize_t r = read(w->efd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&w->mu);
    *out = w->latest;
    w->latest = NULL;
    pthread_mutex_unlock(&w->mu);
    return *out ? 1 : 0;
}

void rv_watcher_stop(rv_watcher_t *w, void (*cancel)(void *), void *arg)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    cancel(arg);
    pthread_join(w->thread, NULL);
}

void rv_watcher_destroy(rv_watcher_t *w)
{
    if (w->latest)
        w->free_latest(w->latest);
    w->latest = NULL;
    if (w->efd >= 0)
        close(w->efd);
    w->efd = -1;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}
