package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/muros/muros-had/internal/status"
)

// serveStatus answers GET /status on a unix socket at sock with st, as a
// running daemon's status listener would.
func serveStatus(t *testing.T, sock string, st status.Status) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// clientFiles are files a running daemon may predate: an upgrade refuses
// them for run and check, never for the commands that only talk to the
// daemon or read its key material. name -> what replaces the password line
// or is appended.
func clientFiles(dir string) map[string]string {
	base := "role: master\npassword: " + testPassword + "\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
		"state_dir: " + filepath.Join(dir, "state") + "\nrun_dir: " + filepath.Join(dir, "run") + "\n" +
		"status:\n  listen: " + filepath.Join(dir, "st.sock") + "\n"
	return map[string]string{
		"placeholder.yaml": strings.Replace(base, testPassword, `"change-me"`, 1),
		"short.yaml":       strings.Replace(base, testPassword, "a", 1),
		"paths.yaml":       base + "dbsync:\n  paths: [/, /etc/muros-had]\n",
	}
}

// TestClientCommandsOnRefusedFiles: `status`, `token` and `fingerprint` work
// with a file that run and check refuse for its password or replicated
// paths (the previous example's "change-me"): the operator always sees the
// running daemon, and neither command needs the password.
func TestClientCommandsOnRefusedFiles(t *testing.T) {
	dir, err := os.MkdirTemp("", "mhc") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state", "jwt.secret"), []byte(strings.Repeat("5e", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	serveStatus(t, filepath.Join(dir, "st.sock"), status.Status{Node: "fw1", Role: "master", State: "MASTER", Priority: 150})
	files := clientFiles(dir)
	writeFiles(t, dir, files)
	for name := range files {
		path := filepath.Join(dir, name)
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := cmdCheck([]string{"--config", path}, &out, &errb); code != 1 {
				t.Fatalf("check exit code %d, want 1 (the file is refused)\n%s", code, errb.String())
			}
			out.Reset()
			errb.Reset()
			if code := cmdStatus([]string{"--config", path}, &out, &errb); code != 0 {
				t.Fatalf("status exit code %d, want 0\nstderr: %s", code, errb.String())
			}
			if !strings.Contains(out.String(), "node:          fw1 (master, priority 150)") {
				t.Errorf("status printed:\n%s", out.String())
			}
			out.Reset()
			errb.Reset()
			if code := cmdToken([]string{"--config", path}, &out, &errb); code != 0 || strings.Count(out.String(), ".") != 2 {
				t.Errorf("token exit code %d, stdout %q, want 0 and a JWT\nstderr: %s", code, out.String(), errb.String())
			}
			out.Reset()
			errb.Reset()
			if code := cmdFingerprint([]string{"--config", path}, &out, &errb); code != 0 || len(strings.TrimSpace(out.String())) < 64 {
				t.Errorf("fingerprint exit code %d, stdout %q, want 0 and a fingerprint\nstderr: %s", code, out.String(), errb.String())
			}
		})
	}
}

// TestClientCommandsStillRefuseBrokenFiles: only the safety checks are
// skipped; a file that does not decode fails status as before.
func TestClientCommandsStillRefuseBrokenFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(path, []byte("role: primary\npassword: "+testPassword+"\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cmd := range map[string]func([]string, *bytes.Buffer, *bytes.Buffer) int{
		"status":      func(a []string, o, e *bytes.Buffer) int { return cmdStatus(a, o, e) },
		"token":       func(a []string, o, e *bytes.Buffer) int { return cmdToken(a, o, e) },
		"fingerprint": func(a []string, o, e *bytes.Buffer) int { return cmdFingerprint(a, o, e) },
	} {
		var out, errb bytes.Buffer
		if code := cmd([]string{"--config", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `role: "primary" is not one of master, backup`) {
			t.Errorf("%s: exit code %d, stderr %q; want 1 naming the role", name, code, errb.String())
		}
	}
}
