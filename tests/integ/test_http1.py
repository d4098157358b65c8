"""HTTP/1.1 semantics through rivet: keep-alive, pipelining, bodies, 100-continue, HEAD,
bodiless statuses, HTTP/1.0 clients, absolute-form targets."""
import json
import socket

from harness import parse_responses, raw_connect, read_response, read_until_close, request, wait_for


def test_keep_alive_many_requests_one_connection(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    conn = rv.connect()
    local_ports = set()
    for i in range(10):
        r = request(rv.port, "/ka/%d" % i, conn=conn)
        assert r.status == 200, r
        assert r.json()["target"] == "/ka/%d" % i
        local_ports.add(conn.sock.getsockname()[1])
    conn.close()
    assert len(local_ports) == 1        # never reconnected
    assert len(b.wait_requests(10)) == 10


def test_pipelining_in_order(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"GET /delay/300/first HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n"
              b"POST /third HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
              b"GET /fourth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    res = read_until_close(s, timeout=10)
    s.close()
    rs = res.responses()
    assert [r.status for r in rs] == [200, 200, 200, 200], res
    assert [json.loads(r.body)["target"] for r in rs] == ["/delay/300/first", "/second", "/third", "/fourth"]
    assert json.loads(rs[2].body)["body"] == "hello"
    assert res.eof


def test_content_length_body(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    body = bytes(range(256)) * 40
    r = rv.req("POST", "/cl", body=body)
    assert r.status == 200
    seen = b.wait_requests(1)[0]
    assert seen.body == body
    assert seen.body_len == len(body)


def test_chunked_request_body(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    parts = [b"a" * 10, b"b" * 5000, b"", b"c"]
    r = rv.req("POST", "/chunked-up", body=iter(parts), chunked=True)
    assert r.status == 200, r
    seen = b.wait_requests(1)[0]
    assert seen.body == b"".join(parts)


def test_chunked_request_raw_with_extensions_and_trailers(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    r, _ = read_response(s)
    s.close()
    assert r.status == 200, r
    assert b.wait_requests(1)[0].body == b"hello world"


def test_chunked_response(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    r = rv.get("/chunked/50")
    assert r.status == 200
    assert r.body == b"".join(b"chunk-%d\n" % i for i in range(50))


def test_close_delimited_response(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    r = rv.get("/nolength/100000")
    assert r.status == 200
    assert len(r.body) == 100000


def test_expect_100_continue(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"POST /exp HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
    s.settimeout(5)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        assert d, "connection closed before 100 Continue: %r" % buf
        buf += d
    assert buf.startswith(b"HTTP/1.1 100"), buf
    head, rest = buf.split(b"\r\n\r\n", 1)
    s.sendall(b"hello world")
    # the final response may already be partly in `rest`
    data = rest
    while True:
        rs, _, complete = parse_responses(data, eof=False, need_complete=True)
        if rs and complete:
            break
        d = s.recv(65536)
        assert d, data
        data += d
    s.close()
    assert rs[0].status == 200, rs
    assert json.loads(rs[0].body)["body"] == "hello world"
    assert b.wait_requests(1)[0].body == b"hello world"


def test_expect_100_continue_http_client_style(cfg, backend, rivet):
    """A final error status before the body is sent is allowed too: here the route is a
    direct response, so the client gets it without ever sending the body."""
    cfg.gateway()
    from harness import route
    cfg.vs("vs", [route(direct=(403, "denied"))])
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"POST /exp HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
    r, interim = read_response(s)
    s.close()
    assert r.status == 403, r


def test_head_has_no_body(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: t\r\n\r\n")
    r, _ = read_response(s, head_request=True)
    assert r.status == 200
    assert r.header("content-length") in (None, "5000")
    # the next response on the same connection must start right after the HEAD head
    s.sendall(b"GET /after-head HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    res = read_until_close(s, timeout=10)
    s.close()
    rs = res.responses()
    assert len(rs) == 1 and rs[0].status == 200, res
    assert json.loads(rs[0].body)["target"] == "/after-head"
    assert b.wait_requests(2)[0].method == "HEAD"


def test_head_on_direct_response(cfg, rivet):
    from harness import route
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "twelve bytes"))])
    rv = rivet(cfg)
    res = rv.raw(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                 timeout=5)
    rs = res.responses(head_requests=1)
    assert [r.status for r in rs] == [200, 200], res
    assert rs[0].body == b""
    assert rs[1].body == b"twelve bytes"


def test_204_and_304_have_no_body(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /status/304 HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    res = read_until_close(s, timeout=10)
    s.close()
    rs = res.responses()
    assert [r.status for r in rs] == [204, 304, 200], res
    assert rs[0].body == b"" and rs[1].body == b""
    for r in rs[:2]:
        assert r.header("transfer-encoding") is None, r
        assert r.header("content-length") in (None, "0"), r
    assert json.loads(rs[2].body)["target"] == "/last"


def test_http10_client(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    res = rv.raw(b"GET /ten HTTP/1.0\r\nHost: t\r\n\r\n", timeout=10)
    assert res.eof, res          # 1.0 without keep-alive: the server closes
    rs = res.responses()
    assert len(rs) == 1 and rs[0].status == 200, res
    assert json.loads(rs[0].body)["target"] == "/ten"
    assert rs[0].header("transfer-encoding") is None    # no chunked to a 1.0 client


def test_http10_chunked_upstream_response(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    res = rv.raw(b"GET /chunked/20 HTTP/1.0\r\nHost: t\r\n\r\n", timeout=10)
    assert res.eof, res
    rs = res.responses()
    assert len(rs) == 1 and rs[0].status == 200, res
    assert rs[0].header("transfer-encoding") is None, rs[0]
    assert rs[0].body == b"".join(b"chunk-%d\n" % i for i in range(20))


def test_http10_without_host(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    res = rv.raw(b"GET /nohost HTTP/1.0\r\n\r\n", timeout=10)
    rs = res.responses()
    assert rs and rs[0].status == 200, res


def test_connection_close_from_client(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    res = rv.raw(b"GET /cc HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=10)
    assert res.eof and not res.timed_out, res
    assert res.first_status() == 200


def test_absolute_form_target(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    res = rv.raw(b"GET http://abs.test/abs/path?q=1 HTTP/1.1\r\nHost: abs.test\r\nConnection: close\r\n\r\n",
                 timeout=10)
    assert res.first_status() == 200, res
    seen = b.wait_requests(1)[0]
    assert seen.target == "/abs/path?q=1"
    assert seen.header_all("host") == ["abs.test"]


def test_absolute_form_routes_by_its_authority(cfg, rivet):
    from harness import route
    cfg.gateway()
    cfg.vs("a", [route(direct=(200, "a"))], domains=["a.test"])
    cfg.vs("b", [route(direct=(200, "b"))], domains=["b.test"])
    rv = rivet(cfg)
    res = rv.raw(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", timeout=10)
    rs = res.responses()
    assert rs and rs[0].status == 200 and rs[0].body == b"a", res


def test_many_headers_under_limit(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    hs = [("X-H%d" % i, "v" * 100) for i in range(80)]
    r = rv.get("/many", headers=hs)
    assert r.status == 200
    seen = b.wait_requests(1)[0]
    for k, v in hs:
        assert seen.header(k) == v


def test_query_string_forwarded_verbatim(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    q = "/q?a=1&b=%2F%2e%2E&c=&d=x+y&e=/../x&&f"
    assert rv.get(q).status == 200
    assert b.wait_requests(1)[0].target == q


def test_upstream_connection_reused_serially(cfg, backend, rivet):
    """Keep-alive on the upstream side: serial requests need not open a connection each."""
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    conn = rv.connect()
    for i in range(20):
        assert request(rv.port, "/u/%d" % i, conn=conn).status == 200
    conn.close()
    assert b.nconns < 20, b.nconns


def test_client_half_close_after_request(cfg, backend, rivet):
    """A client that shuts down its write side after a complete request still gets the answer."""
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"GET /half HTTP/1.1\r\nHost: t\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    res = read_until_close(s, timeout=10)
    s.close()
    assert res.first_status() == 200, res


def test_keep_alive_survives_error_responses(cfg, backend, closed_port, rivet):
    from harness import route
    b = backend()
    dead = closed_port()
    cfg.gateway()
    cfg.upstream("up", [b])
    cfg.upstream("dead", [dead])
    cfg.vs("vs", [route(prefix="/deny", direct=(403, "no")),
                  route(prefix="/dead", upstream="dead"),
                  route(prefix="/", upstream="up")], domains=["t.test"])
    rv = rivet(cfg)
    conn = rv.connect()
    port0 = None
    for path, host, want in [("/ok/1", "t.test", 200), ("/x", "other.test", 404), ("/ok/2", "t.test", 200),
                             ("/deny", "t.test", 403), ("/ok/3", "t.test", 200), ("/status/500", "t.test", 500),
                             ("/ok/4", "t.test", 200), ("/dead", "t.test", 503), ("/ok/5", "t.test", 200)]:
        r = request(rv.port, path, host=host, conn=conn)
        assert r.status == want, (path, r)
        p = conn.sock.getsockname()[1]
        port0 = port0 or p
        assert p == port0, "rivet closed the connection after the request before %s" % path
    conn.close()


def test_pipelined_burst_in_order(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    n = 50
    data = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(n - 1))
    data += b"GET /p/%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % (n - 1)
    res = rv.raw(data, timeout=20)
    rs = res.responses()
    assert [json.loads(r.body)["target"] for r in rs] == ["/p/%d" % i for i in range(n)], res


def test_unsolicited_100_from_upstream(cfg, backend, rivet):
    def h(req, conn):
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.respond(200, "final")
        return True
    b = backend(handler=h)
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"GET /u HTTP/1.1\r\nHost: t\r\n\r\n")
    r, interim = read_response(s)
    assert (r.status, r.body) == (200, b"final")
    # and the connection is still in sync
    s.sendall(b"GET /u2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    r2, _ = read_response(s)
    s.close()
    assert (r2.status, r2.body) == (200, b"final")


def test_head_to_chunked_upstream(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    res = rv.raw(b"HEAD /chunked/5 HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                 timeout=10)
    rs = res.responses(head_requests=1)
    assert [r.status for r in rs] == [200, 200], res
    assert rs[0].body == b""
    assert json.loads(rs[1].body)["target"] == "/next"


def test_upstream_closes_idle_keepalive(cfg, backend, rivet):
    """The backend drops each connection shortly after answering (without Connection: close):
    rivet must not hand a request to a dead pooled connection and fail it."""
    import threading

    def h(req, conn):
        conn.respond(200, "ok %s" % req.path)
        threading.Timer(0.05, conn.close).start()
        return True
    b = backend(handler=h)
    cfg.simple(b)
    rv = rivet(cfg)
    conn = rv.connect()
    import time
    for i in range(8):
        r = request(rv.port, "/idle/%d" % i, conn=conn)
        assert (r.status, r.body) == (200, b"ok /idle/%d" % i), r
        # the backend's close has happened (its timer can fire late on a busy machine, and the
        # next request would then race it) ...
        wait_for(lambda: b.active == 0, msg="the backend to close connection %d" % (i + 1))
        time.sleep(0.2)     # ... and pacing: let it land at rivet while the connection is idle
    conn.close()
    assert b.nconns == 8, b.nconns      # every backend connection did go away after one answer


def test_concurrent_keepalive_clients(cfg, backend, rivet):
    import threading
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    errors = []

    def client(t):
        try:
            c = rv.connect()
            for i in range(20):
                r = request(rv.port, "/c/%d/%d" % (t, i), conn=c)
                if r.status != 200 or r.json()["target"] != "/c/%d/%d" % (t, i):
                    errors.append((t, i, r.status))
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append((t, repr(e)))
    ts = [threading.Thread(target=client, args=(t,)) for t in range(40)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:10]
    assert len(b.requests) == 800


def test_methods_forwarded_verbatim(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    for m in ("PUT", "DELETE", "PATCH", "OPTIONS", "PURGE", "get"):
        r = rv.req(m, "/m", body=b"x" if m in ("PUT", "PATCH") else None)
        assert r.status == 200, (m, r)
        assert r.json()["method"] == m


def test_post_empty_body(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    r = rv.req("POST", "/empty", headers={"Content-Length": "0"})
    assert r.status == 200, r
    seen = b.wait_requests(1)[0]
    assert seen.body == b""
    assert seen.header("content-length") in ("0", None)
    assert seen.header("transfer-encoding") is None
