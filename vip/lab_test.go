package vip

// Lab tests: a firewall namespace (fw, interface lan0) and a host namespace
// (host, interface eth0) joined by a veth pair. They need root and fail,
// never skip, without it (lab.Require).

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/mdlayher/packet"
	"github.com/muros/muros-had/lab"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

var (
	vip4     = netip.MustParsePrefix("192.0.2.1/24")
	vip6     = netip.MustParsePrefix("2001:db8::1/64")
	staleMAC = "02:00:00:00:00:99"
)

type vipLab struct {
	fw, host   *lab.Netns
	fwH, hostH *netlink.Handle
	fwMAC      net.HardwareAddr
}

func handleIn(t testing.TB, ns *lab.Netns) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns.Name, err)
	}
	t.Cleanup(h.Close)
	return h
}

func newVIPLab(t testing.TB) *vipLab {
	t.Helper()
	l := &vipLab{fw: lab.NewNetnsT(t, "vipfw"), host: lab.NewNetnsT(t, "viphost")}
	if err := lab.Veth(l.fw, "lan0", l.host, "eth0"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		ns   *lab.Netns
		ifc  string
		addr string
	}{
		{l.fw, "lan0", "192.0.2.2/24"}, {l.fw, "lan0", "2001:db8::2/64"},
		{l.host, "eth0", "192.0.2.10/24"}, {l.host, "eth0", "2001:db8::10/64"},
	} {
		if err := a.ns.AddAddr(a.ifc, netip.MustParsePrefix(a.addr)); err != nil {
			t.Fatal(err)
		}
	}
	l.fwH, l.hostH = handleIn(t, l.fw), handleIn(t, l.host)
	link, err := l.fwH.LinkByName("lan0")
	if err != nil {
		t.Fatal(err)
	}
	l.fwMAC = link.Attrs().HardwareAddr
	return l
}

func (l *vipLab) manager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	cfg.Enter = l.fw.Do
	cfg.Logger = quietLogger()
	m, err := New(l.fwH, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// addrsOn lists the addresses of an interface of fw as "prefix label".
func addrsOn(t *testing.T, h *netlink.Handle, ifName string) []string {
	t.Helper()
	link, err := h.LinkByName(ifName)
	if err != nil {
		t.Fatalf("link %s: %v", ifName, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		s := a.IPNet.String()
		if a.Label != "" && a.Label != ifName {
			s += " " + a.Label
		}
		if a.Flags&unix.IFA_F_NODAD != 0 {
			s += " nodad"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func TestLabClaimReleaseIdempotent(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	m := l.manager(t, Config{VIPs: []VIP{{"lan0", vip4, 10}, {"lan0", vip6, 11}}, Schedule: Schedule{Repeat: 1}})
	ctx := t.Context()
	base := []string{"192.0.2.2/24", "2001:db8::2/64 nodad"}
	claimed := []string{"192.0.2.1/24 lan0:vip", "192.0.2.2/24", "2001:db8::1/64 nodad", "2001:db8::2/64 nodad"}

	for i := range 2 {
		if err := m.Claim(ctx); err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		if diff := cmp.Diff(claimed, addrsOn(t, l.fwH, "lan0")); diff != "" {
			t.Fatalf("after claim %d (-want +got):\n%s", i, diff)
		}
	}
	for i := range 2 {
		if err := m.Release(ctx); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		if diff := cmp.Diff(base, addrsOn(t, l.fwH, "lan0")); diff != "" {
			t.Fatalf("after release %d (-want +got):\n%s", i, diff)
		}
	}
	// An address already there (added by hand) does not fail the claim.
	if err := l.fw.AddAddr("lan0", vip4); err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(ctx); err != nil {
		t.Fatalf("claim over an existing address: %v", err)
	}
	if err := m.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(base, addrsOn(t, l.fwH, "lan0")); diff != "" {
		t.Fatalf("after the last release (-want +got):\n%s", diff)
	}
	// A VIP on a missing interface is an error naming it; release is not.
	bad := l.manager(t, Config{VIPs: []VIP{{"nosuch0", netip.MustParsePrefix("198.51.100.1/24"), 12}}})
	if err := bad.Claim(ctx); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("claim on a missing interface: %v", err)
	}
	if err := bad.Release(ctx); err != nil {
		t.Errorf("release on a missing interface: %v", err)
	}
}

func TestLabReleaseStale(t *testing.T) {
	l := newVIPLab(t)
	ctx := t.Context()
	cfg := Config{VIPs: []VIP{{"lan0", vip4, 10}, {"lan0", vip6, 11}}, Schedule: Schedule{Repeat: 1}}
	crashed := l.manager(t, cfg)
	if err := crashed.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	crashed.Close() // a crash: the addresses stay
	// Left by an older configuration: a labelled VIP no longer configured
	// and a virtual-MAC interface. An operator's own address must stay.
	l.fw.MustRun(t, "ip", "addr", "add", "192.0.2.77/24", "dev", "lan0", "label", "lan0:vip")
	l.fw.MustRun(t, "ip", "addr", "add", "192.0.2.88/24", "dev", "lan0")
	l.fw.MustRun(t, "ip", "link", "add", "vmac4.9", "link", "lan0", "address", "00:00:5e:00:01:09", "type", "macvlan", "mode", "private")

	m := l.manager(t, cfg)
	removed, err := m.ReleaseStale(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Removed{
		{"lan0", netip.MustParsePrefix("192.0.2.1/24")},
		{"lan0", netip.MustParsePrefix("192.0.2.77/24")},
		{"lan0", netip.MustParsePrefix("2001:db8::1/64")},
		{"vmac4.9", netip.Prefix{}},
	}
	less := func(a, b Removed) bool { return a.Interface+a.Prefix.String() < b.Interface+b.Prefix.String() }
	if diff := cmp.Diff(want, removed, cmpopts.SortSlices(less), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"192.0.2.2/24", "192.0.2.88/24", "2001:db8::2/64 nodad"}, addrsOn(t, l.fwH, "lan0")); diff != "" {
		t.Errorf("addresses left (-want +got):\n%s", diff)
	}
	if _, err := l.fwH.LinkByName("vmac4.9"); !isLinkNotFound(err) {
		t.Errorf("vmac4.9 still there: %v", err)
	}
	again, err := m.ReleaseStale(ctx)
	if err != nil || len(again) != 0 {
		t.Errorf("second ReleaseStale: removed %v, err %v", again, err)
	}
	if err := m.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReleaseStale(ctx); !errors.Is(err, ErrClaimed) {
		t.Errorf("ReleaseStale while claimed: %v, want ErrClaimed", err)
	}
}

// capture is an AF_PACKET socket in a namespace seeing every frame of one
// interface.
type capture struct{ c *packet.Conn }

func startCapture(t *testing.T, ns *lab.Netns, ifName string) *capture {
	t.Helper()
	var c *packet.Conn
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", ifName, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return &capture{c: c}
}

// until reads frames until done says it has enough or timeout passes (a
// bound on waiting, not a measurement), and returns the frames.
func (c *capture) until(t *testing.T, timeout time.Duration, done func(frame []byte) bool) {
	t.Helper()
	if err := c.c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		n, _, err := c.c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("capture: the expected frames did not arrive within %s", timeout)
		}
		if err != nil {
			t.Fatal(err)
		}
		if done(slices.Clone(buf[:n])) {
			return
		}
	}
}

// neighbour returns the link-layer address the host has for ip.
func neighbour(t *testing.T, h *netlink.Handle, ifName string, ip netip.Addr) string {
	t.Helper()
	link, err := h.LinkByName(ifName)
	if err != nil {
		t.Fatal(err)
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	neighs, err := h.NeighList(link.Attrs().Index, fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

func TestLabGratuitousARP(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	// The host knows the VIP at another MAC, as after the old master.
	l.host.MustRun(t, "ip", "neigh", "replace", vip4.Addr().String(), "lladdr", staleMAC, "dev", "eth0", "nud", "stale")
	capt := startCapture(t, l.host, "eth0")
	m := l.manager(t, Config{VIPs: []VIP{{"lan0", vip4, 10}}, Schedule: Schedule{Repeat: 3, Interval: 50 * time.Millisecond}})
	if err := m.Claim(t.Context()); err != nil {
		t.Fatal(err)
	}
	mac := l.fwMAC.String()
	wantReq := arpView{EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: mac, Op: 1, SenderMAC: mac, SenderIP: vip4.Addr(), TargetMAC: "00:00:00:00:00:00", TargetIP: vip4.Addr()}
	wantRep := arpView{EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: mac, Op: 2, SenderMAC: mac, SenderIP: vip4.Addr(), TargetMAC: "ff:ff:ff:ff:ff:ff", TargetIP: vip4.Addr()}
	var reqs, reps int
	capt.until(t, 5*time.Second, func(f []byte) bool {
		v, err := decodeARPFrame(f)
		if err != nil || v.SenderIP != vip4.Addr() {
			return false
		}
		switch v.Op {
		case 1:
			reqs++
			if diff := cmp.Diff(wantReq, v, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		case 2:
			reps++
			if diff := cmp.Diff(wantRep, v, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		}
		if len(f) != ARPFrameLen {
			t.Errorf("frame of %d bytes, want %d", len(f), ARPFrameLen)
		}
		return reqs >= 3 && reps >= 3
	})
	if got := neighbour(t, l.hostH, "eth0", vip4.Addr()); got != mac {
		t.Errorf("host neighbour entry for %s: %q, want our MAC %s", vip4.Addr(), got, mac)
	}
	l.host.MustPing(t, vip4.Addr())
	if err := m.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := m.Stats()
	if st.Rounds != 3 || st.ARPFrames != 6 || st.Failures["arp_write"] != 0 {
		t.Errorf("stats %+v, want 3 rounds, 6 ARP frames, no failures", st)
	}
}

func TestLabRefresh(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	capt := startCapture(t, l.host, "eth0")
	m := l.manager(t, Config{VIPs: []VIP{{"lan0", vip4, 10}}, Schedule: Schedule{Repeat: 1, Refresh: 50 * time.Millisecond}})
	if err := m.Claim(t.Context()); err != nil {
		t.Fatal(err)
	}
	var reqs int
	capt.until(t, 5*time.Second, func(f []byte) bool {
		if v, err := decodeARPFrame(f); err == nil && v.SenderIP == vip4.Addr() && v.Op == 1 {
			reqs++
		}
		return reqs >= 4 // the takeover round and three refreshes
	})
	if err := m.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Once released nothing more is announced.
	sent := m.Stats().ARPFrames
	if err := m.Announce(t.Context()); !errors.Is(err, ErrNotClaimed) {
		t.Errorf("Announce after release: %v, want ErrNotClaimed", err)
	}
	if m.Stats().ARPFrames != sent {
		t.Error("frames sent after release")
	}
}

func TestLabUnsolicitedNA(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	l.host.MustRun(t, "ip", "-6", "neigh", "replace", vip6.Addr().String(), "lladdr", staleMAC, "dev", "eth0", "nud", "stale")
	capt := startCapture(t, l.host, "eth0")
	m := l.manager(t, Config{VIPs: []VIP{{"lan0", vip6, 10}}, Router: true, Schedule: Schedule{Repeat: 2, Interval: 50 * time.Millisecond}})
	if err := m.Claim(t.Context()); err != nil {
		t.Fatal(err)
	}
	mac := l.fwMAC.String()
	want := naPacket{
		EthSrc: mac, EthDst: "33:33:00:00:00:01",
		Src: vip6.Addr(), Dst: netip.MustParseAddr("ff02::1"), HopLimit: 255, ChecksumOK: true,
		NA: naView{Target: vip6.Addr(), Router: true, Override: true, TargetLL: mac, Options: 1},
	}
	var seen int
	capt.until(t, 5*time.Second, func(f []byte) bool {
		p, ok := decodeNAFrame(f)
		if !ok || p.NA.Target != vip6.Addr() {
			return false
		}
		seen++
		if diff := cmp.Diff(want, p, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("advertisement %d (-want +got):\n%s", seen, diff)
		}
		return seen >= 2
	})
	if got := neighbour(t, l.hostH, "eth0", vip6.Addr()); got != mac {
		t.Errorf("host neighbour entry for %s: %q, want our MAC %s", vip6.Addr(), got, mac)
	}
	if err := m.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.NAs != 2 || st.Failures["na_write"] != 0 {
		t.Errorf("stats %+v, want 2 NAs, no failures", st)
	}
}

// IPv4 and IPv6 VIPs on one interface share it without mixing: each family
// goes out on its own socket, and nothing but ARP and IPv6 leaves.
func TestLabMixedFamilies(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	capt := startCapture(t, l.host, "eth0")
	m := l.manager(t, Config{VIPs: []VIP{{"lan0", vip4, 10}, {"lan0", vip6, 11}},
		Schedule: Schedule{Repeat: 2, Interval: 50 * time.Millisecond}})
	if err := m.Claim(t.Context()); err != nil {
		t.Fatal(err)
	}
	var arps, nas int
	capt.until(t, 5*time.Second, func(f []byte) bool {
		if len(f) < 14 {
			t.Errorf("runt frame %x", f)
			return false
		}
		switch et := uint16(f[12])<<8 | uint16(f[13]); et {
		case 0x0806, 0x86dd, 0x0800:
		default:
			t.Errorf("frame with EtherType %#04x: %x", et, f)
		}
		if v, err := decodeARPFrame(f); err == nil && v.SenderIP == vip4.Addr() {
			arps++
		}
		if p, ok := decodeNAFrame(f); ok && p.NA.Target == vip6.Addr() {
			nas++
		}
		return arps >= 4 && nas >= 2
	})
	if err := m.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := m.Stats()
	if st.Rounds != 2 || st.ARPFrames != 4 || st.NAs != 2 {
		t.Errorf("stats %+v, want 2 rounds, 4 ARP frames, 2 NAs", st)
	}
}

func TestLabVirtualMAC(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	capt := startCapture(t, l.host, "eth0")
	m := l.manager(t, Config{VIPs: []VIP{{"lan0", vip4, 10}, {"lan0", vip6, 10}}, VirtualMAC: true,
		Schedule: Schedule{Repeat: 1}})
	ctx := t.Context()
	if err := m.Claim(ctx); err != nil {
		t.Fatal(err)
	}
	lan0, err := l.fwH.LinkByName("lan0")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, mac string
		addr      string
	}{
		{"vmac4.10", "00:00:5e:00:01:0a", "192.0.2.1/24 vmac4.10:vip"},
		{"vmac6.10", "00:00:5e:00:02:0a", "2001:db8::1/64 nodad"},
	} {
		link, err := l.fwH.LinkByName(c.name)
		if err != nil {
			t.Fatalf("%s not created: %v", c.name, err)
		}
		mv, ok := link.(*netlink.Macvlan)
		if !ok {
			t.Fatalf("%s is a %s, want macvlan", c.name, link.Type())
		}
		if mv.HardwareAddr.String() != c.mac || mv.ParentIndex != lan0.Attrs().Index || mv.Mode != netlink.MACVLAN_MODE_PRIVATE {
			t.Errorf("%s: mac %s parent %d mode %d, want %s on lan0 (%d), private", c.name, mv.HardwareAddr, mv.ParentIndex, mv.Mode, c.mac, lan0.Attrs().Index)
		}
		if diff := cmp.Diff([]string{c.addr}, addrsOn(t, l.fwH, c.name)); diff != "" {
			t.Errorf("addresses on %s (-want +got):\n%s", c.name, diff)
		}
	}
	var garp, na bool
	capt.until(t, 5*time.Second, func(f []byte) bool {
		if v, err := decodeARPFrame(f); err == nil && v.SenderIP == vip4.Addr() {
			garp = true
			if v.EthSrc != "00:00:5e:00:01:0a" || v.SenderMAC != "00:00:5e:00:01:0a" {
				t.Errorf("gratuitous ARP from %s sender %s, want the virtual MAC", v.EthSrc, v.SenderMAC)
			}
		}
		if p, ok := decodeNAFrame(f); ok && p.NA.Target == vip6.Addr() {
			na = true
			if p.EthSrc != "00:00:5e:00:02:0a" || p.NA.TargetLL != "00:00:5e:00:02:0a" {
				t.Errorf("advertisement from %s target LL %s, want the virtual MAC", p.EthSrc, p.NA.TargetLL)
			}
		}
		return garp && na
	})
	l.host.MustPing(t, vip4.Addr())
	if got := neighbour(t, l.hostH, "eth0", vip4.Addr()); got != "00:00:5e:00:01:0a" {
		t.Errorf("host resolves %s to %s, want the virtual MAC", vip4.Addr(), got)
	}
	if err := m.Claim(ctx); err != nil {
		t.Fatalf("second claim: %v", err)
	}
	for range 2 {
		if err := m.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"vmac4.10", "vmac6.10"} {
		if _, err := l.fwH.LinkByName(name); !isLinkNotFound(err) {
			t.Errorf("%s still there after release: %v", name, err)
		}
	}
}

// monitorLab runs a Monitor of lan0 and wan0 (absent) in fw.
func monitorLab(t *testing.T, l *vipLab, cfg MonitorConfig) (*Monitor, chan LinkEvent, func()) {
	t.Helper()
	cfg.Interfaces = []string{"lan0", "wan0"}
	cfg.Enter = l.fw.Do
	cfg.Logger = quietLogger()
	mon, err := NewMonitor(l.fwH, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	out := make(chan LinkEvent)
	res := make(chan error, 1)
	go func() { res <- mon.Run(ctx, out) }()
	stop := func() {
		cancel()
		if err := <-res; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}
	return mon, out, stop
}

// next waits (bounded) for the next event for ifName.
func next(t *testing.T, out chan LinkEvent, ifName string) LinkEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-out:
			if ev.Interface == ifName {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event for %s", ifName)
		}
	}
}

func TestLabMonitor(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	_, out, stop := monitorLab(t, l, MonitorConfig{})
	defer stop()
	idx := 0
	if link, err := l.fwH.LinkByName("lan0"); err == nil {
		idx = link.Attrs().Index
	}
	up := LinkEvent{Interface: "lan0", Index: idx, Up: true, Exists: true}
	down := LinkEvent{Interface: "lan0", Index: idx, Exists: true}
	initial := map[string]LinkEvent{}
	for range 2 {
		ev := <-out
		initial[ev.Interface] = ev
	}
	if diff := cmp.Diff(map[string]LinkEvent{"lan0": up, "wan0": {Interface: "wan0"}}, initial); diff != "" {
		t.Fatalf("initial state (-want +got):\n%s", diff)
	}
	steps := []struct {
		name string
		do   func() error
		want LinkEvent
	}{
		{"peer end down (carrier lost)", func() error { return l.host.LinkDown("eth0") }, down},
		{"peer end up", func() error { return l.host.LinkUp("eth0") }, up},
		{"lan0 down", func() error { return l.fw.LinkDown("lan0") }, down},
		{"lan0 up", func() error { return l.fw.LinkUp("lan0") }, up},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, next(t, out, "lan0")); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}
	l.fw.MustRun(t, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p")
	l.fw.MustRun(t, "ip", "link", "set", "wan0p", "up")
	l.fw.MustRun(t, "ip", "link", "set", "wan0", "up")
	for ev := next(t, out, "wan0"); !ev.Up; ev = next(t, out, "wan0") {
		if !ev.Exists {
			t.Errorf("wan0 created: %+v", ev)
		}
	}
	l.fw.MustRun(t, "ip", "link", "del", "wan0")
	for ev := next(t, out, "wan0"); ev.Exists; ev = next(t, out, "wan0") {
		if ev.Up { // going down on the way out is fine
			t.Errorf("wan0 deleted: %+v", ev)
		}
	}
}

// A reader that stalls makes the kernel overrun the subscription socket
// (ENOBUFS): the subscription dies, is re-established, and the state read
// afresh, so the final state is reported even though updates were lost.
func TestLabMonitorOverrunResubscribes(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newVIPLab(t)
	// The smallest receive buffer the kernel allows: a few messages.
	mon, out, stop := monitorLab(t, l, MonitorConfig{ReceiveBufferSize: 1, ForceReceiveBufferSize: true})
	defer stop()
	for range 2 {
		<-out // initial state
	}
	// Flap lan0 while nobody reads events, ending down.
	var batch strings.Builder
	for range 300 {
		batch.WriteString("link set lan0 down\nlink set lan0 up\n")
	}
	batch.WriteString("link set lan0 down\n")
	if _, err := l.fw.RunInput(batch.String(), "ip", "-batch", "-"); err != nil {
		t.Fatal(err)
	}
	// Read on until the subscription was re-established and what was
	// reported last is the final state (the monitor reports changes only,
	// so the last event may come before or after the re-subscription).
	deadline := time.After(20 * time.Second)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	last := LinkEvent{Up: true}
	for mon.Resubscribes() == 0 || last.Up {
		select {
		case ev := <-out:
			if ev.Interface == "lan0" {
				last = ev
			}
		case <-poll.C:
		case <-deadline:
			t.Fatalf("after the overrun: resubscribes %d, errors %d, last event %+v; want a re-subscription and lan0 down",
				mon.Resubscribes(), mon.Errors(), last)
		}
	}
	// The new subscription works.
	if err := l.fw.LinkUp("lan0"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, out, "lan0"); !ev.Up {
		t.Errorf("after lan0 up on the new subscription: %+v", ev)
	}
	t.Logf("resubscribes %d, subscription errors %d", mon.Resubscribes(), mon.Errors())
}

// Cost of a takeover and a give-back of one IPv4 and one IPv6 VIP
// (netlink round trips, socket setup, first announcement round).
func BenchmarkLabClaimRelease(b *testing.B) {
	l := newVIPLab(b)
	m := l.manager(b, Config{VIPs: []VIP{{"lan0", vip4, 10}, {"lan0", vip6, 11}}, Schedule: Schedule{Repeat: 1}})
	ctx := b.Context()
	for b.Loop() {
		if err := m.Claim(ctx); err != nil {
			b.Fatal(err)
		}
		if err := m.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// Cost of a takeover alone: what Claim adds to the failover time.
func BenchmarkLabClaim(b *testing.B) {
	l := newVIPLab(b)
	m := l.manager(b, Config{VIPs: []VIP{{"lan0", vip4, 10}, {"lan0", vip6, 11}}, Schedule: Schedule{Repeat: 1}})
	ctx := b.Context()
	for b.Loop() {
		if err := m.Claim(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := m.Release(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// Cost of one announcement round: a gratuitous ARP request and reply and
// one neighbour advertisement, written to the kernel.
func BenchmarkLabAnnounce(b *testing.B) {
	l := newVIPLab(b)
	m := l.manager(b, Config{VIPs: []VIP{{"lan0", vip4, 10}, {"lan0", vip6, 11}}, Schedule: Schedule{Repeat: 1}})
	ctx := b.Context()
	if err := m.Claim(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Announce(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if st := m.Stats(); st.Failures["arp_write"]+st.Failures["na_write"] != 0 {
		b.Fatalf("send failures: %v", st.Failures)
	}
}
