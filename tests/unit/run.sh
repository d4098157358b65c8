#!/usr/bin/env bash
# Run unit test binaries (TAP output), print each failure, and a closing "N passed, N failed".
set -u
pass=0; fail=0; bad=0
for t in "$@"; do
  args=()
  case "$(basename "$t")" in replay_*) args=("fuzz/corpus/$(basename "$t" | sed 's/^replay_//')");; esac
  out=$("$t" "${args[@]}" 2>&1); rc=$?
  p=$(printf '%s\n' "$out" | grep -c '^ok ')
  f=$(printf '%s\n' "$out" | grep -c '^not ok ')
  pass=$((pass + p)); fail=$((fail + f))
  if [ $rc -ne 0 ] || [ "$f" -ne 0 ]; then
    bad=1
    echo "FAIL $t (exit $rc)"
    printf '%s\n' "$out" | grep -E -A3 '^not ok|ERROR|runtime error|Sanitizer' | head -40
    [ "$f" -eq 0 ] && fail=$((fail + 1))
  else
    echo "ok   $t ($p checks)"
  fi
done
echo "unit: $pass passed, $fail failed"
exit $bad
