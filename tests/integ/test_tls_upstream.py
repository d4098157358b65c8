"""Upstream TLS against a real TLS server (nginx from Debian, certificates from the openssl CLI):
verification against rootCa, refused certificates (self-signed, wrong name, unknown CA) as 503
UF with the reason in the access log and /metrics, SNI (sslConfig.sni, autoSniRewrite,
sniAddr), mTLS, session resumption across new upstream connections, keep-alive reuse of pooled
TLS connections, Gloo's automatic useTls for port 443 (seen in /config_dump), and an Upstream
whose file cannot be read refused by name.

rivet runs one worker in the tests that count connections or sessions: pools and the session
cache are per worker, so with one worker what a request finds is determined.
"""
import hashlib
import os
import shutil
import socket
import threading

import pytest

from harness import log_lines_with, metric_sum, route, wait_for
from tls_upstream_server import Pki, TlsNginx

pytestmark = pytest.mark.skipif(not shutil.which("openssl") or not os.path.exists("/usr/sbin/nginx"),
                                reason="needs the openssl CLI and nginx (scripts/deps.sh installs them)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    srv = TlsNginx(tmp_path_factory.mktemp("nginx-tls"), pki).start()
    yield srv
    srv.stop()


def tls_upstream(cfg, name, port, addr="127.0.0.1", ssl=None, host_extra=None, **static_extra):
    host = {"addr": addr, "port": port}
    host.update(host_extra or {})
    body = {"static": dict({"hosts": [host]}, **static_extra)}
    if ssl is not None:
        body["sslConfig"] = ssl
    cfg.write("upstreams", name, body)


def files(pki, cert=None, ca=True):
    f = {}
    if cert:
        f["tlsCert"], f["tlsKey"] = cert
    if ca:
        f["rootCa"] = pki.ca
    return {"sslFiles": f}


def gateway_vs(cfg, routes):
    port = cfg.gateway()
    cfg.vs("vs", [route(prefix=p, upstream=u) for p, u in routes])
    return port


def body_fields(resp):
    return dict(kv.split("=", 1) for kv in resp.text.split() if "=" in kv)


def test_verified_with_root_ca_and_sni(cfg, rivet, pki, tls_server):
    tls_upstream(cfg, "up", tls_server.ports["good"], ssl=dict(files(pki), sni="up.test"))
    gateway_vs(cfg, [("/", "up")])
    rv = rivet(cfg)
    r = rv.get("/x")
    assert r.status == 200, (r, rv.stdout()[-2000:])
    f = body_fields(r)
    assert f["sni"] == "up.test", r.text             # sslConfig.sni sent
    assert f["proto"].startswith("TLSv1."), r.text
    dump = rv.config_dump()
    c = [c for c in dump["clusters"] if c["name"] == "gloo-system.up"][0]
    assert c["tls"]["trust"] == "rootCa" and c["tls"]["sni"] == "up.test", c
    assert "BEGIN" not in str(dump) and "PRIVATE" not in str(dump)
    m = rv.metrics()
    assert metric_sum(m, "rivet_upstream_tls_handshakes_total", upstream="gloo-system.up") >= 1


def test_auto_sni_rewrite_and_sni_addr(cfg, rivet, pki, tls_server):
    # autoSniRewrite (default): SNI is the host's name; sniAddr overrides per host
    tls_upstream(cfg, "byname", tls_server.ports["good"], addr="localhost", ssl=files(pki))
    tls_upstream(cfg, "pinned", tls_server.ports["good"], ssl=files(pki), host_extra={"sniAddr": "up.test"})
    tls_upstream(cfg, "nosni", tls_server.ports["good"], addr="localhost", ssl=files(pki), autoSniRewrite=False)
    gateway_vs(cfg, [("/byname", "byname"), ("/pinned", "pinned"), ("/nosni", "nosni")])
    rv = rivet(cfg)
    r = rv.get("/byname")
    assert r.status == 200 and body_fields(r)["sni"] == "localhost", r
    r = rv.get("/pinned")
    assert r.status == 200 and body_fields(r)["sni"] == "up.test", r
    r = rv.get("/nosni")
    # no SNI sent; the certificate is still checked against the host's name (localhost is in it)
    assert r.status == 200 and body_fields(r)["sni"] == "", r


@pytest.mark.parametrize("which,ssl_extra,reason", [
    ("selfsigned", {}, "certificate verify failed: self-signed certificate"),
    ("wrongname", {"sni": "up.test"}, "certificate verify failed: hostname mismatch"),
    ("good", {"sni": "up.test", "sslFiles": None}, "certificate verify failed: unable to get local issuer"),
])
def test_bad_certificate_refused(cfg, rivet, pki, tls_server, which, ssl_extra, reason):
    ssl = dict(files(pki))
    ssl.update(ssl_extra)
    if ssl.get("sslFiles", 1) is None:      # no rootCa: the system store, which lacks our CA
        del ssl["sslFiles"]
    tls_upstream(cfg, "bad", tls_server.ports[which], ssl=ssl)
    gateway_vs(cfg, [("/", "bad")])
    rv = rivet(cfg)
    r = rv.get("/y")
    assert r.status == 503, r
    assert "TLS error: " + reason in r.text, r.text
    line = wait_for(lambda: log_lines_with(rv.stdout(), "/y", "503"), msg="access log line")
    assert " UF " in line[0] and ('"%s' % reason) in line[0], line
    m = rv.metrics()
    assert metric_sum(m, "rivet_upstream_tls_handshake_failures_total", upstream="gloo-system.bad") >= 1, m


def test_verify_subject_alt_name(cfg, rivet, pki, tls_server):
    tls_upstream(cfg, "ok", tls_server.ports["good"], ssl=dict(files(pki), verifySubjectAltName=["up.test"]))
    tls_upstream(cfg, "no", tls_server.ports["good"], ssl=dict(files(pki), verifySubjectAltName=["else.test"]))
    gateway_vs(cfg, [("/ok", "ok"), ("/no", "no")])
    rv = rivet(cfg)
    assert rv.get("/ok").status == 200
    r = rv.get("/no")
    assert r.status == 503 and "hostname mismatch" in r.text, r


def test_mtls(cfg, rivet, pki, tls_server):
    port = tls_server.ports["mtls"]
    tls_upstream(cfg, "mtls", port, ssl=dict(files(pki, cert=pki.client), sni="up.test"))
    tls_upstream(cfg, "oneway", port, ssl=dict(files(pki, cert=pki.client), sni="up.test", oneWayTls=True))
    gateway_vs(cfg, [("/mtls", "mtls"), ("/oneway", "oneway")])
    rv = rivet(cfg)
    r = rv.get("/mtls")
    assert r.status == 200 and "CN=rivet-client" in r.text, r
    dump = rv.config_dump()
    c = [c for c in dump["clusters"] if c["name"] == "gloo-system.mtls"][0]
    assert c["tls"]["clientCertificate"] is True, c
    # oneWayTls: the certificate is not presented, so nginx (ssl_verify_client on) refuses
    r = rv.get("/oneway")
    assert r.status == 400 and b"No required SSL certificate" in r.body, r


def test_session_resumed_on_new_connections(cfg, rivet, pki, tls_server):
    tls_upstream(cfg, "up", tls_server.ports["good"], ssl=dict(files(pki), sni="up.test"))
    gateway_vs(cfg, [("/", "up")])
    rv = rivet(cfg, workers=1)
    seen = []
    for _ in range(3):
        r = rv.get("/new")      # nginx closes after each response: a new upstream connection each
        assert r.status == 200, r
        seen.append(body_fields(r))
    assert len({f["conn"] for f in seen}) == 3, seen
    assert seen[0]["reused"] == "." and seen[1]["reused"] == "r" and seen[2]["reused"] == "r", seen
    m = rv.metrics()
    assert metric_sum(m, "rivet_upstream_tls_handshakes_total", upstream="gloo-system.up", resumed="true") >= 2
    assert metric_sum(m, "rivet_upstream_tls_handshakes_total", upstream="gloo-system.up", resumed="false") >= 1


def test_pooled_tls_connection_reused(cfg, rivet, pki, tls_server):
    tls_upstream(cfg, "up", tls_server.ports["good"], ssl=dict(files(pki), sni="up.test"))
    # the same endpoint as plain HTTP and with another SNI: three pool keys, never mixed
    tls_upstream(cfg, "other", tls_server.ports["good"], ssl=dict(files(pki), sni="localhost"))
    gateway_vs(cfg, [("/other", "other"), ("/", "up")])
    rv = rivet(cfg, workers=1)
    conns = [body_fields(rv.get("/k%d" % i))["conn"] for i in range(4)]
    assert len(set(conns)) == 1, conns          # one upstream TLS connection, kept alive
    r = rv.get("/other")
    f = body_fields(r)
    assert f["sni"] == "localhost" and f["conn"] != conns[0], f     # not the other SNI's connection
    assert body_fields(rv.get("/k9"))["conn"] == conns[0]


def test_use_tls_auto_on_443_in_config_dump(cfg, rivet):
    # Gloo turns useTls on for port 443; useTls: false keeps it plain (nothing listens there:
    # the decision is what is checked)
    cfg.write("upstreams", "auto", {"static": {"hosts": [{"addr": "localhost", "port": 443}]}})
    cfg.write("upstreams", "plain", {"static": {"hosts": [{"addr": "localhost", "port": 443}], "useTls": False}})
    cfg.write("upstreams", "on", {"static": {"hosts": [{"addr": "127.0.0.1", "port": 8443}], "useTls": True}})
    gateway_vs(cfg, [("/a", "auto"), ("/p", "plain"), ("/o", "on")])
    rv = rivet(cfg)
    cl = {c["name"]: c for c in rv.config_dump()["clusters"]}
    assert cl["gloo-system.auto"]["tls"]["trust"] == "system", cl["gloo-system.auto"]
    assert all(e.get("sni") == "localhost" for e in cl["gloo-system.auto"]["endpoints"]), cl
    assert "tls" not in cl["gloo-system.plain"], cl["gloo-system.plain"]
    assert "tls" in cl["gloo-system.on"] and "sni" not in cl["gloo-system.on"]["endpoints"][0], cl
    for n in ("auto", "plain", "on"):
        assert rv.resource_status("Upstream", n)["state"] == "Accepted"


def test_unreadable_file_rejects_the_upstream(cfg, rivet, pki, tmp_path):
    cfg.write("upstreams", "gone", {"static": {"hosts": [{"addr": "127.0.0.1", "port": 1}]},
                                    "sslConfig": {"sslFiles": {"rootCa": str(tmp_path / "missing.pem")}}})
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key\n")
    cfg.write("upstreams", "badkey", {"static": {"hosts": [{"addr": "127.0.0.1", "port": 1}]},
                                      "sslConfig": {"sslFiles": {"tlsCert": pki.client[0], "tlsKey": str(bad_key)}}})
    gateway_vs(cfg, [("/g", "gone"), ("/b", "badkey")])
    rv = rivet(cfg)
    st = rv.wait_status("Upstream", "gone", "Rejected")
    assert "sslFiles.rootCa: cannot read" in st["reason"] and "missing.pem" in st["reason"], st
    st = rv.wait_status("Upstream", "badkey", "Rejected")
    assert "bad.key: no PEM private key" in st["reason"], st
    r = rv.get("/g")
    assert r.status == 503, r       # no endpoint: never plain text to a TLS upstream


def test_mixed_plain_and_tls_upstreams(cfg, rivet, backend, pki, tls_server):
    be = backend()
    cfg.upstream("plain", [be])
    tls_upstream(cfg, "tls", tls_server.ports["good"], ssl=dict(files(pki), sni="up.test"))
    gateway_vs(cfg, [("/plain", "plain"), ("/tls", "tls")])
    rv = rivet(cfg, workers=1)
    for _ in range(3):
        assert rv.get("/plain").status == 200
        r = rv.get("/tls")
        assert r.status == 200 and body_fields(r)["sni"] == "up.test", r


def test_large_bodies_both_ways(cfg, rivet, pki, tls_server):
    # more than rivet's 64 KiB buffer each way: TLS records, partial writes, buffered reads
    tls_upstream(cfg, "up", tls_server.ports["good"], ssl=dict(files(pki), sni="up.test"))
    gateway_vs(cfg, [("/", "up")])
    rv = rivet(cfg, workers=1)
    r = rv.get("/big")
    assert r.status == 200 and len(r.body) == tls_server.BIG, (r.status, len(r.body))
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(tls_server.big_bytes()).digest()
    body = os.urandom(2 * 1024 * 1024 + 3)
    r = rv.req("POST", "/upload", body=body)
    assert r.status == 200 and r.text.strip() == "len=%d" % len(body), r
    r = rv.get("/big")      # the connection is still good after both
    assert r.status == 200 and len(r.body) == tls_server.BIG


def test_tls_failure_retried_as_connect_failure(cfg, rivet, pki, tls_server):
    # two hosts, one with a certificate rivet refuses: retryOn connect-failure moves on to the
    # other, as for a refused connection; every request is answered 200
    cfg.write("upstreams", "mixed", {"static": {"hosts": [
        {"addr": "127.0.0.1", "port": tls_server.ports["selfsigned"]},
        {"addr": "127.0.0.1", "port": tls_server.ports["good"]}]},
        "sslConfig": dict(files(pki), sni="up.test")})
    cfg.gateway()
    cfg.vs("vs", [route(prefix="/", upstream="mixed",
                        options={"retries": {"retryOn": "connect-failure", "numRetries": 2}})])
    rv = rivet(cfg, workers=1)
    for i in range(4):
        r = rv.get("/r%d" % i)
        assert r.status == 200 and body_fields(r)["sni"] == "up.test", r
    m = rv.metrics()
    assert metric_sum(m, "rivet_upstream_tls_handshake_failures_total", upstream="gloo-system.mixed") >= 1
    assert metric_sum(m, "rivet_upstream_retries_total", upstream="gloo-system.mixed") >= 1


def _gloo_tls_secret(path, name, cert=None, key=None, ca=None):
    """A Gloo tls secret in its stored form (YAML block scalars)."""
    def block(k, f):
        with open(f) as fh:
            return "  %s: |\n" % k + "".join("    " + ln for ln in fh.read().splitlines(True))
    doc = "metadata: {name: %s, namespace: gloo-system}\ntls:\n" % name
    if cert:
        doc += block("certChain", cert)
    if key:
        doc += block("privateKey", key)
    if ca:
        doc += block("rootCa", ca)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)


def test_secret_ref_mtls_and_rotation(cfg, rivet, pki, tls_server):
    # rivet run --dir DIR reads secrets from DIR/secrets/<ns>/<name>.yaml
    secret = cfg.root / "secrets" / "gloo-system" / "up-mtls.yaml"
    _gloo_tls_secret(secret, "up-mtls", cert=pki.client[0], key=pki.client[1], ca=pki.ca)
    tls_upstream(cfg, "up", tls_server.ports["mtls"],
                 ssl={"secretRef": {"name": "up-mtls", "namespace": "gloo-system"}, "sni": "up.test"})
    gateway_vs(cfg, [("/", "up")])
    rv = rivet(cfg, workers=1)
    r = rv.get("/a")
    assert r.status == 200 and "CN=rivet-client" in r.text, r
    dump = rv.config_dump()
    assert "PRIVATE" not in str(dump) and "BEGIN" not in str(dump)
    # rotate: the secret now trusts another CA (the self-signed certificate), so the server's
    # certificate no longer verifies - new connections use the new context at once, the pooled
    # connection of the old one is not reused for it
    _gloo_tls_secret(secret, "up-mtls", cert=pki.client[0], key=pki.client[1], ca=pki.selfsigned[0])
    r = wait_for(lambda: (lambda x: x if x.status == 503 else None)(rv.get("/b")), timeout=10,
                 msg="the rotated secret in use")
    assert "certificate verify failed" in r.text, r
    # and back: served again without a restart
    _gloo_tls_secret(secret, "up-mtls", cert=pki.client[0], key=pki.client[1], ca=pki.ca)
    wait_for(lambda: rv.get("/c").status == 200, timeout=10, msg="the restored secret in use")


def test_ssl_files_rotation_without_restart(cfg, rivet, pki, tls_server, tmp_path):
    # an sslFiles rootCa replaced on disk is picked up (the control thread stats the files)
    ca = tmp_path / "ca.pem"
    shutil.copy(pki.ca, ca)
    tls_upstream(cfg, "up", tls_server.ports["selfsigned"], ssl={"sslFiles": {"rootCa": str(ca)}, "sni": "up.test"})
    gateway_vs(cfg, [("/", "up")])
    rv = rivet(cfg, workers=1)
    r = rv.get("/a")
    assert r.status == 503 and "self-signed certificate" in r.text, r
    tmp = tmp_path / "ca.tmp"
    shutil.copy(pki.selfsigned[0], tmp)
    os.replace(tmp, ca)
    wait_for(lambda: rv.get("/b").status == 200, timeout=10, msg="the rotated rootCa in use")


def test_half_way_rotation_keeps_last_working_material(cfg, rivet, pki, tls_server, tmp_path):
    # mTLS client certificate from files; the key is replaced by one that does not match (a
    # rotation caught half way): the Upstream is Rejected saying so, and new connections keep
    # using the last working certificate and key
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    shutil.copy(pki.client[0], cert)
    shutil.copy(pki.client[1], key)
    tls_upstream(cfg, "up", tls_server.ports["mtls"],
                 ssl={"sslFiles": {"tlsCert": str(cert), "tlsKey": str(key), "rootCa": pki.ca}, "sni": "up.test"})
    gateway_vs(cfg, [("/", "up")])
    rv = rivet(cfg, workers=1)
    assert rv.get("/new").status == 200
    tmp = tmp_path / "k.tmp"
    shutil.copy(pki.wrong[1], tmp)
    os.replace(tmp, key)
    st = rv.wait_status("Upstream", "up", "Rejected", timeout=10)
    assert "does not match" in st["reason"] and "last working" in st["reason"], st
    for i in range(3):
        r = rv.get("/new")      # a new upstream connection each: the last working material
        assert r.status == 200 and "CN=rivet-client" in r.text, r
    shutil.copy(pki.client[1], tmp)
    os.replace(tmp, key)
    rv.wait_status("Upstream", "up", "Accepted", timeout=10)
    assert rv.get("/new").status == 200


def _answer_400_server():
    """A plain HTTP server that answers 400 at once to whatever arrives (the port, a stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                try:
                    c.settimeout(2)
                    c.recv(4096)
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass
        srv.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], stop


def test_plain_http_server_behind_use_tls(cfg, rivet):
    # useTls towards a server that answers in plain HTTP: the reply is not a TLS record, the
    # handshake fails at once: 503 UF with OpenSSL's reason in the body and the access log
    port, stop = _answer_400_server()
    try:
        cfg.write("upstreams", "up", {"static": {"hosts": [{"addr": "127.0.0.1", "port": port}], "useTls": True}})
        gateway_vs(cfg, [("/", "up")])
        rv = rivet(cfg)
        r = rv.get("/p")
        assert r.status == 503 and "TLS error: " in r.text, r
        reason = r.text.split("TLS error: ", 1)[1].strip()
        assert reason and "certificate" not in reason, r.text
        line = wait_for(lambda: log_lines_with(rv.stdout(), "/p", "503"), msg="access log line")
        assert " UF " in line[0] and ('"%s"' % reason) in line[0], line
    finally:
        stop.set()


def test_handshake_that_never_completes_times_out(cfg, rivet, hang_server):
    # a server that accepts and never answers the ClientHello: the connect timeout (5 s) covers
    # the handshake, then 503 UF with "handshake timed out" - never a hung request
    hs = hang_server()
    cfg.write("upstreams", "up", {"static": {"hosts": [{"addr": "127.0.0.1", "port": hs.port}], "useTls": True}})
    gateway_vs(cfg, [("/", "up")])
    rv = rivet(cfg)
    r = rv.get("/h", timeout=30)
    assert r.status == 503 and "TLS error: handshake timed out" in r.text, r
    line = wait_for(lambda: log_lines_with(rv.stdout(), "/h", "503"), msg="access log line")
    assert " UF " in line[0] and '"handshake timed out"' in line[0], line
    assert bytes(hs.received[:3]) == b"\x16\x03\x01", bytes(hs.received[:8])    # a TLS ClientHello, not HTTP


def _tls_extra_bytes_server(pki):
    """A TLS server (the good certificate) that answers every request with a 5-byte response
    immediately followed, in the same write, by a complete second response ("smuggled"), and
    keeps the connection open. Returns (port, stop)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.good[0], pki.good[1])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve(c):
        try:
            with ctx.wrap_socket(c, server_side=True) as t:
                t.settimeout(5)
                buf = b""
                while not stop.is_set():
                    d = t.recv(65536)
                    if not d:
                        return
                    buf += d
                    while b"\r\n\r\n" in buf:
                        buf = buf.split(b"\r\n\r\n", 1)[1]
                        t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                                  b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
        except (OSError, ssl.SSLError):
            pass

    def loop():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        srv.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], stop


def test_bytes_after_the_response_never_reach_the_next_request(cfg, rivet, pki):
    # an upstream that sends more than the response: the surplus (here a whole forged response)
    # must never be taken as the answer to the next request on a pooled TLS connection
    port, stop = _tls_extra_bytes_server(pki)
    try:
        tls_upstream(cfg, "up", port, ssl=dict(files(pki), sni="up.test"))
        gateway_vs(cfg, [("/", "up")])
        rv = rivet(cfg, workers=1)
        for i in range(4):
            r = rv.get("/x%d" % i)
            assert r.status == 200 and r.body == b"first", r
    finally:
        stop.set()
