/*
 * test_router.c - virtual host selection (every domain rule), matchers (path, headers,
 * query, methods), first-match order, and the compiled index checked against the plain
 * in-order scan on large and adversarial tables.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/regex.h"
#include "proxy/router.h"
#include "test.h"

static rv_arena_t A; /* everything the tests build */
static rv_regex_t *regexes[64];
static int nregexes;

static rv_str_t fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static rv_str_t fmt(const char *f, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return rv_arena_str(&A, rv_str(buf, (size_t)n));
}

static rv_regex_t *re(const char *pat, bool caseless)
{
    char err[128];
    rv_regex_t *r = rv_regex_compile(rv_cstr(pat), caseless, err, sizeof err);
    if (!r) {
        printf("# bad test regex %s: %s\n", pat, err);
        exit(2);
    }
    regexes[nregexes++] = r;
    return r;
}

static rv_vhost_t vhost(const char *name, int nd, const char **doms)
{
    rv_vhost_t v = { 0 };
    v.name = rv_cstr(name);
    v.domains = RV_ARENA_NEWN(&A, rv_str_t, nd);
    for (int i = 0; i < nd; i++)
        v.domains[i] = rv_cstr(doms[i]);
    v.ndomains = (uint32_t)nd;
    return v;
}

#define VH(name, ...) vhost(name, (int)(sizeof((const char *[]){ __VA_ARGS__ }) / sizeof(const char *)), \
                            (const char *[]){ __VA_ARGS__ })

static void set_path(rv_route_t *r, int kind, rv_str_t p)
{
    r->match.path_kind = kind;
    r->match.path = p;
    r->match.case_sensitive = true;
}

static rv_req_view_t rq(const char *method, const char *path, const char *query, const char *host)
{
    rv_req_view_t v = { 0 };
    v.method = rv_cstr(method);
    v.path = rv_cstr(path);
    v.query = rv_cstr(query);
    v.host = rv_cstr(host);
    return v;
}

static const char *vname(const rv_vhost_t *v)
{
    return v ? v->name.ptr : "(none)";
}

/* Build a snapshot around one listener. */
static rv_snapshot_t snap1(rv_listener_cfg_t *l)
{
    rv_snapshot_t s = { 0 };
    rv_arena_init(&s.arena, 0);
    s.listeners = l;
    s.nlisteners = 1;
    return s;
}

/* ---- hosts ------------------------------------------------------------------------- */

static void test_split_port(void)
{
    rv_str_t port, n;
    n = rv_host_split_port(RV_STR("a.com:8080"), &port);
    CHECK_STRN(n.ptr, n.len, "a.com", "split name");
    CHECK_STRN(port.ptr, port.len, "8080", "split port");
    n = rv_host_split_port(RV_STR("a.com"), &port);
    CHECK(n.len == 5 && port.ptr == NULL, "no port");
    n = rv_host_split_port(RV_STR("[::1]:8080"), &port);
    CHECK_STRN(n.ptr, n.len, "[::1]", "IPv6 literal name");
    CHECK_STRN(port.ptr, port.len, "8080", "IPv6 literal port");
    n = rv_host_split_port(RV_STR("[::1]"), &port);
    CHECK(n.len == 5 && port.ptr == NULL, "IPv6 literal without port");
    n = rv_host_split_port(RV_STR("::1"), &port);
    CHECK(n.len == 3 && port.ptr == NULL, "bare IPv6 has no port");
    n = rv_host_split_port(RV_STR("a.com:"), &port);
    CHECK(n.len == 5 && port.ptr != NULL && port.len == 0, "empty port");
    n = rv_host_split_port(RV_STR("a.com:80x"), &port);
    CHECK(n.len == 9 && port.ptr == NULL, "non-digit port is not a port");
    n = rv_host_split_port(RV_STR("[::1]x"), &port);
    CHECK(n.len == 6 && port.ptr == NULL, "junk after IPv6 literal");
    n = rv_host_split_port(RV_STR(""), NULL);
    CHECK(n.len == 0, "empty host");
}

static void test_domains(void)
{
    rv_vhost_t vh[] = {
        VH("exact", "api.example.com"),
        VH("sfx", "*.example.com"),
        VH("sfx-b", "*.b.example.com"),
        VH("pfx", "api.*"),
        VH("pfx-long", "api.ex*"),
        VH("any", "*"),
        VH("port", "a.com:8080"),
        VH("noport", "a.com"),
        VH("v6", "[::1]", "[2001:db8::1]:9090"),
        VH("mixed", "Mixed.Example.ORG"),
        VH("dup", "api.example.com", "dup.example.net"),
        VH("z", "z.com"),
        VH("sfx-port", "*.com:8080"),
        VH("empty", ""),
        VH("dup-sfx-1", "*.dup.org", "dupp.*"),
        VH("dup-sfx-2", "*.dup.org", "*.x.dup.org", "dupp.*"),
    };
    rv_listener_cfg_t l = { 0 };
    l.vhosts = vh;
    l.nvhosts = RV_ARRAY_LEN(vh);
    rv_listener_cfg_t lin = l; /* never built: the linear fallback */
    rv_snapshot_t s = snap1(&l);
    CHECK_INT(rv_router_build(&s), 0, "build");
    CHECK(l.index != NULL, "index attached to the listener");

    static const struct {
        const char *host, *want;
    } cases[] = {
        { "api.example.com", "exact" },         /* exact beats *.example.com and api.* */
        { "API.Example.COM", "exact" },         /* case-insensitive */
        { "x.example.com", "sfx" },
        { "a.b.example.com", "sfx-b" },         /* longest suffix wins */
        { "x.y.b.example.com", "sfx-b" },       /* wildcard spans several labels */
        { "b.example.com", "sfx" },             /* "*.b.example.com" needs a char before ".b" */
        { ".example.com", "any" },              /* wildcard matches at least one char */
        { "example.com", "any" },
        { "api.foo", "pfx" },
        { "api.exfoo", "pfx-long" },            /* longest prefix wins */
        { "api.ex", "pfx" },                    /* "api.ex*" needs one more char */
        { "api.", "any" },                      /* "api.*" needs one char */
        { "api.x.example.com", "sfx" },         /* suffix beats prefix */
        { "a.com:8080", "port" },               /* a domain naming the port */
        { "A.COM:8080", "port" },
        { "a.com", "noport" },
        { "a.com:9090", "noport" },             /* port stripped, then retried */
        { "a.com:", "noport" },
        { "x.example.com:443", "sfx" },         /* stripped, then suffix */
        { "api.foo:8080", "pfx" },
        { "[::1]", "v6" },
        { "[::1]:8080", "v6" },
        { "[::2]:8080", "any" },
        { "[2001:db8::1]:9090", "v6" },
        { "[2001:db8::1]:9091", "any" },
        { "[2001:db8::1]", "any" },
        { "mixed.example.org", "mixed" },       /* upper-case config domain still matches */
        { "MIXED.example.org:1", "mixed" },
        { "dup.example.net", "dup" },           /* duplicate domain: first vhost kept it */
        { "z.com:8080", "z" },                  /* exact (port stripped) beats a port wildcard */
        { "y.com:8080", "sfx-port" },
        { "y.com", "any" },
        { "", "any" },
        { "unknown.org", "any" },
        { "a.dup.org", "dup-sfx-1" },           /* duplicate wildcard: the first vhost keeps it */
        { "a.x.dup.org", "dup-sfx-2" },
        { "dupp.a", "dup-sfx-1" },
    };
    for (size_t i = 0; i < RV_ARRAY_LEN(cases); i++) {
        const rv_vhost_t *got = rv_router_find_vhost(&l, rv_cstr(cases[i].host));
        CHECK(got && strcmp(got->name.ptr, cases[i].want) == 0, "host '%s' -> %s (got %s)", cases[i].host,
              cases[i].want, vname(got));
        const rv_vhost_t *g2 = rv_router_find_vhost(&lin, rv_cstr(cases[i].host));
        CHECK(g2 == got, "linear fallback agrees on '%s' (got %s)", cases[i].host, vname(g2));
    }

    /* without "*", unknown hosts find nothing */
    rv_vhost_t vh2[] = { VH("only", "only.com", "*.only.com") };
    rv_listener_cfg_t l2 = { 0 };
    l2.vhosts = vh2;
    l2.nvhosts = 1;
    rv_snapshot_t s2 = snap1(&l2);
    CHECK_INT(rv_router_build(&s2), 0, "build 2");
    CHECK(rv_router_find_vhost(&l2, RV_STR("other.com")) == NULL, "no match without '*'");
    CHECK(rv_router_find_vhost(&l2, RV_STR("")) == NULL, "empty host, no '*'");
    CHECK(rv_router_find_vhost(&l2, RV_STR("xonly.com")) == NULL, "suffix is '.only.com', not 'only.com'");
    CHECK(rv_router_find_vhost(&l2, RV_STR("a.only.com:1")) == &vh2[0], "suffix with port");

    /* empty listener */
    rv_listener_cfg_t l3 = { 0 };
    rv_snapshot_t s3 = snap1(&l3);
    CHECK_INT(rv_router_build(&s3), 0, "build empty listener");
    CHECK(rv_router_find_vhost(&l3, RV_STR("a.com")) == NULL, "empty listener");
    CHECK(rv_router_find_vhost(NULL, RV_STR("a.com")) == NULL, "NULL listener");

    rv_arena_free(&s.arena);
    rv_arena_free(&s2.arena);
    rv_arena_free(&s3.arena);
}

/* 1,000 virtual hosts with every kind of domain, including nested suffixes. */
static void test_many_domains(void)
{
    enum { N = 1000 };
    rv_vhost_t *vh = RV_ARENA_NEWN(&A, rv_vhost_t, N + 2);
    for (int i = 0; i < N; i++) {
        vh[i].name = fmt("vh%d", i);
        vh[i].domains = RV_ARENA_NEWN(&A, rv_str_t, 2);
        switch (i % 4) {
        case 0:
            vh[i].domains[0] = fmt("svc%d.example.com", i);
            vh[i].domains[1] = fmt("svc%d.example.com:8443", i);
            vh[i].ndomains = 2;
            break;
        case 1:
            vh[i].domains[0] = fmt("*.zone%d.example.com", i);
            vh[i].ndomains = 1;
            break;
        case 2:
            vh[i].domains[0] = fmt("host%d.*", i);
            vh[i].ndomains = 1;
            break;
        default: /* nested inside zone(i-2) */
            vh[i].domains[0] = fmt("*.n%d.zone%d.example.com", i, i - 2);
            vh[i].ndomains = 1;
            break;
        }
    }
    vh[N] = VH("parent", "*.example.com");
    vh[N + 1] = VH("any", "*");
    rv_listener_cfg_t l = { 0 };
    l.vhosts = vh;
    l.nvhosts = N + 2;
    rv_listener_cfg_t lin = l;
    rv_snapshot_t s = snap1(&l);
    CHECK_INT(rv_router_build(&s), 0, "build 1000 domains");

    int bad = 0, bad_lin = 0;
    char h[128];
    for (int i = 0; i < N; i++) {
        const rv_vhost_t *want = &vh[i];
        switch (i % 4) {
        case 0:
            snprintf(h, sizeof h, "SVC%d.example.com", i);
            break;
        case 1:
            snprintf(h, sizeof h, "a.b.zone%d.example.com", i);
            break;
        case 2:
            snprintf(h, sizeof h, "host%d.anything:80", i);
            break;
        default:
            snprintf(h, sizeof h, "q.n%d.zone%d.example.com", i, i - 2);
            break;
        }
        if (rv_router_find_vhost(&l, rv_cstr(h)) != want)
            bad++;
        if (rv_router_find_vhost(&lin, rv_cstr(h)) != want)
            bad_lin++;
    }
    CHECK_INT(bad, 0, "every one of 1000 vhosts found by its domain (indexed)");
    CHECK_INT(bad_lin, 0, "every one of 1000 vhosts found by its domain (linear)");
    CHECK(rv_router_find_vhost(&l, RV_STR("q.m.zone1.example.com")) == &vh[1], "outer zone when inner misses");
    CHECK(rv_router_find_vhost(&l, RV_STR("q.n3.zone1.example.com")) == &vh[3], "inner zone");
    CHECK(rv_router_find_vhost(&l, RV_STR("n3.zone1.example.com")) == &vh[1], "inner needs one more char");
    CHECK(rv_router_find_vhost(&l, RV_STR("svc0.example.com:8443")) == &vh[0], "exact with port");
    CHECK(rv_router_find_vhost(&l, RV_STR("svc1.example.com")) == &vh[N], "parent suffix");
    CHECK(rv_router_find_vhost(&l, RV_STR("example.org")) == &vh[N + 1], "any");

    /* random hosts assembled from the same pieces: the index agrees with the linear rules */
    uint64_t seed = 88172645463325252ull;
    int disagree = 0;
    for (int k = 0; k < 20000; k++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        int i = (int)(seed % N), j = (int)((seed >> 20) % N);
        static const char *pre[] = { "", "x.", "svc", "host", "a.n", "zone", "SVC", "q.n" };
        static const char *mid[] = { ".zone", ".example.com", ".", "", ".n" };
        static const char *post[] = { "", ".example.com", ":8443", ":80", ".example.com:8443", "x" };
        snprintf(h, sizeof h, "%s%d%s%d%s", pre[(seed >> 30) % 8], i, mid[(seed >> 40) % 5], j,
                 post[(seed >> 50) % 6]);
        if (rv_router_find_vhost(&l, rv_cstr(h)) != rv_router_find_vhost(&lin, rv_cstr(h))) {
            if (disagree++ < 5)
                printf("# disagree on %s\n", h);
        }
    }
    CHECK_INT(disagree, 0, "index and linear rules agree on 20000 random hosts");
    rv_arena_free(&s.arena);
}

/* ---- matchers ---------------------------------------------------------------------- */

static void test_path_matchers(void)
{
    rv_matcher_t m = { 0 };
    m.case_sensitive = true;
    m.path_kind = RV_PATH_PREFIX;
    m.path = RV_STR("/api");
    rv_req_view_t r = rq("GET", "/api/x", "", "h");
    CHECK(rv_matcher_matches(&m, &r), "prefix /api ~ /api/x");
    r.path = RV_STR("/api");
    CHECK(rv_matcher_matches(&m, &r), "prefix /api ~ /api");
    r.path = RV_STR("/apix");
    CHECK(rv_matcher_matches(&m, &r), "prefix is a plain string prefix (/apix)");
    r.path = RV_STR("/ap");
    CHECK(!rv_matcher_matches(&m, &r), "prefix longer than path");
    r.path = RV_STR("/API/x");
    CHECK(!rv_matcher_matches(&m, &r), "prefix case-sensitive by default");
    m.case_sensitive = false;
    CHECK(rv_matcher_matches(&m, &r), "prefix caseless");
    r.path = RV_STR("/aPi");
    CHECK(rv_matcher_matches(&m, &r), "prefix caseless, whole");
    r.path = RV_STR("/bpi");
    CHECK(!rv_matcher_matches(&m, &r), "prefix caseless still compares");

    m.path = RV_STR("");
    r.path = RV_STR("/anything");
    CHECK(rv_matcher_matches(&m, &r), "empty prefix matches all");
    m.path = RV_STR("/");
    CHECK(rv_matcher_matches(&m, &r), "prefix / matches all");

    m.path_kind = RV_PATH_EXACT;
    m.case_sensitive = true;
    m.path = RV_STR("/a");
    r.path = RV_STR("/a");
    CHECK(rv_matcher_matches(&m, &r), "exact");
    r.path = RV_STR("/a/");
    CHECK(!rv_matcher_matches(&m, &r), "exact rejects longer");
    r.path = RV_STR("/");
    CHECK(!rv_matcher_matches(&m, &r), "exact rejects shorter");
    r.path = RV_STR("/A");
    CHECK(!rv_matcher_matches(&m, &r), "exact case-sensitive");
    m.case_sensitive = false;
    CHECK(rv_matcher_matches(&m, &r), "exact caseless");

    m.path_kind = RV_PATH_REGEX;
    m.case_sensitive = true;
    m.path_re = re("/v[0-9]+/.*", false);
    r.path = RV_STR("/v12/users");
    CHECK(rv_matcher_matches(&m, &r), "regex whole path");
    r.path = RV_STR("/x/v12/users");
    CHECK(!rv_matcher_matches(&m, &r), "regex anchored at start");
    r.path = RV_STR("/v12");
    CHECK(!rv_matcher_matches(&m, &r), "regex must cover the whole path");
    r.path = RV_STR("/v1/a");
    r.query = RV_STR("x=1");
    CHECK(rv_matcher_matches(&m, &r), "regex ignores the query");
    m.path_re = re("/v[0-9]+/users", true); /* the config layer compiles caseless */
    m.case_sensitive = false;
    r.path = RV_STR("/V1/USERS");
    CHECK(rv_matcher_matches(&m, &r), "caseless regex");
    m.path_re = NULL;
    CHECK(!rv_matcher_matches(&m, &r), "regex kind without regex never matches");
    m.path_kind = 42;
    CHECK(!rv_matcher_matches(&m, &r), "unknown path kind never matches");
}

static void test_header_matchers(void)
{
    rv_header_t hs[] = {
        { RV_STR("X-Version"), RV_STR("2") },
        { RV_STR("x-env"), RV_STR("staging") },
        { RV_STR("X-Env"), RV_STR("prod") },
        { RV_STR("x-empty"), RV_STR("") },
        { RV_STR("Host"), RV_STR("a.com") },
    };
    rv_req_view_t r = rq("POST", "/p", "", "api.example.com:8080");
    r.headers = hs;
    r.nheaders = RV_ARRAY_LEN(hs);
    rv_header_matcher_t h = { 0 };
    rv_matcher_t m = { 0 };
    m.case_sensitive = true;
    m.path = RV_STR("/");
    m.headers = &h;
    m.nheaders = 1;

    h = (rv_header_matcher_t){ .name = RV_STR("x-version"), .value = RV_STR("2"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "header exact, name case-insensitive");
    h.value = RV_STR("3");
    CHECK(!rv_matcher_matches(&m, &r), "header exact mismatch");
    h.value = RV_STR("2 ");
    CHECK(!rv_matcher_matches(&m, &r), "header exact is whole value");
    h.invert = true;
    CHECK(rv_matcher_matches(&m, &r), "inverted mismatch matches");
    h.value = RV_STR("2");
    CHECK(!rv_matcher_matches(&m, &r), "inverted match fails");

    h = (rv_header_matcher_t){ .name = RV_STR("x-version") };
    CHECK(rv_matcher_matches(&m, &r), "presence");
    h.name = RV_STR("x-missing");
    CHECK(!rv_matcher_matches(&m, &r), "presence of absent header");
    h.invert = true;
    CHECK(rv_matcher_matches(&m, &r), "inverted presence of absent header");
    h.name = RV_STR("x-version");
    CHECK(!rv_matcher_matches(&m, &r), "inverted presence of present header");
    h = (rv_header_matcher_t){ .name = RV_STR("x-empty") };
    CHECK(rv_matcher_matches(&m, &r), "presence of an empty header");
    h = (rv_header_matcher_t){ .name = RV_STR("x-missing"), .value = RV_STR("1"), .has_value = true,
                               .invert = true };
    CHECK(rv_matcher_matches(&m, &r), "inverted value matcher matches an absent header");

    h = (rv_header_matcher_t){ .name = RV_STR("x-env"), .value = RV_STR("prod"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "repeated header: a later instance matches");
    h.value = RV_STR("staging");
    CHECK(rv_matcher_matches(&m, &r), "repeated header: the first instance matches");
    h.value = RV_STR("staging,prod");
    CHECK(!rv_matcher_matches(&m, &r), "repeated header: instances are not joined");
    h.value = RV_STR("prod");
    h.invert = true;
    CHECK(!rv_matcher_matches(&m, &r), "inverted: no instance may match");
    h.value = RV_STR("dev");
    CHECK(rv_matcher_matches(&m, &r), "inverted: no instance matches");

    h = (rv_header_matcher_t){ .name = RV_STR("x-env"), .re = re("pro.", false), .has_value = true,
                               .is_regex = true };
    CHECK(rv_matcher_matches(&m, &r), "header regex");
    h.re = re("pro", false);
    CHECK(!rv_matcher_matches(&m, &r), "header regex covers the whole value");
    h.invert = true;
    CHECK(rv_matcher_matches(&m, &r), "inverted regex");
    h = (rv_header_matcher_t){ .name = RV_STR("x-version"), .has_value = true, .is_regex = true };
    CHECK(!rv_matcher_matches(&m, &r), "regex matcher without regex never matches");

    h = (rv_header_matcher_t){ .name = RV_STR(":authority"), .value = RV_STR("api.example.com:8080"),
                               .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), ":authority is the Host");
    h.value = RV_STR("a.com");
    CHECK(!rv_matcher_matches(&m, &r), ":authority is not the Host header line");
    h = (rv_header_matcher_t){ .name = RV_STR(":authority"), .re = re("api\\.example\\.com(:[0-9]+)?", false),
                               .has_value = true, .is_regex = true };
    CHECK(rv_matcher_matches(&m, &r), ":authority regex");
    h = (rv_header_matcher_t){ .name = RV_STR(":method"), .value = RV_STR("POST"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), ":method");
    h.value = RV_STR("post");
    CHECK(!rv_matcher_matches(&m, &r), ":method is case-sensitive");
    h = (rv_header_matcher_t){ .name = RV_STR(":path"), .value = RV_STR("/p"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), ":path");
    h = (rv_header_matcher_t){ .name = RV_STR(":authority") };
    r.host = RV_STR("");
    CHECK(!rv_matcher_matches(&m, &r), ":authority absent when no Host");
    h.invert = true;
    CHECK(rv_matcher_matches(&m, &r), "inverted :authority presence without Host");
    r.host = RV_STR("api.example.com:8080");

    /* all header matchers must hold */
    rv_header_matcher_t two[] = {
        { .name = RV_STR("x-version"), .value = RV_STR("2"), .has_value = true },
        { .name = RV_STR("x-env"), .value = RV_STR("qa"), .has_value = true },
    };
    m.headers = two;
    m.nheaders = 2;
    CHECK(!rv_matcher_matches(&m, &r), "headers are ANDed");
    two[1].value = RV_STR("prod");
    CHECK(rv_matcher_matches(&m, &r), "headers are ANDed (both hold)");
    r.nheaders = 0;
    CHECK(!rv_matcher_matches(&m, &r), "no headers at all");
}

static void test_query_matchers(void)
{
    rv_query_matcher_t q = { 0 };
    rv_matcher_t m = { 0 };
    m.case_sensitive = true;
    m.path = RV_STR("/");
    m.query = &q;
    m.nquery = 1;
    rv_req_view_t r = rq("GET", "/", "a=1&flag&empty=&sp=hello%20world&%6Eame=v%41l&x=a+b&bad=%zz%4", "h");

    q = (rv_query_matcher_t){ .name = RV_STR("a"), .value = RV_STR("1"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "query exact");
    q.value = RV_STR("2");
    CHECK(!rv_matcher_matches(&m, &r), "query exact mismatch");
    q.value = RV_STR("");
    CHECK(!rv_matcher_matches(&m, &r), "query exact empty vs 1");
    q = (rv_query_matcher_t){ .name = RV_STR("A"), .value = RV_STR("1"), .has_value = true };
    CHECK(!rv_matcher_matches(&m, &r), "query names are case-sensitive");
    q = (rv_query_matcher_t){ .name = RV_STR("flag") };
    CHECK(rv_matcher_matches(&m, &r), "presence without '='");
    q.name = RV_STR("empty");
    CHECK(rv_matcher_matches(&m, &r), "presence with empty value");
    q = (rv_query_matcher_t){ .name = RV_STR("empty"), .value = RV_STR(""), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "exact empty value");
    q = (rv_query_matcher_t){ .name = RV_STR("flag"), .value = RV_STR(""), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "no '=' reads as empty value");
    q = (rv_query_matcher_t){ .name = RV_STR("nope") };
    CHECK(!rv_matcher_matches(&m, &r), "presence of absent parameter");
    q = (rv_query_matcher_t){ .name = RV_STR("fla") };
    CHECK(!rv_matcher_matches(&m, &r), "names compare whole");
    q = (rv_query_matcher_t){ .name = RV_STR("sp"), .value = RV_STR("hello world"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "value percent-decoded");
    q = (rv_query_matcher_t){ .name = RV_STR("name"), .value = RV_STR("vAl"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "name and value percent-decoded");
    q = (rv_query_matcher_t){ .name = RV_STR("x"), .value = RV_STR("a+b"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "'+' is not a space");
    q = (rv_query_matcher_t){ .name = RV_STR("bad"), .value = RV_STR("%zz%4"), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "invalid escapes stand for themselves");
    q = (rv_query_matcher_t){ .name = RV_STR("sp"), .re = re("hello w.*", false), .has_value = true,
                              .is_regex = true };
    CHECK(rv_matcher_matches(&m, &r), "regex on decoded value");
    q.re = re("hello", false);
    CHECK(!rv_matcher_matches(&m, &r), "regex covers the whole value");
    q = (rv_query_matcher_t){ .name = RV_STR("a"), .re = re("[0-9]+", false), .has_value = true,
                              .is_regex = true };
    CHECK(rv_matcher_matches(&m, &r), "regex on raw value (nothing to decode)");
    q.re = NULL;
    CHECK(!rv_matcher_matches(&m, &r), "regex matcher without regex never matches");

    r.query = RV_STR("a=1&a=2");
    q = (rv_query_matcher_t){ .name = RV_STR("a"), .value = RV_STR("2"), .has_value = true };
    CHECK(!rv_matcher_matches(&m, &r), "first occurrence decides (Envoy)");
    q.value = RV_STR("1");
    CHECK(rv_matcher_matches(&m, &r), "first occurrence");
    r.query = RV_STR("&&a=1&");
    CHECK(rv_matcher_matches(&m, &r), "empty segments skipped");
    r.query = RV_STR("");
    CHECK(!rv_matcher_matches(&m, &r), "no query");
    r.query = RV_STR("a");
    CHECK(!rv_matcher_matches(&m, &r), "bare name vs value");
    r.query = RV_STR("a%3D1");
    CHECK(!rv_matcher_matches(&m, &r), "encoded '=' does not split");

    /* long values: exact compares stream, regex decodes into a bounded buffer */
    enum { L = 5000 };
    char *big = rv_arena_alloc(&A, L + 8);
    memcpy(big, "v=", 2);
    for (int i = 0; i < L; i++)
        big[2 + i] = 'z';
    r.query = rv_str(big, L + 2);
    q = (rv_query_matcher_t){ .name = RV_STR("v"), .re = re("z+", false), .has_value = true, .is_regex = true };
    CHECK(rv_matcher_matches(&m, &r), "long raw value, regex");
    memcpy(big + 2 + L - 3, "%7A", 3);
    CHECK(!rv_matcher_matches(&m, &r), "long value needing decoding beyond the buffer never matches");
    char *zs = rv_arena_alloc(&A, L);
    memset(zs, 'z', L);
    q = (rv_query_matcher_t){ .name = RV_STR("v"), .value = rv_str(zs, L - 2), .has_value = true };
    CHECK(rv_matcher_matches(&m, &r), "long value, exact (streaming decode)");

    rv_query_matcher_t two[] = {
        { .name = RV_STR("a"), .value = RV_STR("1"), .has_value = true },
        { .name = RV_STR("b") },
    };
    m.query = two;
    m.nquery = 2;
    r.query = RV_STR("a=1");
    CHECK(!rv_matcher_matches(&m, &r), "query matchers are ANDed");
    r.query = RV_STR("b&a=1");
    CHECK(rv_matcher_matches(&m, &r), "query matchers are ANDed (both hold)");
}

static void test_methods_and(void)
{
    rv_str_t methods[] = { RV_STR("GET"), RV_STR("HEAD") };
    rv_header_matcher_t h = { .name = RV_STR("x-a") };
    rv_query_matcher_t q = { .name = RV_STR("q") };
    rv_matcher_t m = { 0 };
    m.case_sensitive = true;
    m.path = RV_STR("/api");
    m.methods = methods;
    m.nmethods = 2;
    rv_req_view_t r = rq("GET", "/api/x", "", "h");
    CHECK(rv_matcher_matches(&m, &r), "method GET in [GET HEAD]");
    r.method = RV_STR("HEAD");
    CHECK(rv_matcher_matches(&m, &r), "method HEAD");
    r.method = RV_STR("POST");
    CHECK(!rv_matcher_matches(&m, &r), "method POST not listed");
    r.method = RV_STR("get");
    CHECK(!rv_matcher_matches(&m, &r), "methods are case-sensitive");
    r.method = RV_STR("GETX");
    CHECK(!rv_matcher_matches(&m, &r), "method compared whole");

    rv_header_t hs[] = { { RV_STR("X-A"), RV_STR("1") } };
    m.headers = &h;
    m.nheaders = 1;
    m.query = &q;
    m.nquery = 1;
    r = rq("GET", "/api/x", "q=1", "h");
    r.headers = hs;
    r.nheaders = 1;
    CHECK(rv_matcher_matches(&m, &r), "path+method+header+query all hold");
    r.path = RV_STR("/other");
    CHECK(!rv_matcher_matches(&m, &r), "AND: path fails");
    r.path = RV_STR("/api");
    r.method = RV_STR("PUT");
    CHECK(!rv_matcher_matches(&m, &r), "AND: method fails");
    r.method = RV_STR("GET");
    r.nheaders = 0;
    CHECK(!rv_matcher_matches(&m, &r), "AND: header fails");
    r.nheaders = 1;
    r.query = RV_STR("p=1");
    CHECK(!rv_matcher_matches(&m, &r), "AND: query fails");
}

/* ---- routes ------------------------------------------------------------------------ */

static const char *rname(const rv_route_t *r)
{
    return r ? r->name.ptr : "(none)";
}

static void test_first_match(void)
{
    rv_route_t *rt = RV_ARENA_NEWN(&A, rv_route_t, 7);
    rv_header_matcher_t *canary = RV_ARENA_NEW(&A, rv_header_matcher_t);
    *canary = (rv_header_matcher_t){ .name = RV_STR("x-canary"), .value = RV_STR("1"), .has_value = true };
    set_path(&rt[0], RV_PATH_PREFIX, RV_STR("/api"));
    rt[0].match.headers = canary;
    rt[0].match.nheaders = 1;
    set_path(&rt[1], RV_PATH_PREFIX, RV_STR("/api/v2"));
    set_path(&rt[2], RV_PATH_PREFIX, RV_STR("/api"));
    set_path(&rt[3], RV_PATH_PREFIX, RV_STR("/api/v2/never")); /* shadowed by rt[2] */
    set_path(&rt[4], RV_PATH_EXACT, RV_STR("/"));
    set_path(&rt[5], RV_PATH_REGEX, RV_STR_NULL);
    rt[5].match.path_re = re("/[a-z]+\\.html", false);
    set_path(&rt[6], RV_PATH_PREFIX, RV_STR("/static"));
    for (int i = 0; i < 7; i++)
        rt[i].name = fmt("r%d", i);
    rv_vhost_t vh = VH("v", "*");
    vh.routes = rt;
    vh.nroutes = 7;
    rv_listener_cfg_t l = { 0 };
    l.vhosts = &vh;
    l.nvhosts = 1;
    rv_snapshot_t s = snap1(&l);
    CHECK_INT(rv_router_build(&s), 0, "build");

    rv_header_t hs[] = { { RV_STR("X-Canary"), RV_STR("1") } };
    static const struct {
        const char *path;
        int canary;
        const char *want;
    } cases[] = {
        { "/api/x", 1, "r0" },        { "/api/x", 0, "r2" },        { "/api/v2/x", 0, "r1" },
        { "/api/v2/x", 1, "r0" },     { "/api/v2/never", 0, "r1" }, { "/", 0, "r4" },
        { "/index.html", 0, "r5" },   { "/static/a.js", 0, "r6" },  { "/nothing", 0, "(none)" },
        { "/INDEX.html", 0, "(none)" },
    };
    for (size_t i = 0; i < RV_ARRAY_LEN(cases); i++) {
        rv_req_view_t r = rq("GET", cases[i].path, "", "x");
        r.headers = hs;
        r.nheaders = cases[i].canary ? 1 : 0;
        const rv_route_t *a = rv_router_find_route(&vh, &r);
        const rv_route_t *b = rv_router_lookup_route(&l, &vh, &r);
        const rv_vhost_t *mv = NULL;
        const rv_route_t *c = rv_router_match(&l, &r, &mv);
        CHECK(strcmp(rname(a), cases[i].want) == 0 && a == b && c == a && mv == &vh,
              "%s%s -> %s (scan %s, indexed %s, match %s)", cases[i].path, cases[i].canary ? " +canary" : "",
              cases[i].want, rname(a), rname(b), rname(c));
    }
    CHECK(rv_router_find_route(NULL, NULL) == NULL, "NULL vhost");
    rv_vhost_t copy = vh; /* not one of l's vhosts: falls back to the scan */
    rv_req_view_t r = rq("GET", "/api/v2", "", "x");
    CHECK(rv_router_lookup_route(&l, &copy, &r) == &rt[1], "foreign vhost falls back to the scan");
    CHECK(rv_router_lookup_route(NULL, &vh, &r) == &rt[1], "no listener: scan");
    rv_vhost_t none = VH("n", "n.com");
    rv_listener_cfg_t l2 = { 0 };
    l2.vhosts = &none;
    l2.nvhosts = 1;
    CHECK(rv_router_match(&l2, &r, NULL) == NULL, "no vhost, no route");
    rv_arena_free(&s.arena);
}

static uint64_t rng_state = 0x853c49e6748fea9bull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 16) % n);
}

/* Compare the indexed lookup with the plain scan over requests; returns disagreements. */
static int cross_check(const rv_listener_cfg_t *l, const rv_vhost_t *vh, rv_req_view_t *reqs, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const rv_route_t *a = rv_router_find_route(vh, &reqs[i]);
        const rv_route_t *b = rv_router_lookup_route(l, vh, &reqs[i]);
        if (a != b && bad++ < 5)
            printf("# %.*s %.*s: scan %s, indexed %s\n", (int)reqs[i].method.len, reqs[i].method.ptr,
                   (int)reqs[i].path.len, reqs[i].path.ptr, rname(a), rname(b));
    }
    return bad;
}

/* 10,000 routes: distinct services, nesting, shadowing, interleaved non-indexable routes. */
static void test_many_routes(void)
{
    enum { N = 10000 };
    rv_route_t *rt = RV_ARENA_NEWN(&A, rv_route_t, N + 1);
    rv_str_t *post = RV_ARENA_NEW(&A, rv_str_t);
    *post = RV_STR("POST");
    rv_regex_t *rx = re("/rx[0-9]+/.*", false);
    for (int i = 0; i < N; i++) {
        rt[i].name = fmt("r%d", i);
        switch (i % 5) {
        case 0:
            set_path(&rt[i], RV_PATH_PREFIX, fmt("/svc%d/", i));
            break;
        case 1:
            set_path(&rt[i], RV_PATH_EXACT, fmt("/svc%d", i - 1));
            break;
        case 2:
            set_path(&rt[i], RV_PATH_PREFIX, fmt("/svc%d/deep/", i - 2)); /* shadowed by case 0 */
            break;
        case 3:
            set_path(&rt[i], RV_PATH_PREFIX, fmt("/m%d", i));
            rt[i].match.methods = post;
            rt[i].match.nmethods = 1;
            break;
        default:
            set_path(&rt[i], RV_PATH_PREFIX, fmt("/m%d", i - 1)); /* after the POST-only one */
            break;
        }
        if (i % 997 == 0 && i) { /* some routes that cannot be indexed split the runs */
            set_path(&rt[i], RV_PATH_REGEX, RV_STR_NULL);
            rt[i].match.path_re = rx;
        }
        if (i % 1499 == 0 && i) {
            set_path(&rt[i], RV_PATH_PREFIX, fmt("/CI%d", i));
            rt[i].match.case_sensitive = false;
        }
    }
    rt[N].name = RV_STR("catchall");
    set_path(&rt[N], RV_PATH_PREFIX, RV_STR("/"));
    rv_vhost_t vh = VH("big", "*");
    vh.routes = rt;
    vh.nroutes = N + 1;
    rv_listener_cfg_t l = { 0 };
    l.vhosts = &vh;
    l.nvhosts = 1;
    rv_snapshot_t s = snap1(&l);
    CHECK_INT(rv_router_build(&s), 0, "build 10000 routes");

    int bad = 0;
    char p[64];
    for (int i = 0; i < N; i += 5) {
        if (rt[i].match.path_kind != RV_PATH_PREFIX || !rt[i].match.case_sensitive)
            continue;
        snprintf(p, sizeof p, "/svc%d/deep/x", i);
        rv_req_view_t r = rq("GET", p, "", "h");
        if (rv_router_lookup_route(&l, &vh, &r) != &rt[i])
            bad++;
    }
    CHECK_INT(bad, 0, "prefix routes found, the later nested prefix stays shadowed");
    rv_req_view_t r = rq("GET", "/svc5", "", "h");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[6], "exact route");
    r.path = RV_STR("/svc5x");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[N], "exact does not match longer; catch-all");
    r = rq("POST", "/m8/a", "", "h");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[8], "POST-only route first");
    r.method = RV_STR("GET");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[9], "GET falls to the next route, same prefix");
    r.path = RV_STR("/m83/a"); /* "/m8" is a prefix of "/m83": r8 (POST) then r9 come first */
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[9], "string prefix: /m8 catches /m83 first");
    r = rq("GET", "/rx12/a", "", "h");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[997], "regex route between indexed runs");
    r = rq("GET", "/ci1499/x", "", "h");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[1499], "caseless route between indexed runs");
    r.path = RV_STR("/svc9995/x");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[9995], "last service");

    enum { NR = 3000 };
    rv_req_view_t *reqs = RV_ARENA_NEWN(&A, rv_req_view_t, NR);
    static const char *tails[] = { "", "/", "/deep/", "/deep/x", "x", "/a" };
    for (int i = 0; i < NR; i++) {
        uint32_t k = rnd(N + 50);
        const char *stem = (k % 3 == 0) ? "/svc" : (k % 3 == 1) ? "/m" : "/rx";
        reqs[i] = rq(rnd(2) ? "GET" : "POST", fmt("%s%u%s", stem, k, tails[rnd(6)]).ptr, "", "h");
        reqs[i].path = rv_cstr(reqs[i].path.ptr);
    }
    CHECK_INT(cross_check(&l, &vh, reqs, NR), 0, "indexed == scan on %d requests over 10000 routes", NR);
    rv_arena_free(&s.arena);
}

/* Random tables over a tiny alphabet: deep prefix nesting, duplicates, exact and prefix
 * routes sharing keys, extra conditions; the index must agree with the scan. */
static void test_random_tables(void)
{
    static const char *segs[] = { "/a", "/b", "/ab", "a", "/", "b" };
    rv_str_t *methods = RV_ARENA_NEWN(&A, rv_str_t, 1);
    methods[0] = RV_STR("PUT");
    rv_header_matcher_t *hm = RV_ARENA_NEW(&A, rv_header_matcher_t);
    *hm = (rv_header_matcher_t){ .name = RV_STR("x-k") };
    rv_header_t hs[] = { { RV_STR("x-k"), RV_STR("") } };
    int total_bad = 0;
    for (int t = 0; t < 30; t++) {
        uint32_t n = 20 + rnd(400);
        rv_route_t *rt = RV_ARENA_NEWN(&A, rv_route_t, n);
        for (uint32_t i = 0; i < n; i++) {
            char p[64] = "";
            size_t len = 0;
            uint32_t depth = rnd(6);
            for (uint32_t d = 0; d < depth; d++)
                len += (size_t)snprintf(p + len, sizeof p - len, "%s", segs[rnd(6)]);
            rt[i].name = fmt("t%d.r%u", t, i);
            set_path(&rt[i], rnd(3) ? RV_PATH_PREFIX : RV_PATH_EXACT, rv_arena_str(&A, rv_cstr(p)));
            if (rnd(8) == 0) {
                rt[i].match.methods = methods;
                rt[i].match.nmethods = 1;
            }
            if (rnd(8) == 0) {
                rt[i].match.headers = hm;
                rt[i].match.nheaders = 1;
            }
            if (rnd(40) == 0)
                rt[i].match.case_sensitive = false;
        }
        rv_vhost_t vh = VH("rand", "*");
        vh.routes = rt;
        vh.nroutes = n;
        rv_listener_cfg_t l = { 0 };
        l.vhosts = &vh;
        l.nvhosts = 1;
        rv_snapshot_t s = snap1(&l);
        if (rv_router_build(&s) != 0)
            total_bad++;
        enum { NR = 300 };
        rv_req_view_t reqs[NR];
        for (int i = 0; i < NR; i++) {
            char p[64] = "";
            size_t len = 0;
            uint32_t depth = rnd(8);
            for (uint32_t d = 0; d < depth; d++)
                len += (size_t)snprintf(p + len, sizeof p - len, "%s", segs[rnd(6)]);
            reqs[i] = rq(rnd(3) ? "GET" : "PUT", rv_arena_str(&A, rv_cstr(p)).ptr, "", "h");
            reqs[i].path = rv_cstr(reqs[i].path.ptr ? reqs[i].path.ptr : "");
            reqs[i].headers = hs;
            reqs[i].nheaders = rnd(2);
        }
        total_bad += cross_check(&l, &vh, reqs, NR);
        rv_arena_free(&s.arena);
    }
    CHECK_INT(total_bad, 0, "indexed == scan on 30 random tables with deep nesting");

    /* nesting deeper than the merge can hold: the segment falls back to a scan */
    enum { D = 60 };
    rv_route_t *rt = RV_ARENA_NEWN(&A, rv_route_t, D);
    char deep[D + 2];
    for (int i = 0; i < D; i++) {
        int len = D - i; /* longest first, so the longest prefix is the first match */
        deep[0] = '/';
        memset(deep + 1, 'a', (size_t)len - 1);
        rt[i].name = fmt("d%d", i);
        set_path(&rt[i], RV_PATH_PREFIX, rv_arena_str(&A, rv_str(deep, (size_t)len)));
    }
    rv_vhost_t vh = VH("deep", "*");
    vh.routes = rt;
    vh.nroutes = D;
    rv_listener_cfg_t l = { 0 };
    l.vhosts = &vh;
    l.nvhosts = 1;
    rv_snapshot_t s = snap1(&l);
    CHECK_INT(rv_router_build(&s), 0, "build deep");
    deep[0] = '/';
    memset(deep + 1, 'a', D + 1);
    rv_req_view_t r = rq("GET", "/", "", "h");
    r.path = rv_str(deep, D + 2);
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[0], "60 nested prefixes: longest (first) wins");
    r.path = rv_str(deep, 10);
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[D - 10], "60 nested prefixes: inner one");
    r.path = RV_STR("/b");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[D - 1], "60 nested prefixes: only '/'");
    r.path = RV_STR("");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == NULL, "empty path matches no '/' prefix");
    rv_arena_free(&s.arena);
}

/* White-box: lookups really go through the index. Editing a route after the build (never
 * done to a published snapshot) is visible to the scan but not to the compiled keys. */
static void test_index_used(void)
{
    enum { N = 20 };
    rv_route_t *rt = RV_ARENA_NEWN(&A, rv_route_t, N);
    for (int i = 0; i < N; i++) {
        rt[i].name = fmt("k%d", i);
        set_path(&rt[i], RV_PATH_PREFIX, fmt("/k%d/", i));
    }
    rv_vhost_t vh = VH("ix", "*");
    vh.routes = rt;
    vh.nroutes = N;
    rv_listener_cfg_t l = { 0 };
    l.vhosts = &vh;
    l.nvhosts = 1;
    rv_snapshot_t s = snap1(&l);
    CHECK_INT(rv_router_build(&s), 0, "build");
    rt[5].match.path = RV_STR("/zz");
    rv_req_view_t r = rq("GET", "/zz", "", "h");
    CHECK(rv_router_find_route(&vh, &r) == &rt[5], "scan sees the edited route");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == NULL, "indexed lookup uses the compiled keys");
    r.path = RV_STR("/k7/x");
    CHECK(rv_router_lookup_route(&l, &vh, &r) == &rt[7], "indexed lookup finds /k7/");
    rv_listener_cfg_t moved = l;
    rv_vhost_t vh2 = vh;
    moved.vhosts = &vh2; /* vhost array replaced after the build: the stale index is ignored */
    r.path = RV_STR("/zz");
    CHECK(rv_router_lookup_route(&moved, &vh2, &r) == &rt[5], "stale index not used");
    CHECK(rv_router_find_vhost(&moved, RV_STR("a")) == &vh2, "stale index not used for vhosts");
    rv_arena_free(&s.arena);
}

int main(void)
{
    rv_arena_init(&A, 1 << 20);
    test_split_port();
    test_domains();
    test_many_domains();
    test_path_matchers();
    test_header_matchers();
    test_query_matchers();
    test_methods_and();
    test_first_match();
    test_many_routes();
    test_random_tables();
    test_index_used();
    for (int i = 0; i < nregexes; i++)
        rv_regex_free(regexes[i]);
    rv_arena_free(&A);
    TEST_DONE();
}
