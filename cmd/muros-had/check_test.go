package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const exampleConfig = "../../config/testdata/example.yaml"

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("role: primary\npassword: x\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/33\ncolour: blue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	warn := filepath.Join(dir, "warn.yaml")
	if err := os.WriteFile(warn, []byte("role: backup\npassword: x\nsync_interface: eth0\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"valid", []string{"--config", exampleConfig}, 0,
			exampleConfig + ": ok: master priority 150, VRRPv3 auth ah advert 1s, sync eth2, peer 192.168.255.2, 2 VIP(s): eth0 203.0.113.1/24 vrid 10, eth1 10.10.0.1/24 vrid 21\n", ""},
		{"problems", []string{"--config", bad}, 1, "",
			bad + `:1: role: "primary" is not one of master, backup` + "\n" +
				bad + `:7: vips[0].address: "10.0.0.1/33" is not a valid CIDR` + "\n" +
				bad + ":8: colour: unknown key (valid keys: role, password, sync_interface, peer, vips, advert_interval, auth, preempt, preempt_delay, garp, vmac, checksum_mode, state_dir, run_dir, status, metrics, conntrack, dbsync, scheduling, peer_check)\n" +
				bad + ": 3 problem(s)\n"},
		{"warning still passes", []string{"--config", warn}, 0,
			warn + ": ok: backup priority 100, VRRPv3 auth ah advert 1s, sync eth0, peer 10.0.0.9, 1 VIP(s): eth0 10.0.0.1/24 vrid 10\n",
			"warning: " + warn + ":6: vips[0].interface: eth0 is also the sync_interface: a VIP's LAN then carries VRRP adverts and conntrack sync\n"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, 1, "",
			"muros-had check: read config: open " + filepath.Join(dir, "nope.yaml") + ": no such file or directory\n"},
		{"no flag", nil, 2, "", "usage: muros-had check --config FILE\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cmdCheck(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if diff := cmp.Diff(tt.wantStdout, stdout.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantStderr, stderr.String()); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}
