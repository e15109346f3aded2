package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		in   []float64
		want Stat
	}{
		{nil, Stat{}},
		{[]float64{3}, Stat{Median: 3, Max: 3, N: 1}},
		{[]float64{5, 1, 3}, Stat{Median: 3, Max: 5, N: 3}},
		{[]float64{4, 1, 3, 10}, Stat{Median: 3.5, Max: 10, N: 4}},
	}
	for _, tc := range tests {
		in := append([]float64(nil), tc.in...)
		if diff := cmp.Diff(tc.want, Summarize(tc.in)); diff != "" {
			t.Errorf("Summarize(%v) (-want +got):\n%s", tc.in, diff)
		}
		if diff := cmp.Diff(in, tc.in); diff != "" {
			t.Errorf("Summarize reordered its input:\n%s", diff)
		}
	}
}

func TestAggregate(t *testing.T) {
	gap := func(p50, max float64, gaps ...float64) Run {
		r := Run{Name: "BenchmarkFailover/crash/10ms/muros-had-ah", Procs: 2,
			Metrics: map[string]float64{"gap_p50_ms": p50, "gap_max_ms": max}}
		if gaps != nil {
			r.Samples = map[string][]float64{"gap_ms": gaps}
		}
		return r
	}
	tests := []struct {
		name string
		in   []Run
		want []Case
	}{
		{
			name: "repetitions of every run pooled; metrics over runs; order of first appearance",
			in: []Run{
				{Name: "BenchmarkIdleCPU/10ms/keepalived-none", Metrics: map[string]float64{"cpu_master_pct": 1.6}},
				gap(33, 40, 30, 33, 40),
				gap(35, 50, 35, 36, 50),
				{Name: "BenchmarkConntrackStormWriter", Metrics: map[string]float64{"flows/s": 315438}},
				{Name: "BenchmarkIdleCPU/10ms/keepalived-none", Metrics: map[string]float64{"cpu_master_pct": 2.0}},
			},
			want: []Case{
				{Bench: "IdleCPU", Case: "10ms", Daemon: "keepalived-none", Runs: 2,
					Metrics: map[string]Stat{"cpu_master_pct": {Median: 1.8, Max: 2, N: 2}}},
				{Bench: "Failover", Case: "crash/10ms", Daemon: "muros-had-ah", Runs: 2,
					Metrics: map[string]Stat{"gap_p50_ms": {Median: 34, Max: 35, N: 2}, "gap_max_ms": {Median: 45, Max: 50, N: 2}},
					Samples: map[string]Stat{"gap_ms": {Median: 35.5, Max: 50, N: 6}}},
				{Bench: "ConntrackStormWriter", Runs: 1,
					Metrics: map[string]Stat{"flows/s": {Median: 315438, Max: 315438, N: 1}}},
			},
		},
		{
			name: "a run without its repetitions: the case falls back to the metrics",
			in:   []Run{gap(33, 40, 30, 33, 40), gap(35, 50)},
			want: []Case{{Bench: "Failover", Case: "crash/10ms", Daemon: "muros-had-ah", Runs: 2,
				Metrics: map[string]Stat{"gap_p50_ms": {Median: 34, Max: 35, N: 2}, "gap_max_ms": {Median: 45, Max: 50, N: 2}}}},
		},
		{
			name: "a truncated run: the same",
			in: []Run{gap(33, 40, 30, 33, 40), func() Run {
				r := gap(35, 50, 35)
				r.Truncated = true
				return r
			}()},
			want: []Case{{Bench: "Failover", Case: "crash/10ms", Daemon: "muros-had-ah", Runs: 2,
				Metrics: map[string]Stat{"gap_p50_ms": {Median: 34, Max: 35, N: 2}, "gap_max_ms": {Median: 45, Max: 50, N: 2}}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Aggregate(tc.in)); diff != "" {
				t.Errorf("Aggregate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCaseValue(t *testing.T) {
	c := Case{
		Metrics: map[string]Stat{"gap_p50_ms": {Median: 34, Max: 35, N: 2}, "gap_max_ms": {Median: 45, Max: 50, N: 2}},
	}
	type got struct {
		S  Stat
		Of string
		OK bool
	}
	s, of, ok := c.Value("gap_ms", "gap_p50_ms", "gap_max_ms")
	if diff := cmp.Diff(got{Stat{Median: 34, Max: 50, N: 2}, "runs", true}, got{s, of, ok}); diff != "" {
		t.Errorf("without repetitions (-want +got):\n%s", diff)
	}
	c.Samples = map[string]Stat{"gap_ms": {Median: 35.5, Max: 50, N: 6}}
	s, of, ok = c.Value("gap_ms", "gap_p50_ms", "gap_max_ms")
	if diff := cmp.Diff(got{Stat{Median: 35.5, Max: 50, N: 6}, "repetitions", true}, got{s, of, ok}); diff != "" {
		t.Errorf("with repetitions (-want +got):\n%s", diff)
	}
	s, of, ok = c.Value("", "rss_master_MiB", "rss_master_MiB")
	if diff := cmp.Diff(got{}, got{s, of, ok}); diff != "" {
		t.Errorf("missing metric (-want +got):\n%s", diff)
	}
}
