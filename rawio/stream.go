package rawio

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stream is a connected stream socket (a *net.TCPConn under the peer
// link's TLS) whose Read and Write are raw read(2) and write(2) once the
// runtime's poller says the socket is ready; deadlines, Close and the
// addresses are the wrapped net.Conn's. The DB sync's peer checks and the
// peer link's keepalives are the idle pair's last periodic system calls
// through syscall.Syscall.
type Stream struct {
	net.Conn
	rc syscall.RawConn
}

// NewStream wraps c when it is a socket; any other net.Conn (a test's
// pipe) is returned as it is.
func NewStream(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &Stream{Conn: c, rc: rc}
}

// Read reads what the socket holds, up to len(p), waiting until it holds
// something; io.EOF when the peer closed its side.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno unix.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if e != unix.EINTR {
				n, errno = int(r), e
				return e != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil: // a deadline passed, or the Conn was closed
		return 0, err
	case errno != 0:
		return 0, s.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting while the socket's buffer is full.
func (s *Stream) Write(p []byte) (int, error) {
	n := 0
	var errno unix.Errno
	err := s.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			r, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
			switch e {
			case 0:
				n += int(r)
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, s.opError("write", errno)
	}
	return n, nil
}

func (s *Stream) opError(op string, errno unix.Errno) error {
	return &net.OpError{Op: op, Net: s.LocalAddr().Network(), Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
