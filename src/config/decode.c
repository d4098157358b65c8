/*
 * decode.c - strict, table-driven decoding of YAML trees into the Gloo resource model.
 *
 * Field names follow protobuf's JSON mapping: the lowerCamelCase json name and the original
 * snake_case name are both accepted (one lookup, cfg_name_matches). Unknown fields, wrong
 * types, out-of-range numbers and two members of one oneof are errors that name the full
 * field path, the file and the line. Message tables and semantic checks live in schema.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config-internal.h"

/* ---- names and paths --------------------------------------------------------------- */

bool cfg_name_matches(const char *key, size_t keylen, const char *camel)
{
    size_t i = 0, j = 0;
    bool exact = strlen(camel) == keylen && memcmp(key, camel, keylen) == 0;
    if (exact)
        return true;
    /* snake_case spelling: every upper-case letter becomes '_' + lower-case letter */
    for (; camel[j]; j++) {
        char ch = camel[j];
        if (ch >= 'A' && ch <= 'Z') {
            if (i + 2 > keylen || key[i] != '_' || key[i + 1] != (char)(ch + 32))
                return false;
            i += 2;
        } else {
            if (i >= keylen || key[i] != ch)
                return false;
            i++;
        }
    }
    return i == keylen;
}

const ynode_t *cfg_field_node(const ynode_t *n, const char *camel)
{
    if (!n || n->type != YN_MAP)
        return NULL;
    for (uint32_t i = 0; i < n->n; i++) {
        const ynode_t *k = n->kids[2 * i];
        if (cfg_name_matches(k->s, k->len, camel))
            return n->kids[2 * i + 1];
    }
    return NULL;
}

size_t cfg_path_push(dctx_t *c, const char *name)
{
    size_t old = c->plen;
    int w = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "%s%s", c->plen ? "." : "", name);
    if (w > 0)
        c->plen = RV_MIN(c->plen + (size_t)w, sizeof(c->path) - 1);
    return old;
}

size_t cfg_path_push_idx(dctx_t *c, uint32_t i)
{
    size_t old = c->plen;
    int w = snprintf(c->path + c->plen, sizeof(c->path) - c->plen, "[%u]", i);
    if (w > 0)
        c->plen = RV_MIN(c->plen + (size_t)w, sizeof(c->path) - 1);
    return old;
}

void cfg_path_pop(dctx_t *c, size_t len)
{
    c->plen = len;
    c->path[len] = '\0';
}

static int vderr(dctx_t *c, const ynode_t *n, const char *what, const char *fmt, va_list ap)
{
    if (c->failed)
        return -1;
    c->failed = true;
    char msg[CFG_ERRLEN];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    char pos[320] = "";
    if (c->file && n && n->line > 0)
        snprintf(pos, sizeof(pos), "%s:%d:%d", c->file, n->line, n->col);
    else if (c->file)
        snprintf(pos, sizeof(pos), "%s", c->file);
    else if (n && n->line > 0)
        snprintf(pos, sizeof(pos), "line %d:%d", n->line, n->col);
    const char *sep = what && what[0] ? ": " : "";
    if (!what)
        what = "";
    if (c->who)
        snprintf(c->err, c->errlen, "%s: %s%s%s%s%s%s", c->who, what, sep, msg, pos[0] ? " (" : "", pos,
                 pos[0] ? ")" : "");
    else
        snprintf(c->err, c->errlen, "%s%s%s%s%s", pos, pos[0] ? ": " : "", what, sep, msg);
    return -1;
}

const char *cfg_key_name(const dctx_t *c, const ynode_t *k)
{
    if (!c->redact_keys)
        return k->s;
    bool ok = k->len > 0 && k->len <= 32;
    for (size_t i = 0; ok && i < k->len; i++) {
        unsigned char ch = (unsigned char)k->s[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '.' || ch == '_' || ch == '-';
    }
    return ok ? k->s : "(a key whose name is not shown: it is not a field name and may be key material)";
}

int cfg_derr(dctx_t *c, const ynode_t *n, const char *sub, const char *fmt, ...)
{
    char what[600];
    if (sub)
        snprintf(what, sizeof(what), "%s%s%s", c->path, c->plen ? "." : "", sub);
    else
        snprintf(what, sizeof(what), "%s", c->path);
    va_list ap;
    va_start(ap, fmt);
    int rc = vderr(c, n, what, fmt, ap);
    va_end(ap);
    return rc;
}

int cfg_derrp(dctx_t *c, const ynode_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vderr(c, n, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- scalars ----------------------------------------------------------------------- */

/* YAML 1.2 core schema number forms: [-+]?digits, and floats (1.5, .5, 1e3, .inf, .nan). */
static bool is_int_text(const char *s)
{
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (!s[i])
        return false;
    for (; s[i]; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool is_float_text(const char *s)
{
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    bool digits = false;
    if (!strcmp(s + i, ".inf") || !strcmp(s + i, ".Inf") || !strcmp(s + i, ".INF") || !strcmp(s, ".nan") ||
        !strcmp(s, ".NaN") || !strcmp(s, ".NAN"))
        return true;
    for (; s[i] >= '0' && s[i] <= '9'; i++)
        digits = true;
    if (s[i] == '.')
        for (i++; s[i] >= '0' && s[i] <= '9'; i++)
            digits = true;
    if (!digits)
        return false;
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '-' || s[i] == '+')
            i++;
        if (!(s[i] >= '0' && s[i] <= '9'))
            return false;
        while (s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return s[i] == '\0';
}

/* What a node is, in the words error messages use. */
static const char *kind_of(const ynode_t *n)
{
    if (n->type == YN_MAP)
        return "mapping";
    if (n->type == YN_SEQ)
        return "list";
    if (n->is_null)
        return "null";
    if (!n->plain || n->force_str)
        return "string";
    const char *s = n->s;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE") || !strcmp(s, "false") ||
        !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return "boolean";
    if (is_int_text(s))
        return "integer";
    return is_float_text(s) ? "number" : "string";
}

/* Integer text (optional sign, digits) to int64: 0; -1 when not an integer; -2 when an integer
 * whose magnitude is past 2^62 (every limit rivet checks is far below: "out of range"). */
static int parse_int(const char *s, size_t len, int64_t *out)
{
    bool neg = false, big = false;
    size_t i = 0;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i = 1;
    }
    if (i == len)
        return -1;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (big || v > (UINT64_C(1) << 62))
            big = true;     /* keep reading: a non-digit later still makes it "not an integer" */
        else
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (big || v > (UINT64_C(1) << 62))
        return -2;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* Integer value of a scalar node: plain integers and (protobuf JSON) quoted integers. */
static int node_int(dctx_t *c, const ynode_t *n, const char *name, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t v;
    int pr = n->type == YN_SCALAR && !n->is_null ? parse_int(n->s, n->len, &v) : -1;
    if (pr == -1 || (n->plain && strcmp(kind_of(n), "integer") != 0))
        return cfg_derr(c, n, name, "expected an integer, got %s", kind_of(n));
    if (pr == -2) {
        /* an integer too large for any limit: say which range it is out of (the text may be
         * long: quoted up to 40 characters) */
        int shown = (int)RV_MIN(n->len, (size_t)40);
        const char *more = n->len > 40 ? "..." : "";
        if (n->s[0] == '-' && lo == 0)
            return cfg_derr(c, n, name, "must not be negative, got %.*s%s", shown, n->s, more);
        return cfg_derr(c, n, name, "out of range: must be between %lld and %lld, got %.*s%s", (long long)lo,
                        (long long)hi, shown, n->s, more);
    }
    if (v < lo || v > hi) {
        if (v < 0 && lo == 0)
            return cfg_derr(c, n, name, "must not be negative, got %lld", (long long)v);
        return cfg_derr(c, n, name, "must be between %lld and %lld, got %lld", (long long)lo, (long long)hi,
                        (long long)v);
    }
    *out = v;
    return 0;
}

int cfg_parse_duration(const char *s, size_t len, int64_t *ms)
{
    static const struct { const char *u; uint64_t ns; } units[] = {
        { "ms", 1000000ull }, { "us", 1000ull }, { "\xc2\xb5s", 1000ull }, { "ns", 1ull },
        { "h", 3600000000000ull }, { "m", 60000000000ull }, { "s", 1000000000ull },
    };
    const uint64_t cap = RV_DURATION_CAP_NS;
    uint64_t total = 0;
    size_t i = 0;
    bool big = false;       /* well-formed so far, but past cap: "too large" once the text is read */
    if (len == 0)
        return -1;
    if (len == 1 && s[0] == '0') {
        *ms = 0;
        return 0;
    }
    while (i < len) {
        uint64_t whole = 0, frac = 0, scale = 1;
        bool any = false;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (whole > cap / 10)
                big = true;
            else
                whole = whole * 10 + (uint64_t)(s[i] - '0');
            i++;
            any = true;
        }
        if (i < len && s[i] == '.') {
            i++;
            while (i < len && s[i] >= '0' && s[i] <= '9') {
                if (scale < 1000000000ull) {
                    frac = frac * 10 + (uint64_t)(s[i] - '0');
                    scale *= 10;
                }
                i++;
                any = true;
            }
        }
        if (!any)
            return -1;
        size_t k;
        for (k = 0; k < RV_ARRAY_LEN(units); k++) {
            size_t ul = strlen(units[k].u);
            if (len - i >= ul && memcmp(s + i, units[k].u, ul) == 0) {
                i += ul;
                break;
            }
        }
        if (k == RV_ARRAY_LEN(units))
            return -1;
        uint64_t u = units[k].ns;
        if (big || (whole && u > cap / whole)) {
            big = true;
            continue;
        }
        uint64_t add = whole * u;
        /* frac / scale of a unit, rounded up to the nanosecond */
        __uint128_t f = (__uint128_t)frac * u;
        uint64_t fn = (uint64_t)((f + scale - 1) / scale);
        if (add > cap - fn || total > cap - add - fn) {
            big = true;
            continue;
        }
        total += add + fn;
    }
    if (big)
        return -2;
    *ms = (int64_t)((total + 999999) / 1000000);
    return 0;
}

/* ---- fields ------------------------------------------------------------------------ */

#define AT(msg, off, type) ((type *)((char *)(msg) + (off)))

static char *copy_scalar(dctx_t *c, const ynode_t *n)
{
    char *s = rv_arena_strndup(c->a, n->s, n->len);
    if (!s)
        cfg_derrp(c, n, "out of memory");
    return s;
}

static int want_scalar(dctx_t *c, const ynode_t *n, const char *name, const char *what)
{
    if (n->type != YN_SCALAR || n->is_null)
        return cfg_derr(c, n, name, "expected %s, got %s", what, kind_of(n));
    return 0;
}

static int decode_bool(dctx_t *c, const ynode_t *n, const char *name, bool *out)
{
    const char *k = kind_of(n);
    if (strcmp(k, "boolean") != 0)
        return cfg_derr(c, n, name, "expected a boolean (true or false), got %s", k);
    *out = n->s[0] == 't' || n->s[0] == 'T';
    return 0;
}

static int decode_enum(dctx_t *c, const field_t *f, const ynode_t *n, const char *name, uint32_t *out)
{
    uint32_t count = 0;
    while (f->enums[count])
        count++;
    if (want_scalar(c, n, name, "an enum name") < 0)
        return -1;
    for (uint32_t i = 0; i < count; i++)
        if (!strcmp(n->s, f->enums[i])) {
            *out = i;
            return 0;
        }
    int64_t v;
    int pr = parse_int(n->s, n->len, &v);
    if (pr == -2)
        return cfg_derr(c, n, name, "enum value %.*s%s out of range 0..%u", (int)RV_MIN(n->len, (size_t)40), n->s,
                        n->len > 40 ? "..." : "", count - 1);
    if (pr == 0) {
        if (v < 0 || v >= count)
            return cfg_derr(c, n, name, "enum value %lld out of range 0..%u", (long long)v, count - 1);
        *out = (uint32_t)v;
        return 0;
    }
    char list[400];
    size_t o = 0;
    for (uint32_t i = 0; i < count && o < sizeof(list); i++) {
        int w = snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", f->enums[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    return cfg_derr(c, n, name, "unknown value '%s' (expected one of %s)", n->s, list);
}

static int decode_list(dctx_t *c, const field_t *f, const ynode_t *n, const char *name, void *msg)
{
    if (n->type != YN_SEQ)
        return cfg_derr(c, n, name, "expected a list, got %s", kind_of(n));
    size_t old = cfg_path_push(c, name);
    int rc = -1;
    uint32_t cnt = n->n;
    if (f->type == F_STRS) {
        strs_t *out = AT(msg, f->off, strs_t);
        out->v = cnt ? RV_ARENA_NEWN(c->a, char *, cnt) : NULL;
        if (cnt && !out->v)
            goto oom;
        for (uint32_t i = 0; i < cnt; i++) {
            const ynode_t *it = n->kids[i];
            if (it->type != YN_SCALAR || it->is_null) {
                size_t o2 = cfg_path_push_idx(c, i);
                cfg_derr(c, it, NULL, "expected a string, got %s", kind_of(it));
                cfg_path_pop(c, o2);
                goto out;
            }
            if (!(out->v[i] = copy_scalar(c, it)))
                goto out;
        }
        out->n = cnt;
    } else if (f->type == F_U32S) {
        u32s_t *out = AT(msg, f->off, u32s_t);
        out->v = cnt ? RV_ARENA_NEWN(c->a, uint32_t, cnt) : NULL;
        if (cnt && !out->v)
            goto oom;
        for (uint32_t i = 0; i < cnt; i++) {
            int64_t v;
            size_t o2 = cfg_path_push_idx(c, i);
            int r = node_int(c, n->kids[i], NULL, 0, f->max ? f->max : UINT32_MAX, &v);
            cfg_path_pop(c, o2);
            if (r < 0)
                goto out;
            out->v[i] = (uint32_t)v;
        }
        out->n = cnt;
    } else { /* F_MSGS */
        list_t *out = AT(msg, f->off, list_t);
        out->v = cnt ? rv_arena_calloc(c->a, cnt * f->sub->size) : NULL;
        if (cnt && !out->v)
            goto oom;
        for (uint32_t i = 0; i < cnt; i++) {
            size_t o2 = cfg_path_push_idx(c, i);
            const ynode_t *it = n->kids[i];
            int r;
            if (it->type == YN_SCALAR && it->is_null)
                r = cfg_derr(c, it, NULL, "expected a mapping, got null");
            else
                r = cfg_decode_msg(c, f->sub, it, (char *)out->v + i * f->sub->size);
            cfg_path_pop(c, o2);
            if (r < 0)
                goto out;
        }
        out->n = cnt;
    }
    rc = 0;
    goto out;
oom:
    cfg_derrp(c, n, "out of memory");
out:
    cfg_path_pop(c, old);
    return rc;
}

static int decode_labels(dctx_t *c, const ynode_t *n, const char *name, labels_t *out)
{
    if (n->type != YN_MAP)
        return cfg_derr(c, n, name, "expected a mapping of strings, got %s", kind_of(n));
    out->k = n->n ? RV_ARENA_NEWN(c->a, char *, n->n) : NULL;
    out->v = n->n ? RV_ARENA_NEWN(c->a, char *, n->n) : NULL;
    if (n->n && (!out->k || !out->v))
        return cfg_derrp(c, n, "out of memory");
    for (uint32_t i = 0; i < n->n; i++) {
        const ynode_t *k = n->kids[2 * i], *v = n->kids[2 * i + 1];
        if (v->type != YN_SCALAR) {
            size_t old = cfg_path_push(c, name);
            cfg_derr(c, v, k->s, "expected a string, got %s", kind_of(v));
            cfg_path_pop(c, old);
            return -1;
        }
        if (!(out->k[i] = copy_scalar(c, k)))
            return -1;
        out->v[i] = v->is_null ? rv_arena_strndup(c->a, "", 0) : copy_scalar(c, v);
        if (!out->v[i])
            return -1;
    }
    out->n = n->n;
    return 0;
}

/* Decode one field value; *set tells whether it counts as present (not null). */
static int decode_field(dctx_t *c, const field_t *f, const ynode_t *kn, const ynode_t *n, void *msg, bool *set)
{
    const char *name = kn->s;
    *set = false;
    if (n->type == YN_SCALAR && n->is_null && f->type != F_IGNORE)
        return 0;   /* protobuf JSON: null is the default value */
    *set = true;
    if (f->set_off)
        *AT(msg, f->set_off, bool) = true;
    switch (f->type) {
    case F_STR:
        if (want_scalar(c, n, name, "a string") < 0)
            return -1;
        return (*AT(msg, f->off, char *) = copy_scalar(c, n)) ? 0 : -1;
    case F_BOOL:
        return decode_bool(c, n, name, AT(msg, f->off, bool));
    case F_FALSE_ONLY: {
        bool v;
        if (decode_bool(c, n, name, &v) < 0)
            return -1;
        if (v)
            return cfg_derr(c, n, name, "true is not supported yet%s%s", f->note ? " " : "", f->note ? f->note : "");
        return 0;
    }
    case F_PCT: {
        /* a plain number (integer or decimal), 0 to 100 */
        const char *k = kind_of(n);
        char *end = NULL;
        double v = 0;
        if (n->type != YN_SCALAR || !n->plain || (strcmp(k, "integer") != 0 && strcmp(k, "number") != 0))
            return cfg_derr(c, n, name, "expected a percentage (a number from 0 to 100), got %s", k);
        v = strtod(n->s, &end);
        if (!end || *end || !(v >= 0 && v <= 100))
            return cfg_derr(c, n, name, "must be a number from 0 to 100, got '%s'", n->s);
        *AT(msg, f->off, double) = v;
        return 0;
    }
    case F_U32:
    case F_I32: {
        int64_t v, lo = f->type == F_I32 ? INT32_MIN : 0;
        int64_t hi = f->type == F_I32 ? INT32_MAX : (f->max ? f->max : UINT32_MAX);
        if (node_int(c, n, name, lo, hi, &v) < 0)
            return -1;
        if (f->type == F_I32)
            *AT(msg, f->off, int32_t) = (int32_t)v;
        else
            *AT(msg, f->off, uint32_t) = (uint32_t)v;
        return 0;
    }
    case F_DUR: {
        int64_t ms;
        if (n->type != YN_SCALAR || (n->plain && !strcmp(kind_of(n), "integer")))
            return cfg_derr(c, n, name, "expected a duration such as \"5s\" or \"100ms\", got %s", kind_of(n));
        int pd = cfg_parse_duration(n->s, n->len, &ms);
        if (pd == -2)
            return cfg_derr(c, n, name, "duration '%s' is too large (at most %lluh)", n->s,
                            (unsigned long long)(RV_DURATION_CAP_NS / 3600000000000ull));
        if (pd < 0)
            return cfg_derr(c, n, name, "invalid duration '%s' (expected e.g. \"5s\", \"1.5s\", \"100ms\", \"1m\")",
                            n->s);
        *AT(msg, f->off, int64_t) = ms;
        return 0;
    }
    case F_STRS:
    case F_U32S:
    case F_MSGS:
        return decode_list(c, f, n, name, msg);
    case F_LABELS:
        return decode_labels(c, n, name, AT(msg, f->off, labels_t));
    case F_ENUM:
        return decode_enum(c, f, n, name, AT(msg, f->off, uint32_t));
    case F_MSG: {
        size_t old = cfg_path_push(c, name);
        int rc = cfg_decode_msg(c, f->sub, n, AT(msg, f->off, void));
        cfg_path_pop(c, old);
        return rc;
    }
    case F_IGNORE:
        return 0;
    case F_UNSUP:
        if (f->note && strstr(f->note, "%s")) {
            char text[300];
            snprintf(text, sizeof(text), f->note, f->name);
            return cfg_derrp(c, kn, "%s", text);
        }
        return cfg_derrp(c, kn, "%s%s%s is not supported yet%s%s", c->path, c->plen ? "." : "", name,
                         f->note ? " " : "", f->note ? f->note : "");
    }
    return cfg_derr(c, n, name, "internal error: bad field type");
}

int cfg_decode_msg(dctx_t *c, const msgdesc_t *desc, const ynode_t *n, void *msg)
{
    bool seen[64] = { false }, set[64] = { false };
    mhdr_t *h = msg;
    if (n->type != YN_MAP)
        return cfg_derr(c, n, NULL, "expected a mapping, got %s", kind_of(n));
    if (desc->nfields > 64)
        return cfg_derr(c, n, NULL, "internal error: message %s too large", desc->name);
    h->set = true;
    h->line = n->line;
    h->col = n->col;
    for (uint32_t i = 0; i < n->n; i++) {
        const ynode_t *k = n->kids[2 * i], *v = n->kids[2 * i + 1];
        uint32_t fi;
        for (fi = 0; fi < desc->nfields; fi++)
            if (cfg_name_matches(k->s, k->len, desc->fields[fi].name))
                break;
        if (fi == desc->nfields) {
            if (k->len == 2 && !memcmp(k->s, "<<", 2))
                return cfg_derr(c, k, NULL, "YAML merge keys (<<) are not supported");
            if (desc->open_unsup)
                return cfg_derrp(c, k, "%s%s%s is not supported yet", c->path, c->plen ? "." : "",
                                 cfg_key_name(c, k));
            return cfg_derr(c, k, cfg_key_name(c, k), "unknown field");
        }
        if (seen[fi])
            return cfg_derr(c, k, k->s, "duplicate field (%s is also set under its other spelling)",
                            desc->fields[fi].name);
        seen[fi] = true;
        if (decode_field(c, &desc->fields[fi], k, v, msg, &set[fi]) < 0)
            return -1;
    }
    /* oneofs: at most one member present */
    for (uint32_t a = 0; a < desc->nfields; a++) {
        if (!desc->fields[a].oneof || !set[a])
            continue;
        for (uint32_t b = a + 1; b < desc->nfields; b++)
            if (set[b] && desc->fields[b].oneof == desc->fields[a].oneof)
                return cfg_derr(c, cfg_field_node(n, desc->fields[b].name), NULL,
                                "%s and %s cannot both be set (only one of them is allowed)", desc->fields[a].name,
                                desc->fields[b].name);
    }
    if (desc->check)
        return desc->check(c, msg, n);
    return 0;
}

/* ---- whole resources --------------------------------------------------------------- */

/* Check metadata against the file's place; fills a missing namespace from the folder. */
static int check_meta(dctx_t *c, int kind, meta_t *m, const ynode_t *mn, const ynode_t *root, const char *ns,
                      const char *name, bool k8s)
{
    const char *mpath = "metadata";
    RV_UNUSED(k8s);
    const ynode_t *at = mn ? mn : root;
    size_t old = c->plen;
    cfg_path_pop(c, 0);
    if (!m->name || !m->name[0]) {
        if (kind == RK_SETTINGS) {
            m->name = rv_arena_strndup(c->a, name, strlen(name));
        } else {
            cfg_derr(c, at, NULL, "%s.name is required", mpath);
            goto fail;
        }
    } else if (name && strcmp(m->name, name) != 0) {
        cfg_derr(c, cfg_field_node(mn, "name"), NULL,
                 "%s.name '%s' does not match the file name '%s' (the file must be named <metadata.name>.yaml)",
                 mpath, m->name, name);
        goto fail;
    }
    if (!m->ns || !m->ns[0]) {
        m->ns = ns ? rv_arena_strndup(c->a, ns, strlen(ns)) : NULL;
    } else if (ns && strcmp(m->ns, ns) != 0) {
        cfg_derr(c, cfg_field_node(mn, "namespace"), NULL,
                 "%s.namespace '%s' does not match the folder '%s' it is stored in", mpath, m->ns, ns);
        goto fail;
    }
    cfg_path_pop(c, old);
    return 0;
fail:
    return -1;
}

int cfg_decode_resource(rv_arena_t *a, int kind, const char *file, const char *who, const char *ns,
                        const char *name, const char *buf, size_t len, void **obj, char *err, size_t errlen)
{
    const kind_info_t *ki = &cfg_kinds[kind];
    dctx_t c = { .a = a, .file = file, .who = who, .err = err, .errlen = errlen };
    char yerr[CFG_ERRLEN];
    ynode_t *root;
    void *msg;
    int eline, ecol;

    err[0] = '\0';
    *obj = NULL;
    root = cfg_yaml_parse(a, buf, len, yerr, sizeof(yerr), &eline, &ecol);
    if (!root) {
        ynode_t at = { .line = eline, .col = ecol };
        return cfg_derrp(&c, &at, "%s", yerr);
    }
    if (root->type != YN_MAP)
        return cfg_derr(&c, root, NULL, "expected a mapping at the top level, got %s", kind_of(root));
    msg = rv_arena_calloc(a, ki->desc->size);
    if (!msg)
        return cfg_derrp(&c, root, "out of memory");

    bool k8s = cfg_ymap_get(root, "apiVersion") || cfg_ymap_get(root, "kind") || cfg_ymap_get(root, "spec");
    meta_t *meta = AT(msg, offsetof(vs_t, meta), meta_t);
    const ynode_t *mn = cfg_ymap_get(root, "metadata");
    if (k8s) {
        const ynode_t *spec = NULL;
        for (uint32_t i = 0; i < root->n; i++) {
            const ynode_t *k = root->kids[2 * i], *v = root->kids[2 * i + 1];
            if (!strcmp(k->s, "apiVersion")) {
                if (v->type != YN_SCALAR || strcmp(v->s, ki->api) != 0)
                    return cfg_derr(&c, v, "apiVersion", "expected %s for a %s, got '%s'", ki->api, ki->kind,
                                    v->type == YN_SCALAR ? v->s : kind_of(v));
            } else if (!strcmp(k->s, "kind")) {
                if (v->type != YN_SCALAR || strcmp(v->s, ki->kind) != 0)
                    return cfg_derr(&c, v, "kind", "'%s' does not belong in %s/ (expected %s)",
                                    v->type == YN_SCALAR ? v->s : kind_of(v), ki->plural, ki->kind);
            } else if (!strcmp(k->s, "spec")) {
                spec = v;
            } else if (!strcmp(k->s, "metadata") || !strcmp(k->s, "status")) {
                continue;
            } else {
                return cfg_derr(&c, k, k->s,
                                "unknown field (a Kubernetes-form resource has apiVersion, kind, metadata and spec)");
            }
        }
        if (!cfg_ymap_get(root, "apiVersion"))
            return cfg_derr(&c, root, "apiVersion", "is required in the Kubernetes form (%s)", ki->api);
        if (!cfg_ymap_get(root, "kind"))
            return cfg_derr(&c, root, "kind", "is required in the Kubernetes form (%s)", ki->kind);
        if (!spec || (spec->type == YN_SCALAR && spec->is_null)) {
            /* An absent or empty spec is an empty message, and it must pass the same checks
             * as a written one (a Gateway without bindPort, an Upstream without a type...). */
            ynode_t empty = { .type = YN_MAP, .line = spec ? spec->line : root->line,
                              .col = spec ? spec->col : root->col };
            size_t old = cfg_path_push(&c, "spec");
            int rc = cfg_decode_msg(&c, ki->desc, &empty, msg);
            cfg_path_pop(&c, old);
            if (rc < 0)
                return -1;
        } else {
            size_t old = cfg_path_push(&c, "spec");
            if (spec->type == YN_MAP && cfg_ymap_get(spec, "metadata")) {
                cfg_derr(&c, cfg_ymap_get(spec, "metadata"), "metadata", "belongs at the top level, not in spec");
                return -1;
            }
            int rc = cfg_decode_msg(&c, ki->desc, spec, msg);
            cfg_path_pop(&c, old);
            if (rc < 0)
                return -1;
        }
        if (mn && !(mn->type == YN_SCALAR && mn->is_null)) {
            size_t old = cfg_path_push(&c, "metadata");
            int rc = cfg_decode_msg(&c, &cfg_meta_desc, mn, meta);
            cfg_path_pop(&c, old);
            if (rc < 0)
                return -1;
        }
    } else {
        if (cfg_decode_msg(&c, ki->desc, root, msg) < 0)
            return -1;
    }
    if (check_meta(&c, kind, meta, mn, root, ns, name, k8s) < 0)
        return -1;
    *obj = msg;
    return 0;
}
