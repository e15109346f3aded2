package liveness

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RxCounter sums the packets received on a set of interfaces: the
// traffic a quiet master watches (Config.Quiet). Where sysfs shows the
// caller's network namespace (a daemon started in it) it reads each
// interface's statistics/rx_packets, one pread(2) of about 2 µs on a
// descriptor kept open; otherwise (a process that entered the namespace
// with setns(2) and kept the sysfs it had) it reads the namespace's
// /proc/net/dev, opened from the calling thread, whose cost grows with
// the number of interfaces. Neither takes the RTNL lock: rtnetlink's
// RTM_GETSTATS does, and a heartbeat must never wait for another
// namespace's interface changes. /proc/net/snmp's ForwDatagrams would
// count forwarding alone but costs 26 µs a read, and IPv6 needs another.
type RxCounter struct {
	names []string
	// sysfs: one descriptor per interface; procFD: /proc/net/dev (-1:
	// sysfs is used).
	sysfs  []int
	procFD int
	buf    []byte
	vals   []uint64
}

// OpenRxCounter opens the counters of the named interfaces in the calling
// thread's network namespace.
func OpenRxCounter(names []string) (*RxCounter, error) {
	if len(names) == 0 {
		return nil, errors.New("liveness: traffic counter: no interfaces")
	}
	c := &RxCounter{names: names, procFD: -1, vals: make([]uint64, len(names))}
	ifis := make([]*net.Interface, len(names))
	for i, name := range names {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("liveness: traffic counter: %w", err)
		}
		ifis[i] = ifi
	}
	if c.openSysfs(ifis) {
		c.buf = make([]byte, 32)
	} else {
		fd, err := unix.Open("/proc/thread-self/net/dev", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("liveness: traffic counter: %w", err)
		}
		c.procFD, c.buf = fd, make([]byte, 64<<10)
	}
	if _, err := c.Read(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// openSysfs opens each interface's sysfs counter if sysfs shows it: the
// same ifindex and hardware address as netlink (which is always the
// caller's namespace) gives. False and nothing open otherwise.
func (c *RxCounter) openSysfs(ifis []*net.Interface) bool {
	for _, ifi := range ifis {
		dir := "/sys/class/net/" + ifi.Name + "/"
		idx, err := os.ReadFile(dir + "ifindex")
		if err != nil || string(bytes.TrimSpace(idx)) != fmt.Sprint(ifi.Index) {
			c.Close()
			return false
		}
		mac, err := os.ReadFile(dir + "address")
		if err != nil || !sameMAC(string(bytes.TrimSpace(mac)), ifi.HardwareAddr) {
			c.Close()
			return false
		}
		fd, err := unix.Open(dir+"statistics/rx_packets", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			c.Close()
			return false
		}
		c.sysfs = append(c.sysfs, fd)
	}
	return true
}

// sameMAC compares sysfs's address with netlink's; netlink gives none
// for an all-zero one (the loopback's).
func sameMAC(sysfs string, hw net.HardwareAddr) bool {
	m, err := net.ParseMAC(sysfs)
	if err != nil {
		return false
	}
	if len(hw) == 0 {
		return bytes.Count(m, []byte{0}) == len(m)
	}
	return bytes.Equal(m, hw)
}

// Read returns the sum of the interfaces' received packets. Its calls
// are raw: the runtime's system call entry would wake its sysmon thread,
// and neither file blocks.
func (c *RxCounter) Read() (uint64, error) {
	if c.procFD >= 0 {
		return c.readProc()
	}
	var sum uint64
	for i, fd := range c.sysfs {
		r, _, errno := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(fd), uintptr(unsafe.Pointer(&c.buf[0])), uintptr(len(c.buf)), 0, 0, 0)
		if errno != 0 {
			// ENODEV: the interface is gone (recreated ones have another
			// sysfs node: the daemon restarts its instances on such a
			// change).
			return 0, fmt.Errorf("liveness: traffic counter %s: %w", c.names[i], errno)
		}
		v, err := parseCounter(c.buf[:r])
		if err != nil {
			return 0, fmt.Errorf("liveness: traffic counter %s: %w", c.names[i], err)
		}
		sum += v
	}
	return sum, nil
}

func (c *RxCounter) readProc() (uint64, error) {
	n := 0
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(c.procFD), uintptr(unsafe.Pointer(&c.buf[n])), uintptr(len(c.buf)-n), uintptr(n), 0, 0)
		if errno != 0 {
			return 0, fmt.Errorf("liveness: traffic counter: /proc/net/dev: %w", errno)
		}
		if r == 0 {
			break
		}
		if n += int(r); n == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...) // many interfaces: read it whole
		}
	}
	if err := parseNetDev(c.buf[:n], c.names, c.vals); err != nil {
		return 0, fmt.Errorf("liveness: traffic counter: %w", err)
	}
	var sum uint64
	for _, v := range c.vals {
		sum += v
	}
	return sum, nil
}

// Close closes the descriptors.
func (c *RxCounter) Close() error {
	for _, fd := range c.sysfs {
		unix.Close(fd)
	}
	c.sysfs = nil
	if c.procFD >= 0 {
		unix.Close(c.procFD)
		c.procFD = -1
	}
	return nil
}

// parseCounter parses a sysfs counter: decimal digits and a newline.
func parseCounter(b []byte) (uint64, error) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) == 0 || len(b) > 20 {
		return 0, fmt.Errorf("counter %q: not a number", b)
	}
	var v uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, fmt.Errorf("counter %q: not a number", b)
		}
		d := uint64(ch - '0')
		if v > (^uint64(0)-d)/10 {
			return 0, fmt.Errorf("counter %q: overflows", b)
		}
		v = v*10 + d
	}
	return v, nil
}

// parseNetDev fills vals[i] with the received packets of names[i] from
// /proc/net/dev: two header lines, then one line per interface,
//
//	name: rx_bytes rx_packets rx_errs ... (16 counters)
//
// (a long name runs into its colon). An interface missing is an error.
func parseNetDev(b []byte, names []string, vals []uint64) error {
	found := 0
	for line := range bytes.Lines(b) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue // a header
		}
		name = bytes.TrimSpace(name)
		i := -1
		for j, n := range names {
			if string(name) == n {
				i = j
				break
			}
		}
		if i < 0 {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) < 2 {
			return fmt.Errorf("/proc/net/dev: %s: %d fields", name, len(fields))
		}
		v, err := parseCounter(fields[1])
		if err != nil {
			return fmt.Errorf("/proc/net/dev: %s: %w", name, err)
		}
		vals[i] = v
		found++
	}
	if found != len(names) {
		return fmt.Errorf("/proc/net/dev: %d of %d interfaces", found, len(names))
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
