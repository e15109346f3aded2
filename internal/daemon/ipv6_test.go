package daemon_test

import (
	"context"
	be "encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/vrrp"
)

// mustOwn6 is mustOwn for the IPv6 VIPs of an IPv6 pair.
func mustOwn6(t *testing.T, p *lab.Pair, owner *lab.Netns) {
	t.Helper()
	for _, fw := range p.Firewalls() {
		for _, v := range []netip.Prefix{p.LANVIP6, p.WANVIP6} {
			has, err := hatest.HasAddr(fw, v.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if want := fw == owner; has != want {
				t.Errorf("%s holds %s = %v, want %v", fw, v.Addr(), has, want)
			}
		}
	}
}

// linkLocal returns the IPv6 link-local address of ifname in ns.
func linkLocal(t *testing.T, ns *lab.Netns, ifname string) netip.Addr {
	t.Helper()
	out := ns.MustRun(t, "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link")
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr().IsLinkLocalUnicast() {
			return p.Addr()
		}
	}
	t.Fatalf("%s has no link-local address on %s (IPv6 disabled?):\n%s", ns, ifname, out)
	return netip.Addr{}
}

// neighbour returns the client's neighbour entry for addr: its MAC and
// whether the entry is flagged as a router.
func neighbour(t *testing.T, ns *lab.Netns, addr netip.Addr) (mac string, router bool) {
	t.Helper()
	out := ns.MustRun(t, "ip", "neigh", "show", addr.String())
	f := strings.Fields(out)
	for i, w := range f {
		switch w {
		case "lladdr":
			if i+1 < len(f) {
				mac = f[i+1]
			}
		case "router":
			router = true
		}
	}
	return mac, router
}

func macOf(t *testing.T, ns *lab.Netns, ifname string) string {
	t.Helper()
	out := ns.MustRun(t, "cat", "/sys/class/net/"+ifname+"/address")
	return strings.TrimSpace(out)
}

// ipv6Only replaces the generated VIP list with the pair's IPv6 VIPs on
// VRIDs 12 and 13 (the VRIDs hatest.NodeOptions.IPv6 gives them). The IPv4
// VIPs are left out because config allows one VIP per interface, whatever
// the family; lifting that is a config change (see the report of issue 3).
func ipv6Only(p *lab.Pair) func(string) string {
	return func(cfg string) string {
		return replaceVIPs(cfg, fmt.Sprintf("vips:\n  - interface: %s\n    address: %s\n    vrid: 12\n  - interface: %s\n    address: %s\n    vrid: 13\n",
			lab.IfWAN, p.WANVIP6, lab.IfLAN, p.LANVIP6))
	}
}

// TestIPv6VIPsCrashTakeover runs the pair with IPv6 VIPs: the IPv6
// instances (VRIDs 12 and 13) advertise VRRPv3 in AH over IPv6 on the sync
// link from the link-local address to ff02::12 with hop limit 255, move with
// the group, and the new master's unsolicited neighbour advertisements
// (router flag) move the client's neighbour entry so IPv6 traffic resumes.
func TestIPv6VIPsCrashTakeover(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{IPv6: true})
	ll1 := linkLocal(t, p.FW1, lab.IfSync)
	linkLocal(t, p.FW2, lab.IfSync)

	capture, err := p.FW2.StartCapture(lab.IfSync)
	if err != nil {
		t.Fatal(err)
	}
	n1 := startCustomNode(t, p, p.FW1, hatest.NodeOptions{Role: "master"}, ipv6Only(p))
	n2 := startCustomNode(t, p, p.FW2, hatest.NodeOptions{Role: "backup"}, ipv6Only(p))
	mustState(t, n1, "MASTER", 5*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)
	mustOwn6(t, p, p.FW1)

	st, err := n1.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vrids := map[string]uint8{}
	for _, v := range st.VIPs {
		vrids[v.Address] = v.VRID
		if v.State != "MASTER" {
			t.Errorf("master's VIP %+v", v)
		}
	}
	if vrids[p.WANVIP6.String()] != 12 || vrids[p.LANVIP6.String()] != 13 {
		t.Errorf("IPv6 VIP VRIDs = %v, want WAN 12 and LAN 13", vrids)
	}

	// Reach the server over IPv6 through fw1 first, so the client's
	// neighbour cache holds fw1's MAC for the LAN VIP.
	res := probe6(t, p, 300*time.Millisecond, nil)
	if res.Received == 0 {
		t.Fatalf("client over IPv6 through fw1: %+v", res)
	}
	fw1MAC, fw2MAC := macOf(t, p.FW1, lab.IfLAN), macOf(t, p.FW2, lab.IfLAN)
	if mac, _ := neighbour(t, p.Client, p.LANVIP6.Addr()); mac != fw1MAC {
		t.Fatalf("client's neighbour entry for %s = %q, want fw1's %s", p.LANVIP6.Addr(), mac, fw1MAC)
	}

	// The adverts of the IPv6 instances as fw2 received them.
	path, frames, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	checkIPv6Adverts(t, path, frames, ll1, p)

	res = probe6(t, p, 3*time.Second, func() {
		time.Sleep(500 * time.Millisecond)
		// A dead box: frozen before its links go down (hatest.Node.Crash).
		if err := n1.Crash(p); err != nil {
			t.Error(err)
		}
	})
	mustState(t, n2, "MASTER", 3*time.Second)
	for _, v := range []netip.Prefix{p.LANVIP6, p.WANVIP6} {
		if has, _ := hatest.HasAddr(p.FW2, v.Addr()); !has {
			t.Errorf("backup did not claim %s", v)
		}
	}
	if res.LastReplyAge > 200*time.Millisecond || res.Received == 0 {
		t.Fatalf("client IPv6 traffic did not resume after the takeover: %+v", res)
	}
	mac, router := neighbour(t, p.Client, p.LANVIP6.Addr())
	if mac != fw2MAC {
		t.Errorf("client's neighbour entry for %s = %q after takeover, want fw2's %s", p.LANVIP6.Addr(), mac, fw2MAC)
	}
	if !router {
		t.Errorf("client's neighbour entry for %s lacks the router flag (NA without R)", p.LANVIP6.Addr())
	}
	st2, _ := n2.Status(context.Background())
	for _, v := range st2.VIPs {
		if v.State != "MASTER" {
			t.Errorf("new master's VIP %+v", v)
		}
	}
	if st2.LastFailover == nil || !strings.Contains(st2.LastFailover.Reason, "peer dead") {
		t.Errorf("last failover = %+v, want the liveness protocol's dead peer", st2.LastFailover)
	}
	t.Logf("IPv6 crash: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
}

func probe6(t *testing.T, p *lab.Pair, d time.Duration, during func()) lab.UDPProbeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
	defer cancel()
	res, err := p.ProbeUDP(ctx, true, lab.UDPProbeOptions{Duration: d, During: during, Drain: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// checkIPv6Adverts asserts that the capture holds authenticated VRRPv3
// adverts for VRIDs 12 and 13 from src to ff02::12 with hop limit 255, and
// that every IPv6 VRRP/AH frame on the link looks like that.
func checkIPv6Adverts(t *testing.T, path string, n int, src netip.Addr, p *lab.Pair) {
	t.Helper()
	frames, err := lab.ReadPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	master, err := kdf.Derive(hatest.DefaultPassword) // the daemons sign with AH key version 2
	if err != nil {
		t.Fatal(err)
	}
	codec, err := vrrp.NewCodec(vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: hatest.DefaultPassword, Master: master, Checksum: vrrp.ChecksumModePseudoHeader})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint8][]netip.Addr{12: {p.WANVIP6.Addr()}, 13: {p.LANVIP6.Addr()}}
	seen := map[uint8]int{}
	for _, f := range frames {
		if len(f.Data) < 14 || be.BigEndian.Uint16(f.Data[12:14]) != 0x86dd {
			continue
		}
		h, payload, err := vrrp.ParseIPv6(f.Data[14:])
		if err != nil || (h.NextHeader != 51 && h.NextHeader != 112) {
			continue
		}
		if h.Src != src || h.Dst != netip.MustParseAddr("ff02::12") || h.HopLimit != 255 {
			t.Errorf("IPv6 advert %s -> %s hop limit %d, want %s -> ff02::12 hop limit 255", h.Src, h.Dst, h.HopLimit, src)
			continue
		}
		if h.NextHeader != 51 {
			t.Errorf("IPv6 advert not in AH (next header %d)", h.NextHeader)
			continue
		}
		rx, err := codec.DecodeIPv6Payload(payload, h.NextHeader, h.Src, h.Dst, h.HopLimit, nil)
		if err != nil {
			t.Errorf("IPv6 advert does not decode: %v", err)
			continue
		}
		a := rx.Advert
		if w, ok := want[a.VRID]; !ok || len(a.Addrs) != 1 || a.Addrs[0] != w[0] {
			t.Errorf("IPv6 advert VRID %d addresses %v, want one of %v", a.VRID, a.Addrs, want)
			continue
		}
		if a.Priority != 150 {
			t.Errorf("IPv6 advert VRID %d priority %d, want the master's 150", a.VRID, a.Priority)
		}
		seen[a.VRID]++
	}
	if seen[12] == 0 || seen[13] == 0 {
		t.Errorf("IPv6 adverts seen on fw2's sync link by VRID: %v (of %d frames), want VRIDs 12 and 13", seen, n)
	}
}

// TestVirtualMACMovesWithTakeover runs the pair with vmac: true. The master
// holds each VIP on a macvlan carrying the RFC 9568 MAC 00:00:5e:00:01:VRID;
// after a crash takeover the client's ARP entry for the LAN VIP still names
// that MAC (the MAC moved, the client did not have to relearn) and traffic
// resumes through the new master.
func TestVirtualMACMovesWithTakeover(t *testing.T) {
	// With a virtual MAC the LAN's packets enter the firewall through the
	// macvlan, not lan0: a ruleset keyed on iifname must name it too (the
	// same holds for keepalived's use_vmac).
	p := lab.NewPairT(t, lab.Options{ExtraRules: "add rule inet muros_lab forward_extra iifname \"vmac4.11\" ct state new accept\n"})
	o := hatest.NodeOptions{Extra: "vmac: true\n"}
	n1, n2 := pairNodes(t, p, o, o)
	mustOwn(t, p, p.FW1)
	const lanVRID, lanVMAC = "11", "00:00:5e:00:01:0b"
	checkVMAC := func(owner *lab.Netns, fws ...*lab.Netns) {
		t.Helper()
		for _, fw := range fws {
			out, err := fw.Run("ip", "-o", "addr", "show", "dev", "vmac4."+lanVRID)
			has := err == nil && strings.Contains(out, p.LANVIP.String())
			if want := fw == owner; has != want {
				t.Errorf("%s: LAN VIP on vmac4.%s = %v, want %v (%v: %s)", fw, lanVRID, has, want, err, out)
			}
			if fw == owner {
				if mac := macOf(t, fw, "vmac4."+lanVRID); mac != lanVMAC {
					t.Errorf("%s: vmac4.%s MAC %s, want %s", fw, lanVRID, mac, lanVMAC)
				}
			}
		}
	}
	checkVMAC(p.FW1, p.FW1, p.FW2)
	res := probe(t, p, 300*time.Millisecond, nil)
	if res.Received == 0 {
		t.Fatalf("client through the VIP on the virtual MAC: %+v", res)
	}
	if mac, _ := neighbour(t, p.Client, p.LANVIP.Addr()); mac != lanVMAC {
		t.Fatalf("client's ARP entry for %s = %q, want the virtual MAC %s", p.LANVIP.Addr(), mac, lanVMAC)
	}

	res = probe(t, p, 3*time.Second, func() {
		time.Sleep(500 * time.Millisecond)
		// A dead box: frozen before its links go down (hatest.Node.Crash).
		if err := n1.Crash(p); err != nil {
			t.Error(err)
		}
	})
	mustState(t, n2, "MASTER", 3*time.Second)
	checkVMAC(p.FW2, p.FW2) // the dead fw1 keeps what it had
	if res.LastReplyAge > 200*time.Millisecond || res.Received == 0 {
		t.Fatalf("client traffic did not resume after the takeover: %+v", res)
	}
	if mac, _ := neighbour(t, p.Client, p.LANVIP.Addr()); mac != lanVMAC {
		t.Errorf("client's ARP entry for %s = %q after takeover, want the virtual MAC %s", p.LANVIP.Addr(), mac, lanVMAC)
	}
	t.Logf("vmac crash: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
}

// TestMixedFamilySyncGroup puts IPv4 and IPv6 VIPs in one sync group (the
// IPv6 one on an extra interface, as config allows one VIP per interface):
// the group elects over both VRRP links and every VIP moves together on a
// graceful stop.
func TestMixedFamilySyncGroup(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{IPv6: true})
	const dmzVIP = "2001:db8:99::1/64"
	for _, fw := range p.Firewalls() {
		fw.MustRun(t, "ip", "link", "add", "dmz0", "type", "veth", "peer", "name", "dmz0p")
		fw.MustRun(t, "ip", "link", "set", "dmz0p", "up")
		fw.MustRun(t, "ip", "link", "set", "dmz0", "up")
	}
	withDMZ := func(cfg string) string {
		return strings.Replace(cfg, "advert_interval:", "  - interface: dmz0\n    address: "+dmzVIP+"\nadvert_interval:", 1)
	}
	n1 := startCustomNode(t, p, p.FW1, hatest.NodeOptions{Role: "master"}, withDMZ)
	n2 := startCustomNode(t, p, p.FW2, hatest.NodeOptions{Role: "backup"}, withDMZ)
	mustState(t, n1, "MASTER", 5*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)
	owns := func(owner *lab.Netns) {
		t.Helper()
		mustOwn(t, p, owner)
		for _, fw := range p.Firewalls() {
			has, err := hatest.HasAddr(fw, netip.MustParsePrefix(dmzVIP).Addr())
			if err != nil {
				t.Fatal(err)
			}
			if want := fw == owner; has != want {
				t.Errorf("%s holds %s = %v, want %v", fw, dmzVIP, has, want)
			}
		}
	}
	owns(p.FW1)
	// BACKUP is the backup's state from its start, before it heard an
	// advert (its start takes the key derivation's 0.2-0.3 s): wait for the
	// master's adverts to reach its view.
	st := waitStatus(t, n2, "the backup hearing the master", 3*time.Second, func(s status.Status) bool { return s.Peer.Role == "master" })
	for _, v := range st.VIPs {
		if v.State != "BACKUP" {
			t.Errorf("backup's VIP %+v", v)
		}
	}
	if err := n1.Stop(); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 3*time.Second)
	owns(p.FW2)
	for _, v := range mustStatus(t, n2).VIPs {
		if v.State != "MASTER" {
			t.Errorf("new master's VIP %+v", v)
		}
	}
}
