#!/usr/bin/env bash
# Runs every test: unit, fuzz seed corpora, property tests, and the lab tests
# (one package at a time: lab tests measure takeovers and must not compete
# for the two cores with another package's lab)
# in network namespaces (these need root). A skipped test is a failure: a lab
# test that skips is a test that does not exist.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${MUROS_TEST_LOG:-/tmp/muros-had-test.log}
go vet ./... || exit 1
go test -count=1 -p 1 -v -timeout 20m "$@" ./... 2>&1 | tee "$out" | grep --line-buffered -E '^(--- |ok|FAIL|panic)'
rc=${PIPESTATUS[0]}
passed=$(grep -cE '^\s*--- PASS' "$out")
failed=$(grep -cE '^\s*--- FAIL' "$out")
skipped=$(grep -cE '^\s*--- SKIP' "$out")
# A package that fails to build, panics or times out has no "--- FAIL" line
# of its own: count it once.
failed_pkgs=$(grep -E '^FAIL\s' "$out" | sort -u | wc -l)
[ "$failed_pkgs" -gt "$failed" ] && failed=$failed_pkgs
if [ "$skipped" -gt 0 ]; then
  echo "skipped tests (not allowed: every test must run):"
  grep -E '^\s*--- SKIP' -A2 "$out"
  rc=1
fi
if [ "$rc" -ne 0 ]; then
  echo "---- failure context (full log: $out) ----"
  grep -E -B60 '^\s*--- FAIL|^panic:|^FAIL\s|build failed' "$out" | grep -vE '^=== (RUN|PAUSE|CONT)' | tail -300
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$rc"
