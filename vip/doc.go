// Package vip owns the virtual IP addresses of a VRRP node: it adds and
// removes them through rtnetlink, announces them to the LAN after a takeover,
// optionally moves them onto a virtual-MAC interface, and follows the carrier
// of the tracked interfaces.
//
// # Standards
//
//   - Gratuitous ARP: RFC 826 (the ARP packet) used as an announcement in the
//     sense of RFC 5227 section 2.3, as RFC 9568 section 6.4 asks of a
//     router becoming Active. RFC 9568 names the request form; some hosts
//     only update their caches from one form, so every round sends both a
//     request and a reply.
//   - Unsolicited neighbour advertisement: RFC 4861 section 7.2.6, as RFC 9568
//     section 6.4 requires for IPv6 virtual addresses.
//   - Virtual router MAC: RFC 9568 section 7.3, 00-00-5E-00-01-{VRID} for IPv4
//     and 00-00-5E-00-02-{VRID} for IPv6, carried by a macvlan interface.
//
// # Gratuitous ARP frame (60 bytes, Ethernet II padded to ETH_ZLEN)
//
//	offset len  field
//	 0      6   destination MAC  ff:ff:ff:ff:ff:ff
//	 6      6   source MAC       our MAC (the virtual MAC with a vmac)
//	12      2   EtherType        0x0806 (ARP)
//	14      2   hardware type    0x0001 (Ethernet)
//	16      2   protocol type    0x0800 (IPv4)
//	18      1   hardware len     6
//	19      1   protocol len     4
//	20      2   operation        1 (request) or 2 (reply)
//	22      6   sender MAC       our MAC
//	28      4   sender IP        the VIP
//	32      6   target MAC       00:00:00:00:00:00 (request, RFC 5227 2.3)
//	                             ff:ff:ff:ff:ff:ff (reply)
//	38      4   target IP        the VIP (sender IP == target IP: gratuitous)
//	42     18   padding          zero
//
// # Unsolicited neighbour advertisement (ICMPv6 message, 32 bytes)
//
// Sent on an ICMPv6 raw socket bound to the VIP's interface, so the kernel
// writes the IPv6 header and the checksum. IPv6 header: source the VIP,
// destination ff02::1 (all nodes), hop limit 255 (receivers drop anything
// else, RFC 4861 section 7.1.2).
//
//	offset len  field
//	 0      1   type             136 (neighbour advertisement)
//	 1      1   code             0
//	 2      2   checksum         0 here, filled in by the kernel
//	 4      1   flags            R (0x80) when the node forwards, S (0x40)
//	                             clear (unsolicited), O (0x20) set (override)
//	 5      3   reserved         0
//	 8     16   target address   the VIP
//	24      1   option type      2 (target link-layer address)
//	25      1   option length    1 (units of 8 bytes)
//	26      6   link-layer addr  our MAC (the virtual MAC with a vmac)
//
// # Recognising our addresses
//
// The kernel offers IFA_PROTO (Linux 5.18) to tag an address with its owner,
// but github.com/vishvananda/netlink v1.3 cannot set or read it. IPv4 VIPs
// therefore carry the label "<ifname>:<LabelSuffix>" (default "<ifname>:vip")
// when it fits in the 15 bytes the kernel allows; ReleaseStale removes every
// IPv4 address with that label, configured or not. IPv6 addresses have no
// labels: ReleaseStale recognises them (and unlabelled IPv4 VIPs) only by the
// configured VIP list. Virtual-MAC interfaces are recognised by their name
// ("vmac4.<vrid>", "vmac6.<vrid>") and their RFC 9568 MAC.
//
// IPv6 VIPs are added with IFA_F_NODAD: the address must be usable (as the
// source of the advertisement) the moment we become master, and a duplicate
// address detection would report the peer that just handed it over. The
// prefix route is kept unless Config.NoPrefixRoute is set (IFA_F_NOPREFIXROUTE),
// so a VIP on an otherwise unaddressed interface still routes its subnet.
//
// # Layout
//
// The pure parts (frame builders, the announcement Schedule, the carrier
// table of the link monitor) have no I/O. Manager and Monitor are the
// adapters: netlink through a caller-supplied *netlink.Handle (the caller
// chooses the namespace), sockets opened through Config.Enter.
package vip
