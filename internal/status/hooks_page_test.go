package status

import (
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hooks"
)

// TestPageShowsHooks: the status page lists the last run of each hook, a
// failure with its exit status.
func TestPageShowsHooks(t *testing.T) {
	st := Status{Node: "fw1", State: "MASTER", Hooks: []hooks.Result{
		{Hook: "backup[0]", State: "BACKUP", Start: time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC), Duration: 30 * time.Second, Outcome: hooks.TimedOut, ExitStatus: -1},
		{Hook: "master[0]", State: "MASTER", Start: time.Date(2026, 12, 7, 6, 1, 0, 0, time.UTC), Duration: 12 * time.Millisecond, Outcome: hooks.Failed, ExitStatus: 3, Error: "exit status 3"},
	}}
	var b strings.Builder
	if err := statusPage.Execute(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<h2>Role hooks (last run)</h2>",
		`<td>backup[0]</td><td>BACKUP</td><td class="FAULT">timed_out</td><td>2026-12-07 06:00:00Z</td><td>30s</td>`,
		`<td>master[0]</td><td>MASTER</td><td class="FAULT">failed (exit 3: exit status 3)</td>`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
