package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFingerprintOperatorCertificate: with dbsync.tls.cert and key set to
// a certificate made by openssl, `muros-had fingerprint` prints openssl's
// SHA-256 of it (what the peer must pin), and nothing is generated; at the
// default paths an upgraded node prints the pin of the identity an older
// version kept under state_dir/dbsync.
func TestFingerprintOperatorCertificate(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "ha.crt"), filepath.Join(dir, "ha.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=fw1",
		"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	fpOut, err := exec.Command("openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256").Output()
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := strings.Cut(strings.TrimSpace(string(fpOut)), "=")
	want = strings.ToLower(strings.ReplaceAll(want, ":", ""))

	base := "role: master\npassword: " + testPassword + "\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
		"state_dir: " + filepath.Join(dir, "state") + "\nrun_dir: " + filepath.Join(dir, "run") + "\n"
	path := filepath.Join(dir, "op.yaml")
	if err := os.WriteFile(path, []byte(base+"dbsync:\n  tls:\n    cert: "+cert+"\n    key: "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := cmdFingerprint([]string{"--config", path}, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != want {
		t.Fatalf("fingerprint exit code %d, stdout %q, want 0 and %s\nstderr: %s", code, out.String(), want, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "tls")); err == nil {
		t.Error("an identity was generated beside the operator's")
	}

	// The defaults: an older version's identity under state_dir/dbsync is kept.
	legacy := filepath.Join(dir, "state2", "dbsync")
	if err := os.MkdirAll(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{cert: "dbsync-cert.pem", key: "dbsync-key.pem"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(legacy, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path2 := filepath.Join(dir, "upgraded.yaml")
	if err := os.WriteFile(path2, []byte(strings.Replace(base, filepath.Join(dir, "state"), filepath.Join(dir, "state2"), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := cmdFingerprint([]string{"--config", path2}, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != want {
		t.Fatalf("upgraded node: fingerprint exit code %d, stdout %q, want 0 and the old pin %s\nstderr: %s", code, out.String(), want, errb.String())
	}

	// A missing operator pair is an error, not a new identity.
	path3 := filepath.Join(dir, "missing.yaml")
	if err := os.WriteFile(path3, []byte(base+"dbsync:\n  tls:\n    cert: "+filepath.Join(dir, "no.crt")+"\n    key: "+filepath.Join(dir, "no.key")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := cmdFingerprint([]string{"--config", path3}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "neither certificate") {
		t.Fatalf("missing operator pair: exit code %d, stderr %q, want 1", code, errb.String())
	}
}
