/*
 * test.h - a minimal TAP producer for unit tests. Each CHECK is one TAP line; main returns
 * non-zero when any check failed. tests/unit/run.sh sums the binaries' results.
 */
#ifndef RV_TEST_H
#define RV_TEST_H

#include <stdio.h>
#include <string.h>

static int t_count, t_failed;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        t_count++;                                                                \
        if (cond) {                                                               \
            printf("ok %d - ", t_count);                                          \
        } else {                                                                  \
            t_failed++;                                                           \
            printf("not ok %d - %s:%d: ", t_count, __FILE__, __LINE__);           \
        }                                                                         \
        printf(__VA_ARGS__);                                                      \
        printf("\n");                                                             \
    } while (0)

#define CHECK_INT(got, want, ...)                                                 \
    do {                                                                          \
        long long g_ = (long long)(got), w_ = (long long)(want);                  \
        CHECK(g_ == w_, __VA_ARGS__);                                             \
        if (g_ != w_)                                                             \
            printf("#   got %lld, want %lld\n", g_, w_);                          \
    } while (0)

#define CHECK_STRN(gotp, gotlen, want, ...)                                       \
    do {                                                                          \
        const char *w_ = (want);                                                  \
        size_t gl_ = (size_t)(gotlen);                                            \
        int ok_ = gl_ == strlen(w_) && memcmp((gotp), w_, gl_) == 0;              \
        CHECK(ok_, __VA_ARGS__);                                                  \
        if (!ok_)                                                                 \
            printf("#   got '%.*s', want '%s'\n", (int)gl_, (const char *)(gotp), w_); \
    } while (0)

#define TEST_DONE()                                                               \
    do {                                                                          \
        printf("1..%d\n", t_count);                                               \
        return t_failed ? 1 : 0;                                                  \
    } while (0)

#endif
