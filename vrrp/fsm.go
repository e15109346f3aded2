package vrrp

// The VRRP state machine of RFC 9568, section 6 ("Protocol State Machine"),
// as a pure function of events: no sockets, goroutines, timers or wall clock.
// The caller (internal/daemon, or vrrp/vrrpsim in tests) feeds Events to
// Machine.Step and executes the returned Actions in order.
//
// Mapping to the RFC:
//   - 6.1 parameters: InstanceConfig (VRID, Priority, Advertisement_Interval,
//     Preempt_Mode as !NoPreempt, primary address for the tie-break) and the
//     derived Machine.MasterAdverInterval, SkewTime, MasterDownInterval.
//     Accept_Mode is not the state machine's business: the vip/ adapter
//     decides whether a master answers for addresses it does not own.
//   - 6.2 timers: TimerMasterDown and TimerAdver (plus TimerPreemptDelay, a
//     keepalived extension). Timers are armed and cancelled through actions and
//     carry a generation number so that a timer that fired while it was being
//     re-armed is recognised as stale and ignored.
//   - 6.3 state diagram and 6.4.1 Initialize, 6.4.2 Backup, 6.4.3 Master:
//     stepInitialize, stepBackup, stepMaster.
//
// Additions over the RFC, each modelled on keepalived (vrrp.c,
// vrrp_scheduler.c) unless said otherwise:
//   - FAULT: a tracked interface down leaves Master (priority-0 advert first,
//     then release) or Backup and stops all VRRP activity until every tracked
//     interface is up again; then the node re-enters the election as 6.4.1
//     says. keepalived does the same (vrrp_state_leave_master / FAULT).
//   - preempt_delay: after start-up, or once a lower-priority master is first
//     heard, a preempting backup keeps accepting that master's adverts (as if
//     nopreempt) for PreemptDelay, then preempts as the RFC says.
//   - readiness (ours, not keepalived's): with WaitReady set, the backup does
//     not preempt a live lower-priority master until EventReady (the conntrack
//     bulk sync is complete). It never delays takeover of a master that is
//     gone (Master_Down_Timer expiry, priority-0 advert): forwarding with
//     partial connection state beats not forwarding at all, and an operator
//     who stopped the master expects the backup to answer.

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// State is a VRRP instance state (RFC 9568 section 6.4, plus FAULT).
type State uint8

// States. The zero value is Initialize, as in RFC 9568 6.4.1.
const (
	StateInitialize State = iota
	StateBackup
	StateMaster
	StateFault
)

func (s State) String() string {
	switch s {
	case StateInitialize:
		return "INIT"
	case StateBackup:
		return "BACKUP"
	case StateMaster:
		return "MASTER"
	case StateFault:
		return "FAULT"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// TimerID names one of the instance's timers (RFC 9568 6.2).
type TimerID uint8

// Timers.
const (
	TimerMasterDown   TimerID = iota // Master_Down_Timer (Backup)
	TimerAdver                       // Adver_Timer (Master)
	TimerPreemptDelay                // keepalived preempt_delay hold-off (Backup)
	numTimers
)

func (t TimerID) String() string {
	switch t {
	case TimerMasterDown:
		return "master_down"
	case TimerAdver:
		return "adver"
	case TimerPreemptDelay:
		return "preempt_delay"
	}
	return fmt.Sprintf("TimerID(%d)", uint8(t))
}

// EventKind says what happened.
type EventKind uint8

// Event kinds.
const (
	EventStartup     EventKind = iota + 1 // RFC 9568 "Startup" event
	EventShutdown                         // RFC 9568 "Shutdown" event (graceful stop)
	EventAdvert                           // an authenticated, validated ADVERTISEMENT for this VRID
	EventTimer                            // a timer armed by ActionSetTimer expired
	EventTrackDown                        // a tracked interface lost carrier / went down
	EventTrackUp                          // a tracked interface is up again
	EventSetPriority                      // the local priority changes (1..255)
	EventReady                            // preemption may proceed (e.g. conntrack bulk sync done)
	EventNotReady                         // hold preemption again
	// EventMasterDead: a peer-liveness verdict (package liveness) says the
	// master is dead on every path, or has left: Backup does at once what
	// it does when Master_Down_Timer fires. Reason says why.
	EventMasterDead
	// EventMasterAlive: a peer-liveness verdict says whether the master is
	// alive as master on some path (Alive). While it is, Master_Down_Timer
	// firing in Backup is held (its adverts are lost, the master is not):
	// no split brain when only the advert path is cut. When the hold ends
	// with the master no longer alive as master, a held expiry takes over.
	EventMasterAlive
)

func (k EventKind) String() string {
	switch k {
	case EventStartup:
		return "startup"
	case EventShutdown:
		return "shutdown"
	case EventAdvert:
		return "advert"
	case EventTimer:
		return "timer"
	case EventTrackDown:
		return "track_down"
	case EventTrackUp:
		return "track_up"
	case EventSetPriority:
		return "set_priority"
	case EventReady:
		return "ready"
	case EventNotReady:
		return "not_ready"
	case EventMasterDead:
		return "master_dead"
	case EventMasterAlive:
		return "master_alive"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// PeerAdvert is what the election needs from a received ADVERTISEMENT. The
// caller has already checked TTL, checksum, authentication and VRID, and
// drops the node's own looped-back adverts.
type PeerAdvert struct {
	From     netip.Addr    // IP source address: the sender's primary address
	Priority uint8         // 0 means the master is leaving
	Interval time.Duration // Max Adver Int field (centiseconds in v3, seconds in v2)
}

// Event is one input to Machine.Step. Only the fields of its Kind are read.
type Event struct {
	Kind      EventKind
	Advert    PeerAdvert // EventAdvert
	Timer     TimerID    // EventTimer
	Gen       uint64     // EventTimer: the Gen of the ActionSetTimer that armed it
	Interface string     // EventTrackDown, EventTrackUp
	Priority  uint8      // EventSetPriority
	Alive     bool       // EventMasterAlive
	Reason    string     // EventMasterDead
}

// AdvertEvent is a received advert.
func AdvertEvent(from netip.Addr, priority uint8, interval time.Duration) Event {
	return Event{Kind: EventAdvert, Advert: PeerAdvert{From: from, Priority: priority, Interval: interval}}
}

// TimerEvent is the expiry of the timer armed with generation gen.
func TimerEvent(t TimerID, gen uint64) Event { return Event{Kind: EventTimer, Timer: t, Gen: gen} }

// ActionKind says what the caller must do.
type ActionKind uint8

// Action kinds.
const (
	ActionSendAdvert  ActionKind = iota + 1 // multicast an ADVERTISEMENT with Priority
	ActionSetTimer                          // (re)arm Timer to fire After from now; replaces a pending one
	ActionStopTimer                         // cancel Timer
	ActionClaimVIPs                         // add the instance's virtual addresses (and accept/forward for them)
	ActionReleaseVIPs                       // remove them
	ActionAnnounce                          // gratuitous ARP (IPv4) / unsolicited NA (IPv6) for the VIPs
	ActionNotify                            // state changed From -> To; log Reason
	// ActionConfirmMaster: Master_Down_Timer fired in Backup while a
	// peer-liveness verdict holds the master alive (EventMasterAlive): ask
	// the liveness protocol to confirm it now. A quiet master may
	// heartbeat slower than VRRP's Master_Down_Interval (at adverts under
	// about 16 ms); its adverts missing is the cue to probe instead of
	// waiting for its heartbeats to go missing.
	ActionConfirmMaster
)

func (k ActionKind) String() string {
	switch k {
	case ActionSendAdvert:
		return "send_advert"
	case ActionSetTimer:
		return "set_timer"
	case ActionStopTimer:
		return "stop_timer"
	case ActionClaimVIPs:
		return "claim_vips"
	case ActionReleaseVIPs:
		return "release_vips"
	case ActionAnnounce:
		return "announce"
	case ActionNotify:
		return "notify"
	case ActionConfirmMaster:
		return "confirm_master"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is one output of Machine.Step. Only the fields of its Kind are set,
// except VRID, which is always the instance's.
type Action struct {
	Kind     ActionKind
	VRID     uint8
	Priority uint8         // ActionSendAdvert
	Timer    TimerID       // ActionSetTimer, ActionStopTimer
	After    time.Duration // ActionSetTimer
	Gen      uint64        // ActionSetTimer: echo it in the TimerEvent
	From, To State         // ActionNotify
	Reason   string        // ActionNotify: why, for the log
}

// IgnoreReason says why the machine ignored an event; ignored events are
// counted per reason (Machine.Ignored), never silently dropped.
type IgnoreReason uint8

// Ignore reasons.
const (
	IgnoreStaleTimer    IgnoreReason = iota // timer generation no longer current (cancelled or re-armed)
	IgnoreNotRunning                        // event needs a running instance (Initialize or Fault)
	IgnoreLowerPriority                     // advert lost the election against us (RFC "discard")
	IgnoreOwnAddress                        // advert claims our own primary address
	IgnoreBadPriority                       // EventSetPriority with priority 0
	IgnoreBadInterval                       // advert with a zero interval
	IgnoreDuplicate                         // startup while running, track event that changes nothing
	IgnoreUnknownEvent                      // unknown event kind or timer
	IgnoreMasterAlive                       // Master_Down_Timer fired while the master is alive on another path
	NumIgnoreReasons
)

func (r IgnoreReason) String() string {
	switch r {
	case IgnoreStaleTimer:
		return "stale_timer"
	case IgnoreNotRunning:
		return "not_running"
	case IgnoreLowerPriority:
		return "lower_priority"
	case IgnoreOwnAddress:
		return "own_address"
	case IgnoreBadPriority:
		return "bad_priority"
	case IgnoreBadInterval:
		return "bad_interval"
	case IgnoreDuplicate:
		return "duplicate"
	case IgnoreUnknownEvent:
		return "unknown_event"
	case IgnoreMasterAlive:
		return "master_alive"
	}
	return fmt.Sprintf("IgnoreReason(%d)", uint8(r))
}

// IgnoreCounts counts ignored events by IgnoreReason.
type IgnoreCounts [NumIgnoreReasons]uint64

// PriorityOwner is the priority of the router that owns the virtual
// addresses (RFC 9568 6.1): it becomes Master at once on startup.
const PriorityOwner = 255

// InstanceConfig is one VRRP instance (one VRID) as RFC 9568 6.1 describes it.
type InstanceConfig struct {
	VRID     uint8         // 1..255
	Priority uint8         // 1..255; 255 = address owner
	Interval time.Duration // Advertisement_Interval: v3 10ms..40.95s in 10ms steps; v2 whole seconds 1..255s
	// Version is 3 (RFC 9568, the default when 0) or 2 (RFC 3768): v2 uses
	// Skew_Time = (256 - Priority) / 256 seconds, not scaled by the interval.
	Version int
	// Primary is the local primary address, compared with the sender's
	// address when priorities are equal (RFC 9568 6.4.3).
	Primary netip.Addr
	// NoPreempt clears Preempt_Mode (RFC default: preempt).
	NoPreempt bool
	// PreemptDelay holds preemption off after start-up, and after a
	// lower-priority master is first heard (keepalived preempt_delay).
	PreemptDelay time.Duration
	// WaitReady starts the instance "not ready": it will not preempt a live
	// master until EventReady. See the file comment.
	WaitReady bool
}

// Validate reports the first problem with c.
func (c InstanceConfig) Validate() error {
	var errs []error
	if c.VRID == 0 {
		errs = append(errs, errors.New("vrid 0 is reserved (must be 1..255)"))
	}
	if c.Priority == 0 {
		errs = append(errs, errors.New("priority 0 is reserved for the leaving master (must be 1..255)"))
	}
	switch c.Version {
	case 0, 3:
		if c.Interval < 10*time.Millisecond || c.Interval > 4095*10*time.Millisecond || c.Interval%(10*time.Millisecond) != 0 {
			errs = append(errs, fmt.Errorf("advert interval %v: VRRPv3 needs 10ms..40.95s in 10ms steps", c.Interval))
		}
	case 2:
		if c.Interval < time.Second || c.Interval > 255*time.Second || c.Interval%time.Second != 0 {
			errs = append(errs, fmt.Errorf("advert interval %v: VRRPv2 needs whole seconds 1..255", c.Interval))
		}
	default:
		errs = append(errs, fmt.Errorf("version %d: must be 2 or 3", c.Version))
	}
	if !c.Primary.IsValid() {
		errs = append(errs, errors.New("primary address missing"))
	}
	if c.PreemptDelay < 0 {
		errs = append(errs, fmt.Errorf("preempt delay %v is negative", c.PreemptDelay))
	}
	if len(errs) > 0 {
		return fmt.Errorf("vrrp instance %d: %w", c.VRID, errors.Join(errs...))
	}
	return nil
}

// Machine is one VRRP instance's state machine: RFC 9568 section 6.4
// (Initialize 6.4.1, Backup 6.4.2, Master 6.4.3) plus FAULT, preempt delay
// and readiness (see the file comment). It is not safe for concurrent use;
// the caller serialises events (one goroutine per node). Daemons with
// several VIPs use it through Group, which adds the sync-group rules.
type Machine struct {
	cfg      InstanceConfig
	state    State
	priority uint8

	masterAdverInterval time.Duration // RFC 9568 6.1 Master_Adver_Interval
	masterAddr          netip.Addr    // sender of the last accepted advert (status only)

	gen     [numTimers]uint64 // generation of the currently armed timer; 0 = not armed
	lastGen uint64

	down []string // tracked interfaces currently down (own fault causes)

	groupFault bool // held in FAULT by the sync group (another member's fault)
	wantMaster bool // the RFC says "transition to Master"; a sync group may defer it
	wantReason string
	masterLeft bool // the master sent priority 0; Master_Down_Timer is at Skew_Time
	// masterAlive: a liveness verdict says the master is alive as master
	// on another path; downHeld: Master_Down_Timer fired meanwhile.
	masterAlive bool
	downHeld    bool
	// heardLower: a lower-priority advert was discarded since
	// Master_Down_Timer was last armed (a preemption, which the hold
	// must not stop: the master's adverts do arrive).
	heardLower  bool
	ready       bool
	delayState  preemptDelayState
	ignored     IgnoreCounts
	transitions uint64
}

type preemptDelayState uint8

const (
	delayIdle    preemptDelayState = iota // no hold-off in progress
	delayRunning                          // TimerPreemptDelay armed: behave as nopreempt
	delayElapsed                          // hold-off over: preempt as the RFC says
)

// NewMachine returns an instance in Initialize. Send EventStartup to start it.
func NewMachine(cfg InstanceConfig) (*Machine, error) {
	if cfg.Version == 0 {
		cfg.Version = 3
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Machine{cfg: cfg, priority: cfg.Priority, masterAdverInterval: cfg.Interval, ready: !cfg.WaitReady}, nil
}

// Config returns the instance's configuration.
func (m *Machine) Config() InstanceConfig { return m.cfg }

// State returns the current state.
func (m *Machine) State() State { return m.state }

// VRID returns the instance's virtual router ID.
func (m *Machine) VRID() uint8 { return m.cfg.VRID }

// Priority returns the current local priority.
func (m *Machine) Priority() uint8 { return m.priority }

// Ready reports whether preemption is allowed by readiness (see WaitReady).
func (m *Machine) Ready() bool { return m.ready }

// MasterAddr is the sender of the last advert accepted in Backup.
func (m *Machine) MasterAddr() netip.Addr { return m.masterAddr }

// Ignored returns the count of ignored events by reason.
func (m *Machine) Ignored() IgnoreCounts { return m.ignored }

// Transitions counts state changes since creation.
func (m *Machine) Transitions() uint64 { return m.transitions }

// DownHeld reports whether Master_Down_Timer fired while a liveness
// verdict said the master is alive on another path (EventMasterAlive).
func (m *Machine) DownHeld() bool { return m.downHeld }

// Faulty reports whether a tracked interface of this instance is down.
func (m *Machine) Faulty() bool { return len(m.down) > 0 }

// MasterAdverInterval is RFC 9568 Master_Adver_Interval: the interval
// learned from the master's adverts (our own interval until one is heard).
func (m *Machine) MasterAdverInterval() time.Duration { return m.masterAdverInterval }

// SkewTime is RFC 9568 6.1 Skew_Time = ((256 - Priority) *
// Master_Adver_Interval) / 256, computed in nanoseconds (keepalived uses
// microseconds; the RFC's centiseconds would truncate up to 10ms). VRRPv2
// (RFC 3768 6.1) does not scale by the interval: (256 - Priority) / 256 s.
func (m *Machine) SkewTime() time.Duration {
	if m.cfg.Version == 2 {
		return time.Duration(256-int64(m.priority)) * time.Second / 256
	}
	return time.Duration(256-int64(m.priority)) * m.masterAdverInterval / 256
}

// MasterDownInterval is RFC 9568 6.1 Master_Down_Interval =
// 3 * Master_Adver_Interval + Skew_Time.
func (m *Machine) MasterDownInterval() time.Duration {
	return 3*m.masterAdverInterval + m.SkewTime()
}

// Step feeds one event and appends the resulting actions to out. It does not
// allocate on the steady-state paths (advert received, Adver_Timer fired)
// when out has capacity.
func (m *Machine) Step(ev Event, out []Action) []Action {
	out = m.step(ev, out)
	if m.wantMaster {
		out = m.becomeMaster(out, m.wantReason)
	}
	return out
}

// step is Step without committing a wanted transition to Master: a sync
// group decides that for all its members at once.
func (m *Machine) step(ev Event, out []Action) []Action {
	switch ev.Kind {
	case EventTimer:
		if ev.Timer >= numTimers {
			m.ignored[IgnoreUnknownEvent]++
			return out
		}
		if ev.Gen == 0 || m.gen[ev.Timer] != ev.Gen {
			m.ignored[IgnoreStaleTimer]++
			return out
		}
		m.gen[ev.Timer] = 0
	case EventTrackDown:
		return m.trackDown(ev.Interface, out)
	case EventTrackUp:
		return m.trackUp(ev.Interface, out)
	case EventSetPriority:
		return m.setPriority(ev.Priority, out)
	case EventReady:
		m.ready = true
		return out
	case EventNotReady:
		m.ready = false
		return out
	case EventMasterAlive:
		m.masterAlive = ev.Alive
		if !ev.Alive && m.downHeld && m.state == StateBackup {
			m.downHeld = false
			m.wantMaster = true
			m.wantReason = fmt.Sprintf("master %v down: no advert for %v, and no longer master on any path", m.masterAddr, m.MasterDownInterval())
		}
		return out
	case EventMasterDead:
		m.masterAlive, m.downHeld = false, false
		if m.state != StateBackup {
			m.ignored[IgnoreNotRunning]++
			return out
		}
		m.wantMaster = true
		m.wantReason = ev.Reason
		return out
	case EventAdvert:
		if ev.Advert.From == m.cfg.Primary {
			m.ignored[IgnoreOwnAddress]++
			return out
		}
		if ev.Advert.Interval <= 0 && ev.Advert.Priority != 0 {
			m.ignored[IgnoreBadInterval]++
			return out
		}
	case EventStartup, EventShutdown:
	default:
		m.ignored[IgnoreUnknownEvent]++
		return out
	}
	switch m.state {
	case StateInitialize:
		return m.stepInitialize(ev, out)
	case StateBackup:
		return m.stepBackup(ev, out)
	case StateMaster:
		return m.stepMaster(ev, out)
	case StateFault:
		return m.stepFault(ev, out)
	}
	return out
}

// stepInitialize is RFC 9568 6.4.1.
func (m *Machine) stepInitialize(ev Event, out []Action) []Action {
	if ev.Kind != EventStartup {
		m.ignored[IgnoreNotRunning]++
		return out
	}
	if m.faulted() {
		return m.enterFault(out, "startup with "+m.faultCause())
	}
	return m.enterElection(out, "startup")
}

// enterElection is the body of 6.4.1 Initialize (also used when leaving
// FAULT): the owner goes Master at once, everyone else to Backup.
func (m *Machine) enterElection(out []Action, why string) []Action {
	if m.priority == PriorityOwner {
		m.wantMaster, m.wantReason = true, why+": address owner (priority 255)"
		// Pass through Backup (without Master_Down_Timer): a sync group may
		// defer the transition to Master until every member wants it.
		return m.transition(out, StateBackup, why+": address owner")
	}
	m.masterAdverInterval = m.cfg.Interval
	m.masterAddr = netip.Addr{}
	m.masterLeft = false
	out = m.transition(out, StateBackup, why)
	out = m.setTimer(out, TimerMasterDown, m.MasterDownInterval())
	m.delayState = delayIdle
	if m.cfg.PreemptDelay > 0 && !m.cfg.NoPreempt {
		// keepalived counts preempt_delay from start-up too: a freshly
		// started node does not preempt at the first lower advert.
		out = m.setTimer(out, TimerPreemptDelay, m.cfg.PreemptDelay)
		m.delayState = delayRunning
	}
	return out
}

// stepBackup is RFC 9568 6.4.2.
func (m *Machine) stepBackup(ev Event, out []Action) []Action {
	switch ev.Kind {
	case EventStartup:
		m.ignored[IgnoreDuplicate]++
		return out
	case EventShutdown:
		out = m.stopTimer(out, TimerMasterDown)
		out = m.stopTimer(out, TimerPreemptDelay)
		m.wantMaster = false
		return m.transition(out, StateInitialize, "shutdown")
	case EventTimer:
		switch ev.Timer {
		case TimerMasterDown:
			if m.masterAlive && !m.masterLeft && !m.heardLower {
				// The adverts are lost, the master is not: stay Backup
				// (the shell raises "sync link down"). A lower-priority
				// master whose adverts arrive is preempted as usual.
				m.downHeld = true
				m.ignored[IgnoreMasterAlive]++
				return append(out, Action{Kind: ActionConfirmMaster, VRID: m.cfg.VRID})
			}
			m.wantMaster = true
			if m.masterLeft {
				m.wantReason = fmt.Sprintf("master %v left (priority 0), skew time %v over", m.masterAddr, m.SkewTime())
			} else if m.masterAddr.IsValid() {
				m.wantReason = fmt.Sprintf("master %v down: no advert for %v", m.masterAddr, m.MasterDownInterval())
			} else {
				m.wantReason = fmt.Sprintf("no master heard for %v", m.MasterDownInterval())
			}
		case TimerPreemptDelay:
			m.delayState = delayElapsed
		default:
			m.ignored[IgnoreStaleTimer]++
		}
		return out
	case EventAdvert:
	}
	a := ev.Advert
	if a.Priority == 0 {
		// The master is leaving: take over after Skew_Time, so that the
		// highest-priority backup answers first.
		m.wantMaster = false
		m.masterLeft = true
		m.masterAddr = a.From
		return m.setTimer(out, TimerMasterDown, m.SkewTime())
	}
	if m.mayPreempt() && a.Priority < m.priority {
		// RFC: with Preempt_Mode true a lower-priority advert is discarded
		// without touching Master_Down_Timer, so we take over when it fires.
		m.ignored[IgnoreLowerPriority]++
		m.heardLower = true
		return out
	}
	if a.Priority >= m.priority {
		// keepalived clears preempt_time on a higher/equal advert; a later
		// lower-priority master starts a fresh hold-off.
		out = m.stopTimer(out, TimerPreemptDelay)
		m.delayState = delayIdle
	} else if m.delayState == delayIdle && m.cfg.PreemptDelay > 0 && !m.cfg.NoPreempt {
		out = m.setTimer(out, TimerPreemptDelay, m.cfg.PreemptDelay)
		m.delayState = delayRunning
	}
	m.wantMaster = false
	m.masterLeft = false
	m.downHeld = false
	m.heardLower = false
	m.masterAdverInterval = a.Interval
	m.masterAddr = a.From
	return m.setTimer(out, TimerMasterDown, m.MasterDownInterval())
}

// mayPreempt is Preempt_Mode, narrowed by preempt_delay and readiness.
func (m *Machine) mayPreempt() bool {
	if m.cfg.NoPreempt || !m.ready {
		return false
	}
	return m.cfg.PreemptDelay == 0 || m.delayState == delayElapsed
}

// stepMaster is RFC 9568 6.4.3.
func (m *Machine) stepMaster(ev Event, out []Action) []Action {
	switch ev.Kind {
	case EventStartup:
		m.ignored[IgnoreDuplicate]++
		return out
	case EventShutdown:
		out = m.stopTimer(out, TimerAdver)
		out = m.sendAdvert(out, 0)
		out = append(out, Action{Kind: ActionReleaseVIPs, VRID: m.cfg.VRID})
		return m.transition(out, StateInitialize, "shutdown")
	case EventTimer:
		if ev.Timer != TimerAdver {
			m.ignored[IgnoreStaleTimer]++
			return out
		}
		out = m.sendAdvert(out, m.priority)
		return m.setTimer(out, TimerAdver, m.cfg.Interval)
	case EventAdvert:
	}
	a := ev.Advert
	if a.Priority == 0 {
		// Another master is leaving: assert ourselves at once so that its
		// backups do not take over after their Skew_Time.
		out = m.sendAdvert(out, m.priority)
		return m.setTimer(out, TimerAdver, m.cfg.Interval)
	}
	if a.Priority > m.priority || (a.Priority == m.priority && a.From.Compare(m.cfg.Primary) > 0) {
		why := fmt.Sprintf("higher priority master %v (priority %d, ours %d)", a.From, a.Priority, m.priority)
		if a.Priority == m.priority {
			why = fmt.Sprintf("master %v has equal priority %d and a higher address", a.From, a.Priority)
		}
		m.masterAdverInterval = a.Interval
		m.masterAddr = a.From
		return m.leaveMaster(out, why)
	}
	// RFC: discard. keepalived by default answers with an advert of its own
	// (unless lower_prio_no_advert); we follow the RFC: our next advert is at
	// most one interval away and a reply per received advert doubles traffic
	// during a dual-master episode.
	m.ignored[IgnoreLowerPriority]++
	return out
}

// leaveMaster is the Master -> Backup transition of 6.4.3 (also used by the
// sync group to demote members together).
func (m *Machine) leaveMaster(out []Action, why string) []Action {
	out = m.stopTimer(out, TimerAdver)
	out = append(out, Action{Kind: ActionReleaseVIPs, VRID: m.cfg.VRID})
	out = m.transition(out, StateBackup, why)
	m.delayState = delayIdle
	m.downHeld, m.heardLower = false, false
	return m.setTimer(out, TimerMasterDown, m.MasterDownInterval())
}

// becomeMaster is the "transition to Master" of 6.4.1 and 6.4.2: claim the
// addresses, advertise, announce, arm Adver_Timer. The claim comes before
// the advert so that the VIP answers by the time peers learn of us.
func (m *Machine) becomeMaster(out []Action, why string) []Action {
	m.wantMaster = false
	m.downHeld, m.heardLower = false, false
	out = m.stopTimer(out, TimerMasterDown)
	out = m.stopTimer(out, TimerPreemptDelay)
	m.delayState = delayIdle
	m.masterAddr = m.cfg.Primary
	out = m.transition(out, StateMaster, why)
	out = append(out, Action{Kind: ActionClaimVIPs, VRID: m.cfg.VRID})
	out = m.sendAdvert(out, m.priority)
	out = append(out, Action{Kind: ActionAnnounce, VRID: m.cfg.VRID})
	return m.setTimer(out, TimerAdver, m.cfg.Interval)
}

// stepFault: the instance is out of the election until its tracked
// interfaces are up (handled in trackUp) or it is shut down.
func (m *Machine) stepFault(ev Event, out []Action) []Action {
	if ev.Kind == EventShutdown {
		return m.transition(out, StateInitialize, "shutdown")
	}
	m.ignored[IgnoreNotRunning]++
	return out
}

func (m *Machine) faulted() bool { return len(m.down) > 0 || m.groupFault }

func (m *Machine) faultCause() string {
	if len(m.down) > 0 {
		return trackCause(m.down[0], false)
	}
	return "sync group member in fault"
}

// enterFault leaves Master or Backup for FAULT. A master sends priority 0
// first (as keepalived does) so the backup takes over after Skew_Time.
func (m *Machine) enterFault(out []Action, why string) []Action {
	switch m.state {
	case StateMaster:
		out = m.stopTimer(out, TimerAdver)
		out = m.sendAdvert(out, 0)
		out = append(out, Action{Kind: ActionReleaseVIPs, VRID: m.cfg.VRID})
	case StateBackup:
		out = m.stopTimer(out, TimerMasterDown)
		out = m.stopTimer(out, TimerPreemptDelay)
	}
	m.wantMaster = false
	m.delayState = delayIdle
	return m.transition(out, StateFault, why)
}

// leaveFault re-enters the election once nothing holds the instance in FAULT.
func (m *Machine) leaveFault(out []Action, why string) []Action {
	if m.state != StateFault || m.faulted() {
		return out
	}
	return m.enterElection(out, why)
}

func (m *Machine) trackDown(ifname string, out []Action) []Action {
	for _, d := range m.down {
		if d == ifname {
			m.ignored[IgnoreDuplicate]++
			return out
		}
	}
	m.down = append(m.down, ifname)
	if m.state == StateBackup || m.state == StateMaster {
		return m.enterFault(out, trackCause(ifname, false))
	}
	return out
}

func (m *Machine) trackUp(ifname string, out []Action) []Action {
	for i, d := range m.down {
		if d == ifname {
			m.down = append(m.down[:i], m.down[i+1:]...)
			return m.leaveFault(out, trackCause(ifname, true))
		}
	}
	m.ignored[IgnoreDuplicate]++
	return out
}

// trackCause says what a tracked cause's change is, for the transition
// reasons: a tracked interface, or a health check (package node tracks
// one as the pseudo interface "check:NAME"; ':' is in no interface name).
func trackCause(name string, up bool) string {
	if check, ok := strings.CutPrefix(name, "check:"); ok {
		if up {
			return "health check " + check + " OK"
		}
		return "health check " + check + " failing"
	}
	if up {
		return "tracked interface " + name + " up"
	}
	return "tracked interface " + name + " down"
}

// setGroupFault holds the instance in FAULT (or lets it go) on behalf of its
// sync group.
func (m *Machine) setGroupFault(on bool, out []Action, why string) []Action {
	if m.groupFault == on {
		return out
	}
	m.groupFault = on
	if on {
		if m.state == StateBackup || m.state == StateMaster {
			return m.enterFault(out, why)
		}
		return out
	}
	return m.leaveFault(out, why)
}

// setPriority changes the local priority. Skew_Time and Master_Down_Interval
// follow at the next timer arming. A master advertises the new priority at
// once so a better backup can preempt without waiting an interval.
func (m *Machine) setPriority(p uint8, out []Action) []Action {
	if p == 0 {
		m.ignored[IgnoreBadPriority]++
		return out
	}
	if p == m.priority {
		m.ignored[IgnoreDuplicate]++
		return out
	}
	m.priority = p
	if m.state == StateMaster {
		out = m.sendAdvert(out, p)
		return m.setTimer(out, TimerAdver, m.cfg.Interval)
	}
	return out
}

func (m *Machine) transition(out []Action, to State, why string) []Action {
	from := m.state
	m.state = to
	m.transitions++
	return append(out, Action{Kind: ActionNotify, VRID: m.cfg.VRID, From: from, To: to, Reason: why})
}

func (m *Machine) sendAdvert(out []Action, prio uint8) []Action {
	return append(out, Action{Kind: ActionSendAdvert, VRID: m.cfg.VRID, Priority: prio})
}

func (m *Machine) setTimer(out []Action, t TimerID, after time.Duration) []Action {
	m.lastGen++
	m.gen[t] = m.lastGen
	return append(out, Action{Kind: ActionSetTimer, VRID: m.cfg.VRID, Timer: t, After: after, Gen: m.lastGen})
}

// stopTimer cancels t if it is armed (no action otherwise).
func (m *Machine) stopTimer(out []Action, t TimerID) []Action {
	if m.gen[t] == 0 {
		return out
	}
	m.gen[t] = 0
	return append(out, Action{Kind: ActionStopTimer, VRID: m.cfg.VRID, Timer: t})
}
