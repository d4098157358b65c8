#!/usr/bin/env bash
# Install, build and run every test: unit tests and integration tests, first with the normal
# build, then with ASan+UBSan. Closing line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh || { echo "dependency install failed"; exit 1; }
jobs=$(nproc 2>/dev/null || echo 2)
total_pass=0; total_fail=0; status=0

count() { # parse "X passed, Y failed" from the last matching line of $1
  local line; line=$(grep -E '[0-9]+ passed' "$1" | tail -1)
  local p f
  p=$(printf '%s' "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
  f=$(printf '%s' "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
  total_pass=$((total_pass + ${p:-0})); total_fail=$((total_fail + ${f:-0}))
}

for variant in build build-asan; do
  san=0; [ "$variant" = build-asan ] && san=1
  echo "== $variant: build"
  if ! make -s -j"$jobs" BUILD=$variant SAN=$san all >/tmp/rivet-make-$variant.log 2>&1; then
    cat /tmp/rivet-make-$variant.log; echo "build failed"; status=1; total_fail=$((total_fail + 1)); continue
  fi
  echo "== $variant: unit tests"
  make -s BUILD=$variant SAN=$san unit 2>&1 | tee /tmp/rivet-unit-$variant.log
  [ "${PIPESTATUS[0]}" -ne 0 ] && status=1
  count /tmp/rivet-unit-$variant.log
  if ls tests/integ/test_*.py >/dev/null 2>&1; then
    echo "== $variant: integration tests"
    RIVET_BIN=$PWD/$variant/rivet ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
      /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integ 2>&1 | tee /tmp/rivet-integ-$variant.log
    rc=${PIPESTATUS[0]}
    [ $rc -ne 0 ] && status=1
    count /tmp/rivet-integ-$variant.log
  fi
done
echo
echo "$total_pass passed, $total_fail failed"
exit $status
