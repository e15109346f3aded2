// Package rawio makes the system calls of the daemon's periodic paths on
// non-blocking sockets as raw system calls (unix.RawSyscall, not
// unix.Syscall): the conntrack sync's datagrams (recvmmsg(2), sendmmsg(2),
// sendto(2): Conn) and the peer link's TLS connections (read(2), write(2):
// Stream).
//
// The difference is the Go runtime's system-call entry. syscall.Syscall
// calls runtime.entersyscall, and when the runtime's monitor thread
// (sysmon) is in its idle sleep, that entry wakes it; sysmon then polls
// every 20 µs, up to fifty times, until every scheduler slot is idle
// again. On an idle pair, the conntrack sync's few datagrams a second
// through x/net's ReadBatch and WriteBatch, and the DB sync's peer checks
// through net.Conn, woke sysmon into 50 (master) to 150 (backup) context
// switches a second (perf, bench/README.md, "Idle"). A call on a non-blocking socket
// never blocks, so it needs none of what entersyscall is for (handing the
// scheduler slot to another thread while this one waits in the kernel).
//
// Conn waits for readiness in the runtime's network poller, as every
// net.Conn does, and makes the call itself when the socket is ready. The
// poller is edge-triggered: a call interrupted (EINTR) is made again at
// once, never left to wait for an edge that already passed.
package rawio

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sockaddr is a destination in the kernel's form (struct sockaddr_in or
// sockaddr_in6), built once and passed by pointer to every send.
type Sockaddr struct {
	addr unix.RawSockaddrInet6 // large enough for either family
	len  uint32
}

// SockaddrOf is the kernel form of a (port on a) address; zone is the
// interface index of an IPv6 link-local destination (0 otherwise).
func SockaddrOf(a netip.Addr, port uint16, zone int) Sockaddr {
	var r Sockaddr
	if a.Is4() || a.Is4In6() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.addr))
		sa.Family = unix.AF_INET
		sa.Addr = a.Unmap().As4()
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], port)
		r.len = unix.SizeofSockaddrInet4
		return r
	}
	r.addr.Family = unix.AF_INET6
	r.addr.Addr = a.As16()
	r.addr.Scope_id = uint32(zone)
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&r.addr.Port))[:], port)
	r.len = unix.SizeofSockaddrInet6
	return r
}

// mmsghdr is struct mmsghdr: one message of a recvmmsg(2) or sendmmsg(2)
// and the length the kernel moved. Go pads it to the msghdr's alignment,
// as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// Batch is a vector of messages with one buffer each, allocated once and
// reused for every call: Set points a message at a buffer, ReadBatch
// fills them, Received says what each holds.
type Batch struct {
	msgs []mmsghdr
	iov  []unix.Iovec
	bufs [][]byte
}

// NewBatch makes a batch of n messages.
func NewBatch(n int) *Batch {
	b := &Batch{msgs: make([]mmsghdr, n), iov: make([]unix.Iovec, n), bufs: make([][]byte, n)}
	for i := range b.msgs {
		b.msgs[i].hdr.Iov = &b.iov[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b
}

// Received is message i as the last ReadBatch left it (i below the count
// it returned): the bytes in its buffer, and whether the datagram was
// longer than the buffer (MSG_TRUNC).
func (b *Batch) Received(i int) (p []byte, truncated bool) {
	m := &b.msgs[i]
	return b.bufs[i][:min(int(m.n), len(b.bufs[i]))], m.hdr.Flags&unix.MSG_TRUNC != 0
}

// Set points message i at buf (to receive into, or to send) and, for a
// send, at the destination to (nil: the socket's own). The batch keeps
// both by reference: they must stay unchanged until the call that uses
// message i has returned.
func (b *Batch) Set(i int, buf []byte, to *Sockaddr) {
	b.bufs[i] = buf
	b.iov[i].Base = unsafe.SliceData(buf)
	b.iov[i].SetLen(len(buf))
	m := &b.msgs[i]
	m.hdr.Name, m.hdr.Namelen = nil, 0
	if to != nil {
		m.hdr.Name, m.hdr.Namelen = (*byte)(unsafe.Pointer(&to.addr)), to.len
	}
	m.hdr.Flags, m.n = 0, 0
}

// Conn is a non-blocking socket the runtime's poller watches (a net.Conn's
// syscall.RawConn), read and written with raw system calls.
type Conn struct {
	rc syscall.RawConn
}

// NewConn wraps c's descriptor. c must be non-blocking (every socket of
// package net is).
func NewConn(c syscall.Conn) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("rawio: %w", err)
	}
	return &Conn{rc: rc}, nil
}

// ReadBatch waits until the socket is readable and receives up to n
// messages into b's first n buffers (recvmmsg(2)); it returns how many
// arrived, and Received what each holds.
func (c *Conn) ReadBatch(b *Batch, n int) (int, error) {
	var got int
	var errno unix.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			got, errno = mmsg(unix.SYS_RECVMMSG, fd, b.msgs[:n])
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return 0, fmt.Errorf("rawio: recvmmsg: %w", err)
	}
	if errno != 0 {
		return 0, fmt.Errorf("rawio: recvmmsg: %w", errno)
	}
	return got, nil
}

// WriteBatch sends b's first n messages (sendmmsg(2)), waiting while the
// socket's buffer is full; it returns how many the kernel took, which is
// fewer than n only with an error.
func (c *Conn) WriteBatch(b *Batch, n int) (int, error) {
	sent := 0
	var errno unix.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for sent < n {
			var k int
			k, errno = mmsg(unix.SYS_SENDMMSG, fd, b.msgs[sent:n])
			if errno == unix.EINTR {
				continue
			}
			if errno != 0 {
				return errno != unix.EAGAIN
			}
			sent += k
		}
		return true
	})
	if err != nil {
		return sent, fmt.Errorf("rawio: sendmmsg: %w", err)
	}
	if errno != 0 {
		return sent, fmt.Errorf("rawio: sendmmsg: %w", errno)
	}
	return sent, nil
}

// WriteTo sends one datagram to the destination to (sendto(2)), waiting
// while the socket's buffer is full.
func (c *Conn) WriteTo(p []byte, to *Sockaddr) error {
	var errno unix.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		errno = SendTo(fd, p, to)
		return errno != unix.EAGAIN
	})
	if err != nil {
		return fmt.Errorf("rawio: sendto: %w", err)
	}
	if errno != 0 {
		return fmt.Errorf("rawio: sendto: %w", errno)
	}
	return nil
}

// mmsg is recvmmsg(2) or sendmmsg(2) (trap) with MSG_DONTWAIT, raw.
func mmsg(trap, fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
	if len(msgs) == 0 {
		return 0, 0
	}
	r, _, e := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	runtime.KeepAlive(msgs)
	return int(r), e
}

// SendTo is sendto(2) with MSG_DONTWAIT, raw, made again when interrupted
// (EINTR); to nil sends to the socket's connected address.
func SendTo(fd uintptr, p []byte, to *Sockaddr) unix.Errno {
	for {
		var e unix.Errno
		if to == nil {
			_, _, e = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_DONTWAIT, 0, 0)
		} else {
			_, _, e = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&to.addr)), uintptr(to.len))
		}
		runtime.KeepAlive(p)
		runtime.KeepAlive(to)
		if e != unix.EINTR {
			return e
		}
	}
}
