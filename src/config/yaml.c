/*
 * yaml.c - one YAML document into a small node tree, with the limits a config loader needs.
 *
 * libfyaml's event parser does the YAML; this file builds ynode_t trees in an arena and
 * enforces what libfyaml leaves to us: duplicate keys, scalar keys, UTF-8, no NUL, known tags,
 * nesting depth, and a bound on the size of the document once aliases are expanded (aliases
 * share the anchored subtree, and every node carries its expanded weight, so an alias bomb
 * is refused before anything walks it).
 */
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config-internal.h"

typedef struct frame_s {
    ynode_t *node;
    ynode_t **kids;
    uint32_t nk, cap;
    char *anchor;           /* arena copy, registered when the collection ends */
} frame_t;

typedef struct anchor_s {
    const char *name;
    size_t len;
    ynode_t *node;
} anchor_t;

typedef struct yparse_s {
    rv_arena_t *a;
    frame_t stack[CFG_MAX_DEPTH + 1];
    int depth;
    anchor_t *anchors;
    uint32_t nanchors;
    ynode_t *root;
    int docs;
    int line, col;          /* last known position (1-based) */
    char *err;
    size_t errlen;
    int eline, ecol;        /* position of the error, 0 when none */
} yparse_t;

static int yerr(yparse_t *p, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int yerr(yparse_t *p, int line, int col, const char *fmt, ...)
{
    va_list ap;
    p->eline = line;
    p->ecol = col;
    va_start(ap, fmt);
    vsnprintf(p->err, p->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/*
 * The whole file must be UTF-8 made of characters YAML allows (tab, LF, CR, printable). Checked
 * before libfyaml sees it: besides giving a clear message, some malformed input (invalid UTF-8
 * in a directive) makes libfyaml 0.7 loop forever.
 */
static int check_chars(yparse_t *p, const unsigned char *s, size_t len)
{
    int line = 1;
    size_t bol = 0;
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        int col = (int)(i - bol) + 1;
        if (c == '\n') {
            line++;
            bol = ++i;
            continue;
        }
        if (c == '\0')
            return yerr(p, line, col, "file contains a NUL byte");
        if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
            return yerr(p, line, col, "control character 0x%02x is not allowed in YAML", c);
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (i + n > len || !utf8_valid(s + i, n))
            return yerr(p, line, col, "the file is not valid UTF-8");
        /* C1 controls (U+0080..U+009F) but NEL (U+0085) */
        if (c == 0xc2 && s[i + 1] < 0xa0 && s[i + 1] != 0x85)
            return yerr(p, line, col, "control character U+%04X is not allowed in YAML", s[i + 1]);
        i += n;
    }
    return 0;
}

static void mark_of(yparse_t *p, struct fy_event *e, int *line, int *col)
{
    const struct fy_mark *m = fy_event_start_mark(e);
    if (m && m->line >= 0) {
        p->line = m->line + 1;
        p->col = m->column + 1;
    }
    *line = p->line;
    *col = p->col;
}

/* Attach a finished node to the open collection, or make it the root. */
static int add_node(yparse_t *p, ynode_t *n)
{
    if (p->depth == 0) {
        p->root = n;
        return 0;
    }
    frame_t *f = &p->stack[p->depth - 1];
    if (f->node->weight + n->weight > CFG_MAX_NODES)
        return yerr(p, n->line, n->col, "document too large: more than %u nodes once aliases are expanded",
                    CFG_MAX_NODES);
    f->node->weight += n->weight;
    if (f->nk == f->cap) {
        uint32_t ncap = f->cap ? f->cap * 2 : 8;
        ynode_t **k = realloc(f->kids, ncap * sizeof(*k));
        if (!k)
            return yerr(p, 0, 0, "out of memory");
        f->kids = k;
        f->cap = ncap;
    }
    f->kids[f->nk++] = n;
    return 0;
}

/* Anchors live in an open-addressing table of ANCHOR_SLOTS (twice the limit): O(1) aliases. */
#define ANCHOR_SLOTS (2 * CFG_MAX_ANCHORS)

static uint32_t anchor_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h & (ANCHOR_SLOTS - 1);
}

static anchor_t *anchor_slot(yparse_t *p, const char *name, size_t len)
{
    for (uint32_t i = anchor_hash(name, len);; i = (i + 1) & (ANCHOR_SLOTS - 1)) {
        anchor_t *an = &p->anchors[i];
        if (!an->name || (an->len == len && memcmp(an->name, name, len) == 0))
            return an;
    }
}

/* Define (or, as YAML allows, redefine) an anchor. */
static int add_anchor(yparse_t *p, const char *name, size_t len, ynode_t *n)
{
    if (!p->anchors && !(p->anchors = calloc(ANCHOR_SLOTS, sizeof(*p->anchors))))
        return yerr(p, 0, 0, "out of memory");
    anchor_t *an = anchor_slot(p, name, len);
    if (!an->name) {
        if (p->nanchors == CFG_MAX_ANCHORS)
            return yerr(p, n->line, n->col, "too many YAML anchors (more than %d)", CFG_MAX_ANCHORS);
        p->nanchors++;
    }
    *an = (anchor_t){ name, len, n };
    return 0;
}

/* Anchor name of an event, copied into the arena (NULL when none). */
static char *anchor_name(yparse_t *p, struct fy_event *e, size_t *len)
{
    struct fy_token *t = fy_event_get_anchor_token(e);
    if (!t)
        return NULL;
    const char *s = fy_token_get_text(t, len);
    if (!s)
        return NULL;
    return rv_arena_strndup(p->a, s, *len);
}

/* Check a tag: 0 ok (force_str set for !!str), -1 for tags we do not interpret. */
static int check_tag(yparse_t *p, struct fy_event *e, ynode_t *n)
{
    struct fy_token *t = fy_event_get_tag_token(e);
    if (!t)
        return 0;
    size_t len;
    const char *s = fy_token_get_text(t, &len);
    if (!s)
        return 0;
    static const char *const ok[] = { "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool",
                                      "tag:yaml.org,2002:null", "tag:yaml.org,2002:float",
                                      "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "!" };
    if (len == 21 && memcmp(s, "tag:yaml.org,2002:str", 21) == 0) {
        n->force_str = true;
        return 0;
    }
    for (size_t i = 0; i < RV_ARRAY_LEN(ok); i++)
        if (strlen(ok[i]) == len && memcmp(s, ok[i], len) == 0)
            return 0;
    return yerr(p, n->line, n->col, "unsupported YAML tag '%.*s'", (int)RV_MIN(len, 64), s);
}

static int key_cmp(const void *a, const void *b)
{
    const ynode_t *x = *(ynode_t *const *)a, *y = *(ynode_t *const *)b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    int c = memcmp(x->s, y->s, x->len);
    if (c)
        return c;
    /* keep document order among equal keys so the error names the later one */
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->col < y->col ? -1 : (x->col > y->col);
}

/* Finish a mapping: keys must be scalars and unique. */
static int check_map(yparse_t *p, ynode_t *m)
{
    if (m->n == 0)
        return 0;
    ynode_t **keys = malloc(m->n * sizeof(*keys));
    if (!keys)
        return yerr(p, 0, 0, "out of memory");
    int rc = 0;
    for (uint32_t i = 0; i < m->n; i++) {
        ynode_t *k = m->kids[2 * i];
        if (k->type != YN_SCALAR) {
            rc = yerr(p, k->line, k->col, "mapping keys must be scalars");
            goto out;
        }
        keys[i] = k;
    }
    qsort(keys, m->n, sizeof(*keys), key_cmp);
    for (uint32_t i = 1; i < m->n; i++) {
        if (keys[i]->len == keys[i - 1]->len && memcmp(keys[i]->s, keys[i - 1]->s, keys[i]->len) == 0) {
            rc = yerr(p, keys[i]->line, keys[i]->col, "duplicate key '%.*s'", (int)RV_MIN(keys[i]->len, 128),
                      keys[i]->s);
            goto out;
        }
    }
out:
    free(keys);
    return rc;
}

static int on_scalar(yparse_t *p, struct fy_event *e)
{
    ynode_t *n = RV_ARENA_NEW(p->a, ynode_t);
    if (!n)
        return yerr(p, 0, 0, "out of memory");
    mark_of(p, e, &n->line, &n->col);
    n->type = YN_SCALAR;
    n->weight = 1;
    size_t len = 0;
    const char *s = fy_token_get_text(e->scalar.value, &len);
    if (!s) {
        s = "";
        len = 0;
    }
    if (memchr(s, '\0', len))
        return yerr(p, n->line, n->col, "NUL character in a value");
    if (!utf8_valid((const unsigned char *)s, len))
        return yerr(p, n->line, n->col, "value is not valid UTF-8");
    n->s = rv_arena_strndup(p->a, s, len);
    if (!n->s)
        return yerr(p, 0, 0, "out of memory");
    n->len = len;
    n->plain = fy_token_scalar_style(e->scalar.value) == FYSS_PLAIN;
    if (check_tag(p, e, n) < 0)
        return -1;
    if (n->plain && !n->force_str &&
        (len == 0 || (len == 1 && s[0] == '~') || (len == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) ||
                                                                 !memcmp(s, "NULL", 4)))))
        n->is_null = true;
    size_t alen;
    char *an = anchor_name(p, e, &alen);
    if (an && add_anchor(p, an, alen, n) < 0)
        return -1;
    return add_node(p, n);
}

static int on_alias(yparse_t *p, struct fy_event *e)
{
    int line, col;
    mark_of(p, e, &line, &col);
    size_t len = 0;
    const char *s = fy_token_get_text(e->alias.anchor, &len);
    if (!s)
        return yerr(p, line, col, "bad alias");
    anchor_t *an = p->anchors ? anchor_slot(p, s, len) : NULL;
    if (an && an->name)
        return add_node(p, an->node);
    return yerr(p, line, col, "unknown alias '*%.*s'", (int)RV_MIN(len, 64), s);
}

static int on_start(yparse_t *p, struct fy_event *e, int type)
{
    ynode_t *n = RV_ARENA_NEW(p->a, ynode_t);
    if (!n)
        return yerr(p, 0, 0, "out of memory");
    mark_of(p, e, &n->line, &n->col);
    n->type = (uint8_t)type;
    n->weight = 1;
    if (check_tag(p, e, n) < 0)
        return -1;
    if (n->force_str)
        return yerr(p, n->line, n->col, "!!str on a collection");
    if (p->depth >= CFG_MAX_DEPTH)
        return yerr(p, n->line, n->col, "nesting deeper than %d levels", CFG_MAX_DEPTH);
    frame_t *f = &p->stack[p->depth++];
    memset(f, 0, sizeof(*f));
    f->node = n;
    size_t alen;
    f->anchor = anchor_name(p, e, &alen);
    return 0;
}

static int on_end(yparse_t *p)
{
    frame_t *f = &p->stack[p->depth - 1];
    ynode_t *n = f->node;
    if (f->nk) {
        n->kids = rv_arena_alloc(p->a, f->nk * sizeof(*n->kids));
        if (!n->kids)
            return yerr(p, 0, 0, "out of memory");
        memcpy(n->kids, f->kids, f->nk * sizeof(*n->kids));
    }
    n->n = n->type == YN_MAP ? f->nk / 2 : f->nk;
    free(f->kids);
    f->kids = NULL;
    char *an = f->anchor;
    p->depth--;
    if (n->type == YN_MAP && check_map(p, n) < 0)
        return -1;
    if (an && add_anchor(p, an, strlen(an), n) < 0)
        return -1;
    return add_node(p, n);
}

static void silent_output(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    RV_UNUSED(diag);
    RV_UNUSED(user);
    RV_UNUSED(buf);
    RV_UNUSED(len);
}

ynode_t *cfg_yaml_parse(rv_arena_t *a, const char *buf, size_t len, char *err, size_t errlen, int *eline,
                        int *ecol)
{
    yparse_t p = { .a = a, .err = err, .errlen = errlen };
    struct fy_diag *diag = NULL;
    struct fy_parser *fyp = NULL;
    ynode_t *result = NULL;
    int rc = 0;

    err[0] = '\0';
    if (len > CFG_MAX_FILE) {
        yerr(&p, 0, 0, "file is larger than %u bytes", CFG_MAX_FILE);
        goto out;
    }
    if (check_chars(&p, (const unsigned char *)buf, len) < 0)
        goto out;

    struct fy_diag_cfg dc;
    fy_diag_cfg_default(&dc);
    dc.fp = NULL;
    dc.output_fn = silent_output;
    dc.colorize = false;
    diag = fy_diag_create(&dc);
    if (!diag) {
        yerr(&p, 0, 0, "out of memory");
        goto out;
    }
    fy_diag_set_collect_errors(diag, true);
    struct fy_parse_cfg cfg = { .flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2, .diag = diag };
    fyp = fy_parser_create(&cfg);
    if (!fyp || fy_parser_set_string(fyp, len ? buf : "", len) != 0) {
        yerr(&p, 0, 0, "out of memory");
        goto out;
    }

    struct fy_event *e;
    while (rc == 0 && (e = fy_parser_parse(fyp)) != NULL) {
        switch (e->type) {
        case FYET_DOCUMENT_START:
            if (++p.docs > 1) {
                int line, col;
                mark_of(&p, e, &line, &col);
                rc = yerr(&p, line, col, "a file holds one resource: found a second YAML document");
            }
            break;
        case FYET_SCALAR:
            rc = on_scalar(&p, e);
            break;
        case FYET_ALIAS:
            rc = on_alias(&p, e);
            break;
        case FYET_MAPPING_START:
            rc = on_start(&p, e, YN_MAP);
            break;
        case FYET_SEQUENCE_START:
            rc = on_start(&p, e, YN_SEQ);
            break;
        case FYET_MAPPING_END:
        case FYET_SEQUENCE_END:
            rc = on_end(&p);
            break;
        default:
            break;
        }
        fy_parser_event_free(fyp, e);
    }
    if (rc != 0)
        goto out;
    if (fy_parser_get_stream_error(fyp)) {
        void *it = NULL;
        struct fy_diag_error *de = fy_diag_errors_iterate(diag, &it);
        if (de)
            yerr(&p, de->line > 0 ? de->line : 1, de->column > 0 ? de->column : 1, "invalid YAML: %s", de->msg);
        else
            yerr(&p, 0, 0, "invalid YAML");
        goto out;
    }
    if (!p.root || (p.root->type == YN_SCALAR && p.root->is_null)) {
        yerr(&p, 0, 0, "the file holds no resource (empty document)");
        goto out;
    }
    result = p.root;
out:
    for (int i = 0; i < p.depth; i++)
        free(p.stack[i].kids);
    *eline = p.eline;
    *ecol = p.ecol;
    free(p.anchors);
    if (fyp)
        fy_parser_destroy(fyp);
    if (diag)
        fy_diag_destroy(diag);
    return result;
}

ynode_t *cfg_ymap_get(const ynode_t *m, const char *key)
{
    if (!m || m->type != YN_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < m->n; i++) {
        ynode_t *k = m->kids[2 * i];
        if (k->len == kl && memcmp(k->s, key, kl) == 0)
            return m->kids[2 * i + 1];
    }
    return NULL;
}
