package node

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/muros/muros-had/vrrp"
)

// EventKind says what happened.
type EventKind uint8

// Event kinds. A new input (a peer-liveness verdict next) is a new kind with
// fields of its own.
const (
	EventStartup     EventKind = iota + 1 // the node starts its instances
	EventShutdown                         // graceful stop: priority 0, then release
	EventAdvert                           // an advert decoded by vrrp.Codec.Inspect
	EventTimer                            // a timer armed by ActionSetTimer fired
	EventLink                             // a watched interface changed
	EventReady                            // the verdict of a readiness wait
	EventRoleDone                         // the shell ran an ActionRole
	EventPriority                         // the node's priority changes
	EventCheck                            // a health check's verdict changed
	EventChecks                           // the health checks were reconfigured
	EventMaintenance                      // maintenance mode turned on or off (On)
	EventPeer                             // a peer-liveness verdict (PeerDead, PeerMaster, Reason)
)

var eventNames = [...]string{"", "startup", "shutdown", "advert", "timer", "link", "ready", "role_done", "priority", "check", "checks", "maintenance", "peer"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && k != 0 {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// TimerKey names a timer: a member's RFC 9568 timer (VRID 1..255), or one of
// the node's own (VRID 0, which no instance can have).
type TimerKey struct {
	VRID  uint8
	Timer vrrp.TimerID
}

// TimerRoleRetry is the node timer that re-issues a role action that failed.
const TimerRoleRetry vrrp.TimerID = 100

// RoleRetryInterval is how long the core waits before re-issuing a failed
// role action: long enough not to hammer a kernel that refuses, short
// enough that a transient netlink error costs one second of the VIPs.
const RoleRetryInterval = time.Second

// Event is one input of Core.Step. Only the fields of its Kind are read,
// and Now always.
type Event struct {
	Kind EventKind
	// Now is the wall clock when the event happened: AH epochs come from
	// it. The core never reads a clock itself.
	Now time.Time

	// EventAdvert: the family of the socket it came in on, and the advert
	// as Inspect decoded it (ICV already verified: AuthChecked/AuthOK).
	// The core keeps no reference to Advert.Advert.Addrs after Step.
	Family vrrp.Family
	Advert vrrp.Received

	// EventTimer: which timer, and the generation it was armed with.
	Timer TimerKey
	Gen   uint64

	// EventLink: the interface, whether it is up, whether it exists and
	// its index (a deleted and re-created sync interface needs new sockets).
	Interface string
	Up        bool
	Exists    bool
	Index     int

	// EventReady: the wait's generation (Gen) and its verdict.
	TimedOut   bool
	Incomplete []string // with TimedOut: what was still incomplete

	// EventRoleDone: the role action's generation (Gen) and its outcome.
	Err error

	// EventPriority: the new base priority of every instance (1..255),
	// before the weights of the health checks.
	Priority uint8

	// EventCheck: the check's name and its verdict (OK).
	Check string
	OK    bool
	// EventChecks: the new table of health checks.
	Checks []Check

	// EventMaintenance: whether maintenance mode is now on.
	On bool

	// EventPeer: the verdict of the peer-liveness protocol (package
	// liveness): the peer is dead on every path or has left (PeerDead), or
	// it is alive and master (PeerMaster) or alive in another role
	// (neither). Reason says why, for the log and the transition.
	PeerDead   bool
	PeerMaster bool
	// PeerVRIDs are the VRIDs the peer runs (bit v of byte v/8, most
	// significant first): it is master of those only.
	PeerVRIDs [32]byte
	// PeerPriority and PeerAddr: the peer's priority as it last said, and
	// its address on the path the verdict came by (for the reasons).
	PeerPriority uint8
	PeerAddr     netip.Addr
	Reason       string
}

// ActionKind says what the shell must do.
type ActionKind uint8

// Action kinds.
const (
	// ActionSendAdvert: multicast an advert for VRID on its family's socket
	// with Priority, authenticated with Counter (AH: SPI = Epoch, Seq).
	ActionSendAdvert ActionKind = iota + 1
	// ActionPersistEpoch: write Epoch to stable storage before the next
	// advert leaves with it, so a restart starts above it.
	ActionPersistEpoch
	// ActionSetTimer: (re)arm Timer to fire After from now with Gen.
	ActionSetTimer
	// ActionStopTimer: cancel Timer.
	ActionStopTimer
	// ActionRole: make the node Role, as one operation, then report it with
	// EventRoleDone{Gen}. MASTER: both replications become senders, then
	// the VIPs are claimed (the flows are in the kernel already: the backup
	// injects as it receives). Anything else: the VIPs are released, then
	// both replications become receivers. Idempotent: a re-issue redoes it
	// whole whatever the adapters believe. The shell may report it later
	// than it runs other actions: the role's before_release hooks
	// (internal/hooks) run first, and the core keeps stepping meanwhile; a
	// role action issued before the report supersedes it.
	ActionRole
	// ActionAnnounce: gratuitous ARP / unsolicited NA for the held VIPs.
	ActionAnnounce
	// ActionNotify: instance VRID changed From -> To because of Reason.
	ActionNotify
	// ActionHold: the preemption hold changed (Held, Cause, Gen). With Wait
	// the shell starts a readiness wait of generation Gen (the group came
	// From that state) and answers with EventReady{Gen}; any wait of an
	// older generation is stale and should end.
	ActionHold
	// ActionDrop: an advert was rejected for Reason (count it by reason).
	ActionDrop
	// ActionRestart: the instances must restart (Reason): the sync
	// interface was re-created, so the sockets bound to it hear nothing.
	ActionRestart
	// ActionHeard: an advert from Src for VRID with Priority passed every
	// check and went to the election (the status's view of the peer).
	ActionHeard
	// ActionLeave: the node stops being master gracefully (a shutdown):
	// tell the peer over the liveness protocol, before the priority 0
	// adverts and the release, so that it claims at once.
	ActionLeave
	// ActionConfirmPeer: a held Master_Down_Timer fired (the adverts are
	// missing while the liveness protocol last heard the peer alive as
	// master): ask the liveness protocol to confirm, so that a quiet
	// master's death is seen a probe's wait after VRRP would have seen it,
	// not after its quiet heartbeats go missing (liveness.EventConfirm).
	ActionConfirmPeer
)

var actionNames = [...]string{"", "send_advert", "persist_epoch", "set_timer", "stop_timer", "role", "announce", "notify", "hold", "drop", "restart", "heard", "leave", "confirm_peer"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) && k != 0 {
		return actionNames[k]
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is one output of Core.Step. Only the fields of its Kind are set.
type Action struct {
	Kind ActionKind

	VRID     uint8          // ActionSendAdvert, ActionNotify, ActionDrop, ActionHeard
	Family   vrrp.Family    // ActionSendAdvert
	Priority uint8          // ActionSendAdvert, ActionHeard
	Counter  vrrp.AHCounter // ActionSendAdvert (AH schemes)
	Epoch    uint32         // ActionPersistEpoch
	Timer    TimerKey       // ActionSetTimer, ActionStopTimer
	After    time.Duration  // ActionSetTimer
	Gen      uint64         // ActionSetTimer, ActionRole, ActionHold
	Role     vrrp.State     // ActionRole: MASTER, BACKUP, FAULT or INIT (stopped)
	Retry    bool           // ActionRole: a re-issue after a failure
	From, To vrrp.State     // ActionNotify; ActionRole, ActionHold: From
	// Reason says why: the transition (ActionNotify, ActionRole), the hold
	// or its lifting (ActionHold), the restart (ActionRestart).
	Reason   string
	Held     bool       // ActionHold
	Wait     bool       // ActionHold: start a readiness wait
	Verdict  bool       // ActionHold lifted by the verdict of the current wait
	TimedOut bool       // ActionHold lifted by a wait that timed out
	Pending  []string   // ActionHold lifted by timeout: what was incomplete
	Drop     Reason     // ActionDrop
	Src      netip.Addr // ActionDrop, ActionHeard: the advert's source
	// Key is the AH key version an ActionHeard advert was signed with (0
	// without muros-had's AH): a pair upgraded one node at a time shows
	// when it has moved to version 2.
	Key vrrp.KeyVersion
}
