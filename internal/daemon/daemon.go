// Package daemon is the imperative shell of muros-had: it wires the pure VRRP
// sync group (package vrrp) to raw sockets (internal/vrrpconn), to the
// virtual IPs and link monitor (package vip), to timers and signals, and
// exposes the cluster status.
//
// One goroutine, the event loop, owns the sync group. Everything else (socket
// readers, timers, the link monitor, reload requests) sends events to it over
// channels, and it executes the actions the group returns. This keeps the
// state machine deterministic and the shell thin.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/vrrpconn"
	"github.com/muros/muros-had/vip"
	"github.com/muros/muros-had/vrrp"
	"github.com/vishvananda/netlink"
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
}

// Daemon is one node of the pair.
type Daemon struct {
	opts Options
	log  *slog.Logger
	cfg  *config.Config

	status *statusBook
	stats  *rxStats
	// surface is the status and metrics listeners with the peer checks
	// (restarted in place by a reload, under bg).
	surface closers
	// rulesetKick asks the ruleset check for a fingerprint now (a reload).
	rulesetKick chan struct{}

	// Set up by Run; owned by the event loop.
	group   *vrrp.Group
	links   map[vrrp.Family]*familyLink
	vips    *vip.Manager
	ct      conntrackSync // nil when conntrack sync is off
	db      dbReplica     // nil when DB sync is off
	dbErr   string        // why DB sync is off although enabled
	nl      *netlink.Handle
	timers  map[timerKey]*time.Timer
	replay  map[replayKey]vrrp.ReplayState
	actions []vrrp.Action
	events  chan loopEvent

	epochPath string
	stop      chan struct{}  // closed when Run returns: late timer fires are dropped
	next      *config.Config // set by a reload that needs a restart
	reloadReq chan struct{}
	syncIndex int // ifindex the VRRP sockets are bound to
	instances map[uint8]instance
	// vipDirty is set when claiming or releasing failed: the loop retries
	// every second until the kernel agrees with the group state.
	vipDirty bool

	// Readiness (readiness.go), owned by the event loop: the group state
	// after the last batch, the current gate's generation and cancel.
	lastGroup  vrrp.State
	gateGen    uint64
	gateCancel context.CancelFunc
	bg         context.Context // Run's background context: gates end with it
	wg         *sync.WaitGroup // Run's goroutines, gates included
}

// familyLink is the VRRP socket of one address family with its encoder.
type familyLink struct {
	conn   *vrrpconn.Conn
	codec  *vrrp.Codec // used only by the event loop (send path)
	family vrrp.Family
	ctr    vrrp.AHCounter
	buf    []byte
	// sendFailing is set while sends fail (e.g. ENOBUFS on IPv6 while the
	// sync link has no carrier): one log line per streak, not per advert.
	sendFailing bool
}

type timerKey struct {
	vrid  uint8
	timer vrrp.TimerID
}

type replayKey struct {
	src  netip.Addr
	auth vrrp.AuthMode
	vrid uint8 // keepalived keeps one AH sequence counter per instance (VRID)
}

// loopEvent is one input of the event loop.
type loopEvent struct {
	advert *rxAdvert
	timer  *timerFire
	link   *vip.LinkEvent
	ready  *readyEvent
}

type timerFire struct {
	key timerKey
	gen uint64
}

// rxAdvert is a received advert that passed the codec's checks.
type rxAdvert struct {
	family   vrrp.Family
	src      netip.Addr
	vrid     uint8
	priority uint8
	interval time.Duration
	auth     vrrp.AuthMode
	spi, seq uint32
	// addrsMatch: the advert's address list is ours for that VRID (checked
	// by the reader against the read-only instance table, so no copy of the
	// list crosses to the loop).
	addrsMatch bool
}

// instance is what the daemon derives once from a VIP of the configuration:
// its VRRP family and the address list its adverts carry. The table is
// read-only after New (a reload that changes VIPs restarts the daemon), so
// the socket readers consult it without locks.
type instance struct {
	vip    config.VIP
	family vrrp.Family
	addrs  []netip.Addr
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
		stats:  newRxStats(),
		events: make(chan loopEvent, 256),
		timers: make(map[timerKey]*time.Timer),
		replay: make(map[replayKey]vrrp.ReplayState),
		stop:   make(chan struct{}),
		// reloadReq has room for one pending SIGHUP.
		reloadReq:   make(chan struct{}, 1),
		rulesetKick: make(chan struct{}, 1),
	}
	d.status = newStatusBook(d.cfg)
	d.status.setScheduling(opts.Scheduling)
	d.instances = make(map[uint8]instance, len(d.cfg.VIPs))
	for _, v := range d.cfg.VIPs {
		d.instances[v.VRID] = instance{vip: v, family: familyOf(v.Address.Addr()), addrs: []netip.Addr{v.Address.Addr()}}
	}
	d.stats.initStates(d.cfg)
	d.epochPath = filepath.Join(d.cfg.StateDir, "ah-epoch")
	return d, nil
}

// instanceConfigs derives one VRRP instance per VIP from the configuration.
func instanceConfigs(cfg *config.Config, primary map[vrrp.Family]netip.Addr) []vrrp.InstanceConfig {
	version := 3
	if cfg.Auth == config.AuthKeepalivedAH {
		version = 2
	}
	out := make([]vrrp.InstanceConfig, 0, len(cfg.VIPs))
	for _, v := range cfg.VIPs {
		out = append(out, vrrp.InstanceConfig{
			VRID:         v.VRID,
			Priority:     cfg.Priority(),
			Interval:     cfg.AdvertInterval,
			Version:      version,
			Primary:      primary[familyOf(v.Address.Addr())],
			NoPreempt:    !cfg.Preempt,
			PreemptDelay: cfg.PreemptDelay,
			// A node does not preempt before its conntrack table is complete
			// (SPEC) nor with a stale configuration DB (SPEC "takeover
			// ordering"), after a start or any return to BACKUP; takeover
			// from a dead master is never held (package vrrp). The readiness
			// gate lifts the hold (readiness.go).
			WaitReady: holdsPreemption(cfg),
		})
	}
	return out
}

// holdsPreemption reports whether the node holds preemption until its
// replications are complete: at start and at every return to BACKUP
// (readiness.go).
func holdsPreemption(cfg *config.Config) bool {
	return cfg.Conntrack.Enabled || cfg.DBSync.Enabled
}

func familyOf(a netip.Addr) vrrp.Family {
	if a.Is4() || a.Is4In6() {
		return vrrp.IPv4
	}
	return vrrp.IPv6
}

func codecConfig(cfg *config.Config) vrrp.Config {
	c := vrrp.Config{Version: 3, Password: cfg.Password, Checksum: vrrp.ChecksumModePseudoHeader}
	switch cfg.Auth {
	case config.AuthKeepalivedAH:
		c.Version = 2
		c.Auth = vrrp.AuthKeepalivedAH
	case config.AuthAH:
		c.Auth = vrrp.AuthAH
	default:
		c.Auth = vrrp.AuthNone
	}
	if cfg.ChecksumMode == config.ChecksumMessageOnly {
		c.Checksum = vrrp.ChecksumModeMessageOnly
	}
	return c
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
	nl, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("daemon: netlink: %w", err)
	}
	d.nl = nl
	defer nl.Close()

	if err := d.openLinks(ctx); err != nil {
		return err
	}
	defer d.closeLinks()

	vm, err := vip.New(nl, vipConfig(d.cfg, d.log))
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
		ct, err := newConntrackSync(d.cfg, d)
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
		db, err := newDBReplica(d.cfg, d)
		if err == nil {
			dbListener, err = net.Listen("tcp", d.cfg.DBSync.Listen)
			if err != nil {
				err = fmt.Errorf("daemon: dbsync listener: %w", err)
			}
		}
		if err != nil {
			d.log.Error("DB sync is OFF", "err", err)
			d.dbErr = err.Error()
		} else {
			d.db = db
		}
	}

	primary := map[vrrp.Family]netip.Addr{}
	for f, l := range d.links {
		primary[f] = l.conn.Source()
	}
	g, err := vrrp.NewGroup(instanceConfigs(d.cfg, primary))
	if err != nil {
		return fmt.Errorf("daemon: vrrp group: %w", err)
	}
	d.group = g

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		close(d.stop)
		stopBG()
		d.closeLinks() // unblocks readers
		wg.Wait()
	}()
	for _, l := range d.links {
		for _, proto := range []int{vrrpconn.ProtoVRRP, vrrpconn.ProtoAH} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.readLoop(bg, l, proto)
			}()
		}
	}
	// Readiness gates start from the loop, at every entry into BACKUP
	// (readiness.go); a replication enabled but off (DB sync that could not
	// start) has nothing to wait for: it is logged and shown in the status.
	d.bg, d.wg = bg, &wg
	if d.ct != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.ct.Run(bg); err != nil && bg.Err() == nil {
				d.log.Error("conntrack sync stopped", "err", err)
			}
		}()
	}
	if d.db != nil {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := d.db.Serve(bg, dbListener); err != nil && bg.Err() == nil {
				d.log.Error("dbsync listener stopped", "err", err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := d.db.Run(bg); err != nil && bg.Err() == nil {
				d.log.Error("dbsync stopped", "err", err)
			}
		}()
	}
	// The sync interface is watched too, not tracked: losing its carrier
	// is what a dead peer looks like on a direct cable. But if it is
	// deleted and created again (ifdown/ifup of a VLAN or bond), the
	// sockets bound to the old one hear nothing: see handleLink.
	watched := append(trackedInterfaces(d.cfg), d.cfg.SyncInterface)
	mon, err := vip.NewMonitor(nl, vip.MonitorConfig{Interfaces: watched, Logger: d.log})
	if err != nil {
		return fmt.Errorf("daemon: link monitor: %w", err)
	}
	linkCh := make(chan vip.LinkEvent, 16)
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = mon.Run(bg, linkCh)
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-bg.Done():
				return
			case ev := <-linkCh:
				select {
				case d.events <- loopEvent{link: &ev}:
				case <-bg.Done():
					return
				}
			}
		}
	}()

	d.registerSyncMetrics()
	if d.surface, err = d.startStatusServers(bg); err != nil {
		return err
	}
	// A reload may replace the surface: close the one running at the end.
	defer func() { d.surface.Close() }()

	d.log.Info("starting", "role", d.cfg.Role, "priority", d.cfg.Priority(), "vrids", vrids(d.cfg),
		"advert_interval", d.cfg.AdvertInterval, "auth", d.cfg.Auth, "sync_interface", d.cfg.SyncInterface)
	d.apply(ctx, d.group.StepAll(vrrp.Event{Kind: vrrp.EventStartup}, d.actions[:0]))
	d.opts.Notify("READY=1")

	var watchdog <-chan time.Time
	if d.opts.WatchdogInterval > 0 {
		t := time.NewTicker(d.opts.WatchdogInterval)
		defer t.Stop()
		watchdog = t.C
	}
	// Netlink and socket work must finish even once a stop is requested:
	// a VIP release cut short by a cancelled context would leave the VIPs
	// on a node that exits.
	work := context.WithoutCancel(ctx)
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	vipRetry := retry.C
	for {
		select {
		case <-ctx.Done():
			d.opts.Notify("STOPPING=1")
			d.shutdown()
			return nil
		case <-watchdog:
			d.opts.Notify("WATCHDOG=1")
		case <-d.reloadReq:
			d.reload(work)
			if d.next != nil {
				// No STOPPING=1: systemd would take the in-process restart
				// for the service stopping and kill it after TimeoutStopSec.
				// The reload stays open (RELOADING=1) until the next
				// instance sends READY=1.
				d.shutdown()
				return ErrRestart
			}
		case <-vipRetry:
			if d.vipDirty {
				d.reconcileVIPs(work)
			}
		case ev := <-d.events:
			if ctx.Err() != nil {
				// A stop is pending: it goes first (select picks at random
				// among ready cases), so no event runs after SIGTERM.
				continue
			}
			d.handle(work, ev)
			if d.next != nil {
				// No STOPPING=1: systemd would take the in-process restart
				// for the service stopping and kill it after TimeoutStopSec.
				// The reload stays open (RELOADING=1) until the next
				// instance sends READY=1.
				d.shutdown()
				return ErrRestart
			}
		}
	}
}

// shutdown runs the RFC 9568 Shutdown event: a master sends priority 0 so the
// backup takes over after Skew_Time, then the VIPs are released.
func (d *Daemon) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.apply(ctx, d.group.StepAll(vrrp.Event{Kind: vrrp.EventShutdown}, d.actions[:0]))
	// Unconditional: Release is idempotent, and a claim whose state is in
	// doubt must not outlive the process.
	if err := d.vips.Release(ctx); err != nil {
		d.log.Error("releasing VIPs at shutdown", "err", err)
	}
	for k, t := range d.timers {
		t.Stop()
		delete(d.timers, k)
	}
	d.log.Info("stopped", "state", d.group.State())
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
}

func (d *Daemon) handle(ctx context.Context, ev loopEvent) {
	switch {
	case ev.advert != nil:
		d.handleAdvert(ctx, ev.advert)
	case ev.timer != nil:
		acts, err := d.group.Step(ev.timer.key.vrid, vrrp.TimerEvent(ev.timer.key.timer, ev.timer.gen), d.actions[:0])
		if err == nil {
			d.apply(ctx, acts)
		}
	case ev.link != nil:
		d.handleLink(ctx, *ev.link)
	case ev.ready != nil:
		d.handleReady(ctx, ev.ready)
	}
}

func (d *Daemon) handleAdvert(ctx context.Context, a *rxAdvert) {
	m := d.group.Member(a.vrid)
	if m == nil {
		d.stats.reject("unknown_vrid")
		return
	}
	// IPv4 and IPv6 VRIDs are separate spaces (RFC 9568 section 7): an
	// advert for one of our VRIDs over the other family is not for us.
	if in, ok := d.instances[a.vrid]; !ok || in.family != a.family {
		d.stats.reject("wrong_family")
		return
	}
	// A router on the link that advertises one of our VRIDs with another
	// address list is a VRID collision (SPEC "common pitfalls"): report it
	// and never let it take part in our election.
	if !a.addrsMatch {
		d.stats.reject("address_mismatch")
		d.status.foreignRouter(a.vrid, a.src, time.Now())
		return
	}
	if a.auth != vrrp.AuthNone && a.auth != vrrp.AuthPass {
		k := replayKey{src: a.src, auth: a.auth, vrid: a.vrid}
		next, err := d.replay[k].Accept(a.spi, a.seq)
		if err != nil {
			d.stats.reject(string(vrrp.ReasonOf(err)))
			return
		}
		d.replay[k] = next
	}
	d.status.peerAdvert(a.vrid, a.src, a.priority, time.Now())
	acts, err := d.group.Step(a.vrid, vrrp.AdvertEvent(a.src, a.priority, a.interval), d.actions[:0])
	if err == nil {
		d.apply(ctx, acts)
	}
}

func (d *Daemon) handleLink(ctx context.Context, ev vip.LinkEvent) {
	if ev.Interface == d.cfg.SyncInterface && !d.isTracked(ev.Interface) {
		if ev.Exists && d.syncIndex != 0 && ev.Index != d.syncIndex {
			d.log.Warn("sync interface was re-created: restarting the VRRP instances on it", "interface", ev.Interface, "old_index", d.syncIndex, "index", ev.Index)
			d.next = d.cfg
		}
		return
	}
	kind := vrrp.EventTrackDown
	if ev.Up {
		kind = vrrp.EventTrackUp
	}
	d.status.link(ev.Interface, ev.Up)
	for _, v := range d.cfg.VIPs {
		if v.Interface != ev.Interface {
			continue
		}
		acts, err := d.group.Step(v.VRID, vrrp.Event{Kind: kind, Interface: ev.Interface}, d.actions[:0])
		if err == nil {
			d.apply(ctx, acts)
		}
	}
}

// apply executes the group's actions in order. The VIPs follow the group as
// a whole: the vip manager owns every VIP of the sync group, so after the
// batch they are held exactly when the group is MASTER. The members' claim
// and release actions mark the points where that can change; reconciling
// against the group state (rather than replaying each member's action) means
// no ordering of member actions inside a batch can leave VIPs on a node that
// is not master.
func (d *Daemon) apply(ctx context.Context, acts []vrrp.Action) {
	d.actions = acts[:0]
	announce := false
	for _, a := range acts {
		switch a.Kind {
		case vrrp.ActionSendAdvert:
			d.sendAdvert(ctx, a.VRID, a.Priority)
		case vrrp.ActionSetTimer:
			d.setTimer(timerKey{a.VRID, a.Timer}, a.After, a.Gen)
		case vrrp.ActionStopTimer:
			k := timerKey{a.VRID, a.Timer}
			if t, ok := d.timers[k]; ok {
				t.Stop()
				delete(d.timers, k)
			}
		case vrrp.ActionClaimVIPs:
			// Claimed at once: the new master's adverts and announcements
			// that follow in the batch must find the VIPs in place.
			d.reconcileVIPs(ctx)
		case vrrp.ActionReleaseVIPs:
			// Released after the batch: a release waits for the kernel
			// (closing the announcement sockets takes an RCU grace period),
			// and the other members' priority 0 adverts must not wait for it.
		case vrrp.ActionAnnounce:
			announce = true
		case vrrp.ActionNotify:
			d.log.Info("state change", "vrid", a.VRID, "from", a.From, "to", a.To, "reason", a.Reason)
			d.status.transition(a.VRID, a.From, a.To, a.Reason, time.Now(), d.group.State())
			d.stats.stateChange(a.VRID, a.To, d.group.State())
		}
	}
	claimedNow := d.reconcileVIPs(ctx)
	// Claim starts the announcement schedule; an explicit Announce in the
	// same batch would only repeat its first round.
	if announce && !claimedNow && d.vips.Claimed() {
		if err := d.vips.Announce(ctx); err != nil {
			d.log.Warn("announcing VIPs", "err", err)
		}
	}
	// After the release: the replications are receivers again when a
	// re-armed hold starts waiting for them.
	d.noteGroupState(ctx)
}

// reconcileVIPs claims or releases the VIPs so that they are held exactly
// when the sync group is MASTER. It reports whether it claimed them.
func (d *Daemon) reconcileVIPs(ctx context.Context) bool {
	want := d.group.State() == vrrp.StateMaster
	if d.vipDirty {
		// The last attempt failed: both operations are idempotent, so redo
		// the one the group state asks for whatever the manager believes.
		if want {
			d.vipResult("claim", d.vips.Claim(ctx))
		} else {
			d.vipResult("release", d.vips.Release(ctx))
		}
		return false
	}
	switch have := d.vips.Claimed(); {
	case want && !have:
		// The replicated flows are already in this node's kernel (the
		// backup injects as it receives), so the VIPs can be claimed at
		// once; the node now becomes the sender.
		if d.ct != nil {
			d.ct.SetRole(true)
		}
		if d.db != nil {
			d.db.SetRole(true)
		}
		d.vipResult("claim", d.vips.Claim(ctx))
		return true
	case !want && have:
		d.vipResult("release", d.vips.Release(ctx))
		if d.ct != nil {
			d.ct.SetRole(false)
		}
		if d.db != nil {
			d.db.SetRole(false)
		}
	}
	return false
}

// vipResult logs the outcome of a claim or release and arms the retry.
func (d *Daemon) vipResult(op string, err error) {
	if err != nil {
		if !d.vipDirty {
			d.log.Error("VIP "+op+" failed; retrying every second", "err", err)
		}
		d.vipDirty = true
		d.status.vipError(op, err)
		return
	}
	if d.vipDirty {
		d.log.Info("VIP " + op + " succeeded after retries")
	}
	d.vipDirty = false
	d.status.vipError("", nil)
	done := "VIPs claimed"
	if op == "release" {
		done = "VIPs released"
	}
	d.log.Info(done, "vips", len(d.cfg.VIPs), "state", d.group.State())
}

func (d *Daemon) setTimer(k timerKey, after time.Duration, gen uint64) {
	if t, ok := d.timers[k]; ok {
		t.Stop()
	}
	fire := &timerFire{key: k, gen: gen}
	d.timers[k] = time.AfterFunc(after, func() {
		// The generation makes a fire that raced with a re-arm harmless.
		select {
		case d.events <- loopEvent{timer: fire}:
		case <-d.stop:
		}
	})
}

func (d *Daemon) sendAdvert(ctx context.Context, vrid uint8, priority uint8) {
	in, ok := d.instances[vrid]
	if !ok {
		return
	}
	fam := in.family
	l := d.links[fam]
	if l == nil {
		return
	}
	adv := vrrp.Advert{VRID: vrid, Priority: priority, Interval: d.cfg.AdvertInterval, Addrs: in.addrs}
	now := time.Now()
	switch d.cfg.Auth {
	case config.AuthKeepalivedAH:
		l.ctr = l.ctr.NextKeepalived(now)
	case config.AuthAH:
		prev := l.ctr.Epoch
		l.ctr = l.ctr.Next(now)
		if l.ctr.Epoch != prev {
			d.persistEpoch(l.ctr.Epoch)
		}
	}
	pkt, err := l.codec.AppendPacket(l.buf[:0], l.conn.Source(), l.conn.Group(), &adv, l.ctr)
	if err != nil {
		d.log.Error("encoding advert", "vrid", vrid, "err", err)
		return
	}
	l.buf = pkt[:0]
	proto := vrrpconn.ProtoVRRP
	if d.cfg.Auth != config.AuthNone {
		proto = vrrpconn.ProtoAH
	}
	if fam == vrrp.IPv6 {
		pkt = pkt[vrrp.IPv6HeaderLen:]
	}
	// A send that cannot complete within one interval is late anyway; it
	// must not hold the loop (and with it every timer) any longer.
	sendCtx, cancel := context.WithTimeout(ctx, d.cfg.AdvertInterval)
	defer cancel()
	if err := l.conn.Write(sendCtx, proto, pkt, l.conn.Group()); err != nil {
		d.stats.sendError()
		if !l.sendFailing {
			l.sendFailing = true
			d.log.Warn("sending adverts fails; counting further errors silently", "vrid", vrid, "err", err)
		}
		return
	}
	if l.sendFailing {
		l.sendFailing = false
		d.log.Info("sending adverts works again", "vrid", vrid)
	}
	d.stats.sent()
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		found := false
		for _, y := range b {
			if x == y {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// openLinks opens one VRRP connection per address family used by the VIPs,
// on the sync interface.
func (d *Daemon) openLinks(ctx context.Context) error {
	d.links = map[vrrp.Family]*familyLink{}
	epoch := d.loadEpoch()
	for _, fam := range families(d.cfg) {
		src, err := waitSourceAddr(ctx, d.nl, d.cfg.SyncInterface, fam)
		if err != nil {
			return err
		}
		conn, err := vrrpconn.Open(d.cfg.SyncInterface, src)
		if err != nil {
			return fmt.Errorf("daemon: %w", err)
		}
		if link, err := d.nl.LinkByName(d.cfg.SyncInterface); err == nil {
			d.syncIndex = link.Attrs().Index
		}
		codec, err := vrrp.NewCodec(codecConfig(d.cfg))
		if err != nil {
			conn.Close()
			return fmt.Errorf("daemon: codec: %w", err)
		}
		l := &familyLink{conn: conn, codec: codec, family: fam, buf: make([]byte, 0, 1500)}
		if d.cfg.Auth == config.AuthAH {
			l.ctr = vrrp.NewAHCounter(epoch, time.Now())
			d.persistEpoch(l.ctr.Epoch)
		}
		d.links[fam] = l
	}
	return nil
}

func (d *Daemon) closeLinks() {
	for _, l := range d.links {
		l.conn.Close()
	}
}

func families(cfg *config.Config) []vrrp.Family {
	var out []vrrp.Family
	seen := map[vrrp.Family]bool{}
	for _, v := range cfg.VIPs {
		f := familyOf(v.Address.Addr())
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// waitSourceAddr finds the address adverts are sent from: the first global
// IPv4 address of the sync interface, or its IPv6 link-local address (RFC
// 9568 section 5.1.2.1) once duplicate address detection has finished.
func waitSourceAddr(ctx context.Context, nl *netlink.Handle, ifname string, fam vrrp.Family) (netip.Addr, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := sourceAddr(nl, ifname, fam)
		if err == nil {
			return a, nil
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("daemon: sync interface %s: %w", ifname, err)
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sourceAddr(nl *netlink.Handle, ifname string, fam vrrp.Family) (netip.Addr, error) {
	link, err := nl.LinkByName(ifname)
	if err != nil {
		return netip.Addr{}, err
	}
	nf := netlink.FAMILY_V4
	if fam == vrrp.IPv6 {
		nf = netlink.FAMILY_V6
	}
	addrs, err := nl.AddrList(link, nf)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if fam == vrrp.IPv6 {
			if ip.IsLinkLocalUnicast() && a.Flags&(0x40 /*IFA_F_TENTATIVE*/) == 0 {
				return ip, nil
			}
			continue
		}
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("no usable IPv%d address", fam)
}

func (d *Daemon) loadEpoch() uint32 {
	b, err := os.ReadFile(d.epochPath)
	if err != nil {
		return 0
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		d.log.Warn("ignoring unreadable AH epoch file", "path", d.epochPath, "err", err)
		return 0
	}
	return uint32(v)
}

// persistEpoch records the AH sender epoch so the next run starts above it
// even if the clock stepped back. Written atomically: a crash leaves the old
// or the new value, never a torn file.
func (d *Daemon) persistEpoch(e uint32) {
	if err := writeFileAtomic(d.epochPath, []byte(strconv.FormatUint(uint64(e), 10)+"\n")); err != nil {
		d.log.Warn("persisting AH epoch", "err", err)
	}
}

func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}

func (d *Daemon) isTracked(ifname string) bool {
	for _, v := range d.cfg.VIPs {
		if v.Interface == ifname {
			return true
		}
	}
	return false
}

func trackedInterfaces(cfg *config.Config) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range cfg.VIPs {
		if !seen[v.Interface] {
			seen[v.Interface] = true
			out = append(out, v.Interface)
		}
	}
	return out
}

func vrids(cfg *config.Config) []int {
	var out []int
	for _, v := range cfg.VIPs {
		out = append(out, int(v.VRID))
	}
	return out
}

func vipConfig(cfg *config.Config, log *slog.Logger) vip.Config {
	c := vip.Config{
		VirtualMAC: cfg.VMAC,
		Schedule:   vip.Schedule{Repeat: cfg.GARP.Repeat, Interval: cfg.GARP.Interval, Refresh: cfg.GARP.Refresh},
		Router:     true,
		Logger:     log,
	}
	for _, v := range cfg.VIPs {
		c.VIPs = append(c.VIPs, vip.VIP{Interface: v.Interface, Prefix: v.Address, VRID: v.VRID})
	}
	return c
}

// readLoop reads one protocol's socket, decodes and checks every datagram
// and hands accepted adverts to the event loop. Rejections are counted by
// reason.
func (d *Daemon) readLoop(ctx context.Context, l *familyLink, proto int) {
	codec, err := vrrp.NewCodec(codecConfig(d.cfg))
	if err != nil {
		d.log.Error("reader codec", "err", err)
		return
	}
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	addrs := make([]netip.Addr, 0, 16)
	for {
		p, err := l.conn.Read(ctx, proto, buf, oob)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
			d.log.Warn("reading adverts", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if p.Src == l.conn.Source() {
			continue // our own advert, looped back by a bridge or hairpin
		}
		var rx vrrp.Received
		if l.family == vrrp.IPv6 {
			hop := p.HopLimit
			if hop < 0 {
				hop = 0
			}
			rx, err = codec.DecodeIPv6Payload(p.Data, uint8(proto), p.Src, p.Dst, uint8(hop), addrs)
		} else {
			rx, err = codec.Decode(p.Data, addrs)
		}
		if err != nil {
			d.stats.reject(string(vrrp.ReasonOf(err)))
			d.log.Debug("dropped advert", "src", p.Src, "reason", vrrp.ReasonOf(err), "err", err)
			continue
		}
		ev := &rxAdvert{
			family: l.family, src: rx.Src, vrid: rx.Advert.VRID, priority: rx.Advert.Priority,
			interval: rx.Advert.Interval, auth: rx.Auth, spi: rx.SPI, seq: rx.Seq,
			addrsMatch: sameAddrs(rx.Advert.Addrs, d.instances[rx.Advert.VRID].addrs),
		}
		select {
		case d.events <- loopEvent{advert: ev}:
		case <-ctx.Done():
			return
		}
	}
}
