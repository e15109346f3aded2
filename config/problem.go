package config

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a configuration file, located by line and
// key so the operator can go straight to it.
type Problem struct {
	File string
	// Line is 1-based; 0 when the problem has no single line.
	Line int
	// Key is the dotted path, e.g. "vips[1].address"; empty for file-level
	// problems such as a YAML syntax error.
	Key     string
	Message string
}

// String renders `file:line: key: message`.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in one file, in file order. It is the
// error Parse returns, so callers can print each one on its own line.
type Problems []Problem

// Error joins the problems one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Strings is each problem rendered on its own line.
func (ps Problems) Strings() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
