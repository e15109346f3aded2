package main

import (
	"slices"
	"strings"
)

// Stat is the median and maximum of N values.
type Stat struct {
	Median, Max float64
	N           int
}

// Summarize returns the median (the mean of the two middle values for an
// even count) and the maximum of v; the zero Stat for none.
func Summarize(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	m := s[n/2]
	if n%2 == 0 {
		m = (s[n/2-1] + s[n/2]) / 2
	}
	return Stat{Median: m, Max: s[n-1], N: n}
}

// Case is every run of one benchmark, e.g. "BenchmarkFailover/crash/10ms/
// keepalived-none" split into Bench "Failover", Case "crash/10ms" and
// Daemon "keepalived-none".
type Case struct {
	Bench, Case, Daemon string
	// Runs is how many result lines the case has (go test -count).
	Runs int
	// Metrics summarise each reported metric over the runs.
	Metrics map[string]Stat
	// Samples summarise the single repetitions of every run.
	Samples map[string]Stat
}

// Aggregate groups runs by benchmark name, in the order the names first
// appear. The repetitions of a case are summarised only if every run of it
// logged them all (none truncated), so that a median never mixes single
// repetitions of some runs with nothing of others.
func Aggregate(runs []Run) []Case {
	var order []string
	metrics := map[string]map[string][]float64{}
	samples := map[string]map[string][]float64{}
	count := map[string]int{}
	sampled := map[string]map[string]int{} // name -> unit -> complete runs
	for _, r := range runs {
		if _, ok := metrics[r.Name]; !ok {
			order = append(order, r.Name)
			metrics[r.Name] = map[string][]float64{}
			samples[r.Name] = map[string][]float64{}
			sampled[r.Name] = map[string]int{}
		}
		count[r.Name]++
		for unit, v := range r.Metrics {
			metrics[r.Name][unit] = append(metrics[r.Name][unit], v)
		}
		if r.Truncated {
			continue
		}
		for unit, v := range r.Samples {
			samples[r.Name][unit] = append(samples[r.Name][unit], v...)
			sampled[r.Name][unit]++
		}
	}
	cases := make([]Case, 0, len(order))
	for _, name := range order {
		c := splitName(name)
		c.Runs = count[name]
		c.Metrics = summarizeAll(metrics[name])
		// Repetitions stand for a case only if every run logged its own.
		for unit := range samples[name] {
			if sampled[name][unit] != count[name] {
				delete(samples[name], unit)
			}
		}
		c.Samples = summarizeAll(samples[name])
		cases = append(cases, c)
	}
	return cases
}

func summarizeAll(m map[string][]float64) map[string]Stat {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]Stat, len(m))
	for unit, v := range m {
		out[unit] = Summarize(v)
	}
	return out
}

// splitName: the first element is the benchmark, the last (of three or
// more) the daemon, those between the case.
func splitName(name string) Case {
	parts := strings.Split(strings.TrimPrefix(name, "Benchmark"), "/")
	c := Case{Bench: parts[0]}
	switch len(parts) {
	case 1:
	case 2:
		c.Daemon = parts[1]
	default:
		c.Case = strings.Join(parts[1:len(parts)-1], "/")
		c.Daemon = parts[len(parts)-1]
	}
	return c
}

// Value is the figure a chart shows for one case: the median and maximum
// over single repetitions when the log lines gave them (sample), otherwise
// the median over runs of the reported median (medianMetric) and the
// maximum over runs of the reported maximum (maxMetric).
// Of says which: "repetitions" or "runs".
func (c Case) Value(sample, medianMetric, maxMetric string) (s Stat, of string, ok bool) {
	if s, ok := c.Samples[sample]; ok && sample != "" {
		return s, "repetitions", true
	}
	m, ok := c.Metrics[medianMetric]
	if !ok {
		return Stat{}, "", false
	}
	if x, ok := c.Metrics[maxMetric]; ok {
		m.Max = x.Max
	}
	return m, "runs", true
}
