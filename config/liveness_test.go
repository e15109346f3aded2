package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// liveness: decoded within range; a detection time one late heartbeat
// exhausts, a collision with the conntrack sync's group and port, and a
// second path that is not a unicast address are refused.
func TestLivenessKeys(t *testing.T) {
	defaults := Liveness{Enabled: true, Group: netip.MustParseAddr("225.0.0.51"), Port: 3781,
		Interval: time.Millisecond, Detect: 3 * time.Millisecond, QuietInterval: 50 * time.Millisecond, QuietAfter: 5 * time.Second,
		PeerAddress: netip.MustParseAddr("192.168.255.1")}
	tests := []struct {
		name        string
		yaml        string
		edit        func(*Liveness)
		wantProblem string
	}{
		{name: "defaults"},
		{name: "set", yaml: "liveness:\n  interval: 2ms\n  detect: 10ms\n  peer_address: 10.10.0.3\n  group: ff02::3781\n  port: 4000\n",
			edit: func(l *Liveness) {
				l.Interval, l.Detect = 2*time.Millisecond, 10*time.Millisecond
				l.PeerAddress, l.Group, l.Port = netip.MustParseAddr("10.10.0.3"), netip.MustParseAddr("ff02::3781"), 4000
			}},
		{name: "IPv6 sync link", yaml: "conntrack:\n  group: ff02::3780\n", edit: func(l *Liveness) { l.Group = netip.MustParseAddr("ff02::3781") }},
		{name: "off", yaml: "liveness:\n  enabled: false\n  detect: 1ms\n", edit: func(l *Liveness) { l.Enabled, l.Detect = false, time.Millisecond }},
		{name: "detect under two beats", yaml: "liveness:\n  detect: 1500us\n", wantProblem: "liveness.detect: detect 1.5ms is under twice the interval 1ms"},
		{name: "interval alone too long", yaml: "liveness:\n  interval: 5ms\n", wantProblem: "liveness.interval: detect 3ms is under twice the interval 5ms"},
		{name: "interval too short", yaml: "liveness:\n  interval: 50us\n", wantProblem: "liveness.interval: 50us is out of range"},
		{name: "group not multicast", yaml: "liveness:\n  group: 10.0.0.1\n", wantProblem: "liveness.group: 10.0.0.1 is not a multicast group"},
		{name: "conntrack's group and port", yaml: "liveness:\n  group: 225.0.0.50\n  port: 3780\n", wantProblem: "liveness.port: 225.0.0.50 port 3780 is the conntrack sync's"},
		{name: "quiet set", yaml: "liveness:\n  quiet_interval: 20ms\n  quiet_after: 1m\n",
			edit: func(l *Liveness) { l.QuietInterval, l.QuietAfter = 20*time.Millisecond, time.Minute }},
		{name: "never quiet", yaml: "liveness:\n  quiet_interval: 0s\n", edit: func(l *Liveness) { l.QuietInterval = 0 }},
		{name: "quiet under two beats", yaml: "liveness:\n  interval: 2ms\n  detect: 6ms\n  quiet_interval: 3ms\n", wantProblem: "liveness.quiet_interval: quiet_interval 3ms is under twice the interval 2ms"},
		{name: "quiet too long", yaml: "liveness:\n  quiet_interval: 100ms\n", wantProblem: "liveness.quiet_interval: 100ms is out of range"},
		{name: "slow heartbeats keep the default quiet period", yaml: "liveness:\n  interval: 25ms\n  detect: 50ms\n",
			edit: func(l *Liveness) { l.Interval, l.Detect = 25*time.Millisecond, 50*time.Millisecond }},
		{name: "a short quiet_after shortens the default quiet period", yaml: "liveness:\n  quiet_after: 200ms\n",
			edit: func(l *Liveness) { l.QuietInterval, l.QuietAfter = 20*time.Millisecond, 200*time.Millisecond }},
		{name: "slower still: never quiet by default", yaml: "liveness:\n  interval: 30ms\n  detect: 60ms\n",
			edit: func(l *Liveness) { l.Interval, l.Detect, l.QuietInterval = 30*time.Millisecond, 60*time.Millisecond, 0 }},
		{name: "fast adverts keep the default", yaml: "advert_interval: 10ms\n",
			edit: func(l *Liveness) {}},
		// A quiet master whose heartbeats are further apart than VRRP's
		// Master_Down_Interval is probed when the adverts go missing.
		{name: "quiet slower than VRRP", yaml: "advert_interval: 10ms\nliveness:\n  quiet_interval: 40ms\n",
			edit: func(l *Liveness) { l.QuietInterval = 40 * time.Millisecond }},
		{name: "quiet after under ten periods", yaml: "liveness:\n  quiet_interval: 50ms\n  quiet_after: 400ms\n", wantProblem: "liveness.quiet_after: quiet_after 400ms is under ten quiet periods (500ms)"},
		{name: "peer path multicast", yaml: "liveness:\n  peer_address: 224.0.0.18\n", wantProblem: "liveness.peer_address: 224.0.0.18 is not a unicast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("config.yaml", []byte(minimal+tt.yaml))
			if tt.wantProblem != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantProblem) {
					t.Fatalf("Parse: %v, want a problem %q", err, tt.wantProblem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := defaults
			if tt.edit != nil {
				tt.edit(&want)
			}
			if diff := cmp.Diff(want, c.Liveness, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("liveness (-want +got):\n%s", diff)
			}
		})
	}
}
