package hooks

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Book keeps the last result of every hook for the status, counts results
// by hook and outcome (muros_had_hook_runs_total), and decides the log
// lines: one at the first failure of a streak, one when the hook succeeds
// again. Safe for concurrent use (hook sequences report from their
// goroutines, the status reads).
type Book struct {
	mu      sync.Mutex
	last    map[string]Result
	failing map[string]bool
	runs    *prometheus.CounterVec
}

// NewBook returns an empty book.
func NewBook() *Book {
	return &Book{
		last:    map[string]Result{},
		failing: map[string]bool{},
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_hook_runs_total",
			Help: "Role hooks run, by hook (list[index]) and outcome (ok, failed, timed_out, superseded, skipped).",
		}, []string{"hook", "outcome"}),
	}
}

// Collector is the counter, for the daemon's registry.
func (b *Book) Collector() prometheus.Collector { return b.runs }

// Log says what a recorded result calls for in the log.
type Log uint8

// Log decisions.
const (
	LogNone      Log = iota
	LogFailure       // the first failure (failed, timed_out) of a streak
	LogRecovered     // an ok after a streak of failures
)

// Record books r. A superseded or skipped run neither starts nor ends a
// failure streak: the hook was cut, it did not fail.
func (b *Book) Record(r Result) Log {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last[r.Hook] = r
	b.runs.WithLabelValues(r.Hook, string(r.Outcome)).Inc()
	switch r.Outcome {
	case Failed, TimedOut:
		if b.failing[r.Hook] {
			return LogNone
		}
		b.failing[r.Hook] = true
		return LogFailure
	case OK:
		if b.failing[r.Hook] {
			delete(b.failing, r.Hook)
			return LogRecovered
		}
	}
	return LogNone
}

// Last returns the last result of every hook that ran, by name.
func (b *Book) Last() []Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Result, 0, len(b.last))
	for _, r := range b.last {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Result) int {
		if a.Hook < b.Hook {
			return -1
		}
		if a.Hook > b.Hook {
			return 1
		}
		return 0
	})
	return out
}

// Keep forgets the hooks not in names (a reload removed them).
func (b *Book) Keep(names []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for n := range b.last {
		if !slices.Contains(names, n) {
			delete(b.last, n)
			delete(b.failing, n)
		}
	}
}
