package status

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/vrrp"
)

// TestTimelineKeepsLastChanges: the timeline holds the group's failovers
// (a start as BACKUP is none), oldest first, at most TimelineLen, and a
// snapshot does not share it.
func TestTimelineKeepsLastChanges(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	b := NewBook(testConfig(), nil)
	b.Transition(10, vrrp.StateInitialize, vrrp.StateBackup, "start", at, vrrp.StateBackup)
	var want []Failover
	state := vrrp.StateBackup
	for i := range TimelineLen + 5 {
		next := vrrp.StateMaster
		if state == vrrp.StateMaster {
			next = vrrp.StateBackup
		}
		now := at.Add(time.Duration(i+1) * time.Second)
		reason := fmt.Sprintf("change %d", i)
		b.Transition(10, state, next, reason, now, next)
		want = append(want, Failover{Time: now, From: state.String(), To: next.String(), Reason: reason})
		state = next
	}
	want = want[len(want)-TimelineLen:]
	s := b.Snapshot(at.Add(time.Hour))
	if d := cmp.Diff(want, s.Timeline); d != "" {
		t.Errorf("timeline (-want +got):\n%s", d)
	}
	if !s.Time.Equal(at.Add(time.Hour)) {
		t.Errorf("document time %v", s.Time)
	}
	s.Timeline[0].Reason = "changed"
	if got := b.Snapshot(at).Timeline[0].Reason; got != want[0].Reason {
		t.Errorf("snapshot shares the timeline: %q", got)
	}
	if got := s.TimelineNewestFirst()[0]; got != want[len(want)-1] {
		t.Errorf("newest first starts with %+v", got)
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return now.Add(-d) }
	tests := []struct {
		t    any
		now  time.Time
		want string
	}{
		{at(3200 * time.Millisecond), now, "3.2 s ago"},
		{at(90 * time.Second), now, "1.5 min ago"},
		{at(3 * time.Hour), now, "3.0 h ago"},
		{at(72 * time.Hour), now, "3 days ago"},
		{time.Time{}, now, "never"},
		{(*time.Time)(nil), now, "never"},
		{at(-time.Second), now, "2026-12-07T12:00:01Z"},
		{at(time.Second), time.Time{}, "2026-12-07T11:59:59Z"},
	}
	for _, tt := range tests {
		if got := Ago(tt.t, tt.now); got != tt.want {
			t.Errorf("Ago(%v, %v) = %q, want %q", tt.t, tt.now, got, tt.want)
		}
	}
}

// TestPageShowsSyncAndTimeline: the page renders the conntrack and DB
// sync parts as figures (not JSON) and the timeline as a table, newest
// first, with the reasons escaped.
func TestPageShowsSyncAndTimeline(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	last := at.Add(-1500 * time.Millisecond)
	st := Status{
		Node: "fw1", State: "MASTER", Time: at,
		Conntrack: &ConntrackStatus{Role: "sender", BulkSynced: true, Flows: 1234, LagMS: 2.5, Lost: 3, Repaired: 2, Resyncs: 1},
		DB: map[string]any{"role": "master", "revision": 42, "pending_paths": 2, "lag_ms": 700,
			"last_sync": last, "ready": true, "peer": map[string]any{"reachable": true, "revision": 41}},
		Timeline: []Failover{
			{Time: at.Add(-time.Hour), From: "MASTER", To: "BACKUP", Reason: "priority <0>"},
			{Time: at.Add(-time.Minute), From: "BACKUP", To: "MASTER", Reason: "master down"},
		},
	}
	var page strings.Builder
	if err := statusPage.Execute(&page, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<h2>Conntrack sync</h2>`,
		`<tr><th>Flows</th><td>1234</td></tr>`,
		`<tr><th>Lag</th><td>2.5 ms</td></tr>`,
		`<tr><th>Lost / repaired</th><td>3 / 2</td></tr>`,
		`<h2>DB sync</h2>`,
		`<tr><th>Revision</th><td>42 (peer 41)</td></tr>`,
		`<tr><th>Last push</th><td>1.5 s ago</td></tr>`,
		`<tr><th>Pending</th><td>2 paths, oldest 700.0 ms</td></tr>`,
		`<h2>Timeline</h2>`,
		`<td>BACKUP</td><td class="MASTER">MASTER</td><td>master down</td></tr>
<tr><td>2026-12-07 11:00:00.000Z</td><td>1.0 h ago</td><td>MASTER</td><td class="BACKUP">BACKUP</td><td>priority &lt;0&gt;</td></tr>`,
	} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("status page lacks %s:\n%s", want, page.String())
		}
	}
	if strings.Contains(page.String(), `"bulk_synced"`) {
		t.Error("the page shows conntrack as JSON")
	}
}

// TestPageHidesPeerMaintenanceOff: a peer that answered maintenance false
// is not shown in maintenance (the page's template took the non-nil
// pointer for true; seen on the browser test's screenshot).
func TestPageHidesPeerMaintenanceOff(t *testing.T) {
	off := false
	st := Status{Peer: PeerStatus{Polled: true, Reachable: true, Maintenance: &off}}
	var page strings.Builder
	if err := statusPage.Execute(&page, st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.String(), "MAINTENANCE") {
		t.Errorf("a peer with maintenance off shows in maintenance:\n%s", page.String())
	}
}

// TestPageMarksPeerUnreachable: an unanswered peer poll stands out on the
// page (it is how a crashed peer first shows).
func TestPageMarksPeerUnreachable(t *testing.T) {
	st := Status{Peer: PeerStatus{Polled: true, Error: "no route to host"}}
	var page strings.Builder
	if err := statusPage.Execute(&page, st); err != nil {
		t.Fatal(err)
	}
	if want := `<th>Peer health</th><td><span class="FAULT">unreachable</span> (no route to host)`; !strings.Contains(page.String(), want) {
		t.Errorf("status page lacks %s:\n%s", want, page.String())
	}
}
