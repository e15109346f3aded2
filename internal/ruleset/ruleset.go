// Package ruleset fingerprints the node's nftables ruleset, so that the two
// nodes of a pair can compare theirs and report drift (SPEC "common
// pitfalls": a ruleset edited by hand on one node surprises at the next
// failover).
//
// The fingerprint is the hex SHA-256 of the normalized output of
// `nft -s list ruleset` (nftables 1.0, stateless listing) run in the
// daemon's own network namespace. Normalization keeps everything that is
// configuration and removes what differs legitimately between two nodes
// loaded with the same ruleset:
//
//   - counter values ("packets N bytes M", inline or in a named counter
//     object), quota consumption ("used N bytes") and element expiry times
//     ("expires 59s992ms"): -s already omits them; they are removed again
//     so that a stateful listing gives the same fingerprint;
//   - the elements of every set or map that the packet path fills or that
//     expires: one whose flags contain dynamic or timeout, or that declares
//     a default timeout. Its declaration (type, flags, size, timeout) stays;
//   - layout: leading and trailing blanks and empty lines; the line breaks
//     nft puts inside a long element list;
//   - order that carries no meaning: the elements of the remaining (static)
//     sets and maps are sorted, and so are the tables (each table is its
//     own namespace; the kernel lists them in creation order, which differs
//     after one node recreated a table).
//
// Kept as they are: the order of chains, sets and objects within a table
// and of rules within a chain (rule order is semantics), comments, table
// flags (a dormant table differs from an active one).
package ruleset

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/muros/muros-had/internal/procout"
)

// Status is one node's ruleset fingerprint.
type Status struct {
	// Fingerprint is empty until the first successful listing and after a
	// failed one.
	Fingerprint string    `json:"fingerprint,omitempty"`
	CheckedAt   time.Time `json:"checked_at,omitzero"`
	Error       string    `json:"error,omitempty"`
}

var (
	counterValues = regexp.MustCompile(`\s*\bpackets \d+ bytes \d+`)
	quotaUsed     = regexp.MustCompile(`\s*\bused \d+ [a-z]*bytes\b`)
	elemExpires   = regexp.MustCompile(`\s+expires [0-9][0-9a-z.]*`)
	setHeader     = regexp.MustCompile(`^(set|map) \S+ \{$`)
	tableHeader   = regexp.MustCompile(`^table \S+ \S+ \{$`)
)

// Normalize returns the normalized form of an `nft list ruleset`
// listing (see the package comment above): one statement per line, tables
// sorted, volatile set contents removed.
func Normalize(listing []byte) []byte {
	lines := logicalLines(listing)
	var (
		tables [][]string // one block per table, header first
		cur    []string   // the table being read
		set    []string   // the set or map being read, header first
		depth  int
		other  []string // top-level lines outside any table (none expected)
	)
	for _, l := range lines {
		l = counterValues.ReplaceAllString(l, "")
		l = quotaUsed.ReplaceAllString(l, "")
		l = elemExpires.ReplaceAllString(l, "")
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		switch {
		case depth == 0 && tableHeader.MatchString(l):
			cur = []string{l}
		case depth == 1 && setHeader.MatchString(l):
			set = []string{l}
		case set != nil && depth == 2 && l == "}":
			cur = append(cur, normalizeSet(set)...)
			cur = append(cur, l)
			set = nil
		case set != nil:
			set = append(set, l)
		case cur != nil:
			cur = append(cur, l)
		default:
			other = append(other, l)
		}
		depth += braceDelta(l)
		if depth < 0 {
			depth = 0
		}
		if depth == 0 && cur != nil {
			tables = append(tables, cur)
			cur = nil
		}
	}
	if cur != nil { // truncated listing: keep what was read
		if set != nil {
			cur = append(cur, normalizeSet(set)...)
		}
		tables = append(tables, cur)
	}
	slices.SortStableFunc(tables, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	var out bytes.Buffer
	for _, l := range other {
		out.WriteString(l)
		out.WriteByte('\n')
	}
	for _, t := range tables {
		for _, l := range t {
			out.WriteString(l)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// normalizeSet drops the elements of a volatile set and sorts those of a
// static one. set is the header line and the body, without the closing
// brace.
func normalizeSet(set []string) []string {
	volatile := false
	for _, l := range set[1:] {
		if f, ok := strings.CutPrefix(l, "flags "); ok {
			for _, flag := range strings.Split(f, ",") {
				if flag = strings.TrimSpace(flag); flag == "dynamic" || flag == "timeout" {
					volatile = true
				}
			}
		}
		if strings.HasPrefix(l, "timeout ") {
			volatile = true
		}
	}
	out := make([]string, 0, len(set))
	for _, l := range set {
		if strings.HasPrefix(l, "elements = {") {
			if volatile {
				continue
			}
			l = sortElements(l)
		}
		out = append(out, l)
	}
	return out
}

// sortElements sorts the comma-separated items of an `elements = { ... }`
// line (commas inside quotes or nested braces do not separate).
func sortElements(line string) string {
	open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
	if open < 0 || end <= open {
		return line
	}
	body := line[open+1 : end]
	var items []string
	start, depth, quoted := 0, 0, false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '{':
			depth++
		case c == '}':
			depth--
		case c == ',' && depth == 0:
			items = append(items, strings.TrimSpace(body[start:i]))
			start = i + 1
		}
	}
	items = append(items, strings.TrimSpace(body[start:]))
	slices.Sort(items)
	return "elements = { " + strings.Join(items, ", ") + " }"
}

// logicalLines splits a listing into lines, joining the continuation lines
// of a statement whose braces nft wrapped (long element lists).
func logicalLines(listing []byte) []string {
	var out []string
	var pending strings.Builder
	open := 0
	for _, raw := range strings.Split(string(listing), "\n") {
		l := strings.TrimSpace(raw)
		if open > 0 {
			pending.WriteByte(' ')
			pending.WriteString(l)
			open += braceDelta(l)
			if open <= 0 {
				out = append(out, pending.String())
				pending.Reset()
				open = 0
			}
			continue
		}
		// A statement that opens more braces than it closes without ending
		// in "{" (a block header) continues on the next line.
		if d := braceDelta(l); d > 0 && !strings.HasSuffix(l, "{") {
			pending.WriteString(l)
			open = d
			continue
		}
		out = append(out, l)
	}
	if pending.Len() > 0 {
		out = append(out, pending.String())
	}
	return out
}

// braceDelta is the number of '{' minus '}' outside double quotes.
func braceDelta(l string) int {
	d, quoted := 0, false
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '{':
			d++
		case c == '}':
			d--
		}
	}
	return d
}

// Fingerprint is the hex SHA-256 of the normalized listing.
func Fingerprint(listing []byte) string {
	sum := sha256.Sum256(Normalize(listing))
	return hex.EncodeToString(sum[:])
}

// Lister returns this node's `nft -s list ruleset` output.
type Lister func(ctx context.Context) ([]byte, error)

// NFT lists the ruleset with nft from PATH, started by start (the daemon
// starts its programs time-sharing: it may run real-time, and a large
// ruleset takes nft a while to list). The child inherits the daemon's
// network namespace, so it lists the ruleset of the namespace the daemon
// serves.
func NFT(start func(*exec.Cmd) error) Lister {
	return func(ctx context.Context) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "nft", "-s", "list", "ruleset")
		var stdout bytes.Buffer
		stderr := &procout.Capture{N: 4096}
		cmd.Stdout, cmd.Stderr = &stdout, stderr
		err := start(cmd)
		if err == nil {
			err = cmd.Wait()
		}
		out := stdout.Bytes()
		if err != nil {
			if msg := stderr.FirstLine(); msg != "" {
				return nil, fmt.Errorf("nft -s list ruleset: %w: %s", err, msg)
			}
			return nil, fmt.Errorf("nft -s list ruleset: %w", err)
		}
		return out, nil
	}
}

// Check computes one fingerprint; a failure is a status, never fatal.
func Check(ctx context.Context, list Lister, now time.Time) Status {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := list(ctx)
	if err != nil {
		return Status{CheckedAt: now.UTC(), Error: err.Error()}
	}
	if len(bytes.TrimSpace(out)) == 0 {
		// An empty ruleset is a valid state but on a firewall almost
		// always a failed load: fingerprinted all the same (both nodes
		// empty is no drift), and visible as such in the status.
		return Status{Fingerprint: Fingerprint(out), CheckedAt: now.UTC(), Error: "ruleset is empty"}
	}
	return Status{Fingerprint: Fingerprint(out), CheckedAt: now.UTC()}
}

// Watch recomputes the fingerprint every interval and whenever kick fires
// (a reload), until ctx ends, and hands each result to report. One log line
// per failure streak.
func Watch(ctx context.Context, interval time.Duration, list Lister, kick <-chan struct{}, report func(Status), log Logger) {
	failing := ""
	check := func() {
		st := Check(ctx, list, time.Now())
		if ctx.Err() != nil {
			return
		}
		report(st)
		switch {
		case st.Error != "" && st.Error != failing:
			log.Warn("ruleset fingerprint: cannot list the ruleset", "err", st.Error)
		case st.Error == "" && failing != "":
			log.Info("ruleset fingerprint: listing works again", "fingerprint", st.Fingerprint)
		}
		failing = st.Error
	}
	check()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		case <-kick:
			check()
			t.Reset(interval)
		}
	}
}

// Logger is the part of *slog.Logger the watch uses.
type Logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
}
