package config

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

const minimal = `role: backup
password: pA7-kx2Q-9mZr-Lw4e-Tb6v
sync_interface: eth2
peer: 192.168.255.1
vips:
  - interface: eth0
    address: 203.0.113.1/24
  - interface: eth1
    address: 10.10.0.1/24
`

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("config.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestParseMinimalFillsDefaults(t *testing.T) {
	got := mustParse(t, minimal)
	want := &Config{
		File:          "config.yaml",
		Role:          RoleBackup,
		Password:      testPassword,
		SyncInterface: "eth2",
		Peer:          netip.MustParseAddr("192.168.255.1"),
		VIPs: []VIP{
			{Interface: "eth0", Address: netip.MustParsePrefix("203.0.113.1/24"), VRID: 10},
			{Interface: "eth1", Address: netip.MustParsePrefix("10.10.0.1/24"), VRID: 11},
		},
		AdvertInterval: time.Second,
		Auth:           AuthAH,
		Preempt:        true,
		GARP:           GARP{Repeat: 5, Interval: 10 * time.Millisecond},
		ChecksumMode:   ChecksumPseudoHeader,
		StateDir:       "/var/lib/muros-had",
		RunDir:         "/run/muros-had",
		Status:         Status{Listen: "/run/muros-had/status.sock"},
		Metrics:        Metrics{Enabled: true, Listen: "127.0.0.1:9732"},
		Conntrack: Conntrack{
			Enabled: true,
			Group:   netip.MustParseAddr("225.0.0.50"),
			Port:    3780,
			Filter:  ConntrackFilter{ExcludeLocal: true, Protocols: []string{"tcp", "udp"}},
			Resync:  Resync{StartupTimeout: 30 * time.Second},
		},
		Liveness: Liveness{Enabled: true, Group: netip.MustParseAddr("225.0.0.51"), Port: 3781,
			Interval: time.Millisecond, Detect: 3 * time.Millisecond, QuietInterval: 50 * time.Millisecond, QuietAfter: 5 * time.Second,
			PeerAddress: netip.MustParseAddr("192.168.255.1")},
		DBSync: DBSync{
			Enabled:  true,
			Listen:   ":7443",
			PeerPort: 7443,
			Paths:    []string{"/var/lib/muros/db", "/var/lib/kea"},
			TLS:      TLS{Cert: "/var/lib/muros-had/tls/cert.pem", Key: "/var/lib/muros-had/tls/key.pem"},
			JWT: JWT{SecretFile: "/var/lib/muros-had/jwt.secret", Algorithm: "HS256", TTL: time.Minute,
				Issuer: "muros-had-backup", Audience: "muros-had-master", Leeway: 5 * time.Second},
			ClockSkewWarn: time.Second,
			Limits:        DBSyncLimits{Connections: 64, ConnectionsPerSource: 8, RatePerSource: 10, BurstPerSource: 20},
		},
		PeerCheck:  PeerCheck{Interval: 2 * time.Second, RulesetInterval: 10 * time.Second},
		Scheduling: Scheduling{Policy: "rr", Priority: 40},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("Parse(minimal) mismatch (-want +got):\n%s", diff)
	}
	if got.Priority() != 100 || got.Version() != 3 || got.PeerRole() != RoleMaster {
		t.Errorf("Priority/Version/PeerRole = %d/%d/%s, want 100/3/master", got.Priority(), got.Version(), got.PeerRole())
	}
}

var addrCmp = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		check func(c *Config) any
		want  any
	}{
		{"backup priority", "", func(c *Config) any { return c.Priority() }, uint8(100)},
		{"keepalived-ah is v2", "auth: keepalived-ah\nadvert_interval: 3s\n", func(c *Config) any { return [2]int{c.Version(), int(c.AdvertInterval / time.Second)} }, [2]int{2, 3}},
		{"none is v3", "auth: none\n", func(c *Config) any { return c.Version() }, 3},
		{"fast advert", "advert_interval: 50ms\n", func(c *Config) any { return c.AdvertInterval }, 50 * time.Millisecond},
		{"run_dir moves status socket", "run_dir: /run/mh-a\n", func(c *Config) any { return c.Status.Listen }, "/run/mh-a/status.sock"},
		{"state_dir moves keys", "state_dir: /srv/a\n", func(c *Config) any { return []string{c.DBSync.TLS.Cert, c.DBSync.TLS.Key, c.DBSync.JWT.SecretFile} },
			[]string{"/srv/a/tls/cert.pem", "/srv/a/tls/key.pem", "/srv/a/jwt.secret"}},
		{"status on tcp", "status:\n  listen: 127.0.0.1:9000\n", func(c *Config) any { return c.Status.Listen }, "127.0.0.1:9000"},
		{"status page off by default", "", func(c *Config) any { return c.Status.HTTP }, ""},
		{"status page on loopback", "status:\n  http: 127.0.0.1:9733\n", func(c *Config) any { return c.Status.HTTP }, "127.0.0.1:9733"},
		{"status page on ::1", "status:\n  http: '[::1]:9733'\n", func(c *Config) any { return c.Status.HTTP }, "[::1]:9733"},
		{"status page remote with opt-in", "status:\n  http: 192.0.2.1:9733\n  http_allow_remote: true\n", func(c *Config) any { return c.Status.HTTP }, "192.0.2.1:9733"},
		{"filter cidrs masked", "conntrack:\n  filter:\n    include: [10.1.2.3/8]\n    exclude: [\"2001:db8::1/64\"]\n    protocols: [icmpv6]\n",
			func(c *Config) any { return c.Conntrack.Filter },
			ConntrackFilter{ExcludeLocal: true, Include: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Exclude: []netip.Prefix{netip.MustParsePrefix("2001:db8::/64")}, Protocols: []string{"icmpv6"}}},
		{"peer pin", "dbsync:\n  tls:\n    peer_sha256: \"sha256:" + strings.Repeat("AB:", 31) + "AB\"\n", func(c *Config) any { return len(c.DBSync.TLS.PeerSHA256) }, 32},
		{"preempt off", "preempt: false\npreempt_delay: 2s\n", func(c *Config) any { return [2]any{c.Preempt, c.PreemptDelay} }, [2]any{false, 2 * time.Second}},
		{"peer check", "peer_check:\n  interval: 500ms\n  ruleset_interval: 3s\n", func(c *Config) any { return c.PeerCheck },
			PeerCheck{Interval: 500 * time.Millisecond, RulesetInterval: 3 * time.Second}},
		{"ruleset check off", "peer_check:\n  ruleset_interval: 0s\n", func(c *Config) any { return c.PeerCheck },
			PeerCheck{Interval: 2 * time.Second}},
		{"ipv6 sync group", "conntrack:\n  group: \"ff02::3780\"\n", func(c *Config) any { return c.Conntrack.Group.String() }, "ff02::3780"},
		{"fifo priority", "scheduling:\n  policy: fifo\n  priority: 90\n", func(c *Config) any { return c.Scheduling }, Scheduling{Policy: "fifo", Priority: 90}},
		{"time-sharing nice", "scheduling:\n  policy: other\n  nice: -5\n", func(c *Config) any { return c.Scheduling.Policy + " " + fmt.Sprint(c.Scheduling.Nice) }, "other -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, minimal+tt.extra)
			if diff := cmp.Diff(tt.want, tt.check(c), addrCmp...); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestVRIDDefaultsIgnoreExplicitEntries(t *testing.T) {
	c := mustParse(t, `role: master
password: pA7-kx2Q-9mZr-Lw4e-Tb6v
sync_interface: eth9
peer: fe80::2%eth9
vips:
  - {interface: eth0, address: 203.0.113.1/24, vrid: 40}
  - {interface: eth1, address: "2001:db8::1/64"}
  - {interface: eth2, address: 10.0.0.1/24, vrid: 10}
`)
	var got []uint8
	for _, v := range c.VIPs {
		got = append(got, v.VRID)
	}
	if diff := cmp.Diff([]uint8{40, 11, 10}, got); diff != "" {
		t.Errorf("VRIDs (-want +got):\n%s", diff)
	}
	if c.Priority() != 150 {
		t.Errorf("Priority = %d, want 150", c.Priority())
	}
}

// TestProblems asserts the exact line for each kind of mistake.
func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"empty file", "", []string{
			"config.yaml:1: role: missing required key",
			"config.yaml:1: password: missing required key",
			"config.yaml:1: sync_interface: missing required key",
			"config.yaml:1: peer: missing required key",
			"config.yaml:1: vips: missing required key",
		}},
		{"two documents", minimal + "---\nrole: master\n", []string{"config.yaml:10: more than one YAML document: put everything in one"}},
		{"comment-only file", "# nothing\n", []string{
			"config.yaml:1: role: missing required key",
			"config.yaml:1: password: missing required key",
			"config.yaml:1: sync_interface: missing required key",
			"config.yaml:1: peer: missing required key",
			"config.yaml:1: vips: missing required key",
		}},
		{"not a mapping", "- a\n", []string{`config.yaml:1: must be a mapping of keys, not a list`}},
		{"yaml syntax", "role: [master\n", []string{"config.yaml:1: invalid YAML: did not find expected ',' or ']'"}},
		{"unknown key and typo'd vip key", minimal + "advert: 1s\n", []string{
			"config.yaml:10: advert: unknown key (valid keys: role, password, sync_interface, peer, vips, advert_interval, auth, preempt, preempt_delay, garp, vmac, checksum_mode, state_dir, run_dir, status, metrics, conntrack, dbsync, liveness, scheduling, checks, hooks, peer_check)",
		}},
		{"peer check out of range", minimal + "peer_check:\n  interval: 100ms\n  ruleset_interval: 50ms\n", []string{
			"config.yaml:11: peer_check.interval: 100ms is out of range 200ms..1m0s",
			"config.yaml:12: peer_check.ruleset_interval: 50ms is below 200ms (0 turns the check off)",
		}},
		{"scheduling out of range", minimal + "scheduling:\n  policy: rr\n  priority: 0\n", []string{
			"config.yaml:12: scheduling.priority: 0 is out of range 1..99",
		}},
		{"scheduling mixed", minimal + "scheduling:\n  policy: other\n  priority: 10\n", []string{
			"config.yaml:12: scheduling.priority: applies to policies rr and fifo; other takes a nice value",
		}},
		{"scheduling nice with rr", minimal + "scheduling:\n  nice: -3\n", []string{
			"config.yaml:11: scheduling.nice: applies to policy other; rr takes a priority",
		}},
		{"key twice", minimal + "role: master\n", []string{"config.yaml:10: role: set twice (first on line 1)"}},
		{"bad role, empty password, bad peer", strings.NewReplacer("role: backup", "role: primary", "password: pA7-kx2Q-9mZr-Lw4e-Tb6v", `password: ""`, "peer: 192.168.255.1", "peer: 192.168.255").Replace(minimal), []string{
			`config.yaml:1: role: "primary" is not one of master, backup`,
			"config.yaml:2: password: empty: the VRRP and sync authentication need a shared secret",
			`config.yaml:4: peer: "192.168.255" is not an IP address`,
		}},
		{"bad cidr and missing key", strings.Replace(minimal, "10.10.0.1/24", "10.0.0.1/33", 1) + "  - interface: eth3\n", []string{
			`config.yaml:9: vips[1].address: "10.0.0.1/33" is not a valid CIDR`,
			"config.yaml:10: vips[2].address: missing required key",
		}},
		{"interface twice", strings.Replace(minimal, "interface: eth1", "interface: eth0", 1), []string{
			"config.yaml:8: vips[1].interface: interface eth0 already has an IPv4 VIP in vips[0] (line 6): one VIP per interface and family",
		}},
		{"one interface, both families", minimal + "  - interface: eth0\n    address: 2001:db8::1/64\n  - interface: eth0\n    address: 2001:db8::2/64\n", []string{
			"config.yaml:12: vips[3].interface: interface eth0 already has an IPv6 VIP in vips[2] (line 10): one VIP per interface and family",
		}},
		{"explicit vrid collides with default", minimal + "    vrid: 10\n", []string{
			"config.yaml:10: vips[1].vrid: VRID 10 is already used by vips[0] (default VRID, line 6)",
		}},
		{"default collides with earlier explicit", strings.Replace(minimal, "203.0.113.1/24\n", "203.0.113.1/24\n    vrid: 11\n", 1), []string{
			"config.yaml:9: vips[1]: VRID 11 is already used by vips[0] (explicit vrid, line 8)",
		}},
		{"vrid out of range and not a number", minimal + "    vrid: 256\n  - interface: eth3\n    address: 10.3.0.1/24\n    vrid: ten\n", []string{
			"config.yaml:10: vips[1].vrid: 256 is out of range 1..255",
			`config.yaml:13: vips[2].vrid: must be a whole number, not "ten"`,
		}},
		{"duplicate address", strings.Replace(minimal, "10.10.0.1/24", "203.0.113.1/25", 1), []string{
			"config.yaml:9: vips[1].address: address 203.0.113.1 is already used by vips[0] (line 7)",
		}},
		{"network, broadcast, multicast vip", minimal + "  - {interface: eth3, address: 10.3.0.255/24}\n  - {interface: eth4, address: 224.0.0.18/4}\n  - {interface: eth5, address: 10.5.0.1/31}\n  - {interface: eth6, address: \"::/64\"}\n",
			[]string{
				"config.yaml:10: vips[2].address: 10.3.0.255/24 is the broadcast address of its subnet, not a host address",
				"config.yaml:11: vips[3].address: 224.0.0.18/4 is a multicast address, not a host address",
				"config.yaml:13: vips[5].address: ::/64 is the unspecified address, not a host address",
			}},
		{"network address vip", strings.Replace(minimal, "10.10.0.1/24", "10.10.0.0/24", 1), []string{
			"config.yaml:9: vips[1].address: 10.10.0.0/24 is the network address of its subnet, not a host address",
		}},
		{"peer is a vip", strings.Replace(minimal, "peer: 192.168.255.1", "peer: 10.10.0.1", 1), []string{
			"config.yaml:4: peer: 10.10.0.1 is the address of vips[1]: the peer needs its own management address",
		}},
		{"empty vips", strings.SplitAfter(minimal, "vips:")[0] + " []\n", []string{"config.yaml:5: vips: empty: at least one VIP is required"}},
		{"vips not a list", strings.SplitAfter(minimal, "vips:")[0] + " eth0\n", []string{`config.yaml:5: vips: must be a list, not "eth0"`}},
		{"advert interval range", minimal + "advert_interval: 41s\n", []string{"config.yaml:10: advert_interval: 41s is out of range 10ms..40.95s"}},
		{"advert interval too small", minimal + "advert_interval: 5ms\n", []string{"config.yaml:10: advert_interval: 5ms is out of range 10ms..40.95s"}},
		{"advert interval not centiseconds", minimal + "advert_interval: 15ms\n", []string{"config.yaml:10: advert_interval: 15ms is not a multiple of 10ms (VRRPv3 counts centiseconds)"}},
		{"advert interval unitless", minimal + "advert_interval: 1\n", []string{`config.yaml:10: advert_interval: "1" is not a duration with a unit, like "1s" or "100ms"`}},
		{"keepalived-ah needs whole seconds", minimal + "auth: keepalived-ah\nadvert_interval: 1500ms\n", []string{
			"config.yaml:11: advert_interval: 1.5s must be whole seconds 1s..255s with auth: keepalived-ah (VRRPv2)",
		}},
		{"keepalived-ah rejects ipv6", strings.Replace(minimal, "10.10.0.1/24", `"2001:db8::1/64"`, 1) + "auth: keepalived-ah\n", []string{
			"config.yaml:9: vips[1].address: 2001:db8::1/64 is IPv6, which needs VRRPv3: auth: keepalived-ah is VRRPv2 (IPv4 only)",
		}},
		{"bad enums and bools", minimal + "auth: md5\npreempt: maybe\nchecksum_mode: none\nvmac: 1\n", []string{
			`config.yaml:10: auth: "md5" is not one of ah, keepalived-ah, none`,
			`config.yaml:11: preempt: must be true or false, not "maybe"`,
			`config.yaml:12: checksum_mode: "none" is not one of pseudo-header, message-only`,
			`config.yaml:13: vmac: must be true or false, not "1"`,
		}},
		{"bad interface names", strings.NewReplacer("sync_interface: eth2", "sync_interface: averyveryverylongname", "interface: eth0", "interface: eth0:1").Replace(minimal), []string{
			`config.yaml:3: sync_interface: "averyveryverylongname" is not a valid interface name (1..15 bytes, no '/', ':' or spaces)`,
			`config.yaml:6: vips[0].interface: "eth0:1" is not a valid interface name (1..15 bytes, no '/', ':' or spaces)`,
		}},
		{"nested problems", minimal + `garp:
  repeat: 0
  interval: 2s
state_dir: relative/dir
status:
  listen: status.sock
metrics:
  listen: localhost:99999
conntrack:
  group: 10.0.0.1
  port: 0
  filter:
    include: [nonsense]
    protocols: []
  resync:
    startup_timeout: 0s
dbsync:
  listen: 7443
  paths: [/a, /a/, b]
  tls:
    peer_sha256: abc
  jwt:
    algorithm: none
    ttl: 0s
    issuer: muros-had-master
    audience: muros-had-master
    extra: 1
`, []string{
			"config.yaml:11: garp.repeat: 0 is out of range 1..100",
			"config.yaml:12: garp.interval: 2s is out of range 0s..1s",
			`config.yaml:13: state_dir: "relative/dir" is not an absolute path`,
			`config.yaml:15: status.listen: "status.sock" is neither an absolute socket path nor IP:port`,
			`config.yaml:17: metrics.listen: "localhost:99999" is not IP:port (or :port for every address)`,
			"config.yaml:19: conntrack.group: 10.0.0.1 is not a multicast group (IPv4 224.0.0.0/4, or IPv6 ff00::/8 such as ff02::3780)",
			"config.yaml:20: conntrack.port: 0 is out of range 1..65535",
			`config.yaml:22: conntrack.filter.include[0]: "nonsense" is not a valid CIDR`,
			"config.yaml:23: conntrack.filter.protocols: empty: no flow would be replicated (set conntrack.enabled: false instead)",
			"config.yaml:25: conntrack.resync.startup_timeout: 0s is out of range 1s..1h0m0s",
			`config.yaml:27: dbsync.listen: "7443" is not IP:port (or :port for every address)`,
			`config.yaml:28: dbsync.paths[1]: "/a" is already listed as dbsync.paths[0]`,
			`config.yaml:28: dbsync.paths[2]: "b" is not an absolute path`,
			`config.yaml:30: dbsync.tls.peer_sha256: "abc" is not a SHA-256 fingerprint (64 hex digits, colons allowed)`,
			`config.yaml:32: dbsync.jwt.algorithm: "none" is not one of HS256, HS384, HS512`,
			"config.yaml:33: dbsync.jwt.ttl: 0s is out of range 1s..24h0m0s",
			`config.yaml:34: dbsync.jwt.issuer: "muros-had-master" equals the audience: a token this node mints would be accepted by itself`,
			"config.yaml:36: dbsync.jwt.extra: unknown key (valid keys: secret_file, algorithm, ttl, leeway, issuer, audience)",
		}},
		{"listeners on one port", minimal + "metrics:\n  listen: 127.0.0.1:7443\n", []string{
			"config.yaml:11: metrics.listen: 127.0.0.1:7443 binds the same port as dbsync.listen (:7443)",
		}},
		{"status page on a remote address", minimal + "status:\n  http: 0.0.0.0:9733\n", []string{
			"config.yaml:11: status.http: 0.0.0.0:9733 is not a loopback address: the status page has no authentication; set status.http_allow_remote: true to serve it to other hosts (read-only), or put a proxy with authentication in front",
		}},
		{"status page on every address", minimal + "status:\n  http: :9733\n", []string{
			"config.yaml:11: status.http: :9733 is not a loopback address: the status page has no authentication; set status.http_allow_remote: true to serve it to other hosts (read-only), or put a proxy with authentication in front",
		}},
		{"status page on the metrics port", minimal + "metrics:\n  enabled: true\n  listen: 127.0.0.1:9733\nstatus:\n  http: 127.0.0.1:9733\n", []string{
			"config.yaml:14: status.http: 127.0.0.1:9733 binds the same port as metrics.listen (127.0.0.1:9733)",
		}},
		{"listeners on one port, different hosts", minimal + "metrics:\n  listen: 127.0.0.1:7443\ndbsync:\n  listen: 192.0.2.1:7443\n", nil},
		{"mapping where scalar expected", strings.Replace(minimal, "password: pA7-kx2Q-9mZr-Lw4e-Tb6v", "password: {a: b}", 1), []string{
			"config.yaml:2: password: must be a single value, not a mapping",
		}},
		{"null value", strings.Replace(minimal, "password: pA7-kx2Q-9mZr-Lw4e-Tb6v", "password:", 1), []string{
			"config.yaml:2: password: must be a single value, not empty",
		}},
		{"too many default vrids", func() string {
			var b strings.Builder
			b.WriteString("role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: s\npeer: 10.9.9.9\nvips:\n")
			for i := range 247 {
				b.WriteString("  - {interface: e" + itoa(i) + ", address: 10.0." + itoa(i) + ".1/24}\n")
			}
			return b.String()
		}(), []string{"config.yaml:252: vips[246]: default VRID 256 is above 255: set vrid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("config.yaml", []byte(tt.src))
			var got []string
			if err != nil {
				ps, ok := err.(Problems)
				if !ok {
					t.Fatalf("error is %T, want Problems: %v", err, err)
				}
				got = ps.Strings()
				if err.Error() != strings.Join(got, "\n") {
					t.Errorf("Error() is not one problem per line:\n%s", err)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func itoa(i int) string { return strconvItoa(i) }

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"none", minimal, nil},
		{"vip on sync interface", strings.Replace(minimal, "interface: eth1", "interface: eth2", 1), []string{
			"config.yaml:8: vips[1].interface: eth2 is also the sync_interface: a VIP's LAN then carries VRRP adverts and conntrack sync",
		}},
		{"keepalived-ah password", minimal + "auth: keepalived-ah\n", []string{
			"config.yaml:2: password: auth: keepalived-ah keys the VRRP adverts (HMAC-MD5-96, keepalived's scheme) with only the first 8 bytes of the password: at most 64 bits, which one captured advert lets an attacker search offline; the conntrack sync still uses all of it. Use keepalived-ah only while migrating from keepalived",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.src)
			var got []string
			if len(c.Warnings) > 0 {
				got = c.Warnings.Strings()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadNamesFileAndWrapsReadError(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ha.yaml")
	if err := os.WriteFile(p, []byte("role: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+":1: role: ") {
		t.Errorf("Load error = %v, want it to start with %q", err, p+":1: role: ")
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load(missing) = %v, want a wrapped not-exist error", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestGoldenExample parses the shipped example and compares every field
// with a golden dump, so a changed default or decoding is a visible diff.
func TestGoldenExample(t *testing.T) {
	c, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	got := dump(c)
	golden := "testdata/example.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./config -run Golden -update to create)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("example.yaml decoded differently (-golden +got):\n%s", diff)
	}
}
