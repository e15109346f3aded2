package dbsync

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fsnotify/fsnotify"
	"github.com/google/go-cmp/cmp"
)

func TestNoteEvent(t *testing.T) {
	base := t.TempDir()
	roots := []Path{
		{Name: "db", Local: filepath.Join(base, "db"), Dir: true},
		{Name: "lease", Local: filepath.Join(base, "kea", "l.csv")},
	}
	os.MkdirAll(filepath.Join(base, "db", "newdir"), 0o755)
	os.WriteFile(filepath.Join(base, "db", "file"), nil, 0o644)
	n := &Node{cfg: Config{Paths: roots, Exclude: []string{"*.pid"}}}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ev := func(name string, op fsnotify.Op) fsnotify.Event { return fsnotify.Event{Name: name, Op: op} }
	tests := []struct {
		name string
		ev   fsnotify.Event
		want []string
	}{
		{"write in dir root", ev(base+"/db/file", fsnotify.Write), []string{"db/file"}},
		{"WAL commit marks the database", ev(base+"/db/conf.db-wal", fsnotify.Write), []string{"db/conf.db"}},
		{"rollback journal marks the database", ev(base+"/db/conf.db-journal", fsnotify.Remove), []string{"db/conf.db"}},
		{"shm is noise", ev(base+"/db/conf.db-shm", fsnotify.Write), nil},
		{"own staging file", ev(base+"/db/.muros-had-stage-1-0", fsnotify.Create), nil},
		{"excluded glob", ev(base+"/db/kea.pid", fsnotify.Write), nil},
		{"file root", ev(base+"/kea/l.csv", fsnotify.Write), []string{"lease"}},
		{"sibling of file root", ev(base+"/kea/other", fsnotify.Write), nil},
		{"outside", ev("/etc/passwd", fsnotify.Write), nil},
		{"new directory", ev(base+"/db/newdir", fsnotify.Create), []string{"db/newdir"}},
		{"removed path", ev(base+"/db/gone", fsnotify.Remove), []string{"db/gone"}},
		{"chmod of a file", ev(base+"/db/file", fsnotify.Chmod), []string{"db/file"}},
		{"chmod of a vanished path", ev(base+"/db/vanished", fsnotify.Chmod), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &masterState{dirty: map[string]struct{}{}}
			n.noteEvent(w, st, tt.ev)
			var got []string
			for p := range st.dirty {
				got = append(got, p)
			}
			slices.Sort(got)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("dirty (-want +got):\n%s", d)
			}
		})
	}
	if !slices.Contains(w.WatchList(), filepath.Join(base, "db", "newdir")) {
		t.Fatalf("new directory not watched: %v", w.WatchList())
	}
}

func TestExpand(t *testing.T) {
	base := t.TempDir()
	roots := []Path{{Name: "db", Local: filepath.Join(base, "db"), Dir: true}}
	for _, p := range []string{"d/a", "d/sub/b", "f"} {
		writeFile(t, filepath.Join(base, "db", p), "x")
	}
	n := &Node{cfg: Config{Paths: roots}}
	st := &masterState{shipped: map[string]FileState{"db/d/old": {}, "db/gone/x": {}, "db/f": {}}}
	got := n.expand(st, []string{"db/d", "db/gone", "db/f"})
	want := []string{"db/d/a", "db/d/old", "db/d/sub/b", "db/f", "db/gone", "db/gone/x"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}
