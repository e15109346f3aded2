package dbsync

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxFailedPaths bounds the paths the status lists as failing; beyond it
// the longest-failing one gives way (the counters keep counting).
const maxFailedPaths = 1024

// FailedPath is a replicated path this node could not apply, as the status
// shows it until an apply of the path succeeds.
type FailedPath struct {
	Path     string    `json:"path"`
	Op       string    `json:"op"`
	Reason   string    `json:"reason"`
	Error    string    `json:"error"`
	Revision uint64    `json:"revision"` // of the latest batch that failed it
	Since    time.Time `json:"since"`    // first failure of this run of failures
	Last     time.Time `json:"last"`
}

// failureReason classifies why an operation on one path failed. systemic
// errors (full disk, I/O error, out of descriptors) concern every path:
// a batch that meets one before its commit point is rolled back and
// retried whole, instead of reporting every path of it as failed.
func failureReason(err error) (reason string, systemic bool) {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.ENOMEM, syscall.EMFILE, syscall.ENFILE:
			return FailOther, true
		case syscall.EPERM, syscall.EACCES:
			return FailPermission, false
		case syscall.EBUSY:
			return FailBusy, false
		case syscall.EROFS:
			return FailReadOnly, false
		case syscall.ENOTDIR, syscall.EISDIR, syscall.ENOTEMPTY:
			return FailNotDir, false
		}
	}
	// os.Root's error for a path leaving the root has no exported value.
	if strings.Contains(err.Error(), "path escapes from parent") {
		return FailEscapes, false
	}
	if errors.Is(err, ErrPathRoot) || errors.Is(err, ErrPathInternal) || errors.Is(err, ErrPathSidecar) {
		return FailResolve, false
	}
	return FailOther, false
}

// failedPaths is the set of paths currently failing.
type failedPaths struct {
	mu sync.Mutex
	m  map[string]FailedPath
}

// note records the outcome of batch b at now: each failure is added or
// refreshed, each other entry of the batch applied and is dropped. It
// returns the failures that are new or changed reason (worth an error log
// line; a repeat of a known one is not).
func (f *failedPaths) note(b *Batch, failed []PathFailure, now time.Time) (fresh []PathFailure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]FailedPath{}
	}
	bad := make(map[string]bool, len(failed))
	for _, pf := range failed {
		bad[pf.Path] = true
		old, known := f.m[pf.Path]
		if !known || old.Reason != pf.Reason || old.Op != pf.Op {
			fresh = append(fresh, pf)
		}
		fp := FailedPath{Path: pf.Path, Op: pf.Op, Reason: pf.Reason, Error: pf.Error, Revision: b.Revision, Since: now, Last: now}
		if known {
			fp.Since = old.Since
		}
		if !known && len(f.m) >= maxFailedPaths {
			oldest := ""
			for p, v := range f.m {
				if oldest == "" || v.Last.Before(f.m[oldest].Last) {
					oldest = p
				}
			}
			delete(f.m, oldest)
		}
		f.m[pf.Path] = fp
	}
	if b != nil {
		for i := range b.Entries {
			if p := b.Entries[i].Path; !bad[p] {
				delete(f.m, p)
			}
		}
	}
	return fresh
}

func (f *failedPaths) snapshot() []FailedPath {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) == 0 {
		return nil
	}
	out := make([]FailedPath, 0, len(f.m))
	for _, v := range f.m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b FailedPath) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// noteFailures records what batch b left failing: counted by reason, listed in
// the status, and one error line per path that newly fails.
func (n *Node) noteFailures(b *Batch, failed []PathFailure) {
	for _, pf := range failed {
		n.pathFailures.add(pf.Reason, 1)
	}
	for _, pf := range n.failed.note(b, failed, time.Now()) {
		n.log.Error("dbsync: replicated path not applied; the rest of the batch was", "path", pf.Path, "op", pf.Op, "reason", pf.Reason, "revision", b.Revision, "err", pf.Error)
	}
}
