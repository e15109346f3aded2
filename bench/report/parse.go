// Command report turns the output of the side-by-side benchmarks of package
// bench (`go test -bench` text, one or more runs) into bench/REPORT.md and
// SVG bar charts: failover gap per case and daemon, conntrack replication
// rate and lag against conntrackd, idle CPU and memory. `make bench-report`
// runs the benchmarks and then this program.
//
// Parsing, aggregation and rendering are pure functions of the text; the
// machine, date and repetitions in the report are those recorded in the
// input, not those of the machine the report is generated on.
package main

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Run is one benchmark result line with the repetitions its log lines
// (the "--- BENCH:" block after it) list one by one.
type Run struct {
	// Name is the benchmark's name without the "-GOMAXPROCS" suffix,
	// e.g. "BenchmarkFailover/crash/10ms/keepalived-none".
	Name  string
	Procs int
	// Metrics are the line's value/unit pairs, unit -> value.
	Metrics map[string]float64
	// Samples are single repetitions read from the log lines, in the unit
	// of the metric they summarise: "gap_ms" (failover), "flows/s",
	// "lag_p50_ms", "lag_p99_ms" (conntrack storm and drain).
	Samples map[string][]float64
	// Truncated is set when go test cut the log lines short ("[output
	// truncated]" after 10 lines without -v): Samples may lack some
	// repetitions.
	Truncated bool
}

// Parsed is what one or more `go test -bench` outputs hold.
type Parsed struct {
	// Env holds the "key: value" header lines (go test's goos, goarch,
	// pkg, cpu; the kernel, nproc, go, date, finished lines
	// scripts/bench-report.sh adds). The first value of a key wins.
	Env  map[string]string
	Runs []Run
}

var (
	headerLine = regexp.MustCompile(`^([a-z]+): (.+)$`)
	// gaps [37.2ms 38.1ms ...] of BenchmarkFailover's log line; the cut
	// case's line adds split [...] (split-brain time) and stalls [...]
	// (the TCP connection's longest stall).
	gapsLog   = regexp.MustCompile(`: gaps \[([^\]]*)\]`)
	splitLog  = regexp.MustCompile(`; split \[([^\]]*)\]`)
	stallsLog = regexp.MustCompile(`; stalls \[([^\]]*)\]`)
	// "= 57594 flows/s; lag p50 1.8ms p99 5.9ms max" of a storm, "lag from
	// SIGCONT p50" of a drain.
	stormLog = regexp.MustCompile(` rep \d+ .*= ([0-9.]+) flows/s; lag (?:from SIGCONT )?p50 (\S+) p99 (\S+) max`)
)

// Parse reads `go test -bench` output. Lines it does not know (PASS, ok,
// the daemons' own output) are skipped. Log lines belong to the benchmark
// named by the "--- BENCH:" line above them; a drain repetition logged as
// OVERRUN or DISTURBED is left out as the benchmark leaves it out of its
// medians.
func Parse(text string) Parsed {
	p := Parsed{Env: map[string]string{}}
	index := map[string]int{} // name -> index in p.Runs of its latest line
	// Log lines come after "--- BENCH: name" and the result line, or with
	// -v before the result line, after a line holding the name alone.
	current := -1
	var pending *Run
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "Benchmark"):
			r, ok := parseResult(line)
			current = -1
			if !ok {
				pending = nil
				if f := strings.Fields(line); len(f) == 1 {
					name, procs := splitProcs(f[0])
					pending = &Run{Name: name, Procs: procs}
				}
				continue
			}
			if pending != nil && pending.Name == r.Name {
				r.Samples, r.Truncated = pending.Samples, pending.Truncated
			}
			pending = nil
			index[r.Name] = len(p.Runs)
			p.Runs = append(p.Runs, r)
			current = len(p.Runs) - 1
		case strings.HasPrefix(line, "--- BENCH: "):
			name, _ := splitProcs(strings.TrimSpace(strings.TrimPrefix(line, "--- BENCH: ")))
			i, ok := index[name]
			current = -1
			if ok && i == len(p.Runs)-1 {
				current = i
			}
		case strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t"):
			switch {
			case pending != nil:
				addSamples(pending, line)
			case current >= 0:
				addSamples(&p.Runs[current], line)
			}
		default:
			current, pending = -1, nil
			if m := headerLine.FindStringSubmatch(line); m != nil {
				if _, seen := p.Env[m[1]]; !seen {
					p.Env[m[1]] = strings.TrimSpace(m[2])
				}
			}
		}
	}
	return p
}

// parseResult reads "BenchmarkX/a/b-2  1  0 ns/op  37.2 gap_p50_ms ...".
func parseResult(line string) (Run, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 {
		return Run{}, false
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return Run{}, false
	}
	name, procs := splitProcs(f[0])
	r := Run{Name: name, Procs: procs, Metrics: map[string]float64{}}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Run{}, false
		}
		r.Metrics[f[i+1]] = v
	}
	return r, true
}

// splitProcs splits "BenchmarkX/y-2" into "BenchmarkX/y" and 2. A name
// without the suffix (GOMAXPROCS 1) has procs 1.
func splitProcs(s string) (string, int) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return s, 1
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n <= 0 {
		return s, 1
	}
	return s[:i], n
}

func addSamples(r *Run, line string) {
	if strings.Contains(line, "... [output truncated]") {
		r.Truncated = true
		return
	}
	if m := gapsLog.FindStringSubmatch(line); m != nil {
		r.addDurations("gap_ms", m[1])
		if m := splitLog.FindStringSubmatch(line); m != nil {
			r.addDurations("split_ms", m[1])
		}
		if m := stallsLog.FindStringSubmatch(line); m != nil {
			r.addDurations("tcp_stall_ms", m[1])
		}
		return
	}
	if strings.Contains(line, "OVERRUN:") || strings.Contains(line, "DISTURBED:") {
		return
	}
	m := stormLog.FindStringSubmatch(line)
	if m == nil {
		return
	}
	rate, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return
	}
	p50, err1 := time.ParseDuration(m[2])
	p99, err2 := time.ParseDuration(m[3])
	if err1 != nil || err2 != nil {
		return
	}
	r.addSample("flows/s", rate)
	r.addSample("lag_p50_ms", millis(p50))
	r.addSample("lag_p99_ms", millis(p99))
}

// addDurations adds each Go duration of a space-separated list ("33ms
// 1.5s 0s") as a sample in milliseconds.
func (r *Run) addDurations(unit, list string) {
	for _, s := range strings.Fields(list) {
		if d, err := time.ParseDuration(s); err == nil {
			r.addSample(unit, millis(d))
		}
	}
}

func (r *Run) addSample(unit string, v float64) {
	if r.Samples == nil {
		r.Samples = map[string][]float64{}
	}
	r.Samples[unit] = append(r.Samples[unit], v)
}

func millis(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
