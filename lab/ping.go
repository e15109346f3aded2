package lab

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ping sends one ICMP (or ICMPv6) echo request from the namespace to dst
// and waits up to timeout for the matching reply. The Debian image has no
// ping binary; this needs none.
func (n *Netns) Ping(dst netip.Addr, timeout time.Duration) error {
	network, proto := "ip4:icmp", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() && !dst.Is4In6() {
		network, proto = "ip6:ipv6-icmp", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var conn *icmp.PacketConn
	if err := n.Do(func() error {
		c, err := icmp.ListenPacket(network, "")
		conn = c
		return err
	}); err != nil {
		return fmt.Errorf("lab: ping %s from %s: %w", dst, n.Name, err)
	}
	defer conn.Close()

	var idb [4]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return fmt.Errorf("lab: ping id: %w", err)
	}
	id, seq := int(binary.BigEndian.Uint16(idb[:2])), int(binary.BigEndian.Uint16(idb[2:]))
	payload := []byte("muros-had lab ping")
	msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
	wire, err := msg.Marshal(nil) // the kernel fills the ICMPv6 checksum
	if err != nil {
		return fmt.Errorf("lab: ping marshal: %w", err)
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("lab: ping deadline: %w", err)
	}
	if _, err := conn.WriteTo(wire, &net.IPAddr{IP: net.IP(dst.Unmap().AsSlice())}); err != nil {
		return fmt.Errorf("lab: ping %s from %s: %w", dst, n.Name, err)
	}
	buf := make([]byte, 1500)
	for {
		m, from, err := conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("lab: ping %s from %s: no reply in %v: %w", dst, n.Name, timeout, err)
			}
			return fmt.Errorf("lab: ping %s from %s: %w", dst, n.Name, err)
		}
		reply, err := icmp.ParseMessage(proto, buf[:m])
		if err != nil || reply.Type != replyType {
			continue
		}
		echo, ok := reply.Body.(*icmp.Echo)
		if !ok || echo.ID != id || echo.Seq != seq {
			continue
		}
		if fa, ok := from.(*net.IPAddr); ok {
			if a, ok := netip.AddrFromSlice(fa.IP); ok && a.Unmap() != dst.Unmap() {
				continue
			}
		}
		return nil
	}
}

// MustPing is Ping with a 2 s timeout that fails the test.
func (n *Netns) MustPing(t testing.TB, dst netip.Addr) {
	t.Helper()
	if err := n.Ping(dst, 2*time.Second); err != nil {
		t.Fatal(err)
	}
}
