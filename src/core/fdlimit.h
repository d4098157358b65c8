/*
 * fdlimit.h - descriptor budgets under RLIMIT_NOFILE, shared by the threads that open many
 * sockets of their own (Consul discovery's blocking queries, the health checker's checks in
 * flight): the soft limit is raised (up to the hard one) to make room for a budget, and when
 * even the hard limit is too low the budget shrinks so that the data plane (listeners, client
 * and upstream connections) keeps descriptors. Design: doc/internals/health.md ("Descriptor
 * budget").
 */
#ifndef RV_CORE_FDLIMIT_H
#define RV_CORE_FDLIMIT_H

#include <stdint.h>

/*
 * The arithmetic of rv_fd_budget (pure). cur/max: the soft and hard RLIMIT_NOFILE (UINT64_MAX
 * for RLIM_INFINITY); want: descriptors the component would like to hold at once; extra: more
 * it holds besides (counted in the raise, not in the budget); reserve: descriptors kept for the
 * rest of the process; min: the least budget returned. *raise_to: the soft limit to set (cur
 * when nothing is raised): cur + want + extra, capped at max, when cur is below
 * want + extra + reserve. Returns want when the (raised) soft limit holds want + extra + reserve;
 * else what fits after reserve and extra, or a quarter of the limit when that leaves less than
 * reserve; never below min nor above want.
 */
uint32_t rv_fd_budget_calc(uint64_t cur, uint64_t max, uint32_t want, uint32_t extra, uint32_t reserve,
                           uint32_t min, uint64_t *raise_to);

/*
 * rv_fd_budget_calc on the process's own limits, raising the soft limit as it says (logged at
 * info: "<who>: open files limit raised from A to B for N <what>") and warning when the budget
 * is below want ("<who>: open files limit L (hard H) too low for N <what>; holding at most B
 * (raise `ulimit -n`)"). Serialised by a process-wide mutex (two threads may budget at once).
 * Returns want when the limits cannot be read. Any thread.
 */
uint32_t rv_fd_budget(const char *who, const char *what, uint32_t want, uint32_t extra, uint32_t reserve,
                      uint32_t min);

#endif
