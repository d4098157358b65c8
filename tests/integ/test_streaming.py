"""Large bodies stream through rivet both ways with bounded memory (backpressure, no buffering
of whole bodies)."""
import hashlib
import json
import socket
import threading
import time

from backend import pattern_chunks, pattern_digest
from harness import is_asan_build, parse_responses, raw_connect, read_response, read_until_close, wait_for

MiB = 1 << 20
BIG = 256 * MiB
# Allowed growth of rivet's peak RSS (VmHWM) over its RSS before the transfer. A body buffered
# whole would need 256 MiB; under ASan, shadow memory and the allocator quarantine add a bit.
RSS_BOUND_KIB = (160 if is_asan_build() else 100) * 1024


class RssSampler:
    """Samples VmRSS of a pid while a transfer runs (VmHWM also kept as a cross-check)."""

    def __init__(self, rv):
        self.rv = rv
        self.base = rv.rss_kib("VmRSS")
        self.peak = self.base
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.rv.rss_kib("VmRSS"))
            except (OSError, AssertionError):
                return

    def finish(self):
        self.stop.set()
        self.t.join()
        try:
            self.peak = max(self.peak, self.rv.rss_kib("VmRSS"))
        except (OSError, AssertionError):
            pass
        return self.peak - self.base


def _asan_env():
    # keep freed memory from piling up in ASan's quarantine during a 256 MiB transfer
    import os
    opts = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" in opts:
        return None
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=16"}


def start(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg, env=_asan_env() if is_asan_build() else None)
    # warm up: first request allocates pools etc.
    assert rv.get("/warm").status == 200
    return rv, b


def test_upload_256mib(cfg, backend, rivet):
    rv, b = start(cfg, backend, rivet)
    rss = RssSampler(rv)
    s = raw_connect(rv.port, timeout=120)
    # /slow-sink: the backend reads 1 MiB, then pauses 1 s: rivet must apply backpressure
    s.sendall(b"POST /slow-sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % BIG)
    for c in pattern_chunks(BIG):
        s.sendall(c)
    r, _ = read_response(s, timeout=120)
    s.close()
    growth = rss.finish()
    print("rss growth %d KiB (base %d KiB)" % (growth, rss.base))
    assert r.status == 200, r
    doc = json.loads(r.body)
    assert doc["body_len"] == BIG
    assert doc["body_sha256"] == pattern_digest(BIG)
    assert growth < RSS_BOUND_KIB, "rivet RSS grew by %d KiB during a 256 MiB upload" % growth


def test_download_256mib(cfg, backend, rivet):
    rv, b = start(cfg, backend, rivet)
    rss = RssSampler(rv)
    s = raw_connect(rv.port, timeout=120)
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: t\r\n\r\n" % BIG)
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, buf
        buf += d
    head, rest = bytes(buf).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    h = hashlib.sha256()
    h.update(rest)
    n = len(rest)
    chunked = b"transfer-encoding: chunked" in head.lower()
    assert not chunked, "a Content-Length response should stay Content-Length framed: %r" % head
    # stall a second first: the backend keeps sending, rivet must not buffer it all
    time.sleep(1.0)
    while n < BIG:
        d = s.recv(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    s.close()
    growth = rss.finish()
    print("rss growth %d KiB (base %d KiB)" % (growth, rss.base))
    assert n == BIG, n
    assert h.hexdigest() == pattern_digest(BIG)
    assert growth < RSS_BOUND_KIB, "rivet RSS grew by %d KiB during a 256 MiB download" % growth


def test_chunked_download_32mib(cfg, backend, rivet):
    rv, b = start(cfg, backend, rivet)
    n = 32 * MiB
    r = rv.get("/chunked-bytes/%d" % n, timeout=60)
    assert r.status == 200
    assert len(r.body) == n
    assert hashlib.sha256(r.body).hexdigest() == pattern_digest(n)


def test_chunked_upload_32mib(cfg, backend, rivet):
    rv, b = start(cfg, backend, rivet)
    n = 32 * MiB
    r = rv.req("POST", "/sink", body=(bytes(c) for c in pattern_chunks(n, 256 << 10)), chunked=True, timeout=60)
    assert r.status == 200, r
    doc = r.json()
    assert doc["body_len"] == n
    assert doc["body_sha256"] == pattern_digest(n)


def test_concurrent_transfers(cfg, backend, rivet):
    rv, b = start(cfg, backend, rivet)
    n = 16 * MiB
    errors = []
    digest = pattern_digest(n)

    def down():
        try:
            r = rv.get("/bytes/%d" % n, timeout=60)
            if r.status != 200 or hashlib.sha256(r.body).hexdigest() != digest:
                errors.append(("down", r.status, len(r.body)))
        except Exception as e:  # noqa: BLE001
            errors.append(("down", repr(e)))

    def up():
        try:
            r = rv.req("POST", "/sink", body=b"".join(bytes(c) for c in pattern_chunks(n)), timeout=60)
            if r.status != 200 or r.json()["body_sha256"] != digest:
                errors.append(("up", r.status))
        except Exception as e:  # noqa: BLE001
            errors.append(("up", repr(e)))

    ts = [threading.Thread(target=f) for f in (down, up, down, up, down, up)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors


def test_client_aborts_download_midway(cfg, backend, rivet):
    """A client that goes away mid-body does not wedge rivet (next request served)."""
    rv, b = start(cfg, backend, rivet)
    s = raw_connect(rv.port)
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: t\r\n\r\n" % (64 * MiB))
    s.recv(65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()      # RST
    for _ in range(3):
        assert rv.get("/after").status == 200


def test_response_streams_before_upstream_finishes(cfg, backend, rivet):
    """The first chunk reaches the client while the backend still holds back the rest (no
    store-and-forward): the backend waits for the client to confirm it saw the first chunk."""
    got_first = threading.Event()
    outcome = {}

    def h(req, conn):
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        outcome["client_saw_first_chunk_in_time"] = got_first.wait(10)
        conn.send(b"4\r\nrest\r\n0\r\n\r\n")
        return True
    b = backend(handler=h)
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port, timeout=30)
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    buf = b""
    while b"first" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    got_first.set()
    rest = read_until_close(s, timeout=20)
    s.close()
    assert outcome.get("client_saw_first_chunk_in_time") is True, (outcome, buf)
    body = b"".join(r.body for r in parse_responses(buf + rest.data)[0])
    assert body == b"firstrest", buf + rest.data


def test_request_body_streams_before_client_finishes(cfg, backend, rivet):
    """The first part of an upload reaches the backend before the client sends the rest."""
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    s = raw_connect(rv.port, timeout=30)
    first = b"A" * 1000
    s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n" + first)
    wait_for(lambda: first in b.all_raw(), timeout=10, msg="the first half of the body at the backend")
    s.sendall(b"B" * 1000)
    r, _ = read_response(s)
    s.close()
    assert r.status == 200
    assert b.wait_requests(1)[0].body == first + b"B" * 1000
