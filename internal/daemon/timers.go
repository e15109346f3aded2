package daemon

import (
	"time"

	"github.com/muros/muros-had/node"
)

// deadlines are the core's armed timers: for each key, when it fires and
// the generation the core gave it. Pure: the loop passes the time.
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

// loopTimers run the core's timers on the event loop's goroutine: one
// runtime timer for the earliest deadline, whose channel the loop selects
// on. A time.AfterFunc per key would start a goroutine at each fire only
// to hand the event to the loop over a channel: at 10 ms adverts, a thread
// wakeup and a scheduler round trip more per advert.
type loopTimers struct {
	armed deadlines
	t     *time.Timer
	at    time.Time // when t fires; zero while it is stopped
}

func newLoopTimers() *loopTimers {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &loopTimers{armed: deadlines{}, t: t}
}

// C fires when the earliest deadline has passed; the loop then calls fire.
func (lt *loopTimers) C() <-chan time.Time { return lt.t.C }

// set arms k to fire after `after` from now with gen, replacing an armed
// one.
func (lt *loopTimers) set(k node.TimerKey, now time.Time, after time.Duration, gen uint64) {
	lt.armed[k] = deadline{at: now.Add(after), gen: gen}
	lt.reset(now)
}

// stop disarms k.
func (lt *loopTimers) stop(k node.TimerKey, now time.Time) {
	if _, ok := lt.armed[k]; !ok {
		return
	}
	delete(lt.armed, k)
	lt.reset(now)
}

// stopAll disarms every timer.
func (lt *loopTimers) stopAll() {
	clear(lt.armed)
	lt.t.Stop()
	lt.at = time.Time{}
}

// fire returns the events of the timers due at now, earliest first, and
// points the runtime timer at the rest.
func (lt *loopTimers) fire(now time.Time, out []node.Event) []node.Event {
	lt.at = time.Time{} // the runtime timer has fired
	out = lt.armed.due(now, out)
	lt.reset(now)
	return out
}

// reset points the runtime timer at the earliest deadline, touching it
// only when that changed.
func (lt *loopTimers) reset(now time.Time) {
	at, ok := lt.armed.next()
	if !ok {
		if !lt.at.IsZero() {
			lt.t.Stop()
			lt.at = time.Time{}
		}
		return
	}
	if at.Equal(lt.at) {
		return
	}
	lt.at = at
	lt.t.Reset(max(at.Sub(now), 0))
}
