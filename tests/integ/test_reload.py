"""Live reload from the config directory: edits, broken files, deletions, SIGHUP, listeners,
and reloads under load."""
import os
import re
import signal
import socket
import threading
import time

from harness import NS, can_connect, free_port, request, route, timeout_scale, wait_for


def direct_vs(cfg, body, extra_routes=(), name="vs", **kw):
    cfg.vs(name, [route(exact="/v", direct=(200, body))] + list(extra_routes), **kw)


def test_edit_is_live(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    assert rv.get("/v").text == "v1"
    direct_vs(cfg, "v2")
    rv.wait_body("/v", "v2")
    direct_vs(cfg, "v3", [route(prefix="/new", direct=(200, "new route"))])
    rv.wait_body("/new", "new route")
    assert rv.get("/v").text == "v3"


def test_new_file_is_picked_up(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "a", domains=["a.test"], name="a")
    rv = rivet(cfg)
    assert rv.get("/v", host="b.test").status == 404
    direct_vs(cfg, "b", domains=["b.test"], name="b")
    rv.wait_body("/v", "b", host="b.test")
    assert rv.get("/v", host="a.test").text == "a"


def test_new_namespace_directory_is_picked_up(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "a", domains=["a.test"], name="a")
    rv = rivet(cfg)
    direct_vs(cfg, "c", domains=["c.test"], name="c", ns="brand-new-ns")
    rv.wait_body("/v", "c", host="c.test")


def test_broken_yaml_keeps_last_good(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    assert rv.get("/v").text == "v1"
    cfg.write("virtualservices", "vs", "metadata: {name: vs, namespace: gloo-system\nvirtualHost: [\n  - :\n")
    st = rv.wait_status("VirtualService", "vs", "Rejected")
    assert st["reason"], st
    for _ in range(5):
        assert rv.get("/v").text == "v1"
    direct_vs(cfg, "v3")
    rv.wait_body("/v", "v3")
    rv.wait_status("VirtualService", "vs", "Accepted")


def test_unknown_field_rejected_with_reason(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    cfg.vs("vs", [route(exact="/v", direct=(200, "v2"))], bogusField={"x": 1})
    st = rv.wait_status("VirtualService", "vs", "Rejected")
    assert "bogusField" in st["reason"], st
    assert rv.get("/v").text == "v1"


def test_unknown_nested_field_rejected_with_reason(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    cfg.vs("vs", [route(exact="/v", direct=(200, "v2"), options={"prefixRewrit": "/typo"})])
    st = rv.wait_status("VirtualService", "vs", "Rejected")
    assert "prefixRewrit" in st["reason"], st
    assert rv.get("/v").text == "v1"


def test_bad_regex_rejected(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    cfg.vs("vs", [route(regex="/(unclosed", direct=(200, "bad")), route(exact="/v", direct=(200, "v2"))])
    st = rv.wait_status("VirtualService", "vs", "Rejected")
    assert st["reason"], st
    assert rv.get("/v").text == "v1"


def test_rejected_at_startup_others_served(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "good", domains=["good.test"], name="good")
    cfg.write("virtualservices", "bad", "metadata: {name: bad, namespace: gloo-system}\nvirtualHost: 7\n")
    rv = rivet(cfg)
    assert rv.get("/v", host="good.test").text == "good"
    st = rv.resource_status("VirtualService", "bad", NS)
    assert st and st["state"] == "Rejected" and st["reason"], st


def test_delete_file_removes_resource(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "a", domains=["a.test"], name="a")
    direct_vs(cfg, "b", domains=["b.test"], name="b")
    rv = rivet(cfg)
    assert rv.get("/v", host="b.test").text == "b"
    cfg.remove("virtualservices", "b")
    wait_for(lambda: rv.get("/v", host="b.test").status == 404, msg="b.test to be gone")
    wait_for(lambda: rv.resource_status("VirtualService", "b") is None, msg="b gone from /status")
    assert rv.get("/v", host="a.test").text == "a"


def test_delete_upstream_gives_503_and_warning(cfg, backend, rivet):
    b = backend()
    cfg.gateway()
    cfg.upstream("backend-svc", [b])
    cfg.vs("vs", [route(upstream="backend-svc")])
    rv = rivet(cfg)
    assert rv.get("/x").status == 200
    cfg.remove("upstreams", "backend-svc")
    wait_for(lambda: rv.get("/x").status == 503, msg="503 after the upstream is gone")
    st = rv.wait_status("VirtualService", "vs", "Warning")
    assert "backend-svc" in st["reason"], st
    wait_for(lambda: rv.resource_status("Upstream", "backend-svc") is None, msg="upstream gone from /status")


def test_upstream_hosts_change(cfg, backend, rivet):
    b1, b2 = backend("one"), backend("two")
    cfg.simple(b1)
    rv = rivet(cfg)
    assert rv.get("/").header("x-backend") == "one"
    cfg.upstream("up", [b2])
    rv.wait_body("/", lambda r: r.header("x-backend") == "two")
    for _ in range(10):
        assert rv.get("/").header("x-backend") == "two"


def test_route_table_edit_propagates(cfg, rivet):
    cfg.gateway()
    cfg.route_table("rt", [route(prefix="/api/x", direct=(200, "rt1"))])
    cfg.vs("vs", [route(prefix="/api", delegate={"ref": {"name": "rt", "namespace": NS}})])
    rv = rivet(cfg)
    assert rv.get("/api/x").text == "rt1"
    cfg.route_table("rt", [route(prefix="/api/x", direct=(200, "rt2"))])
    rv.wait_body("/api/x", "rt2")


def test_sighup_rereads_config(tmp_path, cfg, rivet):
    """With a Settings file whose refreshRate is an hour, SIGHUP forces a re-read."""
    boot = tmp_path / "boot"
    (boot / NS).mkdir(parents=True)
    (boot / NS / "default.yaml").write_text(
        "metadata: {name: default, namespace: gloo-system}\n"
        "discoveryNamespace: gloo-system\n"
        "directoryConfigSource:\n  directory: %s\n"
        "refreshRate: 3600s\n" % cfg.root)
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg, dir_=boot)
    assert rv.get("/v").text == "v1"
    # same size, same mtime: only a forced re-read can notice
    p = cfg.path("virtualservices", "vs")
    st = os.stat(p)
    direct_vs(cfg, "v2")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    rv.signal(signal.SIGHUP)
    rv.wait_body("/v", "v2")
    assert rv.alive()
    # a SIGHUP with nothing changed is harmless
    rv.signal(signal.SIGHUP)
    time.sleep(0.2)
    assert rv.alive()
    assert rv.get("/v").text == "v2"


def test_gateway_added_and_removed(cfg, rivet):
    p1 = cfg.gateway("gw1")
    direct_vs(cfg, "hello")
    rv = rivet(cfg)
    conn = rv.connect(port=p1)
    assert request(p1, "/v", conn=conn).text == "hello"
    p2 = cfg.gateway("gw2")
    wait_for(lambda: can_connect(p2), msg="new gateway port %d to open" % p2)
    assert request(p2, "/v").text == "hello"
    # the first listener and its open connection were not disturbed
    assert request(p1, "/v", conn=conn).text == "hello"
    assert request(p1, "/v").text == "hello"
    cfg.remove("gateways", "gw2")
    del cfg.gateway_ports["gw2"]
    wait_for(lambda: not can_connect(p2), msg="removed gateway port %d to close" % p2)
    assert request(p1, "/v", conn=conn).text == "hello"
    assert request(p1, "/v").text == "hello"
    conn.close()


def test_gateway_port_change(cfg, rivet):
    p1 = cfg.gateway("gw")
    direct_vs(cfg, "hello")
    rivet(cfg)
    assert request(p1, "/v").text == "hello"
    p2 = free_port()
    cfg.gateway("gw", port=p2)
    wait_for(lambda: can_connect(p2), msg="port %d to open" % p2)
    assert request(p2, "/v").text == "hello"
    wait_for(lambda: not can_connect(p1), msg="old port %d to close" % p1)


def test_reload_counter_moves(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg)

    def reloads():
        from harness import metric_sum
        return metric_sum(rv.metrics(), "rivet_config_reloads_total")
    before = reloads()
    direct_vs(cfg, "v2")
    rv.wait_body("/v", "v2")
    wait_for(lambda: reloads() > before, msg="rivet_config_reloads_total to increase")


def test_reload_under_load(cfg, backend, rivet):
    """Keep-alive clients hammer rivet while the config is rewritten 120 times, each rewrite
    published before the next (>= 100 publications while the load runs): no failed request,
    every answer belongs to a config version already written, and no connection ever goes
    back to an older version."""
    b = backend()
    cfg.gateway()
    versions = 120
    written = [0]          # highest version whose write has started

    def write_version(k):
        if k % 10 == 0:
            cfg.upstream("up", [b], lb={"roundRobin": {}} if k % 20 == 0 else {"leastRequest": {}})
        routes = []
        if k % 3 == 0:
            routes.append(route(prefix="/extra-%d" % k, direct=(200, "extra")))
        routes.append(route(exact="/v", direct=(200, "v%d" % k)))
        if k % 2:
            routes.append(route(prefix="/odd", direct=(200, "odd")))
            routes.append(route(prefix="/b", upstream="up", options={"timeout": "10s"}))
        else:
            routes.append(route(prefix="/b", upstream="up"))
            routes.append(route(prefix="/even-%d" % k, direct=(201, "even")))
        cfg.vs("vs", routes)

    def published():
        r = rv.admin_get("/status", timeout=5)
        assert r.status == 200, r
        return r.json()["version"]

    write_version(0)
    rv = rivet(cfg)
    max_total = 200000     # hard bound on requests; the time bound is the deadline below
    nthreads = 4
    stop = threading.Event()
    lock = threading.Lock()
    errors = []
    counts = [0] * nthreads
    vpat = re.compile(rb"^v(\d+)$")
    seen_versions = set()

    def client(tid):
        conn = rv.connect(timeout=20)
        last = -1          # highest version this connection has answered with
        i = 0
        while not stop.is_set() and sum(counts) < max_total:
            path = "/v" if i % 2 == 0 else "/b/%d" % i
            i += 1
            try:
                r = request(rv.port, path, conn=conn)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append((tid, path, "connection error: %r" % e))
                conn.close()
                conn = rv.connect(timeout=20)
                last = -1
                continue
            hi = written[0]
            counts[tid] += 1
            if r.status != 200:
                with lock:
                    errors.append((tid, path, r.status, r.body[:200]))
                continue
            if path == "/v":
                m = vpat.match(r.body)
                v = int(m.group(1)) if m else None
                if v is not None:
                    seen_versions.add(v)
                if v is None or v > hi:
                    with lock:
                        errors.append((tid, path, "unexpected body %r (written so far: v%d)" % (r.body, hi)))
                elif v < last:
                    with lock:
                        errors.append((tid, path, "went back from v%d to v%d on one connection" % (last, v)))
                else:
                    last = v
            elif r.header("x-backend") != b.name:
                with lock:
                    errors.append((tid, path, "not from the backend: %r" % r))
        conn.close()

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(nthreads)]
    for t in threads:
        t.start()
    # a bound on the whole run, not a speed requirement: 240 s for ASan, 160 s otherwise (and
    # RIVET_TEST_TIMEOUT_SCALE for a slower machine); a normal build needs a few seconds
    deadline = time.monotonic() + 80 * timeout_scale()
    try:
        wait_for(lambda: sum(counts) >= 50, timeout=20, msg="clients to get going")
        first = published()
        load_at = []           # requests answered so far, at each publication
        for k in range(1, versions + 1):
            before = published()
            written[0] = k
            write_version(k)
            left = deadline - time.monotonic()
            assert left > 0, "only %d of %d rewrites published in time" % (k - 1, versions)
            wait_for(lambda: published() > before, timeout=min(10, left), interval=0.002,
                     msg="rewrite %d to be published" % k)
            load_at.append(sum(counts))
            assert not stop.is_set() and all(t.is_alive() for t in threads), "the load stopped at rewrite %d" % k
            if errors:
                break
        last = published()
        during = load_at[-1] - load_at[0] if load_at else 0
        rv.wait_body("/v", "v%d" % versions, timeout=10)
        # keep the load on a little after the last version
        target = min(max_total, sum(counts) + 500)
        end = min(deadline, time.monotonic() + 30)
        while sum(counts) < target and time.monotonic() < end and not errors:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    total = sum(counts)
    assert not errors, "%d failed of %d requests; first: %r" % (len(errors), total, errors[:10])
    npub = last - first
    print("reload under load: %d requests, %d while %d publications happened" % (total, during, npub))
    assert npub >= 100, "only %d publications while the load ran" % npub
    # the load ran the whole time: requests were answered between every 10 publications
    for k in range(10, len(load_at), 10):
        assert load_at[k] > load_at[k - 10], "no request answered between rewrites %d and %d" % (k - 9, k + 1)
    assert total >= 1000, total
    assert len(seen_versions) >= 20 and versions in seen_versions, sorted(seen_versions)
    assert rv.alive()


def test_in_flight_request_survives_reload(cfg, backend, rivet):
    """A request pins the config it began on: removing its route and upstream mid-flight does
    not fail it."""
    b = backend()
    cfg.gateway()
    cfg.upstream("slow-up", [b])
    cfg.vs("vs", [route(prefix="/delay", upstream="slow-up"), route(exact="/v", direct=(200, "v1"))])
    rv = rivet(cfg)
    out = {}

    def slow():
        try:
            out["r"] = rv.get("/delay/1500", timeout=30)
        except Exception as e:  # noqa: BLE001
            out["e"] = e
    t = threading.Thread(target=slow)
    t.start()
    b.wait_requests(1, started=True)
    cfg.vs("vs", [route(exact="/v", direct=(200, "v2"))])
    cfg.remove("upstreams", "slow-up")
    rv.wait_body("/v", "v2")
    wait_for(lambda: rv.get("/delay/1").status == 404, msg="the route to be gone")
    t.join(30)
    assert "e" not in out, out
    assert out["r"].status == 200, out["r"]


def test_broken_upstream_keeps_last_good(cfg, backend, rivet):
    b = backend("orig")
    cfg.simple(b)
    rv = rivet(cfg)
    assert rv.get("/").header("x-backend") == "orig"
    cfg.write("upstreams", "up", "metadata: {name: up, namespace: gloo-system}\nstatic:\n  hosts:\n"
                                 "  - {addr: 127.0.0.1, port: not-a-port}\n")
    st = rv.wait_status("Upstream", "up", "Rejected")
    assert "port" in st["reason"], st
    for _ in range(5):
        r = rv.get("/")
        assert r.status == 200 and r.header("x-backend") == "orig", r


def test_broken_gateway_keeps_listener(cfg, rivet):
    port = cfg.gateway("gw")
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    cfg.write("gateways", "gw", "metadata: {name: gw, namespace: gloo-system}\nbindPort: [oops\n")
    rv.wait_status("Gateway", "gw", "Rejected")
    for _ in range(5):
        assert request(port, "/v").text == "v1"


def test_namespace_directory_removed(cfg, rivet):
    import shutil
    cfg.gateway()
    direct_vs(cfg, "keep", domains=["keep.test"], name="keep")
    direct_vs(cfg, "gone", domains=["gone.test"], name="gone", ns="temp-ns")
    rv = rivet(cfg)
    assert rv.get("/v", host="gone.test").text == "gone"
    shutil.rmtree(cfg.root / "virtualservices" / "temp-ns")
    wait_for(lambda: rv.get("/v", host="gone.test").status == 404, msg="temp-ns resources removed")
    assert rv.get("/v", host="keep.test").text == "keep"


# ---- a resource refused for a conflict or a bind failure keeps its last accepted version ----


def _hold_port():
    """A listening socket of this test process on a free loopback port (no SO_REUSEPORT).
    The port comes from free_port(), below the ephemeral range: once the test lets it go, an
    outgoing connection of any process on the machine could take a freed ephemeral port before
    rivet binds it (bound with port 0, it was one)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", free_port()))
    s.listen(1)
    return s, s.getsockname()[1]


def test_gateway_on_taken_port_rejected_rest_publishes(cfg, rivet):
    p1 = cfg.gateway("gw")
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    hold, busy = _hold_port()
    try:
        cfg.gateway("busy", port=busy)
        st = rv.wait_status("Gateway", "busy", "Rejected")
        assert st["reason"] == "bindPort %d: address already in use by another process" % busy, st
        # later edits are published; the Gateways that can bind keep serving
        direct_vs(cfg, "v2")
        wait_for(lambda: request(p1, "/v").text == "v2", msg="v2 to be served")
        direct_vs(cfg, "v3")
        wait_for(lambda: request(p1, "/v").text == "v3", msg="v3 to be served")
        assert rv.resource_status("Gateway", "gw")["state"] == "Accepted"
        assert rv.resource_status("VirtualService", "vs")["state"] == "Accepted"
        # an accepted Gateway edited onto the taken port keeps its listener
        cfg.gateway("gw", port=busy)
        st = rv.wait_status("Gateway", "gw", "Rejected")
        assert "bindPort %d: address already in use by another process" % busy in st["reason"], st
        assert "the last accepted version keeps serving" in st["reason"], st
        for _ in range(5):
            assert request(p1, "/v").text == "v3"
        direct_vs(cfg, "v4")
        wait_for(lambda: request(p1, "/v").text == "v4", msg="v4 to be served on the old port")
        err = rv.stderr()
        assert err.count("Gateway gloo-system/busy rejected") == 1, err[-3000:]
        assert err.count("Gateway gloo-system/gw rejected") == 1, err[-3000:]
        assert "keeping the current config" not in err, err[-3000:]
        cfg.gateway("gw", port=p1)
        rv.wait_status("Gateway", "gw", "Accepted")
    finally:
        hold.close()
    # the port is free now: the next change binds it
    direct_vs(cfg, "v5")
    wait_for(lambda: can_connect(busy), msg="the freed port %d to be served" % busy)
    assert request(busy, "/v").text == "v5"
    rv.wait_status("Gateway", "busy", "Accepted")
    assert request(p1, "/v").text == "v5"


def test_gateway_on_taken_port_at_startup(cfg, rivet):
    hold, busy = _hold_port()
    try:
        p1 = cfg.gateway("gw")
        cfg.gateway("busy", port=busy)
        direct_vs(cfg, "v1")
        rv = rivet(cfg, ready=False)
        rv.wait_ready(gateway_ports=False)
        assert request(p1, "/v").text == "v1"
        st = rv.resource_status("Gateway", "busy")
        assert st and st["state"] == "Rejected", st
        assert st["reason"] == "bindPort %d: address already in use by another process" % busy, st
        assert "keeping the current config" not in rv.stderr()
        assert rv.alive()
    finally:
        hold.close()


def test_domain_conflict_keeps_the_serving_virtual_service(cfg, rivet):
    cfg.gateway()
    direct_vs(cfg, "b1", domains=["x.test"], name="b")
    rv = rivet(cfg)
    assert rv.get("/v", host="x.test").text == "b1"
    # a newcomer (sorting first) claims the domain: it is refused, b keeps serving
    direct_vs(cfg, "a1", domains=["x.test"], name="a")
    st = rv.wait_status("VirtualService", "a", "Rejected")
    assert "domain 'x.test' is already served by VirtualService gloo-system/b on Gateway gloo-system/gw" \
        in st["reason"], st
    for _ in range(5):
        assert rv.get("/v", host="x.test").text == "b1"
    assert rv.resource_status("VirtualService", "b")["state"] == "Accepted"
    # an accepted VirtualService edited onto the domain keeps its last accepted version
    direct_vs(cfg, "c1", domains=["c.test"], name="c")
    rv.wait_body("/v", "c1", host="c.test")
    direct_vs(cfg, "c2", domains=["c.test", "x.test"], name="c")
    st = rv.wait_status("VirtualService", "c", "Rejected")
    assert "already served by VirtualService gloo-system/b" in st["reason"], st
    assert "the last accepted version keeps serving" in st["reason"], st
    for _ in range(5):
        assert rv.get("/v", host="c.test").text == "c1"
        assert rv.get("/v", host="x.test").text == "b1"
    # the holder is edited: its new version serves, the newcomer stays out
    direct_vs(cfg, "b2", domains=["x.test"], name="b")
    rv.wait_body("/v", "b2", host="x.test")
    assert rv.resource_status("VirtualService", "a")["state"] == "Rejected"
    # once the others are gone, the newcomer serves
    cfg.remove("virtualservices", "c")
    cfg.remove("virtualservices", "b")
    rv.wait_body("/v", "a1", host="x.test")
    rv.wait_status("VirtualService", "a", "Accepted")


def test_gateway_moved_onto_used_port_keeps_its_listener(cfg, rivet):
    p1 = cfg.gateway("g1")
    p2 = cfg.gateway("g2")
    direct_vs(cfg, "v1")
    rv = rivet(cfg)
    assert request(p2, "/v").text == "v1"
    cfg.gateway("g2", port=p1)
    st = rv.wait_status("Gateway", "g2", "Rejected")
    assert "conflicts with Gateway gloo-system/g1" in st["reason"], st
    assert "gloo-system.g1" not in st["reason"], st
    assert "the last accepted version keeps serving" in st["reason"], st
    assert rv.resource_status("Gateway", "g1")["state"] == "Accepted"
    for _ in range(5):
        assert request(p1, "/v").text == "v1"
        assert request(p2, "/v").text == "v1"
    # later edits still reach both listeners
    direct_vs(cfg, "v2")
    wait_for(lambda: request(p2, "/v").text == "v2", msg="v2 on the kept listener")
    assert request(p1, "/v").text == "v2"


def test_route_table_edit_outside_prefix_keeps_last_version(cfg, rivet):
    cfg.gateway()
    cfg.route_table("rt", [route(prefix="/api/x", direct=(200, "rt1"))])
    cfg.vs("vs", [route(prefix="/api", delegate={"ref": {"name": "rt", "namespace": NS}})])
    rv = rivet(cfg)
    assert rv.get("/api/x").text == "rt1"
    cfg.route_table("rt", [route(prefix="/api/x", direct=(200, "rt2")), route(prefix="/other", direct=(200, "o"))])
    st = rv.wait_status("RouteTable", "rt", "Rejected")
    assert "does not start with the delegating prefix '/api'" in st["reason"], st
    assert "the last accepted version keeps serving" in st["reason"], st
    for _ in range(5):
        assert rv.get("/api/x").text == "rt1"
    assert rv.get("/other").status == 404
    assert rv.resource_status("VirtualService", "vs")["state"] == "Accepted"
    cfg.route_table("rt", [route(prefix="/api/x", direct=(200, "rt3"))])
    rv.wait_body("/api/x", "rt3")
    rv.wait_status("RouteTable", "rt", "Accepted")


def test_bad_settings_at_runtime_rejected_once(tmp_path, cfg, rivet):
    boot = tmp_path / "boot"
    (boot / NS).mkdir(parents=True)
    settings = boot / NS / "default.yaml"
    good = ("metadata: {name: default, namespace: gloo-system}\n"
            "directoryConfigSource:\n  directory: %s\n" % cfg.root)
    settings.write_text(good)
    cfg.gateway()
    direct_vs(cfg, "v1")
    rv = rivet(cfg, dir_=boot)
    assert rv.resource_status("Settings", "default")["state"] == "Accepted"
    with open(settings, "a") as f:
        f.write("foo: 1\n")
    st = rv.wait_status("Settings", "default", "Rejected")
    assert "foo: unknown field" in st["reason"] and "the previous settings stay in force" in st["reason"], st
    # the previous settings stay in force: edits of the config directory still publish
    for k in range(2, 6):
        direct_vs(cfg, "v%d" % k)
        rv.wait_body("/v", "v%d" % k)
    assert rv.resource_status("Settings", "default")["state"] == "Rejected"
    assert rv.stderr().count("foo: unknown field") == 1, rv.stderr()[-3000:]
    # fixed: Accepted again
    settings.write_text(good)
    rv.wait_status("Settings", "default", "Accepted")
    direct_vs(cfg, "v6")
    rv.wait_body("/v", "v6")
