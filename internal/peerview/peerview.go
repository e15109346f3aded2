// Package peerview is what this node knows of the other one and the two
// alarms derived from it: split brain (both nodes MASTER) and ruleset drift
// (their nftables ruleset fingerprints differ). A tracker fed by typed
// events (an advert heard, a health poll's outcome, a change of the local
// group state, the local ruleset fingerprint) derives the view at a given
// time and steps the alarms (pure: time is an argument); Monitor guards it
// for the goroutines that poll the peer and tick the alarms (run.go) and
// gives the status document its peer part (status.PeerSource).
//
// The peer view comes from two sources.
//
//   - VRRP adverts on the sync link. Only a master advertises, so they say
//     "the peer is master" (or, with priority 0, "it is leaving") and
//     nothing else; they are fresh for advertTTL (4 intervals + 1 s).
//   - GET /api/health on the peer's HTTPS listener (DB sync's, pinned
//     certificate and a short-lived JWT), polled every
//     peer_check.interval: the peer's own VRRP state (MASTER, BACKUP,
//     FAULT, INIT), its readiness and its ruleset fingerprint. An answer
//     is fresh for 2 intervals plus the request timeout.
//
// An answer is no longer fresh once a later request failed. When both are
// fresh the newer one wins: a master's adverts arrive every
// advert interval, so they are the fresher source for "the peer is master",
// and a health answer received after the last advert says the peer stopped
// being one. Neither fresh: "not-master" once adverts were heard (they
// stopped), else "unknown" with the reason (no DB sync, or the health
// request's error).
//
// Split brain is this node MASTER while the peer is MASTER too (both hold
// the VIPs: the adverts do not get through, e.g. the sync link is cut while
// the management link works, or one direction only). A takeover looks the
// same for one advert interval, so the evidence must be recent: an advert
// received, or a health request sent, at least advertTTL after this
// node became master, time enough for a working election to have ended the
// overlap. The daemon only reports it (status, metric, one ERROR line at
// each end): neither node can tell from here which of the two the LAN
// should keep, and a step-down decided over the management link by both
// nodes at once would leave the VIPs with nobody.
package peerview

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/vrrp"
)

// Peer roles of the view, lower case as VRRP's own view always was.
const (
	peerRoleMaster    = "master"
	peerRoleLeaving   = "leaving"    // priority 0 advert: the master is stopping
	peerRoleNotMaster = "not-master" // its adverts stopped, nothing newer known
	peerRoleUnknown   = "unknown"
)

// Where the peer's role came from.
const (
	peerSourceAdverts = "adverts"
	peerSourceHealth  = "health"
)

// Reasons a health poll gave no usable answer (counted in
// muros_had_peer_health_failures_total).
const (
	peerFailRequest = "request" // transport error or HTTP status
	peerFailDecode  = "decode"  // not the JSON document expected
	peerFailNoState = "no_vrrp_state"
)

var errNoVRRPState = errors.New("health document has no vrrp.state")

// parsePeerHealth decodes a health document (the type the peer's daemon
// serves); on failure it returns the reason it is counted under.
func parsePeerHealth(body []byte) (status.Health, string, error) {
	var doc status.Health
	if err := json.Unmarshal(body, &doc); err != nil {
		return status.Health{}, peerFailDecode, fmt.Errorf("peer health: %w", err)
	}
	if doc.VRRP == nil || !validPeerState(doc.VRRP.State) {
		return status.Health{}, peerFailNoState, errNoVRRPState
	}
	return doc, "", nil
}

// validPeerState accepts the VRRP state names of package vrrp.
func validPeerState(s string) bool {
	switch s {
	case vrrp.StateInitialize.String(), vrrp.StateBackup.String(), vrrp.StateMaster.String(), vrrp.StateFault.String():
		return true
	}
	return false
}

// peerPoll is one health request and its outcome.
type peerPoll struct {
	sent, at time.Time // request started, answer or error received
	err      string
	doc      status.Health // set when err is empty
}

// peerInputs is everything the peer view is derived from.
type peerInputs struct {
	now         time.Time
	local       string    // this node's group state (vrrp.State.String())
	masterSince time.Time // when this node last became MASTER (zero: not MASTER)

	advertAt  time.Time // last advert from the peer (zero: never)
	advertPri uint8
	advertTTL time.Duration // how long an advert says "master" (4 intervals + 1 s)

	poll      *peerPoll // the last health request (nil: none yet)
	answer    *peerPoll // the last answered one
	healthTTL time.Duration
	// healthOff says why nobody polls the peer's health (no DB sync).
	healthOff string
}

// peerView is the derived view.
type peerView struct {
	role, source, reason string
	reachable            bool
	err                  string
	lastHeard            time.Time
	readiness            *status.Readiness
	dbReady              *bool
	maintenance          *bool // the peer's maintenance mode
	// splitBrain: this node and the peer are both MASTER, on evidence newer
	// than the overlap of a working takeover.
	splitBrain bool
	// peerRuleset is the peer's fingerprint from a fresh answer.
	peerRuleset *ruleset.Status
}

// derivePeerView combines adverts and health answers (see the package
// comment).
func derivePeerView(in peerInputs) peerView {
	var v peerView
	advFresh := !in.advertAt.IsZero() && in.now.Sub(in.advertAt) <= in.advertTTL
	healthFresh := in.answer != nil && in.now.Sub(in.answer.at) <= in.healthTTL
	if healthFresh && in.poll != nil && in.poll.err != "" && in.poll.at.After(in.answer.at) {
		// A later request failed: the peer does not answer now (a crashed
		// box first looks like this), so its last answer no longer speaks
		// for it. Without this a dead master stayed "master (from its
		// health answer)" for the answer's whole TTL.
		healthFresh = false
	}
	useAdvert := advFresh && (!healthFresh || in.advertAt.After(in.answer.at))
	var evidence time.Time
	switch {
	case useAdvert:
		v.role, v.source, evidence = peerRoleMaster, peerSourceAdverts, in.advertAt
		if in.advertPri == 0 {
			v.role = peerRoleLeaving
		}
	case healthFresh:
		v.role, v.source, evidence = strings.ToLower(in.answer.doc.VRRP.State), peerSourceHealth, in.answer.sent
	case !in.advertAt.IsZero():
		v.role, v.source = peerRoleNotMaster, peerSourceAdverts
		v.reason = "its adverts stopped " + in.now.Sub(in.advertAt).Round(time.Millisecond).String() + " ago"
	default:
		v.role = peerRoleUnknown
	}
	if v.source != peerSourceHealth {
		switch {
		case in.healthOff != "":
			v.reason = joinReason(v.reason, in.healthOff)
		case in.poll != nil && in.poll.err != "":
			v.reason = joinReason(v.reason, "health: "+in.poll.err)
		case in.poll == nil:
			v.reason = joinReason(v.reason, "no health answer yet")
		}
		if v.role == peerRoleUnknown && in.healthOff != "" {
			v.reason = joinReason("no adverts heard (only a master sends them)", in.healthOff)
		}
	}
	if in.poll != nil {
		v.reachable = in.poll.err == ""
		v.err = in.poll.err
	}
	v.lastHeard = in.advertAt
	if in.answer != nil && in.answer.at.After(v.lastHeard) {
		v.lastHeard = in.answer.at
	}
	if healthFresh {
		v.readiness = in.answer.doc.VRRP.Readiness
		v.maintenance = in.answer.doc.VRRP.Maintenance
		if in.answer.doc.DB != nil {
			v.dbReady = in.answer.doc.DB.Ready
		}
		v.peerRuleset = in.answer.doc.Ruleset
	}
	v.splitBrain = in.local == vrrp.StateMaster.String() && v.role == peerRoleMaster &&
		!in.masterSince.IsZero() && !evidence.Before(in.masterSince.Add(in.advertTTL))
	return v
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + "; " + b
}

// rulesetDrift compares the two fingerprints; known is false while either
// is missing (not computed yet, nft failing, peer silent).
func rulesetDrift(local ruleset.Status, peer *ruleset.Status) (drift, known bool) {
	if local.Fingerprint == "" || peer == nil || peer.Fingerprint == "" {
		return false, false
	}
	return local.Fingerprint != peer.Fingerprint, true
}

// alarm is a condition reported once when it starts and once when it ends.
// It starts after holding for a grace period (a transient difference, e.g.
// the same ruleset change applied to both nodes a few seconds apart, is not
// reported); while unknown, the last verdict stands.
type alarm struct {
	on      bool
	pending time.Time // the condition holds since, not yet reported
	since   time.Time // the current verdict since
}

// step feeds one observation; it returns +1 when the alarm starts, -1 when
// it ends, else 0.
func (a *alarm) step(cond, known bool, now time.Time, grace time.Duration) int {
	switch {
	case !known:
		a.pending = time.Time{}
		return 0
	case cond && a.on:
		return 0
	case cond:
		if a.pending.IsZero() {
			a.pending = now
		}
		if now.Sub(a.pending) < grace {
			return 0
		}
		a.on, a.since, a.pending = true, a.pending, time.Time{}
		return 1
	default:
		a.pending = time.Time{}
		if a.on {
			a.on, a.since = false, now
			return -1
		}
		return 0
	}
}
