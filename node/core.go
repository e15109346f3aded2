package node

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/muros/muros-had/vrrp"
)

// Reason says why an advert was dropped. Its string is a stable,
// low-cardinality metric label. The codec's reasons (vrrp.Reason) pass
// through unchanged; the core adds those that need the node's state.
type Reason string

// Reasons the core adds to the codec's.
const (
	ReasonOwnAdvert       Reason = "own_advert"       // our own advert, looped back by a bridge or hairpin
	ReasonUnknownVRID     Reason = "unknown_vrid"     // no instance of ours has that VRID
	ReasonWrongFamily     Reason = "wrong_family"     // our VRID, but the other address family (RFC 9568 section 7)
	ReasonAddressMismatch Reason = "address_mismatch" // our VRID with another address list: a VRID collision
	ReasonReplay          Reason = Reason(vrrp.ReasonReplay)
)

// Instance is one VRRP instance of the node: one VIP, one VRID.
type Instance struct {
	VRRP      vrrp.InstanceConfig
	Family    vrrp.Family
	Interface string       // the VIP's interface: tracked (down means FAULT)
	Addrs     []netip.Addr // the address list its adverts carry
}

// Config is what the core is built from.
type Config struct {
	Instances []Instance
	// Codec is the receive configuration (version, authentication,
	// checksum, unicast); the password it may hold is not used here.
	Codec vrrp.Config
	// Own is the node's own source address per family: adverts from it are
	// our own, looped back.
	Own map[vrrp.Family]netip.Addr
	// HoldReady: preemption is held at every entry into BACKUP until the
	// shell's readiness wait says the replications are complete.
	HoldReady bool
	// SyncInterface and SyncIndex: the interface the VRRP sockets are bound
	// to and its index when they were opened (0: unknown).
	SyncInterface string
	SyncIndex     int
	// LastEpoch is the AH epoch the previous run persisted (0: none).
	LastEpoch uint32
	// Checks are the health checks (checks.go); they count as failing
	// until their first verdict.
	Checks []Check
	// Maintenance: the node starts in maintenance mode (maintenance.go),
	// as the previous run left it.
	Maintenance bool
}

type replayKey struct {
	src  netip.Addr
	auth vrrp.AuthMode
	vrid uint8 // keepalived keeps one AH sequence counter per instance
}

// Core is the decision core of one node. It is not safe for concurrent
// use: one goroutine (the shell's event loop) feeds it.
type Core struct {
	cfg     Config
	group   *vrrp.Group
	inst    [256]*Instance
	tracked map[string]bool

	replay map[replayKey]vrrp.ReplayState
	ctr    map[vrrp.Family]vrrp.AHCounter
	// keys: the peer's AH key derivation as its accepted adverts show it;
	// our adverts fall back to version-1 keys while it speaks only v1.
	keys vrrp.PeerKeys

	// role is what the last ActionRole asked for; roleGen its generation;
	// roleFailed says the shell reported it failed (a retry is armed).
	role       vrrp.State
	roleGen    uint64
	roleFailed bool
	retryGen   uint64

	// group state after the last Step, and the readiness wait generation.
	last    vrrp.State
	waitGen uint64

	stopped bool
	scratch []vrrp.Action

	// checks by name, the base priority (before their weights) and the
	// priority the instances have (checks.go).
	checks   map[string]*checkState
	base     uint8
	priority uint8

	// maint: maintenance mode is on (maintenance.go).
	maint bool

	// peerMaster: the last peer-liveness verdict said the peer is alive
	// as master; peerHeld: the members told so (peer.go).
	peerMaster bool
	peerHeld   [256]bool
}

// New builds the core. It validates the instances (vrrp.NewGroup).
func New(cfg Config) (*Core, error) {
	cfgs := make([]vrrp.InstanceConfig, 0, len(cfg.Instances))
	c := &Core{
		cfg:     cfg,
		tracked: map[string]bool{},
		replay:  map[replayKey]vrrp.ReplayState{},
		ctr:     map[vrrp.Family]vrrp.AHCounter{},
		role:    vrrp.StateInitialize,
		last:    vrrp.StateInitialize,
		maint:   cfg.Maintenance,
	}
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		if in.Family != vrrp.IPv4 && in.Family != vrrp.IPv6 {
			return nil, fmt.Errorf("node: vrid %d: no address family", in.VRRP.VRID)
		}
		if len(in.Addrs) == 0 {
			return nil, fmt.Errorf("node: vrid %d: no addresses", in.VRRP.VRID)
		}
		ic := in.VRRP
		ic.WaitReady = cfg.HoldReady
		cfgs = append(cfgs, ic)
		c.inst[in.VRRP.VRID] = in
		if in.Interface != "" {
			c.tracked[in.Interface] = true
		}
	}
	if err := c.initChecks(cfgs); err != nil {
		return nil, err
	}
	g, err := vrrp.NewGroup(cfgs)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	c.group = g
	c.startChecks()
	return c, nil
}

// Group returns the sync group, for reading state (status, metrics). Do not
// Step it: the core's rules would be bypassed.
func (c *Core) Group() *vrrp.Group { return c.group }

// State is the sync group's state.
func (c *Core) State() vrrp.State { return c.group.State() }

// Role is what the last role action asked for, and whether the shell
// reported it failed (and a retry is pending).
func (c *Core) Role() (vrrp.State, bool) { return c.role, c.roleFailed }

// Instance returns the instance with vrid (nil if none).
func (c *Core) Instance(vrid uint8) *Instance { return c.inst[vrid] }

// Step feeds one event and appends the actions it calls for to out.
func (c *Core) Step(ev Event, out []Action) []Action {
	if c.stopped && ev.Kind != EventRoleDone {
		return out
	}
	switch ev.Kind {
	case EventStartup:
		if c.cfg.Codec.Auth == vrrp.AuthAH {
			for _, in := range c.cfg.Instances {
				if _, ok := c.ctr[in.Family]; !ok {
					c.ctr[in.Family] = vrrp.NewAHCounter(c.cfg.LastEpoch, ev.Now)
				}
			}
			out = c.persistEpoch(out)
		}
		out = c.stepAll(ev, vrrp.Event{Kind: vrrp.EventStartup}, out)
	case EventShutdown:
		if c.group.State() == vrrp.StateMaster {
			// Before the priority 0 adverts: the peer claims on this at
			// once instead of after Skew_Time (peer.go).
			out = append(out, Action{Kind: ActionLeave, Reason: "shutdown"})
		}
		out = c.stepAll(ev, vrrp.Event{Kind: vrrp.EventShutdown}, out)
		// Whatever the group says, a stopping node holds nothing: a claim
		// whose state is in doubt must not outlive the process.
		c.stopped = true
		out = c.setRole(out, vrrp.StateInitialize, vrrp.StateInitialize, "shutdown", false)
	case EventAdvert:
		out = c.advert(ev, out)
	case EventTimer:
		out = c.timer(ev, out)
	case EventLink:
		out = c.link(ev, out)
	case EventReady:
		out = c.ready(ev, out)
	case EventRoleDone:
		out = c.roleDone(ev, out)
	case EventPriority:
		if ev.Priority != 0 {
			c.base = ev.Priority
		}
		out = c.applyPriority(ev, out)
	case EventCheck:
		out = c.check(ev, out)
	case EventChecks:
		out = c.setChecks(ev, out)
	case EventMaintenance:
		out = c.maintenance(ev, out)
	case EventPeer:
		out = c.peer(ev, out)
	}
	return out
}

// advert makes every receive check, in the order of their cost to an
// attacker's packet, and feeds an accepted advert to its member.
func (c *Core) advert(ev Event, out []Action) []Action {
	r := &ev.Advert
	if own, ok := c.cfg.Own[ev.Family]; ok && r.Src == own {
		return c.drop(out, ReasonOwnAdvert, r)
	}
	if err := c.cfg.Codec.Check(r); err != nil {
		return c.drop(out, Reason(vrrp.ReasonOf(err)), r)
	}
	in := c.inst[r.Advert.VRID]
	if in == nil {
		return c.drop(out, ReasonUnknownVRID, r)
	}
	if in.Family != ev.Family {
		return c.drop(out, ReasonWrongFamily, r)
	}
	if !sameAddrs(r.Advert.Addrs, in.Addrs) {
		return c.drop(out, ReasonAddressMismatch, r)
	}
	if r.Auth == vrrp.AuthAH || r.Auth == vrrp.AuthKeepalivedAH {
		k := replayKey{src: r.Src, auth: r.Auth, vrid: r.Advert.VRID}
		// A peer silent for a Master_Down_Interval may come back with a
		// lower epoch (persisted epoch lost, clock behind): without the
		// window it would be refused for ever and both nodes would stay
		// MASTER (vrrp.ReplayState.AcceptAt bounds what a replay can do).
		// keepalived-ah keeps keepalived's own rule.
		var silence time.Duration
		if r.Auth == vrrp.AuthAH {
			silence = c.group.Member(r.Advert.VRID).MasterDownInterval()
		}
		next, err := c.replay[k].AcceptAt(r.SPI, r.Seq, ev.Now, silence)
		if err != nil {
			return c.drop(out, Reason(vrrp.ReasonOf(err)), r)
		}
		c.replay[k] = next
		c.keys = c.keys.Heard(r)
	}
	out = append(out, Action{Kind: ActionHeard, VRID: r.Advert.VRID, Src: r.Src, Priority: r.Advert.Priority, Key: r.KeyVersion})
	return c.stepOne(ev, r.Advert.VRID, vrrp.AdvertEvent(r.Src, r.Advert.Priority, r.Advert.Interval), out)
}

func (c *Core) drop(out []Action, why Reason, r *vrrp.Received) []Action {
	return append(out, Action{Kind: ActionDrop, Drop: why, VRID: r.Advert.VRID, Src: r.Src})
}

func (c *Core) timer(ev Event, out []Action) []Action {
	if ev.Timer.VRID == 0 {
		if ev.Timer.Timer == TimerRoleRetry && ev.Gen == c.retryGen && c.roleFailed {
			out = c.setRole(out, c.role, c.role, "retry after a failure", true)
		}
		return out
	}
	if c.maintenanceTimer(ev) {
		return out
	}
	return c.stepOne(ev, ev.Timer.VRID, vrrp.TimerEvent(ev.Timer.Timer, ev.Gen), out)
}

func (c *Core) link(ev Event, out []Action) []Action {
	if ev.Interface == c.cfg.SyncInterface && !c.tracked[ev.Interface] {
		if ev.Exists && c.cfg.SyncIndex != 0 && ev.Index != c.cfg.SyncIndex {
			out = append(out, Action{Kind: ActionRestart,
				Reason: fmt.Sprintf("sync interface was re-created (%s: index %d, was %d): the sockets bound to it hear nothing", ev.Interface, ev.Index, c.cfg.SyncIndex)})
		}
		return out
	}
	kind := vrrp.EventTrackDown
	if ev.Up {
		kind = vrrp.EventTrackUp
	}
	for _, in := range c.cfg.Instances {
		if in.Interface == ev.Interface {
			out = c.stepOne(ev, in.VRRP.VRID, vrrp.Event{Kind: kind, Interface: ev.Interface}, out)
		}
	}
	return out
}

// ready lifts the hold on the verdict of the current wait only: a verdict
// of a wait that a later entry into BACKUP superseded is stale.
func (c *Core) ready(ev Event, out []Action) []Action {
	if !c.cfg.HoldReady || ev.Gen != c.waitGen || c.last != vrrp.StateBackup {
		return out
	}
	why := "replications complete"
	if ev.TimedOut {
		why = "startup timeout"
	}
	out = append(out, Action{Kind: ActionHold, Gen: c.waitGen, Held: false, Reason: why,
		Verdict: true, TimedOut: ev.TimedOut, Pending: slices.Clone(ev.Incomplete)})
	return c.stepAll(ev, vrrp.Event{Kind: vrrp.EventReady}, out)
}

// roleDone: a failure of the current role action arms a retry of it (a
// role action issued meanwhile supersedes both); the result of a
// superseded action is stale.
func (c *Core) roleDone(ev Event, out []Action) []Action {
	if ev.Gen != c.roleGen {
		return out
	}
	if ev.Err == nil {
		return out
	}
	if c.stopped {
		return out // the shell gives up with the process
	}
	c.roleFailed = true
	c.retryGen++
	return append(out, Action{Kind: ActionSetTimer, Timer: TimerKey{Timer: TimerRoleRetry}, After: RoleRetryInterval, Gen: c.retryGen})
}

func (c *Core) stepOne(ev Event, vrid uint8, vev vrrp.Event, out []Action) []Action {
	acts, err := c.group.Step(vrid, vev, c.scratch[:0])
	if err != nil {
		// The instance table and the group are built from the same list:
		// an unknown VRID here is a bug of the caller (a timer of a VRID we
		// never armed).
		c.scratch = acts[:0]
		return out
	}
	return c.translate(ev, acts, out)
}

func (c *Core) stepAll(ev Event, vev vrrp.Event, out []Action) []Action {
	return c.translate(ev, c.group.StepAll(vev, c.scratch[:0]), out)
}

// translate turns one batch of the group's member actions into node
// actions, then applies the node's rules to the group state it left:
//
//   - the role follows the group state: MASTER is issued where the first
//     member claims (so the adverts and announcements that follow in the
//     batch find the VIPs in place), any other role after the batch (so a
//     leaving master's priority 0 adverts do not wait for the release);
//   - announcements of a batch become one, and none when the role action
//     of the batch claims (the claim starts the announcement schedule);
//   - an entry into BACKUP re-arms the preemption hold and asks for a
//     readiness wait; FAULT re-arms it too; MASTER ends any wait.
func (c *Core) translate(ev Event, acts []vrrp.Action, out []Action) []Action {
	// The group's scratch is reused by the nested steps below: copy what is
	// needed from it first.
	c.scratch = acts[:0]
	state := c.group.State()
	announce, claimed, confirm := false, false, false
	for _, a := range acts {
		switch a.Kind {
		case vrrp.ActionSendAdvert:
			out = c.send(ev, out, a.VRID, a.Priority)
		case vrrp.ActionSetTimer:
			out = append(out, Action{Kind: ActionSetTimer, Timer: TimerKey{a.VRID, a.Timer}, After: a.After, Gen: a.Gen})
		case vrrp.ActionStopTimer:
			out = append(out, Action{Kind: ActionStopTimer, Timer: TimerKey{a.VRID, a.Timer}})
		case vrrp.ActionClaimVIPs:
			if state == vrrp.StateMaster && c.role != vrrp.StateMaster && !c.stopped {
				out = c.setRole(out, vrrp.StateMaster, c.role, c.lastReason(acts), false)
				claimed = true
			}
		case vrrp.ActionReleaseVIPs:
			// After the batch (below).
		case vrrp.ActionAnnounce:
			announce = true
		case vrrp.ActionNotify:
			out = append(out, Action{Kind: ActionNotify, VRID: a.VRID, From: a.From, To: a.To, Reason: a.Reason})
		case vrrp.ActionConfirmMaster:
			confirm = true // one confirmation for the members that fired together
		}
	}
	if confirm {
		out = append(out, Action{Kind: ActionConfirmPeer})
	}
	if !c.stopped && state != c.role && (state != vrrp.StateMaster || !claimed) {
		out = c.setRole(out, state, c.role, c.lastReason(acts), false)
		claimed = claimed || state == vrrp.StateMaster
	}
	if announce && !claimed && c.role == vrrp.StateMaster {
		out = append(out, Action{Kind: ActionAnnounce})
	}
	return c.noteState(ev, out)
}

// lastReason is the reason of the batch's last transition, for the role
// action (the hooks and the log say why the node changed role).
func (c *Core) lastReason(acts []vrrp.Action) string {
	for i := len(acts) - 1; i >= 0; i-- {
		if acts[i].Kind == vrrp.ActionNotify {
			return acts[i].Reason
		}
	}
	return ""
}

// setRole issues a role action. A new role supersedes a failed one: its
// retry is disarmed by the generation.
func (c *Core) setRole(out []Action, role, from vrrp.State, why string, retry bool) []Action {
	if !retry && role == c.role && !c.roleFailed {
		return out
	}
	if c.roleFailed && !retry {
		// The retry still armed is for the role this one supersedes.
		out = append(out, Action{Kind: ActionStopTimer, Timer: TimerKey{Timer: TimerRoleRetry}})
	}
	c.roleFailed = false
	c.retryGen++
	c.role = role
	c.roleGen++
	return append(out, Action{Kind: ActionRole, Role: role, From: from, Reason: why, Gen: c.roleGen, Retry: retry})
}

// noteState applies the hold rules when the group state changed.
func (c *Core) noteState(ev Event, out []Action) []Action {
	now := c.group.State()
	if now == c.last {
		return out
	}
	prev := c.last
	c.last = now
	if !c.cfg.HoldReady || c.stopped {
		return out
	}
	c.waitGen++ // any wait of the state just left is stale
	switch now {
	case vrrp.StateBackup:
		out = c.stepAll(ev, vrrp.Event{Kind: vrrp.EventNotReady}, out)
		out = append(out, Action{Kind: ActionHold, Gen: c.waitGen, Held: true, Wait: true, From: prev, Reason: holdCause(prev)})
	case vrrp.StateFault:
		out = c.stepAll(ev, vrrp.Event{Kind: vrrp.EventNotReady}, out)
		out = append(out, Action{Kind: ActionHold, Gen: c.waitGen, Held: true, From: prev, Reason: "FAULT: the hold is re-armed on the return to BACKUP"})
	case vrrp.StateMaster:
		out = append(out, Action{Kind: ActionHold, Gen: c.waitGen, Held: false, From: prev, Reason: "MASTER: the hold is re-armed on the return to BACKUP"})
	}
	return out
}

// holdCause says why the group is entering BACKUP.
func holdCause(from vrrp.State) string {
	switch from {
	case vrrp.StateMaster:
		return "stepped down from MASTER"
	case vrrp.StateFault:
		return "back from FAULT"
	}
	return "start"
}

// send stamps an advert with the family's AH counter; a new epoch is
// persisted before the advert that carries it.
func (c *Core) send(ev Event, out []Action, vrid uint8, prio uint8) []Action {
	in := c.inst[vrid]
	if in == nil {
		return out
	}
	var ctr vrrp.AHCounter
	switch c.cfg.Codec.Auth {
	case vrrp.AuthKeepalivedAH:
		ctr = c.ctr[in.Family].NextKeepalived(ev.Now)
		c.ctr[in.Family] = ctr
	case vrrp.AuthAH:
		prev := c.ctr[in.Family]
		ctr = c.keys.Stamp(prev.Next(ev.Now))
		c.ctr[in.Family] = ctr
		if ctr.Epoch != prev.Epoch {
			out = c.persistEpoch(out)
		}
	}
	return append(out, Action{Kind: ActionSendAdvert, VRID: vrid, Family: in.Family, Priority: prio, Counter: ctr})
}

func (c *Core) persistEpoch(out []Action) []Action {
	var e uint32
	for _, ctr := range c.ctr {
		e = max(e, ctr.Epoch)
	}
	return append(out, Action{Kind: ActionPersistEpoch, Epoch: e})
}

// sameAddrs reports whether two address lists hold the same addresses in
// any order (RFC 9568 does not order them).
func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
