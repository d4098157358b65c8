"""Self-tests of the Consul double (tests/doubles/consul.py).

Every test that takes the `consul` fixture runs twice: against a fresh in-process double, and
against a live Consul when CONSUL_HTTP_ADDR is set (host:port or http://host:port; the token in
CONSUL_HTTP_TOKEN is sent when set). Without it the live variant is skipped and says why. Tests
that need the double's switches (faults, ACL mode, extra datacenters, exact bytes) take the
`double` fixture and never run against a live Consul.

Run: /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/doubles
"""
import base64
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

try:
    from . import consul as cd
except ImportError:  # collected without the package (rootdir-relative import)
    sys.path.insert(0, os.path.dirname(__file__))
    import consul as cd  # noqa: E402

LIVE = os.environ.get("CONSUL_HTTP_ADDR", "")
HERE = os.path.dirname(os.path.abspath(__file__))

# What a busy machine (CI runs these after two rivet suites, on 2 cores shared with other work)
# may add to a request's round trip. Upper bounds on a measured time allow it: the bound still
# tells "returns around the wait" from "returns at the next wait, or never".
SLACK = 1.0


# --------------------------------------------------------------------------------------------
# client helpers (http.client for requests, a raw socket where the exact bytes matter)


class R:
    def __init__(self, status, reason, headers, body, elapsed=0.0):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body
        self.elapsed = elapsed

    def h(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    @property
    def names(self):
        return [n for n, _ in self.headers]

    @property
    def index(self):
        return int(self.h("X-Consul-Index"))

    def json(self):
        return json.loads(self.body)

    def ordered(self):
        return json.loads(self.body, object_pairs_hook=lambda kv: kv)

    def __repr__(self):
        return "<R %d %r %r>" % (self.status, self.headers, self.body[:300])


class Target:
    def __init__(self, kind, host, port, double=None, token=""):
        self.kind, self.host, self.port, self.double, self.token = kind, host, port, double, token
        self.uid = uuid.uuid4().hex[:10]
        self.prefix = "rivet-double-test/%s/" % self.uid
        self.services = []

    def name(self, base):
        return "rdt-%s-%s" % (base, self.uid)

    def req(self, method, path, body=None, headers=None, timeout=10):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        hdrs = {}
        if self.token:
            hdrs["X-Consul-Token"] = self.token
        hdrs.update(headers or {})
        if isinstance(body, str):
            body = body.encode()
        t0 = time.monotonic()
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            return R(r.status, r.reason, r.getheaders(), data, time.monotonic() - t0)
        finally:
            c.close()

    def put(self, key, value, query=""):
        r = self.req("PUT", "/v1/kv/" + key + query, body=value)
        assert r.status == 200, r
        return r.json()

    def get(self, key, query=""):
        return self.req("GET", "/v1/kv/" + key + query)

    def register(self, name, sid=None, **fields):
        body = {"Name": name, "ID": sid or name}
        body.update(fields)
        r = self.req("PUT", "/v1/agent/service/register", body=json.dumps(body))
        assert r.status == 200, r
        self.services.append(sid or name)
        return sid or name

    def wait_for(self, pred, timeout=8.0):
        """The double applies agent changes at once; a live agent syncs them shortly after."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.05)

    def cleanup(self):
        for sid in self.services:
            try:
                self.req("PUT", "/v1/agent/service/deregister/" + sid)
            except OSError:
                pass
        try:
            self.req("DELETE", "/v1/kv/" + self.prefix + "?recurse")
        except OSError:
            pass


def _live_target():
    addr = LIVE
    if "://" in addr:
        scheme, addr = addr.split("://", 1)
        if scheme != "http":
            pytest.skip("CONSUL_HTTP_ADDR %s: only plain http is supported by these tests" % LIVE)
    addr = addr.split("/", 1)[0]
    host, _, port = addr.rpartition(":")
    return Target("live", host or "127.0.0.1", int(port or 8500), token=os.environ.get("CONSUL_HTTP_TOKEN", ""))


@pytest.fixture(params=["double", "live"])
def consul(request):
    if request.param == "live":
        if not LIVE:
            pytest.skip("CONSUL_HTTP_ADDR not set: the live-Consul run of this test is skipped")
        t = _live_target()
    else:
        d = cd.ConsulDouble().start()
        t = Target("double", "127.0.0.1", d.port, double=d)
    yield t
    t.cleanup()
    if t.double is not None:
        t.double.stop()


@pytest.fixture
def make_double():
    made = []

    def make(**kw):
        d = cd.ConsulDouble(**kw).start()
        made.append(d)
        return d, Target("double", "127.0.0.1", d.port, double=d)

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def double(make_double):
    return make_double()[1]


def raw_request(port, data, timeout=3.0, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            out += c
        return out
    finally:
        s.close()


def split_raw(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], lines[1:], body


def in_thread(fn):
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("r", fn()), daemon=True)
    th.start()
    return th, box


def held(t, n=1, timeout=10.0):
    """Wait until the double holds n blocking queries (a thread's request can start late on a
    busy machine: a write made before it arrives would not wake it but answer it at once).
    A live Consul has no such counter: a pause then."""
    if t.double is None:
        time.sleep(0.3)
        return
    deadline = time.monotonic() + timeout
    while t.double.blocking_queries < n:
        assert time.monotonic() < deadline, "the double holds %d blocking queries, not %d" % (
            t.double.blocking_queries, n)
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------
# KV: read


def test_kv_put_then_get_entry_fields_and_index(consul):
    key = consul.prefix + "gateway"
    assert consul.put(key, "test") is True
    r = consul.get(key)
    assert r.status == 200
    assert r.h("Content-Type") == "application/json"
    entries = r.ordered()
    assert len(entries) == 1
    fields = [k for k, _ in entries[0]]
    assert fields == ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"]
    e = dict(entries[0])
    assert e["Key"] == key and e["Flags"] == 0 and e["LockIndex"] == 0
    assert base64.b64decode(e["Value"]) == b"test"
    assert e["CreateIndex"] == e["ModifyIndex"] >= 1
    assert r.index == e["ModifyIndex"]
    assert r.h("X-Consul-Knownleader") == "true"
    assert r.h("X-Consul-Lastcontact") == "0"


def test_kv_meta_header_names_are_go_canonical(consul):
    consul.put(consul.prefix + "k", "v")
    r = consul.get(consul.prefix + "k")
    for name in ("X-Consul-Index", "X-Consul-Knownleader", "X-Consul-Lastcontact",
                 "X-Consul-Default-Acl-Policy"):
        assert name in r.names, (name, r.names)
    assert "X-Consul-KnownLeader" not in r.names and "X-Consul-LastContact" not in r.names


def test_kv_read_bytes_match_protocols_md_example(double):
    """protocols.md 1: the header block of a KV read, byte for byte (plus Date, Content-Length)."""
    double.double.kv_put("gloo/upstreams/default/foo", b"test")
    idx = double.double.kv_get("gloo/upstreams/default/foo")["ModifyIndex"]
    raw = raw_request(double.port, b"GET /v1/kv/gloo/upstreams/default/foo HTTP/1.1\r\n"
                                   b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    status, lines, body = split_raw(raw)
    assert status == "HTTP/1.1 200 OK"
    assert lines[:6] == [
        "Content-Type: application/json",
        "X-Consul-Default-Acl-Policy: allow",
        "X-Consul-Effective-Consistency: leader",
        "X-Consul-Index: %d" % idx,
        "X-Consul-Knownleader: true",
        "X-Consul-Lastcontact: 0",
    ]
    assert lines[6].startswith("Date: ") and lines[6].endswith(" GMT")
    assert lines[7] == "Content-Length: %d" % len(body)
    assert lines[8:] == ["Connection: close"]
    assert body == (b'[{"LockIndex":0,"Key":"gloo/upstreams/default/foo","Flags":0,"Value":"dGVzdA==",'
                    b'"CreateIndex":%d,"ModifyIndex":%d}]' % (idx, idx))


def test_kv_missing_key_is_404_with_index_and_empty_body(consul):
    r = consul.get(consul.prefix + "absent")
    assert r.status == 404
    assert r.body == b""
    assert r.h("Content-Length") == "0"
    assert r.h("Content-Type") is None
    assert r.index >= 1
    assert r.h("X-Consul-Knownleader") == "true"


def test_kv_missing_key_index_is_the_kv_table_index(double):
    d = double.double
    d.kv_put("a/x", b"1")
    last = d.kv_put("b/y", b"2")
    r = double.get("c/none")
    assert r.status == 404 and r.index == last


def test_kv_empty_store_index_is_never_zero(double):
    r = double.get("nothing/here")
    assert r.status == 404 and r.index == 1


def test_kv_recurse_lists_prefix_sorted_with_max_index(consul):
    p = consul.prefix
    consul.put(p + "b", "2")
    consul.put(p + "a/c", "3")
    consul.put(p + "a", "1")
    r = consul.get(p, "?recurse")
    assert r.status == 200
    ents = r.json()
    assert [e["Key"] for e in ents] == [p + "a", p + "a/c", p + "b"]
    assert r.index == max(e["ModifyIndex"] for e in ents)
    assert consul.get(p + "zz/", "?recurse").status == 404


def test_kv_boolean_flags_are_presence_only(consul):
    p = consul.prefix
    consul.put(p + "x", "1")
    for q in ("?recurse", "?recurse=", "?recurse=true", "?recurse=false"):
        r = consul.get(p, q)
        assert r.status == 200 and len(r.json()) == 1, (q, r)
    r = consul.get(p + "x", "?raw=false")
    assert r.status == 200 and r.body == b"1"


def test_kv_delete_moves_prefix_index_up(consul):
    p = consul.prefix
    consul.put(p + "a", "1")
    consul.put(p + "b", "2")
    before = consul.get(p, "?recurse").index
    r = consul.req("DELETE", "/v1/kv/" + p + "b")
    assert r.status == 200 and r.json() is True
    after = consul.get(p, "?recurse")
    assert [e["Key"] for e in after.json()] == [p + "a"]
    assert after.index > before  # the tombstone counts


def test_kv_keys_and_separator(consul):
    p = consul.prefix
    for k in ("web/bar", "web/foo", "web/subdir/x", "web/subdir/y"):
        consul.put(p + k, "v")
    r = consul.get(p + "web/", "?keys")
    assert r.status == 200
    assert r.json() == [p + "web/bar", p + "web/foo", p + "web/subdir/x", p + "web/subdir/y"]
    r = consul.get(p + "web/", "?keys&separator=/")
    assert r.json() == [p + "web/bar", p + "web/foo", p + "web/subdir/"]
    assert r.index == max(e["ModifyIndex"] for e in consul.get(p, "?recurse").json())
    assert consul.get(p + "nope/", "?keys").status == 404


def test_kv_keys_on_empty_root_is_200_empty_list(double):
    r = double.req("GET", "/v1/kv/?keys")
    assert r.status == 200 and r.body == b"[]" and r.index == 1


def test_kv_raw_returns_value_bytes(consul):
    key = consul.prefix + "raw"
    consul.put(key, b"\x00bin\xffary")
    r = consul.get(key, "?raw")
    assert r.status == 200
    assert r.body == b"\x00bin\xffary"
    assert r.h("Content-Type") == "text/plain"
    r = consul.get(consul.prefix, "?recurse&raw")  # raw applies to single-key reads only
    assert r.h("Content-Type") == "application/json"


def test_kv_raw_has_xss_guard_headers(double):
    double.put("k", "<script>")
    r = double.get("k", "?raw")
    assert r.h("X-Content-Type-Options") == "nosniff"
    assert r.h("Content-Security-Policy") == "sandbox"
    assert r.h("Content-Length") == "8"


def test_kv_empty_value_is_null(consul):
    key = consul.prefix + "empty"
    consul.put(key, b"")
    e = consul.get(key).json()[0]
    assert e["Value"] is None
    r = consul.get(key, "?raw")
    assert r.status == 200 and r.body == b""


def test_kv_flags_are_stored(consul):
    key = consul.prefix + "flagged"
    consul.put(key, "v", "?flags=42")
    assert consul.get(key).json()[0]["Flags"] == 42


def test_kv_bad_flags_is_500_with_go_error_text(consul):
    r = consul.req("PUT", "/v1/kv/" + consul.prefix + "f?flags=abc", body="v")
    assert r.status == 500
    assert r.body == b'strconv.ParseUint: parsing "abc": invalid syntax'
    assert r.h("Content-Type") == "text/plain; charset=utf-8"


# --------------------------------------------------------------------------------------------
# KV: write semantics


def test_kv_cas_zero_is_create_only(consul):
    key = consul.prefix + "cas0"
    assert consul.put(key, "first", "?cas=0") is True
    assert consul.put(key, "second", "?cas=0") is False
    assert base64.b64decode(consul.get(key).json()[0]["Value"]) == b"first"


def test_kv_cas_index_must_match_modify_index(consul):
    key = consul.prefix + "cas"
    consul.put(key, "v1")
    m1 = consul.get(key).json()[0]["ModifyIndex"]
    assert consul.put(key, "v2", "?cas=%d" % (m1 + 1000)) is False
    assert consul.put(key, "v2", "?cas=%d" % m1) is True
    e = consul.get(key).json()[0]
    assert base64.b64decode(e["Value"]) == b"v2"
    assert e["ModifyIndex"] > m1 and e["CreateIndex"] == m1
    assert consul.put(consul.prefix + "nokey", "x", "?cas=5") is False


def test_kv_plain_put_always_answers_true(consul):
    key = consul.prefix + "plain"
    assert consul.put(key, "a") is True
    assert consul.put(key, "b") is True


def test_kv_identical_write_keeps_modify_index(consul):
    key = consul.prefix + "same"
    consul.put(key, "v")
    m1 = consul.get(key).json()[0]["ModifyIndex"]
    consul.put(key, "v")
    assert consul.get(key).json()[0]["ModifyIndex"] == m1
    consul.put(key, "v", "?flags=1")  # flags are part of the entry
    assert consul.get(key).json()[0]["ModifyIndex"] > m1


def test_kv_delete_cas(consul):
    key = consul.prefix + "delcas"
    consul.put(key, "v")
    m = consul.get(key).json()[0]["ModifyIndex"]
    r = consul.req("DELETE", "/v1/kv/%s?cas=0" % key)
    assert r.status == 200 and r.json() is False
    r = consul.req("DELETE", "/v1/kv/%s?cas=%d" % (key, m + 1000))
    assert r.json() is False
    r = consul.req("DELETE", "/v1/kv/%s?cas=%d" % (key, m))
    assert r.json() is True
    assert consul.get(key).status == 404
    r = consul.req("DELETE", "/v1/kv/%s?cas=%d" % (key, m))  # absent: vacuously true
    assert r.json() is True


def test_kv_delete_plain_and_recurse(consul):
    p = consul.prefix
    for k in ("t/a", "t/b/c", "u"):
        consul.put(p + k, "v")
    r = consul.req("DELETE", "/v1/kv/" + p + "missing")
    assert r.status == 200 and r.json() is True
    r = consul.req("DELETE", "/v1/kv/" + p + "t/?recurse")
    assert r.status == 200 and r.json() is True
    assert [e["Key"] for e in consul.get(p, "?recurse").json()] == [p + "u"]


def test_kv_conflicting_flags_are_400(consul):
    r = consul.req("PUT", "/v1/kv/" + consul.prefix + "c?cas=0&acquire=abc", body="v")
    assert r.status == 400
    assert r.body == b"Conflicting flags: acquire=abc&cas=0\n"
    r = consul.req("DELETE", "/v1/kv/" + consul.prefix + "c?recurse&cas=3")
    assert r.status == 400
    assert r.body == b"Conflicting flags: cas=3&recurse=\n"


def test_kv_missing_key_name_is_400(consul):
    for method in ("GET", "PUT", "DELETE"):
        r = consul.req(method, "/v1/kv/", body=b"x" if method == "PUT" else None)
        assert r.status == 400 and r.body == b"Missing key name", (method, r)


def test_kv_value_over_512k_is_413(consul):
    r = consul.req("PUT", "/v1/kv/" + consul.prefix + "big", body=b"x" * (512 * 1024 + 1))
    assert r.status == 413
    assert r.body.startswith(b"Request body(524289 bytes) too large, max size: 524288 bytes.")
    assert consul.put(consul.prefix + "big", b"x" * (512 * 1024)) is True


def test_kv_key_validation_of_recent_servers(double):
    for key, text in (
            ("a.json", "key contains suspicious file extension '.json' that may be cached by proxies"),
            ("a b", "key contains invalid character ' ' at position 1. Only alphanumeric characters "
                    "and ,-_./ are allowed"),
            ("a:b", "key contains invalid character ':' at position 1. Only alphanumeric characters "
                    "and ,-_./ are allowed")):
        r = double.req("PUT", "/v1/kv/" + key.replace(" ", "%20"), body="v")
        assert r.status == 400 and r.body.decode() == text, (key, r)
    assert double.put("gloo/gateway.solo.io/v1/VirtualService/gloo-system/default.yaml", "v") is True


def test_kv_method_not_allowed_lists_allow(consul):
    r = consul.req("POST", "/v1/kv/" + consul.prefix + "k", body="v")
    assert r.status == 405
    assert r.h("Allow") == "OPTIONS,GET,PUT,DELETE"
    assert r.body == b"method POST not allowed"


def test_kv_large_list_is_chunked(consul):
    for i in range(30):
        consul.put("%sbulk/%02d" % (consul.prefix, i), "v" * 100)
    raw = raw_request(consul.port, ("GET /v1/kv/%sbulk/?recurse HTTP/1.1\r\nHost: x\r\n"
                                    "Connection: close\r\n%s\r\n" % (
                                        consul.prefix,
                                        "X-Consul-Token: %s\r\n" % consul.token if consul.token else "")
                                    ).encode(), host=consul.host)
    status, lines, body = split_raw(raw)
    assert status == "HTTP/1.1 200 OK"
    assert "Transfer-Encoding: chunked" in lines
    assert not any(x.startswith("Content-Length:") for x in lines)
    size, _, rest = body.partition(b"\r\n")
    n = int(size, 16)
    assert n > 2048
    assert len(json.loads(rest[:n])) == 30
    assert body.endswith(b"0\r\n\r\n")


def test_kv_small_body_has_content_length(double):
    double.put("k", "v")
    raw = raw_request(double.port, b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, lines, body = split_raw(raw)
    assert "Content-Length: %d" % len(body) in lines and "Transfer-Encoding: chunked" not in lines


def test_kv_pretty(consul):
    consul.put(consul.prefix + "p", "v")
    r = consul.get(consul.prefix + "p", "?pretty")
    assert r.body.endswith(b"\n")
    assert b'\n    {\n        "LockIndex": 0,\n' in r.body


def test_gloo_kv_layout_access_pattern(consul):
    """gloo-edge-api.md 1.4: List(<root>/<group>/<version>/<Kind>/<ns>) with RequireConsistent,
    then a blocking List from the last index; writes are CAS on resourceVersion (= ModifyIndex)."""
    root = consul.prefix + "gloo/gateway.solo.io/v1/VirtualService/"
    vs = b"metadata: {name: default, namespace: gloo-system}\nvirtualHost:\n  domains: ['*']\n"
    assert consul.put(root + "gloo-system/default", vs, "?cas=0") is True
    assert consul.put(root + "gloo-system/default", vs, "?cas=0") is False  # exists
    consul.put(root + "gloo-system2/other", b"metadata: {name: other, namespace: gloo-system2}\n")
    r = consul.get(root + "gloo-system", "?recurse&consistent")
    assert r.status == 200 and r.h("X-Consul-Effective-Consistency") == "consistent"
    # a plain string prefix: "gloo-system" also matches "gloo-system2/"
    assert [e["Key"] for e in r.json()] == [root + "gloo-system/default", root + "gloo-system2/other"]
    rv = [e for e in r.json() if e["Key"].endswith("/default")][0]["ModifyIndex"]
    th, box = in_thread(lambda: consul.get(root + "gloo-system/", "?recurse&consistent&index=%d&wait=5s" % r.index))
    time.sleep(0.2)
    assert consul.put(root + "gloo-system/default", vs + b"# v2\n", "?cas=%d" % rv) is True
    assert consul.put(root + "gloo-system/default", vs + b"# v3\n", "?cas=%d" % rv) is False  # stale rv
    th.join(4)
    assert box["r"].status == 200 and box["r"].index > r.index
    assert base64.b64decode(box["r"].json()[0]["Value"]).endswith(b"# v2\n")


# --------------------------------------------------------------------------------------------
# query parameters shared by every read


def test_unknown_datacenter_is_500_no_path(consul):
    for path in ("/v1/kv/%sk?dc=no-such-dc" % consul.prefix, "/v1/catalog/services?dc=no-such-dc",
                 "/v1/health/service/consul?dc=no-such-dc"):
        r = consul.req("GET", path)
        assert r.status == 500 and r.body == b"No path to datacenter", (path, r)


def test_stale_with_consistent_is_400(consul):
    r = consul.req("GET", "/v1/catalog/services?stale&consistent")
    assert r.status == 400
    assert r.body == b"Cannot specify ?stale with ?consistent, conflicting semantics."


def test_effective_consistency_header(consul):
    for q, want in (("", "leader"), ("?stale", "stale"), ("?consistent", "consistent"),
                    ("?leader", "leader")):
        r = consul.req("GET", "/v1/catalog/services" + q)
        assert r.status == 200 and r.h("X-Consul-Effective-Consistency") == want, (q, r)


def test_kv_effective_consistency_header(double):
    double.put("k", "v")
    for q, want in (("", "leader"), ("?stale", "stale"), ("?consistent", "consistent")):
        assert double.get("k", q).h("X-Consul-Effective-Consistency") == want


def test_bad_wait_and_index_are_400(consul):
    r = consul.req("GET", "/v1/kv/%sk?index=1&wait=10" % consul.prefix)
    assert r.status == 400 and r.body == b"Invalid wait time"
    r = consul.req("GET", "/v1/kv/%sk?index=abc" % consul.prefix)
    assert r.status == 400 and r.body == b"Invalid index"


def test_enterprise_params_rejected_by_ce(double):
    r = double.get("k", "?ns=team")
    assert r.status == 400
    assert r.body == b'Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature'


def test_unparsable_query_is_500_empty(double):
    r = double.get("k", "?index=1;wait=1s")
    assert r.status == 500 and r.body == b""


def test_go_duration_parser():
    ok = {"10s": 10, "5m": 300, "300000ms": 300, "1h2m": 3720, "1.5s": 1.5, ".5s": 0.5,
          "1.s": 1, "0": 0, "100us": 1e-4, "-1s": -1}
    for s, want in ok.items():
        assert abs(cd.parse_go_duration(s) - want) < 1e-9, s
    for s in ("", "10", "s", "1x", "1.5", ".s", "1s2"):
        with pytest.raises(ValueError):
            cd.parse_go_duration(s)


# --------------------------------------------------------------------------------------------
# blocking queries


def test_blocking_index_zero_returns_at_once(consul):
    consul.put(consul.prefix + "k", "v")
    r = consul.get(consul.prefix + "k", "?index=0&wait=5s")
    assert r.status == 200 and r.elapsed < 2.5      # well under the 5 s a blocked read takes


def test_blocking_index_below_current_returns_at_once(consul):
    consul.put(consul.prefix + "k", "v")
    idx = consul.get(consul.prefix + "k").index
    r = consul.get(consul.prefix + "k", "?index=%d&wait=5s" % (idx - 1))
    assert r.status == 200 and r.elapsed < 2.5      # well under the 5 s a blocked read takes


def test_blocking_wakes_on_write(consul):
    key = consul.prefix + "watched"
    consul.put(key, "v1")
    idx = consul.get(key).index
    th, box = in_thread(lambda: consul.get(key, "?index=%d&wait=5s" % idx))
    held(consul)
    time.sleep(0.3)
    assert th.is_alive()
    consul.put(key, "v2")
    th.join(4)
    r = box["r"]
    assert r.status == 200 and r.index > idx
    assert base64.b64decode(r.json()[0]["Value"]) == b"v2"
    assert 0.25 < r.elapsed < 3.0


def test_blocking_times_out_within_wait_plus_jitter(consul):
    key = consul.prefix + "quiet"
    consul.put(key, "v")
    idx = consul.get(key).index
    r = consul.get(key, "?index=%d&wait=400ms" % idx)
    assert r.status == 200 and r.index == idx
    assert 0.39 <= r.elapsed <= 0.4 * 17 / 16 + SLACK, r.elapsed


def test_blocking_identical_write_does_not_wake(consul):
    key = consul.prefix + "idem"
    consul.put(key, "same")
    idx = consul.get(key).index
    th, box = in_thread(lambda: consul.get(key, "?index=%d&wait=600ms" % idx))
    time.sleep(0.15)
    consul.put(key, "same")
    th.join(3)
    assert box["r"].index == idx and box["r"].elapsed >= 0.59


def test_blocking_on_missing_key_wakes_when_created(consul):
    key = consul.prefix + "later"
    r0 = consul.get(key)
    assert r0.status == 404
    th, box = in_thread(lambda: consul.get(key, "?index=%d&wait=5s" % r0.index))
    time.sleep(0.3)
    consul.put(key, "now")
    th.join(4)
    assert box["r"].status == 200 and box["r"].index > r0.index


def test_blocking_on_missing_key_ignores_other_keys(double):
    r0 = double.get("missing")
    th, box = in_thread(lambda: double.get("missing", "?index=%d&wait=600ms" % r0.index))
    time.sleep(0.15)
    double.put("other", "x")
    th.join(3)
    r = box["r"]
    assert r.status == 404 and r.elapsed >= 0.59
    assert r.index > r0.index  # the timeout answer carries the current table index


def test_blocking_recurse_wakes_on_delete(consul):
    p = consul.prefix
    consul.put(p + "a", "1")
    consul.put(p + "b", "2")
    idx = consul.get(p, "?recurse").index
    th, box = in_thread(lambda: consul.get(p, "?recurse&index=%d&wait=5s" % idx))
    time.sleep(0.3)
    consul.req("DELETE", "/v1/kv/" + p + "a")
    th.join(4)
    r = box["r"]
    assert r.index > idx and [e["Key"] for e in r.json()] == [p + "b"]


def test_blocking_recurse_ignores_writes_outside_prefix(double):
    double.put("watched/a", "1")
    idx = double.get("watched/", "?recurse").index
    th, box = in_thread(lambda: double.get("watched/", "?recurse&index=%d&wait=500ms" % idx))
    time.sleep(0.15)
    double.put("elsewhere/b", "2")
    th.join(3)
    assert box["r"].index == idx and box["r"].elapsed >= 0.49


def test_blocking_query_ends_when_client_goes_away(double):
    double.put("k", "v")
    idx = double.get("k").index
    s = socket.create_connection(("127.0.0.1", double.port))
    s.sendall(b"GET /v1/kv/k?index=%d&wait=30s HTTP/1.1\r\nHost: x\r\n\r\n" % idx)
    deadline = time.monotonic() + 10
    while double.double.blocking_queries == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert double.double.blocking_queries == 1
    s.close()
    deadline = time.monotonic() + 10      # the double notices within its 0.25 s slice
    while double.double.blocking_queries and time.monotonic() < deadline:
        time.sleep(0.02)
    assert double.double.blocking_queries == 0


def test_blocking_wait_is_capped(double, monkeypatch):
    monkeypatch.setattr(cd, "MAX_QUERY_TIME", 0.3)
    double.put("k", "v")
    idx = double.get("k").index
    r = double.get("k", "?index=%d&wait=10m" % idx)
    assert 0.29 <= r.elapsed < 0.3 * 17 / 16 + SLACK


def test_blocking_default_wait_when_absent(double, monkeypatch):
    monkeypatch.setattr(cd, "DEFAULT_QUERY_TIME", 0.3)
    double.put("k", "v")
    idx = double.get("k").index
    for q in ("?index=%d" % idx, "?index=%d&wait=0s" % idx):
        r = double.get("k", q)
        assert 0.29 <= r.elapsed < 0.3 * 17 / 16 + SLACK, q


def test_blocking_jitter_is_at_most_wait_over_16(double, monkeypatch):
    # the jitter drawn is recorded (a measured time on a busy machine can exceed wait + wait/16
    # by a scheduling delay, so the measured times only bound it with SLACK)
    draws = []
    real = cd.random.uniform

    def uniform(a, b):
        v = real(a, b)
        draws.append((a, b, v))
        return v
    monkeypatch.setattr(cd.random, "uniform", uniform)
    double.put("k", "v")
    idx = double.get("k").index
    times = []
    threads = [in_thread(lambda: double.get("k", "?index=%d&wait=320ms" % idx)) for _ in range(6)]
    for th, box in threads:
        th.join(3 + SLACK)
        times.append(box["r"].elapsed)
    assert len(draws) == 6 and all(a == 0 and abs(b - 0.02) < 1e-9 and 0 <= v <= b for a, b, v in draws), draws
    assert all(0.319 <= t <= 0.34 + SLACK for t in times), times


# --------------------------------------------------------------------------------------------
# catalog, health, agent


def test_catalog_datacenters(consul):
    r = consul.req("GET", "/v1/catalog/datacenters")
    assert r.status == 200 and isinstance(r.json(), list) and r.json()
    assert r.h("X-Consul-Index") is None


def test_catalog_datacenters_lists_all(make_double):
    _, t = make_double(datacenters=("dc1", "dc3", "dc2"))
    assert t.req("GET", "/v1/catalog/datacenters").json() == ["dc1", "dc2", "dc3"]


def test_catalog_has_consul_service(consul):
    r = consul.req("GET", "/v1/catalog/services")
    assert r.status == 200 and "consul" in r.json()
    assert r.h("Content-Type") == "application/json"


def test_agent_register_shows_in_catalog(consul):
    name = consul.name("petstore")
    consul.register(name, sid=name + "-1", Tags=["v1", "primary"], Address="127.0.0.1", Port=8080,
                    Meta={"version": "4.0"})
    svcs = consul.wait_for(lambda: name in consul.req("GET", "/v1/catalog/services").json()
                           and consul.req("GET", "/v1/catalog/services").json())
    assert sorted(svcs[name]) == ["primary", "v1"]
    r = consul.req("GET", "/v1/catalog/service/" + name)
    assert r.status == 200
    (e,) = r.json()
    assert e["ServiceID"] == name + "-1" and e["ServiceName"] == name
    assert e["ServiceAddress"] == "127.0.0.1" and e["ServicePort"] == 8080
    assert sorted(e["ServiceTags"]) == ["primary", "v1"] and e["ServiceMeta"] == {"version": "4.0"}
    assert e["Address"] and e["Node"] and e["Datacenter"]
    assert e["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    assert r.index >= e["ModifyIndex"]
    a = consul.req("GET", "/v1/agent/services").json()
    assert a[name + "-1"]["Service"] == name and a[name + "-1"]["Port"] == 8080


def test_service_address_empty_means_node_address(consul):
    name = consul.name("noaddr")
    consul.register(name, Port=9000)
    ents = consul.wait_for(lambda: consul.req("GET", "/v1/catalog/service/" + name).json())
    (e,) = ents
    assert e["ServiceAddress"] == "" and e["Address"] != ""
    (h,) = consul.req("GET", "/v1/health/service/" + name).json()
    assert h["Service"]["Address"] == "" and h["Node"]["Address"] == e["Address"]
    assert h["Service"]["Port"] == 9000


def test_catalog_service_tag_filter(consul):
    name = consul.name("tagged")
    consul.register(name, sid=name + "-a", Tags=["a", "b"], Port=1)
    consul.register(name, sid=name + "-b", Tags=["b"], Port=2)

    def ids(q):
        return sorted(e["ServiceID"] for e in consul.req("GET", "/v1/catalog/service/%s%s" % (name, q)).json())

    assert consul.wait_for(lambda: len(ids("")) == 2)
    assert ids("?tag=a") == [name + "-a"]
    assert ids("?tag=b") == [name + "-a", name + "-b"]
    assert ids("?tag=a&tag=b") == [name + "-a"]
    assert ids("?tag=A") == [name + "-a"]  # tag matching ignores case
    assert ids("?tag=zzz") == []
    hids = sorted(e["Service"]["ID"] for e in consul.req("GET", "/v1/health/service/%s?tag=a" % name).json())
    assert hids == [name + "-a"]


def test_catalog_service_unknown_is_200_empty(consul):
    for p in ("/v1/catalog/service/", "/v1/health/service/"):
        r = consul.req("GET", p + consul.name("ghost"))
        assert r.status == 200 and r.json() == [] and r.index >= 1, (p, r)


def test_missing_service_name_is_400(consul):
    for p in ("/v1/catalog/service/", "/v1/health/service/"):
        r = consul.req("GET", p)
        assert r.status == 400 and r.body == b"Missing service name", (p, r)


def test_health_checks_and_passing_filter(consul):
    name = consul.name("ttl")
    sid = name + "-1"
    consul.register(name, sid=sid, Port=80, Check={"TTL": "30s"})
    cid = "service:" + sid

    def entry(q=""):
        return consul.req("GET", "/v1/health/service/%s%s" % (name, q)).json()

    ents = consul.wait_for(lambda: entry())
    (e,) = ents
    by_id = {c["CheckID"]: c for c in e["Checks"]}
    assert by_id[cid]["Status"] == "critical" and by_id[cid]["ServiceID"] == sid
    assert by_id["serfHealth"]["ServiceID"] == "" and by_id["serfHealth"]["Status"] == "passing"
    assert entry("?passing") == []
    r = consul.req("PUT", "/v1/agent/check/pass/%s?note=ok" % cid)
    assert r.status == 200 and r.body == b""
    assert consul.wait_for(lambda: len(entry("?passing")) == 1)
    assert entry("?passing=false") and entry("?passing=1")
    consul.req("PUT", "/v1/agent/check/warn/" + cid)
    assert consul.wait_for(lambda: entry("?passing") == [])
    st = {c["CheckID"]: c["Status"] for c in entry()[0]["Checks"]}
    assert st[cid] == "warning"
    consul.req("PUT", "/v1/agent/check/fail/" + cid)
    assert consul.wait_for(lambda: {c["CheckID"]: c["Status"] for c in entry()[0]["Checks"]}[cid] == "critical")
    r = consul.req("GET", "/v1/health/service/%s?passing=nope" % name)
    assert r.status == 400 and r.body == b"Invalid value for ?passing"
    checks = consul.req("GET", "/v1/agent/checks").json()
    assert checks[cid]["Status"] == "critical" and checks[cid]["ServiceName"] == name


def test_check_update_endpoint(consul):
    name = consul.name("upd")
    consul.register(name, Check={"TTL": "30s"})
    r = consul.req("PUT", "/v1/agent/check/update/service:" + name,
                   body=json.dumps({"Status": "passing", "Output": "fine"}))
    assert r.status == 200
    assert consul.wait_for(lambda: consul.req("GET", "/v1/health/service/%s?passing" % name).json())
    r = consul.req("PUT", "/v1/agent/check/update/service:" + name, body=json.dumps({"Status": "bogus"}))
    assert r.status == 400 and r.body == b"Invalid check status: 'bogus'"


def test_check_pass_errors(consul):
    r = consul.req("PUT", "/v1/agent/check/pass/no-such-check-" + consul.uid)
    assert r.status == 404
    assert r.body == ('Unknown check ID "no-such-check-%s". Ensure that the check ID is passed, not '
                      'the check name.' % consul.uid).encode()
    name = consul.name("http")
    consul.register(name, Check={"HTTP": "http://127.0.0.1:1/", "Interval": "1h"})
    r = consul.req("PUT", "/v1/agent/check/pass/service:" + name)
    assert r.status == 500
    assert r.body == ('CheckID "service:%s" does not have associated TTL' % name).encode()


def test_health_blocking_wakes_on_check_flip(consul):
    name = consul.name("flip")
    consul.register(name, Check={"TTL": "30s"})
    consul.wait_for(lambda: consul.req("GET", "/v1/health/service/" + name).json())
    idx = consul.req("GET", "/v1/health/service/" + name).index
    th, box = in_thread(lambda: consul.req("GET", "/v1/health/service/%s?index=%d&wait=5s" % (name, idx)))
    time.sleep(0.3)
    consul.req("PUT", "/v1/agent/check/pass/service:" + name)
    th.join(5)
    r = box["r"]
    assert r.index > idx and r.elapsed < 4
    assert {c["Status"] for c in r.json()[0]["Checks"]} == {"passing"}


def test_catalog_services_has_its_own_index(consul):
    idx = consul.req("GET", "/v1/catalog/services").index
    consul.put(consul.prefix + "unrelated", "v")
    r = consul.req("GET", "/v1/catalog/services?index=%d&wait=400ms" % idx)
    assert r.index == idx and r.elapsed >= 0.39  # KV writes do not move the catalog index
    name = consul.name("newsvc")
    th, box = in_thread(lambda: consul.req("GET", "/v1/catalog/services?index=%d&wait=5s" % idx))
    time.sleep(0.2)
    consul.register(name)
    th.join(5)
    assert box["r"].index > idx and name in box["r"].json()


def test_catalog_service_blocking_wakes_on_new_instance(consul):
    name = consul.name("grow")
    consul.register(name, sid=name + "-1", Port=1)
    consul.wait_for(lambda: consul.req("GET", "/v1/catalog/service/" + name).json())
    idx = consul.req("GET", "/v1/catalog/service/" + name).index
    th, box = in_thread(lambda: consul.req("GET", "/v1/catalog/service/%s?index=%d&wait=5s" % (name, idx)))
    time.sleep(0.2)
    consul.register(name, sid=name + "-2", Port=2)
    th.join(5)
    r = box["r"]
    assert r.index > idx
    # a live agent may sync twice; the double answers the first change
    assert consul.wait_for(lambda: len(consul.req("GET", "/v1/catalog/service/" + name).json()) == 2)


def test_deregister(consul):
    name = consul.name("gone")
    consul.register(name)
    consul.wait_for(lambda: consul.req("GET", "/v1/catalog/service/" + name).json())
    r = consul.req("PUT", "/v1/agent/service/deregister/" + name)
    assert r.status == 200 and r.body == b""
    assert consul.wait_for(lambda: consul.req("GET", "/v1/catalog/service/" + name).json() == [])
    assert name not in consul.req("GET", "/v1/catalog/services").json()
    r = consul.req("PUT", "/v1/agent/service/deregister/" + name)
    assert r.status == 404
    assert r.body == ('Unknown service ID "%s". Ensure that the service ID is passed, not the '
                      'service name.' % name).encode()


def test_register_errors(consul):
    r = consul.req("PUT", "/v1/agent/service/register", body=json.dumps({"Port": 80}))
    assert r.status == 400 and r.body == b"Missing service name"
    r = consul.req("PUT", "/v1/agent/service/register", body=b"{not json")
    assert r.status == 400 and r.body.startswith(b"Request decode failed: ")
    r = consul.req("GET", "/v1/agent/service/register")
    assert r.status == 405


def test_register_response_has_no_body(double):
    raw = raw_request(double.port, b'PUT /v1/agent/service/register HTTP/1.1\r\nHost: x\r\n'
                                   b'Content-Length: 15\r\nConnection: close\r\n\r\n{"Name":"web"}\n')
    status, lines, body = split_raw(raw)
    assert status == "HTTP/1.1 200 OK" and body == b""
    assert lines[0] == "X-Consul-Default-Acl-Policy: allow" and "Content-Length: 0" in lines
    assert not any(x.startswith("Content-Type") for x in lines)


def test_catalog_register_external_node(consul):
    node = consul.name("node")
    name = consul.name("ext")
    body = {"Node": node, "Address": "192.0.2.10",
            "Service": {"ID": name + "-1", "Service": name, "Address": "192.0.2.11", "Port": 8000,
                        "Tags": ["x"]},
            "Check": {"CheckID": "service:" + name + "-1", "Name": "c", "Status": "passing",
                      "ServiceID": name + "-1"}}
    r = consul.req("PUT", "/v1/catalog/register", body=json.dumps(body))
    try:
        assert r.status == 200 and r.json() is True
        (e,) = consul.req("GET", "/v1/catalog/service/" + name).json()
        assert e["Node"] == node and e["Address"] == "192.0.2.10" and e["ServiceAddress"] == "192.0.2.11"
        (h,) = consul.req("GET", "/v1/health/service/%s?passing" % name).json()
        assert h["Node"]["Address"] == "192.0.2.10" and h["Service"]["Address"] == "192.0.2.11"
        assert [c["CheckID"] for c in h["Checks"]] == ["service:" + name + "-1"]
    finally:
        r = consul.req("PUT", "/v1/catalog/deregister", body=json.dumps({"Node": node}))
    assert r.status == 200 and r.json() is True
    assert consul.req("GET", "/v1/catalog/service/" + name).json() == []


def test_node_health_counts_for_every_service_on_it(double):
    d = double.double
    d.register_service("web", address="10.0.0.5", port=80)
    assert len(double.req("GET", "/v1/health/service/web?passing").json()) == 1
    idx = double.req("GET", "/v1/health/service/web").index
    d.set_node_health("critical")
    r = double.req("GET", "/v1/health/service/web")
    assert r.index > idx
    assert double.req("GET", "/v1/health/service/web?passing").json() == []
    assert len(double.req("GET", "/v1/catalog/service/web").json()) == 1  # catalog: no health filter


def test_ttl_check_expires(double):
    r = double.req("PUT", "/v1/agent/service/register",
                   body=json.dumps({"Name": "short", "Check": {"TTL": "200ms", "Status": "passing"}}))
    assert r.status == 200
    assert double.req("GET", "/v1/health/service/short?passing").json()
    # the double's clock thread expires it (every 50 ms; later on a busy machine): wait for it
    def check():
        (e,) = double.req("GET", "/v1/health/service/short").json()
        return [c for c in e["Checks"] if c["CheckID"] == "service:short"][0]
    double.wait_for(lambda: check()["Status"] != "passing", timeout=10)
    c = check()
    assert c["Status"] == "critical" and c["Output"] == "TTL expired"


def test_reregister_keeps_check_state_and_same_service_keeps_index(double):
    body = json.dumps({"Name": "svc", "Port": 1, "Check": {"TTL": "30s"}})
    double.req("PUT", "/v1/agent/service/register", body=body)
    double.req("PUT", "/v1/agent/check/pass/service:svc")
    r1 = double.req("GET", "/v1/catalog/service/svc")
    double.req("PUT", "/v1/agent/service/register", body=body)
    r2 = double.req("GET", "/v1/catalog/service/svc")
    assert r2.index == r1.index
    assert double.req("GET", "/v1/health/service/svc?passing").json()


def test_agent_register_adds_ipv4_tagged_addresses(double):
    double.register("svc", Address="10.1.2.3", Port=7)
    (e,) = double.req("GET", "/v1/catalog/service/svc").json()
    assert e["ServiceTaggedAddresses"] == {"lan_ipv4": {"Address": "10.1.2.3", "Port": 7},
                                           "wan_ipv4": {"Address": "10.1.2.3", "Port": 7}}


def test_multi_datacenter_catalog(make_double):
    d, t = make_double(datacenters=("dc1", "dc2"))
    d.register_service("api", address="10.2.0.1", port=80, dc="dc2", node="n2", node_address="10.2.0.100")
    assert "api" in t.req("GET", "/v1/catalog/services?dc=dc2").json()
    assert "api" not in t.req("GET", "/v1/catalog/services").json()
    (e,) = t.req("GET", "/v1/catalog/service/api?dc=dc2").json()
    assert e["Datacenter"] == "dc2" and e["Address"] == "10.2.0.100" and e["ServiceAddress"] == "10.2.0.1"
    d.kv_put("k", b"dc1")
    d.kv_put("k", b"dc2", dc="dc2")
    assert base64.b64decode(t.get("k", "?dc=dc2").json()[0]["Value"]) == b"dc2"
    assert t.put("k", "new", "?dc=dc2") is True
    assert d.kv_get("k")["Value"] == b"dc1"


def test_python_api_data_helpers(double):
    d = double.double
    r0 = d.raft_index()
    d.register_node("vm1", "192.0.2.50", meta={"rack": "r1"})
    d.register_service("db", service_id="db-1", node="vm1", port=5432, tags=["primary"], health="passing")
    assert d.raft_index() > r0
    (e,) = double.req("GET", "/v1/health/service/db?passing").json()
    assert e["Node"]["Address"] == "192.0.2.50" and e["Node"]["Meta"] == {"rack": "r1"}
    assert double.req("GET", "/v1/catalog/service/db?node-meta=rack:r1").json()
    assert double.req("GET", "/v1/catalog/service/db?node-meta=rack:r2").json() == []
    d.set_check_status("service:db-1", "warning", node="vm1")
    assert double.req("GET", "/v1/health/service/db?passing").json() == []
    d.deregister_service("db-1", node="vm1")
    assert double.req("GET", "/v1/catalog/service/db").json() == []
    d.deregister_node("vm1")
    d.kv_put("x/a", "1")
    d.kv_put("x/b", b"2")
    assert d.kv_index("x/") == double.get("x/", "?recurse").index
    assert d.kv_delete("x/", recurse=True) is True
    assert d.kv_get("x/a") is None and double.get("x/", "?recurse").status == 404
    d.reset()
    assert d.raft_index() < 10 and d.requests() == []


def test_status_leader(consul):
    r = consul.req("GET", "/v1/status/leader")
    assert r.status == 200 and r.json().endswith(":8300")


def test_unknown_paths(double):
    r = double.req("GET", "/v1/nope")
    assert r.status == 404 and r.body == b"Invalid URL path: not a recognized HTTP API endpoint\n"
    r = double.req("GET", "/v1/kv")
    assert r.status == 301 and r.h("Location") == "/v1/kv/"
    r = double.req("GET", "/v1/kv/a//b?raw")
    assert r.status == 301 and r.h("Location") == "/v1/kv/a/b?raw"


# --------------------------------------------------------------------------------------------
# ACLs (the double's optional ACL mode)

POLICIES = {
    "root-secret": "write",
    "ro-secret": "read",
    "none-secret": "deny",
    "gloo-secret": {"key_prefix": {"gloo/": "write"}, "service_prefix": {"": "read"},
                    "node_prefix": {"": "read"}},
}


@pytest.fixture
def acl(make_double):
    d, t = make_double(acl_tokens=POLICIES)
    d.kv_put("gloo/a", b"1")
    d.kv_put("other/b", b"2")
    return t


def test_acl_token_sources(acl):
    for hdrs, q in (({"X-Consul-Token": "ro-secret"}, ""), ({}, "?token=ro-secret"),
                    ({"Authorization": "Bearer ro-secret"}, ""), ({"Authorization": "bearer ro-secret"}, "")):
        r = acl.req("GET", "/v1/kv/gloo/a" + q, headers=hdrs)
        assert r.status == 200, (hdrs, q, r)
        assert r.h("X-Consul-Default-Acl-Policy") == "deny"


def test_acl_anonymous_and_unknown_tokens(acl):
    r = acl.req("GET", "/v1/kv/gloo/a")
    assert r.status == 403
    assert r.body == (b"Permission denied: anonymous token lacks permission 'key:read' on \"gloo/a\". "
                      b"The anonymous token is used implicitly when a request does not specify a token.")
    assert r.h("Content-Type") == "text/plain; charset=utf-8"
    r = acl.req("GET", "/v1/kv/gloo/a", headers={"X-Consul-Token": "who-knows"})
    assert r.status == 403 and r.body == b"ACL not found"
    r = acl.req("GET", "/v1/catalog/datacenters", headers={"X-Consul-Token": "who-knows"})
    assert r.status == 200  # no ACL on the datacenter list


def test_acl_write_needs_write(acl):
    r = acl.req("PUT", "/v1/kv/gloo/a", body="x", headers={"X-Consul-Token": "ro-secret"})
    assert r.status == 403
    assert r.body == ("Permission denied: token with AccessorID '%s' lacks permission 'key:write' on "
                      '"gloo/a"' % cd._accessor("ro-secret")).encode()
    r = acl.req("PUT", "/v1/kv/gloo/a", body="x", headers={"X-Consul-Token": "gloo-secret"})
    assert r.status == 200 and r.json() is True
    r = acl.req("PUT", "/v1/kv/other/b", body="x", headers={"X-Consul-Token": "gloo-secret"})
    assert r.status == 403


def test_acl_lists_are_filtered_not_refused(acl):
    r = acl.req("GET", "/v1/kv/?recurse", headers={"X-Consul-Token": "gloo-secret"})
    assert r.status == 200 and [e["Key"] for e in r.json()] == ["gloo/a"]
    assert r.h("X-Consul-Results-Filtered-By-Acls") == "true"
    r = acl.req("GET", "/v1/kv/?recurse")  # anonymous: everything filtered away -> 404
    assert r.status == 404 and r.h("X-Consul-Results-Filtered-By-Acls") == "true"
    r = acl.req("GET", "/v1/kv/?keys", headers={"X-Consul-Token": "none-secret"})
    assert r.status == 200 and r.json() == []
    r = acl.req("GET", "/v1/kv/?recurse", headers={"X-Consul-Token": "root-secret"})
    assert len(r.json()) == 2 and r.h("X-Consul-Results-Filtered-By-Acls") is None


def test_acl_catalog_and_agent(acl):
    r = acl.req("PUT", "/v1/agent/service/register", body=json.dumps({"Name": "web"}))
    assert r.status == 403
    assert r.body.startswith(b"Permission denied: anonymous token lacks permission 'service:write' on \"web\"")
    r = acl.req("PUT", "/v1/agent/service/register", body=json.dumps({"Name": "web"}),
                headers={"X-Consul-Token": "root-secret"})
    assert r.status == 200
    r = acl.req("GET", "/v1/catalog/services")
    assert r.status == 200 and r.json() == {} and r.h("X-Consul-Results-Filtered-By-Acls") == "true"
    r = acl.req("GET", "/v1/catalog/services", headers={"X-Consul-Token": "gloo-secret"})
    assert set(r.json()) == {"consul", "web"}
    r = acl.req("GET", "/v1/health/service/web")
    assert r.json() == []


# --------------------------------------------------------------------------------------------
# faults (double only)


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def test_fault_down_refuse_then_recover_on_same_port(double):
    d = double.double
    double.put("k", "v")
    d.fault_down("refuse")
    assert _refused(double.port)
    d.clear_fault("down")
    assert double.get("k").status == 200


def test_fault_down_drops_open_keepalive_connections(double):
    c = http.client.HTTPConnection("127.0.0.1", double.port, timeout=2)
    c.request("GET", "/v1/catalog/services")
    c.getresponse().read()
    double.double.fault_down("refuse")
    with pytest.raises((OSError, http.client.HTTPException)):
        c.request("GET", "/v1/catalog/services")
        c.getresponse().read()
    c.close()


def test_fault_down_hang(double):
    double.double.fault_down("hang")
    with pytest.raises(socket.timeout):
        double.req("GET", "/v1/catalog/services", timeout=0.4)
    double.double.clear_fault()
    assert double.req("GET", "/v1/catalog/services").status == 200


def test_fault_down_reset(double):
    double.double.fault_down("reset")
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        double.req("GET", "/v1/catalog/services", timeout=2)
    double.double.clear_fault()
    assert double.req("GET", "/v1/catalog/services").status == 200


def test_fault_down_auto_recovers_after_duration(double):
    double.double.fault("down", mode="refuse", duration_ms=300)
    assert _refused(double.port)
    # the double's clock thread ends the fault (every 50 ms; later on a busy machine)
    assert double.wait_for(lambda: not _refused(double.port), timeout=10), "still refusing"
    assert double.req("GET", "/v1/catalog/services").status == 200


def test_fault_slow(double):
    double.double.fault_slow(2500)
    r = double.req("GET", "/v1/catalog/services")
    assert r.status == 200 and r.elapsed >= 2.5
    double.double.clear_fault("slow")
    assert double.req("GET", "/v1/catalog/services").elapsed < 2.5 - SLACK     # no longer delayed


def test_fault_error_500_with_count(double):
    double.double.fault_error(count=2)
    for _ in range(2):
        r = double.req("GET", "/v1/kv/k")
        assert r.status == 500 and r.body == b"No known Consul servers"
        assert r.h("Content-Type") == "text/plain; charset=utf-8"
    assert double.req("GET", "/v1/kv/k").status == 404


def test_fault_error_custom_and_paths(double):
    double.double.fault_error(status=429, body="", paths=["/v1/health/"])
    r = double.req("GET", "/v1/health/service/consul")
    assert r.status == 429 and r.body == b""
    assert double.req("GET", "/v1/catalog/service/consul").status == 200


def test_fault_forbidden(double):
    double.double.fault_forbidden()
    r = double.req("GET", "/v1/kv/k")
    assert r.status == 403 and r.body == b"ACL not found"
    double.double.fault_forbidden(body="Permission denied")
    assert double.req("PUT", "/v1/kv/k", body="v").body == b"Permission denied"


def test_fault_leader_loss(double):
    d = double.double
    double.put("k", "v")
    d.fault_leader_loss()
    for q in ("", "?consistent"):
        r = double.get("k", q)
        assert r.status == 500 and r.body == b"No cluster leader", q
    r = double.req("PUT", "/v1/kv/k", body="w")
    assert r.status == 500 and r.body == b"No cluster leader"
    time.sleep(0.05)
    r = double.get("k", "?stale")
    assert r.status == 200 and r.h("X-Consul-Knownleader") == "false"
    assert int(r.h("X-Consul-Lastcontact")) >= 40
    assert r.h("X-Consul-Effective-Consistency") == "stale"
    assert double.req("GET", "/v1/catalog/datacenters").status == 200
    assert double.req("GET", "/v1/status/leader").json() == ""
    d.clear_fault("leader_loss")
    r = double.get("k")
    assert r.status == 200 and r.h("X-Consul-Knownleader") == "true"


def test_fault_leader_loss_aborts_blocked_default_reads(double):
    double.put("k", "v")
    idx = double.get("k").index
    th, box = in_thread(lambda: double.get("k", "?index=%d&wait=5s" % idx))
    th2, box2 = in_thread(lambda: double.get("k", "?stale&index=%d&wait=600ms" % idx))
    time.sleep(0.2)
    double.double.fault_leader_loss()
    th.join(3)
    th2.join(3)
    assert box["r"].status == 500 and box["r"].body == b"No cluster leader" and box["r"].elapsed < 2
    assert box2["r"].status == 200 and box2["r"].elapsed >= 0.59


def test_fault_leader_loss_holds_agent_sync_back(double):
    d = double.double
    d.fault_leader_loss()
    double.register("late", Port=5)
    assert "late" in double.req("GET", "/v1/agent/services").json()
    assert double.req("GET", "/v1/catalog/service/late?stale").json() == []
    d.clear_fault("leader_loss")
    assert len(double.req("GET", "/v1/catalog/service/late").json()) == 1


def test_fault_index_reset_moves_indexes_backwards(double):
    d = double.double
    for i in range(10):
        d.kv_put("cfg/k%d" % i, b"v")
    r1 = double.get("cfg/", "?recurse")
    th, box = in_thread(lambda: double.get("cfg/", "?recurse&index=%d&wait=5s" % r1.index))
    time.sleep(0.2)
    d.index_reset()
    th.join(3)
    r2 = box["r"]
    assert r2.status == 200 and r2.elapsed < 2
    assert r2.index < r1.index
    assert [e["Key"] for e in r2.json()] == [e["Key"] for e in r1.json()]
    assert double.get("cfg/", "?recurse").index == r2.index
    double.put("cfg/new", "x")
    assert double.get("cfg/", "?recurse").index > r2.index
    cat = double.req("GET", "/v1/catalog/services")
    assert cat.status == 200 and cat.index >= 1


def test_reap_tombstones_can_move_a_prefix_index_back(double):
    d = double.double
    d.kv_put("p/a", b"1")
    d.kv_put("p/b", b"2")
    double.req("DELETE", "/v1/kv/p/b")
    before = double.get("p/", "?recurse").index
    d.reap_tombstones()
    after = double.get("p/", "?recurse")
    assert after.index < before and after.index == d.kv_get("p/a")["ModifyIndex"]


def test_fault_index_zero(double):
    double.put("k", "v")
    double.double.fault_index_zero()
    r = double.get("k")
    assert r.h("X-Consul-Index") == "0"
    r = double.get("k", "?index=1&wait=300ms")
    assert r.h("X-Consul-Index") == "0" and r.elapsed >= 0.29
    r = double.get("k", "?index=0&wait=5s")
    assert r.elapsed < 2.5      # not blocked: well under the 5 s wait


def test_fault_dc_unreachable(make_double):
    d, t = make_double(datacenters=("dc1", "dc2"))
    assert t.req("GET", "/v1/catalog/services?dc=dc2").status == 200
    d.fault_dc_unreachable("dc2")
    r = t.req("GET", "/v1/catalog/services?dc=dc2")
    assert r.status == 500 and r.body == b"No path to datacenter"
    assert t.req("GET", "/v1/catalog/services").status == 200


def test_control_endpoint_over_http(make_double):
    d, t = make_double(control_port=0)
    r = t.req("PUT", "/_double/fault", body=json.dumps({"kind": "error", "status": 503, "body": "busy"}))
    assert r.status == 200
    r = t.req("GET", "/v1/kv/x")
    assert r.status == 503 and r.body == b"busy"
    assert t.req("GET", "/_double/state").json()["faults"]["error"]["status"] == 503
    assert t.req("DELETE", "/_double/fault").status == 200
    assert t.req("GET", "/v1/kv/x").status == 404
    ctl = Target("double", "127.0.0.1", d.control_port)
    assert ctl.req("PUT", "/_double/fault?kind=down&mode=refuse").status == 200
    assert _refused(t.port)
    assert ctl.req("GET", "/v1/kv/x").status == 404  # the control port serves no API
    assert ctl.req("DELETE", "/_double/fault/down").status == 200
    assert t.req("GET", "/v1/kv/x").status == 404
    t.req("PUT", "/v1/agent/service/register", body=json.dumps({"Name": "w", "Check": {"TTL": "1m"}}))
    assert t.req("PUT", "/_double/check/service:w", body='{"status": "passing"}').status == 200
    assert t.req("GET", "/v1/health/service/w?passing").json()
    assert t.req("POST", "/_double/index-reset", body="{}").status == 200
    assert t.req("PUT", "/_double/fault", body='{"kind": "nonsense"}').status == 400


# --------------------------------------------------------------------------------------------
# HTTP/1.1 behaviour of the double's server


def test_keepalive_serves_several_requests(consul):
    c = http.client.HTTPConnection(consul.host, consul.port, timeout=5)
    hdrs = {"X-Consul-Token": consul.token} if consul.token else {}
    for _ in range(3):
        c.request("GET", "/v1/catalog/services", headers=hdrs)
        r = c.getresponse()
        r.read()
        assert r.status == 200
    c.close()


def test_missing_host_header_is_400(double):
    raw = raw_request(double.port, b"GET /v1/kv/k HTTP/1.1\r\n\r\n")
    assert raw == (b"HTTP/1.1 400 Bad Request: missing required Host header\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
                   b"400 Bad Request: missing required Host header")
    raw = raw_request(double.port, b"GET /v1/kv/k%zz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.endswith(b"\r\n\r\n400 Bad Request") and raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_http10_request(double):
    double.put("k", "v")
    raw = raw_request(double.port, b"GET /v1/kv/k HTTP/1.0\r\n\r\n")
    status, lines, body = split_raw(raw)
    assert status == "HTTP/1.1 200 OK" and json.loads(body)[0]["Key"] == "k"


def test_chunked_request_body_and_expect_continue(double):
    raw = raw_request(double.port, b"PUT /v1/kv/ch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                   b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
                                   b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert double.double.kv_get("ch")["Value"] == b"abcde"


def test_head_is_not_allowed(double):
    r = double.req("HEAD", "/v1/kv/k")
    assert r.status == 405 and r.body == b""


def test_request_log(double):
    double.req("GET", "/v1/kv/k?index=3&wait=1ms", headers={"X-Consul-Token": "t"})
    (rec,) = double.double.requests("/v1/kv/")
    assert rec["method"] == "GET" and rec["query"] == {"index": ["3"], "wait": ["1ms"]}
    assert ("X-Consul-Token", "t") in rec["headers"]


def test_go_extras(make_double):
    d, t = make_double(go_extras=True)
    for i in range(40):
        d.kv_put("g/%02d" % i, b"v" * 80)
    r = t.get("g/", "?recurse")
    assert r.h("Vary") == "Accept-Encoding" and r.h("X-Consul-Query-Backend") == "blocking-query"
    r = t.req("GET", "/v1/kv/g/?recurse", headers={"Accept-Encoding": "gzip"})
    assert r.h("Content-Encoding") == "gzip"
    assert len(json.loads(gzip.decompress(r.body))) == 40


def test_dev_mode_pretty_prints(make_double):
    d, t = make_double(dev_mode=True)
    assert t.req("GET", "/v1/catalog/datacenters").body == b'[\n    "dc1"\n]\n'


def test_process_mode():
    p = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "consul.py"), "--port", "0",
                          "--kv", "seed/key=hello"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline().decode()
        assert line.startswith("consul-double listening on http://127.0.0.1:"), line
        port = int(line.strip().rsplit(":", 1)[1])
        t = Target("double", "127.0.0.1", port)
        assert t.get("seed/key", "?raw").body == b"hello"
    finally:
        os.kill(p.pid, signal.SIGTERM)
        rc = p.wait(5)
    assert rc == 0


# --------------------------------------------------------------------------------------------
# Many blocking queries at once (a discovery client holds one per service)


def _blocking_get(port, path):
    """Send one GET on a new connection and return the socket without reading the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
    return s


def _read_answer(s):
    data = b""
    while b"\r\n\r\n" not in data:
        c = s.recv(65536)
        if not c:
            break
        data += c
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(re_search(rb"(?i)content-length: *(\d+)", head) or 0)
    while len(body) < n:
        c = s.recv(65536)
        if not c:
            break
        body += c
    return head, body


def re_search(pat, data):
    import re
    m = re.search(pat, data)
    return m.group(1) if m else None


def test_many_blocked_health_queries_one_change_wakes_only_its_own(double):
    d = double.double
    n = 300
    names = ["many-%03d" % i for i in range(n)]
    for i, name in enumerate(names):
        d.register_service(name, service_id=name + "-0", address="127.0.0.1", port=20000 + i, health="passing")
    idx = {}
    for name in names:
        r = double.req("GET", "/v1/health/service/" + name)
        assert r.status == 200 and len(r.json()) == 1
        idx[name] = r.index
    socks = {name: _blocking_get(double.port, "/v1/health/service/%s?index=%d&wait=60s" % (name, idx[name]))
             for name in names}
    try:
        deadline = time.monotonic() + 20
        while len(d.blocked_now("/v1/health/service/many-")) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        held = d.blocked_now("/v1/health/service/many-")
        assert len(held) == n and set(held.values()) == {1}, held
        assert d.blocking_returns("/v1/health/service/many-") == {}
        victim = names[n // 2]
        d.set_check_status("service:%s-0" % victim, "critical")
        head, body = _read_answer(socks[victim])
        assert b" 200 " in head.split(b"\r\n")[0]
        assert json.loads(body)[0]["Checks"][-1]["Status"] == "critical"
        assert int(re_search(rb"(?i)x-consul-index: *(\d+)", head)) > idx[victim]
        # the change woke its own query only: every other one is still blocked, none returned
        assert d.blocking_returns("/v1/health/service/many-") == {"/v1/health/service/" + victim: 1}
        held = d.blocked_now("/v1/health/service/many-")
        assert len(held) == n - 1 and "/v1/health/service/" + victim not in held
    finally:
        for s in socks.values():
            s.close()
    # clients gone: the double lets go of their queries
    deadline = time.monotonic() + 10
    while d.blocked_now("/v1/health/service/many-") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.blocked_now("/v1/health/service/many-") == {}
    assert sum(d.blocking_returns("/v1/health/service/many-").values()) == n


def test_blocked_query_counters_count_a_timeout(double):
    d = double.double
    d.register_service("solo", service_id="solo-0", address="127.0.0.1", port=20001, health="passing")
    r = double.req("GET", "/v1/health/service/solo")
    th, box = in_thread(lambda: double.req("GET", "/v1/health/service/solo?index=%d&wait=300ms" % r.index))
    deadline = time.monotonic() + 5
    while not d.blocked_now("/v1/health/service/solo") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert d.blocked_now("/v1/health/service/solo") == {"/v1/health/service/solo": 1}
    th.join(5)
    assert box["r"].index == r.index
    assert d.blocked_now("/v1/health/service/solo") == {}
    assert d.blocking_returns("/v1/health/service/solo") == {"/v1/health/service/solo": 1}
    # a plain read is no blocking query
    double.req("GET", "/v1/health/service/solo")
    assert d.blocking_returns("/v1/health/service/solo") == {"/v1/health/service/solo": 1}
