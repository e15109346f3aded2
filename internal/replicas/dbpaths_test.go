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

// TestDBSyncStartRefusesWhatCheckRefuses: the daemon's DB sync start path
// (NewDB) refuses every replicated-path list that `muros-had check`
// refuses, with check's own messages, and creates none of the paths first.
// The configuration is built valid and its paths changed in code, as a
// Config the daemon did not load itself would be.
func TestDBSyncStartRefusesWhatCheckRefuses(t *testing.T) {
	base := t.TempDir()
	etc := filepath.Join(base, "etc")
	if err := os.MkdirAll(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(base, "jwt.secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("5e", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	file := func(paths []string) string {
		return "role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: eth2\npeer: 10.0.0.9\n" +
			"vips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
			"state_dir: " + filepath.Join(base, "var", "state") + "\nrun_dir: " + filepath.Join(base, "run") + "\n" +
			"metrics:\n  enabled: false\nconntrack:\n  enabled: false\n" +
			"dbsync:\n  listen: \"127.0.0.1:17443\"\n  paths: [" + strings.Join(paths, ", ") + "]\n  jwt:\n    secret_file: " + secret + "\n" +
			"  tls:\n    peer_sha256: " + strings.Repeat("ab", 32) + "\n"
	}
	// load writes paths into a configuration file in etc and loads it.
	load := func(t *testing.T, paths []string) (*config.Config, error) {
		t.Helper()
		p := filepath.Join(etc, "ha.yaml")
		if err := os.WriteFile(p, []byte(file(paths)), 0o600); err != nil {
			t.Fatal(err)
		}
		return config.Load(p)
	}
	j := func(els ...string) string { return filepath.Join(append([]string{base}, els...)...) }
	tests := []struct {
		name  string
		paths []string
	}{
		{"root", []string{"/"}},
		{"same last component", []string{j("a", "kea"), j("b", "kea")}},
		{"nested", []string{j("db"), j("db", "x")}},
		{"covers state_dir", []string{j("var")}},
		{"inside state_dir", []string{j("var", "state", "x")}},
		{"covers the configuration directory", []string{j("etc")}},
		{"covers the JWT secret", []string{base}},
	}
	t.Run("control: a valid list starts", func(t *testing.T) {
		cfg, err := load(t, []string{j("ok", "db"), j("ok", "kea")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewDB(cfg, slog.New(slog.DiscardHandler), nil); err != nil {
			t.Fatal(err)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// check's verdict on the file.
			_, err := load(t, tt.paths)
			var problems config.Problems
			if !errors.As(err, &problems) || len(problems) == 0 {
				t.Fatalf("check accepts %v: %v", tt.paths, err)
			}
			cfg, err := load(t, []string{j("ok", "db"), j("ok", "kea")})
			if err != nil {
				t.Fatal(err)
			}
			cfg.DBSync.Paths = tt.paths
			existed := map[string]bool{}
			for _, p := range tt.paths {
				_, err := os.Stat(p)
				existed[p] = err == nil
			}
			_, err = NewDB(cfg, slog.New(slog.DiscardHandler), nil)
			if err == nil {
				t.Fatalf("DB sync started with paths %v that check refuses:\n%v", tt.paths, problems)
			}
			for _, p := range problems {
				if want := p.Key + ": " + p.Message; !strings.Contains(err.Error(), want) {
					t.Errorf("the daemon's refusal does not say %q:\n%v", want, err)
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
