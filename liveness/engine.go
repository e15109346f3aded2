package liveness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/muros/muros-had/pollset"
	"github.com/muros/muros-had/rawio"
	"golang.org/x/sys/unix"
)

// Engine runs a Monitor on the two paths' sockets. One goroutine does
// everything, and it costs one thread wakeup per message or deadline: the
// two sockets, the inputs from other goroutines and the Monitor's next
// deadline (to the nanosecond: the runtime's own timers round to the
// millisecond) are one pollset.Set, so the engine's goroutine parks
// without a blocking system call and the thread that polls the network
// runs it when anything is ready. Every call it makes then is
// non-blocking and raw (no runtime syscall entry, which wakes the
// runtime's sysmon thread: measured 2,500 wakeups/s per node when the
// engine slept in a blocking ppoll).
type Engine struct {
	cfg EngineConfig

	syncFD, peerFD   int
	syncDst, peerDst rawio.Sockaddr
	// wait holds the sockets, the wake-ups of post and the deadline
	// (Run parks on it).
	wait *pollset.Set

	mu      sync.Mutex
	pending []Event
	snap    Snapshot
	closed  bool
	left    chan struct{} // closed when a Leave has been sent

	// Owned by the engine's goroutine.
	mon   *Monitor
	codec *Codec
	acts  []Action
	buf   []byte
	// rxBuf receives every datagram: a buffer on receive's stack would
	// escape (the MAC reads it through an interface) and cost an
	// allocation per message. Nothing keeps a reference to it (Message
	// copies its fields).
	rxBuf [Size + 1]byte
	// rx is the traffic counter of a node with a quiet period (nil:
	// none); rxLast its last reading, peerReads the datagrams read from
	// the peer path's socket and peerReadsAt their count at that reading.
	rx                             *RxCounter
	rxLast, peerReads, peerReadsAt uint64
	rxKnown                        bool
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	Monitor Config
	// Key is the HMAC key (KeyLen bytes, kdf label KeyLabel).
	Key []byte
	// SyncInterface, Group and Port: the sync link path.
	SyncInterface string
	Group         netip.Addr
	Port          uint16
	// PeerAddress is the second path's destination (invalid: none).
	PeerAddress netip.Addr
	// TrafficInterfaces are the interfaces whose received packets say
	// that the node forwards traffic (the VIP interfaces), for the quiet
	// period (Monitor.Quiet). A node that cannot read them is never quiet
	// (Snapshot.QuietOff says why).
	TrafficInterfaces []string
	// OnVerdict and OnPath are called on the engine's goroutine when the
	// verdict or a path alarm changes; they must not block.
	OnVerdict func(Action)
	OnPath    func(Action)
}

// Snapshot is the engine's state for the status.
type Snapshot struct {
	Verdict  Verdict
	PeerRole Role
	// Paths by name ("sync", "peer"): whether each is down, and when it
	// last brought a message.
	Paths   []PathSnapshot
	Carrier bool
	// Drops counts refused messages by reason; Sent and Received count
	// messages by path.
	Drops    map[Reason]uint64
	Sent     map[Path]uint64
	Received map[Path]uint64
	// Negotiated says the peer has spoken the protocol.
	Negotiated bool
	// Detect is the detection time in force (Monitor.Detect): the
	// configured floor, or more after the peer's heartbeats arrived late.
	Detect time.Duration
	// Stalls counts the times this node itself ran too late to judge a
	// probe (Monitor.Stalls).
	Stalls uint64
	// Confirms counts the confirmations asked (Monitor.Confirms).
	Confirms uint64
	// Quiet says the node is a master heartbeating at the quiet period
	// (it forwards nothing); QuietOff why it never does (empty: it can);
	// TrafficErrors counts the traffic counter's failed reads (each one
	// brings the fast heartbeats back).
	Quiet         bool
	QuietOff      string
	TrafficErrors uint64
	// PeerInterval is the heartbeat period the peer announces on the
	// sync link (its quiet one while it forwards nothing).
	PeerInterval time.Duration
}

// PathSnapshot is one path in a Snapshot.
type PathSnapshot struct {
	Path      Path
	Down      bool
	LastHeard time.Time
}

// NewEngine opens the sockets. Call Run, then Close.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	cfg.Monitor.PeerPath = cfg.PeerAddress.IsValid()
	var rx *RxCounter
	quietOff := ""
	if cfg.Monitor.Quiet > 0 {
		var err error
		if rx, err = OpenRxCounter(cfg.TrafficInterfaces); err != nil {
			cfg.Monitor.Quiet, quietOff = 0, err.Error()
		}
	}
	mon, err := NewMonitor(cfg.Monitor)
	if err != nil {
		if rx != nil {
			rx.Close()
		}
		return nil, err
	}
	codec, err := NewCodec(cfg.Key)
	if err != nil {
		if rx != nil {
			rx.Close()
		}
		return nil, err
	}
	e := &Engine{cfg: cfg, mon: mon, codec: codec, syncFD: -1, peerFD: -1,
		buf: make([]byte, 0, Size+64), left: make(chan struct{})}
	e.rx = rx
	e.snap = Snapshot{Carrier: true, Drops: map[Reason]uint64{}, Sent: map[Path]uint64{}, Received: map[Path]uint64{}, QuietOff: quietOff}
	if err := e.open(); err != nil {
		e.closeFDs()
		return nil, err
	}
	return e, nil
}

func (e *Engine) open() error {
	ifi, err := net.InterfaceByName(e.cfg.SyncInterface)
	if err != nil {
		return fmt.Errorf("liveness: sync interface: %w", err)
	}
	if e.syncFD, e.syncDst, err = openSync(ifi, e.cfg.Group, e.cfg.Port); err != nil {
		return err
	}
	if e.cfg.PeerAddress.IsValid() {
		if e.peerFD, e.peerDst, err = openPeer(e.cfg.PeerAddress, e.cfg.Port); err != nil {
			return err
		}
	}
	if e.wait, err = pollset.New(); err != nil {
		return fmt.Errorf("liveness: %w", err)
	}
	for _, fd := range []int{e.syncFD, e.peerFD} {
		if fd < 0 {
			continue
		}
		if err := e.wait.Add(fd); err != nil {
			return fmt.Errorf("liveness: %w", err)
		}
	}
	return nil
}

func sockaddr(a netip.Addr, port uint16, zone int) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(port), Addr: a.As16(), ZoneId: uint32(zone)}
}

// openSync opens the sync link's socket: bound to the group and port on
// the sync interface, joined, TTL 1, no loopback, DSCP CS6 (network
// control, as VRRP).
func openSync(ifi *net.Interface, group netip.Addr, port uint16) (int, rawio.Sockaddr, error) {
	fail := func(fd int, what string, err error) (int, rawio.Sockaddr, error) {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, rawio.Sockaddr{}, fmt.Errorf("liveness: sync socket on %s: %s: %w", ifi.Name, what, err)
	}
	fam := unix.AF_INET
	if group.Is6() {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fail(-1, "socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail(fd, "SO_REUSEADDR", err)
	}
	if err := unix.BindToDevice(fd, ifi.Name); err != nil {
		return fail(fd, "SO_BINDTODEVICE", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PRIORITY, 6); err != nil {
		return fail(fd, "SO_PRIORITY", err)
	}
	if fam == unix.AF_INET {
		if err := unix.Bind(fd, sockaddr(group, port, 0)); err != nil {
			return fail(fd, "bind", err)
		}
		mreq := &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(ifi.Index)}
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
			return fail(fd, "IP_ADD_MEMBERSHIP", err)
		}
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)}); err != nil {
			return fail(fd, "IP_MULTICAST_IF", err)
		}
		for _, o := range []struct {
			name string
			opt  int
			v    int
		}{{"IP_MULTICAST_TTL", unix.IP_MULTICAST_TTL, 1}, {"IP_MULTICAST_LOOP", unix.IP_MULTICAST_LOOP, 0}, {"IP_TOS", unix.IP_TOS, 0xc0}, {"IP_MULTICAST_ALL", unix.IP_MULTICAST_ALL, 0}} {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, o.opt, o.v); err != nil {
				return fail(fd, o.name, err)
			}
		}
		return fd, rawio.SockaddrOf(group, port, 0), nil
	}
	if err := unix.Bind(fd, sockaddr(group, port, ifi.Index)); err != nil {
		return fail(fd, "bind", err)
	}
	mreq := &unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(ifi.Index)}
	if err := unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq); err != nil {
		return fail(fd, "IPV6_JOIN_GROUP", err)
	}
	for _, o := range []struct {
		name string
		opt  int
		v    int
	}{{"IPV6_MULTICAST_IF", unix.IPV6_MULTICAST_IF, ifi.Index}, {"IPV6_MULTICAST_HOPS", unix.IPV6_MULTICAST_HOPS, 1}, {"IPV6_MULTICAST_LOOP", unix.IPV6_MULTICAST_LOOP, 0}, {"IPV6_TCLASS", unix.IPV6_TCLASS, 0xc0}, {"IPV6_MULTICAST_ALL", unix.IPV6_MULTICAST_ALL, 0}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o.opt, o.v); err != nil {
			return fail(fd, o.name, err)
		}
	}
	return fd, rawio.SockaddrOf(group, port, ifi.Index), nil
}

// openPeer opens the second path's socket: the port on every address (the
// route decides the way out), groups joined elsewhere not delivered.
func openPeer(peer netip.Addr, port uint16) (int, rawio.Sockaddr, error) {
	fail := func(fd int, what string, err error) (int, rawio.Sockaddr, error) {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, rawio.Sockaddr{}, fmt.Errorf("liveness: peer path socket: %s: %w", what, err)
	}
	fam, level, all, tos := unix.AF_INET, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, unix.IP_TOS
	var local unix.Sockaddr = &unix.SockaddrInet4{Port: int(port)}
	if peer.Is6() {
		fam, level, all, tos = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, unix.IPV6_TCLASS
		local = &unix.SockaddrInet6{Port: int(port)}
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fail(-1, "socket", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail(fd, "SO_REUSEADDR", err)
	}
	if peer.Is6() {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail(fd, "IPV6_V6ONLY", err)
		}
	}
	if err := unix.SetsockoptInt(fd, level, all, 0); err != nil {
		return fail(fd, "MULTICAST_ALL", err)
	}
	if err := unix.SetsockoptInt(fd, level, tos, 0xc0); err != nil {
		return fail(fd, "TOS", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PRIORITY, 6); err != nil {
		return fail(fd, "SO_PRIORITY", err)
	}
	if err := unix.Bind(fd, local); err != nil {
		return fail(fd, "bind", err)
	}
	return fd, rawio.SockaddrOf(peer, port, 0), nil
}

// Close closes the sockets. Run returns when Close is called.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if e.wait != nil {
		e.wait.Stop()
	}
	return nil
}

// closeFDs closes every descriptor: the set first, which holds the
// sockets and is closed under its own lock against a late wake-up.
func (e *Engine) closeFDs() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	if e.wait != nil {
		e.wait.Close()
	}
	if e.rx != nil {
		e.rx.Close()
	}
	for _, fd := range []*int{&e.syncFD, &e.peerFD} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// post queues an event for the engine's goroutine.
func (e *Engine) post(ev Event) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.pending = append(e.pending, ev)
	e.mu.Unlock()
	e.wait.Wake()
}

// SetRole reports the node's role and priority (sent with every message;
// a master heartbeats fast).
func (e *Engine) SetRole(r Role, prio uint8) {
	e.post(Event{Kind: EventRole, Role: r, Priority: prio})
}

// SetCarrier reports the sync link's carrier.
func (e *Engine) SetCarrier(up bool) { e.post(Event{Kind: EventCarrier, Up: up}) }

// Confirm asks whether the peer is still alive: until it speaks again it
// is watched as a fast master (EventConfirm).
func (e *Engine) Confirm() { e.post(Event{Kind: EventConfirm}) }

// Leave sends LEAVING on every path and stops heartbeating; it waits until
// the messages are out or timeout passes.
func (e *Engine) Leave(timeout time.Duration) {
	e.post(Event{Kind: EventLeave})
	select {
	case <-e.left:
	case <-time.After(timeout):
	}
}

// Snapshot returns the state for the status.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap
	s.Paths = append([]PathSnapshot(nil), e.snap.Paths...)
	s.Drops = make(map[Reason]uint64, len(e.snap.Drops))
	for k, v := range e.snap.Drops {
		s.Drops[k] = v
	}
	s.Sent = map[Path]uint64{PathSync: e.snap.Sent[PathSync], PathPeer: e.snap.Sent[PathPeer]}
	s.Received = map[Path]uint64{PathSync: e.snap.Received[PathSync], PathPeer: e.snap.Received[PathPeer]}
	return s
}

// Run runs the engine until ctx ends or Close is called, then closes the
// sockets.
func (e *Engine) Run(ctx context.Context) error {
	defer e.closeFDs()
	stop := context.AfterFunc(ctx, func() { e.Close() })
	defer stop()
	e.step(Event{Kind: EventTick, Now: time.Now()})
	for {
		e.wait.Arm(e.mon.NextDeadline())
		r, err := e.wait.Wait()
		if errors.Is(err, pollset.ErrStopped) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("liveness: %w", err)
		}
		now := time.Now()
		if r.Woken {
			e.mu.Lock()
			evs := e.pending
			e.pending = nil
			e.mu.Unlock()
			for _, ev := range evs {
				ev.Now = now
				e.step(ev)
			}
		}
		for _, fd := range r.FDs {
			switch fd {
			case e.syncFD:
				e.receive(e.syncFD, PathSync, now)
			case e.peerFD:
				e.receive(e.peerFD, PathPeer, now)
			}
		}
		if e.rx != nil && e.mon.TrafficDue(now) {
			n, ok := e.readTraffic()
			e.step(Event{Kind: EventTraffic, Now: now, Packets: n, Unreadable: !ok})
		}
		if dl := e.mon.NextDeadline(); !dl.IsZero() && !now.Before(dl) {
			e.step(Event{Kind: EventTick, Now: now})
		}
	}
}

// readTraffic reads the traffic counter and returns the packets received
// since the last reading that were not the peer's own messages; false if
// it could not read it.
func (e *Engine) readTraffic() (uint64, bool) {
	n, err := e.rx.Read()
	if err != nil {
		e.mu.Lock()
		e.snap.TrafficErrors++
		e.mu.Unlock()
		e.rxKnown = false
		return 0, false
	}
	var seen uint64
	if e.rxKnown {
		seen = trafficSince(e.rxLast, n, e.peerReads-e.peerReadsAt)
	}
	e.rxLast, e.peerReadsAt, e.rxKnown = n, e.peerReads, true
	return seen, true
}

// receive reads one datagram from fd: the epoll set is level-triggered,
// so a second one waiting makes the next wait return at once, and the
// common case (one) costs no recvfrom(2) that answers EAGAIN. It calls
// recvfrom itself, raw: x/sys/unix's Recvfrom goes through the runtime's
// syscall entry and converts the source address with an extra
// getsockopt(2) per datagram, and the sync path needs no source at all.
func (e *Engine) receive(fd int, p Path, now time.Time) {
	b := &e.rxBuf
	var from unix.RawSockaddrAny
	fromLen := uint32(unix.SizeofSockaddrAny)
	// The pointer conversions stay inside the call expressions: a
	// uintptr computed before the call does not follow a moved stack.
	var r uintptr
	var errno unix.Errno
	if p == PathPeer {
		r, _, errno = unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&from)), uintptr(unsafe.Pointer(&fromLen)))
	} else {
		r, _, errno = unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	}
	if errno != 0 {
		return // EAGAIN (errors on a UDP socket are transient)
	}
	n := int(r)
	if p == PathPeer {
		e.peerReads++
		if !e.fromPeer(&from) {
			e.count(ReasonSource)
			return
		}
	}
	msg, err := e.codec.Parse(b[:n])
	if err != nil {
		e.count(ReasonOf(err))
		return
	}
	e.mu.Lock()
	e.snap.Received[p]++
	e.mu.Unlock()
	e.step(Event{Kind: EventReceive, Now: now, Path: p, Message: msg})
}

func (e *Engine) fromPeer(from *unix.RawSockaddrAny) bool {
	switch from.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(from))
		return netip.AddrFrom4(a.Addr) == e.cfg.PeerAddress
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(from))
		return netip.AddrFrom16(a.Addr).Unmap() == e.cfg.PeerAddress.Unmap()
	}
	return false
}

func (e *Engine) count(r Reason) {
	e.mu.Lock()
	e.snap.Drops[r]++
	e.mu.Unlock()
}

// step runs one event through the monitor and carries out its actions.
func (e *Engine) step(ev Event) {
	e.acts = e.mon.Step(ev, e.acts[:0])
	for _, a := range e.acts {
		switch a.Kind {
		case ActionSend:
			e.send(a)
		case ActionVerdict:
			if e.cfg.OnVerdict != nil {
				e.cfg.OnVerdict(a)
			}
		case ActionPath:
			if e.cfg.OnPath != nil {
				e.cfg.OnPath(a)
			}
		case ActionDrop:
			e.count(a.Drop)
		}
	}
	if ev.Kind == EventLeave {
		select {
		case <-e.left:
		default:
			close(e.left)
		}
	}
	e.mu.Lock()
	e.snap.Verdict, e.snap.PeerRole, e.snap.Carrier = e.mon.Verdict(), e.mon.PeerRole(), e.mon.carrier
	e.snap.Negotiated = e.mon.peerEpoch != 0
	e.snap.Detect = e.mon.Detect(ev.Now)
	e.snap.Stalls = e.mon.Stalls()
	e.snap.Confirms = e.mon.Confirms()
	e.snap.Quiet = e.mon.Quiet(ev.Now)
	e.snap.PeerInterval = e.mon.PeerInterval()
	e.snap.Paths = e.snap.Paths[:0]
	for p := Path(1); p <= NumPaths; p++ {
		if p == PathPeer && !e.cfg.PeerAddress.IsValid() {
			continue
		}
		e.snap.Paths = append(e.snap.Paths, PathSnapshot{Path: p, Down: e.mon.PathDown(p), LastHeard: e.mon.LastHeard(p)})
	}
	e.mu.Unlock()
}

func (e *Engine) send(a Action) {
	fd, dst := e.syncFD, &e.syncDst
	if a.Path == PathPeer {
		fd, dst = e.peerFD, &e.peerDst
	}
	if fd < 0 {
		return
	}
	e.buf = e.codec.Append(e.buf[:0], a.Message)
	// A send that fails (no carrier, no route) is a silent path: the
	// monitor learns it from the peer's silence, not from here.
	errno := rawio.SendTo(uintptr(fd), e.buf, dst)
	if errno == 0 {
		e.mu.Lock()
		e.snap.Sent[a.Path]++
		e.mu.Unlock()
	}
}
