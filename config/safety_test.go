package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testPassword is a password every check accepts without a warning.
const testPassword = "pA7-kx2Q-9mZr-Lw4e-Tb6v"

// strong is a valid file: role, a strong password, interfaces, peer, VIPs.
const strong = `role: master
password: "` + testPassword + `"
sync_interface: eth2
peer: 192.168.255.2
vips:
  - interface: eth0
    address: 203.0.113.1/24
`

func withPassword(pw string) string {
	return strings.Replace(strong, `"`+testPassword+`"`, pw, 1)
}

// problemsAndWarnings parses src as file and returns its problems and
// warnings, one string each.
func problemsAndWarnings(t *testing.T, file, src string) (problems, warnings []string) {
	t.Helper()
	c, err := Parse(file, []byte(src))
	if err != nil {
		ps, ok := err.(Problems)
		if !ok {
			t.Fatalf("error is %T, want Problems: %v", err, err)
		}
		return ps.Strings(), nil
	}
	if len(c.Warnings) > 0 {
		warnings = c.Warnings.Strings()
	}
	return nil, warnings
}

// TestWeakPasswords: placeholder and short passwords are refused, weak
// ones and unauthenticated adverts warned about.
func TestWeakPasswords(t *testing.T) {
	tests := []struct {
		name         string
		src          string
		wantProblems []string
		wantWarnings []string
	}{
		{"strong", strong, nil, nil},
		{"shipped example value", withPassword(`"change-me"`), []string{
			`config.yaml:2: password: is a placeholder (it contains "change-me"): generate a shared secret, e.g. with openssl rand -base64 24, the same on both nodes; to change it on a running pair without a split brain see README.md, "Changing the password"`,
		}, nil},
		{"placeholder however spelled and however long", withPassword(`"Change_Me-please-0123456789"`), []string{
			`config.yaml:2: password: is a placeholder (it contains "change-me"): generate a shared secret, e.g. with openssl rand -base64 24, the same on both nodes; to change it on a running pair without a split brain see README.md, "Changing the password"`,
		}, nil},
		{"the dist placeholder", withPassword(`"GENERATE ME: openssl rand -base64 24"`), []string{
			`config.yaml:2: password: is a placeholder (it contains "generate me"): generate a shared secret, e.g. with openssl rand -base64 24, the same on both nodes; to change it on a running pair without a split brain see README.md, "Changing the password"`,
		}, nil},
		{"one character", withPassword(`"a"`), []string{
			"config.yaml:2: password: 1 characters, fewer than 12: one captured advert lets an attacker test passwords offline; generate one, e.g. with openssl rand -base64 24; to change it on a running pair without a split brain see README.md, \"Changing the password\"",
		}, nil},
		{"eleven characters", withPassword(`"aB3$eF6&hI9"`), []string{
			"config.yaml:2: password: 11 characters, fewer than 12: one captured advert lets an attacker test passwords offline; generate one, e.g. with openssl rand -base64 24; to change it on a running pair without a split brain see README.md, \"Changing the password\"",
		}, nil},
		{"twelve characters warned", withPassword(`"aB3$eF6&hI9*"`), nil, []string{
			"config.yaml:2: password: 12 characters: 16 or more are advised (openssl rand -base64 24 gives 32)",
		}},
		{"low variety warned", withPassword(`"abababababababababab"`), nil, []string{
			"config.yaml:2: password: only 2 different characters: a repeated pattern is guessed long before its length suggests; generate one, e.g. with openssl rand -base64 24",
		}},
		{"auth none warned", strong + "auth: none\n", nil, []string{
			"config.yaml:8: auth: none: VRRP adverts are not authenticated: anyone on eth2's link can send adverts that take the VIPs (priority 255) or make the backup take them while the master keeps them (priority 0, split brain), and replayed adverts go unnoticed; the conntrack sync stays authenticated with the password. Use it only on a link no one else reaches, to pair with a router without AH",
		}},
		{"keepalived-ah keys with 8 bytes", strong + "auth: keepalived-ah\n", nil, []string{
			"config.yaml:2: password: auth: keepalived-ah keys the VRRP adverts (HMAC-MD5-96, keepalived's scheme) with only the first 8 bytes of the password: at most 64 bits, which one captured advert lets an attacker search offline; the conntrack sync still uses all of it. Use keepalived-ah only while migrating from keepalived",
		}},
		{"keepalived-ah short password still refused", withPassword(`"aB3$eF6&"`) + "auth: keepalived-ah\n", []string{
			"config.yaml:2: password: 8 characters, fewer than 12: one captured advert lets an attacker test passwords offline; generate one, e.g. with openssl rand -base64 24; to change it on a running pair without a split brain see README.md, \"Changing the password\"",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems, warnings := problemsAndWarnings(t, "config.yaml", tt.src)
			if diff := cmp.Diff(tt.wantProblems, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWarnings, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDangerousPaths: replicated paths the daemon would refuse, or that
// would copy the master's keys and configuration onto the backup.
func TestDangerousPaths(t *testing.T) {
	paths := func(ps ...string) string {
		return strong + "dbsync:\n  paths:\n    - " + strings.Join(ps, "\n    - ") + "\n"
	}
	const covers = ": the backup would receive the master's copy of it"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"defaults", strong, nil},
		{"root", paths("/"), []string{
			"config.yaml:10: dbsync.paths[0]: / would replicate the whole file system, the node's own keys and configuration with it",
		}},
		{"same last component", paths("/var/lib/kea", "/srv/Kea"), []string{
			`config.yaml:11: dbsync.paths[1]: /var/lib/kea and /srv/Kea have the same wire name "kea" (the daemon names a path by its last component): rename one`,
		}},
		{"nested", paths("/var/lib/muros", "/var/lib/muros/db"), []string{
			"config.yaml:11: dbsync.paths[1]: /var/lib/muros/db is inside /var/lib/muros, which is replicated too: its files would be sent twice and overwrite each other on the backup",
		}},
		{"covers state_dir", paths("/var/lib/muros", "/var/lib"), []string{
			"config.yaml:11: dbsync.paths[1]: /var/lib covers /var/lib/muros-had (state_dir)" + covers,
			"config.yaml:11: dbsync.paths[1]: /var/lib covers /var/lib/muros-had/tls/cert.pem (dbsync.tls.cert)" + covers,
			"config.yaml:11: dbsync.paths[1]: /var/lib covers /var/lib/muros-had/tls/key.pem (dbsync.tls.key)" + covers,
			"config.yaml:11: dbsync.paths[1]: /var/lib covers /var/lib/muros-had/jwt.secret (dbsync.jwt.secret_file)" + covers,
			"config.yaml:11: dbsync.paths[1]: /var/lib contains /var/lib/muros, which is replicated too: its files would be sent twice and overwrite each other on the backup",
		}},
		{"inside state_dir", paths("/var/lib/muros-had/dbsync"), []string{
			"config.yaml:10: dbsync.paths[0]: /var/lib/muros-had/dbsync is inside /var/lib/muros-had (state_dir), which the daemon writes itself",
		}},
		{"covers /etc/muros-had", paths("/etc/muros-had"), []string{
			"config.yaml:10: dbsync.paths[0]: /etc/muros-had covers /etc/muros-had (the packaged configuration directory)" + covers,
		}},
		{"covers the key files set elsewhere", paths("/srv/keys") + "  tls:\n    key: /srv/keys/ha.key\n  jwt:\n    secret_file: /srv/keys/jwt\n", []string{
			"config.yaml:10: dbsync.paths[0]: /srv/keys covers /srv/keys/ha.key (dbsync.tls.key)" + covers,
			"config.yaml:10: dbsync.paths[0]: /srv/keys covers /srv/keys/jwt (dbsync.jwt.secret_file)" + covers,
		}},
		{"covers the status socket", paths("/srv/sock") + "status:\n  listen: /srv/sock/ha.sock\n", []string{
			"config.yaml:10: dbsync.paths[0]: /srv/sock covers /srv/sock/ha.sock (status.listen)" + covers,
		}},
		{"inside run_dir", paths("/run/muros-had/x"), []string{
			"config.yaml:10: dbsync.paths[0]: /run/muros-had/x is inside /run/muros-had (run_dir), which the daemon writes itself",
		}},
		{"dbsync off: paths unused", paths("/") + "  enabled: false\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems, _ := problemsAndWarnings(t, "config.yaml", tt.src)
			if diff := cmp.Diff(tt.want, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPathCoversConfigDir: Load refuses a replicated path covering the
// directory of the file it reads, wherever that is.
func TestPathCoversConfigDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ha.yaml")
	src := strong + "dbsync:\n  paths: [/var/lib/kea, " + dir + "]\n"
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	var got []string
	if ps, ok := err.(Problems); ok {
		got = ps.Strings()
	} else if err != nil {
		t.Fatal(err)
	}
	want := []string{
		file + ":9: dbsync.paths[1]: " + dir + " covers " + dir + " (the directory of this configuration file): the backup would receive the master's copy of it",
		file + ":9: dbsync.paths[1]: " + dir + " covers " + file + " (this configuration file): the backup would receive the master's copy of it",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestConfigFilePaths: no replicated path is, covers or (in the packaged
// directory) lies inside the configuration file being checked: the backup
// would receive the master's role: master file. Inside a configuration
// directory of the operator's choosing other paths are allowed: it may be
// /etc or a lab node's directory, and the daemon's own files in it are each
// guarded by name.
func TestConfigFilePaths(t *testing.T) {
	paths := func(ps ...string) string {
		return strong + "dbsync:\n  paths:\n    - " + strings.Join(ps, "\n    - ") + "\n"
	}
	const covers = ": the backup would receive the master's copy of it"
	const packaged = "/etc/muros-had/muros-had.yaml"
	tests := []struct {
		name string
		file string
		src  string
		want []string
	}{
		{"the file itself", "/srv/ha/node.yaml", paths("/srv/ha/node.yaml"), []string{
			"/srv/ha/node.yaml:10: dbsync.paths[0]: /srv/ha/node.yaml covers /srv/ha/node.yaml (this configuration file)" + covers,
		}},
		{"the packaged file itself", packaged, paths(packaged), []string{
			packaged + ":10: dbsync.paths[0]: /etc/muros-had/muros-had.yaml is inside /etc/muros-had (the packaged configuration directory), which holds this node's own configuration",
			packaged + ":10: dbsync.paths[0]: /etc/muros-had/muros-had.yaml covers /etc/muros-had/muros-had.yaml (this configuration file)" + covers,
		}},
		{"the packaged file checked elsewhere", "/srv/ha/node.yaml", paths(packaged), []string{
			"/srv/ha/node.yaml:10: dbsync.paths[0]: /etc/muros-had/muros-had.yaml is inside /etc/muros-had (the packaged configuration directory), which holds this node's own configuration",
		}},
		{"a file inside the packaged directory", packaged, paths("/etc/muros-had/shared"), []string{
			packaged + ":10: dbsync.paths[0]: /etc/muros-had/shared is inside /etc/muros-had (the packaged configuration directory), which holds this node's own configuration",
		}},
		{"covers the directory and the file", "/srv/ha/node.yaml", paths("/srv"), []string{
			"/srv/ha/node.yaml:10: dbsync.paths[0]: /srv covers /srv/ha (the directory of this configuration file)" + covers,
			"/srv/ha/node.yaml:10: dbsync.paths[0]: /srv covers /srv/ha/node.yaml (this configuration file)" + covers,
		}},
		{"beside the file in an operator's directory", "/srv/ha/node.yaml", paths("/srv/ha/kea", "/srv/ha/db"), nil},
		{"a sibling with a similar name", "/srv/ha/node.yaml", paths("/srv/ha/node.yaml.d"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems, _ := problemsAndWarnings(t, tt.file, tt.src)
			if diff := cmp.Diff(tt.want, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
