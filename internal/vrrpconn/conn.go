// Package vrrpconn is the thin socket adapter between the VRRP core
// (package vrrp) and the kernel: raw IP sockets for protocol 112 (VRRP,
// RFC 9568 section 5.1) and 51 (IPsec AH, RFC 4302, which wraps VRRP when
// authentication is on), bound to the sync interface.
//
// IPv4: the sockets use IP_HDRINCL, so sent packets carry the header the codec
// built (keepalived-compatible AH signs the IPv4 header) and received packets
// arrive with their IPv4 header, from which TTL and destination are read.
// IPv6: the kernel builds and strips the header; the hop limit and the
// destination come from IPV6_HOPLIMIT / IPV6_PKTINFO control messages and the
// source address is pinned with IPV6_PKTINFO on send.
//
// Each protocol has a receiving socket and a send-only socket (a filter
// drops everything the kernel would queue on it), and neither is in the Go
// runtime's network poller: the caller watches the receiving sockets
// (ReceiveFDs) in a wait of its own (the daemon's loop: package pollset)
// and reads them with TryRead when they are ready. An idle daemon's cost
// is its wakeups: a datagram sent on a polled socket would wake a thread
// blocked in epoll_wait when the kernel frees it (sock_wfree makes the
// socket writable again), and a syscall entered through the runtime's
// syscall entry wakes sysmon when every P is idle. Both sockets are
// non-blocking and read or written with raw recvmsg(2) / sendmsg(2), which
// return at once. Only a send that finds the buffer full waits, in
// poll(2), for room.
//
// Both families join the VRRP group (224.0.0.18, ff02::12) on the interface
// only, send with TTL / hop limit 255 and turn multicast loopback off, so a
// node never hears its own adverts from the kernel. Every check on content
// (TTL 255, checksum, authentication) is left to the codec: this package only
// moves bytes. WaitSource finds the address a family's socket sends from.
package vrrpconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IP protocol numbers carried on the sync link.
const (
	ProtoVRRP = 112
	ProtoAH   = 51
)

// Group returns the VRRP multicast group of the connection's family
// (RFC 9568 sections 5.1.1.2 and 5.1.2.2): 224.0.0.18 or ff02::12.
func (c *Conn) Group() netip.Addr { return group(c.v6) }

func group(v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: 0x12})
	}
	return netip.AddrFrom4([4]byte{224, 0, 0, 18})
}

// Packet is one datagram read from the link.
type Packet struct {
	Proto    int        // ProtoVRRP or ProtoAH
	Src, Dst netip.Addr // from the IPv4 header or the IPv6 socket address / pktinfo
	HopLimit int        // TTL (IPv4) or hop limit (IPv6); -1 when the kernel did not say
	// Data is the whole IPv4 packet (header included) for IPv4, and the IPv6
	// payload (VRRP or AH, header stripped by the kernel) for IPv6. It aliases
	// the buffer passed to Read.
	Data []byte
}

// Conn reads and writes VRRP and AH datagrams on one interface and family.
type Conn struct {
	v6      bool
	ifindex int
	src     netip.Addr // our source address on the interface
	protos  [2]int
	oob     []byte // IPv6: the IPV6_PKTINFO control message of every send

	// fdMu guards the descriptors against a Close during a read or a
	// write (a closed descriptor's number is reused by the next open).
	fdMu    sync.RWMutex
	recvFDs [2]int // receiving sockets, -1 once closed
	sendFDs [2]int // send-only sockets, -1 once closed
	// sendWait bounds a send that has to wait for room (SetSendWait).
	sendWait time.Duration
}

// DefaultSendWait is how long a send waits for room in the socket buffer
// unless SetSendWait says otherwise.
const DefaultSendWait = time.Second

// SetSendWait bounds how long a Write waits when the socket buffer is full
// (the daemon: one advert interval, since a later advert is late anyway).
// The bound costs nothing unless a send has to wait: a context deadline
// per send would arm and disarm a runtime timer per advert, which can wake
// the thread in epoll_wait. Call it from the goroutine that writes.
func (c *Conn) SetSendWait(d time.Duration) {
	if d > 0 {
		c.sendWait = d
	}
}

// Open opens raw sockets for VRRP and AH on ifname. src is the address the
// node sends from (its primary IPv4 address on the interface, or its IPv6
// link-local address); it also selects the family.
func Open(ifname string, src netip.Addr) (*Conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vrrpconn: interface %q: %w", ifname, err)
	}
	c := &Conn{v6: src.Is6() && !src.Is4In6(), ifindex: ifi.Index, src: src.Unmap(), protos: [2]int{ProtoVRRP, ProtoAH}, recvFDs: [2]int{-1, -1}, sendFDs: [2]int{-1, -1}, sendWait: DefaultSendWait}
	if c.v6 {
		c.oob = pktinfo(c.src, c.ifindex)
	}
	for i, proto := range c.protos {
		var err error
		if c.recvFDs[i], err = c.open(ifname, proto); err != nil {
			c.Close()
			return nil, err
		}
		if c.sendFDs[i], err = c.openSender(ifname, proto); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// openSender opens the send-only socket of proto: the same options as the
// receiving one for what leaves, no group joined, and a filter that drops
// every datagram the kernel would queue on it (a raw socket gets a copy of
// every packet of its protocol).
func (c *Conn) openSender(ifname string, proto int) (int, error) {
	family := unix.AF_INET
	if c.v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("vrrpconn: raw send socket proto %d: %w", proto, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("vrrpconn: %s on %s proto %d (send socket): %w", what, ifname, proto, err)
	}
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &drop[0]}); err != nil {
		return fail("SO_ATTACH_FILTER", err)
	}
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return fail("SO_BINDTODEVICE", err)
	}
	type opt struct {
		name       string
		level, opt int
		val        int
	}
	opts := []opt{
		{"IP_HDRINCL", unix.IPPROTO_IP, unix.IP_HDRINCL, 1},
		{"IP_MULTICAST_LOOP", unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0},
		{"IP_MULTICAST_TTL", unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 255},
	}
	if c.v6 {
		opts = []opt{
			{"IPV6_MULTICAST_LOOP", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0},
			{"IPV6_MULTICAST_HOPS", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255},
			{"IPV6_UNICAST_HOPS", unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255},
			{"IPV6_MULTICAST_IF", unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, c.ifindex},
		}
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			return fail(o.name, err)
		}
	}
	if !c.v6 {
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Multiaddr: group(false).As4(), Address: c.src.As4(), Ifindex: int32(c.ifindex)}); err != nil {
			return fail("IP_MULTICAST_IF", err)
		}
	}
	return fd, nil
}

func (c *Conn) open(ifname string, proto int) (int, error) {
	family := unix.AF_INET
	if c.v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("vrrpconn: raw socket proto %d: %w", proto, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("vrrpconn: %s on %s proto %d: %w", what, ifname, proto, err)
	}
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return fail("SO_BINDTODEVICE", err)
	}
	// A takeover must not be lost to a full receive queue under a storm.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	if c.v6 {
		opts := []struct {
			name string
			opt  int
			val  int
		}{
			{"IPV6_MULTICAST_LOOP", unix.IPV6_MULTICAST_LOOP, 0},
			{"IPV6_MULTICAST_HOPS", unix.IPV6_MULTICAST_HOPS, 255},
			{"IPV6_UNICAST_HOPS", unix.IPV6_UNICAST_HOPS, 255},
			{"IPV6_MULTICAST_IF", unix.IPV6_MULTICAST_IF, c.ifindex},
			{"IPV6_RECVHOPLIMIT", unix.IPV6_RECVHOPLIMIT, 1},
			{"IPV6_RECVPKTINFO", unix.IPV6_RECVPKTINFO, 1},
		}
		for _, o := range opts {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o.opt, o.val); err != nil {
				return fail(o.name, err)
			}
		}
		mreq := &unix.IPv6Mreq{Multiaddr: group(true).As16(), Interface: uint32(c.ifindex)}
		if err := unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq); err != nil {
			return fail("IPV6_JOIN_GROUP", err)
		}
		return fd, nil
	}
	opts := []struct {
		name string
		opt  int
		val  int
	}{
		{"IP_HDRINCL", unix.IP_HDRINCL, 1},
		{"IP_MULTICAST_LOOP", unix.IP_MULTICAST_LOOP, 0},
		{"IP_MULTICAST_TTL", unix.IP_MULTICAST_TTL, 255},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, o.opt, o.val); err != nil {
			return fail(o.name, err)
		}
	}
	mreqn := &unix.IPMreqn{Multiaddr: group(false).As4(), Address: c.src.As4(), Ifindex: int32(c.ifindex)}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreqn); err != nil {
		return fail("IP_MULTICAST_IF", err)
	}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreqn); err != nil {
		return fail("IP_ADD_MEMBERSHIP", err)
	}
	return fd, nil
}

// Source is the address the node sends from.
func (c *Conn) Source() netip.Addr { return c.src }

// IPv6 reports whether the connection carries IPv6.
func (c *Conn) IPv6() bool { return c.v6 }

// Close closes the sockets (which takes them out of an epoll set). Call
// it once nothing waits on ReceiveFDs any more.
func (c *Conn) Close() error {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	var errs []error
	for _, fds := range []*[2]int{&c.recvFDs, &c.sendFDs} {
		for i, fd := range fds {
			if fd >= 0 {
				errs = append(errs, unix.Close(fd))
				fds[i] = -1
			}
		}
	}
	return errors.Join(errs...)
}

// ReceiveFDs are the receiving sockets' descriptors, for the caller's
// wait: when one is readable, TryRead its protocol. They stay the
// Conn's: closed by Close.
func (c *Conn) ReceiveFDs() []int {
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	return []int{c.recvFDs[0], c.recvFDs[1]}
}

// TryRead reads one datagram of protocol proto (ProtoVRRP or ProtoAH)
// into b if one is queued; ok is false when none is. oob must be at least
// 128 bytes for IPv6. It never blocks.
func (c *Conn) TryRead(proto int, b, oob []byte) (p Packet, ok bool, err error) {
	i := c.index(proto)
	if i < 0 {
		return Packet{}, false, fmt.Errorf("vrrpconn: no socket for protocol %d", proto)
	}
	var from unix.RawSockaddrInet6
	c.fdMu.RLock()
	fd := c.recvFDs[i]
	if fd < 0 {
		c.fdMu.RUnlock()
		return Packet{}, false, fmt.Errorf("vrrpconn: receive: %w", net.ErrClosed)
	}
	n, oobn, rerr := recvmsg(fd, b, oob, &from)
	c.fdMu.RUnlock()
	switch {
	case rerr == unix.EAGAIN || rerr == unix.EINTR:
		return Packet{}, false, nil
	case rerr != nil:
		return Packet{}, false, fmt.Errorf("vrrpconn: receive: %w", os.NewSyscallError("recvmsg", rerr))
	}
	p = Packet{Proto: proto, Data: b[:n], HopLimit: -1}
	if !c.v6 {
		// The IPv4 header is in Data: the codec reads src, dst and TTL from it.
		if n >= 20 {
			p.Src = netip.AddrFrom4([4]byte(b[12:16]))
			p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
			p.HopLimit = int(b[8])
		}
		return p, true, nil
	}
	if from.Family == unix.AF_INET6 {
		p.Src = netip.AddrFrom16(from.Addr)
	}
	parseIPv6Cmsgs(oob[:oobn], &p)
	return p, true, nil
}

// recvmsg is a non-blocking recvmsg(2) through the raw syscall entry: it
// returns at once (EAGAIN when nothing is queued) and so needs no
// cooperation from the scheduler, which would wake sysmon.
func recvmsg(fd int, b, oob []byte, from *unix.RawSockaddrInet6) (n, oobn int, err error) {
	var msg unix.Msghdr
	var iov unix.Iovec
	if len(b) > 0 {
		iov.Base = &b[0]
		iov.SetLen(len(b))
	}
	msg.Iov = &iov
	msg.SetIovlen(1)
	msg.Name = (*byte)(unsafe.Pointer(from))
	msg.Namelen = unix.SizeofSockaddrInet6
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	if e != 0 {
		return 0, 0, e
	}
	return int(r), int(msg.Controllen), nil
}

// parseIPv6Cmsgs reads IPV6_HOPLIMIT and IPV6_PKTINFO. The control message
// layout (header size, alignment) is the platform's, so it goes through
// x/sys/unix rather than fixed offsets.
func parseIPv6Cmsgs(oob []byte, p *Packet) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if m.Header.Level != unix.IPPROTO_IPV6 {
			continue
		}
		switch m.Header.Type {
		case unix.IPV6_HOPLIMIT:
			if len(m.Data) >= 4 {
				p.HopLimit = int(int32(binary.NativeEndian.Uint32(m.Data)))
			}
		case unix.IPV6_PKTINFO:
			if len(m.Data) >= 16 {
				p.Dst = netip.AddrFrom16([16]byte(m.Data[:16]))
			}
		}
	}
}

// index is proto's place in the socket arrays, -1 for another protocol.
func (c *Conn) index(proto int) int {
	for i, p := range c.protos {
		if p == proto {
			return i
		}
	}
	return -1
}

// Write sends one datagram of protocol proto to dst. For IPv4, pkt is the
// whole IPv4 packet (the kernel fills only what the header leaves zero: the
// checksum, and the identification when zero). For IPv6 it is the payload;
// the kernel builds the header from our source address and hop limit 255.
// The send does not block; when the socket's buffer is full (the device is
// not draining) it waits in poll(2) for room, until ctx is done or
// SetSendWait's bound, and tries once more.
func (c *Conn) Write(ctx context.Context, proto int, pkt []byte, dst netip.Addr) error {
	i := c.index(proto)
	if i < 0 {
		return fmt.Errorf("vrrpconn: no socket for protocol %d", proto)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vrrpconn: send to %s: %w", dst, err)
	}
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	fd := c.sendFDs[i]
	err := c.sendmsg(fd, pkt, dst)
	if err == unix.EAGAIN {
		err = c.waitRoom(ctx, fd, pkt, dst)
	}
	if errno, ok := err.(unix.Errno); ok {
		err = os.NewSyscallError("sendmsg", errno)
	}
	if err != nil {
		return fmt.Errorf("vrrpconn: send to %s: %w", dst, err)
	}
	return nil
}

// waitRoom waits in poll(2) for room in fd's send buffer, up to
// SetSendWait's bound or ctx's deadline, and sends pkt when there is. A
// signal (the daemon's children exit all the time: SIGCHLD) does not cut
// the wait short.
func (c *Conn) waitRoom(ctx context.Context, fd int, pkt []byte, dst netip.Addr) error {
	deadline := time.Now().Add(c.sendWait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return fmt.Errorf("no room in the socket buffer within %v: %w", c.sendWait, os.ErrDeadlineExceeded)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(max(left.Milliseconds(), 1)))
		if err == unix.EINTR || n == 0 {
			continue // the loop's first check says whether time is up
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		// Room, or an error the send reports (POLLERR, POLLHUP).
		if err := c.sendmsg(fd, pkt, dst); err != unix.EAGAIN {
			return err
		}
	}
}

// sendmsg is a non-blocking sendmsg(2) of pkt to dst on fd through the raw
// syscall entry (see recvmsg).
func (c *Conn) sendmsg(fd int, pkt []byte, dst netip.Addr) error {
	if fd < 0 {
		return unix.EBADF
	}
	if len(pkt) == 0 {
		return unix.EINVAL
	}
	var msg unix.Msghdr
	iov := unix.Iovec{Base: &pkt[0]}
	iov.SetLen(len(pkt))
	msg.Iov = &iov
	msg.SetIovlen(1)
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	if c.v6 {
		sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: dst.As16(), Scope_id: uint32(c.ifindex)}
		msg.Name, msg.Namelen = (*byte)(unsafe.Pointer(&sa6)), unix.SizeofSockaddrInet6
		msg.Control = &c.oob[0]
		msg.SetControllen(len(c.oob))
	} else {
		sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.As4()}
		msg.Name, msg.Namelen = (*byte)(unsafe.Pointer(&sa4)), unix.SizeofSockaddrInet4
	}
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	if e != 0 {
		return e
	}
	return nil
}

// pktinfo pins the IPv6 source address and interface of a send: the AH ICV
// and the VRRP checksum cover the source, so the kernel may not pick another.
// Built once at Open; the layout is the platform's (unix.Cmsghdr).
func pktinfo(src netip.Addr, ifindex int) []byte {
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_IPV6
	h.Type = unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	info.Addr = src.As16()
	info.Ifindex = uint32(ifindex)
	return b
}
