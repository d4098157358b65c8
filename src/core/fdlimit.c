/*
 * fdlimit.c - descriptor budgets under RLIMIT_NOFILE (fdlimit.h).
 */
#include "core/fdlimit.h"

#include <pthread.h>
#include <sys/resource.h>

#include "core/log.h"

uint32_t rv_fd_budget_calc(uint64_t cur, uint64_t max, uint32_t want, uint32_t extra, uint32_t reserve,
                           uint32_t min, uint64_t *raise_to)
{
    *raise_to = cur;
    uint64_t need = (uint64_t)want + extra + reserve;
    if (cur == UINT64_MAX || cur >= need)
        return want;
    uint64_t to = cur + want + extra;
    if (max != UINT64_MAX && to > max)
        to = max;
    if (to > cur)
        *raise_to = cur = to;
    if (cur >= need)
        return want;
    uint64_t room = cur > 2 * (uint64_t)reserve + extra ? cur - reserve - extra : cur / 4;
    uint32_t cap = room < want ? (uint32_t)room : want;
    if (cap < min)
        cap = min;
    return cap;
}

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

uint32_t rv_fd_budget(const char *who, const char *what, uint32_t want, uint32_t extra, uint32_t reserve,
                      uint32_t min)
{
    pthread_mutex_lock(&g_mu);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        pthread_mutex_unlock(&g_mu);
        return want;
    }
    uint64_t cur = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    uint64_t max = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_max;
    uint64_t to;
    uint32_t cap = rv_fd_budget_calc(cur, max, want, extra, reserve, min, &to);
    if (to != cur) {
        rl.rlim_cur = (rlim_t)to;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            rv_log_info("%s: open files limit raised from %llu to %llu for %u %s", who, (unsigned long long)cur,
                        (unsigned long long)to, want, what);
        } else {
            /* not raised after all: the budget of the limit in force */
            uint64_t ignored;
            cap = rv_fd_budget_calc(cur, cur, want, extra, reserve, min, &ignored);
            to = cur;
        }
    }
    if (cap < want)
        rv_log_warn("%s: open files limit %llu (hard %llu) too low for %u %s; holding at most %u (raise `ulimit -n`)",
                    who, (unsigned long long)to, (unsigned long long)max, want, what, cap);
    pthread_mutex_unlock(&g_mu);
    return cap;
}
