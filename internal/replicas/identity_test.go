package replicas

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/peerlink"
)

// TestDBServesConfiguredCertificate: the DB replication built from the
// configuration serves dbsync.tls.cert/key (an openssl Ed25519 pair) and
// `muros-had fingerprint`'s Fingerprint gives its pin; at the default
// paths a node upgraded from state_dir/dbsync keeps its pin.
func TestDBServesConfiguredCertificate(t *testing.T) {
	base := t.TempDir()
	secret := filepath.Join(base, "jwt.secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("5e", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(base, "ha.crt"), filepath.Join(base, "ha.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=fw1",
		"-newkey", "ed25519", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	load := func(t *testing.T, state, tls string) *config.Config {
		t.Helper()
		p := filepath.Join(base, "ha.yaml")
		body := "role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: eth2\npeer: 10.0.0.9\n" +
			"vips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
			"state_dir: " + state + "\nrun_dir: " + filepath.Join(base, "run") + "\n" +
			"metrics:\n  enabled: false\nconntrack:\n  enabled: false\n" +
			"dbsync:\n  listen: \"127.0.0.1:17443\"\n  paths: [" + filepath.Join(base, "db") + "]\n  jwt:\n    secret_file: " + secret + "\n" +
			"  tls:\n    peer_sha256: " + strings.Repeat("ab", 32) + "\n" + tls
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	want, err := peerlink.LoadIdentity(peerlink.Files{Cert: cert, Key: key}, "x")
	if err != nil {
		t.Fatal(err)
	}
	cfg := load(t, filepath.Join(base, "state"), "    cert: "+cert+"\n    key: "+key+"\n")
	db, err := NewDB(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if db.Fingerprint() != want.Fingerprint {
		t.Fatalf("DB sync serves %s, the configured certificate is %s", db.Fingerprint(), want.Fingerprint)
	}
	if fp, err := Fingerprint(cfg); err != nil || fp != want.Fingerprint {
		t.Fatalf("Fingerprint: %s, %v; want %s", fp, err, want.Fingerprint)
	}

	// Upgraded: the identity of an older version under state_dir/dbsync.
	state := filepath.Join(base, "state2")
	old, err := peerlink.LoadIdentity(peerlink.InDir(filepath.Join(state, "dbsync")), "fw1")
	if err != nil {
		t.Fatal(err)
	}
	cfg = load(t, state, "")
	db, err = NewDB(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if db.Fingerprint() != old.Fingerprint {
		t.Fatalf("upgraded node serves %s, its peer pinned %s", db.Fingerprint(), old.Fingerprint)
	}
	if _, err := os.Stat(filepath.Join(state, "tls", "cert.pem")); err != nil {
		t.Fatalf("identity not at the configured default path: %v", err)
	}
}
