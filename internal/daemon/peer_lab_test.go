package daemon_test

// Lab tests of the peer checks (packages peerview and ruleset): each
// node's view of the other from GET /api/health, the split brain alarm and
// the ruleset drift report, on a real pair with the management link
// working.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
)

// peerCheckFast polls the peer's health every 300 ms and fingerprints the
// ruleset every second (drift is reported after 1.3 s of difference).
const peerCheckFast = "peer_check:\n  interval: 300ms\n  ruleset_interval: 1s\n"

// vrrpBlock drops the peer's VRRP adverts (AH, and plain VRRP) on the
// sync link and its liveness messages on both paths, in: the management
// link (HTTPS on the same link) still works. With the liveness protocol a
// lost advert path alone is no split brain (liveness_lab_test.go); losing
// every path but HTTPS still is one.
const vrrpBlock = `table inet split_brain {
	chain in {
		type filter hook input priority -10; policy accept;
		iifname "sync0" meta l4proto { 51, 112 } drop
		udp dport 3781 drop
	}
}
`

// operatorEdit is a rule an operator adds by hand on one node only.
const operatorEdit = `table inet operator_edit {
	chain in {
		type filter hook input priority 0; policy accept;
		tcp dport 2222 drop
	}
}
`

// waitStatus polls n's status until ok holds.
func waitStatus(t *testing.T, n *hatest.Node, what string, timeout time.Duration, ok func(status.Status) bool) status.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last status.Status
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := n.Status(ctx)
		cancel()
		if err == nil {
			last = st
			if ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s: not within %s; last status: peer %+v split brain %+v ruleset %+v state %s\n%s",
				what, n.NS, timeout, last.Peer, last.SplitBrain, last.Ruleset, last.State, tail(n.Proc.Log(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPeerViewSplitBrainAndDrift: with DB sync on, each node knows the
// other's role from its health answers (the master sees "backup", which
// adverts alone cannot tell). An nftables table added by hand on fw2 is
// reported as ruleset drift on both nodes and cleared when removed. Then
// fw2 stops hearing fw1's adverts while HTTPS still works: fw2 takes the
// VIPs too, and both nodes report the split brain (status, metric, one
// ERROR line each); once the adverts get through again fw2 steps down and
// both report its end.
func TestPeerViewSplitBrainAndDrift(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := dbSyncPair(t, p, hatest.NodeOptions{Interval: takeoverInterval, Extra: peerCheckFast})

	// The roles, from health answers; the same ruleset on both.
	sameRules := func(st status.Status) bool {
		r := st.Ruleset
		return r.Local.Fingerprint != "" && r.Peer != nil && r.Peer.Fingerprint == r.Local.Fingerprint && !r.Drift
	}
	st1 := waitStatus(t, n1, "peer seen as backup", 10*time.Second, func(st status.Status) bool {
		return st.Peer.Role == "backup" && st.Peer.RoleSource == "health" && st.Peer.Reachable && sameRules(st)
	})
	st2 := waitStatus(t, n2, "peer seen as master", 10*time.Second, func(st status.Status) bool {
		return st.Peer.Role == "master" && st.Peer.Reachable && sameRules(st)
	})
	if st1.Ruleset.Local.Fingerprint != st2.Ruleset.Local.Fingerprint {
		t.Fatalf("same ruleset, different fingerprints: %s, %s", st1.Ruleset.Local.Fingerprint, st2.Ruleset.Local.Fingerprint)
	}
	if st1.SplitBrain.Active || st2.SplitBrain.Active {
		t.Fatalf("split brain reported on a healthy pair: %+v %+v", st1.SplitBrain, st2.SplitBrain)
	}

	// Drift: a table by hand on fw2 only.
	if err := p.Nft(p.FW2, operatorEdit); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*hatest.Node{n1, n2} {
		st := waitStatus(t, n, "ruleset drift reported", 10*time.Second, func(st status.Status) bool { return st.Ruleset.Drift })
		if st.Ruleset.Peer == nil || st.Ruleset.Peer.Fingerprint == st.Ruleset.Local.Fingerprint {
			t.Errorf("%s: drift without two fingerprints: %+v", n.NS, st.Ruleset)
		}
		if m := nodeMetrics(t, n); m["muros_had_ruleset_drift"] != 1 {
			t.Errorf("%s: muros_had_ruleset_drift = %v, want 1", n.NS, m["muros_had_ruleset_drift"])
		}
	}
	if _, err := p.FW2.Run("nft", "delete", "table", "inet", "operator_edit"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*hatest.Node{n1, n2} {
		waitStatus(t, n, "drift cleared", 10*time.Second, sameRules)
		if c := strings.Count(n.Proc.Log(), "ruleset drift ended"); c != 1 {
			t.Errorf("%s: %d 'drift ended' lines, want 1", n.NS, c)
		}
	}

	// Split brain: fw2 stops hearing fw1's adverts, HTTPS still works.
	if err := p.Nft(p.FW2, vrrpBlock); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", stateWait)
	mustState(t, n1, "MASTER", time.Second)
	for _, n := range []*hatest.Node{n1, n2} {
		st := waitStatus(t, n, "split brain reported", 10*time.Second, func(st status.Status) bool { return st.SplitBrain.Active })
		if st.Peer.Role != "master" {
			t.Errorf("%s: split brain with peer role %q", n.NS, st.Peer.Role)
		}
		if m := nodeMetrics(t, n); m["muros_had_split_brain"] != 1 {
			t.Errorf("%s: muros_had_split_brain = %v, want 1", n.NS, m["muros_had_split_brain"])
		}
		if c := strings.Count(n.Proc.Log(), "SPLIT BRAIN"); c != 1 {
			t.Errorf("%s: %d SPLIT BRAIN lines, want 1\n%s", n.NS, c, tail(n.Proc.Log(), 20))
		}
	}
	if _, err := p.FW2.Run("nft", "delete", "table", "inet", "split_brain"); err != nil {
		t.Fatal(err)
	}
	// fw1's priority wins: fw2 steps down; both report the end.
	mustState(t, n2, "BACKUP", stateWait)
	for _, n := range []*hatest.Node{n1, n2} {
		waitStatus(t, n, "split brain ended", 10*time.Second, func(st status.Status) bool { return !st.SplitBrain.Active })
		if m := nodeMetrics(t, n); m["muros_had_split_brain"] != 0 {
			t.Errorf("%s: muros_had_split_brain = %v after the end", n.NS, m["muros_had_split_brain"])
		}
		waitLog(t, n, "split brain ended", 1, 5*time.Second)
	}
	mustState(t, n1, "MASTER", time.Second)
}

// nodeMetrics reads n's /metrics from its status socket.
func nodeMetrics(t *testing.T, n *hatest.Node) map[string]float64 {
	t.Helper()
	return metricsOf(t, httpGet(t, unixDial(n.StatusSock), "/metrics"))
}
