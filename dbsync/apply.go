package dbsync

import (
	"github.com/muros/muros-had/atomicfile"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Apply errors. They map to HTTP statuses in the handler.
var (
	ErrStaleRevision  = errors.New("revision not newer than the applied one")
	ErrChecksum       = errors.New("content does not match its sha256")
	ErrPrefexMismatch = errors.New("append prefix does not match the local file")
)

// step names passed to the crash hook, in order.
const (
	stepStaged    = "staged"    // all files staged and fsynced, no journal yet
	stepJournaled = "journaled" // journal durable: the batch will complete
	stepOp        = "op"        // after each rename/delete (called once per op)
	stepRevision  = "revision"  // revision durable, journal still present
)

// revisionState is persisted in <state>/revision.
type revisionState struct {
	Revision uint64 `json:"revision"`
	Digest   string `json:"digest"` // hex BatchDigest of the batch that made it
}

// journal is persisted in <state>/journal between staging and completion.
type journal struct {
	Revision uint64      `json:"revision"`
	Digest   string      `json:"digest"`
	Ops      []journalOp `json:"ops"`
}

type journalOp struct {
	Op     Op     `json:"op"`
	Wire   string `json:"path"`  // wire path, re-resolved on recovery
	Stage  string `json:"stage"` // staged file name relative to the root, put/append only
	SQLite bool   `json:"sqlite,omitempty"`
}

// ApplyResult tells the pusher what happened.
type ApplyResult struct {
	Revision uint64 `json:"revision"`
	Applied  int    `json:"applied"` // entries applied
	Bytes    int64  `json:"bytes"`   // payload bytes received (data of put and append)
	Noop     bool   `json:"noop"`    // retried batch already applied
	// OwnerErrors counts files installed with content and mode but not the
	// master's owner (chown refused: the daemon lacks CAP_CHOWN).
	OwnerErrors int `json:"owner_errors,omitempty"`
	// OwnerError describes the first of them, for the receiver's log.
	OwnerError string `json:"-"`
	// Failed lists the entries this node could not apply for a reason of
	// its own that a retry would meet again (a symlink leaving the root,
	// an immutable file, a mount point): the rest of the batch applied.
	Failed []PathFailure `json:"failed,omitempty"`
}

// PathFailure is one entry that could not be applied.
type PathFailure struct {
	Path   string `json:"path"` // wire path
	Op     string `json:"op"`   // put, append, delete
	Reason string `json:"reason"`
	Error  string `json:"-"` // local detail, for this node's log and status
}

// Reasons a path fails to apply (PathFailure.Reason; metric labels).
const (
	FailEscapes    = "path_escapes_root" // through a symlink that leaves the root
	FailPermission = "not_permitted"     // EPERM, EACCES: immutable or append-only file, permissions
	FailBusy       = "busy"              // EBUSY: a mount point
	FailReadOnly   = "read_only"         // EROFS
	FailNotDir     = "not_directory"     // ENOTDIR, EISDIR, ENOTEMPTY: a type the batch does not expect
	FailResolve    = "not_replicated"    // a journaled path no longer under a configured root
	FailOther      = "other"
)

// applier writes batches into the replicated roots atomically. It is the
// only writer of files on a backup.
type applier struct {
	roots    []Path
	stateDir string
	cache    *hashCache
	// crash, when set, is called at each step; a non-nil error stops the
	// apply right there, leaving disk as a process kill would.
	crash func(step string) error

	mu  sync.Mutex
	rev revisionState
}

func newApplier(roots []Path, stateDir string, cache *hashCache) (*applier, error) {
	a := &applier{roots: roots, stateDir: stateDir, cache: cache}
	b, err := os.ReadFile(filepath.Join(stateDir, "revision"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read revision: %w", err)
	default:
		if err := json.Unmarshal(b, &a.rev); err != nil {
			return nil, fmt.Errorf("parse %s: %w", filepath.Join(stateDir, "revision"), err)
		}
	}
	return a, nil
}

func (a *applier) revision() revisionState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rev
}

// bumpRevision records a revision produced locally (as master) so it stays
// monotonic across role changes and restarts.
func (a *applier) bumpRevision(rev uint64, digest string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rev <= a.rev.Revision {
		return nil
	}
	st := revisionState{Revision: rev, Digest: digest}
	if err := writeJSONAtomic(a.stateDir, "revision", st); err != nil {
		return err
	}
	a.rev = st
	return nil
}

// rootFor opens the os.Root that confines writes for r and returns the name
// of the target inside it.
func rootFor(r resolved) (*os.Root, string, error) {
	dir, name := r.root.Local, r.rel
	if !r.root.Dir {
		dir, name = filepath.Dir(r.root.Local), filepath.Base(r.root.Local)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", fmt.Errorf("create root %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, "", fmt.Errorf("open root %s: %w", dir, err)
	}
	return root, filepath.FromSlash(name), nil
}

// apply stages, journals and installs b. digest (BatchDigest) identifies
// the batch so a retry is recognised.
func (a *applier) apply(b Batch, digest [32]byte) (ApplyResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// A journal pending here is one whose install met a systemic error
	// (see finish) in this process: complete it first.
	if _, _, err := a.finishPendingJournal(); err != nil {
		return ApplyResult{Revision: a.rev.Revision}, err
	}
	if err := checkBatchPaths(&b); err != nil {
		return ApplyResult{Revision: a.rev.Revision}, err
	}
	dhex := hex.EncodeToString(digest[:])
	if b.Revision == a.rev.Revision && dhex == a.rev.Digest {
		return ApplyResult{Revision: a.rev.Revision, Noop: true}, nil
	}
	if b.Revision <= a.rev.Revision {
		return ApplyResult{Revision: a.rev.Revision}, fmt.Errorf("%w: got %d, have %d", ErrStaleRevision, b.Revision, a.rev.Revision)
	}
	res := ApplyResult{Revision: b.Revision, Applied: len(b.Entries)}
	j := journal{Revision: b.Revision, Digest: dhex}
	roots := map[string]*os.Root{}
	defer func() {
		for _, r := range roots {
			r.Close()
		}
	}()
	var staged []struct {
		root *os.Root
		name string
	}
	// made are the directories staging created, parents first: a refused
	// batch leaves the disk as it found it.
	var made []struct {
		root *os.Root
		name string
	}
	unmake := func(from int) {
		for i := len(made) - 1; i >= from; i-- {
			made[i].root.Remove(made[i].name) // fails, harmlessly, once not empty
		}
		made = made[:from]
	}
	fail := func(err error) (ApplyResult, error) {
		for _, s := range staged {
			s.root.Remove(s.name)
		}
		unmake(0)
		return ApplyResult{Revision: a.rev.Revision}, err
	}
	deleted := map[string]bool{}
	for i := range b.Entries {
		if b.Entries[i].Op == OpDelete {
			deleted[b.Entries[i].Path] = true
		}
	}
	var ids *accounts
	if b.wireVersion() >= 2 {
		ids = newAccounts()
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		rp, err := resolveWirePath(a.roots, e.Path)
		if err != nil {
			return fail(fmt.Errorf("entry %d %q: %w", i, e.Path, err))
		}
		// An error of this path alone (not a protocol error, not a full
		// disk) skips the entry: retried, it would fail again and hold
		// back every later change.
		skip := func(err error) bool {
			reason, systemic := failureReason(err)
			if systemic || errors.Is(err, ErrChecksum) || errors.Is(err, ErrPrefexMismatch) {
				return false
			}
			res.Failed = append(res.Failed, PathFailure{Path: e.Path, Op: e.Op.String(), Reason: reason, Error: err.Error()})
			res.Applied--
			return true
		}
		root, ok := roots[rp.root.Name]
		var name string
		if !ok {
			root, name, err = rootFor(rp)
			if err != nil {
				if skip(err) {
					continue
				}
				return fail(err)
			}
			roots[rp.root.Name] = root
		} else {
			_, name = rootName(rp)
		}
		op := journalOp{Op: e.Op, Wire: e.Path, SQLite: e.Flags&FlagSQLite != 0}
		if e.Op != OpDelete {
			base := fmt.Sprintf("%sstage-%d-%d", tempPrefix, b.Revision, i)
			op.Stage = filepath.Join(filepath.Dir(name), base)
			mkParents := true
			// Only a directory root has parents inside it: its wire
			// paths are the root's name and the path in it.
			if blocker, ok := blockingFile(root, name); ok && deleted[rp.root.Name+"/"+filepath.ToSlash(blocker)] {
				// A file on the master became a directory: the file is in
				// the way until this batch's delete of it (finish deletes
				// first, then makes the parents and renames).
				op.Stage, mkParents = base, false
			}
			mark := len(made)
			if mkParents {
				for _, d := range missingDirs(root, filepath.Dir(name)) {
					made = append(made, struct {
						root *os.Root
						name string
					}{root, d})
				}
			}
			ownerErr, err := stage(root, name, op.Stage, e, ids, mkParents)
			if err != nil {
				root.Remove(op.Stage)
				unmake(mark)
				if err := fmt.Errorf("entry %d %q: %w", i, e.Path, err); !skip(err) {
					return fail(err)
				}
				continue
			}
			if ownerErr != nil {
				res.OwnerErrors++
				if res.OwnerError == "" {
					res.OwnerError = fmt.Sprintf("entry %d %q: %v", i, e.Path, ownerErr)
				}
			}
			staged = append(staged, struct {
				root *os.Root
				name string
			}{root, op.Stage})
			res.Bytes += int64(len(e.Data))
		}
		j.Ops = append(j.Ops, op)
	}
	// Make the staged files' directory entries (and any directory just
	// created for them) durable before the commit point: recovery reads a
	// missing staged file as "already renamed".
	synced := map[string]bool{}
	for _, s := range staged {
		for d := filepath.Dir(s.name); ; d = filepath.Dir(d) {
			key := s.root.Name() + "\x00" + d
			if !synced[key] {
				synced[key] = true
				if err := syncDir(s.root, d); err != nil {
					// A path's own failure here (its directory is a
					// mount point of another filesystem?) is met again
					// at install, where it is charged to the path.
					if _, systemic := failureReason(err); systemic {
						return fail(err)
					}
				}
			}
			if d == "." || d == "/" {
				break
			}
		}
	}
	if err := a.step(stepStaged); err != nil {
		return ApplyResult{}, err
	}
	if err := writeJSONAtomic(a.stateDir, "journal", j); err != nil {
		return fail(fmt.Errorf("write journal: %w", err))
	}
	if err := a.step(stepJournaled); err != nil {
		return ApplyResult{}, err
	}
	failed, err := a.finish(j, roots)
	if err != nil {
		return ApplyResult{}, err
	}
	res.Applied -= len(failed)
	res.Failed = append(res.Failed, failed...)
	return res, nil
}

func rootName(rp resolved) (string, string) {
	if !rp.root.Dir {
		return filepath.Dir(rp.root.Local), filepath.Base(rp.root.Local)
	}
	return rp.root.Local, filepath.FromSlash(rp.rel)
}

func (a *applier) step(s string) error {
	if a.crash == nil {
		return nil
	}
	if err := a.crash(s); err != nil {
		return fmt.Errorf("crash hook at %s: %w", s, err)
	}
	return nil
}

// stage writes the new content of e next to its target and fsyncs it. With
// ids (a version 2 batch) the staged file also gets the master's mtime and
// owner, so the rename at install swaps in a file that is complete in
// content and attributes. A refused chown does not fail the entry (the
// content still matters more than who owns it); it is returned as ownerErr
// for the caller to count and report.
func stage(root *os.Root, target, stageName string, e *Entry, ids *accounts, mkParents bool) (ownerErr, err error) {
	if dir := filepath.Dir(target); dir != "." && mkParents {
		ownerErr, err = mkdirInherit(root, dir)
		if err != nil {
			return nil, fmt.Errorf("mkdir: %w", err)
		}
	}
	mode := fs.FileMode(e.Mode & 0o777)
	f, err := root.OpenFile(stageName, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return nil, fmt.Errorf("create stage: %w", err)
	}
	defer f.Close()
	switch e.Op {
	case OpPut:
		if sha256.Sum256(e.Data) != e.SHA256 {
			return nil, ErrChecksum
		}
		if _, err := f.Write(e.Data); err != nil {
			return nil, fmt.Errorf("write stage: %w", err)
		}
	case OpAppend:
		if err := stageAppend(root, target, f, e); err != nil {
			return nil, err
		}
	}
	// The umask may have narrowed the mode at create. Mode and times are
	// set while the daemon still owns the file, so they need no CAP_FOWNER.
	if err := f.Chmod(mode); err != nil {
		return nil, fmt.Errorf("chmod stage: %w", err)
	}
	if ids != nil {
		if e.MTime != 0 {
			// The zero atime is left as it is (UTIME_OMIT).
			if err := root.Chtimes(stageName, time.Time{}, time.Unix(0, e.MTime)); err != nil {
				return nil, fmt.Errorf("set mtime of stage: %w", err)
			}
		}
		uid, gid := mapOwner(e.Owner, ids)
		if err := f.Chown(int(uid), int(gid)); err != nil && ownerErr == nil {
			ownerErr = fmt.Errorf("chown stage to %d:%d (master: %s): %w", uid, gid, ownerString(e.Owner), err)
		}
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("fsync stage: %w", err)
	}
	return ownerErr, f.Close()
}

// mkdirInherit creates dir and any missing parent inside root, each with
// the owner, group and permission bits of the directory it is created in
// (not its setgid bit: the unit's RestrictSUIDSGID=yes refuses a chmod that
// sets it, and the explicit chmod below clears the one mkdir inherits). Directory attributes are not replicated, and a plain
// MkdirAll would leave them root-owned and narrowed by the unit's
// UMask=0077 (0700): a service running as its own user, like Kea in its
// _kea-owned /var/lib/kea, could not enter a subdirectory the backup made.
// A refused chown is returned as ownerErr, not as a failure (see stage).
func mkdirInherit(root *os.Root, dir string) (ownerErr, err error) {
	if fi, err := root.Stat(dir); err == nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
		}
		return nil, nil
	}
	parent := filepath.Dir(dir)
	if parent != "." {
		if ownerErr, err = mkdirInherit(root, parent); err != nil {
			return nil, err
		}
	}
	pfi, err := root.Stat(parent)
	if err != nil {
		return nil, err
	}
	mode := pfi.Mode().Perm()
	if err := root.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	// Explicitly: the umask narrowed the mode at create. Mode before owner,
	// so no CAP_FOWNER is needed.
	if err := root.Chmod(dir, mode); err != nil {
		return nil, err
	}
	if st, ok := pfi.Sys().(*syscall.Stat_t); ok {
		if err := root.Chown(dir, int(st.Uid), int(st.Gid)); err != nil && ownerErr == nil {
			ownerErr = fmt.Errorf("chown new directory %s to %d:%d: %w", dir, st.Uid, st.Gid, err)
		}
	}
	return ownerErr, nil
}

// ownerString is "user(uid):group(gid)" for logs.
func ownerString(o Owner) string {
	return fmt.Sprintf("%s(%d):%s(%d)", o.User, o.UID, o.Group, o.GID)
}

// stageAppend copies the current file (verifying it is exactly the prefix the
// master built on) and then the appended bytes, so the visible file is still
// replaced by one rename.
func stageAppend(root *os.Root, target string, dst *os.File, e *Entry) error {
	src, err := root.Open(target)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPrefexMismatch, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || uint64(fi.Size()) != e.Offset {
		return fmt.Errorf("%w: local size %d, offset %d", ErrPrefexMismatch, fi.Size(), e.Offset)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h), io.LimitReader(src, int64(e.Offset)))
	if err != nil {
		return fmt.Errorf("copy prefix: %w", err)
	}
	if uint64(n) != e.Offset || !bytes.Equal(h.Sum(nil), e.PrefixSHA256[:]) {
		return fmt.Errorf("%w: prefix hash", ErrPrefexMismatch)
	}
	h.Write(e.Data)
	if !bytes.Equal(h.Sum(nil), e.SHA256[:]) {
		return ErrChecksum
	}
	if _, err := dst.Write(e.Data); err != nil {
		return fmt.Errorf("write stage: %w", err)
	}
	return nil
}

// finish performs the journaled operations, persists the revision and drops
// the journal. It is idempotent: recovery calls it again after a crash.
//
// An operation that fails is charged to its path and skipped (its staged
// file removed, so a replay takes it as done): the reasons an install
// fails after staging succeeded are the path's own (a symlink leaving the
// root, an immutable file, a mount point) and would fail every retry, so
// keeping the journal would hold back every later batch and, after a
// restart, DB sync itself. Only the state directory's own writes and
// systemic errors fail the whole finish, and leave the journal for the
// next apply to complete.
//
// Deletes go first: a batch may swap a file and a directory (x a file
// becomes x/y, or x/y becomes the file x), and the old one must be gone
// before the new one is renamed in.
func (a *applier) finish(j journal, roots map[string]*os.Root) ([]PathFailure, error) {
	dirs := map[*os.Root]map[string]bool{}
	ops := make([]journalOp, 0, len(j.Ops))
	for _, op := range j.Ops {
		if op.Op == OpDelete {
			ops = append(ops, op)
		}
	}
	for _, op := range j.Ops {
		if op.Op != OpDelete {
			ops = append(ops, op)
		}
	}
	// Paths the batch puts files under: on a replay, a delete of one of
	// them that finds a directory is the swap's new directory, not the old
	// file, and stays.
	under := map[string]bool{}
	for _, op := range j.Ops {
		if op.Op != OpDelete {
			for w := path.Dir(op.Wire); w != "." && w != "/"; w = path.Dir(w) {
				under[w] = true
			}
		}
	}
	var failed []PathFailure
	for _, op := range ops {
		root, dir, err := a.finishOp(op, roots, under)
		if err != nil {
			reason, _ := failureReason(err)
			failed = append(failed, PathFailure{Path: op.Wire, Op: op.Op.String(), Reason: reason, Error: err.Error()})
			if root != nil && op.Op != OpDelete {
				root.Remove(op.Stage)
			}
		} else {
			if dirs[root] == nil {
				dirs[root] = map[string]bool{}
			}
			dirs[root][dir] = true
		}
		if err := a.step(stepOp); err != nil {
			return nil, err
		}
	}
	for root, ds := range dirs {
		for d := range ds {
			if err := syncDir(root, d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				if _, systemic := failureReason(err); systemic {
					return nil, err
				}
			}
		}
	}
	st := revisionState{Revision: j.Revision, Digest: j.Digest}
	if st.Revision > a.rev.Revision {
		if err := writeJSONAtomic(a.stateDir, "revision", st); err != nil {
			return nil, fmt.Errorf("write revision: %w", err)
		}
		a.rev = st
	}
	if err := a.step(stepRevision); err != nil {
		return nil, err
	}
	if err := os.Remove(filepath.Join(a.stateDir, "journal")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove journal: %w", err)
	}
	return failed, atomicfile.SyncDir(a.stateDir)
}

// finishOp performs one journaled operation and returns the root it was
// in (nil when none could be opened) and the directory it changed.
func (a *applier) finishOp(op journalOp, roots map[string]*os.Root, under map[string]bool) (*os.Root, string, error) {
	rp, err := resolveWirePath(a.roots, op.Wire)
	if err != nil {
		return nil, "", fmt.Errorf("journal op %q: %w", op.Wire, err)
	}
	root, ok := roots[rp.root.Name]
	_, name := rootName(rp)
	if !ok {
		root, name, err = rootFor(rp)
		if err != nil {
			return nil, "", err
		}
		roots[rp.root.Name] = root
	}
	defer a.cache.drop(rp.local())
	switch op.Op {
	case OpDelete:
		if fi, err := root.Lstat(name); err == nil && fi.IsDir() && under[op.Wire] {
			break
		}
		if err := noMountBelow(root, name); err != nil {
			return root, "", fmt.Errorf("delete %s: %w", op.Wire, err)
		}
		// ENOTDIR: an ancestor is a file now (a replay after the
		// batch's put made it one), so the path is gone already.
		if err := root.RemoveAll(name); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return root, "", fmt.Errorf("delete %s: %w", op.Wire, err)
		}
		if rp.root.Dir {
			pruneEmptyParents(root, name)
		}
	default:
		if _, err := root.Lstat(op.Stage); errors.Is(err, fs.ErrNotExist) {
			break // renamed before the crash
		}
		if op.SQLite {
			// A stale WAL next to a new database would be replayed into it.
			for _, s := range sqliteSidecars {
				if err := root.Remove(name + s); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return root, "", fmt.Errorf("remove %s%s: %w", op.Wire, s, err)
				}
			}
		}
		if dir := filepath.Dir(name); dir != "." {
			// Made at staging, unless a file stood in the way then.
			if _, err := mkdirInherit(root, dir); err != nil {
				return root, "", fmt.Errorf("mkdir for %s: %w", op.Wire, err)
			}
		}
		if fi, err := root.Lstat(name); err == nil && fi.IsDir() {
			if err := noMountBelow(root, name); err != nil {
				return root, "", fmt.Errorf("replace directory %s: %w", op.Wire, err)
			}
			if err := root.RemoveAll(name); err != nil {
				return root, "", fmt.Errorf("replace directory %s: %w", op.Wire, err)
			}
		}
		if err := root.Rename(op.Stage, name); err != nil {
			return root, "", fmt.Errorf("rename %s: %w", op.Wire, err)
		}
	}
	return root, filepath.Dir(name), nil
}

// recover completes a journaled batch left by a crash (roll forward) and
// removes staged files of a batch that never reached its journal (roll back).
func (a *applier) recover() (rolledForward bool, err error) {
	rolledForward, _, err = a.recoverReport()
	return rolledForward, err
}

// finished is a journaled batch completed by recovery: its revision and
// paths, and the paths that failed to apply.
type finished struct {
	batch  Batch
	Failed []PathFailure
}

// recoverReport is recover, also telling which batch it completed and
// which of its paths failed.
func (a *applier) recoverReport() (rolledForward bool, done finished, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rolledForward, done, err = a.finishPendingJournal(); err != nil {
		return false, finished{}, err
	}
	// Temp files of an interrupted atomic write (journal, revision) and
	// snapshot directories in the state dir.
	if des, err := os.ReadDir(a.stateDir); err == nil {
		for _, de := range des {
			if strings.HasPrefix(de.Name(), tempPrefix) {
				os.RemoveAll(filepath.Join(a.stateDir, de.Name()))
			}
		}
	}
	// Anything still staged belongs to no journal.
	for i := range a.roots {
		r := &a.roots[i]
		dir := r.Local
		if !r.Dir {
			dir = filepath.Dir(r.Local)
		}
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && p != dir && !r.Dir {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasPrefix(d.Name(), tempPrefix+"stage-") {
				os.Remove(p)
			}
			return nil
		})
	}
	return rolledForward, done, nil
}

// finishPendingJournal completes a journaled batch, if one is pending: after
// a crash, or after an install step failed (disk full, EIO) in a process
// that kept running. Caller holds a.mu.
func (a *applier) finishPendingJournal() (bool, finished, error) {
	b, err := os.ReadFile(filepath.Join(a.stateDir, "journal"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, finished{}, nil
	}
	if err != nil {
		return false, finished{}, fmt.Errorf("read journal: %w", err)
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return false, finished{}, fmt.Errorf("parse journal: %w", err)
	}
	roots := map[string]*os.Root{}
	defer func() {
		for _, r := range roots {
			r.Close()
		}
	}()
	failed, err := a.finish(j, roots)
	if err != nil {
		return false, finished{}, fmt.Errorf("roll forward revision %d: %w", j.Revision, err)
	}
	done := finished{batch: Batch{Revision: j.Revision}, Failed: failed}
	for _, op := range j.Ops {
		done.batch.Entries = append(done.batch.Entries, Entry{Op: op.Op, Path: op.Wire})
	}
	return true, done, nil
}

// noMountBelow refuses (EBUSY) when name is a directory that is, or holds,
// a mount point: RemoveAll would empty the mounted filesystem before
// failing on the mount point itself. Mounts are told apart by mount ID
// (statx), so a bind mount from the same filesystem counts too.
func noMountBelow(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if err != nil || !fi.IsDir() {
		return nil
	}
	parent, err := mountID(root, filepath.Dir(name))
	if err != nil {
		return err
	}
	return fs.WalkDir(root.FS(), filepath.ToSlash(name), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		id, err := mountID(root, filepath.FromSlash(p))
		if err != nil {
			return err
		}
		if id != parent {
			return fmt.Errorf("%s is a mount point: %w", p, syscall.EBUSY)
		}
		return nil
	})
}

// mountID is the ID of the mount that directory dir of root is on.
func mountID(root *os.Root, dir string) (uint64, error) {
	f, err := root.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return 0, fmt.Errorf("statx %s: %w", dir, err)
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: no mount ID", dir)
	}
	return st.Mnt_id, nil
}

func pruneEmptyParents(root *os.Root, name string) {
	for d := filepath.Dir(name); d != "." && d != "/"; d = filepath.Dir(d) {
		// Only directories: after a swap the "parent" may be the new file.
		if fi, err := root.Lstat(d); err != nil || !fi.IsDir() {
			return
		}
		if root.Remove(d) != nil { // fails when not empty
			return
		}
	}
}

// missingDirs lists dir and its parents inside root that do not exist,
// parents first: what mkdirInherit(root, dir) will create.
func missingDirs(root *os.Root, dir string) []string {
	var out []string
	for d := dir; d != "." && d != "/"; d = filepath.Dir(d) {
		if _, err := root.Lstat(d); err == nil {
			break
		}
		out = append(out, d)
	}
	slices.Reverse(out)
	return out
}

// blockingFile returns the nearest existing parent of name inside root
// when it is something other than a directory (a file, a symlink).
func blockingFile(root *os.Root, name string) (string, bool) {
	for d := filepath.Dir(name); d != "." && d != "/"; d = filepath.Dir(d) {
		if fi, err := root.Lstat(d); err == nil {
			return d, !fi.IsDir()
		}
	}
	return "", false
}

func syncDir(root *os.Root, dir string) error {
	f, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// writeJSONAtomic writes v to dir/name with the temp+fsync+rename+fsync dance.
func writeJSONAtomic(dir, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, name), b, 0o600, tempPrefix+path.Base(name)+"-*")
}
