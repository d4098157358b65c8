"""Downstream TLS: Gateway `ssl: true` with VirtualService `sslConfig` (sslFiles), with real
clients (Python ssl / http.client, openssl s_client, curl). Certificates are made with the
openssl CLI into the test's temp dir.

SNI selection among several certificates (exact, wildcard, default without SNI or with an
unknown name; RSA and ECDSA), TLS 1.2 and 1.3, parameters, session resumption (and
disableTlsSessionResumption), mTLS (required, wrong CA, good cert -> x-forwarded-client-cert,
spoofed header stripped, oneWayTls, verifySubjectAltName), 421 on SNI/Host mismatch,
client-initiated renegotiation refused, bad PEM / mismatched key / missing file -> that
VirtualService Rejected while the others serve, keys never in /config_dump, rotation of a
certificate file under load (no failed handshake or request; new connections see the new one),
an ssl Gateway serves only VirtualServices with sslConfig and a plain one only those without.
"""
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import NS, free_port, route, wait_for

HOST = "127.0.0.1"


# ---------------------------------------------------------------------------------------
# certificates (openssl CLI)


def _run(*args, cwd):
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


class Certs:
    """A CA and leaf certificates under dir."""

    def __init__(self, d, ca_name="rivet-test-ca"):
        self.dir = str(d)
        os.makedirs(self.dir, exist_ok=True)
        self.ca_name = ca_name
        self.ca_crt = os.path.join(self.dir, ca_name + ".crt")
        self.ca_key = os.path.join(self.dir, ca_name + ".key")
        _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", self.ca_key, "-out", self.ca_crt, "-subj", "/CN=" + ca_name, "-days", "30", cwd=self.dir)

    def leaf(self, name, cn, sans, kind="rsa", client=False):
        """Write <name>.crt and <name>.key signed by this CA; returns (crt, key) paths."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".crt")
        ext = os.path.join(self.dir, name + ".ext")
        newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt",
                                                                 "ec_paramgen_curve:P-256"]
        _run("openssl", "req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn,
             cwd=self.dir)
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\n" % ",".join(sans))
            f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
        _run("openssl", "x509", "-req", "-in", csr, "-CA", self.ca_crt, "-CAkey", self.ca_key, "-CAcreateserial",
             "-out", crt, "-days", "30", "-extfile", ext, cwd=self.dir)
        return crt, key


def ssl_cfg(crt, key, sni=None, **extra):
    c = {"sslFiles": {"tlsCert": crt, "tlsKey": key}}
    if sni is not None:
        c["sniDomains"] = list(sni)
    for k, v in extra.items():
        if k == "rootCa":
            c["sslFiles"]["rootCa"] = v
        else:
            c[k] = v
    return c


def tls_gateway(cfg, name="tls", **extra):
    return cfg.gateway(name, ssl=True, **extra)


def client_ctx(ca, cert=None, key=None, maxver=None, minver=None):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False          # we check the certificate's CN ourselves
    if cert:
        ctx.load_cert_chain(cert, key)
    if maxver:
        ctx.maximum_version = maxver
    if minver:
        ctx.minimum_version = minver
    return ctx


def tls_get(port, sni, host=None, path="/", ctx=None, headers=None, session=None, timeout=10):
    """One HTTPS request on a new connection. Returns (status, body, info dict)."""
    raw = socket.create_connection((HOST, port), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname=sni, session=session)
    try:
        info = {"version": s.version(), "cipher": s.cipher()[0], "reused": s.session_reused,
                "cn": dict(x[0] for x in s.getpeercert()["subject"]).get("commonName")}
        hdrs = {"Host": host or sni or "test.local", "Connection": "close"}
        hdrs.update(headers or {})
        req = "GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join("%s: %s\r\n" % kv for kv in hdrs.items()))
        s.sendall(req.encode())
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            data += chunk
        info["session"] = s.session
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head else 0
        info["head"] = head.decode("latin-1")
        return status, body, info
    finally:
        s.close()


def served_vs(rv, backend_json_body):
    return json.loads(backend_json_body)


# ---------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path / "certs")


def direct_vs(cfg, name, body, domains, ssl_config):
    cfg.vs(name, [route(direct=(200, body))], domains=domains, sslConfig=ssl_config)


# ---------------------------------------------------------------------------------------
# SNI selection, versions


def test_sni_selection_exact_wildcard_default_rsa_ecdsa(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"], "rsa")
    w = certs.leaf("w", "wild.w.example.com", ["DNS:*.w.example.com"], "ec")
    d = certs.leaf("d", "default.example.com", ["DNS:default.example.com"], "rsa")
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["a.example.com"], ssl_cfg(*a, sni=["a.example.com"]))
    direct_vs(cfg, "w", "vs-w", ["*.w.example.com"], ssl_cfg(*w, sni=["*.w.example.com"]))
    direct_vs(cfg, "z-default", "vs-d", ["*"], ssl_cfg(*d))
    rv = rivet(cfg)
    ctx = client_ctx(certs.ca_crt)
    st, body, info = tls_get(port, "a.example.com", ctx=ctx)
    assert (st, body, info["cn"]) == (200, b"vs-a", "a.example.com"), info
    st, body, info = tls_get(port, "x.w.example.com", ctx=ctx)
    assert (st, body, info["cn"]) == (200, b"vs-w", "wild.w.example.com"), info
    # deeper names match the closest wildcard too (Envoy's server_names rule)
    st, body, info = tls_get(port, "y.x.w.example.com", ctx=ctx)
    assert info["cn"] == "wild.w.example.com", info
    # unknown name and no SNI at all: the chain without sniDomains
    st, body, info = tls_get(port, "unknown.example.org", ctx=ctx)
    assert (st, body, info["cn"]) == (200, b"vs-d", "default.example.com"), info
    st, body, info = tls_get(port, None, host="whatever", ctx=ctx)
    assert (st, body, info["cn"]) == (200, b"vs-d", "default.example.com"), info
    # the ECDSA certificate is served with an ECDSA suite (TLS 1.2 names the signature)
    st, body, info = tls_get(port, "x.w.example.com", ctx=client_ctx(certs.ca_crt, maxver=ssl.TLSVersion.TLSv1_2))
    assert "ECDSA" in info["cipher"] and info["version"] == "TLSv1.2", info
    st, body, info = tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt, maxver=ssl.TLSVersion.TLSv1_2))
    assert "RSA" in info["cipher"] and info["cn"] == "a.example.com", info
    # curl agrees (real client, verification on)
    p = subprocess.run(["curl", "-sS", "--cacert", certs.ca_crt, "--resolve", "a.example.com:%d:127.0.0.1" % port,
                        "https://a.example.com:%d/" % port], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and p.stdout == "vs-a", (p.returncode, p.stdout, p.stderr)
    assert rv.resource_status("VirtualService", "a")["state"] == "Accepted"


def test_default_is_first_chain_when_all_have_sni(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    b = certs.leaf("b", "b.example.com", ["DNS:b.example.com"], "ec")
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["a.example.com"], ssl_cfg(*a, sni=["a.example.com"]))
    direct_vs(cfg, "b", "vs-b", ["b.example.com"], ssl_cfg(*b, sni=["b.example.com"]))
    rivet(cfg)
    ctx = client_ctx(certs.ca_crt)
    assert tls_get(port, "b.example.com", ctx=ctx)[2]["cn"] == "b.example.com"
    _, _, info = tls_get(port, None, host="a.example.com", ctx=ctx)
    assert info["cn"] == "a.example.com", info


def test_tls12_and_tls13_and_parameters(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    b = certs.leaf("b", "b.example.com", ["DNS:b.example.com"])
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["a.example.com"], ssl_cfg(*a, sni=["a.example.com"]))
    direct_vs(cfg, "b", "vs-b", ["b.example.com"],
              ssl_cfg(*b, sni=["b.example.com"], parameters={"minimumProtocolVersion": "TLSv1_3"}))
    rivet(cfg)
    assert tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt))[2]["version"] == "TLSv1.3"
    v12 = client_ctx(certs.ca_crt, maxver=ssl.TLSVersion.TLSv1_2)
    st, body, info = tls_get(port, "a.example.com", ctx=v12)
    assert (st, body, info["version"]) == (200, b"vs-a", "TLSv1.2")
    # b insists on TLS 1.3: a TLS 1.2-only client is refused
    with pytest.raises(ssl.SSLError):
        tls_get(port, "b.example.com", ctx=v12)
    assert tls_get(port, "b.example.com", ctx=client_ctx(certs.ca_crt))[0] == 200


def test_bad_parameters_rejected(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    port = tls_gateway(cfg)
    direct_vs(cfg, "good", "ok", ["a.example.com"], ssl_cfg(*a, sni=["a.example.com"]))
    direct_vs(cfg, "ciph", "x", ["c.example.com"], ssl_cfg(*a, sni=["c.example.com"],
                                                          parameters={"cipherSuites": ["NOT-A-CIPHER"]}))
    direct_vs(cfg, "h2", "x", ["h.example.com"], ssl_cfg(*a, sni=["h.example.com"], alpnProtocols=["h2"]))
    direct_vs(cfg, "sds", "x", ["s.example.com"], {"sds": {"targetUri": "x"}})
    rv = rivet(cfg)
    r = rv.wait_status("VirtualService", "ciph", "Rejected")
    assert "NOT-A-CIPHER" in r["reason"], r
    r = rv.wait_status("VirtualService", "h2", "Rejected")
    assert "h2" in r["reason"] and "HTTP/1.1" in r["reason"], r
    r = rv.wait_status("VirtualService", "sds", "Rejected")
    assert "sds" in r["reason"], r
    assert tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt))[:2] == (200, b"ok")


# ---------------------------------------------------------------------------------------
# resumption


def _resumed(port, sni, ctx):
    _, _, first = tls_get(port, sni, ctx=ctx)
    assert not first["reused"]
    _, _, second = tls_get(port, sni, ctx=ctx, session=first["session"])
    return second["reused"]


def test_session_resumption(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    b = certs.leaf("b", "b.example.com", ["DNS:b.example.com"])
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["a.example.com"], ssl_cfg(*a, sni=["a.example.com"]))
    direct_vs(cfg, "b", "vs-b", ["b.example.com"],
              ssl_cfg(*b, sni=["b.example.com"], disableTlsSessionResumption=True))
    rv = rivet(cfg, workers=2)
    for ver in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(certs.ca_crt, maxver=ver)
        assert _resumed(port, "a.example.com", ctx), ver
        assert not _resumed(port, "b.example.com", ctx), ver
    # TLS 1.3 clients use a ticket once (RFC 8446 C.4; OpenSSL clients keep only the newest):
    # every resumption must hand out a new ticket, or the client's next connection is a full
    # handshake. A new ticket is a new client session id (OpenSSL: SHA-256 of the ticket).
    ctx = client_ctx(certs.ca_crt, maxver=ssl.TLSVersion.TLSv1_3)
    _, _, info = tls_get(port, "a.example.com", ctx=ctx)
    seen = {info["session"].id}
    for i in range(3):
        _, _, info = tls_get(port, "a.example.com", ctx=ctx, session=info["session"])
        assert info["reused"], i
        assert info["session"].has_ticket and info["session"].id not in seen, i
        seen.add(info["session"].id)
    # the ticket keys survive a config rebuild (a new snapshot) - resumption still works
    ctx = client_ctx(certs.ca_crt)
    _, _, first = tls_get(port, "a.example.com", ctx=ctx)
    direct_vs(cfg, "c", "vs-c", ["c.example.com"], ssl_cfg(*b, sni=["c.example.com"]))
    wait_for(lambda: tls_get(port, "c.example.com", ctx=ctx)[1] == b"vs-c", timeout=10, msg="vs-c served")
    _, _, second = tls_get(port, "a.example.com", ctx=ctx, session=first["session"])
    assert second["reused"]
    # a session from one chain does not resume on another
    _, _, other = tls_get(port, "c.example.com", ctx=ctx, session=first["session"])
    assert not other["reused"]
    assert rv.alive()


# ---------------------------------------------------------------------------------------
# mTLS, x-forwarded-client-cert, 421


@pytest.fixture
def mtls(cfg, rivet, certs, backend):
    be = backend("be")
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    p = certs.leaf("p", "p.example.com", ["DNS:p.example.com"])
    client = certs.leaf("client", "client-one", ["URI:spiffe://test/client-one", "DNS:client.example.com"],
                        client=True)
    other = Certs(os.path.join(certs.dir, "other"), "other-ca")
    bad_client = other.leaf("badclient", "intruder", ["DNS:intruder.example.com"], client=True)
    port = tls_gateway(cfg)
    plain = cfg.gateway("plain")
    cfg.upstream("up", [be])
    cfg.vs("m", [route(prefix="/", upstream="up")], domains=["a.example.com"],
           sslConfig=ssl_cfg(*a, sni=["a.example.com"], rootCa=certs.ca_crt))
    cfg.vs("pub", [route(prefix="/", upstream="up")], domains=["p.example.com"],
           sslConfig=ssl_cfg(*p, sni=["p.example.com"]))
    cfg.vs("plainvs", [route(prefix="/", upstream="up")], domains=["*"])
    rv = rivet(cfg)
    return dict(rv=rv, port=port, plain=plain, be=be, client=client, bad=bad_client, certs=certs)


def _handshake_refused(port, sni, ctx):
    try:
        st, _, _ = tls_get(port, sni, ctx=ctx)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True
    return st == 0


def test_mtls_required_and_verified(mtls):
    m = mtls
    ca = m["certs"].ca_crt
    # no client certificate: refused
    assert _handshake_refused(m["port"], "a.example.com", client_ctx(ca))
    # a certificate from another CA: refused
    assert _handshake_refused(m["port"], "a.example.com", client_ctx(ca, *m["bad"]))
    # the right one: served, identity forwarded, a spoofed header replaced
    st, body, _ = tls_get(m["port"], "a.example.com", ctx=client_ctx(ca, *m["client"]),
                          headers={"X-Forwarded-Client-Cert": "Hash=forged;Subject=\"CN=admin\""})
    assert st == 200, body
    got = json.loads(body)
    hdrs = [(k.lower(), v) for k, v in got["headers"]]
    xfcc = [v for k, v in hdrs if k == "x-forwarded-client-cert"]
    assert len(xfcc) == 1, hdrs
    v = xfcc[0]
    assert "forged" not in v and "admin" not in v, v
    assert v.startswith("Hash=") and len(v.split(";")[0]) == len("Hash=") + 64, v
    assert 'Subject="CN=client-one"' in v and "URI=spiffe://test/client-one" in v and \
        "DNS=client.example.com" in v, v
    assert ("x-forwarded-proto", "https") in hdrs, hdrs
    # the hash is the SHA-256 of the certificate's DER
    der = ssl.PEM_cert_to_DER_cert(open(m["client"][0]).read())
    import hashlib
    assert v.split(";")[0] == "Hash=" + hashlib.sha256(der).hexdigest()


def test_xfcc_stripped_without_client_cert_and_on_plain(mtls):
    m = mtls
    spoof = {"X-Forwarded-Client-Cert": "Hash=forged;Subject=\"CN=admin\""}
    st, body, _ = tls_get(m["port"], "p.example.com", ctx=client_ctx(m["certs"].ca_crt), headers=spoof)
    assert st == 200
    names = [k.lower() for k, _ in json.loads(body)["headers"]]
    assert "x-forwarded-client-cert" not in names, names
    r = m["rv"].get("/", port=m["plain"], headers=spoof)
    assert r.status == 200
    got = json.loads(r.body)
    assert "x-forwarded-client-cert" not in [k.lower() for k, _ in got["headers"]], got
    assert ["X-Forwarded-Proto", "http"] in got["headers"] or \
        ("x-forwarded-proto", "http") in [(k.lower(), v) for k, v in got["headers"]], got


def test_421_on_sni_host_mismatch(mtls):
    m = mtls
    ca = m["certs"].ca_crt
    # handshake for the public name, then ask for the mTLS host: its client check never ran
    st, body, _ = tls_get(m["port"], "p.example.com", host="a.example.com", ctx=client_ctx(ca))
    assert st == 421, (st, body)
    # and the other way round
    st, body, _ = tls_get(m["port"], "a.example.com", host="p.example.com", ctx=client_ctx(ca, *m["client"]))
    assert st == 421, (st, body)
    # matching names are fine; an unknown Host is a plain 404
    assert tls_get(m["port"], "p.example.com", ctx=client_ctx(ca))[0] == 200
    assert tls_get(m["port"], "p.example.com", host="nope.example.com", ctx=client_ctx(ca))[0] == 404
    assert len(m["be"].requests) == 1


def test_one_way_tls_and_verify_san(cfg, rivet, certs, backend):
    be = backend("be")
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    good = certs.leaf("good", "good", ["URI:spiffe://test/good"], client=True)
    wrong = certs.leaf("wrong", "wrong", ["URI:spiffe://test/wrong"], client=True)
    port = tls_gateway(cfg)
    cfg.upstream("up", [be])
    cfg.vs("ow", [route(prefix="/", upstream="up")], domains=["ow.example.com"],
           sslConfig=ssl_cfg(*a, sni=["ow.example.com"], rootCa=certs.ca_crt, oneWayTls=True))
    cfg.vs("san", [route(prefix="/", upstream="up")], domains=["san.example.com"],
           sslConfig=ssl_cfg(*a, sni=["san.example.com"], rootCa=certs.ca_crt,
                             verifySubjectAltName=["spiffe://test/good"]))
    rivet(cfg)
    ca = certs.ca_crt
    st, body, _ = tls_get(port, "ow.example.com", ctx=client_ctx(ca))
    assert st == 200 and "x-forwarded-client-cert" not in body.decode().lower()
    st, body, _ = tls_get(port, "ow.example.com", ctx=client_ctx(ca, *good))
    assert st == 200 and "spiffe://test/good" in body.decode()
    assert tls_get(port, "san.example.com", ctx=client_ctx(ca, *good))[0] == 200
    assert _handshake_refused(port, "san.example.com", client_ctx(ca, *wrong))


# ---------------------------------------------------------------------------------------
# renegotiation


def test_client_renegotiation_refused(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(*a))
    rv = rivet(cfg)
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_2",
                          "-servername", "a.example.com", "-CAfile", certs.ca_crt],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # s_client's output is followed as it comes, and each step waits for the previous one to
    # show there (fixed 0.5 s pauses could end before rivet answered on a slow machine: the
    # GET and the end of input then reached s_client before rivet's refusal, and s_client quit
    # without printing it)
    got = bytearray()

    def reader():
        while True:
            d = os.read(p.stdout.fileno(), 65536)
            if not d:
                return
            got.extend(d)
    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def seen(*words):
        return any(w in got.decode("latin-1") for w in words) or p.poll() is not None
    try:
        wait_for(lambda: seen("Verify return code"), timeout=20, msg="the s_client handshake")
        p.stdin.write(b"R\n")
        p.stdin.flush()
        try:    # a wrong answer (or none) shows in the assertions below, with the whole output
            wait_for(lambda: "RENEGOTIATING" in got.decode("latin-1") and seen("no renegotiation", "alert"),
                     timeout=20, msg="the renegotiation attempt answered")
        except AssertionError:
            pass
        p.stdin.write(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        p.stdin.flush()
        p.stdin.close()
        p.wait(timeout=20)
    except (BrokenPipeError, subprocess.TimeoutExpired):
        pass
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        t.join(10)
    text = got.decode("latin-1")
    assert "RENEGOTIATING" in text, text
    assert "no renegotiation" in text or "alert" in text.lower(), text
    assert "vs-a" not in text, text     # the connection did not go on after the attempt
    assert rv.alive()
    assert tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt))[:2] == (200, b"vs-a")


# ---------------------------------------------------------------------------------------
# bad material: Rejected with a reason, the others serve; keys never dumped


def test_bad_material_rejects_only_that_vs(cfg, rivet, certs, tmp_path):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    b = certs.leaf("b", "b.example.com", ["DNS:b.example.com"])
    badpem = tmp_path / "bad.crt"
    badpem.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    port = tls_gateway(cfg)
    direct_vs(cfg, "good", "ok", ["a.example.com"], ssl_cfg(*a, sni=["a.example.com"]))
    direct_vs(cfg, "badpem", "x", ["bp.example.com"], ssl_cfg(str(badpem), a[1], sni=["bp.example.com"]))
    direct_vs(cfg, "mismatch", "x", ["mm.example.com"], ssl_cfg(a[0], b[1], sni=["mm.example.com"]))
    direct_vs(cfg, "missing", "x", ["ms.example.com"],
              ssl_cfg(str(tmp_path / "nope.crt"), a[1], sni=["ms.example.com"]))
    rv = rivet(cfg)
    r = rv.wait_status("VirtualService", "badpem", "Rejected")
    assert str(badpem) in r["reason"] and "certificate" in r["reason"], r
    r = rv.wait_status("VirtualService", "mismatch", "Rejected")
    assert b[1] in r["reason"] and "does not match" in r["reason"], r
    r = rv.wait_status("VirtualService", "missing", "Rejected")
    assert "nope.crt" in r["reason"] and "tlsCert" in r["reason"], r
    assert rv.resource_status("VirtualService", "good")["state"] == "Accepted"
    assert tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt))[:2] == (200, b"ok")
    dump = json.dumps(rv.config_dump())
    key_text = open(a[1]).read()
    body_line = key_text.splitlines()[1]
    assert body_line not in dump and "PRIVATE KEY" not in dump
    assert a[1] in dump     # the file is named


def test_ssl_gateway_serves_only_ssl_vs(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    port = tls_gateway(cfg)
    plain = cfg.gateway("plain")
    direct_vs(cfg, "tlsvs", "secure", ["*"], ssl_cfg(*a))
    cfg.vs("plainvs", [route(direct=(200, "plain"))], domains=["*"])
    rv = rivet(cfg)
    assert tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt))[1] == b"secure"
    assert rv.get("/", port=plain).body == b"plain"


# ---------------------------------------------------------------------------------------
# rotation under load


def test_rotation_under_load(cfg, rivet, certs, tmp_path):
    live_crt = str(tmp_path / "live.crt")
    live_key = str(tmp_path / "live.key")
    old = certs.leaf("old", "old.example.com", ["DNS:a.example.com"])
    new = certs.leaf("new", "new.example.com", ["DNS:a.example.com"], "ec")
    for src, dst in ((old[0], live_crt), (old[1], live_key)):
        with open(src) as f, open(dst, "w") as g:
            g.write(f.read())
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(live_crt, live_key))
    rivet(cfg)
    ctx = client_ctx(certs.ca_crt)
    # a keep-alive connection opened before the rotation
    keep = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=10)
    keep.request("GET", "/", headers={"Host": "a.example.com"})
    assert keep.getresponse().read() == b"vs-a"

    stop = threading.Event()
    results = {"ok": 0, "fail": [], "cns": set()}

    def loop():
        while not stop.is_set():
            try:
                st, body, info = tls_get(port, "a.example.com", ctx=ctx)
                if st == 200 and body == b"vs-a":
                    results["ok"] += 1
                    results["cns"].add(info["cn"])
                else:
                    results["fail"].append((st, body))
            except Exception as e:  # noqa: BLE001 - every failure is counted
                results["fail"].append(repr(e))

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: results["ok"] >= 20, timeout=20, msg="requests before the rotation")
        # replace both files atomically (rename over), the certificate first and the key more
        # than a second later: the builds in between see the new certificate with the old key,
        # refuse it, and keep serving the last working pair
        for src, dst in ((new[0], live_crt), (new[1], live_key)):
            tmp = dst + ".tmp"
            with open(src) as f, open(tmp, "w") as g:
                g.write(f.read())
        os.rename(live_crt + ".tmp", live_crt)
        time.sleep(1.5)
        os.rename(live_key + ".tmp", live_key)
        wait_for(lambda: tls_get(port, "a.example.com", ctx=ctx)[2]["cn"] == "new.example.com", timeout=10,
                 msg="new connections to see the new certificate")
        n = results["ok"]
        wait_for(lambda: results["ok"] >= n + 20, timeout=20, msg="requests after the rotation")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert results["fail"] == [], results["fail"][:5]
    assert {"old.example.com", "new.example.com"} <= results["cns"], results["cns"]
    # the connection from before the rotation still works
    keep.request("GET", "/", headers={"Host": "a.example.com"})
    assert keep.getresponse().read() == b"vs-a"
    keep.close()


# ---------------------------------------------------------------------------------------
# secretRef (directory secret source: DIR/secrets/<ns>/<name>.yaml)


def write_secret(cfg, name, crt, key, ca=None, ns=NS):
    doc = {"metadata": {"name": name, "namespace": ns},
           "tls": {"certChain": open(crt).read(), "privateKey": open(key).read()}}
    if ca:
        doc["tls"]["rootCa"] = open(ca).read()
    d = cfg.root / "secrets" / ns
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (".%s.tmp" % name)
    tmp.write_text(json.dumps(doc))
    os.rename(tmp, d / ("%s.yaml" % name))


def test_secret_ref_served_missing_rejected_and_rotated(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    a2 = certs.leaf("a2", "a2.example.com", ["DNS:a.example.com"], "ec")
    write_secret(cfg, "a-tls", *a)
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["a.example.com"], {"secretRef": {"name": "a-tls", "namespace": NS},
                                                    "sniDomains": ["a.example.com"]})
    direct_vs(cfg, "nosecret", "x", ["n.example.com"], {"secretRef": {"name": "nope", "namespace": NS},
                                                        "sniDomains": ["n.example.com"]})
    rv = rivet(cfg)
    ctx = client_ctx(certs.ca_crt)
    st, body, info = tls_get(port, "a.example.com", ctx=ctx)
    assert (st, body, info["cn"]) == (200, b"vs-a", "a.example.com"), info
    r = rv.wait_status("VirtualService", "nosecret", "Rejected")
    assert "nope" in r["reason"] and "secret" in r["reason"], r
    dump = json.dumps(rv.config_dump())
    assert "secretRef %s/a-tls" % NS in dump and "PRIVATE KEY" not in dump
    # the secret rotates: new connections get the new certificate
    write_secret(cfg, "a-tls", *a2)
    wait_for(lambda: tls_get(port, "a.example.com", ctx=ctx)[2]["cn"] == "a2.example.com", timeout=10,
             msg="the rotated secret to be served")


def test_secret_ref_mtls_root_ca_from_secret(cfg, rivet, certs, backend):
    be = backend("be")
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    client = certs.leaf("client", "client-two", ["URI:spiffe://test/two"], client=True)
    write_secret(cfg, "m-tls", *a, ca=certs.ca_crt)
    port = tls_gateway(cfg)
    cfg.upstream("up", [be])
    cfg.vs("m", [route(prefix="/", upstream="up")], domains=["*"],
           sslConfig={"secretRef": {"name": "m-tls", "namespace": NS}})
    rivet(cfg)
    assert _handshake_refused(port, "a.example.com", client_ctx(certs.ca_crt))
    st, body, _ = tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt, *client))
    assert st == 200 and "URI=spiffe://test/two" in body.decode(), body


# ---------------------------------------------------------------------------------------
# access log and metrics


def test_access_log_and_metrics_carry_tls(cfg, rivet, certs):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    client = certs.leaf("client", "client-log", ["URI:spiffe://test/log"], client=True)
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(*a, rootCa=certs.ca_crt, oneWayTls=True))
    rv = rivet(cfg, args=["--access-log", "json"])
    ctx = client_ctx(certs.ca_crt, *client)
    st, _, first = tls_get(port, "a.example.com", ctx=ctx, headers={"X-Request-Id": "tls-log-1"})
    assert st == 200
    st, _, again = tls_get(port, "a.example.com", ctx=ctx, session=first["session"],
                           headers={"X-Request-Id": "tls-log-2"})
    assert st == 200 and again["reused"]
    assert tls_get(port, None, host="x", ctx=client_ctx(certs.ca_crt), headers={"X-Request-Id": "tls-log-3"})[0] == 200

    def recs():
        out = []
        for ln in rv.stdout().splitlines():
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("x_request_id", "").startswith("tls-log-"):
                out.append(r)
        return out if len(out) >= 3 else None
    by_id = {r["x_request_id"]: r for r in wait_for(recs, timeout=10, msg="3 access log records")}
    r1 = by_id["tls-log-1"]
    assert r1["downstream_tls_version"] == "TLSv1.3" and r1["requested_server_name"] == "a.example.com", r1
    assert r1["downstream_peer_cert"].startswith("Hash=") and "URI=spiffe://test/log" in r1["downstream_peer_cert"]
    assert 'Subject="CN=client-log"' in r1["downstream_peer_cert"], r1
    # a resumed session still knows its client certificate
    assert by_id["tls-log-2"]["downstream_peer_cert"] == r1["downstream_peer_cert"]
    r3 = by_id["tls-log-3"]
    assert r3["requested_server_name"] is None and r3["downstream_peer_cert"] is None, r3
    # a client that cannot agree on a cipher fails its handshake and is counted (an RSA
    # certificate, ECDSA suites only)
    v12 = client_ctx(certs.ca_crt, maxver=ssl.TLSVersion.TLSv1_2)
    v12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert _handshake_refused(port, "a.example.com", v12)
    m = rv.metrics()
    from harness import metric_sum
    assert metric_sum(m, "rivet_downstream_tls_handshakes_total", resumed="true") >= 1, m
    assert metric_sum(m, "rivet_downstream_tls_handshakes_total", resumed="false") >= 2, m
    wait_for(lambda: metric_sum(rv.metrics(), "rivet_downstream_tls_handshake_failures_total") >= 1, timeout=5,
             msg="the failed handshake counted")


def test_broken_file_keeps_last_working_material(cfg, rivet, certs, tmp_path):
    live_crt = str(tmp_path / "live.crt")
    a = certs.leaf("a", "first.example.com", ["DNS:a.example.com"])
    with open(a[0]) as f, open(live_crt, "w") as g:
        g.write(f.read())
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(live_crt, a[1]))
    rv = rivet(cfg)
    ctx = client_ctx(certs.ca_crt)
    assert tls_get(port, "a.example.com", ctx=ctx)[2]["cn"] == "first.example.com"
    with open(live_crt + ".tmp", "w") as g:
        g.write("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    os.rename(live_crt + ".tmp", live_crt)
    r = rv.wait_status("VirtualService", "a", "Rejected")
    assert live_crt in r["reason"] and "last working" in r["reason"], r
    st, body, info = tls_get(port, "a.example.com", ctx=ctx)
    assert (st, body, info["cn"]) == (200, b"vs-a", "first.example.com")
    b = certs.leaf("b", "second.example.com", ["DNS:a.example.com"])
    os.unlink(live_crt)
    with open(b[0]) as f, open(live_crt + ".tmp", "w") as g:
        g.write(f.read())
    # the old key with the new certificate: still refused, still serving the first pair
    os.rename(live_crt + ".tmp", live_crt)
    r = rv.wait_status("VirtualService", "a", "Rejected")
    wait_for(lambda: "does not match" in (rv.resource_status("VirtualService", "a") or {}).get("reason", ""),
             timeout=10, msg="the mismatch reported")
    assert tls_get(port, "a.example.com", ctx=ctx)[2]["cn"] == "first.example.com"
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(live_crt, b[1]))
    rv.wait_status("VirtualService", "a", "Accepted", timeout=10)
    assert tls_get(port, "a.example.com", ctx=ctx)[2]["cn"] == "second.example.com"


# ---------------------------------------------------------------------------------------
# OCSP stapling


def _ocsp_response(certs, crt, tmp_path):
    """A DER OCSP response from the test CA saying crt is good (openssl ocsp, index file)."""
    serial = _run("openssl", "x509", "-in", crt, "-noout", "-serial", cwd=certs.dir).stdout.strip().split("=")[1]
    exp = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 30 * 86400))
    index = tmp_path / "index.txt"
    index.write_text("V\t%s\t\t%s\tunknown\t/CN=a.example.com\n" % (exp, serial))
    out = str(tmp_path / "staple.der")
    _run("openssl", "ocsp", "-index", str(index), "-rsigner", certs.ca_crt, "-rkey", certs.ca_key, "-CA",
         certs.ca_crt, "-issuer", certs.ca_crt, "-cert", crt, "-respout", out, "-ndays", "1", cwd=certs.dir)
    return out


def _s_client_status(port, sni, ca):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername", sni,
                        "-CAfile", ca, "-status"], input=b"", capture_output=True, timeout=20)
    return p.stdout.decode("latin-1")


def test_ocsp_staple_served(cfg, rivet, certs, tmp_path):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    b = certs.leaf("b", "b.example.com", ["DNS:b.example.com"])
    staple = _ocsp_response(certs, a[0], tmp_path)
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"not an ocsp response")
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["a.example.com"],
              {"sslFiles": {"tlsCert": a[0], "tlsKey": a[1], "ocspStaple": staple}, "sniDomains": ["a.example.com"]})
    direct_vs(cfg, "b", "vs-b", ["b.example.com"], ssl_cfg(*b, sni=["b.example.com"]))
    direct_vs(cfg, "must", "x", ["m.example.com"], ssl_cfg(*b, sni=["m.example.com"], ocspStaplePolicy="MUST_STAPLE"))
    direct_vs(cfg, "junk", "x", ["j.example.com"],
              {"sslFiles": {"tlsCert": b[0], "tlsKey": b[1], "ocspStaple": str(junk)}, "sniDomains": ["j.example.com"]})
    rv = rivet(cfg)
    out = _s_client_status(port, "a.example.com", certs.ca_crt)
    assert "OCSP Response Status: successful" in out and "Cert Status: good" in out, out
    out = _s_client_status(port, "b.example.com", certs.ca_crt)
    assert "OCSP response: no response sent" in out, out
    r = rv.wait_status("VirtualService", "must", "Rejected")
    assert "MUST_STAPLE" in r["reason"], r
    r = rv.wait_status("VirtualService", "junk", "Rejected")
    assert "junk.der" in r["reason"] and "OCSP" in r["reason"], r


def test_shared_server_name_warns_first_chain_wins(cfg, rivet, certs):
    a = certs.leaf("a", "a-first", ["DNS:a.example.com"])
    b = certs.leaf("b", "b-second", ["DNS:a.example.com", "DNS:b.example.com"], "ec")
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["a.example.com"], ssl_cfg(*a, sni=["a.example.com"]))
    direct_vs(cfg, "b", "vs-b", ["b.example.com"], ssl_cfg(*b, sni=["a.example.com", "b.example.com"]))
    rv = rivet(cfg)
    r = rv.wait_status("VirtualService", "b", "Warning")
    assert "'a.example.com'" in r["reason"] and "%s/a" % NS in r["reason"], r
    ctx = client_ctx(certs.ca_crt)
    assert tls_get(port, "a.example.com", ctx=ctx)[2]["cn"] == "a-first"
    assert tls_get(port, "b.example.com", ctx=ctx)[2]["cn"] == "b-second"


def test_stalled_handshake_is_closed(cfg, rivet, certs):
    """A client that connects and never finishes its ClientHello is closed by the request
    header timeout (10 s); rivet keeps serving others meanwhile."""
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(*a))
    rivet(cfg)
    s = socket.create_connection((HOST, port), timeout=30)
    s.sendall(b"\x16\x03\x01\x02\x00\x01")      # the start of a ClientHello, then silence
    assert tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt))[:2] == (200, b"vs-a")
    try:
        data = s.recv(4096)     # socket timeout 30 s: a connection never closed fails here
    except ConnectionResetError:
        data = b""
    s.close()
    assert data == b"" or data[:1] == b"\x15", data     # closed (possibly after an alert)


# ---------------------------------------------------------------------------------------
# bodies larger than the buffers, both ways, keep-alive and pipelining over TLS


def test_large_bodies_keepalive_and_pipelining(cfg, rivet, certs, backend):
    import hashlib
    from backend import pattern_chunks, pattern_digest
    be = backend("be")
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    port = tls_gateway(cfg)
    cfg.upstream("up", [be])
    cfg.vs("a", [route(prefix="/", upstream="up")], domains=["*"], sslConfig=ssl_cfg(*a))
    rivet(cfg)
    ctx = client_ctx(certs.ca_crt)
    c = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=60)
    n = 3 * 1024 * 1024 + 17
    c.request("GET", "/bytes/%d" % n, headers={"Host": "a.example.com"})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200 and len(body) == n and hashlib.sha256(body).hexdigest() == pattern_digest(n)
    up = b"".join(bytes(x) for x in pattern_chunks(2 * 1024 * 1024 + 5))
    c.request("POST", "/echo", body=up, headers={"Host": "a.example.com"})
    r = c.getresponse()
    got = json.loads(r.read())
    assert r.status == 200 and got["body_len"] == len(up) and got["body_sha256"] == hashlib.sha256(up).hexdigest()
    assert got["conn_id"] == json.loads(_get_json(c))["conn_id"]    # same upstream conn: keep-alive both sides
    c.close()
    # three pipelined requests in one TLS write, three answers in order
    raw = socket.create_connection((HOST, port), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="a.example.com")
    s.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: a.example.com\r\n\r\n" % i for i in range(3)) +
              b"GET /last HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.count(b"HTTP/1.1 200") == 4, data[:500]
    order = [data.find(b'"/p0"'), data.find(b'"/p1"'), data.find(b'"/p2"'), data.find(b'"/last"')]
    assert all(x >= 0 for x in order) and order == sorted(order), order


def _get_json(c):
    c.request("GET", "/again", headers={"Host": "a.example.com"})
    return c.getresponse().read()


def _read_to_end(s):
    """Everything until the peer's end of stream (close_notify / EOF); raises on a reset."""
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ssl.SSLZeroReturnError:
            return data
        if not chunk:
            return data
        data += chunk


def _server_holds(server_port, client_port):
    """Whether a process still holds the server side of 127.0.0.1:client_port ->
    127.0.0.1:server_port: its /proc/net/tcp line has a socket inode (an orphaned socket,
    closed by its process, has inode 0)."""
    want = ("0100007F:%04X" % server_port, "0100007F:%04X" % client_port)
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                return fields[9] != "0"
    return False


def _tls_and_plain(cfg, rivet, certs):
    """A TLS listener answering "vs-a" (a.example.com's certificate) and a plain one answering
    "vs-p", every domain; rivet started. Returns (rv, tls port, plain port, client context)."""
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    port = tls_gateway(cfg)
    plain = cfg.gateway("plain")
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(*a))
    cfg.vs("p", [route(direct=(200, "vs-p"))], domains=["*"])
    return rivet(cfg), port, plain, client_ctx(certs.ca_crt)


def test_close_asked_by_the_client_closes_at_once(cfg, rivet, certs):
    """A client that sent Connection: close and nothing after its request: rivet closes its
    socket with the response (TLS: close_notify first) instead of half-closing and lingering
    until the client closes too (which left TIME_WAITs its next connections ran into: SYN
    retransmissions, doc/internals/tls.md section 7). The FIN comes from close() then, so once
    the client has read it, rivet holds no socket for the connection any more; a lingering
    close sends it from shutdown() and keeps the socket. Bytes after the request still get
    the lingering close: no reset (a close with unread bytes sends one, and it can destroy a
    response the client has not read yet)."""
    rv, port, plain, ctx = _tls_and_plain(cfg, rivet, certs)
    req = b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n"

    def connect(tls):
        raw = socket.create_connection((HOST, port if tls else plain), timeout=10)
        return ctx.wrap_socket(raw, server_hostname="a.example.com") if tls else raw

    for tls in (True, False):
        s = connect(tls)
        try:
            s.sendall(req)
            data = _read_to_end(s)
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"vs-a" if tls else b"vs-p"), data
            assert socket.socket.recv(s, 1) == b""      # TLS: the TCP end after close_notify
            assert not _server_holds(port if tls else plain, s.getsockname()[1]), tls
        finally:
            s.close()
    for tls in (True, False):
        # pipelined bytes after the closing request, more than rivet's 64 KiB buffer
        s = connect(tls)
        try:
            s.sendall(req + b"GET /more HTTP/1.1\r\nHost: a.example.com\r\n\r\n" * 5000)
            data = _read_to_end(s)
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"vs-a" if tls else b"vs-p"), data
            assert data.count(b"HTTP/1.1") == 1, data
            # no reset came with the end of stream: rivet still reads (and drops) what is sent
            socket.socket.send(s, b"\r\n")
        finally:
            s.close()
    assert rv.alive()


def test_a_burst_of_connections_is_all_accepted(cfg, rivet, certs):
    """rivet accepts one connection per listener event (so open connections are served
    between two accepts) and relies on the level-triggered listener to report the rest: 200
    connections opened at once, before any of them sends a byte, are all accepted and
    served, TLS and plain."""
    rv, port, plain, ctx = _tls_and_plain(cfg, rivet, certs)
    for tls in (True, False):
        socks = [socket.create_connection((HOST, port if tls else plain), timeout=10) for _ in range(200)]
        try:
            for i in range(len(socks)):
                if tls:
                    socks[i] = ctx.wrap_socket(socks[i], server_hostname="a.example.com")
                socks[i].sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
                data = _read_to_end(socks[i])
                assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"vs-a" if tls else b"vs-p"), (i, data)
        finally:
            for s in socks:
                s.close()
    assert rv.alive()


def test_garbage_and_plain_http_on_tls_port(cfg, rivet, certs):
    """Plain HTTP, random bytes, a truncated handshake and an abrupt reset on the TLS port:
    each connection is closed (an alert at most), nothing crashes, real clients still served."""
    import random
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(*a))
    rv = rivet(cfg)
    payloads = [b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n",
                bytes(random.Random(7).randrange(256) for _ in range(4096)),
                b"\x16\x03\x01\xff\xff" + b"\x01" * 300,          # a record length beyond the data
                b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"]      # a tiny bogus ClientHello
    for p in payloads:
        s = socket.create_connection((HOST, port), timeout=30)
        try:
            s.sendall(p)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass        # rivet may already have answered with an alert and closed
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        s.close()
        assert b"HTTP/1.1" not in data, (p[:20], data[:100])
        assert data == b"" or data[:1] == b"\x15", (p[:20], data[:100])   # at most a TLS alert
    # a client that resets in the middle of its handshake
    s = socket.create_connection((HOST, port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.sendall(b"\x16\x03\x01\x02\x00")
    s.close()
    assert rv.alive()
    assert tls_get(port, "a.example.com", ctx=client_ctx(certs.ca_crt))[:2] == (200, b"vs-a")


def test_deleted_vs_forgets_its_last_working_material(cfg, rivet, certs, tmp_path):
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    port = tls_gateway(cfg)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(*a))
    rv = rivet(cfg)
    ctx = client_ctx(certs.ca_crt)
    assert tls_get(port, "a.example.com", ctx=ctx)[:2] == (200, b"vs-a")
    cfg.remove("virtualservices", "a")
    rv.wait_status("Gateway", "tls", "Warning", timeout=10)
    # re-created with an unusable certificate: no last working material any more
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(str(bad), a[1]))
    r = rv.wait_status("VirtualService", "a", "Rejected", timeout=10)
    assert "last working" not in r["reason"] and str(bad) in r["reason"], r
    assert _handshake_refused(port, "a.example.com", ctx)


def test_gateway_switched_to_ssl_refuses_old_plain_connections(cfg, rivet, certs):
    """A keep-alive plain connection accepted before its Gateway became `ssl: true` must not
    reach the (now TLS-only, here mTLS) services: 421 and the connection closes."""
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    client = certs.leaf("client", "client-sw", ["URI:spiffe://test/sw"], client=True)
    port = cfg.gateway("gw")
    cfg.vs("a", [route(direct=(200, "vs-a"))], domains=["*"])
    rv = rivet(cfg)
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    c.request("GET", "/", headers={"Host": "a.example.com"})
    assert c.getresponse().read() == b"vs-a"
    cfg.gateway("gw", port=port, ssl=True)
    direct_vs(cfg, "a", "vs-a", ["*"], ssl_cfg(*a, rootCa=certs.ca_crt))
    ctx = client_ctx(certs.ca_crt, *client)

    def switched():
        ls = rv.config_dump()["listeners"]
        return ls and ls[0].get("ssl") and ls[0]["virtualHosts"] and "sslConfig" in ls[0]["virtualHosts"][0]
    wait_for(switched, timeout=10, msg="the ssl config published")
    # (a TLS client accepted by a worker still on the plain config would wait for its own
    # timeout: each try is short)
    wait_for(lambda: _safe_tls_status(port, ctx) == 200, timeout=20, msg="the Gateway to serve TLS")
    c.request("GET", "/", headers={"Host": "a.example.com"})
    r = c.getresponse()
    assert r.status == 421 and r.getheader("connection", "").lower() == "close", (r.status, r.getheaders())
    r.read()
    c.close()
    assert rv.alive()


def _safe_tls_status(port, ctx):
    try:
        return tls_get(port, "a.example.com", ctx=ctx, timeout=2)[0]
    except (OSError, ssl.SSLError):
        return None


def _big_san_client(certs, name, n):
    sans = ["URI:spiffe://test/%s" % name] + ["DNS:host%03d.a-rather-long-subdomain.example.com" % i
                                              for i in range(n)]
    return certs.leaf(name, name, sans, client=True)


def test_client_cert_with_many_sans_keeps_identity(cfg, rivet, certs, backend):
    """A verified client certificate whose identity is longer than the header cap (120 DNS
    SANs, about 5.5 KB) is served on an mTLS service (was 421: the formatted identity came out
    empty and was taken for "no certificate"), and its identity is forwarded and logged with
    Hash, Subject and a prefix of the SANs (was: none at all with oneWayTls)."""
    be = backend("be")
    a = certs.leaf("a", "a.example.com", ["DNS:a.example.com"])
    big = _big_san_client(certs, "bigsan", 120)
    port = tls_gateway(cfg)
    cfg.upstream("up", [be])
    cfg.vs("m", [route(prefix="/", upstream="up")], domains=["m.example.com"],
           sslConfig=ssl_cfg(*a, sni=["m.example.com"], rootCa=certs.ca_crt))
    cfg.vs("ow", [route(prefix="/", upstream="up")], domains=["ow.example.com"],
           sslConfig=ssl_cfg(*a, sni=["ow.example.com"], rootCa=certs.ca_crt, oneWayTls=True))
    rv = rivet(cfg, args=["--access-log", "json"])
    ctx = client_ctx(certs.ca_crt, *big)
    import hashlib
    want_hash = "Hash=" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(big[0]).read())).hexdigest()
    for i, sni in enumerate(["m.example.com", "ow.example.com"]):
        st, body, _ = tls_get(port, sni, ctx=ctx, headers={"X-Request-Id": "bigsan-%d" % i})
        assert st == 200, (sni, st, body[:200])
        hdrs = [(k.lower(), v) for k, v in json.loads(body)["headers"]]
        xfcc = [v for k, v in hdrs if k == "x-forwarded-client-cert"]
        assert len(xfcc) == 1, (sni, [k for k, _ in hdrs])
        v = xfcc[0]
        parts = v.split(";")
        assert parts[0] == want_hash and parts[1] == 'Subject="CN=bigsan"', v[:300]
        assert parts[2] == "URI=spiffe://test/bigsan", v[:300]
        dns = [p[4:] for p in parts[3:]]
        assert all(p.startswith("DNS=") for p in parts[3:]), v
        # a prefix of the certificate's DNS names, each whole, within the documented 4096 bytes
        assert 0 < len(dns) < 120 and len(v) <= 4096, (len(dns), len(v))
        assert dns == ["host%03d.a-rather-long-subdomain.example.com" % k for k in range(len(dns))], dns[-3:]

    def recs():
        out = {}
        for ln in rv.stdout().splitlines():
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            if isinstance(r, dict) and str(r.get("x_request_id", "")).startswith("bigsan-"):
                out[r["x_request_id"]] = r
        return out if len(out) == 2 else None
    by_id = wait_for(recs, timeout=10, msg="2 access log records")
    for r in by_id.values():
        assert r["response_code"] == 200, r
        assert (r["downstream_peer_cert"] or "").startswith(want_hash + ';Subject="CN=bigsan";URI='), r
    assert len(be.requests) == 2


def test_request_trailers_dropped_xfcc_trailer_never_forwarded(mtls):
    """A client's x-forwarded-client-cert sent as a chunked request *trailer* never reaches the
    upstream (was: forwarded as sent): request trailers are dropped, as Envoy's HTTP/1 codec
    does by default. The body, the last chunk and a request pipelined right after the
    trailers all arrive intact, also with the trailers split over several TLS records."""
    from harness import parse_responses, read_until_close
    m = mtls
    ctx = client_ctx(m["certs"].ca_crt, *m["client"])
    raw = socket.create_connection((HOST, m["port"]), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="a.example.com")
    try:
        head = b"POST /t1 HTTP/1.1\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\nTrailer: X-Forwarded-Client-Cert\r\n\r\n"
        s.sendall(head + b"5\r\nhello\r\n0\r\nX-Forwarded-Client-Cert: Hash=forged;Subject=\"CN=admin\"\r\n")
        time.sleep(0.2)     # let the first part be read (and forwarded) on its own; not asserted
        s.sendall(b"X-Other-Trailer: tval\r\n\r\nPOST /t2 HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Forwarded-Client-Cert: forged2\r\n\r\n")
        res = read_until_close(s, timeout=10)
    finally:
        s.close()
    rs, _, _ = parse_responses(res.data)
    assert [r.status for r in rs] == [200, 200], res
    seen = m["be"].wait_requests(2)
    assert [x.body for x in seen] == [b"hello", b"abc"], seen
    got = m["be"].all_raw()
    assert b"forged" not in got and b"admin" not in got and b"X-Other-Trailer" not in got, got
    assert got.count(b"0\r\n\r\n") == 2, got
    # rivet's own header still carries the verified identity
    for x in seen:
        xfcc = [v for k, v in x.headers if k.lower() == "x-forwarded-client-cert"]
        assert len(xfcc) == 1 and 'Subject="CN=client-one"' in xfcc[0], x.headers
