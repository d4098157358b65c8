/*
 * h1.c - strict sans-I/O HTTP/1.1 head parsers, chunked body scanner, reason phrases.
 *
 * Design (doc/internals/http1.md): the head is walked once, line by line. memchr finds each
 * LF; the line before it is then checked with one table lookup per byte (8 bytes per step for
 * field values). Only complete lines are judged, so a prefix of a valid head is always "need
 * more"; limits are checked against what has arrived, so an oversized head fails as soon as
 * it is known to be oversized. Nothing is allocated or copied: every field is a slice of the
 * caller's buffer.
 */
#include "http/h1.h"
#include "core/err.h"

const rv_h1_limits_t rv_h1_default_limits = { 60 * 1024, 16 * 1024, 100 };

/*
 * Byte classes (one table so each test is a load and a mask):
 *   T_TOKEN  tchar (RFC 9110 5.6.2): methods, codings, chunk extensions
 *   T_NAME   tchar except '_': request header names (underscore aliasing, hardening #20)
 *   T_VALUE  field-value byte: HTAB, SP, VCHAR, obs-text (no CTL, no DEL)
 *   T_TARGET request-target byte: VCHAR except '#' (no space, CTL, DEL or 8-bit byte)
 *   T_HOST   reg-name byte we accept in Host: ALPHA DIGIT - . _ ~
 *   T_HEX    hex digit
 */
enum { T_TOKEN = 1, T_NAME = 2, T_VALUE = 4, T_TARGET = 8, T_HOST = 16, T_HEX = 32 };

static const uint8_t cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 00 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 10 */
    0x04, 0x0f, 0x0c, 0x07, 0x0f, 0x0f, 0x0f, 0x0f, 0x0c, 0x0c, 0x0f, 0x0f, 0x0c, 0x1f, 0x1f, 0x0c, /* 20 */
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, /* 30 */
    0x0c, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, /* 40 */
    0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x0c, 0x0c, 0x0c, 0x0f, 0x1d, /* 50 */
    0x0f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, /* 60 */
    0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x1f, 0x0c, 0x0f, 0x0c, 0x1f, 0x00, /* 70 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 80 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* 90 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* a0 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* b0 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* c0 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* d0 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* e0 */
    0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, /* f0 */
};

#define IS(c, t) (cls[(unsigned char)(c)] & (t))

/* Largest body length or chunk size we accept: values must stay below 2^63. */
#define MAX_LENGTH ((uint64_t)INT64_MAX)

static const char slash[] = "/";

/* True when every byte of [p, e) is a field-value byte. Eight bytes per step: a word with no
 * byte below 0x20 and none equal to 0x7f needs no per-byte look (HTAB falls back to the table). */
static bool valid_value(const char *p, const char *e)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (e - p >= 8) {
        uint64_t x, y;
        memcpy(&x, p, 8);
        y = x ^ (ones * 0x7f);
        if (((x - ones * 0x20) & ~x & highs) | ((y - ones) & ~y & highs)) {
            for (int i = 0; i < 8; i++)
                if (!IS(p[i], T_VALUE))
                    return false;
        }
        p += 8;
    }
    for (; p < e; p++)
        if (!IS(*p, T_VALUE))
            return false;
    return true;
}

/* ASCII case-insensitive compare of s with a lower-case literal. */
static bool ieq_lit(const char *s, size_t n, const char *lit, size_t litlen)
{
    if (n != litlen)
        return false;
    for (size_t i = 0; i < n; i++)
        if (rv_lower(s[i]) != lit[i])
            return false;
    return true;
}
#define IEQ(s, n, lit) ieq_lit((s), (n), lit, sizeof(lit) - 1)

static bool all_token(rv_str_t s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!IS(s.ptr[i], T_TOKEN))
            return false;
    return true;
}

/*
 * Host header value / absolute-form authority: reg-name (ALPHA DIGIT - . _ ~) or a bracketed
 * IPv6 literal, then an optional ":" and 1-5 digit port <= 65535. Userinfo ('@'), percent
 * escapes, sub-delims and an empty host or port are refused.
 */
static bool valid_host(rv_str_t h)
{
    const char *s = h.ptr;
    size_t i = 0, n = h.len;
    if (n == 0)
        return false;
    if (s[0] == '[') {
        i = 1;
        while (i < n && (IS(s[i], T_HEX) || s[i] == ':' || s[i] == '.'))
            i++;
        if (i == 1 || i >= n || s[i] != ']')
            return false;
        i++;
    } else {
        while (i < n && IS(s[i], T_HOST))
            i++;
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (s[i] != ':')
        return false;
    size_t ds = ++i;
    uint32_t port = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        port = port * 10 + (uint32_t)(s[i] - '0');
        if (++i - ds > 5)
            return false;
    }
    return i == n && i > ds && port <= 65535;
}

/* Content-Length value (already OWS-trimmed): 1*DIGIT, below 2^63. 0 ok, -1 bad. */
static int parse_length(rv_str_t v, uint64_t *out)
{
    uint64_t x = 0;
    if (v.len == 0)
        return -1;
    for (size_t i = 0; i < v.len; i++) {
        unsigned d = (unsigned char)v.ptr[i] - '0';
        if (d > 9)
            return -1;
        if (x > (MAX_LENGTH - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

/* Registered transfer codings other than chunked: understood, but not implemented (501). */
static bool known_coding(rv_str_t t)
{
    return IEQ(t.ptr, t.len, "gzip") || IEQ(t.ptr, t.len, "x-gzip") || IEQ(t.ptr, t.len, "deflate") ||
           IEQ(t.ptr, t.len, "compress") || IEQ(t.ptr, t.len, "x-compress");
}

/*
 * Judge a Transfer-Encoding value. 0: exactly "chunked" (case-insensitive). 501: a clean list
 * of registered codings (chunked at most once, last) naming one we do not implement, e.g.
 * "gzip" or "gzip, chunked". 400 for everything else: unknown or misspelt codings
 * ("xchunked", "identity"), repeated or non-final chunked, empty or non-token elements.
 */
static int te_verdict(rv_str_t v)
{
    if (IEQ(v.ptr, v.len, "chunked"))
        return 0;
    rv_str_t list = v, tok;
    int count = 0, nchunked = 0;
    bool last_chunked = false, known = false;
    while (rv_h1_next_token(&list, &tok)) {
        count++;
        if (!all_token(tok))
            return 400;
        last_chunked = IEQ(tok.ptr, tok.len, "chunked");
        if (last_chunked)
            nchunked++;
        else if (known_coding(tok))
            known = true;
        else
            return 400;
    }
    if (count == 0 || nchunked > 1 || (nchunked == 1 && !last_chunked))
        return 400;
    return known ? 501 : 400;
}

/* What the field section says about framing and the connection. */
typedef struct fields_s {
    bool request;               /* request rules: '_' refused, any duplicate CL refused */
    int minor;
    uint32_t n;
    bool seen_host, seen_cl, seen_te;
    bool conn_close, conn_ka, expect_continue, has_upgrade;
    uint64_t cl;
    rv_str_t host;
    int status;                 /* on error */
    const char *error;
} fields_t;

static int ffail(fields_t *f, int status, const char *why)
{
    f->status = status;
    f->error = why;
    return -1;
}

/* Apply the meaning of one field line (framing, Host, Connection, Expect, Upgrade). 0 or -1. */
static int field_semantics(fields_t *f, rv_str_t name, rv_str_t value)
{
    const char *s = name.ptr;
    switch (name.len) {
    case 4:
        if (f->request && IEQ(s, 4, "host")) {
            if (f->seen_host)
                return ffail(f, 400, "duplicate Host");
            if (!valid_host(value))
                return ffail(f, 400, "invalid Host");
            f->seen_host = true;
            f->host = value;
        }
        break;
    case 6:
        /* RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored. */
        if (f->request && f->minor == 1 && IEQ(s, 6, "expect") && IEQ(value.ptr, value.len, "100-continue"))
            f->expect_continue = true;
        break;
    case 7:
        if (IEQ(s, 7, "upgrade"))
            f->has_upgrade = true;
        break;
    case 10:
        if (IEQ(s, 10, "connection")) {
            rv_str_t list = value, tok;
            while (rv_h1_next_token(&list, &tok)) {
                if (IEQ(tok.ptr, tok.len, "close"))
                    f->conn_close = true;
                else if (IEQ(tok.ptr, tok.len, "keep-alive"))
                    f->conn_ka = true;
            }
        }
        break;
    case 14:
        if (IEQ(s, 14, "content-length")) {
            uint64_t v;
            if (f->seen_te)
                return ffail(f, 400, "Content-Length with Transfer-Encoding");
            if (parse_length(value, &v) < 0)
                return ffail(f, 400, "invalid Content-Length");
            if (f->seen_cl && (f->request || v != f->cl))
                return ffail(f, 400, "duplicate Content-Length");
            f->seen_cl = true;
            f->cl = v;
        }
        break;
    case 17:
        if (IEQ(s, 17, "transfer-encoding")) {
            int st;
            if (f->minor == 0)
                return ffail(f, 400, "Transfer-Encoding in HTTP/1.0");
            if (f->seen_te)
                return ffail(f, 400, "duplicate Transfer-Encoding");
            if (f->seen_cl)
                return ffail(f, 400, "Content-Length with Transfer-Encoding");
            if ((st = te_verdict(value)) != 0)
                return ffail(f, st, st == 501 ? "unsupported transfer coding" : "invalid Transfer-Encoding");
            f->seen_te = true;
        }
        break;
    default:
        break;
    }
    return 0;
}

/*
 * Parse field lines starting at *pp, the buffer (already capped at max_head) ending at end.
 * Stores up to max entries in hdrs (f->n of them). Returns 1 once the empty line ending the
 * section is consumed (*pp just after it); 0 when the next line is incomplete (*pp at its
 * start); -1 on error (f->status, f->error). The 431 for "one header too many" is reported
 * as soon as the extra line has started.
 */
static int parse_fields(const char **pp, const char *end, uint32_t max, rv_header_t *hdrs, fields_t *f)
{
    const char *p = *pp;
    for (;;) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf) {
            *pp = p;
            if (f->n >= max && end > p && p[0] != '\r')
                return ffail(f, 431, "too many header fields");
            return 0;
        }
        if (lf == p || lf[-1] != '\r')
            return ffail(f, 400, "bare LF line ending");
        const char *eol = lf - 1;
        if (eol == p) {
            *pp = lf + 1;
            return 1;
        }
        if (f->n >= max)
            return ffail(f, 431, "too many header fields");

        const char *q = p;
        unsigned mask = f->request ? T_NAME : T_TOKEN;
        while (IS(*q, mask))
            q++;
        if (*q != ':') {
            if (q == p && (*q == ' ' || *q == '\t'))
                return ffail(f, 400, "obs-fold or line starting with whitespace");
            if (*q == '_')
                return ffail(f, 400, "underscore in header name");
            if (*q == ' ' || *q == '\t')
                return ffail(f, 400, "whitespace before colon");
            return ffail(f, 400, "invalid header name");
        }
        if (q == p)
            return ffail(f, 400, "empty header name");

        const char *v = q + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (!valid_value(v, ve))
            return ffail(f, 400, "invalid character in header value");

        rv_header_t *h = &hdrs[f->n++];
        h->name = rv_str(p, (size_t)(q - p));
        h->value = rv_str(v, (size_t)(ve - v));
        if (field_semantics(f, h->name, h->value) < 0)
            return -1;
        p = lf + 1;
    }
}

static int req_fail(rv_h1_request_t *r, int status, const char *why)
{
    r->status = status;
    r->error = why;
    return (status == 414 || status == 431) ? RV_ETOOBIG : RV_EPARSE;
}

/*
 * Split an absolute-form target into authority, path and query. Only http and https
 * (case-insensitive) are accepted; the authority must be a valid host[:port] without
 * userinfo. 0 ok, -1 bad.
 */
static int parse_absolute(rv_h1_request_t *r, const char *t, const char *te)
{
    const char *s = t;
    if (s == te || !((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z'))
        return -1;
    while (s < te && *s != ':')
        s++;
    size_t slen = (size_t)(s - t);
    if (!(IEQ(t, slen, "http") || IEQ(t, slen, "https")))
        return -1;
    if (te - s < 3 || s[1] != '/' || s[2] != '/')
        return -1;
    const char *a = s + 3, *ae = a;
    while (ae < te && *ae != '/' && *ae != '?')
        ae++;
    r->authority = rv_str(a, (size_t)(ae - a));
    if (!valid_host(r->authority))
        return -1;
    const char *qm = memchr(ae, '?', (size_t)(te - ae));
    const char *pe = qm ? qm : te;
    r->path = pe > ae ? rv_str(ae, (size_t)(pe - ae)) : rv_str(slash, 1);
    if (qm) {
        r->has_query = true;
        r->query = rv_str(qm + 1, (size_t)(te - qm - 1));
    }
    return 0;
}

/*
 * Request line [p, eol) (eol at the CR): method SP request-target SP HTTP-version, single
 * spaces, nothing else. Returns 0 or the request error (via req_fail).
 */
static int parse_request_line(rv_h1_request_t *r, const char *p, const char *eol)
{
    const char *q = p;
    while (IS(*q, T_TOKEN))
        q++;
    if (q == p || *q != ' ')
        return req_fail(r, 400, "invalid method");
    r->method = rv_str(p, (size_t)(q - p));

    const char *t = ++q;
    while (IS(*q, T_TARGET))
        q++;
    if (q == t)
        return req_fail(r, 400, "invalid request-target");
    if (*q != ' ')
        return req_fail(r, 400, q == eol ? "missing HTTP version (HTTP/0.9)" : "invalid request-target");
    const char *te = q;
    r->target = rv_str(t, (size_t)(te - t));

    const char *v = q + 1;
    if (eol - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
        v[7] < '0' || v[7] > '9')
        return req_fail(r, 400, "invalid HTTP version");
    if (v[5] != '1' || v[7] > '1')
        return req_fail(r, 505, "unsupported HTTP version");
    r->minor = v[7] - '0';

    if (rv_str_eq(r->method, RV_STR("CONNECT")))
        return req_fail(r, 501, "CONNECT not supported");

    if (*t == '/') {
        const char *qm = memchr(t, '?', (size_t)(te - t));
        r->path = rv_str(t, (size_t)((qm ? qm : te) - t));
        if (qm) {
            r->has_query = true;
            r->query = rv_str(qm + 1, (size_t)(te - qm - 1));
        }
    } else if (te - t == 1 && *t == '*') {
        if (!rv_str_eq(r->method, RV_STR("OPTIONS")))
            return req_fail(r, 400, "asterisk-form with a method other than OPTIONS");
        r->path = r->target;
    } else if (parse_absolute(r, t, te) < 0) {
        return req_fail(r, 400, "invalid request-target");
    }
    return 0;
}

/*
 * See h1.h. lim may be NULL for rv_h1_default_limits. On RV_EAGAIN the fields of *out are
 * unspecified. Leading empty lines (CRLF) before the request line are skipped (RFC 9112 2.2)
 * and counted in head_len.
 */
int rv_h1_parse_request(const char *buf, size_t len, const rv_h1_limits_t *lim, rv_header_t *hdrs,
                        rv_h1_request_t *out)
{
    if (!lim)
        lim = &rv_h1_default_limits;
    memset(out, 0, sizeof *out);
    out->headers = hdrs;
    if (len == 0)
        return RV_EAGAIN;

    size_t max_head = RV_MIN(lim->max_head, (size_t)INT32_MAX);
    size_t win = RV_MIN(len, max_head);
    const char *p = buf, *end = buf + win;
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;

    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (!lf) {
        /* Fail early on what can already be judged: the method, then the limits. */
        const char *q = p;
        while (q < end && IS(*q, T_TOKEN))
            q++;
        bool lone_cr = q == p && end - p == 1 && *p == '\r'; /* maybe a leading empty line */
        if (q < end && !lone_cr && (q == p || *q != ' '))
            return req_fail(out, 400, "invalid method");
        size_t have = (size_t)(end - p);
        if (have && end[-1] == '\r')
            have--;
        if (have > lim->max_request_line)
            return req_fail(out, 414, "request line too long");
        if (len >= max_head)
            return req_fail(out, 431, "request head too large");
        return RV_EAGAIN;
    }
    if (lf == p || lf[-1] != '\r')
        return req_fail(out, 400, "bare LF line ending");
    if ((size_t)(lf - 1 - p) > lim->max_request_line)
        return req_fail(out, 414, "request line too long");
    int rc = parse_request_line(out, p, lf - 1);
    if (rc < 0)
        return rc;

    fields_t f = { .request = true, .minor = out->minor };
    p = lf + 1;
    rc = parse_fields(&p, end, lim->max_headers, hdrs, &f);
    out->nheaders = f.n;
    if (rc < 0)
        return req_fail(out, f.status, f.error);
    if (rc == 0) {
        if (len >= max_head)
            return req_fail(out, 431, "request head too large");
        return RV_EAGAIN;
    }

    if (out->minor == 1 && !f.seen_host)
        return req_fail(out, 400, "missing Host");
    if (out->authority.len) {
        if (!f.seen_host)
            f.host = out->authority;
        else if (!rv_str_ieq(f.host, out->authority))
            return req_fail(out, 400, "Host differs from the request-target authority");
    }
    out->host = f.host;
    if (f.seen_te) {
        out->body = RV_H1_BODY_CHUNKED;
    } else if (f.seen_cl) {
        out->body = RV_H1_BODY_LENGTH;
        out->content_length = f.cl;
    }
    out->keep_alive = out->minor == 1 ? !f.conn_close : (f.conn_ka && !f.conn_close);
    out->expect_continue = f.expect_continue;
    out->has_upgrade = f.has_upgrade;
    out->head_len = (size_t)(p - buf);
    return (int)out->head_len;
}

static int resp_fail(rv_h1_response_t *r, int rc, const char *why)
{
    r->error = why;
    return rc;
}

/*
 * See h1.h. lim may be NULL for rv_h1_default_limits; max_request_line bounds the status
 * line. Field names may hold '_' (the aliasing attack is a request-side one); a repeated
 * Content-Length is accepted only with the same value; 1xx and 204 responses must carry no
 * Transfer-Encoding and no Content-Length other than 0. keep_alive is false for 101.
 */
int rv_h1_parse_response(const char *buf, size_t len, const rv_h1_limits_t *lim, rv_header_t *hdrs,
                         bool head_request, rv_h1_response_t *out)
{
    if (!lim)
        lim = &rv_h1_default_limits;
    memset(out, 0, sizeof *out);
    out->headers = hdrs;
    if (len == 0)
        return RV_EAGAIN;

    size_t max_head = RV_MIN(lim->max_head, (size_t)INT32_MAX);
    size_t win = RV_MIN(len, max_head);
    const char *p = buf, *end = buf + win;
    const char *lf = memchr(p, '\n', win);
    if (!lf) {
        if (memcmp(p, "HTTP/", RV_MIN(win, 5)) != 0)
            return resp_fail(out, RV_EPARSE, "malformed status line");
        size_t have = win && end[-1] == '\r' ? win - 1 : win;
        if (have > lim->max_request_line)
            return resp_fail(out, RV_ETOOBIG, "status line too long");
        if (len >= max_head)
            return resp_fail(out, RV_ETOOBIG, "response head too large");
        return RV_EAGAIN;
    }
    if (lf == p || lf[-1] != '\r')
        return resp_fail(out, RV_EPARSE, "bare LF line ending");
    const char *eol = lf - 1;
    if ((size_t)(eol - p) > lim->max_request_line)
        return resp_fail(out, RV_ETOOBIG, "status line too long");
    /* HTTP/1.x SP DDD [SP reason] */
    if (eol - p < 12 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
        p[7] < '0' || p[7] > '9' || p[8] != ' ')
        return resp_fail(out, RV_EPARSE, "malformed status line");
    if (p[5] != '1' || p[7] > '1')
        return resp_fail(out, RV_EPARSE, "unsupported HTTP version");
    out->minor = p[7] - '0';
    if (p[9] < '1' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return resp_fail(out, RV_EPARSE, "malformed status code");
    out->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (eol - p > 12) {
        if (p[12] != ' ')
            return resp_fail(out, RV_EPARSE, "malformed status code");
        if (!valid_value(p + 13, eol))
            return resp_fail(out, RV_EPARSE, "invalid character in reason phrase");
        out->reason = rv_str(p + 13, (size_t)(eol - p - 13));
    } else {
        out->reason = rv_str(p + 12, 0);
    }

    fields_t f = { .request = false, .minor = out->minor };
    p = lf + 1;
    int rc = parse_fields(&p, end, lim->max_headers, hdrs, &f);
    out->nheaders = f.n;
    if (rc < 0)
        return resp_fail(out, f.status == 431 ? RV_ETOOBIG : RV_EPARSE, f.error);
    if (rc == 0) {
        if (len >= max_head)
            return resp_fail(out, RV_ETOOBIG, "response head too large");
        return RV_EAGAIN;
    }

    int st = out->status;
    bool no_body_status = (st >= 100 && st < 200) || st == 204;
    if (no_body_status && (f.seen_te || (f.seen_cl && f.cl != 0)))
        return resp_fail(out, RV_EPARSE, "framing header on a response that has no body");
    out->keep_alive = out->minor == 1 ? !f.conn_close : (f.conn_ka && !f.conn_close);
    if (head_request || no_body_status || st == 304) {
        out->body = RV_H1_BODY_NONE;
    } else if (f.seen_te) {
        out->body = RV_H1_BODY_CHUNKED;
    } else if (f.seen_cl) {
        out->body = RV_H1_BODY_LENGTH;
        out->content_length = f.cl;
    } else {
        out->body = RV_H1_BODY_EOF;
        out->keep_alive = false;
    }
    if (st == 101)
        out->keep_alive = false;
    out->head_len = (size_t)(p - buf);
    return (int)out->head_len;
}

/* Chunked scanner states; 0 is the start of a chunk-size line so a zeroed struct is ready. */
enum {
    CS_SIZE0 = 0,   /* first hex digit of a chunk size */
    CS_SIZE,        /* more hex digits, ';' or CR */
    CS_EXT_NAME0,   /* first byte of a chunk-ext name */
    CS_EXT_NAME,    /* name bytes, '=', ';' or CR */
    CS_EXT_VAL0,    /* first byte of an ext value: token or '"' */
    CS_EXT_TOK,     /* token value bytes, ';' or CR */
    CS_EXT_QS,      /* inside a quoted-string */
    CS_EXT_QS_ESC,  /* after a backslash in a quoted-string */
    CS_EXT_QS_END,  /* after the closing quote: ';' or CR */
    CS_SIZE_LF,     /* LF ending the size line */
    CS_DATA,        /* chunk data */
    CS_DATA_CR,     /* CR after data */
    CS_DATA_LF,     /* LF after data */
    CS_TR0,         /* start of a trailer line, or CR of the final empty line */
    CS_TR_NAME,     /* trailer field name, ':' */
    CS_TR_VALUE,    /* trailer field value, CR */
    CS_TR_LF,       /* LF ending a trailer line */
    CS_END_LF,      /* LF of the final empty line */
    CS_DONE,
};

void rv_h1_chunked_init(rv_h1_chunked_t *c)
{
    memset(c, 0, sizeof *c);
}

static unsigned hexval(unsigned char ch)
{
    return ch <= '9' ? (unsigned)(ch - '0') : (unsigned)(ch | 0x20) - 'a' + 10;
}

/*
 * See h1.h. Chunk sizes: 1 to 16 significant hex digits (leading zeros allowed, the line
 * limit bounds them), value below 2^63. Chunk extensions: ';' token ['=' (token /
 * quoted-string)], no whitespace anywhere. The size line (extensions included) and each
 * trailer line are limited to RV_H1_CHUNK_LINE_MAX bytes, the trailer section to
 * RV_H1_TRAILERS_MAX. Trailer names follow request header rules (token without '_').
 * After the end has been reported, further calls return 1 with *consumed = 0.
 */
int rv_h1_chunked_scan(rv_h1_chunked_t *c, const char *in, size_t len, size_t *consumed,
                       uint64_t *payload)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0;
    uint64_t data = 0;
    int rc = 0;

    while (i < len) {
        unsigned char ch = s[i];
        if (c->state == CS_DATA) {
            size_t n = (size_t)RV_MIN((uint64_t)(len - i), c->remaining);
            i += n;
            data += n;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CS_DATA_CR;
            continue;
        }
        if (c->state >= CS_SIZE0 && c->state <= CS_EXT_QS_END) {
            if (++c->line_len > RV_H1_CHUNK_LINE_MAX)
                goto bad;
        } else if (c->state >= CS_TR0 && c->state <= CS_END_LF) {
            if (++c->trailer_bytes > RV_H1_TRAILERS_MAX)
                goto bad;
            if (c->state != CS_END_LF && !(c->state == CS_TR0 && ch == '\r'))
                c->trailer_fields++;
            if (c->state == CS_TR_NAME || c->state == CS_TR_VALUE) {
                if (++c->line_len > RV_H1_CHUNK_LINE_MAX)
                    goto bad;
            }
        }
        switch (c->state) {
        case CS_SIZE0:
        case CS_SIZE:
            if (IS(ch, T_HEX)) {
                unsigned d = hexval(ch);
                if (c->remaining || d) {
                    if (++c->digits > 16)
                        goto bad;
                    c->remaining = (c->remaining << 4) | d;
                    if (c->remaining > MAX_LENGTH)
                        goto bad;
                }
                c->state = CS_SIZE;
            } else if (c->state == CS_SIZE && ch == ';') {
                c->state = CS_EXT_NAME0;
            } else if (c->state == CS_SIZE && ch == '\r') {
                c->state = CS_SIZE_LF;
            } else {
                goto bad;
            }
            break;
        case CS_EXT_NAME0:
            if (!IS(ch, T_TOKEN))
                goto bad;
            c->state = CS_EXT_NAME;
            break;
        case CS_EXT_NAME:
        case CS_EXT_TOK:
            if (IS(ch, T_TOKEN))
                break;
            if (ch == '=' && c->state == CS_EXT_NAME)
                c->state = CS_EXT_VAL0;
            else if (ch == ';')
                c->state = CS_EXT_NAME0;
            else if (ch == '\r')
                c->state = CS_SIZE_LF;
            else
                goto bad;
            break;
        case CS_EXT_VAL0:
            if (ch == '"')
                c->state = CS_EXT_QS;
            else if (IS(ch, T_TOKEN))
                c->state = CS_EXT_TOK;
            else
                goto bad;
            break;
        case CS_EXT_QS:
            if (ch == '"')
                c->state = CS_EXT_QS_END;
            else if (ch == '\\')
                c->state = CS_EXT_QS_ESC;
            else if (!IS(ch, T_VALUE))
                goto bad;
            break;
        case CS_EXT_QS_ESC:
            if (!IS(ch, T_VALUE))
                goto bad;
            c->state = CS_EXT_QS;
            break;
        case CS_EXT_QS_END:
            if (ch == ';')
                c->state = CS_EXT_NAME0;
            else if (ch == '\r')
                c->state = CS_SIZE_LF;
            else
                goto bad;
            break;
        case CS_SIZE_LF:
            if (ch != '\n')
                goto bad;
            c->line_len = 0;
            c->digits = 0;
            c->state = c->remaining ? CS_DATA : CS_TR0;
            break;
        case CS_DATA_CR:
            if (ch != '\r')
                goto bad;
            c->state = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (ch != '\n')
                goto bad;
            c->state = CS_SIZE0;
            break;
        case CS_TR0:
            if (ch == '\r') {
                c->state = CS_END_LF;
            } else if (IS(ch, T_NAME)) {
                c->line_len = 1;
                c->state = CS_TR_NAME;
            } else {
                goto bad;
            }
            break;
        case CS_TR_NAME:
            if (ch == ':')
                c->state = CS_TR_VALUE;
            else if (!IS(ch, T_NAME))
                goto bad;
            break;
        case CS_TR_VALUE:
            if (ch == '\r')
                c->state = CS_TR_LF;
            else if (!IS(ch, T_VALUE))
                goto bad;
            break;
        case CS_TR_LF:
            if (ch != '\n')
                goto bad;
            c->state = CS_TR0;
            break;
        case CS_END_LF:
            if (ch != '\n')
                goto bad;
            c->state = CS_DONE;
            i++;
            rc = 1;
            goto out;
        case CS_DONE:
            rc = 1;
            goto out;
        default:
            goto bad;
        }
        i++;
    }
    if (c->state == CS_DONE)
        rc = 1;
out:
    *consumed = i;
    if (payload)
        *payload = data;
    return rc;
bad:
    *consumed = i;
    if (payload)
        *payload = data;
    return RV_EPARSE;
}

/* See h1.h. */
bool rv_h1_next_token(rv_str_t *list, rv_str_t *tok)
{
    if (list->len == 0)
        return false;
    const char *p = list->ptr, *e = p + list->len;
    while (p < e && (*p == ' ' || *p == '\t' || *p == ','))
        p++;
    if (p == e) {
        *list = rv_str(e, 0);
        return false;
    }
    const char *s = p;
    const char *comma = memchr(p, ',', (size_t)(e - p));
    const char *te = comma ? comma : e;
    while (te > s && (te[-1] == ' ' || te[-1] == '\t'))
        te--;
    *tok = rv_str(s, (size_t)(te - s));
    p = comma ? comma + 1 : e;
    *list = rv_str(p, (size_t)(e - p));
    return true;
}

/* See h1.h. */
const rv_header_t *rv_h1_find_header(const rv_header_t *h, uint32_t n, rv_str_t name)
{
    for (uint32_t i = 0; i < n; i++)
        if (rv_str_ieq(h[i].name, name))
            return &h[i];
    return NULL;
}

/* See h1.h. Names as in RFC 9110 section 15. */
const char *rv_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
}
