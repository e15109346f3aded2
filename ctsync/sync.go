// Package ctsync replicates the kernel connection-tracking table of the
// master firewall to the backup over the sync link, so that established
// flows (NAT'd ones included) survive a takeover. It replaces conntrackd.
//
// Standards: Linux ctnetlink (dumps read by ctnl.Dumper; events read
// with recvmmsg(2) and decoded by ctnl.ParseEvent; injection through
// package ctnl), UDP over IPv4 or IPv6 multicast (RFC 1112, RFC 4291) with
// the authenticated muros-had sync protocol of package ctwire, and the
// reliability layer of package ctrel. The wire format is documented byte by
// byte in package ctwire.
//
// Roles. The master subscribes to NEW, UPDATE and DESTROY events, reads
// the table once the subscription is live (flows that predate it), and
// multicasts flow records; the backup injects every record into its own
// kernel table at once, so the state is already in the kernel when a VIP is
// claimed (no commit step as with conntrackd's external cache). The backup
// does not listen to its own kernel, so its injections are never echoed.
// SetRole swaps roles: a new master starts a new epoch, listens and reads
// its table; a node returning to backup drops its sender, asks for a bulk
// and purges at its end the flows the master no longer has
// (ctrel.BulkPurge).
//
// Takeover. Nothing table-sized runs when a node becomes master (issue
// 13: on two cores, the full dump it did at the daemon's real-time
// priority delayed replies through it by 100-260 ms at 250,000 flows,
// bench/README.md). Its kernel table already holds every replicated flow,
// so forwarding needs nothing from ctsync; the sender's own view of the
// table is read beside the event stream by the sweeper, on a thread set to
// SCHED_OTHER (timeshare.go), and merged a datagram (about a
// hundred flows) at a time between event batches (ctrel's BeginLoad). No
// bulk is sent unasked: a receiver follows a new sender only after the
// handshake, so the peer asks anyway, and its bulk waits until the table
// is read (a bulk of part of it would make the receiver purge live flows).
// Bulks are paced (Config.BulkRate, in 10 ms bursts): the receiver injects
// them at its real-time priority. The backup's purge after a bulk reads
// the table on the sweeper too.
//
// Readiness. Rearm starts a readiness wait and returns a channel closed
// once the receiver reports its table complete since (ctrel's
// Receiver.Complete, evaluated by the loop after every datagram batch and
// tick); Status.Waiting and WaitReason say what the wait waits for.
//
// Batching. Both ends work in batches so that a storm costs few wakeups
// and syscalls per flow: the master reads up to 64 kernel events per
// recvmmsg(2), coalesces them in the sender and sends up to 64 datagrams
// per sendmmsg(2); the backup reads up to 64 datagrams per recvmmsg(2) and
// puts all their records into the kernel in chunks of 256 netlink requests
// per sendmsg(2), of which only the failed ones and the last are
// acknowledged (package ctnl).
//
// Supervision. The event socket gets a large receive buffer
// (SO_RCVBUFFORCE). Any receive error (ENOBUFS after an event storm
// included) ends the listener generation; the supervisor restarts it,
// re-reads the table (the sweeper, as above), reconciles the sender with
// the dump (new and changed flows queued, vanished ones destroyed) and
// sends a bulk once the dump is merged, so an overrun never silently stops
// or skews replication. A dump that fails is read again: nothing absent
// from a partial dump is destroyed, and a held bulk stays held.
//
// Timeouts. A packet that refreshes a conntrack timeout produces no event,
// so every RefreshInterval the master dumps its table and re-announces the
// flows whose backup copy would expire within three intervals, with the
// timeout padded by three intervals (see package ctrel). The dump is read
// by a goroutine of its own (ctnl.Dumper, one datagram of about a hundred
// flows at a time) and merged between event batches (ctrel's incremental
// sweep), so a large table never stalls the event stream and an event
// storm never stalls the sweep. A flow alive on the
// master is alive on the backup at takeover; a flow that dies on the master
// dies on the backup through its DESTROY event.
//
// Filter. Flows to or from the firewall's own addresses (its SSH, the sync
// traffic itself) are not replicated unless Filter.ReplicateLocal; the
// filter also narrows by protocol and CIDR. The backup applies its own
// filter to what it receives too (counted as RecordsFiltered): a flow it
// excludes would never be purged from its kernel, and a record naming one
// of its own flows must not touch it.
//
// Replay protection. Epochs only grow: each incarnation (a new master, a
// backup period's control traffic) takes ctrel.NextEpoch of the node's
// last epoch, written to Config.StateDir before any datagram carries it.
// The highest epoch accepted from the peer is written there too and seeds
// every receiver and the master's control peer, so older incarnations stay
// stale across role switches and restarts. Writes are crash-safe (temp
// file, fsync, rename). The backup follows a master only after it echoed a
// fresh nonce; package ctrel gives the rules and the recovery from a peer
// that lost its state directory. A corrupt or unreadable epoch file stops
// New (it is kept for the operator). Status shows the handshake (verified
// or asking), the epoch followed and the floor, the datagrams a master
// drops from another sender, the stale RESYNCs by outcome and the peer's
// protocol version (another one pauses replication: README, "Upgrading a
// pair").
package ctsync

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/ctsync/ctnl"
	"github.com/muros/muros-had/ctsync/ctrel"
	"github.com/muros/muros-had/ctsync/ctwire"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/rawio"
)

// Defaults.
const (
	DefaultPort       = 3780
	DefaultHeartbeat  = 250 * time.Millisecond
	DefaultRefresh    = 10 * time.Second
	DefaultReadBuffer = 64 << 20
	DefaultHistory    = 4096
	// DefaultBulkRate paces a bulk at 2,048 datagrams a second (about
	// 30,000 flows), in bursts of 10 ms: the receiver injects every record
	// at its real-time priority, about 10 us of CPU a flow (bench/
	// README.md, the drain), so a bulk takes it about a third of a CPU;
	// unpaced it took all of one for as long as the bulk lasted. A
	// 250,000-flow table goes in about 8 s, 50,000 in under 2.
	DefaultBulkRate = 2048
	// tickInterval paces NACKs, resync requests and repairs while there is
	// work; the idle tick (Sync.idleTick: half the heartbeat, at least
	// minIdleTick) paces heartbeats and the silent-master check when there
	// is none. Each tick is a runtime timer, and strace of an idle backup
	// showed each costing a thread wakeup, a spinning thread and two
	// wakeups of the runtime's sysmon (which sleeps until the next
	// runtime timer).
	tickInterval = 10 * time.Millisecond
	minIdleTick  = 50 * time.Millisecond
	udpBuffer    = 16 << 20
	// rxBatchLen is the datagrams one recvmmsg(2) takes on the sync
	// socket, rxBatches the batches in flight between the reader and the
	// loop (when the loop holds them all, the socket buffer absorbs).
	rxBatchLen = 64
	rxBatches  = 4
	// txBatchLen is the datagrams one sendmmsg(2) carries.
	txBatchLen = 64
)

// DefaultGroup is the sync multicast group (conntrackd's default too).
const DefaultGroup = "225.0.0.50"

// Filter selects the flows to replicate.
type Filter struct {
	// Protocols, if not empty, limits replication to these IP protocols.
	Protocols []uint8
	// Include, if not empty, limits replication to flows whose original
	// source or destination is in one of these prefixes.
	Include []netip.Prefix
	// Exclude drops flows with any tuple address in one of these prefixes.
	Exclude []netip.Prefix
	// ReplicateLocal also replicates flows from or to the firewall itself.
	ReplicateLocal bool
}

// Config configures a Sync. Interface, Password and StateDir are
// required.
type Config struct {
	Interface string     // the sync link
	Group     netip.Addr // default 225.0.0.50; IPv6: a group such as ff02::3780
	Port      int        // default 3780
	Password  string     // the cluster password; the sync key is derived with a label
	// Master is the password already stretched (kdf.Derive) by a process
	// that derives other keys too; zero: New stretches Password itself.
	Master kdf.Master
	// StateDir holds the epoch book (created if missing; see epochBook):
	// the node's own epochs and the highest one accepted from the peer
	// survive restarts there.
	StateDir string
	// LocalAddrs are the firewall's own addresses; nil: every address
	// configured in the namespace when New runs.
	LocalAddrs []netip.Addr
	Filter     Filter
	Heartbeat  time.Duration // default 250ms
	Refresh    time.Duration // timeout refresh sweep, default 10s
	History    int           // datagrams kept for repair, default 4096
	// ReadBuffer is the kernel event socket's receive buffer, default 64 MiB.
	ReadBuffer int
	// BulkRate paces bulk datagrams, per second (ctrel.SenderConfig),
	// default DefaultBulkRate.
	BulkRate int
	// Rand is the source of the handshake nonces; nil: crypto/rand.
	Rand io.Reader
	// OnApplied, if set, is called on the backup after each record reaches
	// the kernel, with the record and the master's send time (benchmarks).
	OnApplied func(f *ctwire.Flow, sent time.Time)
}

// Status is a snapshot of the replication state.
type Status struct {
	Master     bool
	BulkSynced bool
	// Flows: master, the flows in the replicated table; backup, the flows
	// injected and not deleted since the last purge.
	Flows int
	// Lag: backup, send-to-kernel delay of the last applied datagram
	// (wall clocks of both nodes; meaningful with NTP).
	Lag time.Duration
	// Queued: master, flow changes waiting to be sent.
	Queued int
	// Loading: master, its table is still being read from the kernel
	// (after the role change or a listener restart); a bulk asked for
	// meanwhile waits for it.
	Loading bool

	DatagramsSent, DatagramsReceived uint64
	RecordsSent, RecordsApplied      uint64
	Lost, Repaired                   uint64 // sequence gaps found and closed
	NACKsSent, NACKsServed           uint64
	Resyncs                          uint64 // backup: bulk resyncs completed; master: bulks sent
	ResyncRequests                   uint64
	Coalesced, Refreshed             uint64
	Sweeps                           uint64 // master: refresh sweeps completed
	ListenerRestarts, Overruns       uint64
	InjectErrors, Purged             uint64
	// InjectRedials counts kernel batch sockets replaced after a failed
	// exchange (that batch went one record at a time).
	InjectRedials uint64
	// RecordsFiltered: backup, received records its own filter excludes
	// (not put into the kernel).
	RecordsFiltered uint64
	// StateErrors: epoch book writes that failed (see Config.StateDir).
	StateErrors uint64
	// NonceErrors: handshake nonces that could not be drawn (Config.Rand
	// failed; the backup asks nobody until it can draw one).
	NonceErrors uint64
	Forged      uint64 // datagrams dropped for a bad MAC
	Rejected    map[string]uint64
	// Waiting: what the readiness wait open since the last Rearm waits
	// for (ctrel's Wait* strings, or WaitSender); empty when none is open.
	Waiting string
	// Handshake: backup, HandshakeVerified (it follows a master that
	// answered its nonce) or HandshakeAsking (it waits for the echo of its
	// nonce); empty on the master.
	Handshake string
	// FollowedEpoch: backup, the master's incarnation followed; master,
	// the backup's control incarnation accepted (0: none yet).
	FollowedEpoch uint64
	// PeerFloor: the highest epoch ever accepted from the peer (persisted;
	// older incarnations are stale). A followed epoch below it: the peer
	// lost its state directory.
	PeerFloor uint64
	// FromOtherMaster: master, datagrams another sender sent (a split
	// brain, or a role swap in flight), dropped, by type (data, heartbeat,
	// echo).
	FromOtherMaster map[string]uint64
	// StaleResyncs: master, RESYNCs of stale incarnations (replays, or a
	// backup that lost its state) by what they got: echoed, rate_limited.
	// None gets a bulk.
	StaleResyncs map[string]uint64
	// PeerProtocolVersion: the protocol version of the last authentic
	// datagram from the peer (0: none yet). Another than ctwire.Version
	// (a rolling upgrade from version 1) pauses replication: nothing it
	// sends is accepted.
	PeerProtocolVersion uint8
}

// Handshake states (Status.Handshake).
const (
	HandshakeVerified = "verified"
	HandshakeAsking   = "asking"
)

// WaitSender is the reason of a readiness wait while the node is still
// the sender (the wait applies to the receiver of the next backup period).
const WaitSender = "conntrack: this node is still the sender (role change in progress)"

// WaitPurge is the reason of a readiness wait while the flows a completed
// bulk did not carry are being removed.
const WaitPurge = "conntrack: removing the flows the master no longer has (after the bulk)"

// tableReader reads the kernel's conntrack table a datagram at a time
// (*ctnl.Dumper).
type tableReader interface {
	Start() error
	Abandon()
	Next(fs []ctwire.Flow, rejected *[ctnl.NumEventReasons]uint64) ([]ctwire.Flow, bool, error)
	Close() error
}

// Sync is the conntrack replication service of one node.
type Sync struct {
	cfg      Config
	log      *slog.Logger
	key      []byte
	keyV1    []byte // protocol version 1's key: recognises a not-yet-upgraded peer
	ns       netns.NsHandle
	local    map[netip.Addr]bool
	maxDgram int

	// sock reads and writes the sync socket raw (recvmmsg, sendmmsg and
	// sendto as raw system calls: package rawio says why); raw is the
	// socket itself, closed to end the receiver.
	sock *rawio.Conn
	raw  net.PacketConn
	dst  rawio.Sockaddr
	inj  *ctnl.Injector
	// dumper reads, beside the event stream and at SCHED_OTHER, the dumps
	// the loop merges chunk by chunk: a new master's load, a restarted
	// listener's resync, the refresh sweeps, the backup's purge.
	dumper tableReader

	roleCh    chan bool
	ready     chan struct{}
	readyOnce sync.Once
	// armCh wakes the loop for a Rearm.
	armCh chan struct{}

	mu     sync.Mutex
	status Status
	// The readiness wait (Rearm): armGen counts the Rearm calls, waitCh
	// is the current wait's channel (nil before the first), waitOpen
	// whether it is still open, waitWhy what it waits for (or, once
	// closed, how it completed), waitChanged is closed and replaced when
	// waitWhy or waitOpen changes.
	armGen uint64
	// otherMaster: datagrams of another sender dropped by the master, by
	// type; staleResyncs: the sender's stale RESYNC outcomes (published);
	// peerVersion: the protocol version of the peer's last authentic
	// datagram.
	otherMaster  [8]uint64
	staleResyncs [ctrel.NumStaleOutcomes]uint64
	peerVersion  uint8
	waitCh       chan struct{}
	waitOpen     bool
	waitWhy      string
	waitChanged  chan struct{}

	// owned by the Run goroutine
	master bool
	sender *ctrel.Sender
	recv   *ctrel.Receiver
	lst    *listener
	start  time.Time
	book   *epochBook
	purge  ctrel.BulkPurge // backup: the bulk being received
	// purging: backup, the purge after a completed bulk reads the table
	// (the sweeper's dump dumpGen); readiness waits for it.
	purging bool
	// armed: a wait is open for the loop, since the Rearm of armedGen.
	armed    bool
	armedGen uint64
	rejected [ctwire.NumReasons]uint64
	// eventRejected counts kernel event messages ParseEvent refused.
	eventRejected [ctnl.NumEventReasons]uint64
	counters      Status
	auth          *ctwire.Auth // send side, Run goroutine only
	peer          *ctrel.Peer  // master: the backup's control datagrams
	ranges        []ctwire.Range
	ctlSeq        uint32
	ctlEp         uint64
	nonceFailing  bool
	// belowFloorLogged: the followed epoch below the floor last logged.
	belowFloorLogged uint64
	// the dump being read by the sweeper (sweepBusy), dumpGen, for
	// sweepOwner; reloadDue: a load or resync dump failed, the next tick
	// reads it again.
	sweepBusy  bool
	sweepOwner *ctrel.Sender
	sweepReq   chan sweepRequest
	dumpGen    uint64
	reloadDue  bool
	// dumpAt: when the current dump was requested (for the log);
	// loadFresh: the last load or resync sweep was a new master's load.
	dumpAt    time.Time
	loadFresh bool
	batch     []ctwire.Flow // backup: records waiting for applyPending
	batchSent []int64       // their master's send time, unix ns
	applied   []bool
	tx        *rawio.Batch // master: datagrams waiting for sendmmsg,
	txN       int          // the first txN of tx
	txBufs    [][]byte
}

// New opens the sockets of a Sync in the calling thread's network
// namespace (call it inside the node's namespace). Run starts it.
func New(cfg Config, log *slog.Logger) (*Sync, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Interface == "" {
		return nil, errors.New("ctsync: no sync interface")
	}
	if cfg.Password == "" {
		return nil, errors.New("ctsync: no password")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("ctsync: no state directory")
	}
	if !cfg.Group.IsValid() {
		cfg.Group = netip.MustParseAddr(DefaultGroup)
	}
	if !cfg.Group.IsMulticast() || cfg.Group.Is4In6() {
		return nil, fmt.Errorf("ctsync: group %s is not a multicast address", cfg.Group)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	if cfg.BulkRate <= 0 {
		cfg.BulkRate = DefaultBulkRate
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	key, keyErr := syncKey(cfg)
	if keyErr != nil {
		return nil, keyErr
	}
	s := &Sync{
		cfg: cfg, log: log, key: key, keyV1: ctwire.LegacyKey([]byte(cfg.Password)),
		roleCh: make(chan bool, 1), ready: make(chan struct{}),
		armCh: make(chan struct{}, 1), waitChanged: make(chan struct{}),
		local: map[netip.Addr]bool{},
	}
	ok := false
	defer func() {
		if !ok {
			s.closeSockets()
		}
	}()
	var err error
	if s.book, err = openEpochBook(cfg.StateDir, log); err != nil {
		return nil, err
	}
	if s.ns, err = netns.Get(); err != nil {
		return nil, fmt.Errorf("ctsync: netns handle: %w", err)
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("ctsync: sync interface: %w", err)
	}
	overhead := ctwire.IPUDPOverhead
	if cfg.Group.Is6() {
		overhead = ctwire.IPv6UDPOverhead
	}
	s.maxDgram = ifi.MTU - overhead
	if s.maxDgram < 576-ctwire.IPUDPOverhead {
		return nil, fmt.Errorf("ctsync: interface %s MTU %d too small", cfg.Interface, ifi.MTU)
	}
	if cfg.LocalAddrs == nil {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return nil, fmt.Errorf("ctsync: local addresses: %w", err)
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				s.local[p.Addr().Unmap()] = true
			}
		}
	}
	for _, a := range cfg.LocalAddrs {
		s.local[a.Unmap()] = true
	}
	if err := s.openUDP(ifi); err != nil {
		return nil, err
	}
	if s.inj, err = ctnl.DialInjector(); err != nil {
		return nil, err
	}
	if s.dumper, err = ctnl.DialDumper(); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

func (s *Sync) openUDP(ifi *net.Interface) error {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.BindToDevice(int(fd), ifi.Name); serr != nil {
				return
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpBuffer) != nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpBuffer)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	// Bound to the group address: only sync datagrams are received.
	if s.cfg.Group.Is6() {
		return s.openUDP6(ifi, lc)
	}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(s.cfg.Group.String(), fmt.Sprint(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("ctsync: sync socket: %w", err)
	}
	s.raw = pc
	p := ipv4.NewPacketConn(pc)
	if s.sock, err = rawio.NewConn(pc.(syscall.Conn)); err != nil {
		return fmt.Errorf("ctsync: sync socket: %w", err)
	}
	s.dst = rawio.SockaddrOf(s.cfg.Group, uint16(s.cfg.Port), 0)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: s.cfg.Group.AsSlice()}); err != nil {
		return fmt.Errorf("ctsync: join %s on %s: %w", s.cfg.Group, ifi.Name, err)
	}
	if err := p.SetMulticastInterface(ifi); err != nil {
		return fmt.Errorf("ctsync: multicast interface: %w", err)
	}
	if err := p.SetMulticastTTL(1); err != nil {
		return fmt.Errorf("ctsync: multicast TTL: %w", err)
	}
	if err := p.SetMulticastLoopback(false); err != nil {
		return fmt.Errorf("ctsync: multicast loopback: %w", err)
	}
	return nil
}

// openUDP6 is openUDP for an IPv6 group: the group scoped to the sync
// interface (a link-local group needs the zone), hop limit 1.
func (s *Sync) openUDP6(ifi *net.Interface, lc net.ListenConfig) error {
	group := s.cfg.Group.WithZone(ifi.Name)
	pc, err := lc.ListenPacket(context.Background(), "udp6", net.JoinHostPort(group.String(), fmt.Sprint(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("ctsync: sync socket: %w", err)
	}
	s.raw = pc
	p := ipv6.NewPacketConn(pc)
	if s.sock, err = rawio.NewConn(pc.(syscall.Conn)); err != nil {
		return fmt.Errorf("ctsync: sync socket: %w", err)
	}
	s.dst = rawio.SockaddrOf(s.cfg.Group, uint16(s.cfg.Port), ifi.Index)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: s.cfg.Group.AsSlice()}); err != nil {
		return fmt.Errorf("ctsync: join %s on %s: %w", s.cfg.Group, ifi.Name, err)
	}
	if err := p.SetMulticastInterface(ifi); err != nil {
		return fmt.Errorf("ctsync: multicast interface: %w", err)
	}
	if err := p.SetMulticastHopLimit(1); err != nil {
		return fmt.Errorf("ctsync: multicast hop limit: %w", err)
	}
	if err := p.SetMulticastLoopback(false); err != nil {
		return fmt.Errorf("ctsync: multicast loopback: %w", err)
	}
	return nil
}

func (s *Sync) closeSockets() {
	if s.raw != nil {
		s.raw.Close()
	}
	if s.inj != nil {
		s.inj.Close()
	}
	if s.dumper != nil && s.dumper != (*ctnl.Dumper)(nil) {
		s.dumper.Close()
	}
	if s.ns.IsOpen() {
		s.ns.Close()
	}
}

// SetRole switches the node to master (true) or backup (false). It does
// not block; the last call wins.
func (s *Sync) SetRole(master bool) {
	for {
		select {
		case s.roleCh <- master:
			return
		default:
		}
		select {
		case <-s.roleCh:
		default:
		}
	}
}

// Ready is closed once the node holds a complete copy of the master's
// table (its first bulk resync finished) or has become master. VRRP holds
// preemption until then.
func (s *Sync) Ready() <-chan struct{} { return s.ready }

// Rearm starts a readiness wait: the node has returned to backup (call it
// after SetRole(false)) and must hold a complete copy of the master's
// table again before it may preempt. The returned channel is closed once
// the receiver reports complete since this call: a bulk completed, or,
// synced by an earlier bulk, it heard the master's stream with no gap
// open (ctrel's Receiver.Complete). The wait applies to the receiver of
// the backup period that follows the role changes requested before the
// call, never to a sender still finishing; while the node is the sender it
// waits (WaitSender). A wait still open is kept (its channel is returned)
// and restarts from this call. It does not block.
func (s *Sync) Rearm() <-chan struct{} {
	s.mu.Lock()
	s.armGen++
	if s.waitCh == nil || !s.waitOpen {
		s.waitCh = make(chan struct{})
		s.waitOpen = true
		s.setWaitWhy("")
	}
	ch := s.waitCh
	s.mu.Unlock()
	select {
	case s.armCh <- struct{}{}:
	default: // a wake-up is pending: it takes the latest generation
	}
	return ch
}

// WaitReason returns what the current readiness wait waits for (see
// Rearm), or how it completed once its channel is closed ("" before the
// loop has seen it), and a channel closed at the next change.
func (s *Sync) WaitReason() (why string, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitWhy, s.waitChanged
}

// setWaitWhy changes the wait's reason; s.mu is held.
func (s *Sync) setWaitWhy(why string) {
	if why == s.waitWhy {
		return
	}
	s.waitWhy = why
	close(s.waitChanged)
	s.waitChanged = make(chan struct{})
}

// onRearm applies the latest Rearm in the loop, after the role changes
// requested before it.
func (s *Sync) onRearm() {
	select {
	case m := <-s.roleCh:
		s.switchRole(m)
	default:
	}
	s.mu.Lock()
	s.armedGen = s.armGen
	s.mu.Unlock()
	s.armed = true
	if !s.master && s.recv != nil {
		s.recv.Rearm()
	}
}

// evalWait judges the open readiness wait after the loop handled an input
// and closes its channel once the receiver reports complete.
func (s *Sync) evalWait() {
	if !s.armed {
		return
	}
	done, why := false, WaitSender
	if !s.master && s.recv != nil {
		done, why = s.recv.Complete()
		if done && s.purging {
			done, why = false, WaitPurge
		}
	}
	s.mu.Lock()
	if s.armedGen != s.armGen {
		// A Rearm the loop has not applied yet: its wake-up is pending.
		done = false
	}
	if done {
		s.armed = false
		s.waitOpen = false
		close(s.waitCh)
	}
	s.setWaitWhy(why)
	s.mu.Unlock()
	if done {
		s.log.Info("ctsync: table complete since the readiness wait began", "how", why)
	}
}

// BulkSynced reports whether the node's table is currently complete:
// always for a master, after a finished bulk with no gap left for a backup.
func (s *Sync) BulkSynced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.BulkSynced
}

// Status returns a snapshot of the counters.
func (s *Sync) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	if s.waitOpen {
		st.Waiting = s.waitWhy
	}
	st.Rejected = make(map[string]uint64)
	for r, n := range s.rejected {
		if n > 0 {
			st.Rejected[ctwire.Reason(r).String()] = n
		}
	}
	for r, n := range s.eventRejected {
		if n > 0 {
			st.Rejected["kernel event: "+ctnl.EventReason(r).String()] = n
		}
	}
	st.FromOtherMaster = map[string]uint64{}
	for t, n := range s.otherMaster {
		if n > 0 {
			st.FromOtherMaster[ctwire.Type(t).String()] = n
		}
	}
	st.StaleResyncs = map[string]uint64{}
	for o, n := range s.staleResyncs {
		if n > 0 {
			st.StaleResyncs[ctrel.StaleOutcome(o).String()] = n
		}
	}
	st.PeerProtocolVersion = s.peerVersion
	return st
}

type datagram struct {
	h ctwire.Header
	p []byte // payload, in its rxBatch's buffer
}

// rxBatch is what one recvmmsg produced: authenticated datagrams whose
// payloads live in the batch's buffers until the loop hands it back.
type rxBatch struct {
	msgs   *rawio.Batch
	dgrams []datagram
}

// Run serves until ctx ends, starting as backup unless SetRole(true) was
// called. It closes the sockets on return.
func (s *Sync) Run(ctx context.Context) error {
	defer s.closeSockets()
	s.start = time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	in := make(chan *rxBatch, rxBatches)
	free := make(chan *rxBatch, rxBatches)
	for range rxBatches {
		free <- newRxBatch(s.maxDgram + ctwire.MACLen)
	}
	s.sweepReq = make(chan sweepRequest, 1)
	chunks := make(chan *sweepChunk, sweepChunks)
	chunkFree := make(chan *sweepChunk, sweepChunks)
	for range sweepChunks {
		chunkFree <- &sweepChunk{}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.receive(ctx, in, free)
	}()
	go func() {
		defer wg.Done()
		s.sweeper(ctx, chunks, chunkFree)
	}()
	defer func() {
		cancel()
		s.raw.Close()
		wg.Wait()
		if s.lst != nil {
			s.lst.close()
			s.lst = nil
		}
	}()

	s.becomeBackup()
	select {
	case m := <-s.roleCh:
		if m {
			s.becomeMaster()
		}
	default:
	}
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	tickEvery := tickInterval
	refresh := time.NewTicker(s.cfg.Refresh)
	defer refresh.Stop()
	buf := make([]byte, 0, 65536)
	for {
		var batches <-chan *eventBatch
		var lerr <-chan error
		if s.lst != nil {
			batches, lerr = s.lst.batches, s.lst.errc
		}
		select {
		case <-ctx.Done():
			return nil
		case m := <-s.roleCh:
			s.switchRole(m)
		case <-s.armCh:
			s.onRearm()
		case b := <-in:
			s.onDatagrams(b.dgrams)
			free <- b
		case b := <-batches:
			s.onEvents(b)
			// Take what is already queued (up to 256 events) before
			// sending.
			for n := 0; n < 3; n++ {
				select {
				case b := <-batches:
					s.onEvents(b)
					continue
				default:
				}
				break
			}
		case err := <-lerr:
			s.restartListener(err)
		case <-refresh.C:
			if s.master {
				s.sweep()
			}
		case c := <-chunks:
			s.onSweepChunk(c)
			chunkFree <- c
		case <-tick.C:
			if !s.master {
				s.backupTick(buf)
			} else if s.reloadDue && !s.sweepBusy {
				s.reload()
			}
		}
		if s.master {
			buf = s.flush(buf)
		}
		if d := s.tickFor(); d != tickEvery {
			tick.Reset(d)
			tickEvery = d
		}
		s.evalWait()
		s.publish()
	}
}

// switchRole applies a SetRole in the loop.
func (s *Sync) switchRole(master bool) {
	if master && !s.master {
		s.becomeMaster()
	} else if !master && s.master {
		s.becomeBackup()
	}
}

func (s *Sync) now() time.Duration { return time.Since(s.start) }

// tickFor is the tick period the current state needs.
func (s *Sync) tickFor() time.Duration {
	switch {
	case s.master && s.sender != nil && s.sender.Pending():
		return tickInterval
	case !s.master && s.recv != nil && s.recv.Busy():
		return tickInterval
	}
	return s.idleTick()
}

// idleTick is the tick of a sync with nothing to do: half the heartbeat
// interval, so a heartbeat goes out at most 1.5 intervals after the last
// datagram (the receivers count a master gone after PeerTimeout, seconds),
// and the silent-master check runs at that pace too.
func (s *Sync) idleTick() time.Duration { return max(minIdleTick, s.cfg.Heartbeat/2) }

// newRxBatch allocates a batch whose slots hold a datagram of up to
// maxLen bytes; a longer one is truncated and rejected (ReasonLength).
func newRxBatch(maxLen int) *rxBatch {
	b := &rxBatch{msgs: rawio.NewBatch(rxBatchLen), dgrams: make([]datagram, 0, rxBatchLen)}
	for i := range rxBatchLen {
		b.msgs.Set(i, make([]byte, maxLen+1), nil)
	}
	return b
}

// receive reads datagrams in batches (recvmmsg), authenticates and parses
// them, and hands each batch to the loop: one wakeup and one channel
// send per batch, not per datagram.
func (s *Sync) receive(ctx context.Context, out, free chan *rxBatch) {
	auth := ctwire.NewAuth(s.key).WithLegacy(s.keyV1)
	for {
		var b *rxBatch
		select {
		case b = <-free:
		case <-ctx.Done():
			return
		}
		n, err := s.sock.ReadBatch(b.msgs, rxBatchLen)
		if err != nil {
			free <- b
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("ctsync: receive", "err", err)
			continue
		}
		b.dgrams = b.dgrams[:0]
		var rejected [ctwire.NumReasons]uint64
		var version uint8 // of the batch's last authentic datagram
		for i := range n {
			buf, truncated := b.msgs.Received(i)
			if truncated || len(buf) > s.maxDgram+ctwire.MACLen {
				// Longer than our MTU allows: a peer with another MTU.
				rejected[ctwire.ReasonLength]++
				continue
			}
			body, err := auth.Open(buf)
			var h ctwire.Header
			var p []byte
			if err == nil {
				h, p, err = ctwire.ParseHeader(body)
			}
			if err != nil {
				if ctwire.ReasonOf(err) == ctwire.ReasonVersion {
					// Authentic (under the version-1 key, or ours with
					// another version byte): the peer's version.
					version = buf[0]
				}
				rejected[ctwire.ReasonOf(err)]++
				continue
			}
			version = ctwire.Version
			b.dgrams = append(b.dgrams, datagram{h: h, p: p})
		}
		if version != 0 {
			s.notePeerVersion(version)
		}
		if rejected != ([ctwire.NumReasons]uint64{}) {
			s.mu.Lock()
			for r, c := range rejected {
				s.rejected[r] += c
			}
			s.mu.Unlock()
		}
		if len(b.dgrams) == 0 {
			free <- b
			continue
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Sync) send(body []byte, auth *ctwire.Auth) {
	ctrel.Sent(body, time.Now().UnixNano())
	d := auth.Seal(body)
	if err := s.sock.WriteTo(d, &s.dst); err != nil {
		s.log.Warn("ctsync: send", "err", err)
		return
	}
	s.counters.DatagramsSent++
}

// sendQueued sends the datagrams flush queued, in sendmmsg batches.
func (s *Sync) sendQueued() {
	if s.txN == 0 {
		return
	}
	n, err := s.sock.WriteBatch(s.tx, s.txN)
	s.counters.DatagramsSent += uint64(n)
	if err != nil {
		// The rest is lost on the wire as far as the backup can tell:
		// it NACKs the gap and the history repairs it.
		s.log.Warn("ctsync: send", "err", err, "unsent", s.txN-n)
	}
	s.txN = 0
}

// newEpoch starts an incarnation (a sender, or the control traffic of a
// backup period): above every epoch this node used or was told its peer
// accepted, persisted before any datagram carries it.
func (s *Sync) newEpoch() uint64 {
	e, err := s.book.next(time.Now())
	s.stateError(err)
	return e
}

// raiseOwn records that this node's epochs must exceed e; a control
// incarnation at or below it is replaced, whether the book changed or
// not: the master takes it for stale unless it follows it (a restarted
// master remembers the floor e = our control epoch, and only a fresh
// epoch proves to it we are not a replay).
func (s *Sync) raiseOwn(e uint64) {
	_, err := s.book.raiseOwn(e)
	s.stateError(err)
	if s.ctlEp != 0 && s.ctlEp <= e {
		s.ctlEp = 0
	}
}

// reserveWrap persists the epoch the sender moves to when its sequence
// numbers run out, before any datagram carries it; until it is persisted
// the sender stops at the last sequence number (retried at every flush).
func (s *Sync) reserveWrap() {
	e, ok := s.sender.EpochWanted()
	if !ok {
		return
	}
	if _, err := s.book.raiseOwn(e); err != nil {
		s.stateError(err)
		return
	}
	s.sender.Reserve(e)
}

// raisePeer persists the highest epoch accepted from the peer.
func (s *Sync) raisePeer(e uint64) {
	s.stateError(s.book.raisePeer(e))
}

// nonceError counts a nonce that could not be drawn, logged once per run
// of failures.
func (s *Sync) nonceError(err error) {
	if err == nil {
		if s.nonceFailing {
			s.nonceFailing = false
			s.log.Info("ctsync: handshake nonces can be drawn again")
		}
		return
	}
	s.counters.NonceErrors++
	if !s.nonceFailing {
		s.nonceFailing = true
		s.log.Error("ctsync: cannot draw a handshake nonce; the backup follows no new master until it can", "err", err)
	}
}

func (s *Sync) stateError(err error) {
	if err != nil {
		s.counters.StateErrors++
		s.log.Error("ctsync: persisting epochs", "err", err)
	}
}

// newReceiver is a backup period's receiver: it starts from the highest
// epoch ever accepted from the peer, and draws its nonces from
// Config.Rand.
func (s *Sync) newReceiver() *ctrel.Receiver {
	rnd := s.cfg.Rand
	if rnd == nil { // a Sync not made by New (tests)
		rnd = rand.Reader
	}
	r, err := ctrel.NewReceiver(ctrel.ReceiverConfig{Peer: ctrel.PeerConfig{Floor: s.book.peer}, Rand: rnd})
	if err != nil {
		panic("ctsync: " + err.Error()) // only for a nil Rand, excluded above
	}
	return r
}

func (s *Sync) becomeMaster() {
	s.log.Info("ctsync: master: listening and sending")
	s.master = true
	s.peer = nil
	s.recv = nil
	s.purge.Abandon()
	s.purging = false
	s.sender = ctrel.NewSender(ctrel.SenderConfig{
		Epoch: s.newEpoch(), MaxDatagram: s.maxDgram, History: s.cfg.History,
		Heartbeat: s.cfg.Heartbeat, Refresh: s.cfg.Refresh, BulkRate: s.cfg.BulkRate,
	})
	// Published at once: the status must say "sender" as soon as the role
	// changed, not once a large table has been read; and before Ready,
	// whose waiters read the status next.
	s.publish()
	s.readyOnce.Do(func() { close(s.ready) })
	s.startListener(true)
}

func (s *Sync) becomeBackup() {
	if s.lst != nil {
		s.lst.close()
		s.lst = nil
	}
	if s.master {
		s.log.Info("ctsync: backup: receiving, resync requested")
	}
	s.master = false
	s.sender = nil
	s.recv = s.newReceiver()
	// A new control incarnation, above the sender epoch the peer may have
	// just accepted from this node.
	s.ctlEp = 0
	s.inj.Forget()
}

// startListener subscribes to events, then has the sweeper read the table
// into the sender (requestDump): events are newer than the dump and win.
// Nothing table-sized runs here, on the takeover path at the loop's
// real-time priority: the dump is read at SCHED_OTHER beside the event
// stream and merged a datagram at a time. fresh (a new master): the dump
// loads the table, and no bulk is sent unasked; the peer, returning to
// backup or starting, asks for one (its receiver follows a new sender
// only after a handshake, so a bulk sent before would be ignored), and
// gets it once the load is complete. Otherwise (a restarted listener:
// events were lost) the dump reconciles the sender and a bulk follows it.
func (s *Sync) startListener(fresh bool) {
	for attempt := 0; ; attempt++ {
		l, err := startListener(s.ns, s.cfg.ReadBuffer)
		if err == nil {
			s.lst = l
			break
		}
		s.log.Error("ctsync: listener start failed", "err", err, "attempt", attempt)
		if attempt >= 50 {
			return // the next sweep or role change retries
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.loadFresh = fresh
	if fresh {
		s.sender.BeginLoad(s.now())
	} else {
		s.sender.BeginResync(s.now())
		// A bulk already running keeps going (its snapshot is taken when
		// it begins); under repeated overruns restarting it would never
		// finish. One not begun waits for the resync's dump.
		s.sender.OnResync()
	}
	s.requestDump(0)
}

// reload reads the table again after a load or resync dump failed: the
// sender keeps its bulk held until one is complete.
func (s *Sync) reload() {
	s.reloadDue = false
	if !s.master || s.sender == nil || !s.sender.Loading() {
		return
	}
	if s.sender.Sweeping() {
		return // a listener restart began another meanwhile
	}
	if s.loadFresh {
		// The entries a partial load made are overwritten or, absent
		// from the new dump, destroyed: nothing is queued twice.
		s.sender.BeginLoad(s.now())
	} else {
		s.sender.BeginResync(s.now())
	}
	s.requestDump(0)
}

// sweepRequest asks the sweeper for a dump: gen numbers it, rate is the
// flows a second it reads at (0: as fast as it can).
type sweepRequest struct {
	gen  uint64
	rate int
}

// sweepPace is the slowest a refresh sweep reads the table, in flows a
// second. A sweep read at full speed walks the kernel's conntrack hash
// (one for every namespace) in one burst every conntrack refresh: with
// 50,000 flows it delayed liveness heartbeats by 17-27 ms every few
// seconds on a 2-core machine, which held the backup's adaptive detection
// time at 5-50 ms instead of 3 (bench/README.md, 11:36 UTC). Paced, the
// same walk is spread over up to half the refresh interval; a table too
// large for that pace is read faster, so that a sweep still ends within
// half the interval.
const sweepPace = 50_000

// sweepRate is the rate of a refresh sweep of a table of flows.
func (s *Sync) sweepRate(flows int) int {
	half := (s.cfg.Refresh / 2).Seconds()
	if half <= 0 {
		return 0
	}
	return max(sweepPace, int(float64(flows)/half))
}

// requestDump has the sweeper read the table for the sender's open sweep
// at rate flows a second (0: at once); chunks of an earlier dump still
// being read are dropped (dumpGen).
func (s *Sync) requestDump(rate int) {
	s.dumpAt = time.Now()
	s.dumpGen++
	s.sweepBusy = true
	s.sweepOwner = s.sender
	select {
	case <-s.sweepReq: // not taken yet: replaced
	default:
	}
	s.sweepReq <- sweepRequest{gen: s.dumpGen, rate: rate}
}

func (s *Sync) restartListener(err error) {
	s.counters.ListenerRestarts++
	if isOverrun(err) {
		s.counters.Overruns++
	}
	s.log.Warn("ctsync: event listener ended; restarting and resyncing peer", "err", err)
	if s.lst != nil {
		s.lst.close()
		s.lst = nil
	}
	if s.master {
		s.startListener(false)
	}
}

// sweep starts a refresh sweep: the sweeper goroutine reads a table dump
// and the loop merges it chunk by chunk (onSweepChunk) between event
// batches, so that neither a large table nor an event storm stalls the
// other.
func (s *Sync) sweep() {
	if s.lst == nil {
		s.startListener(false)
		return
	}
	if s.sweepBusy {
		s.log.Debug("ctsync: refresh sweep skipped: the previous dump is still being read")
		return
	}
	s.sender.BeginSweep(s.now())
	s.requestDump(s.sweepRate(s.sender.Stats().Flows))
}

// paceUntil waits on t until due for a paced dump's next read. It
// returns early with a new request, if one comes, and false if ctx ends.
// One timer serves the whole sweep (a read every few hundred flows).
func (s *Sync) paceUntil(ctx context.Context, t *time.Timer, due time.Time) (*sweepRequest, bool) {
	wait := time.Until(due)
	if wait <= 0 {
		return nil, true
	}
	t.Reset(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil, true
	case r := <-s.sweepReq:
		return &r, true
	case <-ctx.Done():
		return nil, false
	}
}

// sweepChunk is one datagram's worth of a sweep's dump.
type sweepChunk struct {
	gen      uint64 // the dump's (requestDump)
	flows    []ctwire.Flow
	rejected [ctnl.NumEventReasons]uint64
	done     bool
	err      error
}

// sweepChunks bounds the chunks in flight: when the loop is busy the
// sweeper waits, and so does the kernel's walk.
const sweepChunks = 3

// sweeper reads a dump for each request, a chunk at a time, on a thread
// of its own set to SCHED_OTHER: the kernel's walk of the table, the
// copies and the parsing are table-sized, and at the daemon's real-time
// priority they would hold a CPU against the forwarding path (softirqs
// deferred to ksoftirqd, the firewall's own processes) at a takeover.
// The thread ends with the goroutine (it stays locked).
func (s *Sync) sweeper(ctx context.Context, out, free chan *sweepChunk) {
	runtime.LockOSThread()
	if err := timeSharing(); err != nil {
		s.log.Warn("ctsync: the table reader keeps the daemon's CPU policy", "err", err)
	}
	var next *sweepRequest // a request that arrived during a paced dump
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	for {
		var req sweepRequest
		if next != nil {
			req, next = *next, nil
		} else {
			select {
			case <-ctx.Done():
				return
			case req = <-s.sweepReq:
			}
		}
		err := s.dumper.Start()
		start, read := time.Now(), 0
		for done := false; !done; {
			if req.rate > 0 && read > 0 {
				due := start.Add(time.Duration(float64(read) / float64(req.rate) * float64(time.Second)))
				r, ok := s.paceUntil(ctx, pace, due)
				if !ok {
					return
				}
				if r != nil {
					// A takeover's load or a resync does not wait for the
					// rest of a paced dump: it is dropped, unread (its
					// chunks are stale anyway).
					s.dumper.Abandon()
					next = r
					break
				}
			}
			var c *sweepChunk
			select {
			case c = <-free:
			case <-ctx.Done():
				return
			}
			c.gen, c.flows, c.rejected, c.err = req.gen, c.flows[:0], [ctnl.NumEventReasons]uint64{}, err
			if err == nil {
				c.flows, c.done, c.err = s.dumper.Next(c.flows, &c.rejected)
				read += len(c.flows)
			}
			done = c.done || c.err != nil
			c.done = done
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
	}
}

// onSweepChunk merges one chunk into the sender that began the sweep (a
// role change, a later dump or a full reconcile since then makes it moot).
func (s *Sync) onSweepChunk(c *sweepChunk) {
	if c.rejected != ([ctnl.NumEventReasons]uint64{}) {
		s.mu.Lock()
		for r, n := range c.rejected {
			s.eventRejected[r] += n
		}
		s.mu.Unlock()
	}
	if c.gen != s.dumpGen {
		return
	}
	if c.done {
		s.sweepBusy = false
	}
	if !s.master {
		if s.purging {
			s.onPurgeChunk(c)
		}
		return
	}
	if !s.master || s.sender == nil || s.sender != s.sweepOwner {
		return
	}
	if c.err != nil {
		s.sender.AbortSweep()
		if s.sender.Loading() {
			// Held bulks wait for a complete table: read it again.
			s.reloadDue = true
		}
		s.log.Warn("ctsync: table dump failed", "err", c.err, "load", s.sender.Loading())
		return
	}
	loading := s.sender.Loading()
	fs := c.flows[:0]
	for i := range c.flows {
		if s.replicate(&c.flows[i]) {
			fs = append(fs, c.flows[i])
		}
	}
	s.sender.SweepFlows(s.now(), fs)
	if c.done {
		if s.sender.EndSweep(s.now()) && !loading {
			s.counters.Sweeps++
		}
		st := s.sender.Stats()
		if loading {
			s.log.Info("ctsync: table read", "flows", st.Flows, "queued", st.Queued, "took", time.Since(s.dumpAt).Round(time.Millisecond))
		} else {
			s.log.Debug("ctsync: refresh sweep", "flows", st.Flows, "queued", st.Queued, "refreshed", st.Refreshed)
		}
	}
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// replicate applies the filter.
func (s *Sync) replicate(f *ctwire.Flow) bool {
	ft := &s.cfg.Filter
	if len(ft.Protocols) > 0 && !slices.Contains(ft.Protocols, f.Proto) {
		return false
	}
	// From the firewall: original source is ours. To the firewall: the
	// reply comes from us (a DNAT'd flow to a VIP is forwarded, not local).
	if !ft.ReplicateLocal && (s.local[f.Orig.Src] || s.local[f.Reply.Src]) {
		return false
	}
	for _, a := range [...]netip.Addr{f.Orig.Src, f.Orig.Dst, f.Reply.Src, f.Reply.Dst} {
		if inAny(a, ft.Exclude) {
			return false
		}
	}
	if len(ft.Include) > 0 && !inAny(f.Orig.Src, ft.Include) && !inAny(f.Orig.Dst, ft.Include) {
		return false
	}
	return true
}

// onEvents feeds one listener batch to the sender and hands the batch
// back to the listener.
func (s *Sync) onEvents(b *eventBatch) {
	for i := range b.events {
		s.onEvent(b.events[i].typ, &b.events[i].f)
	}
	if b.rejected != ([ctnl.NumEventReasons]uint64{}) {
		s.mu.Lock()
		for r, n := range b.rejected {
			s.eventRejected[r] += n
		}
		s.mu.Unlock()
	}
	if s.lst != nil {
		select {
		case s.lst.free <- b:
		default: // a batch of an earlier generation
		}
	}
}

func (s *Sync) onEvent(typ ctnl.EventType, f *ctwire.Flow) {
	if !s.master || s.sender == nil || !s.replicate(f) {
		return
	}
	switch typ {
	case ctnl.EventNew, ctnl.EventUpdate:
		s.sender.Update(s.now(), f)
	case ctnl.EventDestroy:
		s.sender.Destroy(s.now(), f.Key())
	}
}

// flush sends every datagram the sender has due (at most 4096 per call,
// so that the loop still serves its other inputs during a storm), up to
// txBatchLen per sendmmsg(2).
func (s *Sync) flush(buf []byte) []byte {
	auth := s.sendAuth()
	s.reserveWrap()
	if s.txBufs == nil {
		s.txBufs = make([][]byte, txBatchLen)
		for i := range s.txBufs {
			s.txBufs[i] = make([]byte, 0, s.maxDgram+ctwire.MACLen)
		}
		s.tx = rawio.NewBatch(txBatchLen)
	}
	for i := 0; i < 4096; i++ {
		slot := s.txN
		body, ok := s.sender.Next(s.now(), s.txBufs[slot][:0])
		if !ok {
			break
		}
		ctrel.Sent(body, time.Now().UnixNano())
		d := auth.Seal(body)
		s.txBufs[slot] = d
		s.tx.Set(slot, d, &s.dst)
		s.txN++
		if s.txN == txBatchLen {
			s.sendQueued()
		}
	}
	s.sendQueued()
	return buf
}

func (s *Sync) sendAuth() *ctwire.Auth {
	if s.auth == nil {
		s.auth = ctwire.NewAuth(s.key)
	}
	return s.auth
}

// onDatagrams handles one received batch in order, the records of all its
// data datagrams going to the kernel together (applyPending).
func (s *Sync) onDatagrams(ds []datagram) {
	for i := range ds {
		s.onDatagram(&ds[i])
	}
	s.applyPending()
	switch {
	case s.master && s.peer != nil:
		s.raisePeer(s.peer.Floor())
	case !s.master && s.recv != nil:
		s.raisePeer(s.recv.Floor())
	}
}

func (s *Sync) onDatagram(d *datagram) {
	s.counters.DatagramsReceived++
	if s.master {
		s.masterControl(d)
		return
	}
	now := s.now()
	v := s.recv.OnDatagram(now, &d.h, d.p)
	if v.Err != nil { // (nil: no draw attempted; Tick reports recoveries)
		s.nonceError(v.Err)
	}
	if v.Learned != 0 {
		s.raiseOwn(v.Learned)
	}
	if v.Reason != ctwire.ReasonNone {
		s.mu.Lock()
		s.rejected[v.Reason]++
		s.mu.Unlock()
		return
	}
	if e := s.recv.Epoch(); e < s.recv.Floor() && e != s.belowFloorLogged {
		s.belowFloorLogged = e
		s.log.Warn("ctsync: following a master whose epoch is below the highest one accepted from it: the peer lost its state directory (it answered this node's nonce, so it is live); its next incarnation starts above the floor",
			"epoch", e, "floor", s.recv.Floor())
	}
	if v.BulkBegin {
		// A purge of an earlier bulk still reading the table ends here:
		// its record is replaced.
		s.purging = false
		s.purge.Begin()
	}
	if v.Apply {
		it := ctwire.NewRecords(d.p, d.h.Count)
		var f ctwire.Flow
		for it.Next(&f) {
			// Our own filter decides what our kernel holds: a flow it
			// excludes would never be purged (the purge sees only what
			// the filter selects), and a record naming one of our own
			// flows (our SSH) must not touch it.
			if !s.replicate(&f) {
				s.counters.RecordsFiltered++
				continue
			}
			s.purge.Add(&f)
			s.batch = append(s.batch, f)
			s.batchSent = append(s.batchSent, d.h.Sent)
		}
		if err := it.Err(); err != nil {
			s.mu.Lock()
			s.rejected[ctwire.ReasonOf(err)]++
			s.mu.Unlock()
		}
	}
	if v.Synced {
		// The purge dumps the kernel: what this batch carried goes first.
		s.applyPending()
		s.startPurge()
	}
}

// applyPending puts the records collected from received datagrams into the
// kernel, in order, in as few round trips as ctnl allows.
func (s *Sync) applyPending() {
	if len(s.batch) == 0 {
		return
	}
	s.applied = append(s.applied[:0], make([]bool, len(s.batch))...)
	failed, err := s.inj.ApplyBatch(s.batch, s.applied)
	if failed > 0 {
		s.counters.InjectErrors += uint64(failed)
		s.log.Debug("ctsync: inject", "failed", failed, "err", err)
	}
	s.counters.RecordsApplied += uint64(len(s.batch) - failed)
	if s.cfg.OnApplied != nil {
		for i := range s.batch {
			if s.applied[i] {
				s.cfg.OnApplied(&s.batch[i], time.Unix(0, s.batchSent[i]))
			}
		}
	}
	s.counters.Lag = time.Since(time.Unix(0, s.batchSent[len(s.batchSent)-1]))
	s.batch, s.batchSent = s.batch[:0], s.batchSent[:0]
}

// startPurge has the sweeper read the table after a completed bulk; the
// flows the bulk did not carry (ctrel.BulkPurge) ended on the master
// while we were not listening, and are deleted chunk by chunk
// (onPurgeChunk). The read is table-sized: at a maintenance hand-over it
// runs on the node that just left, beside the new master on the same
// machine in a lab and, in any case, beside the rest of this daemon.
// Readiness (Ready, the Rearm wait, BulkSynced) waits for the purge.
func (s *Sync) startPurge() {
	s.purging = true
	s.requestDump(0)
}

// onPurgeChunk deletes the stale flows of one chunk of the purge's dump.
// Records applied since the bulk ended were recorded by the purge, so a
// flow they created or changed is never taken for stale.
func (s *Sync) onPurgeChunk(c *sweepChunk) {
	if c.err != nil {
		s.purge.Abandon()
		s.log.Warn("ctsync: purge dump failed", "err", c.err)
		s.endPurge()
		return
	}
	fs := c.flows[:0]
	for i := range c.flows {
		if s.replicate(&c.flows[i]) {
			fs = append(fs, c.flows[i])
		}
	}
	fs = s.purge.StaleIn(fs)
	for i := range fs {
		f := &fs[i]
		f.Op = ctwire.OpDestroy
		if err := s.inj.Apply(f); err != nil {
			s.counters.InjectErrors++
			continue
		}
		s.counters.Purged++
	}
	if c.done {
		s.purge.End()
		s.endPurge()
	}
}

// endPurge ends the purge: the status says bulk-synced before Ready wakes
// its waiters.
func (s *Sync) endPurge() {
	s.purging = false
	s.publish()
	s.readyOnce.Do(func() { close(s.ready) })
}

func (s *Sync) masterControl(d *datagram) {
	if s.peer == nil {
		s.peer = ctrel.NewPeer(ctrel.PeerConfig{Floor: s.book.peer})
	}
	if d.h.Type != ctwire.TypeNACK && d.h.Type != ctwire.TypeResync {
		// Another master's data: split brain or a role swap in flight.
		s.mu.Lock()
		s.otherMaster[int(d.h.Type)%len(s.otherMaster)]++
		s.mu.Unlock()
		return
	}
	var hs ctwire.Handshake
	if d.h.Type == ctwire.TypeResync {
		var err error
		if hs, err = ctwire.ParseHandshake(d.p); err != nil {
			s.reject(ctwire.ReasonOf(err))
			return
		}
		// Our next epochs exceed what the peer accepted from us (a
		// replay can only repeat a value we used: raising to it is
		// harmless).
		s.raiseOwn(hs.Floor)
	}
	a := s.peer.Accept(s.now(), &d.h)
	if !a.OK {
		s.reject(a.Reason)
		if d.h.Type == ctwire.TypeResync && a.Reason == ctwire.ReasonEpochStale {
			// A requester whose state was wiped (clock behind) learns
			// from the echo where its epochs must start, and asks again
			// under a fresh epoch for its bulk; a replay gets a
			// rate-limited echo of an old nonce and no bulk.
			s.sender.OnResyncRequest(s.now(), hs, s.peer.Floor(), false)
		}
		return
	}
	switch d.h.Type {
	case ctwire.TypeResync:
		s.sender.OnResyncRequest(s.now(), hs, s.peer.Floor(), true)
	case ctwire.TypeNACK:
		for i := 0; i < int(d.h.Count); i++ {
			s.sender.OnNACK(ctwire.RangeAt(d.p, i))
		}
	}
}

func (s *Sync) backupTick(buf []byte) {
	maxRanges := (s.maxDgram - ctwire.Overhead) / ctwire.NACKRangeLen
	c := s.recv.Tick(s.now(), s.ranges[:0], maxRanges)
	s.nonceError(c.Err)
	s.ranges = c.NACK
	auth := s.sendAuth()
	if c.Resync {
		s.ctlSeq++
		h := ctwire.Header{Type: ctwire.TypeResync, Epoch: s.ctlEpoch(), Seq: s.ctlSeq}
		b := ctwire.AppendHandshake(ctwire.AppendHeader(buf[:0], &h), &c.Handshake)
		ctwire.SetPayload(b, 0)
		s.send(b, auth)
	}
	if len(c.NACK) > 0 {
		s.ctlSeq++
		h := ctwire.Header{Type: ctwire.TypeNACK, Epoch: s.ctlEpoch(), Seq: s.ctlSeq}
		b := ctwire.AppendHeader(buf[:0], &h)
		for _, r := range c.NACK {
			b = ctwire.AppendRange(b, r)
		}
		ctwire.SetPayload(b, len(c.NACK))
		s.send(b, auth)
	}
}

func (s *Sync) ctlEpoch() uint64 {
	if s.ctlEp == 0 {
		s.ctlEp = s.newEpoch()
	}
	return s.ctlEp
}

func (s *Sync) reject(r ctwire.Reason) {
	s.mu.Lock()
	s.rejected[r]++
	s.mu.Unlock()
}

// publish copies the counters into the status snapshot.
func (s *Sync) publish() {
	st := s.counters
	st.Master = s.master
	if s.master && s.sender != nil {
		ss := s.sender.Stats()
		st.BulkSynced = true
		st.Flows = ss.Flows
		st.Queued = ss.Queued
		st.Loading = s.sender.Loading()
		st.RecordsSent = ss.Records
		st.Coalesced = ss.Coalesced
		st.Refreshed = ss.Refreshed
		st.NACKsServed = ss.NACKsServed
		st.Resyncs = ss.Bulks
		st.Lag = 0
	} else if s.recv != nil {
		rs := s.recv.Stats()
		st.BulkSynced = s.recv.Synced() && !s.purging
		st.Lost = rs.Lost
		st.Repaired = rs.Repaired
		st.NACKsSent = rs.NACKsSent
		st.Resyncs = rs.BulksCompleted
		st.ResyncRequests = rs.ResyncRequests
		st.Flows = s.inj.Known()
	}
	s.handshakeStatus(&st)
	// A counter: it keeps its value while this node is master.
	st.InjectRedials = s.inj.Stats().BatchRedials
	s.mu.Lock()
	if s.master && s.sender != nil {
		s.staleResyncs = s.sender.Stats().StaleResyncs
	}
	st.Forged = s.rejected[ctwire.ReasonMAC]
	s.status = st
	s.mu.Unlock()
}

// handshakeStatus fills the handshake and epoch figures of st.
func (s *Sync) handshakeStatus(st *Status) {
	st.Handshake, st.FollowedEpoch = "", 0
	switch {
	case s.master && s.peer != nil:
		st.FollowedEpoch = s.peer.Epoch()
	case !s.master && s.recv != nil:
		st.FollowedEpoch = s.recv.Epoch()
		st.Handshake = HandshakeVerified
		if !s.recv.Verified() {
			st.Handshake = HandshakeAsking
		}
	}
	if s.book != nil {
		st.PeerFloor = s.book.peer
	}
}

// notePeerVersion records the protocol version of an authentic datagram
// from the peer and logs when it changes from or back to ours (a rolling
// upgrade: replication pauses while the versions differ). Receive
// goroutine.
func (s *Sync) notePeerVersion(v uint8) {
	s.mu.Lock()
	old := s.peerVersion
	s.peerVersion = v
	s.mu.Unlock()
	switch {
	case v == old:
	case v != ctwire.Version:
		s.log.Warn("ctsync: the peer speaks another sync protocol version: conntrack replication pauses until both nodes run the same version (README, Upgrading a pair)",
			"peer_version", v, "version", ctwire.Version)
	case old != 0:
		s.log.Info("ctsync: the peer speaks this node's sync protocol version again", "version", v)
	}
}

// syncKey is the datagram key: from the caller's stretched password, or
// stretched here (package kdf; ctwire doc, "Keys").
func syncKey(cfg Config) ([]byte, error) {
	m := cfg.Master
	if !m.Valid() {
		var err error
		if m, err = kdf.Derive(cfg.Password); err != nil {
			return nil, fmt.Errorf("ctsync: %w", err)
		}
	}
	k, err := ctwire.KeyFrom(m)
	if err != nil {
		return nil, fmt.Errorf("ctsync: %w", err)
	}
	return k, nil
}
