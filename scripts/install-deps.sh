#!/usr/bin/env bash
# Installs everything muros-had's demo, tests and benchmarks need on a bare
# Debian machine (run as root). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# gcc and libc6-dev: go test -race needs cgo (scripts/test.sh), and
# BenchmarkIdleFloor compiles its C receiver. lintian:
# the Debian package's test (dist/deb_test.go). prometheus: its promtool
# checks /metrics and the Grafana dashboard's queries. chromium: the status
# page's test renders it in a headless browser inside a lab namespace.
# kea-dhcp4-server and isc-dhcp-client: the Kea test (a DHCP server that
# follows the role, dhclient as its clients, all inside lab namespaces).
pkgs=(keepalived conntrack conntrackd nftables iproute2 tcpdump sqlite3 procps psmisc ca-certificates make systemd gcc libc6-dev lintian openssl prometheus chromium kea-dhcp4-server isc-dhcp-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  # keepalived, conntrackd, Kea and Prometheus are lab peers and tools: none
  # may start as a service on the host, not even for the moment between its
  # install and the disable below (a policy-rc.d that refuses every start,
  # for the duration of the install, unless the machine has its own).
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    own_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# install-deps.sh: no service starts during the install\nexit 101\n' >"$own_policy"
    chmod 0755 "$own_policy"
    trap 'rm -f "$own_policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$own_policy" ]; then
    rm -f "$own_policy"
    trap - EXIT
  fi
fi
# keepalived/conntrackd are used only as lab peers; never as services on the host.
for s in keepalived conntrackd; do
  systemctl disable --now "$s" >/dev/null 2>&1 || true
  pkill -x "$s" >/dev/null 2>&1 || true
done
# Kea runs only inside lab namespaces, started by the test's hooks: the
# host's server stays off (its unit would serve the host's interfaces).
systemctl disable --now kea-dhcp4-server >/dev/null 2>&1 || true
# prometheus is installed for promtool only: its server stays off (a
# Prometheus the operator runs is left alone).
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
# Go: the module needs Go 1.26. Where the machine has none (or an older
# one), Debian's golang (1.19 on bookworm) fetches the Go toolchain as a
# module from the Go module proxy (golang.org/toolchain, the same download
# the go command's GOTOOLCHAIN switch makes) into /usr/local/go, and
# /usr/local/bin/go points at it.
go_version=1.26.8
have_go() {
  command -v go >/dev/null || return 1
  local v
  v=$(go env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  [ "$(printf '%s\n%s\n' "1.26" "$v" | sort -V | head -1)" = "1.26" ]
}
if ! have_go; then
  if [ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH have_go; then
    :
  else
    dpkg-query -W -f='${Status}' golang-go 2>/dev/null | grep -q "install ok installed" || {
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends golang-go
    }
    arch=$(dpkg --print-architecture)
    tmp=$(mktemp -d)
    dir=$(cd "$tmp" && GOPATH="$tmp/gopath" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
      /usr/bin/go mod download -json "golang.org/toolchain@v0.0.1-go${go_version}.linux-${arch}" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -n "$dir" ] && [ -f "$dir/bin/go" ] || { echo "install-deps: could not fetch the Go ${go_version} toolchain" >&2; exit 1; }
    rm -rf /usr/local/go
    cp -a "$dir" /usr/local/go
    rm -rf "$tmp"
    # A module's files come without their execute bits.
    chmod -R u+w /usr/local/go
    chmod 0755 /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
  fi
  ln -sfn /usr/local/go/bin/go /usr/local/bin/go
  ln -sfn /usr/local/go/bin/gofmt /usr/local/bin/gofmt
  hash -r
  have_go || { echo "install-deps: Go at /usr/local/go does not run" >&2; exit 1; }
fi
go mod download
