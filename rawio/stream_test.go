package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// streamPair is a connected pair of stream sockets (AF_UNIX), one side
// raw (Stream), the other a plain net.Conn.
func streamPair(t *testing.T) (raw net.Conn, plain net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "stream")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	raw = NewStream(conn(fds[0]))
	if _, ok := raw.(*Stream); !ok {
		t.Fatalf("NewStream(%T) did not wrap a socket", raw)
	}
	return raw, conn(fds[1])
}

// TestStreamBothWays: 4 MiB each way, more than the socket buffers
// hold, so both Read and Write wait in the poller (EAGAIN) on the way.
func TestStreamBothWays(t *testing.T) {
	raw, plain := streamPair(t)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, dir := range []struct {
		name     string
		from, to net.Conn
	}{{"raw writes", raw, plain}, {"raw reads", plain, raw}} {
		t.Run(dir.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() {
				n, err := dir.from.Write(data)
				if err == nil && n != len(data) {
					err = io.ErrShortWrite
				}
				errc <- err
			}()
			got := make([]byte, len(data))
			if _, err := io.ReadFull(dir.to, got); err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("the bytes read are not the bytes written")
			}
		})
	}
}

// TestStreamEndsAndDeadlines: a read past its deadline is a timeout, the
// peer's close is io.EOF, a write on a closed Stream is net.ErrClosed,
// and an empty read returns at once.
func TestStreamEndsAndDeadlines(t *testing.T) {
	raw, plain := streamPair(t)
	if n, err := raw.Read(nil); n != 0 || err != nil {
		t.Errorf("empty read = %d, %v", n, err)
	}
	raw.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	var ne net.Error
	if _, err := raw.Read(make([]byte, 8)); !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline = %v, want a timeout", err)
	}
	raw.SetReadDeadline(time.Time{})
	plain.Close()
	if _, err := raw.Read(make([]byte, 8)); err != io.EOF {
		t.Errorf("read after the peer closed = %v, want io.EOF", err)
	}
	raw.Close()
	if _, err := raw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on a closed Stream = %v, want net.ErrClosed", err)
	}
}

// TestNewStreamLeavesOthers: a net.Conn that is not a socket is returned
// as it is.
func TestNewStreamLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := NewStream(a); got != a {
		t.Errorf("NewStream(pipe) = %T, want the pipe", got)
	}
}

// TestStreamWriteToClosedPeer: writing to a peer that has gone is an
// error (EPIPE or ECONNRESET), not a signal that ends the process.
func TestStreamWriteToClosedPeer(t *testing.T) {
	raw, plain := streamPair(t)
	plain.Close()
	var err error
	for range 10 {
		if _, err = raw.Write(make([]byte, 64<<10)); err != nil {
			break
		}
	}
	if !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
		t.Errorf("write to a closed peer = %v, want EPIPE or ECONNRESET", err)
	}
}
