package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/liveness"
	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vrrp"
	"github.com/vishvananda/netlink"
)

// peerLiveness is the peer-liveness protocol's engine (liveness.Engine):
// the daemon tells it the node's role and the sync link's carrier, it
// calls back with verdicts and path alarms (internal to its own thread:
// the callbacks only queue loop events).
type peerLiveness interface {
	Run(ctx context.Context) error
	SetRole(r liveness.Role, prio uint8)
	SetCarrier(up bool)
	Leave(timeout time.Duration)
	// Confirm asks the protocol to confirm the peer (VRRP's Master_Down
	// fired while the peer was last heard alive as master).
	Confirm()
	Snapshot() liveness.Snapshot
	Close() error
}

// leaveTimeout bounds how long a stopping master waits for its LEAVING
// messages to be out before the priority 0 adverts.
const leaveTimeout = 20 * time.Millisecond

// newLiveness is the default Adapters.Liveness: the real engine on the
// sync interface and the second path.
func newLiveness(c *config.Config, key []byte, report func(liveness.Action)) (peerLiveness, error) {
	var epoch [8]byte
	for binary.BigEndian.Uint64(epoch[:]) == 0 {
		if _, err := rand.Read(epoch[:]); err != nil {
			return nil, fmt.Errorf("daemon: liveness epoch: %w", err)
		}
	}
	return liveness.NewEngine(liveness.EngineConfig{
		Monitor: liveness.Config{
			Interval:   c.Liveness.Interval,
			Detect:     c.Liveness.Detect,
			Idle:       liveness.DefaultIdle,
			Quiet:      c.Liveness.QuietInterval,
			QuietAfter: c.Liveness.QuietAfter,
			Epoch:      binary.BigEndian.Uint64(epoch[:]),
			VRIDs:      vridSet(c),
		},
		Key:               key,
		SyncInterface:     c.SyncInterface,
		Group:             c.Liveness.Group,
		Port:              c.Liveness.Port,
		PeerAddress:       c.Liveness.PeerAddress,
		TrafficInterfaces: vipInterfaces(c),
		OnVerdict:         report,
		OnPath:            report,
	})
}

// vipInterfaces are the interfaces the node's VIPs live on (the sync
// interface excepted), each once: the traffic a quiet master watches.
func vipInterfaces(c *config.Config) []string {
	var out []string
	for _, v := range c.VIPs {
		if v.Interface != c.SyncInterface && !slices.Contains(out, v.Interface) {
			out = append(out, v.Interface)
		}
	}
	return out
}

// vridSet is the VRIDs the node runs, as the protocol sends them.
func vridSet(c *config.Config) liveness.VRIDSet {
	var s liveness.VRIDSet
	for _, v := range c.VIPs {
		s.Add(v.VRID)
	}
	return s
}

// livenessState is what the loop keeps of the protocol for the status,
// the alarms and the log.
type livenessState struct {
	// role and prio: what the engine was last told.
	role liveness.Role
	prio uint8
	// verdict, peerRole: the last verdict; pathDown/pathSince: each path's
	// alarm and since when.
	verdict   liveness.Verdict
	peerRole  liveness.Role
	pathDown  [liveness.NumPaths + 1]bool
	pathSince [liveness.NumPaths + 1]time.Time
	// syncDown is the "sync link down" alarm (the sync path down, the peer
	// alive elsewhere); the status reads its copy (Daemon.lvAlarm).
	syncDown status.Alarm
}

// startLiveness opens the protocol's engine (liveness.enabled) and starts
// it under bg. A node whose engine cannot start runs on VRRP alone: the
// failure is logged and shown, the pair keeps its failover.
func (d *Daemon) startLiveness(bg context.Context, goFn func(func())) {
	if !d.cfg.Liveness.Enabled {
		return
	}
	key, err := d.master.Key(liveness.KeyLabel)
	if err != nil {
		d.log.Error("peer liveness is OFF", "err", err)
		return
	}
	// Verdicts and path alarms alike become loop events (liveEvent).
	report := func(a liveness.Action) { d.send(loopEvent{live: &a}, bg.Done(), nil) }
	lv, err := d.ad.Liveness(d.cfg, key, report)
	if err != nil {
		d.log.Error("peer liveness is OFF: VRRP timing only", "err", err)
		return
	}
	d.lv = lv
	shared := sharedSecondPath(d.cfg)
	d.lvMu.Lock()
	d.lvShared = shared
	d.lvMu.Unlock()
	if shared != "" {
		d.log.Warn("the liveness protocol's second path is not independent of the sync link", "why", shared)
	}
	if why := lv.Snapshot().QuietOff; why != "" {
		d.log.Warn("liveness heartbeats stay fast while nothing is forwarded (quiet_interval unusable)", "why", why)
	}
	goFn(func() {
		if err := lv.Run(bg); err != nil && bg.Err() == nil {
			d.log.Error("peer liveness stopped: VRRP timing only", "err", err)
		}
	})
}

// sharedSecondPath says why the second path is not independent of the sync
// link (empty when it is, or cannot be told): it is off, or the route to
// the peer's address leaves by the sync interface.
func sharedSecondPath(c *config.Config) string {
	a := c.Liveness.PeerAddress
	if !a.IsValid() {
		return "no second path (liveness.peer_address unset): a cut sync link looks like a dead peer"
	}
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return ""
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return ""
	}
	if link.Attrs().Name == c.SyncInterface {
		return fmt.Sprintf("the route to %s (liveness.peer_address) leaves by the sync interface %s: set it to the peer's address on another link", a, c.SyncInterface)
	}
	return ""
}

// liveEvent handles a verdict or a path alarm from the engine.
func (d *Daemon) liveEvent(ctx context.Context, a *liveness.Action) {
	now := time.Now()
	s := &d.lvState
	switch a.Kind {
	case liveness.ActionVerdict:
		s.verdict, s.peerRole = a.Verdict, a.PeerRole
		d.log.Info("peer liveness", "verdict", a.Verdict, "peer_role", a.PeerRole, "reason", a.Reason)
		d.feed.Publish(status.Event{Time: now, Type: "liveness", Reason: fmt.Sprintf("peer %s (%s): %s", a.Verdict, a.PeerRole, a.Reason)})
		ev := node.Event{Kind: node.EventPeer, Reason: a.Verdict.String() + ": " + a.Reason, PeerVRIDs: a.PeerVRIDs,
			PeerPriority: a.Priority, PeerAddr: d.cfg.Liveness.PeerAddress}
		switch a.Verdict {
		case liveness.VerdictDead, liveness.VerdictLeft:
			ev.PeerDead = true
		case liveness.VerdictAlive:
			ev.PeerMaster = a.PeerRole == liveness.RoleMaster
		}
		d.step(ctx, ev)
	case liveness.ActionPath:
		if s.pathDown[a.Path] != a.Down {
			s.pathDown[a.Path], s.pathSince[a.Path] = a.Down, now
			state := "up"
			if a.Down {
				state = "down"
			}
			d.log.Info("liveness path "+state, "path", a.Path, "reason", a.Reason)
			d.feed.Publish(status.Event{Time: now, Type: "liveness", Reason: fmt.Sprintf("%s path %s: %s", a.Path, state, a.Reason)})
		}
		if a.Path == liveness.PathSync && !a.Down && d.ct != nil && s.syncDown.Active {
			// Nothing to do but say so: the first datagram after the cut
			// shows the receiver its gap, which it has repaired, or asks
			// for a bulk resync when the gap is past the master's history
			// (ctsync/ctrel).
			d.log.Info("sync link back: conntrack sync repairs what it missed (gap repair, or a bulk resync)")
		}
	}
	d.updateSyncAlarm(now)
}

// updateSyncAlarm raises "sync link down" while the sync path is down and
// the peer alive on another path, with one log line at its start and one
// at its end.
func (d *Daemon) updateSyncAlarm(now time.Time) {
	s := &d.lvState
	on := s.pathDown[liveness.PathSync] && s.verdict == liveness.VerdictAlive
	if on == s.syncDown.Active {
		return
	}
	s.syncDown = status.Alarm{Active: on, Since: now}
	d.lvMu.Lock()
	d.lvAlarm = s.syncDown
	d.lvMu.Unlock()
	if on {
		msg := "SYNC LINK DOWN: the peer is alive on the second path; no takeover (no split brain), adverts and conntrack sync do not pass until the link is mended"
		if d.ct != nil {
			msg += "; conntrack replication paused"
		}
		d.log.Warn(msg, "peer_role", s.peerRole)
	} else {
		d.log.Info("sync link down alarm cleared")
	}
}

// tellLiveness reports the node's role to the engine when it changed.
func (d *Daemon) tellLiveness() {
	if d.lv == nil {
		return
	}
	r := livenessRole(d.core.State())
	p := d.core.Priority()
	if r == d.lvState.role && p == d.lvState.prio {
		return
	}
	d.lvState.role, d.lvState.prio = r, p
	d.lv.SetRole(r, p)
}

func livenessRole(s vrrp.State) liveness.Role {
	switch s {
	case vrrp.StateMaster:
		return liveness.RoleMaster
	case vrrp.StateBackup:
		return liveness.RoleBackup
	case vrrp.StateFault:
		return liveness.RoleFault
	}
	return liveness.RoleInit
}

// livenessStatus is the protocol's part of the status (nil when off).
func (d *Daemon) livenessStatus() *status.LivenessStatus {
	if d.lv == nil {
		return nil
	}
	snap := d.lv.Snapshot()
	d.lvMu.Lock()
	alarm, shared := d.lvAlarm, d.lvShared
	d.lvMu.Unlock()
	out := &status.LivenessStatus{
		Verdict:         snap.Verdict.String(),
		DetectMillis:    float64(d.cfg.Liveness.Detect) / float64(time.Millisecond),
		EffectiveMillis: float64(snap.Detect) / float64(time.Millisecond),
		SyncCarrier:     snap.Carrier,
		SyncLinkDown:    alarm,
		Shared:          shared,
		Quiet:           snap.Quiet,
		QuietOff:        snap.QuietOff,
		Stalls:          snap.Stalls,
		Confirms:        snap.Confirms,
		Sent:            map[string]uint64{},
		Received:        map[string]uint64{},
	}
	if snap.Negotiated {
		out.PeerRole = snap.PeerRole.String()
		out.PeerHeartbeatMillis = float64(snap.PeerInterval) / float64(time.Millisecond)
	}
	for _, p := range snap.Paths {
		addr := d.cfg.Liveness.Group.String() + " on " + d.cfg.SyncInterface
		if p.Path == liveness.PathPeer {
			addr = netip.AddrPortFrom(d.cfg.Liveness.PeerAddress, d.cfg.Liveness.Port).String()
		}
		out.Paths = append(out.Paths, status.LivenessPath{Path: p.Path.String(), Address: addr, Down: p.Down, LastHeard: p.LastHeard})
		out.Sent[p.Path.String()] = snap.Sent[p.Path]
		out.Received[p.Path.String()] = snap.Received[p.Path]
	}
	if len(snap.Drops) > 0 {
		out.Drops = map[string]uint64{}
		for r, n := range snap.Drops {
			out.Drops[string(r)] = n
		}
	}
	return out
}
