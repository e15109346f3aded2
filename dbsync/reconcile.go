package dbsync

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
)

// Reconciliation: a master pushes only what it holds newer than the peer.
// Its full comparison (at each takeover, after a failed push, when the
// peer restarts, every AntiEntropyInterval) compares version stamps
// (stamps.go) file by file: what the peer holds newer is pulled first
// (POST /api/sync/pull), what this node holds newer is pushed, and a file
// both changed independently is left alone on both and reported
// (Status.Conflicts). When a pull fails nothing is pushed in that round.

// PathPull is the pull endpoint: the master asks the peer for its copies.
const PathPull = "/api/sync/pull"

// Pull is the body of POST /api/sync/pull: the wire paths wanted.
type Pull struct {
	Paths []string `json:"paths"`
}

// maxPullBody bounds a pull request: at most maxEntries paths of at most
// maxPathLen bytes would be far more; a real one names a few files.
const maxPullBody = 4 << 20

// ReasonPullPath is a pull answer entry that was not asked for, not what
// the peer's manifest announced, or twice in the answer.
const ReasonPullPath = "pull_unexpected_entry"

// stampEdits stamps the changes the master saw at paths (wire paths of
// files, present or gone) with one new revision above every revision held
// or seen (peerRev). force re-stamps a path even if its content is what
// the table holds (an operator touching a conflicting file chooses it).
func (n *Node) stampEdits(ctx context.Context, paths []string, force map[string]bool, peerRev uint64) error {
	table := n.stamps.snapshot()
	changes := map[string]stamp{}
	ids := newAccounts()
	for _, p := range paths {
		rp, err := resolveWirePath(n.cfg.Paths, p)
		if err != nil {
			continue
		}
		sha := ""
		st, err := n.src.read(ctx, p, rp.local(), false, ids)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			continue // unreadable now: pushPaths reports it and retries
		default:
			sha = st.SHA256
		}
		old, known := table[p]
		if (known && old.SHA == sha && !force[p]) || (!known && sha == "") {
			continue
		}
		changes[p] = stamp{SHA: sha}
	}
	return n.commitEdits(changes, peerRev)
}

// commitEdits gives changes one new revision and persists them.
func (n *Node) commitEdits(changes map[string]stamp, peerRev uint64) error {
	if len(changes) == 0 {
		return nil
	}
	rev, err := nextRevision(n.applier.revision().Revision, peerRev)
	if err != nil {
		return fmt.Errorf("stamp %d changed files: %w", len(changes), err)
	}
	if err := n.applier.bumpRevision(rev, ""); err != nil {
		return fmt.Errorf("persist revision: %w", err)
	}
	for p, s := range changes {
		s.Rev, s.Adopted = rev, false
		changes[p] = s
	}
	if err := n.stamps.update(changes); err != nil {
		return fmt.Errorf("persist stamps: %w", err)
	}
	n.stats.add("edits_stamped", uint64(len(changes)))
	return nil
}

// localStamps stamps a full local listing. The first listing after this
// node became master adopts copies its table does not know (they were made
// while it was not watching: no newer than anything it had seen); later
// ones stamp them as edits (a change whose event was lost).
func (n *Node) localStamps(local map[string]FileState, edits bool, peerRev uint64) (map[string]version, error) {
	own := n.applier.revision().Revision
	vers, changes := stampFiles(n.stamps.snapshot(), local, true, own)
	if edits && len(changes) > 0 {
		if err := n.commitEdits(changes, peerRev); err != nil {
			return nil, err
		}
		vers, _ = stampFiles(n.stamps.snapshot(), local, true, own)
		return vers, nil
	}
	if err := n.stamps.update(changes); err != nil {
		return nil, fmt.Errorf("persist stamps: %w", err)
	}
	return vers, nil
}

// servedStamps stamps the files this node serves in its manifest. A
// backup persists what it adopts; a master's unknown copies are its own
// changes not stamped yet, reported at its revision without fixing it.
func (n *Node) servedStamps(files []FileState) ([]FileState, []Tombstone, error) {
	m := manifestMap(files)
	vers, changes := stampFiles(n.stamps.snapshot(), m, true, n.applier.revision().Revision)
	if !n.master.Load() {
		if err := n.stamps.update(changes); err != nil {
			return nil, nil, err
		}
	}
	var tombs []Tombstone
	for p, v := range vers {
		if _, live := m[p]; !live {
			tombs = append(tombs, Tombstone{Path: p, Rev: v.Rev, Adopted: v.Adopted})
		}
	}
	for i := range files {
		v := vers[files[i].Path]
		files[i].Rev, files[i].Adopted = v.Rev, v.Adopted
	}
	slices.SortFunc(tombs, func(a, b Tombstone) int { return strings.Compare(a.Path, b.Path) })
	return files, tombs, nil
}

// stampApplied records what a receiver applied: each entry's resulting
// copy at the batch's revision (failed entries changed nothing).
func (n *Node) stampApplied(b *Batch, failed []PathFailure) {
	changes := make(map[string]stamp, len(b.Entries))
	for i := range b.Entries {
		e := &b.Entries[i]
		if slices.ContainsFunc(failed, func(f PathFailure) bool { return f.Path == e.Path }) {
			continue
		}
		s := stamp{Rev: b.Revision}
		if e.Op != OpDelete {
			s.SHA = hex.EncodeToString(e.SHA256[:])
		}
		changes[e.Path] = s
	}
	if err := n.stamps.update(changes); err != nil {
		// The files are in place; a copy the table does not know is
		// adopted at the next listing.
		n.log.Error("dbsync: cannot record version stamps of an applied batch", "revision", b.Revision, "err", err)
		n.stats.add("stamp_errors", 1)
	}
}

// remoteStamps reads the versions of a peer's manifest.
func remoteStamps(m *Manifest) map[string]version {
	vers := make(map[string]version, len(m.Files)+len(m.Deleted))
	for _, f := range m.Files {
		vers[f.Path] = version{f.Rev, f.Adopted}
	}
	for _, t := range m.Deleted {
		vers[t.Path] = version{t.Rev, t.Adopted}
	}
	return vers
}

// pull fetches the peer's copies of paths (its manifest said remote, with
// stamps rrev/rdead), applies them as one local batch each chunk and keeps
// the peer's stamps for them.
func (n *Node) pull(ctx context.Context, st *masterState, paths []string, remote map[string]FileState, rv map[string]version) error {
	for len(paths) > 0 {
		var chunk []string
		size := int64(0)
		for len(paths) > 0 && len(chunk) < maxEntries {
			s := remote[paths[0]].Size
			if len(chunk) > 0 && size+s > int64(n.cfg.MaxBatchBytes) {
				break
			}
			chunk, paths, size = append(chunk, paths[0]), paths[1:], size+s
		}
		if err := n.pullChunk(ctx, st, chunk, remote, rv); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) pullChunk(ctx context.Context, st *masterState, chunk []string, remote map[string]FileState, rv map[string]version) error {
	req, err := json.Marshal(Pull{Paths: chunk})
	if err != nil {
		return err
	}
	body, err := n.exchange(ctx, http.MethodPost, PathPull, req)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	b, err := ParseBatch(body, nil)
	if err != nil {
		n.rejected.add(ReasonDecode, 1)
		return fmt.Errorf("pull answer: %w", err)
	}
	kept, refused := selectPulled(b.Entries, chunk, remote)
	if refused > 0 {
		// Not asked for, twice, or changed since the manifest: the next
		// comparison sees the peer's current copy.
		n.rejected.add(ReasonPullPath, uint64(refused))
		st.needFull = true
	}
	changes := map[string]stamp{}
	for _, e := range kept {
		if _, err := resolveWirePath(n.cfg.Paths, e.Path); err != nil {
			n.rejected.add(ReasonPath, 1)
			return fmt.Errorf("pull answer entry %q: %w", e.Path, err)
		}
		s := stamp{Rev: rv[e.Path].Rev} // the peer's stamp stays with its copy
		if e.Op == OpPut {
			s.SHA = remote[e.Path].SHA256
		}
		changes[e.Path] = s
	}
	if len(kept) == 0 {
		return nil
	}
	rev, err := nextRevision(n.applier.revision().Revision, st.peerRev, b.Revision)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	lb := Batch{Version: b.Version, Revision: rev, Entries: kept}
	res, err := n.applier.apply(lb, BatchDigest(lb))
	if err != nil {
		return fmt.Errorf("apply pulled files: %w", err)
	}
	for _, f := range res.Failed {
		delete(changes, f.Path)
	}
	if err := n.stamps.update(changes); err != nil {
		return fmt.Errorf("persist stamps: %w", err)
	}
	for p := range changes {
		if r, ok := remote[p]; ok {
			st.shipped[p] = r
		} else {
			delete(st.shipped, p)
		}
	}
	n.stats.add("pulled_files", uint64(len(changes)))
	n.log.Info("dbsync: took the peer's newer copies before pushing", "files", len(changes), "revision", rev)
	if len(res.Failed) > 0 {
		return fmt.Errorf("pulled %d files, %d not applied, e.g. %s: %s", len(changes), len(res.Failed), res.Failed[0].Path, res.Failed[0].Reason)
	}
	return nil
}

// parsePull decodes a pull request against the replicated roots; on error
// it names the rejection reason and HTTP status. Pure.
func parsePull(body []byte, roots []Path) (req Pull, status int, reason string, err error) {
	if len(body) > maxPullBody {
		return req, http.StatusRequestEntityTooLarge, ReasonTooLarge, fmt.Errorf("pull body over %d bytes", maxPullBody)
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return Pull{}, http.StatusBadRequest, ReasonDecode, fmt.Errorf("pull request: %w", err)
	}
	if len(req.Paths) == 0 || len(req.Paths) > maxEntries {
		return Pull{}, http.StatusBadRequest, ReasonDecode, fmt.Errorf("pull request names %d paths, want 1..%d", len(req.Paths), maxEntries)
	}
	seen := make(map[string]bool, len(req.Paths))
	for _, p := range req.Paths {
		if seen[p] {
			return Pull{}, http.StatusBadRequest, ReasonPath, fmt.Errorf("pull path %q named twice", p)
		}
		if _, err := resolveWirePath(roots, p); err != nil {
			return Pull{}, http.StatusBadRequest, ReasonPath, fmt.Errorf("pull path %q: %w", p, err)
		}
		seen[p] = true
	}
	return req, http.StatusOK, "", nil
}

// selectPulled keeps the entries of a pull answer that were asked for
// (chunk), each once, and are what the peer's manifest (remote) announced:
// a put with the announced SHA-256 for a file it listed, a delete for one
// it did not. It counts the others. entries is reused. Pure.
func selectPulled(entries []Entry, chunk []string, remote map[string]FileState) (kept []Entry, refused int) {
	want := make(map[string]bool, len(chunk))
	for _, p := range chunk {
		want[p] = true
	}
	kept = entries[:0]
	for _, e := range entries {
		r, live := remote[e.Path]
		ok := want[e.Path]
		switch {
		case !ok:
		case e.Op == OpPut:
			ok = live && hex.EncodeToString(e.SHA256[:]) == r.SHA256
		case e.Op == OpDelete:
			ok = !live
		default:
			ok = false
		}
		if !ok {
			refused++
			continue
		}
		delete(want, e.Path)
		kept = append(kept, e)
	}
	return kept, refused
}

// handlePull answers POST /api/sync/pull with a batch (the push body
// format) of this node's copies of the paths asked for: a put for a file
// it holds, a delete for one it does not. Its revision is this node's.
// Paths that cannot be read now are left out (the master asks again).
func (n *Node) handlePull(w http.ResponseWriter, r *http.Request) {
	// One byte over the limit is enough to tell "too large".
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPullBody+1))
	if err != nil {
		n.reject(w, r, http.StatusBadRequest, ReasonTruncated, err)
		return
	}
	req, status, reason, err := parsePull(body, n.cfg.Paths)
	if err != nil {
		n.reject(w, r, status, reason, err)
		return
	}
	ids := newAccounts()
	var entries []Entry
	size := int64(batchHeaderLen)
	for _, p := range req.Paths {
		e, _, ok, err := n.src.entry(r.Context(), p, nil, true, ids)
		if err != nil {
			n.log.Warn("dbsync: pull: cannot read", "path", p, "err", err)
			continue
		}
		if !ok {
			e = Entry{Op: OpDelete, Path: p}
		}
		el := int64(encodedEntryLen(&e, BatchVersion))
		if size+el > n.cfg.MaxBodyBytes {
			break // the master asks again for the rest
		}
		entries = append(entries, e)
		size += el
	}
	if len(entries) == 0 {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: http.StatusText(http.StatusServiceUnavailable)})
		return
	}
	out, err := AppendBatch(nil, Batch{Version: BatchVersion, Revision: n.applier.revision().Revision, Entries: entries})
	if err != nil {
		n.log.Error("dbsync: pull answer", "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: http.StatusText(http.StatusInternalServerError)})
		return
	}
	n.stats.add("pulls_served", 1)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// noteConflicts records the files both nodes changed independently (from
// a full comparison) for the status, and says so when the set changes.
func (n *Node) noteConflicts(st *masterState, paths []string) {
	before := len(st.conflicts)
	st.conflicts = make(map[string]bool, len(paths))
	for _, p := range paths {
		st.conflicts[p] = true
	}
	n.mu.Lock()
	n.st.conflicts = slices.Clone(paths)
	n.mu.Unlock()
	switch {
	case len(paths) > 0:
		n.stats.add("reconcile_conflicts", uint64(len(paths)))
		n.log.Error("dbsync: both nodes changed these files since they last agreed (split brain?); neither copy is pushed: change the file on the master to choose its version",
			"files", len(paths), "paths", strings.Join(paths[:min(len(paths), 10)], ", "))
	case before > 0:
		n.log.Info("dbsync: no conflicting files left")
	}
}
