// Package status is muros-had's cluster status, SPEC "Operator surface":
// the document `muros-had status` prints, the status page shows and the
// DB sync's GET /api/health carries (status.go); the book the daemon's
// event loop reports into (book.go); the Prometheus registry (metrics.go);
// the listeners on the unix socket and the optional TCP /metrics port with
// the HTML page (server.go); and the client of `muros-had status`
// (client.go). The peer's part of the document comes from package
// peerview, through PeerSource.
package status

import (
	"strings"
	"time"

	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/internal/hooks"
	"github.com/muros/muros-had/internal/ruleset"
)

// Status is the Cluster status of SPEC "Operator surface": what `muros-had
// status` prints, the status page shows and /api/health returns.
type Status struct {
	Node     string    `json:"node"`
	Role     string    `json:"role"`  // configured role: master | backup
	State    string    `json:"state"` // the sync group's VRRP state now
	Priority uint8     `json:"priority"`
	Since    time.Time `json:"since"` // daemon start
	// Maintenance: this node is in maintenance mode (`muros-had
	// maintenance on`): it handed over and stays BACKUP until turned off.
	Maintenance bool `json:"maintenance"`
	// Scheduling is the process's CPU scheduling (config scheduling:), or
	// why it could not be set.
	Scheduling   string          `json:"scheduling,omitempty"`
	Peer         PeerStatus      `json:"peer"`
	LastFailover *Failover       `json:"last_failover,omitempty"`
	VIPs         []VIPStatus     `json:"vips"`
	Links        map[string]bool `json:"links"` // tracked interface -> up
	Adverts      AdvertStats     `json:"adverts"`
	Foreign      []ForeignRouter `json:"foreign_routers,omitempty"`
	// VIPError is the last failed claim or release, retried every second
	// until it succeeds; empty when the kernel agrees with the state.
	VIPError string `json:"vip_error,omitempty"`
	// Checks are the health checks in configuration order (checks.go).
	Checks []CheckStatus `json:"checks,omitempty"`
	// Readiness: whether preemption is held for the replications (nil
	// when neither conntrack nor DB sync is on).
	Readiness *Readiness `json:"readiness,omitempty"`
	Conntrack any        `json:"conntrack,omitempty"`
	DB        any        `json:"db,omitempty"`
	// Liveness is the peer-liveness protocol (nil when it is off).
	Liveness *LivenessStatus `json:"liveness,omitempty"`
	// SplitBrain: this node and the peer are both MASTER (package peerview).
	SplitBrain Alarm `json:"split_brain"`
	// Ruleset compares the nftables ruleset fingerprints of both nodes.
	Ruleset RulesetCompare `json:"ruleset"`
	// Hooks is the last result of every role hook that ran (package
	// hooks), by name.
	Hooks []hooks.Result `json:"hooks,omitempty"`
	// Timeline: the sync group's last TimelineLen changes of state that
	// were failovers, oldest first (LastFailover is the last one).
	Timeline []Failover `json:"timeline,omitempty"`
	// Time is when the document was taken (this node's clock): the ages
	// the text and the page show are relative to it.
	Time time.Time `json:"time,omitzero"`
}

// Alarm is a reported condition: active or not, and since when.
type Alarm struct {
	Active bool      `json:"active"`
	Since  time.Time `json:"since,omitzero"` // start of the current verdict
}

// RulesetCompare is this node's ruleset fingerprint beside the peer's.
type RulesetCompare struct {
	Local ruleset.Status `json:"local"`
	// Peer is the fingerprint in the peer's last fresh health answer.
	Peer *ruleset.Status `json:"peer,omitempty"`
	// Drift: the fingerprints differ (reported once they differed for a
	// grace period; while either is unknown the last verdict stands).
	Drift      bool      `json:"drift"`
	DriftSince time.Time `json:"drift_since,omitzero"`
	// Off says why there is nothing to compare (check off, no DB sync).
	Off string `json:"off,omitempty"`
}

// Readiness says whether this node's VRRP preemption is held until its
// replications are complete (at start and at every return to BACKUP), and
// why.
type Readiness struct {
	Held bool `json:"held"`
	// Reason: while held, what re-armed the hold (start, back from FAULT,
	// stepped down from MASTER); once allowed, what lifted it (replications
	// complete, startup timeout).
	Reason string `json:"reason"`
	// Waiting lists what a held node still waits for.
	Waiting []string  `json:"waiting,omitempty"`
	Since   time.Time `json:"since"`
	Holds   uint64    `json:"holds"` // holds since start (each entry into BACKUP)
}

// String is the one-line text form, e.g. for `muros-had status`.
func (r *Readiness) String() string {
	if r == nil {
		return "not held (no replication on)"
	}
	since := r.Since.Format(time.RFC3339)
	if !r.Held {
		return "preemption allowed since " + since + ": " + r.Reason
	}
	s := "preemption HELD since " + since + " (" + r.Reason + ")"
	if len(r.Waiting) > 0 {
		s += ": waiting for " + strings.Join(r.Waiting, "; ")
	}
	return s
}

// PeerStatus is what this node knows of the other one (package peerview).
type PeerStatus struct {
	Management string `json:"management"` // configured peer management IP
	Address    string `json:"address,omitempty"`
	// Role: master | backup | fault | init (its own state, from its health
	// answer or, for master, its adverts) | leaving (priority 0 advert) |
	// not-master (its adverts stopped, nothing newer) | unknown.
	Role string `json:"role"`
	// RoleSource: adverts | health; RoleReason says why the role is not
	// better known.
	RoleSource string    `json:"role_source,omitempty"`
	RoleReason string    `json:"role_reason,omitempty"`
	Priority   *uint8    `json:"priority,omitempty"`
	LastAdvert time.Time `json:"last_advert,omitzero"`
	// Polled: this node polls the peer's GET /api/health (DB sync runs).
	// Reachable: the last poll was answered; Error is that poll's failure.
	Polled    bool   `json:"polled"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// LastHeard is the last advert or health answer, whichever is newer.
	LastHeard time.Time `json:"last_heard,omitzero"`
	// Readiness and DBReady are the peer's own, from a fresh answer.
	Readiness *Readiness `json:"readiness,omitempty"`
	DBReady   *bool      `json:"db_ready,omitempty"`
	// Maintenance is the peer's maintenance mode, from a fresh answer.
	Maintenance *bool `json:"maintenance,omitempty"`
}

// Failover is the last change of the group's state.
type Failover struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
}

// VIPStatus is one virtual IP and its VRRP instance.
type VIPStatus struct {
	VRID      uint8  `json:"vrid"`
	Interface string `json:"interface"`
	Address   string `json:"address"`
	State     string `json:"state"`
}

// AdvertStats counts adverts sent and dropped by reason.
type AdvertStats struct {
	Sent       uint64            `json:"sent"`
	SendErrors uint64            `json:"send_errors"`
	Rejected   map[string]uint64 `json:"rejected"`
}

// ForeignRouter is a router that advertises one of our VRIDs with addresses
// that are not ours: a VRID collision on the link.
type ForeignRouter struct {
	VRID     uint8     `json:"vrid"`
	Address  string    `json:"address"`
	LastSeen time.Time `json:"last_seen"`
}

// ConntrackStatus is the conntrack part of the cluster status.
type ConntrackStatus struct {
	Role             string  `json:"role"` // sender (master) | receiver (backup)
	BulkSynced       bool    `json:"bulk_synced"`
	Flows            int     `json:"flows"`
	LagMS            float64 `json:"lag_ms"`
	DatagramsSent    uint64  `json:"datagrams_sent"`
	DatagramsRecv    uint64  `json:"datagrams_received"`
	RecordsApplied   uint64  `json:"records_applied"`
	Lost             uint64  `json:"lost"`
	Repaired         uint64  `json:"repaired"`
	Resyncs          uint64  `json:"resyncs"`
	ListenerRestarts uint64  `json:"listener_restarts"`
	InjectErrors     uint64  `json:"inject_errors"`
	Forged           uint64  `json:"forged_dropped"`
	// Sweeps: master, refresh sweeps of the kernel table completed.
	Sweeps uint64 `json:"sweeps"`
	// InjectRedials: backup, kernel batch sockets replaced after a failed
	// exchange (that batch went one record at a time).
	InjectRedials uint64 `json:"inject_redials"`
	// RecordsFiltered: backup, received records its own filter excludes.
	RecordsFiltered uint64 `json:"records_filtered"`
	// StateErrors: failed writes of the sync epochs to the state directory.
	StateErrors uint64            `json:"state_errors"`
	Rejected    map[string]uint64 `json:"rejected,omitempty"`
	// Waiting: backup, what the open readiness wait waits for.
	Waiting string `json:"waiting,omitempty"`
	// Handshake: backup, verified (it follows a master that answered its
	// nonce) or asking (it waits for the echo).
	Handshake string `json:"handshake,omitempty"`
	// FollowedEpoch: backup, the master's epoch followed; master, the
	// backup's control epoch. PeerFloor: the highest epoch ever accepted
	// from the peer; a followed epoch below it means the peer lost its
	// state.
	FollowedEpoch uint64 `json:"followed_epoch"`
	PeerFloor     uint64 `json:"peer_floor"`
	// FromOtherMaster: master, another sender's datagrams dropped, by
	// type (split brain or a role swap in flight).
	FromOtherMaster map[string]uint64 `json:"from_other_master,omitempty"`
	// StaleResyncs: master, RESYNCs of stale incarnations by outcome
	// (echoed, rate_limited); none gets a bulk.
	StaleResyncs map[string]uint64 `json:"stale_resyncs,omitempty"`
	// PeerProtocolVersion: the peer's sync protocol version (0: not heard
	// yet); another than this node's pauses replication.
	PeerProtocolVersion uint8 `json:"peer_protocol_version"`
	// NonceErrors: handshake nonces that could not be drawn.
	NonceErrors uint64 `json:"nonce_errors"`
}

// FromConntrack is the status form of the conntrack replication's figures.
func FromConntrack(s ctsync.Status) *ConntrackStatus {
	role := "receiver"
	if s.Master {
		role = "sender"
	}
	return &ConntrackStatus{
		Role: role, BulkSynced: s.BulkSynced, Flows: s.Flows, LagMS: float64(s.Lag) / float64(time.Millisecond),
		DatagramsSent: s.DatagramsSent, DatagramsRecv: s.DatagramsReceived, RecordsApplied: s.RecordsApplied,
		Lost: s.Lost, Repaired: s.Repaired, Resyncs: s.Resyncs, ListenerRestarts: s.ListenerRestarts,
		InjectErrors: s.InjectErrors, Forged: s.Forged, Sweeps: s.Sweeps, InjectRedials: s.InjectRedials,
		RecordsFiltered: s.RecordsFiltered, StateErrors: s.StateErrors, Rejected: s.Rejected,
		Waiting: s.Waiting, Handshake: s.Handshake, FollowedEpoch: s.FollowedEpoch, PeerFloor: s.PeerFloor,
		FromOtherMaster: s.FromOtherMaster, StaleResyncs: s.StaleResyncs,
		PeerProtocolVersion: s.PeerProtocolVersion, NonceErrors: s.NonceErrors,
	}
}
