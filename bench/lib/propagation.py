#!/usr/bin/python3
"""propagation.py - time from a config file change to the first request served by it.

The config file holds a directResponseAction whose body is "v<N>" (template placeholder
@VERSION@). For each change N = 1..CHANGES: render the file with v<N>, note
time.monotonic(), put the file in place (rename of a fully written file next to it, or an
in-place rewrite with --write inplace), then poll the data path over one keep-alive
connection until it answers v<N>; the sample is the time from just before the write to the
first answer with the new body. Polls are spaced --poll-ms apart so that the poller does not
compete with the gateway's own reload for the CPU.

  /usr/bin/python3 bench/lib/propagation.py --file CFG/virtualservices/gloo-system/vs.yaml \\
      --template bench/conf/rivet/prop-vs.yaml --port 8080 [--changes 200]

prints one JSON object: changes, failures, p50_ms, p90_ms, p99_ms, max_ms, mean_ms, samples_ms.
"""
import argparse
import http.client
import json
import os
import time


def percentile(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


class Poller:
    def __init__(self, port, path, host):
        self.port, self.path, self.host = port, path, host
        self.c = None

    def get(self):
        for _ in range(2):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                self.c.request("GET", self.path, headers={"Host": self.host})
                r = self.c.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                if self.c is not None:
                    self.c.close()
                self.c = None
        return None, b""

    def close(self):
        if self.c is not None:
            self.c.close()


def wait_for_body(poll, want, t0, timeout_s, poll_ms):
    """Poll (a Poller) every poll_ms until the data path answers 200 with body want.

    Returns the time from t0 (time.monotonic(), taken just before the change) to that answer
    in ms, or None when timeout_s passed since t0 without it.
    """
    deadline = t0 + timeout_s
    while True:
        st, body = poll.get()
        t1 = time.monotonic()
        if st == 200 and body == want:
            return (t1 - t0) * 1000.0
        if t1 > deadline:
            return None
        time.sleep(poll_ms / 1000.0)


def summary(samples):
    """p50/p90/p99/max/mean of samples (ms; left out when there are none), then samples_ms."""
    out = {}
    if samples:
        out.update({
            "p50_ms": percentile(samples, 50), "p90_ms": percentile(samples, 90),
            "p99_ms": percentile(samples, 99), "max_ms": max(samples),
            "mean_ms": sum(samples) / len(samples),
        })
    out["samples_ms"] = [round(x, 3) for x in samples]
    return out


def write_config(path, text, mode):
    if mode == "inplace":
        with open(path, "w") as f:
            f.write(text)
        return
    # rename: write the whole file beside the config tree, then move it in at once
    stage = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(path)))),
                         ".stage-" + os.path.basename(path))
    with open(stage, "w") as f:
        f.write(text)
    os.rename(stage, path)


def run(file, template_text, port, changes=200, path="/prop", host="bench", poll_ms=1.0,
        timeout_s=5.0, gap_ms=20.0, mode="rename", first=1):
    poll = Poller(port, path, host)
    samples, failures = [], 0
    try:
        for n in range(first, first + changes):
            want = f"v{n}".encode()
            text = template_text.replace("@VERSION@", str(n))
            t0 = time.monotonic()
            write_config(file, text, mode)
            ms = wait_for_body(poll, want, t0, timeout_s, poll_ms)
            if ms is None:
                failures += 1
            else:
                samples.append(ms)
            time.sleep(gap_ms / 1000.0)
    finally:
        poll.close()
    out = {"changes": changes, "failures": failures, "write": mode, "poll_ms": poll_ms}
    out.update(summary(samples))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--file", required=True, help="the VirtualService file the gateway watches")
    ap.add_argument("--template", required=True, help="its text with @VERSION@ for the body")
    ap.add_argument("--port", type=int, required=True, help="gateway data port on 127.0.0.1")
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--path", default="/prop")
    ap.add_argument("--host", default="bench")
    ap.add_argument("--poll-ms", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per change")
    ap.add_argument("--write", choices=("rename", "inplace"), default="rename")
    a = ap.parse_args()
    with open(a.template) as f:
        tpl = f.read()
    print(json.dumps(run(a.file, tpl, a.port, a.changes, a.path, a.host, a.poll_ms, a.timeout,
                         mode=a.write)))


if __name__ == "__main__":
    main()
