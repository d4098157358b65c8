"""A real TLS upstream for the integration tests: certificates made with the openssl CLI and
nginx (Debian's nginx-light has ssl) serving several TLS ports from one config.

    pki = Pki(dir)                      CA, server certificates (good, self-signed, wrong name),
                                        a client certificate for mTLS
    srv = TlsNginx(dir, pki).start()    srv.ports["good"|"selfsigned"|"wrongname"|"mtls"]
    srv.stop()                          SIGTERM by PID (SIGKILL after 5 s)

Every location answers "sni=<$ssl_server_name> reused=<$ssl_session_reused> conn=<$connection>
proto=<$ssl_protocol> client=<$ssl_client_s_dn>"; /new also closes the connection after the
response (keepalive_timeout 0), so every request to it is a new upstream connection. /big
is a 3 MiB file (srv.BIG bytes, srv.big_bytes()); /upload answers "len=<Content-Length>" after
reading the body.
"""
import os
import signal
import subprocess
import time

from harness import can_connect, free_port, port_is_free, timeout_scale

NGINX = "/usr/sbin/nginx"


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


class Pki:
    """Keys and certificates in dir (EC P-256, one hour validity is not possible with `req
    -x509 -days`, so one day)."""

    def __init__(self, d):
        self.dir = str(d)
        os.makedirs(self.dir, exist_ok=True)
        self._ca()
        self.good = self._leaf("good", "up.test", "DNS:up.test,DNS:localhost,IP:127.0.0.1")
        self.wrong = self._leaf("wrong", "other.test", "DNS:other.test")
        self.client = self._leaf("client", "rivet-client", None, client=True)
        self.selfsigned = self._self("selfsigned", "up.test", "DNS:up.test,DNS:localhost,IP:127.0.0.1")

    def p(self, name):
        return os.path.join(self.dir, name)

    def _ca(self):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=rivet test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        self.ca = self.p("ca.crt")

    def _leaf(self, name, cn, san, client=False):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=self.dir)
        ext = name + ".ext"
        with open(self.p(ext), "w") as f:
            f.write("basicConstraints=CA:FALSE\n")
            f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
            if san:
                f.write("subjectAltName=%s\n" % san)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", name + ".crt", "-days", "1", "-extfile", ext, cwd=self.dir)
        return (self.p(name + ".crt"), self.p(name + ".key"))

    def _self(self, name, cn, san):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", name + ".key", "-out", name + ".crt", "-days", "1", "-subj", "/CN=" + cn,
                 "-addext", "subjectAltName=" + san, cwd=self.dir)
        return (self.p(name + ".crt"), self.p(name + ".key"))


_ECHO = ('return 200 "sni=$ssl_server_name reused=$ssl_session_reused conn=$connection '
         'proto=$ssl_protocol client=$ssl_client_s_dn\\n";')


class TlsNginx:
    """One nginx process (master_process off: no user switch, one PID to stop)."""

    def __init__(self, d, pki):
        self.dir = str(d)
        self.pki = pki
        self.ports = {k: free_port() for k in ("good", "selfsigned", "wrongname", "mtls")}
        self.proc = None

    def _server(self, port, cert, extra=""):
        # also on [::1] when it can be bound: an Upstream addressed as `localhost` goes to
        # every address the name resolves to, ::1 too on many machines (Debian's and Docker's
        # /etc/hosts); the certificates name localhost, so either address verifies
        v6 = "listen [::1]:%d ssl;" % port if port_is_free(port, "::1") else ""
        return """
    server {
        listen 127.0.0.1:%d ssl;
        %s
        ssl_certificate %s;
        ssl_certificate_key %s;
        %s
        location = /new { keepalive_timeout 0; %s }
        location = /big { root %s/www; }
        location = /upload { client_max_body_size 64m; return 200 "len=$content_length\n"; }
        location / { %s }
    }""" % (port, v6, cert[0], cert[1], extra, _ECHO, self.dir, _ECHO)

    BIG = 3 * 1024 * 1024 + 7      # /big: a file larger than rivet's 64 KiB buffer, odd size

    def start(self):
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "www"), exist_ok=True)
        with open(os.path.join(self.dir, "www", "big"), "wb") as f:
            f.write(bytes((i * 7 + i // 251) & 0xff for i in range(self.BIG)))
        servers = "".join([
            self._server(self.ports["good"], self.pki.good),
            self._server(self.ports["selfsigned"], self.pki.selfsigned),
            self._server(self.ports["wrongname"], self.pki.wrong),
            self._server(self.ports["mtls"], self.pki.good,
                         "ssl_verify_client on; ssl_client_certificate %s;" % self.pki.ca),
        ])
        conf = """daemon off;
master_process off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type text/plain;
    keepalive_timeout 60s;
    ssl_session_cache shared:up:1m;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
%(servers)s
}
""" % {"d": self.dir, "servers": servers}
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen([NGINX, "-e", os.path.join(self.dir, "error.log"), "-p", self.dir,
                                      "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10 * timeout_scale()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: %s" % self.proc.stderr.read().decode(errors="replace"))
            if all(can_connect(p) for p in self.ports.values()):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not listen in time")

    def big_bytes(self):
        with open(os.path.join(self.dir, "www", "big"), "rb") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
