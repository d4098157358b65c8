/*
 * test_rewrite.c - prefixRewrite (slash joining, case, exact/regex matchers), regexRewrite,
 * and redirect Location values (scheme, host, port, path, query, CR/LF defence).
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/regex.h"
#include "proxy/rewrite.h"
#include "test.h"

static rv_arena_t A;
static rv_regex_t *regexes[16];
static int nregexes;

static rv_regex_t *re(const char *pat)
{
    char err[128];
    rv_regex_t *r = rv_regex_compile(rv_cstr(pat), false, err, sizeof err);
    if (!r) {
        printf("# bad test regex %s: %s\n", pat, err);
        exit(2);
    }
    regexes[nregexes++] = r;
    return r;
}

static rv_route_t prefix_route(const char *prefix, const char *rewrite)
{
    rv_route_t r = { 0 };
    r.match.path_kind = RV_PATH_PREFIX;
    r.match.path = rv_cstr(prefix);
    r.match.case_sensitive = true;
    if (rewrite) {
        r.opts.has_prefix_rewrite = true;
        r.opts.prefix_rewrite = rv_cstr(rewrite);
    }
    return r;
}

/* Rewrite path with r; "" on error so the comparison fails visibly. */
static rv_str_t rw(const rv_route_t *r, const char *path, int *rc)
{
    rv_str_t out = RV_STR("<error>");
    *rc = rv_rewrite_path(r, rv_cstr(path), &A, &out);
    return out;
}

static void test_prefix_rewrite(void)
{
    static const struct {
        const char *prefix, *rewrite, *path, *want;
    } cases[] = {
        { "/api/", "/", "/api/users", "/users" },
        { "/api", "/", "/api/users", "/users" },       /* no double slash */
        { "/api", "/", "/api", "/" },
        { "/api", "/", "/apiv2", "/v2" },
        { "/api", "/v2", "/api/users", "/v2/users" },
        { "/api/", "/v2/", "/api/users", "/v2/users" },
        { "/api/", "/v2", "/api/users", "/v2users" },  /* Envoy: plain replacement */
        { "/api", "/v2/", "/api/users", "/v2/users" }, /* slash dropped at the join */
        { "/api", "", "/api/users", "/users" },
        { "/api/", "", "/api/users", "/users" },       /* leading slash restored */
        { "/api", "", "/api", "/" },
        { "/", "/", "/x/y", "/x/y" },
        { "/", "/base", "/x", "/basex" },
        { "/", "/base/", "/x", "/base/x" },
        { "/api", "v2", "/api/x", "/v2/x" },           /* rewrite without leading slash */
        { "/a", "/b", "/a//c", "/b//c" },              /* only the junction is touched */
        { "/api", "/x", "/other", "/other" },           /* not matched: unchanged */
        { "", "/p", "/x", "/p/x" },                     /* empty prefix */
    };
    for (size_t i = 0; i < RV_ARRAY_LEN(cases); i++) {
        rv_route_t r = prefix_route(cases[i].prefix, cases[i].rewrite);
        int rc;
        rv_str_t out = rw(&r, cases[i].path, &rc);
        CHECK(rc == 0, "rc 0 for %s", cases[i].path);
        CHECK_STRN(out.ptr, out.len, cases[i].want, "prefix '%s' rewrite '%s' on %s", cases[i].prefix,
                   cases[i].rewrite, cases[i].path);
    }

    rv_route_t r = prefix_route("/api", "/");
    rv_str_t path = RV_STR("/api/users"), out;
    CHECK(rv_rewrite_path(&r, path, &A, &out) == 0 && out.ptr == path.ptr + 4 && out.len == 6,
          "'/api' + '/' borrows the request path (no copy)");
    r = prefix_route("/api", NULL);
    CHECK(rv_rewrite_path(&r, path, &A, &out) == 0 && out.ptr == path.ptr && out.len == path.len,
          "no rewrite: the path itself");

    r = prefix_route("/API", "/v1");
    r.match.case_sensitive = false;
    int rc;
    out = rw(&r, "/api/x", &rc);
    CHECK_STRN(out.ptr, out.len, "/v1/x", "caseless prefix rewrite");
    r.match.case_sensitive = true;
    out = rw(&r, "/api/x", &rc);
    CHECK_STRN(out.ptr, out.len, "/api/x", "case-sensitive prefix does not match: unchanged");

    r = prefix_route("/old", "/new");
    r.match.path_kind = RV_PATH_EXACT;
    out = rw(&r, "/old", &rc);
    CHECK_STRN(out.ptr, out.len, "/new", "exact route: whole path replaced");
    out = rw(&r, "/old/x", &rc);
    CHECK_STRN(out.ptr, out.len, "/old/x", "exact route, other path: unchanged");

    r = prefix_route("", "/all");
    r.match.path_kind = RV_PATH_REGEX;
    r.match.path_re = re("/v[0-9]/.*");
    out = rw(&r, "/v1/x", &rc);
    CHECK_STRN(out.ptr, out.len, "/all", "regex route: the match is the whole path");

    r = prefix_route("/api", "/p");
    r.opts.regex_rewrite = re("p");
    r.opts.regex_substitution = RV_STR("Q");
    out = rw(&r, "/api/up", &rc);
    CHECK_STRN(out.ptr, out.len, "/p/up", "prefixRewrite wins over regexRewrite");
}

static void test_regex_rewrite(void)
{
    rv_route_t r = prefix_route("/", NULL);
    r.opts.regex_rewrite = re("^/service/([^/]+)(/.*)$");
    r.opts.regex_substitution = RV_STR("\\2/instance/\\1");
    int rc;
    rv_str_t out = rw(&r, "/service/foo/v1/api", &rc);
    CHECK(rc == 0, "regex rewrite rc");
    CHECK_STRN(out.ptr, out.len, "/v1/api/instance/foo", "groups substituted");
    out = rw(&r, "/other/x", &rc);
    CHECK_STRN(out.ptr, out.len, "/other/x", "no match: path kept");

    r.opts.regex_rewrite = re("o");
    r.opts.regex_substitution = RV_STR("0");
    out = rw(&r, "/foo/boo", &rc);
    CHECK_STRN(out.ptr, out.len, "/f00/b00", "every match replaced");

    r.opts.regex_rewrite = re("^/api");
    r.opts.regex_substitution = RV_STR("");
    out = rw(&r, "/api", &rc);
    CHECK_STRN(out.ptr, out.len, "/", "empty result becomes /");
    r.opts.regex_rewrite = re("^/api/");
    out = rw(&r, "/api/x", &rc);
    CHECK_STRN(out.ptr, out.len, "/x", "leading slash restored");

    /* output far larger than the first buffer guess: the buffer grows */
    r.opts.regex_rewrite = re("a");
    r.opts.regex_substitution = RV_STR("0123456789");
    char path[1001];
    path[0] = '/';
    memset(path + 1, 'a', 999);
    path[1000] = '\0';
    out = rw(&r, path, &rc);
    CHECK(rc == 0 && out.len == 1 + 999 * 10, "grown buffer (len %zu)", out.len);
    CHECK(out.len > 20 && memcmp(out.ptr, "/01234567890123456789", 21) == 0, "grown buffer content");

    /* beyond 64 KiB: the request fails */
    char *big = malloc(8001);
    big[0] = '/';
    memset(big + 1, 'a', 7999);
    big[8000] = '\0';
    out = rw(&r, big, &rc);
    CHECK_INT(rc, RV_ENOMEM, "rewrite result beyond 64 KiB refused");
    free(big);
}

/* Location for route r and a request. */
static rv_str_t loc(const rv_route_t *r, const char *host, const char *path, const char *query, bool tls)
{
    rv_req_view_t req = { 0 };
    req.method = RV_STR("GET");
    req.host = rv_cstr(host);
    req.path = rv_cstr(path);
    req.query = rv_cstr(query);
    rv_str_t out = RV_STR("<error>");
    if (rv_redirect_location(r, &req, tls, &A, &out) != 0)
        return RV_STR("<error>");
    return out;
}

static rv_route_t redirect_route(void)
{
    rv_route_t r = prefix_route("/", NULL);
    r.action.kind = RV_ACTION_REDIRECT;
    r.action.redirect.code = 301;
    return r;
}

static void test_redirect(void)
{
    rv_route_t r = redirect_route();
    rv_str_t o;
#define LOC(want, host, path, query, tls, what)                                                   \
    do {                                                                                        \
        o = loc(&r, host, path, query, tls);                                                    \
        CHECK_STRN(o.ptr, o.len, want, what);                                                   \
    } while (0)

    LOC("http://a.com/x?q=1", "a.com", "/x", "q=1", false, "nothing set: same URL");
    LOC("https://a.com/x?q=1", "a.com", "/x", "q=1", true, "TLS request keeps https");
    LOC("http://a.com:8080/x", "a.com:8080", "/x", "", false, "port kept");

    r.action.redirect.host = RV_STR("google.com");
    LOC("http://google.com/x?q=1", "a.com:8080", "/x", "q=1", false, "hostRedirect replaces host and port");
    LOC("https://google.com/x", "a.com", "/x", "", true, "hostRedirect over TLS");

    r = redirect_route();
    r.action.redirect.https = true;
    LOC("https://a.com/x?q=1", "a.com", "/x", "q=1", false, "httpsRedirect");
    LOC("https://a.com/x", "a.com:80", "/x", "", false, "httpsRedirect drops :80");
    LOC("https://a.com:8080/x", "a.com:8080", "/x", "", false, "httpsRedirect keeps a non-default port");
    LOC("https://a.com:443/x", "a.com:443", "/x", "", true, "already https: untouched");
    LOC("https://[::1]/x", "[::1]:80", "/x", "", false, "httpsRedirect on IPv6 literal drops :80");
    LOC("https://[::1]:8080/x", "[::1]:8080", "/x", "", false, "IPv6 literal keeps other port");
    r.action.redirect.host = RV_STR("b.com");
    LOC("https://b.com/x", "a.com:80", "/x", "", false, "httpsRedirect + hostRedirect");
    r.action.redirect.host = RV_STR("b.com:80");
    LOC("https://b.com:80/x", "a.com", "/x", "", false, "hostRedirect port kept as written");

    r = redirect_route();
    r.action.redirect.port = 8443;
    LOC("http://a.com:8443/x", "a.com:8080", "/x", "", false, "portRedirect replaces the port");
    LOC("http://a.com:8443/x", "a.com", "/x", "", false, "portRedirect adds a port");
    LOC("http://[::1]:8443/x", "[::1]:8080", "/x", "", false, "portRedirect on IPv6 literal");
    r.action.redirect.https = true;
    LOC("https://a.com:8443/x?q", "a.com:80", "/x", "q", false, "portRedirect + httpsRedirect");
    r.action.redirect.host = RV_STR("b.com:1234");
    r.action.redirect.port = 9000;
    LOC("https://b.com:9000/x", "a.com", "/x", "", false, "portRedirect replaces a hostRedirect port");
    r.action.redirect.port = 443;
    r.action.redirect.host = RV_STR_NULL;
    LOC("https://a.com:443/x", "a.com", "/x", "", false, "portRedirect written out even if default (Envoy)");

    r = redirect_route();
    r.action.redirect.path_kind = RV_REDIRECT_PATH_REPLACE;
    r.action.redirect.path = RV_STR("/new");
    LOC("http://a.com/new?q=1", "a.com", "/old/x", "q=1", false, "pathRedirect keeps the query");
    r.action.redirect.strip_query = true;
    LOC("http://a.com/new", "a.com", "/old/x", "q=1", false, "stripQuery");
    r.action.redirect.path = RV_STR("/new?a=b");
    LOC("http://a.com/new?a=b", "a.com", "/old/x", "q=1", false, "query in pathRedirect survives stripQuery");
    r.action.redirect.strip_query = false;
    LOC("http://a.com/new?a=b", "a.com", "/old/x", "q=1", false, "query in pathRedirect replaces the query");
    r.action.redirect.path = RV_STR("/new?");
    LOC("http://a.com/new", "a.com", "/old", "q=1", false, "empty query in pathRedirect removes it");
    r.action.redirect.path = RV_STR("rel");
    LOC("http://a.com/rel", "a.com", "/old", "", false, "pathRedirect without slash made absolute");
    r.action.redirect.path = RV_STR("");
    LOC("http://a.com/", "a.com", "/old", "", false, "empty pathRedirect is /");

    r = redirect_route();
    r.match.path = RV_STR("/api");
    r.action.redirect.path_kind = RV_REDIRECT_PREFIX;
    r.action.redirect.path = RV_STR("/v2");
    LOC("http://a.com/v2/users?q=1", "a.com", "/api/users", "q=1", false, "redirect prefixRewrite");
    r.action.redirect.path = RV_STR("/");
    LOC("http://a.com/users", "a.com", "/api/users", "", false, "redirect prefixRewrite, no double slash");
    LOC("http://a.com/", "a.com", "/api", "", false, "redirect prefixRewrite of the whole path");
    r.action.redirect.strip_query = true;
    LOC("http://a.com/users", "a.com", "/api/users", "q=1", false, "redirect prefixRewrite + stripQuery");

    r = redirect_route();
    r.opts.regex_rewrite = re("^/u/([0-9]+)$");
    r.opts.regex_substitution = RV_STR("/users/\\1");
    LOC("http://a.com/users/42?x", "a.com", "/u/42", "x", false, "regexRewrite carried in opts");

    r = redirect_route();
    LOC("/x?q=1", "", "/x", "q=1", false, "no Host: relative Location");
    LOC("http://a.com/", "a.com", "", "", false, "empty path: /");

    /* CR/LF and other controls never reach the header */
    r.action.redirect.host = RV_STR("evil.com\r\nSet-Cookie: a=b");
    o = loc(&r, "a.com", "/x", "", false);
    CHECK(!memchr(o.ptr, '\r', o.len) && !memchr(o.ptr, '\n', o.len), "no CR/LF from hostRedirect");
    CHECK_STRN(o.ptr, o.len, "http://evil.com%0D%0ASet-Cookie:%20a=b/x", "controls percent-encoded");
    r.action.redirect.host = RV_STR_NULL;
    r.action.redirect.path_kind = RV_REDIRECT_PATH_REPLACE;
    r.action.redirect.path = RV_STR("/a\nb?c\rd");
    o = loc(&r, "a.com", "/x", "", false);
    CHECK_STRN(o.ptr, o.len, "http://a.com/a%0Ab?c%0Dd", "no CR/LF from pathRedirect");
    r.action.redirect.path_kind = RV_REDIRECT_PATH_KEEP;
    o = loc(&r, "a.com", "/x\x7f", "q=\x01", false);
    CHECK_STRN(o.ptr, o.len, "http://a.com/x%7F?q=%01", "DEL and controls from the request encoded");
    CHECK(o.ptr[o.len] == '\0', "NUL-terminated for convenience");
    /* every byte needs encoding, and the buffer is bigger than an arena chunk (ASan sees it) */
    enum { NC = 40000 };
    char *ctl = malloc(NC + 2);
    ctl[0] = '/';
    memset(ctl + 1, '\n', NC);
    ctl[NC + 1] = '\0';
    o = loc(&r, "a.com", ctl, "", false);
    CHECK_INT(o.len, strlen("http://a.com/") + 3 * NC, "40000 LFs all encoded");
    CHECK(!memchr(o.ptr, '\n', o.len), "none left raw");
    free(ctl);
#undef LOC
}

int main(void)
{
    rv_arena_init(&A, 0);
    test_prefix_rewrite();
    test_regex_rewrite();
    test_redirect();
    for (int i = 0; i < nregexes; i++)
        rv_regex_free(regexes[i]);
    rv_arena_free(&A);
    TEST_DONE();
}
