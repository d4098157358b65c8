#!/usr/bin/env bash
# Install, build and run every test: unit tests (with fuzz-corpus replays) and integration
# tests, first with the normal build, then with ASan+UBSan; then the protocol doubles' own
# tests. Closing line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh || { echo "dependency install failed"; exit 1; }
jobs=$(nproc 2>/dev/null || echo 2)
logs=$(mktemp -d /tmp/rivet-test.XXXXXX)
total_pass=0; total_fail=0; status=0

count() { # add up "X passed" / "Y failed" (and pytest's "Z error") from the last summary line of $1
  local line p f e
  line=$(grep -E '[0-9]+ (passed|failed)' "$1" | tail -1)
  p=$(printf '%s' "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
  f=$(printf '%s' "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || true)
  e=$(printf '%s' "$line" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+' || true)
  total_pass=$((total_pass + ${p:-0})); total_fail=$((total_fail + ${f:-0} + ${e:-0}))
}

pytest_run() { # $1 = log name, rest = pytest args
  local log="$logs/$1.log"; shift
  /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -ne 0 ] && status=1
  count "$log"
}

for variant in build build-asan; do
  san=0; [ "$variant" = build-asan ] && san=1
  echo "== $variant: build"
  if ! make -s -j"$jobs" BUILD=$variant SAN=$san all >"$logs/make-$variant.log" 2>&1; then
    cat "$logs/make-$variant.log"; echo "build failed"; status=1; total_fail=$((total_fail + 1)); continue
  fi
  echo "== $variant: unit tests"
  make -s -j"$jobs" BUILD=$variant SAN=$san unit 2>&1 | tee "$logs/unit-$variant.log"
  [ "${PIPESTATUS[0]}" -ne 0 ] && status=1
  count "$logs/unit-$variant.log"
  echo "== $variant: integration tests"
  RIVET_BIN=$PWD/$variant/rivet ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    pytest_run "integ-$variant" tests/integ
done
if [ -d tests/doubles ]; then
  echo "== protocol doubles"
  pytest_run doubles tests/doubles
fi
echo
echo "logs in $logs"
echo "$total_pass passed, $total_fail failed"
exit $status
