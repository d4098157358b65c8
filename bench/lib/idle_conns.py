#!/usr/bin/python3
"""idle_conns.py - RSS growth of a server per idle keep-alive connection.

Opens N connections to 127.0.0.1:PORT, sends one keep-alive GET on each and reads the whole
answer (so each connection has been fully used once and then sits idle, as a real client's
does between requests), waits for the server to settle, and reads the resident memory
(VmRSS, summed over the given PIDs and their children) before, with the N connections held
open, and after closing them.

  /usr/bin/python3 bench/lib/idle_conns.py --port 8080 --pid 1234 [--n 1000] [--path /]

prints one JSON object: rss_before_kb, rss_held_kb, rss_after_close_kb, per_conn_bytes,
still_open (connections the server had not closed when measured), seconds.
"""
import argparse
import json
import os
import resource
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402


def _read_response(s, deadline):
    """Read one HTTP/1.1 response (Content-Length or chunked) from s; True when complete."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            return False
        chunk = s.recv(65536)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdr = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdr[k.strip().lower()] = v.strip().lower()
    if "content-length" in hdr:
        need = int(hdr["content-length"])
        while len(body) < need:
            if time.monotonic() > deadline:
                return False
            chunk = s.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True
    if "chunked" in hdr.get("transfer-encoding", ""):
        while not body.endswith(b"0\r\n\r\n"):
            if time.monotonic() > deadline:
                return False
            chunk = s.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True
    return True


def hold(port, n, pids_fn, path="/", host="bench", settle=1.0, timeout=60.0):
    """pids_fn() -> the server's PIDs now. Returns the measurement as a dict."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    t0 = time.monotonic()
    deadline = t0 + timeout
    time.sleep(settle)
    rss0 = measure.tree_rss_kb(pids_fn())
    socks = []
    failed = 0
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
            s.sendall(req)
            if not _read_response(s, deadline):
                failed += 1
        time.sleep(settle)
        rss1 = measure.tree_rss_kb(pids_fn())
        # a socket readable now was closed (or written to) by the server: not idle any more
        still_open = 0
        for s in socks:
            r, _, _ = select.select([s], [], [], 0)
            if not r:
                still_open += 1
    finally:
        for s in socks:
            s.close()
    time.sleep(settle)
    rss2 = measure.tree_rss_kb(pids_fn())
    held = len(socks)
    return {
        "conns": held, "failed": failed, "still_open": still_open,
        "rss_before_kb": rss0, "rss_held_kb": rss1, "rss_after_close_kb": rss2,
        "per_conn_bytes": (rss1 - rss0) * 1024.0 / held if held else float("nan"),
        "seconds": time.monotonic() - t0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, action="append", required=True,
                    help="server PID (children included); repeat for several")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--host", default="bench")
    ap.add_argument("--settle", type=float, default=1.0)
    a = ap.parse_args()

    def pids():
        out = []
        for p in a.pid:
            out += measure.process_tree(p)
        return out

    print(json.dumps(hold(a.port, a.n, pids, a.path, a.host, a.settle)))


if __name__ == "__main__":
    main()
