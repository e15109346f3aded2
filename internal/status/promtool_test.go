package status

import (
	"bytes"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/vrrp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// PromtoolCheck runs Prometheus's own linter (promtool check metrics,
// Debian's prometheus package) on a /metrics body and returns what it
// complains about.
func PromtoolCheck(t testing.TB, body []byte) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (Debian package prometheus, scripts/install-deps.sh): %v", err)
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)) + " (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

// populatedRegistry is the daemon's registry with every series of this
// package present (each labelled counter with a label value).
func populatedRegistry() *prometheus.Registry {
	m := NewMetrics()
	m.InitStates(testConfig())
	m.StateChange(10, vrrp.StateMaster, vrrp.StateMaster)
	m.Reject("auth_failed")
	m.HeardKey(vrrp.KeyVersion(2))
	m.Sent()
	m.SendError()
	m.PreemptionHeld(true, true)
	m.HoldTimedOut()
	m.PeerPolled("")
	m.PeerPolled("timeout")
	m.Alarms(false, true)
	m.RulesetFailed()
	m.Registry().MustRegister(ConntrackCollector(func() ctsync.Status {
		return ctsync.Status{Master: true, Flows: 3, Lag: 2 * time.Millisecond, DatagramsSent: 9,
			Rejected: map[string]uint64{"replay": 1}, FromOtherMaster: map[string]uint64{"update": 2},
			StaleResyncs: map[string]uint64{"echoed": 1}}
	}))
	return m.Registry()
}

// TestMetricsPassPromtool: promtool check metrics accepts /metrics as the
// status listener serves it.
func TestMetricsPassPromtool(t *testing.T) {
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(populatedRegistry(), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.Bytes()
	for _, want := range []string{"muros_had_vrrp_group_state", "muros_had_conntrack_rejected_total", "muros_had_conntrack_from_other_master_total"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Fatalf("/metrics lacks %s:\n%s", want, body)
		}
	}
	if problems := PromtoolCheck(t, body); problems != "" {
		t.Errorf("promtool check metrics:\n%s", problems)
	}
}

// TestPromtoolCheckCatchesProblems: the check fails on what promtool
// complains about (a counter without _total, a missing help), so
// TestMetricsPassPromtool can fail.
func TestPromtoolCheckCatchesProblems(t *testing.T) {
	bad := "# HELP muros_had_x_count Things.\n# TYPE muros_had_x_count counter\nmuros_had_x_count 1\n# TYPE muros_had_y gauge\nmuros_had_y 1\n"
	got := PromtoolCheck(t, []byte(bad))
	for _, want := range []string{"muros_had_x_count", "muros_had_y"} {
		if !strings.Contains(got, want) {
			t.Errorf("promtool's complaints lack %s: %q", want, got)
		}
	}
}
