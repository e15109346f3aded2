package dbsync

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// sqliteMagic is the first 16 bytes of every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// isSQLite reports whether the file at p starts with the SQLite header.
func isSQLite(f io.ReaderAt) bool {
	var h [16]byte
	n, _ := f.ReadAt(h[:], 0)
	return n == 16 && string(h[:]) == sqliteMagic
}

// sqliteSnapshot returns a transactionally consistent copy of the database
// at src, made with SQLite's online backup API through the sqlite3 CLI
// (".backup"). The backup runs inside one read transaction, so it sees
// either all or none of any concurrent write transaction, in rollback-journal
// and in WAL mode alike (in WAL mode it reads the committed frames of the
// -wal file too). The CLI is used rather than a cgo or pure-Go driver so the
// daemon stays cgo-free without vendoring a transpiled SQLite; its cost is
// one process per snapshot, and snapshots are debounced.
func sqliteSnapshot(ctx context.Context, start func(*exec.Cmd) error, sqlite3, src, tmpDir string) ([]byte, error) {
	tmp, err := os.MkdirTemp(tmpDir, tempPrefix+"snap-")
	if err != nil {
		return nil, fmt.Errorf("snapshot dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "snapshot.db")
	if strings.ContainsAny(dst, "'\n") {
		return nil, fmt.Errorf("snapshot path %q has a quote or newline", dst)
	}
	// -readonly: the snapshot must never write the source, not even a
	// checkpoint on close.
	cmd := exec.CommandContext(ctx, sqlite3, "-bail", "-readonly", src)
	cmd.Stdin = strings.NewReader(".timeout 5000\n.backup main '" + dst + "'\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	err = start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite3 .backup %s: %w: %s", src, err, strings.TrimSpace(stderr.String()))
	}
	if stderr.Len() > 0 {
		return nil, fmt.Errorf("sqlite3 .backup %s: %s", src, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	return b, nil
}
