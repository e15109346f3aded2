package status

import (
	"time"

	"github.com/muros/muros-had/internal/ruleset"
)

// PathHealth is the peer listener's health endpoint (package peerlink,
// any valid token): the document the peer polls (package peerview) and an
// operator reads with `muros-had token`'s token.
const PathHealth = "/api/health"

// Health is the body of GET /api/health: the daemon serves it, the peer's
// poll decodes it (package peerview). Fields a node of an older version
// may leave out are pointers: nil is "not said", never a default.
type Health struct {
	Node string `json:"node"`
	// Role is the DB replication's role ("master", "backup").
	Role string `json:"role"`
	// Time is the serving node's clock: the peer measures clock skew from
	// it (package dbsync).
	Time time.Time `json:"time"`
	// Peer is the DB replication's view of its peer.
	Peer HealthDBPeer `json:"peer"`
	DB   *HealthDB    `json:"db"`
	VRRP *HealthVRRP  `json:"vrrp"`
	// Ruleset is this node's nftables ruleset fingerprint; the peer
	// compares it with its own (ruleset drift).
	Ruleset   *ruleset.Status `json:"ruleset"`
	Conntrack any             `json:"conntrack,omitempty"`
}

// HealthVRRP is the sync group's part of the health document.
type HealthVRRP struct {
	State        string      `json:"state"`
	Priority     uint8       `json:"priority"`
	VIPs         []VIPStatus `json:"vips"`
	LastFailover *Failover   `json:"last_failover"`
	Peer         PeerStatus  `json:"peer"`
	Readiness    *Readiness  `json:"readiness"`
	SplitBrain   Alarm       `json:"split_brain"`
	// Maintenance: the node is in maintenance mode (nil from a version
	// without it: unknown).
	Maintenance *bool `json:"maintenance"`
}

// HealthDB is the DB replication's part of the health document.
type HealthDB struct {
	Revision     uint64     `json:"revision"`
	PeerRevision uint64     `json:"peer_revision"`
	PendingPaths int        `json:"pending_paths"`
	LagMillis    int64      `json:"lag_ms"`
	LastSync     *time.Time `json:"last_sync"`
	LastApply    *time.Time `json:"last_apply"`
	InSync       bool       `json:"in_sync"`
	// Ready: the node holds the master's content or may preempt anyway
	// (nil from a version without it).
	Ready *bool `json:"ready"`
}

// HealthDBPeer is what the DB replication knows of its peer.
type HealthDBPeer struct {
	ID          string     `json:"id"`
	URL         string     `json:"url"`
	Reachable   bool       `json:"reachable"`
	Role        string     `json:"role,omitempty"`
	Revision    uint64     `json:"revision"`
	LastContact *time.Time `json:"last_contact,omitempty"`
}
