"""Headers rivet adds and removes: hop-by-hop, X-Forwarded-For/Proto, X-Request-Id."""

from harness import request


def start_proxied(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    return rv, b


def seen_for(rv, b, headers, path="/h"):
    before = len(b.requests)
    r = rv.get(path, headers=headers)
    assert r.status == 200, r
    return b.wait_requests(before + 1)[before]


def test_hop_by_hop_removed(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [("Connection", "keep-alive, X-Custom-Hop, x-other-hop"),
                            ("Keep-Alive", "timeout=5"),
                            ("X-Custom-Hop", "1"),
                            ("X-Other-Hop", "2"),
                            ("Proxy-Connection", "keep-alive"),
                            ("TE", "gzip"),
                            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                            ("X-End-To-End", "kept")])
    names = seen.header_names()
    for h in ("keep-alive", "x-custom-hop", "x-other-hop", "proxy-connection"):
        assert h not in names, (h, seen.headers)
    assert "gzip" not in " ".join(seen.header_all("te")), seen.headers
    # Connection toward the backend (if any) carries none of the client's tokens
    for v in seen.header_all("connection"):
        assert "x-custom-hop" not in v.lower() and "x-other-hop" not in v.lower(), seen.headers
    assert seen.header("x-end-to-end") == "kept"


def test_upgrade_h2c_not_forwarded(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    r = rv.get("/up", headers=[("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                               ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
    assert r.status != 101, r
    if r.status == 200:
        seen = b.wait_requests(1)[0]
        assert seen.header("upgrade") is None, seen.headers
        assert seen.header("http2-settings") is None, seen.headers
    else:
        assert 400 <= r.status < 500, r
        assert b.requests == []


def test_response_hop_by_hop_removed(cfg, backend, rivet):
    def h(req, conn):
        conn.respond(200, "ok", [("Connection", "X-Backend-Hop"), ("X-Backend-Hop", "1"),
                                 ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                                 ("X-Kept", "yes")])
        return True
    b = backend(handler=h)
    cfg.simple(b)
    rv = rivet(cfg)
    r = rv.get("/")
    assert r.status == 200
    names = [k.lower() for k, _ in r.headers]
    for hname in ("x-backend-hop", "keep-alive", "proxy-connection"):
        assert hname not in names, (hname, r.headers)
    assert r.header("x-kept") == "yes"


def test_x_forwarded_for_added(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [])
    assert seen.header_all("x-forwarded-for") == ["127.0.0.1"]


def test_x_forwarded_for_appended(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [("X-Forwarded-For", "1.2.3.4")])
    xff = seen.header_all("x-forwarded-for")
    assert xff == ["1.2.3.4, 127.0.0.1"], xff


def test_x_forwarded_for_appended_to_list(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")])
    assert seen.header_all("x-forwarded-for") == ["10.0.0.1, 10.0.0.2, 127.0.0.1"]


def test_x_forwarded_proto(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    assert seen_for(rv, b, []).header_all("x-forwarded-proto") == ["http"]
    # a client cannot claim https on a plain-text listener
    assert seen_for(rv, b, [("X-Forwarded-Proto", "https")]).header_all("x-forwarded-proto") == ["http"]


def test_request_id_generated(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    a = seen_for(rv, b, []).header_all("x-request-id")
    c = seen_for(rv, b, []).header_all("x-request-id")
    assert len(a) == 1 and len(c) == 1, (a, c)
    assert 8 <= len(a[0]) <= 128 and a[0].isprintable() and " " not in a[0], a
    assert a[0] != c[0]


def test_request_id_kept(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [("X-Request-Id", "my-trace-123")])
    assert seen.header_all("x-request-id") == ["my-trace-123"]


def test_connection_cannot_strip_gateway_headers(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [("Connection", "keep-alive, X-Forwarded-For, X-Forwarded-Proto, X-Request-Id"),
                            ("X-Forwarded-For", "1.2.3.4")])
    xff = seen.header_all("x-forwarded-for")
    assert len(xff) == 1 and xff[0].endswith("127.0.0.1"), seen.headers
    assert seen.header_all("x-forwarded-proto") == ["http"], seen.headers
    assert len(seen.header_all("x-request-id")) == 1, seen.headers


def test_connection_close_nominating_xff(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    res = rv.raw(b"GET /cx HTTP/1.1\r\nHost: t\r\nConnection: close, x-forwarded-for\r\n\r\n", timeout=10)
    assert res.first_status() == 200, res
    seen = b.wait_requests(1)[0]
    assert seen.header_all("x-forwarded-for") == ["127.0.0.1"], seen.headers


def test_repeated_headers_and_values_preserved(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [("X-Multi", "one"), ("X-Multi", "two"), ("X-Spaces", "a  b\tc"),
                            ("X-Latin1", "caf\xe9"), ("Cookie", "a=1"), ("Cookie", "b=2")])
    assert seen.header_all("x-multi") == ["one", "two"]
    assert seen.header_all("x-spaces") == ["a  b\tc"]
    assert seen.header_all("x-latin1") == ["caf\xe9"]
    cookies = seen.header_all("cookie")
    assert cookies in (["a=1", "b=2"], ["a=1; b=2"]), cookies


def test_response_headers_preserved(cfg, backend, rivet):
    def h(req, conn):
        conn.respond(200, "ok", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Resp", "v")])
        return True
    b = backend(handler=h)
    cfg.simple(b)
    rv = rivet(cfg)
    r = rv.get("/")
    assert r.header_all("set-cookie") == ["a=1", "b=2"]
    assert r.header("x-resp") == "v"


def test_backend_gets_one_host(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    seen = seen_for(rv, b, [], path="/host")
    assert seen.header_all("host") == ["test.local"]


def test_keep_alive_survives_hop_headers(cfg, backend, rivet):
    """A request nominating headers in Connection does not spoil the connection."""
    rv, b = start_proxied(cfg, backend, rivet)
    conn = rv.connect()
    for i in range(3):
        r = request(rv.port, "/k%d" % i, conn=conn, headers=[("Connection", "keep-alive, X-H"), ("X-H", "1")])
        assert r.status == 200
    conn.close()


def test_header_value_whitespace_trimmed(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    res = rv.raw(b"GET /ws HTTP/1.1\r\nHost: t\r\nX-Pad: \t  padded value \t \r\nConnection: close\r\n\r\n",
                 timeout=10)
    assert res.first_status() == 200, res
    assert b.wait_requests(1)[0].header_all("x-pad") == ["padded value"]
