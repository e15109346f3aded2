package vrrp

import (
	"net/netip"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestMachineProperties feeds random event sequences (including stale and
// bogus timers) to one machine and checks what must hold after every step:
// the VIPs are claimed exactly while in Master, claims and releases
// alternate, Master always has Adver_Timer armed, a running Backup always has
// Master_Down_Timer armed, and nothing else is armed in Initialize or Fault.
func TestMachineProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cfg := InstanceConfig{
			VRID:         7,
			Priority:     uint8(rapid.IntRange(1, 255).Draw(rt, "prio")),
			Interval:     time.Duration(rapid.IntRange(1, 300).Draw(rt, "cs")) * 10 * time.Millisecond,
			Primary:      netip.AddrFrom4([4]byte{10, 0, 0, 5}),
			NoPreempt:    rapid.Bool().Draw(rt, "nopreempt"),
			PreemptDelay: time.Duration(rapid.IntRange(0, 3).Draw(rt, "hold")) * time.Second,
			WaitReady:    rapid.Bool().Draw(rt, "waitready"),
		}
		m, err := NewMachine(cfg)
		if err != nil {
			rt.Fatal(err)
		}
		armed := map[TimerID]uint64{}
		claimed := false
		var out []Action
		for i := range rapid.IntRange(1, 60).Draw(rt, "steps") {
			var ev Event
			switch rapid.IntRange(0, 8).Draw(rt, "kind") {
			case 0:
				ev = Event{Kind: EventStartup}
			case 1:
				ev = Event{Kind: EventShutdown}
			case 2, 3:
				from := netip.AddrFrom4([4]byte{10, 0, 0, byte(rapid.IntRange(1, 9).Draw(rt, "from"))})
				ev = AdvertEvent(from, uint8(rapid.IntRange(0, 255).Draw(rt, "aprio")), time.Duration(rapid.IntRange(0, 300).Draw(rt, "acs"))*10*time.Millisecond)
			case 4, 5:
				// A live timer most of the time, sometimes a stale one.
				tm := TimerID(rapid.IntRange(0, int(numTimers)).Draw(rt, "timer"))
				gen := armed[tm]
				if rapid.IntRange(0, 4).Draw(rt, "stale") == 0 {
					gen = uint64(rapid.IntRange(0, 5).Draw(rt, "gen"))
				}
				ev = TimerEvent(tm, gen)
			case 6:
				ev = Event{Kind: EventTrackDown + EventKind(rapid.IntRange(0, 1).Draw(rt, "updown")), Interface: rapid.SampledFrom([]string{"eth0", "eth1"}).Draw(rt, "if")}
			case 7:
				ev = Event{Kind: EventSetPriority, Priority: uint8(rapid.IntRange(0, 255).Draw(rt, "newprio"))}
			case 8:
				ev = Event{Kind: EventReady + EventKind(rapid.IntRange(0, 1).Draw(rt, "ready"))}
			}
			out = m.Step(ev, out[:0])
			for _, a := range out {
				switch a.Kind {
				case ActionSetTimer:
					armed[a.Timer] = a.Gen
				case ActionStopTimer:
					delete(armed, a.Timer)
				case ActionClaimVIPs:
					if claimed {
						rt.Fatalf("step %d %v: claim while claimed", i, ev.Kind)
					}
					claimed = true
				case ActionReleaseVIPs:
					if !claimed {
						rt.Fatalf("step %d %v: release while not claimed", i, ev.Kind)
					}
					claimed = false
				case ActionNotify:
					if a.Reason == "" || a.From == a.To {
						rt.Fatalf("step %d: bad notify %+v", i, a)
					}
				}
			}
			// A fired timer is no longer armed.
			if ev.Kind == EventTimer && armed[ev.Timer] == ev.Gen && ev.Gen != 0 {
				if !(m.gen[ev.Timer] == ev.Gen) {
					delete(armed, ev.Timer)
				}
			}
			st := m.State()
			if claimed != (st == StateMaster) {
				rt.Fatalf("step %d %v: state %v but claimed=%v", i, ev.Kind, st, claimed)
			}
			_, adver := armed[TimerAdver]
			_, down := armed[TimerMasterDown]
			switch st {
			case StateMaster:
				if !adver || down {
					rt.Fatalf("step %d: master with timers %v", i, armed)
				}
			case StateBackup:
				if adver || down == m.wantMaster {
					rt.Fatalf("step %d: backup (want=%v) with timers %v", i, m.wantMaster, armed)
				}
			default:
				if len(armed) != 0 {
					rt.Fatalf("step %d: %v with timers %v", i, st, armed)
				}
			}
		}
	})
}
