package dbsync

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/muros/muros-had/peerlink"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"pgregory.net/rapid"
)

// failedOf lists a result's failures without their error text.
func failedOf(res ApplyResult) []PathFailure {
	out := make([]PathFailure, 0, len(res.Failed))
	for _, f := range res.Failed {
		f.Error = ""
		out = append(out, f)
	}
	return out
}

// noJournal fails when a journal is left in the state directory: a later
// push would have to complete it first.
func noJournal(t *testing.T, a *applier) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(a.stateDir, "journal")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("journal left behind: %v", err)
	}
}

// escapeLink makes db/link a symlink to a directory outside the roots that
// holds a file, as an operator's relocation on the backup would.
func escapeLink(t *testing.T, roots []Path) (outside string) {
	t.Helper()
	outside = t.TempDir()
	writeFile(t, filepath.Join(outside, "file"), "outside")
	if err := os.MkdirAll(roots[0].Local, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(roots[0].Local, "link")); err != nil {
		t.Fatal(err)
	}
	return outside
}

// A delete under a subdirectory that is a symlink leaving the root fails
// at install ("path escapes from parent") on every try: the batch completes
// without that path, which is reported, and the next batch applies.
func TestApplySymlinkEscapeDelete(t *testing.T) {
	base, roots := testRoots(t)
	outside := escapeLink(t, roots)
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("db/keep", "k")}})
	b := Batch{Revision: 2, Entries: []Entry{{Op: OpDelete, Path: "db/link/file"}, put("db/other", "o"), put("db/link/new", "n")}}
	res, err := a.apply(b, BatchDigest(b))
	if err != nil {
		t.Fatalf("one unreplicable path failed the whole batch: %v", err)
	}
	want := []PathFailure{
		{Path: "db/link/file", Op: "delete", Reason: FailEscapes},
		{Path: "db/link/new", Op: "put", Reason: FailEscapes},
	}
	if d := cmp.Diff(want, failedOf(res), cmpopts.SortSlices(func(x, y PathFailure) bool { return x.Path < y.Path })); d != "" {
		t.Fatalf("failed paths (-want +got):\n%s", d)
	}
	if res.Applied != 1 || res.Revision != 2 {
		t.Fatalf("result %+v: want 1 entry applied at revision 2", res)
	}
	noJournal(t, a)
	mustApply(t, a, Batch{Revision: 3, Entries: []Entry{put("db/third", "3")}})
	if d := cmp.Diff(map[string]string{"db/keep": "k", "db/other": "o", "db/third": "3"}, tree(t, filepath.Join(base))); d != "" {
		t.Fatalf("tree (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]string{"file": "outside"}, tree(t, outside)); d != "" {
		t.Fatalf("outside the root (-want +got):\n%s", d)
	}
}

// A journal whose install fails for one path (left by a crash, replayed at
// start) no longer fails New: DB sync starts, the rest of the batch is in
// place and the path is reported in the status.
func TestRecoverFailingJournalEntry(t *testing.T) {
	base := t.TempDir()
	peer, err := EnsureIdentity(filepath.Join(base, "peer"), "a")
	if err != nil {
		t.Fatal(err)
	}
	roots := []Path{{Name: "db", Local: filepath.Join(base, "db"), Dir: true}}
	escapeLink(t, roots)
	state := filepath.Join(base, "state")
	os.MkdirAll(state, 0o700)
	ap, err := newApplier(roots, state, newHashCache())
	if err != nil {
		t.Fatal(err)
	}
	ap.crash = func(s string) error {
		if s == stepJournaled {
			return errCrash
		}
		return nil
	}
	b := Batch{Revision: 4, Entries: []Entry{{Op: OpDelete, Path: "db/link/file"}, put("db/a", "A")}}
	if _, err := ap.apply(b, BatchDigest(b)); !errors.Is(err, errCrash) {
		t.Fatalf("apply = %v, want the simulated crash", err)
	}
	n, err := New(Config{
		NodeID: "b", PeerID: "a", PeerURL: "https://192.0.2.1:7443", PeerCertSHA256: peer.Fingerprint,
		StateDir: state, Paths: roots,
		Auth: peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte("cluster-secret-cluster-secret-32")},
	}, nil)
	if err != nil {
		t.Fatalf("one failing journal entry turned DB sync off: %v", err)
	}
	s := n.Status()
	if s.Revision != 4 {
		t.Errorf("revision %d, want 4 (the batch completed)", s.Revision)
	}
	if got := tree(t, roots[0].Local)["a"]; got != "A" {
		t.Errorf("db/a = %q, want the journaled content", got)
	}
	if len(s.FailedPaths) != 1 || s.FailedPaths[0].Path != "db/link/file" || s.FailedPaths[0].Reason != FailEscapes || s.FailedPaths[0].Revision != 4 {
		t.Fatalf("failed paths %+v, want db/link/file (%s) at revision 4", s.FailedPaths, FailEscapes)
	}
	if got := s.PathFailures[FailEscapes]; got != 1 {
		t.Fatalf("path failures %v, want one %s", s.PathFailures, FailEscapes)
	}
	noJournal(t, n.applier)
}

// Through the handler: the push with the unreplicable path answers 200 and
// names it; the status, the metric and later pushes follow.
func TestHandlerPushFailedPath(t *testing.T) {
	n, peer, auth := handlerNode(t)
	var logged bytes.Buffer
	n.log = slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelError}))
	escapeLink(t, n.cfg.Paths)
	h := n.Handler()
	tok := syncTokens(t, auth)
	push := func(b Batch) *httptest.ResponseRecorder {
		body, err := AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, peerRequest(t, peer, "POST", PathPush, body, tok()))
		return w
	}
	if w := push(Batch{Revision: 1, Entries: []Entry{{Op: OpDelete, Path: "db/link/file"}, put("db/x", "x")}}); w.Code != 200 {
		t.Fatalf("push with one unreplicable path: %d %s", w.Code, w.Body)
	}
	for rev := uint64(2); rev <= 3; rev++ {
		// The master's anti-entropy sends the path again with other changes.
		if w := push(Batch{Revision: rev, Entries: []Entry{put("db/y", fmt.Sprint(rev)), {Op: OpDelete, Path: "db/link/file"}}}); w.Code != 200 {
			t.Fatalf("push %d after it: %d %s", rev, w.Code, w.Body)
		}
	}
	if got := bytes.Count(logged.Bytes(), []byte("replicated path not applied")); got != 1 {
		t.Errorf("%d error lines for one failing path, want 1:\n%s", got, logged.String())
	}
	s := n.Status()
	if len(s.FailedPaths) != 1 || s.FailedPaths[0].Path != "db/link/file" {
		t.Fatalf("status failed paths %+v", s.FailedPaths)
	}
	got := gather(t, n.Collector())
	for k, v := range map[string]float64{
		"muros_had_dbsync_path_failures_total{" + FailEscapes + "}": 3,
		"muros_had_dbsync_failed_paths":                             1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// The operator removes the link: the next attempt succeeds and the
	// path is no longer reported.
	os.Remove(filepath.Join(n.cfg.Paths[0].Local, "link"))
	if w := push(Batch{Revision: 4, Entries: []Entry{{Op: OpDelete, Path: "db/link/file"}}}); w.Code != 200 {
		t.Fatalf("retry: %d %s", w.Code, w.Body)
	}
	if s := n.Status(); len(s.FailedPaths) != 0 {
		t.Fatalf("a path that applied is still reported: %+v", s.FailedPaths)
	}
}

func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetValue() + "}"
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return got
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (chattr +i).
const fsImmutableFL = 0x10

func setImmutable(p string, on bool) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("FS_IOC_GETFLAGS %s: %w", p, err)
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		return fmt.Errorf("FS_IOC_SETFLAGS %s: %w", p, err)
	}
	return nil
}

// An immutable file (chattr +i) refuses both its replacement and its
// delete with EPERM, at every try: the rest of each batch applies.
func TestLabApplyImmutableFile(t *testing.T) {
	base, roots := testRoots(t)
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("db/imm", "v1")}})
	imm := filepath.Join(roots[0].Local, "imm")
	if err := setImmutable(imm, true); err != nil {
		var st unix.Statfs_t
		unix.Statfs(base, &st)
		t.Fatalf("the test's temp dir %s (filesystem magic %#x) cannot make a file immutable: %v; run with TMPDIR on ext4, xfs, btrfs or tmpfs (Linux 6.0+), as root", base, st.Type, err)
	}
	t.Cleanup(func() { setImmutable(imm, false) })
	for i, b := range []Batch{
		{Revision: 2, Entries: []Entry{put("db/imm", "v2"), put("db/x", "x")}},
		{Revision: 3, Entries: []Entry{{Op: OpDelete, Path: "db/imm"}, put("db/y", "y")}},
	} {
		res, err := a.apply(b, BatchDigest(b))
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		want := []PathFailure{{Path: "db/imm", Op: b.Entries[0].Op.String(), Reason: FailPermission}}
		if d := cmp.Diff(want, failedOf(res)); d != "" {
			t.Fatalf("batch %d failed paths (-want +got):\n%s", i, d)
		}
		noJournal(t, a)
	}
	if d := cmp.Diff(map[string]string{"db/imm": "v1", "db/x": "x", "db/y": "y"}, tree(t, base)); d != "" {
		t.Fatalf("tree (-want +got):\n%s", d)
	}
}

// inMountNamespace runs f on a thread of its own in a new private mount
// namespace: mounts made there are invisible to the host and vanish with
// the thread, which is never reused (LockOSThread without unlock).
func inMountNamespace(t *testing.T, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare mount namespace (needs root): %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make mounts private: %w", err)
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A file with a mount on it (a bind mount) cannot be renamed over or
// removed (EBUSY): the path is reported, the rest applies.
func TestLabApplyMountPoint(t *testing.T) {
	base, roots := testRoots(t)
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("db/mnt", "v1")}})
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, src, "mounted")
	mnt := filepath.Join(roots[0].Local, "mnt")
	var results []ApplyResult
	inMountNamespace(t, func() error {
		if err := unix.Mount(src, mnt, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		for _, b := range []Batch{
			{Revision: 2, Entries: []Entry{put("db/mnt", "v2"), put("db/x", "x")}},
			{Revision: 3, Entries: []Entry{{Op: OpDelete, Path: "db/mnt"}, put("db/y", "y")}},
		} {
			res, err := a.apply(b, BatchDigest(b))
			if err != nil {
				return fmt.Errorf("batch %d: %w", b.Revision, err)
			}
			results = append(results, res)
		}
		return nil
	})
	for i, res := range results {
		op := []string{"put", "delete"}[i]
		if d := cmp.Diff([]PathFailure{{Path: "db/mnt", Op: op, Reason: FailBusy}}, failedOf(res)); d != "" {
			t.Fatalf("batch %d failed paths (-want +got):\n%s", i, d)
		}
	}
	noJournal(t, a)
	// Outside the namespace the mount never existed: the file is the old one.
	if d := cmp.Diff(map[string]string{"db/mnt": "v1", "db/x": "x", "db/y": "y"}, tree(t, base)); d != "" {
		t.Fatalf("tree (-want +got):\n%s", d)
	}
}

// A directory holding a mount point (here a bind mount of a directory on
// the same filesystem, so st_dev alike) is never emptied: replacing it by
// a file or deleting it would remove the mounted tree's files first.
func TestLabApplyDirectoryMountPoint(t *testing.T) {
	base, roots := testRoots(t)
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("db/keep", "k")}})
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "inner"), "mounted")
	for _, d := range []string{"dir/sub", "top"} {
		if err := os.MkdirAll(filepath.Join(roots[0].Local, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(roots[0].Local, "dir", "own"), "own")
	var results []ApplyResult
	inMountNamespace(t, func() error {
		for _, m := range []string{"dir/sub", "top"} {
			if err := unix.Mount(src, filepath.Join(roots[0].Local, m), "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind mount: %w", err)
			}
		}
		for _, b := range []Batch{
			// The master has files where the backup has these directories.
			{Revision: 2, Entries: []Entry{put("db/dir", "file now"), put("db/x", "x")}},
			{Revision: 3, Entries: []Entry{{Op: OpDelete, Path: "db/top"}, put("db/y", "y")}},
		} {
			res, err := a.apply(b, BatchDigest(b))
			if err != nil {
				return fmt.Errorf("batch %d: %w", b.Revision, err)
			}
			results = append(results, res)
		}
		return nil
	})
	for i, res := range results {
		want := []PathFailure{{Path: []string{"db/dir", "db/top"}[i], Op: []string{"put", "delete"}[i], Reason: FailBusy}}
		if d := cmp.Diff(want, failedOf(res)); d != "" {
			t.Fatalf("batch %d failed paths (-want +got):\n%s", i, d)
		}
	}
	if d := cmp.Diff(map[string]string{"inner": "mounted"}, tree(t, src)); d != "" {
		t.Fatalf("the mounted tree (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]string{"db/keep": "k", "db/dir/own": "own", "db/x": "x", "db/y": "y"}, tree(t, base)); d != "" {
		t.Fatalf("tree (-want +got):\n%s", d)
	}
}

// Batches no sender makes are refused with a typed reason, before any
// write: a file and a path under it (one would be lost), a path twice, an
// SQLite sidecar (it would be replayed into the database).
func TestHandlerRejectsImpossibleBatches(t *testing.T) {
	n, peer, auth := handlerNode(t)
	h := n.Handler()
	tok := syncTokens(t, auth)
	tests := []struct {
		name    string
		entries []Entry
		reason  string
	}{
		{"file and path under it", []Entry{put("db/a", "file"), put("db/a/b", "under")}, ReasonPathConflict},
		{"path under file first", []Entry{put("db/a/b/c", "under"), put("db/a", "file")}, ReasonPathConflict},
		{"append under a put", []Entry{put("db/a", "file"), appendEntry("db/a/b", "", "x")}, ReasonPathConflict},
		{"path twice", []Entry{put("db/a", "1"), {Op: OpDelete, Path: "db/a"}}, ReasonPathConflict},
		{"wal", []Entry{put("db/x.db", "SQLite"), put("db/x.db-wal", "wal")}, ReasonSidecar},
		{"shm", []Entry{put("db/x.db-shm", "shm")}, ReasonSidecar},
		{"journal", []Entry{put("db/sub/x.db-journal", "j")}, ReasonSidecar},
		{"sidecar delete", []Entry{{Op: OpDelete, Path: "db/x.db-wal"}}, ReasonSidecar},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := AppendBatch(nil, Batch{Revision: uint64(i + 1), Entries: tt.entries})
			if err != nil {
				t.Fatal(err)
			}
			before := n.Status().Rejected[tt.reason]
			w := httptest.NewRecorder()
			h.ServeHTTP(w, peerRequest(t, peer, "POST", PathPush, body, tok()))
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %s", w.Code, w.Body)
			}
			if got := n.Status().Rejected[tt.reason] - before; got != 1 {
				t.Fatalf("reason %q counted %d times (all: %v)", tt.reason, got, n.Status().Rejected)
			}
		})
	}
	if got := tree(t, n.cfg.Paths[0].Local); len(got) != 0 {
		t.Fatalf("refused batches wrote %v", got)
	}
	// The applier refuses them too, whoever calls it.
	b := Batch{Revision: 50, Entries: []Entry{put("db/a", "file"), put("db/a/b", "under")}}
	if _, err := n.applier.apply(b, BatchDigest(b)); !errors.Is(err, ErrPathConflict) {
		t.Fatalf("applier: %v, want ErrPathConflict", err)
	}
	// A swap is not a conflict: the file becomes a directory.
	ok := Batch{Revision: 51, Entries: []Entry{{Op: OpDelete, Path: "db/s"}, put("db/s/t", "t")}}
	if _, err := n.applier.apply(ok, BatchDigest(ok)); err != nil {
		t.Fatalf("swap refused: %v", err)
	}
}

// checkBatchPaths against a brute-force reading of its rule: refused
// exactly when a path is named twice or a put/append lies under another
// put/append's path.
func TestCheckBatchPathsProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		el := rapid.SampledFrom([]string{"a", "b", "ab"})
		var entries []Entry
		for range rapid.IntRange(1, 6).Draw(t, "entries") {
			p := "db"
			for range rapid.IntRange(1, 3).Draw(t, "depth") {
				p += "/" + el.Draw(t, "element")
			}
			op := rapid.SampledFrom([]Op{OpPut, OpAppend, OpDelete}).Draw(t, "op")
			entries = append(entries, Entry{Op: op, Path: p})
		}
		want := false
		for i, x := range entries {
			for j, y := range entries {
				if i == j {
					continue
				}
				if x.Path == y.Path || (x.Op != OpDelete && y.Op != OpDelete && strings.HasPrefix(y.Path, x.Path+"/")) {
					want = true
				}
			}
		}
		err := checkBatchPaths(&Batch{Entries: entries})
		if (err != nil) != want {
			t.Fatalf("checkBatchPaths(%v) = %v, want refused %v", entries, err, want)
		}
		if err != nil && !errors.Is(err, ErrPathConflict) {
			t.Fatalf("error %v is not ErrPathConflict", err)
		}
	})
}

// A put under a path that is a file on the backup (the batch does not
// delete it) is charged to that path as not_directory.
func TestApplyPutUnderFile(t *testing.T) {
	_, roots := testRoots(t)
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("db/f", "file")}})
	b := Batch{Revision: 2, Entries: []Entry{put("db/f/x", "x"), put("db/y", "y")}}
	res, err := a.apply(b, BatchDigest(b))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]PathFailure{{Path: "db/f/x", Op: "put", Reason: FailNotDir}}, failedOf(res)); d != "" {
		t.Fatalf("failed paths (-want +got):\n%s", d)
	}
}
