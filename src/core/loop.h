/*
 * loop.h - a single-threaded epoll event loop with millisecond timers.
 *
 * One loop per worker thread; nothing here is shared or locked. I/O watchers are intrusive
 * (embed an rv_io_t in the connection), timers are intrusive nodes of a pairing heap, so
 * arming a timer or watching a socket never allocates. The loop reads the monotonic clock
 * once per iteration (rv_loop_now() returns that cached value): deadlines computed during
 * one iteration share the same "now".
 *
 * Timers are re-armed lazily: moving a timer later (the common case - an idle timeout pushed
 * back on every read) only stores the new deadline; the heap is touched when the old deadline
 * comes due. Moving a timer earlier re-inserts it.
 */
#ifndef RV_LOOP_H
#define RV_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

#include "core/common.h"

typedef struct rv_loop_s rv_loop_t;
typedef struct rv_io_s rv_io_t;
typedef struct rv_timer_s rv_timer_t;

/* Called with the epoll event bits (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP). */
typedef void (*rv_io_cb)(rv_loop_t *loop, rv_io_t *io, uint32_t events);
typedef void (*rv_timer_cb)(rv_loop_t *loop, rv_timer_t *t);

struct rv_io_s {
    int fd;
    rv_io_cb cb;
};

struct rv_timer_s {
    int64_t key;            /* position in the heap (ms, monotonic) */
    int64_t when;           /* real deadline; >= key while armed */
    rv_timer_t *child, *next, *prev;  /* pairing heap links; prev is the parent for a first child */
    rv_timer_cb cb;
    bool active;
};

struct rv_loop_s {
    int epfd;
    int64_t now;            /* ms, CLOCK_MONOTONIC, refreshed once per iteration */
    rv_timer_t *heap;       /* root of the pairing heap, NULL when no timer is armed */
    uint32_t ntimers;
    struct epoll_event evs[256];
};

/* Monotonic clock in milliseconds (one clock_gettime). Any thread. */
int64_t rv_clock_ms(void);

/* Create the epoll instance and read the clock. Returns 0 or RV_EIO. */
int rv_loop_init(rv_loop_t *loop);

/* Close the epoll fd. Armed timers and watched fds are the caller's to release. */
void rv_loop_free(rv_loop_t *loop);

/* The cached time of the current iteration (ms, monotonic). */
static inline int64_t rv_loop_now(const rv_loop_t *loop) { return loop->now; }

/*
 * Start watching fd with events (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET ...); cb is called from
 * rv_loop_poll(). io must stay valid until rv_io_del() (or close of fd) and until the end of
 * the current rv_loop_poll() call, because events already fetched may still be delivered -
 * free owners of watchers after rv_loop_poll() returns. Returns 0 or RV_EIO.
 */
int rv_io_add(rv_loop_t *loop, rv_io_t *io, int fd, uint32_t events, rv_io_cb cb);

/* Change the watched events. Returns 0 or RV_EIO. */
int rv_io_mod(rv_loop_t *loop, rv_io_t *io, uint32_t events);

/* Stop watching (needed only when the fd stays open). */
void rv_io_del(rv_loop_t *loop, rv_io_t *io);

/* Prepare a timer (not armed). */
void rv_timer_init(rv_timer_t *t, rv_timer_cb cb);

/* Arm (or re-arm) t to fire at absolute monotonic time when_ms. Never allocates. */
void rv_timer_at(rv_loop_t *loop, rv_timer_t *t, int64_t when_ms);

/* Arm t to fire delay_ms after the loop's current time. */
static inline void rv_timer_after(rv_loop_t *loop, rv_timer_t *t, int64_t delay_ms)
{
    rv_timer_at(loop, t, loop->now + delay_ms);
}

/* Disarm t (no-op when not armed). */
void rv_timer_stop(rv_loop_t *loop, rv_timer_t *t);

/*
 * One iteration: wait for events (at most max_wait_ms; -1 = until the next timer or event,
 * 0 = do not block), refresh the cached time, dispatch I/O callbacks, then fire due timers.
 * Returns the number of I/O events dispatched, or RV_EIO when epoll_wait failed (EINTR is
 * not a failure: 0 is returned).
 */
int rv_loop_poll(rv_loop_t *loop, int max_wait_ms);

#endif
