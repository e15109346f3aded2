package vrrpsim

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/vrrp"
)

var (
	addrA = netip.MustParseAddr("192.0.2.1")
	addrB = netip.MustParseAddr("192.0.2.2")
	addrC = netip.MustParseAddr("192.0.2.3")
)

// instances builds one instance per vrid with the same priority and interval.
func instances(prio uint8, interval time.Duration, mod func(*vrrp.InstanceConfig), vrids ...uint8) []vrrp.InstanceConfig {
	var out []vrrp.InstanceConfig
	for _, v := range vrids {
		c := vrrp.InstanceConfig{VRID: v, Priority: prio, Interval: interval}
		if mod != nil {
			mod(&c)
		}
		out = append(out, c)
	}
	return out
}

type pairOpts struct {
	link       LinkConfig
	ivA, ivB   time.Duration
	prioA      uint8
	prioB      uint8
	modA, modB func(*vrrp.InstanceConfig)
	vrids      []uint8
}

// newPair is node "a" (priority 150 unless set) and node "b" (100).
func newPair(t *testing.T, o pairOpts) *Sim {
	t.Helper()
	if o.ivA == 0 {
		o.ivA = time.Second
	}
	if o.ivB == 0 {
		o.ivB = o.ivA
	}
	if o.prioA == 0 {
		o.prioA = 150
	}
	if o.prioB == 0 {
		o.prioB = 100
	}
	if len(o.vrids) == 0 {
		o.vrids = []uint8{10, 11}
	}
	s, err := New(o.link,
		NodeConfig{Name: "a", Addr: addrA, Instances: instances(o.prioA, o.ivA, o.modA, o.vrids...)},
		NodeConfig{Name: "b", Addr: addrB, Instances: instances(o.prioB, o.ivB, o.modB, o.vrids...)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func run(t *testing.T, s *Sim, until time.Duration) {
	t.Helper()
	if err := s.RunUntil(until); err != nil {
		t.Fatalf("%v\nlast records:\n%s", err, s.Dump(40))
	}
}

func converged(t *testing.T, s *Sim, master string) {
	t.Helper()
	if err := s.Converged(); err != nil {
		t.Fatalf("not converged at %v: %v\nlast records:\n%s", s.Now(), err, s.Dump(40))
	}
	if got := s.Masters(10); master != "" && !cmp.Equal(got, []string{master}) {
		t.Fatalf("master = %v, want %s\n%s", got, master, s.Dump(40))
	}
}

// firstClaim is the first claim of vrid by node at or after from.
func firstClaim(s *Sim, node string, vrid uint8, from time.Duration) (time.Duration, bool) {
	for _, r := range s.Records() {
		if r.At >= from && r.Kind == RecClaim && r.Node == node && r.VRID == vrid {
			return r.At, true
		}
	}
	return 0, false
}

// lastDelivery is the last advert of vrid delivered to node from peer before t.
func lastDelivery(s *Sim, node, peer string, vrid uint8, before time.Duration) time.Duration {
	var at time.Duration = -1
	for _, r := range s.Records() {
		if r.At <= before && r.Kind == RecDeliver && r.Node == node && r.Peer == peer && r.VRID == vrid {
			at = r.At
		}
	}
	return at
}

func skew(prio uint8, interval time.Duration) time.Duration {
	return time.Duration(256-int64(prio)) * interval / 256
}

func masterDown(prio uint8, interval time.Duration) time.Duration {
	return 3*interval + skew(prio, interval)
}

func TestConvergesToOneMaster(t *testing.T) {
	intervals := [][2]time.Duration{
		{time.Second, time.Second},
		{100 * time.Millisecond, time.Second},
		{time.Second, 100 * time.Millisecond},
		{10 * time.Millisecond, 30 * time.Millisecond},
		{3 * time.Second, 20 * time.Millisecond},
	}
	for _, iv := range intervals {
		for seed := uint64(1); seed <= 25; seed++ {
			for _, three := range []bool{false, true} {
				name := fmt.Sprintf("%v-%v/seed%d/three=%v", iv[0], iv[1], seed, three)
				t.Run(name, func(t *testing.T) {
					link := LinkConfig{Seed: seed, Loss: float64(seed%5) * 0.05, Delay: time.Duration(seed%4) * time.Millisecond, Jitter: time.Millisecond}
					nodes := []NodeConfig{
						{Name: "a", Addr: addrA, Instances: instances(150, iv[0], nil, 10, 11)},
						{Name: "b", Addr: addrB, Instances: instances(100, iv[1], nil, 10, 11)},
					}
					if three {
						nodes = append(nodes, NodeConfig{Name: "c", Addr: addrC, Instances: instances(120, iv[1], nil, 10, 11)})
					}
					s, err := New(link, nodes...)
					if err != nil {
						t.Fatal(err)
					}
					// Start in an order and at phases the seed chooses.
					for i, n := range s.Nodes() {
						name := n.Name()
						s.At(time.Duration((seed*7+uint64(i)*13)%50)*iv[1]/10, func() { s.Start(name) })
					}
					longest := max(iv[0], iv[1])
					run(t, s, 40*longest)
					s.SetLoss(0)
					run(t, s, s.Now()+10*longest)
					converged(t, s, "a")
				})
			}
		}
	}
}

func TestCrashTakeoverAtMasterDownInterval(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			const delay = 2 * time.Millisecond
			s := newPair(t, pairOpts{link: LinkConfig{Seed: seed, Delay: delay}})
			s.StartAll()
			run(t, s, 10*time.Second)
			converged(t, s, "a")
			// Crash at a random phase of the advert timer.
			crashAt := s.Now() + time.Duration(seed*37%1000)*time.Millisecond
			run(t, s, crashAt)
			s.Crash("a")
			run(t, s, crashAt+10*time.Second)
			converged(t, s, "b")
			last := lastDelivery(s, "b", "a", 10, crashAt)
			claim, ok := firstClaim(s, "b", 10, crashAt)
			if !ok {
				t.Fatal("b never claimed")
			}
			if want := last + masterDown(100, time.Second); claim != want {
				t.Fatalf("takeover at %v, want last advert %v + Master_Down_Interval = %v", claim, last, want)
			}
		})
	}
}

func TestGracefulShutdownTakeoverAtSkewTime(t *testing.T) {
	const delay = 3 * time.Millisecond
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 1, Delay: delay}})
	s.StartAll()
	run(t, s, 10*time.Second+333*time.Millisecond)
	converged(t, s, "a")
	stop := s.Now()
	s.Shutdown("a")
	run(t, s, stop+5*time.Second)
	converged(t, s, "b")
	claim, _ := firstClaim(s, "b", 10, stop)
	if want := stop + delay + skew(100, time.Second); claim != want {
		t.Fatalf("takeover at %v, want shutdown %v + delay + Skew_Time = %v", claim, stop, want)
	}
}

func TestLearnedAdvertIntervalUsed(t *testing.T) {
	// The master advertises every 100ms; the backup is configured with 1s
	// but must time out on 3 * 100ms + skew.
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 2}, ivA: 100 * time.Millisecond, ivB: time.Second})
	s.StartAll()
	run(t, s, 10*time.Second)
	converged(t, s, "a")
	crashAt := s.Now() + 55*time.Millisecond
	run(t, s, crashAt)
	s.Crash("a")
	run(t, s, crashAt+10*time.Second)
	last := lastDelivery(s, "b", "a", 10, crashAt)
	claim, _ := firstClaim(s, "b", 10, crashAt)
	if want := last + masterDown(100, 100*time.Millisecond); claim != want {
		t.Fatalf("takeover at %v, want %v (learned interval)", claim, want)
	}
}

func TestPreemptOnReturn(t *testing.T) {
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 3, Delay: time.Millisecond}})
	s.StartAll()
	run(t, s, 10*time.Second)
	s.Crash("a")
	run(t, s, 20*time.Second)
	converged(t, s, "b")
	s.Start("a")
	run(t, s, 30*time.Second)
	converged(t, s, "a")
	claim, _ := firstClaim(s, "a", 10, 20*time.Second)
	// a hears b (100) first, discards it (preempt) and times out.
	if want := 20*time.Second + masterDown(150, time.Second); claim != want {
		t.Fatalf("a preempted at %v, want %v", claim, want)
	}
}

func TestNoPreemptKeepsMaster(t *testing.T) {
	nopreempt := func(c *vrrp.InstanceConfig) { c.NoPreempt = true }
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 4, Delay: time.Millisecond}, modA: nopreempt, modB: nopreempt})
	s.StartAll()
	run(t, s, 10*time.Second)
	s.Crash("a")
	run(t, s, 20*time.Second)
	s.Start("a")
	run(t, s, 60*time.Second)
	converged(t, s, "b")
}

func TestEqualPriorityHigherAddressWins(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		s := newPair(t, pairOpts{link: LinkConfig{Seed: seed, Delay: time.Millisecond, Jitter: time.Millisecond}, prioA: 100, prioB: 100})
		s.StartAll()
		run(t, s, 20*time.Second)
		converged(t, s, "b") // 192.0.2.2 > 192.0.2.1
	}
}

func TestPreemptDelayRespected(t *testing.T) {
	const hold = 15 * time.Second
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 5, Delay: time.Millisecond}, modA: func(c *vrrp.InstanceConfig) { c.PreemptDelay = hold }})
	s.Start("b")
	run(t, s, 10*time.Second)
	converged(t, s, "b")
	s.Start("a")
	run(t, s, 10*time.Second+hold-time.Millisecond)
	converged(t, s, "b")
	run(t, s, 60*time.Second)
	converged(t, s, "a")
	claim, _ := firstClaim(s, "a", 10, 0)
	if claim < 10*time.Second+hold {
		t.Fatalf("a preempted at %v, before the %v hold-off", claim, hold)
	}
	if claim > 10*time.Second+hold+masterDown(150, time.Second)+time.Second {
		t.Fatalf("a preempted at %v, long after the hold-off", claim)
	}
}

func TestWaitReadyHoldsPreemptionOnly(t *testing.T) {
	ready := func(c *vrrp.InstanceConfig) { c.WaitReady = true }
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 6, Delay: time.Millisecond}, modA: ready})
	s.Start("b")
	run(t, s, 10*time.Second)
	s.Start("a")
	run(t, s, 40*time.Second)
	converged(t, s, "b") // a is not ready: no preemption
	s.Ready("a")
	run(t, s, 50*time.Second)
	converged(t, s, "a")

	// Not ready, but the master is gone: take over anyway.
	s2 := newPair(t, pairOpts{link: LinkConfig{Seed: 6, Delay: time.Millisecond}, modA: ready})
	s2.Start("b")
	run(t, s2, 10*time.Second)
	s2.Start("a")
	run(t, s2, 20*time.Second)
	s2.Crash("b")
	run(t, s2, 30*time.Second)
	converged(t, s2, "a")
}

func TestFaultHandsOverAndReturns(t *testing.T) {
	const delay = time.Millisecond
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 7, Delay: delay}})
	s.StartAll()
	run(t, s, 10*time.Second)
	converged(t, s, "a")
	s.TrackDown("a", "eth0")
	down := s.Now()
	run(t, s, 20*time.Second)
	if got := s.Masters(10); !cmp.Equal(got, []string{"b"}) {
		t.Fatalf("masters during fault = %v", got)
	}
	if st := s.Node("a").State(11); st != vrrp.StateFault {
		t.Fatalf("a vrid 11 is %v during fault, want FAULT (sync group)", st)
	}
	claim, _ := firstClaim(s, "b", 10, down)
	if want := down + delay + skew(100, time.Second); claim != want {
		t.Fatalf("b took over at %v, want %v (priority 0 from the faulting master)", claim, want)
	}
	s.TrackUp("a", "eth0")
	run(t, s, 40*time.Second)
	converged(t, s, "a")
}

func TestSyncGroupNeverSplitsUnderOneSidedLoss(t *testing.T) {
	// Adverts of VRID 11 only are lost heavily: the instance of 11 on b
	// times out again and again while 10 still hears a. The sync group must
	// keep b's VIPs together (checked at every event by the harness).
	for seed := uint64(1); seed <= 10; seed++ {
		s := newPair(t, pairOpts{vrids: []uint8{10, 11, 12}, link: LinkConfig{Seed: seed, Delay: time.Millisecond,
			LossFor: func(from string, vrid uint8) float64 {
				if vrid == 11 {
					return 0.7
				}
				return 0
			}}})
		s.StartAll()
		run(t, s, 200*time.Second)
		if got := s.Masters(10); !cmp.Equal(got, []string{"a"}) {
			t.Fatalf("seed %d: vrid 10 held by %v", seed, got)
		}
	}
}

func TestDeterministic(t *testing.T) {
	runOnce := func() []Record {
		s := newPair(t, pairOpts{link: LinkConfig{Seed: 42, Loss: 0.2, Delay: time.Millisecond, Jitter: 3 * time.Millisecond}})
		s.StartAll()
		run(t, s, 30*time.Second)
		s.Crash("a")
		run(t, s, 40*time.Second)
		s.Start("a")
		run(t, s, 60*time.Second)
		return s.Records()
	}
	if diff := cmp.Diff(runOnce(), runOnce()); diff != "" {
		t.Fatalf("two runs with one seed differ:\n%s", diff)
	}
}

func BenchmarkSimulatedMinute(b *testing.B) {
	for b.Loop() {
		s, err := New(LinkConfig{Seed: 1, Loss: 0.05, Delay: time.Millisecond},
			NodeConfig{Name: "a", Addr: addrA, Instances: instances(150, 100*time.Millisecond, nil, 10, 11)},
			NodeConfig{Name: "b", Addr: addrB, Instances: instances(100, 100*time.Millisecond, nil, 10, 11)})
		if err != nil {
			b.Fatal(err)
		}
		s.StartAll()
		if err := s.RunUntil(time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

func TestThreeNodesHighestBackupTakesOver(t *testing.T) {
	const delay = time.Millisecond
	s, err := New(LinkConfig{Seed: 8, Delay: delay},
		NodeConfig{Name: "a", Addr: addrA, Instances: instances(150, time.Second, nil, 10, 11)},
		NodeConfig{Name: "b", Addr: addrB, Instances: instances(100, time.Second, nil, 10, 11)},
		NodeConfig{Name: "c", Addr: addrC, Instances: instances(120, time.Second, nil, 10, 11)})
	if err != nil {
		t.Fatal(err)
	}
	s.StartAll()
	run(t, s, 10*time.Second)
	converged(t, s, "a")
	crashAt := s.Now() + 400*time.Millisecond
	run(t, s, crashAt)
	s.Crash("a")
	run(t, s, crashAt+10*time.Second)
	converged(t, s, "c") // Skew_Time of 120 is shorter than of 100
	if _, ok := firstClaim(s, "b", 10, crashAt); ok {
		t.Fatalf("b claimed after the crash:\n%s", s.Dump(60))
	}
	last := lastDelivery(s, "c", "a", 10, crashAt)
	claim, _ := firstClaim(s, "c", 10, crashAt)
	if want := last + masterDown(120, time.Second); claim != want {
		t.Fatalf("c took over at %v, want %v", claim, want)
	}
}

func TestBackupFaultLeavesMasterAlone(t *testing.T) {
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 9, Delay: time.Millisecond}})
	s.StartAll()
	run(t, s, 10*time.Second)
	s.TrackDown("b", "eth1")
	run(t, s, 20*time.Second)
	if got := s.Masters(11); !cmp.Equal(got, []string{"a"}) {
		t.Fatalf("masters = %v", got)
	}
	for _, v := range []uint8{10, 11} {
		if st := s.Node("b").State(v); st != vrrp.StateFault {
			t.Fatalf("b vrid %d is %v, want FAULT", v, st)
		}
	}
	if n := len(s.Find(func(r Record) bool { return r.Kind == RecClaim && r.At > 10*time.Second })); n != 0 {
		t.Fatalf("%d claims after the backup's fault", n)
	}
	s.TrackUp("b", "eth1")
	run(t, s, 30*time.Second)
	converged(t, s, "a")
}

// roles is the node's role actions at or after from, as "ROLE" or
// "ROLE failed".
func roles(s *Sim, node string, from time.Duration) []string {
	var out []string
	for _, r := range s.Find(func(r Record) bool { return r.Kind == RecRole && r.Node == node && r.At >= from }) {
		out = append(out, strings.TrimSpace(r.To.String()+" "+r.Reason))
	}
	return out
}

// TestFailedClaimThenStepDown: b's claim fails (its replications are
// senders already), and before the retry a better master takes over. b
// must end up holding nothing with receiver replications: the step-down is
// one role action, not a release that leaves the roles behind.
func TestFailedClaimThenStepDown(t *testing.T) {
	const iv = 100 * time.Millisecond
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 11, Delay: time.Millisecond}, ivA: iv})
	s.FailRoles("b", 2) // the start's BACKUP, then the claim
	s.Start("b")
	run(t, s, time.Second)
	if got := s.Masters(10); len(got) != 0 {
		t.Fatalf("b holds the VIPs although its claim failed: %v", got)
	}
	if !s.Node("b").Sender() {
		t.Fatal("b's replications are not senders after its MASTER role action")
	}
	failedAt := s.Now()
	s.Start("a") // preempts before b's retry (RoleRetryInterval)
	run(t, s, failedAt+700*time.Millisecond)
	converged(t, s, "a")
	if s.Node("b").Sender() {
		t.Errorf("b stepped down but its replications are still senders\n%s", s.Dump(30))
	}
	if diff := cmp.Diff([]string{"BACKUP failed", "MASTER failed", "BACKUP"}, roles(s, "b", 0)); diff != "" {
		t.Errorf("b's role actions (-want +got):\n%s\n%s", diff, s.Dump(30))
	}
	run(t, s, failedAt+5*time.Second) // the stale retry does nothing
	converged(t, s, "a")
	if got := roles(s, "b", failedAt+700*time.Millisecond); len(got) != 0 {
		t.Errorf("role actions after the step-down: %v", got)
	}
}

// TestFailedReleaseThenRepromotion: b's release fails as a preempts, then a
// leaves gracefully before the retry. b must be MASTER with sender
// replications: the re-promotion is one role action, not a claim on top of
// receiver roles.
func TestFailedReleaseThenRepromotion(t *testing.T) {
	const iv = time.Second
	s := newPair(t, pairOpts{link: LinkConfig{Seed: 12, Delay: time.Millisecond}, ivA: iv})
	s.Start("b")
	run(t, s, 5*time.Second)
	converged(t, s, "b")
	s.FailRoles("b", 1)
	s.Start("a")
	// a preempts after its Master_Down_Interval; b's release then fails.
	run(t, s, 5*time.Second+masterDown(150, iv)+10*time.Millisecond)
	if diff := cmp.Diff([]string{"BACKUP failed"}, roles(s, "b", 5*time.Second)); diff != "" {
		t.Fatalf("b's role actions (-want +got):\n%s\n%s", diff, s.Dump(30))
	}
	s.Shutdown("a") // priority 0: b takes over after Skew_Time, before its retry
	run(t, s, s.Now()+skew(100, iv)+10*time.Millisecond)
	converged(t, s, "b")
	if !s.Node("b").Sender() {
		t.Errorf("b is MASTER again but its replications are receivers\n%s", s.Dump(30))
	}
	if diff := cmp.Diff([]string{"BACKUP failed", "MASTER"}, roles(s, "b", 5*time.Second)); diff != "" {
		t.Errorf("b's role actions (-want +got):\n%s\n%s", diff, s.Dump(30))
	}
	run(t, s, s.Now()+5*time.Second) // the stale retry does nothing
	converged(t, s, "b")
}
