package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/ctsync/ctrel"
	"github.com/muros/muros-had/internal/status"
)

// fakeCT is a conntrackSync whose readiness wait the test drives: the
// gate gets the wait's channel, the test changes its reason (why) and
// completes it (done).
type fakeCT struct {
	mu      sync.Mutex
	why     string
	changed chan struct{}
	wait    chan struct{}
}

func newFakeCT() *fakeCT { return &fakeCT{changed: make(chan struct{}), wait: make(chan struct{})} }

func (f *fakeCT) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeCT) SetRole(bool)                  {}
func (f *fakeCT) Ready() <-chan struct{}        { return nil }
func (f *fakeCT) Status() ctsync.Status         { return ctsync.Status{} }
func (f *fakeCT) Rearm() <-chan struct{}        { return f.wait }

func (f *fakeCT) WaitReason() (string, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.why, f.changed
}

func (f *fakeCT) set(why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.why = why
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCT) done(how string) {
	f.set(how)
	close(f.wait)
}

func gateDaemon(ct conntrackSync) *Daemon {
	cfg := &config.Config{}
	return &Daemon{
		cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		status: status.NewBook(cfg, nil), events: make(chan loopEvent, 4), ct: ct,
	}
}

// The gate sends its verdict once both replications are complete, shows
// what it waits for meanwhile, and ends without a verdict when superseded.
func TestReadinessGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ct := newFakeCT()
		d := gateDaemon(ct)
		db := make(chan struct{})
		d.status.Readiness(7, true, "stepped down from MASTER", []string{repConntrack, repDB}, time.Now(), true)
		start := time.Now()
		go d.readinessGate(t.Context(), 7, ct.Rearm(), db, time.Minute)

		// No time passes below: the gate follows ctsync's reports, it
		// does not poll.
		synctest.Wait()
		if got := d.status.Snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{repConntrack, repDB}) {
			t.Fatalf("before ctsync judged the wait: waiting %q", got)
		}
		for _, why := range []string{ctsync.WaitSender, ctrel.WaitBulk, ctrel.WaitGap} {
			ct.set(why)
			synctest.Wait()
			if got := d.status.Snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{why, repDB}) {
				t.Fatalf("ctsync reports %q: waiting %q", why, got)
			}
		}
		ct.done(ctrel.DoneBulk)
		synctest.Wait()
		if got := d.status.Snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{repDB}) {
			t.Fatalf("waiting %q", got)
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("the gate took %v of (fake) time to follow ctsync's reports, want none", waited)
		}
		select {
		case ev := <-d.events:
			t.Fatalf("verdict %+v before the DB sync", ev.ready)
		default:
		}
		close(db)
		synctest.Wait()
		ev := <-d.events
		if d := cmp.Diff(&readyEvent{gen: 7}, ev.ready, cmp.AllowUnexported(readyEvent{})); d != "" {
			t.Fatalf("verdict (-want +got):\n%s", d)
		}
	})
}

// The startup timeout ends the conntrack wait, never the DB one: in BACKUP
// the master is alive and may hold newer content; the hold stays, says so,
// and is lifted (as timed out for conntrack) once the DB sync completes.
func TestReadinessGateTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ct := newFakeCT()
		ct.set(ctrel.WaitSilent)
		d := gateDaemon(ct)
		d.status.Readiness(3, true, "start", []string{repConntrack, repDB}, time.Now(), true)
		db := make(chan struct{})
		go d.readinessGate(t.Context(), 3, ct.Rearm(), db, 30*time.Second)
		time.Sleep(time.Hour)
		synctest.Wait()
		select {
		case ev := <-d.events:
			t.Fatalf("verdict %+v with the DB sync incomplete", ev.ready)
		default:
		}
		waiting := d.status.Snapshot(time.Now()).Readiness.Waiting
		if len(waiting) != 1 || !strings.HasPrefix(waiting[0], repDB+": held past the startup timeout") {
			t.Fatalf("waiting %q", waiting)
		}
		close(db)
		ev := <-d.events
		want := &readyEvent{gen: 3, timedOut: true, incomplete: []string{repConntrack}}
		if d := cmp.Diff(want, ev.ready, cmp.AllowUnexported(readyEvent{})); d != "" {
			t.Fatalf("verdict (-want +got):\n%s", d)
		}
	})
}

// Without DB sync the timeout lifts the hold as before.
func TestReadinessGateTimeoutConntrackOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ct := newFakeCT()
		ct.set(ctrel.WaitSilent)
		d := gateDaemon(ct)
		start := time.Now()
		go d.readinessGate(t.Context(), 3, ct.Rearm(), nil, 30*time.Second)
		ev := <-d.events
		if waited := time.Since(start); waited != 30*time.Second {
			t.Errorf("verdict after %v, want the 30s timeout", waited)
		}
		want := &readyEvent{gen: 3, timedOut: true, incomplete: []string{repConntrack}}
		if d := cmp.Diff(want, ev.ready, cmp.AllowUnexported(readyEvent{})); d != "" {
			t.Fatalf("verdict (-want +got):\n%s", d)
		}
	})
}

func TestReadinessGateSuperseded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ct := newFakeCT()
		d := gateDaemon(ct)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			d.readinessGate(ctx, 1, ct.Rearm(), nil, time.Minute)
		}()
		time.Sleep(time.Second)
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("a cancelled gate is still running")
		}
		if len(d.events) != 0 {
			t.Fatal("a cancelled gate sent a verdict")
		}
	})
}

// The readiness is in the status JSON and in the metrics (the page:
// status.TestPageShowsReadiness).
func TestReadinessStatusAndMetrics(t *testing.T) {
	d := gateDaemon(nil)
	d.stats = status.NewMetrics()
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	d.status.Readiness(1, true, "back from FAULT", []string{repConntrack, repDB}, at, true)
	d.stats.PreemptionHeld(true, true)
	d.status.ReadinessWaiting(1, []string{ctrel.WaitSilent})
	d.status.ReadinessWaiting(0, []string{"a superseded gate"})

	st := d.Status()
	b, err := json.Marshal(st.Readiness)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"held":true,"reason":"back from FAULT","waiting":["` + ctrel.WaitSilent + `"],"since":"2026-11-25T08:00:00Z","holds":1}`
	if string(b) != want {
		t.Errorf("readiness JSON\n got %s\nwant %s", b, want)
	}
	metric := func(name string) float64 { return metricValue(t, d.stats, name) }
	if h, n := metric("muros_had_preemption_held"), metric("muros_had_preemption_holds_total"); h != 1 || n != 1 {
		t.Errorf("held %v, holds %v; want 1, 1", h, n)
	}

	// (A verdict of a superseded wait changes nothing: the core's rule,
	// node.TestHoldFollowsBackupEntries and TestLoopReadinessHold.)
	d.status.Readiness(2, false, "startup timeout; incomplete: "+repDB, nil, at, false)
	d.stats.PreemptionHeld(false, false)
	d.stats.HoldTimedOut()
	if h, n := metric("muros_had_preemption_held"), metric("muros_had_preemption_hold_timeouts_total"); h != 0 || n != 1 {
		t.Errorf("held %v, timeouts %v; want 0, 1", h, n)
	}
	if r := d.Status().Readiness; r.Held || r.Holds != 1 || r.Waiting != nil {
		t.Errorf("after the timeout: %+v", r)
	}
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
