package vip

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

func TestNewValidates(t *testing.T) {
	ok := VIP{"eth0", netip.MustParsePrefix("192.0.2.1/24"), 10}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error, one per problem; nil = valid
	}{
		{"valid", Config{VIPs: []VIP{ok}}, nil},
		{"valid vmac", Config{VIPs: []VIP{ok}, VirtualMAC: true}, nil},
		{"long interface", Config{VIPs: []VIP{{"a-very-long-ifname", ok.Prefix, 1}}}, []string{"vips[0]: interface name"}},
		{"no prefix", Config{VIPs: []VIP{{"eth0", netip.Prefix{}, 1}}}, []string{"vips[0]: invalid prefix"}},
		{"vmac without vrid", Config{VIPs: []VIP{{"eth0", ok.Prefix, 0}}, VirtualMAC: true}, []string{"needs a VRID"}},
		{"bad schedule", Config{VIPs: []VIP{ok}, Schedule: Schedule{Repeat: 0, Interval: -1}}, []string{"repeat 0", "interval -1ns"}},
		{"bad label", Config{VIPs: []VIP{ok}, LabelSuffix: "a:b"}, []string{"label suffix"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(&netlink.Handle{}, tt.cfg)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("%d problems reported, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("problem %d %q does not mention %q", i, lines[i], w)
				}
			}
		})
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("nil handle accepted")
	}
}

func TestAddrTagging(t *testing.T) {
	m, err := New(&netlink.Handle{}, Config{NoPrefixRoute: true})
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		IPNet, Label string
		Flags        int
	}
	tests := []struct {
		v      VIP
		ifName string
		want   view
	}{
		{VIP{"eth0", netip.MustParsePrefix("192.0.2.1/24"), 1}, "eth0", view{"192.0.2.1/24", "eth0:vip", 0x200}},
		// The label would pass 15 bytes: none rather than a truncated one.
		{VIP{"ethernet-lan12", netip.MustParsePrefix("192.0.2.1/24"), 1}, "ethernet-lan12", view{"192.0.2.1/24", "", 0x200}},
		{VIP{"eth0", netip.MustParsePrefix("2001:db8::1/64"), 1}, "eth0", view{"2001:db8::1/64", "", 0x202}},
	}
	for _, tt := range tests {
		a := m.addr(tt.v, tt.ifName)
		got := view{a.IPNet.String(), a.Label, a.Flags}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.v, diff)
		}
	}
}
