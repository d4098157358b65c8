/*
 * test_discovery.c - Consul discovery without a network: the state built from catalog and
 * health answers (address fallback, health, datacenters, change detection), immutable views,
 * Gloo's upstream names, and the snapshot built from a store plus a view (explicit consul
 * Upstreams with tag/blacklist/DC filters, discovered Upstreams, route consul destinations,
 * statuses).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config/config.h"
#include "control/discovery.h"
#include "core/err.h"
#include "tdir.h"
#include "test.h"

/* ---- health answers ------------------------------------------------------------------ */

/* One /v1/health/service entry. svc_addr may be "" (node address used). */
static int entry(char *out, size_t len, const char *node, const char *node_addr, const char *dc, const char *id,
                 const char *svc_addr, int port, const char *tags_json, const char *status)
{
    return snprintf(out, len,
                    "{\"Node\":{\"ID\":\"x\",\"Node\":\"%s\",\"Address\":\"%s\",\"Datacenter\":\"%s\"},"
                    "\"Service\":{\"ID\":\"%s\",\"Service\":\"web\",\"Tags\":%s,\"Address\":\"%s\",\"Port\":%d},"
                    "\"Checks\":[{\"CheckID\":\"serfHealth\",\"Status\":\"passing\",\"ServiceID\":\"\"},"
                    "{\"CheckID\":\"service:%s\",\"Status\":\"%s\",\"ServiceID\":\"%s\"}]}",
                    node, node_addr, dc, id, tags_json, svc_addr, port, id, status, id);
}

static char *health3(const char *dc, const char *st1, const char *st2, const char *st3)
{
    static char buf[8192];
    char e1[1024], e2[1024], e3[1024];
    entry(e1, sizeof(e1), "n1", "10.0.0.1", dc, "web1", "127.0.0.1", 8001, "[\"v1\",\"blue\"]", st1);
    entry(e2, sizeof(e2), "n2", "127.0.0.2", dc, "web2", "", 8002, "[\"v1\"]", st2);        /* node address */
    entry(e3, sizeof(e3), "n3", "10.0.0.3", dc, "web3", "::1", 8003, "[\"v2\",\"canary\"]", st3);
    snprintf(buf, sizeof(buf), "[%s,%s,%s]", e1, e2, e3);
    return buf;
}

static uint16_t port_of(const rv_disc_addr_t *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

static void test_state(void)
{
    rv_disc_state_t *st = rv_disc_state_new(true);
    const char *svcs = "{\"consul\":[],\"web\":[\"v1\",\"blue\"]}";
    CHECK_INT(rv_disc_set_services(st, "dc1", svcs, strlen(svcs)), 1, "services: first answer changes the state");
    CHECK_INT(rv_disc_set_services(st, "dc1", svcs, strlen(svcs)), 0, "services: same answer is no change");
    CHECK_INT(rv_disc_service_count(st), 2, "services: two listed");
    CHECK_INT(rv_disc_set_services(st, "dc1", "[1]", 3), RV_EPARSE, "services: not an object is refused");
    CHECK_INT(rv_disc_set_services(st, "dc1", "{\"a\":1}", 7), RV_EPARSE, "services: tags not an array refused");
    CHECK_INT(rv_disc_service_count(st), 2, "services: a refused answer leaves the state alone");

    rv_disc_view_t *v = rv_disc_view_build(st);
    CHECK(v && v->nsvcs == 2 && !v->synced, "view: services listed, not synced before health answers");
    const rv_disc_svc_t *w = rv_disc_find(v, "web");
    CHECK(w && !w->known && w->ninsts == 0, "view: web known by name only");
    rv_disc_view_release(v);

    char *h = health3("dc1", "passing", "critical", "passing");
    CHECK_INT(rv_disc_set_health(st, "web", "dc1", h, strlen(h)), 1, "health: first answer changes the state");
    CHECK_INT(rv_disc_set_health(st, "web", "dc1", h, strlen(h)), 0, "health: same answer is no change");
    CHECK_INT(rv_disc_set_health(st, "web", "dc1", "{}", 2), RV_EPARSE, "health: not an array refused");
    CHECK_INT(rv_disc_set_health(st, "gone", "dc1", "[]", 2), 0, "health: late answer for an unlisted service ignored");
    CHECK_INT(rv_disc_set_health(st, "consul", "dc1", "[]", 2), 1, "health: consul has no instance");

    v = rv_disc_view_build(st);
    w = rv_disc_find(v, "web");
    CHECK(v && v->synced && w && w->known, "view: synced once every service was read");
    CHECK(w && w->ninsts == 3 && v->npassing == 2, "view: three instances, two passing");
    if (w && w->ninsts == 3) {
        const rv_disc_inst_t *i1 = &w->insts[0], *i2 = &w->insts[1], *i3 = &w->insts[2];
        CHECK_STRN(i1->host.ptr, i1->host.len, "127.0.0.1", "address: Service.Address wins over the node's");
        CHECK_STRN(i2->host.ptr, i2->host.len, "127.0.0.2", "address: empty Service.Address falls back to Node");
        CHECK(i3->naddrs == 1 && i3->addrs[0].sa.ss_family == AF_INET6, "address: IPv6 literal");
        CHECK(i1->naddrs == 1 && port_of(&i1->addrs[0]) == 8001, "address: port from Service.Port");
        CHECK(i1->passing && !i2->passing && i3->passing, "health: a critical service check fails the instance");
        CHECK(i1->ntags == 2 && w->ntags == 2, "tags: instance and service tags kept");
        CHECK_STRN(i1->dc.ptr, i1->dc.len, "dc1", "dc recorded");
    }
    rv_disc_view_release(v);

    /* views share the state's instance arrays: a view keeps its instances after the state
     * moves on (and after the state is gone: see test_view_outlives_state) */
    rv_disc_view_t *old = rv_disc_view_build(st);
    const rv_disc_svc_t *ow = rv_disc_find(old, "web");
    char *h2 = health3("dc1", "critical", "critical", "passing");
    CHECK_INT(rv_disc_set_health(st, "web", "dc1", h2, strlen(h2)), 1, "health: a check change is a change");
    CHECK_INT(rv_disc_set_health(st, "web", "dc1", h2, strlen(h2)), 0, "health: the same bytes again are no change");
    v = rv_disc_view_build(st);
    w = rv_disc_find(v, "web");
    CHECK(ow && ow->ninsts == 3 && ow->insts[0].passing && old->npassing == 2,
          "view: an older view keeps its instances after the state changed");
    CHECK(w && w->ninsts == 3 && !w->insts[0].passing && v->npassing == 1, "view: the new view has the change");
    CHECK(ow && w && ow->insts != w->insts, "view: a changed service gets a new instance array");
    rv_disc_view_release(v);
    rv_disc_view_release(old);

    /* a warning check is not passing (Consul's ?passing semantics); node check counts */
    char e[1024], buf[2048];
    entry(e, sizeof(e), "n1", "10.0.0.1", "dc1", "web1", "127.0.0.1", 8001, "[]", "warning");
    snprintf(buf, sizeof(buf), "[%s]", e);
    rv_disc_set_health(st, "web", "dc1", buf, strlen(buf));
    v = rv_disc_view_build(st);
    w = rv_disc_find(v, "web");
    CHECK(w && w->ninsts == 1 && !w->insts[0].passing, "health: warning is not passing");
    rv_disc_view_release(v);

    /* a host name is resolved on this (the watcher's) thread */
    entry(e, sizeof(e), "n1", "10.0.0.1", "dc1", "web1", "localhost", 8001, "[]", "passing");
    snprintf(buf, sizeof(buf), "[%s]", e);
    rv_disc_set_health(st, "web", "dc1", buf, strlen(buf));
    v = rv_disc_view_build(st);
    w = rv_disc_find(v, "web");
    CHECK(w && w->ninsts == 1 && w->insts[0].naddrs >= 1, "address: host name resolved");
    rv_disc_view_release(v);

    /* deregistered from the list: the service goes */
    const char *only = "{\"consul\":[]}";
    CHECK_INT(rv_disc_set_services(st, "dc1", only, strlen(only)), 1, "services: removal is a change");
    v = rv_disc_view_build(st);
    CHECK(v && v->nsvcs == 1 && !rv_disc_find(v, "web"), "view: removed service gone");
    rv_disc_view_release(v);
    rv_disc_state_free(st);
}

/* A view built from a state stays whole when the state is freed (it holds the blocks), and
 * two views of an unchanged service share one array. */
static void test_view_outlives_state(void)
{
    rv_disc_state_t *st = rv_disc_state_new(true);
    const char *svcs = "{\"web\":[]}";
    rv_disc_set_services(st, "dc1", svcs, strlen(svcs));
    char *h = health3("dc1", "passing", "passing", "passing");
    rv_disc_set_health(st, "web", "dc1", h, strlen(h));
    rv_disc_view_t *a = rv_disc_view_build(st), *b = rv_disc_view_build(st);
    const rv_disc_svc_t *wa = rv_disc_find(a, "web"), *wb = rv_disc_find(b, "web");
    CHECK(wa && wb && wa->insts == wb->insts, "view: an unchanged service's instances are shared, not copied");
    rv_disc_state_free(st);
    CHECK(wa && wa->ninsts == 3 && wa->insts[2].naddrs == 1 && port_of(&wa->insts[2].addrs[0]) == 8003 &&
              wa->insts[1].host.len && !strcmp(wa->insts[1].host.ptr, "127.0.0.2"),
          "view: readable after the state is freed");
    rv_disc_view_release(a);
    CHECK(wb && wb->ninsts == 3 && !strcmp(wb->insts[0].id.ptr, "web1"), "view: readable after a sibling view is released");
    rv_disc_view_release(b);
}

static void test_allowlist(void)
{
    rv_disc_state_t *st = rv_disc_state_new(true);
    char *allow[] = { "edge", "public" };
    CHECK_INT(rv_disc_state_allow_tags(st, allow, 2), 0, "allowlist set");
    const char *svcs = "{\"consul\":[],\"web\":[\"v1\",\"edge\"],\"db\":[\"primary\"],\"api\":[\"public\"]}";
    CHECK_INT(rv_disc_set_services(st, "dc1", svcs, strlen(svcs)), 1, "allowlist: first answer");
    rv_disc_view_t *v = rv_disc_view_build(st);
    CHECK(v && v->nsvcs == 2 && rv_disc_find(v, "web") && rv_disc_find(v, "api") && !rv_disc_find(v, "db") &&
              !rv_disc_find(v, "consul"),
          "allowlist: only services with one of the tags are discovered");
    rv_disc_view_release(v);
    /* web loses its allowed tag: it goes, as if deregistered */
    const char *later = "{\"consul\":[],\"web\":[\"v1\"],\"db\":[\"primary\"],\"api\":[\"public\"]}";
    CHECK_INT(rv_disc_set_services(st, "dc1", later, strlen(later)), 1, "allowlist: losing the tag is a change");
    v = rv_disc_view_build(st);
    CHECK(v && v->nsvcs == 1 && !rv_disc_find(v, "web") && rv_disc_find(v, "api"), "allowlist: web gone");
    rv_disc_view_release(v);
    /* an empty allowlist allows every service */
    CHECK_INT(rv_disc_state_allow_tags(st, NULL, 0), 0, "allowlist cleared");
    CHECK_INT(rv_disc_set_services(st, "dc1", later, strlen(later)), 1, "no allowlist: every service");
    CHECK_INT(rv_disc_service_count(st), 4, "no allowlist: four services");
    rv_disc_state_free(st);
}

static void test_names(void)
{
    char out[128];
    CHECK(!strcmp(rv_disc_upstream_name("web", out, sizeof(out)), "web"), "name: plain");
    CHECK(!strcmp(rv_disc_upstream_name("My_Svc.v1:8080", out, sizeof(out)), "my-svc-v1-8080"),
          "name: _ . : become '-', lower-cased");
    CHECK(!strcmp(rv_disc_upstream_name("a[b]'c\"", out, sizeof(out)), "abc"), "name: brackets and quotes dropped");
    CHECK(!strcmp(rv_disc_upstream_name("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.svc_name:with*stuff", out, sizeof(out)),
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-svc-name-with-stuff"),
          "name: 60 bytes kept");
    /* > 63: first 31 bytes, '-', md5 hex of the whole sanitised name, cut at 63 (values from Python hashlib) */
    rv_disc_upstream_name("abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789", out, sizeof(out));
    CHECK(!strcmp(out, "abcdefghijklmnopqrstuvwxyz01234-4748b3942e7939cf27e7798ddf67cc7"), "name: long name hashed (%s)",
          out);
}

/* ---- snapshots from a store and a view ------------------------------------------------ */

static const rv_cluster_t *cluster(const rv_snapshot_t *s, const char *name)
{
    for (uint32_t i = 0; s && i < s->nclusters; i++)
        if (rv_str_eq(s->clusters[i].name, rv_cstr(name)))
            return &s->clusters[i];
    return NULL;
}

static const rv_status_t *status(const rv_snapshot_t *snap, const char *kind, const char *name)
{
    for (uint32_t i = 0; snap && i < snap->nstatuses; i++) {
        const rv_status_t *s = &snap->statuses[i];
        if (rv_str_eq(s->kind, rv_cstr(kind)) && rv_str_eq(s->name, rv_cstr(name)))
            return s;
    }
    return NULL;
}

static bool has_port(const rv_cluster_t *c, uint16_t port)
{
    for (uint32_t i = 0; c && i < c->neps; i++) {
        const struct sockaddr_storage *sa = &c->eps[i].addr;
        uint16_t p = sa->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
                                              : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        if (p == port)
            return true;
    }
    return false;
}

/* A view with web in dc1 (web1 v1,blue passing; web2 v1 critical; web3 v2,canary passing) and dc2 (web4 v1). */
static rv_disc_view_t *two_dc_view_st(bool health, const char *st2, const char *st3);

static rv_disc_view_t *two_dc_view(bool health)
{
    return two_dc_view_st(health, "critical", "passing");
}

/* two_dc_view with web2's and web3's check statuses given. */
static rv_disc_view_t *two_dc_view_st(bool health, const char *st2, const char *st3)
{
    rv_disc_state_t *st = rv_disc_state_new(health);
    const char *svcs = "{\"web\":[\"v1\",\"blue\",\"v2\",\"canary\"],\"Other_Svc\":[]}";
    rv_disc_set_services(st, "dc1", svcs, strlen(svcs));
    const char *svcs2 = "{\"web\":[\"v1\"]}";
    rv_disc_set_services(st, "dc2", svcs2, strlen(svcs2));
    char *h = health3("dc1", "passing", st2, st3);
    rv_disc_set_health(st, "web", "dc1", h, strlen(h));
    char e[1024], buf[1200];
    entry(e, sizeof(e), "m1", "127.0.0.4", "dc2", "web4", "", 8004, "[\"v1\"]", "passing");
    snprintf(buf, sizeof(buf), "[%s]", e);
    rv_disc_set_health(st, "web", "dc2", buf, strlen(buf));
    entry(e, sizeof(e), "m2", "127.0.0.5", "dc1", "o1", "", 9000, "[]", "passing");
    snprintf(buf, sizeof(buf), "[%s]", e);
    rv_disc_set_health(st, "Other_Svc", "dc1", buf, strlen(buf));
    rv_disc_view_t *v = rv_disc_view_build(st);
    rv_disc_state_free(st);
    return v;
}

#define VS_HDR "metadata: {name: vs}\nvirtualHost:\n  domains: ['*']\n  routes:\n"

static void test_snapshot(void)
{
    if (!tdir_new("disc"))
        return;
    tdir_put("upstreams/gloo-system/explicit.yaml", "metadata: {name: explicit}\nconsul: {serviceName: web}\n");
    tdir_put("upstreams/gloo-system/tagged.yaml", "metadata: {name: tagged}\nconsul: {serviceName: web, instanceTags: [v1]}\n");
    tdir_put("upstreams/gloo-system/black.yaml",
        "metadata: {name: black}\nconsul: {serviceName: web, instanceBlacklistTags: [canary]}\n");
    tdir_put("upstreams/gloo-system/dc2only.yaml", "metadata: {name: dc2only}\nconsul: {serviceName: web, dataCenters: [dc2]}\n");
    tdir_put("upstreams/gloo-system/nosuch.yaml", "metadata: {name: nosuch}\nconsul: {serviceName: nosuch}\n");
    tdir_put("upstreams/gloo-system/other-svc.yaml", "metadata: {name: other-svc}\nstatic: {hosts: [{addr: 127.0.0.9, port: 1}]}\n");
    tdir_put("virtualservices/gloo-system/vs.yaml",
        VS_HDR "  - matchers: [{prefix: /a}]\n    routeAction: {single: {consul: {serviceName: web, tags: [v2]}}}\n"
               "  - matchers: [{prefix: /b}]\n    routeAction: {single: {consul: {serviceName: web, tags: [nope]}}}\n"
               "  - matchers: [{prefix: /c}]\n    routeAction: {single: {upstream: {name: web}}}\n"
               "  - matchers: [{prefix: /d}]\n    routeAction: {single: {consul: {serviceName: web, dataCenters: [dc2]}}}\n");
    rv_settings_t s;
    char err[512];
    int rc = rv_settings_load(tdir, NULL, &s, err, sizeof(err));
    CHECK(rc == 0, "settings load (%s)", rc ? err : "ok");
    if (rc)
        return;
    rv_store_t *store = rv_store_new();
    rv_store_scan_dir(store, &s);

    /* no discovery running: consul clusters are empty, with a reason */
    rv_snapshot_t *snap = NULL;
    CHECK(rv_snapshot_build_disc(store, &s, NULL, false, &snap) == 0, "build without a view");
    const rv_cluster_t *c = cluster(snap, "gloo-system.explicit");
    CHECK(c && c->neps == 0, "no view: explicit consul upstream has no endpoint");
    const rv_status_t *stt = status(snap, "Upstream", "explicit");
    CHECK(stt && stt->state == RV_STATE_WARNING && strstr(stt->reason.ptr, "not running"),
          "no view: Warning says discovery is not running");
    CHECK(rv_snapshot_uses_consul(snap), "uses_consul set");
    rv_snapshot_release(snap);

    /* health filtering (default) */
    rv_disc_view_t *v = two_dc_view(true);
    CHECK(rv_snapshot_build_disc(store, &s, v, true, &snap) == 0, "build with a view");
    c = cluster(snap, "gloo-system.explicit");
    CHECK(c && c->neps == 3 && has_port(c, 8001) && !has_port(c, 8002) && has_port(c, 8003) && has_port(c, 8004),
          "health: the critical instance gets no traffic, all DCs by default (%u)", c ? c->neps : 0);
    c = cluster(snap, "gloo-system.tagged");
    CHECK(c && c->neps == 2 && has_port(c, 8001) && has_port(c, 8004), "instanceTags: only v1 instances, passing");
    c = cluster(snap, "gloo-system.black");
    CHECK(c && c->neps == 2 && !has_port(c, 8003), "instanceBlacklistTags: canary excluded");
    c = cluster(snap, "gloo-system.dc2only");
    CHECK(c && c->neps == 1 && has_port(c, 8004), "dataCenters: dc2 only");
    stt = status(snap, "Upstream", "nosuch");
    CHECK(stt && stt->state == RV_STATE_WARNING && strstr(stt->reason.ptr, "no such service"),
          "unknown service: Warning");
    /* discovered upstreams: web and other-svc (taken by the user's static one) */
    c = cluster(snap, "gloo-system.web");
    CHECK(c && c->neps == 3, "discovered: web upstream in the discovery namespace");
    stt = status(snap, "Upstream", "web");
    CHECK(stt && stt->state == RV_STATE_ACCEPTED && strstr(stt->file.ptr, "consul:web"),
          "discovered: status visible, source consul:web");
    c = cluster(snap, "gloo-system.other-svc");
    CHECK(c && c->neps == 1 && has_port(c, 1), "discovered: a user's Upstream of the same name wins");
    /* route destinations */
    c = cluster(snap, "gloo-system.consul-svc:web[tags=v2;dcs=]");
    CHECK(c && c->neps == 1 && has_port(c, 8003), "consul destination: tags select instances");
    c = cluster(snap, "gloo-system.consul-svc:web[tags=nope;dcs=]");
    CHECK(c && c->neps == 3, "consul destination: no match falls back to every instance (Gloo's ANY_ENDPOINT)");
    c = cluster(snap, "gloo-system.consul-svc:web[tags=;dcs=dc2]");
    CHECK(c && c->neps == 1 && has_port(c, 8004), "consul destination: dataCenters");
    stt = status(snap, "VirtualService", "vs");
    CHECK(stt && stt->state == RV_STATE_ACCEPTED, "vs accepted (%s)", stt ? stt->reason.ptr : "-");
    CHECK(snap && strstr(snap->config_json, "consul-svc:web"), "config_dump lists consul clusters");
    rv_snapshot_release(snap);

    /* discovery of every service off: no discovered upstreams, explicit ones still work */
    CHECK(rv_snapshot_build_disc(store, &s, v, false, &snap) == 0, "build, discovery of upstreams off");
    CHECK(!cluster(snap, "gloo-system.web") && cluster(snap, "gloo-system.explicit")->neps == 3,
          "explicit consul upstream works without discovered upstreams");
    stt = status(snap, "VirtualService", "vs");
    CHECK(stt && stt->state == RV_STATE_WARNING, "route to the undiscovered web upstream: Warning");
    rv_snapshot_release(snap);

    /* an endpoint set from a view where only instances' health moved: no re-translation */
    rv_snapshot_build_disc(store, &s, v, true, &snap);
    rv_disc_view_t *v2 = two_dc_view_st(true, "passing", "passing");
    rv_endpoint_set_t *es = NULL;
    CHECK_INT(rv_endpoint_set_build(snap, v2, 1, &es), 0, "endpoint set built from a health-only change");
    if (es) {
        CHECK(es->snap == snap && es->nclusters == snap->nclusters && es->version == 2 && !es->initial,
              "set follows the snapshot's cluster table");
        const rv_cluster_t *sc = cluster(snap, "gloo-system.explicit");
        const rv_cluster_t *ec = sc ? &es->clusters[sc->index] : NULL;
        CHECK(ec && ec->neps == 4 && has_port(ec, 8002) && sc->neps == 3,
              "web2 passing: in the set, the snapshot untouched (%u)", ec ? ec->neps : 0);
        CHECK(ec && ec->stat_id == sc->stat_id && ec->name.ptr == sc->name.ptr, "cluster identity kept");
        sc = cluster(snap, "gloo-system.dc2only");
        CHECK(sc && es->clusters[sc->index].eps == sc->eps && es->clusters[sc->index].neps == 1,
              "unchanged consul cluster shares the snapshot's array");
        sc = cluster(snap, "gloo-system.other-svc");
        CHECK(sc && es->clusters[sc->index].eps == sc->eps, "static cluster shares the snapshot's endpoints");
        size_t n = 0;
        char *js = rv_endpoint_set_dump_json(snap, es, &n);
        CHECK(js && strstr(js, "127.0.0.2:8002") && !strstr(snap->config_json, "127.0.0.2:8002"),
              "config_dump of the set shows the new endpoint");
        free(js);
        rv_endpoint_set_release(es);
    }
    rv_disc_view_release(v2);
    v2 = two_dc_view_st(true, "critical", "critical");
    es = NULL;
    CHECK_INT(rv_endpoint_set_build(snap, v2, 1, &es), RV_EAGAIN,
              "a cluster emptied (its Warning would appear): full rebuild asked");
    CHECK(es == NULL, "no set on RV_EAGAIN");
    rv_disc_view_release(v2);
    v2 = two_dc_view(false);
    CHECK_INT(rv_endpoint_set_build(snap, v2, 1, &es), RV_EAGAIN, "health mode changed: full rebuild asked");
    rv_disc_view_release(v2);
    rv_snapshot_release(snap);
    CHECK(rv_snapshot_build_disc(store, &s, NULL, false, &snap) == 0, "build without a view");
    CHECK_INT(rv_endpoint_set_build(snap, v, 1, &es), RV_EAGAIN, "snapshot built without a view: rebuild");
    rv_snapshot_release(snap);
    rv_disc_view_release(v);

    /* catalog-only: every registered instance */
    v = two_dc_view(false);
    rv_snapshot_build_disc(store, &s, v, true, &snap);
    c = cluster(snap, "gloo-system.explicit");
    CHECK(c && c->neps == 4 && has_port(c, 8002), "catalog-only: the critical instance gets traffic too");
    rv_snapshot_release(snap);
    rv_disc_view_release(v);

    rv_store_free(store);
    rv_settings_free(&s);
    tdir_remove();
}

int main(void)
{
    test_state();
    test_view_outlives_state();
    test_allowlist();
    test_names();
    test_snapshot();
    TEST_DONE();
}
