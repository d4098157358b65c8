"""Review RV4: Upstream circuitBreakers, connectionConfig and healthChecks probed with the real
binary and real clients (the edge cases an operator meets: failures of every kind, reloads
mid-request, TLS failures, IPv6, SIGTERM with checks in flight, servers that close idle
connections, pipelining).

A circuit breaker count that leaks has no metric of its own: it is observed through its limit.
With maxRequests = maxConnections = N, N requests held at the backend at once must all reach
it after the leak cases ran (a leaked count would refuse one with 503 UO or park it)."""
import socket
import subprocess
import threading
import time

import pytest

from harness import in_thread, metric_sum, request, route, wait_for


def gated(gate):
    """Handler: /hold... answers once gate is set, /hang closes once gate is set, /reset resets,
    /close closes (a /t/ or /r/ route prefix is ignored); anything else is the backend's
    default (/bytes/N, /delay/MS, echo)."""
    def handler(req, conn):
        path = req.path
        for pre in ("/t/", "/r/"):
            if path.startswith(pre):
                path = path[2:]
        if path.startswith("/hold"):
            gate.wait(30)
            conn.respond(200, "done %s\n" % req.path)
            return True
        if path.startswith("/hang"):
            gate.wait(30)
            conn.close()
            return True
        if path.startswith("/reset"):
            conn.reset()
            return True
        if path.startswith("/close"):
            conn.close()
            return True
        return False
    return handler


def held_requests_all_reach(rv, b, gate, n, prefix="/hold"):
    """Start n requests that the backend holds; True when all n reached the backend (no
    circuit breaker count left over refused or parked one). Releases them."""
    before = len(b.requests)
    res = [in_thread(rv.get, "%s/%d" % (prefix, i), timeout=20) for i in range(n)]
    ok = True
    try:
        b.wait_requests(before + n, timeout=5)
    except AssertionError:
        ok = False
    finally:
        gate.set()
    statuses = [r().status for r in res]
    return ok and len(b.requests) - before >= n, statuses


def abort_mid_request(port, path):
    """A raw connection that sent one complete request (the caller closes or resets it)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    return s


def ended(rv, needle, n):
    """Wait until n requests matching needle were ended by rivet (their access-log lines): a
    client can read its whole response a moment before rivet ends the request and gives its
    counts back, so a next request sent at once could still find them taken."""
    wait_for(lambda: rv.stdout().count(needle) >= n, msg="%d access-log lines with %s" % (n, needle))


LIMITS = {"maxRequests": 3, "maxConnections": 3, "maxRetries": 1}


def leak_setup(cfg, backend, extra_routes=()):
    """Upstream "up" (LIMITS) on a gated backend; routes /t/ (0.5 s route timeout), /r/ (one
    retry on 5xx/reset/connect-failure, 0.3 s per try), / (defaults). Returns (gate, backend)."""
    gate = threading.Event()
    b = backend(handler=gated(gate))
    cfg.gateway()
    cfg.upstream("up", [b], circuitBreakers=dict(LIMITS))
    retry = {"retries": {"retryOn": "5xx,reset,connect-failure", "numRetries": 1,
                         "perTryTimeout": "0.3s"}}
    cfg.vs("vs", [route(prefix="/t/", upstream="up", options={"timeout": "0.5s"}),
                  route(prefix="/r/", upstream="up", options=retry)] + list(extra_routes) +
           [route(prefix="/", upstream="up")])
    return gate, b


@pytest.mark.parametrize("workers", [1, 2])
def test_cb_counts_return_to_zero_after_failures(cfg, backend, rivet, workers):
    """maxRequests 3, maxConnections 3: requests that end by route timeout, per-try timeout with
    retry, upstream reset, upstream close, client abort mid-response
    each give their counts back: afterwards 3 requests held at once all reach the backend."""
    gate, b = leak_setup(cfg, backend)
    rv = rivet(cfg, workers=workers)
    assert rv.get("/t/hang").status == 504
    assert rv.get("/r/hang").status == 504
    assert rv.get("/reset").status == 503
    assert rv.get("/close").status == 503
    assert rv.get("/r/reset").status == 503
    # client abort mid-response
    s = abort_mid_request(rv.port, "/bytes/50000000")
    s.recv(1000)
    s.close()
    ended(rv, '"GET /bytes/50000000 ', 1)
    gate.clear()
    ok, st = held_requests_all_reach(rv, b, gate, 3)
    assert ok, "a circuit breaker count leaked: %r" % (st,)
    assert st == [200, 200, 200], st


def test_sigterm_with_health_checks_in_flight_exits_promptly(cfg, backend, hang_server, rivet):
    """A check in flight against an endpoint that accepts and never answers, with a 60 s
    timeout: SIGTERM stops the checker at once (curl_multi_wakeup), rivet exits 0 well before
    the check's timeout."""
    import signal
    b = backend()
    h = hang_server()
    cfg.gateway()
    cfg.upstream("up", [b, h], healthChecks=[{"timeout": "60s", "interval": "1s", "unhealthyThreshold": 1,
                                              "healthyThreshold": 1, "tcpHealthCheck": {}}])
    cfg.upstream("hc", [h], healthChecks=[{"timeout": "60s", "interval": "1s", "unhealthyThreshold": 1,
                                           "healthyThreshold": 1, "httpHealthCheck": {"path": "/h"}}])
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg)
    wait_for(lambda: b"/h HTTP/1.1" in bytes(h.received), msg="an HTTP check held by the hang server")
    t0 = time.monotonic()
    rv.signal(signal.SIGTERM)
    rc = rv.wait(timeout=30)
    assert rc == 0, rv.stderr()[-2000:]
    assert time.monotonic() - t0 < 30


def has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_health_check_on_ipv6_endpoint(cfg, backend, rivet):
    """An IPv6 static host is checked on [::1]:port (the URL brackets the address): a passing
    check keeps it served; a failing one (503) takes it out while the IPv4 endpoint stays."""
    b4 = backend(name="v4")
    b6 = backend(name="v6", host="::1")
    b6.state["st"] = 200

    def h6(req, conn):
        if req.path == "/hz":
            conn.respond(b6.state["st"], "hc")
            return True
        return False
    b6.set_handler(h6)
    cfg.gateway()
    cfg.upstream("up", [("127.0.0.1", b4.port), ("::1", b6.port)],
                 healthChecks=[{"timeout": "1s", "interval": "0.2s", "unhealthyThreshold": 1,
                                "healthyThreshold": 1, "httpHealthCheck": {"path": "/hz"}}])
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg)
    wait_for(lambda: any(r.path == "/hz" for r in b6.requests), msg="a check on the IPv6 endpoint")
    wait_for(lambda: {rv.get("/x").header("x-backend") for _ in range(6)} == {"v4", "v6"},
             msg="both endpoints served")
    b6.state["st"] = 503
    wait_for(lambda: all(rv.get("/x").header("x-backend") == "v4" for _ in range(6)),
             msg="the failing IPv6 endpoint left out")


def test_health_checked_cluster_keeps_its_circuit_breakers(cfg, backend, rivet):
    """The filtered endpoint set a health flip publishes is a copy of the cluster table: the copy
    must keep the cluster's circuit breaker counts (maxRequests 1 still refuses a second request
    while one is held, after a flip)."""
    gate = threading.Event()
    good = backend(name="good", handler=gated(gate))
    bad = backend(name="bad")
    bad.set_handler(lambda req, conn: (conn.respond(503, "no"), True)[1] if req.path == "/hz" else False)
    cfg.gateway()
    cfg.upstream("up", [good, bad], circuitBreakers={"maxRequests": 1},
                 healthChecks=[{"timeout": "1s", "interval": "0.2s", "unhealthyThreshold": 1,
                                "healthyThreshold": 1, "httpHealthCheck": {"path": "/hz"}}])
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg)

    def only_good():
        cl = [c for c in rv.config_dump()["clusters"] if c["name"] == "gloo-system.up"][0]
        return [e["address"] for e in cl["endpoints"]] == ["127.0.0.1:%d" % good.port]
    wait_for(only_good, msg="the failing endpoint filtered out")
    first = in_thread(rv.get, "/hold/1")
    wait_for(lambda: "/hold/1" in good.paths(), msg="the first request held at the backend")
    try:
        r = rv.get("/second")
        assert r.status == 503 and r.header("x-envoy-overloaded") == "true", r
    finally:
        gate.set()
    assert first().status == 200


def test_cb_counts_after_tls_failures_and_upstream_removal(cfg, backend, rivet):
    """Counts belong to the upstream name for the process's life: TLS handshakes that fail
    (sslConfig against a plain backend: handshake timeout) and requests in flight while their Upstream is removed
    and added back all give their counts back - 3 held requests then reach the backend
    (maxRequests 3, maxConnections 3)."""
    gate = threading.Event()
    b = backend(handler=gated(gate))
    cfg.gateway()
    cfg.upstream("up", [b], circuitBreakers=dict(LIMITS), sslConfig={"sni": "up.test"},
                 connectionConfig={"connectTimeout": "0.5s"})   # the handshake times out
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg, workers=2)
    for i in range(6):
        r = rv.get("/tls/%d" % i)
        assert r.status == 503, r

    def dumped(pred):
        return lambda: any(pred(c) for c in rv.config_dump()["clusters"] if c["name"] == "gloo-system.up")
    cfg.upstream("up", [b], circuitBreakers=dict(LIMITS))
    wait_for(dumped(lambda c: not c.get("tls")), msg="the plain Upstream served")
    held = [in_thread(rv.get, "/hold/%d" % i, timeout=30) for i in range(3)]
    wait_for(lambda: len([p for p in b.paths() if p.startswith("/hold")]) == 3, msg="3 held")
    cfg.remove("upstreams", "up")
    wait_for(lambda: not any(c["name"] == "gloo-system.up" for c in rv.config_dump()["clusters"]),
             msg="the Upstream removed")
    cfg.upstream("up", [b], circuitBreakers=dict(LIMITS))
    wait_for(dumped(lambda c: True), msg="the Upstream back")
    gate.set()
    assert [h().status for h in held] == [200] * 3
    ended(rv, '"GET /hold/', 3)
    gate.clear()
    ok, st = held_requests_all_reach(rv, b, gate, 3, prefix="/hold/again")
    assert ok and st == [200] * 3, st


def test_idle_timeout_zero_with_a_server_that_closes_idle_connections(cfg, backend, rivet):
    """idleTimeout 0s (never reaped by rivet) against a server that closes each connection
    100 ms after its response (its own keep-alive timeout): the closed pooled connection is
    noticed (EPOLLRDHUP) or retried once on a fresh connection - no request fails, and no
    pooled connection outlives its server's close (rivet's side is closed too: no CLOSE_WAIT)."""
    def closer(req, conn):
        conn.respond(200, "ok")
        threading.Timer(0.1, conn.close).start()
        return True
    b = backend(handler=closer)
    cfg.gateway()
    cfg.upstream("up", [b], connectionConfig={"commonHttpProtocolOptions": {"idleTimeout": "0s"}})
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg, workers=1)
    st = []
    for i in range(12):
        st.append(rv.get("/x/%d" % i).status)
        time.sleep(0.15 if i % 2 else 0.02)
    assert st == [200] * 12, st

    def no_close_wait():
        out = subprocess.run(["ss", "-tan", "( dport = :%d )" % b.port], capture_output=True, text=True).stdout
        return "CLOSE-WAIT" not in out
    # the server's last close is 100 ms after the last answer: rivet's side follows it
    wait_for(no_close_wait, msg="no upstream connection left in CLOSE-WAIT")


def test_max_requests_per_connection_with_pipelined_requests(cfg, backend, rivet):
    """maxRequestsPerConnection 2 and a client pipelining 6 requests on one connection: all 6
    are answered in order and each upstream connection carries at most 2 requests."""
    b = backend()
    cfg.gateway()
    cfg.upstream("up", [b], connectionConfig={"maxRequestsPerConnection": 2})
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg, workers=1)
    data = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(6))
    res = rv.raw(data + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    rs = res.responses()
    assert [r.status for r in rs] == [200] * 7, rs
    per_conn = {}
    for q in b.requests:
        per_conn[q.conn_id] = per_conn.get(q.conn_id, 0) + 1
    assert max(per_conn.values()) <= 2 and sum(per_conn.values()) == 7, per_conn


def test_pending_request_ends_by_its_route_timeout_and_frees_its_slot(cfg, backend, rivet):
    """maxConnections 1, maxPendingRequests 1, one request held: a request waiting for the
    connection ends by its route timeout (504 UT after the route's 1 s, not hanging) and gives
    its pending slot back - the next request that has to wait waits (and is served once the
    connection is free) instead of getting 503 UO. One worker: another worker, with no
    connection of its own, would open one over the limit (Envoy's rule) instead of waiting."""
    gate = threading.Event()
    b = backend(handler=gated(gate))
    cfg.gateway()
    cfg.upstream("up", [b], circuitBreakers={"maxConnections": 1, "maxPendingRequests": 1})
    cfg.vs("vs", [route(prefix="/t/", upstream="up", options={"timeout": "1s"}),
                  route(prefix="/", upstream="up", options={"timeout": "20s"})])
    rv = rivet(cfg, workers=1)
    first = in_thread(rv.get, "/hold/1", timeout=30)
    b.wait_requests(1)

    def waited():
        return metric_sum(rv.metrics(), "rivet_upstream_connection_overflow_total", upstream="gloo-system.up")
    try:
        r = rv.get("/t/x")
        assert r.status == 504 and b"upstream request timeout" in r.body, r
        assert waited() == 1
        third = in_thread(rv.get, "/third", timeout=30)
        wait_for(lambda: waited() == 2, msg="the third request to wait")
        assert [q.path for q in b.requests] == ["/hold/1"], b.paths()
    finally:
        gate.set()
    assert first().status == 200
    assert third().status == 200
    assert metric_sum(rv.metrics(), "rivet_upstream_overflow_total", upstream="gloo-system.up") == 0


def test_max_connections_keeps_connections_alive_under_load(cfg, backend, rivet):
    """maxConnections 2, 2 workers, 8 keep-alive clients sending 25 requests each: requests wait
    for a connection, and a released connection goes to a waiter instead of being closed and
    reopened (as in Envoy): the backend sees a handful of connections (2-6 seen), not one per
    request (182 of 200 before 4b542b4: at the limit every request cost a connect and left a
    TIME_WAIT socket, exhausting ephemeral ports exactly when the upstream is saturated)."""
    b = backend()
    cfg.gateway()
    cfg.upstream("up", [b], circuitBreakers={"maxConnections": 2})
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg, workers=2)
    import http.client
    errors = []

    def client(k):
        c = http.client.HTTPConnection("127.0.0.1", rv.port, timeout=20)
        for i in range(25):
            r = request(rv.port, "/delay/5/%d/%d" % (k, i), conn=c)
            if r.status != 200:
                errors.append(r.status)
        c.close()
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    assert len(b.requests) == 200
    waited = metric_sum(rv.metrics(), "rivet_upstream_connection_overflow_total", upstream="gloo-system.up")
    assert waited > 0, "precondition: requests had to wait for a connection"
    assert b.nconns <= 20, "%d upstream connections for 200 requests (%d waited)" % (b.nconns, waited)


def test_health_check_on_a_dns_named_host(cfg, backend, rivet):
    """A static host given by name (localhost, resolved by rivet's control thread) is checked on
    the address it resolves to: when its check fails (503) it leaves the traffic, the other
    endpoint serves, and it comes back once its check passes again."""
    named = backend(name="named")
    other = backend(name="other")
    named.state["st"] = 200

    def hz(req, conn):
        if req.path == "/hz":
            conn.respond(named.state["st"], "hc")
            return True
        return False
    named.set_handler(hz)
    cfg.gateway()
    cfg.upstream("up", [{"addr": "localhost", "port": named.port}, other],
                 healthChecks=[{"timeout": "1s", "interval": "0.2s", "unhealthyThreshold": 1,
                                "healthyThreshold": 1, "httpHealthCheck": {"path": "/hz"}}])
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg)
    wait_for(lambda: any(r.path == "/hz" for r in named.requests), msg="a check on the named host")
    wait_for(lambda: {rv.get("/x").header("x-backend") for _ in range(6)} == {"named", "other"},
             msg="both endpoints served")
    named.state["st"] = 503
    wait_for(lambda: all(rv.get("/x").header("x-backend") == "other" for _ in range(6)),
             msg="the failing named endpoint left out")
    named.state["st"] = 200
    wait_for(lambda: {rv.get("/x").header("x-backend") for _ in range(6)} == {"named", "other"},
             msg="the named endpoint back")


def reset_close(s):
    """Close s with a TCP reset (SO_LINGER 0): the client is gone, nothing can be sent back."""
    import struct
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_client_reset_while_upstream_holds_aborts_the_request(cfg, backend, rivet):
    """A client that resets its connection while the backend holds its request: rivet aborts
    the request at once (access log DC) and frees its upstream connection and its maxRequests
    slot, instead of holding them until the backend answers nobody. (A FIN is not this: a
    client may half-close after its request and still read the answer - test_http1's
    half-close test.)"""
    gate, b = leak_setup(cfg, backend)
    rv = rivet(cfg, workers=1)
    n0 = len(b.requests)
    s = abort_mid_request(rv.port, "/hang")
    b.wait_requests(n0 + 1)
    reset_close(s)
    try:
        ended(rv, "/hang", 1)   # logged before the backend ever answers
        line = [ln for ln in rv.stdout().splitlines() if "/hang" in ln][0]
        assert " DC" in line or "DC " in line, line
        gate2 = threading.Event()
        b.set_handler(gated(gate2))
        ok, st = held_requests_all_reach(rv, b, gate2, LIMITS["maxRequests"])
    finally:
        gate.set()
    assert ok and st == [200] * LIMITS["maxRequests"], "the reset request still held its slot: %r" % (st,)


def test_client_reset_while_pending_frees_the_pending_slot(cfg, backend, rivet):
    """maxConnections 1, maxPendingRequests 1, one request held at the backend: a request
    waiting for the connection whose client resets gives its pending slot back at once (a next
    request may wait in its place) and is never sent to the backend. One worker: another worker,
    with no connection of its own, would open one over the limit (Envoy's rule) instead of
    waiting."""
    gate = threading.Event()
    b = backend(handler=gated(gate))
    cfg.gateway()
    cfg.upstream("up", [b], circuitBreakers={"maxConnections": 1, "maxPendingRequests": 1})
    cfg.vs("vs", [route(prefix="/", upstream="up", options={"timeout": "20s"})])
    rv = rivet(cfg, workers=1)

    def waited():
        return metric_sum(rv.metrics(), "rivet_upstream_connection_overflow_total", upstream="gloo-system.up")
    first = in_thread(rv.get, "/hold/1", timeout=30)
    b.wait_requests(1)
    try:
        s = abort_mid_request(rv.port, "/gone")
        wait_for(lambda: waited() == 1, msg="the request to wait")
        reset_close(s)
        ended(rv, "/gone", 1)
        third = in_thread(rv.get, "/third", timeout=30)
        wait_for(lambda: waited() == 2, msg="the third request to wait in the freed pending slot")
    finally:
        gate.set()
    assert first().status == 200
    assert third().status == 200
    assert "/gone" not in b.paths(), "a request whose client reset was sent upstream: %r" % b.paths()
