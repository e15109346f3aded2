package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Parsed
	}{
		{
			name: "result line, BENCH block with the repetitions, header",
			in: "goos: linux\ncpu: Intel Xeon Processor (Skylake, IBRS)\n" +
				"BenchmarkFailover/crash/10ms/keepalived-none-2   \t       1\t         0 ns/op\t        37.80 gap_max_ms\t        33.00 gap_p50_ms\n" +
				"--- BENCH: BenchmarkFailover/crash/10ms/keepalived-none-2\n" +
				"    failover_test.go:180: repeating: stall\n" +
				"    failover_test.go:211: keepalived-none crash 10ms: gaps [33ms 30.1ms 37.8ms 900µs 1.5s] (target 41.1ms); GARP after timer start [38.4ms]; first reply after GARP [1.5ms]\n" +
				"PASS\nok  \tgithub.com/muros/muros-had/bench\t205.118s\n",
			want: Parsed{
				Env: map[string]string{"goos": "linux", "cpu": "Intel Xeon Processor (Skylake, IBRS)"},
				Runs: []Run{{
					Name: "BenchmarkFailover/crash/10ms/keepalived-none", Procs: 2,
					Metrics: map[string]float64{"ns/op": 0, "gap_max_ms": 37.8, "gap_p50_ms": 33},
					Samples: map[string][]float64{"gap_ms": {33, 30.1, 37.8, 0.9, 1500}},
				}},
			},
		},
		{
			name: "-v: log lines before the result line, after the bare name; the first header value wins",
			in: "date: 2026-12-07T00:19:02Z\ndate: later\nBenchmarkConntrackStorm\nBenchmarkConntrackStorm/max/muros-had\n" +
				"    ctsync_test.go:198: muros-had rep 0 (load average 1.02): 100000 flows, created in 1.72s, backup holds all after 1.736s = 57594 flows/s; lag p50 1.8ms p99 5.9ms max 9.1ms (1563 samples, 0 missed); cpu master 1.2s backup 1.1s; sampler {}\n" +
				"    ctsync_test.go:201: muros-had rep 0 after the storm: flows 100000\n" +
				"        a second line = 3 flows/s; lag p50 1ms p99 2ms max\n" +
				"BenchmarkConntrackStorm/max/muros-had-2 \t       1\t         0 ns/op\t    57594 flows/s\n",
			want: Parsed{
				Env: map[string]string{"date": "2026-12-07T00:19:02Z"},
				Runs: []Run{{
					Name: "BenchmarkConntrackStorm/max/muros-had", Procs: 2,
					Metrics: map[string]float64{"ns/op": 0, "flows/s": 57594},
					Samples: map[string][]float64{"flows/s": {57594}, "lag_p50_ms": {1.8}, "lag_p99_ms": {5.9}},
				}},
			},
		},
		{
			name: "a real line: go test drops the 0 ns/op the benchmarks report",
			in: "BenchmarkIdleCPU\nBenchmarkIdleCPU/10ms/muros-had-none\n" +
				"BenchmarkIdleCPU/10ms/muros-had-none-2         \t       1\t         1.985 cpu_backup_pct\t         3.970 cpu_master_pct\t        18.55 rss_backup_MiB\t        18.64 rss_master_MiB\n",
			want: Parsed{
				Env: map[string]string{},
				Runs: []Run{{
					Name: "BenchmarkIdleCPU/10ms/muros-had-none", Procs: 2,
					Metrics: map[string]float64{"cpu_backup_pct": 1.985, "cpu_master_pct": 3.97, "rss_backup_MiB": 18.55, "rss_master_MiB": 18.64},
				}},
			},
		},
		{
			name: "a drain repetition left out of the medians is left out here",
			in: "BenchmarkConntrackStorm/drain/muros-had-2 \t 1\t 0 ns/op\t 129756 flows/s\n" +
				"--- BENCH: BenchmarkConntrackStorm/drain/muros-had-2\n" +
				"    ctsync_test.go:484: muros-had rep 0 (load average 1.2): fw2 holds all 797ms after SIGCONT = 125438 flows/s; lag from SIGCONT p50 470ms p99 790ms max 795ms (1563 samples); no overrun\n" +
				"    ctsync_test.go:484: muros-had rep 1 (load average 1.2): fw2 holds all 3.1s after SIGCONT = 32000 flows/s; lag from SIGCONT p50 1.5s p99 3s max 3.1s; DISTURBED: 1 refresh sweep(s)\n" +
				"    ctsync_test.go:484: muros-had rep 2 (load average 1.2): fw2 holds all 3.1s after SIGCONT = 1000 flows/s; lag from SIGCONT p50 1.5s p99 3s max 3.1s; OVERRUN: events lost\n",
			want: Parsed{
				Env: map[string]string{},
				Runs: []Run{{
					Name: "BenchmarkConntrackStorm/drain/muros-had", Procs: 2,
					Metrics: map[string]float64{"ns/op": 0, "flows/s": 129756},
					Samples: map[string][]float64{"flows/s": {125438}, "lag_p50_ms": {470}, "lag_p99_ms": {790}},
				}},
			},
		},
		{
			name: "output truncated by go test",
			in: "BenchmarkFailover/crash/1s/muros-had-ah \t 1\t 0 ns/op\t 3307 gap_p50_ms\n" +
				"--- BENCH: BenchmarkFailover/crash/1s/muros-had-ah\n" +
				"    failover_test.go:180: repeating: stall\n" +
				"\t... [output truncated]\n",
			want: Parsed{
				Env: map[string]string{},
				Runs: []Run{{
					Name: "BenchmarkFailover/crash/1s/muros-had-ah", Procs: 1,
					Metrics:   map[string]float64{"ns/op": 0, "gap_p50_ms": 3307},
					Truncated: true,
				}},
			},
		},
		{
			name: "lines that are no result: a failure, a broken line, daemon output, a BENCH block of another benchmark",
			in: "--- FAIL: BenchmarkFailover/crash/10ms/muros-had-ah\n" +
				"    failover_test.go:211: muros-had-ah crash 10ms: gaps [1ms] (target 41.1ms)\n" +
				"BenchmarkIdleCPU/10ms/muros-had-ah-2 \t 1\t 0 ns/op\t 4.1\n" +
				"BenchmarkIdleCPU/10ms/muros-had-ah-2 \t x\t 0 ns/op\n" +
				"BenchmarkIdleCPU/10ms/keepalived-none-2 \t 1\t 0 ns/op\t 1.6 cpu_master_pct\n" +
				"time=2026-12-07T00:00:00Z level=INFO msg=\"became master\"\n" +
				"    failover_test.go:211: keepalived-none crash 10ms: gaps [5ms] (target 41.1ms)\n" +
				"--- BENCH: BenchmarkFailover/crash/10ms/keepalived-none-2\n" +
				"    failover_test.go:211: keepalived-none crash 10ms: gaps [5ms] (target 41.1ms)\n",
			want: Parsed{
				Env: map[string]string{},
				Runs: []Run{{
					Name: "BenchmarkIdleCPU/10ms/keepalived-none", Procs: 2,
					Metrics: map[string]float64{"ns/op": 0, "cpu_master_pct": 1.6},
				}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Parse(tc.in)); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitProcs(t *testing.T) {
	tests := []struct {
		in    string
		name  string
		procs int
	}{
		{"BenchmarkX/a-2", "BenchmarkX/a", 2},
		{"BenchmarkX/table-0/muros-had", "BenchmarkX/table-0/muros-had", 1},
		{"BenchmarkConntrackStorm/paced-5000/muros-had-16", "BenchmarkConntrackStorm/paced-5000/muros-had", 16},
		{"BenchmarkX", "BenchmarkX", 1},
	}
	for _, tc := range tests {
		name, procs := splitProcs(tc.in)
		if diff := cmp.Diff([]any{tc.name, tc.procs}, []any{name, procs}); diff != "" {
			t.Errorf("splitProcs(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}
