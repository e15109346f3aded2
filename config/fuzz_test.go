package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"pgregory.net/rapid"
)

// FuzzParse feeds arbitrary bytes to the decoder: an operator file must
// never panic it, and whatever it accepts must satisfy the invariants the
// daemon relies on.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	withPaths := func(ps ...string) string {
		return strongExample + "dbsync:\n  paths: [" + strings.Join(ps, ", ") + "]\n"
	}
	for _, seed := range []string{
		withPaths(fuzzFile), withPaths("/srv/ha"), withPaths("/srv/ha/kea", "/srv/ha/db"), withPaths("/etc/muros-had/x"),
		withPaths("/var/lib/muros-had/tls"), withPaths("/run"), withPaths("/var/lib/a", "/srv/A"), withPaths("/srv/a", "/srv/a/b"),
		withPaths("/srv/k") + "  tls:\n    key: /srv/k/ha.key\n", withPaths("/srv/s") + "status:\n  listen: /srv/s/x.sock\n",
		withPaths("/srv/ha/node.yaml.d", "/srv/h"), withPaths("/srv/é", "/srv/.."),
		string(example), minimal, "", "role: [", "vips: *a", "a: &a [*a]",
		minimal + "auth: keepalived-ah\n",
		minimal + "vips2: &x {a: 1}\n<<: *x\n",
		"role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: s\npeer: ::1\nvips: [{interface: a, address: \"::2/64\"}, {interface: b, address: 10.0.0.1/8, vrid: 10}]\n",
		"? [a]\n: b\n",
		"role: !!binary aGVsbG8=\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(fuzzFile, data)
		checkPathVerdict(t, data, err)
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %v (%T) is not a non-empty Problems", err, err)
			}
			return
		}
		checkInvariants(t, c)
		// Render must not fail on anything Parse accepts, except passwords
		// keepalived cannot carry (reported as an error, never a panic).
		if _, err := Render(c, RenderOptions{SyncAddress: netip.MustParseAddr("192.0.2.1")}); err != nil && !strings.Contains(err.Error(), "password") {
			t.Fatalf("Render of accepted config: %v", err)
		}
	})
}

func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	if len(c.VIPs) == 0 {
		t.Fatal("accepted a config without VIPs")
	}
	if c.Role != RoleMaster && c.Role != RoleBackup {
		t.Fatalf("role %q", c.Role)
	}
	if c.Password == "" || c.SyncInterface == "" || !c.Peer.IsValid() {
		t.Fatalf("required key empty: %+v", c)
	}
	vrids := map[uint8]bool{}
	ifaces := map[string]bool{}
	for _, v := range c.VIPs {
		if v.VRID == 0 || vrids[v.VRID] {
			t.Fatalf("VRID %d zero or repeated", v.VRID)
		}
		vrids[v.VRID] = true
		if ifaces[v.Interface] {
			t.Fatalf("interface %s repeated", v.Interface)
		}
		ifaces[v.Interface] = true
		if c.Version() == 2 && !v.Address.Addr().Is4() {
			t.Fatalf("VRRPv2 with IPv6 VIP %s", v.Address)
		}
	}
	if c.AdvertInterval < MinAdvertInterval || c.AdvertInterval > MaxAdvertInterval || c.AdvertInterval%MinAdvertInterval != 0 {
		t.Fatalf("advert interval %s", c.AdvertInterval)
	}
	if n := utf8.RuneCountInString(c.Password); n < MinPasswordLen {
		t.Fatalf("accepted a %d-character password", n)
	}
}

// fuzzFile is where FuzzParse's input lives: an absolute name, so the
// rules about the file and its directory apply.
const fuzzFile = "/srv/ha/node.yaml"

// strongExample is a valid file the path seeds extend.
const strongExample = "role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: eth2\npeer: 192.168.255.2\nvips:\n  - {interface: eth0, address: 203.0.113.1/24}\n"

// checkPathVerdict holds Parse's verdict on the replicated paths (err is
// Parse's) to the brute-force reference (refPathProblems): the file is
// parsed again without the safety checks (LoadForClient's mode), and where
// that succeeds, Parse reports a dbsync.paths problem exactly when the
// reference finds one.
func checkPathVerdict(t *testing.T, data []byte, err error) {
	t.Helper()
	c, cerr := parse(fuzzFile, "/srv/ha", data, true)
	if cerr != nil || !c.DBSync.Enabled {
		return
	}
	want := refPathProblems(c, fuzzFile)
	var got []string
	var ps Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			if strings.HasPrefix(p.Key, "dbsync.paths") {
				got = append(got, p.String())
			}
		}
	}
	if (len(want) > 0) != (len(got) > 0) {
		t.Fatalf("paths %q: the reference finds %q, Parse %q", c.DBSync.Paths, want, got)
	}
}

// TestVRIDAssignmentProperty: for any mix of explicit and default VRIDs,
// Parse either assigns unique VRIDs (defaults = 10 + position) or reports a
// VRID problem — never a silent duplicate.
func TestVRIDAssignmentProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 20).Draw(t, "n")
		var b strings.Builder
		b.WriteString("role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: sync0\npeer: 192.0.2.200\nvips:\n")
		explicit := make([]int, n)
		for i := range n {
			fmt.Fprintf(&b, "  - interface: if%d\n    address: 192.0.2.%d/24\n", i, i+1)
			if rapid.Bool().Draw(t, "explicit") {
				explicit[i] = rapid.IntRange(1, 40).Draw(t, "vrid")
				fmt.Fprintf(&b, "    vrid: %d\n", explicit[i])
			}
		}
		c, err := Parse("p.yaml", []byte(b.String()))
		want := make([]int, n)
		seen := map[int]bool{}
		dup := false
		for i := range n {
			want[i] = 10 + i
			if explicit[i] != 0 {
				want[i] = explicit[i]
			}
			dup = dup || seen[want[i]]
			seen[want[i]] = true
		}
		if dup {
			if err == nil || !strings.Contains(err.Error(), "is already used by") {
				t.Fatalf("duplicate VRIDs %v accepted or misreported: %v", want, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("unique VRIDs %v rejected: %v", want, err)
		}
		for i, v := range c.VIPs {
			if int(v.VRID) != want[i] {
				t.Fatalf("vips[%d].VRID = %d, want %d", i, v.VRID, want[i])
			}
		}
	})
}

// BenchmarkParse measures decoding and validating the shipped example, the
// cost paid on every start and SIGHUP reload.
func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("example.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}
