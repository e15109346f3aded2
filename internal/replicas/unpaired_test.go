package replicas

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/muros/muros-had/config"
)

// TestUnpairedDBSaysPair: a node started before pairing (no pin, no JWT
// secret) says how to pair, in the error the status shows as "DB sync is
// OFF".
func TestUnpairedDBSaysPair(t *testing.T) {
	base := t.TempDir()
	p := filepath.Join(base, "ha.yaml")
	body := "role: backup\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: eth2\npeer: 10.0.0.9\n" +
		"vips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
		"state_dir: " + filepath.Join(base, "state") + "\nrun_dir: " + filepath.Join(base, "run") + "\n" +
		"metrics:\n  enabled: false\nconntrack:\n  enabled: false\n" +
		"dbsync:\n  listen: \"127.0.0.1:17443\"\n  paths: [" + filepath.Join(base, "db") + "]\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []bool{false, true} {
		if secret {
			if err := os.MkdirAll(filepath.Join(base, "state"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(base, "state", "jwt.secret"), []byte(strings.Repeat("5e", 32)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg, err := config.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = NewDB(cfg, slog.New(slog.DiscardHandler), nil)
		if err == nil || !strings.Contains(err.Error(), "muros-had pair") {
			t.Errorf("secret present %v: %v, want a hint to run muros-had pair", secret, err)
		}
	}
}
