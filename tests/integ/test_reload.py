"""Live reload from the config directory: edits, broken files, deletions, SIGHUP, listeners,
and reloads under load."""
import os
import re
import signal
import threading
import time

from harness import NS, can_connect, free_port, request, route, wait_for


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
    """Keep-alive clients hammer rivet while the config is rewritten 120 times: no failed
    request, and every answer belongs to some config version already written."""
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

    write_version(0)
    rv = rivet(cfg)
    max_total = 20000      # hard bound; at ~5k requests/s most of them overlap the writes
    nthreads = 4
    stop = threading.Event()
    lock = threading.Lock()
    errors = []
    counts = [0] * nthreads
    vpat = re.compile(rb"^v(\d+)$")
    seen_versions = set()

    def client(tid):
        conn = rv.connect(timeout=20)
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
                continue
            hi = written[0]
            counts[tid] += 1
            if r.status != 200:
                with lock:
                    errors.append((tid, path, r.status, r.body[:200]))
                continue
            if path == "/v":
                m = vpat.match(r.body)
                if m:
                    seen_versions.add(int(m.group(1)))
                if not m or int(m.group(1)) > hi:
                    with lock:
                        errors.append((tid, path, "unexpected body %r (written so far: v%d)" % (r.body, hi)))
            elif r.header("x-backend") != b.name:
                with lock:
                    errors.append((tid, path, "not from the backend: %r" % r))
        conn.close()

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(nthreads)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(counts) >= 50, timeout=20, msg="clients to get going")
        for k in range(1, versions + 1):
            written[0] = k
            write_version(k)
            time.sleep(0.005)
        during = sum(counts)
        rv.wait_body("/v", "v%d" % versions, timeout=10)
        # keep the load on a little after the last version
        target = min(max_total, sum(counts) + 500)
        deadline = time.monotonic() + 30
        while sum(counts) < target and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    total = sum(counts)
    assert not errors, "%d failed of %d requests; first: %r" % (len(errors), total, errors[:10])
    print("reload under load: %d requests, %d while the config was being rewritten" % (total, during))
    assert total >= 1000, total
    assert len(seen_versions) >= 2 and versions in seen_versions, sorted(seen_versions)
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
