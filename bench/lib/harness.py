#!/usr/bin/python3
"""harness.py - the side-by-side benchmark behind bench/run.sh (see bench/README.md).

Starts an origin nginx and the targets (direct, nginx, haproxy, rivet, and the floor: the
plain TCP relay bench/floor/relay.c, compiled at start) on 127.0.0.1, each
proxy pinned to one CPU and the origin and wrk to the other, runs the scenarios in
interleaved rounds, writes the raw per-round numbers to bench/results/ and the report to
doc/benchmarks.md, and stops by PID every process it started.
"""
import argparse
import datetime
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import consul_kv  # noqa: E402
import consul_scale  # noqa: E402
import idle_conns  # noqa: E402
import measure  # noqa: E402
import propagation  # noqa: E402
import report  # noqa: E402
import routegen  # noqa: E402
import targets as T  # noqa: E402

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
ALL_TARGETS = ["direct", "nginx", "haproxy", "rivet", "floor"]
NO_IDLE = {"direct", "floor"}    # targets the idle-memory scenario does not measure
WRK_SCENARIOS = {          # name: (connections, path)
    "c50": (50, "/"),
    "c256": (256, "/"),
    "16k": (50, "/16k"),
}
TLS_SCENARIOS = {          # name: (connections, path, request headers); the proxies terminate TLS
    "https": (50, "/", ()),
    "tls-handshake": (50, "/", ("Connection: close",)),     # a new connection (TLS 1.3 resumption) per request
    "upstream-tls": (50, "/", ()),      # plain clients; the proxies speak TLS to a TLS origin
}
TLS_TARGETS = ["nginx", "haproxy", "rivet"]
ALL_SCENARIOS = ["idle", "c50", "c256", "16k", "routes", "propagation", "consul-kv", "consul-scale",
                 "https", "tls-handshake", "upstream-tls"]
DEFAULT_SCENARIOS = ["idle", "c50", "c256", "16k", "routes", "propagation", "consul-kv"]
OPT_IN = {"consul-scale", "https", "tls-handshake", "upstream-tls"}
BURST_GAP_MS = 20.0        # consul-kv's short back-to-back series (shows the watch-loop limiter)
RIVET_ONLY = {"routes", "propagation", "consul-kv", "consul-scale"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Deadline(Exception):
    pass


class Run:
    def __init__(self, a):
        self.a = a
        self.records = []
        self.skipped = {}          # target -> reason
        self.meta = {}
        self.t_start = time.monotonic()
        self.retry_spent = 0.0
        self.retry_budget = 0.0
        self.budget_told = False

    # -----------------------------------------------------------------------------------------
    def check_deadline(self):
        if time.monotonic() - self.t_start > self.a.max_minutes * 60:
            raise Deadline(f"--max-minutes {self.a.max_minutes} reached")

    def record(self, **kv):
        kv.setdefault("used", 1)
        self.records.append(kv)
        return kv

    def order(self, names, r):
        k = r % len(names)
        return names[k:] + names[:k]

    # -----------------------------------------------------------------------------------------
    def make_target(self, name, tag=None):
        a = self.a
        if name == "direct":
            return T.Direct(self.origin)
        if name == "nginx":
            return T.NginxProxy(self.tmp, a.proxy_cpu, self.origin.port, tag=tag or "nginx-proxy")
        if name == "haproxy":
            return T.HAProxy(self.tmp, a.proxy_cpu, self.origin.port, tag=tag or "haproxy")
        if name == "rivet":
            return T.Rivet(self.tmp, a.proxy_cpu, self.origin.port, self.rivet_bin, tag=tag or "rivet")
        if name == "floor":
            return T.Floor(self.tmp, a.proxy_cpu, self.origin.port, self.floor_bin, tag=tag or "floor")
        raise ValueError(name)

    def rivet_usable(self):
        if "rivet" in self.skipped:
            return False
        if not (os.path.isfile(self.rivet_bin) and os.access(self.rivet_bin, os.X_OK)):
            self.skip("rivet", f"{self.a.rivet} is missing (build it with `make -j2`)")
            return False
        return True

    def skip(self, name, why):
        if name not in self.skipped:
            self.skipped[name] = why
            log(f"SKIP {name}: {why}")

    def make_tls_target(self, name, upstream=False):
        a = self.a
        if upstream:
            port = self.origin_tls.port
            if name == "nginx":
                return T.NginxUpTls(self.tmp, a.proxy_cpu, port, self.pki)
            if name == "haproxy":
                return T.HAProxyUpTls(self.tmp, a.proxy_cpu, port, self.pki)
            return T.RivetUpTls(self.tmp, a.proxy_cpu, port, self.rivet_bin, self.pki)
        if name == "nginx":
            return T.NginxTls(self.tmp, a.proxy_cpu, self.origin.port, self.pki)
        if name == "haproxy":
            return T.HAProxyTls(self.tmp, a.proxy_cpu, self.origin.port, self.pki)
        if name == "rivet":
            return T.RivetTls(self.tmp, a.proxy_cpu, self.origin.port, self.rivet_bin, self.pki)
        raise ValueError(name)

    def start_target(self, name, tag=None, tls=False, upstream_tls=False):
        """Started and checked target, or None (and the target is skipped with a reason).
        tls: the target terminating TLS (skipped as "<name> (TLS)" when it cannot);
        upstream_tls: the target speaking TLS to the TLS origin ("<name> (upstream TLS)")."""
        if name == "rivet" and not self.rivet_usable():
            return None
        if name == "floor" and self.floor_bin is None:
            return None     # not built: skipped with the reason at start
        if tls or upstream_tls:
            t = self.make_tls_target(name, upstream=upstream_tls)
        else:
            t = self.make_target(name, tag)
        t.start()
        ok, why = t.check(self.a.ready_timeout)
        if not ok:
            tail = t.proc.log_tail() if t.proc else ""
            t.stop()
            self.skip(name + (" (TLS)" if tls else " (upstream TLS)" if upstream_tls else ""),
                      f"did not become ready: {why}" + (f"\n--- its log:\n{tail}" if tail else ""))
            return None
        return t

    # -----------------------------------------------------------------------------------------
    def wrk_round(self, scenario, rnd, order, t, conns, path, headers=(), extra=None, label=None,
                  duration=None):
        """One measured wrk run, repeated while other processes used the CPUs."""
        a = self.a
        best = None
        recs = []
        for attempt in range(1, a.max_retries + 2):
            self.check_deadline()
            t_attempt = time.monotonic()
            if attempt > 1:
                need = a.quiet_wait + (duration or a.duration) + 1
                if self.retry_spent + need > self.retry_budget:
                    if not self.budget_told:
                        log(f"  (no more repeats: the retry budget of {self.retry_budget:.0f} s, what "
                            f"--max-minutes leaves after the planned runs, is used)")
                        self.budget_told = True
                    break
                self.wait_quiet()
            if t.proc is not None and not t.proc.alive():
                self.skip(t.name, f"exited during {scenario} (code {t.proc.p.returncode})\n"
                          + t.proc.log_tail())
                return None
            acc0 = T.origin_accepts(self.origin.port)
            try:
                r = measure.measured_wrk(t.url(path), conns, duration or a.duration, t.proxy_pids(),
                                         self.origin.proxy_pids(), wrk_cpu=a.load_cpu,
                                         headers=headers,
                                         noise_cpus=sorted({a.proxy_cpu, a.load_cpu}),
                                         bench_pids=T.all_pids())
            except RuntimeError as e:
                log(f"  {scenario} r{rnd} {t.name}: wrk failed: {e}")
                rec = self.record(scenario=scenario, round=rnd, order=order, target=t.name,
                                  attempt=attempt, failed=1, used=0, **(extra or {}))
                recs.append(rec)
                continue
            r.pop("wrk_output", None)
            acc1 = T.origin_accepts(self.origin.port)
            if acc0 is not None and acc1 is not None:
                # connections opened to the origin during the run (the proxy's pool churn);
                # the first status query's own connection is counted by the second: -1
                r["origin_conns_opened"] = acc1 - acc0 - 1
            noisy = r["other_pct"] > a.noise_pct
            rec = self.record(scenario=scenario, round=rnd, order=order, target=t.name,
                              attempt=attempt, noisy=int(noisy), used=0,
                              **(extra or {}), **{k: v for k, v in r.items() if k != "others"},
                              others=";".join(r["others"]))
            recs.append(rec)
            msg = (f"  {scenario} r{rnd} {label or t.name:<8} {r['rps']:>9.0f} req/s  p50 {r['p50_us']:>7.0f}us"
                   f"  p99 {r['p99_us']:>7.0f}us  cpu {r['cpu_us_per_req']:6.2f}us/req"
                   f"  other {r['other_pct']:4.1f}%")
            if r["errors"]:
                msg += f"  ERRORS {r['errors']}"
            if noisy:
                msg += f"  NOISY ({', '.join(r['others']) or 'kernel'})"
                if attempt <= a.max_retries and (self.retry_spent + a.quiet_wait
                                                 + (duration or a.duration) + 1 <= self.retry_budget):
                    msg += " -> repeating"
            log(msg)
            if best is None or rec["other_pct"] < best["other_pct"]:
                best = rec
            if attempt > 1:
                self.retry_spent += time.monotonic() - t_attempt
            if not noisy:
                break
        if best is not None:
            best["used"] = 1
        return best

    def planned_seconds(self):
        """Rough duration of the run without repeats (to size the repeat budget)."""
        a = self.a
        nt = len(self.target_names)
        nprox = len([n for n in self.target_names if n not in NO_IDLE])
        s = 3.0
        if "idle" in a.scenarios:
            s += a.rounds * nprox * (3 * a.settle + 1.5)
        for sc in a.scenarios:
            if sc in WRK_SCENARIOS:
                s += nt * (max(1, a.warmup) + 0.3) + a.rounds * nt * (max(1, a.duration) + 0.3)
            if sc in TLS_SCENARIOS:
                ntls = len([n for n in self.target_names if n in TLS_TARGETS])
                s += ntls * (max(1, a.warmup) + 0.3) + a.rounds * ntls * (max(1, a.duration) + 0.3)
        if "routes" in a.scenarios and "rivet" in self.target_names:
            cases = len(a.route_layouts) * len(a.route_sizes)
            big = sum(n / 10000 for n in a.route_sizes) / max(1, len(a.route_sizes))
            s += a.rounds * cases * (max(1, a.scale_duration) + 1.6 + 3 * a.settle + 1.0 * big)
        if "propagation" in a.scenarios and "rivet" in self.target_names:
            s += 1 + a.rounds * a.prop_changes * 0.04
        if "consul-kv" in a.scenarios:
            s += 3 + a.rounds * a.consul_changes * (a.consul_gap_ms + 6) / 1000 + a.consul_burst * 0.1
        if "consul-scale" in a.scenarios:
            # registration ~3 s, convergence ~10 s, each health change up to a discovery sweep
            s += 15 + a.consul_health_changes * 45 + a.consul_random_changes * 10 + a.consul_idle_s
        return s

    def wait_quiet(self):
        """Wait (at most --quiet-wait s) until the CPUs are idle but for other processes'
        load below --noise-pct; nothing of the benchmark runs meanwhile."""
        a = self.a
        t_end = time.monotonic() + a.quiet_wait
        cpus = len({a.proxy_cpu, a.load_cpu})
        while True:
            b0, t0 = measure.cpu_busy_ticks({a.proxy_cpu, a.load_cpu}), time.monotonic()
            time.sleep(0.5)
            b1, t1 = measure.cpu_busy_ticks({a.proxy_cpu, a.load_cpu}), time.monotonic()
            pct = 100.0 * (b1 - b0) / measure.TICK / ((t1 - t0) * max(cpus, 2))
            if pct <= a.noise_pct or time.monotonic() >= t_end:
                return pct

    def warm(self, t, conns, path, headers=(), seconds=None):
        seconds = self.a.warmup if seconds is None else seconds
        if seconds <= 0:
            return
        try:
            measure.run_wrk(t.url(path), conns, seconds, cpu=self.a.load_cpu, headers=headers)
        except RuntimeError as e:
            log(f"  warm-up of {t.name} failed: {e}")

    # -----------------------------------------------------------------------------------------
    def scenario_idle(self):
        a = self.a
        names = [n for n in self.target_names if n not in NO_IDLE]
        log(f"idle memory: {a.idle_conns} idle keep-alive connections, fresh process per round")
        for rnd in range(1, a.rounds + 1):
            for pos, name in enumerate(self.order(names, rnd - 1), 1):
                self.check_deadline()
                t = self.start_target(name, tag=f"{name}-idle-r{rnd}")
                if t is None:
                    continue
                try:
                    r = idle_conns.hold(t.port, a.idle_conns, t.proxy_pids, "/", settle=a.settle)
                finally:
                    t.stop()
                self.record(scenario="idle", round=rnd, order=pos, target=name, **r)
                log(f"  idle r{rnd} {name:<8} rss {r['rss_before_kb'] / 1024:6.1f} -> "
                    f"{r['rss_held_kb'] / 1024:6.1f} MiB  {r['per_conn_bytes']:8.0f} B/conn"
                    f"  still open {r['still_open']}/{r['conns']}")

    def scenario_wrk(self, live, scenario):
        conns, path = WRK_SCENARIOS[scenario]
        names = [n for n in self.target_names if n in live]
        log(f"{scenario}: {conns} connections, GET {path}, {self.a.duration}s x {self.a.rounds} rounds,"
            f" targets {' '.join(names)}")
        for n in names:
            self.warm(live[n], conns, path)
        for rnd in range(1, self.a.rounds + 1):
            for pos, name in enumerate(self.order(names, rnd - 1), 1):
                if name in live and name not in self.skipped:
                    self.wrk_round(scenario, rnd, pos, live[name], conns, path)

    def scenario_tls(self, live, scenario):
        """https / tls-handshake: the same wrk method against the proxies terminating TLS (the
        origin stays plain HTTP). tls-handshake sends Connection: close, so every request is a
        new TCP connection and a TLS 1.3 handshake (a resumption: wrk offers the newest ticket):
        req/s is handshakes/s and CPU µs/req is the proxy's CPU per handshake + request."""
        conns, path, headers = TLS_SCENARIOS[scenario]
        names = [n for n in TLS_TARGETS if n in live]
        over = "plain HTTP, TLS from the proxy to the origin" if scenario == "upstream-tls" else "over TLS"
        log(f"{scenario}: {conns} connections {over}, GET {path}"
            f"{' (Connection: close: a new TLS connection per request)' if headers else ''}, "
            f"{self.a.duration}s x {self.a.rounds} rounds, targets {' '.join(names)}")
        for n in names:
            self.warm(live[n], conns, path, headers)
        for rnd in range(1, self.a.rounds + 1):
            for pos, name in enumerate(self.order(names, rnd - 1), 1):
                if name in live and name + " (TLS)" not in self.skipped and \
                        name + " (upstream TLS)" not in self.skipped:
                    self.wrk_round(scenario, rnd, pos, live[name], conns, path, headers=headers)

    def tls_scenarios(self):
        a = self.a
        sc = [s for s in a.scenarios if s in TLS_SCENARIOS]
        if not sc:
            return
        if shutil.which("openssl") is None:
            for s in sc:
                self.skip_scenario(s, "the openssl CLI is missing (apt-get install openssl)")
            return
        self.pki = T.Pki(os.path.join(self.tmp, "pki"))
        down = [s for s in sc if s != "upstream-tls"]
        if down:
            live = {}
            for n in TLS_TARGETS:
                if n in self.target_names:
                    t = self.start_target(n, tls=True)
                    if t is not None:
                        live[n] = t
            try:
                for s in down:
                    self.scenario_tls(live, s)
            finally:
                for t in live.values():
                    t.stop()
        if "upstream-tls" in sc:
            self.scenario_upstream_tls()

    def scenario_upstream_tls(self):
        """upstream-tls: wrk in plain HTTP, the proxies speak TLS (verified, SNI bench.test) to
        an origin nginx serving TLS; pooled upstream connections, so this is the steady cost
        of encrypting towards the upstream. The origin's stub_status counts its accepts (the
        upstream handshakes) during each run."""
        a = self.a
        self.origin_tls = T.OriginTls(self.tmp, a.load_cpu, self.pki)
        self.origin_tls.start()
        plain_origin = self.origin
        live = {}
        try:
            ok, why = self.origin_tls.check(a.ready_timeout)
            if not ok:
                self.skip_scenario("upstream-tls", f"the TLS origin did not start: {why}\n"
                                   + self.origin_tls.proc.log_tail())
                return
            for n in TLS_TARGETS:
                if n in self.target_names:
                    t = self.start_target(n, upstream_tls=True)
                    if t is not None:
                        live[n] = t
            self.origin = self.origin_tls   # wrk_round counts this origin's accepts and CPU
            self.scenario_tls(live, "upstream-tls")
        finally:
            self.origin = plain_origin
            for t in live.values():
                t.stop()
            self.origin_tls.stop()

    # -----------------------------------------------------------------------------------------
    def poll_until(self, port, path, host, want_body, timeout):
        p = propagation.Poller(port, path, host)
        t_end = time.monotonic() + timeout
        try:
            while time.monotonic() < t_end:
                st, body = p.get()
                if st == 200 and (want_body is None or body == want_body):
                    return time.monotonic()
                time.sleep(0.001)
        finally:
            p.close()
        return None

    def scenario_routes(self):
        a = self.a
        if not self.rivet_usable():
            self.skip_scenario("routes", self.skipped.get("rivet"))
            return
        cases = [(lay, n) for lay in a.route_layouts for n in a.route_sizes]
        log(f"route scale: {' '.join(f'{l}/{n}' for l, n in cases)}, fresh rivet per case and round")
        for rnd in range(1, a.rounds + 1):
            for pos, (layout, n) in enumerate(self.order(cases, rnd - 1), 1):
                self.check_deadline()
                self.route_case(rnd, pos, layout, n)
                if "rivet" in self.skipped:
                    return

    def route_case(self, rnd, pos, layout, n):
        a = self.a
        tag = f"rivet-routes-{layout}-{n}-r{rnd}"
        t = T.Rivet(self.tmp, a.proxy_cpu, self.origin.port, self.rivet_bin, tag=tag, log_level="info")
        t.write_base(vs_template="rivet/scale-base-vs.yaml")
        stage = os.path.join(t.dir, "stage")
        files, summ = routegen.write_all(stage, n, layout, "/hit/")
        host = summ["hit_host"]
        t.start()
        try:
            ok, why = t.ready(a.ready_timeout)
            if ok:
                ok, why = T.wait_http(t.port, "/", 200, T.BODY_13, a.ready_timeout, t.proc,
                                      host="base.bench.test")
            if not ok:
                self.skip("rivet", f"route-scale instance did not become ready: {why}\n"
                          + t.proc.log_tail())
                return
            st, _ = T.http_get(t.port, "/hit/x", host=host)
            if st == 200:
                raise RuntimeError("hit route answered before it was written")
            time.sleep(a.settle)
            pids = t.proxy_pids()
            rss0 = measure.tree_rss_kb(pids)
            cpu0 = measure.tree_cpu_ticks(pids)
            pub0 = self.count_published(t)
            vsdir = t.vs_dir()
            t0 = time.monotonic()
            for f in files:
                os.rename(f, os.path.join(vsdir, os.path.basename(f)))
            t_written = time.monotonic()
            t1 = self.poll_until(t.port, "/hit/x", host, T.BODY_13, a.load_timeout)
            if t1 is None:
                self.skip("rivet", f"{n} routes ({layout}) not served {a.load_timeout}s after writing\n"
                          + t.proc.log_tail())
                return
            load_ms = (t1 - t0) * 1000
            write_ms = (t_written - t0) * 1000
            time.sleep(a.settle)
            rss1 = measure.tree_rss_kb(pids)
            load_cpu_s = (measure.tree_cpu_ticks(pids) - cpu0) / measure.TICK
            builds = self.count_published(t) - pub0
            # rebuild: only the hit VirtualService changes (new hit prefix), whole snapshot rebuilt
            hit_name = routegen.hit_file_name(n, layout)
            os.makedirs(stage, exist_ok=True)
            routegen.write_hit(stage, n, layout, "/hit2/")
            t0 = time.monotonic()
            os.rename(os.path.join(stage, hit_name), os.path.join(vsdir, hit_name))
            t1 = self.poll_until(t.port, "/hit2/x", host, T.BODY_13, a.load_timeout)
            rebuild_ms = (t1 - t0) * 1000 if t1 else float("nan")
            time.sleep(a.settle)
            rss2 = measure.tree_rss_kb(pids)
            log(f"  routes r{rnd} {layout:<9} {n:>6}: load {load_ms:8.1f} ms ({builds} builds,"
                f" files moved in {write_ms:.1f} ms)  rebuild {rebuild_ms:7.1f} ms"
                f"  rss {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
            extra = dict(layout=layout, routes=n, domains=summ["domains"], regex=summ["regex"],
                         load_ms=load_ms, write_ms=write_ms, builds=builds, load_cpu_s=load_cpu_s,
                         rebuild_ms=rebuild_ms, rss_base_kb=rss0, rss_loaded_kb=rss1,
                         rss_rebuilt_kb=rss2)
            hdr = (f"Host: {host}",)
            self.warm(t, 50, "/hit2/x", hdr, seconds=1)
            rec = self.wrk_round("routes", rnd, pos, t, 50, "/hit2/x", headers=hdr, extra=extra,
                                 label=f"rivet {layout} {n}", duration=a.scale_duration)
            if rec is None:
                self.record(scenario="routes", round=rnd, order=pos, target=t.name, **extra)
        finally:
            t.stop()
            shutil.rmtree(t.dir, ignore_errors=True)

    def count_published(self, t):
        try:
            with open(t.proc.log, "rb") as f:
                return f.read().count(b" published")
        except OSError:
            return 0

    # -----------------------------------------------------------------------------------------
    def scenario_propagation(self):
        a = self.a
        if not self.rivet_usable():
            self.skip_scenario("propagation", self.skipped.get("rivet"))
            return
        t = T.Rivet(self.tmp, a.proxy_cpu, self.origin.port, self.rivet_bin, tag="rivet-prop")
        t.write_base(vs_template="rivet/prop-vs.yaml", VERSION=0)
        t.start()
        try:
            ok, why = t.ready(a.ready_timeout)
            if ok:
                ok, why = T.wait_http(t.port, "/prop", 200, b"v0", a.ready_timeout, t.proc)
            if not ok:
                self.skip("rivet", f"propagation instance did not become ready: {why}\n"
                          + t.proc.log_tail())
                return
            with open(os.path.join(T.CONF, "rivet", "prop-vs.yaml")) as f:
                tpl = f.read()
            vs = os.path.join(t.vs_dir(), "vs.yaml")
            log(f"propagation: {a.prop_changes} changes per round, {a.rounds} rounds")
            first = 1
            for rnd in range(1, a.rounds + 1):
                self.check_deadline()
                r = propagation.run(vs, tpl, t.port, a.prop_changes, first=first,
                                    timeout_s=a.prop_timeout)
                first += a.prop_changes
                samples = r.pop("samples_ms")
                self.record(scenario="propagation", round=rnd, order=1, target="rivet",
                            samples_ms=",".join(f"{x:.3f}" for x in samples), **r)
                log(f"  propagation r{rnd}: p50 {r.get('p50_ms', float('nan')):.1f} ms"
                    f"  p99 {r.get('p99_ms', float('nan')):.1f} ms  max {r.get('max_ms', float('nan')):.1f} ms"
                    f"  failures {r['failures']}/{r['changes']}")
        finally:
            t.stop()

    # -----------------------------------------------------------------------------------------
    def scenario_consul_kv(self):
        """Consul KV config propagation: rivet run --consul against tests/doubles/consul.py."""
        a = self.a
        if not self.rivet_usable():
            self.skip_scenario("consul-kv", self.skipped.get("rivet"))
            return
        if not os.path.isfile(T.CONSUL_DOUBLE):
            self.skip_scenario("consul-kv", f"{os.path.relpath(T.CONSUL_DOUBLE, ROOT)} is missing")
            return
        consul = T.ConsulDoubleProc(self.tmp, a.load_cpu)
        consul.start()
        t = None
        try:
            ok, why = consul.ready(a.ready_timeout)
            if not ok:
                self.skip_scenario("consul-kv", f"the Consul double did not become ready: {why}\n"
                                   + consul.proc.log_tail())
                return
            t = T.RivetConsul(self.tmp, a.proxy_cpu, self.origin.port, self.rivet_bin, consul.addr,
                              tag="rivet-consul-kv")
            consul_kv.seed(consul.port, t.port, self.origin.port, version=0)
            t.start()
            ok, why = t.ready(a.ready_timeout)
            if ok:
                ok, why = T.wait_http(t.port, "/prop", 200, b"v0", a.ready_timeout, t.proc)
            if not ok:
                self.skip_scenario("consul-kv", f"rivet --consul did not become ready: {why}\n"
                                   + t.proc.log_tail())
                return
            log(f"consul-kv: rivet --consul {consul.addr} (the double, tests/doubles/consul.py), "
                f"{a.consul_changes} PUTs {a.consul_gap_ms:g} ms apart per round, {a.rounds} "
                f"rounds, then {a.consul_burst} PUTs {BURST_GAP_MS:g} ms apart")
            first = 1
            series = [("spaced", rnd, a.consul_changes, a.consul_gap_ms) for rnd in range(1, a.rounds + 1)]
            if a.consul_burst > 0:
                series.append(("burst", 1, a.consul_burst, BURST_GAP_MS))
            for mode, rnd, changes, gap in series:
                self.check_deadline()
                if not (t.proc.alive() and consul.proc.alive()):
                    who = t if not t.proc.alive() else consul
                    self.skip_scenario("consul-kv", f"{who.name} exited\n" + who.proc.log_tail())
                    return
                time.sleep(0.3)     # the limiter's bucket full again before a series
                cpu0 = measure.tree_cpu_ticks(t.proxy_pids())
                c0 = measure.tree_cpu_ticks(consul.proc.tree())
                w0 = time.monotonic()
                r = consul_kv.run(consul.port, t.port, changes, first=first,
                                  timeout_s=a.prop_timeout, gap_ms=gap)
                wall = time.monotonic() - w0
                r["rivet_cpu_s"] = (measure.tree_cpu_ticks(t.proxy_pids()) - cpu0) / measure.TICK
                r["consul_cpu_s"] = (measure.tree_cpu_ticks(consul.proc.tree()) - c0) / measure.TICK
                r["wall_s"] = wall
                r["rss_kb"] = measure.tree_rss_kb(t.proxy_pids())
                first += changes
                samples = r.pop("samples_ms")
                self.record(scenario="consul-kv", round=rnd, order=1, target="rivet", mode=mode,
                            samples_ms=",".join(f"{x:.3f}" for x in samples), **r)
                log(f"  consul-kv {mode} r{rnd}: p50 {r.get('p50_ms', float('nan')):.1f} ms"
                    f"  p90 {r.get('p90_ms', float('nan')):.1f} ms"
                    f"  p99 {r.get('p99_ms', float('nan')):.1f} ms  max {r.get('max_ms', float('nan')):.1f} ms"
                    f"  failures {r['failures']}/{r['changes']}"
                    + (f" ({r['put_failures']} PUTs failed)" if r["put_failures"] else ""))
        finally:
            if t is not None:
                t.stop()
            consul.stop()

    def scenario_consul_scale(self):
        """Consul discovery at scale: SERVICES x INSTANCES in bench/lib/consul_scale.py's catalog
        (its own process), rivet --consul-discovery: convergence, memory, health changes."""
        a = self.a
        if not self.rivet_usable():
            self.skip_scenario("consul-scale", self.skipped.get("rivet"))
            return
        total = a.consul_services * a.consul_instances
        cat_port, port_a, port_b = T.free_port(), T.free_port(), T.free_port()
        cat = T.Proc("consul-scale-catalog",
                     ["/usr/bin/python3", os.path.join(BENCH, "lib", "consul_scale.py"),
                      "--port", str(cat_port), "--backend-ports", f"{port_a},{port_b}",
                      "--services", str(a.consul_services), "--instances", str(a.consul_instances)],
                     os.path.join(self.tmp, "consul-scale"), cpu=a.load_cpu)
        t = None
        poll = None
        rec = dict(services=a.consul_services, instances=a.consul_instances, endpoints=total)
        try:
            log(f"consul-scale: {a.consul_services} services x {a.consul_instances} instances "
                f"({total:,} endpoints) + svc-live (2), rivet --consul-discovery")
            t_reg = time.monotonic()
            ok, why = T.wait_http(cat_port, "/_bench/stats", 200, None, a.consul_timeout, cat)
            if not ok:
                self.skip_scenario("consul-scale", f"the catalog did not start: {why}\n" + cat.log_tail())
                return
            rec["register_s"] = time.monotonic() - t_reg
            t = T.RivetDiscovery(self.tmp, a.proxy_cpu, self.origin.port, self.rivet_bin,
                                 f"127.0.0.1:{cat_port}", tag="rivet-consul-scale")
            t.write_base(vs_template="rivet/consul-live-vs.yaml")
            self.check_deadline()
            t0 = time.monotonic()
            t.start()
            ok, why = t.ready(a.consul_timeout)
            if not ok:
                self.skip_scenario("consul-scale", f"rivet --consul-discovery did not become ready: "
                                   f"{why}\n" + t.proc.log_tail())
                return
            rec["ready_s"] = time.monotonic() - t0
            # every service an Upstream and every endpoint in /config_dump (polled every 0.5 s,
            # as tests/integ/consul_scale.py does), then traffic through svc-live
            # config_dump lists the endpoints that receive traffic: live-b (critical) is not one
            want_ups, want_eps = a.consul_services + 1, total + 1
            ups = eps = 0
            dump_bytes = 0
            converged = None
            while time.monotonic() - t0 < a.consul_timeout:
                self.check_deadline()
                if not t.proc.alive():
                    break
                u, e, n = consul_scale.served_counts(t.admin_port)
                if u is not None:
                    ups, eps, dump_bytes = u, e, n
                if ups >= want_ups and eps >= want_eps:
                    converged = time.monotonic()
                    break
                time.sleep(0.5)
            rec.update(upstreams_seen=ups, endpoints_seen=eps, dump_bytes=dump_bytes)
            if converged is None:
                why = ("exited\n" + t.proc.log_tail()) if not t.proc.alive() else \
                      f"not converged {a.consul_timeout:.0f} s after start: {ups} Upstreams, {eps} endpoints"
                rec["failed_reason"] = why.splitlines()[0]
                self.record(scenario="consul-scale", round=1, order=1, target="rivet", **rec)
                log(f"  consul-scale: {why}")
                return
            rec["converge_s"] = converged - t0
            st, body = T.http_get(t.port, "/")
            served = time.monotonic()
            rec["traffic_ok"] = int(st == 200 and body == b"a\n")
            rec["converge_traffic_s"] = served - t0
            pids = t.proxy_pids()
            rec["cpu_converge_s"] = measure.tree_cpu_ticks(pids) / measure.TICK
            time.sleep(a.settle)
            rec["rss_kb"] = measure.tree_rss_kb(pids)
            rec["hwm_kb"] = _status_kb(t.proc.pid, "VmHWM")
            s0 = consul_scale.stats(cat_port)
            log(f"  consul-scale: ready {rec['ready_s']:.1f} s, all {ups:,} Upstreams / {eps:,} "
                f"endpoints in /config_dump {rec['converge_s']:.1f} s after start, traffic "
                f"{'ok' if rec['traffic_ok'] else f'WRONG ({st} {body[:40]!r})'}; rss "
                f"{rec['rss_kb'] / 1024:.0f} MiB (peak {rec['hwm_kb'] / 1024:.0f} MiB), "
                f"rivet CPU {rec['cpu_converge_s']:.1f} s; blocking queries open "
                f"{s0.get('blocking_now', '?')}")
            # health changes of svc-live's instances, timed to the first answer showing them:
            # live-b turns passing (first "b"), live-a turns critical (only "b" from then on),
            # and back, alternating
            steps = [("live-b", "passing", b"b\n", 1), ("live-a", "critical", b"b\n", 4),
                     ("live-a", "passing", b"a\n", 1), ("live-b", "critical", b"a\n", 4)]
            poll = propagation.Poller(t.port, "/", "bench")
            samples = []
            for i in range(a.consul_health_changes):
                self.check_deadline()
                sid, status, want, consec = steps[i % len(steps)]
                t1 = time.monotonic()
                if not consul_scale.set_check(cat_port, sid, status):
                    samples.append(float("nan"))
                    continue
                ms = consul_scale.wait_traffic(poll, want, consec, t1, a.consul_timeout)
                samples.append(float("nan") if ms is None else ms)
                log(f"  consul-scale: {sid} -> {status}: "
                    + (f"traffic changed after {ms / 1000:.2f} s" if ms is not None
                       else f"not seen in traffic within {a.consul_timeout:.0f} s"))
                if ms is None:
                    # the next steps start from the state this one should have produced: with
                    # it unseen, they would be seen at once (a false 0 s), so they are not run
                    rec["health_not_run"] = a.consul_health_changes - i - 1
                    if rec["health_not_run"]:
                        log(f"  consul-scale: the {rec['health_not_run']} further change(s) not "
                            f"run (they assume this one was applied)")
                    break
            # random services (not svc-live): one instance's check critical, then passing again,
            # each timed to /config_dump (that service's cluster losing / regaining the
            # endpoint; the 5 MB dump is polled as fast as rivet renders it, ~0.1-0.3 s)
            import random
            rnd = random.Random(a.consul_services)
            rsamples = []
            for i in range(2 * a.consul_random_changes):
                self.check_deadline()
                if i % 2 == 0:
                    si, k = rnd.randrange(a.consul_services), rnd.randrange(a.consul_instances)
                name = "svc-%05d" % si
                status = "critical" if i % 2 == 0 else "passing"
                addr = consul_scale.instance_addr(si, k)
                t1 = time.monotonic()
                if not consul_scale.set_check(cat_port, "%s-%d" % (name, k), status):
                    rsamples.append(float("nan"))
                    continue
                seen = None
                while time.monotonic() - t1 < a.consul_timeout:
                    eps_now = consul_scale.served_endpoints(t.admin_port, "gloo-system." + name)
                    if eps_now is not None and (addr in eps_now) == (status == "passing"):
                        seen = (time.monotonic() - t1) * 1000.0
                        break
                    time.sleep(0.02)
                rsamples.append(float("nan") if seen is None else seen)
                log(f"  consul-scale: {name} instance {k} -> {status}: "
                    + (f"/config_dump changed after {seen / 1000:.2f} s" if seen is not None
                       else f"not seen within {a.consul_timeout:.0f} s"))
                if seen is None:
                    break
            rec["random_ms"] = ",".join("nan" if x != x else f"{x:.1f}" for x in rsamples)
            # idle: rivet's CPU with nothing changing (blocking queries held, answered only when
            # they time out)
            if poll is not None:
                poll.close()
                poll = None
            time.sleep(1.0)
            c0 = measure.tree_cpu_ticks(t.proxy_pids())
            ti = time.monotonic()
            time.sleep(a.consul_idle_s)
            rec["idle_s"] = time.monotonic() - ti
            rec["idle_cpu_pct"] = 100.0 * (measure.tree_cpu_ticks(t.proxy_pids()) - c0) / measure.TICK / rec["idle_s"]
            log(f"  consul-scale: idle {rec['idle_s']:.0f} s: rivet CPU {rec['idle_cpu_pct']:.2f}%")
            s1 = consul_scale.stats(cat_port, since=converged)
            rec["health_ms"] = ",".join("nan" if x != x else f"{x:.1f}" for x in samples)
            rec["health_changes"] = len(samples)
            rec["health_failures"] = sum(1 for x in samples if x != x)
            rec["rss_after_kb"] = measure.tree_rss_kb(t.proxy_pids())
            rec["hwm_after_kb"] = _status_kb(t.proc.pid, "VmHWM")
            rec["blocking_open"] = s1.get("blocking_now", -1)
            # when rivet read svc-live's health (CLOCK_MONOTONIC is the same in both processes):
            # the stretches without a read after convergence bound how late a change is seen
            t_end = time.monotonic()
            reads = [x[0] for x in s1.get("live_reads", []) if x[0] >= converged]
            marks = [converged] + reads + [t_end]
            gaps = [b - a_ for a_, b in zip(marks, marks[1:])]
            rec["live_reads"] = len(reads)
            rec["live_first_read_s"] = (reads[0] - converged) if reads else t_end - converged
            rec["live_read_gap_max_s"] = max(gaps)
            rec["after_converge_s"] = t_end - converged
            hb = (s1.get("requests", {}).get("health_blocking", 0)
                  - s0.get("requests", {}).get("health_blocking", 0))
            rec["health_blocking_per_s"] = hb / rec["after_converge_s"]
            # every service's health reads after convergence: a service read 0 times was starved
            rec["unread_services"] = s1.get("unread_since", -1)
            rec["unread_names"] = ",".join(s1.get("unread_names", []))
            rec["reads_per_service_median"] = s1.get("reads_since_median", -1)
            rec["reads_per_service_max"] = s1.get("reads_since_max", -1)
            log(f"  consul-scale: health reads per service after convergence: median "
                f"{rec['reads_per_service_median']}, max {rec['reads_per_service_max']}; "
                f"{rec['unread_services']} of {a.consul_services + 1} services not read at all"
                + (f" (first: {rec['unread_names']})" if rec["unread_names"] else ""))
            log(f"  consul-scale: after convergence rivet made {rec['health_blocking_per_s']:.0f} "
                f"blocking health reads/s (one per service every "
                f"{(a.consul_services + 1) / max(rec['health_blocking_per_s'], 1e-9):.0f} s on "
                f"average) and read svc-live {len(reads)} times in {rec['after_converge_s']:.0f} s: "
                f"first {rec['live_first_read_s']:.1f} s after convergence, longest stretch "
                f"without a read {rec['live_read_gap_max_s']:.1f} s")
            req = s1.get("requests", {})
            for k in ("services_plain", "services_blocking", "health_plain", "health_blocking"):
                rec["consul_" + k] = req.get(k, 0)
            rec["total_s"] = time.monotonic() - t0
            self.record(scenario="consul-scale", round=1, order=1, target="rivet", **rec)
        finally:
            if poll is not None:
                poll.close()
            if t is not None:
                t.stop()
            cat.stop()

    def skip_scenario(self, name, why):
        self.meta.setdefault("skipped_scenarios", []).append(f"{name}: {why or 'rivet unavailable'}")
        log(f"SKIP scenario {name}: needs rivet ({(why or '').splitlines()[0] if why else 'unavailable'})")

    # -----------------------------------------------------------------------------------------
    def main(self):
        a = self.a
        self.tmp = tempfile.mkdtemp(prefix="rivet-bench.")
        os.chmod(self.tmp, 0o755)   # nginx workers run as nobody and read the origin's file
        self.target_names = [n for n in ALL_TARGETS if n in a.targets]
        self.meta.update(machine_info(a))
        if a.note:
            self.meta["note"] = a.note
        # run a private copy of rivet: others may rebuild build/rivet while this runs
        self.rivet_bin = a.rivet
        wants_rivet = "rivet" in self.target_names or RIVET_ONLY & set(a.scenarios)
        if wants_rivet and os.path.isfile(a.rivet) and os.access(a.rivet, os.X_OK):
            self.rivet_bin = os.path.join(self.tmp, "rivet-bin")
            shutil.copy2(a.rivet, self.rivet_bin)
            with open(self.rivet_bin, "rb") as f:
                self.meta["rivet_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
            st = os.stat(a.rivet)
            self.meta["rivet_built"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.st_mtime))
        # the floor (a plain TCP relay) is compiled now, for the throughput scenarios only
        self.floor_bin = None
        if "floor" in self.target_names and any(s in WRK_SCENARIOS for s in a.scenarios):
            self.floor_bin, info = T.build_floor(os.path.join(self.tmp, "floor-bin"))
            if self.floor_bin is None:
                self.skip("floor", info)
            else:
                self.meta["floor_cc"] = info
        planned = self.planned_seconds()
        self.retry_budget = max(0.0, 0.9 * a.max_minutes * 60 - planned)
        log(f"temp dir {self.tmp}; proxy CPU {a.proxy_cpu}, origin + wrk CPU {a.load_cpu}; "
            f"planned ~{planned / 60:.1f} min, up to {self.retry_budget / 60:.1f} min more for "
            f"repeating noisy runs, hard stop at {a.max_minutes:g} min")
        try:
            os.sched_setaffinity(0, {a.load_cpu})   # the harness's own polling stays off the proxy CPU
        except OSError:
            pass
        try:
            self.origin = T.Origin(self.tmp, a.load_cpu)
            self.origin.start()
            ok, why = self.origin.check(a.ready_timeout)
            if not ok:
                raise RuntimeError(f"origin nginx: {why}\n{self.origin.proc.log_tail()}")
            if "idle" in a.scenarios:
                self.scenario_idle()
            wrk_sc = [s for s in a.scenarios if s in WRK_SCENARIOS]
            if wrk_sc:
                live = {}
                for n in self.target_names:
                    t = self.start_target(n)
                    if t is not None:
                        live[n] = t
                try:
                    for sc in wrk_sc:
                        self.scenario_wrk(live, sc)
                finally:
                    for t in live.values():
                        t.stop()
            if "routes" in a.scenarios:
                self.scenario_routes()
            if "propagation" in a.scenarios:
                self.scenario_propagation()
            if "consul-kv" in a.scenarios:
                self.scenario_consul_kv()
            if "consul-scale" in a.scenarios:
                self.scenario_consul_scale()
            self.tls_scenarios()
        except Deadline as e:
            log(f"STOP: {e}; reporting what was measured")
            self.meta["stopped"] = str(e)
        except Exception as e:
            import traceback
            traceback.print_exc()
            log(f"STOP: error {e!r}; every started process is stopped, reporting what was measured")
            self.meta["stopped"] = f"error: {e!r}"
        finally:
            T.stop_all()
            if not a.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.meta["elapsed_s"] = round(time.monotonic() - self.t_start, 1)
        self.meta["skipped"] = {k: v.splitlines()[0] for k, v in self.skipped.items()}
        return self.write_outputs()

    def write_outputs(self):
        a = self.a
        os.makedirs(a.results_dir, exist_ok=True)
        stamp = self.meta["date_file"]
        raw = os.path.join(a.results_dir, f"{'quick-' if a.quick else ''}{stamp}.txt")
        report.write_raw(raw, self.meta, self.records)
        log(f"raw results: {os.path.relpath(raw, ROOT)}")
        md = report.render(self.meta, self.records, raw_path=os.path.relpath(raw, ROOT),
                           separate=separate_runs(a.results_dir, raw))
        print(md)
        if a.doc:
            with open(a.doc, "w") as f:
                f.write(md)
            log(f"report written to {os.path.relpath(a.doc, ROOT)}")
        return 0


def separate_runs(results_dir, this_raw):
    """{scenario: (raw path relative to the repository, meta, records)}: the latest separate
    measurement of each opt-in scenario, for a report whose own run did not measure it."""
    out = {}
    for sc in sorted(OPT_IN):
        found = report.latest_with(results_dir, sc, exclude=this_raw)
        if found:
            path, meta, recs = found
            out[sc] = (os.path.relpath(os.path.abspath(path), ROOT), meta, recs)
    return out


def _status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _stderr(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stderr
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info(a):
    now = datetime.datetime.now(datetime.timezone.utc)
    lscpu = _cmd(["lscpu"])
    model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines()
                  if l.startswith("Model name")), "?")
    try:
        with open("/proc/meminfo") as f:
            mem_gib = int(f.readline().split()[1]) / 1048576
    except OSError:
        mem_gib = 0
    rev = _cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    dirty = _cmd(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).strip()
    rivet_ver = _cmd([a.rivet, "version"]).strip().splitlines()[:1] if os.access(a.rivet, os.X_OK) else []
    rivet_ver = [v[6:] if v.startswith("rivet ") else v for v in rivet_ver]
    return {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "date_file": now.strftime("%Y-%m-%d-%H%M"),
        "command": a.command,
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_gib, 1),
        "kernel": os.uname().release,
        "nginx": "nginx " + _stderr(["nginx", "-v"]).split("/")[-1].strip(),
        "haproxy": " ".join(_cmd(["haproxy", "-v"]).split()[:3]) or "haproxy ?",
        "wrk": " ".join(_cmd(["wrk", "-v"]).split()[:2]) or "wrk ?",
        "rivet": (rivet_ver[0] if rivet_ver else "-") + (
            f" (work tree at git {rev}{', with uncommitted changes' if dirty else ''})"
            if os.path.abspath(a.rivet) == os.path.join(ROOT, "build", "rivet")
            else f" (binary {a.rivet}; work tree at git {rev})"),
        "duration_s": a.duration, "scale_duration_s": a.scale_duration, "rounds": a.rounds, "warmup_s": a.warmup,
        "proxy_cpu": a.proxy_cpu, "load_cpu": a.load_cpu, "noise_pct": a.noise_pct,
        "max_retries": a.max_retries, "quiet_wait_s": a.quiet_wait, "idle_conns": a.idle_conns,
        "route_sizes": ",".join(map(str, a.route_sizes)), "route_layouts": ",".join(a.route_layouts),
        "prop_changes": a.prop_changes, "quick": int(a.quick),
        "consul_changes": a.consul_changes, "consul_gap_ms": a.consul_gap_ms,
        "consul_burst": a.consul_burst, "consul_services": a.consul_services,
        "consul_instances": a.consul_instances,
        "targets": ",".join(a.targets), "scenarios": ",".join(a.scenarios),
        "loadavg_start": open("/proc/loadavg").read().split()[0],
    }


def csv(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="Side-by-side benchmark: direct, nginx, haproxy, rivet and the floor (a plain "
                    "TCP relay) on loopback.",
        epilog="bench/run.sh --install-deps ... first apt-get installs wrk, nginx-light, haproxy, "
               "procps and util-linux. See bench/README.md.")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test, about a minute: 1 s runs, 2 rounds, fewer changes; "
                         "does not rewrite doc/benchmarks.md unless --doc is given")
    ap.add_argument("--duration", type=float, help="seconds per measured wrk run (default 10)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    ap.add_argument("--scale-duration", type=float,
                    help="seconds per measured wrk run in the route-scale scenario (default 5)")
    ap.add_argument("--warmup", type=float, help="seconds of unmeasured load before a scenario (default 2)")
    ap.add_argument("--scenarios", type=csv, default=DEFAULT_SCENARIOS,
                    help=f"comma list from {','.join(ALL_SCENARIOS)} (default all but "
                         f"{','.join(s for s in ALL_SCENARIOS if s not in DEFAULT_SCENARIOS)}); "
                         f"'all' for every one")
    ap.add_argument("--targets", type=csv, default=ALL_TARGETS,
                    help=f"comma list from {','.join(ALL_TARGETS)} (default all; floor, the "
                         f"plain TCP relay bench/floor/relay.c, runs in c50, c256 and 16k only)")
    ap.add_argument("--rivet", default=os.path.join(ROOT, "build", "rivet"), help="rivet binary")
    ap.add_argument("--proxy-cpu", type=int, default=0, help="CPU of the proxies (default 0)")
    ap.add_argument("--load-cpu", type=int, default=1, help="CPU of the origin and wrk (default 1)")
    ap.add_argument("--noise-pct", type=float, default=3.0,
                    help="a run is noisy when other processes used more than this %% of the two "
                         "CPUs (default 3)")
    ap.add_argument("--max-retries", type=int,
                    help="repeats of a noisy run (default 2, quick 0)")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="before repeating a noisy run, wait up to this many seconds for the "
                         "other load to drop (default 10)")
    ap.add_argument("--idle-conns", type=int, default=1000,
                    help="idle keep-alive connections in the memory scenario (default 1000)")
    ap.add_argument("--route-sizes", type=lambda s: [int(x) for x in csv(s)],
                    help="route-table sizes (default 10,1000,10000)")
    ap.add_argument("--route-layouts", type=csv,
                    help="spread (1,000 domains) and/or one-vhost (default both, quick spread)")
    ap.add_argument("--prop-changes", type=int, help="config changes per round (default 200)")
    ap.add_argument("--prop-timeout", type=float, default=5.0,
                    help="seconds one config change may take before it counts as failed")
    ap.add_argument("--consul-changes", type=int,
                    help="consul-kv: KV writes per round (default 200, quick 20)")
    ap.add_argument("--consul-gap-ms", type=float, default=150.0,
                    help="consul-kv: pause after each answer before the next PUT (default 150, "
                         "past the watch loop's 10 reads/s limiter)")
    ap.add_argument("--consul-burst", type=int,
                    help="consul-kv: PUTs of the final back-to-back series, 20 ms apart (default "
                         "50, quick 10; 0 skips it)")
    ap.add_argument("--consul-services", type=int, default=5000,
                    help="consul-scale: services in the catalog (default 5000)")
    ap.add_argument("--consul-instances", type=int, default=15,
                    help="consul-scale: instances per service (default 15)")
    ap.add_argument("--consul-random-changes", type=int, default=3,
                    help="consul-scale: random services whose instance goes critical and back, timed to /config_dump")
    ap.add_argument("--consul-idle-s", type=float, default=320.0,
                    help="consul-scale: seconds of idle over which rivet's CPU is measured (longer than the 300 s wait: one round of timed-out queries)")
    ap.add_argument("--consul-health-changes", type=int,
                    help="consul-scale: health-check changes timed to traffic (default 4, quick 2)")
    ap.add_argument("--consul-timeout", type=float, default=120.0,
                    help="consul-scale: seconds for the catalog to start, for rivet to converge, "
                         "and for each health change to reach traffic (default 120)")
    ap.add_argument("--results-dir", default=os.path.join(BENCH, "results"),
                    help="where the raw per-round file goes (default bench/results)")
    ap.add_argument("--doc", help="markdown report to (re)write (default doc/benchmarks.md, "
                                  "none in --quick mode; 'none' to skip)")
    ap.add_argument("--max-minutes", type=float, help="hard bound on the whole run (default 20, quick 4); noisy runs are "
                         "repeated only within what it leaves after the planned runs")
    ap.add_argument("--ready-timeout", type=float, default=10.0,
                    help="seconds a server may take to answer after start (default 10)")
    ap.add_argument("--load-timeout", type=float, default=120.0,
                    help="seconds to wait for a generated route table to be served")
    ap.add_argument("--settle", type=float, help="seconds to wait before reading RSS (default 1)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--note", help="a sentence to print in the report's Run section (with "
                                   "--report-only: added to what the run recorded)")
    ap.add_argument("--report-only", metavar="RAW",
                    help="re-render the report from a bench/results/*.txt file and exit")
    a = ap.parse_args(argv)
    q = a.quick
    dflt = {"duration": (1, 10), "rounds": (2, 3), "warmup": (1, 2), "prop_changes": (20, 200),
            "max_minutes": (4, 20), "settle": (0.3, 1.0), "max_retries": (0, 2),
            "scale_duration": (1, 5), "consul_changes": (20, 200),
            "consul_health_changes": (2, 4), "consul_burst": (10, 50)}
    for k, (qv, fv) in dflt.items():
        if getattr(a, k) is None:
            setattr(a, k, qv if q else fv)
    if a.route_sizes is None:
        a.route_sizes = [10, 1000, 10000]
    if a.route_layouts is None:
        a.route_layouts = ["spread"] if q else ["spread", "one-vhost"]
    if a.doc is None:
        # a run of opt-in scenarios alone (consul-scale, https, tls-handshake) leaves the doc to
        # the full run, whose report shows the latest raw file of --results-dir that has them
        only_optin = set(a.scenarios) <= OPT_IN and a.scenarios != ["all"]
        a.doc = None if q or only_optin else os.path.join(ROOT, "doc", "benchmarks.md")
    elif a.doc == "none":
        a.doc = None
    if a.scenarios == ["all"]:
        a.scenarios = list(ALL_SCENARIOS)
    for s in a.scenarios:
        if s not in ALL_SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    for t in a.targets:
        if t not in ALL_TARGETS:
            ap.error(f"unknown target {t!r}")
    for l in a.route_layouts:
        if l not in ("spread", "one-vhost"):
            ap.error(f"unknown route layout {l!r}")
    if os.cpu_count() < 2 and a.proxy_cpu == a.load_cpu == 0:
        pass
    elif os.cpu_count() < 2:
        a.proxy_cpu = a.load_cpu = 0
    a.command = os.environ.get("BENCH_COMMAND") or "bench/run.sh " + " ".join(map(shlex.quote, argv))
    return a


def main(argv):
    a = parse_args(argv)
    if a.report_only:
        meta, recs = report.read_raw(a.report_only)
        if a.note:
            meta["note"] = (meta.get("note", "") + " " + a.note).strip()
        md = report.render(meta, recs, raw_path=os.path.relpath(os.path.abspath(a.report_only), ROOT),
                           separate=separate_runs(a.results_dir, a.report_only))
        if a.doc:
            with open(a.doc, "w") as f:
                f.write(md)
        print(md)
        return 0
    for tool in ("wrk", "nginx", "taskset") + (("haproxy",) if "haproxy" in a.targets else ()):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found; run: apt-get install -y wrk nginx-light haproxy "
                  "util-linux procps", file=sys.stderr)
            return 2
    run = Run(a)

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run.main()
    except KeyboardInterrupt:
        T.stop_all()
        log("interrupted; every started process stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
