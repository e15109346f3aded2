package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wellFormed decodes the whole document and returns its text content.
func wellFormed(t *testing.T, name string, doc []byte) string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	var text strings.Builder
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", name, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Space + " " + tok.Name.Local
			}
		case xml.CharData:
			text.Write(tok)
			text.WriteString("\n")
		}
	}
	if root != "http://www.w3.org/2000/svg svg" {
		t.Errorf("%s: root element %q, want svg in the SVG namespace", name, root)
	}
	return text.String()
}

func TestChartSVG(t *testing.T) {
	c := Chart{
		Title:  "Failover gap at 10ms adverts <&>",
		Notes:  []string{"Machine: Intel Xeon, 2 CPUs", "Median and max over 5 repetitions per bar"},
		Unit:   "gap (ms)",
		Series: []string{"keepalived-none", "muros-had-none", "muros-had-ah"},
		Groups: []Group{
			{Label: "crash", Bars: map[string]Stat{"keepalived-none": {33, 37.8, 5}, "muros-had-none": {33.1, 35.7, 5}}},
			{Label: "graceful", Bars: map[string]Stat{"muros-had-ah": {9.8, 10.2, 5}}},
		},
	}
	text := wellFormed(t, "chart", c.SVG())
	for _, want := range []string{"Failover gap at 10ms adverts <&>", "Machine: Intel Xeon, 2 CPUs", "over 5 repetitions",
		"gap (ms)", "crash", "graceful", "keepalived-none", "muros-had-none", "muros-had-ah",
		"33.0", "max 37.8", "33.1", "max 35.7", "9.80", "max 10.2"} {
		if !strings.Contains(text, want) {
			t.Errorf("chart text lacks %q:\n%s", want, text)
		}
	}
	// Nothing to draw is still a document.
	wellFormed(t, "empty chart", Chart{Title: "empty"}.SVG())
}

func TestAxis(t *testing.T) {
	tests := []struct{ in, top, step float64 }{
		{0, 1, 0.2},
		{37.8, 50, 10},
		{363.6, 500, 100},
		{57597, 100000, 20000},
		{8, 10, 2},
		{2, 2.5, 0.5},
	}
	for _, tc := range tests {
		top, step := axis(tc.in)
		if diff := cmp.Diff([]float64{tc.top, tc.step}, []float64{top, step}); diff != "" {
			t.Errorf("axis(%v) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestBuild(t *testing.T) {
	in, err := os.ReadFile("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	r := Build(Parse(string(in)), []string{"bench/results/x.txt"}, "img")

	var names []string
	texts := map[string]string{}
	for _, c := range r.Charts {
		names = append(names, c.Name)
		texts[c.Name] = wellFormed(t, c.Name, c.Data)
	}
	want := []string{"failover-10ms.svg", "failover-100ms.svg", "conntrack-rate.svg", "conntrack-lag.svg", "idle-cpu.svg", "idle-memory.svg"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Fatalf("charts (-want +got):\n%s", diff)
	}
	machine := "Intel Xeon Processor (Skylake, IBRS), 2 CPUs, kernel 6.1.0-28-cloud-amd64, go1.26.8 linux/amd64"
	cpu, system := "Machine: Intel Xeon Processor (Skylake, IBRS)", "2 CPUs, kernel 6.1.0-28-cloud-amd64, go1.26.8 linux/amd64"
	run := "2026-12-07T00:19:02Z to 2026-12-07T00:29:41Z"
	// Every chart states the machine and the run, and holds its cases.
	contains := map[string][]string{
		"failover-10ms.svg":  {"crash", "graceful", "keepalived-none", "muros-had-none", "Median and max over 5 repetitions per bar", "max 37.8", "Target (RFC timer + 5 ms): crash 41.1 ms, graceful 11.1 ms"},
		"failover-100ms.svg": {"crash", "keepalived-none", "muros-had-none", "max 364", "Target (RFC timer + 5 ms): crash 366 ms"},
		"conntrack-rate.svg": {"max", "drain", "muros-had", "conntrackd-direct", "Median and max over 2 to 3 repetitions per bar", "57594", "max 61007", "129756", "max 134074"},
		"conntrack-lag.svg":  {"max p50", "max p99", "muros-had", "conntrackd-direct", "1.80", "max 6.60"},
		"idle-cpu.svg":       {"master (10ms adverts)", "backup (10ms adverts)", "keepalived-none", "muros-had-none", "Median and max over 1 run per bar", "5.80", "0.40"},
		"idle-memory.svg":    {"master (10ms adverts)", "backup (10ms adverts)", "22.0", "3.30"},
	}
	for name, wants := range contains {
		for _, w := range append(wants, cpu, system, run) {
			if !strings.Contains(texts[name], w) {
				t.Errorf("%s lacks %q:\n%s", name, w, texts[name])
			}
		}
	}
	for _, w := range []string{
		"Machine: " + machine, "Run: " + run + ", load average at the start 0.52",
		"`bench/results/x.txt`", "- Commit: 3a2caa6\n", "- Repetitions asked for: failover 5 per case, conntrack 3 per case, idle CPU 1 runs\n",
		"![Failover gap at 10ms adverts](img/failover-10ms.svg)",
		"![Conntrack replication lag](img/conntrack-lag.svg)",
		"![Idle memory](img/idle-memory.svg)",
		"| case | daemon | median gap (ms) | max gap (ms) | repetitions | median / keepalived-none |\n|---|---|---|---|---|---|\n",
		"| crash | keepalived-none | 33.0 | 37.8 | 5 | 1.00 |",
		"| graceful | muros-had-none | 9.30 | 12.2 | 5 | 0.94 |",
		"| max | conntrackd-direct | 40489 | 41889 | 3 | 1.00 |",
		"| drain | muros-had | 129756 | 134074 | 2 | - |",
		"| max p99 | muros-had | 5.90 | 6.60 | 3 | 1.07 |",
		"| master (10ms adverts) | muros-had-none | 5.80 | 5.80 | 1 | 3.62 |",
		"| ConntrackTakeover | table-0 | muros-had | 1 | recovery_max_ms 760 (760); recovery_p50_ms 709 (709); recovery_p99_ms 748 (748); survived_min_pct 100 (100); survived_pct 100 (100) |",
	} {
		if !strings.Contains(r.Markdown, w) {
			t.Errorf("REPORT.md lacks %q:\n%s", w, r.Markdown)
		}
	}
}

func TestBuildStatesWhatIsMissing(t *testing.T) {
	r := Build(Parse("BenchmarkConntrackStormWriter-2 \t 1\t 0 ns/op\t 315438 flows/s\n"), []string{"x.txt"}, "img")
	if len(r.Charts) != 0 {
		t.Errorf("charts without their benchmarks: %d", len(r.Charts))
	}
	for _, w := range []string{"Machine: unknown (not in the input)", "No BenchmarkFailover results", "No BenchmarkConntrackStorm results",
		"No BenchmarkIdleCPU results", "| ConntrackStormWriter |  |  | 1 | flows/s 315438 (315438) |"} {
		if !strings.Contains(r.Markdown, w) {
			t.Errorf("REPORT.md lacks %q:\n%s", w, r.Markdown)
		}
	}
}

// TestBuildSideBySide: the four failover modes with false takeovers, the
// cut's split brain and TCP stall from its log line, and the false
// takeover benchmarks, in tables and the split-brain chart.
func TestBuildSideBySide(t *testing.T) {
	in, err := os.ReadFile("testdata/sidebyside.txt")
	if err != nil {
		t.Fatal(err)
	}
	p := Parse(string(in))
	var cut Run
	for _, r := range p.Runs {
		if r.Name == "BenchmarkFailover/cut/10ms/keepalived-bfd" {
			cut = r
		}
	}
	want := map[string][]float64{"gap_ms": {105.654536, 12}, "split_ms": {2841.107437, 2950}, "tcp_stall_ms": {3048.551777, 3100}}
	if diff := cmp.Diff(want, cut.Samples); diff != "" {
		t.Errorf("cut samples (-want +got):\n%s", diff)
	}
	r := Build(p, []string{"x.txt"}, "img")
	var names []string
	texts := map[string]string{}
	for _, c := range r.Charts {
		names = append(names, c.Name)
		texts[c.Name] = wellFormed(t, c.Name, c.Data)
	}
	if diff := cmp.Diff([]string{"failover-10ms.svg", "split-brain.svg"}, names); diff != "" {
		t.Fatalf("charts (-want +got):\n%s", diff)
	}
	for _, w := range []string{"hang", "cut", "keepalived-bfd", "muros-had-none", "max 308", "Target (RFC timer + 5 ms): hang 41.1 ms"} {
		if !strings.Contains(texts["failover-10ms.svg"], w) {
			t.Errorf("failover-10ms.svg lacks %q:\n%s", w, texts["failover-10ms.svg"])
		}
	}
	for _, w := range []string{"Split brain with the sync link cut", "10ms", "2896", "max 2950", "Window: 3000 ms from the cut"} {
		if !strings.Contains(texts["split-brain.svg"], w) {
			t.Errorf("split-brain.svg lacks %q:\n%s", w, texts["split-brain.svg"])
		}
	}
	for _, w := range []string{
		"| hang/10ms | keepalived-bfd | 170 / 308 | 2 | 3 (3) in 4 runs | - | - |",
		"| hang/10ms | muros-had-none | 4.65 / 5.10 | 2 | 0 (0) in 2 runs | - | - |",
		"| cut/10ms | keepalived-bfd | 58.8 / 106 | 2 | 1 (1) in 2 runs | 2896 / 2950 | 3074 / 3100 |",
		"| cut/10ms | muros-had-none | 108 / 172 | 2 | 0 (0) in 2 runs | 0 / 0 | 132 / 231 |",
		"| FalseTakeoverIdle | 10ms | keepalived-none | 1 | 10.0 (10) | 22.0 (22) |",
		"| FalseTakeoverIdle | 10ms | muros-had-none | 1 | 0 (0) | 0 (0) |",
		"![Split brain with the sync link cut](img/split-brain.svg)",
	} {
		if !strings.Contains(r.Markdown, w) {
			t.Errorf("REPORT.md lacks %q:\n%s", w, r.Markdown)
		}
	}
}
