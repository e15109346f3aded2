package vrrp_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/vrrp"
)

// TestLabKeepalivedAcceptsOurAH sends keepalived-ah adverts built by Codec
// from one namespace to a real keepalived (Debian's 2.2.7, state BACKUP,
// lower priority) in another, over a veth pair, and reads keepalived's log:
// it must accept every advert, also after a simulated restart of our sender
// (fresh AHCounter, no persisted state: the time floor must carry it), and
// must reject a wrong password and keepalived-style sequence numbers that
// restart at 1 (the control that shows the replay check is live).
func TestLabKeepalivedAcceptsOurAH(t *testing.T) {
	// Registered first, so it runs after every other cleanup: the lab's
	// process waiters must be gone once keepalived is stopped.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	tx := lab.NewNetnsT(t, "vrrpahtx")
	rx := lab.NewNetnsT(t, "vrrpahrx")
	tx.MustRun(t, "ip", "link", "add", "vk0", "type", "veth", "peer", "name", "vk1", "netns", rx.Name)
	tx.MustRun(t, "ip", "addr", "add", "10.98.0.1/24", "dev", "vk0")
	rx.MustRun(t, "ip", "addr", "add", "10.98.0.2/24", "dev", "vk1")
	tx.MustRun(t, "ip", "link", "set", "vk0", "up")
	rx.MustRun(t, "ip", "link", "set", "vk1", "up")

	const password = "sharedpw"
	conf := filepath.Join(rx.Dir, "keepalived.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global_defs {
  router_id murosrx
}
vrrp_instance VI_1 {
  state BACKUP
  interface vk1
  virtual_router_id 51
  priority 100
  advert_int 1
  authentication {
    auth_type AH
    auth_pass %s
  }
  virtual_ipaddress {
    10.98.0.100/24
  }
}
`, password)), 0o600); err != nil {
		t.Fatal(err)
	}

	var fd int
	if err := tx.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		return unix.BindToDevice(fd, "vk0")
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })

	ka, err := rx.Start("keepalived", "-n", "-l", "-D", "-f", conf,
		"-p", filepath.Join(rx.Dir, "keepalived.pid"), "-r", filepath.Join(rx.Dir, "vrrp.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ka.Stop(3 * time.Second) })
	waitLog(t, ka, "Entering BACKUP STATE", 10*time.Second)

	src, group := netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("224.0.0.18")
	advert := vrrp.Advert{VRID: 51, Priority: 150, Interval: time.Second, Addrs: []netip.Addr{netip.MustParseAddr("10.98.0.100")}}
	send := func(c *vrrp.Codec, ctr vrrp.AHCounter) {
		t.Helper()
		pkt, err := c.AppendPacket(nil, src, group, &advert, ctr)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: group.As4()}); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	good, err := vrrp.NewCodec(vrrp.Config{Version: 2, Auth: vrrp.AuthKeepalivedAH, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	// Two adverts a second: well inside keepalived's 3.6 s master-down
	// interval, and the rate the sequence floor is designed for.
	const spacing = 500 * time.Millisecond

	var ctr vrrp.AHCounter
	for range 8 {
		ctr = ctr.NextKeepalived(time.Now())
		send(good, ctr)
		time.Sleep(spacing)
	}
	time.Sleep(time.Second) // a restart of our sender: state lost
	ctr = vrrp.AHCounter{}
	for range 8 {
		ctr = ctr.NextKeepalived(time.Now())
		send(good, ctr)
		time.Sleep(spacing)
	}
	if log := ka.Log(); strings.Contains(log, "Entering MASTER STATE") || strings.Contains(log, "IPSEC-AH") {
		t.Fatalf("keepalived did not accept our adverts:\n%s", log)
	}

	// Controls: the checks we passed are live.
	wrong, err := vrrp.NewCodec(vrrp.Config{Version: 2, Auth: vrrp.AuthKeepalivedAH, Password: "otherpw"})
	if err != nil {
		t.Fatal(err)
	}
	send(wrong, ctr.NextKeepalived(time.Now()))
	waitLog(t, ka, "invalid IPSEC HMAC-MD5", 5*time.Second)
	send(good, vrrp.AHCounter{Seq: 1}) // keepalived's own restart behaviour
	waitLog(t, ka, "sequence number 1 already processed", 5*time.Second)
}

// waitLog waits (generously: this is not a speed assertion) until the
// process has logged want.
func waitLog(t *testing.T, p *lab.Process, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(p.Log(), want) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("keepalived never logged %q:\n%s", want, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLabRawSockets carries packets built by AppendPacket through the
// kernel the way the daemon will: sent with full headers on IPPROTO_RAW
// sockets, received on raw sockets of protocol 112 or 51 after joining the
// VRRP group. IPv4 delivers the IP header (Decode); IPv6 delivers the
// payload, with destination and hop limit from IPV6_PKTINFO /
// IPV6_HOPLIMIT (DecodeIPv6Payload). Every mode and family must decode
// with all checks and pass the replay check in order.
func TestLabRawSockets(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	tx := lab.NewNetnsT(t, "vrrprawtx")
	rx := lab.NewNetnsT(t, "vrrprawrx")
	tx.MustRun(t, "ip", "link", "add", "vr0", "type", "veth", "peer", "name", "vr1", "netns", rx.Name)
	tx.MustRun(t, "ip", "addr", "add", "10.97.0.1/24", "dev", "vr0")
	tx.MustRun(t, "ip", "addr", "add", "fe80::1/64", "dev", "vr0", "nodad")
	rx.MustRun(t, "ip", "addr", "add", "10.97.0.2/24", "dev", "vr1")
	rx.MustRun(t, "ip", "addr", "add", "fe80::2/64", "dev", "vr1", "nodad")
	// No kernel-generated link-local address: its DAD would delay the
	// first IPv6 multicast packets (seen as a lost first advert).
	tx.MustRun(t, "ip", "link", "set", "vr0", "addrgenmode", "none", "up")
	rx.MustRun(t, "ip", "link", "set", "vr1", "addrgenmode", "none", "up")

	waitIPv6Multicast(t, tx, rx)

	now := time.Now()
	tests := []struct {
		name     string
		cfg      vrrp.Config
		src, dst netip.Addr
	}{
		{"v3 none ipv4", vrrp.Config{Version: 3}, netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("224.0.0.18")},
		{"v3 ah ipv4", vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: "change-me"}, netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("224.0.0.18")},
		{"v2 keepalived-ah ipv4", vrrp.Config{Version: 2, Auth: vrrp.AuthKeepalivedAH, Password: "change-me"}, netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("224.0.0.18")},
		{"v3 ah ipv6", vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: "change-me"}, netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")},
		{"v3 none ipv6", vrrp.Config{Version: 3}, netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := vrrp.NewCodec(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			proto := vrrp.ProtocolVRRP
			if tt.cfg.Auth == vrrp.AuthAH || tt.cfg.Auth == vrrp.AuthKeepalivedAH {
				proto = vrrp.ProtocolAH
			}
			v6 := tt.src.Is6()
			sendFD := openRaw(t, tx, v6, unix.IPPROTO_RAW, "vr0", netip.Addr{})
			recvFD := openRaw(t, rx, v6, proto, "vr1", tt.dst)
			vip := netip.MustParseAddr("10.97.0.100")
			if v6 {
				vip = netip.MustParseAddr("2001:db8::100")
			}
			advert := vrrp.Advert{VRID: 10, Priority: 150, Interval: 20 * time.Millisecond, Addrs: []netip.Addr{vip}}
			if tt.cfg.Version == 2 {
				advert.Interval = time.Second
			}
			ctr := vrrp.NewAHCounter(0, now)
			var replay vrrp.ReplayState
			buf, oob := make([]byte, 1500), make([]byte, 256)
			for range 3 {
				if tt.cfg.Auth == vrrp.AuthKeepalivedAH {
					ctr = ctr.NextKeepalived(now)
				} else {
					ctr = ctr.Next(now)
				}
				pkt, err := c.AppendPacket(nil, tt.src, tt.dst, &advert, ctr)
				if err != nil {
					t.Fatal(err)
				}
				var to unix.Sockaddr
				if v6 {
					to = &unix.SockaddrInet6{Addr: tt.dst.As16()}
				} else {
					to = &unix.SockaddrInet4{Addr: tt.dst.As4()}
				}
				if err := unix.Sendto(sendFD, pkt, 0, to); err != nil {
					t.Fatalf("send: %v", err)
				}
				n, oobn, _, from, err := unix.Recvmsg(recvFD, buf, oob, 0)
				if err != nil {
					t.Fatalf("receive: %v", err)
				}
				var r vrrp.Received
				if v6 {
					dst, hops := controlIPv6(t, oob[:oobn])
					src := netip.AddrFrom16(from.(*unix.SockaddrInet6).Addr)
					r, err = c.DecodeIPv6Payload(buf[:n], uint8(proto), src, dst, hops, nil)
				} else {
					r, err = c.Decode(buf[:n], nil)
				}
				if err != nil {
					t.Fatalf("decode %x: %v", buf[:n], err)
				}
				if r.Src != tt.src || r.Dst != tt.dst || r.TTL != vrrp.TTL || r.Advert.Priority != 150 || r.Advert.Addrs[0] != vip {
					t.Fatalf("decoded %+v", r)
				}
				if tt.cfg.Auth != vrrp.AuthNone {
					if replay, err = replay.Accept(r.SPI, r.Seq); err != nil {
						t.Fatalf("replay check: %v", err)
					}
				}
			}
		})
	}
}

// openRaw opens a raw socket inside ns bound to dev; with a valid group it
// joins it and (IPv6) asks for destination and hop limit control messages.
func openRaw(t *testing.T, ns *lab.Netns, v6 bool, proto int, dev string, group netip.Addr) int {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		family := unix.AF_INET
		if v6 {
			family = unix.AF_INET6
		}
		var err error
		if fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return fmt.Errorf("socket(%d, raw, %d): %w", family, proto, err)
		}
		if err := unix.BindToDevice(fd, dev); err != nil {
			return fmt.Errorf("bind to %s: %w", dev, err)
		}
		// A missing packet fails the test instead of hanging it.
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
			return err
		}
		if !group.IsValid() {
			return nil
		}
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		if !v6 {
			return unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP,
				&unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(ifi.Index)})
		}
		if err := unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP,
			&unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(ifi.Index)}); err != nil {
			return fmt.Errorf("join %s: %w", group, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// controlIPv6 extracts the destination (IPV6_PKTINFO) and hop limit
// (IPV6_HOPLIMIT) from the control messages of an IPv6 raw socket.
func controlIPv6(t *testing.T, oob []byte) (netip.Addr, uint8) {
	t.Helper()
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		t.Fatal(err)
	}
	var dst netip.Addr
	hops := -1
	for _, m := range msgs {
		if m.Header.Level != unix.IPPROTO_IPV6 {
			continue
		}
		switch {
		case m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			dst = netip.AddrFrom16([16]byte(m.Data[:16]))
		case m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4:
			hops = int(int32(binary.NativeEndian.Uint32(m.Data[:4])))
		}
	}
	if !dst.IsValid() || hops < 0 || hops > 255 {
		t.Fatalf("control messages without destination or hop limit: %v", msgs)
	}
	return dst, uint8(hops)
}

// waitIPv6Multicast waits until IPv6 multicast from tx's vr0 reaches rx's
// vr1: on a fresh veth pair the first IPv6 multicast packets of the first
// second or so are lost (IPv4 is not affected), which would otherwise look
// like a lost advert. A readiness wait with a generous limit, not a speed
// assertion.
func waitIPv6Multicast(t *testing.T, tx, rx *lab.Netns) {
	t.Helper()
	group := netip.MustParseAddr("ff02::12")
	sendFD := openRaw(t, tx, true, unix.IPPROTO_RAW, "vr0", netip.Addr{})
	recvFD := openRaw(t, rx, true, vrrp.ProtocolVRRP, "vr1", group)
	if err := unix.SetsockoptTimeval(recvFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
		t.Fatal(err)
	}
	c, err := vrrp.NewCodec(vrrp.Config{Version: 3})
	if err != nil {
		t.Fatal(err)
	}
	pkt, err := c.AppendPacket(nil, netip.MustParseAddr("fe80::1"), group, &vrrp.Advert{VRID: 1, Interval: time.Second}, vrrp.AHCounter{})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		err := unix.Sendto(sendFD, pkt, 0, &unix.SockaddrInet6{Addr: group.As16()})
		if errors.Is(err, unix.ENETUNREACH) {
			// The interface's IPv6 routes are not in yet (seen under load).
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		if _, _, err := unix.Recvfrom(recvFD, buf, 0); err == nil {
			return
		}
	}
	t.Fatal("IPv6 multicast never got through the veth pair")
}
