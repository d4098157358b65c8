"""Process life cycle: startup flags and Settings, graceful SIGTERM, slowloris, defaults."""
import signal
import socket
import threading
import time

import pytest

from harness import (NS, ConfigDir, can_connect, port_is_free, raw_connect, request, route,
                     timeout_scale, wait_for)


def test_sigterm_idle_exits_0(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    assert rv.get("/").status == 200
    rv.signal(signal.SIGTERM)
    rc = rv.wait(15)
    assert rc == 0, (rc, rv.stderr()[-2000:])


def test_sigterm_drains_in_flight(cfg, backend, rivet):
    # the backend holds every answer until the test releases it (a fixed 3 s delay raced the
    # listener check below on a slow machine: the requests could end, and rivet exit, first)
    release = threading.Event()

    def hold(req, conn):
        release.wait(60)
        conn.backend.echo(req, conn)
        return True
    b = backend(handler=hold)
    cfg.simple(b)
    rv = rivet(cfg)
    port = rv.port
    results = []
    lock = threading.Lock()

    def slow(i):
        try:
            r = request(port, "/held/%d" % i, timeout=60)
            with lock:
                results.append((i, r.status, r.json()["target"]))
        except Exception as e:  # noqa: BLE001
            with lock:
                results.append((i, "error", repr(e)))

    ts = [threading.Thread(target=slow, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    try:
        b.wait_requests(4, started=True)             # all four are in flight at the backend
        rv.signal(signal.SIGTERM)
        # the listeners close: new connections are refused while the held ones wait
        wait_for(lambda: not can_connect(port), timeout=5, interval=0.02,
                 msg="listener to close after SIGTERM")
        assert rv.alive() and not results, (results, rv.stderr()[-2000:])
    finally:
        release.set()
    for t in ts:
        t.join(60)
    assert sorted(results) == [(i, 200, "/held/%d" % i) for i in range(4)], results
    rc = rv.wait(20)
    assert rc == 0, (rc, rv.stderr()[-2000:])


def test_sigterm_closes_idle_keepalive(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    conn = rv.connect()
    assert request(rv.port, "/", conn=conn).status == 200
    rv.signal(signal.SIGTERM)
    # an idle keep-alive connection does not hold up the exit: the wait (scaled) stays below
    # the 60 s keep-alive idle timeout that would otherwise end it
    rc = rv.wait(min(15.0, 45.0 / timeout_scale()))
    conn.close()
    assert rc == 0, (rc, rv.stderr()[-2000:])


def test_sigint_exits_0(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    rv.signal(signal.SIGINT)
    assert rv.wait(15) == 0


def test_slowloris_closed_while_others_served(cfg, backend, rivet):
    """Clients trickling their headers are cut off by the header timeout (~10 s); a normal
    request in parallel is served throughout."""
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    attackers = []
    for i in range(5):
        s = raw_connect(rv.port)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
        attackers.append(s)
    closed = {}
    start = time.monotonic()
    k = 0
    while len(closed) < len(attackers) and time.monotonic() - start < 25:
        k += 1
        for idx, s in enumerate(attackers):
            if idx in closed:
                continue
            try:
                s.sendall(b"X-%d: %d\r\n" % (k, k))
                s.settimeout(0.01)
                try:
                    d = s.recv(4096)
                    closed[idx] = d if d else b"<eof>"
                except socket.timeout:
                    pass
            except (BrokenPipeError, ConnectionResetError):
                closed[idx] = b"<reset>"
        # the gateway keeps serving others meanwhile
        if k % 4 == 0:
            assert rv.get("/probe-%d" % k, timeout=5).status == 200
        time.sleep(0.5)
    for s in attackers:
        s.close()
    assert len(closed) == len(attackers), "slow clients still connected after 25 s: %d of %d closed" % (
        len(closed), len(attackers))
    for d in closed.values():
        assert d in (b"<eof>", b"<reset>") or d.startswith(b"HTTP/1.1 408"), d
    assert "/slow" not in b.paths()
    assert rv.get("/after").status == 200


def test_workers_flag(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    for w in (1, 4):
        rv = rivet(cfg, workers=w)
        for _ in range(10):
            assert rv.get("/").status == 200
        rv.stop()


def test_bad_flag_values_exit_nonzero(cfg):
    from harness import run_cli
    cfg.gateway()
    for args in (["--workers", "0"], ["--log-level", "loud"], ["--no-such-flag"]):
        p = run_cli("run", "--dir", cfg.root, *args, timeout=10)
        assert p.returncode != 0, (args, p)


def test_settings_file_selects_config_directory(tmp_path, rivet):
    real = ConfigDir(tmp_path / "real-config")
    real.gateway()
    real.vs("vs", [route(direct=(200, "from settings dir"))])
    boot = tmp_path / "boot"
    (boot / NS).mkdir(parents=True)
    (boot / NS / "default.yaml").write_text(
        "metadata:\n  name: default\n  namespace: gloo-system\n"
        "discoveryNamespace: gloo-system\n"
        "directoryConfigSource:\n  directory: %s\n"
        "refreshRate: 1s\n" % real.root)
    rv = rivet(real, dir_=boot)
    assert rv.get("/").text == "from settings dir"


def test_namespace_flag_selects_settings(tmp_path, rivet):
    a = ConfigDir(tmp_path / "config-a")
    a.gateway()
    a.vs("vs", [route(direct=(200, "A"))])
    other = ConfigDir(tmp_path / "config-other")
    other.gateway()
    other.vs("vs", [route(direct=(200, "OTHER"))])
    boot = tmp_path / "boot"
    for ns, d in ((NS, a), ("my-ns", other)):
        (boot / ns).mkdir(parents=True)
        (boot / ns / "default.yaml").write_text(
            "metadata: {name: default, namespace: %s}\n"
            "directoryConfigSource: {directory: %s}\n" % (ns, d.root))
    rv = rivet(other, dir_=boot, args=["--namespace", "my-ns"])
    assert rv.get("/").text == "OTHER"
    assert not can_connect(a.gateway_ports["gw"])


def test_log_levels_accepted(cfg, rivet):
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    for lvl in ("error", "warn", "debug"):
        rv = rivet(cfg, log_level=lvl)
        assert rv.get("/").status == 200
        rv.stop()


def test_default_listener_8080(tmp_path, rivet):
    """Without a Gateway, rivet listens on [::]:8080 (only checked when 8080 is free)."""
    if not (port_is_free(8080, "127.0.0.1") and (port_is_free(8080, "::1") or not _have_ipv6())):
        pytest.skip("port 8080 is in use")
    cfg = ConfigDir(tmp_path / "config")
    cfg.vs("vs", [route(direct=(200, "default listener"))])
    rv = rivet(cfg)
    try:
        wait_for(lambda: can_connect(8080, "::1") or can_connect(8080, "127.0.0.1"), msg="port 8080")
        addr = "::1" if can_connect(8080, "::1") else "127.0.0.1"
        r = request(8080, "/", addr=addr)
        assert r.text == "default listener"
    finally:
        rv.stop()


def _have_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_run_unreadable_dir_fails(tmp_path):
    from harness import run_cli
    p = run_cli("run", "--dir", tmp_path / "nope", "--admin", "127.0.0.1:0", timeout=15)
    assert p.returncode == 2, p


def test_survives_client_abuse(cfg, backend, rivet):
    """Half-sent requests, resets and garbage do not take rivet down."""
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    import struct
    for data in (b"", b"G", b"GET / HTTP/1.1\r\nHost:", b"\x00" * 1000, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                 b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"):
        s = raw_connect(rv.port)
        if data:
            s.sendall(data)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    for _ in range(5):
        assert rv.get("/ok").status == 200
    assert rv.alive()


def test_two_instances_do_not_share_state(tmp_path, rivet):
    a = ConfigDir(tmp_path / "a")
    a.gateway()
    a.vs("vs", [route(direct=(200, "A"))])
    c = ConfigDir(tmp_path / "c")
    c.gateway()
    c.vs("vs", [route(direct=(200, "C"))])
    ra = rivet(a)
    rc = rivet(c)
    assert ra.get("/").text == "A"
    assert rc.get("/").text == "C"

