package vrrp_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/muros/muros-had/vrrp"
)

// A daemon drives a Group from one goroutine: it feeds every event in and
// executes the actions in order. Here the "timer" fires by hand.
func ExampleGroup() {
	self := netip.MustParseAddr("192.168.255.1")
	g, err := vrrp.NewGroup([]vrrp.InstanceConfig{
		{VRID: 10, Priority: 150, Interval: time.Second, Primary: self, WaitReady: true},
		{VRID: 11, Priority: 150, Interval: time.Second, Primary: self, WaitReady: true},
	})
	if err != nil {
		panic(err)
	}
	timers := map[uint8]uint64{} // VRID -> generation of the armed Master_Down_Timer
	execute := func(actions []vrrp.Action) {
		for _, a := range actions {
			switch a.Kind {
			case vrrp.ActionSetTimer: // arm a time.Timer; on expiry feed vrrp.TimerEvent(a.Timer, a.Gen)
				if a.Timer == vrrp.TimerMasterDown {
					timers[a.VRID] = a.Gen
				}
			case vrrp.ActionNotify: // log, update status; before a claim, commit conntrack
				fmt.Printf("vrid %d: %v -> %v\n", a.VRID, a.From, a.To)
			case vrrp.ActionClaimVIPs, vrrp.ActionReleaseVIPs, vrrp.ActionAnnounce, vrrp.ActionSendAdvert:
				fmt.Printf("vrid %d: %v\n", a.VRID, a.Kind)
			}
		}
	}
	execute(g.StepAll(vrrp.Event{Kind: vrrp.EventStartup}, nil))
	execute(g.StepAll(vrrp.Event{Kind: vrrp.EventReady}, nil)) // bulk sync done
	// No master on the link: both Master_Down_Timers fire.
	for _, vrid := range []uint8{10, 11} {
		out, err := g.Step(vrid, vrrp.TimerEvent(vrrp.TimerMasterDown, timers[vrid]), nil)
		if err != nil {
			panic(err)
		}
		execute(out)
	}
	fmt.Println("group:", g.State())
	// Output:
	// vrid 10: INIT -> BACKUP
	// vrid 11: INIT -> BACKUP
	// vrid 10: BACKUP -> MASTER
	// vrid 10: claim_vips
	// vrid 10: send_advert
	// vrid 10: announce
	// vrid 11: BACKUP -> MASTER
	// vrid 11: claim_vips
	// vrid 11: send_advert
	// vrid 11: announce
	// group: MASTER
}
