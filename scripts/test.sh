#!/usr/bin/env bash
# Runs every test: unit, fuzz seed corpora, property tests, and the lab tests
# (one package at a time: lab tests measure takeovers and must not compete
# for the two cores with another package's lab)
# in network namespaces (these need root); then the packages whose tests need
# no root again under the race detector. A skipped test is a failure: a lab
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

# The race detector over the packages whose tests need no root (found by
# running each package's tests as nobody without capabilities; the others
# hold lab tests, or need root for scheduling or go build). A data race
# fails its test ("race detected during execution of test") or, outside a
# test, its package; both count as failures below. Their passes were
# counted above. TestInspectProperty is left out here: single-goroutine
# decoding, minutes under -race for nothing the detector can see.
race_pkgs=(./atomicfile ./internal/capfile ./internal/procout ./liveness ./cmd/muros-had ./ctsync/ctrel ./ctsync/ctwire ./internal/demo ./internal/nodecfg ./internal/peerview ./internal/replicas ./rawio ./replpath ./internal/ruleset ./internal/status ./kdf ./node ./peerlink ./vrrp/vrrpsim)
race_out=${out%.log}-race.log
echo "race detector: ${race_pkgs[*]}"
go test -race -count=1 -timeout 20m -skip '^TestInspectProperty$' "$@" "${race_pkgs[@]}" 2>&1 | tee "$race_out" | grep --line-buffered -E '^(--- FAIL|ok|FAIL|panic|WARNING: DATA RACE)'
[ "${PIPESTATUS[0]}" -ne 0 ] && rc=1
race_failed=$(grep -cE '^\s*--- FAIL' "$race_out")
race_failed_pkgs=$(grep -E '^FAIL\s' "$race_out" | sort -u | wc -l)
[ "$race_failed_pkgs" -gt "$race_failed" ] && race_failed=$race_failed_pkgs
failed=$((failed + race_failed))
if [ "$skipped" -gt 0 ]; then
  echo "skipped tests (not allowed: every test must run):"
  grep -E '^\s*--- SKIP' -A2 "$out"
  rc=1
fi
if [ "$rc" -ne 0 ]; then
  echo "---- failure context (full logs: $out, $race_out) ----"
  grep -E -B60 '^\s*--- FAIL|^panic:|^FAIL\s|build failed' "$out" | grep -vE '^=== (RUN|PAUSE|CONT)' | tail -300
  grep -E -B60 '^\s*--- FAIL|^panic:|^FAIL\s|build failed' "$race_out" | tail -200
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$rc"
