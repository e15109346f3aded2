package daemon

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/health"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/node"
)

// The health checks (package health) run in goroutines of their own, off
// the loop: each probes at its interval and reports every result to one
// forwarder, which records it in the status and the metrics and sends the
// loop a node.EventCheck when the damped verdict changes. The core decides
// what a verdict does (FAULT or a weight). A reload that changes the
// checks stops them all and starts the new list, with no re-election
// (EventChecks keeps the verdicts of checks kept by name).

// healthChecks is the running set of checks and their metrics.
type healthChecks struct {
	cancel context.CancelFunc
	done   sync.WaitGroup

	verdict *prometheus.GaugeVec
	runs    *prometheus.CounterVec
}

func newHealthChecks(reg prometheus.Registerer) *healthChecks {
	h := &healthChecks{
		verdict: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "muros_had_check_ok", Help: "Damped verdict of each health check: 1 OK, 0 failing.",
		}, []string{"check"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_check_runs_total", Help: "Health check probes, by check and result (ok, failed, timeout).",
		}, []string{"check", "result"}),
	}
	reg.MustRegister(h.verdict, h.runs)
	return h
}

// coreChecks is the check table of the core.
func coreChecks(cfg *config.Config) []node.Check {
	out := make([]node.Check, 0, len(cfg.Checks))
	for _, ch := range cfg.Checks {
		out = append(out, node.Check{Name: ch.Name, Fault: ch.Fault, Weight: ch.Weight})
	}
	return out
}

// startChecks starts the configured checks under Run's background
// context; a running set is stopped first. Called by the loop only.
func (d *Daemon) startChecks() {
	if d.health == nil {
		d.health = newHealthChecks(d.stats.Registry())
	}
	h := d.health
	if h.cancel != nil {
		h.cancel()
		h.done.Wait()
		h.cancel = nil
	}
	list := make([]status.CheckStatus, 0, len(d.cfg.Checks))
	for _, ch := range d.cfg.Checks {
		list = append(list, status.CheckStatus{Name: ch.Name, Kind: string(ch.Kind), Target: ch.Describe(), Effect: ch.Effect()})
	}
	d.status.SetChecks(list)
	h.verdict.Reset()
	if len(d.cfg.Checks) == 0 {
		return
	}
	newProbe := d.ad.Probe
	if newProbe == nil {
		newProbe = health.NewProbe
	}
	ctx, cancel := context.WithCancel(d.bg)
	h.cancel = cancel
	results := make(chan health.Result, len(d.cfg.Checks))
	for _, ch := range d.cfg.Checks {
		p, err := newProbe(ch)
		if err != nil {
			// Parse refuses what NewProbe cannot build: a bug. The check
			// stays unproven, so its effect holds (the safe side).
			d.log.Error("health check cannot run", "check", ch.Name, "err", err)
			continue
		}
		h.done.Go(func() { health.Run(ctx, ch, p, results) })
	}
	byName := map[string]config.Check{}
	for _, ch := range d.cfg.Checks {
		byName[ch.Name] = ch
	}
	h.done.Go(func() { d.forwardChecks(ctx, byName, results) })
	// Run's wait covers them: they end with bg.
	d.wg.Go(func() { <-ctx.Done(); h.done.Wait() })
}

// forwardChecks records each result and sends verdict changes to the loop.
func (d *Daemon) forwardChecks(ctx context.Context, checks map[string]config.Check, results <-chan health.Result) {
	h := d.health
	for {
		var r health.Result
		select {
		case <-ctx.Done():
			return
		case r = <-results:
		}
		result := "ok"
		switch {
		case errors.Is(r.Err, health.ErrTimeout):
			result = "timeout"
		case r.Err != nil:
			result = "failed"
		}
		h.runs.WithLabelValues(r.Name, result).Inc()
		h.verdict.WithLabelValues(r.Name).Set(b2f(r.Verdict))
		d.status.CheckResult(r.Name, r.Verdict, r.Changed, r.Detail(), r.At, r.Took, r.Run)
		if !r.Changed {
			continue
		}
		ch := checks[r.Name]
		if r.Verdict {
			d.log.Info("health check OK", "check", r.Name, "what", ch.Describe(), "effect", ch.Effect())
		} else {
			d.log.Warn("health check failing", "check", r.Name, "what", ch.Describe(), "effect", ch.Effect(), "result", r.Detail())
		}
		if !d.send(loopEvent{ev: node.Event{Kind: node.EventCheck, Check: r.Name, OK: r.Verdict}}, ctx.Done(), nil) {
			return
		}
	}
}

// checkPriority records the priority after a step that may have moved it
// (a check's weight, a reload), and logs the change.
func (d *Daemon) checkPriority(before uint8) {
	if p := d.core.Priority(); p != before {
		d.status.SetPriority(p)
		d.log.Info("priority changes", "from", before, "to", p, "role_priority", d.cfg.Priority())
	}
}

// reloadChecks applies a reload that changed the checks: the core gets the
// new table (verdicts of kept checks stay; new ones count for nothing
// until their first result), then the checks restart.
func (d *Daemon) reloadChecks(ctx context.Context) {
	before := d.core.Priority()
	d.step(ctx, node.Event{Kind: node.EventChecks, Checks: coreChecks(d.cfg)})
	d.checkPriority(before)
	d.startChecks()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
