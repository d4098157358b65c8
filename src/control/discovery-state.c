/*
 * discovery-state.c - the watcher's state: services per datacenter from the catalog answers,
 * their instances from the health answers (parsed into instance blocks), and host names
 * resolved with a small cache. Watcher thread only (unit tests drive it directly).
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "control/discovery-internal.h"
#include "core/err.h"

rv_disc_state_t *rv_disc_state_new(bool health)
{
    rv_disc_state_t *st = calloc(1, sizeof(*st));
    if (st)
        st->health = health;
    return st;
}

static void sdc_free(sdc_t *d)
{
    free(d->dc);
    free_strs(d->tags, d->ntags);
    disc_iblk_release(d->blk);
}

static void svc_free(ssvc_t *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->ndcs; i++)
        sdc_free(&s->dcs[i]);
    free(s->dcs);
    free(s->name);
    free(s);
}

void rv_disc_state_free(rv_disc_state_t *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->n; i++)
        svc_free(st->svcs[i]);
    free(st->svcs);
    free_strs(st->dcs_read, st->ndcs_read);
    free_strs(st->allow, st->nallow);
    for (int b = 0; b < HOST_BUCKETS; b++)
        for (hent_t *h = st->hosts[b], *nx; h; h = nx) {
            nx = h->next;
            free(h->host);
            free(h->addrs);
            free(h);
        }
    free(st);
}

uint32_t rv_disc_service_count(const rv_disc_state_t *st)
{
    return st->n;
}

/* Index of name in st->svcs, or the insertion point with *found false. */
static uint32_t svc_pos(const rv_disc_state_t *st, const char *name, bool *found)
{
    uint32_t lo = 0, hi = st->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int r = strcmp(st->svcs[mid]->name, name);
        if (r == 0) {
            *found = true;
            return mid;
        }
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

ssvc_t *disc_svc_get(rv_disc_state_t *st, const char *name, bool create)
{
    bool found;
    uint32_t pos = svc_pos(st, name, &found);
    if (found)
        return st->svcs[pos];
    if (!create)
        return NULL;
    if (st->n == st->cap) {
        uint32_t nc = st->cap ? st->cap * 2 : 64;
        ssvc_t **p = realloc(st->svcs, nc * sizeof(*p));
        if (!p)
            return NULL;
        st->svcs = p;
        st->cap = nc;
    }
    ssvc_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->name = strdup(name))) {
        free(s);
        return NULL;
    }
    memmove(&st->svcs[pos + 1], &st->svcs[pos], (st->n - pos) * sizeof(*st->svcs));
    st->svcs[pos] = s;
    st->n++;
    return s;
}

sdc_t *disc_sdc_get(ssvc_t *s, const char *dc, bool create)
{
    uint32_t i = 0;
    for (; i < s->ndcs; i++) {
        int r = strcmp(s->dcs[i].dc, dc);
        if (r == 0)
            return &s->dcs[i];
        if (r > 0)
            break;
    }
    if (!create)
        return NULL;
    sdc_t *p = realloc(s->dcs, (s->ndcs + 1) * sizeof(*p));
    if (!p)
        return NULL;
    s->dcs = p;
    memmove(&s->dcs[i + 1], &s->dcs[i], (s->ndcs - i) * sizeof(*p));
    memset(&s->dcs[i], 0, sizeof(*p));
    if (!(s->dcs[i].dc = strdup(dc))) {
        memmove(&s->dcs[i], &s->dcs[i + 1], (s->ndcs - i) * sizeof(*p));
        return NULL;
    }
    s->ndcs++;
    return &s->dcs[i];
}

static void sdc_remove(ssvc_t *s, sdc_t *d)
{
    uint32_t i = (uint32_t)(d - s->dcs);
    sdc_free(d);
    memmove(&s->dcs[i], &s->dcs[i + 1], (s->ndcs - i - 1) * sizeof(*d));
    s->ndcs--;
}

static bool tags_same(char **a, uint32_t na, json_t *arr)
{
    if (!json_is_array(arr) || json_array_size(arr) != na)
        return false;
    for (uint32_t i = 0; i < na; i++) {
        const char *t = json_string_value(json_array_get(arr, i));
        if (!t || strcmp(t, a[i]))
            return false;
    }
    return true;
}

static void note_dc_read(rv_disc_state_t *st, const char *dc)
{
    for (uint32_t i = 0; i < st->ndcs_read; i++)
        if (!strcmp(st->dcs_read[i], dc))
            return;
    char **p = realloc(st->dcs_read, (st->ndcs_read + 1) * sizeof(*p));
    if (!p)
        return;
    st->dcs_read = p;
    if ((p[st->ndcs_read] = strdup(dc)))
        st->ndcs_read++;
}

int rv_disc_state_allow_tags(rv_disc_state_t *st, char *const *tags, uint32_t n)
{
    char **v = n ? calloc(n, sizeof(char *)) : NULL;
    if (n && !v)
        return RV_ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        if (!(v[i] = strdup(tags[i]))) {
            free_strs(v, i);
            return RV_ENOMEM;
        }
    free_strs(st->allow, st->nallow);
    st->allow = v;
    st->nallow = n;
    return 0;
}

/* The tags of service name in a catalog/services answer, or NULL when it is not listed or the
 * allowlist excludes it (none of its tags is allowed). */
static json_t *listed_tags(const rv_disc_state_t *st, json_t *root, const char *name)
{
    json_t *tags = json_object_get(root, name);
    if (!tags || !st->nallow)
        return tags;
    for (size_t i = 0; i < json_array_size(tags); i++) {
        const char *t = json_string_value(json_array_get(tags, i));
        for (uint32_t k = 0; t && k < st->nallow; k++)
            if (!strcmp(t, st->allow[k]))
                return tags;
    }
    return NULL;
}

int rv_disc_set_services(rv_disc_state_t *st, const char *dc, const char *json, size_t len)
{
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    int changed = 0;
    if (!json_is_object(root)) {
        json_decref(root);
        return RV_EPARSE;
    }
    const char *name;
    json_t *tags;
    json_object_foreach(root, name, tags) {
        if (!json_is_array(tags)) {
            json_decref(root);
            return RV_EPARSE;
        }
    }
    json_object_foreach(root, name, tags) {
        if (!name[0] || !listed_tags(st, root, name))
            continue;
        ssvc_t *s = disc_svc_get(st, name, true);
        bool created = s && !disc_sdc_get(s, dc, false);
        sdc_t *d = s ? disc_sdc_get(s, dc, true) : NULL;
        if (!d) {
            json_decref(root);
            return RV_ENOMEM;
        }
        if (created || !tags_same(d->tags, d->ntags, tags)) {
            free_strs(d->tags, d->ntags);
            d->tags = NULL;
            d->ntags = 0;
            size_t nt = json_array_size(tags);
            if (nt && !(d->tags = calloc(nt, sizeof(char *)))) {
                json_decref(root);
                return RV_ENOMEM;
            }
            for (size_t i = 0; i < nt; i++) {
                const char *t = json_string_value(json_array_get(tags, i));
                if (t && (d->tags[d->ntags] = strdup(t)))
                    d->ntags++;
            }
            changed = 1;
        }
    }
    /* services no longer listed in dc lose dc */
    for (uint32_t i = 0; i < st->n;) {
        ssvc_t *s = st->svcs[i];
        sdc_t *d = disc_sdc_get(s, dc, false);
        if (d && !listed_tags(st, root, s->name)) {
            sdc_remove(s, d);
            changed = 1;
        }
        if (s->ndcs == 0) {
            svc_free(s);
            memmove(&st->svcs[i], &st->svcs[i + 1], (st->n - i - 1) * sizeof(*st->svcs));
            st->n--;
            continue;
        }
        i++;
    }
    note_dc_read(st, dc);
    json_decref(root);
    return changed;
}

static uint32_t hash_str(const char *s, uint16_t port)
{
    uint32_t h = 2166136261u ^ port;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Addresses of host:port: literals parsed, names resolved (cached HOST_TTL_MS). */
static int resolve(rv_disc_state_t *st, const char *host, uint16_t port, rv_disc_addr_t **out, uint32_t *n)
{
    struct sockaddr_in in4 = { .sin_family = AF_INET, .sin_port = htons(port) };
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
    static __thread rv_disc_addr_t one;
    *n = 0;
    *out = NULL;
    if (!host[0])
        return 0;
    if (inet_pton(AF_INET, host, &in4.sin_addr) == 1) {
        memcpy(&one.sa, &in4, sizeof(in4));
        one.len = sizeof(in4);
        *out = &one;
        *n = 1;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1) {
        memcpy(&one.sa, &in6, sizeof(in6));
        one.len = sizeof(in6);
        *out = &one;
        *n = 1;
        return 0;
    }
    uint32_t b = hash_str(host, port) % HOST_BUCKETS;
    int64_t now = mono_ms();
    hent_t *h = st->hosts[b];
    for (; h; h = h->next)
        if (h->port == port && !strcmp(h->host, host))
            break;
    if (h && now - h->at < HOST_TTL_MS) {
        *out = h->addrs;
        *n = h->n;
        return 0;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    rv_disc_addr_t *addrs = NULL;
    uint32_t na = 0;
    for (struct addrinfo *ai = rc == 0 ? res : NULL; ai; ai = ai->ai_next) {
        rv_disc_addr_t a = { 0 };
        if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
            memcpy(&a.sa, ai->ai_addr, sizeof(struct sockaddr_in));
            ((struct sockaddr_in *)&a.sa)->sin_port = htons(port);
            a.len = sizeof(struct sockaddr_in);
        } else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            memcpy(&a.sa, ai->ai_addr, sizeof(struct sockaddr_in6));
            ((struct sockaddr_in6 *)&a.sa)->sin6_port = htons(port);
            a.len = sizeof(struct sockaddr_in6);
        } else {
            continue;
        }
        bool dup = false;
        for (uint32_t k = 0; k < na && !dup; k++)
            dup = addrs[k].len == a.len && !memcmp(&addrs[k].sa, &a.sa, a.len);
        if (dup)
            continue;
        rv_disc_addr_t *p = realloc(addrs, (na + 1) * sizeof(*p));
        if (!p)
            break;
        addrs = p;
        addrs[na++] = a;
    }
    if (res)
        freeaddrinfo(res);
    if (!h) {
        if (!(h = calloc(1, sizeof(*h))) || !(h->host = strdup(host))) {
            free(h);
            free(addrs);
            return RV_ENOMEM;
        }
        h->port = port;
        h->next = st->hosts[b];
        st->hosts[b] = h;
    }
    free(h->addrs);
    h->addrs = addrs;
    h->n = na;
    h->at = now;
    *out = h->addrs;
    *n = h->n;
    return 0;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static rv_str_t dupa(rv_arena_t *a, const char *s, bool *oom)
{
    rv_str_t r = rv_arena_str(a, rv_cstr(s));
    if (!r.ptr)
        *oom = true;
    return r;
}

static int inst_cmp(const void *x, const void *y)
{
    const rv_disc_inst_t *a = x, *b = y;
    int r = strcmp(a->dc.ptr, b->dc.ptr);
    if (!r)
        r = strcmp(a->node.ptr, b->node.ptr);
    if (!r)
        r = strcmp(a->id.ptr, b->id.ptr);
    return r;
}

static bool inst_same(const rv_disc_inst_t *a, const rv_disc_inst_t *b)
{
    if (!rv_str_eq(a->id, b->id) || !rv_str_eq(a->node, b->node) || !rv_str_eq(a->dc, b->dc) ||
        !rv_str_eq(a->host, b->host) || a->port != b->port || a->passing != b->passing || a->ntags != b->ntags ||
        a->naddrs != b->naddrs)
        return false;
    for (uint32_t i = 0; i < a->ntags; i++)
        if (!rv_str_eq(a->tags[i], b->tags[i]))
            return false;
    for (uint32_t i = 0; i < a->naddrs; i++)
        if (a->addrs[i].len != b->addrs[i].len || memcmp(&a->addrs[i].sa, &b->addrs[i].sa, a->addrs[i].len))
            return false;
    return true;
}

/* Parse a health answer into instances allocated in a. 0, RV_EPARSE or RV_ENOMEM. */
static int parse_health(rv_disc_state_t *st, rv_arena_t *a, const char *dc, json_t *root, rv_disc_inst_t **out,
                        uint32_t *nout)
{
    size_t n = json_array_size(root);
    bool oom = false;
    *out = NULL;
    *nout = 0;
    if (!n)
        return 0;
    rv_disc_inst_t *v = RV_ARENA_NEWN(a, rv_disc_inst_t, n);
    rv_str_t dcs = dupa(a, dc, &oom);   /* shared by the instances of dc (nearly all) */
    if (!v || oom)
        return RV_ENOMEM;
    uint32_t k = 0;
    for (size_t i = 0; i < n && !oom; i++) {
        json_t *e = json_array_get(root, i);
        json_t *node = json_object_get(e, "Node"), *svc = json_object_get(e, "Service");
        json_t *checks = json_object_get(e, "Checks"), *tags = json_object_get(svc, "Tags");
        if (!json_is_object(node) || !json_is_object(svc))
            return RV_EPARSE;
        rv_disc_inst_t *in = &v[k++];
        const char *edc = jstr(node, "Datacenter");
        in->id = dupa(a, jstr(svc, "ID"), &oom);
        in->node = dupa(a, jstr(node, "Node"), &oom);
        in->dc = !edc[0] || !strcmp(edc, dc) ? dcs : dupa(a, edc, &oom);
        const char *host = jstr(svc, "Address");
        if (!host[0])
            host = jstr(node, "Address");
        in->host = dupa(a, host, &oom);
        json_int_t port = json_integer_value(json_object_get(svc, "Port"));
        in->port = port > 0 && port <= 65535 ? (uint16_t)port : 0;
        in->passing = true;
        for (size_t c = 0; c < json_array_size(checks); c++)
            if (strcmp(jstr(json_array_get(checks, c), "Status"), "passing"))
                in->passing = false;
        size_t nt = json_array_size(tags);
        if (nt && (in->tags = RV_ARENA_NEWN(a, rv_str_t, nt)))
            for (size_t t = 0; t < nt; t++) {
                const char *tv = json_string_value(json_array_get(tags, t));
                if (tv)
                    in->tags[in->ntags++] = dupa(a, tv, &oom);
            }
        else if (nt)
            oom = true;
        rv_disc_addr_t *addrs;
        uint32_t na = 0;
        if (in->port && resolve(st, host, in->port, &addrs, &na) == 0 && na) {
            if ((in->addrs = RV_ARENA_NEWN(a, rv_disc_addr_t, na))) {
                memcpy(in->addrs, addrs, na * sizeof(*addrs));
                in->naddrs = na;
            } else {
                oom = true;
            }
        }
    }
    if (oom)
        return RV_ENOMEM;
    qsort(v, k, sizeof(*v), inst_cmp);
    *out = v;
    *nout = k;
    return 0;
}

static size_t al16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static size_t jlen(json_t *o, const char *key)
{
    return strlen(jstr(o, key)) + 1;
}

/* What parse_health will take from the arena for root (IP literals: one address each; a
 * host name with several addresses spills into a second chunk), so that a block is one
 * malloc of the right size, not a default chunk a quarter empty. */
static size_t block_size(json_t *root, const char *dc)
{
    size_t n = json_array_size(root), sz = al16(n * sizeof(rv_disc_inst_t)) + al16(strlen(dc) + 1);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(root, i);
        json_t *node = json_object_get(e, "Node"), *svc = json_object_get(e, "Service");
        json_t *tags = json_object_get(svc, "Tags");
        sz += al16(jlen(svc, "ID")) + al16(jlen(node, "Node")) + al16(jlen(node, "Datacenter"));
        sz += al16(jlen(svc, "Address") > 1 ? jlen(svc, "Address") : jlen(node, "Address"));
        sz += al16(json_array_size(tags) * sizeof(rv_str_t)) + al16(sizeof(rv_disc_addr_t));
        for (size_t t = 0; t < json_array_size(tags); t++) {
            const char *tv = json_string_value(json_array_get(tags, t));
            sz += al16((tv ? strlen(tv) : 0) + 1);
        }
    }
    return sz + 64;
}

static uint64_t fnv64(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

int rv_disc_set_health(rv_disc_state_t *st, const char *name, const char *dc, const char *json, size_t len)
{
    ssvc_t *s = disc_svc_get(st, name, false);
    sdc_t *d = s ? disc_sdc_get(s, dc, false) : NULL;
    uint64_t h = fnv64(json, len);
    /* A blocking query that timed out answers the same bytes again: nothing to parse, unless
     * some host is a name, which each answer re-resolves (its addresses may have moved). */
    if (d && d->known && !d->names && d->body_hash == h)
        return 0;
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!json_is_array(root)) {
        json_decref(root);
        return RV_EPARSE;
    }
    if (!d) {   /* no longer listed: the answer is late */
        json_decref(root);
        return 0;
    }
    iblk_t *b = disc_iblk_new(block_size(root, dc));
    if (!b) {
        json_decref(root);
        return RV_ENOMEM;
    }
    rv_disc_inst_t *v;
    uint32_t n;
    int rc = parse_health(st, &b->a, dc, root, &v, &n);
    json_decref(root);
    if (rc != 0) {
        disc_iblk_release(b);
        return rc;
    }
    bool names = false;
    for (uint32_t i = 0; i < n && !names; i++) {
        unsigned char tmp[sizeof(struct in6_addr)];
        names = v[i].host.len && inet_pton(AF_INET, v[i].host.ptr, tmp) != 1 &&
                inet_pton(AF_INET6, v[i].host.ptr, tmp) != 1;
    }
    d->body_hash = h;
    d->names = names;
    bool same = d->known && n == d->ninsts;
    for (uint32_t i = 0; same && i < n; i++)
        same = inst_same(&v[i], &d->insts[i]);
    if (same) {
        disc_iblk_release(b);
        return 0;
    }
    disc_iblk_release(d->blk);
    d->blk = b;
    d->insts = v;
    d->ninsts = n;
    d->known = true;
    return 1;
}
