"""Route and virtual-host options: rewrites, timeouts, retries, header manipulation, host rewrite."""
import time

import pytest

from harness import route


def flaky(n_fail, status=503, how="status"):
    """Handler: the first n_fail requests fail (status, 'reset', 'close' or 'slow'), then echo."""
    def h(req, conn):
        b = conn.backend
        with b.lock:
            b.counter += 1
            k = b.counter
        if k > n_fail:
            return False
        if how == "status":
            conn.respond(status, "fail %d\n" % k)
        elif how == "reset":
            conn.reset()
        elif how == "close":
            conn.close()
        elif how == "slow":
            b.stopping.wait(3.0)
            conn.respond(200, "too late\n")
        return True
    return h


# ---- rewrites ---------------------------------------------------------------------------

@pytest.mark.parametrize("prefix,rewrite,path,want", [
    ("/api", "/v2", "/api/x", "/v2/x"),
    ("/api", "/v2", "/api/x?q=1&r=%2F", "/v2/x?q=1&r=%2F"),
    ("/api/", "/", "/api/x/y", "/x/y"),
    ("/api", "/", "/api/x", "/x"),          # no double slash
    ("/api", "/", "/api", "/"),
    ("/api", "/", "/api?q=1", "/?q=1"),
])
def test_prefix_rewrite(cfg, backend, rivet, prefix, rewrite, path, want):
    b = backend()
    cfg.simple(b, prefix=prefix, route_options={"prefixRewrite": rewrite})
    rv = rivet(cfg)
    r = rv.get(path)
    assert r.status == 200, r
    assert b.wait_requests(1)[0].target == want


def test_regex_rewrite(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options={"regexRewrite": {"pattern": {"regex": "^/service/([^/]+)(/.*)$"},
                                                  "substitution": "\\2/instance/\\1"}})
    rv = rivet(cfg)
    assert rv.get("/service/foo/v1/api?x=1").status == 200
    assert b.wait_requests(1)[0].target == "/v1/api/instance/foo?x=1"
    # a path the pattern does not match is forwarded unchanged
    assert rv.get("/other/path").status == 200
    assert b.wait_requests(2)[1].target == "/other/path"


def test_host_rewrite(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options={"hostRewrite": "internal.svc"})
    rv = rivet(cfg)
    assert rv.get("/", host="public.example").status == 200
    assert b.wait_requests(1)[0].header_all("host") == ["internal.svc"]


def test_auto_host_rewrite(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options={"autoHostRewrite": True})
    rv = rivet(cfg)
    assert rv.get("/", host="public.example").status == 200
    hosts = b.wait_requests(1)[0].header_all("host")
    assert hosts == ["127.0.0.1"], hosts  # the endpoint's host, without the port (as Envoy)


def test_auto_host_rewrite_ipv6_literal_is_bracketed(cfg, backend, rivet):
    """An IPv6 endpoint becomes Host: [::1] (a bare ::1 would be an invalid Host)."""
    try:
        b = backend("v6", host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = cfg.gateway()
    cfg.upstream("up", [{"addr": "::1", "port": b.port}])
    cfg.vs("vs", [route(prefix="/", upstream="up", options={"autoHostRewrite": True})])
    rv = rivet(cfg)
    assert rv.get("/", host="public.example").status == 200
    assert b.wait_requests(1)[0].header_all("host") == ["[::1]"]


def test_host_kept_without_rewrite(cfg, backend, rivet):
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    assert rv.get("/", host="Public.Example:1234").status == 200
    assert b.wait_requests(1)[0].header_all("host") == ["Public.Example:1234"]


# ---- timeouts ---------------------------------------------------------------------------

def test_timeout_not_hit_by_fast_backend(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options={"timeout": "5s"})
    rv = rivet(cfg)
    assert rv.get("/delay/200").status == 200


def test_default_timeout_allows_slow_backend(cfg, backend, rivet):
    """No timeout option: Envoy's default route timeout is 15 s, a 2 s answer gets through."""
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    assert rv.get("/delay/2000").status == 200


# ---- retries ----------------------------------------------------------------------------

def test_retry_on_5xx(cfg, backend, rivet):
    b = backend(handler=flaky(2, 503))
    cfg.simple(b, route_options={"retries": {"retryOn": "5xx", "numRetries": 2}})
    rv = rivet(cfg)
    r = rv.get("/r")
    assert r.status == 200, r
    assert len(b.wait_requests(3)) == 3


def test_retries_exhausted(cfg, backend, rivet):
    b = backend(handler=flaky(100, 503))
    cfg.simple(b, route_options={"retries": {"retryOn": "5xx", "numRetries": 2}})
    rv = rivet(cfg)
    r = rv.get("/r")
    assert r.status == 503, r
    time.sleep(0.3)          # let a (wrong) extra attempt show up
    assert len(b.requests) == 3, b.requests


def test_retry_default_num_retries_is_one(cfg, backend, rivet):
    b = backend(handler=flaky(100, 503))
    cfg.simple(b, route_options={"retries": {"retryOn": "5xx"}})
    rv = rivet(cfg)
    assert rv.get("/r").status == 503
    time.sleep(0.3)
    assert len(b.requests) == 2, b.requests


def test_no_retry_without_policy(cfg, backend, rivet):
    b = backend(handler=flaky(1, 503))
    cfg.simple(b)
    rv = rivet(cfg)
    assert rv.get("/r").status == 503
    time.sleep(0.3)
    assert len(b.requests) == 1, b.requests


@pytest.mark.parametrize("retry_on,status,retried", [
    ("gateway-error", 502, True),
    ("gateway-error", 503, True),
    ("gateway-error", 504, True),
    ("gateway-error", 500, False),
    ("5xx", 500, True),
    ("connect-failure", 503, False),
])
def test_retry_on_status_classes(cfg, backend, rivet, retry_on, status, retried):
    b = backend(handler=flaky(1, status))
    cfg.simple(b, route_options={"retries": {"retryOn": retry_on, "numRetries": 1}})
    rv = rivet(cfg)
    r = rv.get("/r")
    if retried:
        assert r.status == 200, r
        assert len(b.wait_requests(2)) == 2
    else:
        assert r.status == status, r
        time.sleep(0.3)
        assert len(b.requests) == 1, b.requests


def test_retriable_status_codes(cfg, backend, rivet):
    b = backend(handler=flaky(1, 418))
    cfg.simple(b, route_options={"retries": {"retryOn": "retriable-status-codes", "numRetries": 1,
                                             "retriableStatusCodes": [418]}})
    rv = rivet(cfg)
    assert rv.get("/r").status == 200
    assert len(b.wait_requests(2)) == 2


@pytest.mark.parametrize("how", ["reset", "close"])
def test_retry_on_reset(cfg, backend, rivet, how):
    b = backend(handler=flaky(1, how=how))
    cfg.simple(b, route_options={"retries": {"retryOn": "reset", "numRetries": 1}})
    rv = rivet(cfg)
    r = rv.get("/r")
    assert r.status == 200, r
    assert len(b.wait_requests(2)) == 2


def test_retry_on_connect_failure_other_host(cfg, backend, closed_port, rivet):
    b = backend("good")
    dead = closed_port()
    cfg.gateway()
    cfg.upstream("up", [dead, b])
    cfg.vs("vs", [route(upstream="up", options={"retries": {"retryOn": "connect-failure", "numRetries": 3}})])
    rv = rivet(cfg)
    for i in range(20):
        r = rv.get("/cf/%d" % i)
        assert r.status == 200, (i, r)
        assert r.header("x-backend") == "good"


def test_retry_comma_list(cfg, backend, closed_port, rivet):
    b = backend(handler=flaky(1, 503))
    dead = closed_port()
    cfg.gateway()
    cfg.upstream("up", [dead, b])
    cfg.vs("vs", [route(upstream="up", options={"retries": {"retryOn": "connect-failure,5xx", "numRetries": 4}})])
    rv = rivet(cfg)
    for i in range(5):
        assert rv.get("/c/%d" % i).status == 200


def test_per_try_timeout(cfg, backend, rivet):
    b = backend(handler=flaky(1, how="slow"))
    cfg.simple(b, route_options={"timeout": "10s",
                                 "retries": {"retryOn": "5xx", "numRetries": 1, "perTryTimeout": "0.3s"}})
    rv = rivet(cfg)
    r = rv.get("/ptt")
    assert r.status == 200, r
    assert r.body != b"too late\n"
    assert len(b.wait_requests(2)) == 2


def test_retry_replays_request_body(cfg, backend, rivet):
    b = backend(handler=flaky(1, 503))
    cfg.simple(b, route_options={"retries": {"retryOn": "5xx", "numRetries": 1}})
    rv = rivet(cfg)
    r = rv.req("POST", "/post", body=b"payload-123")
    assert r.status == 200, r
    reqs = b.wait_requests(2)
    assert [x.body for x in reqs] == [b"payload-123", b"payload-123"]
    assert r.json()["body"] == "payload-123"


def test_vhost_level_retries(cfg, backend, rivet):
    b = backend(handler=flaky(1, 503))
    cfg.simple(b, vh_options={"retries": {"retryOn": "5xx", "numRetries": 1}})
    rv = rivet(cfg)
    assert rv.get("/v").status == 200
    assert len(b.wait_requests(2)) == 2


def test_route_retries_override_vhost(cfg, backend, rivet):
    b = backend(handler=flaky(100, 503))
    cfg.simple(b, vh_options={"retries": {"retryOn": "5xx", "numRetries": 1}},
               route_options={"retries": {"retryOn": "5xx", "numRetries": 3}})
    rv = rivet(cfg)
    assert rv.get("/v").status == 503
    time.sleep(0.3)
    assert len(b.requests) == 4, b.requests


# ---- header manipulation ----------------------------------------------------------------

def hm(**kw):
    return {"headerManipulation": kw}


def add(key, value, append=None):
    d = {"header": {"key": key, "value": value}}
    if append is not None:
        d["append"] = append
    return d


def test_request_headers_add_append_remove(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options=hm(
        requestHeadersToAdd=[add("x-added", "a1"), add("x-appended", "gw"), add("x-replaced", "new", False)],
        requestHeadersToRemove=["x-secret", "X-Other-Secret"]))
    rv = rivet(cfg)
    r = rv.get("/", headers=[("X-Appended", "client"), ("X-Replaced", "old"), ("X-Secret", "s"),
                             ("x-other-secret", "s2"), ("X-Keep", "k")])
    assert r.status == 200
    seen = b.wait_requests(1)[0]
    assert seen.header_all("x-added") == ["a1"]
    assert sorted(seen.header_all("x-appended")) == ["client", "gw"]
    assert seen.header_all("x-replaced") == ["new"]
    assert seen.header_all("x-secret") == []
    assert seen.header_all("x-other-secret") == []
    assert seen.header_all("x-keep") == ["k"]


def test_response_headers_add_remove(cfg, backend, rivet):
    def h(req, conn):
        conn.respond(200, "ok", [("X-Internal", "secret"), ("X-Replace-Me", "old"), ("X-Stay", "1")])
        return True
    b = backend(handler=h)
    cfg.simple(b, route_options=hm(
        responseHeadersToAdd=[add("x-resp-added", "r1"), add("x-replace-me", "new", False)],
        responseHeadersToRemove=["x-internal"]))
    rv = rivet(cfg)
    r = rv.get("/")
    assert r.status == 200
    assert r.header_all("x-resp-added") == ["r1"]
    assert r.header_all("x-replace-me") == ["new"]
    assert r.header_all("x-internal") == []
    assert r.header_all("x-stay") == ["1"]


def test_response_headers_on_direct_response(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "d"), options=hm(responseHeadersToAdd=[add("x-on-direct", "yes")]))])
    rv = rivet(cfg)
    r = rv.get("/")
    assert r.body == b"d"
    assert r.header("x-on-direct") == "yes"


def test_vhost_and_route_header_manipulation(cfg, backend, rivet):
    b = backend()
    cfg.simple(b, route_options=hm(requestHeadersToAdd=[add("x-route", "r")],
                                   responseHeadersToAdd=[add("x-route-resp", "r")]),
               vh_options=hm(requestHeadersToAdd=[add("x-vhost", "v")],
                             responseHeadersToAdd=[add("x-vhost-resp", "v")],
                             requestHeadersToRemove=["x-drop"]))
    rv = rivet(cfg)
    r = rv.get("/", headers={"X-Drop": "1"})
    assert r.header("x-route-resp") == "r" and r.header("x-vhost-resp") == "v", r
    seen = b.wait_requests(1)[0]
    assert seen.header("x-route") == "r"
    assert seen.header("x-vhost") == "v"
    assert seen.header("x-drop") is None


def test_header_manipulation_snake_case(cfg, backend, rivet):
    b = backend()
    port = cfg.gateway()
    cfg.upstream("up", [b])
    cfg.write("virtualservices", "vs",
              "metadata: {name: vs, namespace: gloo-system}\n"
              "virtualHost:\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - matchers: [{prefix: /}]\n"
              "    routeAction: {single: {upstream: {name: up, namespace: gloo-system}}}\n"
              "    options:\n"
              "      header_manipulation:\n"
              "        request_headers_to_add:\n"
              "        - header: {key: x-snake, value: ok}\n"
              "          append: false\n"
              "        request_headers_to_remove: [x-gone]\n"
              "        response_headers_to_add:\n"
              "        - header: {key: x-snake-resp, value: ok}\n"
              "      host_rewrite: snake.internal\n")
    rv = rivet(cfg)
    r = rv.get("/", port=port, headers={"x-gone": "1"})
    assert r.header("x-snake-resp") == "ok", r
    seen = b.wait_requests(1)[0]
    assert seen.header("x-snake") == "ok"
    assert seen.header("x-gone") is None
    assert seen.header("host") == "snake.internal"


def test_weighted_destination_header_options(cfg, backend, rivet):
    b1 = backend("b1")
    cfg.gateway()
    cfg.upstream("u1", [b1])
    cfg.vs("vs", [{"matchers": [{"prefix": "/"}],
                   "routeAction": {"multi": {"destinations": [
                       {"destination": {"upstream": {"name": "u1", "namespace": "gloo-system"}}, "weight": 1,
                        "options": hm(requestHeadersToAdd=[add("x-dest", "u1")])}]}}}])
    rv = rivet(cfg)
    assert rv.get("/").status == 200
    assert b1.wait_requests(1)[0].header("x-dest") == "u1"
