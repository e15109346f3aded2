package vip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// announcement is one VIP's prebuilt frames and the sockets they go out on.
type announcement struct {
	vip     VIP
	ifName  string
	ifIndex int
	mac     net.HardwareAddr
	frames  [][]byte // ARP request and reply, or one NA
	arpDst  *packet.Addr
	arp     *packet.Conn
	icmp    *ipv6.PacketConn
	cm      *ipv6.ControlMessage
	dst     *net.IPAddr
}

// ifaceConns are the sockets of one interface.
type ifaceConns struct {
	index int
	arp   *packet.Conn
	icmp  *ipv6.PacketConn
}

// announcementFor builds v's frames for link (the interface carrying it).
func (m *Manager) announcementFor(v VIP, link netlink.Link) (announcement, error) {
	attrs := link.Attrs()
	a := announcement{vip: v, ifName: attrs.Name, ifIndex: attrs.Index, mac: attrs.HardwareAddr}
	ip := v.Prefix.Addr()
	if ip.Is4() {
		for _, op := range []ARPOp{ARPRequest, ARPReply} {
			f, err := AppendGratuitousARP(make([]byte, 0, ARPFrameLen), op, a.mac, ip)
			if err != nil {
				return a, fmt.Errorf("vip: announce %s on %s: %w", v, attrs.Name, err)
			}
			a.frames = append(a.frames, f)
		}
		a.arpDst = &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		return a, nil
	}
	f, err := AppendUnsolicitedNA(make([]byte, 0, NALen), ip, a.mac, m.cfg.Router)
	if err != nil {
		return a, fmt.Errorf("vip: announce %s on %s: %w", v, attrs.Name, err)
	}
	a.frames = [][]byte{f}
	a.cm = &ipv6.ControlMessage{HopLimit: 255, Src: ip.AsSlice(), IfIndex: attrs.Index}
	a.dst = &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: attrs.Name}
	return a, nil
}

// openConns opens, inside the handle's namespace, the sockets every
// announcement needs (one per interface and kind) and returns the
// announcements that have them. Sockets still open from an earlier claim
// are reused; those of interfaces no announcement uses any more are closed.
func (m *Manager) openConns(anns []announcement) ([]announcement, error) {
	var errs []error
	byIndex := make(map[int]*ifaceConns, len(m.conns))
	for _, c := range m.conns {
		byIndex[c.index] = c
	}
	m.conns = m.conns[:0]
	used := make(map[int]bool, len(anns))
	for _, a := range anns {
		used[a.ifIndex] = true
	}
	for idx, c := range byIndex {
		if used[idx] {
			m.conns = append(m.conns, c)
			continue
		}
		c.close()
		delete(byIndex, idx)
	}
	err := m.cfg.Enter(func() error {
		for i := range anns {
			a := &anns[i]
			c := byIndex[a.ifIndex]
			if c == nil {
				c = &ifaceConns{index: a.ifIndex}
				byIndex[a.ifIndex] = c
				m.conns = append(m.conns, c)
			}
			var err error
			if a.vip.Prefix.Addr().Is4() && c.arp == nil {
				c.arp, err = listenARP(a.ifIndex)
			} else if a.vip.Prefix.Addr().Is6() && c.icmp == nil {
				c.icmp, err = listenICMPv6(a.ifName)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("vip: sockets for %s: %w", a.vip, err))
			}
			// Only the socket of the VIP's family: round sends by family.
			if a.vip.Prefix.Addr().Is4() {
				a.arp = c.arp
			} else {
				a.icmp = c.icmp
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vip: enter namespace for sockets: %w", err)
	}
	kept := anns[:0]
	for _, a := range anns {
		if (a.vip.Prefix.Addr().Is4() && a.arp != nil) || (a.vip.Prefix.Addr().Is6() && a.icmp != nil) {
			kept = append(kept, a)
		}
	}
	return kept, errors.Join(errs...)
}

// listenARP opens an AF_PACKET raw socket on the interface for sending
// whole Ethernet frames. A filter that accepts nothing keeps ARP traffic
// from queueing on a socket nobody reads.
func listenARP(ifIndex int) (*packet.Conn, error) {
	drop, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return nil, fmt.Errorf("assemble drop filter: %w", err)
	}
	c, err := packet.Listen(&net.Interface{Index: ifIndex}, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: drop})
	if err != nil {
		return nil, fmt.Errorf("packet socket on ifindex %d: %w", ifIndex, err)
	}
	return c, nil
}

// listenICMPv6 opens an ICMPv6 raw socket bound to the interface, with
// multicast hop limit 255 and every incoming type filtered out.
func listenICMPv6(ifName string) (*ipv6.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifName)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("ICMPv6 socket on %s: %w", ifName, err)
	}
	p := ipv6.NewPacketConn(pc)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	if err := p.SetICMPFilter(&f); err != nil {
		pc.Close()
		return nil, fmt.Errorf("ICMPv6 filter on %s: %w", ifName, err)
	}
	if err := p.SetMulticastHopLimit(255); err != nil {
		pc.Close()
		return nil, fmt.Errorf("ICMPv6 hop limit on %s: %w", ifName, err)
	}
	if err := p.SetMulticastLoopback(false); err != nil {
		pc.Close()
		return nil, fmt.Errorf("ICMPv6 loopback on %s: %w", ifName, err)
	}
	return p, nil
}

func (m *Manager) closeConns() {
	for _, c := range m.conns {
		c.close()
	}
	m.conns = nil
}

func (c *ifaceConns) close() {
	if c.arp != nil {
		c.arp.Close()
	}
	if c.icmp != nil {
		c.icmp.Close()
	}
}

// round sends one announcement per VIP. A failed send is counted and
// logged; the other VIPs are still announced.
func (m *Manager) round() {
	m.rounds.Add(1)
	for i := range m.anns {
		a := &m.anns[i]
		if a.vip.Prefix.Addr().Is4() {
			for _, f := range a.frames {
				if _, err := a.arp.WriteTo(f, a.arpDst); err != nil {
					m.failures[ReasonARPWrite].Add(1)
					m.log.Warn("gratuitous ARP not sent", "vip", a.vip.Prefix, "interface", a.ifName, "err", err)
					continue
				}
				m.arpFrames.Add(1)
			}
			continue
		}
		if _, err := a.icmp.WriteTo(a.frames[0], a.cm, a.dst); err != nil {
			m.failures[ReasonNAWrite].Add(1)
			m.log.Warn("neighbour advertisement not sent", "vip", a.vip.Prefix, "interface", a.ifName, "err", err)
			continue
		}
		m.nas.Add(1)
	}
}
