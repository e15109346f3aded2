package peerview

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/vrrp"
)

// recordLog keeps "LEVEL msg" of every line logged.
type recordLog struct {
	mu  sync.Mutex
	got []string
}

func (l *recordLog) add(level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, level+" "+msg)
}
func (l *recordLog) Info(msg string, _ ...any)  { l.add("INFO", msg) }
func (l *recordLog) Warn(msg string, _ ...any)  { l.add("WARN", msg) }
func (l *recordLog) Error(msg string, _ ...any) { l.add("ERROR", msg) }
func (l *recordLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

// metricValue is the value of an unlabelled gauge or counter of stats.
func metricValue(t *testing.T, stats *status.Metrics, name string) float64 {
	t.Helper()
	mfs, err := stats.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func healthAnswer(state string, sent, at time.Time, fp string) *peerPoll {
	p := &peerPoll{sent: sent, at: at}
	p.doc.VRRP = &status.HealthVRRP{State: state}
	if fp != "" {
		p.doc.Ruleset = &ruleset.Status{Fingerprint: fp}
	}
	return p
}

// TestDerivePeerView: the newer of a fresh advert and a fresh health answer
// gives the role; split brain needs evidence newer than the overlap of a
// working takeover.
func TestDerivePeerView(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	ttl := 1400 * time.Millisecond // 4 x 100 ms + 1 s
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	base := func() peerInputs {
		return peerInputs{now: at(10000), local: "BACKUP", advertTTL: ttl, healthTTL: 5 * time.Second}
	}
	failed := &peerPoll{sent: at(9000), at: at(9500), err: "dial tcp: connection refused"}
	type want struct {
		role, source, reason string
		reachable, split     bool
		peerFP               string
	}
	tests := []struct {
		name string
		in   func(peerInputs) peerInputs
		want want
	}{
		{"nothing heard, health off", func(in peerInputs) peerInputs { in.healthOff = "DB sync is off"; return in },
			want{role: "unknown", reason: "no adverts heard (only a master sends them); DB sync is off"}},
		{"nothing heard, no poll yet", func(in peerInputs) peerInputs { return in },
			want{role: "unknown", reason: "no health answer yet"}},
		{"fresh advert", func(in peerInputs) peerInputs { in.advertAt, in.advertPri = at(9900), 150; return in },
			want{role: "master", source: "adverts", reason: "no health answer yet"}},
		{"priority 0 advert", func(in peerInputs) peerInputs { in.advertAt, in.advertPri = at(9900), 0; return in },
			want{role: "leaving", source: "adverts", reason: "no health answer yet"}},
		{"health answer newer than the advert", func(in peerInputs) peerInputs {
			in.advertAt, in.advertPri = at(9000), 150
			in.answer = healthAnswer("BACKUP", at(9500), at(9600), "fp1")
			in.poll = in.answer
			return in
		}, want{role: "backup", source: "health", reachable: true, peerFP: "fp1"}},
		{"advert newer than the answer", func(in peerInputs) peerInputs {
			in.advertAt, in.advertPri = at(9900), 150
			in.answer = healthAnswer("BACKUP", at(9500), at(9600), "fp1")
			in.poll = in.answer
			return in
		}, want{role: "master", source: "adverts", reachable: true, peerFP: "fp1"}},
		{"adverts stopped, health failing", func(in peerInputs) peerInputs {
			in.advertAt, in.advertPri = at(5000), 150
			in.poll = failed
			return in
		}, want{role: "not-master", source: "adverts", reason: "its adverts stopped 5s ago; health: dial tcp: connection refused"}},
		{"stale answer is not used", func(in peerInputs) peerInputs {
			in.answer = healthAnswer("FAULT", at(1000), at(1100), "fp1")
			in.poll = failed
			return in
		}, want{role: "unknown", reason: "health: dial tcp: connection refused"}},
		{"a crashed master: the request after its MASTER answer failed", func(in peerInputs) peerInputs {
			// Fresh by its TTL, but the peer no longer answers: it is not
			// "master (from its health answer)" any more.
			in.advertAt, in.advertPri = at(8000), 150
			in.answer = healthAnswer("MASTER", at(7900), at(8000), "fp1")
			in.poll = failed
			return in
		}, want{role: "not-master", source: "adverts", reason: "its adverts stopped 2s ago; health: dial tcp: connection refused"}},
		{"takeover overlap is no split brain", func(in peerInputs) peerInputs {
			in.local, in.masterSince = "MASTER", at(9500)
			in.advertAt, in.advertPri = at(9900), 100
			return in
		}, want{role: "master", source: "adverts", reason: "no health answer yet"}},
		{"both master after the overlap: split brain (adverts)", func(in peerInputs) peerInputs {
			in.local, in.masterSince = "MASTER", at(5000)
			in.advertAt, in.advertPri = at(9900), 100
			return in
		}, want{role: "master", source: "adverts", reason: "no health answer yet", split: true}},
		{"both master after the overlap: split brain (health)", func(in peerInputs) peerInputs {
			in.local, in.masterSince = "MASTER", at(5000)
			in.answer = healthAnswer("MASTER", at(9000), at(9100), "")
			in.poll = in.answer
			return in
		}, want{role: "master", source: "health", reachable: true, split: true}},
		{"health request sent during the overlap", func(in peerInputs) peerInputs {
			in.local, in.masterSince = "MASTER", at(8000)
			in.answer = healthAnswer("MASTER", at(9000), at(9100), "")
			in.poll = in.answer
			return in
		}, want{role: "master", source: "health", reachable: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := derivePeerView(tt.in(base()))
			got := want{role: v.role, source: v.source, reason: v.reason, reachable: v.reachable, split: v.splitBrain}
			if v.peerRuleset != nil {
				got.peerFP = v.peerRuleset.Fingerprint
			}
			if d := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{})); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestAlarmStep: the alarm starts after the grace, holds while unknown,
// ends at once; a transient difference is never reported.
func TestAlarmStep(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	type obs struct {
		sec         int
		cond, known bool
		step        int
		on          bool
	}
	seq := []obs{
		{0, false, true, 0, false},
		{1, true, true, 0, false}, // pending
		{2, false, true, 0, false},
		{3, true, true, 0, false},  // pending again from 3
		{4, true, false, 0, false}, // unknown: pending dropped
		{5, true, true, 0, false},  // pending from 5
		{14, true, true, 0, false},
		{15, true, true, 1, true}, // 10 s grace elapsed
		{16, true, false, 0, true},
		{17, true, true, 0, true},
		{18, false, true, -1, false},
		{19, false, true, 0, false},
	}
	var a alarm
	for _, o := range seq {
		step := a.step(o.cond, o.known, t0.Add(time.Duration(o.sec)*time.Second), 10*time.Second)
		if step != o.step || a.on != o.on {
			t.Fatalf("at %d s (cond %v known %v): step %d on %v, want %d %v", o.sec, o.cond, o.known, step, a.on, o.step, o.on)
		}
	}
	if want := t0.Add(18 * time.Second); !a.since.Equal(want) {
		t.Errorf("since = %v, want %v", a.since, want)
	}
}

func TestRulesetDrift(t *testing.T) {
	tests := []struct {
		local       ruleset.Status
		peer        *ruleset.Status
		drift, know bool
	}{
		{ruleset.Status{}, &ruleset.Status{Fingerprint: "a"}, false, false},
		{ruleset.Status{Fingerprint: "a"}, nil, false, false},
		{ruleset.Status{Fingerprint: "a"}, &ruleset.Status{Error: "nft failed"}, false, false},
		{ruleset.Status{Fingerprint: "a"}, &ruleset.Status{Fingerprint: "a"}, false, true},
		{ruleset.Status{Fingerprint: "a"}, &ruleset.Status{Fingerprint: "b"}, true, true},
	}
	for i, tt := range tests {
		if d, k := rulesetDrift(tt.local, tt.peer); d != tt.drift || k != tt.know {
			t.Errorf("%d: drift %v known %v, want %v %v", i, d, k, tt.drift, tt.know)
		}
	}
}

func TestParsePeerHealth(t *testing.T) {
	tests := []struct {
		body, reason string
	}{
		{`{"node":"fw2","vrrp":{"state":"BACKUP","priority":100},"ruleset":{"fingerprint":"ab"}}`, ""},
		{`not json`, peerFailDecode},
		{`{"node":"fw2"}`, peerFailNoState},
		{`{"vrrp":{"state":"SLEEPING"}}`, peerFailNoState},
	}
	for _, tt := range tests {
		doc, reason, err := parsePeerHealth([]byte(tt.body))
		if reason != tt.reason || (err == nil) != (tt.reason == "") {
			t.Errorf("%s: reason %q err %v, want %q", tt.body, reason, err, tt.reason)
		}
		if tt.reason == "" && (doc.VRRP.State != "BACKUP" || doc.Ruleset.Fingerprint != "ab") {
			t.Errorf("%s: decoded %+v", tt.body, doc)
		}
	}
}

// fakeHealth answers health requests with the state the test sets, or fails.
type fakeHealth struct {
	mu    sync.Mutex
	state string
	fp    string
	err   error
	calls int
}

func (f *fakeHealth) set(state, fp string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state, f.fp, f.err = state, fp, err
}

func (f *fakeHealth) PeerHealth(ctx context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return fmt.Appendf(nil, `{"node":"fw2","vrrp":{"state":%q,"priority":100},"ruleset":{"fingerprint":%q}}`, f.state, f.fp), nil
}

// TestPeerChecksReportSplitBrainAndDrift runs the poll and the alarms
// against a fake peer in virtual time: the peer's role follows its answers,
// a peer MASTER beside this MASTER is a split brain reported once at start
// and once at end, a different ruleset is drift after the grace, and an
// unreachable peer leaves the role unknown with the error.
func TestPeerChecksReportSplitBrainAndDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mon := NewMonitor("192.0.2.2", 100*time.Millisecond)
		stats := status.NewMetrics()
		log := &recordLog{}
		const interval = time.Second
		mon.setup(2*interval+pollTimeout(interval), "", "")
		mon.localRuleset(ruleset.Status{Fingerprint: "same"})
		peer := &fakeHealth{}
		peer.set("BACKUP", "same", nil)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { runPeerPoll(ctx, interval, peer, mon, stats) })
		var alarmMu sync.Mutex
		var alarms []string // what the events stream is told
		onAlarm := func(name string, active bool, _ time.Time) {
			alarmMu.Lock()
			defer alarmMu.Unlock()
			alarms = append(alarms, fmt.Sprint(name, " ", active))
		}
		wg.Go(func() { runPeerAlarms(ctx, 250*time.Millisecond, 3*time.Second, mon, stats, log, onAlarm) })
		snap := func() status.PeerReport { return mon.Report(time.Now()) }

		mon.LocalState(vrrp.StateMaster, time.Now())
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if s := snap(); s.Peer.Role != "backup" || s.Peer.RoleSource != "health" || !s.Peer.Reachable || s.SplitBrain.Active {
			t.Fatalf("peer backup: %+v split %+v", s.Peer, s.SplitBrain)
		}

		// The peer claims MASTER too (its adverts do not reach us).
		peer.set("MASTER", "same", nil)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		s := snap()
		if !s.SplitBrain.Active || s.Peer.Role != "master" {
			t.Fatalf("both MASTER: peer %+v split %+v", s.Peer, s.SplitBrain)
		}
		if got := metricValue(t, stats, "muros_had_split_brain"); got != 1 {
			t.Errorf("muros_had_split_brain = %v, want 1", got)
		}

		// It steps down; its ruleset is edited by hand.
		peer.set("BACKUP", "edited", nil)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s := snap(); s.SplitBrain.Active || s.Ruleset.Drift {
			t.Fatalf("after step-down (drift still in grace): split %+v drift %+v", s.SplitBrain, s.Ruleset)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if s := snap(); !s.Ruleset.Drift || s.Ruleset.Peer == nil || s.Ruleset.Peer.Fingerprint != "edited" {
			t.Fatalf("after the grace: ruleset %+v", s.Ruleset)
		}
		if got := metricValue(t, stats, "muros_had_ruleset_drift"); got != 1 {
			t.Errorf("muros_had_ruleset_drift = %v, want 1", got)
		}

		// The management link fails: the role becomes unknown, the drift
		// verdict stands (nothing newer is known), the failure is counted.
		peer.set("", "", errors.New("dial tcp 192.0.2.2:7443: connect: no route to host"))
		time.Sleep(8 * time.Second)
		synctest.Wait()
		s = snap()
		if s.Peer.Role != "unknown" || s.Peer.Reachable || !strings.Contains(s.Peer.RoleReason, "no route to host") || !s.Ruleset.Drift {
			t.Fatalf("peer unreachable: %+v drift %v", s.Peer, s.Ruleset.Drift)
		}
		if got := metricValue(t, stats, "muros_had_peer_health_reachable"); got != 0 {
			t.Errorf("muros_had_peer_health_reachable = %v, want 0", got)
		}

		// It comes back with the ruleset restored.
		peer.set("BACKUP", "same", nil)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s := snap(); s.Ruleset.Drift || !s.Peer.Reachable {
			t.Fatalf("peer back: %+v drift %v", s.Peer, s.Ruleset.Drift)
		}
		cancel()
		wg.Wait()
		want := []string{
			"ERROR SPLIT BRAIN: this node and the peer are both MASTER and both hold the VIPs; VRRP adverts do not get through between them (check the sync link and the nftables rules on it)",
			"ERROR split brain ended: the peer is no longer seen as MASTER beside this node",
			"WARN ruleset drift: the nftables rulesets of the two nodes differ",
			"WARN ruleset drift ended: the two nodes have the same nftables ruleset again",
		}
		if d := cmp.Diff(want, log.lines()); d != "" {
			t.Errorf("log (-want +got):\n%s", d)
		}
		wantAlarms := []string{"split_brain true", "split_brain false", "ruleset_drift true", "ruleset_drift false"}
		if d := cmp.Diff(wantAlarms, alarms); d != "" {
			t.Errorf("alarm events (-want +got):\n%s", d)
		}
	})
}

// TestPeerMaintenance: the peer's maintenance mode comes from its fresh
// health answer; an old peer's answer without it leaves it unknown.
func TestPeerMaintenance(t *testing.T) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	yes := true
	tests := []struct {
		name string
		body string
		want *bool
	}{
		{"on", `{"vrrp":{"state":"BACKUP","maintenance":true}}`, &yes},
		{"old peer", `{"vrrp":{"state":"BACKUP"}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, _, err := parsePeerHealth([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			p := &peerPoll{sent: now, at: now, doc: doc}
			v := derivePeerView(peerInputs{now: now, poll: p, answer: p, healthTTL: time.Second, advertTTL: time.Second})
			if diff := cmp.Diff(tt.want, v.maintenance); diff != "" {
				t.Errorf("maintenance (-want +got):\n%s", diff)
			}
		})
	}
}
