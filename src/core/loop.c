/*
 * loop.c - epoll loop and pairing-heap timers (see loop.h for the contract).
 *
 * Why a pairing heap: it is intrusive (three pointers per timer, no array to grow, so arming
 * a timer cannot fail), insert is O(1), and removing the minimum is O(log n) amortised - the
 * pattern of a proxy, where most timers are re-armed or stopped long before they fire.
 */
#include "core/loop.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"

int64_t rv_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rv_loop_init(rv_loop_t *loop)
{
    memset(loop, 0, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        return RV_EIO;
    loop->now = rv_clock_ms();
    return 0;
}

void rv_loop_free(rv_loop_t *loop)
{
    if (loop->epfd >= 0)
        close(loop->epfd);
    loop->epfd = -1;
    loop->heap = NULL;
}

int rv_io_add(rv_loop_t *loop, rv_io_t *io, int fd, uint32_t events, rv_io_cb cb)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    io->fd = fd;
    io->cb = cb;
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : RV_EIO;
}

int rv_io_mod(rv_loop_t *loop, rv_io_t *io, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0 ? 0 : RV_EIO;
}

void rv_io_del(rv_loop_t *loop, rv_io_t *io)
{
    struct epoll_event ev = { 0 };
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, &ev);
}

/* ---- pairing heap -------------------------------------------------------------------- */

void rv_timer_init(rv_timer_t *t, rv_timer_cb cb)
{
    memset(t, 0, sizeof(*t));
    t->cb = cb;
}

/* Link two roots; returns the new root. Both must be detached roots (no siblings). */
static rv_timer_t *meld(rv_timer_t *a, rv_timer_t *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (b->key < a->key) {
        rv_timer_t *x = a;
        a = b;
        b = x;
    }
    b->next = a->child;
    if (a->child)
        a->child->prev = b;
    b->prev = a;
    a->child = b;
    a->next = NULL;
    a->prev = NULL;
    return a;
}

/* Two-pass merge of a sibling list starting at first; returns the resulting root. */
static rv_timer_t *merge_pairs(rv_timer_t *first)
{
    rv_timer_t *acc = NULL;     /* pairs melded left to right, chained through ->next */
    while (first) {
        rv_timer_t *a = first, *b = a->next;
        first = b ? b->next : NULL;
        a->next = a->prev = NULL;
        if (b)
            b->next = b->prev = NULL;
        rv_timer_t *m = meld(a, b);
        m->next = acc;
        acc = m;
    }
    rv_timer_t *root = NULL;
    while (acc) {
        rv_timer_t *n = acc->next;
        acc->next = NULL;
        root = meld(root, acc);
        acc = n;
    }
    return root;
}

static void heap_remove(rv_loop_t *loop, rv_timer_t *t)
{
    if (t == loop->heap) {
        loop->heap = merge_pairs(t->child);
    } else {
        /* unlink t from its sibling list; prev is the parent when t is the first child */
        if (t->prev->child == t)
            t->prev->child = t->next;
        else
            t->prev->next = t->next;
        if (t->next)
            t->next->prev = t->prev;
        rv_timer_t *sub = merge_pairs(t->child);
        loop->heap = meld(loop->heap, sub);
    }
    t->child = t->next = t->prev = NULL;
}

void rv_timer_at(rv_loop_t *loop, rv_timer_t *t, int64_t when_ms)
{
    if (t->active) {
        if (t->key <= when_ms) {
            t->when = when_ms;  /* lazy: fixed up when the old key comes due */
            return;
        }
        heap_remove(loop, t);
        loop->ntimers--;
    }
    t->key = t->when = when_ms;
    t->child = t->next = t->prev = NULL;
    t->active = true;
    loop->heap = meld(loop->heap, t);
    loop->ntimers++;
}

void rv_timer_stop(rv_loop_t *loop, rv_timer_t *t)
{
    if (!t->active)
        return;
    heap_remove(loop, t);
    loop->ntimers--;
    t->active = false;
}

static void run_timers(rv_loop_t *loop)
{
    /* bounded so that a callback re-arming at "now" cannot spin forever */
    for (uint32_t budget = loop->ntimers + 64; budget && loop->heap && loop->heap->key <= loop->now;
         budget--) {
        rv_timer_t *t = loop->heap;
        heap_remove(loop, t);
        if (t->when > loop->now) {
            t->key = t->when;
            loop->heap = meld(loop->heap, t);
            continue;
        }
        loop->ntimers--;
        t->active = false;
        t->cb(loop, t);
    }
}

int rv_loop_poll(rv_loop_t *loop, int max_wait_ms)
{
    int wait = max_wait_ms;
    if (loop->heap) {
        int64_t d = loop->heap->key - loop->now;
        if (d < 0)
            d = 0;
        if (d > 3600000)
            d = 3600000;
        if (wait < 0 || d < wait)
            wait = (int)d;
    }
    int n = epoll_wait(loop->epfd, loop->evs, (int)RV_ARRAY_LEN(loop->evs), wait);
    int saved = errno;
    loop->now = rv_clock_ms();
    if (n < 0) {
        if (saved != EINTR)
            return RV_EIO;
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        rv_io_t *io = loop->evs[i].data.ptr;
        io->cb(loop, io, loop->evs[i].events);
    }
    run_timers(loop);
    return n;
}
