package daemon

import (
	"context"
	"encoding/json"
	"html"
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
		status: newStatusBook(cfg), events: make(chan loopEvent, 4), ct: ct,
	}
}

// The gate sends its verdict once both replications are complete, shows
// what it waits for meanwhile, and ends without a verdict when superseded.
func TestReadinessGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ct := newFakeCT()
		d := gateDaemon(ct)
		db := make(chan struct{})
		d.status.readiness(7, true, "stepped down from MASTER", []string{repConntrack, repDB}, time.Now(), true)
		start := time.Now()
		go d.readinessGate(t.Context(), 7, ct.Rearm(), db, time.Minute)

		// No time passes below: the gate follows ctsync's reports, it
		// does not poll.
		synctest.Wait()
		if got := d.status.snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{repConntrack, repDB}) {
			t.Fatalf("before ctsync judged the wait: waiting %q", got)
		}
		for _, why := range []string{ctsync.WaitSender, ctrel.WaitBulk, ctrel.WaitGap} {
			ct.set(why)
			synctest.Wait()
			if got := d.status.snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{why, repDB}) {
				t.Fatalf("ctsync reports %q: waiting %q", why, got)
			}
		}
		ct.done(ctrel.DoneBulk)
		synctest.Wait()
		if got := d.status.snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{repDB}) {
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
		d.status.readiness(3, true, "start", []string{repConntrack, repDB}, time.Now(), true)
		db := make(chan struct{})
		go d.readinessGate(t.Context(), 3, ct.Rearm(), db, 30*time.Second)
		time.Sleep(time.Hour)
		synctest.Wait()
		select {
		case ev := <-d.events:
			t.Fatalf("verdict %+v with the DB sync incomplete", ev.ready)
		default:
		}
		waiting := d.status.snapshot(time.Now()).Readiness.Waiting
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

func TestReadinessText(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		r    *Readiness
		want string
	}{
		{nil, "not held (no replication on)"},
		{&Readiness{Held: true, Reason: "back from FAULT", Waiting: []string{ctrel.WaitSilent, repDB}, Since: at},
			"preemption HELD since 2026-11-25T08:00:00Z (back from FAULT): waiting for " + ctrel.WaitSilent + "; " + repDB},
		{&Readiness{Reason: "replications complete", Since: at}, "preemption allowed since 2026-11-25T08:00:00Z: replications complete"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

// The readiness is in the status JSON and page, and in the metrics.
func TestReadinessStatusAndMetrics(t *testing.T) {
	d := gateDaemon(nil)
	d.stats = newRxStats()
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	d.status.readiness(1, true, "back from FAULT", []string{repConntrack, repDB}, at, true)
	d.stats.preemptionHeld(true, true)
	d.status.readinessWaiting(1, []string{ctrel.WaitSilent})
	d.status.readinessWaiting(0, []string{"a superseded gate"})

	st := d.Status()
	b, err := json.Marshal(st.Readiness)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"held":true,"reason":"back from FAULT","waiting":["` + ctrel.WaitSilent + `"],"since":"2026-11-25T08:00:00Z","holds":1}`
	if string(b) != want {
		t.Errorf("readiness JSON\n got %s\nwant %s", b, want)
	}
	var page strings.Builder
	if err := statusPage.Execute(&page, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "<th>Preemption</th><td>"+html.EscapeString("preemption HELD since 2026-11-25T08:00:00Z (back from FAULT): waiting for "+ctrel.WaitSilent)) {
		t.Errorf("status page has no readiness line:\n%s", page.String()[:min(1500, page.Len())])
	}
	metric := func(name string) float64 { return metricValue(t, d.stats, name) }
	if h, n := metric("muros_had_preemption_held"), metric("muros_had_preemption_holds_total"); h != 1 || n != 1 {
		t.Errorf("held %v, holds %v; want 1, 1", h, n)
	}

	// (A verdict of a superseded wait changes nothing: the core's rule,
	// node.TestHoldFollowsBackupEntries and TestLoopReadinessHold.)
	d.status.readiness(2, false, "startup timeout; incomplete: "+repDB, nil, at, false)
	d.stats.preemptionHeld(false, false)
	d.stats.holdTimedOut()
	if h, n := metric("muros_had_preemption_held"), metric("muros_had_preemption_hold_timeouts_total"); h != 0 || n != 1 {
		t.Errorf("held %v, timeouts %v; want 0, 1", h, n)
	}
	if r := d.Status().Readiness; r.Held || r.Holds != 1 || r.Waiting != nil {
		t.Errorf("after the timeout: %+v", r)
	}
}
