// Package vrrpconn is the thin socket adapter between the VRRP core
// (package vrrp) and the kernel: raw IP sockets for protocol 112 (VRRP,
// RFC 9568 section 5.1) and 51 (IPsec AH, RFC 4302, which wraps VRRP when
// authentication is on), bound to the sync interface.
//
// IPv4: the sockets use IP_HDRINCL, so sent packets carry the header the codec
// built (keepalived-compatible AH signs the IPv4 header) and received packets
// arrive with their IPv4 header, from which TTL and destination are read.
// IPv6: the kernel builds and strips the header; the hop limit and the
// destination come from IPV6_HOPLIMIT / IPV6_PKTINFO control messages and the
// source address is pinned with IPV6_PKTINFO on send.
//
// Both families join the VRRP group (224.0.0.18, ff02::12) on the interface
// only, send with TTL / hop limit 255 and turn multicast loopback off, so a
// node never hears its own adverts from the kernel. Every check on content
// (TTL 255, checksum, authentication) is left to the codec: this package only
// moves bytes. WaitSource finds the address a family's socket sends from.
package vrrpconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// IP protocol numbers carried on the sync link.
const (
	ProtoVRRP = 112
	ProtoAH   = 51
)

// Group returns the VRRP multicast group of the connection's family
// (RFC 9568 sections 5.1.1.2 and 5.1.2.2): 224.0.0.18 or ff02::12.
func (c *Conn) Group() netip.Addr { return group(c.v6) }

func group(v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 0x12})
	}
	return netip.AddrFrom4([4]byte{224, 0, 0, 18})
}

// Packet is one datagram read from the link.
type Packet struct {
	Proto    int        // ProtoVRRP or ProtoAH
	Src, Dst netip.Addr // from the IPv4 header or the IPv6 socket address / pktinfo
	HopLimit int        // TTL (IPv4) or hop limit (IPv6); -1 when the kernel did not say
	// Data is the whole IPv4 packet (header included) for IPv4, and the IPv6
	// payload (VRRP or AH, header stripped by the kernel) for IPv6. It aliases
	// the buffer passed to Read.
	Data []byte
}

// Conn reads and writes VRRP and AH datagrams on one interface and family.
type Conn struct {
	v6      bool
	ifindex int
	src     netip.Addr // our source address on the interface
	socks   [2]*socket.Conn
	protos  [2]int
	oob     []byte // IPv6: the IPV6_PKTINFO control message of every send
}

// Open opens raw sockets for VRRP and AH on ifname. src is the address the
// node sends from (its primary IPv4 address on the interface, or its IPv6
// link-local address); it also selects the family.
func Open(ifname string, src netip.Addr) (*Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vrrpconn: interface %q: %w", ifname, err)
	}
	c := &Conn{v6: src.Is6() && !src.Is4In6(), ifindex: ifi.Index, src: src.Unmap(), protos: [2]int{ProtoVRRP, ProtoAH}}
	if c.v6 {
		c.oob = pktinfo(c.src, c.ifindex)
	}
	for i, proto := range c.protos {
		s, err := c.open(ifname, proto)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.socks[i] = s
	}
	return c, nil
}

func (c *Conn) open(ifname string, proto int) (*socket.Conn, error) {
	family := unix.AF_INET
	if c.v6 {
		family = unix.AF_INET6
	}
	s, err := socket.Socket(family, unix.SOCK_RAW, proto, fmt.Sprintf("vrrp-%s-%d", ifname, proto), nil)
	if err != nil {
		return nil, fmt.Errorf("vrrpconn: raw socket proto %d: %w", proto, err)
	}
	fail := func(what string, err error) (*socket.Conn, error) {
		s.Close()
		return nil, fmt.Errorf("vrrpconn: %s on %s proto %d: %w", what, ifname, proto, err)
	}
	if err := s.SetsockoptString(unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return fail("SO_BINDTODEVICE", err)
	}
	// A takeover must not be lost to a full receive queue under a storm.
	_ = s.SetReadBuffer(1 << 20)
	if c.v6 {
		opts := []struct {
			name string
			opt  int
			val  int
		}{
			{"IPV6_MULTICAST_LOOP", unix.IPV6_MULTICAST_LOOP, 0},
			{"IPV6_MULTICAST_HOPS", unix.IPV6_MULTICAST_HOPS, 255},
			{"IPV6_UNICAST_HOPS", unix.IPV6_UNICAST_HOPS, 255},
			{"IPV6_MULTICAST_IF", unix.IPV6_MULTICAST_IF, c.ifindex},
			{"IPV6_RECVHOPLIMIT", unix.IPV6_RECVHOPLIMIT, 1},
			{"IPV6_RECVPKTINFO", unix.IPV6_RECVPKTINFO, 1},
		}
		for _, o := range opts {
			if err := s.SetsockoptInt(unix.IPPROTO_IPV6, o.opt, o.val); err != nil {
				return fail(o.name, err)
			}
		}
		mreq := make([]byte, 20)
		g := group(true).As16()
		copy(mreq, g[:])
		binary.NativeEndian.PutUint32(mreq[16:], uint32(c.ifindex))
		if err := s.SetsockoptBytes(unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq); err != nil {
			return fail("IPV6_JOIN_GROUP", err)
		}
		return s, nil
	}
	opts := []struct {
		name string
		opt  int
		val  int
	}{
		{"IP_HDRINCL", unix.IP_HDRINCL, 1},
		{"IP_MULTICAST_LOOP", unix.IP_MULTICAST_LOOP, 0},
		{"IP_MULTICAST_TTL", unix.IP_MULTICAST_TTL, 255},
	}
	for _, o := range opts {
		if err := s.SetsockoptInt(unix.IPPROTO_IP, o.opt, o.val); err != nil {
			return fail(o.name, err)
		}
	}
	mreqn := ipMreqn(group(false), c.src, c.ifindex)
	if err := s.SetsockoptBytes(unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreqn); err != nil {
		return fail("IP_MULTICAST_IF", err)
	}
	if err := s.SetsockoptBytes(unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreqn); err != nil {
		return fail("IP_ADD_MEMBERSHIP", err)
	}
	return s, nil
}

// ipMreqn encodes struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}.
func ipMreqn(group, local netip.Addr, ifindex int) []byte {
	b := make([]byte, 12)
	g, l := group.As4(), local.As4()
	copy(b[0:4], g[:])
	copy(b[4:8], l[:])
	binary.NativeEndian.PutUint32(b[8:], uint32(ifindex))
	return b
}

// Source is the address the node sends from.
func (c *Conn) Source() netip.Addr { return c.src }

// IPv6 reports whether the connection carries IPv6.
func (c *Conn) IPv6() bool { return c.v6 }

// Close closes both sockets; a blocked Read returns an error.
func (c *Conn) Close() error {
	var errs []error
	for _, s := range c.socks {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// Read reads one datagram of protocol proto (ProtoVRRP or ProtoAH) into b.
// Run one reader per protocol. oob must be at least 128 bytes for IPv6.
func (c *Conn) Read(ctx context.Context, proto int, b, oob []byte) (Packet, error) {
	s := c.sock(proto)
	if s == nil {
		return Packet{}, fmt.Errorf("vrrpconn: no socket for protocol %d", proto)
	}
	n, oobn, _, from, err := s.Recvmsg(ctx, b, oob, 0)
	if err != nil {
		return Packet{}, fmt.Errorf("vrrpconn: receive: %w", err)
	}
	p := Packet{Proto: proto, Data: b[:n], HopLimit: -1}
	if !c.v6 {
		// The IPv4 header is in Data: the codec reads src, dst and TTL from it.
		if n >= 20 {
			p.Src = netip.AddrFrom4([4]byte(b[12:16]))
			p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
			p.HopLimit = int(b[8])
		}
		return p, nil
	}
	if sa, ok := from.(*unix.SockaddrInet6); ok {
		p.Src = netip.AddrFrom16(sa.Addr)
	}
	parseIPv6Cmsgs(oob[:oobn], &p)
	return p, nil
}

// parseIPv6Cmsgs reads IPV6_HOPLIMIT and IPV6_PKTINFO. The control message
// layout (header size, alignment) is the platform's, so it goes through
// x/sys/unix rather than fixed offsets.
func parseIPv6Cmsgs(oob []byte, p *Packet) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if m.Header.Level != unix.IPPROTO_IPV6 {
			continue
		}
		switch m.Header.Type {
		case unix.IPV6_HOPLIMIT:
			if len(m.Data) >= 4 {
				p.HopLimit = int(int32(binary.NativeEndian.Uint32(m.Data)))
			}
		case unix.IPV6_PKTINFO:
			if len(m.Data) >= 16 {
				p.Dst = netip.AddrFrom16([16]byte(m.Data[:16]))
			}
		}
	}
}

func (c *Conn) sock(proto int) *socket.Conn {
	for i, p := range c.protos {
		if p == proto {
			return c.socks[i]
		}
	}
	return nil
}

// Write sends one datagram of protocol proto to dst. For IPv4, pkt is the
// whole IPv4 packet (the kernel fills only what the header leaves zero: the
// checksum, and the identification when zero). For IPv6 it is the payload;
// the kernel builds the header from our source address and hop limit 255.
func (c *Conn) Write(ctx context.Context, proto int, pkt []byte, dst netip.Addr) error {
	s := c.sock(proto)
	if s == nil {
		return fmt.Errorf("vrrpconn: no socket for protocol %d", proto)
	}
	if !c.v6 {
		to := &unix.SockaddrInet4{Addr: dst.As4()}
		if _, err := s.Sendmsg(ctx, pkt, nil, to, 0); err != nil {
			return fmt.Errorf("vrrpconn: send to %s: %w", dst, err)
		}
		return nil
	}
	to := &unix.SockaddrInet6{Addr: dst.As16(), ZoneId: uint32(c.ifindex)}
	if _, err := s.Sendmsg(ctx, pkt, c.oob, to, 0); err != nil {
		return fmt.Errorf("vrrpconn: send to %s: %w", dst, err)
	}
	return nil
}

// pktinfo pins the IPv6 source address and interface of a send: the AH ICV
// and the VRRP checksum cover the source, so the kernel may not pick another.
// Built once at Open; the layout is the platform's (unix.Cmsghdr).
func pktinfo(src netip.Addr, ifindex int) []byte {
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_IPV6
	h.Type = unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	info.Addr = src.As16()
	info.Ifindex = uint32(ifindex)
	return b
}
