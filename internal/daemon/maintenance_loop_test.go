package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/peerview"
	"github.com/muros/muros-had/internal/status"
)

// fakePeerHealth answers this node's health polls with the other daemon's
// health document, as its DB sync listener would; it can be made to fail
// (the peer unreachable).
type fakePeerHealth struct {
	mu   sync.Mutex
	peer *loopNode
	down bool
}

func (h *fakePeerHealth) PeerHealth(context.Context) ([]byte, error) {
	h.mu.Lock()
	peer, down := h.peer, h.down
	h.mu.Unlock()
	if down || peer == nil {
		return nil, errors.New("dial tcp 10.0.0.2:7443: connect: no route to host")
	}
	doc := peer.d.healthDocument(dbsync.Status{Node: peer.name}, time.Now())
	doc.DB = nil // no DB replication in the loop tests
	return json.Marshal(doc)
}

func (h *fakePeerHealth) set(peer *loopNode, down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.peer, h.down = peer, down
}

// withPeerHealth makes the node poll h as its peer's health (the surface
// starts the peer checks, without listeners).
func (n *loopNode) withPeerHealth(h *fakePeerHealth) {
	n.d.opts.Adapters.Surface = func(d *Daemon, ctx context.Context) (closers, error) {
		return closers{d.peers.Start(ctx, peerview.Checks{Interval: 200 * time.Millisecond, Client: h}, d.stats, d.log)}, nil
	}
}

// renew replaces the node's daemon by a new one on the same configuration
// and state directory (a restart of the process).
func (n *loopNode) renew(t *testing.T) {
	t.Helper()
	d, err := New(n.d.opts)
	if err != nil {
		t.Fatal(err)
	}
	n.d = d
}

func (n *loopNode) maintenance(t *testing.T, on, force bool) status.MaintenanceAnswer {
	t.Helper()
	a := n.d.SetMaintenance(t.Context(), status.MaintenanceRequest{On: on, Force: force})
	if a.Error != "" {
		t.Fatalf("%s: maintenance %v: %s", n.name, on, a.Error)
	}
	return a
}

// maintPair is loopPair with each node polling the other's health.
func maintPair(t *testing.T, o1, o2 loopOpts) (*simLink, *loopNode, *loopNode, *fakePeerHealth) {
	link := newSimLink()
	fw1 := newLoopNode(t, link, "fw1", loopAddr1, loopAddr2, "master", o1)
	fw2 := newLoopNode(t, link, "fw2", loopAddr2, loopAddr1, "backup", o2)
	h1, h2 := &fakePeerHealth{peer: fw2}, &fakePeerHealth{peer: fw1}
	fw1.withPeerHealth(h1)
	fw2.withPeerHealth(h2)
	return link, fw1, fw2, h1
}

// TestLoopMaintenance: maintenance on hands over at once (the peer takes
// over after Skew_Time, as at a graceful stop), the node stays BACKUP
// although its priority would preempt, both statuses show it; off, it
// preempts back.
func TestLoopMaintenance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2, _ := maintPair(t, loopOpts{}, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")

		asked := time.Now()
		if a := fw1.maintenance(t, true, false); !a.On || len(a.Refused) > 0 {
			t.Fatalf("maintenance on: %+v", a)
		}
		for fw2.state() != "MASTER" {
			settle(10 * time.Millisecond)
		}
		if took, max := time.Since(asked), loopInterval; took > max {
			t.Errorf("fw2 took over %v after maintenance on; Skew_Time is %v", took, loopInterval*156/256)
		}
		settle(3 * time.Second) // fw1's 150 would preempt fw2's 100 within a second
		fw1.check(t, "BACKUP")
		fw2.check(t, "MASTER")
		if !fw1.d.Status().Maintenance {
			t.Error("fw1's status does not show its maintenance")
		}
		if m := fw2.d.Status().Peer.Maintenance; m == nil || !*m {
			t.Errorf("fw2's status does not show the peer's maintenance: %v", m)
		}
		if _, err := os.Stat(filepath.Join(fw1.cfg.StateDir, "maintenance")); err != nil {
			t.Errorf("maintenance not persisted: %v", err)
		}

		if a := fw1.maintenance(t, false, false); a.On {
			t.Fatalf("maintenance off: %+v", a)
		}
		settle(2 * time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		if fw1.d.Status().Maintenance {
			t.Error("fw1's status still shows maintenance")
		}
		if _, err := os.Stat(filepath.Join(fw1.cfg.StateDir, "maintenance")); !os.IsNotExist(err) {
			t.Errorf("maintenance file after off: %v", err)
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopMaintenanceAcrossRestart: a node restarted with the mode on
// starts BACKUP and stays so, even when the peer dies; off, it takes over.
func TestLoopMaintenanceAcrossRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, fw1, fw2, _ := maintPair(t, loopOpts{}, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.maintenance(t, true, false)
		settle(time.Second)
		fw2.check(t, "MASTER")
		fw1.halt(t)
		before := len(fw1.logText())
		fw1.renew(t)
		fw1.start(t)
		settle(3 * time.Second)
		fw1.check(t, "BACKUP")
		fw2.check(t, "MASTER")
		if !fw1.d.Status().Maintenance {
			t.Error("fw1's status does not show maintenance after the restart")
		}
		if after := fw1.logText()[before:]; strings.Contains(after, "to=MASTER") {
			t.Errorf("fw1 was MASTER after the restart:\n%s", after)
		}
		// The peer dies: a node in maintenance still does not take over.
		link.setCut(loopAddr2, true)
		fw2.halt(t)
		settle(2 * time.Second)
		fw1.check(t, "BACKUP")
		fw1.maintenance(t, false, false)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw1.halt(t)
	})
}

// TestLoopMaintenanceRefused: maintenance is refused while the peer could
// not take over cleanly (its replications incomplete, or it is
// unreachable), the node staying MASTER; --force overrides.
func TestLoopMaintenanceRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2, h1 := maintPair(t, loopOpts{}, loopOpts{manualReady: true})
		fw1.start(t)
		settle(time.Second)
		fw2.start(t)
		settle(time.Second) // fw2 BACKUP, waiting for the bulk and the DB
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")

		a := fw1.maintenance(t, true, false)
		if a.On || len(a.Refused) == 0 || !strings.Contains(strings.Join(a.Refused, "; "), "incomplete") {
			t.Fatalf("maintenance with the peer's replications incomplete: %+v", a)
		}
		h1.set(fw2, true)
		settle(time.Second)
		a = fw1.maintenance(t, true, false)
		if a.On || !strings.Contains(strings.Join(a.Refused, "; "), "unreachable") {
			t.Fatalf("maintenance with the peer unreachable: %+v", a)
		}
		settle(time.Second)
		fw1.check(t, "MASTER")
		if fw1.d.Status().Maintenance {
			t.Error("refused maintenance shown as on")
		}
		if _, err := os.Stat(filepath.Join(fw1.cfg.StateDir, "maintenance")); !os.IsNotExist(err) {
			t.Errorf("refused maintenance persisted: %v", err)
		}

		a = fw1.maintenance(t, true, true)
		if !a.On || len(a.Overridden) == 0 {
			t.Fatalf("forced maintenance: %+v", a)
		}
		settle(time.Second)
		fw1.check(t, "BACKUP")
		fw2.check(t, "MASTER")
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestMaintenanceRefusals: the peer views that refuse maintenance.
func TestMaintenanceRefusals(t *testing.T) {
	yes, no := true, false
	ready := &status.Readiness{Held: false, Reason: "replications complete"}
	tests := []struct {
		name string
		peer status.PeerStatus
		want string // a word of the reason; empty: accepted
	}{
		{"backup ready", status.PeerStatus{Polled: true, Reachable: true, Role: "backup", RoleSource: "health", Readiness: ready, DBReady: &yes}, ""},
		{"master by adverts", status.PeerStatus{Polled: true, Reachable: true, Role: "master", RoleSource: "adverts"}, ""},
		{"not polled", status.PeerStatus{Role: "unknown", RoleReason: "DB sync is off"}, "not polled"},
		{"unreachable", status.PeerStatus{Polled: true, Role: "not-master", RoleSource: "adverts", Error: "timeout"}, "unreachable"},
		{"stale answer", status.PeerStatus{Polled: true, Reachable: true, Role: "not-master", RoleSource: "adverts"}, "no fresh health answer"},
		{"fault", status.PeerStatus{Polled: true, Reachable: true, Role: "fault", RoleSource: "health"}, "FAULT"},
		{"bulk incomplete", status.PeerStatus{Polled: true, Reachable: true, Role: "backup", RoleSource: "health",
			Readiness: &status.Readiness{Held: true, Reason: "start", Waiting: []string{"conntrack: bulk"}}}, "conntrack: bulk"},
		{"db incomplete", status.PeerStatus{Polled: true, Reachable: true, Role: "backup", RoleSource: "health", DBReady: &no}, "DB copy"},
		{"peer in maintenance", status.PeerStatus{Polled: true, Reachable: true, Role: "backup", RoleSource: "health", Maintenance: &yes}, "maintenance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(maintenanceRefusals(tt.peer), "; ")
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("refusals %q, want one with %q", got, tt.want)
			}
		})
	}
}
