// Package vrrpsim is a deterministic simulation harness for the decision
// core of a node (package node, which runs the VRRP state machines and sync
// group of package vrrp, RFC 9568 section 6): two or more nodes, each a
// node.Core of one or more instances, exchange adverts over a simulated
// multicast link with virtual time (an event queue, no real clock), seeded
// per-packet loss and delay. The harness executes the core's actions as the
// daemon does (a role action claims or releases every VIP of the node and
// switches its replication role; it can be made to fail). It records every
// state change, VIP claim and release, and packet with its virtual
// timestamp, and checks the pair's safety invariants after every event:
//
//   - a node holds all of its sync group's VIPs or none (never split);
//   - a live node is a replication sender exactly when its last role action
//     made it MASTER (VIPs and replication roles never disagree);
//   - claims and releases of one VRID alternate on a node (every claim is
//     paired with a release);
//   - two live nodes hold the same VIP (a dual-master episode) for no longer
//     than the bound implied by loss and delay: (lost + 1) * I + D, where I is
//     the largest advert interval, D the largest one-way delay and lost the
//     number of adverts of that VRID lost on the link during the episode
//     (the winner advertises at least every I; the episode ends when one of
//     its adverts reaches the loser). With LinkConfig.AH, an episode in
//     which a node dropped an advert as vrrp.ReasonAHEpochBehind (its peer
//     restarted with the persisted AH epoch lost and the clock behind) may
//     last one Master_Down_Interval longer: the silence after which
//     vrrp.ReplayState accepts the lower epoch. Never more.
//
// No bytes are encoded: an advert travels as the decoded fields the core
// reads (vrrp.Received, unauthenticated, TTL 255). The codec is tested
// separately.
package vrrpsim

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vrrp"
)

// NodeConfig is one simulated node: its address and its sync group.
type NodeConfig struct {
	Name string
	Addr netip.Addr
	// Instances form the node's sync group. Primary defaults to Addr. The
	// i-th instance's VIP is on interface "eth<i>" (TrackDown). The node
	// holds preemption at every entry into BACKUP (until Ready) when any
	// instance has WaitReady.
	Instances []vrrp.InstanceConfig
	// KeyV1Only (LinkConfig.AH): the node runs a muros-had that derives
	// only version-1 AH keys (before key version 2); Sim.Upgrade clears it
	// for the node's next start.
	KeyV1Only bool
}

// LinkConfig is the simulated multicast link.
type LinkConfig struct {
	Seed   uint64        // PRNG seed for loss and jitter
	Loss   float64       // probability that one receiver misses one advert
	Delay  time.Duration // one-way delay
	Jitter time.Duration // extra delay, uniform in [0, Jitter)
	// LossFor, if set, overrides Loss per sender and VRID.
	LossFor func(from string, vrid uint8) float64
	// AH authenticates adverts with muros-had's AH (VRRPv3 only): each
	// carries the sender core's AH counter, each core runs its anti-replay
	// windows, drops are recorded (RecDrop). A node persists its epoch
	// (LoseEpoch forgets it) and reads its own clock (SetClock).
	AH bool
}

// RecordKind says what a Record is.
type RecordKind uint8

// Record kinds.
const (
	RecState    RecordKind = iota + 1 // state change (From, To, Reason)
	RecClaim                          // VIPs of VRID claimed
	RecRelease                        // VIPs of VRID released (also on crash)
	RecAnnounce                       // gratuitous ARP / NA
	RecSend                           // advert sent (Priority)
	RecDeliver                        // advert delivered to Node from Peer
	RecLost                           // advert to Node from Peer lost
	RecStart                          // node started
	RecCrash                          // node crashed (no priority 0)
	RecShutdown                       // node stopped gracefully
	RecTrack                          // tracked interface Reason went down (Priority 0) or up (1)
	RecReady                          // readiness given to the node
	RecRole                           // role action To (Reason: "failed" when it failed)
	RecDrop                           // advert to Node dropped by its core's checks (Reason), own adverts aside
)

var recordNames = [...]string{"", "state", "claim", "release", "announce", "send", "deliver", "lost", "start", "crash", "shutdown", "track", "ready", "role", "drop"}

func (k RecordKind) String() string {
	if int(k) < len(recordNames) {
		return recordNames[k]
	}
	return fmt.Sprintf("RecordKind(%d)", uint8(k))
}

// Record is one thing that happened, at virtual time At.
type Record struct {
	At       time.Duration
	Kind     RecordKind
	Node     string
	Peer     string // RecDeliver, RecLost: the sender
	VRID     uint8
	From, To vrrp.State
	Priority uint8
	Reason   string
	Key      vrrp.KeyVersion // RecSend, RecDeliver with LinkConfig.AH
}

func (r Record) String() string {
	s := fmt.Sprintf("%12v %-8s %-4s vrid=%d", r.At, r.Kind, r.Node, r.VRID)
	switch r.Kind {
	case RecState:
		s += fmt.Sprintf(" %v->%v (%s)", r.From, r.To, r.Reason)
	case RecSend:
		s += fmt.Sprintf(" prio=%d", r.Priority)
		if r.Key != 0 {
			s += " key=" + r.Key.String()
		}
	case RecDeliver, RecLost:
		s += fmt.Sprintf(" from=%s prio=%d", r.Peer, r.Priority)
		if r.Key != 0 {
			s += " key=" + r.Key.String()
		}
	case RecTrack, RecDrop:
		s += " " + r.Reason
	case RecRole:
		s += fmt.Sprintf(" %v %s", r.To, r.Reason)
	}
	return s
}

// Node is one simulated node.
type Node struct {
	cfg     NodeConfig
	core    *node.Core
	alive   bool
	epoch   uint64
	timers  map[node.TimerKey]uint64
	claimed map[uint8]bool
	sender  bool     // replication role: sender (as the daemon's adapters would be)
	down    []string // tracked interfaces down (survive restarts)
	waitGen uint64   // the readiness wait the core asked for (0: none)
	// AH: the epoch the node persisted and its clock's offset.
	persisted uint32
	clock     time.Duration
	// failRoles: that many next role actions fail (the kernel refuses).
	failRoles int
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Alive reports whether the node is running.
func (n *Node) Alive() bool { return n.alive }

// State returns the state of the node's instance vrid (Initialize if down).
func (n *Node) State(vrid uint8) vrrp.State {
	if !n.alive {
		return vrrp.StateInitialize
	}
	if m := n.core.Group().Member(vrid); m != nil {
		return m.State()
	}
	return vrrp.StateInitialize
}

// Sender reports whether the node's replications are senders.
func (n *Node) Sender() bool { return n.sender }

// Core returns the node's decision core (replaced on restart).
func (n *Node) Core() *node.Core { return n.core }

// Holds reports whether the node currently holds the VIPs of vrid.
func (n *Node) Holds(vrid uint8) bool { return n.claimed[vrid] }

// Group returns the node's current sync group (replaced on restart).
func (n *Node) Group() *vrrp.Group { return n.core.Group() }

type itemKind uint8

const (
	itemTimer itemKind = iota
	itemPacket
	itemFunc
)

type item struct {
	at    time.Duration
	seq   uint64
	kind  itemKind
	node  *Node
	epoch uint64
	timer node.TimerKey
	gen   uint64
	from  *Node
	vrid  uint8
	adv   vrrp.Advert
	ah    vrrp.AHCounter
	fn    func()
}

type queue []*item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

type episode struct {
	start time.Duration
	lost  int
	// behind: a node dropped an advert as vrrp.ReasonAHEpochBehind.
	behind bool
}

// Sim is one simulation. It is not safe for concurrent use.
type Sim struct {
	link     LinkConfig
	rng      *rand.Rand
	now      time.Duration
	seq      uint64
	q        queue
	nodes    []*Node
	records  []Record
	vrids    []uint8
	maxIntvl time.Duration
	episodes map[uint8]*episode
	err      error
	out      []node.Action
	// MaxDualMaster is the longest dual-master episode seen.
	MaxDualMaster time.Duration
}

// New builds a simulation. Nodes start stopped; call Start.
func New(link LinkConfig, nodes ...NodeConfig) (*Sim, error) {
	if len(nodes) < 2 {
		return nil, errors.New("vrrpsim: need at least two nodes")
	}
	if link.Loss < 0 || link.Loss > 1 || link.Delay < 0 || link.Jitter < 0 {
		return nil, fmt.Errorf("vrrpsim: bad link %+v", link)
	}
	s := &Sim{link: link, rng: rand.New(rand.NewPCG(link.Seed, link.Seed^0x9e3779b97f4a7c15)), episodes: map[uint8]*episode{}}
	seen := map[string]bool{}
	for _, nc := range nodes {
		if seen[nc.Name] || nc.Name == "" {
			return nil, fmt.Errorf("vrrpsim: node name %q empty or repeated", nc.Name)
		}
		seen[nc.Name] = true
		nc.Instances = slices.Clone(nc.Instances)
		for i := range nc.Instances {
			if !nc.Instances[i].Primary.IsValid() {
				nc.Instances[i].Primary = nc.Addr
			}
			s.maxIntvl = max(s.maxIntvl, nc.Instances[i].Interval)
			if !slices.Contains(s.vrids, nc.Instances[i].VRID) {
				s.vrids = append(s.vrids, nc.Instances[i].VRID)
			}
		}
		c, err := newCore(nc, link.AH, 0)
		if err != nil {
			return nil, fmt.Errorf("vrrpsim: node %s: %w", nc.Name, err)
		}
		s.nodes = append(s.nodes, &Node{cfg: nc, core: c, timers: map[node.TimerKey]uint64{}, claimed: map[uint8]bool{}})
	}
	return s, nil
}

// epoch0 is the wall clock at virtual time 0 (the AH epoch of a node
// started then, with LinkConfig.AH).
var epoch0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newCore(nc NodeConfig, ah bool, lastEpoch uint32) (*node.Core, error) {
	cfg := node.Config{
		Codec:     vrrp.Config{Version: 3, Auth: vrrp.AuthNone, Checksum: vrrp.ChecksumModePseudoHeader},
		Own:       map[vrrp.Family]netip.Addr{vrrp.IPv4: nc.Addr},
		LastEpoch: lastEpoch,
	}
	if ah {
		cfg.Codec.Auth = vrrp.AuthAH
	}
	for i, ic := range nc.Instances {
		cfg.HoldReady = cfg.HoldReady || ic.WaitReady
		if ic.Version == 2 {
			cfg.Codec.Version = 2
		}
		cfg.Instances = append(cfg.Instances, node.Instance{
			VRRP: ic, Family: vrrp.IPv4, Interface: fmt.Sprintf("eth%d", i),
			Addrs: []netip.Addr{vipOf(ic.VRID)},
		})
	}
	return node.New(cfg)
}

// vipOf is the simulated VIP of a VRID (the same on every node).
func vipOf(vrid uint8) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, vrid}) }

// Now is the virtual time.
func (s *Sim) Now() time.Duration { return s.now }

// Records returns everything recorded so far.
func (s *Sim) Records() []Record { return s.records }

// Nodes returns the nodes in configuration order.
func (s *Sim) Nodes() []*Node { return s.nodes }

// Node returns the node called name; it panics on an unknown name (a test bug).
func (s *Sim) Node(name string) *Node {
	for _, n := range s.nodes {
		if n.cfg.Name == name {
			return n
		}
	}
	panic("vrrpsim: no node " + name)
}

// Err is the first invariant violation seen, if any.
func (s *Sim) Err() error { return s.err }

// SetLoss changes the link's loss probability from now on.
func (s *Sim) SetLoss(p float64) { s.link.Loss = p }

// At schedules f at virtual time t (not before now).
func (s *Sim) At(t time.Duration, f func()) {
	s.push(&item{at: max(t, s.now), kind: itemFunc, fn: f})
}

// RunUntil processes every event up to and including virtual time t, then
// sets the clock to t. It returns the first invariant violation.
func (s *Sim) RunUntil(t time.Duration) error {
	for s.err == nil && len(s.q) > 0 && s.q[0].at <= t {
		it := heap.Pop(&s.q).(*item)
		s.now = it.at
		s.dispatch(it)
		s.check()
	}
	if t > s.now {
		s.now = t
	}
	s.check()
	return s.err
}

// Run advances the clock by d.
func (s *Sim) Run(d time.Duration) error { return s.RunUntil(s.now + d) }

// Start starts (or restarts) a stopped node with a fresh core.
func (s *Sim) Start(name string) {
	n := s.Node(name)
	if n.alive {
		return
	}
	c, err := newCore(n.cfg, s.link.AH, n.persisted)
	if err != nil {
		s.fail(fmt.Errorf("restart %s: %w", name, err))
		return
	}
	n.core, n.alive, n.waitGen = c, true, 0
	n.epoch++
	clear(n.timers)
	s.record(Record{Kind: RecStart, Node: name})
	for _, ifname := range n.down {
		s.step(n, node.Event{Kind: node.EventLink, Interface: ifname, Exists: true, Up: false})
	}
	s.step(n, node.Event{Kind: node.EventStartup})
}

// StartAll starts every node at the current instant, in order.
func (s *Sim) StartAll() {
	for _, n := range s.nodes {
		s.Start(n.cfg.Name)
	}
}

// Crash stops a node without a word: its VIPs vanish with it, its timers
// are lost, adverts already on the wire still arrive.
func (s *Sim) Crash(name string) {
	n := s.Node(name)
	if !n.alive {
		return
	}
	s.record(Record{Kind: RecCrash, Node: name})
	s.stop(n)
}

// Shutdown stops a node gracefully (priority 0, release).
func (s *Sim) Shutdown(name string) {
	n := s.Node(name)
	if !n.alive {
		return
	}
	s.record(Record{Kind: RecShutdown, Node: name})
	s.step(n, node.Event{Kind: node.EventShutdown})
	s.stop(n)
}

func (s *Sim) stop(n *Node) {
	for _, v := range s.vrids {
		if n.claimed[v] {
			s.record(Record{Kind: RecRelease, Node: n.cfg.Name, VRID: v, Reason: "node stopped"})
		}
	}
	clear(n.claimed)
	clear(n.timers)
	n.alive, n.sender = false, false
	n.epoch++
	s.check()
}

// TrackDown takes a tracked interface of the node down (it stays down
// across restarts until TrackUp): "eth<i>" is the i-th instance's VIP
// interface; another name is no VIP's and changes nothing.
func (s *Sim) TrackDown(name, ifname string) {
	n := s.Node(name)
	if slices.Contains(n.down, ifname) {
		return
	}
	n.down = append(n.down, ifname)
	s.record(Record{Kind: RecTrack, Node: name, Reason: ifname + " down"})
	s.step(n, node.Event{Kind: node.EventLink, Interface: ifname, Exists: true, Up: false})
}

// TrackUp brings a tracked interface back.
func (s *Sim) TrackUp(name, ifname string) {
	n := s.Node(name)
	i := slices.Index(n.down, ifname)
	if i < 0 {
		return
	}
	n.down = slices.Delete(n.down, i, i+1)
	s.record(Record{Kind: RecTrack, Node: name, Reason: ifname + " up", Priority: 1})
	s.step(n, node.Event{Kind: node.EventLink, Interface: ifname, Exists: true, Up: true})
}

// Ready answers the node's current readiness wait (its replications are
// complete): preemption may proceed until the node next enters BACKUP.
func (s *Sim) Ready(name string) {
	n := s.Node(name)
	if !n.alive || n.waitGen == 0 {
		return
	}
	s.record(Record{Kind: RecReady, Node: name})
	gen := n.waitGen
	n.waitGen = 0
	s.step(n, node.Event{Kind: node.EventReady, Gen: gen})
}

// FailRoles makes the node's next count role actions fail: a claim or a
// release the kernel refuses (the VIPs stay as they were; the replication
// roles switch as the daemon's adapters would).
func (s *Sim) FailRoles(name string, count int) { s.Node(name).failRoles = count }

// step feeds one event to a live node's core, executes its actions and
// checks the invariants.
func (s *Sim) step(n *Node, ev node.Event) {
	if !n.alive {
		return
	}
	ev.Now = epoch0.Add(s.now + n.clock)
	s.apply(n, n.core.Step(ev, s.out[:0]))
	s.check()
}

func (s *Sim) push(it *item) {
	s.seq++
	it.seq = s.seq
	heap.Push(&s.q, it)
}

func (s *Sim) record(r Record) {
	r.At = s.now
	s.records = append(s.records, r)
}

func (s *Sim) fail(err error) {
	if s.err == nil {
		s.err = fmt.Errorf("at %v: %w", s.now, err)
	}
}

func (s *Sim) dispatch(it *item) {
	switch it.kind {
	case itemFunc:
		it.fn()
	case itemTimer:
		n := it.node
		if !n.alive || n.epoch != it.epoch || n.timers[it.timer] != it.gen {
			return // cancelled, re-armed, or the node restarted
		}
		delete(n.timers, it.timer)
		s.step(n, node.Event{Kind: node.EventTimer, Timer: it.timer, Gen: it.gen})
	case itemPacket:
		n := it.node
		if !n.alive || n.core.Instance(it.vrid) == nil {
			return
		}
		rec := Record{Kind: RecDeliver, Node: n.cfg.Name, Peer: it.from.cfg.Name, VRID: it.vrid, Priority: it.adv.Priority}
		if s.link.AH {
			rec.Key, _ = keyOf(it.from, it.ah)
		}
		s.record(rec)
		adv := it.adv
		adv.Addrs = []netip.Addr{vipOf(it.vrid)}
		r := vrrp.Received{Advert: adv, Src: it.from.cfg.Addr, TTL: vrrp.TTL, Checksum: vrrp.ChecksumPseudoHeader}
		if s.link.AH {
			// The bytes are the codec's business (TestMixedKeyVersions):
			// here every advert on the link is authentic, and what matters
			// is the key it names and whether the receiver has that key.
			key, speaksV2 := keyOf(it.from, it.ah)
			r.Auth, r.AuthChecked, r.SPI, r.Seq = vrrp.AuthAH, true, it.ah.Epoch, it.ah.Seq
			r.KeyVersion, r.PeerSpeaksV2 = key, speaksV2
			r.AuthOK = key == vrrp.KeyV1 || !n.cfg.KeyV1Only
		}
		s.step(n, node.Event{Kind: node.EventAdvert, Family: vrrp.IPv4, Advert: r})
	}
}

// apply executes a node's actions as the daemon does. A role action is
// reported back to the core (EventRoleDone) after the batch, as the
// daemon's loop does.
func (s *Sim) apply(n *Node, out []node.Action) {
	s.out = out[:0]
	name := n.cfg.Name
	var done []node.Event
	for _, a := range out {
		switch a.Kind {
		case node.ActionNotify:
			s.record(Record{Kind: RecState, Node: name, VRID: a.VRID, From: a.From, To: a.To, Reason: a.Reason})
		case node.ActionRole:
			done = append(done, node.Event{Kind: node.EventRoleDone, Gen: a.Gen, Err: s.role(n, a.Role)})
		case node.ActionAnnounce:
			s.record(Record{Kind: RecAnnounce, Node: name})
		case node.ActionSetTimer:
			n.timers[a.Timer] = a.Gen
			s.push(&item{at: s.now + a.After, kind: itemTimer, node: n, epoch: n.epoch, timer: a.Timer, gen: a.Gen})
		case node.ActionStopTimer:
			delete(n.timers, a.Timer)
		case node.ActionSendAdvert:
			s.send(n, a)
		case node.ActionHold:
			if a.Wait {
				n.waitGen = a.Gen
			} else if a.Held {
				n.waitGen = 0
			}
		case node.ActionPersistEpoch:
			n.persisted = a.Epoch
		case node.ActionDrop:
			if a.Drop != node.ReasonOwnAdvert {
				s.record(Record{Kind: RecDrop, Node: name, VRID: a.VRID, Reason: string(a.Drop)})
				if ep := s.episodes[a.VRID]; ep != nil && a.Drop == node.Reason(vrrp.ReasonAHEpochBehind) {
					ep.behind = true
				}
			}
		case node.ActionHeard:
		case node.ActionLeave, node.ActionConfirmPeer:
			// The simulation models VRRP only: no peer hears the liveness
			// protocol (package liveness has a simulation of its own), as
			// with a peer that does not speak it.
		default:
			s.fail(fmt.Errorf("node %s: unexpected action %v", name, a.Kind))
		}
	}
	for _, ev := range done {
		ev.Now = epoch0.Add(s.now + n.clock)
		s.apply(n, n.core.Step(ev, nil))
	}
}

// role executes a role action: MASTER switches the replications to senders,
// then claims every VIP; any other role releases them, then switches the
// replications to receivers. A failure (FailRoles) leaves the VIPs as they
// were.
func (s *Sim) role(n *Node, role vrrp.State) error {
	name := n.cfg.Name
	var err error
	if n.failRoles > 0 {
		n.failRoles--
		err = errors.New("simulated netlink failure")
	}
	why := ""
	if err != nil {
		why = "failed"
	}
	s.record(Record{Kind: RecRole, Node: name, To: role, Reason: why})
	if role == vrrp.StateMaster {
		n.sender = true
		if err != nil {
			return err
		}
		for _, ic := range n.cfg.Instances {
			if !n.claimed[ic.VRID] {
				n.claimed[ic.VRID] = true
				s.record(Record{Kind: RecClaim, Node: name, VRID: ic.VRID})
			}
		}
		return nil
	}
	if err == nil {
		for _, ic := range n.cfg.Instances {
			if n.claimed[ic.VRID] {
				n.claimed[ic.VRID] = false
				s.record(Record{Kind: RecRelease, Node: name, VRID: ic.VRID})
			}
		}
	}
	n.sender = false
	return err
}

// keyOf is the AH key version and "speaks version 2" flag of an advert
// sent by n with counter ctr, as vrrp.Codec.AppendPacket sets them.
func keyOf(n *Node, ctr vrrp.AHCounter) (vrrp.KeyVersion, bool) {
	switch {
	case n.cfg.KeyV1Only:
		return vrrp.KeyV1, false
	case ctr.LegacyKey:
		return vrrp.KeyV1, true
	}
	return vrrp.KeyV2, true
}

// Upgrade makes the node derive version-2 AH keys from its next start on.
func (s *Sim) Upgrade(name string) { s.Node(name).cfg.KeyV1Only = false }

func (s *Sim) send(n *Node, a node.Action) {
	rec := Record{Kind: RecSend, Node: n.cfg.Name, VRID: a.VRID, Priority: a.Priority}
	if s.link.AH {
		rec.Key, _ = keyOf(n, a.Counter)
	}
	s.record(rec)
	m := n.core.Group().Member(a.VRID)
	adv := vrrp.Advert{Version: 3, VRID: a.VRID, Priority: a.Priority, Interval: m.Config().Interval}
	if m.Config().Version == 2 {
		adv.Version = 2
	}
	loss := s.link.Loss
	if s.link.LossFor != nil {
		loss = s.link.LossFor(n.cfg.Name, a.VRID)
	}
	for _, r := range s.nodes {
		if r == n {
			continue
		}
		// Draw both numbers for every receiver so that changing the loss
		// rate does not shift the jitter sequence.
		lost := s.rng.Float64() < loss
		d := s.link.Delay
		if s.link.Jitter > 0 {
			d += time.Duration(s.rng.Int64N(int64(s.link.Jitter)))
		}
		if lost {
			s.record(Record{Kind: RecLost, Node: r.cfg.Name, Peer: n.cfg.Name, VRID: a.VRID, Priority: a.Priority})
			if ep := s.episodes[a.VRID]; ep != nil {
				ep.lost++
			}
			continue
		}
		s.push(&item{at: s.now + d, kind: itemPacket, node: r, vrid: a.VRID, from: n, adv: adv, ah: a.Counter})
	}
}

// DualMasterBound is the longest a dual-master episode may last given lost
// adverts lost during it.
func (s *Sim) DualMasterBound(lost int) time.Duration {
	return time.Duration(lost+1)*s.maxIntvl + s.link.Delay + s.link.Jitter
}

// episodeBound is DualMasterBound plus, after an AH epoch step-back, the
// largest Master_Down_Interval (3 intervals + a skew below one).
func (s *Sim) episodeBound(ep *episode) time.Duration {
	b := s.DualMasterBound(ep.lost)
	if ep.behind {
		b += 4 * s.maxIntvl
	}
	return b
}

// LoseEpoch forgets the AH epoch the node persisted (a lost or corrupt
// state file): its next start takes its epoch from its clock alone.
func (s *Sim) LoseEpoch(name string) { s.Node(name).persisted = 0 }

// SetClock sets the node's clock to virtual time + offset (a node whose
// clock is behind has a negative offset).
func (s *Sim) SetClock(name string, offset time.Duration) { s.Node(name).clock = offset }

// check verifies the invariants at the current instant.
func (s *Sim) check() {
	if s.err != nil {
		return
	}
	for _, n := range s.nodes {
		held := 0
		for _, v := range s.vrids {
			if n.claimed[v] {
				held++
			}
		}
		if held != 0 && held != len(n.cfg.Instances) {
			s.fail(fmt.Errorf("node %s holds %d of its %d sync-group VIPs (split)", n.cfg.Name, held, len(n.cfg.Instances)))
			return
		}
		if role, _ := n.core.Role(); n.alive && n.sender != (role == vrrp.StateMaster) {
			s.fail(fmt.Errorf("node %s: replications are senders=%v while its role is %v", n.cfg.Name, n.sender, role))
			return
		}
	}
	for _, v := range s.vrids {
		holders := 0
		for _, n := range s.nodes {
			if n.alive && n.claimed[v] {
				holders++
			}
		}
		ep := s.episodes[v]
		switch {
		case holders >= 2 && ep == nil:
			s.episodes[v] = &episode{start: s.now}
		case ep != nil:
			d := s.now - ep.start
			if d > s.episodeBound(ep) {
				s.fail(fmt.Errorf("vrid %d held by %d nodes for %v > bound %v (%d adverts lost, AH epoch behind %v)", v, holders, d, s.episodeBound(ep), ep.lost, ep.behind))
				return
			}
			if holders < 2 {
				s.MaxDualMaster = max(s.MaxDualMaster, d)
				delete(s.episodes, v)
			}
		}
	}
}

// Masters returns the live nodes holding vrid.
func (s *Sim) Masters(vrid uint8) []string {
	var names []string
	for _, n := range s.nodes {
		if n.alive && n.claimed[vrid] {
			names = append(names, n.cfg.Name)
		}
	}
	return names
}

// Converged reports nil if exactly one live node holds every VIP, it is
// Master of every instance, and every other live node is Backup of every
// instance; otherwise an error saying what is wrong.
func (s *Sim) Converged() error {
	var master string
	for _, v := range s.vrids {
		m := s.Masters(v)
		if len(m) != 1 {
			return fmt.Errorf("vrid %d held by %v, want exactly one node", v, m)
		}
		if master != "" && m[0] != master {
			return fmt.Errorf("vrid %d held by %s, other VIPs by %s", v, m[0], master)
		}
		master = m[0]
	}
	for _, n := range s.nodes {
		if !n.alive {
			continue
		}
		want := vrrp.StateBackup
		if n.cfg.Name == master {
			want = vrrp.StateMaster
		}
		for _, ic := range n.cfg.Instances {
			if st := n.State(ic.VRID); st != want {
				return fmt.Errorf("node %s vrid %d is %v, want %v", n.cfg.Name, ic.VRID, st, want)
			}
		}
	}
	return nil
}

// Find returns the records matching keep, in order.
func (s *Sim) Find(keep func(Record) bool) []Record {
	var out []Record
	for _, r := range s.records {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// Dump formats the last n records (all if n <= 0), for test failures.
func (s *Sim) Dump(n int) string {
	rs := s.records
	if n > 0 && len(rs) > n {
		rs = rs[len(rs)-n:]
	}
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}
