/*
 * watcher.h - the thread plumbing shared by the Consul KV watcher (kvsource.c) and the Vault
 * secret watcher (vault.c): a thread that sleeps between reads (woken early on stop or a kick),
 * hands its newest result to the control thread through a one-slot "latest" and an eventfd, and
 * is stopped by setting a flag, cancelling its request in flight and joining it.
 *
 * What a watcher reads, when and what it logs stay in its own file.
 */
#ifndef RV_CONTROL_WATCHER_H
#define RV_CONTROL_WATCHER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct rv_watcher_s {
    int efd;                    /* eventfd the control thread polls; -1 until the owner opens it */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;         /* the owner may guard more of its own state with it */
    pthread_cond_t cv;          /* wakes a napping thread on stop or kick (CLOCK_MONOTONIC) */
    bool stop;                  /* guarded by mu */
    bool kick;                  /* guarded by mu: end the current nap early; the owner clears it */
    void *latest;               /* guarded by mu: handed over, not yet taken */
    void (*free_latest)(void *);
} rv_watcher_t;

/* Initialise w (efd -1, mutex, monotonic condition); free_latest frees a handed-over result. */
void rv_watcher_init(rv_watcher_t *w, void (*free_latest)(void *));

/* A seed for a per-watcher xorshift generator (time, pid and self), never 0 in practice. */
uint64_t rv_watcher_seed(const void *self);

/* Start the thread (fn(arg)). 0, or -1 when it could not be created. */
int rv_watcher_run(rv_watcher_t *w, void *(*fn)(void *), void *arg);

/* Sleep up to ms (< 0 counts as 0), or until stop or kick. Returns true when stopping. */
bool rv_watcher_nap(rv_watcher_t *w, int64_t ms);

/* Whether stop was asked. */
bool rv_watcher_stopping(rv_watcher_t *w);

/* Wake the control thread (the eventfd), with nothing new to take. */
void rv_watcher_wake(rv_watcher_t *w);

/* Replace latest with l (freeing an untaken one) and wake the control thread. */
void rv_watcher_hand_over(rv_watcher_t *w, void *l);

/* Control thread: clear the eventfd and take latest (NULL when none). 1 when taken, else 0. */
int rv_watcher_take(rv_watcher_t *w, void **out);

/* When started: set stop, wake the thread, call cancel(arg) to end its request in flight, join. */
void rv_watcher_stop(rv_watcher_t *w, void (*cancel)(void *), void *arg);

/* Free what rv_watcher_init and the hand-over left: latest, the eventfd, mutex and condition. */
void rv_watcher_destroy(rv_watcher_t *w);

#endif
