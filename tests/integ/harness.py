"""Harness for the integration tests: config directories, the rivet process, HTTP clients.

Nothing here assumes more about rivet than the specification: the CLI flags, the Gloo resource
layout <dir>/<plural>/<ns>/<name>.yaml, and the admin endpoints /ready, /metrics,
/config_dump and /status ({"resources": [{kind, namespace, name, state, reason}]}).
"""
import functools
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NS = "gloo-system"


def rivet_bin():
    return os.environ.get("RIVET_BIN") or str(REPO / "build" / "rivet")


@functools.lru_cache(maxsize=4)
def _is_asan(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return b"__asan_init" in data or b"AddressSanitizer" in data
    except OSError:
        return False


def is_asan_build():
    """True when RIVET_BIN is built with AddressSanitizer (slower, more memory)."""
    return _is_asan(rivet_bin())


# ---------------------------------------------------------------------------------------
# small utilities


# Ports a test picks now and something binds later. They come from below the kernel's
# ephemeral range (32768-60999 on Linux): binding port 0 and closing would hand the same
# port out twice (the kernel reuses a just-freed ephemeral port; CI once saw a Gateway and the
# admin API get one port), and any outgoing connection may take an ephemeral port meanwhile.
# Each port is handed out once per process and skipped while something else holds it.
_PORT_LO, _PORT_HI = 20000, 32000
_port_next = _PORT_LO + (os.getpid() * 7919) % (_PORT_HI - _PORT_LO)
_ports_given = set()


def free_port(host="127.0.0.1"):
    global _port_next
    for _ in range(_PORT_HI - _PORT_LO):
        port = _port_next
        _port_next = _PORT_LO if port + 1 >= _PORT_HI else port + 1
        if port not in _ports_given and port_is_free(port, host):
            _ports_given.add(port)
            return port
    raise RuntimeError("no free port left in %d-%d" % (_PORT_LO, _PORT_HI))


def port_is_free(port, host="127.0.0.1", reuse=False):
    """Whether port can be bound now. reuse=True binds as rivet's listeners do (SO_REUSEADDR):
    connections of an earlier listener lingering in TIME_WAIT then do not count."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def can_connect(port, host="127.0.0.1", timeout=1.0):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def timeout_scale():
    """How much longer than its nominal timeout a wait may take: RIVET_TEST_TIMEOUT_SCALE when
    set, else 3 for an ASan build (2-5x slower) and 2 otherwise. CI runs on a busy 2-core
    machine; a test's timeouts are upper bounds for something that must happen, never timed
    assertions, so a longer bound only costs time when the test fails anyway."""
    v = os.environ.get("RIVET_TEST_TIMEOUT_SCALE")
    if v:
        try:
            return max(1.0, float(v))
        except ValueError:
            pass
    return 3.0 if is_asan_build() else 2.0


def in_thread(fn, *a, **kw):
    """Run fn in a thread; returns a getter for its result (raises what fn raised)."""
    box = {}

    def run():
        try:
            box["v"] = fn(*a, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def result(timeout=30):
        t.join(timeout)
        assert not t.is_alive(), "request still running after %ss" % timeout
        if "e" in box:
            raise box["e"]
        return box["v"]
    return result


def wait_for(fn, timeout=5.0, interval=0.05, msg="condition"):
    """Poll fn() until it returns a truthy value (returned); AssertionError on timeout.
    Exceptions raised by fn count as 'not yet'; the last one is reported. timeout is the
    nominal upper bound; the wait allows timeout_scale() times as much."""
    timeout = timeout * timeout_scale()
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 - polling
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, msg, last))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# YAML: a small block-style emitter (every string double-quoted, which YAML 1.2 reads like
# JSON), so the tests need nothing beyond the standard library.

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _yscalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError("cannot emit %r" % (v,))


def _yinline(v):
    if isinstance(v, dict) and not v:
        return "{}"
    if isinstance(v, list) and not v:
        return "[]"
    return _yscalar(v)


def _ykey(k):
    return k if _PLAIN_KEY.match(k) else json.dumps(k)


def _yemit(obj, ind, out):
    pad = "  " * ind
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, _ykey(k)))
                _yemit(v, ind + 1, out)
            else:
                out.append("%s%s: %s" % (pad, _ykey(k), _yinline(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                sub = []
                _yemit(item, ind + 1, sub)
                sub[0] = pad + "- " + sub[0].lstrip()
                out.extend(sub)
            elif isinstance(item, list) and item:
                out.append(pad + "-")
                _yemit(item, ind + 1, out)
            else:
                out.append(pad + "- " + _yinline(item))
    else:
        out.append(pad + _yscalar(obj))


def to_yaml(obj):
    out = []
    _yemit(obj, 0, out)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# config directory

KINDS = {
    "gateways": ("Gateway", "gateway.solo.io/v1"),
    "virtualservices": ("VirtualService", "gateway.solo.io/v1"),
    "routetables": ("RouteTable", "gateway.solo.io/v1"),
    "upstreams": ("Upstream", "gloo.solo.io/v1"),
    "upstreamgroups": ("UpstreamGroup", "gloo.solo.io/v1"),
}


def atomic_write(path, text):
    """Write text to path atomically (temp file in the same directory + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (".%s.%d.tmp" % (path.name, os.getpid()))
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def upstream_ref(name, ns=NS):
    return {"upstream": {"name": name, "namespace": ns}}


def route(prefix=None, exact=None, regex=None, upstream=None, ns=NS, matchers=None, direct=None,
          redirect=None, delegate=None, multi=None, group=None, options=None, name=None, **extra):
    """One gateway Route. upstream: name of an Upstream (single destination); direct:
    (status, body); multi: [(upstream_name, weight)]; group: UpstreamGroup name."""
    r = {}
    if name:
        r["name"] = name
    if matchers is not None:
        r["matchers"] = matchers
    else:
        m = {}
        if prefix is not None:
            m["prefix"] = prefix
        if exact is not None:
            m["exact"] = exact
        if regex is not None:
            m["regex"] = regex
        r["matchers"] = [m] if m else []
    if upstream is not None:
        r["routeAction"] = {"single": upstream_ref(upstream, ns)}
    elif multi is not None:
        r["routeAction"] = {"multi": {"destinations": [
            {"destination": upstream_ref(u, ns), "weight": w} for u, w in multi]}}
    elif group is not None:
        r["routeAction"] = {"upstreamGroup": {"name": group, "namespace": ns}}
    elif direct is not None:
        st, body = direct
        r["directResponseAction"] = {"status": st, "body": body} if body is not None else {"status": st}
    elif redirect is not None:
        r["redirectAction"] = redirect
    elif delegate is not None:
        r["delegateAction"] = delegate
    if options:
        r["options"] = options
    r.update(extra)
    return r


class ConfigDir:
    """A Gloo directory config source in a temp dir: <root>/<plural>/<ns>/<name>.yaml."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.gateway_ports = {}      # name -> port

    def path(self, plural, name, ns=NS):
        return self.root / plural / ns / ("%s.yaml" % name)

    def write(self, plural, name, body, ns=NS, kube=False, labels=None):
        """Write a resource. body: dict of the resource's fields (without metadata) or a str
        written verbatim. kube=True writes apiVersion/kind/metadata/spec."""
        if isinstance(body, str):
            atomic_write(self.path(plural, name, ns), body)
            return
        meta = {"name": name, "namespace": ns}
        if labels:
            meta["labels"] = labels
        if kube:
            kind, api = KINDS[plural]
            doc = {"apiVersion": api, "kind": kind, "metadata": meta, "spec": body}
        else:
            doc = {"metadata": meta}
            doc.update(body)
        atomic_write(self.path(plural, name, ns), to_yaml(doc))

    def remove(self, plural, name, ns=NS):
        os.unlink(self.path(plural, name, ns))

    # -- resource helpers --------------------------------------------------------------
    def gateway(self, name="gw", port=None, ns=NS, bind="127.0.0.1", kube=False, **extra):
        """A Gateway on a free port (returned)."""
        port = port or free_port()
        body = {"bindAddress": bind, "bindPort": port, "httpGateway": {}}
        body.update(extra)
        self.write("gateways", name, body, ns, kube=kube)
        self.gateway_ports[name] = port
        return port

    def upstream(self, name, hosts, ns=NS, lb=None, kube=False, **extra):
        """hosts: list of backends/ports/(addr, port)/(addr, port, weight)."""
        hs = []
        for h in hosts:
            if isinstance(h, int):
                hs.append({"addr": "127.0.0.1", "port": h})
            elif isinstance(h, tuple):
                d = {"addr": h[0], "port": h[1]}
                if len(h) > 2:
                    d["loadBalancingWeight"] = h[2]
                hs.append(d)
            elif isinstance(h, dict):
                hs.append(h)
            else:  # a Backend / HangServer / ClosedPort
                hs.append({"addr": h.addr, "port": h.port})
        body = {"static": {"hosts": hs}}
        if lb:
            body["loadBalancerConfig"] = lb
        body.update(extra)
        self.write("upstreams", name, body, ns, kube=kube)

    def vs(self, name, routes, domains=("*",), ns=NS, options=None, kube=False, labels=None, **extra):
        vh = {"domains": list(domains), "routes": routes}
        if options:
            vh["options"] = options
        body = {"virtualHost": vh}
        body.update(extra)
        self.write("virtualservices", name, body, ns, kube=kube, labels=labels)

    def route_table(self, name, routes, ns=NS, labels=None, weight=None, kube=False):
        body = {"routes": routes}
        if weight is not None:
            body["weight"] = weight
        self.write("routetables", name, body, ns, kube=kube, labels=labels)

    def upstream_group(self, name, dests, ns=NS, kube=False):
        """dests: [(upstream_name, weight)]"""
        body = {"destinations": [{"destination": upstream_ref(u, ns), "weight": w} for u, w in dests]}
        self.write("upstreamgroups", name, body, ns, kube=kube)

    def simple(self, backend, prefix="/", route_options=None, vh_options=None, domains=("*",)):
        """Gateway + Upstream "up" -> backend + VirtualService "vs" routing prefix to it.
        Returns the gateway port."""
        port = self.gateway()
        self.upstream("up", [backend])
        self.vs("vs", [route(prefix=prefix, upstream="up", options=route_options)],
                domains=domains, options=vh_options)
        return port


# ---------------------------------------------------------------------------------------
# HTTP clients


class Resp:
    def __init__(self, status, reason, headers, body, version=11):
        self.status = status
        self.reason = reason
        self.headers = headers       # [(name, value)]
        self.body = body
        self.version = version

    def header(self, name):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Resp %d %r %r>" % (self.status, self.headers, self.body[:300])


def request(port, path="/", method="GET", headers=None, body=None, host="test.local",
            timeout=15.0, conn=None, addr="127.0.0.1", chunked=False):
    """One request with http.client. headers: dict or list of pairs; host=None sends none.
    conn: reuse an http.client.HTTPConnection (keep-alive). Returns Resp."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if host is not None and not any(k.lower() == "host" for k, _ in hs):
            conn.putheader("Host", host)
        for k, v in hs:
            conn.putheader(k, v)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None and not any(k.lower() == "content-length" for k, _ in hs) \
                and isinstance(body, (bytes, str)):
            conn.putheader("Content-Length", str(len(body.encode() if isinstance(body, str) else body)))
        conn.endheaders(body if body is not None else None, encode_chunked=chunked)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, list(r.getheaders()), data, r.version)
    finally:
        if own:
            conn.close()


class RawResult:
    def __init__(self, data, eof, timed_out, reset):
        self.data = data
        self.eof = eof               # the server closed the connection (FIN or RST)
        self.timed_out = timed_out
        self.reset = reset

    def responses(self, head_requests=0):
        return parse_responses(self.data, head_requests)[0]

    def first_status(self):
        rs = self.responses()
        return rs[0].status if rs else None

    def __repr__(self):
        return "<RawResult eof=%s timeout=%s reset=%s data=%r>" % (self.eof, self.timed_out, self.reset,
                                                                   self.data[:500])


def raw_connect(port, addr="127.0.0.1", timeout=10.0):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((addr, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_close(s, timeout=5.0, limit=64 << 20):
    """Read until EOF/reset or timeout; returns RawResult."""
    s.settimeout(timeout)
    buf = bytearray()
    eof = timed_out = reset = False
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        s.settimeout(left)
        try:
            d = s.recv(1 << 16)
        except socket.timeout:
            timed_out = True
            break
        except ConnectionResetError:
            eof = reset = True
            break
        if not d:
            eof = True
            break
        buf += d
        if len(buf) > limit:
            break
    return RawResult(bytes(buf), eof, timed_out, reset)


def raw(port, data, timeout=5.0, addr="127.0.0.1", shut_wr=False):
    """Send raw bytes on a new connection, read until the server closes (or timeout)."""
    s = raw_connect(port, addr)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        return read_until_close(s, timeout)
    finally:
        s.close()


def read_response(s, timeout=10.0, head_request=False):
    """Read exactly one (final) response from socket s; returns (Resp, interim list).
    Leaves following bytes unread only as far as the framing allows (reads whole chunks)."""
    s.settimeout(timeout)
    buf = bytearray()
    interim = []
    while True:
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise ConnectionError("EOF before response head; got %r" % bytes(buf[:500]))
            buf += d
        rs, rest, complete = parse_responses(bytes(buf), 1 if head_request else 0, max_responses=1,
                                             eof=False, need_complete=True)
        if rs and complete:
            r = rs[0]
            if 100 <= r.status < 200:
                interim.append(r)
                buf = bytearray(rest)
                continue
            if rest:
                s._rivet_leftover = rest  # noqa - debugging aid only
            return r, interim
        d = s.recv(65536)
        if not d:
            # close-delimited body
            rs, rest, complete = parse_responses(bytes(buf), 1 if head_request else 0, max_responses=1,
                                                 eof=True)
            if rs:
                return rs[0], interim
            raise ConnectionError("EOF inside response; got %r" % bytes(buf[:500]))
        buf += d


def _parse_head(head):
    lines = head.split(b"\r\n")
    sl = lines[0].split(b" ", 2)
    if len(sl) < 2 or not sl[0].startswith(b"HTTP/1.") or not sl[1].isdigit():
        raise ValueError("bad status line %r" % lines[0][:200])
    version = 10 if sl[0] == b"HTTP/1.0" else 11
    hs = []
    for ln in lines[1:]:
        if not ln:
            continue
        k, _, v = ln.partition(b":")
        hs.append((k.decode("latin-1"), v.strip().decode("latin-1")))
    return int(sl[1]), (sl[2].decode("latin-1") if len(sl) > 2 else ""), hs, version


def _dechunk(data):
    """Decode a chunked body at data; returns (body, consumed) or None when incomplete."""
    out = bytearray()
    i = 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return None
        size = int(data[i:j].split(b";")[0].strip() or b"x", 16)
        i = j + 2
        if size == 0:
            # trailers
            while True:
                j = data.find(b"\r\n", i)
                if j < 0:
                    return None
                line = data[i:j]
                i = j + 2
                if not line:
                    return bytes(out), i
        if len(data) < i + size + 2:
            return None
        out += data[i:i + size]
        i += size + 2


def parse_responses(data, head_requests=0, max_responses=None, eof=True, need_complete=False):
    """Split data into responses. head_requests: how many leading responses answer HEAD.
    Returns (list of Resp, leftover bytes, last_complete)."""
    out = []
    i = 0
    complete = True
    while i < len(data) and (max_responses is None or len(out) < max_responses):
        j = data.find(b"\r\n\r\n", i)
        if j < 0:
            complete = False
            break
        status, reason, hs, version = _parse_head(data[i:j])
        i = j + 4
        r = Resp(status, reason, hs, b"", version)
        no_body = status < 200 or status in (204, 304) or len([x for x in out if x.status >= 200]) < head_requests
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        if no_body:
            pass
        elif "chunked" in te:
            d = _dechunk(data[i:])
            if d is None:
                complete = False
                r.body = data[i:]
                out.append(r)
                i = len(data)
                break
            r.body, used = d
            i += used
        elif cl is not None and cl.strip().isdigit():
            n = int(cl)
            if len(data) - i < n:
                complete = False
                r.body = data[i:]
                out.append(r)
                i = len(data)
                break
            r.body = data[i:i + n]
            i += n
        else:
            r.body = data[i:]
            i = len(data)
            complete = eof
        out.append(r)
    if need_complete and not out:
        complete = False
    return out, data[i:], complete


# ---------------------------------------------------------------------------------------
# Prometheus text


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {label: value}, float)] from Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(3) or "")}
        try:
            val = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, val))
    return out


def metric_sum(samples, name, **want):
    """Sum of samples called name whose labels match want (value str: equal; callable: test)."""
    tot = 0.0
    for n, labels, v in samples:
        if n != name:
            continue
        ok = True
        for k, w in want.items():
            lv = labels.get(k)
            if callable(w):
                if lv is None or not w(lv):
                    ok = False
                    break
            elif lv != w:
                ok = False
                break
        if ok:
            tot += v
    return tot


def metric_names(samples):
    return {n for n, _, _ in samples}


# ---------------------------------------------------------------------------------------
# the rivet process


class Rivet:
    """A running `rivet run` process. Stopped (SIGTERM, by PID) by the fixture."""

    def __init__(self, cfg, workdir, admin_port=None, workers=2, log_level="info", args=None,
                 env=None, dir_=None, admin=True, nofile_soft=None):
        """nofile_soft: start rivet with this soft RLIMIT_NOFILE (through sh's ulimit, which
        then execs rivet: same PID), the test process's own limit untouched."""
        self.cfg = cfg
        self.dir = str(dir_ or cfg.root)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.admin_port = admin_port or free_port()
        self.admin_host = "127.0.0.1"
        argv = [rivet_bin(), "run", "--dir", self.dir]
        if admin:
            argv += ["--admin", "127.0.0.1:%d" % self.admin_port]
        if workers is not None:
            argv += ["--workers", str(workers)]
        if log_level is not None:
            argv += ["--log-level", log_level]
        argv += list(args or [])
        self.argv = argv
        if nofile_soft is not None:
            argv = ["/bin/sh", "-c", 'ulimit -S -n %d && exec "$@"' % int(nofile_soft), "sh"] + argv
        n = len(list(self.workdir.glob("rivet-*.stdout")))
        self.stdout_path = self.workdir / ("rivet-%d.stdout" % n)
        self.stderr_path = self.workdir / ("rivet-%d.stderr" % n)
        e = dict(os.environ)
        if env:
            e.update(env)
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     env=e, cwd=str(self.workdir), start_new_session=True)
        self.pid = self.proc.pid
        self.returncode = None

    # -- process -----------------------------------------------------------------------
    @property
    def port(self):
        ports = list(self.cfg.gateway_ports.values()) if self.cfg else []
        if not ports:
            raise AssertionError("config has no Gateway")
        return ports[0]

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stdout(self):
        try:
            return self.stdout_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout=None, gateway_ports=True):
        timeout = timeout or (30.0 if is_asan_build() else 10.0)
        timeout *= timeout_scale()
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if not self.alive():
                raise AssertionError("rivet exited with %s before /ready answered 200\nargv: %s\n"
                                     "--- stderr ---\n%s" % (self.proc.returncode, " ".join(self.argv),
                                                             self.stderr()[-4000:]))
            try:
                c = http.client.HTTPConnection(self.admin_host, self.admin_port, timeout=2)
                c.request("GET", "/ready")
                r = c.getresponse()
                r.read()
                c.close()
                last = r.status
                if r.status == 200:
                    break
            except OSError as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError("rivet: /ready did not answer 200 within %.0fs (last: %r)\n"
                                     "--- stderr ---\n%s" % (timeout, last, self.stderr()[-4000:]))
            time.sleep(0.05)
        if gateway_ports and self.cfg:
            for p in self.cfg.gateway_ports.values():
                wait_for(lambda p=p: can_connect(p), timeout=max(1.0, deadline - time.monotonic()),
                         msg="gateway port %d to accept" % p)
        return self

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=15.0):
        """Wait for the process to exit (timeout scaled as wait_for's); its return code, or
        None when it is still running."""
        try:
            self.returncode = self.proc.wait(timeout * timeout_scale())
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=10.0):
        """SIGTERM, wait (timeout scaled as wait_for's), SIGKILL when needed. Returns
        (returncode, killed)."""
        killed = False
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout * timeout_scale())
            except subprocess.TimeoutExpired:
                killed = True
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass
        return self.returncode, killed

    def sanitizer_report(self):
        err = self.stderr()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer"):
            i = err.find(marker)
            if i >= 0:
                return err[max(0, i - 200):i + 6000]
        return None

    # -- data path ---------------------------------------------------------------------
    def get(self, path="/", port=None, **kw):
        return request(port or self.port, path, **kw)

    def req(self, method, path="/", port=None, **kw):
        return request(port or self.port, path, method=method, **kw)

    def raw(self, data, port=None, **kw):
        return raw(port or self.port, data, **kw)

    def connect(self, port=None, timeout=15.0):
        return http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)

    # -- admin -------------------------------------------------------------------------
    def admin_get(self, path, timeout=10.0):
        return request(self.admin_port, path, host="127.0.0.1:%d" % self.admin_port, timeout=timeout)

    def status(self):
        """The resources list of /status."""
        r = self.admin_get("/status")
        assert r.status == 200, r
        doc = json.loads(r.body)
        assert isinstance(doc, dict) and isinstance(doc.get("resources"), list), doc
        return doc["resources"]

    def resource_status(self, kind, name, ns=NS):
        for res in self.status():
            if res.get("kind") == kind and res.get("name") == name and res.get("namespace") == ns:
                return res
        return None

    def wait_status(self, kind, name, state, ns=NS, timeout=5.0):
        def check():
            s = self.resource_status(kind, name, ns)
            return s if s and s.get("state") == state else None
        return wait_for(check, timeout, msg="%s %s/%s to be %s (status now %r)" % (
            kind, ns, name, state, self._safe_status()))

    def _safe_status(self):
        try:
            return self.status()
        except Exception as e:  # noqa: BLE001
            return e

    def metrics(self):
        r = self.admin_get("/metrics")
        assert r.status == 200, r
        return parse_metrics(r.text)

    def config_dump(self):
        r = self.admin_get("/config_dump")
        assert r.status == 200, r
        return json.loads(r.body)

    def rss_kib(self, field="VmRSS"):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError("no %s in /proc/%d/status" % (field, self.pid))

    def wait_body(self, path, want, timeout=5.0, **kw):
        """Poll the data path until path answers body want (str/bytes) or want(resp) is true."""
        def check():
            r = self.get(path, timeout=5, **kw)
            if callable(want):
                return r if want(r) else None
            w = want.encode() if isinstance(want, str) else want
            return r if r.body == w else None
        return wait_for(check, timeout, msg="GET %s -> %r" % (path, want))


def run_cli(*args, timeout=30, env=None):
    """Run the rivet binary with args; returns CompletedProcess (text). A sanitizer report on
    its stderr fails the test (UBSan reports and goes on: the command's result alone would
    not show it), as the rivet fixture does for `rivet run`."""
    e = dict(os.environ)
    if env:
        e.update(env)
    r = subprocess.run([rivet_bin()] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout * timeout_scale(), env=e, stdin=subprocess.DEVNULL)
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        i = (r.stderr or "").find(marker)
        if i >= 0:
            raise AssertionError("rivet %s: sanitizer report:\n%s" % (
                " ".join(str(a) for a in args), r.stderr[max(0, i - 200):i + 3000]))
    return r


# ---------------------------------------------------------------------------------------
# access log


def log_lines_with(text, *tokens):
    """Lines of text that contain every token as a whole word (status codes, response flags)."""
    out = []
    for line in text.splitlines():
        if all(re.search(r"(?<![A-Za-z0-9])%s(?![A-Za-z0-9])" % re.escape(t), line) for t in tokens):
            out.append(line)
    return out


# ---------------------------------------------------------------------------------------
# Consul KV (tests/integ/test_consul_kv.py, test_cli_apply.py): the in-process double, or a
# live Consul when CONSUL_HTTP_ADDR is set; keys under a per-test root key.

KV_GROUPS = {
    "gateways": "gateway.solo.io/v1/Gateway",
    "virtualservices": "gateway.solo.io/v1/VirtualService",
    "routetables": "gateway.solo.io/v1/RouteTable",
    "upstreams": "gloo.solo.io/v1/Upstream",
    "upstreamgroups": "gloo.solo.io/v1/UpstreamGroup",
}


class LiveConsul:
    """The few calls the tests make, against a real Consul (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN)."""

    live = True

    def __init__(self, addr):
        self.addr = addr.split("://", 1)[-1].rstrip("/")
        self.token = os.environ.get("CONSUL_HTTP_TOKEN", "")

    def _req(self, method, path, body=None):
        host, port = self.addr.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        hdrs = {"X-Consul-Token": self.token} if self.token else {}
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def kv_put(self, key, value):
        if isinstance(value, str):
            value = value.encode()
        st, _ = self._req("PUT", "/v1/kv/" + key, value)
        assert st == 200, st

    def kv_get(self, key):
        st, data = self._req("GET", "/v1/kv/" + key)
        if st == 404:
            return None
        import base64
        e = json.loads(data)[0]
        return {"Key": e["Key"], "Value": base64.b64decode(e["Value"] or ""), "ModifyIndex": e["ModifyIndex"]}

    def kv_delete(self, key, recurse=False):
        self._req("DELETE", "/v1/kv/" + key + ("?recurse" if recurse else ""))


class KVConfig(ConfigDir):
    """A ConfigDir whose resources go to Consul KV under root (Gloo's layout, stored form).
    The directory itself stays empty apart from an optional Settings file."""

    def __init__(self, root, consul, root_key):
        super().__init__(root)
        self.consul = consul
        self.root_key = root_key

    def key(self, plural, name, ns=NS):
        return "%s/%s/%s/%s" % (self.root_key, KV_GROUPS[plural], ns, name)

    def write(self, plural, name, body, ns=NS, kube=False, labels=None):
        if isinstance(body, str):
            self.consul.kv_put(self.key(plural, name, ns), body)
            return
        meta = {"name": name, "namespace": ns}
        if labels:
            meta["labels"] = labels
        doc = {"metadata": meta}
        doc.update(body)
        self.consul.kv_put(self.key(plural, name, ns), to_yaml(doc))

    def remove(self, plural, name, ns=NS):
        self.consul.kv_delete(self.key(plural, name, ns))

    def settings(self, text):
        atomic_write(self.root / NS / "default.yaml", text)


def make_cert(tmp_path, stem, name):
    """A self-signed certificate for `name` (CN and the only subjectAltName DNS entry), so it is
    its own CA: returns (cert path, key path) under tmp_path, files stem.crt / stem.key."""
    cert, key = str(tmp_path / (stem + ".crt")), str(tmp_path / (stem + ".key"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=" + name, "-addext", "subjectAltName=DNS:" + name,
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class TLSProxy:
    """TLS in front of a plain-HTTP double (loopback): terminates TLS with a certificate valid
    only for `name`, records the SNI each client sent, and pipes the bytes to 127.0.0.1:target_port.

    client_ca: a CA file; clients must then present a certificate it signed (mTLS), and the
    subject CN of each verified client certificate is recorded in `client_cns`. `handshakes`
    counts completed handshakes, `failed` the handshakes that failed (with their errors in
    `errors`). stop() closes the listener and every piped connection."""

    def __init__(self, tmp_path, name, target_port, client_ca=None, stem="consul"):
        import threading
        self.cert, self.key = make_cert(tmp_path, stem, name)
        self.snis, self.client_cns, self.errors = [], [], []
        self.handshakes = self.failed = 0
        self.client_ca = client_ca
        self.set_identity(self.cert, self.key)
        self.target = target_port
        self.lock = threading.Lock()
        self.socks = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set_identity(self, cert, key):
        """Present this certificate to new connections from now on (see drop_connections)."""
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if self.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.client_ca)
        ctx.sni_callback = lambda sock, sni, c: self.snis.append(sni) and None
        self.ctx = ctx

    def _track(self, s):
        with self.lock:
            if self.done:
                s.close()
                return False
            self.socks.append(s)
            return True

    def _accept(self):
        import threading
        while not self.done:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self._track(c):
                threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        import threading
        c.settimeout(10)
        try:
            t = self.ctx.wrap_socket(c, server_side=True)
        except OSError as e:
            with self.lock:
                self.failed += 1
                self.errors.append(repr(e)[:200])
            c.close()
            return
        t.settimeout(None)
        with self.lock:
            self.handshakes += 1
            peer = t.getpeercert()
            if peer:
                self.client_cns.extend(v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName")
        try:
            u = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            t.close()
            return
        if not (self._track(t) and self._track(u)):
            t.close()
            u.close()
            return
        threading.Thread(target=self._pipe, args=(t, u), daemon=True).start()
        threading.Thread(target=self._pipe, args=(u, t), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except (OSError, ValueError):  # ValueError: the other side closed an SSL socket
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def drop_connections(self):
        """Close every connection piped so far (clients must reconnect and handshake again)."""
        with self.lock:
            socks, self.socks = self.socks, []
        self._close(socks)

    def stop(self):
        with self.lock:
            self.done = True
            socks, self.socks = self.socks, []
        self.lsock.close()
        self._close(socks)

    @staticmethod
    def _close(socks):
        for s in socks:
            try:  # the plain socket's shutdown(2), also for SSL sockets: wakes their pipe threads
                socket.socket.shutdown(s, socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
