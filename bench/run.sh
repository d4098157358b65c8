#!/usr/bin/env bash
# rivet side-by-side benchmark: direct / nginx / haproxy / rivet / floor (a plain TCP relay,
# bench/floor/relay.c) on loopback, one command.
#   bench/run.sh            full run (~12 min, at most 20), rewrites doc/benchmarks.md
#   bench/run.sh --quick    smoke test (~1 min), report printed, doc left alone
#   bench/run.sh --help     every flag
# See bench/README.md. Needs (Debian): wrk nginx-light haproxy procps util-linux; with
# --install-deps it runs apt-get for them. Never starts a system service: every server runs
# with its own config under a temp dir and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--install-deps" ]]; then
    shift
    apt-get install -y -qq wrk nginx-light haproxy procps util-linux >/dev/null
    # Debian's packages enable their own services; this benchmark does not use them
    for s in nginx haproxy; do
        command -v systemctl >/dev/null && systemctl is-active --quiet "$s" 2>/dev/null &&
            echo "note: system $s service is running (not used by the benchmark)"
    done
fi

# 1,000 idle connections + proxies' pools need more descriptors than the usual 1024
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# "$@" may be empty: printf would still print one quoted empty word
if [ $# -gt 0 ]; then export BENCH_COMMAND="bench/run.sh$(printf ' %q' "$@")"; else export BENCH_COMMAND="bench/run.sh"; fi
exec /usr/bin/python3 bench/lib/harness.py "$@"
