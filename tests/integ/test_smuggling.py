"""Request smuggling and strict parsing, with raw sockets against a recording backend.

Pass = the request is answered 400 (or the listed status) and the connection is closed; the
request that follows in the same packet is never answered; the backend never sees a smuggled
request (nor, for head errors, anything at all)."""
import json

import pytest

from harness import raw_connect, read_response, read_until_close, request

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
FOLLOW = b"GET /follow HTTP/1.1\r\nHost: t\r\n\r\n"


def post(headers, body=b"", line=b"POST /entry HTTP/1.1"):
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


CLTE_BODY = b"0\r\n\r\n" + SMUGGLE
TECL_BODY = b"%x\r\n" % len(SMUGGLE) + SMUGGLE + b"\r\n0\r\n\r\n"
CHUNKED_SMUGGLE = b"0\r\n\r\n" + SMUGGLE

S400 = {400}
TE_BAD = {400, 501}      # an unknown transfer coding may be 501 (RFC 9112 6.1)

HEAD_CASES = {
    # --- Content-Length + Transfer-Encoding
    "cl-te": (post([b"Host: t", b"Content-Length: %d" % len(CLTE_BODY), b"Transfer-Encoding: chunked"],
                   CLTE_BODY), S400),
    "te-cl": (post([b"Host: t", b"Transfer-Encoding: chunked", b"Content-Length: 4"], TECL_BODY), S400),
    "cl-te-lowercase": (post([b"host: t", b"content-length: %d" % len(CLTE_BODY), b"transfer-encoding: chunked"],
                             CLTE_BODY), S400),
    # --- duplicate / malformed Content-Length
    "cl-dup-differ": (post([b"Host: t", b"Content-Length: 0", b"Content-Length: %d" % len(SMUGGLE)], SMUGGLE), S400),
    "cl-dup-same": (post([b"Host: t", b"Content-Length: %d" % len(SMUGGLE), b"Content-Length: %d" % len(SMUGGLE)],
                         SMUGGLE), S400),
    "cl-list": (post([b"Host: t", b"Content-Length: 0, %d" % len(SMUGGLE)], SMUGGLE), S400),
    "cl-plus": (post([b"Host: t", b"Content-Length: +%d" % len(SMUGGLE)], SMUGGLE), S400),
    "cl-hex": (post([b"Host: t", b"Content-Length: 0x%x" % len(SMUGGLE)], SMUGGLE), S400),
    "cl-negative": (post([b"Host: t", b"Content-Length: -1"], SMUGGLE), S400),
    "cl-trailing-junk": (post([b"Host: t", b"Content-Length: 0a"], SMUGGLE), S400),
    "cl-empty": (post([b"Host: t", b"Content-Length: "], SMUGGLE), S400),
    "cl-huge": (post([b"Host: t", b"Content-Length: 99999999999999999999999"], SMUGGLE), S400),
    "cl-two-numbers": (post([b"Host: t", b"Content-Length: 0 %d" % len(SMUGGLE)], SMUGGLE), S400),
    "cl-space-before-colon": (post([b"Host: t", b"Content-Length : %d" % len(SMUGGLE)], SMUGGLE), S400),
    # --- Transfer-Encoding obfuscation
    "te-xchunked": (post([b"Host: t", b"Transfer-Encoding: xchunked"], CHUNKED_SMUGGLE), TE_BAD),
    "te-space-before-colon": (post([b"Host: t", b"Transfer-Encoding : chunked"], CHUNKED_SMUGGLE), TE_BAD),
    "te-vtab": (post([b"Host: t", b"Transfer-Encoding:\x0bchunked"], CHUNKED_SMUGGLE), TE_BAD),
    "te-chunked-identity": (post([b"Host: t", b"Transfer-Encoding: chunked, identity"], CHUNKED_SMUGGLE), TE_BAD),
    "te-two-headers": (post([b"Host: t", b"Transfer-Encoding: chunked", b"Transfer-Encoding: x"],
                            CHUNKED_SMUGGLE), TE_BAD),
    "te-chunked-twice": (post([b"Host: t", b"Transfer-Encoding: chunked, chunked"], CHUNKED_SMUGGLE), TE_BAD),
    "te-gzip-chunked": (post([b"Host: t", b"Transfer-Encoding: gzip, chunked"], CHUNKED_SMUGGLE), TE_BAD),
    "te-identity": (post([b"Host: t", b"Transfer-Encoding: identity"], CHUNKED_SMUGGLE), TE_BAD),
    "te-quoted": (post([b"Host: t", b"Transfer-Encoding: \"chunked\""], CHUNKED_SMUGGLE), TE_BAD),
    "te-folded": (post([b"Host: t", b"X-Pad: y", b" Transfer-Encoding: chunked"], CHUNKED_SMUGGLE), TE_BAD),
    "te-underscore": (post([b"Host: t", b"Transfer_Encoding: chunked"], CHUNKED_SMUGGLE), TE_BAD),
    "te-http10": (post([b"Host: t", b"Transfer-Encoding: chunked"], CHUNKED_SMUGGLE, line=b"POST /entry HTTP/1.0"),
                  S400),
    # --- header syntax
    "bare-cr-in-value": (post([b"Host: t", b"X-A: a\rb"]), S400),
    "bare-cr-line-end": (post([b"Host: t\rX-B: c"]), S400),
    "obs-fold": (post([b"Host: t", b"X-A: a", b"  folded"]), S400),
    "nul-in-value": (post([b"Host: t", b"X-A: a\x00b"]), S400),
    "ctl-in-value": (post([b"Host: t", b"X-A: a\x01b"]), S400),
    "del-in-value": (post([b"Host: t", b"X-A: a\x7fb"]), S400),
    "underscore-name": (post([b"Host: t", b"X_Auth_User: admin"]), S400),
    "space-before-colon": (post([b"Host: t", b"X-A : b"]), S400),
    "space-in-name": (post([b"Host: t", b"X A: b"]), S400),
    "empty-name": (post([b"Host: t", b": value"]), S400),
    "no-colon": (post([b"Host: t", b"NoColonHere"]), S400),
    "nul-in-name": (post([b"Host: t", b"X-\x00A: b"]), S400),
    # --- Host
    "missing-host-http11": (post([b"X-A: b"]), S400),
    "two-hosts": (post([b"Host: t", b"Host: u"]), S400),
    "two-hosts-same": (post([b"Host: t", b"Host: t"]), S400),
    # --- request line
    "double-space": (post([b"Host: t"], line=b"GET  /entry HTTP/1.1"), S400),
    "extra-token": (post([b"Host: t"], line=b"GET /entry HTTP/1.1 x"), S400),
    "lowercase-version": (post([b"Host: t"], line=b"GET /entry http/1.1"), S400),
    "space-in-target": (post([b"Host: t"], line=b"GET /en try HTTP/1.1"), S400),
    "nul-in-target": (post([b"Host: t"], line=b"GET /en\x00try HTTP/1.1"), S400),
}


def _check_rejected(rv, b, data, allowed, backend_may_see_head=False):
    s = raw_connect(rv.port)
    try:
        s.sendall(data + FOLLOW)
    except (BrokenPipeError, ConnectionResetError):
        pass
    res = read_until_close(s, timeout=5)
    s.close()
    assert not res.timed_out, "connection left open: %r" % res
    rs = res.responses()
    assert rs, "no response before close: %r" % res
    assert rs[0].status in allowed, res
    assert len(rs) == 1, "the pipelined follow-up was answered: %r" % res
    assert b"/follow" not in res.data and b"/smuggled" not in res.data
    # the backend never saw a smuggled (or the follow-up) request
    raw = b.all_raw()
    assert b"/smuggled" not in raw, raw
    assert b"/follow" not in raw, raw
    if not backend_may_see_head:
        assert b.nconns == 0 or raw == b"", (b.nconns, raw)
    # the gateway still works afterwards
    assert request(rv.port, "/after").status == 200


def start_proxied(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    return rv, b


@pytest.mark.parametrize("name", list(HEAD_CASES))
def test_head_rejected(cfg, backend, rivet, name):
    rv, b = start_proxied(cfg, backend, rivet)
    data, allowed = HEAD_CASES[name]
    _check_rejected(rv, b, data, allowed)


CHUNKED_HEAD = post([b"Host: t", b"Transfer-Encoding: chunked"])

CHUNK_CASES = {
    "size-overflow": b"10000000000000001\r\nX\r\n" + CHUNKED_SMUGGLE,
    "size-0x": b"0x1\r\nX\r\n" + CHUNKED_SMUGGLE,
    "size-negative": b"-1\r\nX\r\n" + CHUNKED_SMUGGLE,
    "size-plus": b"+1\r\nX\r\n" + CHUNKED_SMUGGLE,
    "size-not-hex": b"g\r\nX\r\n" + CHUNKED_SMUGGLE,
    "size-empty": b"\r\nX\r\n" + CHUNKED_SMUGGLE,
    "ext-bare-lf": b"1;a\nX\r\n" + CHUNKED_SMUGGLE,
    "size-bare-lf": b"1\nX\r\n" + CHUNKED_SMUGGLE,
    "size-bare-cr": b"1\rX\r\n" + CHUNKED_SMUGGLE,
    "data-no-crlf": b"1\r\nXY" + CHUNKED_SMUGGLE,
    "data-too-long": b"1\r\nXYZ\r\n" + CHUNKED_SMUGGLE,
    "last-chunk-bare-lf": b"1\r\nX\r\n0\n\n" + SMUGGLE,
    "huge-extension": b"1;" + b"a" * 200000 + b"\r\nX\r\n" + CHUNKED_SMUGGLE,
}


@pytest.mark.parametrize("name", list(CHUNK_CASES))
def test_bad_chunked_body_rejected(cfg, backend, rivet, name):
    rv, b = start_proxied(cfg, backend, rivet)
    allowed = {400, 413, 431} if name == "huge-extension" else S400
    _check_rejected(rv, b, CHUNKED_HEAD + CHUNK_CASES[name], allowed, backend_may_see_head=True)
    # whatever reached the backend is not a complete request
    assert [r.path for r in b.requests if r.path == "/entry"] == []


def test_valid_chunked_then_pipelined_request_is_not_smuggling(cfg, backend, rivet):
    """Control case: the same bytes, correctly framed, give two ordinary requests."""
    rv, b = start_proxied(cfg, backend, rivet)
    body = b"5\r\nhello\r\n0\r\n\r\n"
    res = rv.raw(CHUNKED_HEAD + body + b"GET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                 timeout=10)
    rs = res.responses()
    assert [r.status for r in rs] == [200, 200], res
    assert [r.path for r in b.wait_requests(2)] == ["/entry", "/second"]
    assert b.requests[0].body == b"hello"


def test_too_many_headers_431(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    hs = [b"Host: t"] + [b"X-H%d: v" % i for i in range(100)]      # 101 fields
    _check_rejected(rv, b, post(hs, line=b"GET /entry HTTP/1.1"), {431})


def test_hundred_headers_accepted(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    hs = [b"Host: t", b"Connection: close"] + [b"X-H%d: v" % i for i in range(98)]
    assert len(hs) == 100
    res = rv.raw(post(hs, line=b"GET /hundred HTTP/1.1"), timeout=10)
    assert res.first_status() == 200, res


def test_header_section_over_60k_431(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    _check_rejected(rv, b, post([b"Host: t", b"X-Big: " + b"a" * (61 * 1024)], line=b"GET /entry HTTP/1.1"),
                    {431})


def test_many_small_headers_over_60k_431(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    hs = [b"Host: t"] + [b"X-H%d: %s" % (i, b"b" * 1000) for i in range(64)]
    _check_rejected(rv, b, post(hs, line=b"GET /entry HTTP/1.1"), {431})


def test_header_section_under_60k_accepted(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    hs = [b"Host: t", b"Connection: close"] + [b"X-H%d: %s" % (i, b"c" * 1000) for i in range(50)]
    res = rv.raw(post(hs, line=b"GET /big-ok HTTP/1.1"), timeout=10)
    assert res.first_status() == 200, res
    assert b.wait_requests(1)[0].header("x-h49") == "c" * 1000


def test_huge_request_line(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    _check_rejected(rv, b, post([b"Host: t"], line=b"GET /" + b"u" * (64 * 1024) + b" HTTP/1.1"), {414, 431})


def test_http09_rejected(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    res = rv.raw(b"GET /\r\n\r\n", timeout=5)
    assert not res.timed_out, res
    assert res.data == b"" or (res.data.startswith(b"HTTP/1.") and res.first_status() >= 400), res
    assert b.all_raw() == b""


def test_http09_with_smuggle_rejected(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    res = rv.raw(b"GET /smuggled\r\n\r\n" + FOLLOW, timeout=5)
    assert not res.timed_out, res
    assert res.data == b"" or (res.data.startswith(b"HTTP/1.") and res.first_status() >= 400), res
    assert b"/smuggled" not in b.all_raw() and b"/follow" not in b.all_raw()


def test_unsupported_http_version(cfg, backend, rivet):
    rv, b = start_proxied(cfg, backend, rivet)
    res = rv.raw(b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", timeout=5)
    assert not res.timed_out, res
    assert res.first_status() in (400, 505), res
    assert b.all_raw() == b""


def test_bare_lf_line_endings(cfg, backend, rivet):
    """RFC 9112 lets a server accept bare LF in the head; if rivet does, it must re-emit CRLF."""
    rv, b = start_proxied(cfg, backend, rivet)
    res = rv.raw(b"GET /lf HTTP/1.1\nHost: t\nConnection: close\n\n", timeout=5)
    assert not res.timed_out, res
    st = res.first_status()
    assert st in (200, 400), res
    if st == 200:
        seen = b.wait_requests(1)[0]
        assert seen.path == "/lf" and not seen.anomalies, seen.anomalies


def test_body_on_get_with_cl_is_forwarded_not_smuggled(cfg, backend, rivet):
    """A GET with a Content-Length body: the body is a body, never a second request."""
    rv, b = start_proxied(cfg, backend, rivet)
    res = rv.raw(post([b"Host: t", b"Content-Length: %d" % len(SMUGGLE)], SMUGGLE, line=b"GET /entry HTTP/1.1")
                 + b"GET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=10)
    rs = res.responses()
    assert [r.status for r in rs] == [200, 200], res
    assert [r.path for r in b.wait_requests(2)] == ["/entry", "/second"]
    assert b.requests[0].body == SMUGGLE
    assert "/smuggled" not in b.paths()


# ---- response side ----------------------------------------------------------------------

def test_upstream_extra_bytes_not_delivered_as_next_response(cfg, backend, rivet):
    """Upstream sends more than Content-Length: the excess must never become the answer to the
    client's next request (the upstream connection is not reused)."""
    def h(req, conn):
        if req.path == "/desync":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Injected: 1\r\n\r\ninjected")
            return True
        return False
    b = backend(handler=h)
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    s.sendall(b"GET /desync HTTP/1.1\r\nHost: t\r\n\r\n")
    r1, _ = read_response(s)
    assert r1.status in (200, 502), r1
    if r1.status == 200:
        assert r1.body == b"ok"
    s.sendall(b"GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    res = read_until_close(s, timeout=10)
    s.close()
    rs = res.responses()
    if rs:   # rivet may also have closed the client connection after the bad upstream response
        assert rs[0].status == 200, res
        assert json.loads(rs[0].body)["target"] == "/next"
    assert b"injected" not in res.data


def test_upstream_cl_te_response_not_reused(cfg, backend, rivet):
    def h(req, conn):
        if req.path == "/clte":
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n"
                      b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected")
            return True
        return False
    b = backend(handler=h)
    cfg.simple(b)
    rv = rivet(cfg)
    conn = rv.connect()
    r = request(rv.port, "/clte", conn=conn)
    assert r.status == 502, r
    try:        # same client connection (same worker, same pool) when rivet kept it open
        r2 = request(rv.port, "/next", conn=conn)
    except (ConnectionError, OSError):
        r2 = rv.get("/next")
    assert r2.status == 200 and r2.json()["target"] == "/next", r2
    reqs = b.wait_requests(2)
    assert reqs[1].conn_id != reqs[0].conn_id      # the poisoned connection was dropped
    conn.close()
