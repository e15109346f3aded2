package replicas

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/muros/muros-had/config"
)

// TestDBSyncStartFollowsSymlinks: check compares replicated paths as text;
// the daemon's DB sync start follows their symlinks first, so a path that
// reaches the configuration, its directory or the state directory only
// through a link is refused at start, naming the link, before any path is
// made.
func TestDBSyncStartFollowsSymlinks(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	j := func(els ...string) string { return filepath.Join(append([]string{base}, els...)...) }
	for _, d := range []string{j("etc"), j("var", "state"), j("ok", "db")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	secret := j("jwt.secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("5e", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"l-etc":   j("etc"),
		"l-file":  j("etc", "ha.yaml"),
		"l-state": j("var", "state"),
		"l-var":   "var", // relative
		"l-dang":  j("var", "state", "new"),
		"l-ok":    j("ok", "db"),
	}
	for name, target := range links {
		if err := os.Symlink(target, j(name)); err != nil {
			t.Fatal(err)
		}
	}
	file := func(paths []string) string {
		return "role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: eth2\npeer: 10.0.0.9\n" +
			"vips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
			"state_dir: " + j("var", "state") + "\nrun_dir: " + j("run") + "\n" +
			"metrics:\n  enabled: false\nconntrack:\n  enabled: false\n" +
			"dbsync:\n  listen: \"127.0.0.1:17443\"\n  paths: [" + strings.Join(paths, ", ") + "]\n  jwt:\n    secret_file: " + secret + "\n" +
			"  tls:\n    peer_sha256: " + strings.Repeat("ab", 32) + "\n"
	}
	tests := []struct {
		name  string
		paths []string
		want  []string // in the refusal; none: DB sync starts
	}{
		{"a link to a plain directory starts", []string{j("l-ok"), j("kea")}, nil},
		{"a link to the configuration directory", []string{j("l-etc")},
			[]string{j("l-etc") + " resolves to " + j("etc") + " (symlinks followed): " + j("etc") + " covers " + j("etc", "ha.yaml") + " (this configuration file)"}},
		{"a link to the configuration file", []string{j("l-file")},
			[]string{j("l-file") + " resolves to " + j("etc", "ha.yaml") + " (symlinks followed): " + j("etc", "ha.yaml") + " covers " + j("etc", "ha.yaml") + " (this configuration file)"}},
		{"inside state_dir through a link", []string{j("l-state", "db")},
			[]string{j("l-state", "db") + " resolves to " + j("var", "state", "db") + " (symlinks followed): " + j("var", "state", "db") + " is inside " + j("var", "state") + " (state_dir)"}},
		{"a relative link covering state_dir", []string{j("l-var")},
			[]string{j("l-var") + " resolves to " + j("var") + " (symlinks followed): " + j("var") + " covers " + j("var", "state") + " (state_dir)"}},
		{"a dangling link into state_dir", []string{j("l-dang")},
			[]string{j("l-dang") + " resolves to " + j("var", "state", "new") + " (symlinks followed)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := j("etc", "ha.yaml")
			if err := os.WriteFile(p, []byte(file(tt.paths)), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(p) // check's verdict: the text is fine
			if err != nil {
				t.Fatalf("check refuses %v (the text is fine): %v", tt.paths, err)
			}
			existed := map[string]bool{}
			for _, p := range tt.paths {
				_, err := os.Stat(p)
				existed[p] = err == nil
			}
			_, err = NewDB(cfg, slog.New(slog.DiscardHandler), nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("DB sync refused %v: %v", tt.paths, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("DB sync started with %v", tt.paths)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the refusal does not say %q:\n%v", w, err)
				}
			}
			for _, p := range tt.paths {
				if _, err := os.Stat(p); !existed[p] && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was created (or stat failed: %v) before the paths were refused", p, err)
				}
			}
		})
	}
}
