/*
 * test_dataplane.c - the data plane end to end on loopback: a hand-built snapshot, rivet's
 * workers, a tiny recording backend in a thread of this test, and raw client sockets.
 * Checks answers, forwarded headers, framing (chunked passthrough, HTTP/1.0 de-chunking,
 * pipelining, keep-alive reuse of upstream connections), error answers (404, 502, 503, 504),
 * retries, Expect: 100-continue, reloads and the metrics text. No timing assertions:
 * timeouts only keep a broken build from hanging.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "core/arena.h"
#include "core/err.h"
#include "proxy/router.h"
#include "proxy/stats.h"
#include "proxy/worker.h"
#include "test.h"

/* ---- recording backend ------------------------------------------------------------- */

static int be_fd = -1;
static uint16_t be_port, px_port, dead_port, px2_port;
static pthread_mutex_t be_mu = PTHREAD_MUTEX_INITIALIZER;
static char be_last[16384];
static size_t be_last_len;
static int be_count, be_conns, be_fail_left;
static volatile int be_stop;

static size_t find_crlf2(const char *b, size_t n)
{
    for (size_t i = 3; i < n; i++)
        if (b[i - 3] == '\r' && b[i - 2] == '\n' && b[i - 1] == '\r' && b[i] == '\n')
            return i + 1;
    return 0;
}

/* Value of header name in head (case-insensitive), copied into out; false when absent. */
static bool hdr_get(const char *head, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl + 1 < n; i++) {
        if ((i == 0 || head[i - 1] == '\n') && strncasecmp(head + i, name, nl) == 0 && head[i + nl] == ':') {
            size_t j = i + nl + 1, k = 0;
            while (j < n && head[j] == ' ')
                j++;
            while (j < n && head[j] != '\r' && k + 1 < cap)
                out[k++] = head[j++];
            out[k] = '\0';
            return true;
        }
    }
    return false;
}

static bool send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

typedef struct rbuf_s {
    int fd;
    char *b;
    size_t len, cap;
} rbuf_t;

/* Read more into r; false on EOF/error/timeout. */
static bool rb_fill(rbuf_t *r)
{
    if (r->len == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 65536;
        r->b = realloc(r->b, r->cap);
    }
    ssize_t n = recv(r->fd, r->b + r->len, r->cap - r->len, 0);
    if (n <= 0)
        return false;
    r->len += (size_t)n;
    return true;
}

static void rb_consume(rbuf_t *r, size_t n)
{
    memmove(r->b, r->b + n, r->len - n);
    r->len -= n;
}

/* Decode a chunked body from r (simple, trusts the sender). Returns payload length, -1 on EOF. */
static long read_chunked(rbuf_t *r, char **out)
{
    size_t total = 0, cap = 4096;
    char *o = malloc(cap);
    for (;;) {
        char *nl;
        while (!(nl = memchr(r->b, '\n', r->len)))
            if (!rb_fill(r))
                goto eof;
        unsigned long sz = strtoul(r->b, NULL, 16);
        rb_consume(r, (size_t)(nl - r->b) + 1);
        if (sz == 0) {
            /* trailers until an empty line */
            for (;;) {
                while (!(nl = memchr(r->b, '\n', r->len)))
                    if (!rb_fill(r))
                        goto eof;
                size_t ll = (size_t)(nl - r->b) + 1;
                rb_consume(r, ll);
                if (ll <= 2)
                    break;
            }
            *out = o;
            return (long)total;
        }
        while (r->len < sz + 2)
            if (!rb_fill(r))
                goto eof;
        if (total + sz > cap) {
            while (total + sz > cap)
                cap *= 2;
            o = realloc(o, cap);
        }
        memcpy(o + total, r->b, sz);
        total += sz;
        rb_consume(r, sz + 2);
    }
eof:
    free(o);
    return -1;
}

static void *be_conn(void *arg)
{
    rbuf_t r = { .fd = (int)(intptr_t)arg };
    static char big[1 << 16];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    for (;;) {
        size_t hl;
        while (!(hl = find_crlf2(r.b, r.len)))
            if (!rb_fill(&r))
                goto out;
        char path[256] = "", v[64];
        sscanf(r.b, "%*s %255s", path);
        long body_len = 0;
        char *body = NULL;
        pthread_mutex_lock(&be_mu);
        be_last_len = RV_MIN(hl, sizeof(be_last));
        memcpy(be_last, r.b, be_last_len);
        be_count++;
        pthread_mutex_unlock(&be_mu);
        bool chunked = hdr_get(r.b, hl, "transfer-encoding", v, sizeof v);
        long cl = hdr_get(r.b, hl, "content-length", v, sizeof v) ? atol(v) : 0;
        rb_consume(&r, hl);
        if (chunked) {
            body_len = read_chunked(&r, &body);
            if (body_len < 0)
                goto out;
        } else {
            while ((long)r.len < cl)
                if (!rb_fill(&r))
                    goto out;
            body_len = cl;
            rb_consume(&r, (size_t)cl);
        }
        free(body);
        char resp[512];
        if (strcmp(path, "/silent") == 0) {
            while (rb_fill(&r))
                ;
            goto out;
        } else if (strcmp(path, "/close") == 0) {
            goto out;
        } else if (strcmp(path, "/bad") == 0) {
            const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello";
            send_all(r.fd, s, strlen(s));
            goto out;
        } else if (strncmp(path, "/chunked", 8) == 0) {
            const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
            send_all(r.fd, s, strlen(s));
        } else if (strncmp(path, "/retry", 6) == 0) {
            pthread_mutex_lock(&be_mu);
            bool f = be_fail_left > 0;
            if (f)
                be_fail_left--;
            pthread_mutex_unlock(&be_mu);
            const char *s = f ? "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nfail"
                              : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            send_all(r.fd, s, strlen(s));
        } else if (strcmp(path, "/big") == 0) {
            size_t n = 4u << 20;
            int k = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
            send_all(r.fd, resp, (size_t)k);
            for (size_t off = 0; off < n; off += sizeof(big))
                if (!send_all(r.fd, big, RV_MIN(sizeof(big), n - off)))
                    goto out;
        } else if (strcmp(path, "/eof") == 0) {
            const char *s = "HTTP/1.0 200 OK\r\nX-Eof: 1\r\n\r\nuntil the end";
            send_all(r.fd, s, strlen(s));
            goto out;
        } else if (strcmp(path, "/slow") == 0) {
            struct timespec ts = { 0, 300 * 1000000 };
            nanosleep(&ts, NULL);
            const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow";
            send_all(r.fd, s, strlen(s));
        } else if (strcmp(path, "/echo-len") == 0) {
            char num[32];
            int nl = snprintf(num, sizeof num, "%ld", body_len);
            int k = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", nl, num);
            send_all(r.fd, resp, (size_t)k);
        } else {
            const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: yes\r\nKeep-Alive: timeout=5\r\n"
                            "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\nok";
            send_all(r.fd, s, strlen(s));
        }
    }
out:
    close(r.fd);
    free(r.b);
    return NULL;
}

static void *be_main(void *arg)
{
    while (!be_stop) {
        struct pollfd p = { be_fd, POLLIN, 0 };
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept(be_fd, NULL, NULL);
        if (c < 0)
            continue;
        pthread_mutex_lock(&be_mu);
        be_conns++;
        pthread_mutex_unlock(&be_mu);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_create(&t, &at, be_conn, (void *)(intptr_t)c);
        pthread_attr_destroy(&at);
    }
    return NULL;
}

static int listen_any(uint16_t *port, bool do_listen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || (do_listen && listen(fd, 64) < 0))
        return -1;
    getsockname(fd, (struct sockaddr *)&a, &al);
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- snapshot ---------------------------------------------------------------------- */

/* rv_snapshot_release() frees snapshots of the config module, which are larger; leave it
 * zeroed room so that a hand-built one is released the same way. */
typedef struct padded_snap_s {
    rv_snapshot_t s;
    char pad[512];
} padded_snap_t;

static rv_str_t S(rv_arena_t *a, const char *s) { return rv_arena_str(a, rv_cstr(s)); }

static void addr4(struct sockaddr_storage *ss, socklen_t *len, uint16_t port)
{
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof(*ss));
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *len = sizeof(*a);
}

static rv_route_t *add_route(rv_arena_t *a, rv_vhost_t *vh, const char *prefix, int kind)
{
    rv_route_t *r = &vh->routes[vh->nroutes++];
    memset(r, 0, sizeof(*r));
    r->match.path_kind = RV_PATH_PREFIX;
    r->match.path = S(a, prefix);
    r->match.case_sensitive = true;
    r->action.kind = kind;
    r->opts.timeout_ms = 15000;
    r->vs = vh->name;
    char nm[64];
    snprintf(nm, sizeof nm, "route%s", prefix);
    r->name = S(a, nm);
    r->vhost_headers = &vh->headers;
    return r;
}

static void to_cluster(rv_arena_t *a, rv_route_t *r, uint32_t cluster)
{
    r->action.kind = RV_ACTION_ROUTE;
    r->action.dests = RV_ARENA_NEWN(a, rv_dest_t, 1);
    r->action.dests[0].cluster = cluster;
    r->action.dests[0].weight = 1;
    r->action.ndests = 1;
    r->action.total_weight = 1;
}

static rv_snapshot_t *build_snap(uint64_t version, const char *direct_body, bool second_listener)
{
    padded_snap_t *ps = calloc(1, sizeof(*ps));
    rv_snapshot_t *snap = &ps->s;
    rv_arena_t *a = &snap->arena;
    rv_arena_init(a, 0);
    atomic_store(&snap->refs, 1);
    snap->version = version;

    snap->nclusters = 3;
    snap->clusters = RV_ARENA_NEWN(a, rv_cluster_t, 3);
    const char *cn[3] = { "default.backend", "default.dead", "default.empty" };
    uint16_t cp[2] = { be_port, dead_port };
    for (uint32_t i = 0; i < 3; i++) {
        rv_cluster_t *c = &snap->clusters[i];
        c->name = S(a, cn[i]);
        c->index = i;
        c->lb = RV_LB_ROUND_ROBIN;
        if (i < 2) {
            c->eps = RV_ARENA_NEWN(a, rv_endpoint_t, 1);
            addr4(&c->eps[0].addr, &c->eps[0].addrlen, cp[i]);
            c->eps[0].weight = 1;
            c->eps[0].hostname = S(a, "127.0.0.1");
            char au[32];
            snprintf(au, sizeof au, "127.0.0.1:%u", cp[i]);
            c->eps[0].authority = S(a, au);
            c->neps = 1;
            c->total_weight = 1;
        }
    }

    snap->nlisteners = second_listener ? 2 : 1;
    snap->listeners = RV_ARENA_NEWN(a, rv_listener_cfg_t, 2);
    rv_listener_cfg_t *l = &snap->listeners[0];
    if (second_listener) {
        /* a listener with one direct route, sharing nothing with the first */
        rv_listener_cfg_t *l2 = &snap->listeners[1];
        l2->name = S(a, "default.gw2");
        l2->bind_address = S(a, "127.0.0.1");
        l2->port = px2_port;
        addr4(&l2->addr, &l2->addrlen, px2_port);
        l2->nvhosts = 1;
        l2->vhosts = RV_ARENA_NEWN(a, rv_vhost_t, 1);
        rv_vhost_t *v2 = &l2->vhosts[0];
        v2->name = S(a, "default.second");
        v2->domains = RV_ARENA_NEWN(a, rv_str_t, 1);
        v2->domains[0] = S(a, "*");
        v2->ndomains = 1;
        v2->routes = RV_ARENA_NEWN(a, rv_route_t, 1);
        rv_route_t *r2 = add_route(a, v2, "/", RV_ACTION_DIRECT);
        r2->action.status = 200;
        r2->action.body = S(a, "listener two");
    }
    l->name = S(a, "default.gw");
    l->bind_address = S(a, "127.0.0.1");
    l->port = px_port;
    addr4(&l->addr, &l->addrlen, px_port);
    l->nvhosts = 2;
    l->vhosts = RV_ARENA_NEWN(a, rv_vhost_t, 2);

    rv_vhost_t *dv = &l->vhosts[0];
    dv->name = S(a, "default.direct-only");
    dv->domains = RV_ARENA_NEWN(a, rv_str_t, 1);
    dv->domains[0] = S(a, "direct.test");
    dv->ndomains = 1;
    dv->routes = RV_ARENA_NEWN(a, rv_route_t, 1);
    rv_route_t *r = add_route(a, dv, "/direct", RV_ACTION_DIRECT);
    r->action.status = 200;
    r->action.body = S(a, direct_body);

    rv_vhost_t *vh = &l->vhosts[1];
    vh->name = S(a, "default.main");
    vh->domains = RV_ARENA_NEWN(a, rv_str_t, 1);
    vh->domains[0] = S(a, "*");
    vh->ndomains = 1;
    vh->routes = RV_ARENA_NEWN(a, rv_route_t, 16);
    vh->headers.resp_add = RV_ARENA_NEWN(a, rv_header_add_t, 1);
    vh->headers.resp_add[0] = (rv_header_add_t){ S(a, "x-vhost"), S(a, "v"), true };
    vh->headers.nresp_add = 1;

    r = add_route(a, vh, "/direct", RV_ACTION_DIRECT);
    r->action.status = 200;
    r->action.body = S(a, direct_body);
    r = add_route(a, vh, "/redir", RV_ACTION_REDIRECT);
    r->action.redirect.host = S(a, "example.com");
    r->action.redirect.code = 301;
    r = add_route(a, vh, "/deadend", RV_ACTION_ROUTE);
    to_cluster(a, r, 1);
    r = add_route(a, vh, "/deadretry", RV_ACTION_ROUTE);
    to_cluster(a, r, 1);
    r->opts.retries.on = RV_RETRY_CONNECT_FAILURE;
    r->opts.retries.num_retries = 2;
    r->opts.retries.per_try_timeout_ms = RV_TIMEOUT_UNSET;
    r->opts.retries.backoff_base_ms = 1000;
    r->opts.retries.backoff_max_ms = 1000;
    r = add_route(a, vh, "/nohost", RV_ACTION_ROUTE);
    to_cluster(a, r, 2);
    r = add_route(a, vh, "/missing", RV_ACTION_ROUTE);
    to_cluster(a, r, RV_NO_CLUSTER);
    r = add_route(a, vh, "/silent", RV_ACTION_ROUTE);
    to_cluster(a, r, 0);
    r->opts.timeout_ms = 300;
    r = add_route(a, vh, "/retry", RV_ACTION_ROUTE);
    to_cluster(a, r, 0);
    r->opts.retries.on = RV_RETRY_5XX;
    r->opts.retries.num_retries = 3;
    r->opts.retries.per_try_timeout_ms = RV_TIMEOUT_UNSET;
    r->opts.retries.backoff_base_ms = 5;
    r->opts.retries.backoff_max_ms = 20;
    r = add_route(a, vh, "/", RV_ACTION_ROUTE);
    to_cluster(a, r, 0);
    r->headers.req_add = RV_ARENA_NEWN(a, rv_header_add_t, 2);
    r->headers.req_add[0] = (rv_header_add_t){ S(a, "x-added"), S(a, "1"), true };
    r->headers.req_add[1] = (rv_header_add_t){ S(a, "x-replaced"), S(a, "new"), false };
    r->headers.nreq_add = 2;
    r->headers.req_remove = RV_ARENA_NEWN(a, rv_str_t, 1);
    r->headers.req_remove[0] = S(a, "x-remove-me");
    r->headers.nreq_remove = 1;
    r->headers.resp_add = RV_ARENA_NEWN(a, rv_header_add_t, 1);
    r->headers.resp_add[0] = (rv_header_add_t){ S(a, "x-resp"), S(a, "yes"), true };
    r->headers.nresp_add = 1;

    uint32_t idx = 0;
    for (uint32_t li = 0; li < snap->nlisteners; li++)
        for (uint32_t v = 0; v < snap->listeners[li].nvhosts; v++)
            for (uint32_t k = 0; k < snap->listeners[li].vhosts[v].nroutes; k++)
                snap->listeners[li].vhosts[v].routes[k].index = idx++;
    snap->nroutes = idx;
    if (rv_router_build(snap) != 0 || rv_stats_assign(snap) != 0) {
        printf("# snapshot build failed\n");
        exit(2);
    }
    return snap;
}

/* ---- client ------------------------------------------------------------------------ */

typedef struct resp_s {
    int status;
    char head[8192];
    size_t head_len;
    char *body;
    long body_len;
} resp_t;

static int cli_connect_port(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int cli_connect(void) { return cli_connect_port(px_port); }

/* Read one response from r (head_only: the request was HEAD). Returns status or -1. */
static int read_resp(rbuf_t *r, resp_t *out, bool head_only)
{
    memset(out, 0, sizeof(*out));
    size_t hl;
    while (!(hl = find_crlf2(r->b, r->len)))
        if (!rb_fill(r))
            return -1;
    out->head_len = RV_MIN(hl, sizeof(out->head) - 1);
    memcpy(out->head, r->b, out->head_len);
    out->status = atoi(r->b + 9);
    char v[64];
    bool chunked = hdr_get(out->head, out->head_len, "transfer-encoding", v, sizeof v);
    bool has_cl = hdr_get(out->head, out->head_len, "content-length", v, sizeof v);
    long cl = has_cl ? atol(v) : -1;
    rb_consume(r, hl);
    if (head_only || out->status == 204 || out->status == 304 || out->status < 200) {
        out->body = calloc(1, 1);
        return out->status;
    }
    if (chunked) {
        out->body_len = read_chunked(r, &out->body);
        return out->body_len < 0 ? -1 : out->status;
    }
    if (cl < 0)
        while (rb_fill(r))
            ;
    else
        while ((long)r->len < cl)
            if (!rb_fill(r))
                return -1;
    size_t n = cl < 0 ? r->len : (size_t)cl;
    out->body = malloc(n + 1);
    memcpy(out->body, r->b, n);
    out->body[n] = '\0';
    out->body_len = (long)n;
    rb_consume(r, n);
    return out->status;
}

/* One request on a fresh connection; the response in out. Returns the status or -1. */
static int exchange(const char *req, size_t len, resp_t *out)
{
    rbuf_t r = { .fd = cli_connect() };
    if (r.fd < 0)
        return -1;
    send_all(r.fd, req, len);
    int st = read_resp(&r, out, strncmp(req, "HEAD ", 5) == 0);
    close(r.fd);
    free(r.b);
    return st;
}

#define EXCH(lit, out) exchange((lit), strlen(lit), (out))

static bool head_has(const resp_t *r, const char *name, const char *want)
{
    char v[512];
    if (!hdr_get(r->head, r->head_len, name, v, sizeof v))
        return false;
    return want == NULL || strcmp(v, want) == 0;
}

static void last_seen(char *out, size_t cap)
{
    pthread_mutex_lock(&be_mu);
    size_t n = RV_MIN(be_last_len, cap - 1);
    memcpy(out, be_last, n);
    out[n] = '\0';
    pthread_mutex_unlock(&be_mu);
}

static int count_of(int *v)
{
    pthread_mutex_lock(&be_mu);
    int n = *v;
    pthread_mutex_unlock(&be_mu);
    return n;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_local(void)
{
    resp_t r;
    CHECK_INT(EXCH("GET /direct HTTP/1.1\r\nHost: direct.test\r\n\r\n", &r), 200, "direct response");
    CHECK_STRN(r.body, r.body_len, "hello direct", "direct body");
    free(r.body);
    CHECK_INT(EXCH("GET /nope HTTP/1.1\r\nHost: direct.test\r\n\r\n", &r), 404, "no route -> 404");
    CHECK(r.body_len > 0, "404 has a short body");
    free(r.body);
    CHECK_INT(EXCH("GET /redir/x?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n", &r), 301, "redirect");
    CHECK(head_has(&r, "location", NULL), "redirect has a location");
    CHECK(strstr(r.head, "example.com") != NULL, "location names the configured host");
    CHECK(head_has(&r, "x-vhost", "v"), "vhost response headers on local replies");
    free(r.body);
    CHECK_INT(EXCH("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &r), 400, "bad head -> 400");
    free(r.body);
    CHECK_INT(EXCH("GET /%2e%2e/x%2f HTTP/1.1\r\nHost: a\r\n\r\n", &r), 400, "bad path -> 400");
    free(r.body);
    CHECK_INT(EXCH("HEAD /direct HTTP/1.1\r\nHost: direct.test\r\n\r\n", &r), 200, "HEAD on a direct route");
    CHECK(head_has(&r, "content-length", "12"), "HEAD keeps the length");
    free(r.body);
}

static void test_proxy_headers(void)
{
    resp_t r;
    char seen[16384];
    const char *req = "GET /hello//a/../b?x=1&y=%41 HTTP/1.1\r\nHost: svc.test\r\nX-Forwarded-For: 1.2.3.4\r\n"
                      "X-Forwarded-Proto: https\r\nConnection: keep-alive, X-Drop, X-Forwarded-For\r\nX-Drop: 1\r\n"
                      "Keep-Alive: 5\r\nTE: trailers\r\nX-Remove-Me: 1\r\nX-Replaced: old\r\n"
                      "Upgrade: h2c\r\nHTTP2-Settings: AAA\r\nUser-Agent: t\r\n\r\n";
    CHECK_INT(EXCH(req, &r), 200, "proxied GET");
    CHECK_STRN(r.body, r.body_len, "ok", "backend body");
    CHECK(head_has(&r, "x-backend", "yes"), "backend header forwarded");
    CHECK(head_has(&r, "x-resp", "yes"), "route response header added");
    CHECK(head_has(&r, "x-vhost", "v"), "vhost response header added");
    CHECK(!head_has(&r, "x-hop", NULL), "response Connection-nominated header removed");
    CHECK(!head_has(&r, "keep-alive", NULL), "response hop-by-hop removed");
    free(r.body);
    last_seen(seen, sizeof seen);
    size_t n = strlen(seen);
    CHECK(strncmp(seen, "GET /hello/b?x=1&y=%41 HTTP/1.1\r\n", 33) == 0, "normalised path + original query");
    char v[256];
    CHECK(hdr_get(seen, n, "x-forwarded-for", v, sizeof v) && strcmp(v, "127.0.0.1") == 0,
          "nominated XFF dropped, ours added: %s", v);
    CHECK(hdr_get(seen, n, "x-forwarded-proto", v, sizeof v) && strcmp(v, "http") == 0, "XFP set");
    CHECK(hdr_get(seen, n, "x-request-id", v, sizeof v) && strlen(v) == 36 && v[14] == '4', "request id: %s", v);
    CHECK(!hdr_get(seen, n, "x-drop", v, sizeof v), "Connection-nominated header removed");
    CHECK(!hdr_get(seen, n, "connection", v, sizeof v), "Connection removed");
    CHECK(!hdr_get(seen, n, "keep-alive", v, sizeof v) && !hdr_get(seen, n, "te", v, sizeof v),
          "hop-by-hop removed");
    CHECK(!hdr_get(seen, n, "upgrade", v, sizeof v) && !hdr_get(seen, n, "http2-settings", v, sizeof v),
          "h2c upgrade never forwarded");
    CHECK(hdr_get(seen, n, "x-added", v, sizeof v) && strcmp(v, "1") == 0, "request header added");
    CHECK(hdr_get(seen, n, "x-replaced", v, sizeof v) && strcmp(v, "new") == 0, "append=false replaces");
    CHECK(!hdr_get(seen, n, "x-remove-me", v, sizeof v), "request header removed");
    CHECK(hdr_get(seen, n, "host", v, sizeof v) && strcmp(v, "svc.test") == 0, "Host forwarded");
    CHECK(hdr_get(seen, n, "user-agent", v, sizeof v) && strcmp(v, "t") == 0, "other headers kept");

    CHECK_INT(EXCH("GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Request-Id: abc\r\n\r\n", &r), 200,
              "XFF append");
    free(r.body);
    last_seen(seen, sizeof seen);
    n = strlen(seen);
    CHECK(hdr_get(seen, n, "x-forwarded-for", v, sizeof v) && strcmp(v, "1.2.3.4, 127.0.0.1") == 0, "XFF: %s", v);
    CHECK(hdr_get(seen, n, "x-request-id", v, sizeof v) && strcmp(v, "abc") == 0, "client request id kept");
}

static void test_keepalive_pipelining(void)
{
    rbuf_t c = { .fd = cli_connect() };
    resp_t r;
    int conns0 = count_of(&be_conns);
    for (int i = 0; i < 5; i++) {
        const char *q = "GET /ka HTTP/1.1\r\nHost: a\r\n\r\n";
        send_all(c.fd, q, strlen(q));
        CHECK_INT(read_resp(&c, &r, false), 200, "keep-alive request %d", i);
        free(r.body);
    }
    CHECK(count_of(&be_conns) - conns0 <= 2, "upstream connections reused (%d new)", count_of(&be_conns) - conns0);
    const char *pipe = "GET /direct HTTP/1.1\r\nHost: direct.test\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /echo-len HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /direct HTTP/1.1\r\n"
                       "Host: direct.test\r\nConnection: close\r\n\r\n";
    send_all(c.fd, pipe, strlen(pipe));
    CHECK_INT(read_resp(&c, &r, false), 200, "pipelined 1");
    CHECK_STRN(r.body, r.body_len, "hello direct", "pipelined 1 body");
    free(r.body);
    CHECK_INT(read_resp(&c, &r, false), 200, "pipelined 2");
    CHECK_STRN(r.body, r.body_len, "ok", "pipelined 2 body");
    free(r.body);
    CHECK_INT(read_resp(&c, &r, false), 200, "pipelined 3");
    CHECK_STRN(r.body, r.body_len, "5", "pipelined 3 body");
    free(r.body);
    CHECK_INT(read_resp(&c, &r, false), 200, "pipelined 4");
    CHECK(head_has(&r, "connection", "close"), "Connection: close answered");
    free(r.body);
    CHECK(!rb_fill(&c), "closed after Connection: close");
    close(c.fd);
    free(c.b);
}

static void test_bodies(void)
{
    resp_t r;
    CHECK_INT(EXCH("GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n", &r), 200, "chunked response");
    CHECK(head_has(&r, "transfer-encoding", "chunked"), "chunked passthrough");
    CHECK_STRN(r.body, r.body_len, "hello world", "chunked payload");
    free(r.body);
    CHECK_INT(EXCH("GET /chunked HTTP/1.0\r\nHost: a\r\n\r\n", &r), 200, "chunked to HTTP/1.0");
    CHECK(!head_has(&r, "transfer-encoding", NULL), "no TE for HTTP/1.0");
    CHECK_STRN(r.body, r.body_len, "hello world", "de-chunked, close-delimited");
    free(r.body);
    rbuf_t e = { .fd = cli_connect() };
    const char *eq = "GET /eof HTTP/1.1\r\nHost: a\r\n\r\n";
    send_all(e.fd, eq, strlen(eq));
    CHECK_INT(read_resp(&e, &r, false), 200, "close-delimited upstream body");
    CHECK(head_has(&r, "transfer-encoding", "chunked"), "re-chunked for an HTTP/1.1 client");
    CHECK_STRN(r.body, r.body_len, "until the end", "re-chunked payload");
    free(r.body);
    send_all(e.fd, eq, strlen(eq));
    CHECK_INT(read_resp(&e, &r, false), 200, "client connection kept after a close-delimited upstream body");
    free(r.body);
    close(e.fd);
    free(e.b);
    CHECK_INT(EXCH("GET /eof HTTP/1.0\r\n\r\n", &r), 200, "close-delimited to HTTP/1.0");
    CHECK(!head_has(&r, "transfer-encoding", NULL), "no chunking for HTTP/1.0");
    CHECK_STRN(r.body, r.body_len, "until the end", "close-delimited payload");
    free(r.body);
    const char *up = "POST /echo-len HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer-A: 1\r\n\r\n";
    CHECK_INT(EXCH(up, &r), 200, "chunked upload");
    CHECK_STRN(r.body, r.body_len, "7", "chunked payload reached the backend");
    free(r.body);
    CHECK_INT(EXCH("POST /echo-len HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", &r), 400,
              "bad chunked request body -> 400");
    free(r.body);

    /* 3 MiB upload with Content-Length through the 64 KiB buffer */
    size_t n = 3u << 20;
    char *big = malloc(n + 128);
    int hl = snprintf(big, 128, "POST /echo-len HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n", n);
    memset(big + hl, 'x', n);
    CHECK_INT(exchange(big, (size_t)hl + n, &r), 200, "3 MiB upload");
    CHECK_STRN(r.body, r.body_len, "3145728", "whole upload reached the backend");
    free(r.body);
    free(big);

    CHECK_INT(EXCH("GET /big HTTP/1.1\r\nHost: a\r\n\r\n", &r), 200, "4 MiB download");
    bool okb = r.body_len == (4l << 20);
    for (long i = 0; okb && i < r.body_len; i += 4097)
        okb = r.body[i] == (char)('a' + (i % 65536) % 26);
    CHECK(okb, "download intact (%ld bytes)", r.body_len);
    free(r.body);

    /* Expect: 100-continue */
    rbuf_t c = { .fd = cli_connect() };
    const char *h = "POST /echo-len HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
    send_all(c.fd, h, strlen(h));
    CHECK_INT(read_resp(&c, &r, false), 100, "100 Continue first");
    free(r.body);
    send_all(c.fd, "abcd", 4);
    CHECK_INT(read_resp(&c, &r, false), 200, "then the response");
    CHECK_STRN(r.body, r.body_len, "4", "body after 100-continue");
    free(r.body);
    close(c.fd);
    free(c.b);
    char seen[4096];
    last_seen(seen, sizeof seen);
    char v[64];
    CHECK(!hdr_get(seen, strlen(seen), "expect", v, sizeof v), "Expect not forwarded");

    CHECK_INT(EXCH("HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", &r), 200, "proxied HEAD");
    free(r.body);
}

static void test_errors(void)
{
    resp_t r;
    CHECK_INT(EXCH("GET /deadend HTTP/1.1\r\nHost: a\r\n\r\n", &r), 503, "closed port -> 503");
    CHECK(r.body_len > 0 && strstr(r.body, "upstream connect error") != NULL, "UF text: %s", r.body);
    free(r.body);
    CHECK_INT(EXCH("GET /nohost HTTP/1.1\r\nHost: a\r\n\r\n", &r), 503, "no endpoints -> 503");
    CHECK(r.body && strcmp(r.body, "no healthy upstream") == 0, "UH text");
    free(r.body);
    CHECK_INT(EXCH("GET /missing HTTP/1.1\r\nHost: a\r\n\r\n", &r), 503, "missing cluster -> 503");
    free(r.body);
    CHECK_INT(EXCH("GET /silent HTTP/1.1\r\nHost: a\r\n\r\n", &r), 504, "silent backend -> 504");
    CHECK(r.body && strcmp(r.body, "upstream request timeout") == 0, "UT text");
    free(r.body);
    CHECK_INT(EXCH("GET /bad HTTP/1.1\r\nHost: a\r\n\r\n", &r), 502, "malformed response -> 502");
    free(r.body);
    CHECK_INT(EXCH("GET /close HTTP/1.1\r\nHost: a\r\n\r\n", &r), 503, "reset before headers -> 503");
    free(r.body);

    /* the body completes while a retry waits for its backoff: the retry must still run */
    rbuf_t c = { .fd = cli_connect() };
    const char *h = "POST /deadretry HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345";
    send_all(c.fd, h, strlen(h));
    struct timespec ts = { 0, 50 * 1000000 };
    nanosleep(&ts, NULL);
    send_all(c.fd, "67890", 5);
    CHECK_INT(read_resp(&c, &r, false), 503, "retries of a connect failure end in 503, not a timeout");
    CHECK(r.body && strstr(r.body, "upstream connect error") != NULL, "UF text after retries");
    free(r.body);
    close(c.fd);
    free(c.b);
}

static void test_retries(void)
{
    resp_t r;
    pthread_mutex_lock(&be_mu);
    be_fail_left = 2;
    int before = be_count;
    pthread_mutex_unlock(&be_mu);
    CHECK_INT(EXCH("GET /retry HTTP/1.1\r\nHost: a\r\n\r\n", &r), 200, "503 twice then 200 with 3 retries");
    CHECK_INT(count_of(&be_count) - before, 3, "three attempts reached the backend");
    free(r.body);
    pthread_mutex_lock(&be_mu);
    be_fail_left = 10;
    before = be_count;
    pthread_mutex_unlock(&be_mu);
    CHECK_INT(EXCH("POST /retry HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", &r), 503,
              "retries exhausted: the last 503 is forwarded");
    CHECK_STRN(r.body, r.body_len, "fail", "upstream body");
    CHECK_INT(count_of(&be_count) - before, 4, "1 + 3 retries (body replayed)");
    free(r.body);
    pthread_mutex_lock(&be_mu);
    be_fail_left = 0;
    pthread_mutex_unlock(&be_mu);
}

static void test_reload_and_metrics(void)
{
    resp_t r;
    rv_snapshot_t *s2 = build_snap(2, "second", true);
    rv_dataplane_publish(s2);
    rv_snapshot_release(s2);
    CHECK(rv_dataplane_wait_adopted(5000), "workers adopted the new snapshot");
    CHECK_INT(EXCH("GET /direct HTTP/1.1\r\nHost: direct.test\r\n\r\n", &r), 200, "served after reload");
    CHECK_STRN(r.body, r.body_len, "second", "new snapshot's answer");
    free(r.body);
    rbuf_t c2 = { .fd = cli_connect_port(px2_port) };
    CHECK(c2.fd >= 0, "new listener open after the reload");
    const char *q = "GET /any HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(c2.fd, q, strlen(q));
    CHECK_INT(read_resp(&c2, &r, false), 200, "new listener serves its routes");
    CHECK_STRN(r.body, r.body_len, "listener two", "second listener's direct response");
    free(r.body);
    /* back to one listener: the second closes; its open connection drains */
    rv_snapshot_t *s3 = build_snap(3, "third", false);
    rv_dataplane_publish(s3);
    rv_snapshot_release(s3);
    CHECK(rv_dataplane_wait_adopted(5000), "workers adopted the third snapshot");
    int fd2 = cli_connect_port(px2_port);
    CHECK(fd2 < 0, "removed listener closed");
    if (fd2 >= 0)
        close(fd2);
    send_all(c2.fd, q, strlen(q));
    int st2 = read_resp(&c2, &r, false);
    CHECK(st2 == 404 || st2 == -1, "a connection of a removed listener drains (%d)", st2);
    free(r.body);
    close(c2.fd);
    free(c2.b);
    CHECK_INT(EXCH("GET /direct HTTP/1.1\r\nHost: direct.test\r\n\r\n", &r), 200, "first listener kept");
    CHECK_STRN(r.body, r.body_len, "third", "third snapshot's answer");
    free(r.body);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK_INT(rv_stats_write_prometheus(f), 0, "metrics written");
    fclose(f);
    CHECK(strstr(text, "# TYPE rivet_requests_total counter") != NULL, "requests family");
    CHECK(strstr(text, "rivet_requests_total{virtual_service=\"default.main\",route=\"route/\","
                       "upstream=\"default.backend\",code_class=\"2xx\"}") != NULL,
          "labelled series");
    CHECK(strstr(text, "rivet_request_duration_seconds_bucket{") != NULL, "histogram");
    CHECK(strstr(text, "rivet_upstream_connect_failures_total{upstream=\"default.dead\"} ") != NULL,
          "connect failures");
    CHECK(strstr(text, "rivet_upstream_retries_total{upstream=\"default.backend\"} ") != NULL, "retries");
    CHECK(strstr(text, "rivet_downstream_connections_total ") != NULL, "connections total");
    free(text);
    CHECK(rv_dataplane_active_connections() >= 0, "active connections readable");
}

/* An endpoint set of snap (built by hand, as rv_endpoint_set_build would): clusters 1
 * ("dead") and 2 ("empty") get the live backend when live is true, else their snapshot
 * endpoints. */
static rv_endpoint_set_t *make_set(rv_snapshot_t *snap, bool live, uint64_t version)
{
    rv_endpoint_set_t *es = calloc(1, sizeof(*es));
    rv_arena_init(&es->arena, 0);
    atomic_store(&es->refs, 1);
    rv_snapshot_ref(snap);
    es->snap = snap;
    es->version = version;
    es->nclusters = snap->nclusters;
    es->clusters = RV_ARENA_NEWN(&es->arena, rv_cluster_t, snap->nclusters);
    memcpy(es->clusters, snap->clusters, snap->nclusters * sizeof(rv_cluster_t));
    if (live)
        for (uint32_t i = 1; i < 3; i++) {
            rv_cluster_t *c = &es->clusters[i];
            c->eps = RV_ARENA_NEWN(&es->arena, rv_endpoint_t, 1);
            c->eps[0] = snap->clusters[0].eps[0];
            c->neps = 1;
            c->total_weight = 1;
        }
    for (uint32_t i = 0; i < es->nclusters; i++)
        es->nendpoints += es->clusters[i].neps;
    return es;
}

/* Publishing an endpoint set moves traffic without a new snapshot (route tables kept). */
static void test_endpoint_sets(void)
{
    resp_t r;
    rv_snapshot_t *s4 = build_snap(4, "fourth", false);
    rv_dataplane_publish(s4);
    CHECK(rv_dataplane_wait_adopted(5000), "workers adopted snapshot 4");
    CHECK_INT(EXCH("GET /nohost HTTP/1.1\r\nHost: a\r\n\r\n", &r), 503, "empty cluster: 503 before the set");
    free(r.body);
    const rv_router_index_t *idx_before = s4->listeners[0].index;

    rv_endpoint_set_t *a = make_set(s4, true, 2);
    int before = count_of(&be_count);
    CHECK_INT(rv_dataplane_publish_endpoints(a), 0, "endpoint set published");
    CHECK(rv_dataplane_wait_adopted(5000), "workers adopted the endpoint set");
    CHECK_INT(EXCH("GET /nohost HTTP/1.1\r\nHost: a\r\n\r\n", &r), 200, "the set's endpoint serves the cluster");
    free(r.body);
    CHECK_INT(EXCH("GET /deadend HTTP/1.1\r\nHost: a\r\n\r\n", &r), 200, "dead endpoint replaced by a live one");
    free(r.body);
    CHECK_INT(count_of(&be_count) - before, 2, "both requests reached the backend");
    CHECK_INT(EXCH("GET /direct HTTP/1.1\r\nHost: direct.test\r\n\r\n", &r), 200, "routes unchanged");
    CHECK_STRN(r.body, r.body_len, "fourth", "still snapshot 4's route table");
    free(r.body);
    CHECK(s4->listeners[0].index == idx_before, "router index not rebuilt");

    /* a set of another snapshot is refused */
    rv_snapshot_t *s5 = build_snap(5, "fifth", false);
    rv_endpoint_set_t *other = make_set(s5, true, 2);
    CHECK_INT(rv_dataplane_publish_endpoints(other), RV_EINVAL, "set of an unpublished snapshot refused");
    rv_endpoint_set_release(other);
    rv_snapshot_release(s5);

    /* back to the snapshot's endpoints: the cluster is empty again */
    rv_endpoint_set_t *b = make_set(s4, false, 3);
    CHECK_INT(rv_dataplane_publish_endpoints(b), 0, "second set published");
    CHECK(rv_dataplane_wait_adopted(5000), "workers adopted the second set");
    CHECK_INT(EXCH("GET /nohost HTTP/1.1\r\nHost: a\r\n\r\n", &r), 503, "endpoint removed: 503 again");
    free(r.body);
    CHECK_INT(EXCH("GET /deadend HTTP/1.1\r\nHost: a\r\n\r\n", &r), 503, "dead endpoint back");
    free(r.body);
    CHECK_INT(EXCH("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &r), 200, "static cluster unaffected");
    free(r.body);
    rv_endpoint_set_release(a);
    rv_endpoint_set_release(b);
    rv_snapshot_release(s4);
}

static void *slow_client(void *arg)
{
    resp_t *r = arg;
    EXCH("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", r);
    return NULL;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);     /* for the test's own sockets; rivet's workers block it */
    be_fd = listen_any(&be_port, true);
    int pfd = listen_any(&px_port, false);
    int dfd = listen_any(&dead_port, false);
    int p2fd = listen_any(&px2_port, false);
    close(p2fd);
    close(pfd);     /* rivet binds it */
    close(dfd);     /* nobody listens: connection refused */
    CHECK(be_fd >= 0 && px_port && dead_port, "ports");
    pthread_t bt;
    pthread_create(&bt, NULL, be_main, NULL);

    rv_snapshot_t *snap = build_snap(1, "hello direct", false);
    char err[256];
    CHECK_INT(rv_dataplane_check_listeners(snap, err, sizeof err), 0, "listener check");
    rv_dataplane_opts_t o = { .nworkers = 2, .access_log = false };
    CHECK_INT(rv_dataplane_start(&o, snap), 0, "start");
    CHECK_INT(rv_dataplane_start(&o, snap), RV_EINVAL, "second start refused");
    CHECK_INT(rv_dataplane_check_listeners(snap, err, sizeof err), 0, "our own port passes the check");
    /* a port held by someone else (no SO_REUSEPORT) fails the check, naming the listener */
    uint16_t busy;
    int bfd = listen_any(&busy, true);
    uint16_t keep = px_port;
    px_port = busy;
    rv_snapshot_t *bs = build_snap(9, "x", false);
    px_port = keep;
    CHECK_INT(rv_dataplane_check_listeners(bs, err, sizeof err), RV_EIO, "busy port reported");
    CHECK(strstr(err, "default.gw") != NULL, "error names the listener: %s", err);
    rv_snapshot_release(bs);
    close(bfd);
    rv_snapshot_release(snap);

    test_local();
    test_proxy_headers();
    test_keepalive_pipelining();
    test_bodies();
    test_errors();
    test_retries();
    test_reload_and_metrics();
    test_endpoint_sets();

    /* graceful stop: an in-flight request finishes, with Connection: close */
    resp_t sr;
    memset(&sr, 0, sizeof(sr));
    pthread_t ct;
    int seen0 = count_of(&be_count);
    pthread_create(&ct, NULL, slow_client, &sr);
    for (int i = 0; i < 10000 && count_of(&be_count) == seen0; i++) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);   /* until the backend holds the request (no timing assumption) */
    }
    rv_dataplane_stop(5000);
    pthread_join(ct, NULL);
    CHECK_INT(sr.status, 200, "in-flight request completed during stop");
    CHECK_STRN(sr.body ? sr.body : "", sr.body_len, "slow", "its body");
    CHECK(head_has(&sr, "connection", "close"), "with Connection: close");
    free(sr.body);
    int fd = cli_connect();
    CHECK(fd < 0, "listener closed after stop");
    if (fd >= 0)
        close(fd);
    be_stop = 1;
    pthread_join(bt, NULL);
    close(be_fd);
    TEST_DONE();
}
