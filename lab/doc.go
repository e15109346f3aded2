// Package lab builds throw-away network labs out of Linux network
// namespaces, veth pairs and bridges, for the integration tests, the demo
// and the benchmarks of muros-had.
//
// Standards: none on the wire of its own; it drives iproute2 (ip-netns(8),
// ip-link(8) veth and bridge), sysctl(8) and nft(8) inside the namespaces
// it creates, and speaks ICMP echo (RFC 792, RFC 4443 section 4) for Ping.
//
// Safety rules, enforced by construction:
//   - Every namespace is created here, named NamePrefix+"<tag>-<owner
//     pid>-<random hex>", and every helper acts inside one of them (ip -n,
//     ip netns exec, or a thread switched with Do). Nothing touches the
//     root namespace: no addresses, no sysctls, no daemons.
//   - Close kills the processes a namespace holds (SIGTERM, then SIGKILL)
//     and deletes it; it is idempotent. NewNetnsT registers Close with
//     t.Cleanup, so a failing test still tears down. Reap deletes the
//     namespaces of lab processes that died without cleaning up (SIGKILL,
//     crash), recognised by the owner pid in the name.
//   - Require fails (never skips) a test that is not root or lacks ip,
//     nft, conntrack, tcpdump, keepalived, conntrackd or sysctl.
package lab
