package peerview

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/vrrp"
)

// peerHealthSeed is a health document as a peer serves it, encoded from
// the type its daemon serves.
func peerHealthSeed(t testing.TB, state string, r *status.Readiness, rs ruleset.Status) []byte {
	t.Helper()
	ready, maint := true, false
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	doc := status.Health{
		Node: "fw2", Role: "backup", Time: at,
		Peer: status.HealthDBPeer{ID: "fw1", URL: "https://192.0.2.1:7443", Reachable: true, Role: "master", Revision: 41, LastContact: &at},
		DB:   &status.HealthDB{Revision: 41, PeerRevision: 41, Ready: &ready},
		VRRP: &status.HealthVRRP{
			State: state, Priority: 100, Readiness: r, Maintenance: &maint,
		},
		Ruleset: &rs,
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParsePeerHealth holds the decoder of the peer's GET /api/health
// answers to its contract: a refusal has one of the counted reasons; an
// accepted document has a VRRP state of package vrrp, survives
// parse(marshal(doc)) unchanged, and drives the peer view as that state
// (role, source, readiness, ruleset, split brain beside a local MASTER).
func FuzzParsePeerHealth(f *testing.F) {
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	f.Add(peerHealthSeed(f, "BACKUP", &status.Readiness{Held: true, Reason: "start", Waiting: []string{"DB sync: the master's full comparison"}, Since: since, Holds: 1},
		ruleset.Status{Fingerprint: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", CheckedAt: since}))
	f.Add(peerHealthSeed(f, "MASTER", &status.Readiness{Reason: "replications complete", Since: since, Holds: 3}, ruleset.Status{Error: "nft -s list ruleset: exit status 1"}))
	f.Add(peerHealthSeed(f, "FAULT", nil, ruleset.Status{}))
	f.Add(peerHealthSeed(f, "INIT", nil, ruleset.Status{Fingerprint: "x", Error: "ruleset is empty"}))
	f.Add([]byte(`{"node":"fw2","vrrp":{"state":"BACKUP","priority":100},"ruleset":{"fingerprint":"ab"}}`))
	f.Add([]byte(`{"vrrp":{"state":"SLEEPING"}}`))
	f.Add([]byte(`{"vrrp":null}`))
	f.Add([]byte(`{"vrrp":{"state":"MASTER","priority":256}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		doc, reason, err := parsePeerHealth(body)
		if (err == nil) != (reason == "") {
			t.Fatalf("reason %q with error %v", reason, err)
		}
		if err != nil {
			if reason != peerFailDecode && reason != peerFailNoState {
				t.Fatalf("refused with reason %q, not a counted one", reason)
			}
			return
		}
		if doc.VRRP == nil || !validPeerState(doc.VRRP.State) {
			t.Fatalf("accepted without a VRRP state: %s", body)
		}
		again, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("marshal %+v: %v", doc, err)
		}
		doc2, reason, err := parsePeerHealth(again)
		if err != nil {
			t.Fatalf("its own encoding %s refused: %s %v", again, reason, err)
		}
		if d := cmp.Diff(doc, doc2, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("parse(marshal(doc)) differs (-first +second):\n%s", d)
		}

		now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
		answer := &peerPoll{sent: now.Add(-100 * time.Millisecond), at: now.Add(-50 * time.Millisecond), doc: doc}
		v := derivePeerView(peerInputs{
			now: now, local: vrrp.StateMaster.String(), masterSince: now.Add(-time.Hour),
			advertTTL: 4 * time.Second, poll: answer, answer: answer, healthTTL: 3 * time.Second,
		})
		if v.role != strings.ToLower(doc.VRRP.State) || v.source != peerSourceHealth || !v.reachable {
			t.Fatalf("view of a fresh %s answer: role %q source %q reachable %v", doc.VRRP.State, v.role, v.source, v.reachable)
		}
		if v.readiness != doc.VRRP.Readiness || v.peerRuleset != doc.Ruleset {
			t.Fatalf("view does not carry the answer's readiness and ruleset: %+v", v)
		}
		if v.splitBrain != (doc.VRRP.State == vrrp.StateMaster.String()) {
			t.Fatalf("peer %s beside a local MASTER: split brain %v", doc.VRRP.State, v.splitBrain)
		}
		_, known := rulesetDrift(ruleset.Status{Fingerprint: "local"}, v.peerRuleset)
		if known != (doc.Ruleset != nil && doc.Ruleset.Fingerprint != "") {
			t.Fatalf("drift known %v with the peer's ruleset %+v", known, doc.Ruleset)
		}
		_ = v.readiness.String() // the status line renders whatever the peer sent
	})
}
