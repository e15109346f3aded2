package health

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Ping passes when Address answers an ICMP echo (RFC 792 / RFC 4443 types
// 8/0 and 128/129) sent through Interface: the socket is bound to the
// device (SO_BINDTODEVICE), so the echo leaves by that interface whatever
// the routing table prefers, and only answers arriving on it count. It
// needs CAP_NET_RAW, which the daemon has.
type Ping struct {
	Address   netip.Addr
	Interface string
}

// Probe sends one echo and waits for its reply until the context's
// deadline.
func (p Ping) Probe(ctx context.Context) error {
	network, proto := "ip4:icmp", 1
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if p.Address.Is6() {
		network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, p.Interface)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, network, "")
	if err != nil {
		return fmt.Errorf("icmp socket on %s: %w", p.Interface, err)
	}
	defer pc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = pc.SetDeadline(dl)
	}
	// The socket is closed when the context ends without a deadline.
	stop := context.AfterFunc(ctx, func() { _ = pc.SetDeadline(time.Now()) })
	defer stop()

	var tok [8]byte
	_, _ = rand.Read(tok[:])
	id := int(binary.BigEndian.Uint16(tok[:2]))
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: 1, Data: tok[:]}}
	b, err := msg.Marshal(nil) // ICMPv6: the kernel fills the checksum
	if err != nil {
		return fmt.Errorf("icmp echo: %w", err)
	}
	dst := &net.IPAddr{IP: p.Address.AsSlice(), Zone: p.Address.Zone()}
	if _, err := pc.WriteTo(b, dst); err != nil {
		return fmt.Errorf("echo to %s via %s: %w", p.Address, p.Interface, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, syscall.ETIMEDOUT) || isTimeout(err) {
				return ErrTimeout
			}
			return fmt.Errorf("reading echo replies: %w", err)
		}
		src, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if ok && src.Unmap() == p.Address.WithZone("") && IsEchoReply(buf[:n], proto, id, tok[:]) {
			return nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IsEchoReply reports whether b (an ICMP message as a raw socket returns
// it, IP header already removed) is the echo reply to our request: type
// echo reply of the protocol (1 ICMP, 58 ICMPv6), our identifier and the
// token we sent as data. Anything else (another process's echoes,
// unreachables, garbage) is not.
func IsEchoReply(b []byte, proto, id int, token []byte) bool {
	m, err := icmp.ParseMessage(proto, b)
	if err != nil {
		return false
	}
	if m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply {
		return false
	}
	e, ok := m.Body.(*icmp.Echo)
	return ok && e.ID == id && bytes.Equal(e.Data, token)
}
