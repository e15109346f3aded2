package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLoadForClient: the client load skips the password and replicated-path
// checks Load makes (a running daemon's status must never be hidden by a
// file an upgrade refuses), and nothing else.
func TestLoadForClient(t *testing.T) {
	tests := []struct {
		name       string
		src        string
		loadFails  bool
		clientFail bool
	}{
		{"strong", strong, false, false},
		{"placeholder password", withPassword(`"change-me"`), true, false},
		{"short password", withPassword(`"a"`), true, false},
		{"empty password", withPassword(`""`), true, false},
		{"replicated path covering the configuration", strong + "dbsync:\n  paths: [/etc]\n", true, false},
		{"bad role", strings.Replace(strong, "role: master", "role: primary", 1), true, true},
		{"unknown key", strong + "colour: blue\n", true, true},
		{"missing password", strings.Replace(strong, `password: "`+testPassword+`"`+"\n", "", 1), true, true},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "ha.yaml")
			if err := os.WriteFile(path, []byte(tt.src+"status:\n  listen: /run/x/st.sock\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			c, cerr := LoadForClient(path)
			if diff := cmp.Diff([2]bool{tt.loadFails, tt.clientFail}, [2]bool{err != nil, cerr != nil}); diff != "" {
				t.Fatalf("(Load fails, LoadForClient fails) (-want +got):\n%s\nLoad: %v\nLoadForClient: %v", diff, err, cerr)
			}
			if cerr == nil && c.Status.Listen != "/run/x/st.sock" {
				t.Errorf("status.listen = %q", c.Status.Listen)
			}
		})
	}
}
