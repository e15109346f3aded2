package health

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/muros/muros-had/lab"
)

// TestLabPingThroughInterface: the ping check echoes the upstream gateway
// through the interface it names, whatever the routing table prefers. In
// namespace fw, gw (192.0.2.2, 2001:db8:1::2) is on a0; a more specific
// route sends it to a1, where nothing answers. Pinging via a0 passes
// (the socket is bound to the device), via a1 times out, and with the
// gateway's link down via a0 times out too. Everything is inside the
// namespaces this test creates.
func TestLabPingThroughInterface(t *testing.T) {
	fw := lab.NewNetnsT(t, "hcfw")
	gw := lab.NewNetnsT(t, "hcgw")
	other := lab.NewNetnsT(t, "hcot")
	if err := lab.Veth(fw, "a0", gw, "b0"); err != nil {
		t.Fatal(err)
	}
	if err := lab.Veth(fw, "a1", other, "c0"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		ns     *lab.Netns
		ifname string
		addr   string
	}{
		{fw, "a0", "192.0.2.1/24"}, {gw, "b0", "192.0.2.2/24"},
		{fw, "a0", "2001:db8:1::1/64"}, {gw, "b0", "2001:db8:1::2/64"},
		{fw, "a1", "198.51.100.1/24"}, {other, "c0", "198.51.100.2/24"},
		{fw, "a1", "2001:db8:2::1/64"}, {other, "c0", "2001:db8:2::2/64"},
	} {
		if err := a.ns.AddAddr(a.ifname, netip.MustParsePrefix(a.addr)); err != nil {
			t.Fatal(err)
		}
	}
	// The routing table sends the gateway's addresses out of a1.
	fw.MustRun(t, "ip", "route", "add", "192.0.2.2/32", "dev", "a1")
	fw.MustRun(t, "ip", "-6", "route", "add", "2001:db8:1::2/128", "dev", "a1")

	probe := func(addr, ifname string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		var perr error
		if err := fw.Do(func() error {
			perr = Ping{Address: netip.MustParseAddr(addr), Interface: ifname}.Probe(ctx)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return perr
	}
	for _, addr := range []string{"192.0.2.2", "2001:db8:1::2"} {
		// Neighbour discovery may cost the first echo: a few tries.
		var err error
		for range 5 {
			if err = probe(addr, "a0"); err == nil {
				break
			}
		}
		if err != nil {
			t.Errorf("ping %s via a0: %v", addr, err)
		}
		if err := probe(addr, "a1"); !errors.Is(err, ErrTimeout) {
			t.Errorf("ping %s via a1 (nothing answers there): %v, want a timeout", addr, err)
		}
	}
	if err := gw.LinkDown("b0"); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"192.0.2.2", "2001:db8:1::2"} {
		if err := probe(addr, "a0"); err == nil {
			t.Errorf("ping %s via a0 passes with the gateway's link down", addr)
		}
	}
	if err := probe("192.0.2.2", "nosuch0"); err == nil {
		t.Error("ping via a missing interface passes")
	}
}
