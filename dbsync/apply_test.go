package dbsync

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testRoots(t *testing.T) (string, []Path) {
	t.Helper()
	base := t.TempDir()
	return base, []Path{
		{Name: "db", Local: filepath.Join(base, "db"), Dir: true},
		{Name: "lease", Local: filepath.Join(base, "kea", "leases4.csv")},
	}
}

func put(path, content string) Entry {
	return Entry{Op: OpPut, Mode: 0o644, Path: path, SHA256: sha256.Sum256([]byte(content)), Data: []byte(content)}
}

func appendEntry(path, prefix, tail string) Entry {
	return Entry{Op: OpAppend, Mode: 0o644, Path: path, Offset: uint64(len(prefix)),
		PrefixSHA256: sha256.Sum256([]byte(prefix)), SHA256: sha256.Sum256([]byte(prefix + tail)), Data: []byte(tail)}
}

func mustApply(t *testing.T, a *applier, b Batch) ApplyResult {
	t.Helper()
	if _, err := AppendBatch(nil, b); err != nil {
		t.Fatal(err)
	}
	res, err := a.apply(b, BatchDigest(b))
	if err != nil {
		t.Fatalf("apply revision %d: %v", b.Revision, err)
	}
	return res
}

// tree reads every file under base (relative path -> content).
func tree(t *testing.T, base string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(base, p)
		out[rel] = string(b)
		return nil
	})
	return out
}

func newTestApplier(t *testing.T, roots []Path) *applier {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(state, 0o700)
	a, err := newApplier(roots, state, newHashCache())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestApplyPutAppendDelete(t *testing.T) {
	base, roots := testRoots(t)
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("db/a", "A1"), put("db/sub/dir/b", "B1"), put("lease", "l1\n")}})
	res := mustApply(t, a, Batch{Revision: 2, Entries: []Entry{appendEntry("lease", "l1\n", "l2\n"), put("db/a", "A2")}})
	if res.Bytes != 5 {
		t.Errorf("applied payload bytes %d, want 5 (only the appended line and A2)", res.Bytes)
	}
	mustApply(t, a, Batch{Revision: 3, Entries: []Entry{{Op: OpDelete, Path: "db/sub/dir/b"}}})
	want := map[string]string{"db/a": "A2", "kea/leases4.csv": "l1\nl2\n"}
	if d := cmp.Diff(want, tree(t, base)); d != "" {
		t.Fatalf("tree (-want +got):\n%s", d)
	}
	if _, err := os.Stat(filepath.Join(base, "db/sub")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty parent directories of a deleted file remain: %v", err)
	}
	// Revision persisted.
	b := newTestApplierAt(t, roots, a.stateDir)
	if got := b.revision().Revision; got != 3 {
		t.Fatalf("revision after reopen %d, want 3", got)
	}
}

func newTestApplierAt(t *testing.T, roots []Path, state string) *applier {
	t.Helper()
	a, err := newApplier(roots, state, newHashCache())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestApplyIdempotentAndStale(t *testing.T) {
	_, roots := testRoots(t)
	a := newTestApplier(t, roots)
	b := Batch{Revision: 5, Entries: []Entry{put("db/a", "A")}}
	mustApply(t, a, b)
	res := mustApply(t, a, b) // retry: same revision, same body
	if !res.Noop || res.Revision != 5 {
		t.Fatalf("retry = %+v, want no-op at 5", res)
	}
	other := Batch{Revision: 5, Entries: []Entry{put("db/a", "other")}}
	if _, err := a.apply(other, BatchDigest(other)); !errors.Is(err, ErrStaleRevision) {
		t.Fatalf("same revision, other content: %v, want ErrStaleRevision", err)
	}
	if _, err := a.apply(Batch{Revision: 4, Entries: []Entry{put("db/a", "old")}}, [32]byte{9}); !errors.Is(err, ErrStaleRevision) {
		t.Fatalf("older revision: %v, want ErrStaleRevision", err)
	}
}

func TestApplyRejects(t *testing.T) {
	base, roots := testRoots(t)
	outside := t.TempDir()
	os.MkdirAll(roots[0].Local, 0o755)
	if err := os.Symlink(outside, filepath.Join(roots[0].Local, "evil")); err != nil {
		t.Fatal(err)
	}
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("lease", "abc")}})
	bad := put("db/x", "content")
	bad.SHA256[0] ^= 1
	tests := []struct {
		name  string
		entry Entry
		want  error
	}{
		{"checksum", bad, ErrChecksum},
		{"append prefix differs", appendEntry("lease", "abd", "x"), ErrPrefexMismatch},
		{"append offset differs", appendEntry("lease", "ab", "x"), ErrPrefexMismatch},
		{"append to missing file", appendEntry("db/none", "ab", "x"), ErrPrefexMismatch},
		{"not a root", put("etc/passwd", "x"), ErrPathRoot},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A valid entry first: a rejected batch must leave nothing staged.
			b := Batch{Revision: uint64(10 + i), Entries: []Entry{put("db/ok", "ok"), tt.entry}}
			_, err := a.apply(b, [32]byte{byte(i)})
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if got := tree(t, outside); len(got) != 0 {
		t.Fatalf("wrote outside the root: %v", got)
	}
	if d := cmp.Diff(map[string]string{"kea/leases4.csv": "abc"}, tree(t, base)); d != "" {
		t.Fatalf("rejected batches changed the tree (-want +got):\n%s", d)
	}
	if a.revision().Revision != 1 {
		t.Fatalf("revision moved to %d", a.revision().Revision)
	}
}

var errCrash = errors.New("simulated crash")

// A crash at each step of a multi-file apply: after recovery every file is
// either all old (crash before the journal) or all new (after it).
func TestApplyCrashRecovery(t *testing.T) {
	old := map[string]string{"db/a": "A-old", "db/b": "B-old", "db/gone": "G", "kea/leases4.csv": "l1\n"}
	oldTree := map[string]string{"db/a": "A-old", "db/b": "B-old", "db/gone": "G", "kea/leases4.csv": "l1\n"}
	newTree := map[string]string{"db/a": "A-new", "db/b": "B-new", "db/c/new": "C", "kea/leases4.csv": "l1\nl2\n"}
	next := Batch{Revision: 2, Entries: []Entry{
		put("db/a", "A-new"), put("db/b", "B-new"), {Op: OpDelete, Path: "db/gone"},
		put("db/c/new", "C"), appendEntry("lease", "l1\n", "l2\n"),
	}}
	tests := []struct {
		step  string
		nth   int // crash at the nth call of step
		want  map[string]string
		wantR uint64
	}{
		{stepStaged, 1, oldTree, 1},
		{stepJournaled, 1, newTree, 2},
		{stepOp, 1, newTree, 2},
		{stepOp, 3, newTree, 2},
		{stepOp, 5, newTree, 2},
		{stepRevision, 1, newTree, 2},
	}
	for _, tt := range tests {
		t.Run(tt.step+"#"+string(rune('0'+tt.nth)), func(t *testing.T) {
			base, roots := testRoots(t)
			a := newTestApplier(t, roots)
			var first []Entry
			for _, p := range []string{"db/a", "db/b", "db/gone"} {
				first = append(first, put(p, old[p]))
			}
			first = append(first, put("lease", "l1\n"))
			mustApply(t, a, Batch{Revision: 1, Entries: first})
			calls := 0
			a.crash = func(s string) error {
				if s == tt.step {
					calls++
					if calls == tt.nth {
						return errCrash
					}
				}
				return nil
			}
			if _, err := a.apply(next, BatchDigest(next)); !errors.Is(err, errCrash) {
				t.Fatalf("apply = %v, want the simulated crash", err)
			}
			// Restart.
			b := newTestApplierAt(t, roots, a.stateDir)
			if _, err := b.recover(); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, tree(t, base)); d != "" {
				t.Fatalf("after recovery (-want +got):\n%s", d)
			}
			if got := b.revision().Revision; got != tt.wantR {
				t.Fatalf("revision %d, want %d", got, tt.wantR)
			}
			if _, err := os.Stat(filepath.Join(a.stateDir, "journal")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("journal left after recovery: %v", err)
			}
			// The master's retry of the same batch is then a no-op or applies.
			res, err := b.apply(next, BatchDigest(next))
			if tt.wantR == 2 && (err != nil || !res.Noop) {
				t.Fatalf("retry after roll-forward = %+v, %v; want no-op", res, err)
			}
			if tt.wantR == 1 {
				if err != nil {
					t.Fatalf("retry after roll-back: %v", err)
				}
				if d := cmp.Diff(newTree, tree(t, base)); d != "" {
					t.Fatalf("after retry (-want +got):\n%s", d)
				}
			}
		})
	}
}

func TestApplySQLiteRemovesSidecars(t *testing.T) {
	base, roots := testRoots(t)
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Revision: 1, Entries: []Entry{put("db/x.db", "v1")}})
	for _, s := range []string{"-wal", "-shm"} {
		os.WriteFile(filepath.Join(base, "db", "x.db"+s), []byte("stale"), 0o644)
	}
	e := put("db/x.db", "v2")
	e.Flags = FlagSQLite
	mustApply(t, a, Batch{Revision: 2, Entries: []Entry{e}})
	if d := cmp.Diff(map[string]string{"db/x.db": "v2"}, tree(t, base)); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

func TestDiffManifests(t *testing.T) {
	f := func(p string, size int64, sum string) FileState {
		return FileState{Path: p, Size: size, SHA256: sum, Mode: 0o644}
	}
	local := manifestMap([]FileState{f("a", 1, "aa"), f("b", 2, "bb"), f("c", 3, "cc"), f("e", 5, "ee")})
	remote := manifestMap([]FileState{f("a", 1, "aa"), f("b", 2, "xx"), f("d", 4, "dd"), {Path: "e", Size: 5, SHA256: "ee", Mode: 0o600}})
	want := Diff{Changed: []string{"b", "c", "e"}, Deleted: []string{"d"}}
	if d := cmp.Diff(want, diffManifests(local, remote, true)); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	if d := diffManifests(local, local, true); len(d.Changed)+len(d.Deleted) != 0 {
		t.Fatalf("self diff = %+v", d)
	}
}

func TestDebounceDelay(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	tests := []struct {
		now  time.Duration // since the first dirty event
		want time.Duration
	}{
		{0, 20 * ms},
		{100 * ms, 20 * ms},
		{190 * ms, 10 * ms},
		{200 * ms, 0},
		{5 * time.Second, 0},
	}
	for _, tt := range tests {
		if got := debounceDelay(t0, t0.Add(tt.now), 20*ms, 200*ms); got != tt.want {
			t.Errorf("at +%v: %v, want %v", tt.now, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	var got []string
	for i := 1; i <= 6; i++ {
		got = append(got, backoff(i, 100e6, 1e9).String())
	}
	if d := cmp.Diff("100ms 200ms 400ms 800ms 1s 1s", strings.Join(got, " ")); d != "" {
		t.Fatal(d)
	}
}

// TestApplyFileDirectorySwap: the master replaced a directory by a file of
// the same name, or a file by a directory. The batch carries the new
// entry and the delete of the old one; it applies, leaves no journal, and
// the next batch applies too. A crash at any step of the swap recovers to
// the old or the new tree, never a jammed journal.
func TestApplyFileDirectorySwap(t *testing.T) {
	del := func(p string) Entry { return Entry{Op: OpDelete, Path: p} }
	tests := []struct {
		name        string
		first, swap []Entry
		want        map[string]string
	}{
		{"directory becomes a file", []Entry{put("db/x/y", "Y"), put("db/x/z", "Z")},
			[]Entry{put("db/x", "X"), del("db/x/y"), del("db/x/z")}, map[string]string{"db/x": "X"}},
		{"file becomes a directory", []Entry{put("db/x", "X")},
			[]Entry{put("db/x/y", "Y"), del("db/x")}, map[string]string{"db/x/y": "Y"}},
		{"file becomes a deeper directory", []Entry{put("db/x", "X"), put("db/w", "W")},
			[]Entry{del("db/x"), put("db/x/a/b", "B")}, map[string]string{"db/x/a/b": "B", "db/w": "W"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, roots := testRoots(t)
			a := newTestApplier(t, roots)
			mustApply(t, a, Batch{Revision: 1, Entries: tt.first})
			mustApply(t, a, Batch{Revision: 2, Entries: tt.swap})
			if d := cmp.Diff(tt.want, tree(t, base)); d != "" {
				t.Fatalf("after the swap (-want +got):\n%s", d)
			}
			if _, err := os.Stat(filepath.Join(a.stateDir, "journal")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("journal left: %v", err)
			}
			mustApply(t, a, Batch{Revision: 3, Entries: []Entry{put("db/after", "ok")}})
			if _, err := newTestApplierAt(t, roots, a.stateDir).recover(); err != nil {
				t.Fatalf("recover after the swap: %v", err)
			}
		})
		for n := 1; n <= len(tt.swap); n++ {
			t.Run(fmt.Sprintf("%s/crash at op %d", tt.name, n), func(t *testing.T) {
				base, roots := testRoots(t)
				a := newTestApplier(t, roots)
				mustApply(t, a, Batch{Revision: 1, Entries: tt.first})
				calls := 0
				a.crash = func(s string) error {
					if s == stepOp {
						if calls++; calls == n {
							return errCrash
						}
					}
					return nil
				}
				b := Batch{Revision: 2, Entries: tt.swap}
				if _, err := a.apply(b, BatchDigest(b)); !errors.Is(err, errCrash) {
					t.Fatalf("apply = %v, want the simulated crash", err)
				}
				r := newTestApplierAt(t, roots, a.stateDir)
				if _, err := r.recover(); err != nil {
					t.Fatalf("recover: %v", err)
				}
				if d := cmp.Diff(tt.want, tree(t, base)); d != "" {
					t.Fatalf("after recovery (-want +got):\n%s", d)
				}
				mustApply(t, r, Batch{Revision: 3, Entries: []Entry{put("db/after", "ok")}})
			})
		}
	}
}
