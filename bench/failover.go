// Package bench measures muros-had side by side with the daemons it replaces
// (keepalived for VRRP), on the lab pair of package lab: two firewalls in
// network namespaces, a client on the LAN and a server on the WAN.
//
// The failover figure is what a user of the path sees: lab.ProbeUDP sends a
// 20-byte numbered UDP datagram (format at lab.ProbeLen) from the client
// through the VIPs to an echo server every millisecond, and the gap is the
// longest time without any reply. The master is taken away at a random phase
// of the advert timer, either by a crash (all links down and SIGKILL: the
// backup waits for Master_Down_Interval, RFC 9568 section 6.1) or by a
// graceful stop (SIGTERM: a priority 0 advert, RFC 9568 section 6.4.3, and
// the backup waits for Skew_Time). The benchmarks themselves are in
// failover_test.go; the judgement of a run (targets, outcome checks) is in
// package lab, which the demo shares; this file holds statistics and /proc
// and capture parsing.
package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/muros/muros-had/lab"
)

// BackupPriority is the priority of the backup node (role backup): the
// skew of RFC 9568 section 6.1 follows from it.
const BackupPriority = 100

// Summary is the distribution of a set of samples.
type Summary struct {
	N             int
	Min, P50, Max time.Duration
}

// Summarize returns the median (the mean of the two middle samples for an
// even count), minimum and maximum of samples.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	p50 := s[n/2]
	if n%2 == 0 {
		p50 = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{N: n, Min: s[0], P50: p50, Max: s[n-1]}
}

// Millis converts d to float milliseconds, for b.ReportMetric.
func Millis(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// ErrProcStat is returned for a /proc/<pid>/stat that cannot be read.
var ErrProcStat = errors.New("bench: malformed /proc/<pid>/stat")

// ParseStatCPU returns utime + stime, in clock ticks, from the contents of
// /proc/<pid>/stat (proc(5)): "pid (comm) state ppid ...", where comm may
// hold spaces and parentheses, so fields are counted after the last ')'.
// utime and stime are fields 14 and 15, i.e. the 12th and 13th after comm.
func ParseStatCPU(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: no ')' after comm", ErrProcStat)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: %d fields after comm, want >= 13", ErrProcStat, len(f))
	}
	var sum uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrProcStat, err)
		}
		sum += v
	}
	return sum, nil
}

// UserHZ is the unit of the tick counts in /proc/<pid>/stat. The kernel
// exports them in USER_HZ, which is 100 on every architecture Linux
// supports today regardless of CONFIG_HZ.
const UserHZ = 100

// CPUPercent converts ticks used over wall time into % of one core.
func CPUPercent(ticks uint64, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return float64(ticks) / UserHZ / wall.Seconds() * 100
}

// ErrProcStatus is returned for a /proc/<pid>/status that cannot be read.
var ErrProcStatus = errors.New("bench: malformed /proc/<pid>/status")

// ParseVmRSS returns the resident set size, in KiB, from the contents of
// /proc/<pid>/status (proc(5): "VmRSS:\t  4012 kB"). A process without
// the line (a zombie, a kernel thread) has none: 0.
func ParseVmRSS(b []byte) (uint64, error) {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%w: VmRSS line %q", ErrProcStatus, bytes.TrimSpace(line))
		}
		v, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrProcStatus, err)
		}
		return v, nil
	}
	return 0, nil
}

// Timeline is where a failover's gap is spent, from captures on the
// backup's sync link (the master's adverts) and on the client's LAN port
// (the new owner's gratuitous ARP). Offsets are from the start of the
// probe; a zero value means "not seen".
type Timeline struct {
	// LastAdvert is the master's last advert with a priority above 0: the
	// backup's Master_Down timer runs from it.
	LastAdvert time.Duration
	// Priority0 is the master's first priority 0 advert (graceful stop).
	Priority0 time.Duration
	// Announce is the first gratuitous ARP for the LAN VIP after the
	// trigger: the backup has claimed the VIPs.
	Announce time.Duration
}

// Reasons a frame is not what a timeline looks for.
var (
	ErrFrameShort = errors.New("bench: frame too short")
	ErrNotIPv4    = errors.New("bench: not an IPv4 frame")
	ErrNotVRRP    = errors.New("bench: not a VRRP advert (IP protocol 112, or 51 carrying 112)")
	ErrNotARP     = errors.New("bench: not an Ethernet/IPv4 ARP frame")
	ErrNotGARP    = errors.New("bench: ARP but not gratuitous (sender IP != target IP)")
)

// ParseAdvertFrame returns the source address and priority of a VRRP
// advert in an Ethernet frame, plain or inside IPsec AH:
//
//	Ethernet: 0..5 dst MAC, 6..11 src MAC, 12..13 EtherType 0x0800
//	IPv4 (RFC 791), at 14: byte 0 low nibble IHL (x4 bytes),
//	    byte 9 protocol (112 VRRP, 51 AH), bytes 12..15 source
//	AH (RFC 4302) when protocol 51: byte 0 next header (112),
//	    byte 1 payload length (AH length in 4-byte words minus 2)
//	VRRP (RFC 9568 section 5.2 and RFC 3768 section 5.3): byte 0
//	    version/type, byte 1 VRID, byte 2 priority
func ParseAdvertFrame(b []byte) (src netip.Addr, priority uint8, err error) {
	if len(b) < 14+20 {
		return netip.Addr{}, 0, ErrFrameShort
	}
	if b[12] != 0x08 || b[13] != 0x00 || b[14]>>4 != 4 {
		return netip.Addr{}, 0, ErrNotIPv4
	}
	ihl := int(b[14]&0x0f) * 4
	if ihl < 20 || len(b) < 14+ihl {
		return netip.Addr{}, 0, ErrFrameShort
	}
	src = netip.AddrFrom4([4]byte(b[14+12 : 14+16]))
	proto, pl := b[14+9], b[14+ihl:]
	if proto == 51 {
		if len(pl) < 2 {
			return netip.Addr{}, 0, ErrFrameShort
		}
		if pl[0] != 112 {
			return netip.Addr{}, 0, ErrNotVRRP
		}
		ahLen := (int(pl[1]) + 2) * 4
		if len(pl) < ahLen {
			return netip.Addr{}, 0, ErrFrameShort
		}
		pl, proto = pl[ahLen:], 112
	}
	if proto != 112 {
		return netip.Addr{}, 0, ErrNotVRRP
	}
	if len(pl) < 3 {
		return netip.Addr{}, 0, ErrFrameShort
	}
	return src, pl[2], nil
}

// ParseGratuitousARP returns the announced address of a gratuitous ARP
// (request or reply whose sender and target protocol addresses are equal):
//
//	Ethernet: 12..13 EtherType 0x0806
//	ARP (RFC 826), at 14: 0..1 hardware type 1, 2..3 protocol 0x0800,
//	    4 hlen 6, 5 plen 4, 6..7 op, 8..13 sender MAC, 14..17 sender IP,
//	    18..23 target MAC, 24..27 target IP
func ParseGratuitousARP(b []byte) (netip.Addr, error) {
	if len(b) < 14+28 {
		return netip.Addr{}, ErrFrameShort
	}
	a := b[14:]
	if b[12] != 0x08 || b[13] != 0x06 || a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0 || a[4] != 6 || a[5] != 4 {
		return netip.Addr{}, ErrNotARP
	}
	sender, target := netip.AddrFrom4([4]byte(a[14:18])), netip.AddrFrom4([4]byte(a[24:28]))
	if sender != target {
		return netip.Addr{}, ErrNotGARP
	}
	return sender, nil
}

// FrameRejects counts frames a timeline skipped, by reason (most are
// simply other traffic: probes, ARP requests, the backup's own frames).
type FrameRejects map[string]int

// BuildTimeline finds the timeline of a failover in the frames captured on
// the backup's sync link (sync) and on the client's port (lan). master is
// the master's sync address, vip the LAN VIP, start the probe's start
// (frame times are wall clock), trigger the instant the master was taken
// away.
func BuildTimeline(sync, lan []lab.Frame, start time.Time, master, vip netip.Addr, trigger time.Duration, rejects FrameRejects) Timeline {
	var tl Timeline
	for _, f := range sync {
		at := f.At.Sub(start)
		src, prio, err := ParseAdvertFrame(f.Data)
		if err != nil {
			rejects[err.Error()]++
			continue
		}
		if src != master {
			continue
		}
		switch {
		case prio > 0:
			tl.LastAdvert = at
		case prio == 0 && tl.Priority0 == 0 && at >= trigger:
			tl.Priority0 = at
		}
	}
	for _, f := range lan {
		at := f.At.Sub(start)
		if at < trigger {
			continue
		}
		addr, err := ParseGratuitousARP(f.Data)
		if err != nil {
			rejects[err.Error()]++
			continue
		}
		if addr == vip {
			tl.Announce = at
			break
		}
	}
	return tl
}

// AddrEvent is one address change in a namespace, as `ip -ts monitor
// address` prints it.
type AddrEvent struct {
	At      time.Time
	Addr    netip.Addr
	Deleted bool
}

// ErrMonitorLine is returned for an `ip -ts monitor address` event line
// that cannot be read.
var ErrMonitorLine = errors.New("bench: malformed ip monitor line")

// ipMonitorTime is the stamp `ip -ts` puts before each event, in local
// time: [2026-12-07T07:29:03.477476].
const ipMonitorTime = "2006-01-02T15:04:05.000000"

// ParseIPMonitor reads the output of `ip -ts monitor address`:
//
//	[2026-12-07T07:29:03.477476] 3: v0    inet 10.99.0.1/24 scope global v0
//	       valid_lft forever preferred_lft forever
//	[2026-12-07T07:29:03.483399] Deleted 3: v0    inet 10.99.0.5/24 scope global secondary v0
//
// Continuation lines (leading blank) are skipped; stamps are read in loc.
// A last line without its newline may be cut short by the monitor's end
// and is skipped.
func ParseIPMonitor(text string, loc *time.Location) ([]AddrEvent, error) {
	var out []AddrEvent
	for line := range strings.Lines(text) {
		if !strings.HasSuffix(line, "\n") {
			break
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		stamp, rest, ok := strings.Cut(strings.TrimPrefix(line, "["), "] ")
		if !ok || !strings.HasPrefix(line, "[") {
			return nil, fmt.Errorf("%w: %q", ErrMonitorLine, line)
		}
		at, err := time.ParseInLocation(ipMonitorTime, stamp, loc)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrMonitorLine, line, err)
		}
		rest, deleted := strings.CutPrefix(rest, "Deleted ")
		f := strings.Fields(rest)
		// "3:" "v0" "inet" "10.99.0.1/24" ...
		if len(f) < 4 || !strings.HasSuffix(f[0], ":") {
			return nil, fmt.Errorf("%w: %q", ErrMonitorLine, line)
		}
		if f[2] != "inet" && f[2] != "inet6" {
			continue
		}
		p, err := netip.ParsePrefix(f[3])
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrMonitorLine, line, err)
		}
		out = append(out, AddrEvent{At: at, Addr: p.Addr(), Deleted: deleted})
	}
	return out, nil
}

// Holding is a node's hold of an address over a window: whether it held it
// at the start, and its changes (in time order).
type Holding struct {
	Initially bool
	Events    []AddrEvent
}

// held returns the sorted instants at which the hold of addr toggles
// inside (from, to), and whether addr is held at from.
func (h Holding) held(addr netip.Addr, from, to time.Time) (at bool, changes []time.Time, states []bool) {
	at = h.Initially
	for _, e := range h.Events {
		if e.Addr != addr {
			continue
		}
		if !e.At.After(from) {
			at = !e.Deleted
			continue
		}
		if e.At.Before(to) {
			changes = append(changes, e.At)
			states = append(states, !e.Deleted)
		}
	}
	return at, changes, states
}

// SplitBrain is how long two nodes both held the same address within a
// window, and when that first began (from the window's start; zero with
// Total zero).
type SplitBrain struct {
	Total, First time.Duration
}

// MeasureSplitBrain returns the time within [from, to) during which a and
// b both held at least one of addrs (the VIPs): each node's holding is its
// state at from and its address events.
func MeasureSplitBrain(a, b Holding, addrs []netip.Addr, from, to time.Time) SplitBrain {
	type edge struct {
		at    time.Time
		node  int
		addr  int
		holds bool
	}
	var edges []edge
	state := make([][2]bool, len(addrs))
	for i, addr := range addrs {
		for n, h := range []Holding{a, b} {
			at, changes, states := h.held(addr, from, to)
			state[i][n] = at
			for j, c := range changes {
				edges = append(edges, edge{c, n, i, states[j]})
			}
		}
	}
	slices.SortStableFunc(edges, func(x, y edge) int { return x.at.Compare(y.at) })
	both := func() bool {
		for _, s := range state {
			if s[0] && s[1] {
				return true
			}
		}
		return false
	}
	var out SplitBrain
	cur, since := both(), from
	first := cur // a split at from begins at 0
	for _, e := range edges {
		state[e.addr][e.node] = e.holds
		now := both()
		switch {
		case now && !cur:
			since = e.at
			if !first {
				out.First, first = e.at.Sub(from), true
			}
		case !now && cur:
			out.Total += e.at.Sub(since)
		}
		cur = now
	}
	if cur {
		out.Total += to.Sub(since)
	}
	return out
}

// ErrKeepalivedVersion is returned for `keepalived --version` output
// without a version line.
var ErrKeepalivedVersion = errors.New("bench: no version in keepalived --version output")

// ParseKeepalivedVersion returns the version in the first line of
// `keepalived --version` output: "Keepalived v2.4.3 (07/20,2026)" gives
// "2.4.3".
func ParseKeepalivedVersion(out string) (string, error) {
	first, _, _ := strings.Cut(out, "\n")
	f := strings.Fields(first)
	if len(f) < 2 || f[0] != "Keepalived" || !strings.HasPrefix(f[1], "v") || len(f[1]) < 2 {
		return "", fmt.Errorf("%w: %q", ErrKeepalivedVersion, first)
	}
	v := f[1][1:]
	for _, r := range v {
		if (r < '0' || r > '9') && r != '.' {
			return "", fmt.Errorf("%w: %q", ErrKeepalivedVersion, first)
		}
	}
	return v, nil
}

// IsolateScript is the nft -f script that makes a hung box silent: every
// IPv4/IPv6 packet in and out (prerouting, before conntrack, so forwarded
// ones too; output) and every ARP frame in and out dropped, links and
// carrier left up. table is the tables' name.
func IsolateScript(table string) string {
	return fmt.Sprintf(`table inet %[1]s {
	chain in { type filter hook prerouting priority raw - 10; policy drop; }
	chain out { type filter hook output priority raw - 10; policy drop; }
}
table arp %[1]s {
	chain in { type filter hook input priority 0; policy drop; }
	chain out { type filter hook output priority 0; policy drop; }
}
`, table)
}

// EventGap returns the longest silence of the client that overlaps the
// trigger [trigger, done] (offsets from the probe's start): between two
// replies in arrivals, or from 0 to the first, or from the last to end.
// That silence is the failover's, whatever stalls of the machine did to
// the rest of the run. With replies every millisecond some silence always
// overlaps the trigger; ok is false only without replies (or a trigger
// past end).
func EventGap(arrivals []time.Duration, trigger, done, end time.Duration) (gap, from time.Duration, ok bool) {
	if len(arrivals) == 0 {
		return 0, 0, false
	}
	a := slices.Clone(arrivals)
	slices.Sort(a)
	consider := func(lo, hi time.Duration) {
		if lo <= done && hi > trigger && hi-lo > gap {
			gap, from, ok = hi-lo, lo, true
		}
	}
	consider(0, a[0])
	for i := 1; i < len(a); i++ {
		consider(a[i-1], a[i])
	}
	if end > a[len(a)-1] {
		consider(a[len(a)-1], end)
	}
	return gap, from, ok
}
