"""Gateways: which VirtualServices an httpGateway serves (virtualServices refs,
virtualServiceSelector, virtualServiceNamespaces), several Gateways on several ports,
`ssl: true` without ssl services; and the routing features that live next to it: hostname upstreams,
the `:authority` header matcher, retries with retryBackOff."""
from harness import NS, can_connect, free_port, raw, route, run_cli


def _gw(cfg, name, http_gateway, **extra):
    """A Gateway on a free loopback port with the given httpGateway body; returns the port."""
    port = free_port()
    body = {"bindAddress": "127.0.0.1", "bindPort": port, "httpGateway": http_gateway}
    body.update(extra)
    cfg.write("gateways", name, body)
    cfg.gateway_ports[name] = port
    return port


def _served(rv, port, host="test.local", path="/"):
    r = rv.get(path, port=port, host=host)
    return (r.status, r.text) if r.status != 200 else r.text


# ---------------------------------------------------------------------------------------
# selection


def test_virtual_services_refs_only_listed(cfg, rivet):
    """httpGateway.virtualServices: only the listed VirtualServices are served there; the others
    (which the default selection would take) answer 404 on that Gateway."""
    port = _gw(cfg, "gw", {"virtualServices": [{"name": "listed", "namespace": NS}]})
    cfg.vs("listed", [route(direct=(200, "listed"))], domains=["listed.example"])
    cfg.vs("other", [route(direct=(200, "other"))], domains=["other.example"])
    rv = rivet(cfg)
    assert _served(rv, port, "listed.example") == "listed"
    r = rv.get("/", port=port, host="other.example")
    assert r.status == 404, r
    st = rv.resource_status("Gateway", "gw")
    assert st and st["state"] == "Accepted", st


def test_virtual_services_ref_namespace_defaults_to_gateways(cfg, rivet):
    """A ref without namespace means the Gateway's namespace."""
    port = _gw(cfg, "gw", {"virtualServices": [{"name": "listed"}]})
    cfg.vs("listed", [route(direct=(200, "listed"))])
    rv = rivet(cfg)
    assert _served(rv, port) == "listed"


def test_virtual_service_selector_plain_label_map(cfg, rivet):
    """Gloo's form `virtualServiceSelector: {app: web}` selects by metadata.labels (all of them)."""
    port = _gw(cfg, "gw", {"virtualServiceSelector": {"app": "web"}})
    cfg.vs("web", [route(direct=(200, "web"))], domains=["web.example"], labels={"app": "web", "tier": "x"})
    cfg.vs("api", [route(direct=(200, "api"))], domains=["api.example"], labels={"app": "api"})
    cfg.vs("nolabels", [route(direct=(200, "nolabels"))], domains=["none.example"])
    rv = rivet(cfg)
    assert _served(rv, port, "web.example") == "web"
    assert rv.get("/", port=port, host="api.example").status == 404
    assert rv.get("/", port=port, host="none.example").status == 404


def test_virtual_service_selector_follows_label_edits(cfg, rivet):
    """Relabelling a VirtualService moves it in or out of a selector Gateway."""
    port = _gw(cfg, "gw", {"virtualServiceSelector": {"app": "web"}})
    cfg.vs("vs", [route(direct=(200, "vs"))], labels={"app": "api"})
    rv = rivet(cfg)
    assert rv.get("/", port=port).status == 404
    cfg.vs("vs", [route(direct=(200, "vs"))], labels={"app": "web"})
    rv.wait_body("/", "vs", port=port)


def test_virtual_service_namespaces_restricts(cfg, rivet):
    """virtualServiceNamespaces limits the default (all) selection to those namespaces."""
    port = _gw(cfg, "gw", {"virtualServiceNamespaces": ["team-a"]})
    cfg.vs("a", [route(direct=(200, "team-a"))], domains=["a.example"], ns="team-a")
    cfg.vs("b", [route(direct=(200, "team-b"))], domains=["b.example"], ns="team-b")
    cfg.vs("sys", [route(direct=(200, "sys"))], domains=["sys.example"])
    rv = rivet(cfg)
    assert _served(rv, port, "a.example") == "team-a"
    assert rv.get("/", port=port, host="b.example").status == 404
    assert rv.get("/", port=port, host="sys.example").status == 404


def test_virtual_service_namespaces_with_selector(cfg, rivet):
    """Selector and namespaces together: the labels must match and the namespace be listed."""
    port = _gw(cfg, "gw", {"virtualServiceSelector": {"app": "web"}, "virtualServiceNamespaces": ["team-a"]})
    cfg.vs("a", [route(direct=(200, "a-web"))], domains=["a.example"], ns="team-a", labels={"app": "web"})
    cfg.vs("a2", [route(direct=(200, "a-api"))], domains=["a2.example"], ns="team-a", labels={"app": "api"})
    cfg.vs("b", [route(direct=(200, "b-web"))], domains=["b.example"], ns="team-b", labels={"app": "web"})
    rv = rivet(cfg)
    assert _served(rv, port, "a.example") == "a-web"
    assert rv.get("/", port=port, host="a2.example").status == 404
    assert rv.get("/", port=port, host="b.example").status == 404


def test_virtual_service_namespaces_star_is_all(cfg, rivet):
    port = _gw(cfg, "gw", {"virtualServiceNamespaces": ["*"]})
    cfg.vs("a", [route(direct=(200, "team-a"))], domains=["a.example"], ns="team-a")
    cfg.vs("b", [route(direct=(200, "team-b"))], domains=["b.example"], ns="team-b")
    cfg.vs("sys", [route(direct=(200, "sys"))], domains=["sys.example"])
    rv = rivet(cfg)
    assert _served(rv, port, "a.example") == "team-a"
    assert _served(rv, port, "b.example") == "team-b"
    assert _served(rv, port, "sys.example") == "sys"


def test_two_gateways_two_ports_different_virtual_services(cfg, rivet):
    """Two Gateways are two listeners, each serving its own VirtualServices; both claim '*'
    without a conflict since they are on different Gateways."""
    pa = _gw(cfg, "gw-a", {"virtualServices": [{"name": "vs-a", "namespace": NS}]})
    pb = _gw(cfg, "gw-b", {"virtualServiceSelector": {"gw": "b"}})
    cfg.vs("vs-a", [route(direct=(200, "from-a"))], labels={"gw": "a"})
    cfg.vs("vs-b", [route(direct=(200, "from-b"))], labels={"gw": "b"})
    rv = rivet(cfg)
    assert pa != pb
    for _ in range(3):
        assert _served(rv, pa) == "from-a"
        assert _served(rv, pb) == "from-b"
    for name in ("vs-a", "vs-b"):
        st = rv.resource_status("VirtualService", name)
        assert st and st["state"] == "Accepted", st
    # moving vs-b to gateway a by label has no effect on a (it lists refs), and b loses it
    cfg.vs("vs-b", [route(direct=(200, "from-b"))], labels={"gw": "a"})
    rv.wait_body("/", lambda r: r.status == 404, port=pb)
    assert _served(rv, pa) == "from-a"


# ---------------------------------------------------------------------------------------
# ssl: true


def test_ssl_true_without_ssl_services_warns_others_serve(cfg, rivet):
    """An ssl Gateway serves only VirtualServices with an sslConfig (Gloo): with none, it is
    Accepted with a Warning saying TLS connections are refused, and the plain one serves."""
    good = _gw(cfg, "plain", {})
    tls = _gw(cfg, "tls", {}, ssl=True)
    cfg.vs("vs", [route(direct=(200, "ok"))])
    rv = rivet(cfg, ready=False)
    rv.wait_ready(gateway_ports=False)
    st = rv.wait_status("Gateway", "tls", "Warning")
    reason = st.get("reason") or ""
    assert "ssl" in reason and "sslConfig" in reason, st
    assert rv.resource_status("Gateway", "plain")["state"] == "Accepted"
    assert rv.resource_status("VirtualService", "vs")["state"] == "Accepted"
    assert _served(rv, good) == "ok"
    # the port accepts, but no TLS (or plain) conversation happens there
    r = raw(tls, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.data == b"", r

    p = run_cli("validate", "--dir", cfg.root)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("Gateway %s/tls " % NS)]
    assert len(lines) == 1 and "Warning" in lines[0], p.stdout


def test_ssl_false_accepted(cfg, rivet):
    port = _gw(cfg, "gw", {}, ssl=False)
    cfg.vs("vs", [route(direct=(200, "ok"))])
    rv = rivet(cfg)
    assert _served(rv, port) == "ok"
    assert rv.resource_status("Gateway", "gw")["state"] == "Accepted"


# ---------------------------------------------------------------------------------------
# hostname upstreams


def test_hostname_upstream_localhost_routes(cfg, backend, rivet):
    b = backend("named", localhost=True)
    port = cfg.gateway()
    cfg.upstream("up", [("localhost", b.port)])
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg)
    r = rv.get("/by-name", port=port)
    assert r.status == 200, r
    assert r.header("x-backend") == "named"
    assert b.wait_requests(1)[0].path == "/by-name"
    st = rv.resource_status("Upstream", "up")
    assert st and st["state"] == "Accepted", st


def test_hostname_upstream_unresolvable_warning_503(cfg, backend, rivet):
    b = backend("ok")
    port = cfg.gateway()
    cfg.upstream("bad", [("does-not-exist.invalid", 8080)])
    cfg.upstream("good", [b])
    cfg.vs("vs", [route(prefix="/bad", upstream="bad"), route(prefix="/", upstream="good")])
    rv = rivet(cfg)
    st = rv.wait_status("Upstream", "bad", "Warning")
    assert "does-not-exist.invalid" in (st.get("reason") or ""), st
    r = rv.get("/bad/x", port=port)
    assert r.status == 503, r
    assert rv.get("/fine", port=port).status == 200
    assert b.paths() == ["/fine"]


def test_hostname_upstream_mixed_hosts_skip_unresolvable(cfg, backend, rivet):
    """One unresolvable host among others is left out; the rest still gets every request."""
    b = backend("ok", localhost=True)
    port = cfg.gateway()
    cfg.upstream("up", [("does-not-exist.invalid", b.port), ("localhost", b.port)])
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg)
    st = rv.wait_status("Upstream", "up", "Warning")
    assert "does-not-exist.invalid" in st["reason"], st
    for i in range(6):
        r = rv.get("/m%d" % i, port=port)
        assert r.status == 200, r


# ---------------------------------------------------------------------------------------
# :authority matcher


def test_authority_header_matcher(cfg, rivet):
    port = cfg.gateway()
    cfg.vs("vs", [
        route(matchers=[{"prefix": "/", "headers": [{"name": ":authority", "value": "a.example"}]}],
              direct=(200, "authority-a")),
        route(matchers=[{"prefix": "/", "headers": [{"name": ":authority", "value": "b\\..*", "regex": True}]}],
              direct=(200, "authority-b")),
        route(prefix="/", direct=(200, "fallback")),
    ])
    rv = rivet(cfg)
    assert _served(rv, port, "a.example") == "authority-a"
    # (Host case is left out: Envoy matches :authority as received, without lower-casing)
    assert _served(rv, port, "b.example") == "authority-b"
    assert _served(rv, port, "c.example") == "fallback"
    assert _served(rv, port, "a.example.org") == "fallback"


# ---------------------------------------------------------------------------------------
# retries with retryBackOff


def test_retry_backoff_accepted_and_retries(cfg, backend, rivet):
    b = backend("flaky")
    cfg.simple(b, route_options={"retries": {
        "retryOn": "5xx", "numRetries": 3,
        "retryBackOff": {"baseInterval": "0.010s", "maxInterval": "0.050s"}}})
    rv = rivet(cfg)
    st = rv.resource_status("VirtualService", "vs")
    assert st and st["state"] == "Accepted", st
    r = rv.get("/status/503")
    assert r.status == 503, r
    assert len(b.wait_requests(4)) == 4
    assert r.header("x-backend") == "flaky"      # the last upstream answer is forwarded
    assert len(b.requests) == 4                   # 1 try + numRetries, no more
    b.clear()
    assert rv.get("/ok").status == 200
    assert len(b.wait_requests(1)) == 1


def test_retry_backoff_base_interval_required(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options={"retries": {"retryOn": "5xx", "numRetries": 2,
                                             "retryBackOff": {"maxInterval": "1s"}}})
    p = run_cli("validate", "--dir", cfg.root)
    assert p.returncode == 1, (p.stdout, p.stderr)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("VirtualService %s/vs " % NS)]
    assert line and "Rejected" in line[0] and "baseInterval" in line[0], p.stdout
