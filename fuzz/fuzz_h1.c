/*
 * fuzz_h1.c - libFuzzer target: HTTP/1 request and response head parsers, chunked scanner,
 * path normalisation. Besides "no crash, no sanitizer report" it asserts the parsers'
 * contracts: slices stay inside the input, a complete head's strict prefixes are "need more",
 * the chunked scanner gives the same result however its input is split, and normalised paths
 * never grow and are idempotent.
 *
 * Built by `make fuzz` (build-fuzz/fuzz_h1; run: build-fuzz/fuzz_h1 fuzz/corpus/h1). The seed
 * corpus is replayed as a plain test by `make unit` (build/fuzz/replay_h1, via fuzz/replay.c).
 */
#include "core/err.h"
#include "http/h1.h"
#include "http/path.h"

#include <stdio.h>
#include <stdlib.h>

static rv_header_t hdrs[128];

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_h1: %s:%d: %s\n", __FILE__, __LINE__, #c);                       \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool inside(rv_str_t s, const char *buf, size_t len)
{
    return s.len == 0 || (s.ptr >= buf && s.ptr + s.len <= buf + len);
}

static void check_path(rv_str_t path)
{
    char out[4096], again[4096];
    size_t n = 0, m = 0;
    if (path.len > sizeof out || rv_path_normalize(path, out, sizeof out, &n) != 0)
        return;
    ASSERT(n <= path.len && n > 0 && out[0] == '/');
    ASSERT(rv_path_normalize(rv_str(out, n), again, sizeof again, &m) == 0);
    ASSERT(m == n && memcmp(out, again, n) == 0);
}

static void fuzz_request(const char *buf, size_t len)
{
    rv_h1_limits_t lim = { 4096, 1024, 64 };
    rv_h1_request_t r;
    int rc = rv_h1_parse_request(buf, len, &lim, hdrs, &r);
    if (rc == RV_EAGAIN)
        return;
    if (rc < 0) {
        ASSERT(r.error != NULL);
        ASSERT((rc == RV_ETOOBIG) == (r.status == 414 || r.status == 431));
        return;
    }
    ASSERT((size_t)rc == r.head_len && r.head_len <= len && r.head_len <= lim.max_head);
    ASSERT(r.nheaders <= lim.max_headers);
    ASSERT(inside(r.method, buf, len) && inside(r.target, buf, len) && inside(r.query, buf, len));
    for (uint32_t i = 0; i < r.nheaders; i++)
        ASSERT(inside(hdrs[i].name, buf, len) && inside(hdrs[i].value, buf, len));
    ASSERT(r.body != RV_H1_BODY_EOF);
    ASSERT(rv_h1_parse_request(buf, r.head_len - 1, &lim, hdrs, &r) == RV_EAGAIN);
    ASSERT(rv_h1_parse_request(buf, (size_t)rc, &lim, hdrs, &r) == rc);
    if (r.path.len && r.path.ptr[0] == '/')
        check_path(r.path);
}

static void fuzz_response(const char *buf, size_t len, bool head)
{
    rv_h1_response_t r;
    int rc = rv_h1_parse_response(buf, len, NULL, hdrs, head, &r);
    if (rc == RV_EAGAIN)
        return;
    if (rc < 0) {
        ASSERT(r.error != NULL && (rc == RV_EPARSE || rc == RV_ETOOBIG));
        return;
    }
    ASSERT((size_t)rc == r.head_len && r.head_len <= len);
    ASSERT(r.status >= 100 && r.status <= 999);
    ASSERT(r.body != RV_H1_BODY_EOF || !r.keep_alive);
    ASSERT(rv_h1_parse_response(buf, r.head_len - 1, NULL, hdrs, head, &r) == RV_EAGAIN);
}

typedef struct res_s {
    int rc;
    size_t consumed;
    uint64_t payload;
} res_t;

static res_t scan_split(const char *buf, size_t len, size_t step)
{
    rv_h1_chunked_t c;
    res_t r = { 0, 0, 0 };
    rv_h1_chunked_init(&c);
    for (size_t at = 0; at < len || at == 0;) {
        size_t n = RV_MIN(step, len - at), used = 0;
        uint64_t pl = 0;
        int rc = rv_h1_chunked_scan(&c, buf + at, n, &used, &pl);
        ASSERT(used <= n && pl <= used);
        r.consumed += used;
        r.payload += pl;
        if (rc != 0) {
            r.rc = rc;
            return r;
        }
        ASSERT(used == n);
        at += n;
        if (len == 0)
            break;
    }
    return r;
}

static void fuzz_chunked(const char *buf, size_t len)
{
    res_t a = scan_split(buf, len, len ? len : 1);
    res_t b = scan_split(buf, len, 1);
    res_t c = scan_split(buf, len, 7);
    ASSERT(a.rc == b.rc && a.consumed == b.consumed && a.payload == b.payload);
    ASSERT(a.rc == c.rc && a.consumed == c.consumed && a.payload == c.payload);
    ASSERT(a.rc == 0 || a.rc == 1 || a.rc == RV_EPARSE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    fuzz_request(buf, size);
    fuzz_response(buf, size, false);
    fuzz_response(buf, size, true);
    fuzz_chunked(buf, size);
    if (size <= 4096) {
        check_path(rv_str(buf, size));
    }
    return 0;
}
