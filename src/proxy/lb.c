/*
 * lb.c - endpoint choice within a cluster (weighted round robin, least request, random) and
 * weighted destination choice for routes. Per-worker state, no locks, no allocation.
 *
 * Weights map to endpoints through cumulative sums: an offset in [0, total) lands on the
 * endpoint whose cumulative range holds it. The snapshot has no room for a precomputed
 * cumulative array, so the mapping is a scan; when every weight is 1 (total == neps, the
 * common case) the offset is the index itself.
 */
#include "proxy/lb.h"

/* Replaces a zero PRNG state (xorshift would stay at zero forever). */
#define RNG_SEED 0x9E3779B97F4A7C15ull

uint64_t rv_rand_next(uint64_t *state)
{
    uint64_t x = *state ? *state : RNG_SEED;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/*
 * Draw in [0, n), n > 0. Uses the high 32 bits (the strongest of xorshift64*) scaled by
 * multiplication rather than a modulo; the bias is below n / 2^32.
 */
static uint64_t draw(uint64_t *rng, uint64_t n)
{
    uint64_t r = rv_rand_next(rng);
    if (n <= UINT32_MAX)
        return ((r >> 32) * n) >> 32;
    return r % n;
}

/*
 * Sum of the endpoint weights of c, skipping index skip (UINT32_MAX: none). Trusts
 * c->total_weight when nothing is skipped and it is set.
 */
static uint64_t ep_total(const rv_cluster_t *c, uint32_t skip)
{
    uint64_t t = 0;
    if (skip == UINT32_MAX && c->total_weight)
        return c->total_weight;
    for (uint32_t i = 0; i < c->neps; i++)
        if (i != skip)
            t += c->eps[i].weight;
    return t;
}

/*
 * Endpoint whose cumulative weight range (endpoint skip left out) holds off, off < total.
 * When all weights are zero (total 0, a malformed config) off is taken as a plain index
 * among the others. Falls back to the last eligible endpoint if the weights do not add up.
 */
static uint32_t ep_at(const rv_cluster_t *c, uint64_t off, uint64_t total, uint32_t skip)
{
    uint32_t last = 0;
    if (total == 0) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < c->neps; i++) {
            if (i == skip)
                continue;
            if (k++ == off)
                return i;
            last = i;
        }
        return last;
    }
    if (skip == UINT32_MAX && total == c->neps && c->total_weight == c->neps)
        return (uint32_t)off; /* all weights 1 */
    for (uint32_t i = 0; i < c->neps; i++) {
        if (i == skip)
            continue;
        if (off < c->eps[i].weight)
            return i;
        off -= c->eps[i].weight;
        last = i;
    }
    return last;
}

/* One weighted random endpoint, endpoint skip excluded (at least one other must exist). */
static uint32_t ep_random(const rv_cluster_t *c, uint64_t *rng, uint32_t skip)
{
    uint64_t total = ep_total(c, skip);
    uint64_t n = total ? total : (uint64_t)c->neps - (skip != UINT32_MAX);
    return ep_at(c, draw(rng, n), total, skip);
}

/*
 * Pick an endpoint of c (see lb.h). Round robin walks a cursor over the total weight, so
 * weights 3:1 give A,A,A,B repeating: exact proportions over any multiple of the total.
 * Least request draws choice_count weighted candidates and keeps the one with the fewest
 * requests in flight (the first drawn on a tie); with equal weights and choice_count 2 this
 * is power-of-two-choices. avoid (a valid index, with another endpoint present) is left
 * out of the draw: the round-robin offset is re-mapped over the other endpoints' weights,
 * the random draws simply exclude it. Worker thread owning st.
 */
int rv_lb_pick(const rv_cluster_t *c, rv_lb_state_t *st, uint32_t avoid)
{
    if (!c || c->neps == 0 || !c->eps)
        return -1;
    if (c->neps == 1)
        return 0;
    uint32_t skip = avoid < c->neps ? avoid : UINT32_MAX;

    switch (c->lb) {
    case RV_LB_LEAST_REQUEST: {
        uint32_t n = c->choice_count ? c->choice_count : 2;
        uint32_t best = ep_random(c, &st->rng, skip);
        if (!st->active)
            return (int)best;
        for (uint32_t k = 1; k < n; k++) {
            uint32_t e = ep_random(c, &st->rng, skip);
            if (st->active[e] < st->active[best])
                best = e;
        }
        return (int)best;
    }
    case RV_LB_RANDOM:
        return (int)ep_random(c, &st->rng, skip);
    default: {
        uint64_t total = ep_total(c, UINT32_MAX);
        uint64_t pos = st->rr++;
        uint64_t n = total ? total : c->neps;
        uint32_t e = ep_at(c, pos % n, total, UINT32_MAX);
        if (e != skip)
            return (int)e;
        uint64_t t2 = ep_total(c, skip);
        uint64_t n2 = t2 ? t2 : (uint64_t)c->neps - 1;
        return (int)ep_at(c, pos % n2, t2, skip);
    }
    }
}

/*
 * Weighted destination of a ROUTE action: offset rand % total over the cumulative
 * weights. Worker thread owning *rng. 0 when there is one destination or none.
 */
uint32_t rv_pick_dest(const rv_action_t *a, uint64_t *rng)
{
    if (!a || a->ndests <= 1 || !a->dests)
        return 0;
    uint64_t total = a->total_weight;
    if (!total)
        for (uint32_t i = 0; i < a->ndests; i++)
            total += a->dests[i].weight;
    if (!total)
        return (uint32_t)draw(rng, a->ndests);
    uint64_t off = draw(rng, total);
    for (uint32_t i = 0; i < a->ndests; i++) {
        if (off < a->dests[i].weight)
            return i;
        off -= a->dests[i].weight;
    }
    return a->ndests - 1;
}
