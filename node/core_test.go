package node

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/muros/muros-had/vrrp"
)

var (
	t0       = time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	self4    = netip.MustParseAddr("192.168.255.1")
	peer4    = netip.MustParseAddr("192.168.255.2")
	group4   = netip.MustParseAddr("224.0.0.18")
	vipWAN   = netip.MustParseAddr("203.0.113.1")
	vipLAN   = netip.MustParseAddr("10.10.0.1")
	password = "correct horse battery staple"
)

const interval = 100 * time.Millisecond

// pairConfig is a node of the SPEC's pair: two VIPs (VRIDs 10 and 11) on
// eth0 and eth1, IPv4 adverts in AH on eth2.
func pairConfig(prio uint8, hold bool) Config {
	codec := vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: password, Checksum: vrrp.ChecksumModePseudoHeader}
	inst := func(vrid uint8, ifname string, vip netip.Addr) Instance {
		return Instance{
			VRRP:      vrrp.InstanceConfig{VRID: vrid, Priority: prio, Interval: interval, Version: 3, Primary: self4},
			Family:    vrrp.IPv4,
			Interface: ifname,
			Addrs:     []netip.Addr{vip},
		}
	}
	return Config{
		Instances:     []Instance{inst(10, "eth0", vipWAN), inst(11, "eth1", vipLAN)},
		Codec:         codec,
		Own:           map[vrrp.Family]netip.Addr{vrrp.IPv4: self4},
		HoldReady:     hold,
		SyncInterface: "eth2",
		SyncIndex:     4,
	}
}

func newCore(t *testing.T, cfg Config) *Core {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wire encodes an advert as a peer would send it and decodes it as the
// shell's reader does (Inspect: structure and ICV), so the core sees what
// it sees in production.
type wire struct {
	t     *testing.T
	codec *vrrp.Codec
	src   netip.Addr
	ctr   vrrp.AHCounter
}

func newWire(t *testing.T, src netip.Addr, pw string, epoch uint32) *wire {
	t.Helper()
	codec, err := vrrp.NewCodec(vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: pw, Checksum: vrrp.ChecksumModePseudoHeader})
	if err != nil {
		t.Fatal(err)
	}
	return &wire{t: t, codec: codec, src: src, ctr: vrrp.AHCounter{Epoch: epoch}}
}

func (w *wire) packet(vrid, prio uint8, addrs ...netip.Addr) []byte {
	w.t.Helper()
	w.ctr = w.ctr.Next(t0)
	pkt, err := w.codec.AppendPacket(nil, w.src, group4, &vrrp.Advert{VRID: vrid, Priority: prio, Interval: interval, Addrs: addrs}, w.ctr)
	if err != nil {
		w.t.Fatal(err)
	}
	return pkt
}

func (w *wire) event(vrid, prio uint8, addrs ...netip.Addr) Event {
	return inspect(w.t, w.packet(vrid, prio, addrs...))
}

// inspect decodes pkt as the node's reader does, with the node's key.
func inspect(t *testing.T, pkt []byte) Event {
	t.Helper()
	codec, err := vrrp.NewCodec(vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: password, Checksum: vrrp.ChecksumModePseudoHeader})
	if err != nil {
		t.Fatal(err)
	}
	r, err := codec.Inspect(pkt, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Event{Kind: EventAdvert, Now: t0, Family: vrrp.IPv4, Advert: r}
}

// kinds keeps the actions of the given kinds (all when none is given).
func kinds(acts []Action, keep ...ActionKind) []Action {
	var out []Action
	for _, a := range acts {
		if len(keep) == 0 {
			out = append(out, a)
			continue
		}
		for _, k := range keep {
			if a.Kind == k {
				out = append(out, a)
			}
		}
	}
	return out
}

// fire feeds the last armed generation of a timer.
func fire(c *Core, acts []Action, k TimerKey) []Action {
	var gen uint64
	found := false
	for _, a := range acts {
		if a.Kind == ActionSetTimer && a.Timer == k {
			gen, found = a.Gen, true
		}
	}
	if !found {
		return nil
	}
	return c.Step(Event{Kind: EventTimer, Now: t0, Timer: k, Gen: gen}, nil)
}

var masterDown10 = TimerKey{10, vrrp.TimerMasterDown}

// startMaster starts a node alone on the link and takes it to MASTER: every
// member's Master_Down_Timer fires.
func startMaster(t *testing.T, c *Core) []Action {
	t.Helper()
	acts := c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	var all []Action
	all = append(all, acts...)
	for _, vrid := range []uint8{10, 11} {
		all = append(all, fire(c, acts, TimerKey{vrid, vrrp.TimerMasterDown})...)
	}
	if c.State() != vrrp.StateMaster {
		t.Fatalf("not MASTER after every Master_Down_Timer: %v", c.State())
	}
	return all
}

var (
	addrs    = cmpopts.EquateComparable(netip.Addr{})
	roleOnly = cmp.Options{addrs, cmpopts.IgnoreFields(Action{}, "Reason", "From")}
)

func TestReceiveChecks(t *testing.T) {
	peer := newWire(t, peer4, password, 1000)
	wrongKey := newWire(t, peer4, "another password entirely", 1000)
	self := newWire(t, self4, password, 1000)
	tests := []struct {
		name string
		ev   func() Event
		want Reason
	}{
		{"own advert looped back", func() Event { return self.event(10, 100, vipWAN) }, ReasonOwnAdvert},
		{"unknown vrid", func() Event { return peer.event(12, 100, vipWAN) }, ReasonUnknownVRID},
		{"address list of another cluster", func() Event { return peer.event(10, 100, netip.MustParseAddr("203.0.113.9")) }, ReasonAddressMismatch},
		{"icv of another key", func() Event { return wrongKey.event(10, 100, vipWAN) }, Reason(vrrp.ReasonAuthFailed)},
		{"ttl not 255 (forwarded)", func() Event {
			ev := peer.event(10, 100, vipWAN)
			ev.Advert.TTL = 254
			return ev
		}, Reason(vrrp.ReasonBadTTL)},
		{"our vrid over IPv6", func() Event {
			ev := peer.event(10, 100, vipWAN)
			ev.Family = vrrp.IPv6
			return ev
		}, ReasonWrongFamily},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCore(t, pairConfig(150, false))
			c.Step(Event{Kind: EventStartup, Now: t0}, nil)
			ev := tc.ev()
			got := kinds(c.Step(ev, nil))
			want := []Action{{Kind: ActionDrop, Drop: tc.want, VRID: ev.Advert.Advert.VRID, Src: ev.Advert.Src}}
			if diff := cmp.Diff(want, got, addrs); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplayRejected(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	peer := newWire(t, peer4, password, 1000)
	first := peer.event(10, 150, vipWAN)
	if drops := kinds(c.Step(first, nil), ActionDrop); len(drops) != 0 {
		t.Fatalf("first advert dropped: %+v", drops)
	}
	// The same authentic packet again, as an attacker who captured it
	// would send it.
	got := kinds(c.Step(first, nil), ActionDrop)
	want := []Action{{Kind: ActionDrop, Drop: ReasonReplay, VRID: 10, Src: peer4}}
	if diff := cmp.Diff(want, got, addrs); diff != "" {
		t.Errorf("replayed advert (-want +got):\n%s", diff)
	}
	// One VRID's counter is not another's (keepalived counts per instance).
	if drops := kinds(c.Step(peer.event(11, 150, vipLAN), nil), ActionDrop); len(drops) != 0 {
		t.Errorf("advert of vrid 11 dropped: %+v", drops)
	}
}

func TestElectionRoleIsOneAction(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	acts := startMaster(t, c)
	// At start the node is a receiver (BACKUP), then MASTER once: one role
	// action per change for the whole group, never per VRID.
	got := kinds(acts, ActionRole)
	want := []Action{
		{Kind: ActionRole, Role: vrrp.StateBackup, Gen: 1},
		{Kind: ActionRole, Role: vrrp.StateMaster, Gen: 2},
	}
	if diff := cmp.Diff(want, got, roleOnly); diff != "" {
		t.Errorf("role actions (-want +got):\n%s", diff)
	}
	// The claim comes before the new master's first adverts (so the VIPs
	// answer by the time peers learn of it), and a separate announce is
	// not issued: the claim starts the announcement schedule.
	var order []ActionKind
	for _, a := range acts[len(kinds(acts[:0])):] {
		if a.Kind == ActionRole || a.Kind == ActionSendAdvert || a.Kind == ActionAnnounce {
			order = append(order, a.Kind)
		}
	}
	wantOrder := []ActionKind{ActionRole, ActionRole, ActionSendAdvert, ActionSendAdvert}
	if diff := cmp.Diff(wantOrder, order, addrs); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

// TestFailedClaimThenStepDown is the first replication-role bug of the
// decision-core issue: a claim fails, the group steps down before the
// retry, and the node must end up a receiver on both replications (one
// BACKUP role action), not a sender with released VIPs.
func TestFailedClaimThenStepDown(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	acts := startMaster(t, c)
	master := kinds(acts, ActionRole)[1]
	acts = c.Step(Event{Kind: EventRoleDone, Now: t0, Gen: master.Gen, Err: errors.New("netlink: EBUSY")}, nil)
	retry := kinds(acts, ActionSetTimer)
	if len(retry) != 1 || retry[0].Timer != (TimerKey{Timer: TimerRoleRetry}) || retry[0].After != RoleRetryInterval {
		t.Fatalf("no retry armed after a failed claim: %+v", acts)
	}
	if role, failed := c.Role(); role != vrrp.StateMaster || !failed {
		t.Fatalf("Role() = %v, %v; want MASTER, failed", role, failed)
	}
	// A better master appears before the retry fires.
	peer := newWire(t, peer4, password, 1000)
	acts = c.Step(peer.event(10, 150, vipWAN), nil)
	got := kinds(acts, ActionRole, ActionStopTimer)
	want := []Action{
		{Kind: ActionStopTimer, Timer: TimerKey{10, vrrp.TimerAdver}},
		{Kind: ActionStopTimer, Timer: TimerKey{11, vrrp.TimerAdver}},
		{Kind: ActionStopTimer, Timer: TimerKey{Timer: TimerRoleRetry}},
		{Kind: ActionRole, Role: vrrp.StateBackup, Gen: master.Gen + 1},
	}
	if diff := cmp.Diff(want, got, roleOnly); diff != "" {
		t.Errorf("step-down after a failed claim (-want +got):\n%s", diff)
	}
	// The stale retry does nothing.
	if acts := c.Step(Event{Kind: EventTimer, Now: t0, Timer: TimerKey{Timer: TimerRoleRetry}, Gen: retry[0].Gen}, nil); len(acts) != 0 {
		t.Errorf("stale retry acted: %+v", acts)
	}
	if role, failed := c.Role(); role != vrrp.StateBackup || failed {
		t.Errorf("Role() = %v, %v; want BACKUP, not failed", role, failed)
	}
}

// TestFailedReleaseThenRepromotion is the reverse sequence: a release
// fails, the node is promoted again before the retry, and it must become a
// sender again (one MASTER role action), not a master whose replications
// are receivers.
func TestFailedReleaseThenRepromotion(t *testing.T) {
	c := newCore(t, pairConfig(100, false))
	startMaster(t, c)
	peer := newWire(t, peer4, password, 1000)
	acts := c.Step(peer.event(10, 150, vipWAN), nil)
	backup := kinds(acts, ActionRole)
	if len(backup) != 1 || backup[0].Role != vrrp.StateBackup {
		t.Fatalf("no BACKUP role action on a better master: %+v", acts)
	}
	demoted := acts
	c.Step(Event{Kind: EventRoleDone, Now: t0, Gen: backup[0].Gen, Err: errors.New("release: ENOBUFS")}, nil)
	// The better master leaves (priority 0) on vrid 10: it takes over after
	// Skew_Time; vrid 11 heard nothing more and its Master_Down_Timer of
	// the step-down fires; the group follows once both want MASTER.
	acts = c.Step(peer.event(10, 0, vipWAN), nil)
	acts = append(acts, fire(c, acts, masterDown10)...)
	acts = append(acts, fire(c, demoted, TimerKey{11, vrrp.TimerMasterDown})...)
	if c.State() != vrrp.StateMaster {
		t.Fatalf("state %v after the master left", c.State())
	}
	got := kinds(acts, ActionRole)
	want := []Action{{Kind: ActionRole, Role: vrrp.StateMaster, Gen: backup[0].Gen + 1}}
	if diff := cmp.Diff(want, got, roleOnly); diff != "" {
		t.Errorf("re-promotion after a failed release (-want +got):\n%s", diff)
	}
}

func TestRoleRetryReissuesWholeRole(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	acts := startMaster(t, c)
	master := kinds(acts, ActionRole)[1]
	acts = c.Step(Event{Kind: EventRoleDone, Now: t0, Gen: master.Gen, Err: errors.New("EBUSY")}, nil)
	acts = fire(c, acts, TimerKey{Timer: TimerRoleRetry})
	want := []Action{{Kind: ActionRole, Role: vrrp.StateMaster, Gen: master.Gen + 1, Retry: true}}
	if diff := cmp.Diff(want, kinds(acts, ActionRole), roleOnly); diff != "" {
		t.Fatalf("retry (-want +got):\n%s", diff)
	}
	// Success ends the retries.
	if acts := c.Step(Event{Kind: EventRoleDone, Now: t0, Gen: master.Gen + 1}, nil); len(acts) != 0 {
		t.Errorf("after success: %+v", acts)
	}
	if _, failed := c.Role(); failed {
		t.Error("still failed after success")
	}
}

func TestHoldFollowsBackupEntries(t *testing.T) {
	c := newCore(t, pairConfig(150, true))
	acts := c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	holds := kinds(acts, ActionHold)
	want := []Action{{Kind: ActionHold, Gen: 1, Held: true, Wait: true, From: vrrp.StateInitialize, Reason: "start"}}
	if diff := cmp.Diff(want, holds, addrs); diff != "" {
		t.Fatalf("hold at start (-want +got):\n%s", diff)
	}
	// A live lower-priority master: the node does not preempt while held.
	peer := newWire(t, peer4, password, 1000)
	acts = c.Step(peer.event(10, 100, vipWAN), nil)
	acts = append(acts, c.Step(peer.event(11, 100, vipLAN), nil)...)
	if c.State() != vrrp.StateBackup {
		t.Fatalf("preempted while held: %v", c.State())
	}
	heard := acts
	// A stale verdict changes nothing.
	if acts := c.Step(Event{Kind: EventReady, Now: t0, Gen: 0}, nil); len(acts) != 0 {
		t.Errorf("stale verdict acted: %+v", acts)
	}
	acts = c.Step(Event{Kind: EventReady, Now: t0, Gen: 1}, nil)
	lifted := kinds(acts, ActionHold)
	if diff := cmp.Diff([]Action{{Kind: ActionHold, Gen: 1, Reason: "replications complete", Verdict: true}}, lifted, addrs); diff != "" {
		t.Errorf("lift (-want +got):\n%s", diff)
	}
	// Preemption now proceeds: the lower master's adverts no longer reset
	// Master_Down_Timer, which fires.
	c.Step(peer.event(10, 100, vipWAN), nil)
	c.Step(peer.event(11, 100, vipLAN), nil)
	acts = fire(c, heard, masterDown10)
	acts = append(acts, fire(c, heard, TimerKey{11, vrrp.TimerMasterDown})...)
	if c.State() != vrrp.StateMaster {
		t.Fatalf("no preemption after the hold lifted: %v", c.State())
	}
	if diff := cmp.Diff([]Action{{Kind: ActionHold, Gen: 2, From: vrrp.StateBackup, Reason: "MASTER: the hold is re-armed on the return to BACKUP"}}, kinds(acts, ActionHold), addrs); diff != "" {
		t.Errorf("hold on MASTER (-want +got):\n%s", diff)
	}
	// A tracked link down: FAULT re-arms the hold; back up: BACKUP with a
	// new wait.
	acts = c.Step(Event{Kind: EventLink, Now: t0, Interface: "eth1", Exists: true, Up: false}, nil)
	if c.State() != vrrp.StateFault {
		t.Fatalf("state %v after eth1 down", c.State())
	}
	if r := kinds(acts, ActionRole); len(r) != 1 || r[0].Role != vrrp.StateFault {
		t.Errorf("role on FAULT: %+v", r)
	}
	acts = c.Step(Event{Kind: EventLink, Now: t0, Interface: "eth1", Exists: true, Up: true}, nil)
	want = []Action{{Kind: ActionHold, Gen: 4, Held: true, Wait: true, From: vrrp.StateFault, Reason: "back from FAULT"}}
	if diff := cmp.Diff(want, kinds(acts, ActionHold), addrs); diff != "" {
		t.Errorf("hold back from FAULT (-want +got):\n%s", diff)
	}
}

func TestSyncInterfaceRecreatedRestarts(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	if acts := c.Step(Event{Kind: EventLink, Now: t0, Interface: "eth2", Exists: true, Up: false, Index: 4}, nil); len(acts) != 0 {
		t.Errorf("carrier loss of the sync interface acted: %+v", acts)
	}
	acts := c.Step(Event{Kind: EventLink, Now: t0, Interface: "eth2", Exists: true, Up: true, Index: 9}, nil)
	if len(acts) != 1 || acts[0].Kind != ActionRestart {
		t.Errorf("re-created sync interface: %+v", acts)
	}
}

func TestEpochPersistedBeforeUse(t *testing.T) {
	cfg := pairConfig(150, false)
	cfg.LastEpoch = uint32(t0.Unix()) + 500 // the previous run's clock was ahead
	c := newCore(t, cfg)
	acts := c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	if len(acts) == 0 || acts[0].Kind != ActionPersistEpoch || acts[0].Epoch != cfg.LastEpoch+1 {
		t.Fatalf("first action %+v; want the epoch %d persisted first", acts, cfg.LastEpoch+1)
	}
	acts = startMaster(t, newCore(t, cfg))
	for _, a := range kinds(acts, ActionSendAdvert) {
		if a.Counter.Epoch != cfg.LastEpoch+1 {
			t.Errorf("advert with epoch %d; want %d", a.Counter.Epoch, cfg.LastEpoch+1)
		}
	}
}

func TestShutdownReleasesEvenAfterFailure(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	acts := startMaster(t, c)
	master := kinds(acts, ActionRole)[1]
	c.Step(Event{Kind: EventRoleDone, Now: t0, Gen: master.Gen, Err: errors.New("EBUSY")}, nil)
	acts = c.Step(Event{Kind: EventShutdown, Now: t0}, nil)
	var prio0 int
	for _, a := range kinds(acts, ActionSendAdvert) {
		if a.Priority == 0 {
			prio0++
		}
	}
	if prio0 != 2 {
		t.Errorf("%d priority 0 adverts at shutdown; want 2", prio0)
	}
	roles := kinds(acts, ActionRole)
	if len(roles) != 1 || roles[0].Role != vrrp.StateInitialize {
		t.Fatalf("roles at shutdown: %+v", roles)
	}
	// After the stop nothing acts, and a failed release is not retried by
	// the core (the shell releases unconditionally on its way out).
	if acts := c.Step(Event{Kind: EventRoleDone, Now: t0, Gen: roles[0].Gen, Err: errors.New("x")}, nil); len(acts) != 0 {
		t.Errorf("after stop: %+v", acts)
	}
	peer := newWire(t, peer4, password, 1000)
	if acts := c.Step(peer.event(10, 150, vipWAN), nil); len(acts) != 0 {
		t.Errorf("advert after stop: %+v", acts)
	}
}
