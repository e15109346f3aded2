package config

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPeerPinFile: Load takes the pin `muros-had pair` wrote under
// state_dir when the file pins nothing itself, prefers the file's own
// dbsync.tls.peer_sha256, and refuses a pin file that is not a
// fingerprint.
func TestPeerPinFile(t *testing.T) {
	const filePin = "aa00000000000000000000000000000000000000000000000000000000000001"
	const yamlPin = "bb00000000000000000000000000000000000000000000000000000000000002"
	tests := []struct {
		name     string
		yamlPin  bool
		pinFile  string // content; "" none
		want     string // hex of PeerSHA256
		wantFrom bool   // PeerSHA256File set
		fails    bool
	}{
		{"no pin anywhere", false, "", "", false, false},
		{"pin file", false, filePin + "\n", filePin, true, false},
		{"pin file with colons and prefix", false, "SHA256:" + strings.ToUpper(colons(filePin)), filePin, true, false},
		{"the configuration's pin wins", true, filePin + "\n", yamlPin, false, false},
		{"pin file not a fingerprint", false, "not-a-pin\n", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			src := strong + "status:\n  listen: /run/x/st.sock\nstate_dir: " + state + "\n"
			if tt.yamlPin {
				src += "dbsync:\n  tls:\n    peer_sha256: " + yamlPin + "\n"
			}
			path := filepath.Join(dir, "ha.yaml")
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.pinFile != "" {
				if err := os.MkdirAll(filepath.Join(state, "tls"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(state, "tls", "peer.sha256"), []byte(tt.pinFile), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, load := range []func(string) (*Config, error){Load, LoadForClient} {
				c, err := load(path)
				if (err != nil) != tt.fails {
					t.Fatalf("error %v, want failure %v", err, tt.fails)
				}
				if err != nil {
					if !strings.Contains(err.Error(), "peer.sha256") {
						t.Errorf("the error does not name the pin file: %v", err)
					}
					continue
				}
				if diff := cmp.Diff(tt.want, hex.EncodeToString(c.DBSync.TLS.PeerSHA256)); diff != "" {
					t.Errorf("pin (-want +got):\n%s", diff)
				}
				if got := c.DBSync.TLS.PeerSHA256File != ""; got != tt.wantFrom {
					t.Errorf("PeerSHA256File = %q", c.DBSync.TLS.PeerSHA256File)
				}
			}
		})
	}
}

func colons(h string) string {
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}
