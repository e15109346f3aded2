package bench

// What a daemon's start costs the rest of its box: how long an ordinary
// (time-sharing) task cannot run while muros-had starts at its real-time
// priority. The password's Argon2id stretch (four lanes, about 0.3 s of
// work) ran inside the real-time daemon until session 10 (a time-sharing
// task then waited 101 ms in the median start); it now runs in a
// time-sharing child (cmd/muros-had, stretcher).

import (
	"flag"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

var startAltFlag = flag.String("start.alt", "", "BenchmarkStartStarvation: another muros-had binary measured beside this tree's (case muros-had-alt), e.g. one built from an earlier commit")

// probeTick is how often the starvation probe asks to run.
const probeTick = 200 * time.Microsecond

// starvationProbe is a time-sharing thread of the benchmark process that
// sleeps probeTick at a time and keeps the longest interval between two
// of its wake-ups: the longest time a task at the box's ordinary priority
// could not run.
type starvationProbe struct {
	stop   atomic.Bool
	done   chan struct{}
	maxGap time.Duration
}

func startStarvationProbe() *starvationProbe {
	p := &starvationProbe{done: make(chan struct{})}
	go func() {
		// Never unlocked: the thread is the probe's alone and ends with it.
		runtime.LockOSThread()
		defer close(p.done)
		ts := unix.NsecToTimespec(probeTick.Nanoseconds())
		last := time.Now()
		for !p.stop.Load() {
			_ = unix.Nanosleep(&ts, nil)
			now := time.Now()
			p.maxGap = max(p.maxGap, now.Sub(last))
			last = now
		}
	}()
	return p
}

// Stop ends the probe and returns the longest interval it saw.
func (p *starvationProbe) Stop() time.Duration {
	p.stop.Store(true)
	<-p.done
	return p.maxGap
}

// BenchmarkStartStarvation starts the backup of an elected pair (AH,
// conntrack replication and liveness on, so the password is stretched)
// -failover.reps times per case and reports the longest time a
// time-sharing task could not run from the start to the settled BACKUP
// (starved_*), and the same over a window as long with nothing starting,
// right after each start (idle_*: the machine's own noise), medians and
// maxima in ms. -start.alt adds another binary beside this tree's.
//
//	sudo go test -run '^$' -v -bench StartStarvation -benchtime 1x ./bench/ -args -failover.reps=5 -start.alt=/tmp/muros-had-old
func BenchmarkStartStarvation(b *testing.B) {
	cases := []struct{ name, bin string }{{"muros-had", binary}}
	if *startAltFlag != "" {
		cases = append(cases, struct{ name, bin string }{"muros-had-alt", *startAltFlag})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			lab.Require(b)
			p := newPair(b)
			o := hatest.NodeOptions{Auth: "ah", Interval: 10 * time.Millisecond, Extra: conntrackExtra, LivenessDetect: config.DefaultLivenessDetect}
			o1, o2 := o, o
			o1.Role, o2.Role = "master", "backup"
			n1, err := hatest.StartNode(binary, p, p.FW1, o1)
			if err != nil {
				b.Fatal(err)
			}
			defer n1.Stop()
			if err := n1.WaitState("MASTER", 10*time.Second); err != nil {
				b.Fatal(err)
			}
			var starved, idle, started []time.Duration
			for range max(*repsFlag, b.N) {
				time.Sleep(500 * time.Millisecond)
				probe := startStarvationProbe()
				begin := time.Now()
				n2, err := hatest.StartNode(c.bin, p, p.FW2, o2)
				if err != nil {
					probe.Stop()
					b.Fatal(err)
				}
				err = n2.WaitState("BACKUP", 10*time.Second)
				if err == nil {
					err = waitBulkSynced(n2, 10*time.Second)
				}
				window := time.Since(begin)
				gap := probe.Stop()
				if stopErr := n2.Stop(); err == nil {
					err = stopErr
				}
				if err != nil {
					b.Fatal(err)
				}
				// The same window with nothing starting: a longer window
				// would see a longer gap by chance alone.
				time.Sleep(500 * time.Millisecond)
				probe = startStarvationProbe()
				time.Sleep(window)
				quiet := probe.Stop()
				starved, idle, started = append(starved, gap), append(idle, quiet), append(started, window)
				b.Logf("start %d: settled BACKUP in %s, a time-sharing task starved for up to %s (nothing starting, as long: %s)",
					len(starved), window.Round(time.Millisecond), gap.Round(10*time.Microsecond), quiet.Round(10*time.Microsecond))
			}
			for name, ds := range map[string][]time.Duration{"starved": starved, "idle": idle, "settled": started} {
				s := Summarize(ds)
				b.ReportMetric(Millis(s.P50), name+"_p50_ms")
				b.ReportMetric(Millis(s.Max), name+"_max_ms")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
