package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
)

// The peer-liveness protocol in the lab: each verdict with real daemons.
// The adverts are 1 s apart, so VRRP alone would need Master_Down_Interval
// (3.6 s) to take over: every takeover below that comes within a second is
// the protocol's, and its reason says so.

var slowAdverts = hatest.NodeOptions{Interval: time.Second}

// livePair starts fw1 (master) and fw2 (backup) with 1 s adverts and waits
// until fw2's liveness verdict on fw1 is alive as MASTER.
func livePair(t *testing.T, p *lab.Pair) (*hatest.Node, *hatest.Node) {
	t.Helper()
	o := slowAdverts
	o.Role = "master"
	n1, err := hatest.StartNode(binary, p, p.FW1, o)
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 10*time.Second)
	o.Role = "backup"
	n2, err := hatest.StartNode(binary, p, p.FW2, o)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, n2, "backup hears the master alive on the liveness protocol", 10*time.Second, func(s status.Status) bool {
		return s.State == "BACKUP" && s.Liveness != nil && s.Liveness.Verdict == "alive" && s.Liveness.PeerRole == "MASTER"
	})
	// The client's and server's neighbour entries are warm before the
	// probes, so the gaps logged are the takeover's.
	mustOwn(t, p, p.FW1)
	p.Client.MustPing(t, p.ServerAddr.Addr())
	return n1, n2
}

func lastFailoverReason(t *testing.T, n *hatest.Node) string {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.LastFailover == nil {
		return ""
	}
	return st.LastFailover.Reason
}

// TestLivenessDeadOnAllPaths: the master hangs, its links and carrier up:
// every process frozen, every IP and ARP packet in and out dropped. The
// backup hears nothing on either path, probes, and takes over at once.
func TestLivenessDeadOnAllPaths(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := livePair(t, p)
	res := probe(t, p, 2*time.Second, func() {
		time.Sleep(300 * time.Millisecond)
		if err := n1.Proc.Signal(syscall.SIGSTOP); err != nil {
			t.Error(err)
		}
		if err := hang(p.FW1); err != nil {
			t.Error(err)
		}
	})
	mustState(t, n2, "MASTER", time.Second)
	if why := lastFailoverReason(t, n2); !strings.Contains(why, "peer dead") || !strings.Contains(why, "probe unanswered") {
		t.Errorf("takeover reason %q, want the liveness verdict (dead on every path, probe unanswered)", why)
	}
	if res.LastReplyAge > 200*time.Millisecond {
		t.Fatalf("client traffic did not resume: %+v", res)
	}
	t.Logf("hang: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
	_ = n1.Proc.Signal(syscall.SIGCONT)
}

// hang drops every IP and ARP packet in and out of fw, before anything
// else sees it.
func hang(fw *lab.Netns) error {
	_, err := fw.RunInput(`
table inet hang {
	chain pre { type filter hook prerouting priority -500; policy drop; }
	chain out { type filter hook output priority -500; policy drop; }
}
table arp hang {
	chain in { type filter hook input priority -500; policy drop; }
	chain out { type filter hook output priority -500; policy drop; }
}
`, "nft", "-f", "-")
	return err
}

// TestLivenessCrashTakesOverAtOnce: the master is gone, links down (its
// sync veth takes the backup's carrier with it): the backup takes over
// after the probe of the second path stays unanswered.
func TestLivenessCrashTakesOverAtOnce(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := livePair(t, p)
	res := probe(t, p, 2*time.Second, func() {
		time.Sleep(300 * time.Millisecond)
		if err := n1.Crash(p); err != nil {
			t.Error(err)
		}
	})
	mustState(t, n2, "MASTER", time.Second)
	if why := lastFailoverReason(t, n2); !strings.Contains(why, "peer dead") {
		t.Errorf("takeover reason %q, want the liveness verdict", why)
	}
	if res.LastReplyAge > 200*time.Millisecond {
		t.Fatalf("client traffic did not resume: %+v", res)
	}
	t.Logf("crash: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
}

// TestLivenessGracefulHandover: a master that stops says LEAVING; the
// backup claims at once, without Skew_Time.
func TestLivenessGracefulHandover(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := livePair(t, p)
	res := probe(t, p, 2*time.Second, func() {
		time.Sleep(300 * time.Millisecond)
		if err := n1.Stop(); err != nil {
			t.Error(err)
		}
	})
	mustState(t, n2, "MASTER", time.Second)
	mustOwn(t, p, p.FW2)
	if why := lastFailoverReason(t, n2); !strings.Contains(why, "peer left") {
		t.Errorf("takeover reason %q, want the peer's LEAVING", why)
	}
	t.Logf("graceful: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
}

// TestLivenessCutSyncLinkNoSplitBrain: the sync cable is cut while both
// nodes live. The adverts stop, but the second path hears the master: the
// backup stays BACKUP for many Master_Down_Intervals (no split brain),
// both raise "sync link down"; the cable mended, the alarm clears and the
// pair is as before.
func TestLivenessCutSyncLinkNoSplitBrain(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	// 100 ms adverts: Master_Down_Interval is 0.36 s, the cut lasts ten.
	o := hatest.NodeOptions{}
	n1, n2 := pairNodes(t, p, o, o)
	waitStatus(t, n2, "liveness alive", 5*time.Second, func(s status.Status) bool {
		return s.Liveness != nil && s.Liveness.Verdict == "alive" && s.Liveness.PeerRole == "MASTER"
	})
	res := probe(t, p, 5*time.Second, func() {
		time.Sleep(300 * time.Millisecond)
		if err := p.FW1.LinkDown(lab.IfSync); err != nil {
			t.Error(err)
		}
		for end := time.Now().Add(3600 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if has, _ := hatest.HasAddr(p.FW2, p.LANVIP.Addr()); has {
				t.Errorf("split brain: fw2 holds the LAN VIP with the sync link cut and fw1 alive")
				return
			}
		}
	})
	for _, n := range []*hatest.Node{n1, n2} {
		st, err := n.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Liveness == nil || !st.Liveness.SyncLinkDown.Active {
			t.Errorf("%s: sync link down alarm not raised: %+v", n.NS, st.Liveness)
		}
		if st.Liveness != nil && !strings.Contains(st.Liveness.String(), "sync path") {
			t.Errorf("%s: liveness line without the sync path: %s", n.NS, st.Liveness)
		}
	}
	mustState(t, n1, "MASTER", time.Second)
	mustState(t, n2, "BACKUP", time.Second)
	if res.LastReplyAge > 200*time.Millisecond {
		t.Fatalf("client traffic stopped with the sync link cut: %+v", res)
	}
	t.Logf("cut: client-visible gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
	if !strings.Contains(n2.Proc.Log(), "SYNC LINK DOWN") {
		t.Errorf("backup did not log the sync link alarm:\n%s", tail(n2.Proc.Log(), 20))
	}
	text := p.FW2.MustRun(t, binary, "status", "--listen", n2.StatusSock)
	if !strings.Contains(text, "SYNC LINK DOWN") {
		t.Errorf("status text does not show the alarm:\n%s", text)
	}
	if err := p.FW1.LinkUp(lab.IfSync); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*hatest.Node{n1, n2} {
		waitStatus(t, n, "alarm cleared", 5*time.Second, func(s status.Status) bool {
			return s.Liveness != nil && !s.Liveness.SyncLinkDown.Active
		})
	}
	mustState(t, n1, "MASTER", time.Second)
	mustState(t, n2, "BACKUP", time.Second)
	mustOwn(t, p, p.FW1)
}

// TestLivenessFlappingSyncLink: the sync link goes down and up every
// 150 ms for 3 s: the backup never takes over while the master lives.
func TestLivenessFlappingSyncLink(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	o := hatest.NodeOptions{}
	n1, n2 := pairNodes(t, p, o, o)
	waitStatus(t, n2, "liveness alive", 5*time.Second, func(s status.Status) bool {
		return s.Liveness != nil && s.Liveness.Verdict == "alive" && s.Liveness.PeerRole == "MASTER"
	})
	before, _ := n2.Status(context.Background())
	for i := range 20 {
		set := p.FW1.LinkDown
		if i%2 == 1 {
			set = p.FW1.LinkUp
		}
		if err := set(lab.IfSync); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond)
		if has, _ := hatest.HasAddr(p.FW2, p.LANVIP.Addr()); has {
			t.Fatalf("fw2 took the VIP during the flapping (round %d)", i)
		}
	}
	mustState(t, n1, "MASTER", time.Second)
	mustState(t, n2, "BACKUP", time.Second)
	after, _ := n2.Status(context.Background())
	if (after.LastFailover == nil) != (before.LastFailover == nil) ||
		(after.LastFailover != nil && !after.LastFailover.Time.Equal(before.LastFailover.Time)) {
		t.Errorf("failover during the flapping: %+v", after.LastFailover)
	}
}

// TestLivenessPeerThatDoesNotSpeak: fw1 runs with the protocol off (an
// older muros-had, or keepalived): fw2 gets no verdict, shows "unknown",
// and takes over by plain VRRP timing when fw1 crashes.
func TestLivenessPeerThatDoesNotSpeak(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, vrrpOnly, hatest.NodeOptions{})
	time.Sleep(500 * time.Millisecond)
	st, err := n2.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Liveness == nil || st.Liveness.Verdict != "unknown" || st.Liveness.PeerRole != "" {
		t.Fatalf("liveness with a peer that does not speak it: %+v", st.Liveness)
	}
	if err := n1.Crash(p); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 3*time.Second)
	if why := lastFailoverReason(t, n2); !strings.Contains(why, "down: no advert") {
		t.Errorf("takeover reason %q, want plain VRRP's Master_Down", why)
	}
}

// quietPair starts fw1 (master, once it is) and fw2 (backup) with the
// liveness protocol's second path on the LAN, detection time detect and
// a quiet period 500 ms after the last traffic.
func quietPair(t *testing.T, p *lab.Pair, o hatest.NodeOptions, detect string) (*hatest.Node, *hatest.Node) {
	t.Helper()
	lv := func(other lab.FirewallAddrs) string {
		return fmt.Sprintf("liveness:\n  peer_address: %s\n  detect: %s\n  quiet_after: 500ms\n", other.LAN.Addr(), detect)
	}
	o.Role, o.Extra = "master", lv(p.FW2Addrs)
	n1, err := hatest.StartNode(binary, p, p.FW1, o)
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 10*time.Second)
	o.Role, o.Extra = "backup", lv(p.FW1Addrs)
	n2, err := hatest.StartNode(binary, p, p.FW2, o)
	if err != nil {
		t.Fatal(err)
	}
	return n1, n2
}

// TestLivenessQuietMaster: a master that receives nothing on its VIP
// interfaces for liveness.quiet_after heartbeats at the quiet period (the
// backup's status reads it); a ping stream through it brings the 1 ms
// heartbeats back; quiet again, it hangs, and the backup still takes over
// within a second, on the protocol's verdict (1 s adverts: VRRP alone
// would wait 3.6 s).
func TestLivenessQuietMaster(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := quietPair(t, p, slowAdverts, "25ms")
	quiet := func(s1, s2 status.Status) bool {
		return s1.Liveness != nil && s1.Liveness.Quiet && s2.Liveness != nil && s2.Liveness.PeerRole == "MASTER" && s2.Liveness.PeerHeartbeatMillis == 50
	}
	waitBoth := func(what string, ok func(s1, s2 status.Status) bool) {
		t.Helper()
		ctx := context.Background()
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			s1, err1 := n1.Status(ctx)
			s2, err2 := n2.Status(ctx)
			if err1 == nil && err2 == nil && ok(s1, s2) {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: not within 10 s: fw1 %+v fw2 %+v", what, s1.Liveness, s2.Liveness)
			}
		}
	}
	waitBoth("master quiet, backup reads 50 ms", quiet)
	if s, _ := n1.Status(context.Background()); !strings.Contains(s.Liveness.String(), "heartbeats quiet") {
		t.Errorf("status line %q does not say quiet", s.Liveness.String())
	}

	// A UDP stream from the client through the master.
	res := probe(t, p, 2*time.Second, func() {
		waitBoth("fast with traffic", func(s1, s2 status.Status) bool {
			return s1.Liveness != nil && !s1.Liveness.Quiet && s2.Liveness != nil && s2.Liveness.PeerHeartbeatMillis == 1
		})
	})
	if res.Lost > 0 {
		t.Errorf("the stream lost %d of %d", res.Lost, res.Sent)
	}
	waitBoth("quiet again after the stream", quiet)

	// Quiet, the master hangs.
	if err := n1.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer n1.Proc.Signal(syscall.SIGCONT)
	if err := hang(p.FW1); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", time.Second)
	if why := lastFailoverReason(t, n2); !strings.Contains(why, "peer dead") {
		t.Errorf("takeover reason %q, want the liveness verdict", why)
	}
}

// TestLivenessQuietMasterConfirm: at 10 ms adverts a quiet master
// heartbeats every 50 ms, further apart than VRRP's Master_Down_Interval
// (36 ms). Its adverts are dropped while it lives: the backup's held
// expiry asks the protocol to confirm (counted in its status), the
// master answers, and the backup stays BACKUP. Then the master hangs, and
// the backup takes over on the protocol's verdict.
func TestLivenessQuietMasterConfirm(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := quietPair(t, p, hatest.NodeOptions{Interval: 10 * time.Millisecond}, "3ms")
	waitStatus(t, n2, "backup reads a quiet master (50 ms)", 10*time.Second, func(s status.Status) bool {
		return s.State == "BACKUP" && s.Liveness != nil && s.Liveness.PeerRole == "MASTER" && s.Liveness.PeerHeartbeatMillis == 50
	})
	if _, err := p.FW1.RunInput("table inet noadverts {\n\tchain out { type filter hook output priority -400; policy accept; ip protocol { 51, 112 } drop; }\n}\n", "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, n2, "the held expiry asks for a confirmation", 5*time.Second, func(s status.Status) bool {
		return s.Liveness != nil && s.Liveness.Confirms > 0
	})
	time.Sleep(300 * time.Millisecond)
	if st, err := n2.Status(context.Background()); err != nil || st.State != "BACKUP" || st.Liveness.Verdict != "alive" {
		t.Fatalf("adverts lost, master alive: fw2 %+v, %v; want BACKUP, peer alive", st.Liveness, err)
	}
	if err := n1.Proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer n1.Proc.Signal(syscall.SIGCONT)
	if err := hang(p.FW1); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 2*time.Second)
	if why := lastFailoverReason(t, n2); !strings.Contains(why, "peer dead") {
		t.Errorf("takeover reason %q, want the liveness verdict", why)
	}
}
