"""Path normalisation: a deny rule cannot be walked around, and the backend sees exactly the
path that was matched (the normalised one)."""
import pytest

from harness import request, route


def start_deny_admin(cfg, backend, rivet):
    b = backend()
    cfg.gateway()
    cfg.upstream("up", [b])
    cfg.vs("vs", [route(prefix="/admin", direct=(403, "denied")),
                  route(prefix="/", upstream="up")])
    rv = rivet(cfg)
    return rv, b


def send_path(rv, path):
    """Send path byte-exact (http.client would refuse some of these)."""
    data = b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    res = rv.raw(data, timeout=10)
    assert not res.timed_out, res
    rs = res.responses()
    assert rs, res
    return rs[0]


# normalise to /admin...: must hit the deny rule
BYPASS_403 = [
    "/admin",
    "/admin/x",
    "/admin?x=1",
    "/a/../admin",
    "//admin",
    "///admin/x",
    "/%2e%2e/admin",
    "/%2E%2e/admin",
    "/%2e/admin",
    "/%61dmin",
    "/%61%64%6d%69%6e/x",
    "/./admin",
    "/../admin",
    "/x/./../admin",
    "/x/y/../../admin",
    "/p;/../admin",
    "/admin/.",
    "/admin/x/..",
    "/pub/%2e%2e/admin",
]


@pytest.mark.parametrize("path", BYPASS_403)
def test_deny_rule_holds(cfg, backend, rivet, path):
    rv, b = start_deny_admin(cfg, backend, rivet)
    r = send_path(rv, path)
    assert r.status == 403, (path, r)
    assert r.body == b"denied"
    assert b.all_raw() == b"", b.all_raw()


# encoded slash / backslash: rejected outright
REJECT_400 = ["/admin%2fx", "/admin%2Fx", "/x%2f..%2fadmin", "/%2e%2e%2fadmin"]


@pytest.mark.parametrize("path", REJECT_400)
def test_encoded_slash_rejected(cfg, backend, rivet, path):
    rv, b = start_deny_admin(cfg, backend, rivet)
    r = send_path(rv, path)
    assert r.status == 400, (path, r)
    assert b.all_raw() == b""


# other nasty shapes under /admin: denied one way or the other, never forwarded
DENY_ANY = ["/admin%5cx", "/admin%5Cx", "/admin\\x", "/x\\..\\admin", "/admin%00", "/admin%00x",
            "/admin#x", "/adm%69n%2f", "/%zz/../admin", "/admin%2"]


@pytest.mark.parametrize("path", DENY_ANY)
def test_nasty_paths_never_reach_backend(cfg, backend, rivet, path):
    rv, b = start_deny_admin(cfg, backend, rivet)
    r = send_path(rv, path)
    assert r.status in (400, 403), (path, r)
    assert b.all_raw() == b""


NORMALISED = [
    ("/pub/a/../b", "/pub/b"),
    ("/pub//x", "/pub/x"),
    ("/pub/./x", "/pub/x"),
    ("/pub/x/..", "/pub/"),
    ("/pub/x/", "/pub/x/"),
    ("/../pub", "/pub"),
    ("/pub/%7euser", "/pub/~user"),
    ("/pub/%41%42%2D%5f", "/pub/AB-_"),
    ("/pub/a%20b", "/pub/a%20b"),
    ("/pub/a%2ab", "/pub/a%2Ab"),
    ("/pub/%2561", "/pub/%2561"),            # no double decoding
    ("/pub/%C3%A9", "/pub/%C3%A9"),
    ("/pub/x?q=/../a%2f&r=//", "/pub/x?q=/../a%2f&r=//"),   # the query is not touched
    ("/pub/ADMIN", "/pub/ADMIN"),
    ("/ADMIN", "/ADMIN"),                    # case-sensitive prefix: not the deny rule
]


@pytest.mark.parametrize("path,want", NORMALISED)
def test_backend_sees_normalised_path(cfg, backend, rivet, path, want):
    rv, b = start_deny_admin(cfg, backend, rivet)
    r = send_path(rv, path)
    assert r.status == 200, (path, r)
    seen = b.wait_requests(1)[0]
    assert seen.target == want, (path, seen.target)


def test_regex_and_rewrite_use_normalised_path(cfg, backend, rivet):
    b = backend()
    cfg.gateway()
    cfg.upstream("up", [b])
    cfg.vs("vs", [route(regex="/reg/[a-z]+", direct=(200, "regex")),
                  route(prefix="/api", upstream="up", options={"prefixRewrite": "/v2"}),
                  route(prefix="/", direct=(404, "none"))])
    rv = rivet(cfg)
    assert send_path(rv, "/reg/x/../abc").body == b"regex"
    assert send_path(rv, "/reg//abc").body == b"regex"
    r = send_path(rv, "/x/../api/%61b")
    assert r.status == 200, r
    assert b.wait_requests(1)[0].target == "/v2/ab"


def test_exact_match_after_normalisation(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(exact="/login", direct=(200, "login")),
                  route(prefix="/", direct=(200, "other"))])
    rv = rivet(cfg)
    assert send_path(rv, "/x/../login").body == b"login"
    assert send_path(rv, "//login").body == b"login"
    assert send_path(rv, "/%6cogin").body == b"login"


def test_regex_that_cannot_be_evaluated_fails_closed(cfg, rivet):
    """A route regex that hits the backtracking limit on a crafted path must not let the
    request fall through to a later route (a deny rule written as a regex stays a deny)."""
    port = cfg.gateway()
    cfg.vs("vs", [route(regex="/x/(a*)*b", direct=(403, "denied")), route(prefix="/", direct=(200, "open"))])
    rv = rivet(cfg)
    r = request(port, "/x/" + "a" * 8000)
    assert r.status == 400, (r.status, r.body)
    assert request(port, "/x/aab").status == 403
    assert request(port, "/elsewhere").status == 200
    assert rv.alive()
