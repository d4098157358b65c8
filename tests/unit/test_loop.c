/* test_loop.c - event loop: timer order, lazy re-arm, stop, a large random heap, fd events. */
#include <stdlib.h>
#include <unistd.h>

#include "core/loop.h"
#include "test.h"

static int order[64], norder;
static int64_t fired_at[2000];
static rv_timer_t many[2000];

static void rec(rv_loop_t *l, rv_timer_t *t)
{
    order[norder++] = 1;
}

typedef struct tagged_s {
    rv_timer_t t;
    int tag;
} tagged_t;

static void rec_tag(rv_loop_t *l, rv_timer_t *t)
{
    order[norder++] = RV_CONTAINER_OF(t, tagged_t, t)->tag;
}

static void rec_many(rv_loop_t *l, rv_timer_t *t)
{
    fired_at[t - many] = rv_loop_now(l);
}

static int io_hits;
static void on_pipe(rv_loop_t *l, rv_io_t *io, uint32_t ev)
{
    char b[16];
    if (read(io->fd, b, sizeof b) > 0)
        io_hits++;
}

int main(void)
{
    rv_loop_t loop;
    CHECK_INT(rv_loop_init(&loop), 0, "init");

    /* order by deadline, independent of insertion order */
    tagged_t t[5];
    int when[5] = { 30, 10, 50, 20, 40 };
    for (int i = 0; i < 5; i++) {
        rv_timer_init(&t[i].t, rec_tag);
        t[i].tag = when[i];
        rv_timer_at(&loop, &t[i].t, loop.now + when[i]);
    }
    rv_timer_stop(&loop, &t[4].t);      /* 40 never fires */
    rv_timer_at(&loop, &t[2].t, loop.now + 45);   /* later: lazy */
    rv_timer_at(&loop, &t[0].t, loop.now + 5);    /* earlier: re-inserted */
    int64_t end = loop.now + 2000;
    while (norder < 4 && loop.now < end)
        rv_loop_poll(&loop, 100);
    CHECK_INT(norder, 4, "four timers fired");
    CHECK(order[0] == 30 && order[1] == 10 && order[2] == 20 && order[3] == 50, "deadline order: %d %d %d %d",
          order[0], order[1], order[2], order[3]);
    CHECK(!t[4].t.active && loop.ntimers == 0, "stopped timer gone, heap empty");
    rv_timer_stop(&loop, &t[4].t);
    CHECK(1, "stopping a stopped timer is harmless");

    /* many timers, random deadlines, random stops and re-arms: none early, stopped ones silent */
    srand(7);
    int64_t deadline[2000];
    bool stopped[2000];
    for (int i = 0; i < 2000; i++) {
        rv_timer_init(&many[i], rec_many);
        deadline[i] = loop.now + rand() % 200;
        rv_timer_at(&loop, &many[i], deadline[i]);
        stopped[i] = false;
        fired_at[i] = -1;
    }
    for (int i = 0; i < 2000; i += 7) {
        rv_timer_stop(&loop, &many[i]);
        stopped[i] = true;
    }
    for (int i = 3; i < 2000; i += 11) {
        deadline[i] = loop.now + rand() % 300;
        rv_timer_at(&loop, &many[i], deadline[i]);
        stopped[i] = false;
    }
    end = loop.now + 3000;
    while (loop.ntimers && loop.now < end)
        rv_loop_poll(&loop, 50);
    int early = 0, missed = 0, ghost = 0;
    for (int i = 0; i < 2000; i++) {
        if (stopped[i]) {
            ghost += fired_at[i] >= 0;
            continue;
        }
        missed += fired_at[i] < 0;
        early += fired_at[i] >= 0 && fired_at[i] < deadline[i];
    }
    CHECK_INT(missed, 0, "every armed timer fired");
    CHECK_INT(early, 0, "no timer fired early");
    CHECK_INT(ghost, 0, "no stopped timer fired");

    /* fd events */
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    rv_io_t io;
    CHECK_INT(rv_io_add(&loop, &io, p[0], EPOLLIN, on_pipe), 0, "watch");
    CHECK(write(p[1], "x", 1) == 1, "write");
    rv_loop_poll(&loop, 1000);
    CHECK_INT(io_hits, 1, "read event delivered");
    rv_io_del(&loop, &io);
    CHECK(write(p[1], "y", 1) == 1, "write again");
    rv_loop_poll(&loop, 10);
    CHECK_INT(io_hits, 1, "no event after del");
    close(p[0]);
    close(p[1]);
    rv_timer_t z;
    rv_timer_init(&z, rec);
    rv_timer_after(&loop, &z, 0);
    norder = 0;
    rv_loop_poll(&loop, 1000);
    CHECK_INT(norder, 1, "zero-delay timer fires on the next poll");
    rv_loop_free(&loop);
    TEST_DONE();
}
