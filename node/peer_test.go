package node

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/muros/muros-had/vrrp"
)

// backupHearingMaster starts a backup (priority 100) that hears a master
// (priority 150) on both VRIDs and returns the actions so far.
func backupHearingMaster(t *testing.T, c *Core) []Action {
	t.Helper()
	acts := c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	peer := newWire(t, peer4, password, 1000)
	for _, vrid := range []uint8{10, 11} {
		acts = append(acts, c.Step(peer.event(vrid, 150, map[uint8]netip.Addr{10: vipWAN, 11: vipLAN}[vrid]), nil)...)
	}
	if c.State() != vrrp.StateBackup {
		t.Fatalf("state %v, want BACKUP", c.State())
	}
	return acts
}

func TestPeerDeadTakesOverAtOnce(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	backupHearingMaster(t, c)
	acts := c.Step(Event{Kind: EventPeer, Now: t0, PeerDead: true, Reason: "dead: no message on any path"}, nil)
	if got := roles(acts); len(got) != 1 || got[0] != vrrp.StateMaster {
		t.Fatalf("roles %v after the dead verdict, want MASTER at once", got)
	}
	var why string
	for _, a := range kinds(acts, ActionNotify) {
		why = a.Reason
	}
	if !strings.Contains(why, "peer dead: no message on any path") {
		t.Errorf("transition reason %q", why)
	}
}

func TestPeerAliveHoldsMasterDown(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	acts := backupHearingMaster(t, c)
	c.Step(Event{Kind: EventPeer, Now: t0, PeerMaster: true, PeerVRIDs: vrids(10, 11), Reason: "heard on the peer path"}, nil)
	var got []Action
	for _, vrid := range []uint8{10, 11} {
		got = append(got, fire(c, acts, TimerKey{vrid, vrrp.TimerMasterDown})...)
	}
	if r := roles(got); len(r) != 0 || c.State() != vrrp.StateBackup {
		t.Fatalf("Master_Down fired with the master alive elsewhere: roles %v, state %v", r, c.State())
	}
	if !c.Group().Member(10).DownHeld() {
		t.Error("the expiry is not recorded as held")
	}
	// Each held expiry asks the liveness protocol to confirm (a quiet
	// master is probed now, not at its next missing heartbeat).
	if n := len(kinds(got, ActionConfirmPeer)); n != 2 {
		t.Errorf("%d confirmations for two held expiries, want 2", n)
	}
	// The master stops being master (FAULT): the held expiry takes over.
	acts = c.Step(Event{Kind: EventPeer, Now: t0, Reason: "peer is now FAULT"}, nil)
	if r := roles(acts); len(r) != 1 || r[0] != vrrp.StateMaster {
		t.Fatalf("roles %v when the peer stopped being master", r)
	}
	// The log says why: the verdict, not a bare "no advert".
	for _, a := range kinds(acts, ActionNotify) {
		if !strings.Contains(a.Reason, "peer is no longer master: peer is now FAULT") {
			t.Errorf("transition reason %q, want the verdict's", a.Reason)
		}
	}
}

func TestPeerNoLongerMasterTakesOver(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	backupHearingMaster(t, c)
	c.Step(Event{Kind: EventPeer, Now: t0, PeerMaster: true, PeerVRIDs: vrids(10, 11)}, nil)
	acts := c.Step(Event{Kind: EventPeer, Now: t0, PeerVRIDs: vrids(10, 11), Reason: "peer is now BACKUP (priority 150)"}, nil)
	if r := roles(acts); len(r) != 1 || r[0] != vrrp.StateMaster {
		t.Fatalf("roles %v when the master stepped down, want MASTER at once", r)
	}
}

func TestPeerVerdictInMaintenanceTakesNothing(t *testing.T) {
	cfg := pairConfig(100, false)
	cfg.Maintenance = true
	c := newCore(t, cfg)
	backupHearingMaster(t, c)
	c.Step(Event{Kind: EventPeer, Now: t0, PeerMaster: true}, nil)
	if r := roles(c.Step(Event{Kind: EventPeer, Now: t0, PeerDead: true, Reason: "dead"}, nil)); len(r) != 0 {
		t.Fatalf("maintenance: roles %v on a dead verdict", r)
	}
}

func TestPeerVerdictToMasterChangesNothing(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	startMaster(t, c)
	for _, ev := range []Event{{PeerMaster: true}, {PeerDead: true}, {}} {
		ev.Kind, ev.Now = EventPeer, t0
		if r := roles(c.Step(ev, nil)); len(r) != 0 || c.State() != vrrp.StateMaster {
			t.Fatalf("%+v: roles %v state %v", ev, r, c.State())
		}
	}
}

func TestShutdownLeavesFirst(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	startMaster(t, c)
	acts := c.Step(Event{Kind: EventShutdown, Now: t0}, nil)
	if len(acts) == 0 || acts[0].Kind != ActionLeave {
		t.Fatalf("first shutdown action %+v, want leave", acts)
	}
	// A backup that stops has nothing to hand over.
	b := newCore(t, pairConfig(100, false))
	backupHearingMaster(t, b)
	if got := kinds(b.Step(Event{Kind: EventShutdown, Now: t0}, nil), ActionLeave); len(got) != 0 {
		t.Errorf("a stopping backup said leave: %+v", got)
	}
}

func vrids(vs ...uint8) (set [32]byte) {
	for _, v := range vs {
		set[v/8] |= 0x80 >> (v % 8)
	}
	return set
}

// TestPeerAliveHoldsOnlyItsVRIDs: the peer runs VRID 10 only (a VIP added
// here first, in a rolling reload): VRID 11's Master_Down is not held, and
// with VRID 10 hearing a lower-priority master the group takes over.
func TestPeerAliveHoldsOnlyItsVRIDs(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	acts := c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	c.Step(Event{Kind: EventPeer, Now: t0, PeerMaster: true, PeerVRIDs: vrids(10)}, nil)
	peer := newWire(t, peer4, password, 1000)
	c.Step(peer.event(10, 100, vipWAN), nil) // lower priority: preempt
	if c.State() != vrrp.StateBackup {
		t.Fatalf("state %v before the timers, want BACKUP", c.State())
	}
	var got []Action
	for _, vrid := range []uint8{10, 11} {
		got = append(got, fire(c, acts, TimerKey{vrid, vrrp.TimerMasterDown})...)
	}
	if c.Group().Member(11).DownHeld() {
		t.Error("VRID 11, which the peer does not run, was held")
	}
	if n := len(kinds(got, ActionConfirmPeer)); n != 0 {
		t.Errorf("%d confirmations for expiries that were not held", n)
	}
	if r := roles(got); len(r) != 1 || r[0] != vrrp.StateMaster {
		t.Fatalf("roles %v, want MASTER (VRID 10 preempts a lower master, VRID 11 has none)", r)
	}
}

// TestPeerMasterWithHigherPriorityEndsSplitBrain: this node is MASTER and
// the liveness protocol says the peer is MASTER too, with a higher
// priority: it steps down at once (its adverts may never arrive: the sync
// link is cut); a lower or equal priority changes nothing.
func TestPeerMasterWithHigherPriorityEndsSplitBrain(t *testing.T) {
	peerAddr := netip.MustParseAddr("10.10.0.2")
	for _, tt := range []struct {
		name     string
		prio     uint8
		wantDown bool
	}{
		{"higher", 150, true},
		{"equal", 100, false},
		{"lower", 50, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCore(t, pairConfig(100, false))
			startMaster(t, c)
			acts := c.Step(Event{Kind: EventPeer, Now: t0, PeerMaster: true, PeerPriority: tt.prio, PeerVRIDs: vrids(10, 11), PeerAddr: peerAddr, Reason: "alive: heard on the peer path"}, nil)
			r := roles(acts)
			if tt.wantDown {
				if len(r) != 1 || r[0] != vrrp.StateBackup || c.State() != vrrp.StateBackup {
					t.Fatalf("roles %v state %v, want BACKUP", r, c.State())
				}
				var why []string
				for _, a := range kinds(acts, ActionNotify) {
					why = append(why, a.Reason)
				}
				if !strings.Contains(strings.Join(why, "; "), "higher priority master 10.10.0.2 (priority 150, ours 100)") {
					t.Errorf("reasons %q", why)
				}
				return
			}
			if len(r) != 0 || c.State() != vrrp.StateMaster {
				t.Fatalf("roles %v state %v, want MASTER kept", r, c.State())
			}
		})
	}
}

// TestPeerVerdictInMaintenanceKeepsAHeldExpiry: the adverts were lost
// while the peer was alive as master (the expiries are held), then the
// operator turned maintenance on. No verdict may make the node MASTER
// while the mode is on: not one that says the peer is still master, nor
// one that says it is dead. Turned off with the peer dead, the held
// expiry takes over at once (no advert came since it was held).
func TestPeerVerdictInMaintenanceKeepsAHeldExpiry(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	acts := backupHearingMaster(t, c)
	alive := Event{Kind: EventPeer, Now: t0, PeerMaster: true, PeerPriority: 150, PeerVRIDs: vrids(10, 11), Reason: "heard on the peer path"}
	c.Step(alive, nil)
	fireAll(c, acts)
	if !c.Group().Member(10).DownHeld() {
		t.Fatal("the expiry is not held")
	}
	c.Step(maintEv(true), nil)
	for _, ev := range []Event{alive, {Kind: EventPeer, Now: t0, PeerDead: true, Reason: "dead: no message on any path"}} {
		if r := roles(c.Step(ev, nil)); len(r) != 0 || c.State() != vrrp.StateBackup {
			t.Fatalf("verdict %q in maintenance: roles %v, state %v; want BACKUP", ev.Reason, r, c.State())
		}
	}
	if r := roles(c.Step(maintEv(false), nil)); len(r) != 1 || r[0] != vrrp.StateMaster {
		t.Fatalf("roles %v at maintenance off with the peer dead and the expiries held, want MASTER", r)
	}
}

// TestMaintenanceOffKeepsAHoldOfALiveMaster: the same held expiries, the
// peer still alive as master when maintenance ends: the node stays BACKUP.
func TestMaintenanceOffKeepsAHoldOfALiveMaster(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	acts := backupHearingMaster(t, c)
	c.Step(Event{Kind: EventPeer, Now: t0, PeerMaster: true, PeerPriority: 150, PeerVRIDs: vrids(10, 11)}, nil)
	fireAll(c, acts)
	c.Step(maintEv(true), nil)
	off := c.Step(maintEv(false), nil)
	if r := roles(append(off, fireAll(c, off)...)); len(r) != 0 || c.State() != vrrp.StateBackup {
		t.Fatalf("roles %v, state %v after maintenance with the peer alive as master, want BACKUP", r, c.State())
	}
}
