#!/usr/bin/env bash
# The main job (`make demo`): builds muros-had and runs the live two-node
# demo in throw-away network namespaces, with conntrack sync and DB sync on:
# election, who owns the VIPs, a TCP session and a DB file that survive a
# crash of the master, then a graceful stop, each with the failover gap a
# client sending through the VIPs every millisecond sees. Needs root (namespaces,
# raw sockets); touches nothing outside the namespaces it creates, also on
# Ctrl-C. Extra arguments go to the demo, e.g. `scripts/demo.sh --interval 10ms`
# (see `bin/muros-had-demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: needs root for network namespaces: run \`sudo make demo\`" >&2
	exit 1
fi
command -v go >/dev/null || { echo "demo: Go 1.26 is required (https://go.dev/doc/install)" >&2; exit 1; }
echo "== building bin/muros-had and bin/muros-had-demo"
go build -o bin/muros-had ./cmd/muros-had
go build -o bin/muros-had-demo ./internal/demo
# exec: Ctrl-C reaches the demo directly, which tears the lab down.
exec bin/muros-had-demo --bin bin/muros-had "$@"
