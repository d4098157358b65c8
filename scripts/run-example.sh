#!/usr/bin/env bash
# Install, build, and start rivet on the bundled example config (examples/config), with the
# demo backend it routes to. Ctrl-C stops both. Then, from another shell:
#   curl -i http://127.0.0.1:8080/hello
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
make -s -j"$(nproc)"
/usr/bin/python3 examples/demo-backend.py 8081 &
backend=$!
trap 'kill "$backend" 2>/dev/null || true' EXIT
echo "demo backend on 127.0.0.1:8081 (pid $backend); rivet on :8080, admin on 127.0.0.1:19000"
echo "try: curl -i http://127.0.0.1:8080/hello"
./build/rivet run --dir examples/config "$@"
