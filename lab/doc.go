// Package lab builds throw-away network labs out of Linux network
// namespaces, veth pairs and bridges, for the integration tests, the demo
// and the benchmarks of muros-had.
//
// Standards: it drives iproute2 (ip-netns(8), ip-link(8) veth and bridge),
// sysctl(8) and nft(8) inside namespaces it created, and speaks ICMP echo
// (RFC 792; RFC 4443 section 4.1/4.2) for Ping.
//
// # Safety
//
//   - Every namespace is created here, named NamePrefix+"<tag>-<owner
//     pid>-<random hex>", and every helper acts inside one of them (ip -n,
//     ip netns exec, or a thread switched with Do). Nothing touches the
//     root namespace: no addresses, no sysctls, no daemons.
//   - Close kills the processes a namespace holds (SIGTERM, then SIGKILL)
//     and deletes it; it is idempotent. NewNetnsT and NewPairT register
//     Close with t.Cleanup, so a failing test still tears down. Reap (called
//     by NewPair) deletes namespaces of lab processes that died without
//     cleaning up, recognised by the owner pid in the name. CloseOnSignal
//     covers Ctrl-C for the demo and benchmarks.
//   - Require fails (never skips) a test that is not root or lacks ip,
//     nft, conntrack, tcpdump, keepalived, conntrackd or sysctl.
//
// # The pair (NewPair)
//
//	                     switch namespace (Switch)
//	               +-------------------------------------+
//	client eth0 ---|lcli           brlan           lfw1|--- lan0 FW1
//	               |                               lfw2|--- lan0 FW2
//	server eth0 ---|wsrv           brwan           wfw1|--- wan0 FW1
//	               |                               wfw2|--- wan0 FW2
//	               +-------------------------------------+
//	                     FW1 sync0 ============ sync0 FW2
//	                       (direct veth: the sync link)
//
// Names inside the switch (lcli, lfw1, ...) are the switch-side ends of
// the veth pairs; taking one down cuts that host off from the bridge.
// Every firewall has lan0 and wan0 (ports of the two bridges) and sync0.
// The client and the server have eth0 only. Bridges: STP off, forward
// delay 0, multicast snooping off (VRRP adverts flood).
//
//	network   prefix              client/server   fw1            fw2            VIP
//	LAN       10.10.0.0/24        client .100     .2             .3             .1
//	WAN       203.0.113.0/24      server .100     .2             .3             .1
//	sync      192.168.255.0/30    -               .1             .2             -
//	LAN v6    2001:db8:10::/64    client ::100    ::2            ::3            ::1
//	WAN v6    2001:db8:203::/64   server ::100    ::2            ::3            ::1
//
// IPv6 rows exist with Options.IPv6 only (otherwise IPv6 is disabled in
// every namespace); DAD is off and addresses survive link down. The
// client's default route is the LAN VIP, the server's the WAN VIP, so
// traffic both ways crosses whichever firewall owns the VIPs, and hosts
// must learn the owner's MAC from gratuitous ARP / unsolicited NA (host
// neighbour settings are the kernel defaults). Nobody holds the VIPs at
// start: that is the job of the VRRP under test.
//
// Firewalls forward (IPv4, and IPv6 with Options.IPv6) and have
// net.netfilter.nf_conntrack_tcp_loose = 0 unless Options.TCPLoose: a
// firewall without the conntrack entry then drops mid-stream TCP as
// invalid, so a takeover without state sync is visible. The nftables
// table "inet muros_lab" (FirewallRuleset) holds:
//
//	forward      policy drop: jump forward_extra; ct state
//	             established,related accept; ct state invalid drop; new
//	             from lan0 accept; the rest counted (fwd_dropped)
//	input        policy accept: jump input_extra; VRRP counted (in_vrrp)
//	output       policy accept: jump output_extra
//	sync_loss    hook output: SyncLoss's `numgen random mod 100 < N` drop
//	postrouting  nat: with Options.SNAT, lan -> WAN VIP
//
// Tests add rules to the *_extra chains with Pair.Nft and read the named
// counters with Pair.Counter.
//
// # Probers
//
// ProbeUDP sends a numbered 20-byte datagram (format at ProbeLen) every
// millisecond from a socket opened inside the client to a UDP echo server
// goroutine in the server namespace and reports the largest gap between
// replies, losses, duplicates and reordering. StartTCPStream keeps a paced
// TCP flow through the firewalls to an echo server and reports the longest
// stall, resets and corruption. Both are bounded (Duration), stop their
// goroutines before returning, and measure; they assert nothing.
package lab
