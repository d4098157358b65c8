#!/usr/bin/python3
"""consul_scale.py - a Consul catalog of SERVICES x INSTANCES for the discovery-scale scenario.

Run as its own process by the harness (so that its GIL and CPU are not the harness's):

    /usr/bin/python3 bench/lib/consul_scale.py --port P --backend-ports A,B \\
        [--services 5000] [--instances 15]

It serves the part of Consul's HTTP API that rivet's discovery uses - /v1/catalog/datacenters,
/v1/catalog/services and /v1/health/service/<name>, with X-Consul-Index per service and
blocking queries (?index=&wait=) - for SERVICES services `svc-00000`... of INSTANCES
instances each (one node per instance slot, 127.1.x.y, a passing serfHealth and service check
each: nothing listens there, no traffic goes to them), plus `svc-live`: two instances on
127.0.0.1, `live-a` (port A, passing) and `live-b` (port B, critical), whose ports this process
also serves with a tiny HTTP/1.1 backend answering "a\\n" and "b\\n". It prints
"consul-scale catalog listening on 127.0.0.1:P" once everything is registered and listening.

Bench-only control (paths a real Consul never serves):
    PUT /_bench/check/<service-id>?status=passing|critical   one check change (one index bump)
    GET /_bench/stats     {"requests": {path kind: n}, "blocking_now": n, "registered": n,
                           "live_reads": [[monotonic time of arrival, ?index], ...] of svc-live,
                           "unread_since": services not read since ?since=T (time.monotonic),
                           "unread_names": the first 10 of them, "reads_since_median"/"_max"}

FastCatalog below is the project's one scale catalog (it replaced an earlier by-hand script
in tests/integ/): the conformance double tests/doubles/consul.py re-sorts its whole catalog on
every read, which is right for conformance and too slow at 75,000 instances.
"""
import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LIVE = "svc-live"


class FastCatalog:
    """/v1/catalog/services and /v1/health/service/<name> with per-service X-Consul-Index and
    blocking (?index=&wait=), answers precomputed as JSON.

    One asyncio event loop serves every connection (stdlib only): a blocked query is a future
    in its service's waiter set, so 5,000 and more held at once cost a few KB each, a change
    wakes only its service's queries, and the timeouts of thousands of queries are timers, not
    threads contending for the GIL (a thread per connection answered timed-out queries seconds
    late when 5,000 expired together)."""

    def __init__(self, port):
        self.port = port
        self.addr = None
        self.loop = None
        self.raft = 1
        self.nodes = {}
        self.svcs = {}          # name -> {sid: instance dict}
        self.svc_index = {}
        self.cache = {}         # name -> bytes
        self.list_index = 1
        self.list_cache = None
        self.blocking_queries = 0
        self.waiters = {}       # service name (None: the service list) -> set of futures
        self.requests = {}      # "services" | "health" | "health_blocking" | ... -> count
        self.sid_service = {}   # service id -> service name
        self.live_reads = []    # (time.monotonic() on arrival, ?index) of svc-live's health reads
        self.reads = {}         # service -> arrival times of its health reads
        self.ready = threading.Event()
        self.stopping = None

    # -- HTTP ----------------------------------------------------------------------------------
    async def _conn(self, reader, writer):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) < 3:
                    return
                method, target = parts[0], parts[1]
                hdrs = {}
                for ln in lines[1:]:
                    k, sep, v = ln.partition(":")
                    if sep:
                        hdrs[k.strip().lower()] = v.strip()
                n = int(hdrs.get("content-length") or 0)
                if n:
                    await reader.readexactly(n)
                status, body, idx = await self._handle(method, target)
                out = ["HTTP/1.1 %d %s" % (status, "OK" if status == 200 else "Not Found"),
                       "Content-Type: application/json", "Content-Length: %d" % len(body)]
                if idx is not None:
                    out.append("X-Consul-Index: %d" % max(1, idx))
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
                await writer.drain()
                if hdrs.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _handle(self, method, target):
        u = urlparse(target)
        q = parse_qs(u.query, keep_blank_values=True)
        if method == "PUT":
            if not u.path.startswith("/_bench/check/"):
                return 404, b"", None
            sid = unquote(u.path[len("/_bench/check/"):])
            ok = self.set_check_status(sid, q.get("status", ["passing"])[0])
            return (200 if ok else 404), (b"true" if ok else b"false"), None
        index = int(q.get("index", ["0"])[0] or 0)
        wait = q.get("wait", ["0ms"])[0]
        wait_s = float(wait[:-2]) / 1000 if wait.endswith("ms") else float(wait.rstrip("s") or 0)
        kind = "blocking" if index else "plain"
        if u.path == "/v1/catalog/services":
            self.count("services_" + kind)
            idx, body = await self.block(index, wait_s, lambda: (self.list_index, self.services_json()), None)
            return 200, body, idx
        if u.path.startswith("/v1/health/service/"):
            self.count("health_" + kind)
            name = unquote(u.path[len("/v1/health/service/"):])
            now = time.monotonic()
            self.reads.setdefault(name, []).append(now)
            if name == LIVE:
                self.live_reads.append((now, index))
            idx, body = await self.block(index, wait_s, lambda: (self.svc_index.get(name, self.list_index),
                                                                 self.health_json(name)), name)
            return 200, body, idx
        if u.path == "/v1/catalog/datacenters":
            self.count("datacenters")
            return 200, b'["dc1"]', self.raft
        if u.path == "/_bench/stats":
            since = float(q.get("since", ["0"])[0] or 0)
            unread = sorted(n for n in self.svcs if not any(t >= since for t in self.reads.get(n, ())))
            per = sorted(sum(1 for t in self.reads.get(n, ()) if t >= since) for n in self.svcs)
            body = json.dumps({"unread_since": len(unread), "unread_names": unread[:10],
                               "reads_since_median": per[len(per) // 2] if per else 0,
                               "reads_since_max": per[-1] if per else 0, "requests": self.requests,
                               "blocking_now": self.blocking_queries,
                               "registered": sum(len(v) for v in self.svcs.values()),
                               "live_reads": self.live_reads[-500:]}).encode()
            return 200, body, None
        self.count("other")
        return 404, b"", None

    def count(self, kind):
        self.requests[kind] = self.requests.get(kind, 0) + 1

    async def block(self, index, wait_s, compute, name):
        idx = compute()[0]
        if index and idx <= index:
            self.blocking_queries += 1
            end = time.monotonic() + (wait_s or 300)
            try:
                while compute()[0] <= index:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    fut = self.loop.create_future()
                    ws = self.waiters.setdefault(name, set())
                    ws.add(fut)
                    try:
                        await asyncio.wait_for(fut, left)
                    except asyncio.TimeoutError:
                        pass
                    finally:
                        ws.discard(fut)
            finally:
                self.blocking_queries -= 1
        return compute()

    def _wake(self, name):
        for f in self.waiters.pop(name, ()):
            if not f.done():
                f.set_result(None)

    # -- data ----------------------------------------------------------------------------------
    def services_json(self):
        if self.list_cache is None:
            out = {}
            for name, insts in self.svcs.items():
                out[name] = sorted({t for i in insts.values() for t in i["Service"]["Tags"]})
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
            for key in list(self.waiters):  # an unknown service's index is the list's
                self._wake(key)
        else:
            self._wake(name)

    def register_node(self, node, address):
        self.nodes[node] = address

    def register_service(self, name, service_id, port, tags=(), node=None, address="", health="passing"):
        """Before serve(), or on the loop."""
        node = node or "agent"
        new = name not in self.svcs
        self.svcs.setdefault(name, {})[service_id] = {
            "Node": {"Node": node, "Address": self.nodes.get(node, "127.0.0.1"), "Datacenter": "dc1"},
            "Service": {"ID": service_id, "Service": name, "Tags": list(tags), "Address": address,
                        "Port": port},
            "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                       {"CheckID": "service:" + service_id, "Status": health, "ServiceID": service_id}]}
        self.sid_service[service_id] = name
        self._bump(name, new)

    def set_check_status(self, service_id, status):
        """On the loop (PUT /_bench/check/<id>)."""
        name = self.sid_service.get(service_id)
        if name is None:
            return False
        self.svcs[name][service_id]["Checks"][1]["Status"] = status
        self._bump(name, False)
        return True

    # -- lifecycle -----------------------------------------------------------------------------
    def serve(self):
        """Start the loop on its own thread; returns once the port listens."""
        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self.stopping = self.loop.create_future()

            async def main():
                srv = await asyncio.start_server(self._conn, "127.0.0.1", self.port, backlog=4096,
                                                 limit=1 << 20)
                self.addr = "127.0.0.1:%d" % srv.sockets[0].getsockname()[1]
                self.ready.set()
                await self.stopping
                srv.close()
            try:
                self.loop.run_until_complete(main())
            finally:
                self.ready.set()
        threading.Thread(target=run, daemon=True).start()
        self.ready.wait(30)

    def stop(self):
        if self.loop is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(lambda: self.stopping.done() or self.stopping.set_result(None))


class Backend:
    """An HTTP/1.1 keep-alive server on 127.0.0.1:port answering `body` to every GET."""

    def __init__(self, port, body):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def populate(fc, services, instances, port_a, port_b):
    for k in range(instances):
        fc.register_node("node-%d" % k, "127.1.%d.%d" % (k // 250, k % 250 + 1))
    for s in range(services):
        name = "svc-%05d" % s
        for k in range(instances):
            fc.register_service(name, service_id="%s-%d" % (name, k), port=10000 + k,
                                tags=["t%d" % (k % 3)], node="node-%d" % k, health="passing")
    fc.register_service(LIVE, service_id="live-a", address="127.0.0.1", port=port_a, health="passing")
    fc.register_service(LIVE, service_id="live-b", address="127.0.0.1", port=port_b, health="critical")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend-ports", required=True, help="A,B: ports of live-a and live-b")
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--instances", type=int, default=15)
    a = ap.parse_args()
    pa, pb = (int(x) for x in a.backend_ports.split(","))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t0 = time.monotonic()
    fc = FastCatalog(a.port)
    populate(fc, a.services, a.instances, pa, pb)
    Backend(pa, b"a\n")
    Backend(pb, b"b\n")
    fc.serve()
    print("consul-scale catalog listening on %s: %d services x %d instances + %s (2), "
          "registered in %.1f s" % (fc.addr, a.services, a.instances, LIVE, time.monotonic() - t0),
          flush=True)
    while not stop.wait(0.5):
        pass
    fc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------
# harness side (bench/lib/harness.py, scenario consul-scale): talking to the catalog process
def _call(port, method, path, timeout=5.0):
    import http.client
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request(method, path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body
    except (OSError, http.client.HTTPException) as e:
        return None, str(e).encode()


def set_check(port, service_id, status):
    st, _ = _call(port, "PUT", "/_bench/check/%s?status=%s" % (service_id, status))
    return st == 200


def stats(port, since=0.0):
    st, body = _call(port, "GET", "/_bench/stats?since=%.6f" % since)
    return json.loads(body) if st == 200 else {}


def served_endpoints(admin_port, cluster, timeout=30.0):
    """The endpoints ("ip:port") of one cluster in rivet's /config_dump, or None."""
    st, body = _call(admin_port, "GET", "/config_dump", timeout=timeout)
    if st != 200:
        return None
    for c in json.loads(body).get("clusters", []):
        if c.get("name") == cluster:
            return [e.get("address", "") if isinstance(e, dict) else str(e) for e in c.get("endpoints", [])]
    return []


def instance_addr(service_index, k):
    """The address populate() gives instance k of svc-<service_index>."""
    return "127.1.%d.%d:%d" % (k // 250, k % 250 + 1, 10000 + k)


def served_counts(admin_port, prefix="gloo-system.svc-", timeout=30.0):
    """(clusters whose name starts with prefix, their endpoints) in rivet's /config_dump."""
    st, body = _call(admin_port, "GET", "/config_dump", timeout=timeout)
    if st != 200:
        return None, None, 0
    dump = json.loads(body)
    cl = [c for c in dump.get("clusters", []) if c.get("name", "").startswith(prefix)]
    return len(cl), sum(len(c.get("endpoints", [])) for c in cl), len(body)


def wait_traffic(poller, want, consecutive, t0, timeout, poll_ms=2.0):
    """Poll the data path until `consecutive` answers in a row have body `want`; the time (from
    t0, in ms) of the first answer of that run, or None after timeout seconds. With round
    robin over two instances, one answer from the newly passing instance shows the change
    (consecutive=1); several in a row show that the other instance left the rotation."""
    run_start, run = None, 0
    deadline = t0 + timeout
    while True:
        st, body = poller.get()
        t = time.monotonic()
        if st == 200 and body == want:
            if run == 0:
                run_start = t
            run += 1
            if run >= consecutive:
                return (run_start - t0) * 1000.0
        else:
            run = 0
        if t > deadline:
            return None
        time.sleep(poll_ms / 1000.0)
