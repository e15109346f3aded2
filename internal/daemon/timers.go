package daemon

import (
	"time"

	"github.com/muros/muros-had/node"
)

// deadlines are the core's armed timers: for each key, when it fires and
// the generation the core gave it. Pure: the loop passes the time, arms
// its wait (loopWait) with the earliest deadline and takes what is due
// after each wake. No runtime timer: one would wake the runtime's sysmon
// thread at every deadline, and its goroutine hand-off a thread more
// (wait.go).
type deadlines map[node.TimerKey]deadline

type deadline struct {
	at  time.Time
	gen uint64
}

// next is the earliest deadline (ok false when none is armed).
func (ds deadlines) next() (at time.Time, ok bool) {
	for _, d := range ds {
		if !ok || d.at.Before(at) {
			at, ok = d.at, true
		}
	}
	return at, ok
}

// due removes the timers whose deadline is not after now and appends
// their events to out, earliest first; equal deadlines go by key, so the
// order never depends on the map's. Each event's Now is its deadline (the
// loop stamps the time it runs it with).
func (ds deadlines) due(now time.Time, out []node.Event) []node.Event {
	start := len(out)
	for k, d := range ds {
		if d.at.After(now) {
			continue
		}
		out = append(out, node.Event{Kind: node.EventTimer, Timer: k, Gen: d.gen, Now: d.at})
		delete(ds, k)
	}
	fired := out[start:]
	// Insertion sort: a few timers at most fall due together.
	for i := 1; i < len(fired); i++ {
		for j := i; j > 0 && firesBefore(fired[j], fired[j-1]); j-- {
			fired[j], fired[j-1] = fired[j-1], fired[j]
		}
	}
	return out
}

func firesBefore(a, b node.Event) bool {
	if !a.Now.Equal(b.Now) {
		return a.Now.Before(b.Now)
	}
	if a.Timer.VRID != b.Timer.VRID {
		return a.Timer.VRID < b.Timer.VRID
	}
	return a.Timer.Timer < b.Timer.Timer
}

// set arms k to fire after `after` from now with gen, replacing an armed
// one.
func (ds deadlines) set(k node.TimerKey, now time.Time, after time.Duration, gen uint64) {
	ds[k] = deadline{at: now.Add(after), gen: gen}
}
