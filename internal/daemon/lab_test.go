package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/vrrpconn"
	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/vrrp"
)

// binary is the muros-had built once for every lab test of the package.
var binary string

func TestMain(m *testing.M) { os.Exit(hatest.MainWithBinary(m, &binary)) }

// pairNodes starts muros-had on both firewalls (fw1 master, fw2 backup) and
// waits for the election to settle.
func pairNodes(t *testing.T, p *lab.Pair, o1, o2 hatest.NodeOptions) (*hatest.Node, *hatest.Node) {
	t.Helper()
	o1.Role, o2.Role = "master", "backup"
	n1, err := hatest.StartNode(binary, p, p.FW1, o1)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := hatest.StartNode(binary, p, p.FW2, o2)
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 5*time.Second)
	mustSettledBackup(t, n2, 5*time.Second)
	return n1, n2
}

// dbSyncPair starts fw1 (master role) and fw2 (backup) with DB sync on
// and options o (Role is set here), and waits until fw1 is MASTER and fw2
// a settled BACKUP.
func dbSyncPair(t *testing.T, p *lab.Pair, o hatest.NodeOptions) (*hatest.Node, *hatest.Node) {
	t.Helper()
	o1, o2 := o, o
	o1.Role, o2.Role = "master", "backup"
	n1, n2, err := hatest.StartPairWithDBSync(binary, p, o1, o2)
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 15*time.Second)
	mustSettledBackup(t, n2, 5*time.Second)
	return n1, n2
}

// mustSettledBackup waits until n is BACKUP because it hears a master: the
// BACKUP of start-up, before Master_Down_Interval ran out, does not count
// (on a loaded machine the backup may still go master once and yield).
func mustSettledBackup(t *testing.T, n *hatest.Node, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := n.Status(context.Background())
		if err == nil && st.State == "BACKUP" && st.Peer.Role == "master" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not settle as the backup of a master: %+v (err %v)\n%s", n.NS, st, err, tail(n.Proc.Log(), 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustState(t *testing.T, n *hatest.Node, state string, timeout time.Duration) {
	t.Helper()
	if err := n.WaitState(state, timeout); err != nil {
		t.Fatalf("%v\nlog of %s:\n%s", err, n.NS, tail(n.Proc.Log(), 40))
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// mustOwn asserts which firewall holds the VIPs: exactly owner, never both.
// The kernel follows a state change within a few milliseconds (a release
// runs after the transition's adverts, a vmac deletion waits for the
// kernel), so ownership is given a short time to settle.
func mustOwn(t *testing.T, p *lab.Pair, owner *lab.Netns) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var wrong []string
		for _, fw := range p.Firewalls() {
			for _, v := range []netip.Prefix{p.LANVIP, p.WANVIP} {
				has, err := hatest.HasAddr(fw, v.Addr())
				if err != nil {
					t.Fatal(err)
				}
				if want := fw == owner; has != want {
					wrong = append(wrong, fmt.Sprintf("%s holds %s = %v, want %v", fw, v.Addr(), has, want))
				}
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Error(strings.Join(wrong, "\n"))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// probe sends through the LAN VIP to the server for d and returns what the
// client saw; during runs once sending has started.
func probe(t *testing.T, p *lab.Pair, d time.Duration, during func()) lab.UDPProbeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
	defer cancel()
	res, err := lab.ProbeUDP(ctx, p.Client, p.Server, p.ServerAddr.Addr(), lab.UDPProbeOptions{Duration: d, During: during, Drain: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestMasterOwnsVIPsAndForwards(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{}, hatest.NodeOptions{})
	mustOwn(t, p, p.FW1)
	res := probe(t, p, 500*time.Millisecond, nil)
	if res.Received == 0 || res.Lost > 0 {
		t.Fatalf("client through the VIP: %+v", res)
	}
	st, err := n2.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Peer.Role != "master" || st.Peer.Address != p.FW1Addrs.Sync.Addr().String() {
		t.Errorf("backup's view of the peer = %+v, want master at %s", st.Peer, p.FW1Addrs.Sync.Addr())
	}
	for _, v := range st.VIPs {
		if v.State != "BACKUP" {
			t.Errorf("backup VIP %+v", v)
		}
	}
	st1, _ := n1.Status(context.Background())
	if st1.Adverts.Sent == 0 || len(st1.Adverts.Rejected) != 0 {
		t.Errorf("master adverts: %+v", st1.Adverts)
	}
}

// vrrpOnly turns the peer-liveness protocol off: the tests of RFC 9568's
// own timing (Master_Down_Interval, Skew_Time) run without it
// (liveness_lab_test.go has the protocol's).
var vrrpOnly = hatest.NodeOptions{Extra: "liveness:\n  enabled: false\n"}

func TestCrashTakeover(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, vrrpOnly, vrrpOnly)
	res := probe(t, p, 3*time.Second, func() {
		time.Sleep(500 * time.Millisecond)
		// A node gone: links down at once and the daemon dead (no priority 0).
		if err := n1.Crash(p); err != nil {
			t.Error(err)
		}
	})
	mustState(t, n2, "MASTER", 3*time.Second)
	has, _ := hatest.HasAddr(p.FW2, p.LANVIP.Addr())
	if !has {
		t.Fatal("backup did not claim the LAN VIP")
	}
	if res.LastReplyAge > 200*time.Millisecond {
		t.Fatalf("client traffic did not resume after the takeover: %+v", res)
	}
	st, _ := n2.Status(context.Background())
	if st.LastFailover == nil || !strings.Contains(st.LastFailover.Reason, "down") {
		t.Errorf("last failover = %+v, want a master-down reason", st.LastFailover)
	}
	t.Logf("crash: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
}

func TestGracefulStopHandsOverAtSkewTime(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, vrrpOnly, vrrpOnly)
	res := probe(t, p, 2*time.Second, func() {
		time.Sleep(500 * time.Millisecond)
		if err := n1.Stop(); err != nil {
			t.Error(err)
		}
	})
	mustState(t, n2, "MASTER", 3*time.Second)
	mustOwn(t, p, p.FW2)
	if res.LastReplyAge > 200*time.Millisecond {
		t.Fatalf("client traffic did not resume: %+v", res)
	}
	st, _ := n2.Status(context.Background())
	// The takeover came from the priority 0 advert (Skew_Time), not from
	// Master_Down_Interval running out.
	if st.LastFailover == nil || !strings.Contains(st.LastFailover.Reason, "priority 0") {
		t.Errorf("last failover = %+v, want the priority 0 reason", st.LastFailover)
	}
	if !strings.Contains(n1.Proc.Log(), "stopped") {
		t.Errorf("stopped node did not log its graceful stop:\n%s", tail(n1.Proc.Log(), 20))
	}
	t.Logf("graceful: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
}

func TestReturningMasterPreempts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noPreempt bool
		owner     func(p *lab.Pair) *lab.Netns
	}{
		{"preempt", false, func(p *lab.Pair) *lab.Netns { return p.FW1 }},
		{"nopreempt", true, func(p *lab.Pair) *lab.Netns { return p.FW2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := lab.NewPairT(t, lab.Options{})
			o := hatest.NodeOptions{NoPreempt: tc.noPreempt}
			n1, n2 := pairNodes(t, p, o, o)
			if err := n1.Stop(); err != nil {
				t.Fatal(err)
			}
			mustState(t, n2, "MASTER", 3*time.Second)
			if err := n1.Start(binary); err != nil {
				t.Fatal(err)
			}
			if tc.noPreempt {
				mustState(t, n1, "BACKUP", 3*time.Second)
				// Stays backup well past Master_Down_Interval.
				time.Sleep(time.Second)
				mustState(t, n1, "BACKUP", time.Second)
				mustState(t, n2, "MASTER", time.Second)
			} else {
				mustState(t, n1, "MASTER", 3*time.Second)
				mustState(t, n2, "BACKUP", 3*time.Second)
			}
			mustOwn(t, p, tc.owner(p))
		})
	}
}

func TestTrackedLinkDownFaultsAndHandsOver(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{}, hatest.NodeOptions{})
	if err := p.SetLinkDown(p.FW1, lab.IfLAN); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "FAULT", 3*time.Second)
	mustState(t, n2, "MASTER", 3*time.Second)
	mustOwn(t, p, p.FW2)
	// A master entering FAULT leaves with priority 0 (as keepalived does)
	// and says so on the liveness protocol: the backup takes over at once
	// (without the protocol, after Skew_Time), not after
	// Master_Down_Interval.
	st2, err := n2.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f := st2.LastFailover; f == nil || !strings.Contains(f.Reason, "no longer master") && !strings.Contains(f.Reason, "priority 0") {
		t.Errorf("backup's takeover reason = %+v, want the master's FAULT (liveness) or priority 0", st2.LastFailover)
	}
	res := probe(t, p, 300*time.Millisecond, nil)
	if res.Received == 0 {
		t.Fatalf("client cannot reach the server through the new master: %+v", res)
	}
	if err := p.SetLinkUp(p.FW1, lab.IfLAN); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 3*time.Second)
	mustState(t, n2, "BACKUP", 3*time.Second)
	mustOwn(t, p, p.FW1)
}

// injector sends forged adverts on fw2's sync link towards fw1.
type injector struct {
	conn *vrrpconn.Conn
	src  netip.Addr
}

func newInjector(t *testing.T, p *lab.Pair) *injector {
	t.Helper()
	inj := &injector{src: p.FW2Addrs.Sync.Addr()}
	err := p.FW2.Do(func() error {
		c, err := vrrpconn.Open(lab.IfSync, inj.src)
		inj.conn = c
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inj.conn.Close() })
	return inj
}

// packet builds an advert for the pair's first VRID (10) claiming priority
// 254, which would win the election if it were accepted.
func (inj *injector) packet(t *testing.T, p *lab.Pair, cfg vrrp.Config, seq uint32) []byte {
	t.Helper()
	c, err := vrrp.NewCodec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := vrrp.Advert{VRID: 10, Priority: 254, Interval: 100 * time.Millisecond, Addrs: []netip.Addr{p.WANVIP.Addr()}}
	pkt, err := c.AppendPacket(nil, inj.src, netip.MustParseAddr("224.0.0.18"), &a, vrrp.AHCounter{Epoch: uint32(time.Now().Unix()) + 1000, Seq: seq})
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

func (inj *injector) send(t *testing.T, proto int, pkt []byte) {
	t.Helper()
	if err := inj.conn.Write(context.Background(), proto, pkt, netip.MustParseAddr("224.0.0.18")); err != nil {
		t.Fatal(err)
	}
}

func TestBadAdvertsAreDroppedAndCounted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		auth   string
		inject func(t *testing.T, p *lab.Pair, inj *injector)
		reason string
	}{
		{"wrong password", "ah", func(t *testing.T, p *lab.Pair, inj *injector) {
			inj.send(t, vrrpconn.ProtoAH, inj.packet(t, p, vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: "not-the-secret"}, 1))
		}, "auth_failed"},
		{"unauthenticated advert", "ah", func(t *testing.T, p *lab.Pair, inj *injector) {
			inj.send(t, vrrpconn.ProtoVRRP, inj.packet(t, p, vrrp.Config{Version: 3, Auth: vrrp.AuthNone}, 1))
		}, "auth_mismatch"},
		{"ttl below 255", "none", func(t *testing.T, p *lab.Pair, inj *injector) {
			pkt := inj.packet(t, p, vrrp.Config{Version: 3, Auth: vrrp.AuthNone}, 1)
			pkt[8] = 64 // the kernel recomputes the IPv4 header checksum
			inj.send(t, vrrpconn.ProtoVRRP, pkt)
		}, "bad_ttl"},
		{"bad checksum", "none", func(t *testing.T, p *lab.Pair, inj *injector) {
			pkt := inj.packet(t, p, vrrp.Config{Version: 3, Auth: vrrp.AuthNone}, 1)
			pkt[vrrp.IPv4HeaderLen+6] ^= 0xff
			inj.send(t, vrrpconn.ProtoVRRP, pkt)
		}, "bad_checksum"},
		{"truncated body", "none", func(t *testing.T, p *lab.Pair, inj *injector) {
			pkt := inj.packet(t, p, vrrp.Config{Version: 3, Auth: vrrp.AuthNone}, 1)
			pkt = pkt[:vrrp.IPv4HeaderLen+6]
			pkt[2], pkt[3] = 0, byte(len(pkt))
			inj.send(t, vrrpconn.ProtoVRRP, pkt)
		}, "short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := lab.NewPairT(t, lab.Options{})
			o := hatest.NodeOptions{Auth: tc.auth}
			n1, n2 := pairNodes(t, p, o, o)
			inj := newInjector(t, p)
			for range 5 {
				tc.inject(t, p, inj)
				time.Sleep(50 * time.Millisecond)
			}
			// Stable: still one master, the same one, with no new transition.
			time.Sleep(500 * time.Millisecond)
			mustState(t, n1, "MASTER", time.Second)
			mustState(t, n2, "BACKUP", time.Second)
			mustOwn(t, p, p.FW1)
			st, err := n1.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Adverts.Rejected[tc.reason]; got < 5 {
				t.Errorf("rejected[%s] = %d, want >= 5 (all: %v)", tc.reason, got, st.Adverts.Rejected)
			}
			if t.Failed() {
				t.Logf("fw2 log:\n%s", tail(n2.Proc.Log(), 60))
			}
			if st.LastFailover != nil && st.LastFailover.To != "MASTER" {
				t.Errorf("master changed state: %+v", st.LastFailover)
			}
		})
	}
}

// A sync link that is deleted and created again (ifdown/ifup of a VLAN or a
// bond) must not leave sockets bound to the dead interface: the daemons
// restart their instances on the new one and the election resumes with
// adverts heard on both sides.
func TestSyncInterfaceRecreated(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{Interval: 200 * time.Millisecond}, hatest.NodeOptions{Interval: 200 * time.Millisecond})
	if _, err := p.FW1.Run("ip", "link", "del", lab.IfSync); err != nil {
		t.Fatal(err)
	}
	if err := lab.Veth(p.FW1, lab.IfSync, p.FW2, lab.IfSync); err != nil {
		t.Fatal(err)
	}
	if err := p.FW1.AddAddr(lab.IfSync, p.FW1Addrs.Sync); err != nil {
		t.Fatal(err)
	}
	if err := p.FW2.AddAddr(lab.IfSync, p.FW2Addrs.Sync); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*hatest.Node{n1, n2} {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(n.Proc.Log(), "sync interface was re-created") {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not notice the new sync interface:\n%s", n.NS, tail(n.Proc.Log(), 20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	mustState(t, n1, "MASTER", 10*time.Second)
	mustSettledBackup(t, n2, 10*time.Second)
	mustOwn(t, p, p.FW1)
}
