"""Accepting and closing downstream connections at their limits: a listener that ran out of
file descriptors (EMFILE) accepts again once some are free, with one accept per listener event
(worker.c); a lingering close ends a client that never stops sending (conn.c, the linger
timer: linger_step drains for as long as bytes keep coming)."""
import resource
import socket
import time

from harness import raw_connect, route, wait_for


def test_listener_resumes_after_running_out_of_descriptors(cfg, backend, rivet):
    """rivet limited to 64 open files, 150 connections opened at once: accept fails with
    EMFILE, the listener pauses (logged) and the connections wait in the backlog; once the
    others close, the last one - queued while no descriptor was free - is accepted and served."""
    b = backend()
    cfg.simple(b)
    rv = rivet(cfg)
    resource.prlimit(rv.pid, resource.RLIMIT_NOFILE, (64, 64))
    socks = []
    try:
        for _ in range(150):
            socks.append(raw_connect(rv.port))
        wait_for(lambda: "pausing listener" in rv.stderr(), timeout=10, msg="accept hits EMFILE")
        # at the limit the listener pauses and retries every 100 ms; the log says so once per
        # worker per 10 s, not on every retry (an fd-exhausting load must not flood the log)
        time.sleep(2.5)
        warned = rv.stderr().count("pausing listener")
        assert 1 <= warned <= 4, rv.stderr()[-2000:]
        last = socks.pop()
        last.sendall(b"GET /late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for s in socks:
            s.close()
        socks = [last]
        last.settimeout(20)
        data = b""
        while True:
            chunk = last.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b'"/late"' in data, data[:300]
    finally:
        for s in socks:
            s.close()
    assert rv.alive()


def test_lingering_close_ends_a_client_that_never_stops_sending(cfg, rivet):
    """A direct reply to a request with a 100 MB body closes the connection after the
    response: rivet reads and drops what the client sends (lingering close, draining as long
    as bytes keep coming) but only for a while - a client that sends without pause sees the
    connection end instead of rivet reading forever (or stalling its sends)."""
    cfg.gateway()
    cfg.vs("p", [route(direct=(404, "nope"))], domains=["*"])
    rv = rivet(cfg)
    s = raw_connect(rv.port)
    ended = False
    try:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
        chunk = b"z" * 65536
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                ended = True
                break
    except socket.timeout:
        pass        # the send blocked: rivet stopped reading before closing
    finally:
        s.close()
    assert ended
    assert rv.alive()
