"""The admin listener: /ready, /metrics (Prometheus text), /config_dump, /status."""
import json
import re
import socket
import time

import pytest

from harness import NS, metric_names, metric_sum, parse_metrics, port_is_free, request, route, wait_for

REQUIRED_METRICS = [
    "rivet_requests_total",
    "rivet_request_duration_seconds_bucket",
    "rivet_upstream_connect_failures_total",
    "rivet_upstream_retries_total",
    "rivet_upstream_timeouts_total",
    "rivet_downstream_connections_active",
    "rivet_config_reloads_total",
    "rivet_config_errors",
]


def test_ready(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    r = rv.admin_get("/ready")
    assert r.status == 200, r


def test_ready_means_serving(cfg, rivet):
    """As soon as /ready says 200, the data path answers (no further wait)."""
    port = cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "serving"))])
    rv = rivet(cfg, ready=False)
    deadline = time.monotonic() + 30
    while True:
        assert rv.alive(), rv.stderr()
        try:
            if rv.admin_get("/ready", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.02)
    r = request(port, "/")
    assert (r.status, r.body) == (200, b"serving")


def test_unknown_admin_path_404(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    assert rv.admin_get("/no-such-admin-page").status == 404


def test_default_admin_address(cfg, rivet):
    # as rivet binds it (SO_REUSEADDR): the TIME_WAIT connections an earlier run's admin
    # listener left on 19000 do not make it busy
    if not port_is_free(19000, reuse=True):
        pytest.skip("127.0.0.1:19000 is in use")
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg, admin=False, admin_port=19000, ready=False)
    try:
        rv.wait_ready()
    except AssertionError:
        # the fixed port is shared with anything else on the machine: taken between the check
        # above and rivet's bind, it is the precondition that failed, not rivet
        if "19000" in rv.stderr() and "in use" in rv.stderr() and not port_is_free(19000, reuse=True):
            pytest.skip("127.0.0.1:19000 was taken before rivet bound it: %s" % rv.stderr()[-300:])
        raise
    assert rv.admin_get("/ready").status == 200


def start_proxied(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    return rv, b


def test_metrics_exposition(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    assert rv.get("/m").status == 200
    r = rv.admin_get("/metrics")
    assert r.status == 200
    assert (r.header("content-type") or "").startswith("text/plain"), r.headers
    samples = parse_metrics(r.text)
    names = metric_names(samples)
    # a labelled counter may have no series before its first event: its TYPE line must be there
    declared = set(re.findall(r"^# TYPE (\S+) ", r.text, re.M))
    missing = [m for m in REQUIRED_METRICS if m not in names and m not in declared]
    assert not missing, (missing, r.text[:3000])
    assert "rivet_request_duration_seconds_bucket" in names
    # the request counter carries the documented labels
    reqs = [lab for n, lab, _ in samples if n == "rivet_requests_total"]
    assert reqs
    for lab in reqs:
        for k in ("virtual_service", "route", "upstream", "code_class"):
            assert k in lab, (k, lab)
    # TYPE lines for the main families
    assert "# TYPE rivet_requests_total counter" in r.text
    assert "# TYPE rivet_request_duration_seconds histogram" in r.text


def test_requests_total_counts(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    before = rv.metrics()
    for i in range(7):
        assert rv.get("/ok/%d" % i).status == 200
    for i in range(3):
        assert rv.get("/status/404").status == 404
    for i in range(2):
        assert rv.get("/status/503").status == 503

    def delta(cls):
        return (metric_sum(rv.metrics(), "rivet_requests_total", code_class=cls)
                - metric_sum(before, "rivet_requests_total", code_class=cls))
    # a worker counts a request when it ends, just after the response's last byte went out: the
    # client can read the response before the count moves, so wait for every class (the last
    # request sent was a 5xx; waiting for the 2xx alone left the 5xx count racing)
    wait_for(lambda: (delta("2xx"), delta("4xx"), delta("5xx")) == (7, 3, 2),
             msg="2xx/4xx/5xx counts +7/+3/+2 (now %r)" % ((delta("2xx"), delta("4xx"), delta("5xx")),))
    after = rv.metrics()
    # the 2xx series is labelled with our virtual service and upstream
    ours = metric_sum(after, "rivet_requests_total", code_class="2xx",
                      virtual_service=lambda v: "vs" in v, upstream=lambda v: "up" in v)
    assert ours >= 7, [s for s in after if s[0] == "rivet_requests_total"]


def test_latency_histogram(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    before = rv.metrics()
    for i in range(5):
        assert rv.get("/h/%d" % i).status == 200
    after = wait_for(lambda: (lambda m: m if metric_sum(m, "rivet_request_duration_seconds_bucket", le="+Inf")
                              - metric_sum(before, "rivet_request_duration_seconds_bucket", le="+Inf") >= 5
                              else None)(rv.metrics()), msg="histogram +Inf bucket to count 5 requests")
    # buckets are cumulative: non-decreasing in le, for every label set
    series = {}
    for n, lab, v in after:
        if n == "rivet_request_duration_seconds_bucket":
            key = tuple(sorted((k, x) for k, x in lab.items() if k != "le"))
            le = float("inf") if lab["le"] == "+Inf" else float(lab["le"])
            series.setdefault(key, []).append((le, v))
    assert series
    for key, pts in series.items():
        pts.sort()
        vals = [v for _, v in pts]
        assert vals == sorted(vals), (key, pts)
        assert pts[-1][0] == float("inf")
    assert "rivet_request_duration_seconds_count" in metric_names(after)
    assert "rivet_request_duration_seconds_sum" in metric_names(after)


def test_connect_failure_counter(cfg, closed_port, rivet):
    dead = closed_port()
    cfg.gateway()
    cfg.upstream("up", [dead])
    cfg.vs("vs", [route(upstream="up")])
    rv = rivet(cfg)
    before = metric_sum(rv.metrics(), "rivet_upstream_connect_failures_total")
    for _ in range(3):
        assert rv.get("/").status == 503
    wait_for(lambda: metric_sum(rv.metrics(), "rivet_upstream_connect_failures_total") - before >= 3,
             msg="connect failures +3")


def test_retry_counter(cfg, backend, rivet):
    def h(req, conn):
        with conn.backend.lock:
            conn.backend.counter += 1
            k = conn.backend.counter
        if k <= 2:
            conn.respond(503, "no")
            return True
        return False
    b = backend(handler=h)
    cfg.simple(b, route_options={"retries": {"retryOn": "5xx", "numRetries": 3}})
    rv = rivet(cfg)
    before = metric_sum(rv.metrics(), "rivet_upstream_retries_total")
    assert rv.get("/").status == 200
    wait_for(lambda: metric_sum(rv.metrics(), "rivet_upstream_retries_total") - before == 2,
             msg="retries +2")


def test_timeout_counter(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options={"timeout": "0.3s"})
    rv = rivet(cfg)
    before = metric_sum(rv.metrics(), "rivet_upstream_timeouts_total")
    assert rv.get("/delay/2000").status == 504
    wait_for(lambda: metric_sum(rv.metrics(), "rivet_upstream_timeouts_total") - before == 1,
             msg="timeouts +1")


def test_downstream_connections_gauge(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)

    def active():
        return metric_sum(rv.metrics(), "rivet_downstream_connections_active")
    # the readiness probe's connection may still be counted for a moment
    wait_for(lambda: active() == 0, msg="no active connection at the start")
    conns = []
    for i in range(3):
        c = rv.connect()
        assert request(rv.port, "/c%d" % i, conn=c).status == 200
        conns.append(c)
    wait_for(lambda: active() == 3, msg="3 active connections")
    for c in conns:
        c.close()
    wait_for(lambda: active() == 0, msg="active connections back to 0")


def test_config_errors_gauge(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    assert metric_sum(rv.metrics(), "rivet_config_errors") == 0
    cfg.write("virtualservices", "bad", "metadata: {name: bad, namespace: gloo-system}\nnotAField: 1\n")
    wait_for(lambda: metric_sum(rv.metrics(), "rivet_config_errors") == 1, msg="rivet_config_errors 1")
    cfg.remove("virtualservices", "bad")
    wait_for(lambda: metric_sum(rv.metrics(), "rivet_config_errors") == 0, msg="rivet_config_errors 0")


def test_config_dump(cfg, backend, rivet):
    b = backend()
    cfg.gateway()
    cfg.upstream("dump-upstream", [b])
    cfg.vs("dump-vs", [route(prefix="/dump-prefix", upstream="dump-upstream")], domains=["dump.example"])
    rv = rivet(cfg)
    r = rv.admin_get("/config_dump")
    assert r.status == 200
    doc = json.loads(r.body)
    text = json.dumps(doc)
    for needle in ("dump-upstream", "dump-vs", "/dump-prefix", "dump.example", str(b.port)):
        assert needle in text, (needle, text[:2000])
    cfg.vs("dump-vs", [route(prefix="/second-prefix", upstream="dump-upstream")], domains=["dump.example"])
    wait_for(lambda: "/second-prefix" in rv.admin_get("/config_dump").text, msg="config_dump to show the edit")
    assert "/dump-prefix" not in rv.admin_get("/config_dump").text


def test_status_contract(cfg, backend, rivet):
    b = backend()
    cfg.gateway("gw")
    cfg.upstream("up", [b])
    cfg.upstream_group("grp", [("up", 1)])
    cfg.route_table("rt", [route(prefix="/rt/x", upstream="up")])
    cfg.vs("vs", [route(prefix="/rt", delegate={"ref": {"name": "rt", "namespace": NS}}),
                  route(prefix="/g", group="grp")])
    cfg.vs("warn", [route(upstream="nowhere")], domains=["warn.test"])
    cfg.write("virtualservices", "rej", "metadata: {name: rej, namespace: gloo-system}\nwhat: 1\n")
    rv = rivet(cfg)
    r = rv.admin_get("/status")
    assert r.status == 200
    doc = json.loads(r.body)
    assert isinstance(doc, dict) and isinstance(doc.get("resources"), list), doc
    for res in doc["resources"]:
        for k in ("kind", "namespace", "name", "state", "reason"):
            assert k in res, (k, res)
        assert res["state"] in ("Pending", "Accepted", "Rejected", "Warning"), res
        assert isinstance(res["reason"], str)
    by = {(x["kind"], x["namespace"], x["name"]): x for x in doc["resources"]}
    for key in [("Gateway", NS, "gw"), ("Upstream", NS, "up"), ("UpstreamGroup", NS, "grp"),
                ("RouteTable", NS, "rt"), ("VirtualService", NS, "vs")]:
        assert key in by and by[key]["state"] == "Accepted", (key, by.get(key))
        assert by[key]["reason"] == "", by[key]
    assert by[("VirtualService", NS, "warn")]["state"] == "Warning"
    assert "nowhere" in by[("VirtualService", NS, "warn")]["reason"]
    assert by[("VirtualService", NS, "rej")]["state"] == "Rejected"
    assert "what" in by[("VirtualService", NS, "rej")]["reason"]


def test_admin_survives_garbage(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    s = socket.create_connection(("127.0.0.1", rv.admin_port), timeout=5)
    s.sendall(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
    try:
        s.recv(4096)
    except OSError:
        pass
    s.close()
    assert rv.admin_get("/ready").status == 200


def test_idle_admin_clients_do_not_block_probes(cfg, rivet):
    """Idle connections to the admin port (a stuck scraper, a port scan) must not hold up
    /ready or /metrics: each admin connection is served on its own."""
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    # An admin listener serving one connection at a time would answer the probes only after each
    # idle connection's 2 s socket timeout: 10 idle ones hold it for 20 s. The probes' 8 s
    # timeout tells the two apart with room for a slow (ASan, loaded) run.
    idle = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", rv.admin_port), timeout=5)
            idle.append(s)
        r = rv.admin_get("/ready", timeout=8)
        assert r.status == 200, r
        r = rv.admin_get("/metrics", timeout=8)
        assert r.status == 200, r
    finally:
        for s in idle:
            s.close()
