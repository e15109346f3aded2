package vrrpconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
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
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := c1.Read(ctx, proto, buf, oob)
				cancel()
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

// A Read waiting for a datagram starts no goroutine (the runtime poller
// parks the reader itself); a cancelled one returns the context's error
// and leaves the connection usable.
func TestReadStartsNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c1, c2 := conns(t, vrrp.IPv4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c1.Read(ctx, ProtoVRRP, make([]byte, 65536), make([]byte, 256))
		done <- err
	}()
	// Wait (untimed) until the reader is parked on the poller.
	for !readerParked() {
		time.Sleep(time.Millisecond)
	}
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.Contains(g, "vrrpconn.(*Conn).Read") {
			continue // the reader
		}
		if strings.Contains(g, "mdlayher/socket") || strings.Contains(g, "internal/vrrpconn.(*Conn)") {
			t.Errorf("a blocked Read runs a goroutine of its own:\n%s", g)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Read returned %v, want context.Canceled", err)
	}
	pkt := packet(t, c2, ProtoVRRP, 10)
	if err := c2.Write(context.Background(), ProtoVRRP, pkt, c2.Group()); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if _, err := c1.Read(rctx, ProtoVRRP, make([]byte, 65536), make([]byte, 256)); err != nil {
		t.Fatalf("Read after a cancelled one: %v", err)
	}
}

func stacks() string {
	b := make([]byte, 1<<20)
	return string(b[:runtime.Stack(b, true)])
}

// readerParked reports whether a goroutine in Conn.Read waits on the poller.
func readerParked() bool {
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.Contains(g, "[IO wait") && strings.Contains(g, "vrrpconn.(*Conn).Read") {
			return true
		}
	}
	return false
}

// The send-only sockets stay out of the runtime's poller (so a sent
// datagram wakes no thread in epoll_wait) and queue nothing of what the
// link carries; the receiving sockets are in the poller.
func TestSendersOutsidePoller(t *testing.T) {
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := c1.Read(ctx, proto, make([]byte, 65536), make([]byte, 256)); err != nil {
			t.Fatal(err)
		}
		cancel()
		polled := pollerFDs(t)
		recv, send := recvFD(t, c1, i), sendFD(c1, i)
		if !polled[recv] {
			t.Errorf("proto %d: receiving socket %d not in the poller %v", proto, recv, polled)
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
	var n int
	if err := c.raws[i].Control(func(fd uintptr) { n = int(fd) }); err != nil {
		t.Fatal(err)
	}
	return n
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
