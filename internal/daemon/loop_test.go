package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/ctsync/ctrel"
	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/vrrpconn"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/liveness"
	"github.com/muros/muros-had/vip"
	"github.com/muros/muros-had/vrrp"
)

// The loop tests run whole daemons (Run, the event loop, the core, the
// codec, the readiness waits) under testing/synctest, with the kernel
// replaced by fakes: a simulated sync link that carries the encoded
// packets between the daemons, recording VIP managers that can be made to
// fail, and replications that report their role. They need no root.

const loopInterval = 100 * time.Millisecond

// simLink is a multicast segment: a packet written by one conn reaches
// every other conn whose node is not cut off.
type simLink struct {
	mu    sync.Mutex
	conns []*simConn
	cut   map[netip.Addr]bool // a cut node neither sends nor receives
	// quiet: packets to the node are queued without waking its loop, as
	// datagrams that arrived just before its wait returned for something
	// else (a deadline) and that the round finds queued.
	quiet map[netip.Addr]bool
}

func newSimLink() *simLink { return &simLink{cut: map[netip.Addr]bool{}, quiet: map[netip.Addr]bool{}} }

func (l *simLink) setQuiet(a netip.Addr, quiet bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.quiet[a] = quiet
}

func (l *simLink) setCut(a netip.Addr, cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut[a] = cut
}

func (l *simLink) open(src netip.Addr) *simConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &simConn{link: l, src: src, in: map[int]chan vrrpconn.Packet{
		vrrpconn.ProtoVRRP: make(chan vrrpconn.Packet, 64),
		vrrpconn.ProtoAH:   make(chan vrrpconn.Packet, 64),
	}, closed: make(chan struct{})}
	l.conns = append(l.conns, c)
	return c
}

type simConn struct {
	link      *simLink
	src       netip.Addr
	in        map[int]chan vrrpconn.Packet
	closeOnce sync.Once
	closed    chan struct{}
	// wake is the receiving loop's wait (chanWait.Watch), called for each
	// packet queued; guarded by link.mu.
	wake func()
}

func (c *simConn) Source() netip.Addr { return c.src }
func (c *simConn) Group() netip.Addr  { return netip.MustParseAddr("224.0.0.18") }

func (c *simConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *simConn) TryRead(proto int, b, _ []byte) (vrrpconn.Packet, bool, error) {
	select {
	case <-c.closed:
		return vrrpconn.Packet{}, false, net.ErrClosed
	default:
	}
	select {
	case p := <-c.in[proto]:
		n := copy(b, p.Data)
		p.Data = b[:n]
		return p, true, nil
	default:
		return vrrpconn.Packet{}, false, nil
	}
}

func (c *simConn) Write(_ context.Context, proto int, pkt []byte, dst netip.Addr) error {
	c.link.mu.Lock()
	defer c.link.mu.Unlock()
	if c.link.cut[c.src] {
		return nil
	}
	for _, r := range c.link.conns {
		if r == c || r.src == c.src || c.link.cut[r.src] {
			continue
		}
		select {
		case <-r.closed:
			continue
		default:
		}
		p := vrrpconn.Packet{Proto: proto, Src: c.src, Dst: dst, HopLimit: 255, Data: bytes.Clone(pkt)}
		select {
		case r.in[proto] <- p:
			if r.wake != nil && !c.link.quiet[r.src] {
				r.wake()
			}
		default: // a receiver that does not read loses packets, as a socket would
		}
	}
	return nil
}

// chanWait is the loop's wait in the loop tests: a channel for the wakes
// and a runtime timer for the deadline, both on testing/synctest's clock.
// Like the production wait it is level-triggered for the sockets: a
// watched conn with a datagram still queued ends the wait at once.
type chanWait struct {
	wake  chan struct{}
	timer *time.Timer
	conns []*simConn
}

func newChanWait() (loopWait, error) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &chanWait{wake: make(chan struct{}, 1), timer: t}, nil
}

func (w *chanWait) Watch(c advertConn) ([]int, error) {
	sc, ok := c.(*simConn)
	if !ok {
		return nil, fmt.Errorf("chanWait cannot watch a %T", c)
	}
	sc.link.mu.Lock()
	defer sc.link.mu.Unlock()
	sc.wake = w.Wake
	w.conns = append(w.conns, sc)
	return nil, nil // no descriptors: the loop reads every sim conn each round
}

func (w *chanWait) Arm(deadline time.Time) {
	w.timer.Stop()
	if !deadline.IsZero() {
		w.timer.Reset(time.Until(deadline))
	}
}

func (w *chanWait) Wait() ([]int, error) {
	for _, c := range w.conns {
		for _, in := range c.in {
			if len(in) > 0 {
				return nil, nil
			}
		}
	}
	select {
	case <-w.wake:
	case <-w.timer.C:
	}
	return nil, nil
}

func (w *chanWait) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *chanWait) Close() { w.timer.Stop() }

// fakeVIPs records the VIPs a node holds; claims and releases can be made
// to fail.
type fakeVIPs struct {
	mu          sync.Mutex
	held        bool
	failClaim   int
	failRelease int
	claims      int
	releases    int
}

func (v *fakeVIPs) Claim(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.claims++
	if v.failClaim > 0 {
		v.failClaim--
		return errors.New("fake: RTNETLINK answers: Device or resource busy")
	}
	v.held = true
	return nil
}

func (v *fakeVIPs) Release(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.releases++
	if v.failRelease > 0 {
		v.failRelease--
		return errors.New("fake: RTNETLINK answers: No buffer space available")
	}
	v.held = false
	return nil
}

func (v *fakeVIPs) claimCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.claims
}

func (v *fakeVIPs) Holds() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.held
}

func (v *fakeVIPs) fail(claims, releases int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.failClaim, v.failRelease = claims, releases
}

func (v *fakeVIPs) Announce(context.Context) error                      { return nil }
func (v *fakeVIPs) ReleaseStale(context.Context) ([]vip.Removed, error) { return nil, nil }
func (v *fakeVIPs) SetSchedule(vip.Schedule) error                      { return nil }
func (v *fakeVIPs) Close() error                                        { return nil }

// fakeWatcher forwards the link events a test sends.
type fakeWatcher struct{ events chan vip.LinkEvent }

func (w *fakeWatcher) Run(ctx context.Context, out chan<- vip.LinkEvent) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-w.events:
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// fakeConntrack is a conntrack replication. A readiness wait (Rearm)
// completes at once while the node is a receiver (auto), or when the test
// says a bulk completed (bulkDone).
type fakeConntrack struct {
	mu     sync.Mutex
	master bool
	auto   bool
	st     ctsync.Status
	ready  chan struct{}
	wait   chan struct{} // the open readiness wait, nil if none
	// bulked: bulkDone came with no wait open (the test ran ahead of
	// the node's first Rearm): the next wait completes at once.
	bulked  bool
	why     string
	changed chan struct{}
}

func newFakeConntrack(auto bool) *fakeConntrack {
	return &fakeConntrack{ready: make(chan struct{}), auto: auto, st: ctsync.Status{BulkSynced: true}, changed: make(chan struct{})}
}

func (c *fakeConntrack) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (c *fakeConntrack) Ready() <-chan struct{}        { return c.ready }

func (c *fakeConntrack) SetRole(master bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.master, c.st.Master = master, master
	if !master && c.auto {
		c.complete(ctrel.DoneStream)
	}
}

// Rearm starts a wait; like ctsync's, it waits while the node is master
// and is kept if still open.
func (c *fakeConntrack) Rearm() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wait == nil {
		c.wait = make(chan struct{})
	}
	ch := c.wait
	switch {
	case c.master:
		c.setWhy(ctsync.WaitSender)
	case c.auto:
		c.complete(ctrel.DoneStream)
	case c.bulked:
		c.bulked = false
		c.complete(ctrel.DoneBulk)
	default:
		c.setWhy(ctrel.WaitBulk)
	}
	return ch
}

func (c *fakeConntrack) WaitReason() (string, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.why, c.changed
}

// complete closes the open wait, if any; c.mu is held.
func (c *fakeConntrack) complete(how string) {
	if c.wait == nil {
		return
	}
	close(c.wait)
	c.wait = nil
	c.setWhy(how)
}

func (c *fakeConntrack) setWhy(why string) {
	if why != c.why {
		c.why = why
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

func (c *fakeConntrack) Master() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.master
}

func (c *fakeConntrack) Status() ctsync.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	if c.wait != nil {
		st.Waiting = c.why
	}
	return st
}

// bulkDone completes a bulk resync from the master: the current wait
// completes (the next one if none is open yet).
func (c *fakeConntrack) bulkDone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Resyncs++
	if c.wait == nil || c.master {
		c.bulked = c.wait == nil
		return
	}
	c.complete(ctrel.DoneBulk)
}

// fakeDB is a DB replication: its readiness waits are open at once (auto)
// or opened by the test.
type fakeDB struct {
	mu     sync.Mutex
	master bool
	auto   bool
	ready  chan struct{}
}

func newFakeDB(auto bool) *fakeDB {
	f := &fakeDB{ready: make(chan struct{}), auto: auto}
	if auto {
		close(f.ready)
	}
	return f
}

func (f *fakeDB) Run(ctx context.Context) error                   { <-ctx.Done(); return nil }
func (f *fakeDB) Serve(ctx context.Context, _ net.Listener) error { <-ctx.Done(); return nil }
func (f *fakeDB) Status() dbsync.Status                           { return dbsync.Status{} }

func (f *fakeDB) SetRole(master bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.master = master
}

func (f *fakeDB) Master() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.master
}

func (f *fakeDB) Ready() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *fakeDB) Rearm() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = make(chan struct{})
	if f.auto {
		close(f.ready)
	}
	return f.ready
}

// open opens the current wait: the node holds the master's content.
func (f *fakeDB) open() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.ready:
	default:
		close(f.ready)
	}
}

// loopNode is one daemon of a loop test with its fakes.
type loopNode struct {
	name  string
	addr  netip.Addr
	d     *Daemon
	vips  *fakeVIPs
	links *fakeWatcher
	ct    *fakeConntrack
	db    *fakeDB
	log   *bytes.Buffer
	logMu *sync.Mutex
	stop  context.CancelFunc
	done  chan error
	cfg   *config.Config
	dir   string // holds ha.yaml, state and run
	live  *simLiveNet
}

type loopOpts struct {
	// manualReady: the replications complete when the test says so; by
	// default they are complete soon after every entry into BACKUP.
	manualReady bool
	// live, if set, is the simulated network of the peer-liveness
	// protocol (liveness_loop_test.go); without it the protocol is off.
	live *simLiveNet
}

// loopConfig is a node of the SPEC's pair on the simulated link, with both
// replications on (their adapters are fakes), written to dir/ha.yaml.
func loopConfig(t *testing.T, dir, role string, peer netip.Addr, live bool) *config.Config {
	t.Helper()
	yaml := "role: " + role + "\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: sync0\npeer: " + peer.String() + "\n" +
		"auth: ah\nadvert_interval: 100ms\nvips:\n  - {interface: wan0, address: 203.0.113.1/24}\n  - {interface: lan0, address: 10.10.0.1/24}\n" +
		"state_dir: " + filepath.Join(dir, "state") + "\nrun_dir: " + filepath.Join(dir, "run") + "\n" +
		"metrics:\n  enabled: false\nconntrack:\n  enabled: true\ndbsync:\n  enabled: true\n"
	if !live {
		yaml += "liveness:\n  enabled: false\n"
	}
	p := filepath.Join(dir, "ha.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// syncedBuffer is a log sink shared by a daemon's goroutines.
type syncedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (b syncedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func newLoopNode(t *testing.T, link *simLink, name string, addr, peer netip.Addr, role string, o loopOpts) *loopNode {
	t.Helper()
	dir := t.TempDir()
	cfg := loopConfig(t, dir, role, peer, o.live != nil)
	n := &loopNode{live: o.live, name: name, addr: addr, vips: &fakeVIPs{}, links: &fakeWatcher{events: make(chan vip.LinkEvent, 8)},
		ct: newFakeConntrack(!o.manualReady), db: newFakeDB(!o.manualReady), log: &bytes.Buffer{}, logMu: &sync.Mutex{}, cfg: cfg, dir: dir}
	n.d = n.newDaemon(t, link)
	return n
}

// newDaemon is a daemon of n's configuration wired to n's fakes and the
// simulated link (a restart makes a new one on the same fakes).
func (n *loopNode) newDaemon(t *testing.T, link *simLink) *Daemon {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(syncedBuffer{n.logMu, n.log}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(Options{Config: n.cfg, Logger: logger, Adapters: Adapters{
		SyncLink: func(context.Context, string, vrrp.Family) (netip.Addr, int, error) { return n.addr, 4, nil },
		OpenConn: func(string, netip.Addr) (advertConn, error) { return link.open(n.addr), nil },
		Wait:     newChanWait,
		VIPs:     func(vip.Config) (vipManager, error) { return n.vips, nil },
		Watch:    func(vip.MonitorConfig) (linkWatcher, error) { return n.links, nil },
		Conntrack: func(*config.Config, *Daemon) (conntrackSync, error) {
			return n.ct, nil
		},
		DB:      func(*config.Config, *Daemon) (dbReplica, net.Listener, error) { return n.db, nil, nil },
		Surface: func(*Daemon, context.Context) (closers, error) { return nil, nil },
		Liveness: func(c *config.Config, key []byte, report func(liveness.Action)) (peerLiveness, error) {
			if n.live == nil {
				return nil, errors.New("no liveness network in this loop test")
			}
			return n.live.attach(t, n.addr, c, key, report)
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (n *loopNode) start(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	n.stop, n.done = cancel, make(chan error, 1)
	go func() { n.done <- n.d.Run(ctx) }()
}

// halt stops the node gracefully (SIGTERM) and waits for Run to return.
func (n *loopNode) halt(t *testing.T) {
	t.Helper()
	n.stop()
	if err := <-n.done; err != nil {
		t.Fatalf("%s: Run: %v", n.name, err)
	}
}

func (n *loopNode) logText() string {
	n.logMu.Lock()
	defer n.logMu.Unlock()
	return n.log.String()
}

// state is the sync group's state as the status shows it.
func (n *loopNode) state() string { return n.d.Status().State }

// check fails the test unless the node's VIPs and both replication roles
// agree with want (MASTER: VIPs held, senders; else: none, receivers).
func (n *loopNode) check(t *testing.T, want string) {
	t.Helper()
	master := want == "MASTER"
	if got := n.state(); got != want {
		t.Fatalf("%s is %s, want %s\n%s", n.name, got, want, n.logText())
	}
	if n.vips.Holds() != master || n.ct.Master() != master || n.db.Master() != master {
		t.Fatalf("%s (%s): VIPs held %v, conntrack sender %v, DB sender %v; want all %v\n%s",
			n.name, want, n.vips.Holds(), n.ct.Master(), n.db.Master(), master, n.logText())
	}
}

var (
	loopAddr1 = netip.MustParseAddr("192.168.255.1")
	loopAddr2 = netip.MustParseAddr("192.168.255.2")
)

// loopPair starts fw1 (role master) and, after a while, fw2 (backup).
func loopPair(t *testing.T, o loopOpts) (*simLink, *loopNode, *loopNode) {
	link := newSimLink()
	fw1 := newLoopNode(t, link, "fw1", loopAddr1, loopAddr2, "master", o)
	fw2 := newLoopNode(t, link, "fw2", loopAddr2, loopAddr1, "backup", o)
	return link, fw1, fw2
}

// settle lets virtual time pass with every goroutine blocked in between.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestLoopElection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER") // alone: takes over after Master_Down_Interval
		fw1.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER") // preempts (priority 150 > 100)
		fw2.check(t, "BACKUP")
		fw1.halt(t)
		fw2.halt(t)
	})
}

func TestLoopCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, fw1, fw2 := loopPair(t, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		// A crash: fw1 falls silent (its priority 0 never arrives).
		link.setCut(loopAddr1, true)
		crashed := time.Now()
		fw1.halt(t)
		for fw2.state() != "MASTER" {
			settle(10 * time.Millisecond)
		}
		// Master_Down_Interval = 3 x 100 ms + Skew_Time (100 ms x 156/256).
		if took, max := time.Since(crashed), 3*loopInterval+loopInterval*156/256+loopInterval; took > max {
			t.Errorf("fw2 took over %v after the crash, more than Master_Down_Interval + one interval (%v)", took, max)
		}
		fw2.check(t, "MASTER")
		fw2.halt(t)
	})
}

func TestLoopGracefulStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		stopped := time.Now()
		fw1.halt(t)
		if fw1.vips.Holds() {
			t.Fatal("fw1 stopped with its VIPs")
		}
		for fw2.state() != "MASTER" {
			settle(10 * time.Millisecond)
		}
		// Priority 0: the backup takes over after Skew_Time, not
		// Master_Down_Interval.
		if took, max := time.Since(stopped), loopInterval; took > max {
			t.Errorf("fw2 took over %v after the graceful stop; Skew_Time is %v", took, loopInterval*156/256)
		}
		fw2.check(t, "MASTER")
		fw2.halt(t)
	})
}

// TestLoopLeftRunsOnFinalStopOnly: Options.Left (where the command lowers
// the process's CPU priority) runs once a final stop has released the
// VIPs, and not at an in-process restart, whose next instance keeps the
// priority it cannot regain (the unit's RestrictRealtime=).
func TestLoopLeftRunsOnFinalStopOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, fw1, fw2 := loopPair(t, loopOpts{})
		var calls []string
		left := func() {
			calls = append(calls, fmt.Sprintf("holds=%v releases=%d", fw1.vips.Holds(), fw1.vips.releases))
		}
		fw1.d.opts.Left = left
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")

		// A reload that changes the advert interval restarts the instances.
		b, err := os.ReadFile(filepath.Join(fw1.dir, "ha.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(fw1.dir, "ha2.yaml")
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), "advert_interval: 100ms", "advert_interval: 200ms", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		fw1.d.opts.Reload = func() (*config.Config, error) { return config.Load(p) }
		fw1.d.Trigger()
		settle(100 * time.Millisecond)
		if err := <-fw1.done; !errors.Is(err, ErrRestart) {
			t.Fatalf("Run after a reload changing advert_interval: %v, want ErrRestart", err)
		}
		if calls != nil {
			t.Fatalf("Left ran at an in-process restart: %v", calls)
		}

		fw1.cfg = fw1.d.NextConfig()
		fw1.d = fw1.newDaemon(t, link)
		fw1.d.opts.Left = left
		fw1.start(t)
		settle(2 * time.Second)
		fw1.halt(t)
		// The final stop released once more than the restart did, before Left.
		if want := fmt.Sprintf("holds=false releases=%d", fw1.vips.releases); len(calls) != 1 || calls[0] != want {
			t.Errorf("Left at the final stop: %q, want once with %q", calls, want)
		}
		fw2.halt(t)
	})
}

// TestLoopStopDuringStretch: a stop while the password is being
// stretched (the first start, or a restart with a new password) is a
// graceful stop, Run returns nil, and the watchdog was pinged before the
// stretch (an in-process restart is already under it).
func TestLoopStopDuringStretch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, _ := loopPair(t, loopOpts{})
		var mu sync.Mutex
		var notes []string
		stretched := false
		fw1.d.opts.WatchdogInterval = time.Second
		fw1.d.opts.Notify = func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() }
		fw1.d.opts.Stretch = func(ctx context.Context, _ string) (kdf.Master, error) {
			mu.Lock()
			stretched = true
			mu.Unlock()
			<-ctx.Done()
			return kdf.Master{}, ctx.Err()
		}
		fw1.start(t)
		settle(100 * time.Millisecond)
		fw1.halt(t) // fails the test unless Run returned nil
		mu.Lock()
		defer mu.Unlock()
		if !stretched {
			t.Fatal("the stretch never ran: the test's premise")
		}
		if len(notes) == 0 || notes[0] != "WATCHDOG=1" {
			t.Errorf("sd_notify %q, want WATCHDOG=1 before the stretch", notes)
		}
		if slices.Contains(notes, "READY=1") || fw1.vips.Holds() {
			t.Errorf("stopped during the stretch: notes %q, holds VIPs %v; want neither READY=1 nor VIPs", notes, fw1.vips.Holds())
		}
	})
}

// TestLoopClaimFailureThenStepDown is the first replication-role bug of
// the decision-core issue, through the whole loop: fw2's claim fails (its
// replications are senders already), fw1 preempts before the retry, and
// fw2 must end BACKUP with receiver replications and no VIPs.
func TestLoopClaimFailureThenStepDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw2.vips.fail(1000, 0) // every claim fails
		fw2.start(t)
		settle(500 * time.Millisecond)
		if got := fw2.state(); got != "MASTER" || fw2.vips.Holds() {
			t.Fatalf("fw2: %s, holds %v; want MASTER without VIPs (claim failing)", got, fw2.vips.Holds())
		}
		fw1.start(t)
		settle(600 * time.Millisecond) // fw1 preempts before fw2's retry (1 s)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		fw2.vips.fail(0, 0)
		settle(3 * time.Second) // no retry of the stale claim
		fw2.check(t, "BACKUP")
		if !strings.Contains(fw2.logText(), "VIP claim failed") {
			t.Errorf("the failed claim was not logged:\n%s", fw2.logText())
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopReleaseFailureThenRepromotion is the reverse: fw2's release
// fails as fw1 preempts, fw1 leaves before the retry, and fw2 must be
// MASTER with sender replications.
func TestLoopReleaseFailureThenRepromotion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		fw2.vips.fail(0, 1)
		fw1.start(t)
		for fw2.state() != "BACKUP" {
			settle(10 * time.Millisecond)
		}
		if !fw2.vips.Holds() || fw2.ct.Master() {
			t.Fatalf("after the failed release: VIPs held %v, conntrack sender %v; want held (the release failed), receiver", fw2.vips.Holds(), fw2.ct.Master())
		}
		fw1.halt(t) // priority 0: fw2 takes over after Skew_Time, before its retry
		settle(200 * time.Millisecond)
		fw2.check(t, "MASTER")
		settle(3 * time.Second) // the stale retry does not release
		fw2.check(t, "MASTER")
		fw2.halt(t)
	})
}

func TestLoopFaultAndBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.links.events <- vip.LinkEvent{Interface: "lan0", Exists: true, Up: false, Index: 7}
		settle(200 * time.Millisecond)
		fw1.check(t, "FAULT")
		fw2.check(t, "MASTER") // fw1 sent priority 0 on its way to FAULT
		fw1.links.events <- vip.LinkEvent{Interface: "lan0", Exists: true, Up: true, Index: 7}
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopReloadRoleSwap: a reload that only swaps the roles changes the
// priorities in place, and the new master takes over by preemption, not
// by a restart (no INIT in between).
func TestLoopReloadRoleSwap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		// The operator swaps the roles in both files, as the /ha form
		// would, then SIGHUPs both.
		fw1.d.opts.Reload = func() (*config.Config, error) { return loopConfig(t, fw1.dir, "backup", loopAddr2, false), nil }
		fw2.d.opts.Reload = func() (*config.Config, error) { return loopConfig(t, fw2.dir, "master", loopAddr1, false), nil }
		fw1.d.Trigger()
		fw2.d.Trigger()
		settle(2 * time.Second)
		fw2.check(t, "MASTER")
		fw1.check(t, "BACKUP")
		for _, n := range []*loopNode{fw1, fw2} {
			if strings.Contains(n.logText(), "to=INIT") {
				t.Errorf("%s restarted its instances on a role swap:\n%s", n.name, n.logText())
			}
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopReadinessHold: with both replications on, a returning master
// does not preempt until both are complete; each replication lifts only
// its part.
func TestLoopReadinessHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{manualReady: true})
		fw2.db.open() // alone: it holds the newest content
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		fw1.start(t)
		settle(time.Second)
		fw1.check(t, "BACKUP") // held: nothing complete yet
		fw1.ct.bulkDone()
		settle(time.Second)
		fw1.check(t, "BACKUP") // held: the DB is not
		if r := fw1.d.Status().Readiness; r == nil || !r.Held {
			t.Fatalf("fw1's readiness %+v, want held", r)
		}
		fw1.db.open()
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		// fw2's return to BACKUP re-armed its hold: a new wait.
		if r := fw2.d.Status().Readiness; r == nil || !r.Held || r.Reason != "stepped down from MASTER" {
			t.Errorf("fw2's readiness after stepping down: %+v", r)
		}
		if n := strings.Count(fw1.logText(), "replication ready: preemption allowed"); n != 1 {
			t.Errorf("fw1 lifted its hold %d times, want once\n%s", n, fw1.logText())
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// The startup timeout lifts a hold that waits for conntrack only (the DB
// sync is complete): a node that cannot get the master's flows must not
// block its own election forever.
func TestLoopStartupTimeoutLiftsHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{manualReady: true})
		fw2.db.open()
		fw2.start(t)
		settle(time.Second)
		fw1.start(t)
		fw1.db.open()
		settle(fw1.cfg.Conntrack.Resync.StartupTimeout - time.Second)
		fw1.check(t, "BACKUP")
		settle(2 * time.Second)
		fw1.check(t, "MASTER") // the timeout lifted the hold: it preempted
		if !strings.Contains(fw1.logText(), "replication not complete within the startup timeout") {
			t.Errorf("the timeout is not in the log:\n%s", fw1.logText())
		}
		if n := metricValue(t, fw1.d.stats, "muros_had_preemption_hold_timeouts_total"); n != 1 {
			t.Errorf("hold timeouts counted %v, want 1", n)
		}
		fw1.halt(t)
		fw2.halt(t)
		if !strings.Contains(fw1.logText(), fmt.Sprintf("timeout=%v", fw1.cfg.Conntrack.Resync.StartupTimeout)) {
			t.Errorf("the timeout is not in the log:\n%s", fw1.logText())
		}
	})
}

// The startup timeout never lifts a hold whose DB sync is incomplete: the
// master is alive (its adverts are heard) and may hold newer content. The
// hold lasts until the DB sync completes.
func TestLoopStartupTimeoutKeepsDBHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{manualReady: true})
		fw2.db.open()
		fw2.start(t)
		settle(time.Second)
		fw1.start(t)
		fw1.ct.bulkDone()
		settle(3 * fw1.cfg.Conntrack.Resync.StartupTimeout)
		fw1.check(t, "BACKUP")
		if r := fw1.d.Status().Readiness; r == nil || !r.Held || len(r.Waiting) != 1 || !strings.Contains(r.Waiting[0], "held past the startup timeout") {
			t.Fatalf("fw1's readiness %+v, want held past the startup timeout", r)
		}
		fw1.db.open()
		settle(time.Second)
		fw1.check(t, "MASTER")
		if n := metricValue(t, fw1.d.stats, "muros_had_preemption_hold_timeouts_total"); n != 0 {
			t.Errorf("hold timeouts counted %v, want 0: the hold ended complete", n)
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}
