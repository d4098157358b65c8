/*
 * test_config_build.c - config directories end to end: the store (rescans, last accepted
 * version, deletion), translation into the snapshot (listeners, delegation, options,
 * clusters), every resource's status, and the JSON dump. Uses the fixture
 * tests/unit/data/config/basic (run from the repository root) and temporary directories.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config-internal.h"
#include "core/err.h"
#include "core/regex.h"
#include "tdir.h"
#include "test.h"

/* ---- helpers ----------------------------------------------------------------------- */

typedef struct env_s {
    rv_settings_t s;
    rv_store_t *st;
    rv_snapshot_t *snap;
    int scan_rc;
} env_t;

/* Build (again) from dir: Settings on first use, then rescan and rebuild. */
static rv_snapshot_t *load(env_t *e, const char *dir)
{
    char err[1024];
    if (!e->st) {
        if (rv_settings_load(dir, NULL, &e->s, err, sizeof(err)) != 0) {
            printf("# settings: %s\n", err);
            return NULL;
        }
        e->st = rv_store_new();
    }
    rv_snapshot_release(e->snap);
    e->snap = NULL;
    e->scan_rc = rv_store_scan_dir(e->st, &e->s);
    if (e->scan_rc < 0 || rv_snapshot_build(e->st, &e->s, &e->snap) != 0)
        return NULL;
    return e->snap;
}

static void env_free(env_t *e)
{
    rv_snapshot_release(e->snap);
    rv_store_free(e->st);
    rv_settings_free(&e->s);
    memset(e, 0, sizeof(*e));
}

static const rv_status_t *status(const rv_snapshot_t *snap, const char *kind, const char *ns, const char *name)
{
    for (uint32_t i = 0; snap && i < snap->nstatuses; i++) {
        const rv_status_t *s = &snap->statuses[i];
        if (rv_str_eq(s->kind, rv_cstr(kind)) && rv_str_eq(s->ns, rv_cstr(ns)) && rv_str_eq(s->name, rv_cstr(name)))
            return s;
    }
    return NULL;
}

static int state(const rv_snapshot_t *snap, const char *kind, const char *name)
{
    const rv_status_t *s = status(snap, kind, "gloo-system", name);
    return s ? s->state : -1;
}

static bool reason_has(const rv_snapshot_t *snap, const char *kind, const char *name, const char *want)
{
    const rv_status_t *s = status(snap, kind, "gloo-system", name);
    bool ok = s && s->reason.ptr && strstr(s->reason.ptr, want);
    if (!ok)
        printf("#   %s %s reason: '%s' (wanted '%s')\n", kind, name, s ? s->reason.ptr : "(no status)", want);
    return ok;
}

static bool reason_lacks(const rv_snapshot_t *snap, const char *kind, const char *name, const char *what)
{
    const rv_status_t *s = status(snap, kind, "gloo-system", name);
    return s && s->reason.ptr && !strstr(s->reason.ptr, what);
}

static const rv_listener_cfg_t *listener(const rv_snapshot_t *snap, const char *name)
{
    for (uint32_t i = 0; snap && i < snap->nlisteners; i++)
        if (rv_str_eq(snap->listeners[i].name, rv_cstr(name)))
            return &snap->listeners[i];
    return NULL;
}

static const rv_vhost_t *vhost(const rv_listener_cfg_t *l, const char *name)
{
    for (uint32_t i = 0; l && i < l->nvhosts; i++)
        if (rv_str_eq(l->vhosts[i].name, rv_cstr(name)))
            return &l->vhosts[i];
    return NULL;
}

static const rv_cluster_t *cluster(const rv_snapshot_t *snap, uint32_t idx)
{
    return snap && idx < snap->nclusters ? &snap->clusters[idx] : NULL;
}

static bool cluster_is(const rv_snapshot_t *snap, uint32_t idx, const char *name)
{
    const rv_cluster_t *c = cluster(snap, idx);
    return c && rv_str_eq(c->name, rv_cstr(name));
}

static bool streq(rv_str_t s, const char *want)
{
    return rv_str_eq(s, rv_cstr(want));
}

/* Minimal JSON well-formedness check (objects, arrays, strings with escapes, literals). */
static const char *json_value(const char *p);

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p && *p != '"') {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i])
                        return NULL;
                p += 4;
            } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
        p++;
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *json_value(const char *p)
{
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = json_ws(p + 1);
        if (*p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                if (!(p = json_string(json_ws(p))))
                    return NULL;
                p = json_ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            if (!(p = json_value(p)))
                return NULL;
            p = json_ws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            return *p == close ? p + 1 : NULL;
        }
    }
    if (*p == '"')
        return json_string(p);
    if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4))
        return p + 4;
    if (!strncmp(p, "false", 5))
        return p + 5;
    const char *q = p;
    if (*q == '-')
        q++;
    while (*q >= '0' && *q <= '9')
        q++;
    return q > p ? q : NULL;
}

static bool json_ok(const char *s)
{
    const char *e = s ? json_value(s) : NULL;
    return e && *json_ws(e) == '\0';
}

#define GW(name, port) "metadata: {name: " name "}\nbindPort: " #port "\nhttpGateway: {}\n"
#define US(name) "metadata: {name: " name "}\nstatic: {hosts: [{addr: 127.0.0.1, port: 9000}]}\n"
#define VS(name, domains, routes) "metadata: {name: " name "}\nvirtualHost:\n  domains: " domains "\n  routes:\n" routes
#define R_UP(prefix, up) "  - matchers: [{prefix: " prefix "}]\n    routeAction: {single: {upstream: {name: " up "}}}\n"
#define R_DEL(prefix, rt) "  - matchers: [{prefix: " prefix "}]\n    delegateAction: {ref: {name: " rt "}}\n"
#define RT(name, routes) "metadata: {name: " name "}\nroutes:\n" routes

/* ---- the fixture: both forms, every supported field -------------------------------- */

static void test_fixture(void)
{
    env_t e = { 0 };
    rv_snapshot_t *snap = load(&e, "tests/unit/data/config/basic");
    CHECK(snap != NULL, "fixture: builds");
    if (!snap)
        return;
    CHECK(e.s.refresh_ms == 5000 && strstr(e.s.config_dir, "basic/config"), "fixture: Settings decide the sources");
    CHECK(snap->nstatuses == 10 && snap->nrejected == 0, "fixture: 10 statuses, none rejected");
    for (uint32_t i = 0; i < snap->nstatuses; i++) {
        const rv_status_t *s = &snap->statuses[i];
        CHECK(s->state == RV_STATE_ACCEPTED, "fixture: %s %s/%s Accepted (%s)", s->kind.ptr, s->ns.ptr, s->name.ptr,
              s->reason.ptr);
    }
    bool sorted = true;
    for (uint32_t i = 1; i < snap->nstatuses; i++) {
        const rv_status_t *a = &snap->statuses[i - 1], *b = &snap->statuses[i];
        int c = strcmp(a->kind.ptr, b->kind.ptr);
        if (!c)
            c = strcmp(a->ns.ptr, b->ns.ptr);
        if (!c)
            c = strcmp(a->name.ptr, b->name.ptr);
        sorted &= c < 0;
    }
    CHECK(sorted, "fixture: statuses sorted by kind, namespace, name");
    CHECK(status(snap, "Settings", "gloo-system", "default") != NULL, "fixture: Settings has a status");

    CHECK(snap->nlisteners == 2 && snap->nclusters == 2 && snap->nroutes == 12, "fixture: 2 listeners, 2 clusters, 12 routes");
    const rv_listener_cfg_t *l = listener(snap, "gloo-system.gw");
    CHECK(l && l->port == 18080 && streq(l->bind_address, "127.0.0.1") && l->addr.ss_family == AF_INET &&
              ntohs(((const struct sockaddr_in *)&l->addr)->sin_port) == 18080,
          "fixture: listener from the stored-form Gateway");
    CHECK(l && l->nvhosts == 2 && streq(l->vhosts[0].name, "gloo-system.main") &&
              streq(l->vhosts[1].name, "gloo-system.public"),
          "fixture: httpGateway {} serves every VirtualService, sorted");
    const rv_listener_cfg_t *ls = listener(snap, "gloo-system.gw-sel");
    CHECK(ls && ls->nvhosts == 1 && streq(ls->vhosts[0].name, "gloo-system.public") && ls->addr.ss_family == AF_INET6,
          "fixture: virtualServiceSelector picks by label; bindAddress defaults to ::");

    const rv_vhost_t *vh = vhost(l, "gloo-system.main");
    CHECK(vh && vh->ndomains == 2 && streq(vh->domains[1], "*.main.example.com"), "fixture: domains lower-cased");
    CHECK(vh && vh->headers.nresp_add == 1 && streq(vh->headers.resp_add[0].name, "x-served-by") &&
              vh->headers.nreq_remove == 1 && streq(vh->headers.req_remove[0], "x-debug"),
          "fixture: virtual host headerManipulation");
    CHECK(vh && vh->nroutes == 10, "fixture: 10 routes flattened in main (got %u)", vh ? vh->nroutes : 0);
    if (!vh || vh->nroutes != 10) {
        env_free(&e);
        return;
    }
    const rv_route_t *r = vh->routes;
    CHECK(r[0].match.path_kind == RV_PATH_EXACT && streq(r[0].match.path, "/health") && r[0].action.kind == RV_ACTION_DIRECT &&
              r[0].action.status == 200 && streq(r[0].action.body, "ok \"fine\"\n"),
          "fixture: exact matcher, directResponseAction");
    CHECK(r[0].vhost_headers == &vh->headers, "fixture: vhost_headers points at the listener's vhost");
    CHECK(r[0].opts.timeout_ms == 15000 && r[0].opts.retries.on == RV_RETRY_5XX && r[0].opts.retries.num_retries == 2,
          "fixture: default timeout 15 s, virtual host retries apply");
    CHECK(streq(r[0].name, "gloo-system.main.0") && streq(r[0].vs, "gloo-system.main") && r[0].index == 0,
          "fixture: route names and index");
    const rv_redirect_t *rd = &r[1].action.redirect;
    CHECK(r[1].action.kind == RV_ACTION_REDIRECT && streq(rd->host, "new.example.com") && rd->path_kind == RV_REDIRECT_PREFIX &&
              streq(rd->path, "/new") && rd->code == 308 && rd->https && !rd->strip_query,
          "fixture: redirectAction");
    const rv_matcher_t *m = &r[2].match;
    CHECK(streq(r[2].name, "api") && streq(r[3].name, "api"), "fixture: route.name kept for every matcher");
    CHECK(m->path_kind == RV_PATH_PREFIX && streq(m->path, "/api") && m->nheaders == 2 && m->nquery == 1 && m->nmethods == 2,
          "fixture: prefix matcher with headers, query, methods");
    CHECK(m->headers[0].is_regex && m->headers[0].re && rv_regex_full_match(m->headers[0].re, RV_STR("v2")) &&
              !rv_regex_full_match(m->headers[0].re, RV_STR("v3")),
          "fixture: header regex compiled, whole-value match");
    CHECK(!m->headers[1].has_value && streq(m->headers[1].name, "x-beta"), "fixture: header presence match");
    CHECK(streq(m->query[0].name, "debug") && streq(m->query[0].value, "1") && streq(m->methods[0], "GET"),
          "fixture: query parameter and methods");
    CHECK(r[3].match.path_kind == RV_PATH_REGEX && r[3].match.path_re && !r[3].match.case_sensitive &&
              rv_regex_full_match(r[3].match.path_re, RV_STR("/V2/API")) &&
              !rv_regex_full_match(r[3].match.path_re, RV_STR("/v2/api/x")),
          "fixture: second matcher is a second route (regex, case-insensitive)");
    CHECK(r[2].opts.timeout_ms == 3000 && streq(r[2].opts.host_rewrite, "api.internal") && r[2].opts.regex_rewrite &&
              streq(r[2].opts.regex_substitution, "/api"),
          "fixture: timeout, hostRewrite, regexRewrite");
    CHECK(r[2].headers.nreq_add == 1 && !r[2].headers.req_add[0].append, "fixture: route headerManipulation");
    CHECK(r[2].action.ndests == 1 && cluster_is(snap, r[2].action.dests[0].cluster, "apps.api"),
          "fixture: single destination in another namespace");
    CHECK(r[4].action.ndests == 2 && r[4].action.total_weight == 10 && r[4].action.dests[0].weight == 9 &&
              cluster_is(snap, r[4].action.dests[0].cluster, "gloo-system.web"),
          "fixture: upstreamGroup becomes weighted destinations");
    CHECK(r[5].action.ndests == 2 && r[5].action.total_weight == 4 && r[5].action.dests[0].headers.nreq_add == 1,
          "fixture: multi destinations, weight 0 left out, per-destination headers");
    CHECK(streq(r[6].match.path, "/shop/a") && streq(r[7].match.path, "/shop") && streq(r[8].match.path, "/shop/b"),
          "fixture: selector delegation ordered by RouteTable weight; matcher-less child inherits the prefix");
    CHECK(r[6].opts.timeout_ms == 1000 && r[7].opts.timeout_ms == 7000 && r[8].opts.timeout_ms == 7000,
          "fixture: child timeout overrides, parent timeout inherited");
    CHECK(r[6].opts.has_prefix_rewrite && streq(r[6].opts.prefix_rewrite, "/store") &&
              r[8].opts.retries.on == RV_RETRY_CONNECT_FAILURE && r[8].opts.retries.num_retries == 5 &&
              r[8].opts.retries.per_try_timeout_ms == 2000 && r[8].opts.retries.backoff_base_ms == 50 &&
              r[8].opts.retries.backoff_max_ms == 500,
          "fixture: parent prefixRewrite and retries (backoff max = 10 x base) inherited");
    CHECK(cluster_is(snap, r[8].action.dests[0].cluster, "apps.api"),
          "fixture: a RouteTable's upstream namespace defaults to the table's");
    CHECK(r[9].match.path_kind == RV_PATH_PREFIX && streq(r[9].match.path, "/") && r[9].opts.timeout_ms == 0 &&
              r[9].opts.auto_host_rewrite,
          "fixture: no matchers = prefix /, timeout 0s = none, autoHostRewrite");
    const rv_vhost_t *pub = vhost(ls, "gloo-system.public");
    CHECK(pub && pub->nroutes == 1 && pub->routes[0].index == 11 && !pub->routes[0].vhost_headers,
          "fixture: route index runs across listeners");

    const rv_cluster_t *c = &snap->clusters[0];
    CHECK(streq(c->name, "apps.api") && c->lb == RV_LB_RANDOM && c->neps == 1 && c->index == 0, "fixture: cluster apps.api");
    CHECK(c->neps == 1 && streq(c->eps[0].authority, "10.1.2.3") && streq(c->eps[0].hostname, "10.1.2.3"),
          "fixture: authority drops port 80");
    c = &snap->clusters[1];
    CHECK(streq(c->name, "gloo-system.web") && c->lb == RV_LB_LEAST_REQUEST && c->choice_count == 3 && c->neps == 2 &&
              c->total_weight == 3,
          "fixture: cluster with weights and least request");
    CHECK(c->neps == 2 && streq(c->eps[0].authority, "127.0.0.1:9001") && streq(c->eps[1].authority, "[::1]:9002") &&
              c->eps[1].addr.ss_family == AF_INET6 && c->eps[0].weight == 2,
          "fixture: IPv4 and IPv6 endpoints");

    CHECK(c->cb.on && c->cb.max_connections == RV_CB_MAX_CONNECTIONS && c->cb.max_pending == RV_CB_MAX_PENDING &&
              c->cb.max_requests == RV_CB_MAX_REQUESTS && c->cb.max_retries == RV_CB_MAX_RETRIES && !c->cbs,
          "fixture: no circuitBreakers = Envoy's defaults (counts attached later, by rv_stats_assign)");
    CHECK(!c->conn.connect_timeout_ms && !c->conn.idle_timeout_ms && !c->conn.max_requests && !c->conn.keepalive &&
              !c->conn.pool_key,
          "fixture: no connectionConfig = all-default connection settings (shared pool key)");
    CHECK(json_ok(snap->config_json) && snap->config_json_len == strlen(snap->config_json), "fixture: JSON dump is valid");
    CHECK(strstr(snap->config_json, "\"body\":\"ok \\\"fine\\\"\\n\"") != NULL, "fixture: JSON escapes quotes and newlines");
    CHECK(strstr(snap->config_json, "\"cluster\":\"apps.api\"") && strstr(snap->config_json, "\"address\":\"[::1]:9002\""),
          "fixture: JSON names clusters and endpoints");
    rv_snapshot_ref(snap);
    rv_snapshot_release(snap);
    CHECK(atomic_load(&snap->refs) == 1, "fixture: ref/release count");
    CHECK(snap->free_hook != NULL, "fixture: free_hook set (regexes)");
    env_free(&e);
}

/* ---- defaults, gateways, selection ------------------------------------------------- */

static void test_gateways(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "[]", R_UP("/", "up")));
    rv_snapshot_t *snap = load(&e, tdir);
    const rv_listener_cfg_t *l = listener(snap, "gloo-system.gateway-proxy");
    CHECK(snap && snap->nlisteners == 1 && l && l->port == 8080 && streq(l->bind_address, "::") &&
              l->addr.ss_family == AF_INET6,
          "default gateway: gateway-proxy on [::]:8080 when no Gateway exists");
    CHECK(l && l->nvhosts == 1 && l->vhosts[0].ndomains == 1 && streq(l->vhosts[0].domains[0], "*"),
          "default gateway: serves every VirtualService; empty domains = *");
    CHECK(snap && !status(snap, "Gateway", "gloo-system", "gateway-proxy") && snap->nstatuses == 2,
          "default gateway: no status for the implicit gateway");
    CHECK(e.scan_rc == 1 && rv_store_scan_dir(e.st, &e.s) == 0, "scan: 1 on the first scan, 0 when nothing changed");
    env_free(&e);

    tdir_new("build");
    tdir_put("gloo-system/default.yaml", "discoveryNamespace: edge\n");
    tdir_put("virtualservices/apps/vs.yaml", VS("vs", "[a.com]", "  - directResponseAction: {status: 200}\n"));
    snap = load(&e, tdir);
    CHECK(listener(snap, "edge.gateway-proxy") != NULL, "default gateway lives in the discovery namespace");
    env_free(&e);

    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("gateways/gloo-system/a.yaml", GW("a", 8081));
    tdir_put("gateways/gloo-system/b.yaml", GW("b", 8081));
    tdir_put("gateways/gloo-system/c.yaml", "metadata: {name: c}\nbindAddress: 0.0.0.0\nbindPort: 8082\n");
    tdir_put("gateways/gloo-system/d.yaml", "metadata: {name: d}\nbindAddress: 127.0.0.1\nbindPort: 8082\n");
    tdir_put("gateways/gloo-system/e.yaml", "metadata: {name: e}\nbindAddress: 127.0.0.1\nbindPort: 8083\n");
    tdir_put("gateways/gloo-system/f.yaml", "metadata: {name: f}\nbindAddress: 127.0.0.2\nbindPort: 8083\n");
    tdir_put("gateways/gloo-system/g.yaml", "metadata: {name: g}\nbindPort: 8084\nhttpGateway: {virtualServices: [{name: "
                                       "v1}, {name: nope}, {name: v1}]}\n");
    tdir_put("gateways/gloo-system/h.yaml", "metadata: {name: h}\nbindPort: 8085\nhttpGateway: {virtualServiceNamespaces: "
                                       "[other]}\n");
    tdir_put("gateways/gloo-system/i.yaml", "metadata: {name: i}\nbindPort: 8086\nhttpGateway: {virtualServiceNamespaces: "
                                       "['*'], virtualServiceSelector: {tier: gold}}\n");
    tdir_put("virtualservices/gloo-system/v1.yaml", VS("v1", "[v1.com]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/v2.yaml", "metadata: {name: v2, labels: {tier: gold}}\nvirtualHost: {domains: "
                                               "[v2.com], routes: [{directResponseAction: {status: 204}}]}\n");
    tdir_put("virtualservices/other/v3.yaml", VS("v3", "[v3.com]", R_UP("/", "up")));
    snap = load(&e, tdir);
    CHECK(snap && state(snap, "Gateway", "a") == RV_STATE_ACCEPTED && state(snap, "Gateway", "b") == RV_STATE_REJECTED,
          "gateways: the later of two on one address and port is rejected");
    CHECK(reason_has(snap, "Gateway", "b", "bindAddress :: port 8081 conflicts with Gateway gloo-system/a"),
          "gateways: the conflict is named");
    CHECK(state(snap, "Gateway", "d") == RV_STATE_REJECTED && reason_has(snap, "Gateway", "d", "conflicts with Gateway gloo-system/c"),
          "gateways: 0.0.0.0 and 127.0.0.1 on one port conflict");
    CHECK(state(snap, "Gateway", "f") == RV_STATE_ACCEPTED && listener(snap, "gloo-system.f"),
          "gateways: two specific addresses share a port");
    CHECK(!listener(snap, "gloo-system.b") && listener(snap, "gloo-system.a"), "gateways: rejected gateway has no listener");
    const rv_listener_cfg_t *g = listener(snap, "gloo-system.g");
    CHECK(g && g->nvhosts == 1 && streq(g->vhosts[0].name, "gloo-system.v1"), "gateways: virtualServices refs (deduplicated)");
    CHECK(state(snap, "Gateway", "g") == RV_STATE_WARNING &&
              reason_has(snap, "Gateway", "g", "httpGateway.virtualServices[1]: VirtualService gloo-system/nope not found"),
          "gateways: missing VirtualService ref is a Warning");
    const rv_listener_cfg_t *h = listener(snap, "gloo-system.h");
    CHECK(h && h->nvhosts == 1 && streq(h->vhosts[0].name, "other.v3"), "gateways: virtualServiceNamespaces restricts");
    const rv_listener_cfg_t *i = listener(snap, "gloo-system.i");
    CHECK(i && i->nvhosts == 1 && streq(i->vhosts[0].name, "gloo-system.v2"), "gateways: selector by labels, '*' namespaces");
    const rv_listener_cfg_t *a = listener(snap, "gloo-system.a");
    CHECK(a && a->nvhosts == 3, "gateways: httpGateway {} serves all namespaces");
    CHECK(snap && snap->nrejected == 2, "gateways: nrejected counts (%u)", snap ? snap->nrejected : 0);
    env_free(&e);
}

static void test_domains(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("gateways/gloo-system/gw.yaml", GW("gw", 8080));
    tdir_put("gateways/gloo-system/gw2.yaml", "metadata: {name: gw2}\nbindPort: 8090\nhttpGateway: {virtualServices: "
                                         "[{name: a}]}\n");
    tdir_put("virtualservices/gloo-system/a.yaml", VS("a", "[x.com, shared.com]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/b.yaml", VS("b", "[Shared.com]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/c.yaml", VS("c", "[c.com]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/d.yaml", VS("d", "[]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/e.yaml", VS("e", "['*']", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/f.yaml", "metadata: {name: f}\nvirtualHost: {domains: [f.com]}\n");
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "a") == RV_STATE_REJECTED && state(snap, "VirtualService", "b") == RV_STATE_REJECTED,
          "domains: both VirtualServices claiming one domain are rejected");
    CHECK(reason_has(snap, "VirtualService", "a", "domain 'shared.com' is also claimed by VirtualService gloo-system/b"),
          "domains: a names the domain and b");
    CHECK(reason_has(snap, "VirtualService", "b", "domain 'shared.com' is also claimed by VirtualService gloo-system/a on Gateway gloo-system/gw"),
          "domains: b names the domain, a and the gateway");
    CHECK(state(snap, "VirtualService", "d") == RV_STATE_REJECTED && reason_has(snap, "VirtualService", "e", "domain '*'"),
          "domains: no domains means '*', which conflicts with '*'");
    const rv_listener_cfg_t *l = listener(snap, "gloo-system.gw");
    CHECK(l && l->nvhosts == 1 && streq(l->vhosts[0].name, "gloo-system.c"), "domains: conflicting ones left out, c kept");
    const rv_listener_cfg_t *l2 = listener(snap, "gloo-system.gw2");
    CHECK(l2 && l2->nvhosts == 1 && streq(l2->vhosts[0].name, "gloo-system.a"),
          "domains: a still serves on the gateway where it does not conflict");
    CHECK(state(snap, "VirtualService", "f") == RV_STATE_WARNING && reason_has(snap, "VirtualService", "f", "no routes"),
          "domains: a VirtualService without routes is ignored with a Warning");
    env_free(&e);
}

/* ---- references and delegation ------------------------------------------------------ */

static void test_refs(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("upstreams/gloo-system/bad.yaml", "metadata: {name: bad}\nkube: {serviceName: x}\n");
    tdir_put("upstreams/gloo-system/dns.yaml", "metadata: {name: dns}\nstatic: {hosts: [{addr: localhost, port: 80}, {addr: "
                                          "no-such-host.invalid, port: 81}]}\n");
    tdir_put("upstreamgroups/gloo-system/ug.yaml", "metadata: {name: ug}\ndestinations:\n- {destination: {upstream: {name: "
                                              "up}}, weight: 1}\n- {destination: {upstream: {name: gone}}, weight: 1}\n");
    tdir_put("virtualservices/gloo-system/vs.yaml",
        VS("vs", "['*']", R_UP("/ok", "up") R_UP("/missing", "missing") R_UP("/bad", "bad")
                              "  - matchers: [{prefix: /ug}]\n    routeAction: {upstreamGroup: {name: ug}}\n"
                              "  - matchers: [{prefix: /noug}]\n    routeAction: {upstreamGroup: {name: noug}}\n"
                              "  - matchers: [{prefix: /dns}]\n    routeAction: {single: {upstream: {name: dns}}}\n"
                              "    options: {autoHostRewrite: true}\n"));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "vs") == RV_STATE_WARNING, "refs: dangling refs make a Warning");
    CHECK(reason_has(snap, "VirtualService", "vs", "route virtualHost.routes[1]: upstream gloo-system/missing not found"),
          "refs: missing upstream named with the route");
    CHECK(reason_has(snap, "VirtualService", "vs", "route virtualHost.routes[2]: upstream gloo-system/bad is rejected"),
          "refs: rejected upstream named as such");
    CHECK(reason_has(snap, "VirtualService", "vs", "route virtualHost.routes[4]: upstream group gloo-system/noug not found"),
          "refs: missing upstream group");
    CHECK(state(snap, "UpstreamGroup", "ug") == RV_STATE_WARNING &&
              reason_has(snap, "UpstreamGroup", "ug", "destinations[1]: upstream gloo-system/gone not found"),
          "refs: upstream group with a missing upstream is a Warning");
    const rv_listener_cfg_t *l = snap ? &snap->listeners[0] : NULL;
    const rv_route_t *r = l && l->nvhosts ? l->vhosts[0].routes : NULL;
    CHECK(r && l->vhosts[0].nroutes == 6, "refs: every route is still in the snapshot");
    if (r && l->vhosts[0].nroutes == 6) {
        CHECK(cluster_is(snap, r[0].action.dests[0].cluster, "gloo-system.up"), "refs: good route has its cluster");
        CHECK(r[1].action.ndests == 1 && r[1].action.dests[0].cluster == RV_NO_CLUSTER, "refs: missing -> RV_NO_CLUSTER");
        CHECK(r[2].action.dests[0].cluster == RV_NO_CLUSTER, "refs: rejected upstream -> RV_NO_CLUSTER");
        CHECK(r[3].action.ndests == 2 && r[3].action.dests[1].cluster == RV_NO_CLUSTER &&
                  cluster_is(snap, r[3].action.dests[0].cluster, "gloo-system.up"),
              "refs: upstream group with one missing member");
        CHECK(r[4].action.ndests == 1 && r[4].action.dests[0].cluster == RV_NO_CLUSTER, "refs: missing group -> 503");
        const rv_cluster_t *c = cluster(snap, r[5].action.dests[0].cluster);
        CHECK(c && c->neps >= 1 && streq(c->eps[0].hostname, "localhost") && streq(c->eps[0].authority, "localhost"),
              "refs: host names resolve; authority is the name (port 80)");
    }
    CHECK(state(snap, "Upstream", "dns") == RV_STATE_WARNING &&
              reason_has(snap, "Upstream", "dns", "host name 'no-such-host.invalid' does not resolve"),
          "refs: unresolvable host name is a Warning naming it");
    CHECK(state(snap, "Upstream", "bad") == RV_STATE_REJECTED, "refs: unsupported upstream type rejected");
    env_free(&e);
}

static void test_delegation(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("gateways/gloo-system/gw.yaml", GW("gw", 8080));
    /* child outside the parent prefix; cycle a -> b -> a; self loop; missing table; nested ok */
    tdir_put("virtualservices/gloo-system/vs.yaml",
        VS("vs", "['*']", R_DEL("/out", "outside") R_DEL("/cy", "cyc-a") R_DEL("/self", "self") R_DEL("/none", "nothere")
                              R_DEL("/n", "nest1") R_UP("/tail", "up")));
    tdir_put("routetables/gloo-system/outside.yaml", RT("outside", R_UP("/out/a", "up") R_UP("/elsewhere", "up")));
    tdir_put("routetables/gloo-system/cyc-a.yaml", RT("cyc-a", R_UP("/cy/a", "up") R_DEL("/cy/b", "cyc-b")));
    tdir_put("routetables/gloo-system/cyc-b.yaml", RT("cyc-b", R_UP("/cy/b/1", "up") R_DEL("/cy/b/2", "cyc-a")));
    tdir_put("routetables/gloo-system/self.yaml", RT("self", R_DEL("/self/x", "self")));
    tdir_put("routetables/gloo-system/nest1.yaml", RT("nest1", R_DEL("/n/2", "nest2")));
    tdir_put("routetables/gloo-system/nest2.yaml", RT("nest2", "  - matchers: [{exact: /n/2/x}]\n    directResponseAction: "
                                                          "{status: 201}\n"));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(state(snap, "RouteTable", "outside") == RV_STATE_REJECTED &&
              reason_has(snap, "RouteTable", "outside",
                         "route routes[1] matcher prefix '/elsewhere' does not start with the delegating prefix '/out'"),
          "delegation: child outside the parent prefix rejects the RouteTable, naming the route");
    CHECK(state(snap, "RouteTable", "cyc-b") == RV_STATE_REJECTED && reason_has(snap, "RouteTable", "cyc-b", "delegation cycle"),
          "delegation: the table closing a cycle is rejected");
    CHECK(state(snap, "RouteTable", "cyc-a") == RV_STATE_ACCEPTED, "delegation: the table entered first is kept");
    CHECK(state(snap, "RouteTable", "self") == RV_STATE_REJECTED, "delegation: self delegation rejected");
    CHECK(state(snap, "VirtualService", "vs") == RV_STATE_WARNING &&
              reason_has(snap, "VirtualService", "vs", "route virtualHost.routes[3]: RouteTable gloo-system/nothere not found"),
          "delegation: missing table is a Warning on the parent");
    CHECK(state(snap, "RouteTable", "nest1") == RV_STATE_ACCEPTED && state(snap, "RouteTable", "nest2") == RV_STATE_ACCEPTED,
          "delegation: nested delegation accepted");
    const rv_listener_cfg_t *l = listener(snap, "gloo-system.gw");
    const rv_vhost_t *vh = l && l->nvhosts ? &l->vhosts[0] : NULL;
    /* outside: dropped; cyc-a: /cy/a only (cyc-b dropped); self: dropped; none; nest: /n/2/x; tail */
    CHECK(vh && vh->nroutes == 3, "delegation: flattened routes (got %u)", vh ? vh->nroutes : 0);
    if (vh && vh->nroutes == 3) {
        CHECK(streq(vh->routes[0].match.path, "/cy/a") && streq(vh->routes[1].match.path, "/n/2/x") &&
                  vh->routes[1].match.path_kind == RV_PATH_EXACT && vh->routes[1].action.status == 201 &&
                  streq(vh->routes[2].match.path, "/tail"),
              "delegation: the surviving routes in order");
    }
    env_free(&e);

    /* a RouteTable reached from two parents: valid under one, rejected under the other */
    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("virtualservices/gloo-system/p1.yaml", VS("p1", "[p1.com]", R_DEL("/api", "shared")));
    tdir_put("virtualservices/gloo-system/p2.yaml", VS("p2", "[p2.com]", R_DEL("/other", "shared")));
    tdir_put("routetables/gloo-system/shared.yaml", RT("shared", R_UP("/api/x", "up")));
    tdir_put("routetables/other/sel1.yaml", "metadata: {name: sel1, labels: {a: b}}\nroutes: [{directResponseAction: {status: 200}}]\n");
    tdir_put("virtualservices/gloo-system/p3.yaml", VS("p3", "[p3.com]", "  - delegateAction: {selector: {labels: {a: b}}}\n"));
    rv_snapshot_t *s2 = load(&e, tdir);
    CHECK(state(s2, "RouteTable", "shared") == RV_STATE_REJECTED && reason_has(s2, "RouteTable", "shared", "from VirtualService gloo-system/p2"),
          "delegation: rejection names the delegating parent");
    const rv_listener_cfg_t *dl = s2 ? &s2->listeners[0] : NULL;
    const rv_vhost_t *p1 = vhost(dl, "gloo-system.p1"), *p2 = vhost(dl, "gloo-system.p2");
    CHECK(p1 && p1->nroutes == 1 && p2 && p2->nroutes == 0, "delegation: served under the parent it fits");
    CHECK(reason_has(s2, "VirtualService", "p3", "delegateAction.selector selects no RouteTable"),
          "delegation: a selector without namespaces looks in the parent's namespace only");
    env_free(&e);
}

/* ---- the store: last accepted version, deletion, place checks ---------------------- */

static void test_store(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "[a.com]", R_UP("/v1", "up")));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "vs") == RV_STATE_ACCEPTED, "store: first version accepted");

    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "[a.com]", R_UP("/v2", "up") "  - bogus: 1\n"));
    snap = load(&e, tdir);
    CHECK(e.scan_rc == 1, "store: an edit is a change");
    CHECK(state(snap, "VirtualService", "vs") == RV_STATE_REJECTED &&
              reason_has(snap, "VirtualService", "vs", "virtualHost.routes[1].bogus: unknown field") &&
              reason_has(snap, "VirtualService", "vs", "last accepted version keeps serving"),
          "store: a bad edit is rejected and says the last version keeps serving");
    const rv_listener_cfg_t *l = snap && snap->nlisteners ? &snap->listeners[0] : NULL;
    CHECK(l && l->nvhosts == 1 && l->vhosts[0].nroutes == 1 && streq(l->vhosts[0].routes[0].match.path, "/v1"),
          "store: the last accepted version is what the snapshot serves");
    CHECK(snap && snap->nrejected == 1, "store: nrejected counts the rejected edit");

    tdir_put("virtualservices/gloo-system/vs.yaml", "metadata: {name: vs\nvirtualHost: [\n");
    snap = load(&e, tdir);
    CHECK(reason_has(snap, "VirtualService", "vs", "virtualservices/gloo-system/vs.yaml:") &&
              reason_has(snap, "VirtualService", "vs", "invalid YAML"),
          "store: broken YAML names the file and line");
    l = snap && snap->nlisteners ? &snap->listeners[0] : NULL;
    CHECK(l && l->nvhosts == 1 && streq(l->vhosts[0].routes[0].match.path, "/v1"), "store: still serving v1");

    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "[a.com]", R_UP("/v3", "up")));
    snap = load(&e, tdir);
    l = snap && snap->nlisteners ? &snap->listeners[0] : NULL;
    CHECK(state(snap, "VirtualService", "vs") == RV_STATE_ACCEPTED && l && l->nvhosts == 1 &&
              streq(l->vhosts[0].routes[0].match.path, "/v3"),
          "store: a fixed edit is accepted and served");
    CHECK(rv_store_scan_dir(e.st, &e.s) == 0, "store: rescan without changes reports 0");
    char path[512];
    snprintf(path, sizeof(path), "%s/virtualservices/gloo-system/vs.yaml", tdir);
    struct timespec ts[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
    utimensat(AT_FDCWD, path, ts, 0);
    CHECK(rv_store_scan_dir(e.st, &e.s) == 0, "store: touched but identical content is no change");

    tdir_del("virtualservices/gloo-system/vs.yaml");
    snap = load(&e, tdir);
    CHECK(e.scan_rc == 1 && !status(snap, "VirtualService", "gloo-system", "vs"), "store: a deleted file removes the resource");
    l = snap && snap->nlisteners ? &snap->listeners[0] : NULL;
    CHECK(l && l->nvhosts == 0, "store: and its virtual host");

    tdir_put("virtualservices/gloo-system/new.yaml", "metadata: {name: new}\nvirtualHost: {routes: [{bad: 1}]}\n");
    snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "new") == RV_STATE_REJECTED &&
              reason_lacks(snap, "VirtualService", "new", "keeps serving") && snap->listeners[0].nvhosts == 0,
          "store: a new bad resource serves nothing");

    /* the place of a file must agree with its content */
    tdir_put("virtualservices/gloo-system/wrongname.yaml", VS("other", "[w.com]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/wrongns.yaml", "metadata: {name: wrongns, namespace: team}\nvirtualHost: {}\n");
    tdir_put("gateways/gloo-system/wrongkind.yaml", "apiVersion: gateway.solo.io/v1\nkind: VirtualService\nmetadata: {name: "
                                               "wrongkind}\nspec: {}\n");
    tdir_put("virtualservices/gloo-system/k8s.yml", "apiVersion: gateway.solo.io/v1\nkind: VirtualService\nmetadata: {name: "
                                               "k8s}\nspec: {virtualHost: {domains: [k.com], routes: [{directResponseAction: "
                                               "{status: 200}}]}}\n");
    tdir_put("virtualservices/gloo-system/dup.yaml", VS("dup", "[d1.com]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/dup.yml", VS("dup", "[d2.com]", R_UP("/", "up")));
    tdir_put("virtualservices/gloo-system/notes.txt", "ignored");
    tdir_put("virtualservices/gloo-system/.hidden.yaml", "ignored: [");
    tdir_put("proxies/gloo-system/p.yaml", "ignored: [");
    snap = load(&e, tdir);
    CHECK(reason_has(snap, "VirtualService", "wrongname", "metadata.name 'other' does not match the file name 'wrongname'"),
          "place: metadata.name must match the file");
    CHECK(reason_has(snap, "VirtualService", "wrongns", "metadata.namespace 'team' does not match the folder 'gloo-system'"),
          "place: metadata.namespace must match the folder");
    CHECK(reason_has(snap, "Gateway", "wrongkind", "'VirtualService' does not belong in gateways/"),
          "place: kind must match the folder");
    CHECK(state(snap, "VirtualService", "k8s") == RV_STATE_ACCEPTED, "place: .yml and namespace from the folder");
    const rv_status_t *d1 = status(snap, "VirtualService", "gloo-system", "dup");
    CHECK(d1 && d1->state == RV_STATE_ACCEPTED && strstr(d1->file.ptr, "dup.yaml"), "place: first of two files is used");
    bool dup_rejected = false;
    for (uint32_t i = 0; snap && i < snap->nstatuses; i++)
        if (streq(snap->statuses[i].name, "dup") && strstr(snap->statuses[i].file.ptr, "dup.yml") &&
            snap->statuses[i].state == RV_STATE_REJECTED && strstr(snap->statuses[i].reason.ptr, "already defined by"))
            dup_rejected = true;
    CHECK(dup_rejected, "place: the second file for one name is rejected");
    CHECK(!status(snap, "VirtualService", "gloo-system", ".hidden") && !status(snap, "VirtualService", "gloo-system", "notes"),
          "place: hidden and non-YAML files ignored");
    env_free(&e);

    /* watched namespaces */
    tdir_new("build");
    tdir_put("gloo-system/default.yaml", "watchNamespaces: [apps]\n");
    tdir_put("virtualservices/apps/a.yaml", VS("a", "[a.com]", "  - directResponseAction: {status: 200}\n"));
    tdir_put("virtualservices/gloo-system/b.yaml", VS("b", "[b.com]", "  - directResponseAction: {status: 200}\n"));
    tdir_put("virtualservices/ignored/c.yaml", VS("c", "[c.com]", "  - directResponseAction: {status: 200}\n"));
    snap = load(&e, tdir);
    CHECK(status(snap, "VirtualService", "apps", "a") && status(snap, "VirtualService", "gloo-system", "b") &&
              !status(snap, "VirtualService", "ignored", "c"),
          "watchNamespaces: only watched (and the discovery) namespaces are read");
    env_free(&e);

    rv_store_t *st = rv_store_new();
    CHECK(rv_store_scan_dir(st, &(rv_settings_t){ .config_dir = "/nonexistent/x" }) == RV_ENOTFOUND,
          "store: unreadable config directory is RV_ENOTFOUND");
    rv_store_free(st);
    rv_store_free(NULL);
}

static void test_json_escape(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("virtualservices/gloo-system/vs.yaml", "metadata: {name: vs}\nvirtualHost:\n  routes:\n  - directResponseAction: "
                                               "{status: 200, body: \"tab\\there \\\\ \\u0001 \\\" caf\\u00e9\"}\n");
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(snap && json_ok(snap->config_json), "json: control characters, quotes and backslashes stay valid JSON");
    CHECK(snap && strstr(snap->config_json, "tab\\there \\\\ \\u0001 \\\" caf\xc3\xa9"), "json: escapes as RFC 8259");
    CHECK(!strcmp(rv_state_name(RV_STATE_ACCEPTED), "Accepted") && !strcmp(rv_state_name(RV_STATE_REJECTED), "Rejected") &&
              !strcmp(rv_state_name(RV_STATE_WARNING), "Warning") && !strcmp(rv_state_name(RV_STATE_PENDING), "Pending"),
          "state names");
    env_free(&e);
}

static void test_more_delegation(void)
{
    env_t e = { 0 };
    char rel[128], body[512];
    tdir_new("build");
    tdir_put("upstreams/gloo-system/up.yaml", US("up"));
    tdir_put("upstreams/gloo-system/nowhere.yaml", "metadata: {name: nowhere}\nstatic: {hosts: [{addr: nowhere.invalid, "
                                              "port: 8080}]}\n");
    /* options travel two levels down; a regex child cannot take an inherited prefixRewrite */
    tdir_put("virtualservices/gloo-system/vs.yaml",
        "metadata: {name: vs}\nvirtualHost:\n  domains: [a.com]\n  routes:\n  - matchers: [{prefix: /g}]\n"
        "    delegateAction: {ref: {name: mid}}\n    options: {timeout: 9s, prefixRewrite: /x, headerManipulation: "
        "{requestHeadersToAdd: [{header: {key: x-from, value: vs}}]}}\n");
    tdir_put("routetables/gloo-system/mid.yaml", RT("mid", R_DEL("/g/m", "leaf")));
    tdir_put("routetables/gloo-system/leaf.yaml",
        RT("leaf", R_UP("/g/m/l", "up") R_UP("/g/m/missing", "gone")
                       "  - matchers: [{regex: '/g/m/r[0-9]'}]\n    routeAction: {single: {upstream: {name: up}}}\n"));
    /* a chain of 18 tables is deeper than the limit */
    tdir_put("virtualservices/gloo-system/deep.yaml", VS("deep", "[deep.com]", R_DEL("/d", "c0")));
    for (int i = 0; i < 18; i++) {
        snprintf(rel, sizeof(rel), "routetables/gloo-system/c%d.yaml", i);
        if (i < 17)
            snprintf(body, sizeof(body), "metadata: {name: c%d}\nroutes:\n  - matchers: [{prefix: /d}]\n"
                                         "    delegateAction: {ref: {name: c%d}}\n", i, i + 1);
        else
            snprintf(body, sizeof(body), "metadata: {name: c%d}\nroutes:\n  - matchers: [{prefix: /d}]\n"
                                         "    directResponseAction: {status: 200}\n", i);
        tdir_put(rel, body);
    }
    tdir_put("virtualservices/gloo-system/dns.yaml", VS("dns", "[dns.com]", R_UP("/", "nowhere")));
    /* fan-out: 20 delegating routes x 5100 child routes is more than one virtual service may hold */
    size_t cap = 5100 * 100 + 64, used = 0;
    char *big = malloc(cap);
    used += (size_t)snprintf(big + used, cap - used, "metadata: {name: wide}\nroutes:\n");
    for (int i = 0; i < 5100; i++)
        used += (size_t)snprintf(big + used, cap - used, "- {matchers: [{exact: /w/%d}], directResponseAction: {status: 200}}\n", i);
    tdir_put("routetables/gloo-system/wide.yaml", big);
    free(big);
    char fan[2048];
    size_t fo = (size_t)snprintf(fan, sizeof(fan), "metadata: {name: fan}\nvirtualHost:\n  domains: [fan.com]\n  routes:\n");
    for (int i = 0; i < 20; i++)
        fo += (size_t)snprintf(fan + fo, sizeof(fan) - fo,
                               "  - {matchers: [{prefix: /w}], delegateAction: {ref: {name: wide}}}\n");
    tdir_put("virtualservices/gloo-system/fan.yaml", fan);
    rv_snapshot_t *snap = load(&e, tdir);
    const rv_listener_cfg_t *l = snap && snap->nlisteners ? &snap->listeners[0] : NULL;
    const rv_vhost_t *vh = vhost(l, "gloo-system.vs");
    CHECK(vh && vh->nroutes == 3, "nested: three routes from two levels of delegation (got %u)", vh ? vh->nroutes : 0);
    if (vh && vh->nroutes == 3) {
        const rv_route_t *r = vh->routes;
        CHECK(r[0].opts.timeout_ms == 9000 && r[0].opts.has_prefix_rewrite && streq(r[0].opts.prefix_rewrite, "/x") &&
                  r[0].headers.nreq_add == 1 && streq(r[0].headers.req_add[0].value, "vs"),
              "nested: options inherited across two levels");
        CHECK(r[1].action.dests[0].cluster == RV_NO_CLUSTER, "nested: a table's missing upstream is RV_NO_CLUSTER");
        CHECK(r[2].match.path_kind == RV_PATH_REGEX && !r[2].opts.has_prefix_rewrite && r[2].opts.timeout_ms == 9000,
              "nested: inherited prefixRewrite dropped on a regex route, the rest kept");
    }
    CHECK(state(snap, "RouteTable", "leaf") == RV_STATE_WARNING &&
              reason_has(snap, "RouteTable", "leaf", "route routes[1]: upstream gloo-system/gone not found") &&
              reason_has(snap, "RouteTable", "leaf", "inherited prefixRewrite does not apply to a regex matcher"),
          "nested: warnings land on the table that holds the route");
    bool deep_rejected = false;
    for (int i = 0; i < 18; i++) {
        char n[16];
        snprintf(n, sizeof(n), "c%d", i);
        if (state(snap, "RouteTable", n) == RV_STATE_REJECTED &&
            reason_has(snap, "RouteTable", n, "delegation deeper than 16 levels"))
            deep_rejected = true;
    }
    const rv_vhost_t *dv = vhost(l, "gloo-system.deep");
    CHECK(deep_rejected && dv && dv->nroutes == 0, "nested: a chain deeper than 16 is refused");
    const rv_vhost_t *nv = vhost(l, "gloo-system.dns");
    const rv_cluster_t *c = nv && nv->nroutes ? cluster(snap, nv->routes[0].action.dests[0].cluster) : NULL;
    CHECK(c && c->neps == 0 && state(snap, "Upstream", "nowhere") == RV_STATE_WARNING &&
              reason_has(snap, "Upstream", "nowhere", "no endpoint resolves"),
          "dns: a cluster without endpoints stays (503) with a Warning");
    const rv_vhost_t *fv = vhost(l, "gloo-system.fan");
    CHECK(state(snap, "VirtualService", "fan") == RV_STATE_REJECTED &&
              reason_has(snap, "VirtualService", "fan", "too many routes after delegation") && fv && fv->nroutes == 0,
          "limits: delegation fan-out beyond 100000 routes is refused, not served in part");
    env_free(&e);
}

/* ---- conflicts keep the last accepted version; listeners that cannot bind ----------- */

static const rv_route_t *first_route(const rv_snapshot_t *snap, const char *gw, const char *vs)
{
    const rv_vhost_t *vh = vhost(listener(snap, gw), vs);
    return vh && vh->nroutes ? &vh->routes[0] : NULL;
}

static bool body_is(const rv_snapshot_t *snap, const char *gw, const char *vs, const char *body)
{
    const rv_route_t *r = first_route(snap, gw, vs);
    return r && r->action.kind == RV_ACTION_DIRECT && streq(r->action.body, body);
}

#define R_BODY(path, body) "  - matchers: [{exact: " path "}]\n    directResponseAction: {status: 200, body: " body "}\n"

static void test_domain_conflict_keeps_serving(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("gateways/gloo-system/gw.yaml", GW("gw", 8080));
    tdir_put("virtualservices/gloo-system/b.yaml", VS("b", "[x.test]", R_BODY("/v", "b1")));
    tdir_put("virtualservices/gloo-system/c.yaml", VS("c", "[c.test]", R_BODY("/v", "c1")));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "b") == RV_STATE_ACCEPTED && body_is(snap, "gloo-system.gw", "gloo-system.b", "b1"),
          "keep: b serves x.test");

    /* a newcomer claiming x.test (and before b in name order) */
    tdir_put("virtualservices/gloo-system/a.yaml", VS("a", "[x.test]", R_BODY("/v", "a1")));
    snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "b") == RV_STATE_ACCEPTED && body_is(snap, "gloo-system.gw", "gloo-system.b", "b1"),
          "keep: the serving VirtualService keeps the domain");
    CHECK(state(snap, "VirtualService", "a") == RV_STATE_REJECTED &&
              reason_has(snap, "VirtualService", "a", "domain 'x.test' is already served by VirtualService gloo-system/b on "
                                                      "Gateway gloo-system/gw") &&
              reason_lacks(snap, "VirtualService", "a", "keeps serving") && !vhost(listener(snap, "gloo-system.gw"), "gloo-system.a"),
          "keep: the newcomer is rejected, names the holder, and serves nothing");

    /* the holder is edited (still claims x.test): its new version is served */
    tdir_put("virtualservices/gloo-system/b.yaml", VS("b", "[x.test]", R_BODY("/v", "b2")));
    snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "b") == RV_STATE_ACCEPTED && body_is(snap, "gloo-system.gw", "gloo-system.b", "b2") &&
              state(snap, "VirtualService", "a") == RV_STATE_REJECTED,
          "keep: an edit of the holder is accepted; the newcomer stays rejected");

    /* an accepted service edited to claim the holder's domain keeps its last accepted version */
    tdir_put("virtualservices/gloo-system/c.yaml", VS("c", "[c.test, x.test]", R_BODY("/v", "c2")));
    snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "c") == RV_STATE_REJECTED &&
              reason_has(snap, "VirtualService", "c", "domain 'x.test' is already served by VirtualService gloo-system/b") &&
              reason_has(snap, "VirtualService", "c", "(the last accepted version keeps serving)"),
          "keep: the edited claimant is rejected, saying its last version serves");
    CHECK(body_is(snap, "gloo-system.gw", "gloo-system.c", "c1") && body_is(snap, "gloo-system.gw", "gloo-system.b", "b2"),
          "keep: c serves its last accepted version, b is untouched");
    const rv_vhost_t *cv = vhost(listener(snap, "gloo-system.gw"), "gloo-system.c");
    CHECK(cv && cv->ndomains == 1 && streq(cv->domains[0], "c.test"), "keep: with its old domains");

    /* a broken edit of c on top: the decode error is reported, the same version keeps serving */
    tdir_put("virtualservices/gloo-system/c.yaml", "metadata: {name: c\n");
    snap = load(&e, tdir);
    CHECK(reason_has(snap, "VirtualService", "c", "invalid YAML") && body_is(snap, "gloo-system.gw", "gloo-system.c", "c1"),
          "keep: a decode error on top of a refused version still serves the last accepted one");

    /* the holder goes away: the others' current versions now fit */
    tdir_del("virtualservices/gloo-system/b.yaml");
    tdir_put("virtualservices/gloo-system/c.yaml", VS("c", "[c.test]", R_BODY("/v", "c3")));
    snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "a") == RV_STATE_ACCEPTED && body_is(snap, "gloo-system.gw", "gloo-system.a", "a1") &&
              state(snap, "VirtualService", "c") == RV_STATE_ACCEPTED && body_is(snap, "gloo-system.gw", "gloo-system.c", "c3"),
          "keep: once the conflict is gone the newest versions serve");
    env_free(&e);

    /* two services serving one domain on different Gateways meet because a Gateway changed */
    tdir_new("build");
    tdir_put("gateways/gloo-system/g1.yaml", "metadata: {name: g1}\nbindPort: 8081\nhttpGateway: {virtualServices: [{name: a}]}\n");
    tdir_put("gateways/gloo-system/g2.yaml", "metadata: {name: g2}\nbindPort: 8082\nhttpGateway: {virtualServices: [{name: b}]}\n");
    tdir_put("virtualservices/gloo-system/a.yaml", VS("a", "[x.test]", R_BODY("/v", "a1")));
    tdir_put("virtualservices/gloo-system/b.yaml", VS("b", "[x.test]", R_BODY("/v", "b1")));
    snap = load(&e, tdir);
    CHECK(body_is(snap, "gloo-system.g1", "gloo-system.a", "a1") && body_is(snap, "gloo-system.g2", "gloo-system.b", "b1"),
          "gateway change: one domain on two Gateways");
    tdir_put("gateways/gloo-system/g1.yaml", "metadata: {name: g1}\nbindPort: 8081\nhttpGateway: {virtualServices: [{name: a}, "
                                        "{name: b}]}\n");
    snap = load(&e, tdir);
    CHECK(state(snap, "Gateway", "g1") == RV_STATE_REJECTED &&
              reason_has(snap, "Gateway", "g1", "VirtualServices gloo-system/a and gloo-system/b would both serve domain 'x.test'") &&
              reason_has(snap, "Gateway", "g1", "last accepted version keeps serving"),
          "gateway change: the Gateway that brought them together is rejected");
    const rv_listener_cfg_t *g1 = listener(snap, "gloo-system.g1");
    CHECK(g1 && g1->nvhosts == 1 && body_is(snap, "gloo-system.g1", "gloo-system.a", "a1") &&
              state(snap, "VirtualService", "a") == RV_STATE_ACCEPTED && state(snap, "VirtualService", "b") == RV_STATE_ACCEPTED,
          "gateway change: its last accepted selection serves; the services stay Accepted");
    env_free(&e);

    /* ns/name ordering does not matter: the holder wins whichever name sorts first */
    tdir_new("build");
    tdir_put("gateways/gloo-system/gw.yaml", GW("gw", 8080));
    tdir_put("virtualservices/gloo-system/z.yaml", VS("z", "['*']", R_BODY("/v", "z1")));
    snap = load(&e, tdir);
    tdir_put("virtualservices/gloo-system/m.yaml", VS("m", "[]", R_BODY("/v", "m1")));
    snap = load(&e, tdir);
    CHECK(body_is(snap, "gloo-system.gw", "gloo-system.z", "z1") && state(snap, "VirtualService", "m") == RV_STATE_REJECTED &&
              reason_has(snap, "VirtualService", "m", "domain '*' is already served by VirtualService gloo-system/z"),
          "keep: no domains (= '*') against a serving '*'");
    env_free(&e);
}

static void test_bind_conflict_keeps_serving(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("gateways/gloo-system/g1.yaml", GW("g1", 8081));
    tdir_put("gateways/gloo-system/g2.yaml", GW("g2", 8082));
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_BODY("/v", "v")));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(snap && snap->nlisteners == 2, "bind: two listeners");

    /* the later Gateway moves onto the earlier one's port */
    tdir_put("gateways/gloo-system/g2.yaml", GW("g2", 8081));
    snap = load(&e, tdir);
    const rv_listener_cfg_t *l1 = listener(snap, "gloo-system.g1"), *l2 = listener(snap, "gloo-system.g2");
    CHECK(l1 && l1->port == 8081 && l2 && l2->port == 8082, "bind: both listeners stay where they were");
    CHECK(state(snap, "Gateway", "g1") == RV_STATE_ACCEPTED && state(snap, "Gateway", "g2") == RV_STATE_REJECTED &&
              reason_has(snap, "Gateway", "g2", "bindAddress :: port 8081 conflicts with Gateway gloo-system/g1 (bound to :: "
                                               "port 8081)") &&
              reason_has(snap, "Gateway", "g2", "(the last accepted version keeps serving)"),
          "bind: the moved Gateway is rejected, names the holder as ns/name, keeps its old listener");

    /* the earlier Gateway (in name order) moves onto the later one's port: the holder still wins */
    tdir_put("gateways/gloo-system/g2.yaml", GW("g2", 8082));
    snap = load(&e, tdir);
    tdir_put("gateways/gloo-system/g1.yaml", GW("g1", 8082));
    snap = load(&e, tdir);
    l1 = listener(snap, "gloo-system.g1");
    l2 = listener(snap, "gloo-system.g2");
    CHECK(l1 && l1->port == 8081 && l2 && l2->port == 8082 && state(snap, "Gateway", "g2") == RV_STATE_ACCEPTED &&
              state(snap, "Gateway", "g1") == RV_STATE_REJECTED &&
              reason_has(snap, "Gateway", "g1", "conflicts with Gateway gloo-system/g2"),
          "bind: the holder keeps its port whatever the name order");
    CHECK(snap && snap->listeners[0].port == 8081 && streq(snap->listeners[0].name, "gloo-system.g1"),
          "bind: listeners stay in namespace/name order");

    /* two new Gateways on one port: the first in name order wins, as before */
    tdir_put("gateways/gloo-system/n1.yaml", GW("n1", 8090));
    tdir_put("gateways/gloo-system/n2.yaml", GW("n2", 8090));
    snap = load(&e, tdir);
    CHECK(listener(snap, "gloo-system.n1") && !listener(snap, "gloo-system.n2") &&
              reason_lacks(snap, "Gateway", "n2", "keeps serving"),
          "bind: between newcomers the first in name order wins");
    env_free(&e);
}

static void test_delegation_keeps_serving(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("gateways/gloo-system/gw.yaml", GW("gw", 8080));
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_DEL("/api", "rt")));
    tdir_put("routetables/gloo-system/rt.yaml", RT("rt", R_BODY("/api/x", "rt1")));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(body_is(snap, "gloo-system.gw", "gloo-system.vs", "rt1"), "delegation keep: the table serves");

    /* the table's edit leaves the parent prefix: its last accepted version keeps serving */
    tdir_put("routetables/gloo-system/rt.yaml", RT("rt", R_BODY("/api/x", "rt2") R_BODY("/other", "o")));
    snap = load(&e, tdir);
    CHECK(state(snap, "RouteTable", "rt") == RV_STATE_REJECTED &&
              reason_has(snap, "RouteTable", "rt", "does not start with the delegating prefix '/api'") &&
              reason_has(snap, "RouteTable", "rt", "(the last accepted version keeps serving)"),
          "delegation keep: the table is rejected and says its last version serves");
    const rv_vhost_t *vh = vhost(listener(snap, "gloo-system.gw"), "gloo-system.vs");
    CHECK(vh && vh->nroutes == 1 && body_is(snap, "gloo-system.gw", "gloo-system.vs", "rt1") &&
              state(snap, "VirtualService", "vs") == RV_STATE_ACCEPTED,
          "delegation keep: the parent still serves the delegated routes");

    /* fixed: the new version serves */
    tdir_put("routetables/gloo-system/rt.yaml", RT("rt", R_BODY("/api/x", "rt3")));
    snap = load(&e, tdir);
    CHECK(state(snap, "RouteTable", "rt") == RV_STATE_ACCEPTED && body_is(snap, "gloo-system.gw", "gloo-system.vs", "rt3"),
          "delegation keep: a fitting edit is served");

    /* the parent's edit moves the prefix away from an unchanged table: the parent is refused */
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_DEL("/v2", "rt")));
    snap = load(&e, tdir);
    CHECK(state(snap, "VirtualService", "vs") == RV_STATE_REJECTED &&
              reason_has(snap, "VirtualService", "vs", "RouteTable gloo-system/rt does not fit under it") &&
              reason_has(snap, "VirtualService", "vs", "(the last accepted version keeps serving)") &&
              state(snap, "RouteTable", "rt") == RV_STATE_ACCEPTED && body_is(snap, "gloo-system.gw", "gloo-system.vs", "rt3"),
          "delegation keep: a parent edit that no longer fits its table keeps the parent's last version");

    /* a table never accepted that does not fit: rejected and left out, as before */
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_DEL("/api", "rt") R_DEL("/n", "fresh")));
    tdir_put("routetables/gloo-system/fresh.yaml", RT("fresh", R_BODY("/elsewhere", "f")));
    snap = load(&e, tdir);
    vh = vhost(listener(snap, "gloo-system.gw"), "gloo-system.vs");
    CHECK(state(snap, "RouteTable", "fresh") == RV_STATE_REJECTED && reason_lacks(snap, "RouteTable", "fresh", "keeps serving") &&
              state(snap, "VirtualService", "vs") == RV_STATE_ACCEPTED && vh && vh->nroutes == 1,
          "delegation keep: a new table that does not fit is left out");
    env_free(&e);
}

static int busy_port, busy_port2;

/* A stand-in for the data plane's check: busy_port and busy_port2 are taken, busy_port + 1's address is not ours. */
static int fake_bind_check(const rv_listener_cfg_t *l)
{
    return l->port == busy_port || l->port == busy_port2 ? EADDRINUSE : l->port == busy_port + 1 ? EADDRNOTAVAIL : 0;
}

static void test_bind_check(void)
{
    env_t e = { 0 };
    busy_port = 18081;
    rv_config_set_bind_check(fake_bind_check);
    tdir_new("build");
    tdir_put("gateways/gloo-system/gw.yaml", GW("gw", 8080));
    tdir_put("gateways/gloo-system/busy.yaml", GW("busy", 18081));
    tdir_put("gateways/gloo-system/gone.yaml", "metadata: {name: gone}\nbindAddress: 10.9.9.9\nbindPort: 18082\n");
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_BODY("/v", "v")));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(snap && snap->nlisteners == 1 && listener(snap, "gloo-system.gw"), "bind check: only the bindable listener");
    CHECK(state(snap, "Gateway", "busy") == RV_STATE_REJECTED &&
              reason_has(snap, "Gateway", "busy", "bindPort 18081: address already in use by another process") &&
              reason_lacks(snap, "Gateway", "busy", "keeps serving"),
          "bind check: a taken port rejects the Gateway, saying so");
    CHECK(reason_has(snap, "Gateway", "gone", "bindAddress 10.9.9.9: not an address of this host"),
          "bind check: an address the host does not have");
    CHECK(state(snap, "Gateway", "gw") == RV_STATE_ACCEPTED && state(snap, "VirtualService", "vs") == RV_STATE_ACCEPTED,
          "bind check: everything else is accepted");

    /* an accepted Gateway moved to a taken port keeps its listener */
    busy_port2 = 18085;
    tdir_put("gateways/gloo-system/gw.yaml", GW("gw", 18085));
    snap = load(&e, tdir);
    const rv_listener_cfg_t *l = listener(snap, "gloo-system.gw");
    CHECK(l && l->port == 8080 && state(snap, "Gateway", "gw") == RV_STATE_REJECTED &&
              reason_has(snap, "Gateway", "gw", "bindPort 18085: address already in use by another process (the last "
                                                "accepted version keeps serving)"),
          "bind check: an edited Gateway whose new port is taken keeps serving on the old one");

    /* the ports free up: the Gateways are served there at the next build */
    busy_port = busy_port2 = 28000;
    snap = load(&e, tdir);
    l = listener(snap, "gloo-system.gw");
    CHECK(l && l->port == 18085 && state(snap, "Gateway", "gw") == RV_STATE_ACCEPTED && listener(snap, "gloo-system.busy") &&
              state(snap, "Gateway", "busy") == RV_STATE_ACCEPTED,
          "bind check: the next build binds what became free");
    env_free(&e);

    /* the implicit default Gateway gets a status when it cannot bind */
    busy_port = 8080;
    tdir_new("build");
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_BODY("/v", "v")));
    snap = load(&e, tdir);
    const rv_status_t *st = status(snap, "Gateway", "gloo-system", "gateway-proxy");
    CHECK(snap && snap->nlisteners == 0 && st && st->state == RV_STATE_REJECTED &&
              strstr(st->reason.ptr, "bindPort 8080: address already in use") && strstr(st->reason.ptr, "default Gateway"),
          "bind check: the default Gateway is reported when its port is taken");
    rv_config_set_bind_check(NULL);
    snap = load(&e, tdir);
    CHECK(snap && snap->nlisteners == 1 && !status(snap, "Gateway", "gloo-system", "gateway-proxy"),
          "bind check: none set (validate), no check");
    env_free(&e);
}

static void test_settings_status(void)
{
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("gloo-system/default.yaml", "refreshRate: 1s\n");
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_BODY("/v", "v")));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(state(snap, "Settings", "default") == RV_STATE_ACCEPTED && snap->nrejected == 0, "settings: Accepted");
    e.s.rejected = strdup("foo: unknown field (x.yaml:2:1) (the previous settings stay in force)");
    snap = load(&e, tdir);
    CHECK(state(snap, "Settings", "default") == RV_STATE_REJECTED &&
              reason_has(snap, "Settings", "default", "foo: unknown field") && snap->nrejected == 1,
          "settings: a refused file shows as Rejected with the reason");
    env_free(&e);

    /* refused while no Settings file was in force: the status still appears */
    tdir_new("build");
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_BODY("/v", "v")));
    snap = load(&e, tdir);
    CHECK(snap && !status(snap, "Settings", "gloo-system", "default"), "settings: no file, no status");
    e.s.rejected = strdup("bad");
    snap = load(&e, tdir);
    CHECK(state(snap, "Settings", "default") == RV_STATE_REJECTED, "settings: a refused new file has a status");
    env_free(&e);
}

static void test_duration_too_large(void)
{
    int64_t ms;
    CHECK(cfg_parse_duration("2562047h", 8, &ms) == -2 && cfg_parse_duration("99999999999999999999s", 21, &ms) == -2,
          "duration: well-formed but too long is -2");
    CHECK(cfg_parse_duration("99999999999999999999x", 21, &ms) == -1 && cfg_parse_duration("2562047h5", 9, &ms) == -1,
          "duration: malformed stays -1 even when huge");
    CHECK(cfg_parse_duration("2500000h", 8, &ms) == 0 && ms == 9000000000000ll, "duration: the cap itself is accepted");
    env_t e = { 0 };
    tdir_new("build");
    tdir_put("virtualservices/gloo-system/vs.yaml", VS("vs", "['*']", R_UP("/", "up") "    options: {timeout: 2562047h}\n"));
    rv_snapshot_t *snap = load(&e, tdir);
    CHECK(reason_has(snap, "VirtualService", "vs", "timeout: duration '2562047h' is too large (at most 2500000h)") &&
              reason_lacks(snap, "VirtualService", "vs", "invalid duration"),
          "duration: the reason says too large, not invalid");
    env_free(&e);
}

int main(void)
{
    test_fixture();
    test_gateways();
    test_domains();
    test_refs();
    test_delegation();
    test_store();
    test_json_escape();
    test_more_delegation();
    test_domain_conflict_keeps_serving();
    test_bind_conflict_keeps_serving();
    test_delegation_keeps_serving();
    test_bind_check();
    test_settings_status();
    test_duration_too_large();
    tdir_remove();
    TEST_DONE();
}
