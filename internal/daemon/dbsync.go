package daemon

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/peerlink"
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

// healthDocument is this node's GET /api/health: the DB replication's
// part from db, the sync group's, the ruleset's and the conntrack's from
// the status.
func (d *Daemon) healthDocument(db dbsync.Status, now time.Time) status.Health {
	st := d.statusCore()
	maintenance := st.Maintenance
	ready := db.Ready
	h := status.Health{
		Node: db.Node,
		Role: db.Role,
		Time: now.UTC(),
		Peer: status.HealthDBPeer{
			ID: db.Peer.ID, URL: db.Peer.URL, Reachable: db.Peer.Reachable, Role: db.Peer.Role,
			Revision: db.Peer.Revision, LastContact: db.Peer.LastContact,
		},
		DB: &status.HealthDB{
			Revision:     db.Revision,
			PeerRevision: db.Peer.Revision,
			PendingPaths: db.PendingPaths,
			LagMillis:    db.LagMillis,
			LastSync:     db.LastSync,
			LastApply:    db.LastApply,
			InSync:       db.Role == "master" && db.PendingPaths == 0 && db.Peer.Reachable && db.LastSync != nil,
			Ready:        &ready,
		},
		VRRP: &status.HealthVRRP{
			State:        st.State,
			Priority:     st.Priority,
			VIPs:         st.VIPs,
			LastFailover: st.LastFailover,
			Peer:         st.Peer,
			Readiness:    st.Readiness,
			SplitBrain:   st.SplitBrain,
			Maintenance:  &maintenance,
		},
		// The peer compares this fingerprint with its own (package peerview).
		Ruleset: &st.Ruleset.Local,
	}
	if st.Conntrack != nil {
		h.Conntrack = st.Conntrack
	}
	return h
}

// healthHandler answers GET /api/health from db's status and the daemon's.
func (d *Daemon) healthHandler(db *dbsync.Node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peerlink.WriteJSON(w, http.StatusOK, d.healthDocument(db.Status(), time.Now()))
	})
}

// peerAlive tells the DB sync whether the peer is known alive: in BACKUP
// its adverts are heard, and a DB sync that does not answer keeps the hold
// (dbsync ready.go).
func (d *Daemon) peerAlive() bool {
	return d.status.Snapshot(time.Now()).State == vrrp.StateBackup.String()
}
