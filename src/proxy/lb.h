/*
 * lb.h - load balancing over a cluster's endpoints, and weighted destination choice.
 *
 * State is per worker (no sharing, no atomics); the worker keeps one rv_lb_state_t per
 * cluster of the snapshot it serves.
 */
#ifndef RV_LB_H
#define RV_LB_H

#include "config/snapshot-t.h"

typedef struct rv_lb_state_s {
    uint64_t rr;                /* round-robin cursor (over total weight) */
    uint64_t rng;               /* xorshift state; seed non-zero */
    uint32_t *active;           /* in-flight requests per endpoint (neps entries), leastRequest */
} rv_lb_state_t;

/* Fast per-thread PRNG step (xorshift64*); *state must be non-zero. */
uint64_t rv_rand_next(uint64_t *state);

/*
 * Pick an endpoint index of c with its policy: weighted round robin (default), least request
 * (choice_count random candidates, fewest active wins, weights respected), random (weighted).
 * avoid: an endpoint index to skip when another exists (retry on a different host), or
 * UINT32_MAX. Returns the index, or -1 when c has no endpoint.
 */
int rv_lb_pick(const rv_cluster_t *c, rv_lb_state_t *st, uint32_t avoid);

/* Pick a destination of a ROUTE action by weight; returns its index (0 when ndests == 1). */
uint32_t rv_pick_dest(const rv_action_t *a, uint64_t *rng);

#endif
