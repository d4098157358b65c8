"""What the protocol doubles (consul.py, vault.py) share: the listener and its accept loop, the
connection reset, the fault registry, HTTP/1.x request reading and Go net/http-style response
writing, the /_double/ control endpoint and the process entry point.

Each double subclasses DoubleBase and sets the class attributes and hooks where the two differ
(fault kinds, thread names, reason phrases, path unescaping, Date clock, body rules, control
routes). Python 3 standard library only; importable both as doubles._common and, when a double
runs as a script, as _common.
"""

import argparse
import json
import os
import re
import signal
import socket
import threading
import time
from email.utils import formatdate
from urllib.parse import quote

CHUNK_THRESHOLD = 2048               # Go net/http buffers this much before switching to chunked
MAX_HEADER_BYTES = (1 << 20) + 4096


def canonical_header_key(name):
    """textproto.CanonicalMIMEHeaderKey: X-CONSUL-knownleader -> X-Consul-Knownleader."""
    for ch in name:
        if not (ch.isascii() and (ch.isalnum() or ch in "!#$%&'*+-.^_`|~")):
            return name
    out, upper = [], True
    for ch in name:
        out.append(ch.upper() if upper else ch.lower())
        upper = ch == "-"
    return "".join(out)


def go_clean_path(p):
    """net/http cleanPath: path.Clean, keeping a trailing slash."""
    if p == "":
        return "/"
    if p[0] != "/":
        p = "/" + p
    parts = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    np = "/" + "/".join(parts)
    if p.endswith("/") and np != "/":
        np += "/"
    return np


def _unhex(c):
    return int(c, 16) if c in "0123456789abcdefABCDEF" else None


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _ClientGone(Exception):
    """The client closed its connection while its blocking query waited (Go cancels the
    request context then; the query ends without an answer)."""


class _BadRequest(Exception):
    def __init__(self, status, msg=""):
        super().__init__(msg)
        self.status, self.msg = status, msg


class _Request:
    __slots__ = ("method", "target", "version", "path", "raw_query", "headers", "hdr", "body",
                 "close", "time", "conn")

    def header(self, name):
        return self.hdr.get(name.lower(), "")


class _Resp:
    def __init__(self, status=200, body=b"", headers=None):
        self.status, self.body = status, body
        self.headers = dict(headers or {})


class _Listener:
    def __init__(self, double, host, port, control_only):
        self.double, self.host, self.port, self.control_only = double, host, port, control_only
        self.sock = None
        self.thread = None
        self.lock = threading.Lock()

    def open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        s.settimeout(0.05)
        self.port = s.getsockname()[1]
        with self.lock:
            self.sock = s

    def close(self):
        with self.lock:
            s, self.sock = self.sock, None
        if s is not None:
            try:  # stops listening at once, even while the accept thread polls the socket
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def start(self):
        self.open()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True,
                                       name="%s-accept-%d" % (self.double.NAME, self.port))
        self.thread.start()

    def _accept_loop(self):
        d = self.double
        while not d._stopping.is_set():
            s = self.sock
            if s is None:
                time.sleep(0.02)
                continue
            try:
                conn, _ = s.accept()
            except (socket.timeout, OSError):
                continue
            if not self.control_only:
                down = d._faults.peek("down")
                if down and down.get("mode", "refuse") == "reset":
                    _reset(conn)
                    continue
            threading.Thread(target=d._serve_conn, args=(conn, self), daemon=True,
                             name="%s-conn" % d.NAME).start()


def _reset(conn):
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    conn.close()


class _Faults:
    """Active faults by kind, each with its parameters (paths, count, duration_ms, ...).

    kinds             the kinds this double knows
    lazy_expiry       get()/peek() already ignore a fault past its duration (before the
                      housekeeping thread clears it)
    count_any_path    get() with path None consumes one 'count' too
    """

    def __init__(self, kinds, lazy_expiry=False, count_any_path=False):
        self.KINDS = tuple(kinds)
        self.lazy_expiry, self.count_any_path = lazy_expiry, count_any_path
        self.active = {}
        self.lock = threading.Lock()

    def _lapsed(self, p):
        return (self.lazy_expiry and p.get("until") is not None
                and time.monotonic() >= p["until"])

    def set(self, kind, params):
        if kind not in self.KINDS:
            raise ValueError("unknown fault kind %r (one of %s)" % (kind, ", ".join(self.KINDS)))
        p = dict(params)
        p["since"] = time.monotonic()
        if p.get("duration_ms") is not None:
            p["until"] = p["since"] + float(p["duration_ms"]) / 1000.0
        with self.lock:
            self.active[kind] = p

    def clear(self, kind=None):
        with self.lock:
            if kind is None:
                gone = list(self.active)
                self.active.clear()
            else:
                gone = [kind] if self.active.pop(kind, None) is not None else []
        return gone

    def get(self, kind, path):
        """The fault's params if it applies to this path now (consumes one of 'count')."""
        with self.lock:
            p = self.active.get(kind)
            if p is None:
                return None
            if self._lapsed(p):
                return None
            paths = p.get("paths")
            if paths and path is not None and not any(path.startswith(x) for x in paths):
                return None
            if p.get("count") is not None and (path is not None or self.count_any_path):
                p["count"] = int(p["count"]) - 1
                if p["count"] <= 0:
                    del self.active[kind]
            return p

    def peek(self, kind):
        with self.lock:
            p = self.active.get(kind)
            if p is not None and self._lapsed(p):
                return None
            return p

    def expired(self):
        now = time.monotonic()
        with self.lock:
            return [k for k, p in self.active.items() if p.get("until") is not None and now >= p["until"]]

    def snapshot(self):
        with self.lock:
            return {k: {x: y for x, y in p.items() if x not in ("since", "until")}
                    for k, p in self.active.items()}


# --------------------------------------------------------------------------------------------
# The double's shared half


class DoubleBase:
    """Lifecycle, faults, request log, connection serving and the control endpoint.

    A subclass sets NAME (thread names, banner), REASONS (status reason phrases), and may set
    UNSUPPORTED_TE_BODY (body of the 501 for a Transfer-Encoding other than chunked; None: the
    status text) and BODYLESS_STATUS (no body for 1xx/204/304, and none added to an empty HEAD
    answer). It provides _handle, _unescape_path, _query_dict, _control_json, _control_state,
    _control_extra and may override the other hooks (_date, _prepare_body, _validate_fault,
    _faults_changed, _on_stop, _after_clear, _tick, _control_error, _fault_lists).
    """

    NAME = "double"
    REASONS = {}
    UNSUPPORTED_TE_BODY = None
    BODYLESS_STATUS = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self):
        if self._started:
            return self
        self._stopping.clear()
        self._listener.start()
        if self._control is not None:
            self._control.start()
        self._ticker = threading.Thread(target=self._tick_loop, daemon=True, name="%s-tick" % self.NAME)
        self._ticker.start()
        self._started = True
        return self

    def stop(self):
        if not self._started:
            return
        self._stopping.set()
        self._listener.close()
        if self._control is not None:
            self._control.close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._on_stop()
        for t in (self._listener.thread, self._control.thread if self._control else None, self._ticker):
            if t is not None:
                t.join(timeout=2)
        self._started = False

    def _on_stop(self):
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._listener.port

    @property
    def control_port(self):
        return self._control.port if self._control else None

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    # -- Python API: faults ------------------------------------------------------------------------
    def fault(self, kind, **params):
        """Switch a fault on (see the module docstring)."""
        if kind == "down":
            mode = params.get("mode", "refuse")
            if mode not in ("refuse", "hang", "reset"):
                raise ValueError("down mode must be refuse, hang or reset")
        self._validate_fault(kind, params)
        self._faults.set(kind, params)
        if kind == "down" and params.get("mode", "refuse") == "refuse":
            self._listener.close()
            self._drop_conns()
        self._faults_changed()

    def _validate_fault(self, kind, params):
        pass

    def _faults_changed(self):
        pass

    def clear_fault(self, kind=None):
        for k in self._faults.clear(kind):
            self._after_clear(k)
        self._faults_changed()

    def _after_clear(self, kind):
        if kind == "down":
            if self._started and self._listener.sock is None:
                self._listener.open()
            self._drop_conns()  # hung connections end as an agent restart would end them

    def _drop_conns(self):
        with self._conns_lock:
            conns = [c for c, lst in self._conns.items() if not lst.control_only]
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def faults(self):
        return self._faults.snapshot()

    # -- Python API: request log -------------------------------------------------------------------
    def requests(self, path_prefix=None):
        with self._lock:
            return [dict(r) for r in self._requests
                    if path_prefix is None or r["path"].startswith(path_prefix)]

    def clear_requests(self):
        with self._lock:
            self._requests = []

    def _record(self, req):
        if not self.record_requests:
            return
        with self._lock:
            if len(self._requests) >= 10000:
                del self._requests[:1000]
            self._requests.append({
                "time": req.time, "method": req.method, "path": req.path, "raw_query": req.raw_query,
                "query": self._query_dict(req.raw_query), "headers": list(req.headers),
                "body": req.body[:65536]})

    # -- housekeeping --------------------------------------------------------------------------------
    def _tick_loop(self):
        while not self._stopping.wait(0.05):
            for k in self._faults.expired():
                if self._faults.clear(k):
                    self._after_clear(k)
            self._tick()

    def _tick(self):
        pass

    # -- connections ---------------------------------------------------------------------------------
    def _serve_conn(self, conn, listener):
        with self._conns_lock:
            self._conns[conn] = listener
        rf = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                try:
                    req = self._read_request(rf, conn)
                except _BadRequest as e:
                    # net/http: a statusError carries its text on both lines; others do not
                    msg = "%d %s" % (e.status, self.REASONS.get(e.status, ""))
                    if e.msg:
                        msg += ": " + e.msg
                    line, body = msg, msg
                    if e.status == 501 and self.UNSUPPORTED_TE_BODY is not None:
                        line, body = "501 Not Implemented", self.UNSUPPORTED_TE_BODY
                    conn.sendall(("HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                  "Connection: close\r\n\r\n%s" % (line, body)).encode("latin-1"))
                    break
                if req is None:
                    break
                if not listener.control_only and not req.path.startswith("/_double/"):
                    down = self._faults.peek("down")
                    if down is not None:
                        if down.get("mode", "refuse") == "hang":
                            while (self._faults.peek("down") is not None
                                   and not self._stopping.wait(0.02)):
                                pass
                        else:
                            _reset(conn)
                        break
                try:
                    resp = self._handle(req, listener)
                except _ClientGone:
                    break
                head, payload, close = self._serialize(req, resp)
                conn.sendall(head + payload)
                if close or req.close:
                    break
        except OSError:
            pass
        finally:
            with self._conns_lock:
                self._conns.pop(conn, None)
            try:
                rf.close()
                conn.close()
            except OSError:
                pass

    def _read_request(self, rf, conn):
        total = 0
        line = rf.readline(MAX_HEADER_BYTES)
        while line in (b"\r\n", b"\n"):
            line = rf.readline(MAX_HEADER_BYTES)
        if not line:
            return None
        total += len(line)
        if not line.endswith(b"\n"):
            raise _BadRequest(431 if len(line) >= MAX_HEADER_BYTES else 400)
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3:
            raise _BadRequest(400)
        req = _Request()
        req.time = time.time()
        req.conn = conn
        req.method, req.target, req.version = parts
        if req.version not in ("HTTP/1.0", "HTTP/1.1"):
            if re.fullmatch(r"HTTP/\d\.\d", req.version):
                raise _BadRequest(505, "unsupported protocol version")
            raise _BadRequest(400)
        headers = []
        while True:
            h = rf.readline(MAX_HEADER_BYTES)
            total += len(h)
            if total > MAX_HEADER_BYTES:
                raise _BadRequest(431)
            if not h:
                return None
            if h in (b"\r\n", b"\n"):
                break
            s = h.decode("latin-1").rstrip("\r\n")
            name, sep, value = s.partition(":")
            if not sep or not name or name != name.strip() or " " in name:
                raise _BadRequest(400)
            headers.append((name, value.strip(" \t")))
        req.headers = headers
        req.hdr = {}
        for n, v in headers:
            req.hdr.setdefault(n.lower(), v)
        if req.version == "HTTP/1.1" and "host" not in req.hdr:
            raise _BadRequest(400, "missing required Host header")
        tokens = [t.strip().lower() for t in req.hdr.get("connection", "").split(",")]
        req.close = ("close" in tokens) if req.version == "HTTP/1.1" else ("keep-alive" not in tokens)
        te = req.hdr.get("transfer-encoding", "").lower()
        body = b""
        if te:
            if te != "chunked":
                raise _BadRequest(501)
            self._continue(req, conn)
            chunks = []
            while True:
                szl = rf.readline(4096)
                try:
                    sz = int(szl.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _BadRequest(400)
                if sz == 0:
                    while rf.readline(MAX_HEADER_BYTES) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(rf.read(sz))
                rf.readline(4)
            body = b"".join(chunks)
        elif "content-length" in req.hdr:
            cl = req.hdr["content-length"]
            if not cl.isdigit():
                raise _BadRequest(400)
            n = int(cl)
            if n > 0:
                self._continue(req, conn)
                body = rf.read(n)
                if len(body) < n:
                    return None
        req.body = body
        target = req.target
        if target.startswith("http://") or target.startswith("https://"):
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        if not target.startswith("/"):
            raise _BadRequest(400)
        raw_path, _, req.raw_query = target.partition("?")
        req.raw_query = req.raw_query.split("#", 1)[0]
        try:
            req.path = self._unescape_path(raw_path)
        except ValueError:
            raise _BadRequest(400)
        return req

    @staticmethod
    def _continue(req, conn):
        if req.hdr.get("expect", "").lower() == "100-continue" and req.version == "HTTP/1.1":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _date(self):
        """The Date header's time (None: now)."""
        return None

    def _prepare_body(self, req, resp, hdrs):
        """The body to send; may rewrite hdrs (canonical keys) in place."""
        return resp.body

    def _serialize(self, req, resp):
        """Go net/http: handler headers sorted, then Date, Content-Length, sniffed Content-Type,
        Connection, Transfer-Encoding; bodies over 2048 bytes chunked."""
        hdrs = {canonical_header_key(k): v for k, v in resp.headers.items()}
        body = self._prepare_body(req, resp, hdrs)
        lines = ["HTTP/1.1 %d %s" % (resp.status, self.REASONS.get(resp.status, "status code %d" % resp.status))]
        for k in sorted(hdrs):
            lines.append("%s: %s" % (k, hdrs[k]))
        lines.append("Date: " + formatdate(self._date(), usegmt=True))
        chunked, close = False, req.close
        if self.BODYLESS_STATUS and (resp.status == 204 or resp.status == 304 or 100 <= resp.status < 200):
            body = b""
        elif self.BODYLESS_STATUS and req.method == "HEAD" and not body:
            pass
        elif "Content-Length" not in hdrs:
            if len(body) > CHUNK_THRESHOLD:
                if req.version == "HTTP/1.1":
                    chunked = True
                else:
                    close = True
            else:
                lines.append("Content-Length: %d" % len(body))
        if body and "Content-Type" not in hdrs:
            lines.append("Content-Type: text/plain; charset=utf-8")
        if close and req.version == "HTTP/1.1":
            lines.append("Connection: close")
        elif req.version == "HTTP/1.0" and not close:
            lines.append("Connection: keep-alive")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if req.method == "HEAD":
            return head, b"", close
        if chunked:
            body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        return head, body, close

    _REDIRECT_HEADERS = {}

    def _redirect(self, req, path):
        loc = quote(path, safe="/:@!$&'()*+,;=-._~")
        if req.raw_query:
            loc += "?" + req.raw_query
        h = dict(self._REDIRECT_HEADERS)
        h["Location"] = loc
        body = b""
        if req.method in ("GET", "HEAD"):
            h["Content-Type"] = "text/html; charset=utf-8"
            body = ('<a href="%s">Moved Permanently</a>.\n\n' % loc.replace("&", "&amp;")
                    .replace('"', "&#34;").replace("<", "&lt;").replace(">", "&gt;")
                    .replace("'", "&#39;")).encode("utf-8")
        return _Resp(301, body, h)

    # -- control endpoint (/_double/) ----------------------------------------------------------------
    _FAULT_LISTS = ("paths",)   # fault parameters that take a list (a string becomes [string])

    def _control_error(self, e):
        return str(e)

    def _control_request(self, req):
        def ok(obj=None):
            return _Resp(200, self._control_json({"ok": True} if obj is None else obj),
                         {"Content-Type": "application/json"})

        def bad(msg):
            return _Resp(400, (msg + "\n").encode())

        path, m = req.path, req.method
        try:
            body = json.loads(req.body.decode("utf-8")) if req.body.strip() else {}
        except ValueError as e:
            return bad("bad JSON: %s" % e)
        if not isinstance(body, dict):
            return bad("body must be a JSON object")
        for k, v in self._query_dict(req.raw_query).items():  # query parameters work too: ?kind=slow&ms=200
            body.setdefault(k, v[0])
        try:
            if path == "/_double/state" and m == "GET":
                with self._lock:
                    return ok(self._control_state())
            if path == "/_double/fault" and m in ("PUT", "POST"):
                kind = body.pop("kind", None)
                if not kind:
                    return bad("need kind")
                for k in ("ms", "status", "count", "duration_ms"):
                    if k in body and body[k] is not None:
                        body[k] = float(body[k]) if k in ("ms", "duration_ms") else int(body[k])
                for k in self._FAULT_LISTS:
                    if isinstance(body.get(k), str):
                        body[k] = [body[k]]
                self.fault(kind, **body)
                return ok()
            if path.startswith("/_double/fault") and m == "DELETE":
                kind = path[len("/_double/fault/"):] if path.startswith("/_double/fault/") else None
                self.clear_fault(kind or None)
                return ok()
            r = self._control_extra(path, m, body, ok)
            if r is not None:
                return r
            if path == "/_double/requests" and m == "GET":
                reqs = self.requests(body.get("prefix"))
                for r in reqs:
                    r["body"] = r["body"].decode("utf-8", "replace")
                return ok(reqs)
            if path == "/_double/requests" and m == "DELETE":
                self.clear_requests()
                return ok()
            if path == "/_double/reset" and m in ("PUT", "POST"):
                self.reset()
                return ok()
        except (ValueError, KeyError, TypeError) as e:
            return bad(self._control_error(e))
        return _Resp(404, b"unknown control path or method\n")


# --------------------------------------------------------------------------------------------
# process entry point


def parse_args(argv, description, default_port, add_arguments):
    """The command line: --host, --port, --control-port, the double's own options, --ready-file."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=default_port, help="0: any free port (printed)")
    ap.add_argument("--control-port", type=int, default=None,
                    help="also serve /_double/ on this port (reachable while the API port is down)")
    add_arguments(ap)
    ap.add_argument("--ready-file", help="write the port here once listening")
    return ap.parse_args(argv)


def serve(d, a, extra_lines=()):
    """Start the double, write --ready-file, print the banner (and extra_lines), run until
    SIGTERM or SIGINT, stop. Returns the exit status."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    d.start()
    if a.ready_file:
        with open(a.ready_file + ".tmp", "w") as f:
            f.write("%d\n" % d.port)
        os.replace(a.ready_file + ".tmp", a.ready_file)
    msg = "%s listening on %s" % (d.NAME, d.url)
    if d.control_port:
        msg += " (control on http://%s:%d)" % (a.host, d.control_port)
    print(msg, flush=True)
    for line in extra_lines:
        print(line, flush=True)
    while not stop.wait(0.5):
        pass
    d.stop()
    return 0
