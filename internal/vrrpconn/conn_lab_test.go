package vrrpconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/vrrp"
)

// conns opens a Conn of family fam on the sync link of each firewall of a
// fresh pair (fw1's first).
func conns(t *testing.T, fam vrrp.Family) (c1, c2 *Conn) {
	t.Helper()
	lab.Require(t)
	p := lab.NewPairT(t, lab.Options{IPv6: true})
	var out [2]*Conn
	for i, fw := range []*lab.Netns{p.FW1, p.FW2} {
		err := fw.Do(func() error {
			nl, err := netlink.NewHandle()
			if err != nil {
				return err
			}
			defer nl.Close()
			src, _, err := WaitSource(context.Background(), nl, lab.IfSync, fam)
			if err != nil {
				return err
			}
			out[i], err = Open(lab.IfSync, src)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", fw, err)
		}
		c := out[i]
		t.Cleanup(func() { c.Close() })
	}
	return out[0], out[1]
}

// packet is an advert from c of protocol proto as Write takes it.
func packet(t *testing.T, c *Conn, proto int, vrid uint8) []byte {
	t.Helper()
	cfg := vrrp.Config{Version: 3}
	if proto == ProtoAH {
		cfg = vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: "secret"}
	}
	codec, err := vrrp.NewCodec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("192.0.2.1")
	if c.IPv6() {
		vip = netip.MustParseAddr("2001:db8::1")
	}
	a := vrrp.Advert{VRID: vrid, Priority: 100, Interval: 10 * time.Millisecond, Addrs: []netip.Addr{vip}}
	pkt, err := codec.AppendPacket(nil, c.Source(), c.Group(), &a, vrrp.AHCounter{Epoch: 1000, Seq: uint32(vrid)})
	if err != nil {
		t.Fatal(err)
	}
	if c.IPv6() {
		pkt = pkt[vrrp.IPv6HeaderLen:]
	}
	return pkt
}

func TestExchange(t *testing.T) {
	for _, fam := range []vrrp.Family{vrrp.IPv4, vrrp.IPv6} {
		t.Run(fmt.Sprint(fam), func(t *testing.T) {
			c1, c2 := conns(t, fam)
			buf, oob := make([]byte, 65536), make([]byte, 256)
			for i, proto := range []int{ProtoVRRP, ProtoAH} {
				want := packet(t, c2, proto, uint8(10+i))
				if err := c2.Write(context.Background(), proto, want, c2.Group()); err != nil {
					t.Fatal(err)
				}
				got, err := readWithin(c1, proto, buf, oob, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if got.Src != c2.Source() || got.Dst != c1.Group() || got.HopLimit != 255 || got.Proto != proto {
					t.Errorf("proto %d: got src %s dst %s hop limit %d proto %d, want %s %s 255 %d", proto, got.Src, got.Dst, got.HopLimit, got.Proto, c2.Source(), c1.Group(), proto)
				}
				data := got.Data
				if fam == vrrp.IPv4 {
					// The kernel filled the header's checksum and id.
					data, want = data[20:], want[20:]
				}
				if !bytes.Equal(data, want) {
					t.Errorf("proto %d: payload %x, want %x", proto, data, want)
				}
			}
		})
	}
}

// readWithin waits in poll(2) for c's socket of proto and reads one
// datagram with TryRead.
func readWithin(c *Conn, proto int, b, oob []byte, timeout time.Duration) (Packet, error) {
	fd := c.ReceiveFDs()[c.index(proto)]
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds())+1); err != nil && err != unix.EINTR {
			return Packet{}, err
		}
		p, ok, err := c.TryRead(proto, b, oob)
		if err != nil || ok {
			return p, err
		}
	}
	return Packet{}, fmt.Errorf("nothing within %v", timeout)
}

// TryRead never blocks: an empty socket answers at once, and a closed
// Conn says so instead of reading a descriptor number that may be reused.
func TestTryRead(t *testing.T) {
	c1, c2 := conns(t, vrrp.IPv4)
	buf, oob := make([]byte, 65536), make([]byte, 256)
	if _, ok, err := c1.TryRead(ProtoVRRP, buf, oob); ok || err != nil {
		t.Fatalf("TryRead of an empty socket = %v, %v; want nothing, no error", ok, err)
	}
	if err := c2.Write(context.Background(), ProtoVRRP, packet(t, c2, ProtoVRRP, 10), c2.Group()); err != nil {
		t.Fatal(err)
	}
	if _, err := readWithin(c1, ProtoVRRP, buf, oob, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c1.TryRead(ProtoVRRP, buf, oob); ok || err != nil {
		t.Fatalf("TryRead after the only datagram = %v, %v; want nothing", ok, err)
	}
	c1.Close()
	if _, _, err := c1.TryRead(ProtoVRRP, buf, oob); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryRead after Close = %v, want net.ErrClosed", err)
	}
	if _, _, err := c1.TryRead(0, buf, oob); err == nil {
		t.Fatal("TryRead of an unknown protocol succeeded")
	}
}

// No socket is in the runtime's poller (a sent datagram would wake a
// thread in epoll_wait when the kernel frees it; the daemon polls the
// receiving ones in a set of its own), and the send-only sockets queue
// nothing of what the link carries.
func TestSocketsOutsidePoller(t *testing.T) {
	c1, c2 := conns(t, vrrp.IPv4)
	for range 20 {
		for _, proto := range []int{ProtoVRRP, ProtoAH} {
			if err := c2.Write(context.Background(), proto, packet(t, c2, proto, 10), c2.Group()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// What c2 sent is queued on c1's receiving sockets (nobody reads them).
	for i, proto := range c1.protos {
		if _, err := readWithin(c1, proto, make([]byte, 65536), make([]byte, 256), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		polled := pollerFDs(t)
		recv, send := recvFD(t, c1, i), sendFD(c1, i)
		if polled[recv] {
			t.Errorf("proto %d: receiving socket %d is in the poller %v", proto, recv, polled)
		}
		if polled[send] {
			t.Errorf("proto %d: send socket %d is in the poller", proto, send)
		}
		if n, err := unix.IoctlGetInt(recv, unix.SIOCINQ); err != nil || n == 0 {
			t.Errorf("proto %d: the receiving socket holds %d bytes (%v) after 20 datagrams", proto, n, err)
		}
		if n, err := unix.IoctlGetInt(send, unix.SIOCINQ); err != nil || n != 0 {
			t.Errorf("proto %d: the send socket holds %d bytes (%v), want 0", proto, n, err)
		}
	}
}

func recvFD(t *testing.T, c *Conn, i int) int {
	t.Helper()
	fd := c.ReceiveFDs()[i]
	if fd < 0 {
		t.Fatalf("socket %d closed", i)
	}
	return fd
}

func sendFD(c *Conn, i int) int { return c.sendFDs[i] }

// pollerFDs are the descriptors registered in the process's epoll
// instances (/proc/self/fdinfo: "tfd: N").
func pollerFDs(t *testing.T) map[int]bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", fd.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "tfd:" {
				n, err := strconv.Atoi(f[1])
				if err != nil {
					t.Fatalf("fdinfo: %q", line)
				}
				out[n] = true
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no epoll instance with registered descriptors in /proc/self/fdinfo")
	}
	return out
}

// A send the device does not drain waits for room at most SetSendWait's
// bound, then fails with the deadline: the loop that sends adverts is
// never held longer than that.
func TestWriteWaitIsBounded(t *testing.T) {
	lab.Require(t)
	p := lab.NewPairT(t, lab.Options{})
	// A token bucket of 8 bit/s with room for megabytes: nothing leaves,
	// nothing is dropped, the sockets' buffers fill.
	if out, err := p.FW2.Run("tc", "qdisc", "add", "dev", lab.IfSync, "root", "tbf", "rate", "8bit", "burst", "1600", "limit", "100000000"); err != nil {
		t.Fatalf("tc: %v\n%s", err, out)
	}
	var c *Conn
	err := p.FW2.Do(func() error {
		var err error
		c, err = Open(lab.IfSync, p.FW2Addrs.Sync.Addr())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const wait = 50 * time.Millisecond
	c.SetSendWait(wait)
	pkt := packet(t, c, ProtoVRRP, 10)
	for i := 0; ; i++ {
		if i == 100000 {
			t.Fatal("100000 sends and the buffers never filled")
		}
		start := time.Now()
		err := c.Write(context.Background(), ProtoVRRP, pkt, c.Group())
		if err == nil {
			continue
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("send %d: %v, want a deadline error", i, err)
		}
		if took := time.Since(start); took < wait {
			t.Fatalf("send %d failed after %v without waiting %v: %v", i, took, wait, err)
		}
		return
	}
}
