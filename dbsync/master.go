package dbsync

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// backoff is the delay before retry number attempt (1-based): doubling from
// min, capped at max. Pure.
func backoff(attempt int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// debounceDelay is how long to wait after an event before pushing: a quiet
// period of debounce, but never past firstDirty+maxDelay, so a steady stream
// of writes cannot starve the push. Pure.
func debounceDelay(firstDirty, now time.Time, debounce, maxDelay time.Duration) time.Duration {
	d := debounce
	if wait := firstDirty.Add(maxDelay).Sub(now); wait < d {
		d = max(wait, 0)
	}
	return d
}

// errConflict means the peer's state is not what we assumed; a full
// anti-entropy pass follows.
var errConflict = errors.New("peer state conflict")

// masterState is the master loop's knowledge of the peer.
type masterState struct {
	shipped    map[string]FileState // what the peer holds; nil = unknown
	dirty      map[string]struct{}  // wire paths changed since the last push
	needFull   bool
	peerBoot   string
	peerRev    uint64
	syncedBoot string // the peer incarnation last told it is in sync
	// peerVersion is the push body version the peer reads (from its
	// manifest); 0 until the first full comparison.
	peerVersion uint8
	firstDirty  time.Time
	// listed: a full listing was stamped since this node became master
	// (the first one adopts unknown copies, later ones stamp them as
	// edits: localStamps).
	listed bool
	// conflicts are the files both nodes changed independently, from the
	// last full comparison: an event on one of them is the operator's
	// choice of this node's copy.
	conflicts map[string]bool
}

// runMaster watches the roots and pushes changes until ctx ends.
func (n *Node) runMaster(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("fsnotify: %w", err)
	}
	defer w.Close()
	for i := range n.cfg.Paths {
		p := &n.cfg.Paths[i]
		if p.Dir {
			n.watchTree(w, p.Local)
		}
		// A file root is seen from its directory. A directory root is
		// watched from its parent too: a root that does not exist yet, or
		// that is removed and made again (a package reinstall), has no
		// watch of its own until its creation is seen there.
		if err := w.Add(filepath.Dir(p.Local)); err != nil {
			n.log.Warn("dbsync: watch", "path", p.Local, "err", err)
		}
	}
	st := &masterState{dirty: map[string]struct{}{}, needFull: true}
	defer n.setPending(0, time.Time{})
	maxDelay := 10 * n.cfg.Debounce
	trigger := time.NewTimer(0)
	defer trigger.Stop()
	probe := time.NewTicker(n.cfg.ProbeInterval)
	defer probe.Stop()
	full := time.NewTicker(n.cfg.AntiEntropyInterval)
	defer full.Stop()
	failures := 0
	var lastErr error
	kick := func(d time.Duration) {
		if failures == 0 { // during backoff the timer holds the retry time
			trigger.Reset(d)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("fsnotify: event channel closed")
			}
			if !n.noteEvent(w, st, ev) {
				continue
			}
			n.setPending(len(st.dirty), st.firstDirty)
			kick(debounceDelay(st.firstDirty, time.Now(), n.cfg.Debounce, maxDelay))
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("fsnotify: error channel closed")
			}
			// Typically a queue overflow: events were lost, compare everything.
			n.log.Warn("dbsync: watcher", "err", err)
			n.stats.add("watch_errors", 1)
			st.needFull = true
			kick(n.cfg.Debounce)
		case <-probe.C:
			h, err := n.fetchHello(ctx)
			if err != nil {
				continue
			}
			if failures > 0 && h.Role != "master" && !errors.Is(lastErr, errReadFailed) {
				// The peer is back: catch up now rather than at the end of
				// a long backoff.
				failures = 0
				st.needFull = true
				trigger.Reset(0)
				continue
			}
			if h.BootID != st.peerBoot || h.Revision != st.peerRev {
				// The peer restarted or changed behind our back.
				st.needFull = true
				kick(0)
			}
		case <-full.C:
			st.needFull = true
			kick(0)
		case <-trigger.C:
			if !st.needFull && len(st.dirty) == 0 {
				failures = 0
				continue
			}
			if err := n.syncOnce(ctx, st); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				lastErr = err
				failures++
				if !errors.Is(err, errReadFailed) {
					st.needFull = true
				}
				d := backoff(failures, n.cfg.RetryMin, n.cfg.RetryMax)
				n.stats.add("sync_errors", 1)
				n.setError(err)
				n.log.Warn("dbsync: sync failed; retrying", "err", err, "attempt", failures, "in", d)
				trigger.Reset(d)
				continue
			}
			failures, lastErr = 0, nil
			n.setError(nil)
			if len(st.dirty) > 0 || st.needFull { // changes arrived meanwhile
				kick(n.cfg.Debounce)
			}
		}
	}
}

// watchTree adds dir and every directory below it to w.
func (n *Node) watchTree(w *fsnotify.Watcher, dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if err := w.Add(p); err != nil {
				n.log.Warn("dbsync: watch", "path", p, "err", err)
			}
		}
		return nil
	})
}

// localToWire maps a local path to its wire path; ok=false if outside the set.
func localToWire(roots []Path, local string) (string, bool) {
	for i := range roots {
		r := &roots[i]
		if !r.Dir {
			if local == r.Local {
				return r.Name, true
			}
			continue
		}
		if rel, ok := strings.CutPrefix(local, r.Local+"/"); ok && rel != "" {
			return r.Name + "/" + filepath.ToSlash(rel), true
		}
	}
	return "", false
}

// noteEvent records a filesystem event; it reports whether anything became
// dirty.
func (n *Node) noteEvent(w *fsnotify.Watcher, st *masterState, ev fsnotify.Event) bool {
	name := ev.Name
	base := filepath.Base(name)
	if strings.HasPrefix(base, tempPrefix) || strings.HasSuffix(base, "-shm") {
		return false
	}
	// A commit in WAL or rollback mode touches only the sidecar: the
	// database itself is what changed.
	for _, s := range []string{"-wal", "-journal"} {
		if t, ok := strings.CutSuffix(name, s); ok {
			name = t
			break
		}
	}
	if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Create) {
		// Attribute-only change: a regular file's mode is replicated, a
		// vanished path or a directory's attributes are not.
		if fi, err := os.Lstat(name); err != nil || fi.IsDir() {
			return false
		}
	}
	if i := slices.IndexFunc(n.cfg.Paths, func(r Path) bool { return r.Dir && r.Local == name }); i >= 0 {
		// A directory root itself appeared or went away: watch what is
		// there now and compare everything (its wire name alone names no
		// file).
		if ev.Has(fsnotify.Create) {
			n.watchTree(w, name)
		}
		if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Remove) && !ev.Has(fsnotify.Rename) {
			return false
		}
		st.needFull = true
		if len(st.dirty) == 0 {
			st.firstDirty = time.Now()
		}
		return true
	}
	wire, ok := localToWire(n.cfg.Paths, name)
	if !ok {
		return false
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
			n.watchTree(w, name)
		}
	}
	if excludedWire(wire, n.cfg.Exclude) {
		return false
	}
	if len(st.dirty) == 0 {
		st.firstDirty = time.Now()
	}
	st.dirty[wire] = struct{}{}
	return true
}

// expand turns dirty wire paths (files or directories, present or gone) into
// the file paths to compare.
func (n *Node) expand(st *masterState, dirty []string) []string {
	set := map[string]struct{}{}
	for _, w := range dirty {
		rp, err := resolveWirePath(n.cfg.Paths, w)
		if err != nil {
			continue
		}
		local := rp.local()
		fi, err := os.Lstat(local)
		if err == nil && fi.IsDir() && rp.root.Dir {
			filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if pw, ok := localToWire(n.cfg.Paths, p); ok && !excludedWire(pw, n.cfg.Exclude) {
						set[pw] = struct{}{}
					}
				}
				return nil
			})
		} else {
			set[w] = struct{}{}
		}
		// Whatever the peer has below a vanished or replaced directory.
		for p := range st.shipped {
			if strings.HasPrefix(p, w+"/") {
				set[p] = struct{}{}
			}
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// syncOnce brings the peer up to date: a full manifest comparison when the
// peer's state is unknown, else the dirty paths only.
func (n *Node) syncOnce(ctx context.Context, st *masterState) error {
	var paths []string
	comparedBoot := "" // set by a full comparison: whom to tell it is in sync
	if len(st.dirty) > 0 {
		// Stamp what changed here before anything else: the stamp must
		// exist even while the peer cannot be reached (stamps.go).
		dirty := make([]string, 0, len(st.dirty))
		for p := range st.dirty {
			dirty = append(dirty, p)
		}
		if err := n.stampEdits(ctx, n.expand(st, dirty), st.conflicts, st.peerRev); err != nil {
			return err
		}
	}
	if st.needFull || st.shipped == nil {
		// The local listing first, peer or not: the first one after this
		// node became master adopts what it holds then, and every later
		// one stamps a change fsnotify did not report (stamps.go).
		local, err := n.src.manifest(ctx)
		if err != nil {
			return fmt.Errorf("local manifest: %w", err)
		}
		lv, err := n.localStamps(local, st.listed, st.peerRev)
		if err != nil {
			return err
		}
		st.listed = true
		h, err := n.fetchHello(ctx)
		if err != nil {
			return err
		}
		body, err := n.exchange(ctx, http.MethodGet, PathManifest, nil)
		if err != nil {
			return fmt.Errorf("fetch manifest: %w", err)
		}
		m, err := ParseManifest(body)
		if err != nil {
			n.rejected.add(answerReason(err), 1)
			return fmt.Errorf("fetch manifest: %w", err)
		}
		peerRev := max(m.Revision, h.Revision)
		remote := manifestMap(m.Files)
		rv := remoteStamps(&m)
		st.peerVersion = peerBatchVersion(m.BatchVersion)
		plan := planReconcile(local, remote, lv, rv, m.Stamps, st.owners())
		st.shipped = remote
		st.peerBoot = h.BootID
		comparedBoot = m.BootID
		st.peerRev = peerRev
		clear(st.dirty)
		n.stats.add("anti_entropy_runs", 1)
		if len(plan.Pull) > 0 {
			// The peer holds newer copies: take them before pushing
			// anything, and push nothing if that fails.
			n.log.Info("dbsync: the peer holds newer copies; taking them before pushing", "files", len(plan.Pull), "peer_revision", peerRev, "first", plan.Pull[0])
			if err := n.pull(ctx, st, plan.Pull, remote, rv); err != nil {
				n.stats.add("pushes_refused_peer_newer", 1)
				return fmt.Errorf("%w: the peer (revision %d) holds newer copies of %d files that could not be taken: %w", errPeerNewer, peerRev, len(plan.Pull), err)
			}
		}
		n.noteConflicts(st, plan.Conflicts)
		paths = plan.Push
		if len(paths) > 0 {
			n.stats.add("anti_entropy_repairs", uint64(len(paths)))
			n.log.Info("dbsync: anti-entropy", "differing", len(paths), "peer_revision", st.peerRev)
		}
		st.needFull = false
	} else {
		dirty := make([]string, 0, len(st.dirty))
		for p := range st.dirty {
			dirty = append(dirty, p)
		}
		clear(st.dirty)
		paths = n.expand(st, dirty)
	}
	if err := n.pushPaths(ctx, st, paths); err != nil {
		return err
	}
	if comparedBoot != "" && comparedBoot != st.syncedBoot {
		// Every difference is on the peer: a returning node may now preempt
		// without pushing stale content back (ready.go). Conflicting files
		// are no reason to hold it: neither node overwrites them, whoever
		// is master.
		if err := n.notifySynced(ctx, comparedBoot); err != nil {
			return err
		}
		st.syncedBoot = comparedBoot
	}
	n.mu.Lock()
	n.st.lastSync = time.Now()
	n.mu.Unlock()
	n.setPending(len(st.dirty), st.firstDirty)
	return nil
}

// version is the push body version for this peer.
func (st *masterState) version() uint8 { return peerBatchVersion(st.peerVersion) }

// owners reports whether the peer replicates ownership (batch version 2).
func (st *masterState) owners() bool { return st.version() >= 2 }

// pushPaths sends entries for paths in batches of at most MaxBatchBytes.
func (n *Node) pushPaths(ctx context.Context, st *masterState, paths []string) error {
	ids := newAccounts()
	var batch []Entry
	var nexts []*FileState
	var failed []string
	var readErr error
	size := batchHeaderLen
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := n.push(ctx, st, batch); err != nil {
			return err
		}
		for i, e := range batch {
			if nexts[i] == nil {
				delete(st.shipped, e.Path)
			} else {
				st.shipped[e.Path] = *nexts[i]
			}
		}
		batch, nexts, size = batch[:0], nexts[:0], batchHeaderLen
		return nil
	}
	for _, p := range paths {
		var peer *FileState
		if s, ok := st.shipped[p]; ok {
			peer = &s
		}
		e, next, ok, err := n.src.entry(ctx, p, peer, st.owners(), ids)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			// One unreadable file (e.g. a database locked for seconds) must
			// not block the others; it is retried with backoff.
			n.stats.add("read_errors", 1)
			failed = append(failed, p)
			readErr = err
			continue
		}
		if !ok {
			continue
		}
		el := encodedEntryLen(&e, st.version())
		if int64(el+batchHeaderLen) > n.cfg.MaxBodyBytes {
			n.stats.add("too_large", 1)
			n.log.Error("dbsync: file larger than the push limit; not replicated", "path", p, "bytes", el, "limit", n.cfg.MaxBodyBytes)
			continue
		}
		if len(batch) > 0 && (size+el > n.cfg.MaxBatchBytes || len(batch) == maxEntries) {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, e)
		nexts = append(nexts, next)
		size += el
	}
	if err := flush(); err != nil {
		return err
	}
	if len(failed) > 0 {
		for _, p := range failed {
			if len(st.dirty) == 0 {
				st.firstDirty = time.Now()
			}
			st.dirty[p] = struct{}{}
		}
		return fmt.Errorf("%w: %d paths, e.g. %s: %w", errReadFailed, len(failed), failed[0], readErr)
	}
	return nil
}

// errPeerNewer: the peer holds newer copies that could not be taken; this
// node pushes nothing until it has them.
var errPeerNewer = errors.New("refusing to push")

// errReadFailed means some local files could not be read; they stay dirty
// and are retried with backoff, without a full comparison.
var errReadFailed = errors.New("cannot read local files")

// push sends one batch with the next revision. A transport error is retried
// with the same body: the peer treats a repeat as a no-op.
func (n *Node) push(ctx context.Context, st *masterState, entries []Entry) error {
	rev, err := nextRevision(n.applier.revision().Revision, st.peerRev)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	batch := Batch{Version: st.version(), Revision: rev, Entries: entries}
	body, err := AppendBatch(nil, batch)
	if err != nil {
		return err
	}
	var res ApplyResult
	for attempt := 1; ; attempt++ {
		_, err = n.do(ctx, http.MethodPost, PathPush, body, &res)
		var se *statusError
		if err == nil || errors.As(err, &se) || attempt == 3 || ctx.Err() != nil {
			break
		}
		time.Sleep(n.cfg.RetryMin)
	}
	if err != nil {
		var se *statusError
		if errors.As(err, &se) && se.status == http.StatusConflict {
			st.peerRev = max(st.peerRev, se.revision)
			return fmt.Errorf("push revision %d: %w: %w", rev, errConflict, err)
		}
		return fmt.Errorf("push revision %d: %w", rev, err)
	}
	digest := BatchDigest(batch)
	if err := n.applier.bumpRevision(rev, hex.EncodeToString(digest[:])); err != nil {
		return fmt.Errorf("persist revision: %w", err)
	}
	st.peerRev = rev
	var payload int64
	deltas := map[string]uint64{"pushes_sent": 1, "wire_bytes_sent": uint64(len(body))}
	for i := range entries {
		payload += int64(len(entries[i].Data))
		deltas["entries_sent_"+entries[i].Op.String()]++
	}
	deltas["bytes_sent"] = uint64(payload)
	n.stats.addAll(deltas)
	n.log.Debug("dbsync: pushed", "revision", rev, "entries", len(entries), "bytes", payload)
	return nil
}

type statusError struct {
	status   int
	revision uint64
}

func (e *statusError) Error() string {
	return fmt.Sprintf("peer answered %d %s", e.status, http.StatusText(e.status))
}

// do performs one authenticated request to the peer and decodes a JSON
// answer into out.
func (n *Node) do(ctx context.Context, method, path string, body []byte, out any) (int, error) {
	status, rb, err := n.request(ctx, method, path, body)
	if err != nil {
		return status, err
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return status, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return status, nil
}

// exchange performs one authenticated request and returns the answer's
// body (a 200 answer; anything else is a *statusError).
func (n *Node) exchange(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	_, rb, err := n.request(ctx, method, path, body)
	return rb, err
}

func (n *Node) request(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.link.URL(path), rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := n.link.Do(req)
	if err != nil {
		n.peerSeen(false, "", 0)
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, n.cfg.MaxBodyBytes))
	if err != nil {
		n.peerSeen(false, "", 0)
		return resp.StatusCode, nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	n.peerSeen(true, "", 0)
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		json.Unmarshal(rb, &eb)
		return resp.StatusCode, nil, &statusError{status: resp.StatusCode, revision: eb.Revision}
	}
	return resp.StatusCode, rb, nil
}

func (n *Node) fetchHello(ctx context.Context) (Hello, error) {
	sent := n.cfg.Now()
	body, err := n.exchange(ctx, http.MethodGet, PathHello, nil)
	if err != nil {
		return Hello{}, fmt.Errorf("hello: %w", err)
	}
	h, err := ParseHello(body)
	if err != nil {
		n.rejected.add(answerReason(err), 1)
		return Hello{}, fmt.Errorf("hello: %w", err)
	}
	n.noteClock(sent, n.cfg.Now(), h.Time)
	n.peerSeen(true, h.Role, h.Revision)
	return h, nil
}

func (n *Node) peerSeen(ok bool, role string, rev uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.st.reachable = ok
	if ok {
		n.st.lastContact = time.Now()
	}
	if role != "" {
		n.st.role = role
		n.st.revision = rev
	}
}

func (n *Node) setPending(count int, since time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.st.pending = count
	n.st.pendingSince = since
}

func (n *Node) setError(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		n.st.lastError = ""
	} else {
		n.st.lastError = err.Error()
	}
}
