package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/health"
	"github.com/muros/muros-had/internal/replicas"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/internal/vrrpconn"
	"github.com/muros/muros-had/liveness"
	"github.com/muros/muros-had/peerlink"
	"github.com/muros/muros-had/vip"
	"github.com/muros/muros-had/vrrp"
	"github.com/vishvananda/netlink"
)

// The adapters: what the loop needs of the kernel and of the replications,
// each as small as the loop's use of it. Production implementations are
// internal/vrrpconn, package vip, ctsync and dbsync; the loop tests
// (loop_test.go) put a simulated link and recording fakes in their place.

// advertConn is the VRRP socket of one address family on the sync
// interface.
type advertConn interface {
	// TryRead reads one datagram of proto if one is queued (ok false:
	// none); the loop's wait says when to try (Watch).
	TryRead(proto int, b, oob []byte) (p vrrpconn.Packet, ok bool, err error)
	Write(ctx context.Context, proto int, pkt []byte, dst netip.Addr) error
	Source() netip.Addr
	Group() netip.Addr
	Close() error
}

// vipManager holds the node's VIPs.
type vipManager interface {
	Claim(ctx context.Context) error
	Release(ctx context.Context) error
	Announce(ctx context.Context) error
	ReleaseStale(ctx context.Context) ([]vip.Removed, error)
	SetSchedule(vip.Schedule) error
	Close() error
}

// linkWatcher reports changes of the watched interfaces.
type linkWatcher interface {
	Run(ctx context.Context, out chan<- vip.LinkEvent) error
}

// Adapters build the daemon's connections to the world. A nil field takes
// the real one.
type Adapters struct {
	// SyncLink waits for the sync interface's address of family fam (the
	// adverts' source) and returns it with the interface's index.
	SyncLink func(ctx context.Context, ifname string, fam vrrp.Family) (netip.Addr, int, error)
	// Probe builds a health check's probe (health.NewProbe).
	Probe func(config.Check) (health.Probe, error)
	// OpenConn opens the VRRP socket bound to ifname with source src.
	OpenConn func(ifname string, src netip.Addr) (advertConn, error)
	// Wait builds the event loop's wait, which watches the advert
	// sockets OpenConn opened (wait.go).
	Wait func() (loopWait, error)
	// VIPs builds the VIP manager.
	VIPs func(vip.Config) (vipManager, error)
	// Watch builds the link monitor.
	Watch func(vip.MonitorConfig) (linkWatcher, error)
	// Conntrack builds the conntrack replication (conntrack.enabled).
	Conntrack func(*config.Config, *Daemon) (conntrackSync, error)
	// DB builds the DB replication and its listener (dbsync.enabled).
	DB func(*config.Config, *Daemon) (dbReplica, net.Listener, error)
	// Surface starts the status and metrics listeners and the peer checks.
	Surface func(*Daemon, context.Context) (closers, error)
	// Hooks runs the role hooks (hooks.Runner: time-sharing processes).
	Hooks hookRunner
	// Liveness builds the peer-liveness protocol's engine
	// (liveness.enabled) with its key.
	// report receives verdicts and path alarms, on the engine's goroutine.
	Liveness func(c *config.Config, key []byte, report func(liveness.Action)) (peerLiveness, error)
}

// withDefaults fills the nil fields with the real adapters. The returned
// function releases what they share (the netlink handle).
func (a Adapters) withDefaults() (Adapters, func(), error) {
	var nl *netlink.Handle
	handle := func() (*netlink.Handle, error) {
		if nl != nil {
			return nl, nil
		}
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("daemon: netlink: %w", err)
		}
		nl = h
		return h, nil
	}
	closeAll := func() {
		if nl != nil {
			nl.Close()
		}
	}
	if a.SyncLink == nil || a.VIPs == nil || a.Watch == nil {
		if _, err := handle(); err != nil {
			return a, closeAll, err
		}
	}
	if a.SyncLink == nil {
		a.SyncLink = func(ctx context.Context, ifname string, fam vrrp.Family) (netip.Addr, int, error) {
			return vrrpconn.WaitSource(ctx, nl, ifname, fam)
		}
	}
	if a.OpenConn == nil {
		a.OpenConn = func(ifname string, src netip.Addr) (advertConn, error) {
			c, err := vrrpconn.Open(ifname, src)
			if err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	if a.Wait == nil {
		a.Wait = newPollWait
	}
	if a.VIPs == nil {
		a.VIPs = func(c vip.Config) (vipManager, error) {
			m, err := vip.New(nl, c)
			if err != nil {
				return nil, err
			}
			return m, nil
		}
	}
	if a.Watch == nil {
		a.Watch = func(c vip.MonitorConfig) (linkWatcher, error) {
			m, err := vip.NewMonitor(nl, c)
			if err != nil {
				return nil, err
			}
			return m, nil
		}
	}
	if a.Liveness == nil {
		a.Liveness = newLiveness
	}
	if a.Conntrack == nil {
		a.Conntrack = func(c *config.Config, d *Daemon) (conntrackSync, error) {
			ct, err := replicas.NewConntrack(c, d.master, d.log.With("component", "ctsync"))
			if err != nil {
				return nil, err
			}
			return ct, nil
		}
	}
	if a.DB == nil {
		a.DB = func(c *config.Config, d *Daemon) (dbReplica, net.Listener, error) {
			db, err := replicas.NewDB(c, d.log.With("component", "dbsync"), d.peerAlive)
			if err != nil {
				return nil, nil, err
			}
			// The health document shares the peer link with the sync routes.
			db.Link().Handle("GET "+status.PathHealth, peerlink.AnyToken, d.healthHandler(db))
			ln, err := net.Listen("tcp", c.DBSync.Listen)
			if err != nil {
				return nil, nil, fmt.Errorf("daemon: dbsync listener: %w", err)
			}
			return db, ln, nil
		}
	}
	if a.Surface == nil {
		a.Surface = (*Daemon).startStatusServers
	}
	return a, closeAll, nil
}
