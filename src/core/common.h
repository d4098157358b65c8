/*
 * common.h - basic types and macros shared by every rivet module.
 *
 * Wire data is length-carrying: rv_str_t never relies on a NUL terminator.
 */
#ifndef RV_COMMON_H
#define RV_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct rv_str_s {
    const char *ptr;
    size_t len;
} rv_str_t;

#define RV_STR(lit)        ((rv_str_t){ (lit), sizeof(lit) - 1 })
#define RV_STR_NULL        ((rv_str_t){ NULL, 0 })
#define RV_ARRAY_LEN(a)    (sizeof(a) / sizeof((a)[0]))
#define RV_MIN(a, b)       ((a) < (b) ? (a) : (b))
#define RV_MAX(a, b)       ((a) > (b) ? (a) : (b))
#define RV_UNUSED(x)       ((void)(x))
#define RV_LIKELY(x)       __builtin_expect(!!(x), 1)
#define RV_UNLIKELY(x)     __builtin_expect(!!(x), 0)
#define RV_CONTAINER_OF(p, type, member) \
    ((type *)((char *)(p) - offsetof(type, member)))

static inline rv_str_t rv_str(const char *p, size_t n) { return (rv_str_t){ p, n }; }
static inline rv_str_t rv_cstr(const char *p) { return (rv_str_t){ p, p ? strlen(p) : 0 }; }

static inline bool rv_str_eq(rv_str_t a, rv_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline char rv_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c; }

/* ASCII case-insensitive equality (header names, hosts). */
static inline bool rv_str_ieq(rv_str_t a, rv_str_t b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (rv_lower(a.ptr[i]) != rv_lower(b.ptr[i]))
            return false;
    return true;
}

static inline bool rv_str_has_prefix(rv_str_t s, rv_str_t p)
{
    return s.len >= p.len && memcmp(s.ptr, p.ptr, p.len) == 0;
}

/* ASCII case-insensitive prefix test (caseSensitive: false matchers, rewrites). */
static inline bool rv_str_has_iprefix(rv_str_t s, rv_str_t p)
{
    if (s.len < p.len)
        return false;
    for (size_t i = 0; i < p.len; i++)
        if (rv_lower(s.ptr[i]) != rv_lower(p.ptr[i]))
            return false;
    return true;
}

/* Parse an unsigned decimal with overflow check; 0 ok, -1 on any bad byte or overflow. */
int rv_str_to_u64(rv_str_t s, uint64_t *out);

#endif
