package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// dbBlock refuses DB sync (TCP 7443) in and out of a firewall namespace.
const dbBlock = `table inet dbready_block {
	chain in {
		type filter hook input priority -10; policy accept;
		tcp dport 7443 reject with tcp reset
	}
	chain out {
		type filter hook output priority -10; policy accept;
		tcp dport 7443 reject with tcp reset
	}
}
`

// Takeover ordering (SPEC, issue 5): with preempt on, a master that crashed
// and comes back must not preempt with its stale configuration DB. It
// returns as BACKUP, receives the edits made on the new master while it was
// gone, and only then preempts; the edits survive on both nodes. With
// conntrack sync on as well, the hold lasts until both are complete.
func TestReturningMasterPreemptsOnlyWithCurrentDB(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra string
		ready []string // log lines that must precede the preemption
	}{
		{"dbsync", "", []string{dbReadyLine}},
		{"dbsync and conntrack", "conntrack:\n  enabled: true\n", []string{dbReadyLine, "conntrack bulk sync complete"}},
	} {
		t.Run(tc.name, func(t *testing.T) { testReturningMasterWithCurrentDB(t, tc.extra, tc.ready) })
	}
}

// dbReadyLine is what the daemon logs when the DB sync lifts its part of
// the hold.
const dbReadyLine = "DB sync (this node holds the master's content) complete"

func testReturningMasterWithCurrentDB(t *testing.T, extra string, readyLines []string) {
	p := lab.NewPairT(t, lab.Options{})
	o1, o2 := hatest.NodeOptions{Role: "master", Extra: extra}, hatest.NodeOptions{Role: "backup", Extra: extra}
	n1, n2, err := hatest.StartPairWithDBSync(binary, p, o1, o2)
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 15*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)
	db1, _ := hatest.DBPaths(p.FW1)
	db2, _ := hatest.DBPaths(p.FW2)
	rules1, rules2 := filepath.Join(db1, "rules.conf"), filepath.Join(db2, "rules.conf")
	hosts1, hosts2 := filepath.Join(db1, "hosts.conf"), filepath.Join(db2, "hosts.conf")

	old := []byte("zone lan { iface lan0 }\n")
	if err := os.WriteFile(rules1, old, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, rules2, old, 5*time.Second)

	if err := n1.Crash(p); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 3*time.Second)
	// The operator edits the new master while fw1 is gone.
	edit := []byte("zone lan { iface lan0 } # edited on fw2 while fw1 was down\n")
	if err := os.WriteFile(rules2, edit, 0o644); err != nil {
		t.Fatal(err)
	}
	added := []byte("host printer 10.10.0.9\n")
	if err := os.WriteFile(hosts2, added, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := p.RestoreNode(p.FW1); err != nil {
		t.Fatal(err)
	}
	// The DB catch-up is normally quick (fw2 probes every 2 s), quick enough
	// to win a race with Master_Down_Interval (~0.35 s here) by luck. Refusing
	// the DB sync port on fw1 for a while makes the race certain to be lost
	// without the hold, while VRRP runs. Refused, not dropped: each probe
	// fails at once and the first one after the block gets through.
	if err := p.Nft(p.FW1, dbBlock); err != nil {
		t.Fatal(err)
	}
	unblock := func() error { _, err := p.FW1.Run("nft", "delete", "table", "inet", "dbready_block"); return err }
	t.Cleanup(func() { unblock() })
	if err := n1.Start(binary); err != nil {
		t.Fatal(err)
	}
	// Back as BACKUP, and it stays there while its DB cannot be current
	// (3 s, well inside the 10 s the DB sync waits for an unreachable peer
	// and the 30 s startup timeout).
	mustState(t, n1, "BACKUP", 5*time.Second)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		st, err := n1.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "BACKUP" {
			t.Fatalf("fw1 is %s while its DB is stale, want BACKUP:\n%s", st.State, tail(n1.Proc.Log(), 40))
		}
	}
	if err := unblock(); err != nil {
		t.Fatal(err)
	}
	// Then preempts, once its DB is the master's (within the 30 s startup
	// timeout, which must not be what released it: see the log check).
	mustState(t, n1, "MASTER", 25*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)

	log := n1.Proc.Log()
	master := strings.Index(log, "to=MASTER")
	if master < 0 {
		t.Fatalf("fw1 never logged its transition to MASTER:\n%s", tail(log, 60))
	}
	if strings.Contains(log, "startup timeout") {
		t.Fatalf("fw1 was released by the startup timeout, not by the catch-up:\n%s", tail(log, 60))
	}
	for _, line := range readyLines {
		switch ready := strings.Index(log, line); {
		case ready < 0:
			t.Fatalf("fw1 never logged %q:\n%s", line, tail(log, 60))
		case master < ready:
			t.Fatalf("fw1 preempted before %q:\n%s", line, tail(log, 60))
		}
	}
	st, err := n1.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if db, ok := st.DB.(map[string]any); !ok || db["ready_reason"] != "master_synced" {
		t.Errorf("fw1 DB status = %v, want ready_reason master_synced", st.DB)
	}

	// The edit survives on both, now that fw1 is master again: fw1 already
	// holds it, and its own anti-entropy (run on becoming master) finds
	// nothing stale to push back.
	for _, f := range []struct {
		path string
		want []byte
	}{{rules1, edit}, {rules2, edit}, {hosts1, added}, {hosts2, added}} {
		waitFile(t, f.path, f.want, 5*time.Second)
	}
	// A later full comparison (the peer probe runs every 2 s) changes
	// nothing either.
	time.Sleep(3 * time.Second)
	for _, f := range []struct {
		path string
		want []byte
	}{{rules1, edit}, {rules2, edit}, {hosts1, added}, {hosts2, added}} {
		waitFile(t, f.path, f.want, time.Millisecond)
	}
	// And the new master's edits flow to fw2 again.
	again := []byte("zone lan { iface lan0 } # edited on fw1 after its return\n")
	if err := os.WriteFile(rules1, again, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, rules2, again, 5*time.Second)
}

// A returning node that cannot reach the DB sync of its live peer stays
// held past the startup timeout (and past the 10 s the DB sync waits for
// an unreachable peer): preempting would serve, and push, configuration
// older than the edits made on the peer. It says so, and once the DB sync
// gets through it takes the edits and preempts; they survive on both.
func TestReturningMasterHeldWhileDBUnreachable(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	extra := "conntrack:\n  enabled: false\n  resync:\n    startup_timeout: 2s\n"
	n1, n2, err := hatest.StartPairWithDBSync(binary, p, hatest.NodeOptions{Role: "master", Extra: extra}, hatest.NodeOptions{Role: "backup", Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 15*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)
	db1, _ := hatest.DBPaths(p.FW1)
	db2, _ := hatest.DBPaths(p.FW2)
	rules1, rules2 := filepath.Join(db1, "rules.conf"), filepath.Join(db2, "rules.conf")
	old := []byte("zone lan { iface lan0 }\n")
	if err := os.WriteFile(rules1, old, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, rules2, old, 5*time.Second)
	if err := n1.Crash(p); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 3*time.Second)
	edit := []byte("zone lan { iface lan0 } # edited on fw2 while fw1 was down\n")
	if err := os.WriteFile(rules2, edit, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.RestoreNode(p.FW1); err != nil {
		t.Fatal(err)
	}
	if err := p.Nft(p.FW1, dbBlock); err != nil {
		t.Fatal(err)
	}
	unblock := func() error { _, err := p.FW1.Run("nft", "delete", "table", "inet", "dbready_block"); return err }
	t.Cleanup(func() { unblock() })
	if err := n1.Start(binary); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "BACKUP", 5*time.Second)
	// 14 s: past the 2 s startup timeout and the DB sync's 10 s bound for
	// an unreachable peer; VRRP runs all along.
	for deadline := time.Now().Add(14 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		st, err := n1.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "BACKUP" {
			t.Fatalf("fw1 is %s while the live fw2's DB sync is unreachable, want BACKUP:\n%s", st.State, tail(n1.Proc.Log(), 60))
		}
	}
	st, err := n1.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Readiness; r == nil || !r.Held || len(r.Waiting) != 1 || !strings.Contains(r.Waiting[0], "held past the startup timeout") ||
		!strings.Contains(r.Waiting[0], "alive but its DB sync does not answer") {
		t.Fatalf("fw1 readiness %+v, want held past the startup timeout with the reason", st.Readiness)
	}
	if log := n1.Proc.Log(); !strings.Contains(log, "preemption stays held until the DB sync completes") {
		t.Fatalf("fw1 did not log why it stays held:\n%s", tail(log, 60))
	}
	if err := unblock(); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 25*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)
	for _, f := range []string{rules1, rules2} {
		waitFile(t, f, edit, 5*time.Second)
	}
	time.Sleep(3 * time.Second) // a later full comparison changes nothing
	for _, f := range []string{rules1, rules2} {
		waitFile(t, f, edit, time.Millisecond)
	}
}
