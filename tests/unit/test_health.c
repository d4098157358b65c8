/*
 * test_health.c - active health checks: healthChecks decoding and every refusal, the snapshot's
 * copy of the check (defaults), the threshold logic (Envoy's rules), expected statuses, the
 * panic threshold, and the control thread's filter (unknown endpoints count as unhealthy);
 * the checker's scheduling (the due-check heap, the spread of first checks, the descriptor
 * budget of core/fdlimit.h, panic-line rate limiting) and a check rivet cannot run (no
 * descriptor) leaving the endpoint's state alone.
 */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "config/config-internal.h"
#include "config/config.h"
#include "control/health.h"
#include "core/err.h"
#include "core/fdlimit.h"
#include "tdir.h"
#include "test.h"

static char err[CFG_ERRLEN];
static rv_arena_t arena;

static us_t *dec(const char *yaml)
{
    void *obj = NULL;
    rv_arena_free(&arena);
    rv_arena_init(&arena, 0);
    if (cfg_decode_resource(&arena, RK_US, "upstreams/gloo-system/x.yaml", NULL, "gloo-system", "x", yaml, strlen(yaml),
                            &obj, err, sizeof(err)) != 0)
        return NULL;
    err[0] = '\0';
    return obj;
}

#define US(hc) "metadata: {name: x}\nstatic: {hosts: [{addr: 10.0.0.1, port: 80}]}\nhealthChecks:\n" hc
#define HC_BASE "  - {timeout: 1s, interval: 0.2s, unhealthyThreshold: 3, healthyThreshold: 2, "

#define REJ(yaml, want, ...)                                                        \
    do {                                                                            \
        void *o_ = dec(yaml);                                                       \
        CHECK(!o_ && strstr(err, want) != NULL, __VA_ARGS__);                       \
        if (o_ || !strstr(err, want))                                               \
            printf("#   error was: '%s'\n#   wanted: '%s'\n", o_ ? "(accepted)" : err, want); \
    } while (0)

static void test_decode(void)
{
    us_t *u = dec(US(HC_BASE "intervalJitter: 50ms, httpHealthCheck: {path: /healthz, host: h.example:8080, "
                             "expectedStatuses: [{start: 200, end: 300}, {start: 404, end: 405}]}}\n"));
    CHECK(u && u->hcs.n == 1, "decode: one http health check (%s)", err);
    if (u && u->hcs.n == 1) {
        const hc_t *h = u->hcs.v;
        CHECK(h->timeout_ms == 1000 && h->interval_ms == 200 && h->jitter_ms == 50, "decode: durations");
        CHECK(h->unhealthy == 3 && h->healthy == 2, "decode: thresholds");
        CHECK(h->http.h.set && !strcmp(h->http.path, "/healthz") && !strcmp(h->http.host, "h.example:8080"),
              "decode: path and host");
        const hcrange_t *r = h->http.statuses.v;
        CHECK(h->http.statuses.n == 2 && r[0].start == 200 && r[0].end == 300 && r[1].start == 404,
              "decode: expectedStatuses");
    }
    u = dec(US(HC_BASE "tcp_health_check: {}, reuseConnection: false}\n"));
    CHECK(u && u->hcs.n == 1 && ((const hc_t *)u->hcs.v)->tcp.set, "decode: tcpHealthCheck, snake_case too (%s)", err);
    u = dec(US(HC_BASE "httpHealthCheck: {path: /h, host: ''}}\n"));
    CHECK(u && !((const hc_t *)u->hcs.v)->http.host, "decode: an empty host is the default");

    REJ(US(HC_BASE "tcpHealthCheck: {}}\n" HC_BASE "tcpHealthCheck: {}}\n"), "healthChecks[1]: only one health check",
        "two health checks refused, naming the second");
    REJ(US("  - {interval: 1s, unhealthyThreshold: 1, healthyThreshold: 1, tcpHealthCheck: {}}\n"),
        "healthChecks[0].timeout: is required", "timeout required");
    REJ(US("  - {timeout: 1s, unhealthyThreshold: 1, healthyThreshold: 1, tcpHealthCheck: {}}\n"),
        "healthChecks[0].interval: is required", "interval required");
    REJ(US("  - {timeout: 1s, interval: 0s, unhealthyThreshold: 1, healthyThreshold: 1, tcpHealthCheck: {}}\n"),
        "healthChecks[0].interval: is required and must be greater than 0", "interval 0 refused");
    REJ(US("  - {timeout: 1s, interval: 1s, healthyThreshold: 1, tcpHealthCheck: {}}\n"),
        "healthChecks[0].unhealthyThreshold: is required", "unhealthyThreshold required");
    REJ(US("  - {timeout: 1s, interval: 1s, unhealthyThreshold: 1, healthyThreshold: 0, tcpHealthCheck: {}}\n"),
        "healthChecks[0].healthyThreshold: is required and must be at least 1", "healthyThreshold 0 refused");
    REJ(US("  - {timeout: 1s, interval: 1s, unhealthyThreshold: 1, healthyThreshold: 1}\n"),
        "a health checker is required", "no checker refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h}, tcpHealthCheck: {}}\n"), "healthChecks[0]", "two checkers refused");
    REJ(US(HC_BASE "grpcHealthCheck: {}}\n"), "healthChecks[0].grpcHealthCheck is not supported yet", "grpc refused");
    REJ(US(HC_BASE "customHealthCheck: {name: x}}\n"), "healthChecks[0].customHealthCheck is not supported yet",
        "custom refused");
    REJ(US(HC_BASE "tcpHealthCheck: {send: {text: '01'}}}\n"), "healthChecks[0].tcpHealthCheck.send is not supported yet",
        "tcp send refused");
    REJ(US(HC_BASE "tcpHealthCheck: {receive: [{text: '01'}]}}\n"),
        "healthChecks[0].tcpHealthCheck.receive is not supported yet", "tcp receive refused");
    REJ(US(HC_BASE "httpHealthCheck: {host: h}}\n"), "healthChecks[0].httpHealthCheck.path: is required",
        "http path required");
    REJ(US(HC_BASE "httpHealthCheck: {path: healthz}}\n"), "path: must begin with '/'", "relative path refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: \"/a b\"}}\n"), "byte 0x20 is not allowed", "space in path refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, host: \"a/b\"}}\n"), "httpHealthCheck.host: 'a/b' is not a host name",
        "bad host refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, method: HEAD}}\n"),
        "healthChecks[0].httpHealthCheck.method is not supported yet", "method refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, requestHeadersToAdd: []}}\n"),
        "httpHealthCheck.requestHeadersToAdd is not supported yet", "request headers refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, useHttp2: true}}\n"), "httpHealthCheck.useHttp2: true is not supported",
        "useHttp2 true refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, someFutureField: 1}}\n"),
        "httpHealthCheck.someFutureField is not supported yet", "unknown http field named");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, expectedStatuses: [{start: 200}]}}\n"),
        "expectedStatuses[0].end: is required", "range end required");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, expectedStatuses: [{start: 99, end: 200}]}}\n"),
        "start: 99 is outside [100, 600)", "range start below 100 refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, expectedStatuses: [{start: 300, end: 300}]}}\n"),
        "end: 300 must be above start 300", "empty range refused");
    REJ(US(HC_BASE "httpHealthCheck: {path: /h, expectedStatuses: [{start: 200, end: 601}]}}\n"), "end",
        "range end above 600 refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}, noTrafficInterval: 60s}\n"), "healthChecks[0].noTrafficInterval is not supported yet",
        "noTrafficInterval refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}, unhealthyInterval: 1s}\n"), "unhealthyInterval is not supported yet",
        "unhealthyInterval refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}, altPort: 81}\n"), "healthChecks[0].altPort is not supported yet", "altPort refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}, reuseConnection: true}\n"), "reuseConnection: true is not supported yet",
        "reuseConnection true refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}, tlsOptions: {}}\n"), "healthChecks[0].tlsOptions is not supported yet",
        "tlsOptions refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}, eventLogPath: /tmp/x}\n"), "healthChecks[0].eventLogPath is not supported yet",
        "eventLogPath refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}, intervalJitter: -1s}\n"), "intervalJitter", "negative jitter refused");
    /* loadBalancerConfig.healthyPanicThreshold: a percentage */
    u = dec(US(HC_BASE "tcpHealthCheck: {}}\n") "loadBalancerConfig: {healthyPanicThreshold: 30.5}\n");
    CHECK(u && u->lb.has_panic && u->lb.panic_pct == 30.5, "healthyPanicThreshold 30.5 (%s)", err);
    u = dec(US(HC_BASE "tcpHealthCheck: {}}\n") "loadBalancerConfig: {healthyPanicThreshold: 0}\n");
    CHECK(u && u->lb.has_panic && u->lb.panic_pct == 0, "healthyPanicThreshold 0 (%s)", err);
    u = dec("metadata: {name: x}\nstatic: {hosts: [{addr: 10.0.0.1, port: 80}]}\nloadBalancerConfig: {healthyPanicThreshold: 100}\n");
    CHECK(u && u->lb.panic_pct == 100, "healthyPanicThreshold without healthChecks accepted (%s)", err);
    REJ(US(HC_BASE "tcpHealthCheck: {}}\n") "loadBalancerConfig: {healthyPanicThreshold: 101}\n",
        "loadBalancerConfig.healthyPanicThreshold: must be a number from 0 to 100", "101 %% refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}}\n") "loadBalancerConfig: {healthyPanicThreshold: -1}\n",
        "healthyPanicThreshold: must be a number from 0 to 100", "negative refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}}\n") "loadBalancerConfig: {healthyPanicThreshold: half}\n",
        "healthyPanicThreshold: expected a percentage", "text refused");
    REJ(US(HC_BASE "tcpHealthCheck: {}}\n") "loadBalancerConfig: {healthyPanicThreshold: .nan}\n",
        "healthyPanicThreshold", "NaN refused");
    /* TLS upstreams: http checks refused, tcp accepted */
    REJ("metadata: {name: x}\nstatic: {hosts: [{addr: 10.0.0.1, port: 443}]}\nhealthChecks:\n" HC_BASE
        "httpHealthCheck: {path: /h}}\n",
        "healthChecks[0].httpHealthCheck: is not supported on an Upstream with TLS", "http check on TLS refused");
    u = dec("metadata: {name: x}\nstatic: {hosts: [{addr: 10.0.0.1, port: 443}]}\nhealthChecks:\n" HC_BASE
            "tcpHealthCheck: {}}\n");
    CHECK(u != NULL, "tcp check on a TLS upstream accepted (%s)", err);
    u = dec("metadata: {name: x}\nconsul: {serviceName: s}\nhealthChecks:\n" HC_BASE "httpHealthCheck: {path: /h}}\n");
    CHECK(u != NULL && u->hcs.n == 1, "http check on a consul upstream accepted (%s)", err);
}

/* The snapshot's copy: host defaults to Gloo's cluster name, statuses copied. */
static void test_snapshot(void)
{
    const char *dir = tdir_new("health");
    tdir_put("upstreams/gloo-system/x.yaml", US(HC_BASE "httpHealthCheck: {path: /healthz, expectedStatuses: "
                                                         "[{start: 200, end: 204}]}}\n"));
    tdir_put("upstreams/gloo-system/plain.yaml", "metadata: {name: plain}\nstatic: {hosts: [{addr: 10.0.0.2, port: 80}]}\n");
    tdir_put("upstreams/gloo-system/tcp.yaml", "metadata: {name: tcp}\nstatic: {hosts: [{addr: 10.0.0.3, port: 80}]}\n"
                                               "healthChecks:\n" HC_BASE "tcpHealthCheck: {}}\n"
                                               "loadBalancerConfig: {healthyPanicThreshold: 0}\n");
    rv_settings_t s;
    char e[512];
    rv_snapshot_t *snap = NULL;
    rv_store_t *st = NULL;
    if (rv_settings_load(dir, NULL, &s, e, sizeof(e)) != 0) {
        CHECK(0, "settings: %s", e);
        return;
    }
    st = rv_store_new();
    CHECK(rv_store_scan_dir(st, &s) >= 0 && rv_snapshot_build(st, &s, &snap) == 0, "snapshot builds");
    const rv_cluster_t *up = NULL, *plain = NULL, *tcp = NULL;
    for (uint32_t i = 0; snap && i < snap->nclusters; i++) {
        const rv_cluster_t *c = &snap->clusters[i];
        if (rv_str_eq(c->name, RV_STR("gloo-system.x")))
            up = c;
        else if (rv_str_eq(c->name, RV_STR("gloo-system.plain")))
            plain = c;
        else if (rv_str_eq(c->name, RV_STR("gloo-system.tcp")))
            tcp = c;
    }
    CHECK(up && up->hc && up->hc->http, "snapshot: the checked cluster has its check");
    if (up && up->hc) {
        CHECK_STRN(up->hc->host.ptr, up->hc->host.len, "x_gloo-system", "snapshot: Host defaults to <name>_<namespace>");
        CHECK_STRN(up->hc->path.ptr, up->hc->path.len, "/healthz", "snapshot: path");
        CHECK(up->hc->nstatuses == 1 && up->hc->statuses[0].start == 200 && up->hc->statuses[0].end == 204,
              "snapshot: statuses");
        CHECK(up->hc->interval_ms == 200 && up->hc->timeout_ms == 1000 && up->hc->unhealthy_threshold == 3 &&
                  up->hc->healthy_threshold == 2, "snapshot: timing and thresholds");
        CHECK(up->hc->panic_pct == 50, "snapshot: panic threshold defaults to 50 %%");
    }
    CHECK(plain && !plain->hc, "snapshot: an Upstream without healthChecks has no check");
    CHECK(tcp && tcp->hc && !tcp->hc->http && tcp->hc->panic_pct == 0, "snapshot: tcp check, healthyPanicThreshold 0");
    CHECK(snap && rv_snapshot_has_health_checks(snap), "snapshot: has health checks");
    CHECK(snap && strstr(snap->config_json, "\"healthCheck\"") && strstr(snap->config_json, "\"x_gloo-system\""),
          "config dump shows the check");
    json_error_t je;
    json_t *doc = snap ? json_loads(snap->config_json, 0, &je) : NULL;
    CHECK(doc != NULL, "config dump is valid JSON (%s)", doc ? "" : je.text);
    json_t *cls = json_object_get(doc, "clusters");
    int found = 0;
    for (size_t i = 0; i < json_array_size(cls); i++) {
        json_t *hcj = json_object_get(json_array_get(cls, i), "healthCheck");
        json_t *p = json_object_get(hcj, "healthyPanicThreshold");
        if (p && json_is_number(p))
            found |= json_number_value(p) == 50 ? 1 : json_number_value(p) == 0 ? 2 : 0;
    }
    CHECK(found == 3, "dump: healthyPanicThreshold 50 (default) and 0");
    json_decref(doc);
    rv_snapshot_release(snap);
    rv_store_free(st);
    rv_settings_free(&s);
    tdir_remove();
}

static void test_thresholds(void)
{
    rv_hc_cfg_t cfg = { .unhealthy_threshold = 3, .healthy_threshold = 2 };
    rv_hc_state_t st = { 0 };
    CHECK(!st.healthy && !st.checked, "new endpoint: unhealthy, unchecked");
    CHECK(rv_hc_apply(&st, &cfg, RV_HC_OK) && st.healthy, "first success: healthy at once (Envoy)");
    CHECK(!rv_hc_apply(&st, &cfg, RV_HC_NETWORK) && st.healthy, "1 network failure of 3: still healthy");
    CHECK(!rv_hc_apply(&st, &cfg, RV_HC_TIMEOUT) && st.healthy, "2 of 3 (a timeout counts): still healthy");
    CHECK(!rv_hc_apply(&st, &cfg, RV_HC_OK) && st.healthy, "a success resets the failure count");
    CHECK(!rv_hc_apply(&st, &cfg, RV_HC_NETWORK) && !rv_hc_apply(&st, &cfg, RV_HC_NETWORK) && st.healthy,
          "2 more failures: still healthy");
    CHECK(rv_hc_apply(&st, &cfg, RV_HC_TIMEOUT) && !st.healthy, "3rd consecutive failure: unhealthy");
    CHECK(!rv_hc_apply(&st, &cfg, RV_HC_OK) && !st.healthy, "1 success of 2: still unhealthy");
    CHECK(!rv_hc_apply(&st, &cfg, RV_HC_NETWORK) && !st.healthy, "a failure resets the success count");
    CHECK(!rv_hc_apply(&st, &cfg, RV_HC_OK) && !st.healthy, "1 success of 2 again");
    CHECK(rv_hc_apply(&st, &cfg, RV_HC_OK) && st.healthy, "2nd consecutive success: healthy");
    CHECK(rv_hc_apply(&st, &cfg, RV_HC_BAD_STATUS) && !st.healthy, "an unexpected status: unhealthy at once");

    rv_hc_state_t n = { 0 };
    CHECK(!rv_hc_apply(&n, &cfg, RV_HC_BAD_STATUS) && !n.healthy && n.checked, "first check fails: stays unhealthy");
    CHECK(!rv_hc_apply(&n, &cfg, RV_HC_OK) && !n.healthy, "after a failed first check, healthyThreshold applies");
    CHECK(rv_hc_apply(&n, &cfg, RV_HC_OK) && n.healthy, "... and is met");

    rv_hc_cfg_t one = { .unhealthy_threshold = 1, .healthy_threshold = 1 };
    rv_hc_state_t o = { .healthy = true, .checked = true };
    CHECK(rv_hc_apply(&o, &one, RV_HC_NETWORK) && !o.healthy, "threshold 1: one failure");
    CHECK(rv_hc_apply(&o, &one, RV_HC_OK) && o.healthy, "threshold 1: one success");
}

static void test_statuses_and_panic(void)
{
    rv_hc_cfg_t d = { 0 };
    CHECK(rv_hc_status_ok(&d, 200) && !rv_hc_status_ok(&d, 204) && !rv_hc_status_ok(&d, 503),
          "default: 200 only");
    rv_hc_range_t r[2] = { { 200, 300 }, { 404, 405 } };
    rv_hc_cfg_t c = { .statuses = r, .nstatuses = 2 };
    CHECK(rv_hc_status_ok(&c, 200) && rv_hc_status_ok(&c, 299) && !rv_hc_status_ok(&c, 300), "[200, 300) half open");
    CHECK(rv_hc_status_ok(&c, 404) && !rv_hc_status_ok(&c, 405) && !rv_hc_status_ok(&c, 199), "[404, 405)");
    CHECK(!rv_hc_panic(1, 2, 50), "1 of 2 healthy (50 %%): no panic");
    CHECK(rv_hc_panic(1, 3, 50), "1 of 3 healthy (33 %%): panic");
    CHECK(rv_hc_panic(0, 1, 50) && rv_hc_panic(0, 2, 50), "none healthy: panic");
    CHECK(!rv_hc_panic(2, 3, 50) && !rv_hc_panic(3, 3, 50), "2 or 3 of 3: no panic");
    CHECK(!rv_hc_panic(0, 0, 50), "no endpoint: no panic");
    CHECK(rv_hc_panic(49, 100, 50) && !rv_hc_panic(50, 100, 50), "49 %% panic, 50 %% not");
    CHECK(!rv_hc_panic(0, 3, 0), "threshold 0: never panic, even with none healthy");
    CHECK(rv_hc_panic(2, 3, 70) && !rv_hc_panic(3, 4, 70), "threshold 70: 2 of 3 panic, 3 of 4 not");
    CHECK(rv_hc_panic(99, 100, 100) && !rv_hc_panic(100, 100, 100), "threshold 100: any unhealthy endpoint");
    CHECK(rv_hc_panic(1, 4, 25.5) && !rv_hc_panic(2, 4, 25.5), "a decimal threshold");
}

/* The filter with a checker that knows nothing yet: every endpoint counts as unhealthy, so a
 * checked cluster is in panic and serves all of them (nothing is left out). */
static void test_filter_unknown(void)
{
    rv_snapshot_t *snap = calloc(1, sizeof(*snap));
    rv_arena_init(&snap->arena, 1024);
    atomic_init(&snap->refs, 1);
    rv_endpoint_t eps[2] = { { .weight = 1 }, { .weight = 1 } };
    for (int i = 0; i < 2; i++) {
        struct sockaddr_in *a = (struct sockaddr_in *)&eps[i].addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)(8000 + i));
        a->sin_addr.s_addr = htonl(0x7f000001);
        eps[i].addrlen = sizeof(*a);
    }
    rv_hc_cfg_t hc = { .timeout_ms = 100, .interval_ms = 60000, .unhealthy_threshold = 1, .healthy_threshold = 1,
                       .panic_pct = 50 };
    rv_cluster_t cl = { .name = RV_STR("gloo-system.u"), .eps = eps, .neps = 2, .total_weight = 2, .hc = &hc };
    snap->clusters = &cl;
    snap->nclusters = 1;
    rv_endpoint_set_t *out = (rv_endpoint_set_t *)1;
    CHECK(rv_health_filter(NULL, snap, NULL, 2, &out) == 0 && out == NULL, "no checker: nothing filtered");
    rv_health_t *h = rv_health_start();
    CHECK(h != NULL, "checker starts");
    if (h) {
        out = (rv_endpoint_set_t *)1;
        CHECK(rv_health_filter(h, snap, NULL, 2, &out) == 0 && out == NULL,
              "unknown endpoints are unhealthy: panic, nothing left out");
        CHECK(rv_health_set_targets(h, &cl, 1) == 0, "targets handed over");
        rv_health_stop(h);
    }
    /* made by hand (no snapshot build behind it): freed by hand */
    rv_arena_free(&snap->arena);
    free(snap);
}

/* The heap against a brute-force order: pushes, removals from anywhere, pops in due order,
 * positions kept in idx. */
static void test_heap(void)
{
    enum { N = 1000 };
    static rv_hc_timer_t t[N];
    rv_hc_heap_t q = { 0 };
    uint64_t x = 88172645463325252ULL;
    CHECK(rv_hc_heap_top(&q) == NULL && rv_hc_heap_pop(&q) == NULL, "heap: empty");
    CHECK(rv_hc_heap_reserve(&q, N) == 0 && q.cap >= N, "heap: room reserved");
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t[i].due = (int64_t)(x % 500);      /* many equal keys */
        t[i].idx = RV_HC_NOT_QUEUED;
        rv_hc_heap_push(&q, &t[i]);
    }
    CHECK_INT(q.n, N, "heap: all pushed");
    rv_hc_heap_push(&q, &t[0]);
    CHECK_INT(q.n, N, "heap: a queued timer is not pushed twice");
    bool idx_ok = true;
    for (uint32_t i = 0; i < q.n; i++)
        idx_ok &= q.v[i]->idx == i;
    CHECK(idx_ok, "heap: every timer knows its position");
    int removed = 0;
    for (int i = 0; i < N; i += 3) {
        rv_hc_heap_remove(&q, &t[i]);
        removed++;
    }
    rv_hc_heap_remove(&q, &t[0]);   /* not queued any more: nothing */
    CHECK_INT(q.n, N - removed, "heap: removals from anywhere");
    CHECK(t[0].idx == RV_HC_NOT_QUEUED && t[3].idx == RV_HC_NOT_QUEUED, "heap: a removed timer is out");
    int64_t last = -1;
    int popped = 0;
    bool order = true, none_removed = true;
    rv_hc_timer_t *p;
    while ((p = rv_hc_heap_pop(&q))) {
        order &= p->due >= last;
        last = p->due;
        none_removed &= (p - t) % 3 != 0;
        popped++;
    }
    CHECK(order && none_removed && popped == N - removed, "heap: pops in due order, only the queued ones");
    /* interleaved: a timer re-queued with a later due comes after the rest */
    for (int i = 0; i < 10; i++) {
        t[i].due = i;
        t[i].idx = RV_HC_NOT_QUEUED;
        rv_hc_heap_push(&q, &t[i]);
    }
    p = rv_hc_heap_pop(&q);
    p->due = 100;
    rv_hc_heap_push(&q, p);
    CHECK(rv_hc_heap_top(&q) == &t[1], "heap: next due after a re-queue");
    while (q.n > 1)
        rv_hc_heap_pop(&q);
    CHECK(rv_hc_heap_pop(&q) == &t[0] && q.n == 0, "heap: the re-queued timer last");
    rv_hc_heap_free(&q);
    CHECK(q.v == NULL && q.cap == 0, "heap: freed");
}

/* The spread of first checks and the budget asked for. */
static void test_spread_and_want(void)
{
    CHECK_INT(rv_hc_spread_ms(0, 1, 1000), 0, "spread: a lone new endpoint at once");
    CHECK_INT(rv_hc_spread_ms(0, 400, 1000), 0, "spread: the first at once");
    CHECK_INT(rv_hc_spread_ms(1, 4, 1000), 250, "spread: evenly");
    CHECK_INT(rv_hc_spread_ms(399, 400, 1000), 997, "spread: the last within the interval");
    bool within = true, apart = true;
    int64_t prev = -1;
    for (uint32_t k = 0; k < 3000; k++) {
        int64_t d = rv_hc_spread_ms(k, 3000, 2000);
        within &= d >= 0 && d < 2000;
        apart &= d >= prev;
        prev = d;
    }
    CHECK(within && apart, "spread: 3000 endpoints over a 2 s interval, in order");
    CHECK_INT(rv_hc_spread_ms(5, 10, 86400000LL * 30), 86400000LL * 15, "spread: a 30-day interval, no overflow");
    CHECK_INT(rv_hc_want_inflight(0), RV_HC_INFLIGHT_MIN, "want: at least the minimum");
    CHECK_INT(rv_hc_want_inflight(64), 64, "want: 64 endpoints");
    CHECK_INT(rv_hc_want_inflight(65), 128, "want: a power of two above");
    CHECK_INT(rv_hc_want_inflight(400), 512, "want: 400 endpoints");
    CHECK_INT(rv_hc_want_inflight(100000), RV_HC_INFLIGHT_MAX, "want: at most the maximum");
}

/* The descriptor budget's arithmetic (core/fdlimit.h), and one real call that raises the
 * soft limit of this process. */
static void test_fd_budget(void)
{
    uint64_t to = 0;
    CHECK_INT(rv_fd_budget_calc(1024, UINT64_MAX, 512, 0, 1024, 8, &to), 512, "budget: raised room for all");
    CHECK_INT(to, 1536, "budget: soft limit raised by want");
    CHECK_INT(rv_fd_budget_calc(UINT64_MAX, UINT64_MAX, 512, 0, 1024, 8, &to), 512, "budget: no limit");
    CHECK_INT(rv_fd_budget_calc(8192, 8192, 512, 0, 1024, 8, &to), 512, "budget: room enough");
    CHECK_INT(to, 8192, "budget: nothing raised");
    CHECK_INT(rv_fd_budget_calc(256, 256, 512, 0, 1024, 8, &to), 64, "budget: hard 256, a quarter");
    CHECK_INT(to, 256, "budget: hard limit, nothing raised");
    CHECK_INT(rv_fd_budget_calc(1024, 3000, 2000, 0, 1024, 8, &to), 3000 - 1024,
              "budget: raised to the hard limit, what fits after the reserve");
    CHECK_INT(to, 3000, "budget: raised up to the hard limit");
    CHECK_INT(rv_fd_budget_calc(256, 256, 1000, 128, 1024, 8, &to), 64, "budget: discovery's case, a quarter");
    CHECK_INT(rv_fd_budget_calc(16, 16, 512, 0, 1024, 8, &to), 8, "budget: never below min");
    CHECK_INT(rv_fd_budget_calc(4000, 4000, 16, 0, 1024, 8, &to), 16, "budget: never above want");
    struct rlimit rl, was;
    if (getrlimit(RLIMIT_NOFILE, &was) != 0 || (was.rlim_max != RLIM_INFINITY && was.rlim_max < 4096)) {
        CHECK(1, "# SKIP hard open files limit below 4096");
        return;
    }
    rl = was;
    rl.rlim_cur = 300;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "soft limit lowered to 300");
    CHECK_INT(rv_fd_budget("test", "things", 100, 0, 1024, 8), 100, "budget: real limits, raised room");
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur == 400, "budget: soft limit raised to 300 + 100");
    setrlimit(RLIMIT_NOFILE, &was);
}

/* Panic lines: the first change at once, the flapping held back and logged once the window is
 * over with the count and the last state. */
static void test_panic_log(void)
{
    rv_hc_plog_t p = { 0 };
    uint32_t n = 0;
    CHECK(rv_hc_plog_change(&p, true, 1000, &n) && n == 1, "plog: entering panic logged at once");
    CHECK(!rv_hc_plog_change(&p, false, 1020, &n), "plog: leaving 20 ms later held back");
    CHECK(!rv_hc_plog_change(&p, true, 1043, &n), "plog: entering again held back");
    CHECK(!rv_hc_plog_flush(&p, 5000, &n), "plog: nothing flushed inside the window");
    CHECK(rv_hc_plog_flush(&p, 1000 + RV_HC_PANIC_LOG_MS, &n) && n == 2 && p.state, "plog: flushed: 2 changes, in panic");
    CHECK(!rv_hc_plog_flush(&p, 1000 + 3 * RV_HC_PANIC_LOG_MS, &n), "plog: nothing more to flush");
    CHECK(!rv_hc_plog_change(&p, false, 1000 + RV_HC_PANIC_LOG_MS + 5, &n), "plog: a change right after a flush waits");
    CHECK(rv_hc_plog_change(&p, true, 1000 + 3 * RV_HC_PANIC_LOG_MS, &n) && n == 2 && p.state,
          "plog: a later change logged at once with the one held back");
    CHECK(!rv_hc_plog_flush(&p, 1000 + 5 * RV_HC_PANIC_LOG_MS, &n), "plog: nothing held back");
}

/* A real checker (tcp connect) against a listening socket and a closed port: the healthy
 * endpoint stays, the other is left out, weights follow, and a raw discovery set's arrays are
 * shared with a reference held on it. */
static void test_filter_checked(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0), cfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
    socklen_t ll = sizeof(la);
    struct sockaddr_in ca = la;
    socklen_t cl_ = sizeof(ca);
    /* cfd: bound, never listening: connections to it are refused */
    bool ok = lfd >= 0 && cfd >= 0 && bind(lfd, (struct sockaddr *)&la, sizeof(la)) == 0 && listen(lfd, 16) == 0 &&
              getsockname(lfd, (struct sockaddr *)&la, &ll) == 0 && bind(cfd, (struct sockaddr *)&ca, sizeof(ca)) == 0 &&
              getsockname(cfd, (struct sockaddr *)&ca, &cl_) == 0;
    CHECK(ok, "a listening socket and a closed port");
    if (!ok)
        goto out;
    rv_snapshot_t *snap = calloc(1, sizeof(*snap));
    rv_arena_init(&snap->arena, 1024);
    atomic_init(&snap->refs, 1);
    rv_endpoint_t eps[2] = { { .weight = 3 }, { .weight = 5 } };
    memcpy(&eps[0].addr, &la, sizeof(la));
    eps[0].addrlen = sizeof(la);
    memcpy(&eps[1].addr, &ca, sizeof(ca));
    eps[1].addrlen = sizeof(ca);
    rv_hc_cfg_t hc = { .timeout_ms = 2000, .interval_ms = 50, .unhealthy_threshold = 1, .healthy_threshold = 1,
                       .panic_pct = 50 };
    rv_cluster_t cls[2] = {
        { .name = RV_STR("gloo-system.plain"), .eps = eps, .neps = 2, .total_weight = 8 },
        { .name = RV_STR("gloo-system.u"), .eps = eps, .neps = 2, .total_weight = 8, .hc = &hc, .index = 1 },
    };
    snap->clusters = cls;
    snap->nclusters = 2;
    rv_health_t *h = rv_health_start();
    CHECK(h && rv_health_set_targets(h, cls, 2) == 0, "checker started with targets");
    if (!h)
        goto free_snap;
    /* wait (bounded) for the flip of the listening endpoint */
    rv_endpoint_set_t *f = NULL;
    for (int i = 0; i < 100 && !f; i++) {
        struct pollfd p = { .fd = rv_health_fd(h), .events = POLLIN };
        poll(&p, 1, 100);
        rv_health_clear(h);
        if (rv_health_filter(h, snap, NULL, 7, &f) != 0)
            break;
    }
    CHECK(f != NULL, "a filtered set once the listening endpoint passed");
    if (f) {
        CHECK(f->version == 7 && f->snap == snap && !f->base && f->nclusters == 2, "set: version, snapshot, no base");
        CHECK(f->clusters[0].eps == eps && f->clusters[0].neps == 2, "unchecked cluster: shared as it is");
        CHECK(f->clusters[1].neps == 1 && f->clusters[1].total_weight == 3 &&
                  !memcmp(&f->clusters[1].eps[0].addr, &la, sizeof(la)), "checked cluster: the closed port left out, weight 3");
        CHECK(f->nendpoints == 3, "set: 3 endpoints served");
        CHECK(atomic_load(&snap->refs) == 2, "set holds the snapshot");
        rv_endpoint_set_release(f);
    }
    /* a raw (discovery) set: the filtered copy shares its arrays and holds it */
    rv_endpoint_set_t *raw = calloc(1, sizeof(*raw));
    rv_arena_init(&raw->arena, 256);
    atomic_init(&raw->refs, 1);
    rv_snapshot_ref(snap);
    raw->snap = snap;
    raw->clusters = cls;
    raw->nclusters = 2;
    raw->version = 8;
    f = NULL;
    CHECK(rv_health_filter(h, snap, raw, 9, &f) == 0 && f && f->base == raw && atomic_load(&raw->refs) == 2,
          "filtered copy of a raw set holds it");
    rv_endpoint_set_release(f);
    CHECK(atomic_load(&raw->refs) == 1, "released with the filtered set");
    raw->clusters = NULL;   /* cls is on the stack, not in raw's arena */
    rv_endpoint_set_release(raw);
    rv_health_stop(h);
free_snap:
    CHECK(atomic_load(&snap->refs) == 1, "every reference on the snapshot returned");
    rv_arena_free(&snap->arena);
    free(snap);
out:
    if (lfd >= 0)
        close(lfd);
    if (cfd >= 0)
        close(cfd);
}

/* The failures counted for the checker's cluster name (rv_health_prometheus), -1 when absent. */
static long long failures_of(const char *name)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -1;
    rv_health_prometheus(f);
    fclose(f);
    char key[200];
    snprintf(key, sizeof(key), "rivet_upstream_health_check_failures_total{upstream=\"%s\"} ", name);
    char *at = buf ? strstr(buf, key) : NULL;
    long long v = at ? strtoll(at + strlen(key), NULL, 10) : -1;
    free(buf);
    return v;
}

/* A check rivet cannot run - its socket() fails because this process is at its open files
 * limit - is not the endpoint's failure: two healthy endpoints (listening sockets, checked every
 * 50 ms, unhealthyThreshold 1) stay healthy, no failure is counted, and a line says the check
 * was not run. */
static void test_not_run(void)
{
    int l[2] = { -1, -1 };
    rv_endpoint_t eps[2] = { { .weight = 1 }, { .weight = 1 } };
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
        socklen_t al = sizeof(a);
        l[i] = socket(AF_INET, SOCK_STREAM, 0);
        /* never accepted: every check's connection stays queued (a few dozen here) */
        ok &= l[i] >= 0 && bind(l[i], (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l[i], 1024) == 0 &&
              getsockname(l[i], (struct sockaddr *)&a, &al) == 0;
        memcpy(&eps[i].addr, &a, sizeof(a));
        eps[i].addrlen = sizeof(a);
    }
    FILE *logf = tmpfile();
    int saved = dup(2);
    CHECK(ok && logf && saved >= 0, "two listening sockets, a log file");
    if (!ok || !logf || saved < 0)
        goto out;
    rv_snapshot_t *snap = calloc(1, sizeof(*snap));
    rv_arena_init(&snap->arena, 1024);
    atomic_init(&snap->refs, 1);
    rv_hc_cfg_t hc = { .timeout_ms = 2000, .interval_ms = 50, .unhealthy_threshold = 1, .healthy_threshold = 1,
                       .panic_pct = 50 };
    rv_cluster_t cl = { .name = RV_STR("gloo-system.nr"), .eps = eps, .neps = 2, .total_weight = 2, .hc = &hc };
    snap->clusters = &cl;
    snap->nclusters = 1;
    rv_health_t *h = rv_health_start();
    CHECK(h && rv_health_set_targets(h, &cl, 1) == 0, "checker started with targets");
    if (!h)
        goto free_snap;
    /* both healthy: the gauge says 2 (bounded wait) */
    bool both = false;
    for (int i = 0; i < 100 && !both; i++) {
        struct pollfd p = { .fd = rv_health_fd(h), .events = POLLIN };
        poll(&p, 1, 100);
        rv_health_clear(h);
        rv_endpoint_set_t *f = NULL;
        both = rv_health_filter(h, snap, NULL, 3, &f) == 0 && f == NULL && failures_of("gloo-system.nr") == 0;
        if (f)
            rv_endpoint_set_release(f);   /* one healthy, the other's first check still out */
        if (both) {
            /* NULL is also the answer of the start's panic: wait for two results */
            char *buf = NULL;
            size_t len = 0;
            FILE *m = open_memstream(&buf, &len);
            if (m) {
                rv_health_prometheus(m);
                fclose(m);
            }
            both = buf && strstr(buf, "rivet_upstream_healthy_endpoints{upstream=\"gloo-system.nr\"} 2\n");
            free(buf);
        }
    }
    CHECK(both, "both endpoints healthy, no failure");
    /* this process at its limit: the lowest free descriptor is the soft limit (the checker's
     * next socket() fails with EMFILE); the log goes to the file meanwhile */
    fflush(stderr);
    dup2(fileno(logf), 2);
    int probe = dup(0);
    struct rlimit was, rl;
    bool lowered = probe >= 0 && getrlimit(RLIMIT_NOFILE, &was) == 0;
    if (probe >= 0)
        close(probe);
    rl = was;
    rl.rlim_cur = (rlim_t)probe;
    lowered = lowered && setrlimit(RLIMIT_NOFILE, &rl) == 0;
    bool seen = false;
    for (int i = 0; i < 200 && lowered && !seen; i++) {
        char buf[8192];
        ssize_t n = pread(fileno(logf), buf, sizeof(buf) - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        seen = strstr(buf, "not run") && strstr(buf, "Too many open files");
        if (!seen)
            poll(NULL, 0, 50);
    }
    long long fails = failures_of("gloo-system.nr");
    rv_endpoint_set_t *f = (rv_endpoint_set_t *)1;
    int frc = rv_health_filter(h, snap, NULL, 4, &f);
    if (lowered)
        setrlimit(RLIMIT_NOFILE, &was);
    dup2(saved, 2);
    CHECK(lowered, "soft open files limit lowered to the lowest free descriptor (%d)", probe);
    CHECK(seen, "a check not run was logged, with its reason");
    CHECK_INT(fails, 0, "no failure counted against the endpoints");
    CHECK(frc == 0 && f == NULL, "both endpoints still served");
    if (frc == 0 && f)
        rv_endpoint_set_release(f);
    rv_health_stop(h);
free_snap:
    rv_arena_free(&snap->arena);
    free(snap);
out:
    if (saved >= 0)
        close(saved);
    if (logf)
        fclose(logf);
    for (int i = 0; i < 2; i++)
        if (l[i] >= 0)
            close(l[i]);
}

int main(void)
{
    rv_arena_init(&arena, 0);
    test_decode();
    test_snapshot();
    test_thresholds();
    test_statuses_and_panic();
    test_filter_unknown();
    test_filter_checked();
    test_heap();
    test_spread_and_want();
    test_fd_budget();
    test_panic_log();
    test_not_run();
    rv_arena_free(&arena);
    TEST_DONE();
}
