package peerview

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/vrrp"
	"go.uber.org/goleak"
)

// TestTrackerEvents feeds the tracker the loop's events in order: adverts
// fill the peer's address, priority and role; a split brain needs an
// advert newer than the overlap of a takeover counted from when this node
// became MASTER, and a second MASTER report of the group (another VRID's
// transition) does not restart that count.
func TestTrackerEvents(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	src := netip.MustParseAddr("192.0.2.2")
	tr := newTracker("198.51.100.2", 100*time.Millisecond) // adverts say "master" for 1.4 s
	type step struct {
		name      string
		at        time.Duration
		do        func(now time.Time)
		role      string
		split     bool
		splitStep int
	}
	for _, s := range []step{
		{"start", 0, func(time.Time) {}, peerRoleUnknown, false, 0},
		{"this node becomes MASTER", 0, func(now time.Time) { tr.localState(vrrp.StateMaster, now) }, peerRoleUnknown, false, 0},
		{"peer advert within the takeover overlap", time.Second, func(now time.Time) { tr.advert(src, 100, now) }, peerRoleMaster, false, 0},
		{"peer advert after the overlap", 2 * time.Second, func(now time.Time) { tr.advert(src, 100, now) }, peerRoleMaster, true, 1},
		{"the group reported MASTER again", 3 * time.Second, func(now time.Time) { tr.localState(vrrp.StateMaster, now) }, peerRoleMaster, true, 0},
		{"peer advert soon after", 3500 * time.Millisecond, func(now time.Time) { tr.advert(src, 100, now) }, peerRoleMaster, true, 0},
		{"this node steps down", 4 * time.Second, func(now time.Time) { tr.localState(vrrp.StateBackup, now) }, peerRoleMaster, false, -1},
		{"peer leaving", 4500 * time.Millisecond, func(now time.Time) { tr.advert(src, 0, now) }, peerRoleLeaving, false, 0},
		{"adverts stop", 10 * time.Second, func(time.Time) {}, peerRoleNotMaster, false, 0},
	} {
		now := t0.Add(s.at)
		s.do(now)
		ev := tr.evaluate(now, time.Second)
		r := tr.report(now)
		got := []any{r.Peer.Role, r.SplitBrain.Active, ev.splitBrainStep}
		if d := cmp.Diff([]any{s.role, s.split, s.splitStep}, got); d != "" {
			t.Fatalf("%s: role, split brain, step (-want +got):\n%s", s.name, d)
		}
	}
	r := tr.report(t0.Add(10 * time.Second))
	if r.Peer.Address != "192.0.2.2" || r.Peer.Management != "198.51.100.2" || r.Peer.Priority == nil || *r.Peer.Priority != 0 ||
		!r.Peer.LastAdvert.Equal(t0.Add(4500*time.Millisecond)) {
		t.Errorf("peer fields: %+v", r.Peer)
	}
}

// emptyRuleset lists an empty ruleset (the fingerprint fails: no nft
// needed).
func emptyRuleset(context.Context) ([]byte, error) { return nil, nil }

// TestStartStops: the checks report how they run and their goroutines end
// when stopped.
func TestStartStops(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := NewMonitor("198.51.100.2", time.Second)
	stop := m.Start(context.Background(), Checks{
		Interval: 50 * time.Millisecond, RulesetInterval: 0,
		HealthOff: "peer health not polled: DB sync is off", Ruleset: emptyRuleset,
	}, nopMetrics{}, &recordLog{})
	r := m.Report(time.Now())
	if r.Peer.Polled || !strings.Contains(r.Peer.RoleReason, "DB sync is off") ||
		r.Ruleset.Off != "ruleset check is off (peer_check.ruleset_interval: 0); peer health not polled: DB sync is off" {
		t.Errorf("report of checks without health or ruleset: %+v %+v", r.Peer, r.Ruleset)
	}
	stop()

	kick := make(chan struct{}, 1)
	m = NewMonitor("198.51.100.2", time.Second)
	stop = m.Start(context.Background(), Checks{
		Interval: 50 * time.Millisecond, RulesetInterval: 50 * time.Millisecond,
		Client: &fakeHealth{state: "BACKUP"}, Ruleset: emptyRuleset, Kick: kick,
	}, nopMetrics{}, &recordLog{})
	kick <- struct{}{}
	if r := m.Report(time.Now()); !r.Peer.Polled || r.Ruleset.Off != "" {
		t.Errorf("report of checks with health and ruleset: %+v %+v", r.Peer, r.Ruleset)
	}
	stop()
}

type nopMetrics struct{}

func (nopMetrics) PeerPolled(string) {}
func (nopMetrics) Alarms(bool, bool) {}
func (nopMetrics) RulesetFailed()    {}

// TestAdvertAllocatesNothing: the loop reports every advert it accepts
// (hundreds a second at 10 ms adverts), so recording one must not
// allocate; the source's text is made when a report asks for it, and is
// empty before the first advert.
func TestAdvertAllocatesNothing(t *testing.T) {
	m := NewMonitor("198.51.100.2", time.Second)
	if r := m.Report(time.Now()); r.Peer.Address != "" {
		t.Errorf("address before any advert: %q, want empty", r.Peer.Address)
	}
	src := netip.MustParseAddr("198.51.100.2")
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { m.Advert(src, 200, now) }); n != 0 {
		t.Errorf("Advert allocates %v times per call, want 0", n)
	}
	if r := m.Report(now); r.Peer.Address != "198.51.100.2" || r.Peer.LastAdvert.IsZero() {
		t.Errorf("report after an advert: address %q, last advert %v", r.Peer.Address, r.Peer.LastAdvert)
	}
}
