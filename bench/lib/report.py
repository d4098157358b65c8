"""report.py - raw results file (bench/results/*.txt) and the markdown report.

The raw file has the run's metadata as one JSON line ("# meta {...}") and one line per
measurement of key=value pairs (shell-quoted when needed), every attempt included: a noisy
run that was repeated stays in the file with used=0.
"""
import json
import math
import shlex
import statistics

WRK = [("c50", "HTTP/1.1 keep-alive GET /, 50 connections (13-byte body)"),
       ("c256", "HTTP/1.1 keep-alive GET /, 256 connections (13-byte body)"),
       ("16k", "HTTP/1.1 keep-alive GET /16k, 50 connections (16 KiB body)"),
       ("https", "HTTPS keep-alive GET /, 50 connections, TLS terminated by the proxy (13-byte body)"),
       ("tls-handshake", "New TLS connection per request (TLS 1.3 handshake with session resumption), 50 connections"),
       ("upstream-tls", "HTTP/1.1 keep-alive GET /, 50 connections, TLS from the proxy to the origin")]
TLS_NOTE = {
    "https": "The proxies terminate TLS (TLS 1.3, ECDSA P-256 certificate, OpenSSL 3 in all three) "
             "and speak plain HTTP/1.1 to the same origin; wrk keeps its 50 TLS connections open, "
             "so this is the steady cost of encryption plus proxying.",
    "tls-handshake": "wrk sends `Connection: close`: every request opens a new TCP connection and "
                     "does a TLS 1.3 handshake. wrk keeps its client session across reconnects "
                     "(SSL_clear), so it offers the newest session ticket: each handshake is a "
                     "resumption (PSK with a fresh ECDHE X25519 exchange, no certificate), and "
                     "each server hands out a new ticket on it (OpenSSL's default, and rivet "
                     "since 2026-11-27; before, rivet did not, and wrk fell back to a full "
                     "handshake every other connection). *req/s* is new TLS connections per "
                     "second and *CPU µs/req* the proxy's CPU per handshake + request + close. "
                     "The origin sees keep-alive connections from the proxies either way.",
    "upstream-tls": "wrk speaks plain HTTP; each proxy speaks TLS to an origin nginx serving TLS "
                    "(TLS 1.3, ECDSA P-256), verifying its certificate for bench.test (rivet always "
                    "verifies; nginx `proxy_ssl_verify on`, HAProxy `verify required`) and keeping "
                    "its upstream connections alive (sessions reused). The origin's CPU is that "
                    "origin's; *origin conns opened* counts upstream TLS handshakes during the run.",
}
TARGET_ORDER = ["direct", "nginx", "haproxy", "rivet", "floor"]
LABEL = {"direct": "direct (origin only)", "floor": "floor (TCP relay)"}
ISSUE3_BAR = {"c50": 0.75, "c256": 0.75, "16k": 0.8}     # rivet's CPU µs/req ×nginx asked by issue 3
FLOOR_NOTE = (
    "*floor (TCP relay)* is `bench/floor/relay.c`, compiled by the harness at start (`cc -O2`) "
    "and pinned like the proxies: a single-threaded, edge-triggered epoll loop that opens one "
    "origin connection per client connection and moves bytes both ways (one recv into a fixed "
    "64 KiB buffer, one send to the other side) with no HTTP work at all. With keep-alive GETs "
    "that is the wire pattern of an HTTP/1.1 proxy with upstream keep-alive at its minimum: 4 "
    "syscalls and 4 TCP segments per request (on loopback the sender's send() also runs the "
    "receiver's TCP receive path). Its CPU µs/req is therefore what the kernel (plus an epoll "
    "loop) charges for a proxied request on this machine: the share no proxy with this wire "
    "pattern can go under. *Above the floor* is each proxy's CPU µs/req minus the floor's, per "
    "round (median): the cost of its HTTP work and of its own design. The floor keeps no "
    "connection pool, so its *origin conns opened* is wrk's connections (one connect per "
    "client connection per run, not per request). Like the proxies, it pays for the wake-ups of "
    "an event loop that is not always busy (see *proxy CPU use*): a loop that saturates its CPU "
    "handles more events per epoll_wait. It is a measuring stick, not a proxy.")


# ---------------------------------------------------------------------------------------------
# raw file
def _fmt(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return shlex.quote(str(v))


def write_raw(path, meta, records):
    keys_first = ["scenario", "round", "order", "target", "attempt", "used", "noisy"]
    with open(path, "w") as f:
        f.write("# rivet benchmark raw results: one line per measurement (bench/lib/report.py)\n")
        f.write("# meta " + json.dumps(meta, sort_keys=True) + "\n")
        for r in records:
            ks = [k for k in keys_first if k in r] + sorted(k for k in r if k not in keys_first)
            f.write(" ".join(f"{k}={_fmt(r[k])}" for k in ks) + "\n")


def _parse(v):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def read_raw(path):
    meta, recs = {}, []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# meta "):
                meta = json.loads(line[7:])
            elif line and not line.startswith("#"):
                recs.append({k: _parse(v) for k, v in (kv.split("=", 1) for kv in shlex.split(line))})
    return meta, recs


# ---------------------------------------------------------------------------------------------
# numbers
def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")


def spread(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))


def f_num(x, nd=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if nd == 0:
        return f"{x:,.0f}"
    return f"{x:,.{nd}f}"


def f1(x):
    return f"{x:,.1f}"


def f_us(us):
    if us is None or (isinstance(us, float) and math.isnan(us)):
        return "—"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def cell(xs, fmt, unit=""):
    """'median (min–max) unit' of the finite values of xs; just the median for one value."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "—"
    m = fmt(med(xs))
    if len(xs) == 1:
        return m + unit
    lo, hi = spread(xs)
    if fmt(lo) == fmt(hi):
        return m + unit
    return f"{m} ({fmt(lo)}–{fmt(hi)}){unit}"


def lat_cell(xs):
    """Latencies in µs, shown in µs below 1 ms and in ms above (one unit per cell)."""
    m = med(xs)
    if isinstance(m, float) and math.isnan(m):
        return "—"
    if m < 1000:
        return cell(xs, lambda x: f"{x:.0f}", " µs")
    return cell(xs, lambda x: f"{x / 1000:.2f}", " ms")


def mib_cell(xs_kb):
    return cell(xs_kb, lambda x: f"{x / 1024:.1f}", " MiB")


def ratio_cell(xs, ref=False):
    return "1" if ref and xs else cell(xs, lambda x: f"{x:.2f}" if x >= 0.1 else f"{x:.3f}")


def used(recs, scenario):
    return [r for r in recs if r.get("scenario") == scenario and r.get("used", 1) == 1
            and not r.get("failed")]


def per_round(rs, target, key, ref, op):
    """op(target's key, ref's key) within each round where both ran with a number."""
    by = {}
    for r in rs:
        by.setdefault(r["round"], {})[r["target"]] = r
    out = []
    for rnd, d in sorted(by.items()):
        if target in d and ref in d:
            a, b = d[target].get(key), d[ref].get(key)
            if a is not None and b is not None and not math.isnan(a) and not math.isnan(b):
                v = op(a, b)
                if v is not None:
                    out.append(v)
    return out


def per_round_ratio(rs, target, key, ref="nginx"):
    """target's key over ref's, within each round (rounds where ref's is 0 are left out)."""
    return per_round(rs, target, key, ref, lambda a, b: a / b if b else None)


def per_round_diff(rs, target, key, ref):
    """target's key minus ref's, within each round where both ran."""
    return per_round(rs, target, key, ref, lambda a, b: a - b)


def floor_lines(w, sc, rs, names, first):
    """Under a throughput table with the floor: what the floor is (once), each proxy's CPU
    above it, and what issue 3's bar leaves above the floor."""
    if first:
        w(FLOOR_NOTE)
        w("")
    above = []
    for t in names:
        if t in ("direct", "floor"):
            continue
        d = per_round_diff(rs, t, "cpu_us_per_req", "floor")
        if d:
            above.append(f"{t} {'+' if med(d) >= 0 else ''}{med(d):.2f}")
    f = med(per_round_ratio(rs, "floor", "cpu_us_per_req"))
    line = ""
    if above:
        line = "CPU µs/req above the floor: " + ", ".join(above) + "."
    bar = ISSUE3_BAR.get(sc)
    if bar is not None and not math.isnan(f):
        if f < bar:
            line += (f" The floor is {f:.2f}×nginx, so issue 3's bar ({bar:g}×nginx) leaves a proxy "
                     f"at most {(bar - f) / (1 - f):.0%} of nginx's CPU above the floor.")
        else:
            line += (f" The floor is {f:.2f}×nginx: issue 3's bar ({bar:g}×nginx) is below it, out of "
                     f"reach of a proxy with this wire pattern on this machine (only fewer syscalls "
                     f"or segments per request could go there).")
    if line:
        w(line.strip())
        w("")


# ---------------------------------------------------------------------------------------------
def latest_with(results_dir, scenario, exclude=None):
    """(path, meta, records) of the newest full (not quick-*) raw file in results_dir that
    measured scenario, or None. For the opt-in consul-scale scenario: a full run that did not
    measure it shows the latest separate measurement, saying where it comes from."""
    import os
    try:
        names = sorted((n for n in os.listdir(results_dir)
                        if n.endswith(".txt") and not n.startswith("quick-")), reverse=True)
    except OSError:
        return None
    for n in names:
        path = os.path.join(results_dir, n)
        if exclude and os.path.abspath(path) == os.path.abspath(exclude):
            continue
        try:
            meta, recs = read_raw(path)
        except (OSError, ValueError):
            continue
        rs = [r for r in recs if r.get("scenario") == scenario]
        if rs:
            return path, meta, rs
    return None


def _provenance(w, path, smeta):
    w(f"*Opt-in scenario, not part of the run above: from a separate run* "
      f"(`{smeta.get('command', '?')}`, {smeta.get('date', '?')}, rivet "
      f"{str(smeta.get('rivet', '?')).removeprefix('rivet ')}"
      + (f", binary sha256 {smeta['rivet_sha256']}…" if smeta.get("rivet_sha256") else "")
      + f", {smeta.get('rounds', '?')} rounds of {smeta.get('duration_s', '?')} s"
      + f", load average at start {smeta.get('loadavg_start', '?')}; raw: `{path}`"
      + (f"; note: {smeta['note']}" if smeta.get("note") else "")
      + "".join(f"; skipped target {k}: {v}" for k, v in (smeta.get("skipped") or {}).items())
      + ").")
    w("")


def render(meta, recs, raw_path="", separate=None):
    """separate: {scenario: (raw path, meta, records)} of separate runs of opt-in scenarios
    (consul-scale, https, tls-handshake), each shown when this run did not measure it
    (latest_with())."""
    separate = separate or {}
    L = []
    w = L.append
    w("# Benchmarks")
    w("")
    w("Side-by-side numbers for rivet, nginx and HAProxy in front of the same origin, on one "
      "machine, over loopback. This file is written by `bench/run.sh` (see `bench/README.md` "
      "for the method and every flag); edit the generator in `bench/lib/report.py`, not this file.")
    w("")
    if meta.get("quick"):
        w("> **Quick (smoke-test) run**: 1-second runs, too short to compare targets. "
          "Re-run `bench/run.sh` for real numbers.")
        w("")
    att = [r for r in recs if "other_pct" in r]
    kept_noisy = [r for r in att if r.get("noisy") and r.get("used")]
    used_att = [r for r in att if r.get("used")]
    if used_att and len(kept_noisy) > len(used_att) // 4:
        w(f"> **Noisy machine**: {len(kept_noisy)} of the {len(used_att)} measured runs in the "
          f"tables had other processes using more than {meta.get('noise_pct')}% of the CPUs "
          f"(median {med([r['other_pct'] for r in kept_noisy]):.0f}%; see Noise). Treat req/s "
          f"and latency as indicative and rely on CPU µs/req and the per-round ratios; re-run on "
          f"a quiet machine for reference numbers.")
        w("")
    w("## Run")
    w("")
    w(f"- Date: {meta.get('date', '?')}")
    w(f"- Command: `{meta.get('command', 'bench/run.sh')}`")
    w(f"- Machine: {meta.get('cpu_model', '?')}, {meta.get('cpus', '?')} CPUs, "
      f"{meta.get('mem_gib', '?')} GiB, Linux {meta.get('kernel', '?')}; "
      f"load average at start {meta.get('loadavg_start', '?')}")
    w(f"- Software: {meta.get('nginx', '?')}; {meta.get('haproxy', '?')}; {meta.get('wrk', '?')}; "
      f"rivet {str(meta.get('rivet', '?')).removeprefix('rivet ')}"
      + (f"; floor: `bench/floor/relay.c` built with {meta['floor_cc']}, -O2" if meta.get("floor_cc") else ""))
    w(f"- Pinning: every proxy (one worker / one thread) on CPU {meta.get('proxy_cpu')}, "
      f"the origin nginx and wrk (one thread) on CPU {meta.get('load_cpu')}")
    w(f"- {meta.get('rounds')} interleaved rounds of {meta.get('duration_s')} s per target and "
      f"scenario, after {meta.get('warmup_s')} s of warm-up; total run time "
      f"{meta.get('elapsed_s', '?')} s")
    if meta.get("rivet_sha256"):
        w(f"- rivet binary: a copy of `build/rivet` taken at start (built "
          f"{meta.get('rivet_built', '?')}, sha256 {meta['rivet_sha256']}…)")
    if raw_path:
        w(f"- Raw per-round numbers: `{raw_path}`")
    if meta.get("note"):
        w(f"- **Note**: {meta['note']}")
    for k, v in (meta.get("skipped") or {}).items():
        w(f"- **Skipped target {k}**: {v}")
    for s in meta.get("skipped_scenarios") or []:
        w(f"- **Skipped scenario** {s.splitlines()[0]}")
    if meta.get("stopped"):
        w(f"- **Stopped early**: {meta['stopped']}")
    w("")
    w("Cells are the median over the rounds with the spread (min–max) in parentheses. "
      "A ratio (×nginx) is computed within each round, target / nginx, and then its median "
      "is taken: rounds interleave the targets (A B C, then B C A, ...) so that the machine's "
      "drift cancels in these ratios. For req/s a ratio above 1 is better; for latency and CPU "
      "below 1 is better. *CPU µs/req* is the user+system time of all of the proxy's "
      "processes and threads (from /proc/PID/stat) over the requests wrk completed: the most "
      "stable figure on a shared 2-CPU machine. *Origin conns opened* is how many TCP "
      "connections the origin accepted during a measured run (nginx stub_status): wrk's own "
      "for *direct*, and for a proxy the churn of its upstream pool, which should be near 0 "
      "once warm.")
    w("")

    floor_told = False
    for sc, title in WRK:
        rs = used(recs, sc)
        origin = None
        if not rs and sc in separate:
            path, smeta, srecs = separate[sc]
            recs_sc = [r for r in srecs if r.get("scenario") == sc]
            rs = used(recs_sc, sc)
            origin = (path, smeta, recs_sc)
        if not rs:
            continue
        w(f"## {title}")
        w("")
        if origin:
            _provenance(w, origin[0], origin[1])
        if sc in TLS_NOTE:
            w(TLS_NOTE[sc])
            w("")
        all_sc = origin[2] if origin else recs
        w("| target | req/s | ×nginx | p50 | ×nginx | p99 | ×nginx | CPU µs/req | ×nginx | proxy CPU use | origin conns opened | rounds |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        names = [t for t in TARGET_ORDER if any(r["target"] == t for r in rs)]
        for t in names:
            tr = [r for r in rs if r["target"] == t]
            allatt = [r for r in all_sc if r.get("scenario") == sc and r.get("target") == t]
            noisy = sum(1 for r in allatt if r.get("noisy"))
            left = sum(1 for r in tr if r.get("noisy"))
            errors = sum(r.get("errors", 0) for r in tr)
            note = f"{len(tr)}"
            if noisy:
                note += f"; {noisy} noisy attempt(s)" + (f", {left} kept" if left else ", none kept")
            if errors:
                note += f"; **{errors} errors**"
            direct = t == "direct"
            w("| " + " | ".join([
                LABEL.get(t, t),
                cell([r["rps"] for r in tr], f_num),
                ratio_cell(per_round_ratio(rs, t, "rps"), t == "nginx"),
                lat_cell([r["p50_us"] for r in tr]),
                ratio_cell(per_round_ratio(rs, t, "p50_us"), t == "nginx"),
                lat_cell([r["p99_us"] for r in tr]),
                ratio_cell(per_round_ratio(rs, t, "p99_us"), t == "nginx"),
                "—" if direct else cell([r["cpu_us_per_req"] for r in tr], lambda x: f_num(x, 2)),
                "—" if direct else ratio_cell(per_round_ratio(rs, t, "cpu_us_per_req"), t == "nginx"),
                "—" if direct else cell([100 * r["proxy_util"] for r in tr], lambda x: f"{x:.0f}", " %"),
                cell([r.get("origin_conns_opened") for r in tr], f_num),
                note]) + " |")
        w("")
        if "floor" in names:
            floor_lines(w, sc, rs, names, first=not floor_told)
            floor_told = True

    rs = used(recs, "idle")
    if rs:
        n = meta.get("idle_conns", "?")
        w(f"## Idle memory: {n} idle keep-alive connections")
        w("")
        w(f"Each round starts the proxy afresh, opens {n} connections, sends one keep-alive GET "
          "on each and reads the answer, then holds them idle. RSS is VmRSS summed over the "
          "proxy's processes (nginx: master + worker).")
        w("")
        w("| target | RSS before | RSS with connections held | growth per connection | ×nginx | RSS after closing | still open |")
        w("|---|---|---|---|---|---|---|")
        for t in [t for t in TARGET_ORDER if any(r["target"] == t for r in rs)]:
            tr = [r for r in rs if r["target"] == t]
            w("| " + " | ".join([
                t,
                mib_cell([r["rss_before_kb"] for r in tr]),
                mib_cell([r["rss_held_kb"] for r in tr]),
                cell([r["per_conn_bytes"] for r in tr], lambda x: f"{x:,.0f}", " B"),
                ratio_cell(per_round_ratio(rs, t, "per_conn_bytes"), t == "nginx"),
                mib_cell([r["rss_after_close_kb"] for r in tr]),
                cell([r["still_open"] for r in tr], lambda x: f"{x:.0f}", f" of {tr[0]['conns']}")]) + " |")
        w("")

    rs = [r for r in recs if r.get("scenario") == "routes" and r.get("used", 1) == 1]
    if rs:
        w("## Route-table scale (rivet)")
        w("")
        w("Generated by `bench/lib/routegen.py`: exact and prefix matchers with a regex every "
          "100th route (at least one); the request hits the last route of the last "
          "VirtualService. *spread*: N routes over ceil(N/10) VirtualServices of one domain "
          "each, at most 1,000 domains; *one-vhost*: all N routes in one VirtualService, the worst "
          "case for an ordered route list. Each case starts a fresh rivet with a one-route config; "
          "*load* is the time from moving the generated files into the watched directory to the "
          "first request answered by the hit route (it includes the file moves, the 10 ms "
          "debounce, parsing, the snapshot and router build and publication; *builds* is how many "
          "snapshots rivet published meanwhile); *rebuild* is the same after rewriting only the "
          "hit VirtualService (new hit prefix): one full snapshot build. *Snapshot memory* is "
          "the RSS growth of the rivet process from the one-route config to the loaded table, "
          "measured from outside. CPU µs/req as above, on the hit route with 50 connections; "
          "×smallest is the per-round ratio to the smallest table of the same layout.")
        w("")
        w("| layout | routes | domains | regex | load | builds | rebuild | snapshot memory | req/s | p50 | p99 | CPU µs/req | ×smallest |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for lay in ("spread", "one-vhost"):
            lr = [r for r in rs if r.get("layout") == lay]
            sizes = sorted({r["routes"] for r in lr})
            if not sizes:
                continue
            for n in sizes:
                tr = [r for r in lr if r["routes"] == n]
                ratios = []
                for r in tr:
                    base = [b for b in lr if b["routes"] == sizes[0] and b["round"] == r["round"]]
                    if base and base[0].get("cpu_us_per_req") and r.get("cpu_us_per_req"):
                        ratios.append(r["cpu_us_per_req"] / base[0]["cpu_us_per_req"])
                w("| " + " | ".join([
                    lay, f"{n:,}", f"{tr[0].get('domains', '?'):,}", str(tr[0].get("regex", "?")),
                    cell([r.get("load_ms") for r in tr], f1, " ms"),
                    cell([r.get("builds") for r in tr], lambda x: f"{x:.0f}"),
                    cell([r.get("rebuild_ms") for r in tr], f1, " ms"),
                    cell([(r["rss_loaded_kb"] - r["rss_base_kb"]) / 1024 for r in tr
                          if "rss_loaded_kb" in r], lambda x: f"{x:.1f}", " MiB"),
                    cell([r.get("rps") for r in tr], f_num),
                    lat_cell([r.get("p50_us") for r in tr]),
                    lat_cell([r.get("p99_us") for r in tr]),
                    cell([r.get("cpu_us_per_req") for r in tr], lambda x: f_num(x, 2)),
                    ratio_cell(ratios)]) + " |")
        w("")

    rs = used(recs, "propagation")
    if rs:
        w("## Config propagation (rivet)")
        w("")
        w("`bench/lib/propagation.py` rewrites a VirtualService whose directResponseAction body "
          "is \"v<N>\" (a complete file renamed into the watched directory), then polls the data "
          "path over one keep-alive connection every 1 ms until it answers v<N>; a sample is the "
          "time from just before the write to that answer (time.monotonic). Percentiles are "
          "nearest-rank per round; *all rounds* pools every sample.")
        w("")
        w("| rounds | changes per round | failures | p50 | p90 | p99 | max | p99, all rounds |")
        w("|---|---|---|---|---|---|---|---|")
        pooled = []
        for r in rs:
            s = str(r.get("samples_ms", ""))
            pooled += [float(x) for x in s.split(",") if x]
        p99_all = sorted(pooled)[max(0, -(-99 * len(pooled) // 100) - 1)] if pooled else float("nan")
        w("| " + " | ".join([
            str(len(rs)), str(rs[0].get("changes")), str(sum(r.get("failures", 0) for r in rs)),
            cell([r.get("p50_ms") for r in rs], f1, " ms"), cell([r.get("p90_ms") for r in rs], f1, " ms"),
            cell([r.get("p99_ms") for r in rs], f1, " ms"), cell([r.get("max_ms") for r in rs], f1, " ms"),
            f1(p99_all) + " ms"]) + " |")
        w("")

    consul_sections(meta, recs, w, separate.get("consul-scale"))

    # noise
    att = [r for r in recs if "other_pct" in r]
    if att:
        w("## Noise")
        w("")
        noisy = [r for r in att if r.get("noisy")]
        kept = [r for r in noisy if r.get("used")]
        w(f"A measured run is *noisy* when processes other than the proxy, the origin and wrk "
          f"used more than {meta.get('noise_pct')}% of the two CPUs during it (busy time from "
          f"/proc/stat minus the benchmark's own processes' time). "
          + (f"A noisy run is repeated, after waiting up to {meta.get('quiet_wait_s', '?')} s "
             f"for the machine to be quiet, up to {meta.get('max_retries')} times, and the "
             f"quietest attempt is kept. " if meta.get("max_retries") else
             "Noisy runs were not repeated in this run (--max-retries 0). ") +
          f"{len(att)} measured runs, {len(noisy)} noisy, {len(kept)} of them kept (no quieter "
          f"attempt); other load per run: median {med([r['other_pct'] for r in att]):.1f}%, "
          f"max {max(r['other_pct'] for r in att):.1f}%.")
        if kept:
            w("")
            w("Noisy runs kept in the tables, by scenario (every attempt, with the busiest other "
              "processes, is in the raw file):")
            w("")
            w("| scenario | measured runs kept | of them noisy | other load of the noisy ones |")
            w("|---|---|---|---|")
            for sc in dict.fromkeys(r["scenario"] for r in att):
                u = [r for r in att if r["scenario"] == sc and r.get("used")]
                k = [r for r in u if r.get("noisy")]
                w(f"| {sc} | {len(u)} | {len(k)} | "
                  + (cell([r["other_pct"] for r in k], lambda x: f"{x:.1f}", " %") if k else "—")
                  + " |")
        w("")
    w("## Caveats")
    w("")
    w("- One 2-CPU machine shared with other work (builds and tests of other engineers may run "
      "at the same time): absolute req/s move from run to run; compare the per-round ratios "
      "and CPU µs/req, and check the Noise section.")
    w("- The origin and wrk share one CPU, so *direct* is the ceiling of this box rather than "
      "of the origin. A proxy below ~100% *proxy CPU use* was not the bottleneck: its req/s "
      "is then bounded by the origin + wrk CPU (and by the proxy's latency), and CPU µs/req "
      "is the figure that compares the proxies.")
    w("- Latency under saturation is mostly queueing: p50/p99 compare how each proxy behaves "
      "at its own maximum rate, not at equal load.")
    w("")
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------
def _pooled(rs):
    out = []
    for r in rs:
        out += [float(x) for x in str(r.get("samples_ms", "")).split(",") if x and x != "nan"]
    return out


def _nearest_rank(xs, p):
    s = sorted(xs)
    return s[max(0, -(-p * len(s) // 100) - 1)] if s else float("nan")


def consul_sections(meta, recs, w, separate=None):
    """## Consul KV config propagation and ## Consul discovery scale (issue 4)."""
    rs = used(recs, "consul-kv")
    if rs:
        spaced = [r for r in rs if r.get("mode", "spaced") == "spaced"]
        burst = [r for r in rs if r.get("mode") == "burst"]
        w("## Consul KV config propagation (rivet)")
        w("")
        w("`rivet run --consul ADDR` (no directory) against the project's Consul API double "
          "(`tests/doubles/consul.py`, its own process, on the origin's CPU); the Gateway, "
          "the Upstream and a VirtualService are keys in Gloo's layout "
          "(`gloo/gateway.solo.io/v1/VirtualService/gloo-system/vs`, ...). "
          "`bench/lib/consul_kv.py` writes the VirtualService with a directResponseAction body "
          "\"v<N>\" by `PUT /v1/kv/<key>` (a new connection per write, as `consul kv put`), "
          "then polls the data path over one keep-alive connection every 1 ms until it answers "
          "v<N>; a sample is the time from just before the PUT to that answer (time.monotonic): "
          "Consul's answer to the PUT, the wake-up of rivet's blocking query, the read, decoding, "
          "the snapshot build and its publication. Percentiles are nearest-rank per round; "
          "*all rounds* pools every sample.")
        w("")
        w(f"*Isolated changes* are spaced {f_num(spaced[0].get('gap_ms') if spaced else None)} ms "
          "after each answer, past the watch loop's rate limit (a token bucket of 10 reads/s, "
          "burst 2, that Consul's rules ask for): each sample is one change on its own, the "
          "case of issue 4's bar (p99 < 100 ms on loopback). *Back to back* writes the next "
          f"change {f_num(burst[0].get('gap_ms') if burst else None)} ms after each answer: "
          "every change then waits for the limiter's next token (~100 ms per read), which is "
          "what that series shows, not the propagation path.")
        w("")
        w("| series | rounds | changes per round | failures | p50 | p90 | p99 | max | p99, all rounds | "
          "bar: p99 < 100 ms |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for label, group in (("isolated changes", spaced), ("back to back", burst)):
            if not group:
                continue
            pooled = _pooled(group)
            p99_all = _nearest_rank(pooled, 99)
            fails = sum(r.get("failures", 0) for r in group)
            putf = sum(r.get("put_failures", 0) for r in group)
            bar = "—"
            if label == "isolated changes":
                bar = ("**met**" if pooled and p99_all < 100 and not fails else "**not met**")
            w("| " + " | ".join([
                label, str(len(group)), str(group[0].get("changes")),
                str(fails) + (f" ({putf} PUTs failed)" if putf else ""),
                cell([r.get("p50_ms") for r in group], f1, " ms"),
                cell([r.get("p90_ms") for r in group], f1, " ms"),
                cell([r.get("p99_ms") for r in group], f1, " ms"),
                cell([r.get("max_ms") for r in group], f1, " ms"),
                f1(p99_all) + " ms" if pooled else "—", bar]) + " |")
        w("")
        cpu = [1000 * r["rivet_cpu_s"] / r["changes"] for r in spaced
               if r.get("rivet_cpu_s") is not None and r.get("changes")]
        if cpu:
            w(f"rivet CPU per isolated change (user+system over the round / changes, including "
              f"the idle watch between changes): {cell(cpu, f1, ' ms')}; rivet RSS "
              f"{mib_cell([r.get('rss_kb') for r in spaced])}.")
            w("")

    rs = [r for r in recs if r.get("scenario") == "consul-scale" and r.get("used", 1) == 1]
    origin = None
    if not rs and separate:
        path, smeta, srecs = separate
        rs = [r for r in srecs if r.get("used", 1) == 1]
        origin = (path, smeta)
    if rs:
        w("## Consul discovery scale (rivet)")
        w("")
        if origin:
            path, smeta = origin
            w(f"*Opt-in scenario, not part of the run above: from a separate run* "
              f"(`{smeta.get('command', '?')}`, {smeta.get('date', '?')}, rivet "
              f"{str(smeta.get('rivet', '?')).removeprefix('rivet ')}"
              + (f", binary sha256 {smeta['rivet_sha256']}…" if smeta.get("rivet_sha256") else "")
              + f", load average at start {smeta.get('loadavg_start', '?')}; raw: `{path}`"
              + (f"; note: {smeta['note']}" if smeta.get("note") else "") + ").")
            w("")
        w("`rivet run --dir CFG --consul-discovery` with `CONSUL_HTTP_ADDR` pointing at "
          "`bench/lib/consul_scale.py`, a minimal Consul catalog in its own process (the part "
          "of the API discovery reads: `/v1/catalog/services` and `/v1/health/service/<name>` "
          "with Consul's index and blocking rules; the conformance double re-sorts its whole "
          "catalog on every read, too slow at this size). It holds SERVICES services of INSTANCES instances (one node "
          "per instance slot, passing checks; nothing listens at those addresses) plus "
          "`svc-live`, whose two instances `live-a` and `live-b` are served by that process "
          "and are the only route of rivet's VirtualService. *Converged* is the time from "
          "starting rivet to every service an Upstream and every endpoint in `/config_dump` "
          "(polled every 0.5 s); RSS is VmRSS of rivet once converged (peak: VmHWM). A *health "
          "change* flips one check of `svc-live` in the catalog (one index bump) and is timed "
          "to the first data-path answer that shows it: `live-b` turning passing, to the first "
          "answer from it; `live-a` turning critical, to the first of 4 answers in a row from "
          "`live-b` (round robin); then back. The changes follow each other as soon as one "
          "is seen, so from the third on they meet the per-query rate limit of Consul's rules "
          "(two queries at once, then one per second): up to a second more. A change not seen "
          "within the time bound (--consul-timeout) ends the series. *Random services*: one instance of a random "
          "`svc-NNNNN` turns critical, then passing, each timed to that cluster's endpoints in "
          "`/config_dump` (polled back to back; rendering the ~5 MB dump takes part of the "
          "time). *Idle CPU*: rivet's CPU over --consul-idle-s with nothing changing (longer "
          "than the 300 s wait, so every held query times out and is asked again once). One "
          "round: a fresh rivet.")
        w("")
        w("| services × instances | endpoints | catalog registered in | rivet /ready | converged | "
          "first request through svc-live | rivet RSS (peak) | rivet CPU to converge | "
          "RSS after the changes | health changes to traffic | random services to /config_dump | "
          "idle CPU | blocking queries held |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            if "converge_s" not in r:
                w(f"| {r.get('services', '?'):,} × {r.get('instances', '?')} | "
                  f"{r.get('endpoints', 0):,} | {f1(r['register_s']) + ' s' if 'register_s' in r else '—'} | "
                  f"{f1(r['ready_s']) + ' s' if 'ready_s' in r else '—'} | **not converged**: "
                  f"{r.get('failed_reason', '?')} | — | — | — | — | — | — | — | — |")
                continue
            hs = [float(x) for x in str(r.get("health_ms", "")).split(",") if x]
            hcell = ", ".join("**not seen**" if x != x else f"{x / 1000:.2f} s" for x in hs) or "—"
            if r.get("health_not_run"):
                hcell += f" ({r['health_not_run']} more not run: they assume the unseen one applied)"
            w("| " + " | ".join([
                f"{r['services']:,} × {r['instances']}", f"{r['endpoints']:,}",
                f"{r['register_s']:.1f} s", f"{r['ready_s']:.1f} s", f"{r['converge_s']:.1f} s",
                f"{r['converge_traffic_s']:.1f} s" + ("" if r.get("traffic_ok") else " (**wrong answer**)"),
                f"{r['rss_kb'] / 1024:.0f} MiB ({r['hwm_kb'] / 1024:.0f} MiB)",
                f"{r['cpu_converge_s']:.1f} s",
                f"{r['rss_after_kb'] / 1024:.0f} MiB ({r['hwm_after_kb'] / 1024:.0f} MiB)",
                hcell,
                ", ".join("**not seen**" if x != x else f"{x / 1000:.2f} s"
                          for x in [float(v) for v in str(r.get("random_ms", "")).split(",") if v]) or "—",
                f"{r['idle_cpu_pct']:.2f} % over {r['idle_s']:.0f} s" if "idle_cpu_pct" in r else "—",
                str(r.get("blocking_open", "—"))]) + " |")
        w("")
        r = rs[-1]
        if "consul_health_blocking" in r:
            w(f"Consul requests rivet made (whole run): catalog/services {r.get('consul_services_plain', 0):,} "
              f"plain + {r.get('consul_services_blocking', 0):,} blocking; health/service "
              f"{r.get('consul_health_plain', 0):,} plain + {r.get('consul_health_blocking', 0):,} "
              f"blocking. rivet holds one blocking query per service (up to "
              f"--consul-discovery-max-queries, default 8,192; doc/internals/discovery.md), so "
              f"a change comes back on its own service's query; with more services than that "
              f"cap (runs before 2026-11-27 02:40 held 120) the services take turns and a "
              f"change waits for its service's turn."
              + (f" After convergence rivet made {r['health_blocking_per_s']:.0f} blocking "
                 f"health reads/s, one per service every "
                 f"{(r['services'] + 1) / max(r['health_blocking_per_s'], 1e-9):.0f} s on average; "
                 + (f"the catalog logged its reads of `svc-live`: {r['live_reads']} in the "
                    f"{r['after_converge_s']:.0f} s after convergence, the first "
                    f"{r['live_first_read_s']:.1f} s after it, and the longest stretch without "
                    f"a new request {r['live_read_gap_max_s']:.1f} s"
                    + (" (its query was held open meanwhile: a change is answered on it at once)."
                       if r.get("blocking_open", 0) >= r["services"] else
                       " (a change made then waits that long).")
                    if r["live_reads"] else
                    f"**rivet did not read `svc-live`'s health at all in the "
                    f"{r['after_converge_s']:.0f} s after convergence**, so no change to it "
                    f"could reach traffic.")
                 if "live_first_read_s" in r else "")
              + (f" Health reads per service in that time (counted when a request arrives, so a "
                 f"query held open since before convergence counts 0): median "
                 f"{r['reads_per_service_median']}, max {r['reads_per_service_max']}; "
                 f"{r['unread_services']} of {r['services'] + 1:,} services had no new request "
                 f"(first: {str(r.get('unread_names', '')).replace(',', ', ')})"
                 + (" - their queries were still held (see blocking queries held)."
                    if r.get("blocking_open", 0) >= r["services"] else
                    ": **not read at all**.")
                 if r.get("unread_services", 0) > 0 else
                 (f" Health reads per service in that time: median "
                  f"{r['reads_per_service_median']}, max {r['reads_per_service_max']}; every "
                  f"service was read." if "unread_services" in r else "")))
            w("")
