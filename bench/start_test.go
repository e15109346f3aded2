package bench

// What a daemon's start costs the rest of its box: how long an ordinary
// (time-sharing) task cannot run while muros-had starts at its real-time
// priority. The password's Argon2id stretch (a quarter second on every
// CPU) ran inside the real-time daemon until session 10; it now runs in a
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
// (starved_ms: median and max), beside the same window with nothing
// starting (none) and, with -start.alt, another binary.
func BenchmarkStartStarvation(b *testing.B) {
	cases := []struct{ name, bin string }{{"none", ""}, {"muros-had", binary}}
	if *startAltFlag != "" {
		cases = append(cases, struct{ name, bin string }{"muros-had-alt", *startAltFlag})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
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
			var starved, started []time.Duration
			for range max(*repsFlag, b.N) {
				time.Sleep(500 * time.Millisecond)
				probe := startStarvationProbe()
				begin := time.Now()
				if c.bin == "" {
					// The window a start takes, with nothing starting.
					time.Sleep(time.Second)
				} else {
					n2, err := hatest.StartNode(c.bin, p, p.FW2, o2)
					if err != nil {
						probe.Stop()
						b.Fatal(err)
					}
					err = n2.WaitState("BACKUP", 10*time.Second)
					if err == nil {
						err = waitBulkSynced(n2, 10*time.Second)
					}
					started = append(started, time.Since(begin))
					gap := probe.Stop()
					if stopErr := n2.Stop(); err == nil {
						err = stopErr
					}
					if err != nil {
						b.Fatal(err)
					}
					starved = append(starved, gap)
					b.Logf("start %d: settled BACKUP in %s, time-sharing task starved for up to %s", len(starved), started[len(started)-1].Round(time.Millisecond), gap.Round(10*time.Microsecond))
					continue
				}
				starved = append(starved, probe.Stop())
				b.Logf("window %d: time-sharing task starved for up to %s", len(starved), starved[len(starved)-1].Round(10*time.Microsecond))
			}
			st := Summarize(starved)
			b.ReportMetric(Millis(st.P50), "starved_p50_ms")
			b.ReportMetric(Millis(st.Max), "starved_max_ms")
			if len(started) > 0 {
				b.ReportMetric(Millis(Summarize(started).P50), "settled_p50_ms")
			}
		})
	}
}
