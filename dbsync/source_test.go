package dbsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func stateOf(path, content string, mode uint32) *FileState {
	sum := sha256.Sum256([]byte(content))
	return &FileState{Path: path, Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:]), Mode: mode}
}

func TestSourceEntry(t *testing.T) {
	base := t.TempDir()
	roots := []Path{{Name: "db", Local: filepath.Join(base, "db"), Dir: true}}
	s := &source{roots: roots, cache: newHashCache(), sqlite3: "sqlite3", start: (*exec.Cmd).Start, tmpDir: base}
	writeFile(t, filepath.Join(base, "db", "leases.csv"), "h\nl1\nl2\n")
	type result struct {
		Op     Op
		Data   string
		Offset uint64
		OK     bool
	}
	tests := []struct {
		name string
		path string
		peer *FileState
		want result
	}{
		{"peer lacks it: put", "db/leases.csv", nil, result{OpPut, "h\nl1\nl2\n", 0, true}},
		{"peer has a prefix: append", "db/leases.csv", stateOf("db/leases.csv", "h\nl1\n", 0o644), result{OpAppend, "l2\n", 5, true}},
		{"peer has other bytes: put", "db/leases.csv", stateOf("db/leases.csv", "h\nXX\n", 0o644), result{OpPut, "h\nl1\nl2\n", 0, true}},
		{"peer has a longer file: put", "db/leases.csv", stateOf("db/leases.csv", "h\nl1\nl2\nl3\n", 0o644), result{OpPut, "h\nl1\nl2\n", 0, true}},
		{"peer has another mode: put", "db/leases.csv", stateOf("db/leases.csv", "h\nl1\n", 0o600), result{OpPut, "h\nl1\nl2\n", 0, true}},
		{"peer up to date", "db/leases.csv", stateOf("db/leases.csv", "h\nl1\nl2\n", 0o644), result{}},
		{"gone locally, peer has it: delete", "db/missing", stateOf("db/missing", "x", 0o644), result{OpDelete, "", 0, true}},
		{"gone on both", "db/missing", nil, result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, ok, err := s.entry(context.Background(), tt.path, tt.peer, true, newAccounts())
			if err != nil {
				t.Fatal(err)
			}
			got := result{e.Op, string(e.Data), e.Offset, ok}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
			if ok && e.Op != OpDelete {
				full, _ := os.ReadFile(filepath.Join(base, tt.path))
				if e.SHA256 != sha256.Sum256(full) {
					t.Fatal("entry hash is not the hash of the whole resulting file")
				}
			}
		})
	}
}

// A growing SQLite database is always shipped whole, as a snapshot.
func TestSourceSQLiteSnapshot(t *testing.T) {
	base := t.TempDir()
	roots := []Path{{Name: "db", Local: filepath.Join(base, "db"), Dir: true}}
	os.MkdirAll(roots[0].Local, 0o755)
	db := filepath.Join(roots[0].Local, "c.db")
	if out, err := exec.Command("sqlite3", db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);").CombinedOutput(); err != nil {
		t.Fatalf("sqlite3: %v %s", err, out)
	}
	s := &source{roots: roots, cache: newHashCache(), sqlite3: "sqlite3", start: (*exec.Cmd).Start, tmpDir: base}
	e1, st1, ok, err := s.entry(context.Background(), "db/c.db", nil, true, newAccounts())
	if err != nil || !ok || e1.Flags&FlagSQLite == 0 || e1.Op != OpPut {
		t.Fatalf("first: %+v %v %v", e1.Op, ok, err)
	}
	// Unchanged database: same snapshot hash, nothing to send.
	if _, _, ok, err := s.entry(context.Background(), "db/c.db", st1, true, newAccounts()); ok || err != nil {
		t.Fatalf("unchanged database re-sent (ok=%v, err=%v)", ok, err)
	}
	exec.Command("sqlite3", db, "INSERT INTO t VALUES (2);").Run()
	e2, _, ok, err := s.entry(context.Background(), "db/c.db", st1, true, newAccounts())
	if err != nil || !ok || e2.Op != OpPut {
		t.Fatalf("after insert: op %v ok %v err %v, want a whole snapshot", e2.Op, ok, err)
	}
	m, err := s.manifest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m["db/c.db-wal"]; ok || len(m) != 1 {
		t.Fatalf("manifest %v", m)
	}
}
