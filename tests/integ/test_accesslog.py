"""Access log on stdout (`--access-log text|json|off`) and config errors logged once per change
(stderr), not per request."""
import json
import re
import time

from harness import NS, log_lines_with, route, wait_for

JSON_KEYS = {"start_time", "method", "path", "protocol", "upstream_host", "x_request_id", "authority",
             "route_name", "upstream_cluster", "response_code", "response_flags", "bytes_received",
             "bytes_sent", "duration"}


def _access_lines(rv):
    """stdout lines (complete ones only) that look like access log records."""
    out = rv.stdout()
    if not out.endswith("\n"):
        out = out[:out.rfind("\n") + 1]
    return [ln for ln in out.splitlines() if ln.strip()]


def _wait_lines(rv, n, timeout=5.0):
    return wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(_access_lines(rv)), timeout,
                    msg="%d access log lines on stdout" % n)


def _setup(cfg, backend):
    b = backend("b1")
    port = cfg.gateway()
    cfg.upstream("up", [b])
    cfg.vs("vs", [route(prefix="/api", upstream="up", name="api"),
                  route(exact="/direct", direct=(201, "made"))])
    return b, port


def test_json_one_object_per_request(cfg, backend, rivet):
    b, port = _setup(cfg, backend)
    rv = rivet(cfg, args=["--access-log", "json"])
    r1 = rv.get("/api/x?q=1", headers={"X-Request-Id": "req-json-1"})
    r2 = rv.get("/nothing-here", headers={"X-Request-Id": "req-json-2"})
    r3 = rv.get("/direct", headers={"X-Request-Id": "req-json-3"})
    assert (r1.status, r2.status, r3.status) == (200, 404, 201)
    lines = _wait_lines(rv, 3)
    time.sleep(0.2)
    lines = _access_lines(rv)
    assert len(lines) == 3, lines
    recs = [json.loads(ln) for ln in lines]           # every line is one valid JSON object
    for rec in recs:
        assert isinstance(rec, dict), rec
        assert JSON_KEYS <= set(rec), (JSON_KEYS - set(rec), rec)
    by_id = {rec["x_request_id"]: rec for rec in recs}
    assert set(by_id) == {"req-json-1", "req-json-2", "req-json-3"}, recs

    ok = by_id["req-json-1"]
    assert ok["response_code"] == 200 and isinstance(ok["response_code"], int)
    assert ok["response_flags"] == "-"
    assert ok["method"] == "GET" and ok["path"] == "/api/x?q=1" and ok["protocol"] == "HTTP/1.1"
    assert ok["authority"] == "test.local"
    assert ok["upstream_host"] == "127.0.0.1:%d" % b.port
    assert ok["bytes_sent"] == len(r1.body)
    assert isinstance(ok["duration"], int) and ok["duration"] >= 0

    nr = by_id["req-json-2"]
    assert nr["response_code"] == 404
    assert nr["response_flags"] == "NR"
    assert nr["upstream_host"] is None and nr["upstream_cluster"] is None

    d = by_id["req-json-3"]
    assert d["response_code"] == 201 and d["response_flags"] == "-"
    assert d["bytes_sent"] == 4


def test_json_escapes_request_fields(cfg, backend, rivet):
    """A quote, a backslash and a non-ASCII byte in a request-derived field keep the line valid
    JSON and round-trip (the quote and backslash exactly)."""
    _setup(cfg, backend)
    rv = rivet(cfg, args=["--access-log", "json"])
    res = rv.raw(b'GET /api/e HTTP/1.1\r\nHost: test.local\r\nX-Request-Id: a"b\\c\xe9d\r\n'
                 b'Connection: close\r\n\r\n')
    assert res.first_status() == 200, res
    lines = _wait_lines(rv, 1)
    assert len(lines) == 1, lines
    rec = json.loads(lines[0])
    rid = rec["x_request_id"]
    assert rid.startswith('a"b\\c') and rid.endswith("d"), rec


def test_json_upstream_failure_flag(cfg, rivet, closed_port):
    cp = closed_port()
    port = cfg.gateway()
    cfg.upstream("dead", [cp])
    cfg.vs("vs", [route(prefix="/", upstream="dead")])
    rv = rivet(cfg, args=["--access-log", "json"])
    r = rv.get("/x", port=port)
    assert r.status == 503, r
    rec = json.loads(_wait_lines(rv, 1)[0])
    assert rec["response_code"] == 503
    assert "UF" in rec["response_flags"].split(","), rec


def test_off_writes_nothing(cfg, backend, rivet):
    b, port = _setup(cfg, backend)
    rv = rivet(cfg, args=["--access-log", "off"])
    for i in range(5):
        assert rv.get("/api/%d" % i).status == 200
    assert rv.get("/missing").status == 404
    assert rv.get("/direct").status == 201
    # the stats see them, so they were served and would have been logged by now
    wait_for(lambda: len(b.requests) == 5, msg="5 proxied requests")
    time.sleep(0.3)
    assert rv.stdout() == "", rv.stdout()[:2000]


def test_text_default_one_line_per_request(cfg, backend, rivet):
    b, port = _setup(cfg, backend)
    rv = rivet(cfg)          # no --access-log: text on stdout
    assert rv.get("/api/one", headers={"X-Request-Id": "txt-1"}).status == 200
    assert rv.get("/nope", headers={"X-Request-Id": "txt-2"}).status == 404
    assert rv.get("/direct", headers={"X-Request-Id": "txt-3"}).status == 201
    _wait_lines(rv, 3)
    time.sleep(0.2)
    lines = _access_lines(rv)
    assert len(lines) == 3, lines
    for ln in lines:
        assert not ln.lstrip().startswith("{"), ln           # text, not JSON
        assert re.match(r'^\[\d{4}-\d\d-\d\dT[0-9:.]+Z\] "GET /\S* HTTP/1\.1" \d{3} \S+ ', ln), ln
    nr = log_lines_with("\n".join(lines), "404", "NR")
    assert len(nr) == 1 and '"txt-2"' in nr[0] and '"GET /nope HTTP/1.1"' in nr[0], lines
    ok = [ln for ln in lines if '"txt-1"' in ln]
    assert len(ok) == 1 and ' 200 - ' in ok[0] and "127.0.0.1:%d" % b.port in ok[0], ok
    assert '"test.local"' in ok[0]


def test_text_explicit_matches_default(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(exact="/x", direct=(200, "x"))])
    rv = rivet(cfg, args=["--access-log", "text"])
    for _ in range(4):
        assert rv.get("/y").status == 404
    lines = _wait_lines(rv, 4)
    time.sleep(0.2)
    lines = _access_lines(rv)
    assert len(lines) == 4 and all(log_lines_with(ln, "404", "NR") for ln in lines), lines


# ---------------------------------------------------------------------------------------
# config errors: logged once per change


def _count(text, pattern):
    return len(re.findall(pattern, text, re.M))


def test_config_error_logged_once_per_change(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg, args=["--access-log", "off"])
    assert rv.get("/").status == 200
    rejected = r"VirtualService %s/vs rejected: .*nmae.*unknown field" % NS
    accepted = r"VirtualService %s/vs accepted\b" % NS

    # break it: an unknown field
    cfg.write("virtualservices", "vs",
              "metadata: {name: vs, namespace: %s}\n"
              "virtualHost:\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - matchers: [{prefix: /}]\n"
              "    routeAction: {single: {upstream: {nmae: up, namespace: %s}}}\n" % (NS, NS))
    st = rv.wait_status("VirtualService", "vs", "Rejected")
    assert "nmae" in st["reason"], st
    for i in range(50):
        assert rv.get("/r%d" % i).status == 200       # the last accepted version keeps serving
    # an unrelated change makes a new snapshot: the unchanged error is not logged again
    cfg.upstream("up", [b, b])
    wait_for(lambda: re.search(r"config version 3 published", rv.stderr()), msg="config version 3")
    time.sleep(0.2)
    err = rv.stderr()
    assert _count(err, rejected) == 1, err[-4000:]
    assert _count(err, r"VirtualService %s/vs rejected" % NS) == 1, err[-4000:]
    assert _count(err, accepted) == 0, err[-4000:]

    # fix it: one "accepted" line
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv.wait_status("VirtualService", "vs", "Accepted")
    for i in range(20):
        assert rv.get("/f%d" % i).status == 200
    time.sleep(0.2)
    err = rv.stderr()
    assert _count(err, accepted) == 1, err[-4000:]
    assert _count(err, r"VirtualService %s/vs rejected" % NS) == 1, err[-4000:]
