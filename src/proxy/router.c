/*
 * router.c - virtual host and route lookup (Gloo Edge / Envoy semantics).
 *
 * rv_router_build() compiles, per listener, into the snapshot arena:
 *   - a hash table of exact domains (open addressing, FNV-1a over lower-cased bytes),
 *   - a sorted array of "*suffix" wildcards and one of "prefix*" wildcards, each entry
 *     carrying a link to the longest other key that is a prefix (suffix) of it, so the
 *     longest wildcard that fits a host is one binary search plus a short walk,
 *   - per virtual host, a sorted array of route keys with the same prefix links: the path of
 *     a case-sensitive prefix/exact matcher, the literal prefix of a case-sensitive regex,
 *     else the empty key; first match by route order is recovered by merging the candidate
 *     keys' route indices, so a regex runs only when the path starts with its literal prefix.
 * Lookups are read-only and allocate nothing. doc/internals/routing.md explains the rules.
 */
#include "proxy/router.h"

#include <ctype.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/regex.h"

/* Runs of indexable routes shorter than this are cheaper to test one by one. */
#define MIN_INDEXED_RUN 8
/* Candidate lists merged at most in one indexed lookup; deeper nesting falls back to a scan. */
#define MAX_CURSORS 32
/* Decoded query names/values longer than this never match a regex query matcher. */
#define QUERY_DECODE_CAP 2048

/* ---- sorted key sets with prefix links ------------------------------------------- */

/*
 * One key of a sorted set. For a suffix set ("*.a.com" -> ".a.com") keys are ordered by
 * their reversed bytes, and "prefix" below means "suffix". parent: index of the longest
 * other key of the set that is a proper prefix of this one, -1 when none.
 */
struct skey {
    const char *p;
    uint32_t len;
    int32_t parent;
};

static inline unsigned char key_at(const char *p, size_t len, size_t i, bool rev)
{
    return (unsigned char)(rev ? p[len - 1 - i] : p[i]);
}

/*
 * Compare key k (stored lower-cased when fold) with subject s in the set's order; fold
 * lower-cases s on the fly. *lcp gets the length of their common prefix (in set order).
 */
static int key_cmp(const struct skey *k, rv_str_t s, bool rev, bool fold, size_t *lcp)
{
    size_t n = RV_MIN((size_t)k->len, s.len);
    size_t i = 0;
    int r = 0;
    for (; i < n; i++) {
        unsigned char a = key_at(k->p, k->len, i, rev);
        unsigned char b = key_at(s.ptr, s.len, i, rev);
        if (fold)
            b = (unsigned char)rv_lower((char)b);
        if (a != b) {
            r = a < b ? -1 : 1;
            break;
        }
    }
    if (lcp)
        *lcp = i;
    if (r == 0 && i == n)
        r = k->len < s.len ? -1 : (k->len > s.len ? 1 : 0);
    return r;
}

/*
 * Deepest key of k[0..n) that is a prefix of s (a proper one, shorter than s, when proper),
 * or -1. Every shorter key that is also a prefix of s is on its parent chain.
 * Why it works: let K be the greatest key <= s. Any key P that is a prefix of s satisfies
 * P <= K <= s, and every string between P and s starts with P, so P is a prefix of K; the
 * keys that are prefixes of both K and s are exactly K's chain members no longer than
 * lcp(K, s).
 */
static int32_t skey_find(const struct skey *k, uint32_t n, rv_str_t s, bool rev, bool fold, bool proper)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (key_cmp(&k[mid], s, rev, fold, NULL) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    int32_t i = (int32_t)lo - 1;
    size_t lcp;
    key_cmp(&k[i], s, rev, fold, &lcp);
    while (i >= 0 && (k[i].len > lcp || (proper && k[i].len >= s.len)))
        i = k[i].parent;
    return i;
}

static bool key_is_prefix(const struct skey *a, const struct skey *b, bool rev)
{
    if (a->len > b->len)
        return false;
    for (uint32_t i = 0; i < a->len; i++)
        if (key_at(a->p, a->len, i, rev) != key_at(b->p, b->len, i, rev))
            return false;
    return true;
}

/*
 * Set the parent links of sorted, duplicate-free keys. The keys that are prefixes of k[i]
 * and sort before it are all prefixes of k[i-1] too, so a stack holding the chain of the
 * previous key is enough. Returns 0 or RV_ENOMEM.
 */
static int skey_link(struct skey *k, uint32_t n, bool rev)
{
    if (n == 0)
        return 0;
    int32_t *stack = malloc(sizeof(*stack) * n);
    if (!stack)
        return RV_ENOMEM;
    uint32_t top = 0;
    for (uint32_t i = 0; i < n; i++) {
        while (top > 0 && !key_is_prefix(&k[stack[top - 1]], &k[i], rev))
            top--;
        k[i].parent = top > 0 ? stack[top - 1] : -1;
        stack[top++] = (int32_t)i;
    }
    free(stack);
    return 0;
}

/* Order of build items: key in set order, then ordinal (so the first one wins a tie). */
struct item {
    struct skey k;
    uint32_t ord;   /* domains: position across all vhosts' domains; routes: route index */
    uint32_t aux;   /* domains: vhost index; routes: path kind */
};

/* qsort_r comparator; ctx points to the set's "reversed" flag. */
static int item_cmp(const void *pa, const void *pb, void *ctx)
{
    const struct item *a = pa, *b = pb;
    bool sort_rev = *(const bool *)ctx;
    size_t n = RV_MIN(a->k.len, b->k.len);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = key_at(a->k.p, a->k.len, i, sort_rev);
        unsigned char y = key_at(b->k.p, b->k.len, i, sort_rev);
        if (x != y)
            return x < y ? -1 : 1;
    }
    if (a->k.len != b->k.len)
        return a->k.len < b->k.len ? -1 : 1;
    return a->ord < b->ord ? -1 : (a->ord > b->ord ? 1 : 0);
}

static bool same_key(const struct skey *a, const struct skey *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

/* ---- hosts ------------------------------------------------------------------------- */

rv_str_t rv_host_split_port(rv_str_t host, rv_str_t *port)
{
    if (port)
        *port = RV_STR_NULL;
    if (host.len == 0)
        return host;
    size_t colon;
    if (host.ptr[0] == '[') {
        const char *rb = memchr(host.ptr, ']', host.len);
        if (!rb)
            return host;
        colon = (size_t)(rb - host.ptr) + 1;
        if (colon >= host.len || host.ptr[colon] != ':')
            return host;
    } else {
        const char *c = memchr(host.ptr, ':', host.len);
        if (!c)
            return host;
        colon = (size_t)(c - host.ptr);
        if (memchr(c + 1, ':', host.len - colon - 1))
            return host; /* bare IPv6 literal: no port */
    }
    for (size_t i = colon + 1; i < host.len; i++)
        if (host.ptr[i] < '0' || host.ptr[i] > '9')
            return host;
    if (port)
        *port = rv_str(host.ptr + colon + 1, host.len - colon - 1);
    return rv_str(host.ptr, colon);
}

/* ---- the listener index ------------------------------------------------------------ */

struct hslot {
    const char *key; /* NULL: empty slot */
    uint32_t len;
    uint32_t hash;
    const rv_vhost_t *vh;
};

/* Candidates sharing one key in an indexed route segment; route indices ascending. */
struct rentry {
    const uint32_t *pfx;
    uint32_t npfx;
    const uint32_t *ex;
    uint32_t nex;
};

struct seg {
    uint32_t start, end;        /* routes [start, end) of the vhost */
    struct skey *keys;          /* NULL: test the routes in order */
    struct rentry *ents;        /* parallel to keys */
    uint32_t nkeys;
};

struct vroutes {
    struct seg *segs;
    uint32_t nsegs;
};

struct rv_router_index_s {
    const rv_vhost_t *vhosts;   /* the array the index was built for */
    uint32_t nvhosts;
    uint32_t nexact;            /* exact domains in the hash table */
    struct hslot *exact;
    uint32_t mask;              /* table size - 1 (size a power of two) */
    struct skey *sfx;           /* "*suffix" keys, reversed order; payload in sfx_vh */
    const rv_vhost_t **sfx_vh;
    uint32_t nsfx;
    struct skey *pfx;           /* "prefix*" keys; payload in pfx_vh */
    const rv_vhost_t **pfx_vh;
    uint32_t npfx;
    const rv_vhost_t *any;      /* "*" */
    struct vroutes *vr;         /* parallel to vhosts */
};

static uint32_t host_hash(rv_str_t s)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < s.len; i++) {
        h ^= (unsigned char)rv_lower(s.ptr[i]);
        h *= 16777619u;
    }
    return h;
}

enum dom_kind { DOM_EXACT, DOM_SUFFIX, DOM_PREFIX, DOM_ANY };

/* Kind of a domain and its key: "*" any; "*x" suffix "x"; "x*" prefix "x"; else exact. */
static int dom_classify(rv_str_t d, rv_str_t *key)
{
    if (d.len == 1 && d.ptr[0] == '*') {
        *key = RV_STR_NULL;
        return DOM_ANY;
    }
    if (d.len > 1 && d.ptr[0] == '*') {
        *key = rv_str(d.ptr + 1, d.len - 1);
        return DOM_SUFFIX;
    }
    if (d.len > 1 && d.ptr[d.len - 1] == '*') {
        *key = rv_str(d.ptr, d.len - 1);
        return DOM_PREFIX;
    }
    *key = d;
    return DOM_EXACT;
}

static const rv_vhost_t *exact_get(const struct rv_router_index_s *ix, rv_str_t h)
{
    if (!ix->exact || h.len == 0)
        return NULL;
    uint32_t hv = host_hash(h);
    for (uint32_t i = hv & ix->mask;; i = (i + 1) & ix->mask) {
        const struct hslot *s = &ix->exact[i];
        if (!s->key)
            return NULL;
        if (s->hash == hv && rv_str_ieq(rv_str(s->key, s->len), h))
            return s->vh;
    }
}

/* Sort items, drop duplicate keys (first ordinal kept), copy into an skey array + payload. */
static int build_dom_set(rv_arena_t *a, struct item *it, uint32_t n, bool rev, const rv_vhost_t *vhosts,
                         struct skey **keys_out, const rv_vhost_t ***vh_out, uint32_t *n_out)
{
    *keys_out = NULL;
    *vh_out = NULL;
    *n_out = 0;
    if (n == 0)
        return 0;
    qsort_r(it, n, sizeof(*it), item_cmp, &rev);
    struct skey *k = RV_ARENA_NEWN(a, struct skey, n);
    const rv_vhost_t **v = RV_ARENA_NEWN(a, const rv_vhost_t *, n);
    if (!k || !v)
        return RV_ENOMEM;
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (m > 0 && same_key(&k[m - 1], &it[i].k))
            continue;
        k[m] = it[i].k;
        v[m] = &vhosts[it[i].aux];
        m++;
    }
    int rc = skey_link(k, m, rev);
    if (rc)
        return rc;
    *keys_out = k;
    *vh_out = v;
    *n_out = m;
    return 0;
}

/*
 * Literal prefix every match of a whole-path regex must start with, written to out (at most
 * cap bytes); returns its length (0: none known). Conservative: only plain ASCII literals and
 * escaped punctuation at the start of the pattern count, a literal followed by a quantifier is
 * dropped, and a pattern with '|' anywhere has no prefix.
 */
static size_t regex_literal_prefix(rv_str_t pat, char *out, size_t cap)
{
    if (memchr(pat.ptr, '|', pat.len))
        return 0;
    size_t i = 0, n = 0;
    if (i < pat.len && pat.ptr[i] == '^')
        i++;
    while (i < pat.len && n < cap) {
        unsigned char c = (unsigned char)pat.ptr[i];
        size_t adv = 1;
        if (c == '\\') {
            if (i + 1 >= pat.len)
                break;
            c = (unsigned char)pat.ptr[i + 1];
            if (c >= 0x80 || !ispunct(c))
                break;  /* \d, \w, \x.., \Q... : not a single literal byte */
            adv = 2;
        } else if (c >= 0x80 || c < 0x20 || strchr(".[]()*+?{}|^$\\", c)) {
            break;
        }
        if (i + adv < pat.len && strchr("?*+{", pat.ptr[i + adv]))
            break;  /* quantified: the literal may be absent or repeated */
        out[n++] = (char)c;
        i += adv;
    }
    return n;
}

/*
 * The index key of a route and whether it is an exact key. Case-sensitive prefix and exact
 * matchers use their path; a case-sensitive regex its literal prefix (any match starts with
 * it); anything else the empty key, a prefix of every path, so it is a candidate for every
 * request. Candidates are always tested with the full matcher. Returns 0 or RV_ENOMEM.
 */
static int route_key(rv_arena_t *a, const rv_route_t *r, struct skey *k, bool *exact)
{
    const rv_matcher_t *m = &r->match;
    *k = (struct skey){ "", 0, -1 };
    *exact = false;
    if (!m->case_sensitive)
        return 0;
    if (m->path_kind == RV_PATH_PREFIX || m->path_kind == RV_PATH_EXACT) {
        if (m->path.len)
            *k = (struct skey){ m->path.ptr, (uint32_t)m->path.len, -1 };
        *exact = m->path_kind == RV_PATH_EXACT;
        return 0;
    }
    if (m->path_kind == RV_PATH_REGEX && m->path.len) {
        char tmp[256];
        size_t n = regex_literal_prefix(m->path, tmp, sizeof(tmp));
        if (n) {
            char *p = rv_arena_alloc(a, n);
            if (!p)
                return RV_ENOMEM;
            memcpy(p, tmp, n);
            *k = (struct skey){ p, (uint32_t)n, -1 };
        }
    }
    return 0;
}

/* Build the sorted key array of an indexed segment [s->start, s->end) of vh. */
static int build_seg_index(rv_arena_t *a, const rv_vhost_t *vh, struct seg *s)
{
    uint32_t n = s->end - s->start;
    struct item *it = malloc(sizeof(*it) * n);
    if (!it)
        return RV_ENOMEM;
    int rc = RV_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        bool exact;
        if (route_key(a, &vh->routes[s->start + i], &it[i].k, &exact))
            goto out;
        it[i].ord = s->start + i;
        it[i].aux = exact ? RV_PATH_EXACT : RV_PATH_PREFIX;
    }
    bool fwd = false;
    qsort_r(it, n, sizeof(*it), item_cmp, &fwd);

    uint32_t *ids = RV_ARENA_NEWN(a, uint32_t, n);
    struct skey *k = RV_ARENA_NEWN(a, struct skey, n);
    struct rentry *e = RV_ARENA_NEWN(a, struct rentry, n);
    if (!ids || !k || !e)
        goto out;
    /* Per distinct key: its prefix routes, then its exact routes, each ascending by index. */
    uint32_t m = 0, o = 0;
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i;
        while (j < n && same_key(&it[i].k, &it[j].k))
            j++;
        k[m] = it[i].k;
        e[m].pfx = ids + o;
        for (uint32_t x = i; x < j; x++)
            if (it[x].aux == RV_PATH_PREFIX)
                ids[o++] = it[x].ord;
        e[m].npfx = (uint32_t)(ids + o - e[m].pfx);
        e[m].ex = ids + o;
        for (uint32_t x = i; x < j; x++)
            if (it[x].aux == RV_PATH_EXACT)
                ids[o++] = it[x].ord;
        e[m].nex = (uint32_t)(ids + o - e[m].ex);
        m++;
        i = j;
    }
    rc = skey_link(k, m, false);
    if (rc)
        goto out;
    s->keys = k;
    s->ents = e;
    s->nkeys = m;
out:
    free(it);
    return rc;
}

static int build_vroutes(rv_arena_t *a, const rv_vhost_t *vh, struct vroutes *vr)
{
    /* Every route has a key (route_key), so one indexed segment covers the whole list; a
     * short list is cheaper to test in order. */
    vr->nsegs = 0;
    vr->segs = NULL;
    if (vh->nroutes == 0)
        return 0;
    if (!(vr->segs = RV_ARENA_NEWN(a, struct seg, 1)))
        return RV_ENOMEM;
    vr->segs[0] = (struct seg){ 0, vh->nroutes, NULL, NULL, 0 };
    vr->nsegs = 1;
    return vh->nroutes >= MIN_INDEXED_RUN ? build_seg_index(a, vh, &vr->segs[0]) : 0;
}

static int build_listener(rv_arena_t *a, rv_listener_cfg_t *l)
{
    struct rv_router_index_s *ix = RV_ARENA_NEW(a, struct rv_router_index_s);
    if (!ix)
        return RV_ENOMEM;
    ix->vhosts = l->vhosts;
    ix->nvhosts = l->nvhosts;

    uint32_t ndom = 0;
    for (uint32_t v = 0; v < l->nvhosts; v++)
        ndom += l->vhosts[v].ndomains;

    int rc = RV_ENOMEM;
    struct item *sfx = malloc(sizeof(*sfx) * (ndom + 1));
    struct item *pfx = malloc(sizeof(*pfx) * (ndom + 1));
    uint32_t nsfx = 0, npfx = 0, nexact = 0;
    if (!sfx || !pfx)
        goto out;

    uint32_t size = 8;
    while (size < 2 * ndom)
        size *= 2;
    ix->exact = RV_ARENA_NEWN(a, struct hslot, size);
    if (!ix->exact)
        goto out;
    ix->mask = size - 1;

    uint32_t ord = 0;
    for (uint32_t v = 0; v < l->nvhosts; v++) {
        const rv_vhost_t *vh = &l->vhosts[v];
        for (uint32_t d = 0; d < vh->ndomains; d++, ord++) {
            rv_str_t dom = vh->domains[d], key;
            if (dom.len == 0)
                continue;
            /* Lower-cased private copy: the config layer lower-cases, but do not rely on it. */
            char *low = rv_arena_alloc(a, dom.len);
            if (!low)
                goto out;
            for (size_t i = 0; i < dom.len; i++)
                low[i] = rv_lower(dom.ptr[i]);
            int kind = dom_classify(rv_str(low, dom.len), &key);
            struct item x = { { key.ptr, (uint32_t)key.len, -1 }, ord, v };
            switch (kind) {
            case DOM_ANY:
                if (!ix->any)
                    ix->any = vh;
                break;
            case DOM_SUFFIX:
                sfx[nsfx++] = x;
                break;
            case DOM_PREFIX:
                pfx[npfx++] = x;
                break;
            default: {
                if (exact_get(ix, key))
                    break; /* duplicate domain: the first virtual host keeps it */
                uint32_t hv = host_hash(key);
                uint32_t i = hv & ix->mask;
                while (ix->exact[i].key)
                    i = (i + 1) & ix->mask;
                ix->exact[i] = (struct hslot){ key.ptr, (uint32_t)key.len, hv, vh };
                nexact++;
                break;
            }
            }
        }
    }
    ix->nexact = nexact;
    rc = build_dom_set(a, sfx, nsfx, true, l->vhosts, &ix->sfx, &ix->sfx_vh, &ix->nsfx);
    if (rc)
        goto out;
    rc = build_dom_set(a, pfx, npfx, false, l->vhosts, &ix->pfx, &ix->pfx_vh, &ix->npfx);
    if (rc)
        goto out;

    rc = RV_ENOMEM;
    ix->vr = l->nvhosts ? RV_ARENA_NEWN(a, struct vroutes, l->nvhosts) : NULL;
    if (l->nvhosts && !ix->vr)
        goto out;
    for (uint32_t v = 0; v < l->nvhosts; v++) {
        rc = build_vroutes(a, &l->vhosts[v], &ix->vr[v]);
        if (rc)
            goto out;
    }
    l->index = ix;
    rc = 0;
out:
    free(pfx);
    free(sfx);
    return rc;
}

/*
 * Build the index of every listener into snap->arena. Control thread, before publication.
 * On failure some listeners may already carry an index; the caller drops the snapshot.
 */
int rv_router_build(rv_snapshot_t *snap)
{
    for (uint32_t i = 0; i < snap->nlisteners; i++) {
        int rc = build_listener(&snap->arena, &snap->listeners[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- virtual host lookup ----------------------------------------------------------- */

static const rv_vhost_t *find_vhost_indexed(const struct rv_router_index_s *ix, rv_str_t host)
{
    if (!ix->nexact && !ix->nsfx && !ix->npfx)
        return ix->any;     /* only "*" (or nothing): no host to look at */
    rv_str_t port, name = rv_host_split_port(host, &port);
    bool has_port = port.ptr != NULL;
    const rv_vhost_t *vh;
    int32_t i;

    if (ix->nexact && ((vh = exact_get(ix, host)) || (has_port && (vh = exact_get(ix, name)))))
        return vh;
    if ((i = skey_find(ix->sfx, ix->nsfx, host, true, true, true)) >= 0)
        return ix->sfx_vh[i];
    if (has_port && (i = skey_find(ix->sfx, ix->nsfx, name, true, true, true)) >= 0)
        return ix->sfx_vh[i];
    if ((i = skey_find(ix->pfx, ix->npfx, host, false, true, true)) >= 0)
        return ix->pfx_vh[i];
    if (has_port && (i = skey_find(ix->pfx, ix->npfx, name, false, true, true)) >= 0)
        return ix->pfx_vh[i];
    return ix->any;
}

/* Host h against one domain: tier of the match (higher wins; 0 none) and the key length. */
static int dom_tier(rv_str_t dom, rv_str_t h, bool stripped, size_t *klen)
{
    rv_str_t key;
    int kind = dom_classify(dom, &key);
    *klen = key.len;
    switch (kind) {
    case DOM_ANY:
        return 1;
    case DOM_EXACT:
        return rv_str_ieq(key, h) ? (stripped ? 6 : 7) : 0;
    case DOM_SUFFIX:
        return h.len > key.len && rv_str_ieq(key, rv_str(h.ptr + h.len - key.len, key.len)) ? (stripped ? 4 : 5)
                                                                                           : 0;
    default:
        return h.len > key.len && rv_str_ieq(key, rv_str(h.ptr, key.len)) ? (stripped ? 2 : 3) : 0;
    }
}

/* The same rules without an index (before rv_router_build): every domain is tried. */
static const rv_vhost_t *find_vhost_linear(const rv_listener_cfg_t *l, rv_str_t host)
{
    rv_str_t port, name = rv_host_split_port(host, &port);
    const rv_vhost_t *best = NULL;
    int best_tier = 0;
    size_t best_len = 0;
    for (uint32_t v = 0; v < l->nvhosts; v++) {
        const rv_vhost_t *vh = &l->vhosts[v];
        for (uint32_t d = 0; d < vh->ndomains; d++) {
            if (vh->domains[d].len == 0)
                continue;
            for (int pass = 0; pass < (port.ptr ? 2 : 1); pass++) {
                size_t klen;
                int t = dom_tier(vh->domains[d], pass ? name : host, pass == 1, &klen);
                if (t > best_tier || (t == best_tier && t > 0 && klen > best_len)) {
                    best = vh;
                    best_tier = t;
                    best_len = klen;
                }
            }
        }
    }
    return best;
}

const rv_vhost_t *rv_router_find_vhost(const rv_listener_cfg_t *l, rv_str_t host)
{
    if (!l)
        return NULL;
    if (l->index && l->index->vhosts == l->vhosts && l->index->nvhosts == l->nvhosts)
        return find_vhost_indexed(l->index, host);
    return find_vhost_linear(l, host);
}

/* ---- matchers ---------------------------------------------------------------------- */


static bool path_matches(const rv_matcher_t *m, rv_str_t path)
{
    switch (m->path_kind) {
    case RV_PATH_PREFIX:
        if (m->path.len == 0)
            return true;
        return m->case_sensitive ? rv_str_has_prefix(path, m->path) : rv_str_has_iprefix(path, m->path);
    case RV_PATH_EXACT:
        return m->case_sensitive ? rv_str_eq(path, m->path) : rv_str_ieq(path, m->path);
    case RV_PATH_REGEX:
        return m->path_re && rv_regex_full_match(m->path_re, path);
    default:
        return false;
    }
}

static bool value_matches(rv_str_t v, rv_str_t want, const rv_regex_t *re, bool has_value, bool is_regex)
{
    if (!has_value)
        return true;
    if (is_regex)
        return re && rv_regex_full_match(re, v);
    return rv_str_eq(v, want);
}

/*
 * One header matcher. A header present several times matches when any instance matches
 * (Envoy joins the values with "," instead; per-instance is what users expect of
 * "X-Version: 2" and cannot be fooled by a comma inside a value). invert negates the whole
 * result, so an inverted matcher also matches when the header is absent (Gloo's doc).
 */
static bool header_matches(const rv_header_matcher_t *hm, const rv_req_view_t *req)
{
    bool hit = false;
    rv_str_t n = hm->name;
    const rv_str_t *pseudo = NULL;
    if (n.len > 0 && n.ptr[0] == ':') {
        if (rv_str_ieq(n, RV_STR(":authority")))
            pseudo = &req->host;
        else if (rv_str_ieq(n, RV_STR(":method")))
            pseudo = &req->method;
        else if (rv_str_ieq(n, RV_STR(":path")))
            pseudo = &req->path;
    }
    if (pseudo) {
        /* Host is absent only when empty (HTTP/1.0 without Host); method and path always exist. */
        bool present = pseudo != &req->host || pseudo->len > 0;
        hit = present && value_matches(*pseudo, hm->value, hm->re, hm->has_value, hm->is_regex);
    } else {
        for (uint32_t i = 0; i < req->nheaders && !hit; i++)
            if (rv_str_ieq(req->headers[i].name, n))
                hit = value_matches(req->headers[i].value, hm->value, hm->re, hm->has_value, hm->is_regex);
    }
    return hit != hm->invert;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = rv_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Next byte of percent-decoding raw at *i (an invalid escape stands for itself). */
static unsigned char pct_next(rv_str_t raw, size_t *i)
{
    char c = raw.ptr[*i];
    if (c == '%' && *i + 2 < raw.len) {
        int h = hexval(raw.ptr[*i + 1]), l = hexval(raw.ptr[*i + 2]);
        if (h >= 0 && l >= 0) {
            *i += 3;
            return (unsigned char)(h * 16 + l);
        }
    }
    (*i)++;
    return (unsigned char)c;
}

/* percent-decode(raw) == want, streaming (no buffer). */
static bool pct_eq(rv_str_t raw, rv_str_t want)
{
    size_t i = 0, j = 0;
    while (i < raw.len) {
        if (j >= want.len || pct_next(raw, &i) != (unsigned char)want.ptr[j])
            return false;
        j++;
    }
    return j == want.len;
}

/*
 * Raw value of the first parameter of query q whose decoded name is name. Parameters are
 * '&'-separated; "k" without '=' has an empty value. false when absent.
 */
static bool query_find(rv_str_t q, rv_str_t name, rv_str_t *val)
{
    size_t i = 0;
    while (i < q.len) {
        const char *amp = memchr(q.ptr + i, '&', q.len - i);
        size_t end = amp ? (size_t)(amp - q.ptr) : q.len;
        rv_str_t seg = rv_str(q.ptr + i, end - i);
        i = end + 1;
        if (seg.len == 0)
            continue;
        const char *eq = memchr(seg.ptr, '=', seg.len);
        rv_str_t k = eq ? rv_str(seg.ptr, (size_t)(eq - seg.ptr)) : seg;
        if (pct_eq(k, name)) {
            *val = eq ? rv_str(eq + 1, seg.len - k.len - 1) : rv_str(seg.ptr + seg.len, 0);
            return true;
        }
    }
    return false;
}

/*
 * One query matcher: the first parameter with that (decoded) name decides, as in Envoy.
 * Values are compared percent-decoded ('+' is not a space: RFC 3986, not form encoding).
 */
static bool query_matches(const rv_query_matcher_t *qm, rv_str_t q)
{
    rv_str_t raw;
    if (!query_find(q, qm->name, &raw))
        return false;
    if (!qm->has_value)
        return true;
    if (!qm->is_regex)
        return pct_eq(raw, qm->value);
    if (!qm->re)
        return false;
    if (raw.len == 0 || !memchr(raw.ptr, '%', raw.len))
        return rv_regex_full_match(qm->re, raw);
    char buf[QUERY_DECODE_CAP];
    size_t i = 0, o = 0;
    while (i < raw.len) {
        if (o == sizeof(buf))
            return false; /* longer than we decode: never matches (documented) */
        buf[o++] = (char)pct_next(raw, &i);
    }
    return rv_regex_full_match(qm->re, rv_str(buf, o));
}

bool rv_matcher_matches(const rv_matcher_t *m, const rv_req_view_t *req)
{
    if (!path_matches(m, req->path))
        return false;
    if (m->nmethods) {
        uint32_t i = 0;
        while (i < m->nmethods && !rv_str_eq(m->methods[i], req->method))
            i++;
        if (i == m->nmethods)
            return false;
    }
    for (uint32_t i = 0; i < m->nheaders; i++)
        if (!header_matches(&m->headers[i], req))
            return false;
    for (uint32_t i = 0; i < m->nquery; i++)
        if (!query_matches(&m->query[i], req->query))
            return false;
    return true;
}

/* ---- route lookup ------------------------------------------------------------------ */

static const rv_route_t *scan_routes(const rv_vhost_t *vh, uint32_t start, uint32_t end,
                                     const rv_req_view_t *req)
{
    for (uint32_t i = start; i < end; i++)
        if (rv_matcher_matches(&vh->routes[i].match, req))
            return &vh->routes[i];
    return NULL;
}

const rv_route_t *rv_router_find_route(const rv_vhost_t *vh, const rv_req_view_t *req)
{
    if (!vh)
        return NULL;
    return scan_routes(vh, 0, vh->nroutes, req);
}

/*
 * First route of an indexed segment matching req. The keys that are prefixes of the path
 * are the found key and its parent chain; their route lists (prefix routes always, exact
 * routes of the key equal to the path) are merged by route index and the candidates tested
 * in that order, so the result is the same as testing the segment one route at a time.
 */
static const rv_route_t *seg_lookup(const rv_vhost_t *vh, const struct seg *s, const rv_req_view_t *req)
{
    int32_t i = skey_find(s->keys, s->nkeys, req->path, false, false, false);
    if (i < 0)
        return NULL;
    struct {
        const uint32_t *ids;
        uint32_t n;
    } cur[MAX_CURSORS];
    uint32_t nc = 0;
    for (int32_t j = i; j >= 0; j = s->keys[j].parent) {
        if (nc + 2 > MAX_CURSORS)
            return scan_routes(vh, s->start, s->end, req);
        const struct rentry *e = &s->ents[j];
        if (e->npfx)
            cur[nc].ids = e->pfx, cur[nc++].n = e->npfx;
        if (e->nex && s->keys[j].len == req->path.len)
            cur[nc].ids = e->ex, cur[nc++].n = e->nex;
    }
    for (;;) {
        uint32_t best = UINT32_MAX, bc = 0;
        for (uint32_t c = 0; c < nc; c++)
            if (cur[c].n && cur[c].ids[0] < best)
                best = cur[c].ids[0], bc = c;
        if (best == UINT32_MAX)
            return NULL;
        cur[bc].ids++;
        cur[bc].n--;
        if (rv_matcher_matches(&vh->routes[best].match, req))
            return &vh->routes[best];
    }
}

const rv_route_t *rv_router_lookup_route(const rv_listener_cfg_t *l, const rv_vhost_t *vh,
                                         const rv_req_view_t *req)
{
    if (!vh)
        return NULL;
    const struct rv_router_index_s *ix = l ? l->index : NULL;
    uintptr_t p = (uintptr_t)vh, base = (uintptr_t)(l ? l->vhosts : NULL);
    if (!ix || ix->vhosts != l->vhosts || ix->nvhosts != l->nvhosts || p < base ||
        p >= base + (uintptr_t)l->nvhosts * sizeof(*vh))
        return rv_router_find_route(vh, req);
    const struct vroutes *vr = &ix->vr[(p - base) / sizeof(*vh)];
    for (uint32_t k = 0; k < vr->nsegs; k++) {
        const struct seg *s = &vr->segs[k];
        const rv_route_t *r = s->keys ? seg_lookup(vh, s, req) : scan_routes(vh, s->start, s->end, req);
        if (r)
            return r;
    }
    return NULL;
}

const rv_route_t *rv_router_match(const rv_listener_cfg_t *l, const rv_req_view_t *req,
                                  const rv_vhost_t **vh_out)
{
    const rv_vhost_t *vh = rv_router_find_vhost(l, req->host);
    if (vh_out)
        *vh_out = vh;
    return vh ? rv_router_lookup_route(l, vh, req) : NULL;
}
