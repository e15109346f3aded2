package liveness

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// sim is a two-node discrete-event simulation of the protocol: two
// monitors, their messages encoded and parsed by real codecs, carried by
// two paths with a latency, which tests cut, freeze and make lossy.
type sim struct {
	t     testing.TB
	now   time.Time
	start time.Time
	nodes [2]*simNode
	// latency per path; up per path (a cut sync link is down for both
	// nodes and drops their carrier).
	latency [NumPaths + 1]time.Duration
	up      [NumPaths + 1]bool
	// drop, if set, decides whether a message sent at now on path p from
	// node i is lost.
	drop     func(i int, p Path, now time.Time) bool
	inflight []simPacket
	// traffic, if set, is node i's traffic counter (EventTraffic): the
	// packets it received since its last read.
	traffic func(i int, now time.Time) (packets uint64, unreadable bool)
}

type simNode struct {
	m      *Monitor
	codec  *Codec
	frozen bool // a hung node: sends nothing, hears nothing, has no clock
	// verdicts and path alarms it issued, with their times.
	verdicts []simVerdict
	alarms   []simAlarm
	drops    map[Reason]int
	sent     map[Type]int
	// sentAt holds the instants at which the node sent anything: each is
	// a wake-up of the node's thread (and, on arrival, of the peer's).
	sentAt map[time.Time]bool
	// Per path: heartbeats sent, when the last went, and the longest
	// time between two (since the last resetBeats).
	beats    [NumPaths + 1]int
	lastBeat [NumPaths + 1]time.Time
	beatGap  [NumPaths + 1]time.Duration
	acts     []Action
}

type simVerdict struct {
	at      time.Duration
	verdict Verdict
	role    Role
}

type simAlarm struct {
	at   time.Duration
	path Path
	down bool
}

type simPacket struct {
	at   time.Time
	to   int
	path Path
	b    []byte
}

var simEpoch = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

func defaultSimConfig(epoch uint64) Config {
	return Config{Interval: time.Millisecond, Detect: 3 * time.Millisecond, Idle: DefaultIdle, PeerPath: true, Epoch: epoch}
}

func newSim(t testing.TB, cfgs ...Config) *sim {
	s := &sim{t: t, now: simEpoch, start: simEpoch}
	s.latency[PathSync], s.latency[PathPeer] = 50*time.Microsecond, 200*time.Microsecond
	s.up[PathSync], s.up[PathPeer] = true, true
	for i := range 2 {
		cfg := defaultSimConfig(uint64(1000 + i))
		if i < len(cfgs) {
			cfg = cfgs[i]
		}
		s.nodes[i] = s.newNode(cfg)
	}
	return s
}

func (s *sim) newNode(cfg Config) *simNode {
	m, err := NewMonitor(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return &simNode{m: m, codec: testCodec(s.t, 7), drops: map[Reason]int{}, sent: map[Type]int{}, sentAt: map[time.Time]bool{}}
}

// restart replaces node i by a fresh incarnation.
func (s *sim) restart(i int, epoch uint64, role Role) {
	cfg := s.nodes[i].m.cfg
	cfg.Epoch = epoch
	s.nodes[i] = s.newNode(cfg)
	s.step(i, Event{Kind: EventRole, Role: role, Priority: 100})
}

func (s *sim) elapsed() time.Duration { return s.now.Sub(s.start) }

// resetBeats starts counting send instants and heartbeats afresh (the
// last heartbeat's time is kept, so the next gap is a true one).
func (n *simNode) resetBeats() {
	clear(n.sentAt)
	clear(n.sent)
	n.beats, n.beatGap = [NumPaths + 1]int{}, [NumPaths + 1]time.Duration{}
}

// step feeds ev to node i at s.now and carries out its actions.
func (s *sim) step(i int, ev Event) {
	n := s.nodes[i]
	if n.frozen {
		return
	}
	ev.Now = s.now
	n.acts = n.m.Step(ev, n.acts[:0])
	for _, a := range n.acts {
		switch a.Kind {
		case ActionSend:
			n.sent[a.Message.Type]++
			n.sentAt[s.now] = true
			if a.Message.Type == TypeHeartbeat {
				n.beats[a.Path]++
				if last := n.lastBeat[a.Path]; !last.IsZero() {
					n.beatGap[a.Path] = max(n.beatGap[a.Path], s.now.Sub(last))
				}
				n.lastBeat[a.Path] = s.now
			}
			if !s.up[a.Path] || (s.drop != nil && s.drop(i, a.Path, s.now)) {
				continue
			}
			b := n.codec.Append(nil, a.Message)
			s.inflight = append(s.inflight, simPacket{at: s.now.Add(s.latency[a.Path]), to: 1 - i, path: a.Path, b: b})
		case ActionVerdict:
			n.verdicts = append(n.verdicts, simVerdict{s.elapsed(), a.Verdict, a.PeerRole})
		case ActionPath:
			n.alarms = append(n.alarms, simAlarm{s.elapsed(), a.Path, a.Down})
		case ActionDrop:
			n.drops[a.Drop]++
		}
	}
}

func (s *sim) setRole(i int, r Role, prio uint8) {
	s.step(i, Event{Kind: EventRole, Role: r, Priority: prio})
}

// setSync cuts or restores the sync link: both ends lose or get carrier.
func (s *sim) setSync(up bool) {
	s.up[PathSync] = up
	for i := range 2 {
		s.step(i, Event{Kind: EventCarrier, Up: up})
	}
}

// run advances the simulation by d, delivering packets and ticking each
// node at its deadlines.
func (s *sim) run(d time.Duration) {
	end := s.now.Add(d)
	for {
		next := end
		for _, p := range s.inflight {
			if p.at.Before(next) {
				next = p.at
			}
		}
		for _, n := range s.nodes {
			if n.frozen {
				continue // a hung node asks for nothing
			}
			if dl := n.m.NextDeadline(); !dl.IsZero() && dl.Before(next) {
				next = dl
			}
		}
		if next.Before(s.now) {
			next = s.now
		}
		s.now = next
		// Deliver what is due.
		var due []simPacket
		s.inflight = slices.DeleteFunc(s.inflight, func(p simPacket) bool {
			if !p.at.After(s.now) {
				due = append(due, p)
				return true
			}
			return false
		})
		for _, p := range due {
			n := s.nodes[p.to]
			if n.frozen || !s.up[p.path] {
				continue
			}
			msg, err := n.codec.Parse(p.b)
			if err != nil {
				n.drops[ReasonOf(err)]++
				continue
			}
			s.step(p.to, Event{Kind: EventReceive, Path: p.path, Message: msg})
		}
		for i, n := range s.nodes {
			if n.frozen {
				continue
			}
			if s.traffic != nil && n.m.TrafficDue(s.now) {
				n, bad := s.traffic(i, s.now)
				s.step(i, Event{Kind: EventTraffic, Packets: n, Unreadable: bad})
			}
			if dl := n.m.NextDeadline(); !dl.IsZero() && !dl.After(s.now) {
				s.step(i, Event{Kind: EventTick})
			}
		}
		if !s.now.Before(end) {
			return
		}
	}
}

// settled starts a pair: node 0 MASTER, node 1 BACKUP, both alive.
func settled(t testing.TB, cfgs ...Config) *sim {
	s := newSim(t, cfgs...)
	s.setRole(0, RoleMaster, 150)
	s.setRole(1, RoleBackup, 100)
	s.run(time.Second)
	for i, n := range s.nodes {
		if n.m.Verdict() != VerdictAlive {
			t.Fatalf("node %d: verdict %v after 1 s, want alive (verdicts %v)", i, n.m.Verdict(), n.verdicts)
		}
	}
	// Past the cold start: the detection time is down to its floor.
	s.run(coldStart)
	for i, n := range s.nodes {
		if d := n.m.Detect(s.now); d != n.m.cfg.Detect {
			t.Fatalf("node %d: detection %v after the cold start, want the floor %v", i, d, n.m.cfg.Detect)
		}
	}
	if r := s.nodes[1].m.PeerRole(); r != RoleMaster {
		t.Fatalf("backup sees its peer as %v", r)
	}
	return s
}

func (n *simNode) verdictsSince(at time.Duration) []simVerdict {
	var out []simVerdict
	for _, v := range n.verdicts {
		if v.at >= at {
			out = append(out, v)
		}
	}
	return out
}

func (v simVerdict) String() string { return fmt.Sprintf("%v@%v(%v)", v.verdict, v.at, v.role) }
