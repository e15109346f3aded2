#!/usr/bin/env bash
# Runs the side-by-side benchmarks of package bench (lab: root, network
# namespaces, keepalived and conntrackd installed) and writes bench/REPORT.md
# with its charts in bench/img/ from their output, kept in
# bench/results/<UTC time>.txt. About 40 minutes on the 2-vCPU lab machine
# (failover 10 ms side by side and 100 ms about 15, false takeovers under
# load 3 and idle 10, conntrack 4, idle CPU and noise floor 2.5); run it on a
# quiet machine, the gaps and lags are timing measurements.
#
# Repetitions: FAILOVER_REPS failovers per failover case (default 5),
# CT_REPS repetitions per conntrack case (default 3), IDLE_COUNT runs of
# the idle CPU and noise floor benchmarks (default 3), LOAD_REPS windows of
# BenchmarkFalseTakeoverUnderLoad per daemon (default 3), FT_IDLE_WINDOW the
# idle false takeover watch (default 10m, all daemons side by side; 0 skips
# it). The failover set at 10 ms is crash, hang, graceful and cut for every
# daemon; keepalived built from source (bench/keepalived-source.sh) joins
# when KEEPALIVED_SOURCE_BIN names it or the script's default prefix holds
# it. Only the report from existing output:
# go run ./bench/report bench/results/<file>.txt
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "bench-report: the lab benchmarks need root" >&2
	exit 1
fi
failover_reps=${FAILOVER_REPS:-5}
ct_reps=${CT_REPS:-3}
idle_count=${IDLE_COUNT:-3}
load_reps=${LOAD_REPS:-3}
ft_idle_window=${FT_IDLE_WINDOW:-10m}
if [ -z "${KEEPALIVED_SOURCE_BIN:-}" ] && [ -x /opt/muros-bench/keepalived-2.4.3/sbin/keepalived ]; then
	export KEEPALIVED_SOURCE_BIN=/opt/muros-bench/keepalived-2.4.3/sbin/keepalived
fi

mkdir -p bench/results
out=bench/results/$(date -u +%Y-%m-%dT%H%MZ).txt
{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "nproc: $(nproc)"
	echo "kernel: $(uname -r)"
	echo "go: $(go env GOVERSION) $(go env GOOS)/$(go env GOARCH)"
	echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "reps: failover $failover_reps per case, conntrack $ct_reps per case, idle CPU $idle_count runs, false takeovers under load $load_reps windows, idle $ft_idle_window"
	echo "keepalived: $(keepalived --version 2>&1 | head -1)"
	if [ -n "${KEEPALIVED_SOURCE_BIN:-}" ]; then
		echo "keepalived-source: $KEEPALIVED_SOURCE_BIN, $("$KEEPALIVED_SOURCE_BIN" --version 2>&1 | head -1)"
	else
		echo "keepalived-source: none (bench/keepalived-source.sh builds it)"
	fi
} >"$out"

status=0
# -v: the benchmarks' log lines (every repetition) unshortened; without it
# go test keeps 10 lines per benchmark.
bench() {
	echo "+ go test $*" | tee -a "$out"
	go test -run '^$' -v "$@" 2>&1 | tee -a "$out" || status=1
}
bench -bench 'Failover/(crash|hang|graceful|cut)/10ms/' -benchtime 1x -timeout 60m ./bench/ -args -failover.reps="$failover_reps"
bench -bench 'Failover/(crash|graceful)/100ms/' -benchtime 1x -timeout 30m ./bench/ -args -failover.reps="$failover_reps"
bench -bench 'FalseTakeoverUnderLoad' -benchtime 1x -timeout 30m ./bench/ -args -load.reps="$load_reps"
if [ "$ft_idle_window" != 0 ]; then
	bench -bench 'FalseTakeoverIdle' -benchtime 1x -timeout 60m ./bench/ -args -idle.window="$ft_idle_window"
fi
bench -bench 'Conntrack' -benchtime 1x -timeout 30m ./bench/ -args -ct.reps="$ct_reps"
bench -bench 'IdleCPU|ProbeNoiseFloor' -benchtime 1x -count "$idle_count" -timeout 30m ./bench/
echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$out"

go run ./bench/report -out bench/REPORT.md "$out" || status=1
echo "bench-report: output in $out" >&2
exit "$status"
