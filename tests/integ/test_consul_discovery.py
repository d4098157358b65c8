"""Consul service discovery, end to end: the real rivet binary, real backends, and the Consul
double (tests/doubles/consul.py) - or a real Consul agent when CONSUL_HTTP_ADDR is set (tests
that need the double's fault switch are then skipped, saying so).

What is checked: traffic spreads over the instances of a discovered service; an instance whose
health check fails stops receiving traffic; a deregistered one too; Consul going away and coming
back (with its index reset) under load fails no request to the instances that stayed healthy,
and changes made after it returns are applied; the discovered Upstream is in /status and
/config_dump; explicit consul Upstreams and route consul destinations select by tag and DC;
--consul-discovery=catalog sends traffic to failing instances too (Gloo's behaviour). At a
few hundred services: one blocking query held per service, a change converging while every
other service's query stays blocked (the double's counters), the query cap flag respected, and
the soft open-files limit raised for the queries. Over TLS (the double behind harness.TLSProxy,
whose certificate is valid only for a server name): with CONSUL_CACERT and
CONSUL_TLS_SERVER_NAME services are discovered and followed, also with a client certificate
(mTLS); a wrong CA, a missing server name or a missing client certificate fails discovery
visibly (log, /ready detail, gauge) with no endpoint served, and a certificate that stops
verifying while running keeps the last instances until it verifies again.
"""
import json
import os
import sys
import threading
import time
import urllib.request
import uuid

import pytest

from harness import NS, TLSProxy, free_port, make_cert, metric_sum, request, route, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from doubles.consul import ConsulDouble  # noqa: E402

LIVE = os.environ.get("CONSUL_HTTP_ADDR")


class LiveConsul:
    """The same small API as the double's, over a real agent's HTTP API (TTL checks)."""

    def __init__(self, addr):
        self.base = addr if "://" in addr else "http://" + addr
        self.addr = addr
        self.registered = []

    def _put(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(self.base + path, data=data, method="PUT")
        tok = os.environ.get("CONSUL_HTTP_TOKEN")
        if tok:
            req.add_header("X-Consul-Token", tok)
        urllib.request.urlopen(req, timeout=10).read()

    def register_service(self, name, service_id, address, port, tags=(), health="passing"):
        self._put("/v1/agent/service/register", {
            "ID": service_id, "Name": name, "Tags": list(tags), "Address": address, "Port": port,
            "Check": {"CheckID": "service:" + service_id, "TTL": "10m", "Status": health}})
        self.registered.append(service_id)
        return service_id

    def set_check_status(self, check_id, status):
        verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        self._put("/v1/agent/check/%s/%s" % (verb, check_id))

    def deregister_service(self, service_id):
        self._put("/v1/agent/service/deregister/" + service_id)
        if service_id in self.registered:
            self.registered.remove(service_id)

    def stop(self):
        for sid in list(self.registered):
            try:
                self.deregister_service(sid)
            except OSError:
                pass


@pytest.fixture
def consul():
    if LIVE:
        c = LiveConsul(LIVE)
        yield c
        c.stop()
        return
    c = ConsulDouble(port=free_port()).start()
    yield c
    c.stop()


def need_double(consul):
    if LIVE:
        pytest.skip("needs the Consul double's fault switch (CONSUL_HTTP_ADDR points at a real Consul)")


def unique(name):
    """Service names unique per test (a live Consul keeps what other runs registered)."""
    return "%s-%s" % (name, uuid.uuid4().hex[:6])


def start(rivet, cfg, consul, mode=None, **kw):
    flag = "--consul-discovery" if mode is None else "--consul-discovery=" + mode
    return rivet(cfg, args=[flag], env={"CONSUL_HTTP_ADDR": consul.addr}, **kw)


def hits(rv, backends, n, path="/"):
    """Send n requests; count answers per backend (by name) and failures."""
    count = {b.name: 0 for b in backends}
    fails = 0
    for _ in range(n):
        r = rv.get(path, timeout=5)
        if r.status != 200:
            fails += 1
            continue
        name = r.body.decode(errors="replace")
        count[name] = count.get(name, 0) + 1
    return count, fails


def named(backend_factory, name, **kw):
    def handler(req, conn):
        conn.respond(200, name.encode())
        return True
    return backend_factory(name=name, handler=handler, **kw)


def test_spread_health_deregister_status(cfg, backend, rivet, consul):
    svc = unique("web")
    bs = [named(backend, "b%d" % i) for i in range(3)]
    for i, b in enumerate(bs):
        consul.register_service(svc, service_id="%s-%d" % (svc, i), address="127.0.0.1", port=b.port,
                                tags=["v1"], health="passing")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = start(rivet, cfg, consul)

    # the discovered Upstream is visible, named after the service, in the discovery namespace
    st = rv.wait_status("Upstream", svc, "Accepted", timeout=10)
    assert st["namespace"] == NS
    dump = rv.config_dump()
    assert any(c["name"] == "%s.%s" % (NS, svc) and len(c["endpoints"]) == 3 for c in dump["clusters"]), dump

    wait_for(lambda: rv.get("/", timeout=5).status == 200, timeout=10, msg="first 200")
    count, fails = hits(rv, bs, 30)
    assert fails == 0 and all(count[b.name] >= 5 for b in bs), count

    # fail b1's check: it stops receiving traffic
    consul.set_check_status("service:%s-1" % svc, "critical")
    wait_for(lambda: hits(rv, bs, 12)[0]["b1"] == 0, timeout=10, msg="b1 out of rotation")
    count, fails = hits(rv, bs, 30)
    assert fails == 0 and count["b1"] == 0 and count["b0"] >= 5 and count["b2"] >= 5, count

    # deregister b2: only b0 is left
    consul.deregister_service("%s-2" % svc)
    wait_for(lambda: hits(rv, bs, 6)[0]["b2"] == 0, timeout=10, msg="b2 gone")
    count, fails = hits(rv, bs, 20)
    assert fails == 0 and count == {"b0": 20, "b1": 0, "b2": 0}, count

    # b1 healthy again: back in rotation
    consul.set_check_status("service:%s-1" % svc, "passing")
    wait_for(lambda: hits(rv, bs, 12)[0]["b1"] > 0, timeout=10, msg="b1 back")


def test_consul_outage_under_load(cfg, backend, rivet, consul):
    need_double(consul)
    svc = unique("api")
    bs = [named(backend, "b%d" % i) for i in range(2)]
    for i, b in enumerate(bs):
        consul.register_service(svc, service_id="%s-%d" % (svc, i), address="127.0.0.1", port=b.port,
                                health="passing")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = start(rivet, cfg, consul)
    wait_for(lambda: rv.get("/", timeout=5).status == 200, timeout=10, msg="first 200")

    stop = threading.Event()
    results = {"ok": 0, "fail": []}

    def load():
        while not stop.is_set():
            try:
                r = request(rv.port, "/", timeout=5)
                if r.status == 200:
                    results["ok"] += 1
                else:
                    results["fail"].append(r.status)
            except OSError as e:
                results["fail"].append(repr(e))
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    # each phase waits for its own evidence (the load served requests before, during and after
    # the outage; the outage and the return were seen) instead of fixed sleeps, which a slow
    # machine could outlast
    try:
        wait_for(lambda: results["ok"] >= 20, timeout=10, msg="requests served before the outage")
        consul.fault("down", mode="refuse")     # killed: connections refused, blocked queries cut
        # while Consul is down rivet says so (once, checked below) and keeps serving
        wait_for(lambda: "Consul unavailable" in rv.stderr(), timeout=10, msg="the outage logged")
        ok_down = results["ok"]
        wait_for(lambda: results["ok"] >= ok_down + 20, timeout=10, msg="requests served while Consul is down")
        ready = rv.admin_get("/ready")
        consul.index_reset(delta=None)          # came back with its indexes moved backwards
        consul.clear_fault()
        wait_for(lambda: "Consul answers again" in rv.stderr(), timeout=15, msg="the return logged")
        # a change made after Consul returns reaches traffic
        b2 = named(backend, "b2")
        consul.register_service(svc, service_id="%s-2" % svc, address="127.0.0.1", port=b2.port, health="passing")
        wait_for(lambda: any(request(rv.port, "/", timeout=5).body == b"b2" for _ in range(6)), timeout=10,
                 msg="new instance after the outage")
        ok_back = results["ok"]
        wait_for(lambda: results["ok"] >= ok_back + 10, timeout=10, msg="requests served after the outage")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results["fail"] == [], results["fail"][:10]
    assert ready.status == 200, ready
    assert rv.stderr().count("Consul unavailable") == 1, rv.stderr()[-3000:]


def test_explicit_upstream_and_consul_destination(cfg, backend, rivet, consul):
    svc = unique("shop")
    b1, b2 = named(backend, "v1"), named(backend, "v2")
    consul.register_service(svc, service_id=svc + "-1", address="127.0.0.1", port=b1.port, tags=["v1"],
                            health="passing")
    consul.register_service(svc, service_id=svc + "-2", address="127.0.0.1", port=b2.port, tags=["v2", "canary"],
                            health="passing")
    cfg.gateway()
    cfg.write("upstreams", "shop-v1", {"consul": {"serviceName": svc, "instanceTags": ["v1"]}})
    cfg.write("upstreams", "shop-stable", {"consul": {"serviceName": svc, "instanceBlacklistTags": ["canary"]}})
    cfg.vs("vs", [route(prefix="/tagged", upstream="shop-v1"),
                  route(prefix="/stable", upstream="shop-stable"),
                  {"matchers": [{"prefix": "/dest"}],
                   "routeAction": {"single": {"consul": {"serviceName": svc, "tags": ["v2"]}}}}])
    # discovery of every service off: the explicit upstreams start the watcher themselves
    rv = rivet(cfg, env={"CONSUL_HTTP_ADDR": consul.addr})
    rv.wait_body("/dest", "v2", timeout=10)
    for path, want in (("/tagged", b"v1"), ("/stable", b"v1"), ("/dest", b"v2")):
        for _ in range(6):
            r = rv.get(path, timeout=5)
            assert r.status == 200 and r.body == want, (path, r)
    assert rv.resource_status("Upstream", svc) is None  # not discovered without the setting


def test_catalog_only_mode(cfg, backend, rivet, consul):
    svc = unique("legacy")
    bs = [named(backend, "b%d" % i) for i in range(2)]
    consul.register_service(svc, service_id=svc + "-0", address="127.0.0.1", port=bs[0].port, health="passing")
    consul.register_service(svc, service_id=svc + "-1", address="127.0.0.1", port=bs[1].port, health="critical")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = start(rivet, cfg, consul, mode="catalog")
    wait_for(lambda: rv.get("/", timeout=5).status == 200, timeout=10, msg="first 200")
    count, fails = hits(rv, bs, 20)
    assert fails == 0 and count["b1"] > 0, count


def test_catalog_only_from_settings(cfg, backend, rivet, consul):
    """consulDiscovery.rivetHealthChecks: false (rivet's Settings extension) = Gloo's catalog mode."""
    svc = unique("legacy-settings")
    bs = [named(backend, "b%d" % i) for i in range(2)]
    consul.register_service(svc, service_id=svc + "-0", address="127.0.0.1", port=bs[0].port, health="passing")
    consul.register_service(svc, service_id=svc + "-1", address="127.0.0.1", port=bs[1].port, health="critical")
    (cfg.root / NS).mkdir(parents=True, exist_ok=True)
    (cfg.root / NS / "default.yaml").write_text(
        "consul: {serviceDiscovery: {}}\nconsulDiscovery: {rivetHealthChecks: false}\n")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = rivet(cfg, env={"CONSUL_HTTP_ADDR": consul.addr})
    wait_for(lambda: rv.get("/", timeout=5).status == 200, timeout=10, msg="first 200")
    count, fails = hits(rv, bs, 20)
    assert fails == 0 and count["b0"] > 0 and count["b1"] > 0, count


def test_no_passing_instance_is_a_warning(cfg, backend, rivet, consul):
    svc = unique("down")
    b = named(backend, "b0")
    consul.register_service(svc, service_id=svc + "-0", address="127.0.0.1", port=b.port, health="critical")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = start(rivet, cfg, consul)
    st = rv.wait_status("Upstream", svc, "Warning", timeout=10)
    assert "health checks" in st["reason"], st
    r = rv.get("/", timeout=5)
    assert r.status == 503, r


def cfg_version(rv):
    """The config version /status reports (the snapshot served)."""
    return json.loads(rv.admin_get("/status").body)["version"]


def test_endpoint_changes_keep_route_tables(cfg, backend, rivet, consul):
    """Instances added, failing, deregistered and back: traffic follows under load with zero
    failed requests, and the config version in /status stays the same (no re-translation: the
    change is published as an endpoint set). Connections to the instance that stays are kept.
    Only the last instance failing (the Upstream's status turns Warning) rebuilds."""
    svc = unique("eps")
    bs = [named(backend, "b%d" % i) for i in range(4)]
    for i, b in enumerate(bs[:3]):
        consul.register_service(svc, service_id="%s-%d" % (svc, i), address="127.0.0.1", port=b.port,
                                health="passing")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = start(rivet, cfg, consul)
    wait_for(lambda: hits(rv, bs, 12)[0]["b2"] > 0, timeout=10, msg="all three serving")
    version = cfg_version(rv)

    stop = threading.Event()
    results = {"ok": 0, "fail": [], "seen": set()}

    def load():
        while not stop.is_set():
            try:
                r = request(rv.port, "/", timeout=5)
                if r.status == 200:
                    results["ok"] += 1
                    results["seen"].add(r.body)
                else:
                    results["fail"].append(r.status)
            except OSError as e:
                results["fail"].append(repr(e))
    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()

    def eps():
        d = rv.config_dump()
        c = [c for c in d["clusters"] if c["name"] == "%s.%s" % (NS, svc)]
        return sorted(e["address"] for e in c[0]["endpoints"]) if c else None

    def addr(b):
        return "127.0.0.1:%d" % b.port
    try:
        time.sleep(0.3)
        b0_conns = bs[0].nconns
        # a new instance: receives traffic
        consul.register_service(svc, service_id="%s-3" % svc, address="127.0.0.1", port=bs[3].port,
                                health="passing")
        wait_for(lambda: any(request(rv.port, "/", timeout=5).body == b"b3" for _ in range(8)), timeout=10,
                 msg="new instance in rotation")
        assert eps() == sorted(addr(b) for b in bs), eps()
        # a failing check and a deregistration: both leave the rotation
        consul.set_check_status("service:%s-1" % svc, "critical")
        consul.deregister_service("%s-2" % svc)
        wait_for(lambda: eps() == sorted([addr(bs[0]), addr(bs[3])]), timeout=10, msg="b1, b2 out of /config_dump")
        time.sleep(0.3)
        count, fails = hits(rv, bs, 20)
        assert fails == 0 and count["b1"] == 0 and count["b2"] == 0, count
        # back to health
        consul.set_check_status("service:%s-1" % svc, "passing")
        wait_for(lambda: any(request(rv.port, "/", timeout=5).body == b"b1" for _ in range(8)), timeout=10,
                 msg="b1 back")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results["fail"] == [], results["fail"][:10]
    assert results["ok"] > 30, results
    # the route table was never rebuilt: same config version, endpoint updates logged as such
    assert cfg_version(rv) == version, cfg_version(rv)
    assert "endpoints updated in place" in rv.stderr(), rv.stderr()[-3000:]
    st = [s for s in rv.status() if s["kind"] == "Upstream" and s["name"] == svc]
    assert st and st[0]["state"] == "Accepted", st
    # connections to b0 (which stayed) were reused, not re-opened per change
    assert bs[0].nconns - b0_conns <= 6, (b0_conns, bs[0].nconns)

    # every instance failing changes the Upstream's status (Warning): that one rebuilds
    for i in (0, 1, 3):
        consul.set_check_status("service:%s-%d" % (svc, i), "critical")
    st = rv.wait_status("Upstream", svc, "Warning", timeout=10)
    assert "health checks" in st["reason"], st
    assert cfg_version(rv) > version
    assert rv.get("/", timeout=5).status == 503


def _fleet_with_target(cfg, backend, rivet, consul, prefix, n, at, wait):
    """n services PREFIX-000.., each one instance on an unused port, but names[at] (the
    target) with two live backends b0 and b1; Settings with consul.waitTime = wait and
    discovery on; one route to the target; rivet started. Returns (names, target, bs, rv)."""
    names = ["%s-%03d" % (prefix, i) for i in range(n)]
    target = names[at]
    bs = [named(backend, "b%d" % i) for i in range(2)]
    for i, b in enumerate(bs):
        consul.register_service(target, service_id="%s-%d" % (target, i), address="127.0.0.1", port=b.port,
                                health="passing")
    for i, name in enumerate(names):
        if name != target:
            consul.register_service(name, service_id=name + "-0", address="127.0.0.1", port=1 + i, health="passing")
    (cfg.root / NS).mkdir(parents=True, exist_ok=True)
    (cfg.root / NS / "default.yaml").write_text("consul: {waitTime: %s, serviceDiscovery: {}}\n" % wait)
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=target)])
    return names, target, bs, rivet(cfg, env={"CONSUL_HTTP_ADDR": consul.addr})


def test_health_change_converges_while_other_watches_stay_blocked(cfg, backend, rivet, consul):
    """300 services: rivet holds one blocking health query per service at once, so a check
    change on one service reaches traffic through that service's own query, while the query of
    every other service is still blocked in Consul (none of them returned in between: the change
    did not wait for other services' queries to time out or take turns). Counted by the double."""
    need_double(consul)
    fleet = unique("fleet")
    # consul.waitTime (Gloo's wait for blocking queries): long, so that no query times out
    # while the test runs and every return the double counts is a wake-up by a change
    names, target, bs, rv = _fleet_with_target(cfg, backend, rivet, consul, fleet, 300, 137, "600s")
    paths = {"/v1/health/service/" + n for n in names}

    def held():
        return set(consul.blocked_now("/v1/health/service/" + fleet)) == paths
    wait_for(held, timeout=30, msg="a blocking health query held for each of the 300 services")
    count, fails = hits(rv, bs, 20)
    assert fails == 0 and count["b0"] > 0 and count["b1"] > 0, count
    before = consul.blocking_returns("/v1/health/service/" + fleet)

    consul.set_check_status("service:%s-1" % target, "critical")
    wait_for(lambda: hits(rv, bs, 8)[0]["b1"] == 0, timeout=15, msg="b1 out of rotation")

    after = consul.blocking_returns("/v1/health/service/" + fleet)
    still = consul.blocked_now("/v1/health/service/" + fleet)
    tpath = "/v1/health/service/" + target
    others = paths - {tpath}
    moved = sorted(p for p in others if after.get(p, 0) != before.get(p, 0))
    assert not moved, "other services' queries returned before the change converged: %s" % moved[:5]
    assert others <= set(still), "other services' queries no longer held: %s" % sorted(others - set(still))[:5]
    assert after.get(tpath, 0) > before.get(tpath, 0), "the change came through the target's own query"
    count, fails = hits(rv, bs, 20)
    assert fails == 0 and count == {"b0": 20, "b1": 0}, count


def _fleet(consul, n, prefix):
    names = ["%s-%03d" % (prefix, i) for i in range(n)]
    for i, name in enumerate(names):
        consul.register_service(name, service_id=name + "-0", address="127.0.0.1", port=1 + i, health="passing")
    return names


def test_max_queries_flag_caps_the_blocking_queries_held(cfg, backend, rivet, consul):
    """--consul-discovery-max-queries 40 with 120 services: every service is still discovered
    (the watches take turns), and the double never sees more than 40 blocking queries from
    rivet at once."""
    need_double(consul)
    fleet = unique("capped")
    names = _fleet(consul, 120, fleet)
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=names[0])])
    rv = rivet(cfg, args=["--consul-discovery", "--consul-discovery-max-queries", "40"],
               env={"CONSUL_HTTP_ADDR": consul.addr})
    want = {"%s.%s" % (NS, n) for n in names}

    def discovered():
        got = {c["name"] for c in rv.config_dump()["clusters"] if c["endpoints"]}
        return want <= got
    wait_for(discovered, timeout=30, msg="all 120 services discovered")
    # the cap counts every blocking query: the service list's and 39 services'
    wait_for(lambda: sum(consul.blocked_now("/v1/").values()) == 40, timeout=15, msg="40 blocking queries held")
    most = 0
    for _ in range(40):
        most = max(most, sum(consul.blocked_now("/v1/").values()))
        time.sleep(0.01)
    assert most == 40, most
    assert len(consul.blocked_now("/v1/health/service/" + fleet)) <= 39


def test_soft_open_files_limit_is_raised_for_the_queries(cfg, backend, rivet, consul):
    """rivet started with a soft RLIMIT_NOFILE of 256 (hard limit unchanged) raises it for its
    queries and holds one per service for 300 services (more than 256 descriptors)."""
    need_double(consul)
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192 + 128 + 1024 + 256:
        pytest.skip("hard open-files limit %d too low for this test" % hard)
    fleet = unique("nofile")
    names = _fleet(consul, 300, fleet)
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=names[0])])
    # only rivet starts with the low soft limit (lowering the test process's own could fail its
    # next open when it already holds more than 256 descriptors, as late in a long session)
    rv = rivet(cfg, ready=False, args=["--consul-discovery"], env={"CONSUL_HTTP_ADDR": consul.addr},
               nofile_soft=256)
    rv.wait_ready()
    wait_for(lambda: len(consul.blocked_now("/v1/health/service/" + fleet)) == 300, timeout=30,
             msg="300 blocking health queries held")
    assert "open files limit raised from 256 to" in rv.stderr(), rv.stderr()[-2000:]


def test_429_lowers_the_number_of_queries_held(cfg, backend, rivet, consul):
    """Consul answering 429 Too Many Requests (its rate limit; some agents also answer it to
    connections over limits.http_max_conns_per_client) makes rivet hold fewer blocking queries
    (3/4 of those open, logged); the services then take turns, and every one stays discovered
    and a health change still reaches traffic."""
    need_double(consul)
    fleet = unique("pushback")
    # short waits, so that queries held before the 429 come back soon and are not held again
    names, target, bs, rv = _fleet_with_target(cfg, backend, rivet, consul, fleet, 120, 0, "2s")
    paths = {"/v1/health/service/" + n for n in names}
    wait_for(lambda: set(consul.blocked_now("/v1/health/service/" + fleet)) == paths, timeout=30,
             msg="a blocking query held for each of the 120 services")
    consul.fault("error", status=429, body="rate limit exceeded", count=3, paths=["/v1/health/service/"])
    wait_for(lambda: "Consul answered 429 Too Many Requests" in rv.stderr(), timeout=15, msg="the 429 logged")
    line = [ln for ln in rv.stderr().splitlines() if "Consul answered 429" in ln][-1]
    cap = int(line.split("holding at most ")[1].split()[0])
    assert 16 <= cap < 121, line
    # the queries held before the 429 come back within a wait (2 s); then no more than the cap.
    # Wait for the drop (a slow machine may take longer than a fixed 4 s), then watch it hold.
    wait_for(lambda: sum(consul.blocked_now("/v1/").values()) <= cap, timeout=30,
             msg="blocking queries held to drop to the cap %d" % cap)
    most = 0
    for _ in range(30):
        most = max(most, sum(consul.blocked_now("/v1/").values()))
        time.sleep(0.05)
    assert most <= cap, (most, cap)
    want = {"%s.%s" % (NS, n) for n in names}
    wait_for(lambda: want <= {c["name"] for c in rv.config_dump()["clusters"] if c["endpoints"]}, timeout=15,
             msg="every service still discovered")
    consul.set_check_status("service:%s-1" % target, "critical")
    wait_for(lambda: hits(rv, bs, 8)[0]["b1"] == 0, timeout=15, msg="b1 out of rotation while taking turns")


# -- over TLS ---------------------------------------------------------------------------------

TLS_NAME = "consul.rivet.test"


def tls_env(px, ca=None, server_name=TLS_NAME, client=None):
    """Consul's environment for the proxy: https:// to its loopback address (a certificate for
    TLS_NAME only, so without the server name verification must fail), the CA, the server name
    and an optional client (cert, key)."""
    env = {"CONSUL_HTTP_ADDR": "https://127.0.0.1:%d" % px.port, "CONSUL_CACERT": ca or px.cert}
    if server_name:
        env["CONSUL_TLS_SERVER_NAME"] = server_name
    if client:
        env["CONSUL_CLIENT_CERT"], env["CONSUL_CLIENT_KEY"] = client
    return env


def disc_healthy(rv):
    """rivet_discovery_source_healthy{source="consul"} (None when not exposed)."""
    samples = rv.metrics()
    if not any(n == "rivet_discovery_source_healthy" and lb.get("source") == "consul" for n, lb, _ in samples):
        return None
    return metric_sum(samples, "rivet_discovery_source_healthy", source="consul")


@pytest.fixture
def tls_proxies():
    made = []
    yield made
    for px in made:
        px.stop()


def endpoints_of(rv, svc):
    c = [c for c in rv.config_dump()["clusters"] if c["name"] == "%s.%s" % (NS, svc)]
    return sorted(e["address"] for e in c[0]["endpoints"]) if c else None


@pytest.mark.parametrize("mtls", [False, True], ids=["server-auth", "mtls"])
def test_discovery_over_tls(cfg, backend, rivet, consul, tmp_path, tls_proxies, mtls):
    """CONSUL_HTTP_ADDR=https://127.0.0.1:port, CONSUL_CACERT and CONSUL_TLS_SERVER_NAME (and
    with mtls, CONSUL_CLIENT_CERT/KEY, which the proxy requires): every query goes through TLS
    with the server name as SNI, services are discovered, traffic reaches the instances, and a
    check change and a new registration are followed."""
    need_double(consul)
    client = make_cert(tmp_path, "client", "rivet-client") if mtls else None
    px = TLSProxy(tmp_path, TLS_NAME, consul.port, client_ca=client[0] if mtls else None)
    tls_proxies.append(px)
    svc = unique("tls")
    bs = [named(backend, "b%d" % i) for i in range(3)]
    for i, b in enumerate(bs[:2]):
        consul.register_service(svc, service_id="%s-%d" % (svc, i), address="127.0.0.1", port=b.port,
                                health="passing")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = rivet(cfg, args=["--consul-discovery"], env=tls_env(px, client=client))
    wait_for(lambda: rv.get("/", timeout=5).status == 200, timeout=10, msg="first 200")
    count, fails = hits(rv, bs, 20)
    assert fails == 0 and count["b0"] > 0 and count["b1"] > 0 and count["b2"] == 0, count
    st = rv.resource_status("Upstream", svc)
    assert st and st["state"] == "Accepted", st
    # the answers came over TLS, with the server name as SNI (and the client certificate)
    assert consul.requests("/v1/health/service/" + svc), "the double saw no health query"
    assert px.handshakes > 0 and px.failed == 0, (px.handshakes, px.failed, px.errors[:3])
    assert set(px.snis) == {TLS_NAME}, px.snis
    if mtls:
        assert px.client_cns and set(px.client_cns) == {"rivet-client"}, px.client_cns
    assert disc_healthy(rv) == 1

    # a failing check: b1 leaves the rotation
    consul.set_check_status("service:%s-1" % svc, "critical")
    wait_for(lambda: hits(rv, bs, 8)[0]["b1"] == 0, timeout=10, msg="b1 out of rotation")
    count, fails = hits(rv, bs, 12)
    assert fails == 0 and count == {"b0": 12, "b1": 0, "b2": 0}, count
    # a new instance: receives traffic
    consul.register_service(svc, service_id="%s-2" % svc, address="127.0.0.1", port=bs[2].port, health="passing")
    wait_for(lambda: hits(rv, bs, 8)[0]["b2"] > 0, timeout=10, msg="b2 in rotation")
    assert "Consul unavailable" not in rv.stderr(), rv.stderr()[-3000:]


@pytest.mark.parametrize("bad", ["wrong-ca", "no-server-name", "no-client-cert"])
def test_discovery_tls_failure_is_reported_and_serves_nothing(cfg, backend, rivet, consul, tmp_path,
                                                              tls_proxies, bad):
    """A TLS setup that cannot verify (a CA that did not sign Consul's certificate; no server
    name, so the certificate is checked against 127.0.0.1; a proxy requiring a client certificate
    rivet was not given): no query gets through, rivet starts from its files without the
    service, says why in its log, in /ready's detail and in the gauge, keeps running, and sends no
    request to the registered instance (no stale or invented endpoint)."""
    need_double(consul)
    client = make_cert(tmp_path, "client", "rivet-client") if bad == "no-client-cert" else None
    px = TLSProxy(tmp_path, TLS_NAME, consul.port, client_ca=client[0] if client else None)
    tls_proxies.append(px)
    svc = unique("tlsbad")
    # a port below the ephemeral range: a stray connect to a just-freed ephemeral port (a health
    # check or pooled connection of some other process) is less likely to land on it
    b = named(backend, "b0", port=free_port())
    consul.register_service(svc, service_id=svc + "-0", address="127.0.0.1", port=b.port, health="passing")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    if bad == "wrong-ca":
        env = tls_env(px, ca=make_cert(tmp_path, "other-ca", TLS_NAME)[0])
    elif bad == "no-server-name":
        env = tls_env(px, server_name=None)
    else:
        env = tls_env(px)
    rv = rivet(cfg, ready=False, args=["--consul-discovery"], env=env)
    # Consul unreachable only delays startup (at most 5 s): then rivet serves its files
    rv.wait_ready(timeout=30)
    wait_for(lambda: "consul discovery: Consul unavailable (" in rv.stderr(), timeout=10, msg="failure logged")
    line = [ln for ln in rv.stderr().splitlines() if "Consul unavailable (" in ln][0]
    if bad != "no-client-cert":  # a refused client certificate shows as a failed read instead
        assert "SSL" in line, line
    # curl's detail (its error buffer) says which check failed, not only "not OK"
    want = {"wrong-ca": "certificate problem", "no-server-name": "127.0.0.1"}.get(bad)
    if want:
        assert want in line, line
    assert disc_healthy(rv) == 0
    ready = rv.admin_get("/ready")
    assert ready.status == 200 and "consul discovery: unavailable" in ready.text, ready.text
    # rivet did reach the proxy; nothing got through it to the double. Without the server name
    # the handshake itself completes (curl checks the name after it) and rivet then hangs up.
    wait_for(lambda: px.handshakes + px.failed > 0, timeout=10, msg="a connection at the proxy")
    if bad != "no-server-name":
        assert px.handshakes == 0 and px.failed > 0, (px.handshakes, px.failed)
    assert consul.requests("/v1/") == [], consul.requests("/v1/")[:3]
    # no endpoint from Consul: the service is not discovered, the route has nowhere to go
    assert rv.resource_status("Upstream", svc) is None
    assert endpoints_of(rv, svc) is None
    for _ in range(5):
        assert rv.get("/", timeout=5).status != 200
    # no request reached the instance. (Not "no connection": on a machine where other test runs
    # go on at the same time, a connection to a "closed" port of theirs - a TCP health check, a
    # connect-refused probe - can land on it, empty. Its port is a free_port() one, below the
    # ephemeral range, which makes that rarer but cannot rule it out.)
    assert not b.requests, b.requests[:2]
    assert rv.alive()
    assert rv.stderr().count("Consul unavailable") == 1, rv.stderr()[-3000:]


def test_discovery_tls_certificate_change_keeps_last_instances(cfg, backend, rivet, consul, tmp_path, tls_proxies):
    """Consul's certificate stops verifying while rivet runs (the proxy presents one for another
    name and drops its connections): rivet reports discovery unavailable (log, gauge, /ready),
    keeps serving the instances it last read (a change made meanwhile is not seen: nothing
    invented), and once the right certificate is back it says so and follows that change."""
    need_double(consul)
    px = TLSProxy(tmp_path, TLS_NAME, consul.port)
    tls_proxies.append(px)
    svc = unique("tlsswap")
    bs = [named(backend, "b%d" % i) for i in range(2)]
    for i, b in enumerate(bs):
        consul.register_service(svc, service_id="%s-%d" % (svc, i), address="127.0.0.1", port=b.port,
                                health="passing")
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream=svc)])
    rv = rivet(cfg, args=["--consul-discovery"], env=tls_env(px))
    wait_for(lambda: hits(rv, bs, 8)[0]["b1"] > 0, timeout=10, msg="both instances serving")
    both = endpoints_of(rv, svc)
    assert both and len(both) == 2, both
    assert disc_healthy(rv) == 1

    other_cert, other_key = make_cert(tmp_path, "other", "other.rivet.test")
    px.set_identity(other_cert, other_key)
    px.drop_connections()
    wait_for(lambda: "Consul unavailable (" in rv.stderr(), timeout=15, msg="failure logged")
    wait_for(lambda: disc_healthy(rv) == 0, timeout=5, msg="gauge 0")
    assert "consul discovery: unavailable" in rv.admin_get("/ready").text
    # a change made while rivet cannot read Consul is not seen: the last instances keep serving
    consul.set_check_status("service:%s-1" % svc, "critical")
    wait_for(lambda: px.failed >= 2, timeout=15, msg="rivet retrying against the wrong certificate")
    assert endpoints_of(rv, svc) == both
    count, fails = hits(rv, bs, 12)
    assert fails == 0 and count["b0"] > 0 and count["b1"] > 0, count

    px.set_identity(px.cert, px.key)
    wait_for(lambda: "Consul answers again" in rv.stderr(), timeout=90, msg="recovery logged")
    wait_for(lambda: hits(rv, bs, 8)[0]["b1"] == 0, timeout=10, msg="b1 out of rotation after recovery")
    assert disc_healthy(rv) == 1
    assert rv.stderr().count("Consul unavailable") == 1, rv.stderr()[-3000:]
    assert rv.alive()
