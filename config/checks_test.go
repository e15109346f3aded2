package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseChecks(t *testing.T) {
	src := minimal + `checks:
  - name: upstream
    ping: {address: 192.0.2.1, interface: eth0}
    fall: 3
    effect: fault
  - name: web
    command: [/usr/local/bin/check-web, --quick]
    interval: 5s
    timeout: 2s
    rise: 1
    effect: {weight: -60}
  - name: unbound
    process: unbound
    interval: 1s
    effect: {weight: 10}
  - name: maintenance
    file: {path: /etc/muros-had/maintenance, exists: false}
    effect: fault
`
	got := mustParse(t, src).Checks
	want := []Check{
		{Name: "upstream", Kind: CheckPing, Address: netip.MustParseAddr("192.0.2.1"), Interface: "eth0", Exists: true,
			Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Fault: true},
		{Name: "web", Kind: CheckCommand, Command: []string{"/usr/local/bin/check-web", "--quick"}, Exists: true,
			Interval: 5 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 2, Weight: -60},
		{Name: "unbound", Kind: CheckProcess, Process: "unbound", Exists: true,
			Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 2, Weight: 10},
		{Name: "maintenance", Kind: CheckFile, Path: "/etc/muros-had/maintenance", Exists: false,
			Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 2, Fault: true},
	}
	if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Errorf("checks (-want +got):\n%s", d)
	}
}

// TestParseChecksRefusesWeak: each weak or wrong check is refused with a
// problem naming its key.
func TestParseChecksRefusesWeak(t *testing.T) {
	for _, tc := range []struct {
		name, check, key, msg string
	}{
		{"timeout not below interval", "command: [/bin/true]\n    interval: 1s\n    timeout: 1s\n    effect: fault", "checks[0].timeout", "not below the interval"},
		{"rise 0", "command: [/bin/true]\n    rise: 0\n    effect: fault", "checks[0].rise", "out of range"},
		{"fall 0", "command: [/bin/true]\n    fall: 0\n    effect: fault", "checks[0].fall", "out of range"},
		{"no kind", "effect: fault", "checks[0]", "needs one of"},
		{"two kinds", "command: [/bin/true]\n    process: sshd\n    effect: fault", "checks[0]", "2 kinds"},
		{"unknown kind", "script: /bin/true\n    effect: fault", "checks[0].script", "unknown key"},
		{"relative command", "command: [true]\n    effect: fault", "checks[0].command", "not an absolute path"},
		{"empty command", "command: []\n    effect: fault", "checks[0].command", "needs the program"},
		{"relative file", "file: {path: maint}\n    effect: fault", "checks[0].file.path", "not an absolute path"},
		{"no effect", "process: sshd", "checks[0].effect", "missing required key"},
		{"unknown effect", "process: sshd\n    effect: restart", "checks[0].effect", "not one of"},
		{"weight 0", "process: sshd\n    effect: {weight: 0}", "checks[0].effect.weight", "0 does nothing"},
		{"weight too big", "process: sshd\n    effect: {weight: 300}", "checks[0].effect.weight", "out of range"},
		{"interval too short", "process: sshd\n    interval: 10ms\n    effect: fault", "checks[0].interval", "out of range"},
		{"long process name", "process: a-very-long-process-name\n    effect: fault", "checks[0].process", "1..15 bytes"},
		{"ping without interface", "ping: {address: 192.0.2.1}\n    effect: fault", "checks[0].ping.interface", "missing required key"},
		{"ping multicast", "ping: {address: 224.0.0.1, interface: eth0}\n    effect: fault", "checks[0].ping.address", "not a host"},
		{"bad name", "process: sshd\n    effect: fault\n  - name: Bad Name\n    process: sshd\n    effect: fault", "checks[1].name", "not a check name"},
		{"duplicate name", "process: sshd\n    effect: fault\n  - name: c\n    process: sshd\n    effect: fault", "checks[1].name", "defined twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := minimal + "checks:\n  - name: c\n    " + tc.check + "\n"
			_, err := Parse("config.yaml", []byte(src))
			if err == nil {
				t.Fatal("accepted")
			}
			ps, _ := err.(Problems)
			for _, p := range ps {
				if p.Key == tc.key && strings.Contains(p.Message, tc.msg) {
					return
				}
			}
			t.Errorf("no problem at %s containing %q: %v", tc.key, tc.msg, err)
		})
	}
}
