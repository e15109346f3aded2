package nodecfg

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/vrrp"
)

func pair() *config.Config {
	return &config.Config{
		Role: config.RoleBackup, AdvertInterval: time.Second, Preempt: true, PreemptDelay: 2 * time.Second,
		SyncInterface: "sync0", Auth: config.AuthAH, Password: "pw",
		VIPs: []config.VIP{
			{Interface: "wan0", Address: netip.MustParsePrefix("203.0.113.1/24"), VRID: 10},
			{Interface: "lan0", Address: netip.MustParsePrefix("2001:db8::1/64"), VRID: 11},
			{Interface: "wan0", Address: netip.MustParsePrefix("::ffff:198.51.100.1/120"), VRID: 12},
		},
	}
}

// TestCore: one instance per VIP in its family with that family's source
// address, the configured timing and preemption; VRRPv2 only with
// keepalived's AH; the hold only with a replication on.
func TestCore(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fe80::1")
	primary := map[vrrp.Family]netip.Addr{vrrp.IPv4: v4, vrrp.IPv6: v6}
	for _, tt := range []struct {
		name      string
		edit      func(*config.Config)
		version   int
		hold      bool
		noPreempt bool
	}{
		{"ah", func(*config.Config) {}, 3, false, false},
		{"keepalived-ah", func(c *config.Config) { c.Auth = config.AuthKeepalivedAH }, 2, false, false},
		{"conntrack on", func(c *config.Config) { c.Conntrack.Enabled = true }, 3, true, false},
		{"DB sync on, no preempt", func(c *config.Config) { c.DBSync.Enabled = true; c.Preempt = false }, 3, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := pair()
			tt.edit(cfg)
			nc := Core(cfg, primary, 7, 41)
			inst := func(vrid uint8, fam vrrp.Family, ifname string, a netip.Addr) vrrpInstance {
				return vrrpInstance{vrid, 100, time.Second, tt.version, primary[fam], tt.noPreempt, 2 * time.Second, fam, ifname, a}
			}
			want := []vrrpInstance{
				inst(10, vrrp.IPv4, "wan0", netip.MustParseAddr("203.0.113.1")),
				inst(11, vrrp.IPv6, "lan0", netip.MustParseAddr("2001:db8::1")),
				inst(12, vrrp.IPv4, "wan0", netip.MustParseAddr("::ffff:198.51.100.1")),
			}
			var got []vrrpInstance
			for _, in := range nc.Instances {
				c := in.VRRP
				got = append(got, vrrpInstance{c.VRID, c.Priority, c.Interval, c.Version, c.Primary, c.NoPreempt, c.PreemptDelay, in.Family, in.Interface, in.Addrs[0]})
			}
			if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("instances (-want +got):\n%s", d)
			}
			if nc.HoldReady != tt.hold || nc.SyncInterface != "sync0" || nc.SyncIndex != 7 || nc.LastEpoch != 41 {
				t.Errorf("hold %v sync %s/%d epoch %d", nc.HoldReady, nc.SyncInterface, nc.SyncIndex, nc.LastEpoch)
			}
			if int(nc.Codec.Version) != tt.version {
				t.Errorf("codec version %d, want %d", nc.Codec.Version, tt.version)
			}
		})
	}
}

type vrrpInstance struct {
	VRID         uint8
	Priority     uint8
	Interval     time.Duration
	Version      int
	Primary      netip.Addr
	NoPreempt    bool
	PreemptDelay time.Duration
	Family       vrrp.Family
	Interface    string
	Addr         netip.Addr
}

// TestCodec maps each auth mode and checksum mode.
func TestCodec(t *testing.T) {
	for _, tt := range []struct {
		auth     config.AuthMode
		checksum config.ChecksumMode
		version  int
		want     vrrp.AuthMode
		sum      vrrp.ChecksumMode
	}{
		{config.AuthAH, "", 3, vrrp.AuthAH, vrrp.ChecksumModePseudoHeader},
		{config.AuthKeepalivedAH, "", 2, vrrp.AuthKeepalivedAH, vrrp.ChecksumModePseudoHeader},
		{config.AuthNone, config.ChecksumMessageOnly, 3, vrrp.AuthNone, vrrp.ChecksumModeMessageOnly},
	} {
		cfg := pair()
		cfg.Auth, cfg.ChecksumMode = tt.auth, tt.checksum
		c := Codec(cfg, kdf.Master{})
		if int(c.Version) != tt.version || c.Auth != tt.want || c.Checksum != tt.sum || c.Password != "pw" {
			t.Errorf("%s/%s: %+v", tt.auth, tt.checksum, c)
		}
	}
}

// TestFamiliesTrackedVRIDs: each family and interface once, in order of
// first use.
func TestFamiliesTrackedVRIDs(t *testing.T) {
	cfg := pair()
	if d := cmp.Diff([]vrrp.Family{vrrp.IPv4, vrrp.IPv6}, Families(cfg)); d != "" {
		t.Errorf("families (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"wan0", "lan0"}, Tracked(cfg)); d != "" {
		t.Errorf("tracked (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]int{10, 11, 12}, VRIDs(cfg)); d != "" {
		t.Errorf("VRIDs (-want +got):\n%s", d)
	}
}
