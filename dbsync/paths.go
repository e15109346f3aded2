package dbsync

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/muros/muros-had/replpath"
)

// Path is one replicated path: a file or a whole directory tree. Name is its
// identity on the wire, so two nodes may keep the same data at different
// local locations (several daemons on one host in tests).
type Path struct {
	Name  string // [a-z0-9._-]+, unique
	Local string // absolute local path of the file or directory
	// Dir is true for a directory tree, false for a single file.
	Dir bool
}

// Path safety errors; each is a rejection reason.
var (
	ErrPathAbsolute = errors.New("path is absolute")
	ErrPathDotDot   = errors.New("path has a .. element")
	ErrPathUnclean  = errors.New("path is not in clean form")
	ErrPathRoot     = errors.New("path is not under a replicated root")
	ErrPathChars    = errors.New("path has a NUL byte")
	ErrPathInternal = errors.New("path names an internal temporary file")
	// ErrPathSidecar: SQLite's -wal, -shm and -journal are never sent (the
	// snapshot holds their committed content); one installed next to a
	// database would be replayed into it.
	ErrPathSidecar = errors.New("path names an SQLite sidecar")
	// ErrPathConflict: a batch names a path twice, or puts a file at a path
	// and another under it; one of the two would be silently lost.
	ErrPathConflict = errors.New("path conflicts with another entry of the batch")
)

// sqliteSidecars are the suffixes of SQLite's journal files.
var sqliteSidecars = [...]string{"-wal", "-shm", "-journal"}

func isSidecar(base string) bool {
	for _, s := range sqliteSidecars {
		if strings.HasSuffix(base, s) {
			return true
		}
	}
	return false
}

// checkBatchPaths refuses batches no sender makes: a path named twice, or
// a put/append at a path and another put/append under it (a file "a" and a
// file "a/b" cannot both exist). A delete may share a prefix with a put: a
// file that became a directory on the master (delete "a", put "a/b") and
// the reverse.
func checkBatchPaths(b *Batch) error {
	seen := make(map[string]Op, len(b.Entries))
	for i := range b.Entries {
		e := &b.Entries[i]
		if _, dup := seen[e.Path]; dup {
			return fmt.Errorf("entry %d %q: %w: named twice", i, e.Path, ErrPathConflict)
		}
		seen[e.Path] = e.Op
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		if e.Op == OpDelete {
			continue
		}
		for d := path.Dir(e.Path); d != "." && d != "/"; d = path.Dir(d) {
			if op, ok := seen[d]; ok && op != OpDelete {
				return fmt.Errorf("entry %d %q: %w: %s is a file in the same batch", i, e.Path, ErrPathConflict, d)
			}
		}
	}
	return nil
}

// tempPrefix starts the names of staged files; they are never replicated.
const tempPrefix = ".muros-had-"

// validatePaths checks the configured list with the rules `muros-had
// check` applies to dbsync.paths (package replpath: one rule set for both),
// the state directory guarded: the journal and identity kept there must
// neither be replicated nor receive replicated files.
func validatePaths(ps []Path, stateDir string) error {
	entries := make([]replpath.Entry, len(ps))
	for i, p := range ps {
		entries[i] = replpath.Entry{Name: p.Name, Local: p.Local}
	}
	var guarded []replpath.Guarded
	if filepath.IsAbs(stateDir) {
		guarded = append(guarded, replpath.Guarded{Path: filepath.Clean(stateDir), What: "the dbsync state directory", Inside: true})
	}
	var errs []error
	// New runs where the paths live: their symlinks are followed.
	for _, p := range replpath.CheckResolved(entries, guarded) {
		errs = append(errs, fmt.Errorf("paths[%d] (%s): %s", p.Index, ps[p.Index].Name, p.Message))
	}
	return errors.Join(errs...)
}

// resolved is a wire path checked against the configured roots.
type resolved struct {
	root *Path
	rel  string // slash-separated path inside root; "" for a file root
}

// local is the absolute local path.
func (r resolved) local() string {
	if r.rel == "" {
		return r.root.Local
	}
	return filepath.Join(r.root.Local, filepath.FromSlash(r.rel))
}

// resolveWirePath checks that wire names a file inside the replicated set.
// Symlinks are not resolved here: the applier opens every path through an
// os.Root, which refuses any path that leaves the root through a symlink.
func resolveWirePath(roots []Path, wire string) (resolved, error) {
	if err := checkWireSyntax(wire); err != nil {
		return resolved{}, err
	}
	name, rel, _ := strings.Cut(wire, "/")
	for i := range roots {
		r := &roots[i]
		if r.Name != name {
			continue
		}
		if !r.Dir {
			if rel != "" {
				return resolved{}, fmt.Errorf("%w: %s is a file root", ErrPathRoot, name)
			}
			return resolved{root: r}, nil
		}
		if rel == "" {
			return resolved{}, fmt.Errorf("%w: %s is a directory root, not a file", ErrPathRoot, name)
		}
		if strings.HasPrefix(path.Base(rel), tempPrefix) {
			return resolved{}, ErrPathInternal
		}
		if isSidecar(path.Base(rel)) {
			return resolved{}, ErrPathSidecar
		}
		return resolved{root: r, rel: rel}, nil
	}
	return resolved{}, fmt.Errorf("%w: %q", ErrPathRoot, name)
}

// checkWireSyntax checks the form of a wire path, whatever the roots: no
// NUL, relative, no .. element, clean.
func checkWireSyntax(wire string) error {
	if strings.IndexByte(wire, 0) >= 0 {
		return ErrPathChars
	}
	if strings.HasPrefix(wire, "/") {
		return ErrPathAbsolute
	}
	for _, el := range strings.Split(wire, "/") {
		if el == ".." {
			return ErrPathDotDot
		}
	}
	if path.Clean(wire) != wire || wire == "." {
		return ErrPathUnclean
	}
	return nil
}

// wirePath is the inverse of resolveWirePath.
func wirePath(root *Path, rel string) string {
	if rel == "" {
		return root.Name
	}
	return root.Name + "/" + rel
}

// excluded reports whether a file under a replicated directory is never
// replicated: our own staging files, SQLite's sidecars (the snapshot
// already holds their committed content) and the operator's globs (Config.Exclude).
// rel is the file's path relative to its replicated root directory, with
// slashes. A glob without a slash matches the file's base name at any
// depth ("*.pid"); one with a slash matches the relative path, or the path
// of a directory above the file ("local/*.conf", "local/nodes": the whole
// tree below it). path.Match's rules: "*" and "?" do not cross a slash.
// A single-file root is never excluded: the operator named it.
func excluded(rel string, globs []string) bool {
	base := path.Base(rel)
	if strings.HasPrefix(base, tempPrefix) {
		return true
	}
	if isSidecar(base) {
		return true
	}
	for _, g := range globs {
		if !strings.Contains(g, "/") {
			if ok, _ := path.Match(g, base); ok {
				return true
			}
			continue
		}
		for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
			if ok, _ := path.Match(g, p); ok {
				return true
			}
		}
	}
	return false
}

// excludedWire is excluded for a wire path (root name, then the path
// under it); a root itself is never excluded.
func excludedWire(wire string, globs []string) bool {
	_, rel, ok := strings.Cut(wire, "/")
	return ok && excluded(rel, globs)
}
