#!/usr/bin/env bash
# Runs every test: unit, fuzz seed corpora, property tests, and the lab tests
# in network namespaces (these need root). A skipped test is a failure: a lab
# test that skips is a test that does not exist.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp /tmp/muros-had-test.XXXXXX)
trap 'rm -f "$out"' EXIT
go vet ./... || exit 1
go test -count=1 -v -timeout 80m "$@" ./... 2>&1 | tee "$out" | grep --line-buffered -E '^(--- |ok|FAIL|panic)'
rc=${PIPESTATUS[0]}
passed=$(grep -cE '^\s*--- PASS' "$out")
failed=$(grep -cE '^\s*--- FAIL' "$out")
skipped=$(grep -cE '^\s*--- SKIP' "$out")
if [ "$skipped" -gt 0 ]; then
  echo "skipped tests (not allowed: every test must run):"
  grep -E '^\s*--- SKIP' -A2 "$out"
  rc=1
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  grep -E '^(FAIL|panic|.*build failed)' "$out" | head -20
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$rc"
