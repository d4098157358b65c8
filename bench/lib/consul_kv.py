#!/usr/bin/python3
"""consul_kv.py - time from a Consul KV write to the first request served by it.

rivet runs with `--consul ADDR` (no directory): its Gateway, Upstream and VirtualService are
keys in Gloo's layout under the root key `gloo`:

    gloo/gateway.solo.io/v1/Gateway/gloo-system/gw
    gloo/gloo.solo.io/v1/Upstream/gloo-system/origin
    gloo/gateway.solo.io/v1/VirtualService/gloo-system/vs

The VirtualService's `/prop` route is a directResponseAction whose body is "v<N>" (the
template bench/conf/rivet/prop-vs.yaml, the same as the file propagation scenario). For each
change N: render the value with v<N>, note time.monotonic(), `PUT /v1/kv/<key>` (a new
connection per write, as `consul kv put` does), then poll the data path over one keep-alive
connection every --poll-ms until it answers v<N>; the sample is the time from just before the
PUT to that answer, so it includes Consul's own answer to the PUT, the wake-up of rivet's
blocking query, the read, decoding, the snapshot build and its publication.

Spacing. rivet's watch loop is rate-limited as Consul's rules ask (a token bucket: burst 2,
10 reads/s; doc/internals/consul-kv.md): a change that comes less than ~100 ms after the
previous one waits for a token, and what is measured is then the limiter. So the changes are
spaced --gap-ms (150) apart after each answer: every sample is one isolated change, the case
of the issue's bar. --gap-ms 20 (the harness's second, short series) shows the other case:
changes back to back, each waiting for the limiter.

  /usr/bin/python3 bench/lib/consul_kv.py --consul-port 8500 --port 8080 [--changes 200]

(against a Consul already holding the Gateway and Upstream keys; prints one JSON object:
changes, failures, put_failures, p50_ms, p90_ms, p99_ms, max_ms, mean_ms, samples_ms).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import propagation  # noqa: E402
import targets as T  # noqa: E402

ROOT_KEY = "gloo"
KEYS = {   # Gloo's layout: <rootKey>/<group>/<version>/<Kind>/<namespace>/<name> (doc/consul.md)
    "gateway": f"{ROOT_KEY}/gateway.solo.io/v1/Gateway/gloo-system/gw",
    "upstream": f"{ROOT_KEY}/gloo.solo.io/v1/Upstream/gloo-system/origin",
    "vs": f"{ROOT_KEY}/gateway.solo.io/v1/VirtualService/gloo-system/vs",
}


def render_text(template, **vals):
    with open(os.path.join(T.CONF, template)) as f:
        text = f.read()
    for k, v in vals.items():
        text = text.replace(f"@{k}@", str(v))
    return text


def seed(consul_port, port, origin_port, version=0):
    """Write the Gateway, the origin Upstream and the VirtualService (body v<version>)."""
    for key, text in ((KEYS["gateway"], render_text("rivet/gw.yaml", PORT=port)),
                      (KEYS["upstream"], render_text("rivet/origin.yaml", ORIGIN_PORT=origin_port)),
                      (KEYS["vs"], render_text("rivet/prop-vs.yaml", VERSION=version))):
        if not T.consul_put(consul_port, key, text):
            raise RuntimeError(f"PUT {key} to the Consul double on port {consul_port} failed")


def run(consul_port, port, changes=200, first=1, path="/prop", host="bench", poll_ms=1.0,
        timeout_s=5.0, gap_ms=150.0):
    with open(os.path.join(T.CONF, "rivet", "prop-vs.yaml")) as f:
        tpl = f.read()
    poll = propagation.Poller(port, path, host)
    samples, failures, put_failures = [], 0, 0
    try:
        for n in range(first, first + changes):
            want = f"v{n}".encode()
            value = tpl.replace("@VERSION@", str(n)).encode()
            t0 = time.monotonic()
            if not T.consul_put(consul_port, KEYS["vs"], value, timeout=timeout_s):
                put_failures += 1
                failures += 1
                time.sleep(gap_ms / 1000.0)
                continue
            ms = propagation.wait_for_body(poll, want, t0, timeout_s, poll_ms)
            if ms is None:
                failures += 1
            else:
                samples.append(ms)
            time.sleep(gap_ms / 1000.0)
    finally:
        poll.close()
    out = {"changes": changes, "failures": failures, "put_failures": put_failures,
           "poll_ms": poll_ms, "gap_ms": gap_ms}
    out.update(propagation.summary(samples))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--consul-port", type=int, required=True, help="Consul HTTP port on 127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="gateway data port on 127.0.0.1")
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--first", type=int, default=1, help="first version number written")
    ap.add_argument("--poll-ms", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per change")
    ap.add_argument("--gap-ms", type=float, default=150.0,
                    help="pause after each answer before the next PUT (default 150: past the "
                         "watch loop's 10 reads/s limiter)")
    a = ap.parse_args()
    print(json.dumps(run(a.consul_port, a.port, a.changes, a.first, poll_ms=a.poll_ms,
                         timeout_s=a.timeout, gap_ms=a.gap_ms)))


if __name__ == "__main__":
    main()
