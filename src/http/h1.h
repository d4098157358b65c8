/*
 * h1.h - sans-I/O HTTP/1.1 parsing (RFC 9112), strict by default.
 *
 * The parsers take the bytes received so far and either report "need more", a complete head
 * (with every field as a slice into the caller's buffer: nothing is copied or allocated), or
 * an error with the status code to answer. They keep no state between calls: the caller
 * re-parses after each read (heads are small; bodies never go through these functions).
 * Bodies are framed by rv_h1_chunked_scan() or by content_length.
 * Thread: any; reentrant.
 */
#ifndef RV_H1_H
#define RV_H1_H

#include "core/common.h"

typedef struct rv_header_s {
    rv_str_t name;      /* as received (case kept) */
    rv_str_t value;     /* leading/trailing OWS stripped */
} rv_header_t;

typedef struct rv_h1_limits_s {
    size_t max_head;            /* whole head incl. request line; default 60 KiB -> 431 */
    size_t max_request_line;    /* default 16 KiB -> 414 */
    uint32_t max_headers;       /* default 100 -> 431 */
} rv_h1_limits_t;

extern const rv_h1_limits_t rv_h1_default_limits;

enum rv_h1_body {
    RV_H1_BODY_NONE = 0,
    RV_H1_BODY_LENGTH,          /* content_length bytes */
    RV_H1_BODY_CHUNKED,         /* framed by rv_h1_chunked_scan() */
    RV_H1_BODY_EOF,             /* responses only: until the server closes */
};

typedef struct rv_h1_request_s {
    rv_str_t method;            /* token, case kept (methods are case-sensitive) */
    rv_str_t target;            /* request-target as received */
    rv_str_t path;              /* path part: origin-form path, or absolute-form's path ("/" if empty) */
    rv_str_t query;             /* after '?', without it; see has_query */
    bool has_query;
    rv_str_t authority;         /* absolute-form authority; len 0 for origin-form */
    rv_str_t host;              /* the single Host header's value */
    int minor;                  /* HTTP/1.<minor>: 0 or 1 */
    rv_header_t *headers;       /* the caller's array, filled with nheaders entries */
    uint32_t nheaders;
    int body;                   /* enum rv_h1_body: NONE, LENGTH or CHUNKED */
    uint64_t content_length;    /* when body == RV_H1_BODY_LENGTH */
    bool keep_alive;            /* 1.1 unless "Connection: close"; 1.0 only with keep-alive */
    bool expect_continue;       /* "Expect: 100-continue" */
    bool has_upgrade;           /* an Upgrade header was present */
    size_t head_len;            /* bytes of the head including the final CRLF CRLF */
    int status;                 /* on error: 400, 414, 431, 501 or 505 */
    const char *error;          /* on error: short static reason for logs */
} rv_h1_request_t;

/*
 * Parse a request head from buf[0..len).
 * Returns head length (> 0) when complete; RV_EAGAIN when more bytes are needed (and the
 * limits are not yet exceeded); RV_EPARSE or RV_ETOOBIG on a bad head, with out->status and
 * out->error set (the connection must then be closed after the error response).
 * hdrs must have room for lim->max_headers entries.
 * Rejected (400): bare CR, NUL/CTL in values, obs-fold, whitespace before ':', empty or
 * non-token names, names with '_', missing or duplicate Host, Host differing from an
 * absolute-form authority, CL+TE, duplicate or malformed Content-Length, Transfer-Encoding
 * other than exactly "chunked" (501 for an unknown coding), TE on HTTP/1.0, HTTP/0.9,
 * malformed request line. Bare LF line endings are rejected too.
 */
int rv_h1_parse_request(const char *buf, size_t len, const rv_h1_limits_t *lim,
                        rv_header_t *hdrs, rv_h1_request_t *out);

typedef struct rv_h1_response_s {
    int status;                 /* 100..999 */
    int minor;
    rv_str_t reason;
    rv_header_t *headers;
    uint32_t nheaders;
    int body;                   /* enum rv_h1_body */
    uint64_t content_length;
    bool keep_alive;            /* connection reusable after this response */
    size_t head_len;
    const char *error;          /* on error */
} rv_h1_response_t;

/*
 * Parse a response head. head_request: the request was HEAD (no body follows).
 * Body rules (RFC 9112 6.3): HEAD, 1xx, 204, 304 -> NONE; TE chunked -> CHUNKED;
 * Content-Length -> LENGTH; otherwise EOF (and keep_alive false).
 * Returns head length, RV_EAGAIN, or RV_EPARSE/RV_ETOOBIG (the proxy answers 502 and does
 * not reuse the connection). CL+TE, duplicate/malformed CL, bad TE are errors.
 */
int rv_h1_parse_response(const char *buf, size_t len, const rv_h1_limits_t *lim,
                         rv_header_t *hdrs, bool head_request, rv_h1_response_t *out);

/* Incremental validator of a chunked body (and its trailer section). */
typedef struct rv_h1_chunked_s {
    int state;
    uint64_t remaining;         /* bytes left in the current chunk's data */
    uint32_t line_len;          /* bytes seen on the current size/trailer line (limit) */
    uint32_t trailer_bytes;     /* total trailer bytes (limit) */
    uint32_t trailer_fields;    /* of those, the bytes of trailer field lines (all but the final
                                 * CRLF): what a proxy dropping trailers cuts */
    uint32_t digits;
} rv_h1_chunked_t;

/*
 * Scan in[0..len) as the continuation of a chunked body. The scanner never copies: the caller
 * forwards the consumed bytes verbatim (the proxy cuts the trailer field bytes out first,
 * counted in trailer_fields). *consumed is set to the bytes accepted; *payload (may
 * be NULL) to the data bytes among them.
 * Returns 0: all input accepted, message not finished; 1: message finished after *consumed
 * bytes (the rest belongs to the next message); RV_EPARSE: bad framing (overflowing or
 * non-hex size, "0x", sign, bare CR or LF, missing CRLF after data, bad trailer field,
 * over-long line) - *consumed then tells how far it was valid.
 */
int rv_h1_chunked_scan(rv_h1_chunked_t *c, const char *in, size_t len, size_t *consumed,
                       uint64_t *payload);

/* Limits of the chunked scanner: one chunk-size or trailer line, and the whole trailer section. */
#define RV_H1_CHUNK_LINE_MAX   (8 * 1024)
#define RV_H1_TRAILERS_MAX     (60 * 1024)

/* Start a new chunked body: same as zeroing *c. */
void rv_h1_chunked_init(rv_h1_chunked_t *c);

/*
 * Iterate a comma-separated list (Connection, Transfer-Encoding values): stores the next
 * non-empty token (OWS trimmed) in *tok and advances *list. Returns false at the end.
 */
bool rv_h1_next_token(rv_str_t *list, rv_str_t *tok);

/* Find the first header named name (case-insensitive); NULL if absent. */
const rv_header_t *rv_h1_find_header(const rv_header_t *h, uint32_t n, rv_str_t name);

/* Standard reason phrase for a status code ("Unknown" when none). */
const char *rv_http_reason(int status);

#endif
