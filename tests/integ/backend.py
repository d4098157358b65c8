"""Recording HTTP/1.1 backends for the integration tests (pure stdlib, threaded).

Backend       parses every request itself (no http.server: we need the exact bytes), records
              method, raw target, headers in order with their original case, and the body
              (hashed always, kept up to BODY_KEEP bytes), then answers by path or by a
              per-test handler.  Default paths:
                /status/<N>           status N with a short text body (none for 1xx/204/304)
                /delay/<ms>[/...]     sleep, then echo
                /bytes/<N>            N bytes of the test pattern, Content-Length framed
                /chunked-bytes/<N>    N bytes of the pattern, chunked (64 KiB chunks)
                /chunked/<k>          k small chunks "chunk-<i>\\n"
                /nolength/<N>         N pattern bytes, no length: delimited by close
                /close                close without answering
                /reset                reset (RST) without answering
                /hang                 never answer (until the backend stops)
                /slow-sink...         reads 1 MiB of the body, pauses 1 s, reads the rest, echoes
                anything else         echo: JSON of what was received
              Every answer carries "X-Backend: <name>".
HangServer    accepts and reads but never answers.
closed_port() a port that refuses connections (bound, never listening).
"""
import functools
import hashlib
import json
import random
import socket
import struct
import threading
import time

BODY_KEEP = 1 << 20          # body bytes kept per request (all bytes are hashed and counted)
RAW_KEEP = 256 << 10         # raw bytes kept per connection (for "never saw X" checks)
MAX_HEAD = 1 << 20

_PATTERN = random.Random(0x5EED).randbytes(1 << 20)


def pattern_chunks(n, chunk=1 << 20):
    """Yield the first n bytes of the endless test pattern (a 1 MiB block repeated), in
    pieces of at most chunk bytes (memoryviews into the block)."""
    mv = memoryview(_PATTERN)
    off = 0
    left = n
    while left > 0:
        k = min(left, chunk, len(_PATTERN) - off)
        yield mv[off:off + k]
        off = (off + k) % len(_PATTERN)
        left -= k


@functools.lru_cache(maxsize=16)
def pattern_digest(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


class Request:
    """One request as the backend received it."""

    def __init__(self):
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []            # [(name, value)] as received, original case, in order
        self.raw_head = b""
        self.body = b""              # first BODY_KEEP bytes
        self.body_len = 0
        self.body_sha256 = ""
        self.chunked = False
        self.trailers = []
        self.expect_continue = False
        self.conn_id = 0
        self.index_on_conn = 0       # 0 for the first request on its connection
        self.anomalies = []          # bare CR/LF etc. seen in the head
        self.complete = False        # body fully read
        self.time = 0.0

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        return self.target.split("?", 1)[1] if "?" in self.target else None

    def header(self, name):
        """First value of header name (case-insensitive), or None."""
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header_names(self):
        return [k.lower() for k, _ in self.headers]

    def to_json(self, backend_name):
        return {
            "backend": backend_name,
            "method": self.method,
            "target": self.target,
            "version": self.version,
            "headers": [[k, v] for k, v in self.headers],
            "body_len": self.body_len,
            "body_sha256": self.body_sha256,
            "body": self.body.decode("latin-1") if self.body_len <= 65536 else None,
            "chunked": self.chunked,
            "conn_id": self.conn_id,
            "index_on_conn": self.index_on_conn,
        }

    def __repr__(self):
        return "<Request %s %s conn=%d #%d len=%d>" % (self.method, self.target, self.conn_id,
                                                        self.index_on_conn, self.body_len)


class ParseError(Exception):
    pass


class Conn:
    """A backend-side connection, handed to handlers."""

    def __init__(self, sock, backend, conn_id):
        self.sock = sock
        self.backend = backend
        self.id = conn_id
        self.buf = bytearray()
        self.closed = False
        self.keep_open = True        # set False to close after the current response

    # -- reading -----------------------------------------------------------------------
    def _fill(self):
        try:
            data = self.sock.recv(1 << 18)
        except (ConnectionError, OSError):
            data = b""
        if data:
            self.backend._note_raw(self.id, data)
        return data

    def read_head(self):
        """Bytes of the next head up to and including CRLFCRLF; b'' on clean EOF."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise ParseError("head too large")
            data = self._fill()
            if not data:
                if self.buf:
                    raise ParseError("EOF inside head: %r" % bytes(self.buf[:200]))
                return b""
            self.buf += data

    def read_exact(self, n, sink):
        while n > 0:
            if not self.buf:
                data = self._fill()
                if not data:
                    raise ParseError("EOF inside body (%d bytes missing)" % n)
                self.buf += data
            k = min(n, len(self.buf))
            sink(bytes(self.buf[:k]))
            del self.buf[:k]
            n -= k

    def read_line(self, cap=65536):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > cap:
                raise ParseError("line too long")
            data = self._fill()
            if not data:
                raise ParseError("EOF inside chunked framing")
            self.buf += data

    # -- writing -----------------------------------------------------------------------
    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except (ConnectionError, OSError):
            self.closed = True
            return False

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def reset(self):
        """Close with RST."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.sock.close()

    def respond(self, status=200, body=b"", headers=None, reason=None, chunked=False,
                head=False, length=True):
        """Send a well-formed response. headers: list of (name, value)."""
        if isinstance(body, str):
            body = body.encode()
        hs = list(headers or [])
        hs.append(("X-Backend", self.backend.name))
        no_body = status < 200 or status in (204, 304)
        if not no_body:
            if chunked:
                hs.append(("Transfer-Encoding", "chunked"))
            elif length:
                hs.append(("Content-Length", str(len(body))))
        out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, (reason or REASONS.get(status, "X")).encode()))
        for k, v in hs:
            out += b"%s: %s\r\n" % (k.encode("latin-1"), str(v).encode("latin-1"))
        out += b"\r\n"
        if not no_body and not head:
            if chunked:
                if body:
                    out += b"%x\r\n%s\r\n" % (len(body), body)
                out += b"0\r\n\r\n"
            else:
                out += body
        ok = self.send(bytes(out))
        if not length and not chunked and not no_body:
            self.close()
        return ok


REASONS = {100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
           302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
           418: "I'm a teapot", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


def parse_head(head, req):
    """Fill req from a request head (bytes ending CRLFCRLF). Lenient, but notes anomalies."""
    req.raw_head = head
    text = head[:-4]
    lines = text.split(b"\r\n")
    for ln in lines:
        if b"\r" in ln or b"\n" in ln:
            req.anomalies.append("bare CR/LF in %r" % ln[:100])
        if b"\x00" in ln:
            req.anomalies.append("NUL in %r" % ln[:100])
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise ParseError("bad request line %r" % lines[0][:200])
    req.method = parts[0].decode("latin-1")
    req.target = parts[1].decode("latin-1")
    req.version = parts[2].decode("latin-1")
    for ln in lines[1:]:
        if ln[:1] in (b" ", b"\t"):
            req.anomalies.append("obs-fold %r" % ln[:100])
            if req.headers:
                k, v = req.headers[-1]
                req.headers[-1] = (k, v + " " + ln.strip().decode("latin-1"))
            continue
        if b":" not in ln:
            raise ParseError("header without colon %r" % ln[:200])
        k, v = ln.split(b":", 1)
        req.headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))


class Backend:
    """A threaded recording HTTP/1.1 server on 127.0.0.1 (or host) with an ephemeral port."""

    def __init__(self, name="backend", handler=None, host="127.0.0.1", send_continue=True, localhost=False,
                 port=0):
        """port: 0 for an ephemeral port; harness.free_port() for one no stale address of an
        earlier test (or of another process on the machine) can point at. localhost=True: also listen on [::1] with the same port when the IPv6 loopback
        exists, for an Upstream addressed as `localhost` - which resolves to ::1 as well on
        many machines (Debian's and Docker's /etc/hosts), and rivet sends to every address a
        name resolves to."""
        self.name = name
        self.handler = handler       # fn(req, conn) -> True when it answered
        self.send_continue = send_continue
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(256)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.requests = []           # complete requests, in arrival order
        self.started = []            # requests whose head arrived (body may be pending)
        self.errors = []             # parse errors
        self.raw = {}                # conn_id -> bytearray (first RAW_KEEP bytes)
        self.nconns = 0
        self.active = 0
        self.stopping = threading.Event()
        self._socks = set()
        self.counter = 0             # free for handlers (use with .lock)
        self.state = {}              # free for handlers
        self._thread = threading.Thread(target=self._accept_loop, args=(self.sock,), daemon=True)
        self._thread.start()
        self.sock6 = None
        if localhost and ":" not in host:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s6.bind(("::1", self.port))
                s6.listen(256)
                self.sock6 = s6
                threading.Thread(target=self._accept_loop, args=(s6,), daemon=True).start()
            except OSError:     # no IPv6 loopback (then localhost is not ::1 either)
                s6.close()

    # -- public ------------------------------------------------------------------------
    @property
    def addr(self):
        return self.host

    def set_handler(self, fn):
        self.handler = fn

    def clear(self):
        with self.lock:
            self.requests.clear()
            self.started.clear()
            self.errors.clear()

    def all_raw(self):
        with self.lock:
            return b"".join(bytes(v) for v in self.raw.values())

    def paths(self):
        with self.lock:
            return [r.path for r in self.requests]

    def wait_requests(self, n, timeout=10.0, started=False):
        """Wait until at least n requests were recorded; returns the list. timeout is an upper
        bound, scaled like harness.wait_for's for slow (ASan, loaded) runs."""
        from harness import timeout_scale
        timeout *= timeout_scale()
        deadline = time.monotonic() + timeout
        with self.cond:
            lst = self.started if started else self.requests
            while len(lst) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("backend %s: %d requests after %.1fs, wanted %d (errors %r)"
                                         % (self.name, len(lst), timeout, n, self.errors))
                self.cond.wait(left)
            return list(lst)

    def stop(self):
        self.stopping.set()
        for ls in (self.sock, self.sock6):
            try:
                if ls is not None:
                    ls.close()
            except OSError:
                pass
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    # -- internals ---------------------------------------------------------------------
    def _note_raw(self, cid, data):
        with self.lock:
            b = self.raw.setdefault(cid, bytearray())
            if len(b) < RAW_KEEP:
                b += data[:RAW_KEEP - len(b)]

    def _accept_loop(self, lsock):
        while not self.stopping.is_set():
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.nconns += 1
                cid = self.nconns
                self._socks.add(s)
            threading.Thread(target=self._serve, args=(s, cid), daemon=True).start()

    def _serve(self, s, cid):
        conn = Conn(s, self, cid)
        with self.lock:
            self.active += 1
        idx = 0
        try:
            while not conn.closed and not self.stopping.is_set():
                req = Request()
                req.conn_id = cid
                req.index_on_conn = idx
                try:
                    head = conn.read_head()
                    if not head:
                        break
                    parse_head(head, req)
                except ParseError as e:
                    with self.lock:
                        self.errors.append(str(e))
                    break
                req.time = time.monotonic()
                with self.cond:
                    self.started.append(req)
                    self.cond.notify_all()
                idx += 1
                exp = (req.header("expect") or "").lower() == "100-continue"
                req.expect_continue = exp
                if exp and self.send_continue:
                    conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                try:
                    self._read_body(conn, req)
                except ParseError as e:
                    with self.lock:
                        self.errors.append("%s (request %s %s)" % (e, req.method, req.target))
                    break
                req.complete = True
                with self.cond:
                    self.requests.append(req)
                    self.cond.notify_all()
                if (req.header("connection") or "").lower() == "close":
                    conn.keep_open = False
                handled = False
                if self.handler is not None:
                    handled = self.handler(req, conn)
                if not handled:
                    self._default(req, conn)
                if not conn.keep_open:
                    conn.close()
        except Exception as e:  # never let a handler bug kill silently
            with self.lock:
                self.errors.append("handler exception: %r" % (e,))
        finally:
            conn.close()
            with self.lock:
                self.active -= 1
                self._socks.discard(s)

    def _read_body(self, conn, req):
        h = hashlib.sha256()
        kept = bytearray()
        n = [0]
        slow = req.path.startswith("/slow-sink")

        def sink(data):
            h.update(data)
            n[0] += len(data)
            if len(kept) < BODY_KEEP:
                kept.extend(data[:BODY_KEEP - len(kept)])

        te = req.header_all("transfer-encoding")
        cl = req.header_all("content-length")
        if te:
            if te[-1].strip().lower().split(",")[-1].strip() != "chunked":
                raise ParseError("unsupported transfer-encoding %r" % te)
            req.chunked = True
            while True:
                line = conn.read_line()
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise ParseError("bad chunk size %r" % line[:100])
                if size == 0:
                    break
                conn.read_exact(size, sink)
                if conn.read_line() != b"":
                    raise ParseError("missing CRLF after chunk data")
            while True:
                t = conn.read_line()
                if t == b"":
                    break
                req.trailers.append(t.decode("latin-1"))
        elif cl:
            try:
                length = int(cl[0])
            except ValueError:
                raise ParseError("bad content-length %r" % cl)
            if slow and length > (1 << 20):
                conn.read_exact(1 << 20, sink)
                time.sleep(1.0)
                length -= 1 << 20
            conn.read_exact(length, sink)
        req.body = bytes(kept)
        req.body_len = n[0]
        req.body_sha256 = h.hexdigest()

    def _default(self, req, conn):
        p = req.path
        head = req.method == "HEAD"
        parts = p.strip("/").split("/")
        if parts[0] == "status" and len(parts) > 1 and parts[1].isdigit():
            st = int(parts[1])
            conn.respond(st, "status %d\n" % st, [("Content-Type", "text/plain")], head=head)
        elif parts[0] == "delay" and len(parts) > 1 and parts[1].isdigit():
            self.stopping.wait(int(parts[1]) / 1000.0)
            self.echo(req, conn)
        elif parts[0] == "bytes" and len(parts) > 1 and parts[1].isdigit():
            n = int(parts[1])
            hdr = ("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream"
                   "\r\nX-Backend: %s\r\n\r\n" % (n, self.name)).encode()
            if not conn.send(hdr) or head:
                return
            for c in pattern_chunks(n):
                if not conn.send(c):
                    return
        elif parts[0] == "chunked-bytes" and len(parts) > 1 and parts[1].isdigit():
            n = int(parts[1])
            if not conn.send(("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: %s\r\n\r\n"
                              % self.name).encode()):
                return
            for c in pattern_chunks(n, 64 << 10):
                if not conn.send(b"%x\r\n" % len(c) + bytes(c) + b"\r\n"):
                    return
            conn.send(b"0\r\n\r\n")
        elif parts[0] == "chunked" and len(parts) > 1 and parts[1].isdigit():
            k = int(parts[1])
            out = bytearray(("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain"
                             "\r\nX-Backend: %s\r\n\r\n" % self.name).encode())
            for i in range(k):
                c = b"chunk-%d\n" % i
                out += b"%x\r\n%s\r\n" % (len(c), c)
            out += b"0\r\n\r\n"
            conn.send(bytes(out))
        elif parts[0] == "nolength" and len(parts) > 1 and parts[1].isdigit():
            n = int(parts[1])
            conn.send(("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                       "X-Backend: %s\r\n\r\n" % self.name).encode())
            for c in pattern_chunks(n):
                if not conn.send(c):
                    break
            conn.close()
        elif p == "/close":
            conn.close()
        elif p == "/reset":
            conn.reset()
        elif p == "/hang":
            self.stopping.wait(120)
            conn.close()
        else:
            self.echo(req, conn)

    def echo(self, req, conn, status=200, extra_headers=None):
        body = json.dumps(req.to_json(self.name)).encode()
        conn.respond(status, body, [("Content-Type", "application/json")] + list(extra_headers or []),
                     head=req.method == "HEAD")


class HangServer:
    """Accepts connections, reads whatever arrives, never answers."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.host = host
        self.stopping = threading.Event()
        self.conns = []
        self.received = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True).start()

    @property
    def addr(self):
        return self.host

    def _loop(self):
        while not self.stopping.is_set():
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(s)
            threading.Thread(target=self._drain, args=(s,), daemon=True).start()

    def _drain(self, s):
        while not self.stopping.is_set():
            try:
                d = s.recv(65536)
            except OSError:
                return
            if not d:
                return
            with self.lock:
                if len(self.received) < RAW_KEEP:
                    self.received += d

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass


class ClosedPort:
    """A TCP port on 127.0.0.1 that refuses connections: bound (so nobody else takes it) but
    never listening, so a connect gets RST."""

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.host = host

    @property
    def addr(self):
        return self.host

    def stop(self):
        self.sock.close()
