package vip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VIP is one virtual address: Prefix (address and prefix length, e.g.
// 203.0.113.1/24) on the parent Interface, owned by virtual router VRID.
type VIP struct {
	Interface string
	Prefix    netip.Prefix
	VRID      uint8
}

func (v VIP) String() string { return fmt.Sprintf("%s on %s (vrid %d)", v.Prefix, v.Interface, v.VRID) }

// Config is what a Manager needs.
type Config struct {
	VIPs []VIP
	// VirtualMAC puts each VIP on a macvlan of its interface named
	// "vmac4.<vrid>" / "vmac6.<vrid>" carrying the RFC 9568 virtual MAC, and
	// announces that MAC.
	VirtualMAC bool
	// MacvlanMode of the virtual-MAC interfaces; 0 means private.
	MacvlanMode netlink.MacvlanMode
	// LabelSuffix tags IPv4 VIPs with the label "<ifname>:<suffix>"; empty
	// means "vip".
	LabelSuffix string
	// NoPrefixRoute adds the VIPs with IFA_F_NOPREFIXROUTE.
	NoPrefixRoute bool
	// Schedule of the announcements; the zero value means DefaultSchedule.
	Schedule Schedule
	// Router sets the R flag of neighbour advertisements: the node forwards.
	Router bool
	// Enter runs fn with the calling OS thread in the namespace of the
	// handle, for opening the packet and ICMPv6 sockets (lab.Netns.Do has
	// this signature). Nil means the namespace the process runs in.
	Enter func(fn func() error) error
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Reason names why an announcement was not sent.
type Reason int

// Reasons counted in Stats.Failures.
const (
	ReasonARPWrite Reason = iota // the packet socket refused a gratuitous ARP frame
	ReasonNAWrite                // the ICMPv6 socket refused a neighbour advertisement
	numReasons
)

func (r Reason) String() string {
	switch r {
	case ReasonARPWrite:
		return "arp_write"
	case ReasonNAWrite:
		return "na_write"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Stats are the Manager's counters.
type Stats struct {
	Rounds    uint64            // announcement rounds run
	ARPFrames uint64            // gratuitous ARP frames sent
	NAs       uint64            // neighbour advertisements sent
	Failures  map[string]uint64 // frames not sent, by Reason
}

// Errors of the Manager.
var (
	ErrNotClaimed = errors.New("vip: VIPs are not claimed")
	ErrClaimed    = errors.New("vip: VIPs are claimed")
)

// Removed is something ReleaseStale deleted: an address (Prefix valid) or a
// virtual-MAC interface (Prefix zero).
type Removed struct {
	Interface string
	Prefix    netip.Prefix
}

// Manager adds, removes and announces the VIPs in the namespace of its
// netlink handle. Its methods are safe for concurrent use.
type Manager struct {
	h   *netlink.Handle
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	claimed bool
	anns    []announcement // read without mu only by the announcer goroutine
	conns   []*ifaceConns
	stop    context.CancelFunc
	wg      sync.WaitGroup

	rounds, arpFrames, nas atomic.Uint64
	failures               [numReasons]atomic.Uint64
}

// New validates cfg and returns a Manager using h (see netlink.NewHandleAt).
func New(h *netlink.Handle, cfg Config) (*Manager, error) {
	if h == nil {
		return nil, errors.New("vip: nil netlink handle")
	}
	if cfg.Schedule == (Schedule{}) {
		cfg.Schedule = DefaultSchedule()
	}
	if cfg.LabelSuffix == "" {
		cfg.LabelSuffix = "vip"
	}
	if cfg.MacvlanMode == 0 {
		cfg.MacvlanMode = netlink.MACVLAN_MODE_PRIVATE
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Enter == nil {
		cfg.Enter = func(fn func() error) error { return fn() }
	}
	var errs []error
	if err := cfg.Schedule.Validate(); err != nil {
		errs = append(errs, err)
	}
	if strings.ContainsAny(cfg.LabelSuffix, ": /") {
		errs = append(errs, fmt.Errorf("vip: label suffix %q: no ':', '/' or space", cfg.LabelSuffix))
	}
	for i, v := range cfg.VIPs {
		if v.Interface == "" || len(v.Interface) > unix.IFNAMSIZ-1 {
			errs = append(errs, fmt.Errorf("vip: vips[%d]: interface name %q: 1..15 bytes", i, v.Interface))
		}
		if !v.Prefix.IsValid() || v.Prefix.Addr().Zone() != "" || v.Prefix.Addr().Is4In6() {
			errs = append(errs, fmt.Errorf("vip: vips[%d]: invalid prefix %v", i, v.Prefix))
		}
		if cfg.VirtualMAC && v.VRID == 0 {
			errs = append(errs, fmt.Errorf("vip: vips[%d]: a virtual MAC needs a VRID 1..255", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Manager{h: h, cfg: cfg, log: cfg.Logger}, nil
}

// vmacName is the virtual-MAC interface of v: "vmac4.<vrid>" or "vmac6.<vrid>".
func vmacName(v VIP) string {
	if v.Prefix.Addr().Is6() {
		return fmt.Sprintf("vmac6.%d", v.VRID)
	}
	return fmt.Sprintf("vmac4.%d", v.VRID)
}

func isVMACName(name string) bool {
	return strings.HasPrefix(name, "vmac4.") || strings.HasPrefix(name, "vmac6.")
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// addr is the netlink address of v on the interface named ifName.
func (m *Manager) addr(v VIP, ifName string) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(v.Prefix)}
	if v.Prefix.Addr().Is4() {
		if l := ifName + ":" + m.cfg.LabelSuffix; len(l) <= unix.IFNAMSIZ-1 {
			a.Label = l
		}
	} else {
		a.Flags |= unix.IFA_F_NODAD
	}
	if m.cfg.NoPrefixRoute {
		a.Flags |= unix.IFA_F_NOPREFIXROUTE
	}
	return a
}

// Claim makes this node the owner of every VIP: it creates the virtual-MAC
// interfaces if configured, adds the addresses (an address already present
// is fine) and starts the announcement schedule, restarting it if Claim was
// already called. A VIP that cannot be added is reported in the error; the
// others are still added and announced.
func (m *Manager) Claim(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopAnnouncer()
	m.claimed = true

	var errs []error
	var anns []announcement
	for _, v := range m.cfg.VIPs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("vip: claim: %w", err))
			break
		}
		link, err := m.addVIP(v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		a, err := m.announcementFor(v, link)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		anns = append(anns, a)
	}
	anns, err := m.openConns(anns)
	if err != nil {
		errs = append(errs, err)
	}
	m.anns = anns
	m.startAnnouncer()
	return errors.Join(errs...)
}

// SetSchedule replaces the announcement schedule (a reload). It applies
// from the next Claim; an announcer already running keeps its schedule, so
// a reload sends no burst of its own.
func (m *Manager) SetSchedule(s Schedule) error {
	if s == (Schedule{}) {
		s = DefaultSchedule()
	}
	if err := s.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg.Schedule = s
	return nil
}

// addVIP adds v and returns the link that carries it.
func (m *Manager) addVIP(v VIP) (netlink.Link, error) {
	link, err := m.h.LinkByName(v.Interface)
	if err != nil {
		return nil, fmt.Errorf("vip: claim %s: interface: %w", v, err)
	}
	if m.cfg.VirtualMAC {
		if link, err = m.ensureVMAC(link, v); err != nil {
			return nil, fmt.Errorf("vip: claim %s: %w", v, err)
		}
		// Both the parent and every virtual-MAC interface receive each
		// ARP request; only the interface holding the VIP may answer.
		for _, ifName := range []string{v.Interface, link.Attrs().Name} {
			if err := m.ignoreForeignARP(ifName); err != nil {
				return nil, fmt.Errorf("vip: claim %s: %w", v, err)
			}
		}
	}
	if err := m.h.AddrAdd(link, m.addr(v, link.Attrs().Name)); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("vip: claim %s: add address to %s: %w", v, link.Attrs().Name, err)
	}
	return link, nil
}

// ensureVMAC returns the up virtual-MAC macvlan of v on parent, creating it
// (or replacing one with the wrong MAC, parent or type).
func (m *Manager) ensureVMAC(parent netlink.Link, v VIP) (netlink.Link, error) {
	name := vmacName(v)
	mac := VirtualMAC(v.VRID, v.Prefix.Addr().Is6())
	l, err := m.h.LinkByName(name)
	switch {
	case err == nil:
		if _, ok := l.(*netlink.Macvlan); ok && bytes.Equal(l.Attrs().HardwareAddr, mac) &&
			l.Attrs().ParentIndex == parent.Attrs().Index {
			if err := m.h.LinkSetUp(l); err != nil {
				return nil, fmt.Errorf("set %s up: %w", name, err)
			}
			return l, nil
		}
		m.log.Warn("replacing mismatched virtual-MAC interface", "name", name, "mac", l.Attrs().HardwareAddr, "type", l.Type())
		if err := m.h.LinkDel(l); err != nil && !isLinkNotFound(err) {
			return nil, fmt.Errorf("delete mismatched %s: %w", name, err)
		}
	case !isLinkNotFound(err):
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: parent.Attrs().Index, HardwareAddr: mac},
		Mode:      m.cfg.MacvlanMode,
	}
	if err := m.h.LinkAdd(mv); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create macvlan %s (%s) on %s: %w", name, mac, parent.Attrs().Name, err)
	}
	if l, err = m.h.LinkByName(name); err != nil {
		return nil, fmt.Errorf("look up new %s: %w", name, err)
	}
	if err := m.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	return l, nil
}

// ignoreForeignARP keeps the parent of a virtual-MAC interface, and the
// other virtual-MAC interfaces on it, from handing out their MAC for a VIP
// they do not hold, as keepalived does:
//   - arp_ignore=1: Linux answers ARP for any local address on any
//     interface, so the parent (or vmac6.N) would answer requests for the
//     VIP with its own MAC, racing vmac4.N; with 1 an interface answers only
//     for its own addresses.
//   - arp_announce=2: replies leave through the parent (the parent's prefix
//     route comes first) and its ARP requests would carry the VIP as sender
//     address, teaching every host the parent's MAC; with 2 they carry the
//     parent's own address.
//
// The values stay on release: in this mode the parent never holds a VIP,
// and the virtual-MAC interfaces are deleted.
func (m *Manager) ignoreForeignARP(parent string) error {
	dir := "/proc/sys/net/ipv4/conf/" + parent + "/"
	err := m.cfg.Enter(func() error {
		return errors.Join(os.WriteFile(dir+"arp_ignore", []byte("1"), 0o644),
			os.WriteFile(dir+"arp_announce", []byte("2"), 0o644))
	})
	if err != nil {
		return fmt.Errorf("set arp_ignore=1 arp_announce=2 on %s: %w", parent, err)
	}
	return nil
}

// Release gives the VIPs up: it stops the announcements, removes the
// addresses (a missing address or interface is fine) and deletes the
// virtual-MAC interfaces.
func (m *Manager) Release(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopAnnouncer()
	// The announcement sockets stay open for the next Claim: opening them
	// there would delay a takeover's first announcement, and closing an
	// AF_PACKET socket here waits for an RCU grace period (about 10 ms)
	// that a graceful stop should not spend. Close closes them; a Claim
	// closes those whose interface is gone (a deleted virtual MAC).
	m.anns = nil
	m.claimed = false
	var errs []error
	for _, v := range m.cfg.VIPs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("vip: release: %w", err))
			break
		}
		ifName := v.Interface
		if m.cfg.VirtualMAC {
			ifName = vmacName(v)
		}
		// No label on delete: the kernel would then only delete an address
		// with that label, and a VIP added by hand must go too.
		a := m.addr(v, ifName)
		a.Label = ""
		if err := m.delAddr(ifName, a); err != nil {
			errs = append(errs, fmt.Errorf("vip: release %s: %w", v, err))
		}
		if m.cfg.VirtualMAC {
			if err := m.delLink(ifName); err != nil {
				errs = append(errs, fmt.Errorf("vip: release %s: %w", v, err))
			}
		}
	}
	return errors.Join(errs...)
}

// delAddr removes a from the interface named ifName; absence is success.
func (m *Manager) delAddr(ifName string, a *netlink.Addr) error {
	link, err := m.h.LinkByName(ifName)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifName, err)
	}
	err = m.h.AddrDel(link, a)
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove %s from %s: %w", a.IPNet, ifName, err)
	}
	return nil
}

func (m *Manager) delLink(name string) error {
	l, err := m.h.LinkByName(name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := m.h.LinkDel(l); err != nil && !isLinkNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// ReleaseStale removes what a crashed instance may have left: every
// configured VIP address found on its interface or virtual-MAC interface,
// every IPv4 address carrying our label, and every virtual-MAC interface
// ("vmac4.N"/"vmac6.N" with an RFC 9568 MAC). A backup calls it at start,
// before anything is claimed.
func (m *Manager) ReleaseStale(ctx context.Context) ([]Removed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claimed {
		return nil, fmt.Errorf("vip: release stale: %w", ErrClaimed)
	}
	links, err := m.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("vip: release stale: list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	want := make(map[netip.Addr]bool, len(m.cfg.VIPs))
	onIf := make(map[string]bool) // interfaces a configured VIP may sit on
	for _, v := range m.cfg.VIPs {
		want[v.Prefix.Addr()] = true
		onIf[v.Interface] = true
		onIf[vmacName(v)] = true
	}
	var removed []Removed
	var errs []error
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if err := ctx.Err(); err != nil {
			return removed, fmt.Errorf("vip: release stale: %w", err)
		}
		addrs, err := m.h.AddrList(nil, family)
		if err != nil {
			errs = append(errs, fmt.Errorf("vip: release stale: list addresses: %w", err))
			continue
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			bits, _ := a.Mask.Size()
			ifName := names[a.LinkIndex]
			ours := (want[ip] && onIf[ifName]) ||
				(family == netlink.FAMILY_V4 && a.Label != "" && strings.HasSuffix(a.Label, ":"+m.cfg.LabelSuffix))
			if !ours {
				continue
			}
			del := a
			if err := m.h.AddrDel(nil, &del); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("vip: release stale: remove %s from %s: %w", a.IPNet, ifName, err))
				continue
			}
			p := netip.PrefixFrom(ip, bits)
			m.log.Info("removed stale VIP", "address", p, "interface", ifName)
			removed = append(removed, Removed{Interface: ifName, Prefix: p})
		}
	}
	for _, l := range links {
		if _, ok := l.(*netlink.Macvlan); !ok || !isVMACName(l.Attrs().Name) || !isVirtualMAC(l.Attrs().HardwareAddr) {
			continue
		}
		if err := m.h.LinkDel(l); err != nil && !isLinkNotFound(err) {
			errs = append(errs, fmt.Errorf("vip: release stale: delete %s: %w", l.Attrs().Name, err))
			continue
		}
		m.log.Info("removed stale virtual-MAC interface", "interface", l.Attrs().Name)
		removed = append(removed, Removed{Interface: l.Attrs().Name})
	}
	return removed, errors.Join(errs...)
}

// Announce runs one announcement round now, outside the schedule (for
// example after a tracked link came back). It fails unless claimed.
func (m *Manager) Announce(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.claimed {
		return fmt.Errorf("vip: announce: %w", ErrNotClaimed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vip: announce: %w", err)
	}
	m.round()
	return nil
}

// Claimed reports whether the VIPs are claimed.
func (m *Manager) Claimed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.claimed
}

// Close stops the announcements and closes the sockets without touching
// the addresses (use Release to give them up).
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopAnnouncer()
	m.closeConns()
	m.anns = nil
	return nil
}

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	s := Stats{
		Rounds:    m.rounds.Load(),
		ARPFrames: m.arpFrames.Load(),
		NAs:       m.nas.Load(),
		Failures:  make(map[string]uint64, numReasons),
	}
	for r := range numReasons {
		s.Failures[r.String()] = m.failures[r].Load()
	}
	return s
}

func (m *Manager) startAnnouncer() {
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	sched := m.cfg.Schedule
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		sched.run(ctx, m.round)
	}()
}

func (m *Manager) stopAnnouncer() {
	if m.stop != nil {
		m.stop()
		m.stop = nil
	}
	m.wg.Wait()
}
