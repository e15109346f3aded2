package liveness

import (
	"errors"
	"fmt"
	"time"
)

// Config is one node's liveness settings.
type Config struct {
	// Interval is how often a master sends HEARTBEATs on the sync link
	// (and on the peer path while the sync link is down): the fast path a
	// backup watches.
	Interval time.Duration
	// Detect is how long every path must be silent before the peer is
	// dead: half of it (ProbeAfter) of silence starts the probing, the
	// other half is the time the probed paths have to answer.
	Detect time.Duration
	// Idle is how often everything else is sent: a node that is not
	// master, and the peer path while the sync link works. A path silent
	// for three Idle periods is down.
	Idle time.Duration
	// Quiet is a master's heartbeat period on the sync link while the
	// node forwards nothing (0: always Interval). Fast heartbeats buy a
	// takeover within milliseconds, which no one notices while no packet
	// crosses the firewall, and cost a thousand packets and wakeups a
	// second on each node: a quiet master saves them (BFD's demand mode,
	// RFC 5880 section 6.6, has the same idea). The backup reads the
	// period from every heartbeat, so its detection time follows.
	Quiet time.Duration
	// QuietAfter is how long a master must see no traffic (EventTraffic:
	// more than trafficThreshold packets in a trafficWindow), no PROBE
	// from its peer and no counter it could not read before it heartbeats
	// at the Quiet period; any of them brings the fast heartbeats back at
	// its next read or message.
	QuietAfter time.Duration
	// PeerPath says the second path (unicast to the peer's address off
	// the sync link) exists.
	PeerPath bool
	// Epoch is this node's incarnation: random and non-zero at every start.
	Epoch uint64
	// VRIDs are the VRRP instances this node runs (sent in every message).
	VRIDs VRIDSet
}

// DefaultIdle is the default Config.Idle.
const DefaultIdle = 100 * time.Millisecond

// Validate refuses settings that would cry wolf or never decide.
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 100*time.Microsecond || c.Interval > time.Second {
		errs = append(errs, fmt.Errorf("interval %v: want 100µs..1s", c.Interval))
	}
	if c.Detect < 2*c.Interval {
		errs = append(errs, fmt.Errorf("detect %v: want at least twice the interval (%v), or a single late heartbeat kills the peer", c.Detect, 2*c.Interval))
	}
	if c.Idle < c.Interval || c.Idle > 10*time.Second {
		errs = append(errs, fmt.Errorf("idle %v: want interval..10s", c.Idle))
	}
	if c.Quiet != 0 && (c.Quiet < c.Interval || c.Quiet > c.Idle/2) {
		// Below Idle/2, so a backup can tell a quiet master's period
		// from the idle one it uses where it does not heartbeat fast.
		errs = append(errs, fmt.Errorf("quiet %v: want 0 (never quiet) or %v..%v", c.Quiet, c.Interval, c.Idle/2))
	}
	if c.Quiet != 0 && c.QuietAfter < 10*c.Quiet {
		errs = append(errs, fmt.Errorf("quiet after %v: want at least ten quiet periods (%v)", c.QuietAfter, 10*c.Quiet))
	}
	if c.Epoch == 0 {
		errs = append(errs, errors.New("epoch 0"))
	}
	return errors.Join(errs...)
}

// Adaptive detection. The configured detection time is a floor: the
// monitor remembers the longest silence it has recently seen between two
// of the peer's fast heartbeats (the peer's or this node's own scheduling
// delays, a busy link) and never declares the peer dead before twice that
// silence has passed. On a calm pair the heartbeats arrive an interval
// apart and the floor rules; on a machine so loaded that a live master
// goes unheard for 9 ms, the next verdict waits 18 ms instead of crying
// wolf. The memory halves every gapHalfLife, so the detection time comes
// back to the floor within a minute of the load going away. A newly met
// peer starts as if one silence of coldStartGaps floors had been seen
// (the cold start, in receive).
const (
	gapFactor   = 2
	gapHalfLife = 10 * time.Second
	// coldStartGaps is the silence, in floors, a newly met peer is
	// assumed to have shown: the detection time starts at twice it (12
	// ms at the default 3 ms floor), halves at each gapHalfLife, and is
	// at the floor after coldStart.
	coldStartGaps = 2
	coldStart     = 2 * gapHalfLife
	// maxDetect caps the adaptive detection time: past it VRRP's own
	// Master_Down_Interval is as good.
	maxDetect = time.Second
)

// Detect returns the detection time in force: the configured floor, or
// twice the longest recent silence between the peer's fast heartbeats.
func (m *Monitor) Detect(now time.Time) time.Duration {
	m.decayGap(now)
	return min(max(m.cfg.Detect, gapFactor*m.gapMax), max(m.cfg.Detect, maxDetect))
}

// decayGap halves the remembered silence every gapHalfLife.
func (m *Monitor) decayGap(now time.Time) {
	for m.gapMax > 0 && now.Sub(m.gapAt) >= gapHalfLife {
		m.gapMax /= 2
		m.gapAt = m.gapAt.Add(gapHalfLife)
	}
}

// probeWait is how long a probe may stay unanswered before the peer is
// dead: the second half of the detection time.
func (m *Monitor) probeWait(now time.Time) time.Duration {
	d := m.Detect(now)
	return d - d/2
}

// PathDownAfter is the silence after which a path is down.
func (c Config) PathDownAfter() time.Duration { return 3 * c.Idle }

// freshWindow is how recent the sequence number a message echoes must be
// for the message to prove that the peer is alive now.
func (c Config) freshWindow() time.Duration { return 4 * c.Idle }

// Verdict is the node's view of its peer.
type Verdict uint8

// Verdicts.
const (
	VerdictUnknown Verdict = iota // the peer has never spoken the protocol
	VerdictAlive                  // a path brought a message within the detection time
	VerdictDead                   // every path silent, the probes unanswered
	VerdictLeft                   // the peer said LEAVING
)

var verdictNames = [...]string{"unknown", "alive", "dead", "left"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// EventKind says what happened.
type EventKind uint8

// Event kinds.
const (
	EventTick    EventKind = iota + 1 // a deadline (NextDeadline) passed
	EventReceive                      // a message was received and parsed (Codec.Parse)
	EventCarrier                      // the sync link's carrier changed (Up)
	EventRole                         // the node's own role or priority changed
	EventLeave                        // the node stops gracefully
	EventTraffic                      // the shell read its traffic counter (TrafficDue): Packets, or Unreadable
	EventConfirm                      // VRRP missed the peer's adverts: watch it as a fast master until it speaks
)

// Event is one input of Monitor.Step. Now is read for every kind.
type Event struct {
	Kind EventKind
	Now  time.Time
	// EventReceive: the path the message arrived on and the message.
	Path    Path
	Message Message
	// EventCarrier.
	Up bool
	// EventTraffic: the packets received on the watched interfaces since
	// the last read, less the peer's own liveness messages; Unreadable
	// says the counter could not be read (which counts as traffic).
	Packets    uint64
	Unreadable bool
	// EventRole.
	Role     Role
	Priority uint8
}

// ActionKind says what the shell must do.
type ActionKind uint8

// Action kinds.
const (
	ActionSend    ActionKind = iota + 1 // send Message on Path
	ActionVerdict                       // the verdict or the peer's role changed
	ActionPath                          // Path went down (Down) or came back
	ActionDrop                          // a received message was refused (Reason)
)

// Action is one output of Monitor.Step.
type Action struct {
	Kind    ActionKind
	Path    Path    // ActionSend, ActionPath, ActionDrop
	Message Message // ActionSend
	// ActionVerdict: the verdict and the peer's role and priority as last
	// heard; Reason says why, for the log.
	Verdict  Verdict
	PeerRole Role
	Priority uint8
	// PeerVRIDs: the VRIDs the peer runs, as last heard.
	PeerVRIDs VRIDSet
	Reason    string
	Down      bool   // ActionPath
	Drop      Reason // ActionDrop
}

// pathState is what the node knows of one path.
type pathState struct {
	last      time.Time     // last accepted message on it (zero: none yet)
	lastBeat  time.Time     // last of an unbroken run of HEARTBEATs on it (fast or quiet, one role)
	beatIv    time.Duration // the period that heartbeat announced: when the next was due
	interval  time.Duration // the peer's heartbeat period on it, as announced
	down      bool          // alarm raised
	nextSend  time.Time     // our next HEARTBEAT on it
	lastReply time.Time     // our last unsolicited REPLY (rate limit)
}

type checkpoint struct {
	at  time.Time
	seq uint64
}

// Monitor is one node's view of its peer over every path. It is pure:
// events in, actions out, time from the events; not safe for concurrent
// use.
type Monitor struct {
	cfg Config

	seq      uint64
	role     Role
	priority uint8
	carrier  bool
	leaving  bool
	// checkpoints remember when our sequence numbers were sent, sparsely,
	// for the freshness of echoes.
	checkpoints [16]checkpoint
	cpNext      int

	// echoEpoch/echoSeq: the newest authentic message from the peer
	// (adopted or not), echoed in ours so the peer can adopt us.
	echoEpoch, echoSeq uint64
	// peerEpoch/peerSeq: the adopted epoch and its newest sequence number
	// on each path (the sender counts across paths, which may reorder
	// among themselves; the path is authenticated, so a message cannot be
	// replayed onto another).
	peerEpoch    uint64
	peerSeq      [NumPaths + 1]uint64
	peerRole     Role
	peerPriority uint8
	peerFlags    uint8
	peerVRIDs    VRIDSet
	// adoptedAt is when the first peer epoch was adopted: a path never
	// heard is down PathDownAfter later. leftEpoch is an epoch that said
	// LEAVING: the rest of its messages (reordered copies) are ignored.
	adoptedAt time.Time
	leftEpoch uint64

	paths   [NumPaths + 1]pathState
	verdict Verdict
	// probeStart is the first probe of the current suspicion (zero: none);
	// lastProbe the latest.
	probeStart, lastProbe time.Time
	// probeSeq is the sequence number of the first probe: a message that
	// echoes it or a later one answers the suspicion; one sent before the
	// peer heard a probe only shows it was alive before.
	probeSeq uint64
	// due is the deadline NextDeadline last returned; stalls counts the
	// ticks that came more than a probe's wait after it.
	due    time.Time
	stalls uint64
	// confirming: an EventConfirm came and no message since (probeAfter
	// is half the detection time); confirms counts them.
	confirming bool
	confirms   uint64
	// gapMax is the longest recent silence between two fast heartbeats
	// on one path, gapAt when it was last set or halved (Detect).
	gapMax time.Duration
	gapAt  time.Time
	// activeAt is when this node last saw traffic or became master;
	// trafficAt when the shell last reported its counter (zero: never,
	// and a master is never quiet before it has); windowAt and
	// windowPackets count the packets of the current trafficWindow.
	activeAt, trafficAt, windowAt time.Time
	windowPackets                 uint64
}

// Traffic, for a quiet master, is more than trafficThreshold packets in
// a trafficWindow on the watched interfaces: a quiet LAN's background
// (ARP and neighbour discovery every few seconds, a packet counted before
// the engine read it from its socket) is not traffic; a stream of 1,000
// packets a second is seen at one read (10 ms), a call at 50 within
// 180 ms (280 across a window's edge).
const (
	trafficWindow    = time.Second
	trafficThreshold = 8
)

// NewMonitor returns a monitor that has heard nothing yet, for a node in
// INIT with its sync link assumed up (the shell reports the carrier).
func NewMonitor(cfg Config) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("liveness: %w", err)
	}
	return &Monitor{cfg: cfg, role: RoleInit, carrier: true}, nil
}

// Verdict returns the current verdict.
func (m *Monitor) Verdict() Verdict { return m.verdict }

// PeerRole returns the peer's role as last heard (0 if never).
func (m *Monitor) PeerRole() Role { return m.peerRole }

// PeerInterval returns the heartbeat period the peer last announced on
// the sync link (its quiet one while it forwards nothing).
func (m *Monitor) PeerInterval() time.Duration { return m.paths[PathSync].interval }

// PathDown reports whether path p's alarm is raised.
func (m *Monitor) PathDown(p Path) bool { return m.paths[p].down }

// LastHeard returns when path p last brought an accepted message.
func (m *Monitor) LastHeard(p Path) time.Time { return m.paths[p].last }

// Stalls counts the times this node ran a probe's wait later than it
// asked to (a stalled machine or process): the probe started again.
func (m *Monitor) Stalls() uint64 { return m.stalls }

// Confirms counts the confirmations asked because VRRP missed the
// peer's adverts (EventConfirm) while it was alive.
func (m *Monitor) Confirms() uint64 { return m.confirms }

// Step feeds one event and appends the resulting actions to out.
func (m *Monitor) Step(ev Event, out []Action) []Action {
	out = m.stalled(ev.Now, out)
	switch ev.Kind {
	case EventReceive:
		out = m.receive(ev, out)
	case EventCarrier:
		if m.carrier != ev.Up {
			m.carrier = ev.Up
			m.paths[PathSync].lastBeat = time.Time{}
			if !ev.Up && m.verdict == VerdictAlive && m.probeStart.IsZero() {
				// A direct cable loses carrier when the peer dies: ask the
				// other paths now rather than after ProbeAfter.
				out = m.startProbe(ev.Now, out)
			}
		}
	case EventRole:
		if ev.Role == RoleMaster && m.role != RoleMaster {
			m.activeAt = ev.Now // fast for QuietAfter after a takeover
		}
		wasFast, wasRole := m.interval(ev.Now, PathSync), m.role
		m.role, m.priority = ev.Role, ev.Priority
		if ev.Role != wasRole || m.interval(ev.Now, PathSync) < wasFast {
			// A new role is news now, not at the next (quiet) period.
			for p := Path(1); p <= NumPaths; p++ {
				m.paths[p].nextSend = ev.Now
			}
		}
	case EventTraffic:
		// Quiet to fast needs nothing more: tick sees the period shrink
		// and sends now.
		m.trafficAt = ev.Now
		if ev.Now.Sub(m.windowAt) >= trafficWindow {
			m.windowAt, m.windowPackets = ev.Now, 0
		}
		m.windowPackets += min(ev.Packets, trafficThreshold+1)
		if ev.Unreadable || ev.Packets > 0 && m.windowPackets > trafficThreshold {
			m.activeAt = ev.Now
		}
	case EventConfirm:
		// VRRP's Master_Down_Interval passed without an advert while the
		// peer is alive by this monitor's last word. A quiet master
		// heartbeats slower than that: until the peer's next message, it
		// is watched as a fast one, probed after half the detection time
		// of silence on every path (at once if it has been silent that
		// long). The rule for a verdict does not change: dead needs every
		// path silent for the detection time and the probe unanswered,
		// so a live master whose adverts are lost, fast or quiet, is
		// never declared dead sooner than without the confirmation.
		if m.verdict == VerdictAlive && !m.leaving && !m.confirming {
			m.confirming = true
			m.confirms++
		}
	case EventLeave:
		m.leaving = true
		for p := Path(1); p <= NumPaths; p++ {
			if m.usable(p) {
				out = m.send(ev.Now, p, TypeLeaving, out)
			}
		}
		return out
	}
	return m.tick(ev.Now, out)
}

// NextDeadline is when Step must next be called with EventTick (the shell
// may call it earlier).
func (m *Monitor) NextDeadline() time.Time {
	next := m.nextDeadline()
	m.due = next
	return next
}

func (m *Monitor) nextDeadline() time.Time {
	var next time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if m.leaving {
		return next
	}
	for p := Path(1); p <= NumPaths; p++ {
		if m.usable(p) {
			earliest(m.paths[p].nextSend)
		}
		if m.peerEpoch != 0 && !m.paths[p].down && m.configured(p) {
			earliest(m.silentSince(p).Add(m.cfg.PathDownAfter()))
		}
	}
	if m.trafficWanted() && !m.trafficAt.IsZero() {
		earliest(m.trafficAt.Add(m.cfg.Quiet))
	}
	if m.verdict == VerdictAlive {
		if m.probeStart.IsZero() {
			earliest(m.lastAny().Add(m.probeAfter()))
		} else {
			earliest(m.lastProbe.Add(m.cfg.Interval))
			earliest(m.probeStart.Add(m.probeWait(m.probeStart)))
		}
	}
	return next
}

// silentSince is when path p last brought a message, or when the peer was
// first adopted if it never has.
func (m *Monitor) silentSince(p Path) time.Time {
	if last := m.paths[p].last; !last.IsZero() {
		return last
	}
	return m.adoptedAt
}

// configured says whether path p exists (the sync link always does).
func (m *Monitor) configured(p Path) bool { return p == PathSync || p == PathPeer && m.cfg.PeerPath }

// usable says whether the node sends on path p: it exists and, for the
// sync link, has carrier.
func (m *Monitor) usable(p Path) bool { return m.configured(p) && (p != PathSync || m.carrier) }

// interval is our HEARTBEAT period on path p now: fast where a backup
// watches a master (the sync link; the peer path too while the sync link
// is down on either side), or the quiet period there while the master
// forwards nothing; idle everywhere else.
func (m *Monitor) interval(now time.Time, p Path) time.Duration {
	if m.role != RoleMaster {
		return m.cfg.Idle
	}
	fast := m.cfg.Interval
	if m.Quiet(now) {
		fast = m.cfg.Quiet
	}
	if p == PathSync {
		return fast
	}
	if !m.carrier || m.paths[PathSync].down || (m.peerEpoch != 0 && m.peerFlags&FlagSyncCarrier == 0) {
		return fast
	}
	return m.cfg.Idle
}

// trafficWanted says whether the node watches its traffic: a master with
// a quiet period.
func (m *Monitor) trafficWanted() bool { return m.cfg.Quiet > 0 && m.role == RoleMaster }

// TrafficDue says whether the shell should read its traffic counter and
// report it (EventTraffic): a master with a quiet period does so once a
// quiet period, up to a quarter early so that the read shares the wakeup
// of a heartbeat instead of having one of its own.
func (m *Monitor) TrafficDue(now time.Time) bool {
	return m.trafficWanted() && (m.trafficAt.IsZero() || now.Sub(m.trafficAt) >= m.cfg.Quiet-m.cfg.Quiet/4)
}

// Quiet says whether this node is a master heartbeating at the quiet
// period: it has read its traffic counter, and seen no traffic for
// QuietAfter.
func (m *Monitor) Quiet(now time.Time) bool {
	return m.trafficWanted() && !m.trafficAt.IsZero() && now.Sub(m.activeAt) >= m.cfg.QuietAfter
}

// lastAny is the newest accepted message on a path that can still bring
// one (a sync link without carrier cannot).
func (m *Monitor) lastAny() time.Time {
	var last time.Time
	for p := Path(1); p <= NumPaths; p++ {
		if p == PathSync && !m.carrier {
			continue
		}
		if m.paths[p].last.After(last) {
			last = m.paths[p].last
		}
	}
	return last
}

// probeAfter is the silence on every path after which the node probes:
// half the detection time, or one and a half of the peer's heartbeat
// periods if that is longer. A master heartbeats fast on the sync link,
// or at its quiet period, and says which in every message; on the peer
// path it heartbeats at the idle period until it knows that the sync link
// is down, and while it does not it is probed after half the detection
// time. An idle backup is not probed between its idle heartbeats.
func (m *Monitor) probeAfter() time.Duration {
	half := m.Detect(m.lastAny()) / 2
	if m.confirming {
		return half
	}
	fastest := time.Duration(0)
	for p := Path(1); p <= NumPaths; p++ {
		if !m.usable(p) || m.paths[p].last.IsZero() || m.paths[p].down {
			continue
		}
		if iv := m.paths[p].interval; iv > 0 && (fastest == 0 || iv < fastest) {
			fastest = iv
		}
	}
	if m.peerRole == RoleMaster && (fastest == 0 || fastest >= m.cfg.Idle) {
		return half
	}
	if fastest == 0 {
		fastest = m.cfg.Idle
	}
	return max(half, 3*min(fastest, m.cfg.Idle)/2)
}

// stalled notices that this node ran later than it asked to by more than
// a probe may wait (the machine stalled, the process was stopped): what it
// did not hear meanwhile it could not have heard. A probe in progress
// starts again now instead of concluding, and the runs of heartbeats break
// (the lateness is this node's, not the peer's). Called first in every
// Step, before a message read after the stall is measured.
func (m *Monitor) stalled(now time.Time, out []Action) []Action {
	if !m.due.IsZero() && now.Sub(m.due) > m.probeWait(now) {
		m.stalls++
		for p := range m.paths {
			m.paths[p].lastBeat = time.Time{}
		}
		if !m.probeStart.IsZero() {
			out = m.startProbe(now, out)
		}
	}
	m.due = time.Time{}
	return out
}

func (m *Monitor) tick(now time.Time, out []Action) []Action {
	if m.leaving {
		return out
	}

	// Path alarms.
	if m.peerEpoch != 0 {
		for p := Path(1); p <= NumPaths; p++ {
			ps := &m.paths[p]
			if !m.configured(p) {
				continue
			}
			silent := now.Sub(m.silentSince(p)) >= m.cfg.PathDownAfter()
			if p == PathSync && !m.carrier {
				silent = true
			}
			if silent && !ps.down {
				ps.down = true
				ps.lastBeat = time.Time{}
				why := fmt.Sprintf("no message for %v", m.cfg.PathDownAfter())
				if p == PathSync && !m.carrier {
					why = "sync link has no carrier"
				}
				out = append(out, Action{Kind: ActionPath, Path: p, Down: true, Reason: why})
			}
		}
	}
	// The verdict.
	if m.verdict == VerdictAlive {
		last := m.lastAny()
		if m.probeStart.IsZero() && now.Sub(last) >= m.probeAfter() {
			out = m.startProbe(now, out)
		} else if !m.probeStart.IsZero() {
			if now.Sub(m.probeStart) >= m.probeWait(m.probeStart) {
				m.verdict, m.confirming = VerdictDead, false
				why := fmt.Sprintf("no message on any path for %v, probe unanswered for %v", now.Sub(last).Round(10*time.Microsecond), now.Sub(m.probeStart).Round(10*time.Microsecond))
				if !m.carrier {
					why = fmt.Sprintf("sync link lost carrier, probe unanswered for %v", now.Sub(m.probeStart).Round(10*time.Microsecond))
				}
				m.probeStart, m.lastProbe = time.Time{}, time.Time{}
				out = append(out, m.verdictAction(why))
			} else if now.Sub(m.lastProbe) >= m.cfg.Interval {
				out = m.probe(now, out)
			}
		}
	}
	// Heartbeats. A heartbeat that is due goes out, and takes along the
	// other path's if that one is due within the shorter of a quarter of
	// its own period and the period of the one that is due: the two then
	// share a wake-up, here and at the peer, instead of costing one each
	// (package doc). A path at the fast interval moves the other's by no
	// more than that interval, so a fast master's idle beats keep their
	// rate.
	var iv [NumPaths + 1]time.Duration // each usable path's period (0: not usable)
	var carry time.Duration            // the shortest period among the due heartbeats
	for p := Path(1); p <= NumPaths; p++ {
		if !m.usable(p) {
			continue
		}
		ps := &m.paths[p]
		iv[p] = m.interval(now, p)
		if ps.nextSend.Sub(now) > iv[p] {
			// The period shrank (the sync link went down under a master):
			// the next heartbeat is due now, not at the old schedule.
			ps.nextSend = now
		}
		if !now.Before(ps.nextSend) && (carry == 0 || iv[p] < carry) {
			carry = iv[p]
		}
	}
	if carry == 0 {
		return out
	}
	var sent [NumPaths + 1]bool
	for p := Path(1); p <= NumPaths; p++ {
		if ps := &m.paths[p]; iv[p] != 0 && ps.nextSend.Sub(now) <= min(iv[p]/4, carry) {
			out = m.send(now, p, TypeHeartbeat, out)
			ps.nextSend = now.Add(iv[p])
			sent[p] = true
		}
	}
	// A heartbeat that went alone moves its next one onto the other
	// path's schedule when that one's period is a multiple of its own:
	// once, earlier (never later) than due. Without it the two can sit at
	// an offset the rule above never closes (a 50 ms beat 25-37.5 ms ahead
	// of a 100 ms one).
	for p := Path(1); p <= NumPaths; p++ {
		for q := Path(1); q <= NumPaths; q++ {
			qs := &m.paths[q]
			if !sent[p] || sent[q] || iv[q] == 0 || iv[q]%iv[p] != 0 || !qs.nextSend.After(now) {
				continue
			}
			// The instant of q's schedule, stepped back by p's period,
			// that falls in (now, now+iv[p]].
			ahead := qs.nextSend.Sub(now)
			if at := now.Add(ahead - ((ahead-1)/iv[p])*iv[p]); at.Before(m.paths[p].nextSend) {
				m.paths[p].nextSend = at
			}
		}
	}
	return out
}

func (m *Monitor) startProbe(now time.Time, out []Action) []Action {
	m.probeStart = now
	m.probeSeq = m.seq + 1
	return m.probe(now, out)
}

func (m *Monitor) probe(now time.Time, out []Action) []Action {
	m.lastProbe = now
	for p := Path(1); p <= NumPaths; p++ {
		if m.usable(p) {
			out = m.send(now, p, TypeProbe, out)
		}
	}
	return out
}

func (m *Monitor) verdictAction(why string) Action {
	return Action{Kind: ActionVerdict, Verdict: m.verdict, PeerRole: m.peerRole, Priority: m.peerPriority, PeerVRIDs: m.peerVRIDs, Reason: why}
}

// send appends one message of ours.
func (m *Monitor) send(now time.Time, p Path, t Type, out []Action) []Action {
	m.seq++
	if last := m.checkpoints[(m.cpNext+len(m.checkpoints)-1)%len(m.checkpoints)]; last.at.IsZero() || now.Sub(last.at) >= m.cfg.freshWindow()/8 {
		m.checkpoints[m.cpNext] = checkpoint{at: now, seq: m.seq}
		m.cpNext = (m.cpNext + 1) % len(m.checkpoints)
	}
	var flags uint8
	if m.carrier {
		flags |= FlagSyncCarrier
	}
	return append(out, Action{Kind: ActionSend, Path: p, Message: Message{
		Type: t, Path: p, Role: m.role, Priority: m.priority, Flags: flags,
		Epoch: m.cfg.Epoch, Seq: m.seq, EchoEpoch: m.echoEpoch, EchoSeq: m.echoSeq,
		Interval: m.interval(now, p), VRIDs: m.cfg.VRIDs,
	}})
}

// fresh says whether msg echoes a sequence number we sent within the
// fresh window.
func (m *Monitor) fresh(now time.Time, msg Message) bool {
	if msg.EchoEpoch != m.cfg.Epoch || msg.EchoSeq == 0 || msg.EchoSeq > m.seq {
		return false
	}
	// The oldest sequence number still fresh: the first one sent after the
	// newest checkpoint older than the window (checkpoints are sparse, so
	// this errs by at most an eighth of the window).
	floor := uint64(1)
	cut := now.Add(-m.cfg.freshWindow())
	for _, cp := range m.checkpoints {
		if !cp.at.IsZero() && !cp.at.After(cut) && cp.seq+1 > floor {
			floor = cp.seq + 1
		}
	}
	return msg.EchoSeq >= floor
}

func (m *Monitor) drop(p Path, why Reason, out []Action) []Action {
	return append(out, Action{Kind: ActionDrop, Path: p, Drop: why})
}

func (m *Monitor) receive(ev Event, out []Action) []Action {
	msg, now := ev.Message, ev.Now
	switch {
	case msg.Path != ev.Path:
		return m.drop(ev.Path, ReasonWrongPath, out)
	case msg.Epoch == m.cfg.Epoch:
		return m.drop(ev.Path, ReasonSelf, out)
	case msg.Epoch == m.peerEpoch && msg.Seq <= m.peerSeq[ev.Path]:
		return m.drop(ev.Path, ReasonReplay, out)
	case msg.Epoch == m.leftEpoch:
		return m.drop(ev.Path, ReasonLeft, out)
	}
	if msg.Epoch != m.peerEpoch {
		if !m.fresh(now, msg) {
			// A peer (or a receiver) that has just started: echo it and
			// answer once per interval so the next message is fresh. Not
			// evidence of life: it may be a recording.
			m.echoEpoch, m.echoSeq = msg.Epoch, msg.Seq
			ps := &m.paths[ev.Path]
			if m.usable(ev.Path) && (ps.lastReply.IsZero() || now.Sub(ps.lastReply) >= m.cfg.Interval) {
				ps.lastReply = now
				out = m.send(now, ev.Path, TypeReply, out)
			}
			return m.drop(ev.Path, ReasonUnfresh, out)
		}
		// A new incarnation of the peer: adopt it.
		m.peerEpoch, m.peerSeq = msg.Epoch, [NumPaths + 1]uint64{}
		if m.adoptedAt.IsZero() {
			m.adoptedAt = now
		}
		// Cold start: nothing is known yet of this pair's delays, so the
		// monitor assumes one silence of coldStartGaps floors and earns
		// the floor over as many half-lives (TCP's initial RTO before its
		// first sample, RFC 6298, is the same caution). Why: a vCPU the
		// hypervisor did not run for 3.3 ms silenced a master half a
		// second after the pair met, while both CPUs were idle in the
		// guest (a sched_switch ring, 22:43 UTC), and the monitor, with
		// nothing learnt, declared it dead: about one false takeover in
		// 60 fresh pairs on this machine. A first cold start of one floor
		// still met a 6.1 and a 7.4 ms silence in 210 pairs.
		if cold := coldStartGaps * m.cfg.Detect; m.gapMax < cold {
			m.gapMax, m.gapAt = cold, now
		}
	}
	m.peerSeq[ev.Path] = msg.Seq
	m.echoEpoch, m.echoSeq = msg.Epoch, msg.Seq
	ps := &m.paths[ev.Path]
	if msg.Role != m.peerRole {
		for p := range m.paths {
			m.paths[p].lastBeat = time.Time{}
		}
	}
	if msg.Type == TypeHeartbeat {
		// A master's heartbeat, fast or quiet (not an idle one).
		watched := msg.Interval > 0 && msg.Interval < m.cfg.Idle
		if watched && !ps.lastBeat.IsZero() {
			// Two heartbeats in a row on this path, from a peer in the
			// same role: how late was this one against the period the
			// previous one announced? Counted as the silence it would be
			// between fast heartbeats (our Interval plus the lateness),
			// so a loaded quiet master teaches the same as a loaded fast
			// one. (Replies to probes do not count: their spacing is
			// ours.) A silence as long as a path outage is one (its alarm
			// says so), not a late heartbeat.
			m.decayGap(now)
			gap := now.Sub(ps.lastBeat)
			if eq := gap - ps.beatIv + m.cfg.Interval; eq > m.gapMax && gap < m.cfg.PathDownAfter() {
				m.gapMax, m.gapAt = eq, now
			}
		}
		ps.lastBeat = time.Time{}
		if watched {
			ps.lastBeat, ps.beatIv = now, msg.Interval
		}
	}
	if msg.Type == TypeProbe && m.trafficWanted() {
		// The peer is worried about us: a quiet master goes fast for
		// QuietAfter, so the peer's detection learns our real lateness
		// (and a peer that does not read the interval field, an older
		// release, stops probing us every few milliseconds).
		m.activeAt = now
	}
	ps.last = now
	ps.interval = msg.Interval
	m.confirming = false // the peer spoke since VRRP missed its adverts
	if ps.down && (ev.Path != PathSync || m.carrier) {
		ps.down = false
		out = append(out, Action{Kind: ActionPath, Path: ev.Path, Down: false, Reason: "heard again"})
	}
	if m.probeStart.IsZero() || (msg.EchoEpoch == m.cfg.Epoch && msg.EchoSeq >= m.probeSeq) || msg.Type == TypeLeaving {
		m.probeStart, m.lastProbe = time.Time{}, time.Time{}
	}
	roleChanged := msg.Role != m.peerRole || msg.Priority != m.peerPriority || msg.VRIDs != m.peerVRIDs
	m.peerRole, m.peerPriority, m.peerFlags, m.peerVRIDs = msg.Role, msg.Priority, msg.Flags, msg.VRIDs
	switch {
	case msg.Type == TypeLeaving:
		m.leftEpoch = msg.Epoch
		if m.verdict != VerdictLeft {
			m.verdict = VerdictLeft
			out = append(out, m.verdictAction(fmt.Sprintf("peer is leaving (said on the %s path)", ev.Path)))
		}
	case m.verdict != VerdictAlive:
		m.verdict = VerdictAlive
		out = append(out, m.verdictAction(fmt.Sprintf("heard on the %s path", ev.Path)))
	case roleChanged:
		out = append(out, m.verdictAction(fmt.Sprintf("peer is now %s (priority %d)", msg.Role, msg.Priority)))
	}
	if msg.Type == TypeProbe && m.usable(ev.Path) {
		out = m.send(now, ev.Path, TypeReply, out)
	}
	return out
}
