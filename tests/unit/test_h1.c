/*
 * test_h1.c - HTTP/1.1 request and response head parsers, chunked scanner, helpers.
 * Every smuggling shape of doc/ hardening section 2 (items 1-7, 14, 18, 20, 22) has a case
 * that asserts the exact status code.
 */
#include "core/err.h"
#include "http/h1.h"
#include "test.h"

#include <stdlib.h>

static rv_header_t H[512];
static rv_h1_request_t R;
static rv_h1_response_t S;

static int reqn(const char *s, size_t n)
{
    return rv_h1_parse_request(s, n, &rv_h1_default_limits, H, &R);
}
#define REQ(lit) reqn(lit, sizeof(lit) - 1)

/*
 * Outcome of parsing s as a request, as one number: the error status (400, 414, 431, 501,
 * 505) when rejected, 0 when complete, -1 when "need more". -2 when the return code and the
 * status disagree (RV_ETOOBIG must go with 414/431, RV_EPARSE with the others) or an error has
 * no reason; -3 when some prefix of s gave a different error than s itself (a prefix may only
 * be "need more" or fail the same way); -4 when a success returned something other than
 * head_len.
 */
static int outcome_lim(const char *s, size_t n, const rv_h1_limits_t *lim)
{
    for (size_t k = 0; k < n && n < 4096; k++) {
        int rc = rv_h1_parse_request(s, k, lim, H, &R);
        if (rc >= 0)
            return -3;
        if (rc != RV_EAGAIN) {
            int st = R.status;
            rv_h1_parse_request(s, n, lim, H, &R);
            if (R.status != st)
                return -3;
            break;
        }
    }
    int rc = rv_h1_parse_request(s, n, lim, H, &R);
    if (rc == RV_EAGAIN)
        return -1;
    if (rc >= 0)
        return (size_t)rc == R.head_len ? 0 : -4;
    if (!R.error)
        return -2;
    if ((rc == RV_ETOOBIG) != (R.status == 414 || R.status == 431))
        return -2;
    if (rc != RV_ETOOBIG && rc != RV_EPARSE)
        return -2;
    return R.status;
}
static int outcome(const char *s, size_t n) { return outcome_lim(s, n, &rv_h1_default_limits); }
#define OUT(lit) outcome(lit, sizeof(lit) - 1)
#define EXPECT(lit, st, ...) CHECK_INT(OUT(lit), st, __VA_ARGS__)

static int respn(const char *s, size_t n, bool head)
{
    return rv_h1_parse_response(s, n, &rv_h1_default_limits, H, head, &S);
}
#define RESP(lit) respn(lit, sizeof(lit) - 1, false)
#define RESP_HEAD(lit) respn(lit, sizeof(lit) - 1, true)

/* Header value of name in the last parsed request, or "(absent)". */
static rv_str_t hval(const char *name)
{
    const rv_header_t *h = rv_h1_find_header(R.headers, R.nheaders, rv_cstr(name));
    return h ? h->value : RV_STR("(absent)");
}

/* ---- chunked helpers ---- */

typedef struct scan_res_s {
    int rc;
    size_t consumed;
    uint64_t payload;
} scan_res_t;

/* Feed s to a fresh scanner in pieces ending at the given cut points (sorted, < n). */
static scan_res_t scan_cuts(const char *s, size_t n, const size_t *cuts, size_t ncuts)
{
    rv_h1_chunked_t c;
    rv_h1_chunked_init(&c);
    scan_res_t r = { 0, 0, 0 };
    size_t at = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        size_t used = 0;
        uint64_t pl = 0;
        int rc = rv_h1_chunked_scan(&c, s + at, to - at, &used, &pl);
        r.consumed += used;
        r.payload += pl;
        if (rc != 0) {
            r.rc = rc;
            return r;
        }
        if (used != to - at) {
            r.rc = -100; /* 0 must mean "all input accepted" */
            return r;
        }
        at = to;
    }
    r.rc = 0;
    return r;
}

static scan_res_t scan_all(const char *s, size_t n) { return scan_cuts(s, n, NULL, 0); }

static bool same(scan_res_t a, scan_res_t b)
{
    return a.rc == b.rc && a.consumed == b.consumed && a.payload == b.payload;
}

/*
 * Feed s one-shot, byte by byte, split in two at every position, and in 200 random splits;
 * returns the number of feeds that disagreed with the one-shot result.
 */
static int split_disagreements(const char *s, size_t n)
{
    scan_res_t ref = scan_all(s, n);
    int bad = 0;
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    for (size_t k = 1; k < n; k++)
        cuts[k - 1] = k;
    if (!same(scan_cuts(s, n, cuts, n ? n - 1 : 0), ref))
        bad++;
    for (size_t k = 0; k <= n; k++) {
        size_t one = k;
        if (!same(scan_cuts(s, n, &one, 1), ref))
            bad++;
    }
    srand(12345);
    for (int t = 0; t < 200; t++) {
        size_t nc = 0;
        for (size_t k = 1; k < n; k++)
            if (rand() % 4 == 0)
                cuts[nc++] = k;
        if (!same(scan_cuts(s, n, cuts, nc), ref))
            bad++;
    }
    free(cuts);
    return bad;
}

#define SCAN(lit) scan_all(lit, sizeof(lit) - 1)

static char big[200 * 1024];

static void test_basic_request(void)
{
    static const char r1[] = "GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  curl/8 \t\r\n"
                             "Accept: */*\r\n\r\n";
    int rc = REQ(r1);
    CHECK_INT(rc, sizeof r1 - 1, "simple GET: returns head length");
    CHECK_INT(R.head_len, sizeof r1 - 1, "head_len covers CRLF CRLF");
    CHECK_STRN(R.method.ptr, R.method.len, "GET", "method");
    CHECK_STRN(R.target.ptr, R.target.len, "/a/b?x=1&y", "target as received");
    CHECK_STRN(R.path.ptr, R.path.len, "/a/b", "path");
    CHECK(R.has_query, "has_query");
    CHECK_STRN(R.query.ptr, R.query.len, "x=1&y", "query without '?'");
    CHECK_INT(R.authority.len, 0, "origin-form has no authority");
    CHECK_STRN(R.host.ptr, R.host.len, "example.com", "host");
    CHECK_INT(R.minor, 1, "HTTP/1.1");
    CHECK_INT(R.nheaders, 3, "three headers");
    CHECK(R.headers == H, "headers is the caller's array");
    CHECK_STRN(H[1].name.ptr, H[1].name.len, "User-Agent", "name case kept");
    CHECK_STRN(H[1].value.ptr, H[1].value.len, "curl/8", "value OWS trimmed both sides");
    CHECK_INT(R.body, RV_H1_BODY_NONE, "no body");
    CHECK(R.keep_alive, "1.1 keep-alive by default");
    CHECK(!R.expect_continue && !R.has_upgrade, "no expect, no upgrade");
    CHECK(H[0].name.ptr == r1 + 25, "slices point into the buffer (no copy)");

    CHECK_INT(OUT("GET /p? HTTP/1.1\r\nHost: a\r\n\r\n"), 0, "empty query ok");
    CHECK(R.has_query && R.query.len == 0, "'?' alone: has_query with empty query");
    CHECK_INT(OUT("GET /p HTTP/1.1\r\nHost: a\r\n\r\n"), 0, "no query");
    CHECK(!R.has_query, "no '?': has_query false");
    CHECK_INT(OUT("get /x HTTP/1.1\r\nHost: a\r\n\r\n"), 0, "lowercase method is a valid token");
    CHECK_STRN(R.method.ptr, R.method.len, "get", "method case kept");
    CHECK_INT(OUT("M-SEARCH_X! /x HTTP/1.1\r\nHost: a\r\n\r\n"), 0, "any token method");
    CHECK_INT(OUT("GET /x HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Sp: \r\n\r\n"), 0, "empty values ok");
    CHECK_INT(hval("x-sp").len, 0, "value of only spaces is empty");
    CHECK_INT(OUT("GET /x HTTP/1.1\r\nHost: a\r\nX-T: a\tb\r\nX-O: caf\xc3\xa9\r\n\r\n"), 0,
              "HTAB inside and obs-text in values ok");
    CHECK_INT(OUT("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0, "leading empty lines skipped");
    CHECK_INT(R.head_len, 31, "leading empty lines counted in head_len");
    CHECK_STRN(R.method.ptr, R.method.len, "GET", "method after leading CRLF");
}

static void test_prefixes_and_pipelining(void)
{
    static const char two[] = "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                              "GET /second HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    size_t first = sizeof "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n" - 1;
    int rc = REQ(two);
    CHECK_INT(rc, first, "pipelined: first head length");
    CHECK_INT(R.body, RV_H1_BODY_LENGTH, "first has a length body");
    CHECK_INT(R.content_length, 5, "content length 5");
    rc = reqn(two + first + 5, sizeof two - 1 - first - 5);
    CHECK_INT(rc, sizeof two - 1 - first - 5, "second request parsed from head_len + body");
    CHECK_STRN(R.path.ptr, R.path.len, "/second", "second path");
    CHECK(!R.keep_alive, "second asks to close");

    static const char gg[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    rc = REQ(gg);
    CHECK_INT(rc, (sizeof gg - 1) / 2, "two GETs in one buffer: head_len points at the second");
    CHECK(memcmp(gg + R.head_len, "GET /2", 6) == 0, "second request starts at head_len");

    static const char full[] = "PUT /x HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 10\r\nExpect: 100-continue\r\n"
                               "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    int bad = 0;
    for (size_t k = 0; k < sizeof full - 1; k++)
        if (reqn(full, k) != RV_EAGAIN)
            bad++;
    CHECK_INT(bad, 0, "every strict prefix of a valid head is RV_EAGAIN");
    CHECK_INT(REQ(full), sizeof full - 1, "whole head complete");
    CHECK(R.expect_continue, "Expect: 100-continue");
    CHECK(R.has_upgrade, "Upgrade present");
    CHECK_STRN(R.host.ptr, R.host.len, "h:8080", "host with port");
}

static void test_version_and_keepalive(void)
{
    CHECK_INT(OUT("GET / HTTP/1.0\r\n\r\n"), 0, "HTTP/1.0 without Host ok");
    CHECK_INT(R.minor, 0, "minor 0");
    CHECK(!R.keep_alive, "1.0 closes by default");
    CHECK_INT(R.host.len, 0, "1.0 without Host: empty host");
    CHECK_INT(OUT("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 0, "1.0 keep-alive");
    CHECK(R.keep_alive, "1.0 with keep-alive token");
    CHECK_INT(OUT("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"), 0, "1.0 ka+close");
    CHECK(!R.keep_alive, "close wins over keep-alive");
    CHECK_INT(OUT("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n"), 0, "close in a list");
    CHECK(!R.keep_alive, "close token (any case) in a list");
    CHECK_INT(OUT("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: te,close\r\n\r\n"), 0,
              "close in a second Connection header");
    CHECK(!R.keep_alive, "every Connection header considered");
    CHECK_INT(OUT("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed, xclose\r\n\r\n"), 0, "not close");
    CHECK(R.keep_alive, "'closed' is not the close token");
    CHECK_INT(OUT("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n"), 0, "expect ci");
    CHECK(R.expect_continue, "Expect: 100-Continue (case-insensitive)");
    CHECK_INT(OUT("GET / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n"), 0,
              "unknown expectation forwarded, not 417");
    CHECK(!R.expect_continue, "unknown expectation is not 100-continue");
    CHECK_INT(OUT("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"), 0, "1.0 expect");
    CHECK(!R.expect_continue, "100-continue ignored on HTTP/1.0");

    EXPECT("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0 -> 505");
    EXPECT("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "HTTP/1.2 -> 505");
    EXPECT("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, "HTTP/0.9 with a version -> 505");
    EXPECT("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "h2 preface on an h1 port -> 505");
    EXPECT("GET /\r\n\r\n", 400, "HTTP/0.9 request (no version) -> 400");
    EXPECT("GET / http/1.1\r\nHost: a\r\n\r\n", 400, "lowercase version -> 400");
    EXPECT("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "space after version -> 400");
    EXPECT("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "HTTP/1.10 -> 400");
    EXPECT("GET / HTTP/11\r\nHost: a\r\n\r\n", 400, "HTTP/11 -> 400");
    EXPECT("GET / HTTP/1\r\nHost: a\r\n\r\n", 400, "HTTP/1 -> 400");
    EXPECT("GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400, "HTTPS/1.1 -> 400");
    EXPECT("GET / HTTP/a.b\r\nHost: a\r\n\r\n", 400, "non-digit version -> 400");
}

static void test_request_line(void)
{
    EXPECT("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "two spaces after method");
    EXPECT("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, "two spaces before version");
    EXPECT("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "tab separator");
    EXPECT(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "leading space");
    EXPECT("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "non-token method");
    EXPECT("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "space in target");
    EXPECT("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, "'#' in target");
    EXPECT("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "DEL in target");
    EXPECT("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "8-bit byte in target");
    CHECK_INT(outcome("GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n", 29), 400, "NUL in target");
    EXPECT("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare CR in target");
    EXPECT("GET / HTTP/1.1\rHost: a\r\n\r\n", 400, "bare CR ending the request line");
    EXPECT("GET / HTTP/1.1\n\r\n", 400, "bare LF ending the request line");
    EXPECT("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "leading bare LF");
    EXPECT("x\r\n", 400, "one-word line");
    EXPECT("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "TLS ClientHello rejected before any LF");
    EXPECT("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0, "OPTIONS *");
    CHECK_STRN(R.path.ptr, R.path.len, "*", "asterisk-form path is '*'");
    EXPECT("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "'*' with GET");
    EXPECT("options * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "'*' with lowercase options (methods are case-sensitive)");
    EXPECT("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, "CONNECT -> 501");
    EXPECT("GET example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400, "authority-form with GET");
    EXPECT("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "relative target");
    EXPECT("GET ?x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "query-only target");
}

static void test_absolute_form(void)
{
    EXPECT("GET http://example.com/x/y?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, "absolute-form");
    CHECK_STRN(R.authority.ptr, R.authority.len, "example.com", "authority");
    CHECK_STRN(R.path.ptr, R.path.len, "/x/y", "absolute-form path");
    CHECK_STRN(R.query.ptr, R.query.len, "q=1", "absolute-form query");
    CHECK_STRN(R.target.ptr, R.target.len, "http://example.com/x/y?q=1", "target kept whole");
    EXPECT("GET HTTP://Example.COM:8080 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", 0,
           "scheme and host compared case-insensitively");
    CHECK_STRN(R.path.ptr, R.path.len, "/", "empty path becomes '/'");
    EXPECT("GET https://a.com?x HTTP/1.1\r\nHost: a.com\r\n\r\n", 0, "https with query, no path");
    CHECK_STRN(R.path.ptr, R.path.len, "/", "path '/' before '?'");
    CHECK(R.has_query && R.query.len == 1, "query 'x'");
    EXPECT("GET http://a.com/ HTTP/1.0\r\n\r\n", 0, "1.0 absolute-form without Host");
    CHECK_STRN(R.host.ptr, R.host.len, "a.com", "host taken from the authority");
    EXPECT("GET http://evil.com/admin HTTP/1.1\r\nHost: good.com\r\n\r\n", 400, "Host differs from authority");
    EXPECT("GET http://a.com:80/ HTTP/1.1\r\nHost: a.com\r\n\r\n", 400, "port makes them differ");
    EXPECT("GET http://a.com/ HTTP/1.1\r\n\r\n", 400, "absolute-form on 1.1 still needs Host");
    EXPECT("GET http://user@a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n", 400, "userinfo refused");
    EXPECT("GET ftp://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n", 400, "scheme other than http(s)");
    EXPECT("GET http:/a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n", 400, "missing '//'");
    EXPECT("GET http:///x HTTP/1.1\r\nHost: a.com\r\n\r\n", 400, "empty authority");
    EXPECT("GET http://a.com:/ HTTP/1.1\r\nHost: a.com:\r\n\r\n", 400, "empty port");
    EXPECT("GET http://[::1]:8080/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 0, "IPv6 literal authority");
}

static void test_headers_syntax(void)
{
    EXPECT("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "space before colon (Host)");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", 400, "tab before colon");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400, "empty header name");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX_Auth_User: admin\r\n\r\n", 400, "underscore in name (item 20)");
    CHECK(R.error && strstr(R.error, "underscore"), "reason names the underscore");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\n_: b\r\n\r\n", 400, "name is only underscore");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX(a): b\r\n\r\n", 400, "non-token name");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A b: c\r\n\r\n", 400, "space inside name");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, "line without colon");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n  folded\r\n\r\n", 400, "obs-fold (item 6)");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n\tfolded\r\n\r\n", 400, "obs-fold with tab");
    EXPECT("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "whitespace before the first header");
    CHECK_INT(outcome("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 38), 400, "NUL in value (item 7)");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01z\r\n\r\n", 400, "SOH in value");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fz\r\n\r\n", 400, "DEL in value");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rY: b\r\n\r\n", 400, "bare CR in value (item 5)");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\r\n\r\n", 400, "CR CR LF");
    EXPECT("GET / HTTP/1.1\nHost: t\n\n", 400, "bare LF line endings (item 5)");
    EXPECT("GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400, "bare LF after a header");
    EXPECT("GET / HTTP/1.1\r\nHost: t\r\n\n", 400, "bare LF ending the head");
    EXPECT("GET / HTTP/1.1\r\nHost: t\r\n\r\r\n", 400, "CR CR LF ending the head");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\nX-Injected: 1\r\n\r\n", 0, "two separate headers fine");
    CHECK_INT(R.nheaders, 3, "three headers");
}

static void test_host(void)
{
    EXPECT("GET / HTTP/1.1\r\n\r\n", 400, "missing Host on 1.1");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "duplicate Host, same value");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, "duplicate Host, other case");
    EXPECT("GET / HTTP/1.1\r\nHost:\r\n\r\n", 400, "empty Host");
    EXPECT("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "space in Host");
    EXPECT("GET / HTTP/1.1\r\nHost: u@a.com\r\n\r\n", 400, "userinfo in Host");
    EXPECT("GET / HTTP/1.1\r\nHost: a.com/x\r\n\r\n", 400, "slash in Host");
    EXPECT("GET / HTTP/1.1\r\nHost: a.com:\r\n\r\n", 400, "empty port");
    EXPECT("GET / HTTP/1.1\r\nHost: a.com:99999\r\n\r\n", 400, "port > 65535");
    EXPECT("GET / HTTP/1.1\r\nHost: a.com:123456\r\n\r\n", 400, "six-digit port");
    EXPECT("GET / HTTP/1.1\r\nHost: a.com:8x\r\n\r\n", 400, "non-digit port");
    EXPECT("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400, "comma in Host");
    EXPECT("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, "unterminated IPv6 literal");
    EXPECT("GET / HTTP/1.1\r\nHost: a%41\r\n\r\n", 400, "percent in Host");
    EXPECT("GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", 0, "IPv6 literal with port");
    EXPECT("GET / HTTP/1.1\r\nHost: 10.0.0.1:65535\r\n\r\n", 0, "IPv4 with max port");
    EXPECT("GET / HTTP/1.1\r\nHost: my_host-1.example~\r\n\r\n", 0, "reg-name with _ - ~");
    EXPECT("GET / HTTP/1.1\r\nhOsT:   Example.COM  \r\n\r\n", 0, "Host name any case, OWS trimmed");
    CHECK_STRN(R.host.ptr, R.host.len, "Example.COM", "host case kept");
}

static void test_smuggling(void)
{
    /* item 1: CL.TE / TE.CL */
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n", 400, "item 1: CL then TE");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 400,
           "item 1: TE then CL");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400,
           "TE with CL 0");
    /* item 2: TE.TE obfuscation */
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n", 400, "xchunked");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n", 400, "space before colon");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0b" "chunked\r\n\r\n", 400, "VT before value");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", 400, "VT after value");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400,
           "chunked, identity");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n", 400,
           "two TE headers");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
           400, "TE chunked twice in two headers");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400, "chunked, chunked");
    EXPECT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "TE on HTTP/1.0");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unknown coding gzip -> 501");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "gzip, chunked -> 501");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: deflate\r\n\r\n", 501, "deflate -> 501");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "chunked not last");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n", 400, "identity");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n\r\n", 400, "empty TE");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ,chunked\r\n\r\n", 400, "empty list element");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400, "parameter on chunked");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400, "quoted chunked");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 0, "plain chunked");
    CHECK_INT(R.body, RV_H1_BODY_CHUNKED, "body chunked");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\ntransfer-encoding:\tCHUNKED \r\n\r\n", 0,
           "HTAB is OWS, coding is case-insensitive");
    CHECK_INT(R.body, RV_H1_BODY_CHUNKED, "body chunked (tab OWS)");

    /* item 3: duplicate / malformed Content-Length */
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, "CL 3 + CL 4");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400,
           "duplicate CL with the same value");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\n", 400, "CL '3, 4'");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3,3\r\n\r\n", 400, "CL '3,3'");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\n", 400, "CL '+3'");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, "CL '-1'");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\n", 400, "CL '0x3'");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3 4\r\n\r\n", 400, "CL '3 4'");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\n", 400, "empty CL");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1e3\r\n\r\n", 400, "CL '1e3'");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9223372036854775808\r\n\r\n", 400, "CL 2^63");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551617\r\n\r\n", 400, "CL 2^64+1");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9223372036854775807\r\n\r\n", 0, "CL 2^63-1 ok");
    CHECK(R.content_length == (uint64_t)INT64_MAX, "CL 2^63-1 value");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length:  3 \r\n\r\n", 0, "CL ' 3 ' ok after OWS trim");
    CHECK_INT(R.content_length, 3, "CL value 3");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 007\r\n\r\n", 0, "leading zeros are digits");
    CHECK_INT(R.content_length, 7, "CL 007 = 7");
    EXPECT("POST / HTTP/1.1\r\nHost: t\r\ncontent-length: 0\r\n\r\n", 0, "CL 0");
    CHECK_INT(R.body, RV_H1_BODY_LENGTH, "CL 0 is a (zero) length body");
    /* item 18: hop-by-hop is the proxy's job, the parser just reports */
    EXPECT("GET / HTTP/1.1\r\nHost: t\r\nConnection: close, X-Forwarded-For\r\nUpgrade: h2c\r\n"
           "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 0, "item 18: parsed, flags reported");
    CHECK(!R.keep_alive && R.has_upgrade, "close + upgrade seen");
}

static void test_limits(void)
{
    rv_h1_limits_t small = { 200, 40, 3 };
    /* request line: "GET /" + pad + " HTTP/1.1" is exactly 40 bytes */
    char line[512];
    size_t n;

    CHECK_INT(rv_h1_default_limits.max_head, 60 * 1024, "default max_head 60 KiB");
    CHECK_INT(rv_h1_default_limits.max_request_line, 16 * 1024, "default max_request_line 16 KiB");
    CHECK_INT(rv_h1_default_limits.max_headers, 100, "default max_headers 100");

    memcpy(line, "GET /", 5);
    memset(line + 5, 'a', 26);
    memcpy(line + 31, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
    n = 53;
    CHECK_INT(outcome_lim(line, n, &small), 0, "request line of exactly max_request_line ok");
    memcpy(line, "GET /", 5);
    memset(line + 5, 'a', 27);
    memcpy(line + 32, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
    n = 54;
    CHECK_INT(outcome_lim(line, n, &small), 414, "request line one over -> 414");
    CHECK_INT(rv_h1_parse_request(line, 41, &small, H, &R), RV_ETOOBIG, "incomplete line past the limit -> 414 now");
    CHECK_INT(R.status, 414, "status 414 while incomplete");
    CHECK_INT(rv_h1_parse_request(line, 40, &small, H, &R), RV_EAGAIN, "incomplete line at the limit: wait");

    /* headers count */
    static const char h3[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    static const char h4[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK_INT(outcome_lim(h3, sizeof h3 - 1, &small), 0, "exactly max_headers ok");
    CHECK_INT(outcome_lim(h4, sizeof h4 - 1, &small), 431, "one header more -> 431");
    CHECK_INT(rv_h1_parse_request(h3, sizeof h3 - 2, &small, H, &R), RV_EAGAIN, "max headers then CR: wait");
    CHECK_INT(rv_h1_parse_request(h4, sizeof h3 - 2, &small, H, &R), RV_ETOOBIG,
              "extra header started while incomplete -> 431 now");
    CHECK_INT(R.status, 431, "status 431 for header count");

    /* whole head */
    n = (size_t)snprintf(line, sizeof line, "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", 200 - 32, 0);
    CHECK_INT(n, 200, "built a 200-byte head");
    CHECK_INT(outcome_lim(line, n, &small), 0, "head of exactly max_head ok");
    n = (size_t)snprintf(line, sizeof line, "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", 201 - 32, 0);
    CHECK_INT(outcome_lim(line, n, &small), 431, "head one over max_head -> 431");
    CHECK_INT(rv_h1_parse_request(line, 199, &small, H, &R), RV_EAGAIN, "incomplete under max_head: wait");
    CHECK_INT(rv_h1_parse_request(line, 200, &small, H, &R), RV_ETOOBIG, "incomplete at max_head -> 431 now");
    CHECK_INT(R.status, 431, "status 431 for head size");
    CHECK_INT(rv_h1_parse_request(line, n, NULL, H, &R), (int)n, "NULL limits = defaults");

    /* item 14 with the default limits */
    size_t k = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 200; i++)
        k += (size_t)snprintf(big + k, sizeof big - k, "X-H%d: v\r\n", i);
    k += (size_t)snprintf(big + k, sizeof big - k, "\r\n");
    CHECK_INT(outcome(big, k), 431, "200 small headers -> 431");
    k = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(big + k, 'v', 64 * 1024);
    k += 64 * 1024;
    memcpy(big + k, "\r\n\r\n", 4);
    k += 4;
    CHECK_INT(outcome(big, k), 431, "one 64 KiB header -> 431");
    CHECK_INT(reqn(big, 61 * 1024), RV_ETOOBIG, "64 KiB header: 431 before the end arrives");
    k = (size_t)snprintf(big, sizeof big, "GET /");
    memset(big + k, 'u', 64 * 1024);
    k += 64 * 1024;
    k += (size_t)snprintf(big + k, sizeof big - k, " HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_INT(outcome(big, k), 414, "64 KiB URL -> 414");
    CHECK_INT(reqn(big, 20 * 1024), RV_ETOOBIG, "20 KiB of URL so far -> 414 already");
    CHECK_INT(R.status, 414, "status 414 for long URL");
    k = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 99; i++)
        k += (size_t)snprintf(big + k, sizeof big - k, "X-H%d: v\r\n", i);
    k += (size_t)snprintf(big + k, sizeof big - k, "\r\n");
    CHECK_INT(outcome(big, k), 0, "100 headers (Host + 99) ok with defaults");
    CHECK_INT(R.nheaders, 100, "100 headers stored");
}

/* Every byte value in a header name, a header value, the target and the method. */
static void test_byte_sweeps(void)
{
    char b[128];
    int bad_name = 0, bad_value = 0, bad_target = 0, bad_method = 0;
    for (int c = 0; c < 256; c++) {
        bool tchar = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c && strchr("!#$%&'*+-.^_`|~", c));
        int n, want, got;

        n = snprintf(b, sizeof b, "GET / HTTP/1.1\r\nHost: a\r\nX%cY: v\r\n\r\n", c);
        got = outcome(b, (size_t)n);
        want = (tchar && c != '_') || c == ':' ? 0 : 400;
        if (got != want) {
            bad_name++;
            printf("# name byte 0x%02x: got %d want %d\n", c, got, want);
        }
        for (int pos = 0; pos < 12; pos += 5) {
            n = snprintf(b, sizeof b, "GET / HTTP/1.1\r\nHost: a\r\nX: v%.*s%cwwwwwwwwwww\r\n\r\n", pos,
                         "vvvvvvvvvvvvvvvv", c);
            got = outcome(b, (size_t)n);
            want = (c == '\t' || (c >= 0x20 && c != 0x7f)) ? 0 : 400;
            if (got != want) {
                bad_value++;
                printf("# value byte 0x%02x at %d: got %d want %d\n", c, pos, got, want);
            }
        }
        n = snprintf(b, sizeof b, "GET /a%cb HTTP/1.1\r\nHost: a\r\n\r\n", c);
        got = outcome(b, (size_t)n);
        want = (c > 0x20 && c < 0x7f && c != '#') ? 0 : 400;
        if (got != want) {
            bad_target++;
            printf("# target byte 0x%02x: got %d want %d\n", c, got, want);
        }
        n = snprintf(b, sizeof b, "G%cT / HTTP/1.1\r\nHost: a\r\n\r\n", c);
        got = outcome(b, (size_t)n);
        want = tchar ? 0 : 400;
        if (got != want) {
            bad_method++;
            printf("# method byte 0x%02x: got %d want %d\n", c, got, want);
        }
    }
    CHECK_INT(bad_name, 0, "header name: exactly tchar minus '_' accepted (256 bytes)");
    CHECK_INT(bad_value, 0, "header value: HTAB, SP, VCHAR, obs-text accepted (256 bytes x 3 positions)");
    CHECK_INT(bad_target, 0, "target: VCHAR except '#' accepted (256 bytes)");
    CHECK_INT(bad_method, 0, "method: tchar accepted (256 bytes)");
}

static void test_response(void)
{
    static const char r1[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX_Under: ok\r\n\r\nhello";
    CHECK_INT(RESP(r1), sizeof r1 - 6, "200 with CL: head length");
    CHECK_INT(S.status, 200, "status 200");
    CHECK_STRN(S.reason.ptr, S.reason.len, "OK", "reason");
    CHECK_INT(S.minor, 1, "minor 1");
    CHECK_INT(S.body, RV_H1_BODY_LENGTH, "length body");
    CHECK_INT(S.content_length, 5, "CL 5");
    CHECK(S.keep_alive, "1.1 keep-alive");
    CHECK_INT(S.nheaders, 2, "two headers (underscore allowed in responses)");
    CHECK_INT(S.head_len, sizeof r1 - 6, "head_len");

    int bad = 0;
    for (size_t k = 0; k < sizeof r1 - 6; k++)
        if (respn(r1, k, false) != RV_EAGAIN)
            bad++;
    CHECK_INT(bad, 0, "every prefix of a response head is RV_EAGAIN");

    CHECK(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") > 0 && S.body == RV_H1_BODY_CHUNKED,
          "chunked response");
    CHECK(RESP("HTTP/1.1 200 OK\r\n\r\n") > 0 && S.body == RV_H1_BODY_EOF && !S.keep_alive,
          "no framing: EOF body, not reusable");
    CHECK(RESP("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n") > 0 && !S.keep_alive,
          "Connection: close");
    CHECK(RESP("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n") > 0 && !S.keep_alive && S.minor == 0,
          "1.0 response without keep-alive closes");
    CHECK(RESP("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n") > 0 && S.keep_alive,
          "1.0 response with keep-alive");
    CHECK(RESP_HEAD("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n") > 0 && S.body == RV_H1_BODY_NONE &&
              S.keep_alive,
          "HEAD: no body despite CL");
    CHECK(RESP_HEAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") > 0 &&
              S.body == RV_H1_BODY_NONE,
          "HEAD: no body despite TE");
    CHECK(RESP_HEAD("HTTP/1.1 200 OK\r\n\r\n") > 0 && S.body == RV_H1_BODY_NONE && S.keep_alive,
          "HEAD without framing: no body, reusable");
    CHECK(RESP("HTTP/1.1 204 No Content\r\n\r\n") > 0 && S.body == RV_H1_BODY_NONE && S.keep_alive, "204");
    CHECK(RESP("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n") > 0 && S.body == RV_H1_BODY_NONE,
          "204 with CL 0 tolerated");
    CHECK_INT(RESP("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"), RV_EPARSE, "204 with CL 7");
    CHECK_INT(RESP("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"), RV_EPARSE, "204 with TE");
    CHECK(RESP("HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n") > 0 && S.body == RV_H1_BODY_NONE &&
              S.keep_alive,
          "304 with CL: no body");
    CHECK(RESP("HTTP/1.1 100 Continue\r\n\r\n") > 0 && S.status == 100 && S.body == RV_H1_BODY_NONE,
          "100 Continue");
    CHECK(RESP("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n") > 0 &&
              S.body == RV_H1_BODY_NONE,
          "103 Early Hints");
    CHECK(RESP("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n") > 0 &&
              S.body == RV_H1_BODY_NONE && !S.keep_alive,
          "101: no body, not reusable for HTTP");
    CHECK_INT(RESP("HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\n\r\n"), RV_EPARSE, "1xx with TE");

    static const char two[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    int rc = RESP(two);
    CHECK_INT(rc, 25, "100 then 200 in one buffer: first head");
    CHECK(respn(two + rc, sizeof two - 1 - (size_t)rc, false) > 0 && S.status == 200, "final response after 1xx");

    CHECK(RESP("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n") > 0 && S.reason.len == 0, "no reason, no SP");
    CHECK(RESP("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n") > 0 && S.reason.len == 0, "empty reason");
    CHECK(RESP("HTTP/1.1 599 Odd\r\n\r\n") > 0 && S.status == 599, "unknown status 599 ok");

    /* item 22: response-side desync */
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n"
                   "0\r\n\r\nResponse splitting attach"),
              RV_EPARSE, "item 22: TE + CL");
    CHECK(S.error != NULL, "error reason set");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n"), RV_EPARSE,
              "CL + TE");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"), RV_EPARSE,
              "differing CLs");
    CHECK(RESP("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n") > 0 && S.content_length == 3,
          "identical duplicate CL accepted on responses");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n"), RV_EPARSE, "CL list");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n"), RV_EPARSE, "CL +3");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), RV_EPARSE, "TE gzip");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"), RV_EPARSE, "TE xchunked");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
              RV_EPARSE, "two TE");
    CHECK_INT(RESP("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), RV_EPARSE, "TE on 1.0 response");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"), RV_EPARSE, "NUL in response header");
    CHECK_INT(respn("HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n", 27, false), RV_EPARSE, "NUL in response header (len)");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), RV_EPARSE, "obs-fold in response");
    CHECK_INT(RESP("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), RV_EPARSE, "bare LF response");
    CHECK_INT(RESP("HTTP/1.1 200 OK\r\nX : y\r\n\r\n"), RV_EPARSE, "space before colon in response");
    CHECK_INT(RESP("HTTP/1.1 20 OK\r\n\r\n"), RV_EPARSE, "two-digit status");
    CHECK_INT(RESP("HTTP/1.1 2000 OK\r\n\r\n"), RV_EPARSE, "four-digit status");
    CHECK_INT(RESP("HTTP/1.1 099 X\r\n\r\n"), RV_EPARSE, "status below 100");
    CHECK_INT(RESP("HTTP/1.1  200 OK\r\n\r\n"), RV_EPARSE, "two spaces");
    CHECK_INT(RESP("HTTP/1.2 200 OK\r\n\r\n"), RV_EPARSE, "HTTP/1.2 response");
    CHECK_INT(RESP("HTTP/2 200 OK\r\n\r\n"), RV_EPARSE, "HTTP/2 response");
    CHECK_INT(RESP("HTTP/1.1 200 O\x01K\r\n\r\n"), RV_EPARSE, "CTL in reason");
    CHECK_INT(RESP("ICY"), RV_EPARSE, "not HTTP: rejected before any LF");
    CHECK_INT(RESP("HTT"), RV_EAGAIN, "prefix of HTTP/: wait");
    CHECK_INT(RESP("\r\nHTTP/1.1 200 OK\r\n\r\n"), RV_EPARSE, "leading CRLF not skipped on responses");

    rv_h1_limits_t small = { 100, 30, 2 };
    CHECK_INT(rv_h1_parse_response("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 39, &small, H, false, &S),
              RV_ETOOBIG, "too many response headers");
    CHECK_INT(rv_h1_parse_response("HTTP/1.1 200 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 49, &small, H, false, &S),
              RV_ETOOBIG, "status line too long");
    memset(big, 'x', 200);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    CHECK_INT(rv_h1_parse_response(big, 200, &small, H, false, &S), RV_ETOOBIG, "response head too large");
    CHECK_INT(rv_h1_parse_response(big, 99, &small, H, false, &S), RV_EAGAIN, "under the limit: wait");
}

static void test_chunked(void)
{
    scan_res_t r;
    static const char b1[] = "5\r\nhello\r\n6;ext=v\r\n world\r\n0\r\n\r\n";
    r = SCAN(b1);
    CHECK_INT(r.rc, 1, "complete chunked body");
    CHECK_INT(r.consumed, sizeof b1 - 1, "consumed the whole body");
    CHECK_INT(r.payload, 11, "11 data bytes");
    CHECK_INT(split_disagreements(b1, sizeof b1 - 1), 0, "b1: identical under every split");

    static const char b2[] = "3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
    r = SCAN(b2);
    CHECK_INT(r.rc, 1, "end found with bytes after it");
    CHECK_INT(r.consumed, 13, "consumed stops at the end of the message");
    CHECK_INT(split_disagreements(b2, sizeof b2 - 1), 0, "b2: identical under every split");

    static const char b3[] = "A\r\n0123456789\r\n00000000000000000001\r\nx\r\n0;a=\"q\\\"d\";b;c=t\r\n"
                             "Trailer-A: 1\r\nx-b:\r\n\r\n";
    r = SCAN(b3);
    CHECK_INT(r.rc, 1, "uppercase hex, leading zeros, quoted ext, trailers");
    CHECK_INT(r.payload, 11, "payload 10 + 1");
    CHECK_INT(r.consumed, sizeof b3 - 1, "all consumed");
    CHECK_INT(split_disagreements(b3, sizeof b3 - 1), 0, "b3: identical under every split");
    {
        /* trailer_fields: the field lines' bytes, not the final CRLF (what the proxy cuts) */
        rv_h1_chunked_t ck;
        size_t used = 0;
        rv_h1_chunked_init(&ck);
        CHECK_INT(rv_h1_chunked_scan(&ck, b3, sizeof b3 - 1, &used, NULL), 1, "b3 again");
        CHECK_INT(ck.trailer_fields, strlen("Trailer-A: 1\r\nx-b:\r\n"), "trailer field bytes counted");
        CHECK_INT(ck.trailer_bytes - ck.trailer_fields, 2, "the final CRLF is not a field byte");
        rv_h1_chunked_init(&ck);
        CHECK_INT(rv_h1_chunked_scan(&ck, b1, sizeof b1 - 1, &used, NULL), 1, "b1 again");
        CHECK_INT(ck.trailer_fields, 0, "no trailers: no field bytes");
    }

    static const char b4[] = "7fffffffffffffff\r\nabc";
    r = SCAN(b4);
    CHECK(r.rc == 0 && r.consumed == sizeof b4 - 1 && r.payload == 3, "2^63-1 chunk accepted, data streams");

    /* item 4: chunk-size and syntax */
    r = SCAN("10000000000000001\r\nx\r\n0\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 16, "17 significant digits rejected at the 17th");
    r = SCAN("8000000000000000\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 15, "2^63 rejected");
    r = SCAN("ffffffffffffffff\r\n");
    CHECK(r.rc == RV_EPARSE, "2^64-1 rejected");
    r = SCAN("0x1\r\nx\r\n0\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 1, "'0x1' rejected at the x");
    r = SCAN("-1\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 0, "negative size");
    r = SCAN("+1\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 0, "signed size");
    r = SCAN("\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 0, "empty size line");
    r = SCAN(" 1\r\nx\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 0, "space before size");
    r = SCAN("1 \r\nx\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 1, "space after size");
    r = SCAN("1;a\nX");
    CHECK(r.rc == RV_EPARSE && r.consumed == 3, "ext with bare LF");
    r = SCAN("1\nx\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 1, "bare LF after size");
    r = SCAN("1\rx\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 2, "bare CR after size");
    r = SCAN("1\r\nxy\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 4 && r.payload == 1, "missing CRLF after data");
    r = SCAN("1\r\nx\n0\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 4, "bare LF after data");
    r = SCAN("1\r\nx\r0\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 5, "bare CR after data");
    r = SCAN("1;\r\nx\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 2, "empty ext name");
    r = SCAN("1; a\r\nx\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 2, "whitespace in ext");
    r = SCAN("1;a=\r\nx\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 4, "empty ext value");
    r = SCAN("1;a=\"x\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 6, "CR inside quoted ext");
    r = SCAN("1;a=\"x\"y\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 7, "junk after quoted ext");
    r = SCAN("1;a=b=c\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 5, "second '=' in ext");
    r = SCAN("g\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 0, "non-hex size");

    /* trailers */
    r = SCAN("0\r\nX_T: v\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 4, "underscore in trailer name");
    r = SCAN("0\r\nX-T: v\r\n fold\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 11, "obs-fold in trailers");
    r = SCAN("0\r\nX-T : v\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 6, "space before colon in trailer");
    r = SCAN("0\r\n: v\r\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 3, "empty trailer name");
    r = scan_all("0\r\nX: a\0b\r\n\r\n", 13);
    CHECK(r.rc == RV_EPARSE && r.consumed == 7, "NUL in trailer value");
    r = SCAN("0\r\nX: v\n\r\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 7, "bare LF in trailer");
    r = SCAN("0\r\n\n");
    CHECK(r.rc == RV_EPARSE && r.consumed == 3, "bare LF as the final line");
    r = SCAN("0\r\n\r\r");
    CHECK(r.rc == RV_EPARSE && r.consumed == 4, "CR CR at the end");

    /* line and section limits */
    size_t k = 0;
    big[k++] = '1';
    big[k++] = ';';
    big[k++] = 'e';
    big[k++] = '=';
    memset(big + k, 'v', RV_H1_CHUNK_LINE_MAX);
    k += RV_H1_CHUNK_LINE_MAX;
    memcpy(big + k, "\r\nx\r\n0\r\n\r\n", 10);
    k += 10;
    r = scan_all(big, k);
    CHECK(r.rc == RV_EPARSE && r.consumed == RV_H1_CHUNK_LINE_MAX, "over-long chunk extension");
    k = RV_H1_CHUNK_LINE_MAX - 1;
    memcpy(big + k, "\r\nx\r\n0\r\n\r\n", 10);
    r = scan_all(big, k + 10);
    CHECK_INT(r.rc, 1, "extension just under the line limit ok");
    memcpy(big, "0\r\nX: ", 6);
    memset(big + 6, 'v', RV_H1_CHUNK_LINE_MAX);
    memcpy(big + 6 + RV_H1_CHUNK_LINE_MAX, "\r\n\r\n", 4);
    r = scan_all(big, 10 + RV_H1_CHUNK_LINE_MAX);
    CHECK(r.rc == RV_EPARSE, "over-long trailer line");
    k = 0;
    memcpy(big, "0\r\n", 3);
    k = 3;
    for (int i = 0; i < 70; i++) {
        k += (size_t)snprintf(big + k, 1200, "T%d: ", i);
        memset(big + k, 'v', 1000);
        k += 1000;
        memcpy(big + k, "\r\n", 2);
        k += 2;
    }
    memcpy(big + k, "\r\n", 2);
    k += 2;
    r = scan_all(big, k);
    CHECK(r.rc == RV_EPARSE && r.consumed < 62 * 1024, "trailer section over 60 KiB");
    r = scan_all(big, 3 + 40 * 1006);
    CHECK(r.rc == 0, "40 KiB of trailers still fine (incomplete)");

    /* many chunks: per-line counters restart on every size line */
    k = 0;
    for (int i = 0; i < 40; i++) {
        memcpy(big + k, "00000000000000001;e=v\r\na\r\n", 26);
        k += 26;
    }
    memcpy(big + k, "0\r\n\r\n", 5);
    k += 5;
    r = scan_all(big, k);
    CHECK(r.rc == 1 && r.consumed == k && r.payload == 40, "40 chunks with 17-digit zero-padded sizes");
    CHECK_INT(split_disagreements(big, k), 0, "40 chunks: identical under every split");

    /* after the end */
    {
        rv_h1_chunked_t c;
        size_t used = 99;
        uint64_t pl = 99;
        rv_h1_chunked_init(&c);
        CHECK_INT(rv_h1_chunked_scan(&c, "0\r\n\r\n", 5, &used, &pl), 1, "last chunk only");
        CHECK(used == 5 && pl == 0, "consumed 5, payload 0");
        CHECK_INT(rv_h1_chunked_scan(&c, "abc", 3, &used, NULL), 1, "call after the end: still 1");
        CHECK_INT(used, 0, "and consumes nothing");
        rv_h1_chunked_t z;
        memset(&z, 0, sizeof z);
        CHECK_INT(rv_h1_chunked_scan(&z, "1\r\na\r\n0\r\n\r\n", 11, &used, &pl), 1, "zeroed struct works");
    }

    /* split invariance over valid and invalid bodies */
    static const char *bodies[] = {
        "1\r\na\r\n0\r\n\r\n",
        "10\r\n0123456789abcdef\r\n0\r\nA: b\r\nC: d\r\n\r\n",
        "2;x=\"a\\\\b\";y\r\nhi\r\n0\r\n\r\n",
        "10000000000000001\r\n",
        "1\r\nxy",
        "0\r\nX_Y: z\r\n\r\n",
        "3\r\nabc\r\n0\r\n\r\ntail",
        "1;a\nX",
        "4\r\nab\r\n\r\n0\r\n\r\n",
    };
    int total = 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(bodies); i++)
        total += split_disagreements(bodies[i], strlen(bodies[i]));
    CHECK_INT(total, 0, "9 bodies: byte-by-byte, every 2-way split and random splits agree");
}

static void test_helpers(void)
{
    rv_str_t list = RV_STR(" , keep-alive ,\tUpgrade\t,, x y ,"), tok;
    CHECK(rv_h1_next_token(&list, &tok), "first token");
    CHECK_STRN(tok.ptr, tok.len, "keep-alive", "OWS and empty elements skipped");
    CHECK(rv_h1_next_token(&list, &tok), "second token");
    CHECK_STRN(tok.ptr, tok.len, "Upgrade", "tab trimmed");
    CHECK(rv_h1_next_token(&list, &tok), "third token");
    CHECK_STRN(tok.ptr, tok.len, "x y", "inner space kept");
    CHECK(!rv_h1_next_token(&list, &tok), "end of list");
    rv_str_t empty = RV_STR_NULL;
    CHECK(!rv_h1_next_token(&empty, &tok), "empty list");

    rv_header_t hs[2] = { { RV_STR("Content-Type"), RV_STR("a") }, { RV_STR("content-type"), RV_STR("b") } };
    const rv_header_t *h = rv_h1_find_header(hs, 2, RV_STR("CONTENT-TYPE"));
    CHECK(h == &hs[0], "find_header: first match, case-insensitive");
    CHECK(rv_h1_find_header(hs, 2, RV_STR("content-typ")) == NULL, "find_header: absent");

    CHECK(strcmp(rv_http_reason(200), "OK") == 0, "reason 200");
    CHECK(strcmp(rv_http_reason(404), "Not Found") == 0, "reason 404");
    CHECK(strcmp(rv_http_reason(431), "Request Header Fields Too Large") == 0, "reason 431");
    CHECK(strcmp(rv_http_reason(505), "HTTP Version Not Supported") == 0, "reason 505");
    CHECK(strcmp(rv_http_reason(308), "Permanent Redirect") == 0, "reason 308");
    CHECK(strcmp(rv_http_reason(421), "Misdirected Request") == 0, "reason 421");
    CHECK(strcmp(rv_http_reason(799), "Unknown") == 0, "unknown status");
    static const int codes[] = { 200, 301, 302, 303, 304, 307, 308, 400, 403, 404, 408, 413,
                                 414, 417, 421, 431, 500, 501, 502, 503, 504, 505 };
    int missing = 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(codes); i++)
        if (strcmp(rv_http_reason(codes[i]), "Unknown") == 0)
            missing++;
    CHECK_INT(missing, 0, "every status rivet emits has a reason");
}

int main(void)
{
    test_basic_request();
    test_prefixes_and_pipelining();
    test_version_and_keepalive();
    test_request_line();
    test_absolute_form();
    test_headers_syntax();
    test_host();
    test_smuggling();
    test_limits();
    test_byte_sweeps();
    test_response();
    test_chunked();
    test_helpers();
    TEST_DONE();
}
