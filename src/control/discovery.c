/*
 * discovery.c - Consul service discovery: catalog/health state, immutable endpoint views, and
 * the watcher thread that keeps blocking queries open with libcurl's multi interface.
 *
 * Why not the rv_consul client: that client runs one request at a time, and discovery needs
 * one blocking query per service and datacenter (thousands), so the watcher drives its own
 * multi handle with a bounded number of transfers in flight. It shares the client's rules
 * (rv_consul_next_index, rv_consul_backoff_ms) and configuration (rv_consul_cfg_t).
 *
 * Threads: the state and every curl handle belong to the watcher thread. The only shared
 * things are `latest` (mutex), the eventfd, and two atomics (stop, healthy).
 */
#include "control/discovery.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

/* ---- small helpers ------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int str_cmp(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* ---- MD5 (RFC 1321), for Gloo's long-name rule only ------------------------------------ */

static uint32_t rol(uint32_t x, int c)
{
    return (x << c) | (x >> (32 - c));
}

static void md5(const unsigned char *msg, size_t len, unsigned char out[16])
{
    static const int sh[64] = { 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21 };
    uint32_t k[64];
    for (int i = 0; i < 64; i++) {
        double v = __builtin_fabs(__builtin_sin((double)(i + 1))) * 4294967296.0;
        k[i] = (uint32_t)v;
    }
    uint32_t h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476;
    size_t total = ((len + 8) / 64 + 1) * 64;
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[16];
        for (int i = 0; i < 16; i++) {
            uint32_t v = 0;
            for (int j = 0; j < 4; j++) {
                size_t p = off + (size_t)i * 4 + (size_t)j;
                unsigned char byte;
                if (p < len)
                    byte = msg[p];
                else if (p == len)
                    byte = 0x80;
                else if (p >= total - 8)
                    byte = (unsigned char)(((uint64_t)len * 8) >> (8 * (p - (total - 8))));
                else
                    byte = 0;
                v |= (uint32_t)byte << (8 * j);
            }
            w[i] = v;
        }
        uint32_t a = h0, b = h1, c = h2, d = h3;
        for (int i = 0; i < 64; i++) {
            uint32_t f;
            int g;
            if (i < 16) {
                f = (b & c) | (~b & d);
                g = i;
            } else if (i < 32) {
                f = (d & b) | (~d & c);
                g = (5 * i + 1) % 16;
            } else if (i < 48) {
                f = b ^ c ^ d;
                g = (3 * i + 5) % 16;
            } else {
                f = c ^ (b | ~d);
                g = (7 * i) % 16;
            }
            uint32_t tmp = d;
            d = c;
            c = b;
            b = b + rol(a + f + k[i] + w[g], sh[i]);
            a = tmp;
        }
        h0 += a;
        h1 += b;
        h2 += c;
        h3 += d;
    }
    uint32_t hs[4] = { h0, h1, h2, h3 };
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[i * 4 + j] = (unsigned char)(hs[i] >> (8 * j));
}

char *rv_disc_upstream_name(const char *service, char *out, size_t outlen)
{
    char tmp[1024];
    size_t n = 0;
    if (!outlen)
        return out;
    for (const char *p = service; *p && n + 1 < sizeof(tmp); p++) {
        char ch = *p;
        if (strchr("*/.:_ ", ch))
            ch = '-';
        else if (strchr("[]\n\"'", ch))
            continue;
        tmp[n++] = ch;
    }
    tmp[n] = '\0';
    if (n > 63) {
        unsigned char d[16];
        md5((const unsigned char *)tmp, n, d);
        char hex[33];
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
        snprintf(tmp + 31, sizeof(tmp) - 31, "-%s", hex);
        tmp[63] = '\0';
        n = 63;
    }
    size_t k = 0;
    for (; k < n && k + 1 < outlen; k++)
        out[k] = (char)((tmp[k] >= 'A' && tmp[k] <= 'Z') ? tmp[k] + 32 : tmp[k]);
    out[k] = '\0';
    return out;
}

/* ---- views ----------------------------------------------------------------------------- */

void rv_disc_view_ref(rv_disc_view_t *v)
{
    if (v)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

/* An immutable array of instances (one health answer of one (service, datacenter)) and the
 * strings it points to. The state holds one reference while it is current, each view that
 * shares it one more; freed by the last release (any thread). */
typedef struct rv_disc_iblk_s {
    _Atomic long refs;
    rv_arena_t a;
} iblk_t;

static iblk_t *iblk_new(size_t chunk)
{
    iblk_t *b = malloc(sizeof(*b));
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    rv_arena_init(&b->a, chunk);
    return b;
}

static void iblk_release(iblk_t *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    rv_arena_free(&b->a);
    free(b);
}

void rv_disc_view_release(rv_disc_view_t *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < v->nblks; i++)
        iblk_release(v->blks[i]);
    rv_arena_free(&v->arena);
    free(v);
}

const rv_disc_svc_t *rv_disc_find(const rv_disc_view_t *v, const char *name)
{
    uint32_t lo = 0, hi = v ? v->nsvcs : 0;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int r = strcmp(v->svcs[mid].name.ptr, name);
        if (r == 0)
            return &v->svcs[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- state ----------------------------------------------------------------------------- */

/* One service in one datacenter. */
typedef struct sdc_s {
    char *dc;
    char **tags;                /* from /v1/catalog/services */
    uint32_t ntags;
    bool known;                 /* instances read at least once */
    bool names;                 /* some instance's host is a name (re-resolved on each answer) */
    bool watched;               /* the watcher has a health watch for it */
    uint64_t body_hash;         /* of the last health answer applied (FNV-1a) */
    iblk_t *blk;                /* owns insts (shared with views); NULL before the first answer */
    rv_disc_inst_t *insts;
    uint32_t ninsts;
} sdc_t;

typedef struct ssvc_s {
    char *name;
    sdc_t *dcs;                 /* sorted by dc */
    uint32_t ndcs;
} ssvc_t;

/* Host name resolutions, kept HOST_TTL_MS (Gloo's dnsPollingInterval default). */
#define HOST_TTL_MS 5000
#define HOST_BUCKETS 1024
typedef struct hent_s {
    struct hent_s *next;
    char *host;
    uint16_t port;
    rv_disc_addr_t *addrs;
    uint32_t n;
    int64_t at;
} hent_t;

struct rv_disc_state_s {
    bool health;
    ssvc_t **svcs;              /* sorted by name */
    uint32_t n, cap;
    char **dcs_read;            /* datacenters whose service list was read */
    uint32_t ndcs_read;
    hent_t *hosts[HOST_BUCKETS];
    char **allow;               /* serviceTagsAllowlist; 0 = every service */
    uint32_t nallow;
};

rv_disc_state_t *rv_disc_state_new(bool health)
{
    rv_disc_state_t *st = calloc(1, sizeof(*st));
    if (st)
        st->health = health;
    return st;
}

static void free_strs(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void sdc_free(sdc_t *d)
{
    free(d->dc);
    free_strs(d->tags, d->ntags);
    iblk_release(d->blk);
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

static ssvc_t *svc_get(rv_disc_state_t *st, const char *name, bool create)
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

static sdc_t *sdc_get(ssvc_t *s, const char *dc, bool create)
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
        ssvc_t *s = svc_get(st, name, true);
        bool created = s && !sdc_get(s, dc, false);
        sdc_t *d = s ? sdc_get(s, dc, true) : NULL;
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
        sdc_t *d = sdc_get(s, dc, false);
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
    ssvc_t *s = svc_get(st, name, false);
    sdc_t *d = s ? sdc_get(s, dc, false) : NULL;
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
    iblk_t *b = iblk_new(block_size(root, dc));
    if (!b) {
        json_decref(root);
        return RV_ENOMEM;
    }
    rv_disc_inst_t *v;
    uint32_t n;
    int rc = parse_health(st, &b->a, dc, root, &v, &n);
    json_decref(root);
    if (rc != 0) {
        iblk_release(b);
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
        iblk_release(b);
        return 0;
    }
    iblk_release(d->blk);
    d->blk = b;
    d->insts = v;
    d->ninsts = n;
    d->known = true;
    return 1;
}

static rv_str_t vcopy(rv_arena_t *a, rv_str_t s, bool *oom)
{
    rv_str_t r = rv_arena_str(a, s);
    if (!r.ptr)
        *oom = true;
    return r;
}

rv_disc_view_t *rv_disc_view_build(rv_disc_state_t *st)
{
    rv_disc_view_t *v = calloc(1, sizeof(*v));
    bool oom = false;
    if (!v)
        return NULL;
    rv_arena_init(&v->arena, 256 * 1024);
    atomic_init(&v->refs, 1);
    v->health = st->health;
    v->synced = st->ndcs_read > 0;
    if (st->n && !(v->svcs = RV_ARENA_NEWN(&v->arena, rv_disc_svc_t, st->n)))
        goto fail;
    v->nsvcs = st->n;
    uint32_t nblk = 0;
    for (uint32_t i = 0; i < st->n; i++)
        for (uint32_t d = 0; d < st->svcs[i]->ndcs; d++)
            nblk += st->svcs[i]->dcs[d].blk != NULL;
    if (nblk && !(v->blks = RV_ARENA_NEWN(&v->arena, iblk_t *, nblk)))
        goto fail;
    /* take the blocks first: from here on a failure releases them with the view */
    for (uint32_t i = 0; i < st->n; i++)
        for (uint32_t d = 0; d < st->svcs[i]->ndcs; d++) {
            iblk_t *b = st->svcs[i]->dcs[d].blk;
            if (b) {
                atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
                v->blks[v->nblks++] = b;
            }
        }
    for (uint32_t i = 0; i < st->n && !oom; i++) {
        const ssvc_t *s = st->svcs[i];
        rv_disc_svc_t *o = &v->svcs[i];
        o->name = vcopy(&v->arena, rv_cstr(s->name), &oom);
        o->known = true;
        uint32_t ninst = 0, ntag = 0;
        for (uint32_t d = 0; d < s->ndcs; d++) {
            ninst += s->dcs[d].ninsts;
            ntag += s->dcs[d].ntags;
            o->known &= s->dcs[d].known;
        }
        v->synced &= o->known;
        o->dcs = RV_ARENA_NEWN(&v->arena, rv_str_t, s->ndcs ? s->ndcs : 1);
        o->tags = RV_ARENA_NEWN(&v->arena, rv_str_t, ntag ? ntag : 1);
        /* one datacenter (the usual case): the state's array itself; several: the instance
         * structs side by side (their strings, tags and addresses stay in the blocks) */
        uint32_t ndc_inst = 0;
        for (uint32_t d = 0; d < s->ndcs; d++)
            ndc_inst += s->dcs[d].ninsts > 0;
        if (ndc_inst == 1) {
            for (uint32_t d = 0; d < s->ndcs; d++)
                if (s->dcs[d].ninsts)
                    o->insts = s->dcs[d].insts;
        } else {
            o->insts = RV_ARENA_NEWN(&v->arena, rv_disc_inst_t, ninst ? ninst : 1);
        }
        char **tmp = ntag ? malloc(ntag * sizeof(char *)) : NULL;
        if (!o->dcs || !o->tags || (!o->insts && ndc_inst != 1) || (ntag && !tmp)) {
            free(tmp);
            goto fail;
        }
        uint32_t nt = 0;
        for (uint32_t d = 0; d < s->ndcs; d++) {
            const sdc_t *sd = &s->dcs[d];
            rv_str_t dc = vcopy(&v->arena, rv_cstr(sd->dc), &oom);
            o->dcs[o->ndcs++] = dc;
            for (uint32_t t = 0; t < sd->ntags; t++)
                tmp[nt++] = sd->tags[t];
            if (ndc_inst != 1 && sd->ninsts)
                memcpy(&o->insts[o->ninsts], sd->insts, sd->ninsts * sizeof(rv_disc_inst_t));
            o->ninsts += sd->ninsts;
            for (uint32_t k = 0; k < sd->ninsts; k++)
                v->npassing += sd->insts[k].passing;
            v->ninsts += sd->ninsts;
        }
        if (nt > 1)
            qsort(tmp, nt, sizeof(char *), str_cmp);
        for (uint32_t t = 0; t < nt && !oom; t++)
            if (t == 0 || strcmp(tmp[t], tmp[t - 1]))
                o->tags[o->ntags++] = vcopy(&v->arena, rv_cstr(tmp[t]), &oom);
        free(tmp);
    }
    if (oom)
        goto fail;
    return v;
fail:
    rv_disc_view_release(v);
    return NULL;
}

/* ---- process-wide override (rivet run --consul-discovery) ---------------------------- */

static bool ovr_enable, ovr_catalog_only;
static _Atomic uint32_t ovr_max_queries;

void rv_disc_set_max_queries(uint32_t n)
{
    atomic_store(&ovr_max_queries, n);
}

uint32_t rv_disc_max_queries(void)
{
    uint32_t n = atomic_load(&ovr_max_queries);
    return n ? n : RV_DISC_DEFAULT_MAX_QUERIES;
}

void rv_disc_override(bool enable, bool catalog_only)
{
    ovr_enable = enable;
    ovr_catalog_only = catalog_only;
}

bool rv_disc_override_enabled(bool *catalog_only)
{
    if (catalog_only)
        *catalog_only = ovr_catalog_only;
    return ovr_enable;
}

/* ---- the watcher ------------------------------------------------------------------------ */

enum { WK_DCS = 0, WK_SERVICES, WK_HEALTH };

#define DEFAULT_WAIT_MS 300000      /* Consul's own default; changes do not wait for it */
#define PLAIN_INFLIGHT 128          /* plain reads (first reads, reads after errors) at once */
#define FD_RESERVE 1024             /* descriptors kept for the rest of the process */
#define BUFFER_SIZE 4096            /* curl's receive buffer per handle (default 16 KiB) */
#define MIN_SHARED_WAIT_MS 1000     /* wait when there are more watches than slots */
#define RATE_REFILL_MS 1000         /* per watch: burst 2, then one request per second */
#define RATE_BURST 2.0
#define PUBLISH_GAP_MS 20           /* coalesce a burst of answers into one view */
#define PUBLISH_GAP_SYNCING_MS 250  /* while the first answers arrive */
#define DCS_REFRESH_MS 60000
#define SWEEP_MS 60000              /* more watches than the cap: each is read about this often */
#define PUSHBACK_MIN 16              /* the cap never goes below this after 429s */
#define PUSHBACK_RECOVER_MS 600000  /* 10 min without a 429: the cap doubles (up to its value) */
#define TRIM_DELAY_MS 3000          /* after the first synced view: the snapshot built from it */
#define MAX_BODY (64u << 20)

/*
 * One curl multi handle and its connection pool. Watches are spread over several: when a
 * transfer starts, libcurl looks for an idle connection by walking every pooled connection to
 * the host (7.88 ConnectionExists), the largest single cost of starting 5 000 queries with one
 * pool; with pools of about SHARD_WATCHES the walk is 30 times shorter (measured at 5 000:
 * 2.2 -> 1.1 s of CPU to converge, 1.2 -> 0.75 s per round of idle timeouts). Epoll events
 * carry the shard index next to the descriptor.
 */
#define SHARD_WATCHES 256
typedef struct shard_s {
    struct rv_disc_s *d;
    uint32_t idx;
    CURLM *multi;
    int64_t timer_at;           /* CURLMOPT_TIMERFUNCTION's deadline (monotonic ms), -1: none */
} shard_t;

#define WAKE_TAG UINT64_MAX     /* epoll data of the wake eventfd */

typedef struct watch_s {
    int kind;
    uint32_t shard;             /* its multi handle (d->sh[shard]) */
    char *svc, *dc;
    uint64_t index;
    unsigned failures;
    int64_t not_before;         /* monotonic ms */
    double tokens;
    int64_t tok_at;
    CURL *h;
    bool inflight, dead, ok;
    bool blocking;              /* the request in flight is a blocking query */
    char *buf;
    size_t len, cap;
    uint64_t got_index;
    bool too_big;
} watch_t;

struct rv_disc_s {
    rv_disc_opts_t o;
    char *base;                 /* "http://host:port" */
    char *token, *ca_file, *ca_path, *cert_file, *key_file, *basic_auth, *tls_server_name;
    bool insecure;
    char **dcs;
    uint32_t ndcs;
    bool fixed_dcs;
    pthread_t th;
    bool started;
    int efd;
    _Atomic bool stop;
    _Atomic bool healthy;
    pthread_mutex_t mu;
    rv_disc_view_t *latest;     /* guarded by mu */
    rv_disc_state_t *st;
    watch_t **w;
    uint32_t nw, capw;
    uint32_t inflight, cursor;
    uint32_t inflight_blocking;
    uint32_t max_blocking;      /* effective cap on blocking queries (opts, fd limit, 429s) */
    uint32_t cap_blocking;      /* what opts and the fd limit allow (max_blocking goes back to it) */
    uint32_t max_plain;         /* plain reads at once: PLAIN_INFLIGHT, less after a 429 */
    int64_t pushed_back_at;     /* last 429 that lowered the cap (monotonic ms), 0: none */
    int ep;                     /* epoll: curl's sockets and wake_fd */
    int wake_fd;                /* eventfd: rv_disc_stop wakes the loop */
    shard_t *sh;                /* multi handles; a watch stays in one (w->shard) */
    uint32_t nsh, next_sh;
    uint32_t nw_scanned;        /* watches at the last scan (a new one triggers a scan) */
    int64_t trim_at;            /* when to hand the first sync's transient memory back, 0: not */
    bool trimmed;
    uint32_t nhealth;           /* live health watches */
    uint32_t nfailing;
    bool was_healthy;
    uint64_t rng, seq;
    bool dirty;
    int64_t dirty_at, last_pub;
    struct curl_slist *hdrs;
    struct curl_slist *connect_to;  /* CONSUL_TLS_SERVER_NAME (rv_consul_tls_target), or NULL */
};

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    watch_t *w = ud;
    size_t n = sz * nm;
    if (w->len + n + 1 > MAX_BODY) {
        w->too_big = true;
        return 0;
    }
    if (w->len + n + 1 > w->cap) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc < w->len + n + 1)
            nc *= 2;
        char *b = realloc(w->buf, nc);
        if (!b)
            return 0;
        w->buf = b;
        w->cap = nc;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    w->buf[w->len] = '\0';
    return n;
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    watch_t *w = ud;
    size_t n = sz * nm;
    static const char key[] = "x-consul-index:";
    if (n > sizeof(key) - 1 && !strncasecmp(p, key, sizeof(key) - 1)) {
        uint64_t v = 0;
        for (size_t i = sizeof(key) - 1; i < n; i++) {
            if (p[i] >= '0' && p[i] <= '9') {
                if (v > (UINT64_MAX - 9) / 10)
                    break;
                v = v * 10 + (uint64_t)(p[i] - '0');
            } else if (p[i] != ' ' && p[i] != '\t') {
                break;
            }
        }
        w->got_index = v;
    }
    return n;
}

static watch_t *add_watch(rv_disc_t *d, int kind, const char *svc, const char *dc)
{
    if (d->nw == d->capw) {
        uint32_t nc = d->capw ? d->capw * 2 : 64;
        watch_t **p = realloc(d->w, nc * sizeof(*p));
        if (!p)
            return NULL;
        d->w = p;
        d->capw = nc;
    }
    watch_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->kind = kind;
    w->shard = d->next_sh++ % d->nsh;
    w->svc = xstrdup(svc);
    w->dc = xstrdup(dc);
    w->tokens = RATE_BURST;
    w->tok_at = mono_ms();
    if ((svc && !w->svc) || (dc && !w->dc)) {
        free(w->svc);
        free(w->dc);
        free(w);
        return NULL;
    }
    d->w[d->nw++] = w;
    d->nhealth += kind == WK_HEALTH;
    return w;
}

static void watch_free(rv_disc_t *d, watch_t *w)
{
    if (w->h) {
        if (w->inflight) {
            curl_multi_remove_handle(d->sh[w->shard].multi, w->h);
            d->inflight--;
            d->inflight_blocking -= w->blocking;
        }
        curl_easy_cleanup(w->h);
    }
    if (w->failures)
        d->nfailing--;
    free(w->svc);
    free(w->dc);
    free(w->buf);
    free(w);
}

/* Drop dead watches that are not in flight. */
static void sweep_watches(rv_disc_t *d)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < d->nw; i++) {
        watch_t *w = d->w[i];
        if (w->dead && !w->inflight)
            watch_free(d, w);
        else
            d->w[k++] = w;
    }
    d->nw = k;
    if (d->cursor >= d->nw)
        d->cursor = 0;
}

static void kill_watch(rv_disc_t *d, watch_t *w)
{
    if (!w->dead && w->kind == WK_HEALTH)
        d->nhealth--;
    w->dead = true;
}

/* Health watches follow the state's (service, dc) pairs: add new ones, retire gone ones. */
static void sync_health_watches(rv_disc_t *d, const char *dc)
{
    rv_disc_state_t *st = d->st;
    for (uint32_t i = 0; i < d->nw; i++) {
        watch_t *w = d->w[i];
        if (w->kind != WK_HEALTH || w->dead || strcmp(w->dc, dc))
            continue;
        ssvc_t *s = svc_get(st, w->svc, false);
        if (!s || !sdc_get(s, dc, false))
            kill_watch(d, w);
    }
    /* new pairs (a pair's flag is set once its watch exists) */
    for (uint32_t i = 0; i < st->n; i++) {
        sdc_t *sd = sdc_get(st->svcs[i], dc, false);
        if (!sd || sd->watched)
            continue;
        if (add_watch(d, WK_HEALTH, st->svcs[i]->name, dc))
            sd->watched = true;
    }
}

static void url_escape(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    for (; *s && o + 4 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
            out[o++] = (char)c;
        } else {
            snprintf(out + o, outlen - o, "%%%02X", c);
            o += 3;
        }
    }
    out[o] = '\0';
}

static int wait_for(const rv_disc_t *d, const watch_t *w)
{
    int wait = d->o.wait_ms > 0 ? d->o.wait_ms : DEFAULT_WAIT_MS;
    if (w->kind != WK_HEALTH)
        return wait;
    /* the service lists (one per datacenter) hold blocking slots too */
    uint32_t n = d->nhealth, slots = d->max_blocking;
    if (n + d->ndcs <= slots)
        return wait;
    /* more watches than slots: shorter waits so every service gets its turn */
    /* a sweep of every watch takes about min(wait, 60 s) */
    int64_t shared = (int64_t)(wait < SWEEP_MS ? wait : SWEEP_MS) * slots / (n + d->ndcs);
    return (int)(shared < MIN_SHARED_WAIT_MS ? MIN_SHARED_WAIT_MS : shared);
}

/* wait minus up to wait/16 at random: thousands of queries started together (the first
 * reads) would otherwise time out together at every period (Consul adds its own jitter on
 * top, up to wait/16, but not every server does). */
static int jittered(rv_disc_t *d, int wait)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return wait - (int)(d->rng % (uint64_t)(wait / 16 + 1));
}

static int start_watch(rv_disc_t *d, watch_t *w)
{
    char url[2048], esvc[1024] = "", edc[256] = "", q[512];
    size_t ql = 0;
    q[0] = '\0';
    if (w->dc) {
        url_escape(edc, sizeof(edc), w->dc);
        ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "%sdc=%s", ql ? "&" : "?", edc);
    }
    int wait = 0;
    if (w->kind != WK_DCS && w->index > 0) {
        wait = jittered(d, wait_for(d, w));
        ql += (size_t)snprintf(q + ql, sizeof(q) - ql, "%sindex=%llu&wait=%dms", ql ? "&" : "?",
                               (unsigned long long)w->index, wait);
    }
    if (d->o.stale && w->kind != WK_DCS && ql < sizeof(q))
        snprintf(q + ql, sizeof(q) - ql, "%sstale", ql ? "&" : "?");
    if (w->kind == WK_DCS) {
        snprintf(url, sizeof(url), "%s/v1/catalog/datacenters", d->base);
    } else if (w->kind == WK_SERVICES) {
        snprintf(url, sizeof(url), "%s/v1/catalog/services%s", d->base, q);
    } else {
        url_escape(esvc, sizeof(esvc), w->svc);
        snprintf(url, sizeof(url), "%s/v1/health/service/%s%s", d->base, esvc, q);
    }
    if (!w->h && !(w->h = curl_easy_init()))
        return RV_ENOMEM;
    CURL *h = w->h;
    curl_easy_reset(h);
    w->len = 0;
    w->got_index = 0;
    w->too_big = false;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, w);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(wait + wait / 16 + 5000));
    curl_easy_setopt(h, CURLOPT_PRIVATE, w);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)BUFFER_SIZE);
    if (d->hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, d->hdrs);
    if (d->basic_auth)
        curl_easy_setopt(h, CURLOPT_USERPWD, d->basic_auth);
    if (d->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, d->ca_file);
    if (d->ca_path)
        curl_easy_setopt(h, CURLOPT_CAPATH, d->ca_path);
    if (d->cert_file)
        curl_easy_setopt(h, CURLOPT_SSLCERT, d->cert_file);
    if (d->key_file)
        curl_easy_setopt(h, CURLOPT_SSLKEY, d->key_file);
    if (d->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (d->connect_to)
        curl_easy_setopt(h, CURLOPT_CONNECT_TO, d->connect_to);
    if (curl_multi_add_handle(d->sh[w->shard].multi, h) != CURLM_OK)
        return RV_EIO;
    w->inflight = true;
    w->blocking = wait > 0;
    d->inflight++;
    d->inflight_blocking += w->blocking;
    return 0;
}

static void set_failing(rv_disc_t *d, watch_t *w, bool failing)
{
    bool was = w->failures > 0;
    if (failing && !was)
        d->nfailing++;
    else if (!failing && was)
        d->nfailing--;
}

static void mark_dirty(rv_disc_t *d, int64_t now)
{
    if (!d->dirty)
        d->dirty_at = now;
    d->dirty = true;
}

/* Datacenters from /v1/catalog/datacenters (JSON array of strings). */
static void apply_dcs(rv_disc_t *d, const char *body, size_t len)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    for (size_t i = 0; i < json_array_size(root); i++) {
        const char *dc = json_string_value(json_array_get(root, i));
        if (!dc || !dc[0])
            continue;
        bool have = false;
        for (uint32_t k = 0; k < d->ndcs && !have; k++)
            have = !strcmp(d->dcs[k], dc);
        if (have)
            continue;
        char **p = realloc(d->dcs, (d->ndcs + 1) * sizeof(*p));
        if (!p)
            break;
        d->dcs = p;
        if (!(p[d->ndcs] = strdup(dc)))
            break;
        d->ndcs++;
        add_watch(d, WK_SERVICES, NULL, dc);
        rv_log_info("consul discovery: watching datacenter %s", dc);
    }
    json_decref(root);
}

/*
 * Consul answered 429 Too Many Requests: its RPC rate limit (protocols.md 1), or, on the
 * agents that answer it so, its per-client connection limit (limits.http_max_conns_per_client,
 * 200 by default) - each held query is a connection. Hold fewer: the cap becomes 3/4 of the
 * queries open now (at least PUSHBACK_MIN) and plain reads a quarter of that, so the services
 * take turns (wait_for) instead of failing; logged. 10 min without a 429 doubles it back
 * (recover_cap), up to the configured cap.
 */
static void push_back(rv_disc_t *d, int64_t now)
{
    uint32_t open = d->inflight + 1;
    uint32_t cap = open * 3 / 4;
    if (cap < PUSHBACK_MIN)
        cap = PUSHBACK_MIN;
    d->pushed_back_at = now;
    if (cap >= d->max_blocking)
        return;
    rv_log_warn("consul discovery: Consul answered 429 Too Many Requests with %u queries open (rate limit, or "
                "limits.http_max_conns_per_client); holding at most %u blocking queries, services take turns",
                open, cap);
    d->max_blocking = cap;
    d->max_plain = cap / 4 < PLAIN_INFLIGHT ? (cap / 4 ? cap / 4 : 1) : PLAIN_INFLIGHT;
}

static void recover_cap(rv_disc_t *d, int64_t now)
{
    if (!d->pushed_back_at || now - d->pushed_back_at < PUSHBACK_RECOVER_MS)
        return;
    uint32_t cap = d->max_blocking * 2;
    d->max_blocking = cap > d->cap_blocking ? d->cap_blocking : cap;
    d->max_plain = d->max_blocking / 4 < PLAIN_INFLIGHT ? d->max_blocking / 4 + 1 : PLAIN_INFLIGHT;
    d->pushed_back_at = d->max_blocking < d->cap_blocking ? now : 0;
    rv_log_info("consul discovery: no 429 from Consul for %d min; holding up to %u blocking queries",
                PUSHBACK_RECOVER_MS / 60000, d->max_blocking);
}

static void finish(rv_disc_t *d, watch_t *w, CURLcode cc, int64_t now)
{
    long status = 0;
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(d->sh[w->shard].multi, w->h);
    w->inflight = false;
    d->inflight--;
    d->inflight_blocking -= w->blocking;
    w->blocking = false;
    if (w->dead)
        return;
    int rc = 0;
    if (cc == CURLE_OK && status == 429)
        push_back(d, now);
    if (cc != CURLE_OK || status != 200) {
        rc = RV_EIO;
        if (w->failures == 0 || rv_log_level >= RV_LOG_DEBUG) {
            char why[160];
            if (cc != CURLE_OK)
                snprintf(why, sizeof(why), "%s", w->too_big ? "answer too large" : curl_easy_strerror(cc));
            else
                snprintf(why, sizeof(why), "HTTP %ld: %.100s", status, w->buf ? w->buf : "");
            rv_log_debug("consul discovery: %s %s%s%s failed: %s",
                         w->kind == WK_HEALTH ? "health of" : w->kind == WK_SERVICES ? "services of" : "datacenters",
                         w->svc ? w->svc : "", w->svc ? " in " : "", w->dc ? w->dc : "", why);
            if (d->nfailing == 0 && d->was_healthy)
                rv_log_warn("consul discovery: Consul unavailable (%s); keeping the last instances", why);
        }
    } else if (w->kind == WK_DCS) {
        apply_dcs(d, w->buf ? w->buf : "", w->len);
    } else if (w->kind == WK_SERVICES) {
        rc = rv_disc_set_services(d->st, w->dc, w->buf ? w->buf : "", w->len);
        if (rc >= 0) {
            sync_health_watches(d, w->dc);
            if (rc > 0)
                mark_dirty(d, now);
        }
    } else {
        rc = rv_disc_set_health(d->st, w->svc, w->dc, w->buf ? w->buf : "", w->len);
        if (rc > 0)
            mark_dirty(d, now);
    }
    if (rc < 0) {
        set_failing(d, w, true);
        w->failures++;
        /* after a failure the index may belong to a Consul that restarted (or lost its
         * leader): a query with an index above the server's would block for the whole wait,
         * so the next one is a plain read */
        w->index = 0;
        w->not_before = now + rv_consul_backoff_ms(w->failures, &d->rng);
        w->ok = false;
        return;
    }
    set_failing(d, w, false);
    w->failures = 0;
    w->ok = true;
    if (w->kind == WK_DCS) {
        w->not_before = now + DCS_REFRESH_MS;
        return;
    }
    w->index = rv_consul_next_index(w->index, w->got_index);
    w->not_before = now;
}

static void publish(rv_disc_t *d, int64_t now)
{
    rv_disc_view_t *v = rv_disc_view_build(d->st);
    if (!v) {
        rv_log_error("consul discovery: out of memory building the endpoint view; keeping the last one");
        return;
    }
    v->seq = ++d->seq;
    pthread_mutex_lock(&d->mu);
    rv_disc_view_t *old = d->latest;
    d->latest = v;
    pthread_mutex_unlock(&d->mu);
    rv_disc_view_release(old);
    uint64_t one = 1;
    if (write(d->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        rv_log_error("consul discovery: eventfd: %s", strerror(errno));
    d->dirty = false;
    d->last_pub = now;
    if (v->synced && !d->trimmed && !d->trim_at)
        d->trim_at = now + TRIM_DELAY_MS;
}

/* Token bucket per watch: burst RATE_BURST, refill one per RATE_REFILL_MS. */
static bool take_token(watch_t *w, int64_t now, int64_t *ready_at)
{
    w->tokens += (double)(now - w->tok_at) / RATE_REFILL_MS;
    if (w->tokens > RATE_BURST)
        w->tokens = RATE_BURST;
    w->tok_at = now;
    if (w->tokens >= 1.0) {
        w->tokens -= 1.0;
        return true;
    }
    *ready_at = now + (int64_t)((1.0 - w->tokens) * RATE_REFILL_MS) + 1;
    return false;
}

/* CURLMOPT_SOCKETFUNCTION: follow curl's interest in each socket in the watcher's epoll. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *sockp)
{
    shard_t *sh = ud;
    rv_disc_t *d = sh->d;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(d->ep, EPOLL_CTL_DEL, fd, NULL);
        curl_multi_assign(sh->multi, fd, NULL);
        return 0;
    }
    struct epoll_event ev = { .data.u64 = ((uint64_t)sh->idx << 32) | (uint32_t)fd };
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (sockp) {
        if (epoll_ctl(d->ep, EPOLL_CTL_MOD, fd, &ev) == 0)
            return 0;
    }
    /* new to us (or curl reused a number we had dropped): add, else modify */
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev) != 0 &&
        (errno != EEXIST || epoll_ctl(d->ep, EPOLL_CTL_MOD, fd, &ev) != 0)) {
        rv_log_error("consul discovery: epoll_ctl: %s", strerror(errno));
        return -1;
    }
    curl_multi_assign(sh->multi, fd, sh);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when curl wants CURL_SOCKET_TIMEOUT (-1: no timer). */
static int on_timer(CURLM *multi, long timeout_ms, void *ud)
{
    shard_t *sh = ud;
    sh->timer_at = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    return 0;
}

/*
 * Start what may start: plain reads (first reads, reads after an error) up to PLAIN_INFLIGHT
 * at once, blocking queries up to max_blocking, round robin from the cursor so that no watch
 * starves when there are more watches than blocking slots. The cursor moves once, after the
 * scan, to just past the last blocking watch started. Returns when the next scan is due.
 */
static int64_t start_due(rv_disc_t *d, int64_t now)
{
    int64_t next = now + 1000;
    uint32_t nw = d->nw;
    bool started_any = false;
    uint32_t last_started = 0;
    uint32_t inflight_plain = d->inflight - d->inflight_blocking;
    for (uint32_t k = 0; k < nw; k++) {
        if (inflight_plain >= d->max_plain && d->inflight_blocking >= d->max_blocking)
            break;
        uint32_t i = (d->cursor + k) % nw;
        watch_t *w = d->w[i];
        bool plain = w->kind == WK_DCS || w->index == 0;
        if (w->inflight || w->dead)
            continue;
        if (plain ? inflight_plain >= d->max_plain : d->inflight_blocking >= d->max_blocking)
            continue;
        if (w->not_before > now) {
            if (w->not_before < next)
                next = w->not_before;
            continue;
        }
        int64_t ready;
        if (!take_token(w, now, &ready)) {
            w->not_before = ready;
            if (ready < next)
                next = ready;
            continue;
        }
        if (start_watch(d, w) != 0) {
            w->not_before = now + 1000;
            continue;
        }
        inflight_plain += plain;
        /* Only blocking starts move the cursor: a plain read (a first read, or the retry
         * after a failure) can sit anywhere, and letting it pull the cursor back would
         * restart the round robin from there and starve the watches at the end. */
        if (!plain) {
            started_any = true;
            last_started = i;
        }
    }
    if (started_any)
        d->cursor = (last_started + 1) % nw;
    return next;
}

/*
 * The loop: curl's multi socket interface on an epoll set, so that a turn costs what its
 * events cost, not O(transfers) (thousands of blocking queries are open at once). Watches are
 * scanned for starts only when a transfer finished, a watch was added, or a watch's time
 * (backoff, rate limit) has come.
 */
static void *run(void *arg)
{
    rv_disc_t *d = arg;
    if (d->fixed_dcs)
        for (uint32_t i = 0; i < d->ndcs; i++)
            add_watch(d, WK_SERVICES, NULL, d->dcs[i]);
    else
        add_watch(d, WK_DCS, NULL, NULL);
    int64_t scan_at = 0;
    int running = 0;
    struct epoll_event evs[256];
    while (!atomic_load(&d->stop)) {
        int64_t now = mono_ms();
        if (scan_at <= now || d->nw != d->nw_scanned) {
            d->nw_scanned = d->nw;
            scan_at = start_due(d, now);
        }
        /* transfers just added: curl sets a 0 ms timer for them */
        int64_t tnow = mono_ms();
        for (uint32_t k = 0; k < d->nsh; k++)
            if (d->sh[k].timer_at >= 0 && d->sh[k].timer_at <= tnow) {
                d->sh[k].timer_at = -1;
                curl_multi_socket_action(d->sh[k].multi, CURL_SOCKET_TIMEOUT, 0, &running);
            }
        CURLMsg *m;
        int left;
        bool any = false;
        for (uint32_t k = 0; k < d->nsh; k++) {
            while ((m = curl_multi_info_read(d->sh[k].multi, &left))) {
                if (m->msg != CURLMSG_DONE)
                    continue;
                watch_t *w = NULL;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&w);
                if (w) {
                    finish(d, w, m->data.result, now);
                    /* thousands of watches: no body buffer kept between answers */
                    free(w->buf);
                    w->buf = NULL;
                    w->len = w->cap = 0;
                }
                any = true;
            }
        }
        if (any) {
            sweep_watches(d);
            scan_at = now;   /* slots freed, and the finished watches may go again */
        }
        bool healthy = d->nfailing == 0;
        if (healthy != d->was_healthy) {
            if (healthy && d->seq)
                rv_log_info("consul discovery: Consul answers again");
            d->was_healthy = healthy;
            atomic_store(&d->healthy, healthy);
        }
        now = mono_ms();
        int64_t next = scan_at;
        recover_cap(d, now);
        /* The first sync parses every service and the control thread builds its first big
         * snapshot from it (JSON dumps included): freed memory that glibc keeps in its arenas
         * unless asked. Once, a few seconds after the first synced view. */
        if (d->trim_at && now >= d->trim_at) {
            d->trim_at = 0;
            d->trimmed = true;
            malloc_trim(0);
        } else if (d->trim_at && d->trim_at < next) {
            next = d->trim_at;
        }
        if (d->dirty) {
            bool syncing = !d->latest || !d->latest->synced;
            int64_t due = d->dirty_at + (syncing ? PUBLISH_GAP_SYNCING_MS : PUBLISH_GAP_MS);
            int64_t gap = d->last_pub + PUBLISH_GAP_MS;
            if (due < gap)
                due = gap;
            /* syncing ends with the last first answer: publish at once then */
            if (syncing && due > now) {
                bool all = d->st->ndcs_read > 0;
                for (uint32_t i = 0; i < d->nw && all; i++)
                    all = d->w[i]->kind != WK_HEALTH || d->w[i]->ok || d->w[i]->dead;
                if (all)
                    due = now;
            }
            if (due <= now)
                publish(d, now);
            else if (due < next)
                next = due;
        }
        for (uint32_t k = 0; k < d->nsh; k++)
            if (d->sh[k].timer_at >= 0 && d->sh[k].timer_at < next)
                next = d->sh[k].timer_at;
        if (any || d->nw != d->nw_scanned)
            continue;   /* starts may be due now */
        int64_t timeout = next - mono_ms();
        if (timeout < 0)
            timeout = 0;
        if (timeout > 1000)
            timeout = 1000;
        int n = epoll_wait(d->ep, evs, (int)RV_ARRAY_LEN(evs), (int)timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == WAKE_TAG) {
                uint64_t v;
                if (read(d->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    rv_log_debug("consul discovery: wake eventfd: %s", strerror(errno));
                continue;
            }
            int mask = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                mask |= CURL_CSELECT_IN;
            if (evs[i].events & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
            if (evs[i].events & EPOLLERR)
                mask |= CURL_CSELECT_ERR;
            uint32_t k = (uint32_t)(evs[i].data.u64 >> 32);
            if (k < d->nsh)
                curl_multi_socket_action(d->sh[k].multi, (curl_socket_t)(uint32_t)evs[i].data.u64, mask, &running);
        }
    }
    return NULL;
}

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *base_url(const char *addr, const char *scheme)
{
    const char *a = addr && addr[0] ? addr : "127.0.0.1:8500";
    char buf[1024];
    if (strstr(a, "://"))
        snprintf(buf, sizeof(buf), "%s", a);
    else
        snprintf(buf, sizeof(buf), "%s://%s", scheme && scheme[0] ? scheme : "http", a);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '/')
        buf[--n] = '\0';
    return strdup(buf);
}

/*
 * The blocking-query cap the descriptor limit allows: the soft RLIMIT_NOFILE is raised (up to
 * the hard limit) to what the process had plus one descriptor per query and plain read; when
 * even the hard limit is lower, the cap is what fits under it, keeping FD_RESERVE for the rest.
 */
static uint32_t fd_cap(uint32_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return want;
    rlim_t need = (rlim_t)want + PLAIN_INFLIGHT + FD_RESERVE;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return want;
    rlim_t old = rl.rlim_cur;
    rlim_t to = rl.rlim_cur + want + PLAIN_INFLIGHT;
    if (rl.rlim_max != RLIM_INFINITY && to > rl.rlim_max)
        to = rl.rlim_max;
    if (to > old) {
        rl.rlim_cur = to;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            rv_log_info("consul discovery: open files limit raised from %llu to %llu for %u blocking queries",
                        (unsigned long long)old, (unsigned long long)to, want);
        else
            rl.rlim_cur = old;
    }
    if (rl.rlim_cur >= need)
        return want;
    rlim_t room = rl.rlim_cur > 2 * FD_RESERVE + PLAIN_INFLIGHT ? rl.rlim_cur - FD_RESERVE - PLAIN_INFLIGHT
                                                                : rl.rlim_cur / 4;
    uint32_t cap = room < want ? (uint32_t)room : want;
    if (cap < 8)
        cap = 8;
    rv_log_warn("consul discovery: open files limit %llu (hard %llu) too low for %u blocking queries; "
                "holding at most %u (raise `ulimit -n`)",
                (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, want, cap);
    return cap;
}

static void disc_free(rv_disc_t *d)
{
    for (uint32_t i = 0; i < d->nw; i++)
        watch_free(d, d->w[i]);
    free(d->w);
    for (uint32_t k = 0; k < d->nsh; k++)
        if (d->sh[k].multi)
            curl_multi_cleanup(d->sh[k].multi);
    free(d->sh);
    curl_slist_free_all(d->hdrs);
    curl_slist_free_all(d->connect_to);
    rv_disc_state_free(d->st);
    rv_disc_view_release(d->latest);
    free_strs(d->dcs, d->ndcs);
    free(d->base);
    free(d->token);
    free(d->ca_file);
    free(d->ca_path);
    free(d->cert_file);
    free(d->key_file);
    free(d->basic_auth);
    free(d->tls_server_name);
    if (d->efd >= 0)
        close(d->efd);
    if (d->ep >= 0)
        close(d->ep);
    if (d->wake_fd >= 0)
        close(d->wake_fd);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

rv_disc_t *rv_disc_start(const rv_disc_opts_t *o, int *notify_fd)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    rv_disc_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->efd = d->ep = d->wake_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    d->o = *o;
    const rv_consul_cfg_t *c = o->consul;
    d->base = base_url(c ? c->address : NULL, c ? c->scheme : NULL);
    if (c) {
        d->token = xstrdup(c->token);
        d->ca_file = xstrdup(c->ca_file);
        d->ca_path = xstrdup(c->ca_path);
        d->cert_file = xstrdup(c->cert_file);
        d->key_file = xstrdup(c->key_file);
        d->basic_auth = xstrdup(c->basic_auth);
        d->insecure = c->insecure_skip_verify;
        d->tls_server_name = xstrdup(c->tls_server_name);
    }
    if (d->base && d->tls_server_name) {
        char *nb, *ct;
        if (rv_consul_tls_target(d->base, d->tls_server_name, &nb, &ct) != 0)
            goto fail;
        if (nb) {
            free(d->base);
            d->base = nb;
            d->connect_to = curl_slist_append(NULL, ct);
            free(ct);
            if (!d->connect_to)
                goto fail;
        }
    }
    if (d->token) {
        char hdr[1024];
        snprintf(hdr, sizeof(hdr), "X-Consul-Token: %s", d->token);
        d->hdrs = curl_slist_append(NULL, hdr);
    }
    d->fixed_dcs = o->ndcs > 0;
    for (uint32_t i = 0; i < o->ndcs; i++) {
        char **p = realloc(d->dcs, (d->ndcs + 1) * sizeof(*p));
        if (!p || !(p[d->ndcs] = strdup(o->dcs[i]))) {
            if (p)
                d->dcs = p;
            goto fail;
        }
        d->dcs = p;
        d->ndcs++;
    }
    d->o.dcs = NULL;
    d->o.ndcs = 0;
    d->o.consul = NULL;
    d->rng = (uint64_t)mono_ms() * 6364136223846793005ull + (uint64_t)getpid();
    d->st = rv_disc_state_new(o->health);
    if (d->st && rv_disc_state_allow_tags(d->st, o->tags_allow, o->ntags_allow) != 0)
        goto fail;
    d->o.tags_allow = NULL;
    d->o.ntags_allow = 0;
    d->max_blocking = d->cap_blocking = fd_cap(o->max_queries ? o->max_queries : rv_disc_max_queries());
    d->max_plain = PLAIN_INFLIGHT;
    uint32_t nsh = (d->max_blocking + PLAIN_INFLIGHT + SHARD_WATCHES - 1) / SHARD_WATCHES;
    d->sh = calloc(nsh, sizeof(*d->sh));
    bool multis = d->sh != NULL;
    for (uint32_t k = 0; multis && k < nsh; k++) {
        shard_t *sh = &d->sh[k];
        sh->d = d;
        sh->idx = k;
        sh->timer_at = -1;
        if (!(sh->multi = curl_multi_init())) {
            multis = false;
            break;
        }
        d->nsh++;
        /* every finished query's connection stays open for the next one (no reconnect per
         * answer): room for all of the shard's watches and then some (assignment is round
         * robin, so a shard holds about its share) */
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, (long)(2 * SHARD_WATCHES + 8));
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
    }
    d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    d->ep = epoll_create1(EPOLL_CLOEXEC);
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!d->base || !d->st || !multis || d->efd < 0 || d->ep < 0 || d->wake_fd < 0 || (d->token && !d->hdrs))
        goto fail;
    struct epoll_event wev = { .events = EPOLLIN, .data.u64 = WAKE_TAG };
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, d->wake_fd, &wev) != 0)
        goto fail;
    atomic_init(&d->healthy, true);
    d->was_healthy = true;
    if (pthread_create(&d->th, NULL, run, d) != 0)
        goto fail;
    d->started = true;
    *notify_fd = d->efd;
    return d;
fail:
    disc_free(d);
    return NULL;
}

rv_disc_view_t *rv_disc_latest(rv_disc_t *d)
{
    pthread_mutex_lock(&d->mu);
    rv_disc_view_t *v = d->latest;
    rv_disc_view_ref(v);
    pthread_mutex_unlock(&d->mu);
    return v;
}

bool rv_disc_healthy(rv_disc_t *d)
{
    return atomic_load(&d->healthy);
}

void rv_disc_stop(rv_disc_t *d)
{
    if (!d)
        return;
    atomic_store(&d->stop, true);
    uint64_t one = 1;
    if (d->wake_fd >= 0 && write(d->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        rv_log_error("consul discovery: wake eventfd: %s", strerror(errno));
    if (d->started)
        pthread_join(d->th, NULL);
    disc_free(d);
}
