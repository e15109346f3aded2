#!/usr/bin/env bash
# Installs everything muros-had's demo, tests and benchmarks need on a bare
# Debian machine (run as root). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# gcc and libc6-dev: go test -race needs cgo (scripts/test.sh).
pkgs=(keepalived conntrack conntrackd nftables iproute2 tcpdump sqlite3 procps psmisc ca-certificates make systemd gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# keepalived/conntrackd are used only as lab peers; never as services on the host.
for s in keepalived conntrackd; do
  systemctl disable --now "$s" >/dev/null 2>&1 || true
  pkill -x "$s" >/dev/null 2>&1 || true
done
command -v go >/dev/null || { echo "install-deps: Go 1.26 is required (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
