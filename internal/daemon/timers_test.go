package daemon

import (
	"fmt"
	"runtime/metrics"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vrrp"
)

func TestDeadlinesDue(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	adv := func(vrid uint8) node.TimerKey { return node.TimerKey{VRID: vrid, Timer: vrrp.TimerAdver} }
	down := func(vrid uint8) node.TimerKey { return node.TimerKey{VRID: vrid, Timer: vrrp.TimerMasterDown} }
	retry := node.TimerKey{Timer: node.TimerRoleRetry}
	armed := func() deadlines {
		return deadlines{
			adv(20):  {at: t0.Add(10 * time.Millisecond), gen: 1},
			adv(10):  {at: t0.Add(10 * time.Millisecond), gen: 2},
			down(10): {at: t0.Add(5 * time.Millisecond), gen: 3},
			retry:    {at: t0.Add(time.Second), gen: 4},
		}
	}
	ev := func(k node.TimerKey, gen uint64, after time.Duration) node.Event {
		return node.Event{Kind: node.EventTimer, Timer: k, Gen: gen, Now: t0.Add(after)}
	}
	for _, tc := range []struct {
		name     string
		now      time.Duration
		want     []node.Event
		wantLeft int
		wantNext time.Duration
	}{
		{"nothing due", 4 * time.Millisecond, nil, 4, 5 * time.Millisecond},
		{"one due at its deadline", 5 * time.Millisecond, []node.Event{ev(down(10), 3, 5*time.Millisecond)}, 3, 10 * time.Millisecond},
		{"earliest first, ties by VRID", 20 * time.Millisecond, []node.Event{
			ev(down(10), 3, 5*time.Millisecond), ev(adv(10), 2, 10*time.Millisecond), ev(adv(20), 1, 10*time.Millisecond),
		}, 1, time.Second},
		{"all", time.Hour, []node.Event{
			ev(down(10), 3, 5*time.Millisecond), ev(adv(10), 2, 10*time.Millisecond), ev(adv(20), 1, 10*time.Millisecond), ev(retry, 4, time.Second),
		}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := armed()
			got := ds.due(t0.Add(tc.now), nil)
			if diff := cmp.Diff(fired(tc.want), fired(got)); diff != "" {
				t.Errorf("due (-want +got):\n%s", diff)
			}
			if len(ds) != tc.wantLeft {
				t.Errorf("%d timers left, want %d", len(ds), tc.wantLeft)
			}
			next, ok := ds.next()
			if ok != (tc.wantLeft > 0) || (ok && !next.Equal(t0.Add(tc.wantNext))) {
				t.Errorf("next = %v, %v; want %v", next, ok, t0.Add(tc.wantNext))
			}
		})
	}
}

// firedTimer is what a timer event says (node.Event has unexported fields).
type firedTimer struct {
	Key node.TimerKey
	Gen uint64
	At  time.Time
}

func fired(evs []node.Event) []firedTimer {
	var out []firedTimer
	for _, ev := range evs {
		if ev.Kind != node.EventTimer {
			panic("not a timer event")
		}
		out = append(out, firedTimer{ev.Timer, ev.Gen, ev.Now})
	}
	return out
}

// The loop's timers fire in deadline order, and a re-armed or stopped one
// never fires with its old generation.
func TestLoopTimersFire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lt := deadlines{}
		a := node.TimerKey{VRID: 10, Timer: vrrp.TimerAdver}
		b := node.TimerKey{VRID: 20, Timer: vrrp.TimerMasterDown}
		c := node.TimerKey{Timer: node.TimerRoleRetry}
		start := time.Now()
		lt.set(a, start, 30*time.Millisecond, 1)
		lt.set(b, start, 10*time.Millisecond, 1)
		lt.set(c, start, 20*time.Millisecond, 1)
		lt.set(b, start, 40*time.Millisecond, 2) // re-armed: gen 1 never fires
		delete(lt, c)
		var got []string
		for {
			at, ok := lt.next()
			if !ok {
				break
			}
			time.Sleep(time.Until(at))
			for _, ev := range lt.due(time.Now(), nil) {
				got = append(got, fmt.Sprintf("%d/%d gen %d at %v", ev.Timer.VRID, ev.Timer.Timer, ev.Gen, time.Since(start)))
			}
		}
		want := []string{
			fmt.Sprintf("10/%d gen 1 at 30ms", vrrp.TimerAdver),
			fmt.Sprintf("20/%d gen 2 at 40ms", vrrp.TimerMasterDown),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("fires (-want +got):\n%s", diff)
		}
		clear(lt)
	})
}

// A pair in steady state starts no goroutine: the advert and Master_Down
// timers fire on the loop itself (a goroutine per fire was a thread wakeup
// more per advert).
func TestLoopSteadyStateStartsNoGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(2 * time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		before := goroutinesCreated()
		settle(10 * time.Second) // 200 adverts at 100 ms over two VRIDs
		if n := goroutinesCreated() - before; n != 0 {
			t.Errorf("%d goroutines started in 10 s of steady state, want 0", n)
		}
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		fw1.halt(t)
		fw2.halt(t)
	})
}

func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
