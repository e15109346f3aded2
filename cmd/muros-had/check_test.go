package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const exampleConfig = "../../config/testdata/example.yaml"

// testPassword passes every password check without a warning.
const testPassword = "pA7-kx2Q-9mZr-Lw4e-Tb6v"

// weakFiles are configurations `check` must refuse (or warn about) and the
// daemon must refuse alike: name -> file content.
var weakFiles = map[string]string{
	"placeholder.yaml": "role: master\npassword: change-me\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n",
	"short.yaml":       "role: master\npassword: a\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n",
	"paths.yaml": "role: master\npassword: " + testPassword + "\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
		"dbsync:\n  paths: [/, /srv/kea, /var/lib/kea, /srv/kea/x, /var/lib, /etc/muros-had]\n",
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("role: primary\npassword: "+testPassword+"\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/33\ncolour: blue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	warn := filepath.Join(dir, "warn.yaml")
	if err := os.WriteFile(warn, []byte("role: backup\npassword: "+testPassword+"\nsync_interface: eth0\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(dir, "none.yaml")
	if err := os.WriteFile(none, []byte("role: backup\npassword: "+testPassword+"\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\nauth: none\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, weakFiles)
	placeholder, short, paths := filepath.Join(dir, "placeholder.yaml"), filepath.Join(dir, "short.yaml"), filepath.Join(dir, "paths.yaml")
	const covers = ": the backup would receive the master's copy of it\n"
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
				bad + ":8: colour: unknown key (valid keys: role, password, sync_interface, peer, vips, advert_interval, auth, preempt, preempt_delay, garp, vmac, checksum_mode, state_dir, run_dir, status, metrics, conntrack, dbsync, liveness, scheduling, checks, hooks, peer_check)\n" +
				bad + ": 3 problem(s)\n"},
		{"warning still passes", []string{"--config", warn}, 0,
			warn + ": ok: backup priority 100, VRRPv3 auth ah advert 1s, sync eth0, peer 10.0.0.9, 1 VIP(s): eth0 10.0.0.1/24 vrid 10\n",
			"warning: " + warn + ":6: vips[0].interface: eth0 is also the sync_interface: a VIP's LAN then carries VRRP adverts and conntrack sync\n"},
		{"placeholder password", []string{"--config", placeholder}, 1, "",
			placeholder + `:2: password: is a placeholder (it contains "change-me"): generate a shared secret, e.g. with openssl rand -base64 24, the same on both nodes; to change it on a running pair without a split brain see README.md, "Changing the password"` + "\n" +
				placeholder + ": 1 problem(s)\n"},
		{"short password", []string{"--config", short}, 1, "",
			short + ":2: password: 1 characters, fewer than 12: one captured advert lets an attacker test passwords offline; generate one, e.g. with openssl rand -base64 24; to change it on a running pair without a split brain see README.md, \"Changing the password\"\n" +
				short + ": 1 problem(s)\n"},
		{"auth none warns", []string{"--config", none}, 0,
			none + ": ok: backup priority 100, VRRPv3 auth none advert 1s, sync eth2, peer 10.0.0.9, 1 VIP(s): eth0 10.0.0.1/24 vrid 10\n",
			"warning: " + none + ":8: auth: none: VRRP adverts are not authenticated: anyone on eth2's link can send adverts that take the VIPs (priority 255) or make the backup take them while the master keeps them (priority 0, split brain), and replayed adverts go unnoticed; the conntrack sync stays authenticated with the password. Use it only on a link no one else reaches, to pair with a router without AH\n"},
		{"dangerous paths", []string{"--config", paths}, 1, "",
			paths + ":9: dbsync.paths[0]: / would replicate the whole file system, the node's own keys and configuration with it\n" +
				paths + `:9: dbsync.paths[2]: /srv/kea and /var/lib/kea have the same wire name "kea" (the daemon names a path by its last component): rename one` + "\n" +
				paths + ":9: dbsync.paths[3]: /srv/kea/x is inside /srv/kea, which is replicated too: its files would be sent twice and overwrite each other on the backup\n" +
				paths + ":9: dbsync.paths[4]: /var/lib covers /var/lib/muros-had (state_dir)" + covers +
				paths + ":9: dbsync.paths[4]: /var/lib covers /var/lib/muros-had/tls/cert.pem (dbsync.tls.cert)" + covers +
				paths + ":9: dbsync.paths[4]: /var/lib covers /var/lib/muros-had/tls/key.pem (dbsync.tls.key)" + covers +
				paths + ":9: dbsync.paths[4]: /var/lib covers /var/lib/muros-had/jwt.secret (dbsync.jwt.secret_file)" + covers +
				paths + ":9: dbsync.paths[4]: /var/lib contains /var/lib/kea, which is replicated too: its files would be sent twice and overwrite each other on the backup\n" +
				paths + ":9: dbsync.paths[5]: /etc/muros-had covers /etc/muros-had (the packaged configuration directory)" + covers +
				paths + ": 9 problem(s)\n"},
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

// TestRunRefusesWhatCheckRefuses: the daemon loads its file through the same
// validation as check, and refuses each weak file with check's lines, before
// it touches anything.
func TestRunRefusesWhatCheckRefuses(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, weakFiles)
	for name := range weakFiles {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			var checkOut, checkErr bytes.Buffer
			if code := cmdCheck([]string{"--config", path}, &checkOut, &checkErr); code != 1 {
				t.Fatalf("check exit code %d, want 1", code)
			}
			// check's last line counts the problems; the lines before are the problems.
			lines := strings.SplitAfter(checkErr.String(), "\n")
			want := strings.Join(lines[:len(lines)-2], "")
			var runOut, runErr bytes.Buffer
			if code := cmdRun([]string{"--config", path}, &runOut, &runErr); code != 1 {
				t.Fatalf("run exit code %d, want 1", code)
			}
			if diff := cmp.Diff(want, runErr.String()); diff != "" {
				t.Errorf("run's refusal differs from check's (-check +run):\n%s", diff)
			}
		})
	}
}

// TestCheckWarnsAboutSymlinkedPaths: check judges the text of dbsync.paths,
// which may be checked away from the firewall; where it can follow a
// path's symlinks it warns about what the daemon's start will refuse.
func TestCheckWarnsAboutSymlinkedPaths(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "state"), filepath.Join(dir, "db")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ha.yaml")
	src := "role: master\npassword: " + testPassword + "\nsync_interface: eth2\npeer: 10.0.0.9\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
		"state_dir: " + filepath.Join(dir, "state") + "\ndbsync:\n  paths: [" + filepath.Join(dir, "db") + "]\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := cmdCheck([]string{"--config", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d, want 0 (a warning)\n%s", code, stderr.String())
	}
	db, state := filepath.Join(dir, "db"), filepath.Join(dir, "state")
	want := "warning: " + path + ": dbsync.paths[0]: " + db + " resolves to " + state + " (symlinks followed): " + state + " covers " + state + " (state_dir): the backup would receive the master's copy of it; the daemon refuses this at start\n"
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not hold\n%s\ngot:\n%s", want, stderr.String())
	}
}
