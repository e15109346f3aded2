package status

import (
	"html"
	"strings"
	"testing"
	"time"
)

func TestReadinessText(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		r    *Readiness
		want string
	}{
		{nil, "not held (no replication on)"},
		{&Readiness{Held: true, Reason: "back from FAULT", Waiting: []string{waitSilent, "DB sync"}, Since: at},
			"preemption HELD since 2026-11-25T08:00:00Z (back from FAULT): waiting for " + waitSilent + "; " + "DB sync"},
		{&Readiness{Reason: "replications complete", Since: at}, "preemption allowed since 2026-11-25T08:00:00Z: replications complete"},
	} {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

// The page shows the preemption hold and what it waits for.
func TestPageShowsReadiness(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	st := Status{Readiness: &Readiness{Held: true, Reason: "back from FAULT", Waiting: []string{waitSilent}, Since: at, Holds: 1}}
	var page strings.Builder
	if err := statusPage.Execute(&page, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "<th>Preemption</th><td>"+html.EscapeString("preemption HELD since 2026-11-25T08:00:00Z (back from FAULT): waiting for "+waitSilent)) {
		t.Errorf("status page has no readiness line:\n%s", page.String()[:min(1500, page.Len())])
	}
}

// waitSilent is a reason with characters the page must escape.
const waitSilent = "conntrack sync: the master's \"bulk\" <silent>"

func TestPageShowsChecks(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	st := Status{Checks: []CheckStatus{{Name: "upstream", Target: "ping 192.0.2.1 via wan0", Effect: "fault", State: CheckFailing, Since: at,
		Last: "no <reply>", LastAt: at}}}
	var page strings.Builder
	if err := statusPage.Execute(&page, st); err != nil {
		t.Fatal(err)
	}
	want := `<tr><td>upstream</td><td>ping 192.0.2.1 via wan0</td><td>fault</td><td class="FAULT">failing</td><td>2026-11-25 08:00:00Z</td><td>no &lt;reply&gt;</td>`
	if !strings.Contains(page.String(), want) {
		t.Errorf("status page has no check row %s:\n%s", want, page.String())
	}
}
