// Package daemon is the imperative shell of muros-had: it feeds the node's
// decision core (package node) with events from raw sockets
// (internal/vrrpconn), the link monitor and the virtual IPs (package vip),
// timers, the replications' readiness and reloads, and executes the
// actions the core returns through small adapters (adapters.go). It
// reports into the cluster status (package status) and the peer view
// (package peerview); package replicas builds the replications it drives.
//
// One goroutine, the event loop, owns the core. Everything else (socket
// readers, timers, the link monitor, readiness waits, reload requests)
// sends events to it over channels. The shell decides nothing: which
// advert counts, when to take over, what role the node has and when to
// retry a failed one are the core's.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/nodecfg"
	"github.com/muros/muros-had/internal/peerview"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/internal/vrrpconn"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/liveness"
	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vip"
	"github.com/muros/muros-had/vrrp"
)

// Options configure a Daemon.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	// Notify is called with sd_notify(3) states ("READY=1", "WATCHDOG=1",
	// "STOPPING=1", "RELOADING=1"); nil means no service manager.
	Notify func(state string)
	// WatchdogInterval is how often to send WATCHDOG=1 (0: never).
	WatchdogInterval time.Duration
	// Reload returns the configuration to switch to on SIGHUP.
	Reload func() (*config.Config, error)
	// Scheduling says what CPU scheduling the process runs with (set by
	// the caller before New; shown in the status).
	Scheduling string
	// ApplyScheduling, if set, applies a reloaded scheduling: and returns
	// the outcome for the status.
	ApplyScheduling func(config.Scheduling) string
	// Left, if set, runs once a final stop (ctx done, or the loop failed)
	// has left the pair: LEAVING sent (or its 20 ms bound passed), the
	// priority 0 adverts sent, the stop hooks run and the VIPs released.
	// What follows is teardown that no one waits for; the command lowers
	// the process's CPU priority here (an in-process restart keeps it).
	Left func()
	// Stretch, if set, turns the password into the master secret every
	// key is expanded from (kdf.Derive's result); ctx is Run's. The
	// command stretches in a time-sharing child process and keeps the
	// result across in-process restarts; nil is DeriveHere, at the
	// daemon's own priority.
	Stretch func(ctx context.Context, password string) (kdf.Master, error)
	// Adapters reach the kernel and the peer; nil fields take the real
	// ones (tests replace them to run the loop without root).
	Adapters Adapters
}

// Daemon is one node of the pair.
type Daemon struct {
	opts Options
	log  *slog.Logger
	cfg  *config.Config

	status *status.Book
	stats  *status.Metrics
	// peers is the peer view and its alarms: the loop reports adverts and
	// state changes, the peer checks the rest.
	peers *peerview.Monitor
	// surface is the status and metrics listeners with the peer checks
	// (restarted in place by a reload, under bg).
	surface closers
	// rulesetKick asks the ruleset check for a fingerprint now (a reload).
	rulesetKick chan struct{}

	// Set up by Run; owned by the event loop.
	ad      Adapters
	core    *node.Core
	links   map[vrrp.Family]*familyLink
	vips    vipManager
	ct      conntrackSync // nil when conntrack sync is off
	lv      peerLiveness  // nil when the liveness protocol is off
	lvState livenessState // owned by the loop
	// lvMu guards the copies of the liveness alarm and warning the status
	// reads off the loop.
	lvMu     sync.Mutex
	lvAlarm  status.Alarm
	lvShared string
	db       dbReplica // nil when DB sync is off
	dbErr    string    // why DB sync is off although enabled
	timers   deadlines // the core's timers (timers.go)
	fired    []node.Event
	actions  []node.Action
	// events is the loop's input from other goroutines: each send is
	// followed by a wake (d.wake) of the loop's wait.
	events chan loopEvent
	// waitRef is the loop's wait (wait.go), for the wakes of other
	// goroutines, some of which (Trigger) may come before Run sets it.
	waitRef atomic.Pointer[loopWait]
	// rxBuf and rxOOB are the loop's receive buffers for adverts; rxAddrs
	// holds a received advert's address list (255 at most: its count is a
	// byte) while the core steps with it.
	rxBuf, rxOOB []byte
	rxAddrs      []netip.Addr

	epochPath string
	// maintPath is the maintenance mode's file (maintenance.go); maintOn
	// mirrors the core's mode for the status, read off the loop.
	maintPath string
	maintOn   atomic.Bool
	// master is the password stretched once per run (package kdf): the AH
	// and conntrack sync keys are expanded from it.
	master    kdf.Master
	stop      chan struct{}  // closed when Run returns: late timer fires are dropped
	next      *config.Config // set by a reload that needs a restart
	reloadReq chan struct{}
	syncIndex int // ifindex the VRRP sockets are bound to
	// health is the running health checks and their metrics (checks.go).
	health *healthChecks
	// roleFailing is set while the core's role action fails (one log line
	// per streak).
	roleFailing bool
	// roles runs the role hooks around the VIP changes (hooks.go); feed
	// is the events stream of the status listener.
	roles roleHooks
	feed  *status.Feed

	// Readiness (readiness.go), owned by the event loop: the current
	// wait's generation (the core's) and cancel.
	gateGen    uint64
	gateCancel context.CancelFunc
	bg         context.Context // Run's background context: gates end with it
	wg         *sync.WaitGroup // Run's goroutines, gates included
}

// familyLink is the VRRP socket of one address family with its codecs.
type familyLink struct {
	conn   advertConn
	codec  *vrrp.Codec // the event loop's, both ways: one goroutine, one call at a time
	family vrrp.Family
	buf    []byte
	// sendFailing and readFailing are set while sends or reads fail (e.g.
	// ENOBUFS on IPv6 while the sync link has no carrier): one log line
	// per streak, not per advert.
	sendFailing, readFailing bool
	// fds are the receiving sockets' descriptors by protocol (VRRP, AH)
	// as the wait watches them (loopWait.Watch): the loop reads a socket
	// only when its wait reported it readable; -1: read it every round.
	fds [2]int
}

// loopEvent is one input of the event loop: an event for the core, or the
// verdict of a readiness wait (which the core sees as node.EventReady).
type loopEvent struct {
	ev    node.Event
	ready *readyEvent
	role  *roleJob // before_release hooks done: change the VIPs (hooks.go)
	maint *maintenanceRequest
	live  *liveness.Action // a liveness verdict or path alarm (liveness.go)
}

// New checks the configuration and prepares a daemon; Run starts it.
func New(opts Options) (*Daemon, error) {
	if opts.Config == nil {
		return nil, errors.New("daemon: no configuration")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Notify == nil {
		opts.Notify = func(string) {}
	}
	d := &Daemon{
		opts:   opts,
		log:    opts.Logger,
		cfg:    opts.Config,
		stats:  status.NewMetrics(),
		events: make(chan loopEvent, 256),
		timers: deadlines{},
		stop:   make(chan struct{}),
		// reloadReq has room for one pending SIGHUP.
		reloadReq:   make(chan struct{}, 1),
		rulesetKick: make(chan struct{}, 1),
	}
	d.peers = peerview.NewMonitor(d.cfg.Peer.String(), d.cfg.AdvertInterval)
	d.status = status.NewBook(d.cfg, d.peers)
	d.status.SetScheduling(opts.Scheduling)
	d.feed = status.NewFeed()
	d.roles = newRoleHooks(d.cfg, opts.Adapters.Hooks, d.feed)
	d.stats.Registry().MustRegister(d.roles.book.Collector())
	d.stats.InitStates(d.cfg)
	d.epochPath = filepath.Join(d.cfg.StateDir, "ah-epoch")
	d.maintPath = filepath.Join(d.cfg.StateDir, "maintenance")
	return d, nil
}

// Run runs the node until ctx is cancelled, then stops gracefully: priority 0
// adverts, VIPs released. It returns nil after a graceful stop.
func (d *Daemon) Run(ctx context.Context) error {
	if err := os.MkdirAll(d.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("daemon: state dir: %w", err)
	}
	if err := os.MkdirAll(d.cfg.RunDir, 0o755); err != nil {
		return fmt.Errorf("daemon: run dir: %w", err)
	}
	// Before anything touches the network: a node that cannot persist its
	// AH epoch, or whose epoch file is damaged, does not start (epoch.go).
	var lastEpoch uint32
	if d.cfg.Auth == config.AuthAH {
		e, err := reserveEpoch(epochFile(d.epochPath), time.Now())
		if err != nil {
			return err
		}
		// The core starts at max(clock, lastEpoch+1): the epoch just
		// persisted (or the clock, if it has passed it since, which the
		// core persists before its first advert).
		lastEpoch = e - 1
	}
	// The password is stretched once (Argon2id, about 0.2 s and 64 MiB)
	// and every key is expanded from it.
	if d.cfg.Auth == config.AuthAH || d.cfg.Conntrack.Enabled || d.cfg.Liveness.Enabled {
		start := time.Now()
		var m kdf.Master
		var err error
		// An in-process restart is already under the watchdog, and the
		// stretch may take its child's timeout and a fallback: ping on
		// both sides of it.
		d.pingWatchdog()
		if d.opts.Stretch != nil {
			m, err = d.opts.Stretch(ctx, d.cfg.Password)
		} else {
			m, err = DeriveHere(d.cfg.Password)
		}
		d.pingWatchdog()
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while starting: nothing held, a graceful stop
			}
			return fmt.Errorf("daemon: keys: %w", err)
		}
		d.master = m
		d.log.Info("keys ready: the password's master secret (argon2id)", "took", time.Since(start).Round(time.Millisecond))
	}
	ad, closeAdapters, err := d.opts.Adapters.withDefaults()
	if err != nil {
		return err
	}
	defer closeAdapters()
	d.ad = ad
	wait, err := ad.Wait()
	if err != nil {
		return err
	}
	d.waitRef.Store(&wait)
	defer wait.Close()
	d.rxBuf, d.rxOOB, d.rxAddrs = make([]byte, 65536), make([]byte, 256), make([]netip.Addr, 0, 255)

	if err := d.openLinks(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the sync link: a graceful stop
		}
		return err
	}
	defer d.closeLinks()
	for _, l := range d.links {
		fds, err := wait.Watch(l.conn)
		if err != nil {
			return err
		}
		l.fds = [2]int{-1, -1}
		copy(l.fds[:], fds)
	}

	vm, err := ad.VIPs(nodecfg.VIPs(d.cfg, d.log))
	if err != nil {
		return fmt.Errorf("daemon: vip: %w", err)
	}
	d.vips = vm
	defer vm.Close()
	// Whatever a crashed predecessor left is removed before the election:
	// a node that starts must never answer for a VIP it does not own.
	if removed, err := vm.ReleaseStale(ctx); err != nil {
		d.log.Warn("removing stale VIPs", "err", err)
	} else {
		for _, r := range removed {
			d.log.Info("removed stale VIP left by a previous run", "interface", r.Interface, "prefix", r.Prefix)
		}
	}

	if d.cfg.Conntrack.Enabled {
		ct, err := ad.Conntrack(d.cfg, d)
		if err != nil {
			return err
		}
		d.ct = ct
	}

	var dbListener net.Listener
	if d.cfg.DBSync.Enabled {
		// DB sync that cannot start (no peer pin, no JWT secret, port in use)
		// must not cost the pair its failover: VRRP runs, the problem is
		// logged and shown in the status.
		db, ln, err := ad.DB(d.cfg, d)
		if err != nil {
			d.log.Error("DB sync is OFF", "err", err)
			d.dbErr = err.Error()
		} else {
			d.db, dbListener = db, ln
		}
	}

	primary := map[vrrp.Family]netip.Addr{}
	for f, l := range d.links {
		primary[f] = l.conn.Source()
	}
	ncfg := nodecfg.Core(d.cfg, primary, d.syncIndex, lastEpoch)
	ncfg.Checks = coreChecks(d.cfg)
	ncfg.Maintenance = d.loadMaintenance()
	core, err := node.New(ncfg)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	d.core = core

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		close(d.stop)
		stopBG()
		wg.Wait()
	}()
	// Readiness waits start from the loop, at every entry into BACKUP that
	// the core reports (readiness.go); a replication enabled but off (DB
	// sync that could not start) has nothing to wait for: it is logged and
	// shown in the status.
	d.bg, d.wg = bg, &wg
	d.startLiveness(bg, wg.Go)
	if d.ct != nil {
		wg.Go(func() {
			if err := d.ct.Run(bg); err != nil && bg.Err() == nil {
				d.log.Error("conntrack sync stopped", "err", err)
			}
		})
	}
	if d.db != nil {
		wg.Go(func() {
			if err := d.db.Serve(bg, dbListener); err != nil && bg.Err() == nil {
				d.log.Error("dbsync listener stopped", "err", err)
			}
		})
		wg.Go(func() {
			if err := d.db.Run(bg); err != nil && bg.Err() == nil {
				d.log.Error("dbsync stopped", "err", err)
			}
		})
	}
	// The sync interface is watched too, not tracked: losing its carrier
	// is what a dead peer looks like on a direct cable. But if it is
	// deleted and created again (ifdown/ifup of a VLAN or bond), the
	// sockets bound to the old one hear nothing: the core asks for a
	// restart.
	watched := append(nodecfg.Tracked(d.cfg), d.cfg.SyncInterface)
	mon, err := ad.Watch(vip.MonitorConfig{Interfaces: watched, Logger: d.log})
	if err != nil {
		return fmt.Errorf("daemon: link monitor: %w", err)
	}
	linkCh := make(chan vip.LinkEvent, 16)
	wg.Go(func() { _ = mon.Run(bg, linkCh) })
	wg.Go(func() {
		for {
			select {
			case <-bg.Done():
				return
			case ev := <-linkCh:
				if d.lv != nil && ev.Interface == d.cfg.SyncInterface {
					// Straight to the engine: a direct cable's carrier loss
					// is the fastest sign of a dead peer.
					d.lv.SetCarrier(ev.Up && ev.Exists)
				}
				if !d.send(loopEvent{ev: node.Event{Kind: node.EventLink, Interface: ev.Interface, Up: ev.Up, Exists: ev.Exists, Index: ev.Index}}, bg.Done(), nil) {
					return
				}
			}
		}
	})

	d.registerSyncMetrics()
	// The checks' first verdicts queue behind the startup event.
	d.startChecks()
	d.status.SetPriority(d.core.Priority())
	if d.surface, err = ad.Surface(d, bg); err != nil {
		return err
	}
	// A reload may replace the surface: close the one running at the end.
	defer func() { d.surface.Close() }()

	d.log.Info("starting", "role", d.cfg.Role, "priority", d.cfg.Priority(), "vrids", nodecfg.VRIDs(d.cfg),
		"advert_interval", d.cfg.AdvertInterval, "auth", d.cfg.Auth, "sync_interface", d.cfg.SyncInterface)
	// Netlink and socket work must finish even once a stop is requested:
	// a VIP release cut short by a cancelled context would leave the VIPs
	// on a node that exits.
	work := context.WithoutCancel(ctx)
	d.step(work, node.Event{Kind: node.EventStartup})
	d.opts.Notify("READY=1")

	// A stop wakes the loop, which sees ctx done before anything else.
	stopWake := context.AfterFunc(ctx, d.wake)
	defer stopWake()
	var watchdogAt time.Time
	if d.opts.WatchdogInterval > 0 {
		watchdogAt = time.Now().Add(d.opts.WatchdogInterval)
	}
	var readable []int // the advert sockets the last wait found readable
	for {
		// Each round looks at everything once, in a fixed order, then
		// waits for more. The stop goes first (no event runs after
		// SIGTERM), and the adverts already received before the timers:
		// an advert that arrived before its Master_Down deadline but is
		// read after it must not let the timer fire first (a backup that
		// would claim the VIPs and step down again at once).
		if ctx.Err() != nil {
			d.opts.Notify("STOPPING=1")
			d.shutdown()
			d.left()
			return nil
		}
		d.readAdverts(ctx, work, readable)
		if d.next != nil {
			// No STOPPING=1: systemd would take the in-process restart
			// for the service stopping and kill it after TimeoutStopSec.
			// The reload stays open (RELOADING=1) until the next instance
			// sends READY=1.
			d.shutdown()
			return ErrRestart
		}
		now := time.Now()
		if !watchdogAt.IsZero() && !now.Before(watchdogAt) {
			d.opts.Notify("WATCHDOG=1")
			watchdogAt = now.Add(d.opts.WatchdogInterval)
		}
		d.fired = d.timers.due(now, d.fired[:0])
		for _, ev := range d.fired {
			if ctx.Err() != nil {
				break
			}
			d.step(work, ev)
			if d.next != nil {
				d.shutdown() // no STOPPING=1, as above
				return ErrRestart
			}
		}
		if ctx.Err() == nil {
			select {
			case <-d.reloadReq:
				d.reload(work)
				if d.next != nil {
					d.shutdown() // no STOPPING=1, as above
					return ErrRestart
				}
			default:
			}
		}
		// What is queued now, not what arrives meanwhile: the next round
		// takes that, after the sockets and timers had their turn.
		for n := len(d.events); n > 0 && ctx.Err() == nil; n-- {
			d.handle(work, <-d.events)
			if d.next != nil {
				d.shutdown() // no STOPPING=1, as above
				return ErrRestart
			}
		}
		if ctx.Err() != nil {
			continue
		}
		at, _ := d.timers.next()
		if !watchdogAt.IsZero() && (at.IsZero() || watchdogAt.Before(at)) {
			at = watchdogAt
		}
		wait.Arm(at)
		if readable, err = wait.Wait(); err != nil {
			d.shutdown()
			d.left()
			return fmt.Errorf("daemon: event loop: %w", err)
		}
	}
}

// send hands ev to the loop from another goroutine and wakes it; false if
// done or stop (nil: never) closed first. Every input of the loop comes
// through here: a send without the wake would wait for the loop's next
// deadline (TestLoopInputsWake).
func (d *Daemon) send(ev loopEvent, done, stop <-chan struct{}) bool {
	select {
	case d.events <- ev:
		d.wake()
		return true
	case <-done:
		return false
	case <-stop:
		return false
	}
}

// wake makes the loop look at its queue and reload request; any goroutine
// calls it after handing the loop something.
func (d *Daemon) wake() {
	if w := d.waitRef.Load(); w != nil {
		(*w).Wake()
	}
}

// maxReadsPerRound bounds the datagrams one socket gives the loop in one
// round, so a flood on the sync link cannot keep the timers and the queue
// from their turn.
const maxReadsPerRound = 64

// readAdverts reads the advert sockets the wait found readable (all of
// them when the conn cannot say: the loop tests' simulated link), each
// until it is empty or gave maxReadsPerRound, decodes each datagram
// (structure and ICV) and steps the core with each valid advert. It stops
// at a stop (ctx) or a step that asks for a restart (d.next).
func (d *Daemon) readAdverts(ctx, work context.Context, readable []int) {
	for _, fam := range []vrrp.Family{vrrp.IPv4, vrrp.IPv6} {
		l := d.links[fam]
		if l == nil {
			continue
		}
		for i, proto := range []int{vrrpconn.ProtoVRRP, vrrpconn.ProtoAH} {
			if l.fds[i] >= 0 && !slices.Contains(readable, l.fds[i]) {
				continue
			}
			for range maxReadsPerRound {
				if ctx.Err() != nil || d.next != nil {
					return
				}
				if !d.readAdvert(work, l, proto) {
					break
				}
			}
		}
	}
}

// readAdvert reads one datagram of proto from l and steps the core with
// it if it is a valid advert; false when the socket had none (or failed).
func (d *Daemon) readAdvert(ctx context.Context, l *familyLink, proto int) bool {
	p, ok, err := l.conn.TryRead(proto, d.rxBuf, d.rxOOB)
	if err != nil {
		d.stats.ReadError()
		if !l.readFailing {
			l.readFailing = true
			d.log.Warn("reading adverts fails; counting further errors silently", "family", l.family, "err", err)
		}
		return false
	}
	if !ok {
		return false
	}
	if l.readFailing {
		l.readFailing = false
		d.log.Info("reading adverts works again", "family", l.family)
	}
	// The address list is decoded into rxAddrs, reused for every advert:
	// the core keeps no reference to it after Step (node.Event), and the
	// step is synchronous, so the read path allocates nothing.
	var rx vrrp.Received
	if l.family == vrrp.IPv6 {
		rx, err = l.codec.InspectIPv6Payload(p.Data, uint8(proto), p.Src, p.Dst, uint8(max(p.HopLimit, 0)), d.rxAddrs[:0])
	} else {
		rx, err = l.codec.Inspect(p.Data, d.rxAddrs[:0])
	}
	if err != nil {
		d.stats.Reject(string(vrrp.ReasonOf(err)))
		d.log.Debug("dropped advert", "src", p.Src, "reason", vrrp.ReasonOf(err), "err", err)
		return true
	}
	d.handle(ctx, loopEvent{ev: node.Event{Kind: node.EventAdvert, Family: l.family, Advert: rx}})
	return true
}

// shutdown runs the RFC 9568 Shutdown event: a master sends priority 0 so the
// backup takes over after Skew_Time, then the VIPs are released.
func (d *Daemon) shutdown() {
	// The stop hooks run in the loop (hooks.go), before the 5 s below.
	d.roles.stopping = true
	d.step(context.Background(), node.Event{Kind: node.EventShutdown})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Unconditional: Release is idempotent, and a claim whose state is in
	// doubt must not outlive the process.
	if err := d.vips.Release(ctx); err != nil {
		d.log.Error("releasing VIPs at shutdown", "err", err)
	}
	clear(d.timers)
	if d.gateCancel != nil {
		d.gateCancel()
		d.gateCancel = nil
	}
	d.log.Info("stopped", "state", d.core.State())
}

// left runs Options.Left after a final stop's shutdown.
func (d *Daemon) left() {
	if d.opts.Left != nil {
		d.opts.Left()
	}
}

// NextConfig is the configuration to restart with after Run returned
// ErrRestart.
func (d *Daemon) NextConfig() *config.Config { return d.next }

// Trigger asks the loop to reload the configuration (SIGHUP).
func (d *Daemon) Trigger() {
	// Capacity 1: requests arriving while one is pending coalesce into it,
	// none is lost behind a full event queue.
	select {
	case d.reloadReq <- struct{}{}:
	default:
	}
	d.wake()
}

func (d *Daemon) handle(ctx context.Context, ev loopEvent) {
	if ev.ready != nil {
		d.handleReady(ctx, ev.ready)
		return
	}
	if ev.role != nil {
		d.roleStep(ctx, ev.role)
		return
	}
	if ev.maint != nil {
		d.maintenance(ctx, ev.maint)
		return
	}
	if ev.live != nil {
		d.liveEvent(ctx, ev.live)
		return
	}
	if ev.ev.Kind == node.EventLink && d.isTracked(ev.ev.Interface) {
		d.status.Link(ev.ev.Interface, ev.ev.Up)
	}
	if ev.ev.Kind == node.EventCheck {
		defer d.checkPriority(d.core.Priority())
	}
	d.step(ctx, ev.ev)
}

// step feeds one event to the core and executes what it returns. The
// outcome of a role action is fed back at once (EventRoleDone), so a
// failure is known to the core before the next event.
func (d *Daemon) step(ctx context.Context, ev node.Event) {
	ev.Now = time.Now()
	acts := d.core.Step(ev, d.actions[:0])
	for len(acts) > 0 {
		var done []node.Event
		for _, a := range acts {
			if r, ok := d.exec(ctx, a); ok {
				done = append(done, r)
			}
		}
		acts = acts[:0]
		for _, r := range done {
			r.Now = time.Now()
			acts = d.core.Step(r, acts)
		}
	}
	d.actions = acts[:0]
	d.tellLiveness()
}

// exec runs one action of the core. A role action returns its outcome as
// the event to feed back.
func (d *Daemon) exec(ctx context.Context, a node.Action) (node.Event, bool) {
	switch a.Kind {
	case node.ActionSendAdvert:
		d.sendAdvert(ctx, a)
	case node.ActionPersistEpoch:
		d.persistEpoch(a.Epoch)
	case node.ActionSetTimer:
		d.setTimer(a.Timer, a.After, a.Gen)
	case node.ActionStopTimer:
		delete(d.timers, a.Timer)
	case node.ActionRole:
		return d.role(ctx, a)
	case node.ActionAnnounce:
		if err := d.vips.Announce(ctx); err != nil {
			d.log.Warn("announcing VIPs", "err", err)
		}
	case node.ActionNotify:
		d.log.Info("state change", "vrid", a.VRID, "from", a.From, "to", a.To, "reason", a.Reason)
		now := time.Now()
		d.status.Transition(a.VRID, a.From, a.To, a.Reason, now, d.core.State())
		d.peers.LocalState(d.core.State(), now)
		d.stats.StateChange(a.VRID, a.To, d.core.State())
		d.feed.Publish(status.Event{Time: now, Type: "transition", VRID: a.VRID, From: a.From.String(), To: a.To.String(), Reason: a.Reason})
	case node.ActionHold:
		d.hold(ctx, a)
	case node.ActionDrop:
		d.dropped(a)
	case node.ActionHeard:
		d.stats.HeardKey(a.Key)
		d.peers.Advert(a.Src, a.Priority, time.Now())
	case node.ActionRestart:
		d.log.Warn("restarting the VRRP instances on the sync interface", "reason", a.Reason)
		d.next = d.cfg
	case node.ActionLeave:
		if d.lv != nil {
			d.lv.Leave(leaveTimeout)
		}
	case node.ActionConfirmPeer:
		if d.lv != nil {
			d.lv.Confirm()
		}
	}
	return node.Event{}, false
}

// dropped counts a rejected advert by reason. Our own adverts looped back
// by a bridge are not a rejection; a foreign address list is a VRID
// collision the status reports (SPEC "common pitfalls").
func (d *Daemon) dropped(a node.Action) {
	switch a.Drop {
	case node.ReasonOwnAdvert:
		return
	case node.ReasonAddressMismatch:
		d.status.ForeignRouter(a.VRID, a.Src, time.Now())
	}
	d.stats.Reject(string(a.Drop))
}

// runRole makes the node what the core says, as one operation. MASTER:
// both replications become senders, then the VIPs are claimed (the
// replicated flows are already in this node's kernel: the backup injects
// as it receives). Anything else: the VIPs are released, then both
// replications become receivers, whatever the release returned (a node
// that is not master must never push its DB or its flows). Every step is
// idempotent, so the core's re-issue after a failure redoes it whole.
func (d *Daemon) runRole(ctx context.Context, a node.Action) error {
	master := a.Role == vrrp.StateMaster
	var err error
	if master {
		d.setReplicationRoles(true)
		err = d.vips.Claim(ctx)
	} else {
		err = d.vips.Release(ctx)
		d.setReplicationRoles(false)
	}
	op, done := "claim", "VIPs claimed"
	if !master {
		op, done = "release", "VIPs released"
	}
	if err != nil {
		if !d.roleFailing {
			d.log.Error("VIP "+op+" failed; retrying every "+node.RoleRetryInterval.String(), "role", a.Role, "err", err)
		}
		d.roleFailing = true
		d.status.VIPError(op, err)
		return err
	}
	if d.roleFailing {
		d.log.Info("VIP " + op + " succeeded after retries")
	}
	d.roleFailing = false
	d.status.VIPError("", nil)
	if master || a.From == vrrp.StateMaster || a.Retry {
		d.log.Info(done, "vips", len(d.cfg.VIPs), "state", d.core.State())
	}
	return nil
}

func (d *Daemon) setReplicationRoles(master bool) {
	if d.ct != nil {
		d.ct.SetRole(master)
	}
	if d.db != nil {
		d.db.SetRole(master)
	}
}

func (d *Daemon) setTimer(k node.TimerKey, after time.Duration, gen uint64) {
	d.timers.set(k, time.Now(), after, gen)
}

// sendAdvert encodes and multicasts the advert the core asked for, with
// the AH counter it chose.
func (d *Daemon) sendAdvert(ctx context.Context, a node.Action) {
	l := d.links[a.Family]
	in := d.core.Instance(a.VRID)
	if l == nil || in == nil {
		return
	}
	adv := vrrp.Advert{VRID: a.VRID, Priority: a.Priority, Interval: d.cfg.AdvertInterval, Addrs: in.Addrs}
	pkt, err := l.codec.AppendPacket(l.buf[:0], l.conn.Source(), l.conn.Group(), &adv, a.Counter)
	if err != nil {
		d.log.Error("encoding advert", "vrid", a.VRID, "err", err)
		return
	}
	l.buf = pkt[:0]
	proto := vrrpconn.ProtoVRRP
	if d.cfg.Auth != config.AuthNone {
		proto = vrrpconn.ProtoAH
	}
	if l.family == vrrp.IPv6 {
		pkt = pkt[vrrp.IPv6HeaderLen:]
	}
	// A send that cannot complete within one interval is late anyway; it
	// must not hold the loop (and with it every timer) any longer. The
	// socket bounds the wait (vrrpconn.SetSendWait): a context deadline
	// here would arm a runtime timer per advert.
	if w, ok := l.conn.(interface{ SetSendWait(time.Duration) }); ok {
		w.SetSendWait(d.cfg.AdvertInterval)
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.cfg.AdvertInterval)
		defer cancel()
	}
	if err := l.conn.Write(ctx, proto, pkt, l.conn.Group()); err != nil {
		d.stats.SendError()
		if !l.sendFailing {
			l.sendFailing = true
			d.log.Warn("sending adverts fails; counting further errors silently", "vrid", a.VRID, "err", err)
		}
		return
	}
	if l.sendFailing {
		l.sendFailing = false
		d.log.Info("sending adverts works again", "vrid", a.VRID)
	}
	d.stats.Sent()
}

// openLinks opens one VRRP connection per address family used by the VIPs,
// on the sync interface.
func (d *Daemon) openLinks(ctx context.Context) error {
	d.links = map[vrrp.Family]*familyLink{}
	for _, fam := range nodecfg.Families(d.cfg) {
		src, index, err := d.ad.SyncLink(ctx, d.cfg.SyncInterface, fam)
		if err != nil {
			return err
		}
		d.syncIndex = index
		conn, err := d.ad.OpenConn(d.cfg.SyncInterface, src)
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		codec, err := vrrp.NewCodec(nodecfg.Codec(d.cfg, d.master))
		if err != nil {
			conn.Close()
			return fmt.Errorf("daemon: codec: %w", err)
		}
		d.links[fam] = &familyLink{conn: conn, codec: codec, family: fam, buf: make([]byte, 0, 1500)}
	}
	return nil
}

func (d *Daemon) closeLinks() {
	for _, l := range d.links {
		l.conn.Close()
	}
}

// persistEpoch records the AH sender epoch so the next run starts above it
// even if the clock stepped back. Written atomically: a crash leaves the old
// or the new value, never a torn file. Run has proved the file writable
// (reserveEpoch) and the next start refuses to run if it is not; a failure
// here is logged as an error: the next start, if the clock is behind, could
// take this run's epoch again, which the peer refuses as a replay.
func (d *Daemon) persistEpoch(e uint32) {
	if err := epochFile(d.epochPath).save(e); err != nil {
		d.log.Error("persisting AH epoch", "epoch", e, "err", err)
	}
}

func (d *Daemon) isTracked(ifname string) bool {
	for _, v := range d.cfg.VIPs {
		if v.Interface == ifname {
			return true
		}
	}
	return false
}

// DeriveHere stretches the password in this process (Options.Stretch
// nil, and the command's fallback when its child fails).
func DeriveHere(password string) (kdf.Master, error) {
	m, err := kdf.Derive(password)
	// Argon2id's 64 MiB are garbage now: hand them back to the kernel at
	// once, or the idle daemon keeps them resident (85 MiB instead of 21
	// in BenchmarkIdleCPU).
	debug.FreeOSMemory()
	return m, err
}

// pingWatchdog sends WATCHDOG=1 if the service manager watches the daemon.
func (d *Daemon) pingWatchdog() {
	if d.opts.WatchdogInterval > 0 {
		d.opts.Notify("WATCHDOG=1")
	}
}
