"""Active health checks (Upstream healthChecks[]): endpoints leave the traffic when their check
fails and come back when it passes, panic mode, tcpHealthCheck, refused fields, reloads.

Backends answer their check path from a per-backend switch (backend.state["hc"]): a status,
"hang" (no answer until the switch changes: a timeout for the checker) or None (200).
A consul Upstream with healthChecks composes both filters (Consul's passing checks, then the
active check) against the Consul double. Every wait is a wait_for with a generous bound;
nothing is timed."""
import os
import socket
import sys
import threading

from harness import NS, free_port, log_lines_with, metric_sum, request, rivet_bin, route, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from doubles.consul import ConsulDouble  # noqa: E402

HC_PATH = "/healthz"


def hc_backend(backend, name):
    """A Backend whose HC_PATH answers backend.state["hc"], or first the modes queued in
    backend.state["script"] (one per check); every answer's mode is appended to
    backend.state["answered"]. Anything else is echoed."""
    b = backend(name=name)
    b.state["hc"] = None
    b.state["wake"] = threading.Event()
    b.state["script"] = []
    b.state["answered"] = []

    def handler(req, conn):
        if req.path != HC_PATH:
            return False
        with b.lock:
            scripted = bool(b.state["script"])
            mode = b.state["script"].pop(0) if scripted else b.state["hc"]
            b.state["answered"].append(mode)
        if mode == "hang":
            # longer than the check's timeout; a scripted hang ends by itself, the switch's
            # when the switch changes (or the test ends)
            b.state["wake"].wait(1.0 if scripted else 5.0)
            conn.keep_open = False
            conn.close()
            return True
        conn.respond(status=mode or 200, body=b"hc")
        return True

    b.set_handler(handler)
    return b


def set_hc(b, mode):
    b.state["hc"] = mode
    if mode != "hang":
        ev = b.state["wake"]
        b.state["wake"] = threading.Event()
        ev.set()


def checks(b):
    return [r for r in b.requests if r.path == HC_PATH]


def http_hc(interval="0.2s", timeout="0.3s", unhealthy=2, healthy=2, **http):
    h = {"path": HC_PATH}
    h.update(http)
    return {"timeout": timeout, "interval": interval, "unhealthyThreshold": unhealthy,
            "healthyThreshold": healthy, "httpHealthCheck": h}


def served(rv, upstream="up", ns=NS):
    """Endpoint addresses of the upstream's cluster in /config_dump (what workers serve)."""
    for c in rv.config_dump()["clusters"]:
        if c["name"] == "%s.%s" % (ns, upstream):
            return sorted(e["address"] for e in c["endpoints"])
    raise AssertionError("cluster %s.%s not in /config_dump" % (ns, upstream))


def addr(b):
    return "%s:%d" % (b.host, b.port)


def hc_config(cfg, hosts, hc, name="up"):
    port = cfg.gateway()
    cfg.upstream(name, hosts, healthChecks=[hc])
    cfg.vs("vs", [route(prefix="/", upstream=name)])
    return port


def hit_only(rv, want, n=8):
    """n requests in a row are all answered by backend name want."""
    for _ in range(n):
        r = rv.get("/x")
        if r.status != 200 or r.header("x-backend") != want:
            return False
    return True


def healthy_gauge(rv, upstream="up"):
    return metric_sum(rv.metrics(), "rivet_upstream_healthy_endpoints", upstream="%s.%s" % (NS, upstream))


def test_http_check_takes_an_endpoint_out_and_back(cfg, backend, rivet):
    a, b = hc_backend(backend, "a"), hc_backend(backend, "b")
    hc_config(cfg, [a, b], http_hc())
    rv = rivet(cfg)
    wait_for(lambda: healthy_gauge(rv) == 2, 10, msg="both endpoints healthy")
    assert served(rv) == sorted([addr(a), addr(b)])
    # every endpoint starts unhealthy until its first check: that start is no panic worth a warning
    assert not log_lines_with(rv.stderr(), "panic mode")
    # the check's request: GET path, Host = Gloo's cluster name, Envoy's user agent
    req = checks(b)[0]
    assert req.method == "GET" and req.target == HC_PATH
    assert req.header("host") == "up_%s" % NS
    assert req.header("user-agent") == "Envoy/HC"

    set_hc(b, 503)   # an unexpected status: out at once (Envoy), no threshold
    wait_for(lambda: served(rv) == [addr(a)], 10, msg="b left out after its 503")
    wait_for(lambda: hit_only(rv, "a"), 10, msg="traffic only to a")
    assert log_lines_with(rv.stderr(), "upstream %s.up endpoint %s is unhealthy" % (NS, addr(b)), "HTTP status 503")
    assert healthy_gauge(rv) == 1
    assert metric_sum(rv.metrics(), "rivet_upstream_health_check_failures_total", upstream="%s.up" % NS) >= 1

    # one pass is not enough to come back (healthyThreshold 2): pass once, then 503 again
    n0 = len(b.state["answered"])
    with b.lock:
        b.state["script"] = [None]
    wait_for(lambda: len(b.state["answered"]) >= n0 + 3, 10, msg="the pass and two 503s after it")
    assert None in b.state["answered"][n0:n0 + 2], b.state["answered"][n0:]
    assert not log_lines_with(rv.stderr(), "endpoint %s is healthy" % addr(b)), "back after one pass"
    assert served(rv) == [addr(a)]

    n_before = len(checks(b))
    set_hc(b, None)
    wait_for(lambda: served(rv) == sorted([addr(a), addr(b)]), 10, msg="b back after healthyThreshold passes")
    # healthyThreshold 2: at least two passing checks after the 503s
    assert len(checks(b)) - n_before >= 2
    wait_for(lambda: any(rv.get("/x").header("x-backend") == "b" for _ in range(4)), 10, msg="traffic to b again")
    assert log_lines_with(rv.stderr(), "endpoint %s is healthy" % addr(b))


def test_timeouts_count_towards_unhealthy_threshold(cfg, backend, rivet):
    a, b = hc_backend(backend, "a"), hc_backend(backend, "b")
    hc_config(cfg, [a, b], http_hc(timeout="0.2s", unhealthy=3))
    rv = rivet(cfg)
    wait_for(lambda: healthy_gauge(rv) == 2, 10, msg="both endpoints healthy")
    # two timeouts in a row are below the threshold of 3: b stays in
    n0 = len(b.state["answered"])
    with b.lock:
        b.state["script"] = ["hang", "hang"]
    wait_for(lambda: len(b.state["answered"]) >= n0 + 4, 10, msg="two hung checks and two passes after them")
    assert "hang" in b.state["answered"][n0:n0 + 3]
    assert not log_lines_with(rv.stderr(), "endpoint %s is unhealthy" % addr(b)), "out after two timeouts"
    assert served(rv) == sorted([addr(a), addr(b)])
    n_before = len(b.started)
    set_hc(b, "hang")
    wait_for(lambda: served(rv) == [addr(a)], 15, msg="b left out after 3 timeouts")
    hung = [r for r in b.started[n_before:] if r.path == HC_PATH]
    assert len(hung) >= 3, "left out after %d timed-out checks (unhealthyThreshold 3)" % len(hung)
    assert log_lines_with(rv.stderr(), "endpoint %s is unhealthy" % addr(b), "no answer within 200 ms")
    set_hc(b, None)
    wait_for(lambda: served(rv) == sorted([addr(a), addr(b)]), 10, msg="b back")


def test_panic_mode_when_every_endpoint_fails(cfg, backend, rivet):
    a, b = hc_backend(backend, "a"), hc_backend(backend, "b")
    hc_config(cfg, [a, b], http_hc())
    rv = rivet(cfg)
    wait_for(lambda: healthy_gauge(rv) == 2, 10, msg="both endpoints healthy")
    set_hc(a, 500)
    wait_for(lambda: served(rv) == [addr(b)], 10, msg="a left out")
    set_hc(b, 500)
    # none healthy (below 50 %): Envoy's panic mode, every endpoint gets traffic
    wait_for(lambda: healthy_gauge(rv) == 0, 10, msg="no endpoint healthy")
    wait_for(lambda: served(rv) == sorted([addr(a), addr(b)]), 10, msg="panic: both served")
    seen = set()
    wait_for(lambda: seen.update([rv.get("/x").header("x-backend")]) or seen == {"a", "b"}, 10,
             msg="traffic to both in panic mode")
    assert log_lines_with(rv.stderr(), "upstream %s.up" % NS, "panic mode")
    set_hc(a, None)
    wait_for(lambda: served(rv) == [addr(a)], 10, msg="out of panic: only a")
    # at most one panic line per upstream per 10 s: leaving, within 10 s of entering, is logged
    # by the checker once that window is over
    wait_for(lambda: log_lines_with(rv.stderr(), "upstream %s.up" % NS, "leaves panic mode"), 20,
             msg="leaving panic logged")


def test_flapping_panic_is_logged_at_most_once_per_window(cfg, backend, rivet):
    """(RV4 review: 3 panic lines in 43 ms.) a always fails its check, b alternates fail/pass on
    every check (0.2 s): the upstream enters and leaves panic on each of b's checks. The first
    change is logged; the ones in the next 10 s are held back and logged in one line with
    their count once the window is over."""
    a, b = hc_backend(backend, "a"), hc_backend(backend, "b")
    set_hc(a, 500)
    b.state["script"] = [500, None] * 200
    hc_config(cfg, [a, b], http_hc(unhealthy=1, healthy=1))
    rv = rivet(cfg)
    who = "upstream %s.up" % NS

    def panic_lines():
        return log_lines_with(rv.stderr(), who, "panic mode")

    wait_for(panic_lines, 10, msg="the first panic change logged")
    wait_for(lambda: len([r for r in b.state["answered"] if r == 500]) >= 4, 10, msg="b flapped a few times")
    line = wait_for(lambda: [ln for ln in panic_lines() if "changes since the last line" in ln], 25,
                    msg="the held-back changes logged with their count")[0]
    n = int(line.split("; ")[-1].split()[0])
    assert n >= 2, line
    # the flapping made n changes after the first line, and they took one line, not n
    assert len(panic_lines()) == 2, panic_lines()
    b.state["script"] = []
    set_hc(b, None)


def test_panic_threshold_zero_serves_no_unhealthy_endpoint(cfg, backend, rivet):
    a, b = hc_backend(backend, "a"), hc_backend(backend, "b")
    cfg.gateway()
    cfg.upstream("up", [a, b], healthChecks=[http_hc()], loadBalancerConfig={"healthyPanicThreshold": 0})
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg)
    wait_for(lambda: healthy_gauge(rv) == 2, 10, msg="both endpoints healthy")
    assert any(c.get("healthCheck", {}).get("healthyPanicThreshold") == 0 for c in rv.config_dump()["clusters"])
    set_hc(a, 503)
    set_hc(b, 503)
    # panic disabled: no endpoint left, the upstream answers 503 instead of using failing ones
    wait_for(lambda: served(rv) == [], 10, msg="no endpoint served")
    wait_for(lambda: rv.get("/x").status == 503, 10, msg="503 with every endpoint unhealthy")
    proxied = [len([p for p in x.paths() if p != HC_PATH]) for x in (a, b)]
    assert all(rv.get("/x").status == 503 for _ in range(5))
    assert [len([p for p in x.paths() if p != HC_PATH]) for x in (a, b)] == proxied, "a request reached a failing endpoint"
    assert not log_lines_with(rv.stderr(), "panic mode")
    set_hc(b, None)
    wait_for(lambda: served(rv) == [addr(b)], 10, msg="b back")
    wait_for(lambda: hit_only(rv, "b"), 10, msg="traffic to b")


def test_tcp_check_leaves_a_closed_port_out(cfg, backend, closed_port, rivet):
    a = hc_backend(backend, "a")
    dead = closed_port()
    hc_config(cfg, [a, dead], {"timeout": "0.5s", "interval": "0.2s", "unhealthyThreshold": 1,
                           "healthyThreshold": 1, "tcpHealthCheck": {}})
    rv = rivet(cfg)
    wait_for(lambda: served(rv) == [addr(a)], 10, msg="the closed port left out")
    wait_for(lambda: hit_only(rv, "a"), 10, msg="every request reaches a")
    assert healthy_gauge(rv) == 1
    assert not checks(a), "a tcpHealthCheck sends no request"
    # first checks are spread over the interval: the closed port's may come a little after a's
    wait_for(lambda: log_lines_with(rv.stderr(), "%s:%d fails its first check" % (dead.addr, dead.port)), 10,
             msg="the closed port's first check failed")
    assert healthy_gauge(rv) == 1


def test_reload_adds_endpoints(cfg, backend, rivet):
    a, b = hc_backend(backend, "a"), hc_backend(backend, "b")
    hc_config(cfg, [a], http_hc())
    rv = rivet(cfg)
    wait_for(lambda: healthy_gauge(rv) == 1, 10, msg="a healthy")
    c, d = hc_backend(backend, "c"), hc_backend(backend, "d")
    set_hc(c, 503)
    cfg.upstream("up", [a, b, c, d], healthChecks=[http_hc()])
    # new endpoints start unhealthy (Envoy); one passing check brings b and d in, c stays out
    wait_for(lambda: served(rv) == sorted([addr(a), addr(b), addr(d)]), 10, msg="b and d added, c out")
    assert checks(c), "the new endpoint c is checked"
    wait_for(lambda: healthy_gauge(rv) == 3, 10, msg="three healthy")
    seen = set()
    for _ in range(30):
        seen.add(rv.get("/x").header("x-backend"))
    assert "c" not in seen and {"a", "b", "d"} <= seen, seen
    # a removed endpoint is no longer checked
    cfg.upstream("up", [a, b], healthChecks=[http_hc()])
    wait_for(lambda: served(rv) == sorted([addr(a), addr(b)]), 10, msg="c and d removed")
    wait_for(lambda: healthy_gauge(rv) == 2, 10, msg="gauge follows the removal")


def test_refused_fields_are_named(cfg, backend, rivet):
    a = hc_backend(backend, "a")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    cfg.upstream("up", [a], healthChecks=[http_hc()])
    rv = rivet(cfg)
    rv.wait_status("Upstream", "up", "Accepted")
    cases = [
        ([http_hc(), http_hc()], "healthChecks[1]"),
        ([dict(http_hc(), grpcHealthCheck={})], "healthChecks[0].grpcHealthCheck"),
        ([{"timeout": "1s", "interval": "1s", "unhealthyThreshold": 1, "healthyThreshold": 1,
           "grpcHealthCheck": {}}], "healthChecks[0].grpcHealthCheck is not supported yet"),
        ([{"timeout": "1s", "interval": "1s", "unhealthyThreshold": 1, "healthyThreshold": 1,
           "tcpHealthCheck": {"send": {"text": "0101"}}}], "healthChecks[0].tcpHealthCheck.send is not supported yet"),
        ([dict(http_hc(), noTrafficInterval="60s")], "healthChecks[0].noTrafficInterval is not supported yet"),
        ([http_hc(method="HEAD")], "healthChecks[0].httpHealthCheck.method is not supported yet"),
        ([{"interval": "1s", "unhealthyThreshold": 1, "healthyThreshold": 1, "tcpHealthCheck": {}}],
         "healthChecks[0].timeout: is required"),
        ([http_hc(path="")], "healthChecks[0].httpHealthCheck.path: is required"),
    ]
    for hcs, want in cases:
        cfg.upstream("up", [a], healthChecks=hcs)

        def rejected(want=want):
            s = rv.resource_status("Upstream", "up")
            return s and s["state"] == "Rejected" and want in s.get("reason", "")
        wait_for(rejected, 10, msg="Upstream rejected naming %s (status %r)" % (want, rv.resource_status("Upstream", "up")))
    # the last accepted version keeps serving (and checking)
    assert rv.get("/x").header("x-backend") == "a"


def test_consul_upstream_composes_with_discovery(cfg, backend, rivet):
    consul = ConsulDouble(port=free_port()).start()
    try:
        a, b, c, d = (hc_backend(backend, n) for n in "abcd")
        for x in (a, b, c):
            consul.register_service("web", service_id="web-" + x.name, address="127.0.0.1", port=x.port,
                                    health="passing")
        cfg.gateway()
        cfg.write("upstreams", "up", {"consul": {"serviceName": "web"}, "healthChecks": [http_hc()]})
        cfg.vs("vs", [route(prefix="/", upstream="up")])
        rv = rivet(cfg, env={"CONSUL_HTTP_ADDR": consul.addr})
        wait_for(lambda: served(rv) == sorted(map(addr, (a, b, c))), 15, msg="three instances served")
        wait_for(lambda: healthy_gauge(rv) == 3, 10, msg="three instances healthy")
        set_hc(b, 503)      # the active check takes b out
        wait_for(lambda: served(rv) == sorted(map(addr, (a, c))), 10, msg="b out (active check)")
        consul.set_check_status("service:web-c", "critical")   # Consul takes c out
        wait_for(lambda: served(rv) == [addr(a)], 10, msg="c out (Consul), b still out (active check)")
        assert checks(b), "the Consul instances are checked"
        consul.register_service("web", service_id="web-d", address="127.0.0.1", port=d.port, health="passing")
        wait_for(lambda: served(rv) == sorted(map(addr, (a, d))), 10, msg="a new instance in after its first check")
        assert checks(d)
        set_hc(b, None)
        wait_for(lambda: served(rv) == sorted(map(addr, (a, b, d))), 10, msg="b back")
    finally:
        consul.stop()


def limited_rivet_bin(tmp_path, monkeypatch, nofile):
    """RIVET_BIN behind a wrapper that sets the open files limit, soft and hard, first (as a
    systemd unit or a container runtime does: nothing can raise it); the wrapper execs, so the
    PID is rivet's."""
    w = tmp_path / "rivet-nofile.sh"
    w.write_text("#!/bin/sh\nulimit -n %d || exit 99\nexec %s \"$@\"\n" % (nofile, rivet_bin()))
    w.chmod(0o755)
    monkeypatch.setenv("RIVET_BIN", str(w))


def test_health_checker_does_not_starve_the_data_plane_of_descriptors(cfg, backend, rivet, tmp_path,
                                                                      monkeypatch):
    """(From the RV4 review.) An Upstream of 400 checked endpoints that accept and never answer
    (timeout 30 s) and a process limited to 256 open files, soft and hard. Without a budget the
    checker opened one socket per endpoint at once, took every descriptor: /ready and requests
    to an unrelated upstream timed out, and its own EMFILE marked endpoints unhealthy
    ("Couldn't connect ... after 0 ms"). Now its checks in flight are capped by a budget
    below the limit (logged), the rest wait (logged), and nothing rivet could not open counts
    against an endpoint."""
    hangs = []
    for _ in range(400):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)          # connects complete in the kernel's queue; nothing ever answers
        hangs.append(s)
    try:
        b = backend()
        cfg.gateway()
        cfg.upstream("good", [b])
        cfg.upstream("hc", [("127.0.0.1", s.getsockname()[1]) for s in hangs],
                     healthChecks=[{"timeout": "30s", "interval": "1s", "unhealthyThreshold": 1,
                                    "healthyThreshold": 1, "httpHealthCheck": {"path": "/h"}}])
        cfg.vs("vs", [route(prefix="/hc", upstream="hc"), route(prefix="/", upstream="good")])
        limited_rivet_bin(tmp_path, monkeypatch, 256)
        rv = rivet(cfg, ready=False)
        rv.wait_ready(timeout=10)
        # the budget is logged at the first merge; the cap is reached once the first round's
        # checks (spread over the 1 s interval) are all out and none has answered
        wait_for(lambda: log_lines_with(rv.stderr(), "health check", "too low for 512 checks in flight"), 10,
                 msg="the checker's descriptor budget logged")
        wait_for(lambda: log_lines_with(rv.stderr(), "health check", "wait and run late"), 10,
                 msg="checks waiting for the budget logged")
        results = []
        for i in range(20):
            try:
                results.append(request(rv.port, "/x/%d" % i, timeout=5).status)
            except OSError as e:
                results.append(repr(e))
        assert results == [200] * 20, "requests to a healthy upstream failed: %r" % (results,)
        err = rv.stderr()
        assert "after 0 ms" not in err, [ln for ln in err.splitlines() if "after 0 ms" in ln][:3]
        assert not log_lines_with(err, "not run"), log_lines_with(err, "not run")[:3]
        # no check has ended (30 s timeout): none may have counted as the endpoints' failure
        assert metric_sum(rv.metrics(), "rivet_upstream_health_check_failures_total",
                          upstream="%s.hc" % NS) == 0
        line = log_lines_with(err, "too low for 512 checks in flight")[0]
        held = int(line.rsplit("holding at most ", 1)[1].split()[0])
        assert 8 <= held <= 128, line
    finally:
        for s in hangs:
            s.close()
