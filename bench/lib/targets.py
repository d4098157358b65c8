"""targets.py - start, check and stop the benchmark's servers, each by its own PID.

Every server gets its own config rendered from bench/conf/ into a directory under the run's
temp dir, listens on 127.0.0.1 on a port picked free at start, and is pinned with taskset.
Nothing here touches a system service. stop_all() ends, by PID, every process started here.
"""
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import measure

HERE = os.path.dirname(os.path.abspath(__file__))
CONF = os.path.join(os.path.dirname(HERE), "conf")
FLOOR_SRC = os.path.join(os.path.dirname(HERE), "floor", "relay.c")
BODY_13 = b"hello, world\n"
BODY_16K = 16384

_started = []      # Proc objects, in start order
_ports = set()


def free_port():
    """A TCP port on 127.0.0.1 that is free now (and not handed out before in this run)."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _ports:
            _ports.add(port)
            return port
    raise RuntimeError("no free port")


def render(template, dest, **vals):
    with open(os.path.join(CONF, template)) as f:
        text = f.read()
    for k, v in vals.items():
        text = text.replace(f"@{k}@", str(v))
    for line in text.splitlines():
        if re.search(r"@[A-Z_]+@", line) and not line.lstrip().startswith("#"):
            raise RuntimeError(f"{template}: unfilled placeholder in {line!r}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def nginx_proc(name, d, conf, cpu):
    """An nginx master in the foreground with its prefix, error log and config in d."""
    return Proc(name, ["nginx", "-e", os.path.join(d, "error.log"), "-p", d, "-c", conf], d, cpu=cpu)


class Proc:
    """One started process, stopped by its PID (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self, name, cmd, logdir, cpu=None, env=None):
        self.name = name
        os.makedirs(logdir, exist_ok=True)
        self.log = os.path.join(logdir, f"{name}.log")
        full = (["taskset", "-c", str(cpu)] if cpu is not None else []) + cmd
        self.cmd = full
        self.logf = open(self.log, "ab")
        self.p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = self.p.pid
        self.children_seen = set()
        _started.append(self)

    def tree(self):
        if self.p.poll() is not None:
            return []
        t = measure.process_tree(self.pid)
        self.children_seen.update(t)
        return t

    def alive(self):
        return self.p.poll() is None

    def log_tail(self, n=15):
        try:
            with open(self.log, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def stop(self, grace=5.0):
        if self.p.poll() is None:
            self.tree()  # remember the workers, to check they are gone too
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(timeout=5)
        # a worker that outlived its master (should not happen) is ended by its own PID
        for pid in sorted(self.children_seen - {self.pid}):
            if measure.alive(pid) and measure._stat_fields(pid) is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.children_seen.clear()
        if not self.logf.closed:
            self.logf.close()
        if self in _started:
            _started.remove(self)


def all_pids():
    """Every live process started here, with its children."""
    out = []
    for p in _started:
        out += p.tree()
    return out


def stop_all():
    for p in reversed(list(_started)):
        try:
            p.stop()
        except Exception as e:  # keep stopping the others
            print(f"bench: stopping {p.name} (pid {p.pid}): {e}", flush=True)


def http_get(port, path="/", host=None, timeout=2.0):
    """(status, body) of one GET on 127.0.0.1:port, or (None, error text)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path, headers={"Host": host} if host else {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)


def wait_http(port, path="/", want_status=200, want_body=None, timeout=10.0, proc=None, host=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            return False, f"exited with code {proc.p.returncode}"
        st, body = http_get(port, path, host=host, timeout=1.0)
        if st == want_status and (want_body is None or body == want_body):
            return True, ""
        last = (st, body[:80] if isinstance(body, bytes) else body)
        time.sleep(0.05)
    return False, f"not ready after {timeout:.0f}s (last answer: {last})"


# ---------------------------------------------------------------------------------------------
class Target:
    """A thing wrk can be pointed at. proxy_pids(): the processes charged for CPU and memory."""
    name = "?"
    port = 0
    host = None        # Host header to send, if any
    proc = None

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def proxy_pids(self):
        return self.proc.tree() if self.proc else []

    def start(self):
        pass

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def check(self, timeout=10.0):
        ok, why = wait_http(self.port, "/", 200, BODY_13, timeout, self.proc)
        if ok:
            ok, why = wait_http(self.port, "/16k", 200, None, timeout, self.proc)
            if ok:
                st, body = http_get(self.port, "/16k")
                if len(body) != BODY_16K:
                    ok, why = False, f"/16k answered {len(body)} bytes"
        return ok, why


class Origin(Target):
    name = "origin"

    def __init__(self, tmp, cpu):
        self.dir = os.path.join(tmp, "origin")
        self.cpu = cpu
        self.port = free_port()

    def start(self):
        for d in ("www", "tmp"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        with open(os.path.join(self.dir, "www", "16k"), "wb") as f:
            f.write((b"x" * 63 + b"\n") * (BODY_16K // 64))
        os.chmod(os.path.join(self.dir, "www", "16k"), 0o644)
        conf = render("origin-nginx.conf", os.path.join(self.dir, "nginx.conf"),
                      DIR=self.dir, PORT=self.port)
        self.proc = nginx_proc("origin-nginx", self.dir, conf, self.cpu)


TLS_ORIGIN_PORTS = set()     # origins answering over TLS (scenario upstream-tls)


def origin_accepts(port):
    """Connections the origin accepted so far (nginx stub_status), minus this query's own."""
    get = https_get if port in TLS_ORIGIN_PORTS else http_get
    st, body = get(port, "/_origin_status", timeout=2.0)
    if st != 200:
        return None
    m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)", body)
    return int(m.group(1)) - 1 if m else None


class Direct(Target):
    """wrk straight to the origin: the ceiling of this box (origin and wrk share one CPU)."""
    name = "direct"

    def __init__(self, origin):
        self.origin = origin
        self.port = origin.port

    def proxy_pids(self):
        return []

    def check(self, timeout=10.0):
        return Target.check(self, timeout)


class NginxProxy(Target):
    """nginx as a reverse proxy; variants change the template, the process name and the
    template values (conf_vals)."""
    name = "nginx"
    template, proc_name = "proxy-nginx.conf", "nginx-proxy"

    def __init__(self, tmp, cpu, origin_port, tag="nginx-proxy"):
        self.dir = os.path.join(tmp, tag)
        self.cpu, self.origin_port = cpu, origin_port
        self.port = free_port()

    def conf_vals(self):
        return {}

    def start(self):
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        mask = "1" + "0" * self.cpu
        conf = render(self.template, os.path.join(self.dir, "nginx.conf"), DIR=self.dir,
                      PORT=self.port, ORIGIN_PORT=self.origin_port, CPUMASK=mask, **self.conf_vals())
        self.proc = nginx_proc(self.proc_name, self.dir, conf, self.cpu)


class HAProxy(Target):
    """HAProxy in http mode; variants change the template, the process name and the template
    values (conf_vals)."""
    name = "haproxy"
    template, proc_name = "haproxy.cfg", "haproxy"

    def __init__(self, tmp, cpu, origin_port, tag="haproxy"):
        self.dir = os.path.join(tmp, tag)
        self.cpu, self.origin_port = cpu, origin_port
        self.port = free_port()

    def conf_vals(self):
        return {}

    def start(self):
        conf = render(self.template, os.path.join(self.dir, "haproxy.cfg"), DIR=self.dir,
                      PORT=self.port, ORIGIN_PORT=self.origin_port, **self.conf_vals())
        self.proc = Proc(self.proc_name, ["haproxy", "-db", "-f", conf], self.dir, cpu=self.cpu)


class Rivet(Target):
    """build/rivet on a Gloo config dir: gateway + static upstream + a VirtualService."""
    name = "rivet"

    def __init__(self, tmp, cpu, origin_port, binary, tag="rivet", log_level="warn"):
        self.dir = os.path.join(tmp, tag)
        self.cfg = os.path.join(self.dir, "config")
        self.cpu, self.origin_port, self.binary = cpu, origin_port, binary
        self.log_level = log_level
        self.port = free_port()
        self.admin_port = free_port()
        self.custom = False     # True once write_base() was called by the caller

    def write_base(self, vs_template="rivet/vs.yaml", gw_template="rivet/gw.yaml",
                   origin_template="rivet/origin.yaml", **vals):
        self.custom = True
        gs = os.path.join(self.cfg, "{}", "gloo-system")
        render(gw_template, os.path.join(gs.format("gateways"), "gw.yaml"), PORT=self.port)
        render(origin_template, os.path.join(gs.format("upstreams"), "origin.yaml"),
               ORIGIN_PORT=self.origin_port, **vals)
        if vs_template:
            render(vs_template, os.path.join(gs.format("virtualservices"), "vs.yaml"), **vals)

    def vs_dir(self):
        return os.path.join(self.cfg, "virtualservices", "gloo-system")

    def start(self):
        if not self.custom:
            self.write_base()
        self.proc = Proc(self.name, [self.binary, "run", "--dir", self.cfg,
                                     "--admin", f"127.0.0.1:{self.admin_port}", "--workers", "1",
                                     "--access-log", "off", "--log-level", self.log_level,
                                     "--drain-timeout", "1"],
                         self.dir, cpu=self.cpu)

    def ready(self, timeout=10.0):
        return wait_http(self.admin_port, "/ready", 200, None, timeout, self.proc)

    def check(self, timeout=10.0):
        ok, why = self.ready(timeout)
        if not ok:
            return False, "admin /ready: " + why
        return Target.check(self, timeout)


def build_floor(d):
    """Compile bench/floor/relay.c with `cc -O2` into d: (binary, compiler version) or
    (None, the reason it could not be built)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc or gcc) to build bench/floor/relay.c"
    if not os.path.isfile(FLOOR_SRC):
        return None, f"{FLOOR_SRC} is missing"
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, "relay")
    try:
        r = subprocess.run([cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-o", out, FLOOR_SRC],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{cc} -O2 bench/floor/relay.c: {e}"
    if r.returncode != 0 or not os.access(out, os.X_OK):
        err = (r.stderr or r.stdout).strip().splitlines()
        err = [l for l in err if "error" in l] or err      # the first error, not its context line
        return None, f"{cc} -O2 bench/floor/relay.c failed: " + (err[0] if err else f"exit {r.returncode}")
    try:
        ver = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        ver = ""
    return out, (ver.splitlines() or [os.path.basename(cc)])[0]


class Floor(Target):
    """bench/floor/relay.c: a plain TCP relay (one origin connection per client connection, no
    HTTP work), the floor of CPU per request for a proxy's wire pattern on this machine."""
    name = "floor"

    def __init__(self, tmp, cpu, origin_port, binary, tag="floor"):
        self.dir = os.path.join(tmp, tag)
        self.cpu, self.origin_port, self.binary = cpu, origin_port, binary
        self.port = free_port()

    def start(self):
        self.proc = Proc("floor-relay", [self.binary, str(self.port), str(self.origin_port)],
                         self.dir, cpu=self.cpu)


# ---------------------------------------------------------------------------------------------
# TLS scenarios (https, tls-handshake): the proxies terminate TLS in front of the same origin


class Pki:
    """The benchmark's server certificate: ECDSA P-256, self-signed, for bench.test and
    127.0.0.1 (wrk does not verify). Made with the openssl CLI in dir."""

    def __init__(self, d):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        self.cert = os.path.join(d, "cert.pem")
        self.key = os.path.join(d, "key.pem")
        self.pem = os.path.join(d, "cert+key.pem")     # HAProxy's form
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2",
                        "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        with open(self.pem, "w") as out:
            for f in (self.cert, self.key):
                with open(f) as src:
                    out.write(src.read())
        for f in (self.cert, self.key, self.pem):
            os.chmod(f, 0o644)      # nginx workers run as nobody


def https_get(port, path="/", timeout=2.0):
    """(status, body) of one GET over TLS on 127.0.0.1:port (certificate not checked), or
    (None, error text)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)


class TlsTarget:
    """Mixin: the target's url is https and its check speaks TLS."""

    def url(self, path="/"):
        return f"https://127.0.0.1:{self.port}{path}"

    def check(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and not self.proc.alive():
                return False, f"exited with code {self.proc.p.returncode}"
            st, body = https_get(self.port, "/", timeout=1.0)
            if st == 200 and body == BODY_13:
                return True, ""
            last = (st, body[:120] if isinstance(body, bytes) else body)
            time.sleep(0.05)
        return False, f"no TLS answer after {timeout:.0f}s (last: {last})"


class NginxTls(TlsTarget, NginxProxy):
    def __init__(self, tmp, cpu, origin_port, pki, tag="nginx-tls"):
        NginxProxy.__init__(self, tmp, cpu, origin_port, tag=tag)
        self.pki = pki

    template, proc_name = "proxy-nginx-tls.conf", "nginx-tls"

    def conf_vals(self):
        return {"CERT": self.pki.cert, "KEY": self.pki.key}


class HAProxyTls(TlsTarget, HAProxy):
    def __init__(self, tmp, cpu, origin_port, pki, tag="haproxy-tls"):
        HAProxy.__init__(self, tmp, cpu, origin_port, tag=tag)
        self.pki = pki

    template, proc_name = "haproxy-tls.cfg", "haproxy-tls"

    def conf_vals(self):
        return {"PEM": self.pki.pem}


class RivetTls(TlsTarget, Rivet):
    """rivet with a Gateway ssl: true and the VirtualService's sslConfig.sslFiles."""

    def __init__(self, tmp, cpu, origin_port, binary, pki, tag="rivet-tls"):
        Rivet.__init__(self, tmp, cpu, origin_port, binary, tag=tag)
        self.pki = pki

    def start(self):
        self.write_base(vs_template="rivet/vs-tls.yaml", gw_template="rivet/gw-tls.yaml",
                        CERT=self.pki.cert, KEY=self.pki.key)
        Rivet.start(self)

    def check(self, timeout=10.0):
        ok, why = self.ready(timeout)
        if not ok:
            return False, "admin /ready: " + why
        return TlsTarget.check(self, timeout)


# upstream-tls: plain HTTP clients, the proxies speak TLS to an origin that serves TLS


class OriginTls(Target):
    name = "origin-tls"

    def __init__(self, tmp, cpu, pki):
        self.dir = os.path.join(tmp, "origin-tls")
        self.cpu, self.pki = cpu, pki
        self.port = free_port()
        TLS_ORIGIN_PORTS.add(self.port)

    def start(self):
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        conf = render("origin-nginx-tls.conf", os.path.join(self.dir, "nginx.conf"), DIR=self.dir,
                      PORT=self.port, CERT=self.pki.cert, KEY=self.pki.key)
        self.proc = nginx_proc("origin-tls", self.dir, conf, self.cpu)

    def check(self, timeout=10.0):
        return TlsTarget.check(self, timeout)


class UpTlsCheck:
    """Mixin: plain front, TLS origin without /16k: check / only."""

    def check(self, timeout=10.0):
        if hasattr(self, "ready"):
            ok, why = self.ready(timeout)
            if not ok:
                return False, "admin /ready: " + why
        return wait_http(self.port, "/", 200, BODY_13, timeout, self.proc)


class NginxUpTls(UpTlsCheck, NginxProxy):
    def __init__(self, tmp, cpu, origin_port, pki, tag="nginx-up-tls"):
        NginxProxy.__init__(self, tmp, cpu, origin_port, tag=tag)
        self.pki = pki

    template, proc_name = "proxy-nginx-upstream-tls.conf", "nginx-up-tls"

    def conf_vals(self):
        return {"CERT": self.pki.cert}


class HAProxyUpTls(UpTlsCheck, HAProxy):
    def __init__(self, tmp, cpu, origin_port, pki, tag="haproxy-up-tls"):
        HAProxy.__init__(self, tmp, cpu, origin_port, tag=tag)
        self.pki = pki

    template, proc_name = "haproxy-upstream-tls.cfg", "haproxy-up-tls"

    def conf_vals(self):
        return {"CERT": self.pki.cert}


class RivetUpTls(UpTlsCheck, Rivet):
    """rivet with the origin as a TLS Upstream (useTls, rootCa = the bench certificate)."""

    def __init__(self, tmp, cpu, origin_port, binary, pki, tag="rivet-up-tls"):
        Rivet.__init__(self, tmp, cpu, origin_port, binary, tag=tag)
        self.pki = pki

    def start(self):
        self.write_base(origin_template="rivet/origin-tls.yaml", CERT=self.pki.cert)
        Rivet.start(self)


# ---------------------------------------------------------------------------------------------
# Consul scenarios (bench/lib/consul_kv.py, bench/lib/consul_scale.py)
ROOT = os.path.dirname(os.path.dirname(HERE))
CONSUL_DOUBLE = os.path.join(ROOT, "tests", "doubles", "consul.py")


class ConsulDoubleProc:
    """The project's Consul API double run as its own process (not imported: bench/ does not
    depend on tests/ code), on a free loopback port, pinned like the origin, stopped by PID."""
    name = "consul-double"

    def __init__(self, tmp, cpu, tag="consul-double"):
        self.dir = os.path.join(tmp, tag)
        self.cpu = cpu
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = Proc(self.name, ["/usr/bin/python3", CONSUL_DOUBLE, "--host", "127.0.0.1",
                                     "--port", str(self.port)], self.dir, cpu=self.cpu)

    def ready(self, timeout=10.0):
        return wait_http(self.port, "/v1/status/leader", 200, None, timeout, self.proc)

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


def consul_put(port, key, value, timeout=5.0):
    """PUT /v1/kv/KEY on the Consul at 127.0.0.1:port over a new connection (as `consul kv
    put` does); True when Consul answered true."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("PUT", "/v1/kv/" + key, body=value if isinstance(value, bytes) else value.encode())
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status == 200 and body.strip() == b"true"
    except (OSError, http.client.HTTPException):
        return False


def consul_env(addr):
    """The environment for a rivet talking to the benchmark's Consul: CONSUL_HTTP_ADDR set, and
    none of the caller's other CONSUL_* settings (a token or TLS setting does not apply here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_ADDR"] = addr
    return env


class RivetConsul(Rivet):
    """rivet run --consul ADDR (no --dir): the whole config from Consul KV."""

    def __init__(self, tmp, cpu, origin_port, binary, consul_addr, tag="rivet-consul",
                 log_level="warn"):
        super().__init__(tmp, cpu, origin_port, binary, tag=tag, log_level=log_level)
        self.consul_addr = consul_addr

    def start(self):
        self.proc = Proc(self.name, [self.binary, "run", "--consul", self.consul_addr,
                                     "--admin", f"127.0.0.1:{self.admin_port}", "--workers", "1",
                                     "--access-log", "off", "--log-level", self.log_level,
                                     "--drain-timeout", "1"],
                         self.dir, cpu=self.cpu, env=consul_env(self.consul_addr))


class RivetDiscovery(Rivet):
    """rivet run --dir CFG --consul-discovery with CONSUL_HTTP_ADDR pointing at the catalog."""

    def __init__(self, tmp, cpu, origin_port, binary, consul_addr, tag="rivet-discovery",
                 log_level="warn"):
        super().__init__(tmp, cpu, origin_port, binary, tag=tag, log_level=log_level)
        self.consul_addr = consul_addr

    def start(self):
        self.proc = Proc(self.name, [self.binary, "run", "--dir", self.cfg, "--consul-discovery",
                                     "--admin", f"127.0.0.1:{self.admin_port}", "--workers", "1",
                                     "--access-log", "off", "--log-level", self.log_level,
                                     "--drain-timeout", "1"],
                         self.dir, cpu=self.cpu, env=consul_env(self.consul_addr))
