package daemon

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/health"
	"github.com/muros/muros-had/internal/status"
)

// fakeProbes are the health checks' probes of a loop node: each check
// passes or fails as the test sets it, and counts its probes.
type fakeProbes struct {
	mu   sync.Mutex
	fail map[string]bool
	runs map[string]int
}

func newFakeProbes() *fakeProbes {
	return &fakeProbes{fail: map[string]bool{}, runs: map[string]int{}}
}

func (f *fakeProbes) set(name string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[name] = !ok
}

func (f *fakeProbes) probe(ch config.Check) (health.Probe, error) {
	return health.ProbeFunc(func(context.Context) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.runs[ch.Name]++
		if f.fail[ch.Name] {
			return errors.New("upstream gateway does not answer")
		}
		return nil
	}), nil
}

// withCheck gives a loop node a health check with fake probes (before
// start).
func withCheck(n *loopNode, probes *fakeProbes, checks ...config.Check) {
	n.cfg.Checks = append(n.cfg.Checks, checks...)
	n.d.opts.Adapters.Probe = probes.probe
}

// check200 is a check probed every 200 ms, turning after rise 3 / fall 2.
func check200(name string, fault bool, weight int) config.Check {
	return config.Check{Name: name, Kind: config.CheckCommand, Command: []string{"/bin/true"},
		Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 3, Fall: 2, Fault: fault, Weight: weight}
}

func checkStatus(t *testing.T, n *loopNode, name string) status.CheckStatus {
	t.Helper()
	for _, c := range n.d.Status().Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s: no check %s in the status", n.name, name)
	return status.CheckStatus{}
}

// TestLoopCheckFault: a failing fault check moves MASTER to the peer after
// fall failures, not before (one failure is damped), and back after rise
// successes; the status shows the check's verdict and last result.
func TestLoopCheckFault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		probes := newFakeProbes()
		withCheck(fw1, probes, check200("upstream", true, 0))
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		if c := checkStatus(t, fw1, "upstream"); c.State != status.CheckOK || c.Last != "ok" || c.Effect != "fault" {
			t.Fatalf("status of a passing check: %+v", c)
		}

		// A single failure (fall 2) is damped.
		before := len(fw1.logText())
		probes.set("upstream", false)
		settle(200 * time.Millisecond)
		probes.set("upstream", true)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		if log := fw1.logText()[before:]; strings.Contains(log, "to=FAULT") || strings.Contains(log, "health check failing") {
			t.Fatalf("one failure (fall 2) turned the verdict:\n%s", log)
		}

		probes.set("upstream", false)
		settle(time.Second)
		fw1.check(t, "FAULT")
		fw2.check(t, "MASTER")
		c := checkStatus(t, fw1, "upstream")
		if c.State != status.CheckFailing || !strings.Contains(c.Last, "does not answer") || c.Since.IsZero() {
			t.Fatalf("status of a failing check: %+v", c)
		}

		if got := checkMetric(t, fw1, "muros_had_check_ok", "upstream", ""); got != 0 {
			t.Errorf("muros_had_check_ok{check=upstream} = %v while failing, want 0", got)
		}
		if got := checkMetric(t, fw1, "muros_had_check_runs_total", "upstream", "failed"); got < 3 {
			t.Errorf("muros_had_check_runs_total{check=upstream,result=failed} = %v, want at least 3", got)
		}
		// Two successes (rise 3) are not enough.
		probes.set("upstream", true)
		settle(300 * time.Millisecond)
		fw1.check(t, "FAULT")
		settle(time.Second)
		fw1.check(t, "MASTER") // preempts back: priority 150
		fw2.check(t, "BACKUP")
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopCheckWeight: a failing check with a negative weight lowers the
// master's priority below the backup's, which preempts; its recovery
// gives the priority back and the master preempts in turn.
func TestLoopCheckWeight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		probes := newFakeProbes()
		withCheck(fw1, probes, check200("dns", false, -60))
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		if p := fw1.d.Status().Priority; p != 150 {
			t.Fatalf("priority %d, want 150", p)
		}
		probes.set("dns", false)
		settle(time.Second)
		fw1.check(t, "BACKUP")
		fw2.check(t, "MASTER")
		if p := fw1.d.Status().Priority; p != 90 {
			t.Errorf("priority %d with the weight applied, want 90", p)
		}
		probes.set("dns", true)
		settle(1500 * time.Millisecond)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		if p := fw1.d.Status().Priority; p != 150 {
			t.Errorf("priority %d after recovery, want 150", p)
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopReloadChecksInPlace: a reload that adds a check restarts the
// checks without a re-election; a reload that removes a failing fault
// check ends its FAULT.
func TestLoopReloadChecksInPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		probes := newFakeProbes()
		withCheck(fw1, probes)
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		added := check200("web", true, 0)
		fw1.d.opts.Reload = func() (*config.Config, error) {
			c := loopConfig(t, fw1.dir, "master", loopAddr2, false)
			c.Checks = []config.Check{added}
			return c, nil
		}
		fw1.d.Trigger()
		settle(time.Second)
		fw1.check(t, "MASTER")
		if c := checkStatus(t, fw1, "web"); c.State != status.CheckOK {
			t.Fatalf("added check: %+v", c)
		}
		log := fw1.logText()
		_, after, applied := strings.Cut(log, "reload: applied in place")
		if !applied || strings.Contains(after, "state change") {
			t.Fatalf("adding a check moved the election or was not applied in place:\n%s", log)
		}
		probes.set("web", false)
		settle(time.Second)
		fw1.check(t, "FAULT")
		fw1.d.opts.Reload = func() (*config.Config, error) { return loopConfig(t, fw1.dir, "master", loopAddr2, false), nil }
		fw1.d.Trigger()
		settle(time.Second)
		fw1.check(t, "MASTER")
		if cs := fw1.d.Status().Checks; len(cs) != 0 {
			t.Errorf("removed check still shown: %+v", cs)
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// checkMetric reads a check metric of the node's registry (-1: absent).
func checkMetric(t *testing.T, n *loopNode, name, check, result string) float64 {
	t.Helper()
	mfs, err := n.d.stats.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["check"] != check || labels["result"] != result {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}
