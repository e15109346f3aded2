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
	"pgregory.net/rapid"
)

func TestCTWait(t *testing.T) {
	sender := ctsync.Status{Master: true, BulkSynced: true, Resyncs: 4, DatagramsReceived: 10}
	synced := ctsync.Status{BulkSynced: true, Resyncs: 1, DatagramsReceived: 500, Lost: 3, Repaired: 3}
	fresh := ctsync.Status{DatagramsReceived: 10}
	with := func(s ctsync.Status, f func(*ctsync.Status)) ctsync.Status { f(&s); return s }
	for _, tt := range []struct {
		name  string
		snaps []ctsync.Status
		want  []ctVerdict
	}{
		{
			"demoted master: the stale sender snapshot, then a fresh receiver's bulk",
			[]ctsync.Status{sender, fresh, with(fresh, func(s *ctsync.Status) { s.DatagramsReceived = 90 }),
				with(fresh, func(s *ctsync.Status) { s.BulkSynced, s.Resyncs, s.DatagramsReceived = true, 1, 100 })},
			[]ctVerdict{{why: ctWhySender}, {why: ctWhyBulk}, {why: ctWhyBulk}, {done: true, why: ctDoneBulk}},
		},
		{
			"demoted master whose new receiver completed its bulk between two snapshots",
			[]ctsync.Status{sender, with(fresh, func(s *ctsync.Status) { s.BulkSynced, s.Resyncs = true, 1 })},
			[]ctVerdict{{why: ctWhySender}, {done: true, why: ctDoneBulk}},
		},
		{
			"synced receiver: silent while its link is cut, then a gap, repaired",
			[]ctsync.Status{synced, synced,
				with(synced, func(s *ctsync.Status) { s.DatagramsReceived, s.Lost = 501, 9 }),
				with(synced, func(s *ctsync.Status) { s.DatagramsReceived, s.Lost, s.Repaired = 510, 9, 9 })},
			[]ctVerdict{{why: ctWhySilent}, {why: ctWhySilent}, {why: ctWhyGap}, {done: true, why: ctDoneStream}},
		},
		{
			"synced receiver whose gap cannot be repaired: a new bulk",
			[]ctsync.Status{synced,
				with(synced, func(s *ctsync.Status) { s.BulkSynced, s.DatagramsReceived, s.Lost = false, 501, 9 }),
				with(synced, func(s *ctsync.Status) { s.Resyncs, s.DatagramsReceived, s.Lost = 2, 900, 9 })},
			[]ctVerdict{{why: ctWhySilent}, {why: ctWhyBulk}, {done: true, why: ctDoneBulk}},
		},
		{
			"synced receiver that hears the stream at once",
			[]ctsync.Status{synced, with(synced, func(s *ctsync.Status) { s.DatagramsReceived = 501 })},
			[]ctVerdict{{why: ctWhySilent}, {done: true, why: ctDoneStream}},
		},
		{
			"a start: no status published yet, then the first bulk",
			[]ctsync.Status{{}, {DatagramsReceived: 3}, {BulkSynced: true, Resyncs: 1, DatagramsReceived: 40}},
			[]ctVerdict{{why: ctWhyBulk}, {why: ctWhyBulk}, {done: true, why: ctDoneBulk}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var w ctWait
			var got []ctVerdict
			for _, s := range tt.snaps {
				got = append(got, w.observe(s))
			}
			if d := cmp.Diff(tt.want, got, cmp.AllowUnexported(ctVerdict{})); d != "" {
				t.Fatalf("verdicts (-want +got):\n%s", d)
			}
		})
	}
}

// Whatever the snapshots, the conntrack part is never complete while the
// node is the sender or unsynced, and a receiver that was already synced
// when the wait began must have heard the master again (or had a new bulk).
func TestCTWaitProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var w ctWait
		n := rapid.IntRange(1, 20).Draw(t, "n")
		var s ctsync.Status
		var first *ctsync.Status
		sawSender, firstAt := false, -1
		for i := range n {
			// Counters only grow within one receiver (a demotion makes a
			// new receiver; that case starts the sequence with Master).
			s.Master = i == 0 && rapid.Bool().Draw(t, "master")
			s.BulkSynced = rapid.Bool().Draw(t, "synced")
			s.Resyncs += uint64(rapid.IntRange(0, 1).Draw(t, "resync"))
			s.DatagramsReceived += uint64(rapid.IntRange(0, 2).Draw(t, "dgrams"))
			s.Lost += uint64(rapid.IntRange(0, 2).Draw(t, "lost"))
			s.Repaired = min(s.Lost, s.Repaired+uint64(rapid.IntRange(0, 2).Draw(t, "repaired")))
			v := w.observe(s)
			sawSender = sawSender || s.Master
			if !s.Master && first == nil {
				c := s
				first, firstAt = &c, i
			}
			if !v.done {
				continue
			}
			switch {
			case s.Master || !s.BulkSynced:
				t.Fatalf("done with %+v", s)
			case i == firstAt && sawSender:
				// The receiver that replaced the sender: synced means a
				// bulk since the wait began.
			case s.Resyncs == first.Resyncs && s.DatagramsReceived == first.DatagramsReceived:
				t.Fatalf("done without a bulk or a datagram since the wait began: first %+v now %+v", *first, s)
			case s.Resyncs == first.Resyncs && openGaps(s) > openGaps(*first):
				t.Fatalf("done with gaps open: first %+v now %+v", *first, s)
			}
			return
		}
	})
}

// fakeCT is a conntrackSync whose status the test sets.
type fakeCT struct {
	mu sync.Mutex
	st ctsync.Status
}

func (f *fakeCT) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeCT) SetRole(bool)                  {}
func (f *fakeCT) Ready() <-chan struct{}        { return nil }
func (f *fakeCT) Status() ctsync.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}
func (f *fakeCT) set(s ctsync.Status) {
	f.mu.Lock()
	f.st = s
	f.mu.Unlock()
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
		ct := &fakeCT{st: ctsync.Status{Master: true, BulkSynced: true}}
		d := gateDaemon(ct)
		db := make(chan struct{})
		d.status.readiness(7, true, "stepped down from MASTER", []string{repConntrack, repDB}, time.Now(), true)
		go d.readinessGate(t.Context(), 7, db, time.Minute)

		synctest.Wait()
		if got := d.status.snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{ctWhySender, repDB}) {
			t.Fatalf("waiting %q", got)
		}
		ct.set(ctsync.Status{DatagramsReceived: 5})
		time.Sleep(ctPollInterval)
		synctest.Wait()
		if got := d.status.snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{ctWhyBulk, repDB}) {
			t.Fatalf("waiting %q", got)
		}
		ct.set(ctsync.Status{BulkSynced: true, Resyncs: 1, DatagramsReceived: 50})
		time.Sleep(ctPollInterval)
		synctest.Wait()
		if got := d.status.snapshot(time.Now()).Readiness.Waiting; !cmp.Equal(got, []string{repDB}) {
			t.Fatalf("waiting %q", got)
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

func TestReadinessGateTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := gateDaemon(&fakeCT{st: ctsync.Status{BulkSynced: true, Resyncs: 1}})
		start := time.Now()
		go d.readinessGate(t.Context(), 3, make(chan struct{}), 30*time.Second)
		ev := <-d.events
		if waited := time.Since(start); waited != 30*time.Second {
			t.Errorf("verdict after %v, want the 30s timeout", waited)
		}
		want := &readyEvent{gen: 3, timedOut: true, incomplete: []string{repConntrack, repDB}}
		if d := cmp.Diff(want, ev.ready, cmp.AllowUnexported(readyEvent{})); d != "" {
			t.Fatalf("verdict (-want +got):\n%s", d)
		}
	})
}

func TestReadinessGateSuperseded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := gateDaemon(&fakeCT{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			d.readinessGate(ctx, 1, nil, time.Minute)
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
		{&Readiness{Held: true, Reason: "back from FAULT", Waiting: []string{ctWhySilent, repDB}, Since: at},
			"preemption HELD since 2026-11-25T08:00:00Z (back from FAULT): waiting for " + ctWhySilent + "; " + repDB},
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
	d.status.readinessWaiting(1, []string{ctWhySilent})
	d.status.readinessWaiting(0, []string{"a superseded gate"})

	st := d.Status()
	b, err := json.Marshal(st.Readiness)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"held":true,"reason":"back from FAULT","waiting":["` + ctWhySilent + `"],"since":"2026-11-25T08:00:00Z","holds":1}`
	if string(b) != want {
		t.Errorf("readiness JSON\n got %s\nwant %s", b, want)
	}
	var page strings.Builder
	if err := statusPage.Execute(&page, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "<th>Preemption</th><td>"+html.EscapeString("preemption HELD since 2026-11-25T08:00:00Z (back from FAULT): waiting for "+ctWhySilent)) {
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
