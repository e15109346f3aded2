package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	out := flag.String("out", "bench/REPORT.md", "the report to write")
	img := flag.String("img", "img", "directory of the charts, relative to the report's")
	flag.Parse()
	if err := run(*out, *img, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "bench-report:", err)
		os.Exit(1)
	}
}

// run reads the benchmark outputs named in files (stdin if none) and writes
// the report and its charts.
func run(out, img string, files []string) error {
	var text strings.Builder
	var sources []string
	if len(files) == 0 {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		text.Write(b)
		sources = []string{"standard input"}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read benchmark output: %w", err)
		}
		text.Write(b)
		text.WriteString("\n")
		sources = append(sources, f)
	}
	p := Parse(text.String())
	if len(p.Runs) == 0 {
		return errors.New("no benchmark result lines in the input")
	}
	r := Build(p, sources, img)
	dir := filepath.Join(filepath.Dir(out), img)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("chart directory: %w", err)
	}
	for _, c := range r.Charts {
		if err := os.WriteFile(filepath.Join(dir, c.Name), c.Data, 0o644); err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
	}
	if err := os.WriteFile(out, []byte(r.Markdown), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench-report: %s and %d charts in %s from %d result lines\n", out, len(r.Charts), dir, len(p.Runs))
	return nil
}
