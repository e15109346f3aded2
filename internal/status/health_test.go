package status

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/internal/ruleset"
)

// TestHealthKeys: the typed health document keeps the keys the untyped
// one had (a peer of the previous version decodes vrrp.state,
// vrrp.readiness, db.ready, ruleset and time from them).
func TestHealthKeys(t *testing.T) {
	at := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	ready, maint := true, false
	doc := Health{
		Node: "fw2", Role: "backup", Time: at,
		Peer:      HealthDBPeer{ID: "fw1", URL: "https://192.0.2.1:7443", Reachable: true, Role: "master", Revision: 3, LastContact: &at},
		DB:        &HealthDB{Revision: 3, LastSync: &at, LastApply: &at, Ready: &ready},
		VRRP:      &HealthVRRP{State: "BACKUP", Priority: 100, Readiness: &Readiness{}, Maintenance: &maint},
		Ruleset:   &ruleset.Status{Fingerprint: "sha256:ab"},
		Conntrack: map[string]any{"enabled": true},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]map[string]any
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	m = map[string]map[string]any{}
	for _, k := range []string{"peer", "db", "vrrp"} {
		var part map[string]any
		if err := json.Unmarshal(top[k], &part); err != nil {
			t.Fatal(err)
		}
		m[k] = part
	}
	keys := func(mm map[string]json.RawMessage) []string {
		var out []string
		for k := range mm {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	partKeys := func(mm map[string]any) []string {
		var out []string
		for k := range mm {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	got := map[string][]string{"": keys(top), "peer": partKeys(m["peer"]), "db": partKeys(m["db"]), "vrrp": partKeys(m["vrrp"])}
	want := map[string][]string{
		"":     {"conntrack", "db", "node", "peer", "role", "ruleset", "time", "vrrp"},
		"peer": {"id", "last_contact", "reachable", "revision", "role", "url"},
		"db":   {"in_sync", "lag_ms", "last_apply", "last_sync", "peer_revision", "pending_paths", "ready", "revision"},
		"vrrp": {"last_failover", "maintenance", "peer", "priority", "readiness", "split_brain", "state", "vips"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("health document keys (-want +got):\n%s", d)
	}
}
