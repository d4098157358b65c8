#!/usr/bin/env python3
"""Consul discovery at scale (not a test: run by hand, takes a minute or two).

    RIVET_BIN=build/rivet /usr/bin/python3 tests/integ/consul_scale.py [--services 5000] [--instances 15]

Registers SERVICES x INSTANCES instances (one node per instance slot, a passing service check
each) in a minimal catalog/health server (FastCatalog below: the protocol subset discovery uses,
with Consul's index and blocking rules; tests/doubles/consul.py re-sorts its whole catalog on
every read, which is right for conformance and too slow at 75 000 instances), starts `rivet run --consul-discovery` with one
Gateway and one VirtualService routing to one of the services (a real backend behind it), and
reports: time until every service is an Upstream in /status and every endpoint is in
/config_dump, rivet's RSS (VmRSS and VmHWM), the time for one failing check to take an instance
out of /config_dump and of traffic, and the Consul requests rivet made.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backend import Backend  # noqa: E402
from harness import ConfigDir, Rivet, route  # noqa: E402


class FastCatalog:
    """/v1/catalog/services and /v1/health/service/<name> with per-service X-Consul-Index and
    blocking (?index=&wait=), answers precomputed as JSON. Same Python API as the double's
    subset the script uses."""

    def __init__(self):
        self.cond = threading.Condition()
        self.raft = 1
        self.nodes = {}
        self.svcs = {}          # name -> {sid: instance dict}
        self.svc_index = {}
        self.cache = {}         # name -> bytes
        self.list_index = 1
        self.list_cache = None
        self.blocking_queries = 0
        fc = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urlparse(self.path)
                q = parse_qs(u.query, keep_blank_values=True)
                index = int(q.get("index", ["0"])[0] or 0)
                wait = q.get("wait", ["0ms"])[0]
                wait_s = float(wait[:-2]) / 1000 if wait.endswith("ms") else float(wait.rstrip("s") or 0)
                if u.path == "/v1/catalog/services":
                    idx, body = fc.block(index, wait_s, lambda: (fc.list_index, fc.services_json()))
                elif u.path.startswith("/v1/health/service/"):
                    name = unquote(u.path[len("/v1/health/service/"):])
                    idx, body = fc.block(index, wait_s, lambda: (fc.svc_index.get(name, fc.list_index),
                                                                 fc.health_json(name)))
                elif u.path == "/v1/catalog/datacenters":
                    idx, body = fc.raft, b'["dc1"]'
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Consul-Index", str(max(1, idx)))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def block(self, index, wait_s, compute):
        with self.cond:
            idx, _ = compute()[0], None
            if index and idx <= index:
                self.blocking_queries += 1
                end = time.monotonic() + (wait_s or 300)
                while compute()[0] <= index and time.monotonic() < end:
                    self.cond.wait(max(0.0, end - time.monotonic()))
                self.blocking_queries -= 1
            return compute()

    def services_json(self):
        if self.list_cache is None:
            out = {}
            for name, insts in self.svcs.items():
                tags = sorted({t for i in insts.values() for t in i["Service"]["Tags"]})
                out[name] = tags
            self.list_cache = json.dumps(out).encode()
        return self.list_cache

    def health_json(self, name):
        b = self.cache.get(name)
        if b is None:
            b = json.dumps(list(self.svcs.get(name, {}).values())).encode()
            self.cache[name] = b
        return b

    def _bump(self, name, list_changed):
        self.raft += 1
        self.svc_index[name] = self.raft
        self.cache.pop(name, None)
        if list_changed:
            self.list_index = self.raft
            self.list_cache = None
        self.cond.notify_all()

    def register_node(self, node, address):
        self.nodes[node] = address

    def register_service(self, name, service_id, port, tags=(), node=None, address="", health="passing"):
        node = node or "agent"
        with self.cond:
            new = name not in self.svcs
            self.svcs.setdefault(name, {})[service_id] = {
                "Node": {"Node": node, "Address": self.nodes.get(node, "127.0.0.1"), "Datacenter": "dc1"},
                "Service": {"ID": service_id, "Service": name, "Tags": list(tags), "Address": address,
                            "Port": port},
                "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                           {"CheckID": "service:" + service_id, "Status": health, "ServiceID": service_id}]}
            self._bump(name, new)

    def set_check_status(self, check_id, status, node=None):
        sid = check_id[len("service:"):]
        with self.cond:
            for name, insts in self.svcs.items():
                if sid in insts:
                    insts[sid]["Checks"][1]["Status"] = status
                    self._bump(name, False)
                    return

    def deregister_service(self, service_id):
        with self.cond:
            for name, insts in list(self.svcs.items()):
                if service_id in insts:
                    del insts[service_id]
                    self._bump(name, False)
                    return

    def stop(self):
        self.server.shutdown()


def control_cpu_s(pid):
    """CPU seconds (user + system) of rivet's main thread, which runs the control loop."""
    with open("/proc/%d/task/%d/stat" % (pid, pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--instances", type=int, default=15)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    total = a.services * a.instances

    consul = FastCatalog()
    t0 = time.monotonic()
    for k in range(a.instances):
        consul.register_node("node-%d" % k, "127.1.%d.%d" % (k // 250, k % 250 + 1))
    for s in range(a.services):
        name = "svc-%05d" % s
        for k in range(a.instances):
            consul.register_service(name, service_id="%s-%d" % (name, k), port=10000 + k, tags=["t%d" % (k % 3)],
                                    node="node-%d" % k, health="passing")
    print("registered %d instances of %d services in the double in %.1f s" % (total, a.services,
                                                                             time.monotonic() - t0))

    be = Backend(name="live", handler=lambda req, conn: conn.respond(200, b"live") or True)
    consul.register_service("svc-live", service_id="svc-live-0", address="127.0.0.1", port=be.port, health="passing")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ConfigDir(os.path.join(tmp, "config"))
        cfg.gateway()
        cfg.vs("vs", [route(prefix="/", upstream="svc-live")])
        t1 = time.monotonic()
        rv = Rivet(cfg, os.path.join(tmp, "rivet"), args=["--consul-discovery", "--access-log", "off"],
                   env={"CONSUL_HTTP_ADDR": consul.addr}, log_level="info")
        try:
            rv.wait_ready(timeout=60)
            want = a.services + 1
            deadline = t1 + a.timeout
            seen_ups = seen_eps = 0
            while time.monotonic() < deadline:
                dump = rv.config_dump()
                clusters = [c for c in dump.get("clusters", []) if c["name"].startswith("gloo-system.svc-")]
                seen_ups = len(clusters)
                seen_eps = sum(len(c["endpoints"]) for c in clusters)
                if seen_ups >= want and seen_eps >= total + 1:
                    break
                time.sleep(0.5)
            converge = time.monotonic() - t1
            print("converged: %d upstreams, %d endpoints in %.1f s after start" % (seen_ups, seen_eps, converge))
            st = [r for r in rv.status() if r["kind"] == "Upstream"]
            print("/status lists %d Upstreams" % len(st))
            print("rivet RSS %.1f MiB (peak %.1f MiB)" % (rv.rss_kib() / 1024, rv.rss_kib("VmHWM") / 1024))
            r = rv.get("/", timeout=5)
            print("traffic to svc-live: %d %r" % (r.status, r.body))

            # one check fails: time until the instance leaves the served config
            cpu0 = control_cpu_s(rv.pid)
            nlog = len((rv.stderr() + rv.stdout()).splitlines())
            t2 = time.monotonic()
            consul.set_check_status("service:svc-00042-3", "critical", node="node-3")
            while time.monotonic() - t2 < 120:
                dump = rv.config_dump()
                c = [c for c in dump["clusters"] if c["name"] == "gloo-system.svc-00042"]
                if c and len(c[0]["endpoints"]) == a.instances - 1:
                    break
                time.sleep(0.1)
            print("failing check applied in %.2f s" % (time.monotonic() - t2))
            t3 = time.monotonic()
            consul.deregister_service("svc-live-0")
            be2 = Backend(name="live2", handler=lambda req, conn: conn.respond(200, b"live2") or True)
            consul.register_service("svc-live", service_id="svc-live-1", address="127.0.0.1", port=be2.port,
                                    health="passing")
            while time.monotonic() - t3 < 120:
                if rv.get("/", timeout=5).body == b"live2":
                    break
                time.sleep(0.05)
            print("instance swap reached traffic in %.2f s" % (time.monotonic() - t3))
            print("control thread CPU over both changes (includes the discovery views' hand-over): %.3f s"
                  % (control_cpu_s(rv.pid) - cpu0))
            for line in (rv.stderr() + rv.stdout()).splitlines()[nlog:]:
                if "updated in place" in line or " published (" in line:
                    print("  rivet: " + line.strip()[:220])
            print("rivet RSS after changes %.1f MiB (peak %.1f MiB)" % (rv.rss_kib() / 1024,
                                                                       rv.rss_kib("VmHWM") / 1024))
            print("blocking queries open at the double now: %d" % consul.blocking_queries)
        finally:
            rv.stop()
            be.stop()
            consul.stop()
            err = rv.stderr()
            if "error" in err:
                print("--- rivet stderr (errors) ---")
                print("\n".join(l for l in err.splitlines() if "error" in l)[-3000:])


if __name__ == "__main__":
    main()
