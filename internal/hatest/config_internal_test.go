package hatest

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/lab"
)

// TestNodeConfigsPassCheck: every configuration the lab, the demo and the
// benchmarks start muros-had with passes config's checks (password
// strength, replicated paths), warning only where the test asks for it.
func TestNodeConfigsPassCheck(t *testing.T) {
	base := t.TempDir()
	pfx := netip.MustParsePrefix
	p := &lab.Pair{
		FW1:    &lab.Netns{Name: "mh-fw1", Dir: filepath.Join(base, "fw1")},
		FW2:    &lab.Netns{Name: "mh-fw2", Dir: filepath.Join(base, "fw2")},
		LANVIP: pfx("10.10.0.1/24"), WANVIP: pfx("203.0.113.1/24"),
		LANVIP6: pfx("2001:db8:10::1/64"), WANVIP6: pfx("2001:db8:113::1/64"),
		FW1Addrs: lab.FirewallAddrs{Sync: pfx("192.168.255.1/30")},
		FW2Addrs: lab.FirewallAddrs{Sync: pfx("192.168.255.2/30")},
	}
	none := "none: VRRP adverts are not authenticated"
	keepalived := "auth: keepalived-ah keys the VRRP adverts"
	tests := []struct {
		name string
		fw   *lab.Netns
		o    NodeOptions
		want []string // warning keys and message starts
	}{
		{"defaults", p.FW1, NodeOptions{Role: "master"}, nil},
		{"backup with IPv6", p.FW2, NodeOptions{Role: "backup", IPv6: true}, nil},
		{"keepalived-ah", p.FW1, NodeOptions{Role: "master", Auth: "keepalived-ah", Interval: time.Second}, []string{"password: " + keepalived}},
		{"none", p.FW2, NodeOptions{Role: "backup", Auth: "none"}, []string{"auth: " + none}},
		{"DB sync", p.FW1, NodeOptions{Role: "master", Extra: dbsyncYAML(p.FW1, "")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(tt.fw.Dir, "muros-had.yaml")
			c, err := config.Parse(file, []byte(Config(p, tt.fw, tt.o)))
			if err != nil {
				t.Fatalf("%v\n%s", err, Config(p, tt.fw, tt.o))
			}
			var got []string
			for _, w := range c.Warnings {
				msg := w.Key + ": " + w.Message
				for _, want := range tt.want {
					if strings.HasPrefix(msg, want) {
						msg = want
					}
				}
				got = append(got, msg)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}
