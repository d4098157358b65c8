/*
 * test_lb.c - PRNG, weighted round robin (exact proportions and order), least request,
 * weighted random, avoid, weighted destinations.
 */
#include <stdio.h>

#include "proxy/lb.h"
#include "test.h"

static rv_endpoint_t eps[8];

static rv_cluster_t cluster(int lb, int n, const uint32_t *w)
{
    rv_cluster_t c = { 0 };
    c.name = RV_STR("c");
    c.lb = lb;
    c.eps = eps;
    c.neps = (uint32_t)n;
    for (int i = 0; i < n; i++) {
        eps[i].weight = w[i];
        c.total_weight += w[i];
    }
    return c;
}

static void test_rand(void)
{
    uint64_t s = 1;
    CHECK(rv_rand_next(&s) == 0x47e4ce4b896cdd1dull, "xorshift64* first output from state 1");
    CHECK(s == 0x2000001ull, "xorshift64* state after one step");
    CHECK(rv_rand_next(&s) == 0xabcfa6a8e079651dull, "xorshift64* second output");
    uint64_t z = 0;
    uint64_t a = rv_rand_next(&z);
    CHECK(z != 0, "zero state is reseeded, never stuck");
    CHECK(rv_rand_next(&z) != a, "sequence moves on");
}

static void test_round_robin(void)
{
    static const uint32_t w31[] = { 3, 1 };
    rv_cluster_t c = cluster(RV_LB_ROUND_ROBIN, 2, w31);
    rv_lb_state_t st = { 0, 1, NULL };
    int cnt[2] = { 0, 0 }, bad = 0;
    for (int i = 0; i < 4000; i++) {
        int e = rv_lb_pick(&c, &st, UINT32_MAX);
        if (e < 0 || e > 1) {
            bad++;
            continue;
        }
        cnt[e]++;
    }
    CHECK_INT(bad, 0, "picks in range");
    CHECK_INT(cnt[0], 3000, "weights 3:1 -> exactly 3000");
    CHECK_INT(cnt[1], 1000, "weights 3:1 -> exactly 1000");
    st.rr = 0;
    int seq[8];
    for (int i = 0; i < 8; i++)
        seq[i] = rv_lb_pick(&c, &st, UINT32_MAX);
    CHECK(seq[0] == 0 && seq[1] == 0 && seq[2] == 0 && seq[3] == 1 && seq[4] == 0 && seq[7] == 1,
          "cursor over total weight: A A A B A A A B");

    static const uint32_t w111[] = { 1, 1, 1 };
    c = cluster(RV_LB_ROUND_ROBIN, 3, w111);
    st.rr = 0;
    int ok = 1;
    for (int i = 0; i < 30; i++)
        ok &= rv_lb_pick(&c, &st, UINT32_MAX) == i % 3;
    CHECK(ok, "equal weights: plain rotation 0 1 2 0 1 2");
    int c3[3] = { 0 };
    for (int i = 0; i < 3000; i++)
        c3[rv_lb_pick(&c, &st, 1)]++;
    CHECK(c3[1] == 0, "avoid: endpoint 1 never picked");
    CHECK(c3[0] == 1500 && c3[2] == 1500, "avoid: the others share evenly (%d/%d)", c3[0], c3[2]);

    c = cluster(RV_LB_ROUND_ROBIN, 2, w31);
    int c2[2] = { 0 };
    for (int i = 0; i < 100; i++)
        c2[rv_lb_pick(&c, &st, 0)]++;
    CHECK(c2[0] == 0 && c2[1] == 100, "avoid the heavy endpoint: always the other");
    for (int i = 0; i < 100; i++)
        c2[rv_lb_pick(&c, &st, 7)]++;
    CHECK(c2[0] == 75, "avoid out of range is ignored");

    static const uint32_t w5[] = { 5, 2, 0, 1 };
    c = cluster(RV_LB_ROUND_ROBIN, 4, w5);
    int c4[4] = { 0 };
    st.rr = 0;
    for (int i = 0; i < 800; i++)
        c4[rv_lb_pick(&c, &st, UINT32_MAX)]++;
    CHECK(c4[0] == 500 && c4[1] == 200 && c4[2] == 0 && c4[3] == 100, "5:2:0:1 -> %d %d %d %d", c4[0], c4[1],
          c4[2], c4[3]);
    c.total_weight = 0; /* not filled in: computed from the endpoints */
    c4[0] = c4[1] = c4[2] = c4[3] = 0;
    for (int i = 0; i < 800; i++)
        c4[rv_lb_pick(&c, &st, UINT32_MAX)]++;
    CHECK(c4[0] == 500 && c4[1] == 200 && c4[3] == 100, "total_weight unset: same result");
}

static void test_edge(void)
{
    static const uint32_t w1[] = { 1 };
    rv_lb_state_t st = { 0, 7, NULL };
    rv_cluster_t c = cluster(RV_LB_ROUND_ROBIN, 0, w1);
    CHECK_INT(rv_lb_pick(&c, &st, UINT32_MAX), -1, "no endpoint: -1");
    CHECK_INT(rv_lb_pick(NULL, &st, UINT32_MAX), -1, "NULL cluster: -1");
    for (int lb = RV_LB_ROUND_ROBIN; lb <= RV_LB_RANDOM; lb++) {
        c = cluster(lb, 1, w1);
        CHECK_INT(rv_lb_pick(&c, &st, 0), 0, "single endpoint even when avoided (lb %d)", lb);
    }
    static const uint32_t w00[] = { 0, 0, 0 };
    c = cluster(RV_LB_RANDOM, 3, w00);
    int seen[3] = { 0 };
    for (int i = 0; i < 300; i++)
        seen[rv_lb_pick(&c, &st, 1)]++;
    CHECK(seen[1] == 0 && seen[0] > 0 && seen[2] > 0, "all weights zero: uniform over the others");
}

static void test_random(void)
{
    static const uint32_t w13[] = { 1, 3 };
    rv_cluster_t c = cluster(RV_LB_RANDOM, 2, w13);
    rv_lb_state_t st = { 0, 12345, NULL };
    int cnt[2] = { 0 };
    for (int i = 0; i < 40000; i++)
        cnt[rv_lb_pick(&c, &st, UINT32_MAX)]++;
    CHECK(cnt[1] > 29000 && cnt[1] < 31000, "random 1:3 -> ~30000 of 40000 (got %d)", cnt[1]);
    static const uint32_t w4[] = { 1, 1, 1, 1 };
    c = cluster(RV_LB_RANDOM, 4, w4);
    int c4[4] = { 0 };
    for (int i = 0; i < 40000; i++)
        c4[rv_lb_pick(&c, &st, 2)]++;
    CHECK(c4[2] == 0, "random: avoided endpoint never picked");
    CHECK(c4[0] > 12500 && c4[1] > 12500 && c4[3] > 12500, "random: the others share (%d %d %d)", c4[0], c4[1],
          c4[3]);
}

static void test_least_request(void)
{
    static const uint32_t w2[] = { 1, 1 };
    rv_cluster_t c = cluster(RV_LB_LEAST_REQUEST, 2, w2);
    c.choice_count = 2;
    uint32_t active[4] = { 5, 0, 0, 0 };
    rv_lb_state_t st = { 0, 42, active };
    int idle = 0;
    for (int i = 0; i < 1000; i++)
        idle += rv_lb_pick(&c, &st, UINT32_MAX) == 1;
    /* two candidates: the busy one wins only when drawn twice (1/4) */
    CHECK(idle > 700 && idle < 800, "p2c prefers the idle endpoint (%d of 1000)", idle);
    c.choice_count = 0; /* default 2 */
    idle = 0;
    for (int i = 0; i < 1000; i++)
        idle += rv_lb_pick(&c, &st, UINT32_MAX) == 1;
    CHECK(idle > 700 && idle < 800, "choice_count 0 means 2 (%d)", idle);
    c.choice_count = 8;
    idle = 0;
    for (int i = 0; i < 1000; i++)
        idle += rv_lb_pick(&c, &st, UINT32_MAX) == 1;
    CHECK(idle > 990, "8 choices: nearly always the idle one (%d)", idle);
    idle = 0;
    for (int i = 0; i < 100; i++)
        idle += rv_lb_pick(&c, &st, 1) == 1;
    CHECK(idle == 0, "avoid beats least request: the idle endpoint is skipped");

    static const uint32_t w4[] = { 1, 1, 1, 1 };
    c = cluster(RV_LB_LEAST_REQUEST, 4, w4);
    c.choice_count = 2;
    active[0] = 3, active[1] = 3, active[2] = 0, active[3] = 3;
    int c4[4] = { 0 };
    for (int i = 0; i < 4000; i++)
        c4[rv_lb_pick(&c, &st, UINT32_MAX)]++;
    /* endpoint 2 wins whenever drawn: 1 - (3/4)^2 = 7/16 of picks */
    CHECK(c4[2] > 1600 && c4[2] < 1900, "idle one of four wins ~7/16 (%d)", c4[2]);
    active[2] = 3;
    int lo = 4000, hi = 0;
    for (int i = 0; i < 4; i++)
        c4[i] = 0;
    for (int i = 0; i < 4000; i++)
        c4[rv_lb_pick(&c, &st, UINT32_MAX)]++;
    for (int i = 0; i < 4; i++)
        lo = c4[i] < lo ? c4[i] : lo, hi = c4[i] > hi ? c4[i] : hi;
    CHECK(lo > 850 && hi < 1150, "equal load: spread evenly (%d..%d)", lo, hi);

    static const uint32_t w91[] = { 9, 1 };
    c = cluster(RV_LB_LEAST_REQUEST, 2, w91);
    c.choice_count = 2;
    active[0] = active[1] = 0;
    int heavy = 0;
    for (int i = 0; i < 10000; i++)
        heavy += rv_lb_pick(&c, &st, UINT32_MAX) == 0;
    /* ties keep the first candidate, so the draw's weights decide: 9:1 */
    CHECK(heavy > 8700 && heavy < 9300, "weights respected among equals (%d of 10000)", heavy);
    st.active = NULL;
    CHECK(rv_lb_pick(&c, &st, 0) == 1, "no active counters: still picks, avoid honoured");
}

static void test_pick_dest(void)
{
    rv_dest_t d[3] = { { .cluster = 0, .weight = 9 }, { .cluster = 1, .weight = 1 }, { .cluster = 2, .weight = 0 } };
    rv_action_t a = { 0 };
    a.kind = RV_ACTION_ROUTE;
    a.dests = d;
    a.ndests = 1;
    a.total_weight = 9;
    uint64_t rng = 0; /* zero seed must still work */
    CHECK_INT(rv_pick_dest(&a, &rng), 0, "one destination: 0");
    a.ndests = 3;
    a.total_weight = 10;
    int cnt[3] = { 0 };
    for (int i = 0; i < 10000; i++)
        cnt[rv_pick_dest(&a, &rng)]++;
    CHECK(cnt[0] > 8800 && cnt[0] < 9200, "9:1 split (%d of 10000)", cnt[0]);
    CHECK(cnt[1] > 0, "light destination picked sometimes (%d)", cnt[1]);
    CHECK_INT(cnt[2], 0, "zero-weight destination never picked");
    a.total_weight = 0;
    cnt[0] = cnt[1] = cnt[2] = 0;
    for (int i = 0; i < 10000; i++)
        cnt[rv_pick_dest(&a, &rng)]++;
    CHECK(cnt[0] > 8800 && cnt[0] < 9200 && cnt[2] == 0, "total_weight unset: computed (%d)", cnt[0]);
    CHECK_INT(rv_pick_dest(NULL, &rng), 0, "NULL action: 0");
}

int main(void)
{
    test_rand();
    test_round_robin();
    test_edge();
    test_random();
    test_least_request();
    test_pick_dest();
    TEST_DONE();
}
