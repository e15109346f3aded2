package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/vrrp"
)

// TestInspectAHKeyVersions: inspect --password authenticates adverts of
// both AH key versions (the daemon signs with version 2, the password
// stretched; a node falling back for an old peer, or an old node, with
// version 1) and refuses a wrong password for both.
func TestInspectAHKeyVersions(t *testing.T) {
	const password = "pA7-kx2Q-9mZr-Lw4e-Tb6v"
	master, err := kdf.Derive(password)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1.8e9, 0)
	for _, tc := range []struct {
		name     string
		legacy   bool
		password string
		want     bool
	}{
		{"version 2", false, password, true},
		{"version 1 fallback", true, password, true},
		{"version 2, wrong password", false, "wrong-password-123", false},
		{"version 1, wrong password", true, "wrong-password-123", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := vrrp.NewCodec(vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: password, Master: master})
			if err != nil {
				t.Fatal(err)
			}
			ctr := vrrp.NewAHCounter(0, now).Next(now)
			ctr.LegacyKey = tc.legacy
			a := vrrp.Advert{VRID: 10, Priority: 150, Interval: time.Second, Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.1")}}
			pkt, err := c.AppendPacket(nil, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18"), &a, ctr)
			if err != nil {
				t.Fatal(err)
			}
			in, err := newInspector(tc.password)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := in.decode(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if rec.AuthOK == nil || *rec.AuthOK != tc.want {
				t.Fatalf("auth_ok = %v, want %v", rec.AuthOK, tc.want)
			}
		})
	}
}
