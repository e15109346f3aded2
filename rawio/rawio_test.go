package rawio

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSockaddrOf(t *testing.T) {
	for _, c := range []struct {
		name string
		addr netip.Addr
		port uint16
		zone int
		want []byte // the kernel form, as long as Len says
	}{
		{"IPv4", netip.MustParseAddr("225.0.0.50"), 3780, 0,
			[]byte{unix.AF_INET, 0, 0x0e, 0xc4, 225, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"IPv4 in IPv6 is sent as IPv4", netip.MustParseAddr("::ffff:10.0.0.2"), 1, 0,
			[]byte{unix.AF_INET, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"IPv6 link-local group with its interface", netip.MustParseAddr("ff02::3781"), 3781, 7,
			[]byte{unix.AF_INET6, 0, 0x0e, 0xc5, 0, 0, 0, 0,
				0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x37, 0x81,
				7, 0, 0, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sa := SockaddrOf(c.addr, c.port, c.zone)
			// The family and the scope id are in host order (this test
			// runs on little-endian machines), the port in network order.
			got := unsafe.Slice((*byte)(unsafe.Pointer(&sa.addr)), sa.len)
			if diff := cmp.Diff(c.want, bytes.Clone(got)); diff != "" {
				t.Errorf("kernel form (-want +got):\n%s", diff)
			}
		})
	}
}

// pair is a connected pair of datagram sockets (AF_UNIX: no network,
// no namespace needed) wrapped as Conns.
func pair(t *testing.T) (a, b *Conn, closeA func()) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) (*Conn, func()) {
		f := os.NewFile(uintptr(fd), "dgram")
		c, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := NewConn(c.(*net.UnixConn))
		if err != nil {
			t.Fatal(err)
		}
		once := false
		closeFn := func() {
			if !once {
				once = true
				c.Close()
			}
		}
		t.Cleanup(closeFn)
		return rc, closeFn
	}
	a, closeA = conn(fds[0])
	b, _ = conn(fds[1])
	return a, b, closeA
}

func TestBatchRoundTrip(t *testing.T) {
	a, b, _ := pair(t)
	out := NewBatch(4)
	msgs := [][]byte{[]byte("one"), []byte("two, longer"), []byte("three: too long for its slot")}
	for i, m := range msgs {
		out.Set(i, m, nil)
	}
	n, err := a.WriteBatch(out, len(msgs))
	if err != nil || n != len(msgs) {
		t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(msgs))
	}
	in := NewBatch(4)
	bufs := [][]byte{make([]byte, 16), make([]byte, 16), make([]byte, 8), make([]byte, 16)}
	for i, buf := range bufs {
		in.Set(i, buf, nil)
	}
	n, err = b.ReadBatch(in, len(bufs))
	if err != nil || n != len(msgs) {
		t.Fatalf("ReadBatch = %d, %v; want %d", n, err, len(msgs))
	}
	type got struct {
		Data      string
		Truncated bool
	}
	var gots []got
	for i := range n {
		p, truncated := in.Received(i)
		gots = append(gots, got{string(p), truncated})
	}
	want := []got{{"one", false}, {"two, longer", false}, {"three: t", true}}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if err := a.WriteTo([]byte("single"), nil); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n, err = b.ReadBatch(in, 1); err != nil || n != 1 {
		t.Fatalf("ReadBatch after WriteTo = %d, %v", n, err)
	}
	if p, _ := in.Received(0); string(p) != "single" {
		t.Fatalf("received %q after WriteTo", p)
	}
}

// TestReadBatchWaits: a read on an empty socket parks in the runtime's
// poller until a datagram arrives, and a closed socket ends it.
func TestReadBatchWaits(t *testing.T) {
	a, b, closeA := pair(t)
	in := NewBatch(1)
	buf := make([]byte, 8)
	in.Set(0, buf, nil)
	done := make(chan error, 1)
	go func() {
		_, err := b.ReadBatch(in, 1)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("ReadBatch returned on an empty socket: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	if err := a.WriteTo([]byte("late"), nil); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if p, _ := in.Received(0); err != nil || string(p) != "late" {
		t.Fatalf("ReadBatch = %v, %q", err, p)
	}
	closeA()
	if err := a.WriteTo([]byte("x"), nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo on a closed Conn = %v, want net.ErrClosed", err)
	}
}

// TestBatchSetClears: a slot reused for a send without a destination
// carries none, and the kernel's last answer is cleared.
func TestBatchSetClears(t *testing.T) {
	b := NewBatch(1)
	to := SockaddrOf(netip.MustParseAddr("10.0.0.1"), 1, 0)
	b.Set(0, []byte("x"), &to)
	if b.msgs[0].hdr.Name == nil || b.msgs[0].hdr.Namelen != unix.SizeofSockaddrInet4 {
		t.Fatalf("destination not set: %+v", b.msgs[0].hdr)
	}
	b.msgs[0].n, b.msgs[0].hdr.Flags = 9, unix.MSG_TRUNC
	b.Set(0, nil, nil)
	m := b.msgs[0]
	if m.hdr.Name != nil || m.hdr.Namelen != 0 || m.n != 0 || m.hdr.Flags != 0 || b.iov[0].Base != nil || b.iov[0].Len != 0 {
		t.Errorf("slot not cleared: %+v, iov %+v", m, b.iov[0])
	}
	if p, truncated := b.Received(0); len(p) != 0 || truncated {
		t.Errorf("a cleared slot holds %q (truncated %v)", p, truncated)
	}
}
