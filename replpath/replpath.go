// Package replpath is the rule set of DB sync's replicated paths, in one
// place for its two users: package config applies it so `muros-had check`
// and the daemon's configuration load refuse a bad list with file, line and
// key; package dbsync applies it again when a replication node starts. A
// list one of them accepts is never refused by the other.
//
// The rules: each path is absolute, clean and not "/"; each has a usable
// wire name (Name: its last component, so two paths with the same last
// component collide); no path is inside another (a file would be sent
// twice, as two wire names, and the copies overwrite each other on the
// backup); no path covers one of the daemon's own (its state directory,
// sockets, keys, configuration), which the backup would receive from the
// master: the master's TLS key, JWT secret and role: master configuration
// on the backup is two masters. Check compares the paths as text, which
// `muros-had check` can judge on any machine; CheckResolved, for the
// daemon's start, follows their symlinks first.
package replpath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Name is the wire name of a configured local path: its last component,
// lower-cased, each run of characters outside [a-z0-9._-] replaced by "-"
// and "-" trimmed from both ends; "" when nothing usable is left. The two
// nodes derive it alike, so it identifies the path even where their local
// locations differ.
func Name(local string) string {
	var b strings.Builder
	dash := false
	for _, c := range []byte(strings.ToLower(filepath.Base(local))) {
		if nameByte(c) {
			b.WriteByte(c)
			dash = false
			continue
		}
		if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	n := strings.Trim(b.String(), "-")
	if !ValidName(n) {
		return ""
	}
	return n
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// ValidName reports whether s can name a path on the wire: [a-z0-9._-]+,
// not "." or "..".
func ValidName(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if !nameByte(c) {
			return false
		}
	}
	return true
}

// Entry is one replicated path.
type Entry struct {
	Name  string // wire name
	Local string // local path
}

// Guarded is a path of the daemon's own that replication must leave alone.
type Guarded struct {
	Path string
	// What names it in messages, e.g. "state_dir" or "dbsync.tls.key".
	What string
	// Inside also refuses replicated paths inside Path: a directory the
	// daemon writes itself (state, sockets), where files applied from the
	// master would mix with the node's own.
	Inside bool
	// InsideWhy completes the message of a path inside Path; "" says the
	// daemon writes it itself.
	InsideWhy string
}

// Problem is one broken rule; Index is the offending entry.
type Problem struct {
	Index   int
	Message string
}

// Check returns every broken rule of entries, in entry order; a problem
// between two entries is reported once, on the later one.
func Check(entries []Entry, guarded []Guarded) []Problem {
	var out []Problem
	add := func(i int, format string, args ...any) {
		out = append(out, Problem{Index: i, Message: fmt.Sprintf(format, args...)})
	}
	usable := make([]bool, len(entries))
	for i, e := range entries {
		switch {
		case e.Local == "/":
			add(i, "/ would replicate the whole file system, the node's own keys and configuration with it")
			continue
		case !filepath.IsAbs(e.Local) || filepath.Clean(e.Local) != e.Local:
			add(i, "%q is not an absolute path in clean form", e.Local)
			continue
		case !ValidName(e.Name):
			add(i, "%s has no usable wire name (%q): its last component needs a letter or digit", e.Local, e.Name)
			continue
		}
		usable[i] = true
		for _, g := range guarded {
			if g.Path == "" {
				continue
			}
			switch {
			case within(g.Path, e.Local):
				add(i, "%s covers %s (%s): the backup would receive the master's copy of it", e.Local, g.Path, g.What)
			case g.Inside && within(e.Local, g.Path):
				why := g.InsideWhy
				if why == "" {
					why = "which the daemon writes itself"
				}
				add(i, "%s is inside %s (%s), %s", e.Local, g.Path, g.What, why)
			}
		}
		for j, o := range entries[:i] {
			if !usable[j] {
				continue
			}
			switch {
			case e.Local == o.Local:
				add(i, "%s is listed twice", e.Local)
			case within(e.Local, o.Local):
				add(i, "%s is inside %s, which is replicated too: its files would be sent twice and overwrite each other on the backup", e.Local, o.Local)
			case within(o.Local, e.Local):
				add(i, "%s contains %s, which is replicated too: its files would be sent twice and overwrite each other on the backup", e.Local, o.Local)
			case e.Name == o.Name:
				add(i, "%s and %s have the same wire name %q (the daemon names a path by its last component): rename one", o.Local, e.Local, e.Name)
			}
		}
	}
	return out
}

// CheckResolved is Check on this machine's file system, for the daemon's
// start: the rules apply to the paths as written (Check, whose problems
// are returned alone), then to the paths with their symlinks followed
// (Resolve), entries and guarded paths alike. Check compares text, so
// /var/lib/x, a link to /etc/muros-had, passes it; here it is refused,
// the message naming the link and what it resolves to.
func CheckResolved(entries []Entry, guarded []Guarded) []Problem {
	if ps := Check(entries, guarded); len(ps) > 0 {
		return ps
	}
	var out []Problem
	resolved := make([]Entry, 0, len(entries))
	index := make([]int, 0, len(entries)) // resolved[k] is entries[index[k]]
	for i, e := range entries {
		r, err := Resolve(e.Local)
		if err != nil {
			out = append(out, Problem{Index: i, Message: fmt.Sprintf("%s: its symlinks cannot be followed: %v", e.Local, err)})
			continue
		}
		resolved = append(resolved, Entry{Name: e.Name, Local: r})
		index = append(index, i)
	}
	gs := make([]Guarded, len(guarded))
	for k, g := range guarded {
		gs[k] = g
		if g.Path == "" {
			continue
		}
		// A guarded path whose links cannot be followed keeps its text:
		// the daemon fails on it soon enough, and Check already ran.
		if r, err := Resolve(g.Path); err == nil && r != g.Path {
			gs[k].Path, gs[k].What = r, g.What+", "+g.Path+" resolved"
		}
	}
	for _, p := range Check(resolved, gs) {
		i := index[p.Index]
		if r := resolved[p.Index].Local; r != entries[i].Local {
			p.Message = fmt.Sprintf("%s resolves to %s (symlinks followed): %s", entries[i].Local, r, p.Message)
		}
		out = append(out, Problem{Index: i, Message: p.Message})
	}
	slices.SortStableFunc(out, func(a, b Problem) int { return a.Index - b.Index })
	return out
}

// maxLinks bounds the symlinks Resolve follows, as the kernel's
// MAXSYMLINKS (40) bounds a lookup.
const maxLinks = 40

// Resolve returns the absolute, clean path p with every symlink of its
// longest existing prefix followed (filepath.EvalSymlinks) and the
// components that do not exist yet appended: where the daemon's MkdirAll
// and the applier's writes would land. A dangling link is followed to its
// target, which is where a write through it lands.
func Resolve(p string) (string, error) {
	for hops := 0; hops <= maxLinks; hops++ {
		next, dangling, err := resolveOnce(p)
		if err != nil || !dangling {
			return next, err
		}
		p = next
	}
	return "", fmt.Errorf("resolve %s: more than %d symlinks", p, maxLinks)
}

// resolveOnce resolves p's longest existing prefix; when that prefix ends
// in a dangling link it returns the link's target joined with the rest and
// dangling true, for the caller to resolve again.
func resolveOnce(p string) (string, bool, error) {
	rest := ""
	for cur := filepath.Clean(p); ; {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(r, rest), false, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", false, fmt.Errorf("resolve %s: %w", p, err)
		}
		if fi, lerr := os.Lstat(cur); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(cur)
			if err != nil {
				return "", false, fmt.Errorf("resolve %s: %w", p, err)
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(cur), target)
			}
			return filepath.Join(target, rest), true, nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return filepath.Join(cur, rest), false, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// within reports whether p is dir or a path inside it; both clean.
func within(p, dir string) bool {
	if p == dir || dir == "/" {
		return true
	}
	return strings.HasPrefix(p, dir+"/")
}
