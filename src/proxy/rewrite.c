/*
 * rewrite.c - path rewrites (prefixRewrite, regexRewrite) and redirect Location values,
 * following Envoy. Pure functions: results are slices of the input or of the caller's
 * per-request arena. doc/internals/routing.md describes the rules.
 */
#include "proxy/rewrite.h"

#include "core/err.h"
#include "core/regex.h"

/* Longest path a regex rewrite may produce; beyond it the request fails (RV_ENOMEM). */
#define REWRITE_MAX (64 * 1024)


/*
 * Length of the part of path that route matcher m matched, or -1 when path does not start
 * with it (the caller passed a path the route did not match). Prefix: the configured
 * prefix; exact: the whole path; regex: the whole path (the regex covers it, as in Envoy).
 */
static long matched_len(const rv_matcher_t *m, rv_str_t path)
{
    switch (m->path_kind) {
    case RV_PATH_PREFIX:
        if (m->path.len == 0)
            return 0;
        if (m->case_sensitive ? rv_str_has_prefix(path, m->path) : rv_str_has_iprefix(path, m->path))
            return (long)m->path.len;
        return -1;
    case RV_PATH_EXACT:
        if (m->case_sensitive ? rv_str_eq(path, m->path) : rv_str_ieq(path, m->path))
            return (long)path.len;
        return -1;
    default:
        return (long)path.len;
    }
}

/*
 * Replace the first mlen bytes of path by repl, as two slices: *a then *b. When repl ends
 * with '/' and the rest starts with '/', one of the two slashes goes, so "/api/" -> "/"
 * and "/api" -> "/" both turn "/api/users" into "/users" (never "//users").
 */
static void prefix_replace(rv_str_t path, size_t mlen, rv_str_t repl, rv_str_t *a, rv_str_t *b)
{
    rv_str_t rest = rv_str(path.ptr + mlen, path.len - mlen);
    /* Drop the rewrite's slash rather than the path's: "/api" + "/" then borrows "/users". */
    if (repl.len > 0 && repl.ptr[repl.len - 1] == '/' && rest.len > 0 && rest.ptr[0] == '/')
        repl.len--;
    *a = repl;
    *b = rest;
}

/*
 * The path x followed by y, starting with '/' (one is added when x y does not start with
 * it: an upstream request target must). Borrows y when x is empty and y starts with '/';
 * otherwise copies into arena a.
 */
static int join_path(rv_str_t x, rv_str_t y, rv_arena_t *a, rv_str_t *out)
{
    if (x.len == 0) {
        x = y;
        y = RV_STR_NULL;
    }
    if (x.len == 0) {
        *out = RV_STR("/"); /* an empty path is not a request target */
        return 0;
    }
    if (y.len == 0 && x.ptr[0] == '/') {
        *out = x;
        return 0;
    }
    size_t slash = x.ptr[0] != '/';
    size_t n = slash + x.len + y.len;
    char *p = rv_arena_alloc(a, n + 1);
    if (!p)
        return RV_ENOMEM;
    p[0] = '/';
    memcpy(p + slash, x.ptr, x.len);
    if (y.len)
        memcpy(p + slash + x.len, y.ptr, y.len);
    p[n] = '\0';
    *out = rv_str(p, n);
    return 0;
}

/*
 * All matches of re in path replaced by subst, into arena memory. The buffer starts at a
 * generous guess and doubles while too small, up to REWRITE_MAX. 0, RV_ENOMEM (also when
 * the result would exceed REWRITE_MAX), or RV_EINVAL when the regex engine fails.
 */
static int regex_sub(const rv_regex_t *re, rv_str_t subst, rv_str_t path, rv_arena_t *a, rv_str_t *out)
{
    size_t cap = 2 * path.len + 2 * subst.len + 64;
    for (;;) {
        if (cap > REWRITE_MAX)
            cap = REWRITE_MAX;
        char *buf = rv_arena_alloc(a, cap);
        if (!buf)
            return RV_ENOMEM;
        size_t n;
        int rc = rv_regex_replace(re, path, subst, buf, cap, &n);
        if (rc == 0)
            return join_path(rv_str(buf, n), RV_STR_NULL, a, out);
        if (rc != RV_ETOOBIG)
            return rc;
        if (cap == REWRITE_MAX)
            return RV_ENOMEM;
        cap *= 2;
    }
}

/*
 * Path to forward (see rewrite.h). prefixRewrite wins over regexRewrite should the config
 * layer ever let both through (Envoy allows only one). A path the route's matcher does not
 * match is returned unchanged. The result always starts with '/' (added if the rewrite
 * left it out; an empty result becomes "/"). *out is a slice of path, of arena a, or the
 * literal "/". Returns 0, RV_ENOMEM (no memory, or a regex result beyond
 * 64 KiB), or RV_EINVAL (regex engine error, e.g. match limit); the request then fails.
 */
int rv_rewrite_path(const rv_route_t *r, rv_str_t path, rv_arena_t *a, rv_str_t *out)
{
    const rv_route_opts_t *o = &r->opts;
    if (o->has_prefix_rewrite) {
        long m = matched_len(&r->match, path);
        if (m < 0) {
            *out = path;
            return 0;
        }
        rv_str_t x, y;
        prefix_replace(path, (size_t)m, o->prefix_rewrite, &x, &y);
        return join_path(x, y, a, out);
    }
    if (o->regex_rewrite)
        return regex_sub(o->regex_rewrite, o->regex_substitution, path, a, out);
    *out = path;
    return 0;
}

/* ---- redirects --------------------------------------------------------------------- */

/* Bytes a Location must not carry raw: controls (CR, LF, NUL...), space and DEL. */
static bool must_escape(unsigned char c)
{
    return c <= 0x20 || c == 0x7f;
}

struct wbuf {
    char *p;
    size_t len;
};

/* Append s, percent-encoding bytes that would break the header (buffer sized 3x by caller). */
static void put(struct wbuf *w, rv_str_t s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (must_escape(c)) {
            w->p[w->len++] = '%';
            w->p[w->len++] = hex[c >> 4];
            w->p[w->len++] = hex[c & 15];
        } else {
            w->p[w->len++] = (char)c;
        }
    }
}

/*
 * Location for a redirect route (see rewrite.h), Envoy's rules:
 *  - scheme: "https" when httpsRedirect or the request came over TLS, else "http";
 *  - host: hostRedirect, else the request Host. The request's port goes when portRedirect
 *    is set, or when httpsRedirect moves a plain-HTTP request and the port was ":80" (the
 *    new scheme's default applies); any other port is kept. With portRedirect, a port
 *    written in hostRedirect is dropped too, and ":<portRedirect>" is appended;
 *  - path: pathRedirect replaces it (a '?' in it also replaces the query, and stripQuery
 *    does not remove that one); prefixRewrite replaces the part the route matched (same
 *    slash rule as rv_rewrite_path); otherwise the request path, run through the route's
 *    regexRewrite option when set (how the config layer carries redirectAction.regexRewrite,
 *    since rv_redirect_t has no field for it; RouteAction options never apply to a redirect);
 *  - query: the request's, unless stripQuery.
 * Without any host (HTTP/1.0 without Host, no hostRedirect) the value is relative: path and
 * query only. Control bytes, space and DEL are percent-encoded, so the value never carries
 * CR or LF whatever the config holds. *out lives in arena a. 0, RV_ENOMEM or RV_EINVAL.
 */
int rv_redirect_location(const rv_route_t *r, const rv_req_view_t *req, bool tls, rv_arena_t *a,
                         rv_str_t *out)
{
    const rv_redirect_t *rd = &r->action.redirect;
    bool https = rd->https || tls;

    /* host and port */
    rv_str_t host = rd->host.len ? rd->host : req->host;
    rv_str_t port, name = rv_host_split_port(host, &port);
    rv_str_t host_part = host;
    if (port.ptr) {
        if (rd->port)
            host_part = name;
        else if (!rd->host.len && rd->https && !tls && rv_str_eq(port, RV_STR("80")))
            host_part = name;
    }
    char pbuf[8];
    size_t plen = 0;
    if (rd->port) {
        char tmp[6];
        size_t n = 0;
        for (unsigned v = rd->port; v; v /= 10)
            tmp[n++] = (char)('0' + v % 10);
        pbuf[plen++] = ':';
        while (n)
            pbuf[plen++] = tmp[--n];
    }

    /* path and query */
    rv_str_t p1 = req->path, p2 = RV_STR_NULL, q = RV_STR_NULL;
    bool query_set = false;
    switch (rd->path_kind) {
    case RV_REDIRECT_PATH_REPLACE: {
        const char *qm = rd->path.len ? memchr(rd->path.ptr, '?', rd->path.len) : NULL;
        p1 = rd->path;
        if (qm) {
            p1 = rv_str(rd->path.ptr, (size_t)(qm - rd->path.ptr));
            q = rv_str(qm + 1, rd->path.len - p1.len - 1);
            query_set = true;
        }
        break;
    }
    case RV_REDIRECT_PREFIX: {
        long m = matched_len(&r->match, req->path);
        if (m >= 0)
            prefix_replace(req->path, (size_t)m, rd->path, &p1, &p2);
        break;
    }
    default:
        if (r->opts.regex_rewrite) {
            int rc = regex_sub(r->opts.regex_rewrite, r->opts.regex_substitution, req->path, a, &p1);
            if (rc)
                return rc;
        }
        break;
    }
    if (p1.len == 0) {
        p1 = p2;
        p2 = RV_STR_NULL;
    }
    if (p1.len == 0)
        p1 = RV_STR("/");
    if (!query_set && !rd->strip_query)
        q = req->query;

    size_t need = 3 * (host_part.len + p1.len + p2.len + q.len) + plen + sizeof("https://?") + 4;
    struct wbuf w = { rv_arena_alloc(a, need), 0 };
    if (!w.p)
        return RV_ENOMEM;
    if (host_part.len) {
        put(&w, https ? RV_STR("https://") : RV_STR("http://"));
        put(&w, host_part);
        put(&w, rv_str(pbuf, plen));
    }
    /* a pathRedirect without a leading '/' still yields an absolute path */
    if (p1.len && p1.ptr[0] != '/')
        put(&w, RV_STR("/"));
    put(&w, p1);
    put(&w, p2);
    if (q.len) {
        put(&w, RV_STR("?"));
        put(&w, q);
    }
    w.p[w.len] = '\0';
    *out = rv_str(w.p, w.len);
    return 0;
}
