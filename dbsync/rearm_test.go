package dbsync

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

// Rearm opens a new wait under a new boot ID: a notice for the old one (a
// round that began before the re-arm) is refused, one for the new one
// closes the new wait.
func TestRearm(t *testing.T) {
	n, peer, auth := handlerNode(t)
	h := n.Handler()
	tok := syncTokens(t, auth)
	notice := func(boot string) int {
		b, _ := json.Marshal(Synced{BootID: boot, Revision: 3})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, peerRequest(t, peer, "POST", PathSynced, b, tok()))
		return w.Code
	}

	first := n.Ready()
	boot1 := n.Status().BootID
	// Re-armed while the first wait is open: same channel, new boot ID.
	if ch := n.Rearm(); ch != first {
		t.Fatal("Rearm of an open wait replaced its channel: the waiter on it would never be released")
	}
	boot2 := n.Status().BootID
	if boot2 == boot1 || len(boot2) != 16 {
		t.Fatalf("boot ID after Rearm = %q (before %q): want a new 16-digit hex ID", boot2, boot1)
	}
	if code := notice(boot1); code != http.StatusConflict || isClosed(first) {
		t.Fatalf("notice for the boot ID before the re-arm: status %d, ready %v; want 409 and still waiting", code, isClosed(first))
	}
	if code := notice(boot2); code != http.StatusOK || !isClosed(first) {
		t.Fatalf("notice for the current boot ID: status %d, ready %v", code, isClosed(first))
	}

	// Re-armed once ready: a new, open channel; the status says not ready.
	second := n.Rearm()
	if second == first || isClosed(second) || isClosed(n.Ready()) {
		t.Fatal("Rearm of a closed wait did not open a new one")
	}
	if s := n.Status(); s.Ready || s.ReadyReason != "" || s.Stats["ready_rearms"] != 2 {
		t.Fatalf("status after Rearm: ready %v, reason %q, rearms %d", s.Ready, s.ReadyReason, s.Stats["ready_rearms"])
	}
	boot3 := n.Status().BootID
	if code := notice(boot2); code != http.StatusConflict || isClosed(second) {
		t.Fatalf("notice for the previous arm: status %d, ready %v; want 409 and still waiting", code, isClosed(second))
	}
	if code := notice(boot3); code != http.StatusOK || !isClosed(second) {
		t.Fatalf("notice for the current arm: status %d, ready %v", code, isClosed(second))
	}
	if s := n.Status(); !s.Ready || s.ReadyReason != ReadySynced || s.Rejected[ReasonStaleBoot] != 2 {
		t.Fatalf("status: ready %v, reason %q, stale notices %d (want 2)", s.Ready, s.ReadyReason, s.Rejected[ReasonStaleBoot])
	}

	// Becoming master ends a wait; stepping down does not re-arm by
	// itself (the daemon calls Rearm when the node is BACKUP again).
	third := n.Rearm()
	n.SetRole(true)
	if !isClosed(third) || n.Status().ReadyReason != ReadyMaster {
		t.Fatalf("master: ready %v, reason %q", isClosed(third), n.Status().ReadyReason)
	}
	n.SetRole(false)
	if !isClosed(n.Ready()) {
		t.Fatal("SetRole(false) re-armed")
	}
}

// A verdict reached for an earlier arm never closes a later one.
func TestMarkReadyIgnoresEarlierArm(t *testing.T) {
	n, _, _ := handlerNode(t)
	gen, _ := n.arm()
	ch := n.Rearm()
	n.markReady(gen, ReadyPeerBackup)
	if isClosed(ch) {
		t.Fatal("a verdict of the previous arm closed the current wait")
	}
	gen, _ = n.arm()
	n.markReady(gen, ReadyPeerBackup)
	if !isClosed(ch) || n.Status().ReadyReason != ReadyPeerBackup {
		t.Fatal("a verdict of the current arm did not close it")
	}
}

// A backup re-armed without restarting (the daemon saw it return from
// FAULT or step down from master) is ready again only after the master's
// next full comparison: the master's probe sees the new boot ID, compares,
// pushes what differs and sends a synced notice for the new arm.
func TestLabReadyAfterRearm(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	writeFile(t, filepath.Join(a.dbDir(), "rules"), "v1\n")
	waitFor(t, "initial sync", sameFile(filepath.Join(a.dbDir(), "rules"), filepath.Join(b.dbDir(), "rules")))
	waitReady(t, b)
	// The master counts its notice once the answer is back: it may trail.
	waitFor(t, "the master's first notice counted", func() error {
		if n := a.node.Status().Stats["synced_notices_sent"]; n == 0 {
			return fmt.Errorf("no notice counted yet")
		}
		return nil
	})
	sent := a.node.Status().Stats["synced_notices_sent"]
	runs := a.node.Status().Stats["anti_entropy_runs"]

	// The backup's copy drifts (as if a push had been lost while it was
	// away): the new round must repair it before the notice.
	writeFile(t, filepath.Join(b.dbDir(), "rules"), "stale\n")
	ch := b.node.Rearm()
	if isClosed(ch) || b.node.Status().Ready {
		t.Fatal("ready right after Rearm")
	}
	waitReady(t, b)
	if err := sameFile(filepath.Join(a.dbDir(), "rules"), filepath.Join(b.dbDir(), "rules"))(); err != nil {
		t.Fatalf("ready again before the master's content was back: %v", err)
	}
	if s := b.node.Status(); s.ReadyReason != ReadySynced {
		t.Fatalf("ready reason %q, want %q", s.ReadyReason, ReadySynced)
	}
	waitFor(t, "one more notice and full comparison for the new arm", func() error {
		s := a.node.Status()
		if s.Stats["synced_notices_sent"] < sent+1 || s.Stats["anti_entropy_runs"] <= runs {
			return fmt.Errorf("master sent %d notices (before %d), ran %d comparisons (before %d)",
				s.Stats["synced_notices_sent"], sent, s.Stats["anti_entropy_runs"], runs)
		}
		return nil
	})
}
