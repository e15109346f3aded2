package health

import (
	"context"
	"time"

	"github.com/muros/muros-had/config"
)

// Result is one probe of a check with the verdict it left.
type Result struct {
	Name string
	// OK is this probe's result; Err says why it failed (nil when OK).
	OK  bool
	Err error
	// Took is how long the probe ran.
	Took time.Duration
	// Verdict is the damped verdict after this result; Changed says this
	// result turned it (the first result always does).
	Verdict bool
	Changed bool
	// Run counts the results in a row that disagree with the verdict.
	Run int
	At  time.Time
}

// Detail is the result's text for the status: "ok" or why it failed.
func (r Result) Detail() string {
	if r.Err != nil {
		return r.Err.Error()
	}
	return "ok"
}

// Run probes ch with p every Interval (the first probe at once), each
// bounded by Timeout, damps the results by Rise and Fall and sends every
// result to out, until ctx ends. Probes never overlap: the next starts an
// Interval after this one started, or half an interval after it ended if
// delivering the result took longer. A result that
// cannot be delivered before ctx ends is dropped with it.
func Run(ctx context.Context, ch config.Check, p Probe, out chan<- Result) {
	d := Damper{Rise: ch.Rise, Fall: ch.Fall}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, ch.Timeout)
		err := p.Probe(pctx)
		if err != nil && pctx.Err() != nil && ctx.Err() == nil {
			err = ErrTimeout
		}
		cancel()
		if ctx.Err() != nil {
			return // cut short by the stop: not a result
		}
		var changed bool
		d, changed = d.Observe(err == nil)
		r := Result{Name: ch.Name, OK: err == nil, Err: err, Took: time.Since(start),
			Verdict: d.OK(), Changed: changed, Run: d.Run(), At: time.Now()}
		select {
		case out <- r:
		case <-ctx.Done():
			return
		}
		t.Reset(max(ch.Interval-time.Since(start), ch.Interval/2))
	}
}
