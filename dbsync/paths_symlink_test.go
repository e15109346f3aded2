package dbsync

import (
	"os"
	"path/filepath"
	"testing"
)

// TestValidatePathsFollowsSymlinks: New runs on the real file system and
// follows a replicated path's symlinks before the rules: a link into the
// dbsync state directory (journal, identity) is refused, naming the link.
func TestValidatePathsFollowsSymlinks(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(base, "state")
	if err := os.MkdirAll(filepath.Join(base, "ok"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"l-state": state, "l-in": filepath.Join(state, "x"), "l-ok": filepath.Join(base, "ok")} {
		if err := os.Symlink(target, filepath.Join(base, name)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		local string
		want  string // "" when accepted
	}{
		{"a link to a plain directory", filepath.Join(base, "l-ok"), ""},
		{"a link to the state directory", filepath.Join(base, "l-state"),
			"paths[0] (db): " + filepath.Join(base, "l-state") + " resolves to " + state + " (symlinks followed): " + state + " covers " + state + " (the dbsync state directory): the backup would receive the master's copy of it"},
		{"a dangling link inside it", filepath.Join(base, "l-in"),
			"paths[0] (db): " + filepath.Join(base, "l-in") + " resolves to " + filepath.Join(state, "x") + " (symlinks followed): " + filepath.Join(state, "x") + " is inside " + state + " (the dbsync state directory), which the daemon writes itself"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if err := validatePaths([]Path{{Name: "db", Local: tt.local, Dir: true}}, state); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("validatePaths =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
