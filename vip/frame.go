package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// ARPOp is the ARP operation code (RFC 826).
type ARPOp uint16

// ARP operations sent as gratuitous announcements.
const (
	ARPRequest ARPOp = 1
	ARPReply   ARPOp = 2
)

// Frame sizes.
const (
	// ARPFrameLen is a gratuitous ARP frame padded to the Ethernet minimum
	// (ETH_ZLEN) so no driver has to pad it.
	ARPFrameLen = 60
	// NALen is an unsolicited neighbour advertisement with one target
	// link-layer address option.
	NALen = 32
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	arpHWEthernet = 1
	icmpv6TypeNA  = 136
	ndOptTargetLL = 2

	naFlagRouter    = 0x80
	naFlagSolicited = 0x40
	naFlagOverride  = 0x20
)

// Errors returned by the frame builders.
var (
	ErrBadMAC      = errors.New("vip: MAC address is not 6 bytes")
	ErrNotIPv4     = errors.New("vip: address is not IPv4")
	ErrNotIPv6     = errors.New("vip: address is not IPv6")
	ErrBadARPOp    = errors.New("vip: ARP operation is neither request nor reply")
	ErrBadNATarget = errors.New("vip: neighbour advertisement target is multicast or unspecified")
)

// VirtualMAC returns the RFC 9568 section 7.3 virtual router MAC for vrid:
// 00:00:5e:00:01:vrid for IPv4, 00:00:5e:00:02:vrid for IPv6.
func VirtualMAC(vrid uint8, ipv6 bool) net.HardwareAddr {
	fam := byte(0x01)
	if ipv6 {
		fam = 0x02
	}
	return net.HardwareAddr{0x00, 0x00, 0x5e, 0x00, fam, vrid}
}

// isVirtualMAC reports whether mac is in the RFC 9568 virtual router range.
func isVirtualMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0] == 0 && mac[1] == 0 && mac[2] == 0x5e && mac[3] == 0 &&
		(mac[4] == 1 || mac[4] == 2)
}

// AppendGratuitousARP appends a 60-byte gratuitous ARP frame announcing that
// ip is at mac (layout in the package doc) and returns the extended slice.
// It does not allocate when b has ARPFrameLen bytes of spare capacity.
func AppendGratuitousARP(b []byte, op ARPOp, mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 {
		return b, fmt.Errorf("gratuitous ARP for %s: %w", ip, ErrBadMAC)
	}
	if !ip.Is4() {
		return b, fmt.Errorf("gratuitous ARP for %s: %w", ip, ErrNotIPv4)
	}
	if op != ARPRequest && op != ARPReply {
		return b, fmt.Errorf("gratuitous ARP for %s: operation %d: %w", ip, op, ErrBadARPOp)
	}
	ip4 := ip.As4()
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	b = append(b, mac...)
	b = binary.BigEndian.AppendUint16(b, etherTypeARP)
	b = binary.BigEndian.AppendUint16(b, arpHWEthernet)
	b = binary.BigEndian.AppendUint16(b, etherTypeIPv4)
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, uint16(op))
	b = append(b, mac...)
	b = append(b, ip4[:]...)
	if op == ARPRequest {
		b = append(b, 0, 0, 0, 0, 0, 0)
	} else {
		b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	}
	b = append(b, ip4[:]...)
	var pad [ARPFrameLen - 42]byte
	return append(b, pad[:]...), nil
}

// AppendUnsolicitedNA appends an unsolicited neighbour advertisement for
// target at mac (RFC 4861 section 7.2.6; layout in the package doc) with the
// override flag set, the solicited flag clear and the router flag set when
// router is true. The checksum is left zero: the kernel computes it on
// ICMPv6 raw sockets. It does not allocate when b has NALen bytes of spare
// capacity.
func AppendUnsolicitedNA(b []byte, target netip.Addr, mac net.HardwareAddr, router bool) ([]byte, error) {
	if len(mac) != 6 {
		return b, fmt.Errorf("neighbour advertisement for %s: %w", target, ErrBadMAC)
	}
	if !target.Is6() || target.Is4In6() {
		return b, fmt.Errorf("neighbour advertisement for %s: %w", target, ErrNotIPv6)
	}
	if target.IsMulticast() || target.IsUnspecified() {
		return b, fmt.Errorf("neighbour advertisement for %s: %w", target, ErrBadNATarget)
	}
	flags := byte(naFlagOverride)
	if router {
		flags |= naFlagRouter
	}
	t := target.As16()
	b = append(b, icmpv6TypeNA, 0, 0, 0, flags, 0, 0, 0)
	b = append(b, t[:]...)
	b = append(b, ndOptTargetLL, 1)
	return append(b, mac...), nil
}
