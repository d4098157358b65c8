/* test_core.c - arena, strings, error table. */
#include "core/arena.h"
#include "core/err.h"
#include "test.h"

int main(void)
{
    rv_arena_t a;
    rv_arena_init(&a, 64);
    char *p = rv_arena_alloc(&a, 10);
    CHECK(p != NULL, "small alloc");
    CHECK(((uintptr_t)p & 15) == 0, "16-byte aligned");
    char *big = rv_arena_alloc(&a, 1000);
    CHECK(big != NULL, "alloc larger than a chunk");
    memset(big, 'x', 1000);
    rv_str_t s = rv_arena_str(&a, RV_STR("hello"));
    CHECK_STRN(s.ptr, s.len, "hello", "arena str copy");
    CHECK(s.ptr[5] == '\0', "arena str NUL-terminated");
    size_t before = a.total;
    rv_arena_reset(&a);
    CHECK(a.head != NULL && a.total < before, "reset keeps one chunk, frees the rest");
    CHECK(rv_arena_alloc(&a, 8) != NULL, "alloc after reset");
    rv_arena_free(&a);
    CHECK(a.head == NULL && a.total == 0, "free releases all");
    rv_arena_free(&a);
    CHECK(1, "double free of an arena is harmless");

    uint64_t v;
    CHECK(rv_str_to_u64(RV_STR("18446744073709551615"), &v) == 0 && v == UINT64_MAX, "u64 max");
    CHECK(rv_str_to_u64(RV_STR("18446744073709551616"), &v) == -1, "u64 overflow rejected");
    CHECK(rv_str_to_u64(RV_STR("+3"), &v) == -1, "sign rejected");
    CHECK(rv_str_to_u64(RV_STR(""), &v) == -1, "empty rejected");
    CHECK(rv_str_ieq(RV_STR("Host"), RV_STR("hOST")), "case-insensitive eq");
    CHECK(strcmp(rv_strerror(RV_ENOMEM), "out of memory") == 0, "error table");
    TEST_DONE();
}
