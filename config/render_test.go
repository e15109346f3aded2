package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/lab"
)

// renderCase is one configuration the fallback must express; the lab test
// feeds each to the real keepalived and conntrackd.
type renderCase struct {
	name  string
	extra string // appended to the base file
	opt   RenderOptions
	// iface names the VIP interfaces the namespace needs.
	ifaces []string
}

const renderBase = `role: master
password: "pa ss-w0rd-Zq8k-Xm3v" # keepalived-ah: auth_pass "pa ss-w0"
sync_interface: sync0
peer: 192.168.255.2
vips:
  - interface: wan0
    address: 203.0.113.1/24
  - interface: lan0
    address: 10.10.0.1/24
    vrid: 42
`

var syncOpt = RenderOptions{SyncAddress: netip.MustParseAddr("192.168.255.1")}

func renderCases() []renderCase {
	return []renderCase{
		{name: "default ah", extra: "", opt: syncOpt},
		{name: "keepalived-ah backup", extra: "auth: keepalived-ah\nadvert_interval: 2s\npreempt: false\n", opt: RenderOptions{SyncAddress: syncOpt.SyncAddress, NotifyScript: "/usr/local/lib/muros/primary-backup.sh"}},
		{name: "keepalived-ah master", extra: "auth: keepalived-ah\n", opt: syncOpt},
		{name: "none ipv6 fast", extra: "auth: none\nadvert_interval: 20ms\npreempt_delay: 1500ms\ngarp: {refresh: 30s, interval: 0s}\nchecksum_mode: message-only\nvmac: true\n" +
			"conntrack:\n  filter:\n    exclude: [\"2001:db8::/32\", 198.51.100.0/24]\n    protocols: [tcp, udp, sctp, dccp, icmp, icmpv6]\n  resync: {interval: 10m}\n", opt: syncOpt},
		{name: "include filter", extra: "conntrack:\n  filter:\n    include: [10.0.0.0/8]\n", opt: syncOpt},
	}
}

func renderCase2Config(t *testing.T, rc renderCase, runDir string) *Config {
	t.Helper()
	src := renderBase + rc.extra
	if rc.name == "none ipv6 fast" {
		src = strings.Replace(src, "10.10.0.1/24", `"2001:db8:10::1/64"`, 1)
	}
	if runDir != "" {
		src += "run_dir: " + runDir + "\n"
	}
	c, err := Parse("ha.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// TestRenderGolden pins the rendered files; review a diff, then refresh
// with -update.
func TestRenderGolden(t *testing.T) {
	for _, rc := range renderCases() {
		t.Run(rc.name, func(t *testing.T) {
			r, err := Render(renderCase2Config(t, rc, ""), rc.opt)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			base := strings.ReplaceAll(rc.name, " ", "-")
			for _, f := range []struct {
				name string
				data []byte
			}{{base + ".keepalived.conf", r.Keepalived}, {base + ".conntrackd.conf", r.Conntrackd}} {
				golden := filepath.Join("testdata", "render", f.name)
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, f.data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run with -update to create)", err)
				}
				if diff := cmp.Diff(string(want), string(f.data)); diff != "" {
					t.Errorf("%s (-golden +got):\n%s", f.name, diff)
				}
			}
		})
	}
}

func TestRenderNotes(t *testing.T) {
	r, err := Render(renderCase2Config(t, renderCases()[0], ""), syncOpt)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"keepalived.conf: auth: ah (VRRPv3 in IPsec AH) has no keepalived equivalent; instances run VRRPv3 WITHOUT authentication",
		"conntrackd.conf: conntrackd sync messages are not authenticated (muros-had's are)",
		"conntrackd.conf: exclude_local: only loopback, the VIPs, the peer and the sync address are listed; add this node's own addresses to Address Ignore",
	}
	if diff := cmp.Diff(want, r.Notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
}

// TestRenderNotesChecks: a file with health checks says the fallback
// runs without them.
func TestRenderNotesChecks(t *testing.T) {
	c := renderCase2Config(t, renderCases()[0], "")
	c.Checks = []Check{{Name: "upstream", Kind: CheckProcess, Process: "unbound", Fault: true}}
	r, err := Render(c, syncOpt)
	if err != nil {
		t.Fatal(err)
	}
	want := "keepalived.conf: checks: not rendered (1): the keepalived fallback runs without the health checks (FAULT comes from tracked interfaces only, no weights)"
	if !slices.Contains(r.Notes, want) || !strings.Contains(string(r.Keepalived), "# NOTE: checks: not rendered (1)") {
		t.Errorf("no note about the checks: %q\n%s", r.Notes, r.Keepalived)
	}
}

func TestRenderRejects(t *testing.T) {
	c := renderCase2Config(t, renderCases()[1], "")
	tests := []struct {
		name  string
		pass  string
		opt   RenderOptions
		want  string
		group netip.Addr // conntrack.group, when set
	}{
		{"no sync address", "x", RenderOptions{}, "render: this node's IPv4 address on the sync interface is required (conntrackd's IPv4_interface)", netip.Addr{}},
		{"comment char in password", "ab#cd", syncOpt, `render: the password contains '#', which keepalived.conf cannot carry`, netip.Addr{}},
		{"quote in password", `a"b`, syncOpt, `render: the password contains '"', which keepalived.conf cannot carry`, netip.Addr{}},
		{"backslash in password", `a\b`, syncOpt, `render: the password contains '\\', which keepalived.conf cannot carry`, netip.Addr{}},
		{"relative script", "x", RenderOptions{NotifyScript: "primary-backup.sh"}, `render: notify script "primary-backup.sh" must be an absolute path without spaces, quotes or comment characters`, netip.Addr{}},
		{"ipv6 sync address", "x", RenderOptions{SyncAddress: netip.MustParseAddr("fe80::1")}, "render: sync address fe80::1 is not IPv4: conntrackd multicast sync is IPv4", netip.Addr{}},
		{"ipv6 sync group", "x", syncOpt, "render: conntrack.group ff02::3780 is IPv6: the conntrackd fallback is rendered for IPv4 groups only", netip.MustParseAddr("ff02::3780")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := *c
			cc.Password = tt.pass
			if tt.group.IsValid() {
				cc.Conntrack.Group = tt.group
			}
			_, err := Render(&cc, tt.opt)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Render error = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestRenderAcceptedByKeepalivedAndConntrackd is a lab test: every rendered
// pair must pass `keepalived --config-test` and run conntrackd, inside a
// throw-away namespace holding the interfaces the files name (keepalived's
// test checks that interfaces exist; conntrackd binds the sync interface).
func TestRenderAcceptedByKeepalivedAndConntrackd(t *testing.T) {
	lab.Require(t)
	for _, rc := range renderCases() {
		t.Run(rc.name, func(t *testing.T) {
			ns := lab.NewNetnsT(t, "cfgrender")
			// veth pairs inside the one namespace: sync0/syncp, wan0/wanp, lan0/lanp.
			for _, pair := range [][2]string{{"sync0", "syncp"}, {"wan0", "wanp"}, {"lan0", "lanp"}} {
				if err := lab.Veth(ns, pair[0], ns, pair[1]); err != nil {
					t.Fatalf("veth %s: %v", pair[0], err)
				}
			}
			if err := ns.AddAddr("sync0", netip.MustParsePrefix("192.168.255.1/30")); err != nil {
				t.Fatal(err)
			}
			c := renderCase2Config(t, rc, ns.Dir)
			r, err := Render(c, rc.opt)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			kaPath := filepath.Join(ns.Dir, "keepalived.conf")
			ctPath := filepath.Join(ns.Dir, "conntrackd.conf")
			for p, data := range map[string][]byte{kaPath: r.Keepalived, ctPath: r.Conntrackd} {
				if err := os.WriteFile(p, data, 0o600); err != nil {
					t.Fatal(err)
				}
			}

			// keepalived -t exits non-zero on any configuration error and
			// prints every keyword it did not understand.
			out, err := ns.Run("keepalived", "--config-test", "-f", kaPath)
			if err != nil || strings.TrimSpace(out) != "" {
				t.Fatalf("keepalived --config-test rejected the file: err=%v\n%s\n--- file:\n%s", err, out, r.Keepalived)
			}

			// conntrackd in the foreground; its client must run in the same
			// namespace and talks to it over the UNIX socket under run_dir.
			p, err := ns.Start("conntrackd", "-C", ctPath)
			if err != nil {
				t.Fatal(err)
			}
			var stats string
			deadline := time.Now().Add(10 * time.Second)
			for {
				stats, err = ns.Run("conntrackd", "-C", ctPath, "-s")
				if err == nil || p.Exited() || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("conntrackd did not answer -s: %v\nlog:\n%s\n--- file:\n%s", err, p.Log(), r.Conntrackd)
			}
			if !strings.Contains(stats, "multicast traffic (active device=sync0)") {
				t.Errorf("conntrackd stats do not show multicast sync on sync0:\n%s", stats)
			}
			if out, err := ns.Run("conntrackd", "-C", ctPath, "-k"); err != nil {
				t.Errorf("conntrackd -k: %v\n%s", err, out)
			}
			select {
			case <-p.Done():
			case <-time.After(10 * time.Second):
				t.Errorf("conntrackd still running 10s after -k")
			}
		})
	}
}
