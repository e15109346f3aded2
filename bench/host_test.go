package bench

// The machine's own stalls: how long a thread that never sleeps, at the
// highest real-time priority and pinned to one CPU, goes without running.
// Little in the guest preempts it: interrupt handlers and the softirqs
// run on their exit (microseconds, up to about 2 ms of network work), the
// kernel's stop class. A longer gap, and most of the shorter ones when the
// steal count (reported beside) grows with them, is the hypervisor not
// running the vCPU. A live master
// silenced that long is what the liveness protocol's detection must not
// call dead: the adaptive detection learns these silences (package
// liveness), and this benchmark says how long they are on the machine the
// failover figures come from.

import (
	"errors"
	"flag"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var hostWindow = flag.Duration("host.window", 10*time.Second, "BenchmarkHostStalls: how long each CPU is watched (spinning 200 ms of every 500 ms)")

// hostStall is the gap a spinning thread counts as a stall.
const hostStall = 500 * time.Microsecond

// BenchmarkHostStalls spins a SCHED_FIFO 99 thread on every CPU, 200 ms
// of every 500 ms (below the kernel's real-time throttling), and reports
// the stalls it saw: per second of spinning, over 2 ms and over 3 ms
// (the liveness detection's floor), and the longest.
//
//	sudo go test -run '^$' -bench HostStalls -benchtime 1x ./bench/ -args -host.window=30s
func BenchmarkHostStalls(b *testing.B) {
	steal0, err0 := stealTicks()
	began := time.Now()
	cpus := runtime.NumCPU()
	stalls := make([][]time.Duration, cpus)
	spun := make([]time.Duration, cpus)
	errs := make([]error, cpus)
	var wg sync.WaitGroup
	for cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Never unlocked: the thread's policy and affinity are the
			// probe's, and the thread ends with it.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs[cpu] = fmt.Errorf("cpu %d: affinity: %w", cpu, err)
				return
			}
			if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 99}, 0); err != nil {
				errs[cpu] = fmt.Errorf("cpu %d: SCHED_FIFO 99: %w", cpu, err)
				return
			}
			for end := time.Now().Add(*hostWindow); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
				t0 := time.Now()
				last := t0
				for last.Sub(t0) < 200*time.Millisecond {
					now := time.Now()
					if g := now.Sub(last); g > hostStall {
						stalls[cpu] = append(stalls[cpu], g)
					}
					last = now
				}
				spun[cpu] += last.Sub(t0)
			}
		}()
	}
	wg.Wait()
	steal1, err1 := stealTicks()
	elapsed := time.Since(began)
	if err := errors.Join(err0, err1); err != nil {
		b.Fatal(err)
	}
	var all []time.Duration
	var total time.Duration
	for cpu := range cpus {
		if errs[cpu] != nil {
			b.Fatal(errs[cpu])
		}
		all = append(all, stalls[cpu]...)
		total += spun[cpu]
		s := Summarize(stalls[cpu])
		b.Logf("cpu %d: %d stalls over %v in %v of spinning, median %v, longest %v", cpu, len(stalls[cpu]), hostStall, spun[cpu].Round(time.Millisecond), s.P50, s.Max)
	}
	over := func(d time.Duration) float64 {
		n := 0
		for _, s := range all {
			if s > d {
				n++
			}
		}
		return float64(n) / total.Seconds()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(len(all))/total.Seconds(), "stalls_per_s")
	b.ReportMetric(over(2*time.Millisecond), "over_2ms_per_s")
	b.ReportMetric(over(3*time.Millisecond), "over_3ms_per_s")
	b.ReportMetric(Millis(Summarize(all).Max), "longest_ms")
	// The hypervisor's own count of the time it did not run the vCPUs
	// (all CPUs, spinning or not): what backs the attribution above.
	b.ReportMetric(float64(steal1-steal0)*10/float64(elapsed.Milliseconds())*100/float64(cpus), "steal_pct")
	b.Logf("load average %s", loadAverage())
}

// stealTicks is the steal time of all CPUs, in USER_HZ ticks (10 ms).
func stealTicks() (uint64, error) {
	v, err := procStatCPU()
	if err != nil {
		return 0, err
	}
	return v[7], nil
}
