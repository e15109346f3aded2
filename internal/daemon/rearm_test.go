package daemon_test

// Lab tests of the readiness re-arm: a node that returns to BACKUP without
// restarting holds its preemption until its replications are complete
// again, exactly as a freshly started node does.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
)

// Log lines of the readiness hold (internal/daemon/readiness.go).
const (
	heldFromFault = `msg="preemption held until the replications are complete" cause="back from FAULT"`
	allowedLine   = `msg="replication ready: preemption allowed"`
	ctReadyLine   = "conntrack bulk sync complete"
)

// TestRearmAfterFault: fw1 (master role, preempt) goes FAULT by its tracked
// LAN link and fw2 takes over. fw1 keeps receiving fw2's conntrack stream
// while in FAULT, until the test cuts both replications to it (fw2's sync
// datagrams dropped, fw1's DB sync port refused). Then a new long-lived TCP
// flow goes through fw2 and the operator edits the DB on fw2. fw1's link
// comes back: without the re-arm fw1 would preempt at once (its table and
// DB looked complete before the cut) and reset the flow, then push its
// stale DB over the edit. With it, fw1 stays BACKUP while cut off, and once
// the replications flow again it receives the flow and the edit, only then
// preempts; the flow survives the fail-back and the edit survives on both.
func TestRearmAfterFault(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := dbSyncPair(t, p, hatest.NodeOptions{Interval: takeoverInterval, Extra: ctSyncOn})
	waitCT(t, n2, "fw2's initial bulk sync", bulkWait, func(c *status.ConntrackStatus) bool {
		return c.BulkSynced && c.Role == "receiver"
	})
	becameSender(t, n1)
	db1, _ := hatest.DBPaths(p.FW1)
	db2, _ := hatest.DBPaths(p.FW2)
	rules1, rules2 := filepath.Join(db1, "rules.conf"), filepath.Join(db2, "rules.conf")
	old := []byte("zone lan { iface lan0 }\n")
	if err := os.WriteFile(rules1, old, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, rules2, old, 10*time.Second)

	// fw1 faults; fw2 takes over (fw1's priority 0) and becomes the sender.
	if err := p.SetLinkDown(p.FW1, lab.IfLAN); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "FAULT", stateWait)
	mustState(t, n2, "MASTER", stateWait)
	becameSender(t, n2)
	// fw1 is a receiver again (it released the VIPs) and completes a bulk
	// from fw2 over the sync link, which stays up: its table looks complete.
	waitCT(t, n1, "fw1's bulk sync from fw2 while in FAULT", bulkWait, func(c *status.ConntrackStatus) bool {
		return c.BulkSynced && c.Role == "receiver"
	})
	if st := readiness(t, n1); !st.Held || !strings.Contains(st.Reason, "FAULT") {
		t.Errorf("fw1 readiness in FAULT = %+v, want held", st)
	}

	// Cut both replications to fw1.
	ctBlock := fmt.Sprintf("add rule inet %s %s oifname %q udp dport %d drop\n", lab.NftTable, lab.NftOutputExtra, lab.IfSync, ctwirePort)
	if err := p.Nft(p.FW2, ctBlock); err != nil {
		t.Fatal(err)
	}
	if err := p.Nft(p.FW1, dbBlock); err != nil {
		t.Fatal(err)
	}
	unblock := func() error {
		if err := p.Nft(p.FW2, fmt.Sprintf("flush chain inet %s %s\n", lab.NftTable, lab.NftOutputExtra)); err != nil {
			return err
		}
		_, err := p.FW1.Run("nft", "delete", "table", "inet", "dbready_block")
		return err
	}
	t.Cleanup(func() { unblock() })

	// A new flow through fw2, and an operator edit on fw2.
	s, err := p.StartTCPStream(lab.TCPStreamOptions{Duration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	m := mustFlow(t, p, p.FW2, "the stream's entry on fw2", entryWait, tcpStreamFlow)
	edit := []byte("zone lan { iface lan0 } # edited on fw2 while fw1 was in FAULT\n")
	if err := os.WriteFile(rules2, edit, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the stream flows through fw2; fw2 tries to push the edit
	if hasFlow(t, p, p.FW1, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
		t.Fatal("fw1 holds the stream's entry although fw2's sync datagrams are dropped: the block does not work")
	}
	if got, _ := os.ReadFile(rules1); string(got) != string(old) {
		t.Fatalf("fw1's rules.conf is %q although its DB sync port is refused: the block does not work", got)
	}

	// The link comes back: BACKUP, and it stays there while cut off. 3 s
	// is about ten Master_Down_Intervals (0.8 s) of adverts from a
	// lower-priority master that fw1 would preempt if allowed, and well
	// inside the 10 s the DB sync waits for an unreachable peer and the
	// 30 s startup timeout.
	if err := p.SetLinkUp(p.FW1, lab.IfLAN); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "BACKUP", stateWait)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		st, err := n1.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "BACKUP" {
			if f := st.LastFailover; f != nil && (strings.Contains(f.Reason, "down") || strings.Contains(f.Reason, "peer dead")) {
				t.Fatalf("fw1 took over because fw2 fell silent (%+v): a CPU-starved daemon (machine overloaded?), not a preemption; the hold was not tested", f)
			}
			t.Fatalf("fw1 went %s back from FAULT although its replications are cut: %+v\nreadiness %v\n%s",
				st.State, st.LastFailover, st.Readiness, tail(n1.Proc.Log(), 40))
		}
	}
	r := readiness(t, n1)
	if !r.Held || r.Reason != "back from FAULT" || !slices.ContainsFunc(r.Waiting, func(w string) bool { return strings.HasPrefix(w, "conntrack:") }) ||
		!slices.ContainsFunc(r.Waiting, func(w string) bool { return strings.HasPrefix(w, "DB sync") }) {
		t.Errorf("fw1 readiness while cut off = %+v, want held, back from FAULT, waiting for conntrack and DB sync", r)
	}
	if hasFlow(t, p, p.FW1, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
		t.Fatal("fw1 holds the stream's entry although fw2's sync datagrams are dropped")
	}

	// The replications flow again: fw1 catches up, then preempts.
	unblocked := time.Now()
	if err := unblock(); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 25*time.Second)
	preempted := time.Since(unblocked)
	mustState(t, n2, "BACKUP", stateWait)
	if !hasFlow(t, p, p.FW1, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
		flows, _ := hatest.ForwardedFlows(p, p.FW1)
		t.Fatalf("fw1 preempted without the stream's entry %v in its kernel; it has %v", m, flows)
	}
	if r := readiness(t, n1); r.Held {
		t.Errorf("fw1 readiness as MASTER = %+v, want not held", r)
	}

	log := n1.Proc.Log()
	held := strings.LastIndex(log, heldFromFault)
	master := strings.LastIndex(log, "to=MASTER")
	switch {
	case held < 0:
		t.Errorf("fw1 did not log %q:\n%s", heldFromFault, tail(log, 60))
	case strings.Contains(log[held:], "startup timeout"):
		t.Errorf("fw1 was released by the startup timeout, not by the catch-up:\n%s", tail(log, 60))
	default:
		for _, l := range strings.Split(log[held:], "\n") {
			if strings.Contains(l, "preemption") || strings.Contains(l, "complete") || strings.Contains(l, "dbsync: ready") {
				t.Logf("fw1: %s", l)
			}
		}
		for _, line := range []string{ctReadyLine, dbReadyLine, allowedLine} {
			if i := strings.Index(log[held:], line); i < 0 || held+i > master {
				t.Errorf("fw1 did not log %q between the hold and its preemption:\n%s", line, tail(log, 60))
			}
		}
	}

	// The edit made on fw2 is on fw1 and was not overwritten by fw1's
	// stale copy, then or at a later full comparison (every 2 s).
	waitFile(t, rules1, edit, 5*time.Second)
	time.Sleep(3 * time.Second)
	waitFile(t, rules1, edit, time.Millisecond)
	waitFile(t, rules2, edit, time.Millisecond)

	res := s.Stop()
	t.Logf("fw1 preempted %v after its replications were unblocked; stream: max stall %v from %v, last echo age %v, echoed %d of %d bytes",
		preempted.Round(time.Millisecond), res.MaxStall, res.MaxStallFrom.Round(time.Millisecond), res.LastEchoAge, res.Echoed, res.Sent)
	if res.Reset || res.Corrupt || res.Err != nil {
		t.Errorf("stream broken: reset %v corrupt %v err %v", res.Reset, res.Corrupt, res.Err)
	}
	if res.LastEchoAge > time.Second {
		t.Errorf("no echo for the last %v: the stream did not survive the fail-back", res.LastEchoAge)
	}
}

func readiness(t *testing.T, n *hatest.Node) status.Readiness {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Readiness == nil {
		t.Fatalf("%s: no readiness in the status although replications are on", n.NS)
	}
	return *st.Readiness
}

// TestRearmAfterDemotion: fw2 (backup role) becomes MASTER too while fw1's
// adverts cannot reach it (split brain); when they can again, fw2 steps down
// to BACKUP. That re-arms its hold: it is allowed to preempt again only
// after a new conntrack bulk from fw1 (its receiver is new: it was the
// sender) and a new DB synced notice from fw1 (its readiness took a new
// boot ID). fw2 never preempts fw1 (lower priority): the hold shows in its
// log and status.
func TestRearmAfterDemotion(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := dbSyncPair(t, p, hatest.NodeOptions{Interval: takeoverInterval, Extra: ctSyncOn})
	waitCT(t, n2, "fw2's initial bulk sync", bulkWait, func(c *status.ConntrackStatus) bool {
		return c.BulkSynced && c.Role == "receiver"
	})

	// Split brain: fw1's adverts (AH, or plain VRRP) dropped on the sync link.
	// And its liveness messages on both paths: with any path left the
	// backup would rightly not take over.
	advertBlock := fmt.Sprintf("add rule inet %s %s oifname %q ip protocol { 51, 112 } drop\nadd rule inet %s %s udp dport 3781 drop\n",
		lab.NftTable, lab.NftOutputExtra, lab.IfSync, lab.NftTable, lab.NftOutputExtra)
	if err := p.Nft(p.FW1, advertBlock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Nft(p.FW1, fmt.Sprintf("flush chain inet %s %s\n", lab.NftTable, lab.NftOutputExtra)) })
	mustState(t, n2, "MASTER", stateWait)
	becameSender(t, n2)
	if err := p.Nft(p.FW1, fmt.Sprintf("flush chain inet %s %s\n", lab.NftTable, lab.NftOutputExtra)); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "BACKUP", stateWait)
	mustState(t, n1, "MASTER", stateWait)

	// fw2's hold lifts once both replications are complete again.
	deadline := time.Now().Add(bulkWait)
	for {
		r := readiness(t, n2)
		if !r.Held && r.Reason == "replications complete" && r.Holds >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fw2's hold after stepping down not lifted within %v: %+v\n%s", bulkWait, r, tail(n2.Proc.Log(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	log := n2.Proc.Log()
	held := strings.LastIndex(log, `msg="preemption held until the replications are complete" cause="stepped down from MASTER"`)
	if held < 0 {
		t.Fatalf("fw2 did not log the hold on stepping down:\n%s", tail(log, 60))
	}
	if !strings.Contains(log, "dbsync: readiness re-armed") {
		t.Errorf("fw2's DB sync readiness was not re-armed:\n%s", tail(log, 40))
	}
	for _, line := range []string{ctReadyLine, "reason=master_synced", dbReadyLine, allowedLine} {
		if !strings.Contains(log[held:], line) {
			t.Errorf("fw2 did not log %q after the hold:\n%s", line, tail(log[held:], 40))
		}
	}
	if strings.Contains(log[held:], "startup timeout") {
		t.Errorf("fw2's hold was lifted by the startup timeout:\n%s", tail(log[held:], 40))
	}
	if c := ctStatus(t, n2); c.Role != "receiver" || !c.BulkSynced {
		t.Errorf("fw2 conntrack status %+v, want a synced receiver", c)
	}
	// The peer sees it too, in GET /api/health.
	tok, err := exec.Command(binary, "token", "--config", n1.ConfigPath).Output()
	if err != nil {
		t.Fatalf("muros-had token: %v", err)
	}
	code, h := healthGet(t, p.FW1, p.FW2Addrs.Sync.Addr().String(), "Bearer "+strings.TrimSpace(string(tok)))
	vr, _ := h["vrrp"].(map[string]any)
	r, _ := vr["readiness"].(map[string]any)
	if holds, _ := r["holds"].(float64); code != http.StatusOK || r["held"] != false || r["reason"] != "replications complete" || holds < 2 {
		t.Errorf("fw2's health: %d, vrrp.readiness = %v; want not held, replications complete, at least 2 holds", code, vr["readiness"])
	}
}
