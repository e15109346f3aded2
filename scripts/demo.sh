#!/usr/bin/env bash
# Interim main job (the live two-node demo replaces it): builds the binary and
# decodes real keepalived 2.2.7 captures from testdata/pcaps with
# `muros-had inspect`, one JSON object per VRRP / AH packet.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/muros-had ./cmd/muros-had

show() {
	echo
	echo "\$ bin/muros-had inspect $*"
	bin/muros-had inspect "$@"
}

echo "== keepalived VRRPv2 in IPsec AH (HMAC-MD5-96), multicast, password ahMcast1:"
echo "   master a (priority 150) stops gracefully (priority 0), backup b takes over"
show --password ahMcast1 testdata/pcaps/v2-ah.pcap

echo
echo "== the same capture with a wrong password: every advert fails authentication"
show --password wrong-pw testdata/pcaps/v2-ah.pcap

echo
echo "== keepalived VRRPv3 over IPv6, 500 ms adverts, two VIPs (no authentication in v3)"
show testdata/pcaps/v3-ipv6.pcap
