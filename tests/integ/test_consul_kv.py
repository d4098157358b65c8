"""Consul KV as the config source: `rivet run --consul ADDR` against the Consul double
(tests/doubles/consul.py), or a live Consul when CONSUL_HTTP_ADDR is set (fault tests need the
double's switches and run only against it).

Each test uses its own root key, a Settings file with refreshRate 1s (so blocking reads wait
1 s and a fault is seen within about a second), and 1-2 workers.
"""
import os
import sys
import threading
import time
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from harness import KVConfig, NS, TLSProxy, route, wait_for  # noqa: E402


@pytest.fixture
def double(consul):
    if getattr(consul, "live", False):
        pytest.skip("needs the Consul double's fault switches")
    return consul


@pytest.fixture
def kv(tmp_path, consul):
    root = "rivet-test-%s" % uuid.uuid4().hex[:8]
    c = KVConfig(tmp_path / "boot", consul, root)
    c.settings("refreshRate: 1s\n")
    yield c
    if getattr(consul, "live", False):
        consul.kv_delete(root, recurse=True)


def start(rivet, kv, consul, **kw):
    args = ["--consul", consul.addr, "--consul-root-key", kv.root_key] + kw.pop("args", [])
    return rivet(kv, args=args, **kw)


def simple(kv, body="one"):
    port = kv.gateway()
    kv.vs("vs", [route(prefix="/", direct=(200, body))])
    return port


def metric(rv, name, **labels):
    from harness import metric_sum, metric_names
    samples = rv.metrics()
    if name not in metric_names(samples):
        return None
    return metric_sum(samples, name, **labels)


def test_serves_from_consul_and_follows_changes(rivet, kv, consul):
    simple(kv, "one")
    rv = start(rivet, kv, consul)
    assert rv.get("/").text == "one"
    kv.vs("vs", [route(prefix="/", direct=(200, "two"))])
    rv.wait_body("/", "two", timeout=5)
    st = rv.resource_status("VirtualService", "vs")
    assert st["state"] == "Accepted"
    assert st["source"] == kv.key("virtualservices", "vs")


def test_key_metadata_mismatch_rejected_last_good_kept(rivet, kv, consul):
    simple(kv, "good")
    rv = start(rivet, kv, consul)
    consul.kv_put(kv.key("virtualservices", "vs"),
                  "metadata: {name: other, namespace: %s}\nvirtualHost: {domains: ['*']}\n" % NS)
    st = rv.wait_status("VirtualService", "vs", "Rejected")
    assert "does not match the key" in st["reason"]
    assert rv.get("/").text == "good"


def test_two_instances_share_one_consul(rivet, kv, consul, tmp_path):
    simple(kv, "shared")
    a = start(rivet, kv, consul, workers=1)
    b = start(rivet, kv, consul, workers=1)
    kv.vs("vs", [route(prefix="/", direct=(200, "v2"))])
    for rv in (a, b):
        wait_for(lambda rv=rv: any(r.get("name") == "vs" and r.get("state") == "Accepted" for r in rv.status()),
                 5, msg="vs in status")
        wait_for(lambda rv=rv: "v2" in rv.admin_get("/config_dump").text, 5, msg="v2 in config_dump")


def test_consul_down_at_start_then_up(rivet, kv, double):
    simple(kv, "late")
    double.fault_down()
    rv = start(rivet, kv, double, ready=False)
    time.sleep(1.0)
    assert rv.alive()
    assert rv.admin_get("/ready").status != 200
    double.clear_fault()
    rv.wait_ready(timeout=15)
    assert rv.get("/").text == "late"


class Load:
    """Requests in a loop on a thread; counts failures (anything but 200 with the body)."""

    def __init__(self, rv, want):
        self.rv, self.want = rv, want
        self.ok = self.failed = 0
        self.errors = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.rv.get("/", timeout=5)
                good = r.status == 200 and r.text in self.want
            except Exception as e:  # noqa: BLE001
                good, r = False, e
            if good:
                self.ok += 1
            else:
                self.failed += 1
                self.errors.append(repr(r)[:200])
            time.sleep(0.005)

    def finish(self):
        self.stop.set()
        self.t.join(10)
        return self


@pytest.mark.parametrize("fault", ["down", "error", "forbidden", "leader_loss", "slow"])
def test_fault_keeps_last_good_then_recovers(rivet, kv, double, fault):
    simple(kv, "before")
    rv = start(rivet, kv, double)
    load = Load(rv, ("before", "after"))
    if fault == "down":
        double.fault_down()
    elif fault == "error":
        double.fault_error(500, "No known Consul servers")
    elif fault == "forbidden":
        double.fault_forbidden()
    elif fault == "leader_loss":
        double.fault_leader_loss()
    else:
        # answers 5 s late (rivet's own limit for a 1 s blocking read is about 6 s): a query
        # sent after this point cannot return before then, so the change written below at
        # 1.5 s stays unseen at 2 s with 3 s to spare on a slow machine
        double.fault_slow(5000)
    if fault != "slow":
        # seen within about a blocking wait (1 s) + backoff; logged once
        wait_for(lambda: "consul kv: cannot read" in rv.stderr(), 6, msg="unhealthy logged")
        # the watcher logs first and then lowers the gauge: wait for it, do not sample it
        if metric(rv, "rivet_config_source_healthy", source="consul") is not None:
            wait_for(lambda: metric(rv, "rivet_config_source_healthy", source="consul") == 0, 5,
                     msg="healthy gauge 0")
        assert rv.stderr().count("consul kv: cannot read") == 1
    time.sleep(1.5)
    # a change made while Consul is failing (written behind its back) ...
    kv.vs("vs", [route(prefix="/", direct=(200, "after"))])
    time.sleep(0.5)
    assert rv.get("/").text == "before"
    double.clear_fault()
    # ... reaches traffic once it answers again
    rv.wait_body("/", "after", timeout=20)
    load.finish()
    assert load.failed == 0, load.errors[:5]
    assert load.ok > 20
    if fault != "slow":
        # the watcher hands the new listing over before it logs: the new body can be served first
        wait_for(lambda: "readable again" in rv.stderr(), 5, msg="recovery logged")
        h = metric(rv, "rivet_config_source_healthy", source="consul")
        if h is not None:
            wait_for(lambda: metric(rv, "rivet_config_source_healthy", source="consul") == 1, 5,
                     msg="healthy gauge back to 1")


def test_index_reset_is_followed(rivet, kv, double):
    simple(kv, "a")
    rv = start(rivet, kv, double)
    double.index_reset()
    kv.vs("vs", [route(prefix="/", direct=(200, "b"))])
    rv.wait_body("/", "b", timeout=5)
    wait_for(lambda: "index went backwards" in rv.stderr(), 5, msg="reset logged")


def test_index_zero_no_busy_loop(rivet, kv, double):
    simple(kv, "z")
    rv = start(rivet, kv, double)
    double.fault_index_zero()
    time.sleep(0.5)
    double.clear_requests()
    t0 = time.monotonic()
    time.sleep(2.0)
    n = len(double.requests("/v1/kv/"))
    took = time.monotonic() - t0        # a loaded machine may sleep longer than asked
    # the token bucket allows 10 reads/s (burst 2): never a busy loop (25 in 2 s before)
    assert n <= 5 + 10 * took, (n, took)
    kv.vs("vs", [route(prefix="/", direct=(200, "z2"))])
    rv.wait_body("/", "z2", timeout=5)
    double.clear_fault()
    assert rv.get("/").text == "z2"


def test_consul_flags_in_help():
    from harness import run_cli
    r = run_cli("run", "--help")
    assert r.returncode == 0
    for flag in ("--consul ADDR", "--consul-root-key", "--consul-allow-stale", "CONSUL_HTTP_ADDR"):
        assert flag in r.stdout, flag


def test_tls_server_name_is_sni_and_verified_name(rivet, kv, double, tmp_path):
    """CONSUL_TLS_SERVER_NAME: rivet connects to the address it was given, but sends the server
    name as SNI and checks the certificate against it (the certificate is not valid for
    127.0.0.1, so only the server name can make verification pass)."""
    simple(kv, "over-tls")
    px = TLSProxy(tmp_path, "consul.rivet.test", double.port)
    try:
        env = {"CONSUL_CACERT": px.cert, "CONSUL_TLS_SERVER_NAME": "consul.rivet.test:8501"}
        rv = rivet(kv, args=["--consul", "https://127.0.0.1:%d" % px.port, "--consul-root-key", kv.root_key],
                   env=env)
        assert rv.get("/").text == "over-tls"
        assert px.snis and set(px.snis) == {"consul.rivet.test"}, px.snis
        # without the server name the certificate does not match 127.0.0.1: never ready
        rv2 = rivet(kv, ready=False, args=["--consul", "https://127.0.0.1:%d" % px.port, "--consul-root-key",
                                           kv.root_key], env={"CONSUL_CACERT": px.cert})
        # the log says which check failed (curl's error buffer), not only "not OK"; once it is
        # there rivet has tried and failed (a fixed sleep could end before the admin port listens)
        wait_for(lambda: "subject name matches target host name '127.0.0.1'" in rv2.stderr(), 10,
                 msg="the certificate name mismatch named in the log")
        r = rv2.admin_get("/ready")
        assert r.status == 503, r
    finally:
        px.stop()


def test_stale_without_leader_is_degraded_but_serves(rivet, kv, double):
    """With ?stale, a leaderless Consul still answers (X-Consul-KnownLeader: false): rivet keeps
    following it, but /ready detail and the gauges say the source is degraded, until a leader
    is back."""
    simple(kv, "before")
    rv = start(rivet, kv, double, args=["--consul-allow-stale"])
    assert metric(rv, "rivet_config_source_known_leader", source="consul") == 1
    double.fault_leader_loss()
    wait_for(lambda: "no known leader" in rv.admin_get("/ready").text, 6, msg="degraded in /ready detail")
    r = rv.admin_get("/ready")
    assert r.status == 200 and "degraded" in r.text, r.text
    assert metric(rv, "rivet_config_source_healthy", source="consul") == 0
    assert metric(rv, "rivet_config_source_known_leader", source="consul") == 0
    assert rv.get("/").text == "before"
    time.sleep(1.5)
    assert rv.stderr().count("no known leader (X-Consul-KnownLeader: false)") == 1  # logged once
    double.clear_fault()
    wait_for(lambda: metric(rv, "rivet_config_source_known_leader", source="consul") == 1, 6, msg="leader back")
    assert metric(rv, "rivet_config_source_healthy", source="consul") == 1
    assert "healthy" in rv.admin_get("/ready").text
    assert "Consul has a known leader again" in rv.stderr()
