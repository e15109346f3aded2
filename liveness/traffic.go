package liveness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RxCounter sums the packets received on a set of interfaces: the
// traffic a quiet master watches (Config.Quiet). It asks rtnetlink for
// each interface's 64-bit link statistics alone (RTM_GETSTATS with only
// IFLA_STATS_LINK_64 in the filter: the kernel answers within the
// sendto(2), from the socket's own network namespace) and reads rx_packets,
// the first counter. /proc/net/snmp's ForwDatagrams would count
// forwarding alone, but formatting that file costs 26 µs a read (IPv6
// needs another, 30 µs); sysfs's rx_packets costs 2 µs but shows the
// namespace sysfs was mounted in, not the process's.
//
//	request:  nlmsghdr (16) | if_stats_msg (12): family, pad, ifindex, filter_mask = 1<<(IFLA_STATS_LINK_64-1)
//	reply:    nlmsghdr (16, RTM_NEWSTATS) | if_stats_msg (12) | nlattr (4, IFLA_STATS_LINK_64) | rtnl_link_stats64: rx_packets (u64), ...
//	          or nlmsghdr (NLMSG_ERROR) | errno (i32) | the request
type RxCounter struct {
	fd       int
	names    []string
	index    []int32 // 0: to resolve (the interface was gone)
	resolved time.Time
	seq      uint32
	req      [nlHdrLen + ifStatsMsgLen]byte
	buf      [1024]byte
}

const (
	nlHdrLen        = 16
	ifStatsMsgLen   = 12
	rtmGetStats     = 94     // RTM_GETSTATS
	rtmNewStats     = 92     // RTM_NEWSTATS
	iflaStatsLink64 = 1      // IFLA_STATS_LINK_64
	nlaTypeMask     = 0x3fff // an attribute's type without NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// OpenRxCounter opens an rtnetlink socket in the caller's network
// namespace for the named interfaces.
func OpenRxCounter(names []string) (*RxCounter, error) {
	if len(names) == 0 {
		return nil, errors.New("liveness: traffic counter: no interfaces")
	}
	c := &RxCounter{fd: -1, names: names, index: make([]int32, len(names))}
	for i, name := range names {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("liveness: traffic counter: %w", err)
		}
		c.index[i] = int32(ifi.Index)
	}
	c.resolved = time.Now()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("liveness: traffic counter: netlink: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("liveness: traffic counter: netlink bind: %w", err)
	}
	c.fd = fd
	// Check once that the kernel answers (RTM_GETSTATS is Linux 4.7+).
	if _, err := c.Read(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Read returns the sum of the interfaces' received packets. Its system
// calls are raw and non-blocking: the runtime's entry would wake its
// sysmon thread, and the kernel has queued the answer before sendto
// returns.
func (c *RxCounter) Read() (uint64, error) {
	var sum uint64
	for i := range c.names {
		if c.index[i] == 0 {
			if time.Since(c.resolved) < time.Second {
				return 0, fmt.Errorf("liveness: traffic counter: %s is gone", c.names[i])
			}
			c.resolved = time.Now()
			ifi, err := net.InterfaceByName(c.names[i])
			if err != nil {
				return 0, fmt.Errorf("liveness: traffic counter: %w", err)
			}
			c.index[i] = int32(ifi.Index)
		}
		v, err := c.read(c.index[i])
		if errors.Is(err, unix.ENODEV) {
			c.index[i] = 0 // resolved again by name, at most once a second
		}
		if err != nil {
			return 0, fmt.Errorf("liveness: traffic counter %s: %w", c.names[i], err)
		}
		sum += v
	}
	return sum, nil
}

func (c *RxCounter) read(index int32) (uint64, error) {
	c.seq++
	appendStatsRequest(c.req[:0], c.seq, index)
	var sa unix.RawSockaddrNetlink
	sa.Family = unix.AF_NETLINK
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(&c.req[0])), uintptr(len(c.req)), 0, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrNetlink)
	if errno != 0 {
		return 0, fmt.Errorf("sendto: %w", errno)
	}
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&c.buf[0])), uintptr(len(c.buf)), unix.MSG_DONTWAIT, 0, 0)
		if errno != 0 {
			return 0, fmt.Errorf("recvfrom: %w", errno)
		}
		v, err := parseStatsReply(c.buf[:r], c.seq)
		if errors.Is(err, errStaleReply) {
			continue // an answer to an earlier, failed read
		}
		return v, err
	}
}

// appendStatsRequest appends an RTM_GETSTATS request for one interface's
// 64-bit link statistics.
func appendStatsRequest(b []byte, seq uint32, index int32) []byte {
	ne := binary.NativeEndian
	b = ne.AppendUint32(b, nlHdrLen+ifStatsMsgLen)
	b = ne.AppendUint16(b, rtmGetStats)
	b = ne.AppendUint16(b, unix.NLM_F_REQUEST)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0) // to the kernel
	b = append(b, unix.AF_UNSPEC, 0, 0, 0)
	b = ne.AppendUint32(b, uint32(index))
	return ne.AppendUint32(b, 1<<(iflaStatsLink64-1))
}

var errStaleReply = errors.New("reply to another request")

// parseStatsReply reads rx_packets from an RTM_NEWSTATS answer to
// request seq, or the errno of an NLMSG_ERROR.
func parseStatsReply(b []byte, seq uint32) (uint64, error) {
	ne := binary.NativeEndian
	if len(b) < nlHdrLen {
		return 0, fmt.Errorf("netlink reply of %d bytes", len(b))
	}
	n := int(ne.Uint32(b))
	if n < nlHdrLen || n > len(b) {
		return 0, fmt.Errorf("netlink length %d in %d bytes", n, len(b))
	}
	if ne.Uint32(b[8:]) != seq {
		return 0, errStaleReply
	}
	b = b[:n]
	switch ne.Uint16(b[4:]) {
	case unix.NLMSG_ERROR:
		if len(b) < nlHdrLen+4 {
			return 0, errors.New("short netlink error")
		}
		if e := int32(ne.Uint32(b[nlHdrLen:])); e < 0 {
			return 0, unix.Errno(-e)
		}
		return 0, errors.New("netlink acknowledged without the statistics")
	case rtmNewStats:
	default:
		return 0, fmt.Errorf("netlink message type %d", ne.Uint16(b[4:]))
	}
	attrs := b[min(len(b), nlHdrLen+ifStatsMsgLen):]
	for len(attrs) >= 4 {
		alen := int(ne.Uint16(attrs))
		if alen < 4 || alen > len(attrs) {
			return 0, fmt.Errorf("netlink attribute length %d in %d bytes", alen, len(attrs))
		}
		if ne.Uint16(attrs[2:])&nlaTypeMask == iflaStatsLink64 {
			if alen < 4+8 {
				return 0, fmt.Errorf("IFLA_STATS_LINK_64 of %d bytes", alen)
			}
			return ne.Uint64(attrs[4:]), nil
		}
		attrs = attrs[min(len(attrs), (alen+3)&^3):]
	}
	return 0, errors.New("no IFLA_STATS_LINK_64 in the reply")
}

// Close closes the socket.
func (c *RxCounter) Close() error {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	return nil
}

// trafficSince turns two readings of the counter into the packets that
// were not the peer's own liveness messages on the second path (which may
// arrive on a watched interface). A counter that went backwards (an
// interface replaced) is a burst of traffic.
func trafficSince(prev, now, ours uint64) uint64 {
	switch {
	case now < prev:
		return trafficThreshold + 1
	case now-prev > ours:
		return now - prev - ours
	}
	return 0
}
