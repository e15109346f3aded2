package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/internal/status"
)

// TestPrintStatusGolden compares the text form of representative statuses
// with testdata/status/*.txt (-update rewrites them).
func TestPrintStatusGolden(t *testing.T) {
	at := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	pri := uint8(100)
	ready := true
	base := func() status.Status {
		return status.Status{
			Node: "fw1", Role: "master", State: "MASTER", Priority: 150, Since: at, Scheduling: "SCHED_RR priority 40",
			Peer:         status.PeerStatus{Management: "192.168.255.2", Polled: true},
			VIPs:         []status.VIPStatus{{VRID: 10, Interface: "wan0", Address: "203.0.113.1/24", State: "MASTER"}},
			LastFailover: &status.Failover{Time: at, From: "BACKUP", To: "MASTER", Reason: "master down"},
			Adverts:      status.AdvertStats{Sent: 42, Rejected: map[string]uint64{"auth": 1}},
		}
	}
	tests := []struct {
		name string
		st   func() status.Status
	}{
		{"master-with-backup-peer", func() status.Status {
			st := base()
			st.Peer.Role, st.Peer.RoleSource, st.Peer.Reachable, st.Peer.LastHeard = "backup", "health", true, at.Add(time.Second)
			st.Peer.Readiness = &status.Readiness{Held: false, Reason: "replications complete", Since: at}
			st.Peer.DBReady = &ready
			st.Readiness = &status.Readiness{Held: false, Reason: "replications complete", Since: at}
			st.Ruleset = status.RulesetCompare{
				Local: ruleset.Status{Fingerprint: "aa11", CheckedAt: at},
				Peer:  &ruleset.Status{Fingerprint: "aa11", CheckedAt: at},
			}
			return st
		}},
		{"split-brain-and-drift", func() status.Status {
			st := base()
			st.Peer.Role, st.Peer.RoleSource, st.Peer.Reachable, st.Peer.LastHeard = "master", "health", true, at.Add(time.Second)
			st.Peer.Address, st.Peer.Priority, st.Peer.LastAdvert = "192.168.255.2", &pri, at
			st.SplitBrain = status.Alarm{Active: true, Since: at.Add(2 * time.Second)}
			st.Ruleset = status.RulesetCompare{
				Local: ruleset.Status{Fingerprint: "aa11", CheckedAt: at},
				Peer:  &ruleset.Status{Fingerprint: "bb22", CheckedAt: at},
				Drift: true, DriftSince: at.Add(3 * time.Second),
			}
			return st
		}},
		{"db-skew-conflicts", func() status.Status {
			st := base()
			st.Peer.Role, st.Peer.RoleSource, st.Peer.Reachable, st.Peer.LastHeard = "backup", "health", true, at.Add(time.Second)
			st.DB = &dbsync.Status{Node: "fw1", Role: "master", Revision: 9,
				Conflicts: []string{"muros-db/rules.conf"},
				ClockSkew: &dbsync.ClockSkew{OffsetMillis: -10002, RTTMillis: 1, Measured: at,
					Warning: "clock skew with the peer above the token leeway 5s: one node refuses the other's tokens (token_not_yet_valid/token_expired); run NTP on both nodes or raise dbsync.jwt.leeway"}}
			return st
		}},
		{"health-checks", func() status.Status {
			st := base()
			st.Priority = 90
			st.Peer.Role, st.Peer.RoleSource, st.Peer.Reachable, st.Peer.LastHeard = "backup", "health", true, at.Add(time.Second)
			st.Checks = []status.CheckStatus{
				{Name: "upstream", Kind: "ping", Target: "ping 192.0.2.1 via wan0", Effect: "fault", State: "ok", Since: at,
					Last: "timed out", LastAt: at.Add(4 * time.Second), LastTook: time.Second, Run: 1},
				{Name: "dns", Kind: "process", Target: "process unbound", Effect: "weight -60", State: "failing", Since: at.Add(2 * time.Second),
					Last: "no process named unbound", LastAt: at.Add(4 * time.Second), LastTook: 3 * time.Millisecond},
				{Name: "web", Kind: "command", Target: `command ["/usr/local/bin/check-web"]`, Effect: "fault", State: "unknown"},
			}
			return st
		}},
		{"sync-and-timeline", func() status.Status {
			st := base()
			st.Time = at.Add(time.Hour)
			st.Peer.Role, st.Peer.RoleSource, st.Peer.Reachable, st.Peer.LastHeard = "backup", "health", true, at.Add(time.Hour)
			st.Timeline = []status.Failover{
				{Time: at.Add(-time.Minute), From: "INIT", To: "FAULT", Reason: "link wan0 down"},
				{Time: at, From: "BACKUP", To: "MASTER", Reason: "master down"},
			}
			st.Conntrack = &status.ConntrackStatus{Role: "sender", BulkSynced: true, Flows: 1234, LagMS: 2.5,
				DatagramsSent: 900, Lost: 3, Repaired: 2, Resyncs: 1, Rejected: map[string]uint64{"replay": 4}}
			push, contact := at.Add(time.Hour-3200*time.Millisecond), at.Add(time.Hour-time.Second)
			st.DB = &dbsync.Status{Node: "fw1", Role: "master", Revision: 42, PendingPaths: 2, LagMillis: 700, LastSync: &push,
				Ready: true, ReadyReason: "master", Peer: dbsync.PeerStatus{Reachable: true, Revision: 41, LastContact: &contact},
				LastError: "push: peer busy", FailedPaths: []dbsync.FailedPath{{Path: "muros-db/a.conf"}}}
			return st
		}},
		{"maintenance", func() status.Status {
			st := base()
			st.State, st.Maintenance = "BACKUP", true
			st.Peer.Role, st.Peer.RoleSource, st.Peer.Reachable, st.Peer.LastHeard = "backup", "health", true, at.Add(time.Second)
			st.Peer.Maintenance = &ready
			return st
		}},
		{"db-off-error", func() status.Status {
			st := base()
			st.DB = map[string]string{"error": "dbsync: no key"}
			return st
		}},
		{"no-db-sync", func() status.Status {
			st := base()
			st.Peer.Role, st.Peer.Polled = "unknown", false
			st.Peer.RoleReason = "no adverts heard (only a master sends them); peer health not polled: DB sync is off, so the peer has no HTTPS listener"
			st.Ruleset = status.RulesetCompare{
				Local: ruleset.Status{Error: `nft -s list ruleset: exec: "nft": executable file not found in $PATH`, CheckedAt: at},
				Off:   "peer health not polled: DB sync is off, so the peer has no HTTPS listener",
			}
			return st
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printStatus(&b, tt.st())
			golden := filepath.Join("testdata", "status", tt.name+".txt")
			if *updateGolden {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("golden file: %v (run go test ./cmd/muros-had -run TestPrintStatusGolden -update)", err)
			}
			if d := cmp.Diff(string(want), b.String()); d != "" {
				t.Errorf("status text (-golden +got):\n%s", d)
			}
			// The client has only the JSON: what it prints is the same.
			doc, err := json.Marshal(tt.st())
			if err != nil {
				t.Fatal(err)
			}
			var fromJSON status.Status
			if err := json.Unmarshal(doc, &fromJSON); err != nil {
				t.Fatal(err)
			}
			var c bytes.Buffer
			printStatus(&c, fromJSON)
			if d := cmp.Diff(b.String(), c.String()); d != "" {
				t.Errorf("status text from the JSON document (-typed +JSON):\n%s", d)
			}
		})
	}
}
