#!/usr/bin/env bash
# capture.sh — records real keepalived 2.2.7 adverts into the .pcap files of
# this directory. Run as root from anywhere:
#
#   bash testdata/pcaps/capture.sh            # every capture
#   bash testdata/pcaps/capture.sh v2-ah      # only the named ones
#
# For each capture it creates two private network namespaces (unique names,
# never the root namespace) joined by a veth pair, runs keepalived in both
# (node a priority 150, node b priority 100), records node a's side of the link
# with tcpdump, then stops a gracefully (priority-0 advert, b takes over) and
# then b. Everything it created is removed on exit, error or interrupt.
# Afterwards it derives the message-only-checksum v3 IPv4 files (see README).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "capture.sh: must run as root (creates network namespaces)" >&2
	exit 1
fi
for bin in keepalived tcpdump ip go; do
	command -v "$bin" >/dev/null || {
		echo "capture.sh: $bin not found" >&2
		exit 1
	}
done

run_id="mhcap$$"
work=$(mktemp -d "/tmp/muros-had-capture.XXXXXX")
pids=()
namespaces=()

teardown() {
	local p ns
	# keepalived needs a moment to stop its VRRP child; give it 3 s.
	for p in "${pids[@]:-}"; do
		[ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
	done
	for _ in 1 2 3 4 5 6; do
		local alive=0
		for p in "${pids[@]:-}"; do
			[ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1
		done
		[ "$alive" -eq 0 ] && break
		sleep 0.5
	done
	for p in "${pids[@]:-}"; do
		[ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
	done
	for ns in "${namespaces[@]:-}"; do
		[ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# node NAME ADDR4 ADDR6: a namespace with veth0 (peer end created by link).
node_setup() {
	local ns=$1 a4=$2 a6=$3
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.veth0.accept_dad=0
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "$a4/24" dev veth0
	ip -n "$ns" addr add "$a6/64" dev veth0 nodad
	ip -n "$ns" link set veth0 up
}

# render TEMPLATE OUT PRIO SELF PEER ROUTER
render() {
	sed -e "s/@PRIO@/$3/g" -e "s/@SELF@/$4/g" -e "s/@PEER@/$5/g" \
		-e "s/@ROUTER@/$6/g" -e "s/@INSTANCE@/${run_id}_$6/g" "$1" >"$2"
}

# start_keepalived NS CONF TAG: prints nothing, appends the pid to pids.
start_keepalived() {
	local ns=$1 conf=$2 tag=$3
	ip netns exec "$ns" keepalived -n -l -D -P -f "$conf" \
		-p "$work/$tag.pid" -r "$work/$tag.vrrp.pid" -c "$work/$tag.check.pid" \
		>"$work/$tag.log" 2>&1 &
	pids+=("$!")
	last_pid=$!
}

stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

filter='ip proto 112 or ip proto 51 or ip6 proto 112 or ip6 proto 51 or arp'

# capture NAME SECONDS_MASTER [LINKTYPE]
#   LINKTYPE empty: Ethernet on veth0; LINUX_SLL / LINUX_SLL2: "-i any".
capture() {
	local name=$1 hold=$2 linktype=${3:-} out=${4:-$1}
	local conf="$here/configs/$name.conf"
	local nsa="${run_id}-${out}-a" nsb="${run_id}-${out}-b"
	echo "capture: $out (config $name.conf${linktype:+, $linktype})"
	ip netns add "$nsa"
	namespaces+=("$nsa")
	ip netns add "$nsb"
	namespaces+=("$nsb")
	ip link add veth0 netns "$nsa" type veth peer name veth0 netns "$nsb"
	node_setup "$nsa" 192.168.77.1 fd00:77::1
	node_setup "$nsb" 192.168.77.2 fd00:77::2
	render "$conf" "$work/$out-a.conf" 150 192.168.77.1 192.168.77.2 "$out-a"
	render "$conf" "$work/$out-b.conf" 100 192.168.77.2 192.168.77.1 "$out-b"

	local ifargs=(-i veth0)
	[ -n "$linktype" ] && ifargs=(-i any -y "$linktype")
	ip netns exec "$nsa" tcpdump -Z root -U -n -s 512 "${ifargs[@]}" \
		-w "$work/$out.pcap" "$filter" 2>"$work/$out.tcpdump.log" &
	local tcpdump_pid=$!
	pids+=("$tcpdump_pid")
	sleep 1

	start_keepalived "$nsa" "$work/$out-a.conf" "$out-a"
	local pa=$last_pid
	start_keepalived "$nsb" "$work/$out-b.conf" "$out-b"
	local pb=$last_pid
	sleep "$hold"      # a wins the election and advertises
	stop_pid "$pa"     # graceful stop: priority 0, b takes over after skew time
	sleep 3
	stop_pid "$pb"     # b's priority-0 advert ends the capture
	sleep 1
	kill -INT "$tcpdump_pid" 2>/dev/null || true
	wait "$tcpdump_pid" 2>/dev/null || true
	cp "$work/$out.pcap" "$here/$out.pcap"
	chmod 0644 "$here/$out.pcap"
	ip netns del "$nsa"
	ip netns del "$nsb"
	echo "  $(tcpdump -n -r "$here/$out.pcap" 2>/dev/null | grep -cE 'VRRP|AH') VRRP/AH packets"
}

selected=("$@")
# pick NAME: true when NAME was asked for, or nothing was.
pick() {
	[ "${#selected[@]}" -eq 0 ] && return 0
	local n
	for n in "${selected[@]}"; do [ "$n" = "$1" ] && return 0; done
	return 1
}

pick v2-none && capture v2-none 7
pick v2-none-sll && capture v2-none 6 LINUX_SLL v2-none-sll
pick v2-pass && capture v2-pass 6
pick v2-pass-multivip && capture v2-pass-multivip 6
pick v2-ah && capture v2-ah 6
pick v2-ah-unicast && capture v2-ah-unicast 6
pick v2-ah-multivip && capture v2-ah-multivip 6
pick v3-ipv4 && capture v3-ipv4 4
pick v3-ipv4-multivip && capture v3-ipv4-multivip 3 LINUX_SLL2
pick v3-ipv4-unicast && capture v3-ipv4-unicast 4
pick v3-ipv6 && capture v3-ipv6 4

# keepalived 2.2.7 checksums VRRPv3 over IPv4 with the pseudo-header; derive
# the message-only variant some routers send from the real captures.
for f in v3-ipv4 v3-ipv4-multivip; do
	if [ -f "$here/$f.pcap" ] && { pick "$f" || pick "$f-msgsum"; }; then
		(cd "$repo" && go run ./testdata/pcaps/msgsum "$here/$f.pcap" "$here/$f-msgsum.pcap")
		echo "derived: $f-msgsum.pcap"
	fi
done
