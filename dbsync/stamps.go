package dbsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// Version stamps: which of two differing copies of a file is newer.
//
// Wall clocks cannot say (the two nodes' clocks differ), so each node keeps
// for every wire path the revision that made its current copy, in
// StateDir/stamps: {"files":{path:{"sha256":hex,"rev":N}}} ("" sha256 for a
// deletion). Revisions are a Lamport clock of the pair: a node stamps a
// change with a revision above every revision it has held or seen, so a
// copy made after another copy was seen carries a higher stamp.
//
//   - The master stamps a change it sees (fsnotify, or any difference from
//     its table found by a later full listing) with a new revision.
//   - A receiver stamps what it applied with the batch's revision; a file
//     pulled from the peer keeps the peer's stamp.
//   - A copy the table does not know (the first listing after an upgrade, a
//     change made while the daemon was not watching, a backup edited by
//     hand) is adopted at the node's revision then, without a new one, and
//     marked adopted: it is no newer than anything the node had seen, and
//     nobody made it through the pair.
//
// When the two nodes differ on a file (planReconcile), the copy with the
// higher stamp wins; equal stamps on different content mean both changed
// it independently (a split brain): neither copy is pushed, and the status
// names the file until an operator changes it on the master. An adopted
// copy on the peer never wins (a hand edit on the backup is overwritten,
// as before stamps existed); an adopted copy here loses only to a peer's
// copy stamped above it. A file one node never knew of is taken from the
// other unless that copy is adopted.

// stamp is one entry of the table.
type stamp struct {
	SHA     string `json:"sha256"` // "" for a deletion
	Rev     uint64 `json:"rev"`
	Adopted bool   `json:"adopted,omitempty"`
}

// version is a copy's stamp as compared (live file or deletion alike).
type version struct {
	Rev     uint64
	Adopted bool
}

// stampTable is the persisted table; safe for concurrent use.
type stampTable struct {
	dir string
	mu  sync.Mutex
	m   map[string]stamp
}

const stampsFile = "stamps"

func loadStamps(stateDir string) (*stampTable, error) {
	t := &stampTable{dir: stateDir, m: map[string]stamp{}}
	b, err := os.ReadFile(filepath.Join(stateDir, stampsFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("read stamps: %w", err)
	}
	var f struct {
		Files map[string]stamp `json:"files"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		// A table that cannot be read is rebuilt by adoption: it orders
		// nothing wrongly, it only forgets which changes were edits.
		return t, fmt.Errorf("parse %s (starting a new table): %w", filepath.Join(stateDir, stampsFile), err)
	}
	if f.Files != nil {
		t.m = f.Files
	}
	return t, nil
}

// update applies changes (nil ones are skipped) and persists the table.
// The caller holds no lock.
func (t *stampTable) update(changes map[string]stamp) error {
	if len(changes) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, s := range changes {
		t.m[p] = s
	}
	return writeJSONAtomic(t.dir, stampsFile, struct {
		Files map[string]stamp `json:"files"`
	}{t.m})
}

func (t *stampTable) snapshot() map[string]stamp {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]stamp, len(t.m))
	for p, s := range t.m {
		out[p] = s
	}
	return out
}

// ErrRevisionExhausted means a revision cannot be raised any further: the
// next one would wrap to 0, below every revision a receiver has applied.
var ErrRevisionExhausted = errors.New("revision at 2^64-1: cannot go higher")

// nextRevision is the revision above own and every revision seen. Pure.
func nextRevision(own uint64, seen ...uint64) (uint64, error) {
	m := own
	for _, s := range seen {
		m = max(m, s)
	}
	if m == math.MaxUint64 {
		return 0, ErrRevisionExhausted
	}
	return m + 1, nil
}

// stampFiles gives each listed file its version from the table; a copy
// the table does not know, and a known live file missing from files when
// complete is set (a full listing), is adopted at rev adopt (changes to
// persist are returned). Deletions of the table are in vers too. Pure.
func stampFiles(table map[string]stamp, files map[string]FileState, complete bool, adopt uint64) (vers map[string]version, changes map[string]stamp) {
	vers = make(map[string]version, len(files))
	changes = map[string]stamp{}
	for p, f := range files {
		if s, ok := table[p]; ok && s.SHA == f.SHA256 {
			vers[p] = version{s.Rev, s.Adopted}
			continue
		}
		changes[p] = stamp{SHA: f.SHA256, Rev: adopt, Adopted: true}
		vers[p] = version{adopt, true}
	}
	for p, s := range table {
		if _, ok := files[p]; ok {
			continue
		}
		if s.SHA == "" {
			vers[p] = version{s.Rev, s.Adopted}
		} else if complete {
			changes[p] = stamp{Rev: adopt, Adopted: true}
			vers[p] = version{adopt, true}
		}
	}
	return vers, changes
}

// Tombstone is a deleted file in a manifest: the revision of the deletion.
type Tombstone struct {
	Path    string `json:"path"`
	Rev     uint64 `json:"rev"`
	Adopted bool   `json:"adopted,omitempty"`
}

// reconcilePlan is what a master does about each file the two nodes hold
// differently.
type reconcilePlan struct {
	Push      []string // ours is newer (or the peer keeps no stamps): send it (a put or a delete)
	Pull      []string // the peer's is newer: take it first
	Conflicts []string // both changed it independently: neither is sent
}

// planReconcile compares local and remote listings with the versions of
// their copies and deletions (lv, rv; a path missing there was never known
// to that node). A peer that keeps no stamps (an older release) gets
// everything that differs pushed, as before. Pure.
func planReconcile(local, remote map[string]FileState, lv, rv map[string]version, peerStamps, owners bool) reconcilePlan {
	var p reconcilePlan
	decide := func(path string) {
		l, lok := local[path]
		r, rok := remote[path]
		if lok && rok && sameState(l, r, owners) {
			return
		}
		ls, lknown := lv[path]
		rs, rknown := rv[path]
		switch {
		case !peerStamps:
			p.Push = append(p.Push, path)
		case lok && rok && l.SHA256 == r.SHA256:
			// Same content, other mode or owner: the master's attributes.
			p.Push = append(p.Push, path)
		case !rknown || rs.Adopted:
			// The peer never knew of the file, or its copy was not made
			// through the pair (a hand edit on the backup).
			p.Push = append(p.Push, path)
		case !lknown || rs.Rev > ls.Rev:
			p.Pull = append(p.Pull, path)
		case ls.Rev > rs.Rev || ls.Adopted:
			p.Push = append(p.Push, path)
		default:
			p.Conflicts = append(p.Conflicts, path)
		}
	}
	for path := range local {
		decide(path)
	}
	for path := range remote {
		if _, ok := local[path]; !ok {
			decide(path)
		}
	}
	slices.Sort(p.Push)
	slices.Sort(p.Pull)
	slices.Sort(p.Conflicts)
	return p
}
