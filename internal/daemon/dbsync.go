package daemon

import (
	"context"
	"net"
	"time"

	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/vrrp"
)

// dbReplica is what the daemon needs of the DB replication (package dbsync).
// Ready is closed once this node holds the master's content (or may preempt
// anyway): a returning node that preempted earlier would push its stale DB
// over the edits made on the peer while it was away. Rearm opens a new wait
// when the node returns to BACKUP without restarting.
type dbReplica interface {
	Run(ctx context.Context) error
	Serve(ctx context.Context, ln net.Listener) error
	SetRole(master bool)
	Ready() <-chan struct{}
	Rearm() <-chan struct{}
	Status() dbsync.Status
}

// healthExtras is the VRRP and conntrack part of GET /api/health.
func (d *Daemon) healthExtras() map[string]any {
	st := d.statusCore()
	m := map[string]any{
		"vrrp": map[string]any{
			"state":         st.State,
			"priority":      st.Priority,
			"vips":          st.VIPs,
			"last_failover": st.LastFailover,
			"peer":          st.Peer,
			"readiness":     st.Readiness,
			"split_brain":   st.SplitBrain,
			"maintenance":   st.Maintenance,
		},
		// The peer compares this fingerprint with its own (package peerview).
		"ruleset": st.Ruleset.Local,
	}
	if st.Conntrack != nil {
		m["conntrack"] = st.Conntrack
	}
	return m
}

// peerAlive tells the DB sync whether the peer is known alive: in BACKUP
// its adverts are heard, and a DB sync that does not answer keeps the hold
// (dbsync ready.go).
func (d *Daemon) peerAlive() bool {
	return d.status.Snapshot(time.Now()).State == vrrp.StateBackup.String()
}
