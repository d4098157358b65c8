/*
 * headers.c - the heads rivet forwards: the upstream request head and the client response
 * head, as iovec lists for writev.
 *
 * Original header lines that survive are not copied: consecutive kept lines are one iovec
 * pointing into the receive buffer (the parser rejects obs-fold and bare LF, so every line
 * is "name: value CRLF" and lines are contiguous). Only the new start line and the headers
 * rivet adds (X-Forwarded-*, X-Request-Id, header manipulation, framing) are written into
 * the request arena. A typical forwarded head is 3-5 iovecs.
 *
 * Rules (Envoy's as Gloo users see them): hop-by-hop headers and the ones the peer's
 * Connection header names are removed - but never framing headers nor those rivet adds;
 * header manipulation applies destination, then route, then virtual host operations, each
 * removing before adding; append=false replaces.
 */
#include <stdio.h>

#include "core/err.h"
#include "proxy/dp.h"
#include "proxy/rewrite.h"

#define ADD_FIXED 9

typedef struct add_s {
    rv_str_t name, value;
    bool dead;
} add_t;

typedef struct hctx_s {
    rv_header_t *h;
    bool *drop;
    uint32_t n;
    add_t *adds;
    uint32_t nadds, cap;
    bool response;
} hctx_t;

static const rv_str_t hop_by_hop[] = { RV_STR("connection"),        RV_STR("keep-alive"),
                                       RV_STR("proxy-connection"),  RV_STR("te"),
                                       RV_STR("trailer"),           RV_STR("transfer-encoding"),
                                       RV_STR("upgrade"),           RV_STR("http2-settings") };

static bool is_hop(rv_str_t name)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(hop_by_hop); i++)
        if (name.len == hop_by_hop[i].len && rv_str_ieq(name, hop_by_hop[i]))
            return true;
    return false;
}

/* Headers that configuration and Connection nomination must never touch: message framing
 * (a removed Content-Length would desynchronise the upstream) and the routing authority. */
static bool is_protected(rv_str_t name, bool response)
{
    return rv_str_ieq(name, RV_STR("content-length")) || rv_str_ieq(name, RV_STR("transfer-encoding")) ||
           rv_str_ieq(name, RV_STR("connection")) || rv_str_ieq(name, RV_STR("upgrade")) ||
           (!response && rv_str_ieq(name, RV_STR("host")));
}

/* A value or name that would break the message if written (CR, LF, NUL). */
static bool unsafe(rv_str_t s)
{
    for (size_t i = 0; i < s.len; i++)
        if (s.ptr[i] == '\r' || s.ptr[i] == '\n' || s.ptr[i] == '\0')
            return true;
    return false;
}

static void drop_named(hctx_t *c, rv_str_t name)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (!c->drop[i] && rv_str_ieq(c->h[i].name, name))
            c->drop[i] = true;
    for (uint32_t i = 0; i < c->nadds; i++)
        if (!c->adds[i].dead && rv_str_ieq(c->adds[i].name, name))
            c->adds[i].dead = true;
}

static void push_add(hctx_t *c, rv_str_t name, rv_str_t value)
{
    if (c->nadds < c->cap)
        c->adds[c->nadds++] = (add_t){ name, value, false };
}

static void apply_ops(hctx_t *c, const rv_header_ops_t *ops)
{
    if (!ops)
        return;
    const rv_str_t *rm = c->response ? ops->resp_remove : ops->req_remove;
    uint32_t nrm = c->response ? ops->nresp_remove : ops->nreq_remove;
    const rv_header_add_t *add = c->response ? ops->resp_add : ops->req_add;
    uint32_t nadd = c->response ? ops->nresp_add : ops->nreq_add;
    for (uint32_t i = 0; i < nrm; i++)
        if (!is_protected(rm[i], c->response))
            drop_named(c, rm[i]);
    for (uint32_t i = 0; i < nadd; i++) {
        const rv_header_add_t *a = &add[i];
        if (a->name.len == 0 || is_protected(a->name, c->response) || is_hop(a->name) || unsafe(a->name) ||
            unsafe(a->value))
            continue;
        if (!a->append)
            drop_named(c, a->name);
        push_add(c, a->name, a->value);
    }
}

static uint32_t ops_adds(const rv_header_ops_t *ops, bool response)
{
    return ops ? (response ? ops->nresp_add : ops->nreq_add) : 0;
}

/* Drop every header the peer's Connection header(s) name, except protected ones. */
static void drop_nominated(hctx_t *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        if (!rv_str_ieq(c->h[i].name, RV_STR("connection")))
            continue;
        rv_str_t list = c->h[i].value, tok;
        while (rv_h1_next_token(&list, &tok))
            if (!is_protected(tok, c->response))
                for (uint32_t k = 0; k < c->n; k++)
                    if (rv_str_ieq(c->h[k].name, tok))
                        c->drop[k] = true;
    }
}

/*
 * Serialise: start line, kept original lines (as runs into the buffer), added headers and
 * the final CRLF. head_end: end of the original head (after its final CRLF CRLF).
 * Returns 0 or RV_ENOMEM; iov and niov receive an arena-allocated list.
 */
static int serialise(rv_arena_t *a, hctx_t *c, rv_str_t start, const char *head_end, struct iovec **iov,
                     int *niov)
{
    size_t extra = 2;
    for (uint32_t i = 0; i < c->nadds; i++)
        if (!c->adds[i].dead)
            extra += c->adds[i].name.len + c->adds[i].value.len + 4;
    /* worst case: every kept header is its own run; beyond 16 runs they are copied instead */
    struct iovec *v = rv_arena_alloc(a, sizeof(*v) * 20);
    char *text = NULL;
    if (!v)
        return RV_ENOMEM;
    int n = 0;
    v[n++] = (struct iovec){ (void *)start.ptr, start.len };
    uint32_t nruns = 0;
    for (uint32_t i = 0; i < c->n; i++)
        if (!c->drop[i] && (i == 0 || c->drop[i - 1]))
            nruns++;
    bool copy = nruns > 16;
    /* a line is [name.ptr, next name.ptr) or up to head_end - 2; verify it looks like one */
    for (uint32_t i = 0; i < c->n && !copy; i++) {
        const char *ls = c->h[i].name.ptr;
        const char *le = i + 1 < c->n ? c->h[i + 1].name.ptr : head_end - 2;
        if (le <= ls || le < c->h[i].value.ptr + c->h[i].value.len || le[-1] != '\n' || le[-2] != '\r')
            copy = true;
    }
    if (copy)
        for (uint32_t i = 0; i < c->n; i++)
            if (!c->drop[i])
                extra += c->h[i].name.len + c->h[i].value.len + 4;
    text = rv_arena_alloc(a, extra);
    if (!text)
        return RV_ENOMEM;
    size_t t = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->drop[i])
            continue;
        if (copy) {
            memcpy(text + t, c->h[i].name.ptr, c->h[i].name.len);
            t += c->h[i].name.len;
            text[t++] = ':';
            text[t++] = ' ';
            memcpy(text + t, c->h[i].value.ptr, c->h[i].value.len);
            t += c->h[i].value.len;
            text[t++] = '\r';
            text[t++] = '\n';
            continue;
        }
        uint32_t j = i;
        while (j + 1 < c->n && !c->drop[j + 1])
            j++;
        const char *ls = c->h[i].name.ptr;
        const char *le = j + 1 < c->n ? c->h[j + 1].name.ptr : head_end - 2;
        v[n++] = (struct iovec){ (void *)ls, (size_t)(le - ls) };
        i = j;
    }
    for (uint32_t i = 0; i < c->nadds; i++) {
        const add_t *ad = &c->adds[i];
        if (ad->dead)
            continue;
        memcpy(text + t, ad->name.ptr, ad->name.len);
        t += ad->name.len;
        text[t++] = ':';
        text[t++] = ' ';
        memcpy(text + t, ad->value.ptr, ad->value.len);
        t += ad->value.len;
        text[t++] = '\r';
        text[t++] = '\n';
    }
    text[t++] = '\r';
    text[t++] = '\n';
    v[n++] = (struct iovec){ text, t };
    *iov = v;
    *niov = n;
    return 0;
}

/*
 * Build the upstream request head for the current try into s->uh (arena), for endpoint e.
 * parsed: w->hdrs still holds this request's headers (the first try runs in the same call
 * as the parse); otherwise the head still held in conn->in is parsed again (retries only,
 * so no header array has to stay alive between events). Returns 0, RV_ENOMEM, RV_EPARSE.
 */
int rv_dp_build_up_head(rv_dp_conn_t *d, const rv_endpoint_t *e, bool parsed)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    rv_arena_t *a = s->arena;
    rv_h1_request_t req;
    if (parsed) {
        req.nheaders = s->nhdrs;
        req.host = s->has_host ? s->host : RV_STR_NULL;
        req.method = s->method;
    } else if (rv_h1_parse_request(d->in, s->head_len, &rv_h1_default_limits, w->hdrs, &req) <= 0) {
        return RV_EPARSE;
    }
    const rv_route_t *rt = s->route;
    hctx_t c = { .h = w->hdrs, .drop = w->drop, .n = req.nheaders, .response = false };
    memset(c.drop, 0, sizeof(bool) * c.n);
    c.cap = ADD_FIXED + ops_adds(s->dest ? &s->dest->headers : NULL, false) + ops_adds(&rt->headers, false) +
            ops_adds(rt->vhost_headers, false);
    c.adds = rv_arena_alloc(a, sizeof(add_t) * c.cap);
    if (!c.adds)
        return RV_ENOMEM;

    drop_nominated(&c);
    /* the client's X-Forwarded-For values are kept unless its Connection header named it */
    bool xff_keep = true;
    size_t xff_len = 0;
    for (uint32_t i = 0; i < c.n; i++)
        if (rv_str_ieq(c.h[i].name, RV_STR("x-forwarded-for"))) {
            xff_keep = xff_keep && !c.drop[i];
            xff_len += c.h[i].value.len + 2;
        }
    bool reqid_kept = false;
    for (uint32_t i = 0; i < c.n; i++) {
        rv_str_t nm = c.h[i].name;
        if (is_hop(nm) || rv_str_ieq(nm, RV_STR("expect")) || rv_str_ieq(nm, RV_STR("x-forwarded-proto")) ||
            rv_str_ieq(nm, RV_STR("x-forwarded-for")) || rv_str_ieq(nm, RV_STR("x-forwarded-client-cert"))) {
            /* x-forwarded-client-cert: only rivet vouches for a client certificate (Envoy's
             * SANITIZE_SET), on plain listeners too */
            c.drop[i] = true;
        } else if (rv_str_ieq(nm, RV_STR("x-request-id")) && !c.drop[i]) {
            reqid_kept = c.h[i].value.ptr == s->reqid.ptr;
            if (!reqid_kept)
                c.drop[i] = true;   /* unusable value replaced by ours */
        } else if (rv_str_ieq(nm, RV_STR("host")) && (rt->opts.host_rewrite.len || rt->opts.auto_host_rewrite)) {
            c.drop[i] = true;
        }
    }
    /* Host */
    if (rt->opts.host_rewrite.len && !unsafe(rt->opts.host_rewrite))
        push_add(&c, RV_STR("Host"), rt->opts.host_rewrite);
    else if (rt->opts.auto_host_rewrite && e->host_header.len)
        push_add(&c, RV_STR("Host"), e->host_header);
    else if (!req.host.len)
        push_add(&c, RV_STR("Host"), e->authority.len ? e->authority : s->host);
    /* X-Forwarded-For: the client's list, then the address we saw */
    char *xff = rv_arena_alloc(a, xff_len + d->peer_len + 1);
    if (!xff)
        return RV_ENOMEM;
    size_t x = 0;
    for (uint32_t i = 0; i < c.n && xff_keep; i++) {
        if (!rv_str_ieq(c.h[i].name, RV_STR("x-forwarded-for")) || !c.h[i].value.len)
            continue;
        memcpy(xff + x, c.h[i].value.ptr, c.h[i].value.len);
        x += c.h[i].value.len;
        xff[x++] = ',';
        xff[x++] = ' ';
    }
    memcpy(xff + x, d->peer, d->peer_len);
    x += d->peer_len;
    push_add(&c, RV_STR("X-Forwarded-For"), rv_str(xff, x));
    push_add(&c, RV_STR("X-Forwarded-Proto"), d->tls ? RV_STR("https") : RV_STR("http"));
    rv_str_t xfcc = rv_dp_client_identity(d);
    if (xfcc.len)
        push_add(&c, RV_STR("X-Forwarded-Client-Cert"), xfcc);
    if (!reqid_kept)
        push_add(&c, RV_STR("X-Request-Id"), s->reqid);
    if (s->req_body == RV_H1_BODY_CHUNKED)
        push_add(&c, RV_STR("Transfer-Encoding"), RV_STR("chunked"));

    /* header manipulation: destination, route, virtual host */
    apply_ops(&c, s->dest ? &s->dest->headers : NULL);
    apply_ops(&c, &rt->headers);
    apply_ops(&c, rt->vhost_headers);

    /* path rewrite, then the request line with the original query */
    rv_str_t fwd = s->path;
    if (rv_rewrite_path(rt, s->path, a, &fwd) < 0)
        return RV_ENOMEM;
    s->fwd_path = fwd;
    size_t ll = req.method.len + 1 + fwd.len + (s->has_query ? 1 + s->query.len : 0) + 11;
    char *line = rv_arena_alloc(a, ll);
    if (!line)
        return RV_ENOMEM;
    size_t l = 0;
    memcpy(line, req.method.ptr, req.method.len);
    l += req.method.len;
    line[l++] = ' ';
    memcpy(line + l, fwd.ptr, fwd.len);
    l += fwd.len;
    if (s->has_query) {
        line[l++] = '?';
        memcpy(line + l, s->query.ptr, s->query.len);
        l += s->query.len;
    }
    memcpy(line + l, " HTTP/1.1\r\n", 11);
    l += 11;
    int rc = serialise(a, &c, rv_str(line, l), d->in + s->head_len, &s->uh, &s->uh_n);
    s->uh_i = 0;
    return rc;
}

/*
 * Build the client response head for the upstream response r (headers in w->hdrs, bytes in
 * u->in) into s->dh. Framing: chunked is forwarded verbatim (Transfer-Encoding re-added)
 * unless de-chunking for HTTP/1.0; Connection reflects the client connection's fate.
 * Returns 0 or RV_ENOMEM.
 */
int rv_dp_build_resp_head(rv_dp_conn_t *d, const rv_h1_response_t *r)
{
    rv_dp_worker_t *w = d->w;
    rv_dp_stream_t *s = d->s;
    rv_arena_t *a = s->arena;
    const rv_route_t *rt = s->route;
    hctx_t c = { .h = w->hdrs, .drop = w->drop, .n = r->nheaders, .response = true };
    memset(c.drop, 0, sizeof(bool) * c.n);
    c.cap = ADD_FIXED + ops_adds(s->dest ? &s->dest->headers : NULL, true) + ops_adds(&rt->headers, true) +
            ops_adds(rt->vhost_headers, true);
    c.adds = rv_arena_alloc(a, sizeof(add_t) * c.cap);
    if (!c.adds)
        return RV_ENOMEM;
    drop_nominated(&c);
    for (uint32_t i = 0; i < c.n; i++)
        if (is_hop(c.h[i].name))
            c.drop[i] = true;
    if ((r->body == RV_H1_BODY_CHUNKED && !s->dechunk) || s->rechunk)
        push_add(&c, RV_STR("Transfer-Encoding"), RV_STR("chunked"));
    apply_ops(&c, s->dest ? &s->dest->headers : NULL);
    apply_ops(&c, &rt->headers);
    apply_ops(&c, rt->vhost_headers);
    if (d->close_after && s->minor == 1)
        push_add(&c, RV_STR("Connection"), RV_STR("close"));
    else if (!d->close_after && s->minor == 0)
        push_add(&c, RV_STR("Connection"), RV_STR("keep-alive"));
    size_t ll = 9 + 3 + 1 + r->reason.len + 2;
    char *line = rv_arena_alloc(a, ll);
    if (!line)
        return RV_ENOMEM;
    int st = r->status > 999 ? 999 : r->status < 100 ? 100 : r->status;
    memcpy(line, "HTTP/1.1 ", 9);
    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    line[12] = ' ';
    memcpy(line + 13, r->reason.ptr, r->reason.len);
    line[13 + r->reason.len] = '\r';
    line[14 + r->reason.len] = '\n';
    return serialise(a, &c, rv_str(line, ll), s->u->in + r->head_len, &s->dh, &s->dh_n);
}

/*
 * Head of a local reply (direct response, redirect, error) into the arena. When a route was
 * chosen its response header manipulation applies too, as Envoy applies it to direct
 * responses and router-generated errors. Returns 0 (*out, *out_len set) or RV_ENOMEM.
 */
int rv_dp_build_local_head(rv_dp_conn_t *d, int status, size_t body_len, bool has_body, rv_str_t location,
                           char **out, size_t *out_len)
{
    rv_dp_stream_t *s = d->s;
    rv_arena_t *a = s->arena;
    const rv_route_t *rt = s->route;
    hctx_t c = { .n = 0, .response = true };
    c.cap = ADD_FIXED;
    if (rt)
        c.cap += ops_adds(s->dest ? &s->dest->headers : NULL, true) + ops_adds(&rt->headers, true) +
                 ops_adds(rt->vhost_headers, true);
    c.adds = rv_arena_alloc(a, sizeof(add_t) * c.cap);
    char *cl = rv_arena_alloc(a, 24);
    if (!c.adds || !cl)
        return RV_ENOMEM;
    if (has_body) {
        int n = snprintf(cl, 24, "%zu", body_len);
        push_add(&c, RV_STR("content-length"), rv_str(cl, (size_t)n));
        if (body_len)
            push_add(&c, RV_STR("content-type"), RV_STR("text/plain"));
    }
    if (location.len && !unsafe(location))
        push_add(&c, RV_STR("location"), location);
    if (s->overloaded)
        push_add(&c, RV_STR("x-envoy-overloaded"), RV_STR("true"));   /* Envoy, on a circuit breaker's 503 */
    if (rt) {
        apply_ops(&c, s->dest ? &s->dest->headers : NULL);
        apply_ops(&c, &rt->headers);
        apply_ops(&c, rt->vhost_headers);
    }
    if (d->close_after && s->minor == 1)
        push_add(&c, RV_STR("connection"), RV_STR("close"));
    else if (!d->close_after && s->minor == 0)
        push_add(&c, RV_STR("connection"), RV_STR("keep-alive"));
    const char *reason = rv_http_reason(status);
    size_t len = 9 + 4 + strlen(reason) + 2 + 2;
    for (uint32_t i = 0; i < c.nadds; i++)
        if (!c.adds[i].dead)
            len += c.adds[i].name.len + c.adds[i].value.len + 4;
    char *h = rv_arena_alloc(a, len + 1);
    if (!h)
        return RV_ENOMEM;
    int n = snprintf(h, len + 1, "HTTP/1.1 %03d %s\r\n", status > 999 ? 999 : status, reason);
    size_t t = (size_t)n;
    for (uint32_t i = 0; i < c.nadds; i++) {
        const add_t *ad = &c.adds[i];
        if (ad->dead)
            continue;
        memcpy(h + t, ad->name.ptr, ad->name.len);
        t += ad->name.len;
        h[t++] = ':';
        h[t++] = ' ';
        memcpy(h + t, ad->value.ptr, ad->value.len);
        t += ad->value.len;
        h[t++] = '\r';
        h[t++] = '\n';
    }
    h[t++] = '\r';
    h[t++] = '\n';
    *out = h;
    *out_len = t;
    return 0;
}

/* UUIDv4 text (8-4-4-4-12 lower-case hex) from the worker's PRNG. */
void rv_dp_gen_reqid(rv_dp_worker_t *w, char out[36])
{
    /* two hex digits per byte from one table: no per-nibble work (this runs per request) */
    static const char hex2[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    static const uint8_t pos[16] = { 0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34 };
    uint64_t hi = rv_rand_next(&w->rng), lo = rv_rand_next(&w->rng);
    hi = (hi & ~(0xf0ull << 48)) | (0x40ull << 48);     /* byte 6: version 4 */
    lo = (lo & ~0xc0ull) | 0x80ull;                     /* byte 8: RFC 4122 variant */
    for (int i = 0; i < 8; i++, hi >>= 8, lo >>= 8) {
        memcpy(out + pos[i], hex2 + 2 * (hi & 0xff), 2);
        memcpy(out + pos[8 + i], hex2 + 2 * (lo & 0xff), 2);
    }
    out[8] = out[13] = out[18] = out[23] = '-';
}

/*
 * Find the end of a head (an empty line) in buf[0..len), resuming at *scan_pos so that a
 * head trickling in byte by byte is scanned once, not re-parsed per read (slowloris CPU).
 * Returns the offset after the empty line, or 0 when not there yet (*scan_pos updated).
 */
size_t rv_dp_find_head_end(const char *buf, size_t len, uint32_t *scan_pos)
{
    size_t i = *scan_pos;
    while (i < len) {
        const char *p = memchr(buf + i, '\n', len - i);
        if (!p) {
            *scan_pos = (uint32_t)len;
            return 0;
        }
        size_t j = (size_t)(p - buf);
        if (j + 1 >= len) {
            *scan_pos = (uint32_t)j;
            return 0;
        }
        if (buf[j + 1] == '\n')
            return j + 2;
        if (buf[j + 1] == '\r') {
            if (j + 2 >= len) {
                *scan_pos = (uint32_t)j;
                return 0;
            }
            if (buf[j + 2] == '\n')
                return j + 3;
        }
        i = j + 1;
    }
    *scan_pos = (uint32_t)len;
    return 0;
}
