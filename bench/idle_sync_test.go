package bench

// Idle cost with everything on: muros-had with AH, conntrack replication and
// DB sync against keepalived 2.2.7 + conntrackd 1.4.7 (FTFW, the pair
// muros-had replaces), both at 10 ms adverts with nothing else happening.
// BenchmarkIdleCPU (failover_test.go) compares the VRRP daemons alone.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/muros/muros-had/config"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

var idleProfileFlag = flag.String("idle.profile", "", "directory: per-thread context switches of each firewall's processes (threads.txt) and a perf record of each window (fw1.<case>.data, fw2...)")

// BenchmarkIdleSync reports, per node, the CPU (% of one core over
// -failover.cpu), the wakeups (voluntary context switches of every thread
// of every process in the namespace, per second) and the resident memory
// at the end, with a pair elected and sync on, at 10 ms adverts and at the
// default 1 s.
func BenchmarkIdleSync(b *testing.B) {
	const fast, dflt = 10 * time.Millisecond, config.DefaultAdvertInterval
	muros := func(extra string) func(*testing.B, *lab.Pair, time.Duration) {
		return func(b *testing.B, p *lab.Pair, iv time.Duration) { startIdleMuros(b, p, iv, extra) }
	}
	for _, c := range []struct {
		interval time.Duration
		name     string
		start    func(b *testing.B, p *lab.Pair, interval time.Duration)
	}{
		{fast, "muros-had-ah-ct-db", muros("")},
		// The same without the peer liveness protocol (1 ms heartbeats):
		// what the rest of the daemon costs.
		{fast, "muros-had-ah-ct-db-noliveness", muros("liveness:\n  enabled: false\n")},
		{fast, "keepalived+conntrackd", startIdleKeepalived},
		// At the default advert interval. muros-had's takeover does not
		// depend on it (the liveness protocol finds a dead master:
		// BenchmarkFailover's 1s cases); keepalived's does (three adverts
		// and a skew).
		{dflt, "muros-had-ah-ct-db", muros("")},
		{dflt, "keepalived+conntrackd", startIdleKeepalived},
	} {
		b.Run(fmt.Sprintf("%s/%s", c.interval, c.name), func(b *testing.B) {
			lab.Require(b)
			p := newPair(b)
			c.start(b, p, c.interval)
			// The first DB sync, the conntrack bulk and the status polls
			// of the start are over; what follows is steady state.
			time.Sleep(2 * time.Second)
			stopPerf := startIdlePerf(b, p, c.name)
			w0m, err1 := nsSwitches(p.FW1)
			w0b, err2 := nsSwitches(p.FW2)
			start := time.Now()
			var master, backup float64
			for range max(1, b.N) {
				m, bk, err := idleCPU(p, *cpuFlag)
				if err != nil {
					b.Fatal(err)
				}
				master, backup = max(master, m), max(backup, bk)
			}
			wall := time.Since(start)
			w1m, err3 := nsSwitches(p.FW1)
			w1b, err4 := nsSwitches(p.FW2)
			stopPerf()
			if err := errors.Join(err1, err2, err3, err4); err != nil {
				b.Fatal(err)
			}
			rssMaster, err := nsRSS(p.FW1)
			if err != nil {
				b.Fatal(err)
			}
			rssBackup, err := nsRSS(p.FW2)
			if err != nil {
				b.Fatal(err)
			}
			if *idleProfileFlag != "" {
				writeMemory(b, c.name, p)
				writeThreadSwitches(b, c.name, wall, map[string][2]threadSwitches{"fw1 (master)": {w0m, w1m}, "fw2 (backup)": {w0b, w1b}})
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(master, "cpu_master_pct")
			b.ReportMetric(backup, "cpu_backup_pct")
			b.ReportMetric(float64(w1m.since(w0m))/wall.Seconds(), "wakeups_master_per_s")
			b.ReportMetric(float64(w1b.since(w0b))/wall.Seconds(), "wakeups_backup_per_s")
			b.ReportMetric(float64(rssMaster)/1024, "rss_master_MiB")
			b.ReportMetric(float64(rssBackup)/1024, "rss_backup_MiB")
			b.Logf("load average %s", loadAverage())
		})
	}
}

func startIdleMuros(b *testing.B, p *lab.Pair, interval time.Duration, extra string) {
	o := hatest.NodeOptions{Auth: "ah", Interval: interval, Extra: conntrackExtra + extra, LivenessDetect: config.DefaultLivenessDetect}
	o1, o2 := o, o
	o1.Role, o2.Role = "master", "backup"
	n1, n2, err := hatest.StartPairWithDBSync(binary, p, o1, o2)
	if err != nil {
		b.Fatal(err)
	}
	if err := n1.WaitState("MASTER", 10*time.Second); err != nil {
		b.Fatal(err)
	}
	if err := n2.WaitState("BACKUP", 10*time.Second); err != nil {
		b.Fatal(err)
	}
	if err := waitBulkSynced(n2, 10*time.Second); err != nil {
		b.Fatal(err)
	}
	if extra != "" {
		return
	}
	// Steady state with the liveness protocol is a quiet master
	// (liveness.quiet_after of nothing on its VIP interfaces): wait for
	// it, and say so if it never comes.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		st, err := n1.Status(ctx)
		if err == nil && st.Liveness != nil && st.Liveness.Quiet {
			return
		}
		if ctx.Err() != nil {
			b.Logf("the master never went quiet within 20 s (liveness %+v)", st.Liveness)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startIdleKeepalived(b *testing.B, p *lab.Pair, interval time.Duration) {
	ko := hatest.KeepalivedOptions{Auth: hatest.KeepalivedAuthNone, Interval: interval}
	ko.Role = "master"
	k1, err := StartKeepalivedConntrackd(p, p.FW1, ko, conntrackdOptions(p, p.FW1, false))
	if err != nil {
		b.Fatal(err)
	}
	ko.Role = "backup"
	if _, err := StartKeepalivedConntrackd(p, p.FW2, ko, conntrackdOptions(p, p.FW2, false)); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := WaitVIP(ctx, p.FW1, p.LANVIP.Addr()); err != nil {
		b.Fatal(err)
	}
	for {
		if _, ok := k1.PrimaryDone(time.Time{}); ok {
			return
		}
		if ctx.Err() != nil {
			b.Fatalf("fw1's primary-backup.sh primary never finished:\n%s", k1.Keepalived.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// threadSwitches are the voluntary and involuntary context switches of
// every thread in a namespace, by "pid/comm/tid".
type threadSwitches map[string][2]uint64

// since sums the voluntary switches each thread made since before, over
// the threads alive in both samples (a process or thread that came or
// went between them, such as a status query, does not count).
func (t threadSwitches) since(before threadSwitches) uint64 {
	var n uint64
	for k, v := range t {
		if b, ok := before[k]; ok && v[0] >= b[0] {
			n += v[0] - b[0]
		}
	}
	return n
}

// nsSwitches reads /proc/<pid>/task/<tid>/status of every process in ns.
func nsSwitches(ns *lab.Netns) (threadSwitches, error) {
	out, err := exec.Command("ip", "netns", "pids", ns.Name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", ns.Name, err)
	}
	ts := threadSwitches{}
	for _, pid := range strings.Fields(string(out)) {
		tids, err := os.ReadDir(filepath.Join("/proc", pid, "task"))
		if err != nil {
			continue // exited
		}
		for _, tid := range tids {
			st, err := os.ReadFile(filepath.Join("/proc", pid, "task", tid.Name(), "status"))
			if err != nil {
				continue
			}
			name, v := taskSwitches(st)
			ts[pid+"/"+name+"/"+tid.Name()] = v
		}
	}
	return ts, nil
}

// taskSwitches reads a thread's name and its voluntary and involuntary
// context switches from /proc/<pid>/task/<tid>/status.
func taskSwitches(status []byte) (name string, v [2]uint64) {
	for _, line := range strings.Split(string(status), "\n") {
		k, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch k {
		case "Name":
			name = val
		case "voluntary_ctxt_switches":
			v[0], _ = strconv.ParseUint(val, 10, 64)
		case "nonvoluntary_ctxt_switches":
			v[1], _ = strconv.ParseUint(val, 10, 64)
		}
	}
	return name, v
}

// writeThreadSwitches appends each thread's switches per second over wall
// to DIR/threads.txt.
func writeThreadSwitches(b *testing.B, name string, wall time.Duration, by map[string][2]threadSwitches) {
	f, err := os.OpenFile(filepath.Join(*idleProfileFlag, "threads.txt"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	nodes := make([]string, 0, len(by))
	for n := range by {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, node := range nodes {
		w := by[node]
		fmt.Fprintf(f, "%s %s over %v (voluntary/s, involuntary/s):\n", name, node, wall.Round(time.Millisecond))
		keys := make([]string, 0, len(w[1]))
		for k := range w[1] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			a, e := w[0][k], w[1][k]
			fmt.Fprintf(f, "  %-40s %8.1f %8.1f\n", k, float64(e[0]-a[0])/wall.Seconds(), float64(e[1]-a[1])/wall.Seconds())
		}
	}
}

// startIdlePerf records both firewalls' processes with perf(1) when
// -idle.profile is set; stop ends the recordings.
func startIdlePerf(b *testing.B, p *lab.Pair, tag string) (stop func()) {
	if *idleProfileFlag == "" {
		return func() {}
	}
	var cmds []*exec.Cmd
	for i, fw := range p.Firewalls() {
		out, err := exec.Command("ip", "netns", "pids", fw.Name).Output()
		if err != nil {
			b.Fatal(err)
		}
		pids := strings.Join(strings.Fields(string(out)), ",")
		cmd := exec.Command("perf", "record", "-q", "-F", "997", "-g", "-p", pids,
			"-o", filepath.Join(*idleProfileFlag, fmt.Sprintf("fw%d.%s.data", i+1, tag)))
		if err := cmd.Start(); err != nil {
			b.Fatalf("perf: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() {
		for _, c := range cmds {
			_ = c.Process.Signal(os.Interrupt)
			_ = c.Wait()
		}
	}
}

// writeMemory appends /proc/<pid>/smaps_rollup of each firewall's
// processes to DIR/memory.txt.
func writeMemory(b *testing.B, name string, p *lab.Pair) {
	f, err := os.OpenFile(filepath.Join(*idleProfileFlag, "memory.txt"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for i, fw := range p.Firewalls() {
		out, err := exec.Command("ip", "netns", "pids", fw.Name).Output()
		if err != nil {
			b.Fatal(err)
		}
		for _, pid := range strings.Fields(string(out)) {
			comm, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
			roll, _ := os.ReadFile(filepath.Join("/proc", pid, "smaps_rollup"))
			fmt.Fprintf(f, "%s fw%d pid %s %s%s\n", name, i+1, pid, comm, roll)
		}
	}
}
