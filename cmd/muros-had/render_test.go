package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/config"
)

func TestRenderWritesBothFiles(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := cmdRender([]string{"--config", exampleConfig, "--out", out, "--sync-address", "192.168.255.1"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr.String())
	}
	c, err := config.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.Render(c, config.RenderOptions{SyncAddress: netip.MustParseAddr("192.168.255.1")})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"keepalived.conf": want.Keepalived, "conntrackd.conf": want.Conntrackd} {
		p := filepath.Join(out, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(data), string(got)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600 (it may hold the password)", name, fi.Mode().Perm())
		}
	}
	wantOut := "wrote " + filepath.Join(out, "keepalived.conf") + "\nwrote " + filepath.Join(out, "conntrackd.conf") + "\n"
	if diff := cmp.Diff(wantOut, stdout.String()); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	if !strings.Contains(stderr.String(), "note: keepalived.conf: auth: ah (VRRPv3 in IPsec AH) has no keepalived equivalent; instances run VRRPv3 WITHOUT authentication\n") {
		t.Errorf("stderr lacks the authentication note:\n%s", stderr.String())
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 2 {
		t.Errorf("out dir holds %d entries, want 2 (no temp files left)", len(entries))
	}
}

func TestRenderErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("role: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no sync address", []string{"--config", exampleConfig}, 2, "usage: muros-had render --config FILE --sync-address IP [--out DIR] [--notify-script PATH]\n"},
		{"bad sync address", []string{"--config", exampleConfig, "--sync-address", "x"}, 2, "muros-had render: --sync-address: ParseAddr(\"x\"): unable to parse IP\n"},
		{"invalid config", []string{"--config", bad, "--sync-address", "192.168.255.1", "--out", dir}, 1,
			bad + `:1: role: "x" is not one of master, backup` + "\n" +
				bad + ":1: password: missing required key\n" +
				bad + ":1: sync_interface: missing required key\n" +
				bad + ":1: peer: missing required key\n" +
				bad + ":1: vips: missing required key\n"},
		{"missing out dir", []string{"--config", exampleConfig, "--sync-address", "192.168.255.1", "--out", filepath.Join(dir, "nope")}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cmdRender(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if tt.wantStderr != "" {
				if diff := cmp.Diff(tt.wantStderr, stderr.String()); diff != "" {
					t.Errorf("stderr (-want +got):\n%s", diff)
				}
			}
		})
	}
}
