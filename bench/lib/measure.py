"""measure.py - what the benchmark reads from the kernel and from wrk.

CPU times come from /proc in clock ticks (USER_HZ, normally 100 per second):
  - /proc/<pid>/stat utime+stime of a process covers all of its threads;
  - /proc/stat per-CPU busy time tells how much the two CPUs worked in a window, so what
    neither the targets, the origin nor wrk used is "other" load (a build, a test run...),
    which is how a noisy round is detected.
Stdlib only; run by /usr/bin/python3.
"""
import os
import re
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# processes
def _stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rp = data.rfind(")")
    return data[rp + 2:].split()


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def cpu_ticks(pid, children=False):
    """utime+stime of pid (all threads), in ticks; with children, reaped children's too."""
    f = _stat_fields(pid)
    if f is None:
        return 0
    t = int(f[11]) + int(f[12])
    if children:
        t += int(f[13]) + int(f[14])
    return t


def child_pids(pid):
    """Direct children of pid (scan of /proc: does not need CONFIG_PROC_CHILDREN)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(name)
        if f is not None and f[1] == str(pid):
            out.append(int(name))
    return out


def process_tree(pid):
    """pid and its descendants (nginx master + workers, ...)."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(child_pids(p))
    return seen


def tree_cpu_ticks(pids):
    return sum(cpu_ticks(p) for p in pids)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pids):
    return sum(rss_kb(p) for p in pids)


def alive(pid):
    f = _stat_fields(pid)
    return f is not None and f[0] != "Z"


# ---------------------------------------------------------------------------------------------
# whole-machine CPU, for noise detection
def cpu_busy_ticks(cpus=None):
    """Busy ticks (everything but idle and iowait) of the given CPU numbers, or of all."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            n = int(name[3:])
            if cpus is not None and n not in cpus:
                continue
            v = [int(x) for x in vals]
            # user nice system idle iowait irq softirq steal (guest is inside user)
            total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total


def all_process_ticks():
    """{pid: (comm, ticks incl. reaped children)} of every process: to name who was busy."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(name)
        if f is None:
            continue
        out[int(name)] = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return out


def top_others(before, after, exclude, n=3, mine=()):
    """The n processes (not in exclude) that used the most CPU between two snapshots; those
    in mine (other servers of the benchmark, idle meanwhile) are marked "(bench)"."""
    d = []
    for pid, t in after.items():
        if pid in exclude:
            continue
        dt = t - before.get(pid, 0)
        if dt > 0:
            d.append((dt, pid))
    d.sort(reverse=True)
    return [f"{comm(pid)}[{pid}]{' (bench)' if pid in mine else ''} {dt / TICK:.2f}s"
            for dt, pid in d[:n]]


# ---------------------------------------------------------------------------------------------
# wrk
_UNIT = {"us": 1.0, "ms": 1000.0, "s": 1e6, "m": 60e6, "h": 3600e6}


def _dur_us(s):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", s)
    if not m:
        raise ValueError(f"wrk duration {s!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(text):
    """requests, seconds, rps, p50/p75/p90/p99 in us, errors (socket + non-2xx/3xx)."""
    r = {"errors": 0}
    m = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError("wrk output has no request count:\n" + text)
    r["requests"] = int(m.group(1))
    r["seconds"] = _dur_us(m.group(2) + m.group(3)) / 1e6
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    r["rps"] = float(m.group(1)) if m else r["requests"] / max(r["seconds"], 1e-9)
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        r[f"p{pct}_us"] = _dur_us(m.group(1)) if m else float("nan")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["errors"] += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["errors"] += int(m.group(1))
    return r


def run_wrk(url, connections, duration, cpu=None, headers=(), threads=1, timeout_s=5):
    """Run wrk pinned to cpu; returns parse_wrk(...) + wrk_cpu_s (its own user+sys)."""
    cmd = []
    if cpu is not None:
        cmd += ["taskset", "-c", str(cpu)]
    duration = max(1, int(round(duration)))   # wrk takes whole seconds
    cmd += ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
            "--latency", "--timeout", f"{timeout_s}s"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + duration + 30
    out = b""
    os.set_blocking(p.stdout.fileno(), False)
    while True:
        try:
            chunk = p.stdout.read()
        except BlockingIOError:
            chunk = None
        if chunk:
            out += chunk
        wpid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if wpid == p.pid:
            break
        if time.monotonic() > deadline:
            os.kill(p.pid, 9)
            os.wait4(p.pid, 0)
            raise RuntimeError(f"wrk did not finish in {duration + 30}s: {' '.join(cmd)}")
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    rest = p.stdout.read()
    if rest:
        out += rest
    p.stdout.close()
    text = out.decode("utf-8", "replace")
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited {p.returncode}: {text}")
    r = parse_wrk(text)
    r["wrk_cpu_s"] = ru.ru_utime + ru.ru_stime
    r["wrk_output"] = text
    return r


def measured_wrk(url, connections, duration, proxy_pids, known_pids, wrk_cpu=1,
                 headers=(), noise_cpus=(0, 1), bench_pids=()):
    """One measured wrk run.

    proxy_pids: processes whose CPU is charged to the target (may be empty: direct).
    known_pids: other processes of the benchmark (origin) whose CPU is not "noise".
    Adds proxy_cpu_s, cpu_us_per_req, known_cpu_s, other_cpu_s, other_pct (share of the
    window's capacity on noise_cpus used by anything else), others (top other processes).
    """
    snap0 = all_process_ticks()
    busy0 = cpu_busy_ticks(set(noise_cpus))
    p0 = tree_cpu_ticks(proxy_pids)
    k0 = tree_cpu_ticks(known_pids)
    t0 = time.monotonic()
    r = run_wrk(url, connections, duration, cpu=wrk_cpu, headers=headers)
    t1 = time.monotonic()
    p1 = tree_cpu_ticks(proxy_pids)
    k1 = tree_cpu_ticks(known_pids)
    busy1 = cpu_busy_ticks(set(noise_cpus))
    snap1 = all_process_ticks()
    r["wall_s"] = t1 - t0
    r["proxy_cpu_s"] = (p1 - p0) / TICK
    r["known_cpu_s"] = (k1 - k0) / TICK
    r["cpu_us_per_req"] = (r["proxy_cpu_s"] * 1e6 / r["requests"]) if r["requests"] else float("nan")
    r["proxy_util"] = r["proxy_cpu_s"] / r["wall_s"]
    ours = r["proxy_cpu_s"] + r["known_cpu_s"] + r["wrk_cpu_s"]
    r["busy_s"] = (busy1 - busy0) / TICK
    r["other_cpu_s"] = max(0.0, r["busy_s"] - ours)
    r["other_pct"] = 100.0 * r["other_cpu_s"] / (r["wall_s"] * len(noise_cpus))
    exclude = set(proxy_pids) | set(known_pids) | {os.getpid()}
    r["others"] = top_others(snap0, snap1, exclude, mine=set(bench_pids))
    return r
