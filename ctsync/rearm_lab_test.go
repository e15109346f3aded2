package ctsync

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/ctsync/ctrel"
)

// awaitReason waits until n's readiness wait reports want (through
// WaitReason's change channel, no polling), or fails after within.
func awaitReason(t *testing.T, n *node, want string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		why, changed := n.s.WaitReason()
		if why == want {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: wait reason %q after %v, want %q; status %+v", n.ns, why, within, want, n.s.Status())
		}
	}
}

// awaitClosed waits for a readiness wait's channel.
func awaitClosed(t *testing.T, n *node, ch <-chan struct{}, within time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		why, _ := n.s.WaitReason()
		t.Fatalf("%s: readiness wait still open after %v (%q); status %+v", n.ns, within, why, n.s.Status())
	}
}

// TestRearm: the readiness signal of a backup. A wait armed before
// anything is heard closes at the first bulk. A wait armed while the sync
// link is cut stays open (nothing heard) and closes once the master's
// stream is heard again with the flows created meanwhile repaired: at
// that moment the backup's kernel holds the master's table. A master
// demoted and re-armed at once waits for its new receiver's bulk, never
// for what its sender knew.
func TestRearm(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	backup := startNode(t, b, false, nil)
	first := backup.s.Rearm()
	awaitReason(t, backup, ctrel.WaitBulk, 10*time.Second)
	if st := backup.s.Status(); st.Waiting != ctrel.WaitBulk {
		t.Errorf("Status.Waiting %q, want %q", st.Waiting, ctrel.WaitBulk)
	}
	master := startNode(t, a, true, nil)
	awaitClosed(t, backup, first, 60*time.Second)
	if why, _ := backup.s.WaitReason(); why != ctrel.DoneBulk {
		t.Fatalf("first wait completed %q, want %q", why, ctrel.DoneBulk)
	}
	must(t, a.Do(func() error { return createFlows(0, 100) }))
	converge(t, a, b, 20*time.Second)

	// Cut the sync link on the backup's side and let what passed drain.
	run(t, b, "nft", "add table inet cut; add chain inet cut in { type filter hook input priority 0; }; "+
		"add rule inet cut in udp dport 3780 drop")
	for prev := backup.s.Status().DatagramsReceived; ; {
		time.Sleep(2 * DefaultHeartbeat)
		cur := backup.s.Status().DatagramsReceived
		if cur == prev {
			break
		}
		prev = cur
	}
	cut := backup.s.Rearm()
	must(t, a.Do(func() error { return createFlows(100, 150) }))
	awaitReason(t, backup, ctrel.WaitSilent, 5*time.Second)
	select {
	case <-cut:
		t.Fatalf("wait completed while the link was cut: %+v", backup.s.Status())
	case <-time.After(4 * DefaultHeartbeat):
	}
	run(t, b, "nft", "delete table inet cut")
	awaitClosed(t, backup, cut, 20*time.Second)
	if why, _ := backup.s.WaitReason(); why != ctrel.DoneStream {
		t.Errorf("wait after the cut completed %q, want %q", why, ctrel.DoneStream)
	}
	if st := backup.s.Status(); st.Waiting != "" {
		t.Errorf("Status.Waiting %q with no wait open", st.Waiting)
	}
	if d := cmp.Diff(table(t, a), table(t, b), addrCmp); d != "" {
		t.Fatalf("complete, but the backup misses flows of the master (-master +backup):\n%s", d)
	}
	if st := backup.s.Status(); st.Lost == 0 || st.Repaired == 0 {
		t.Errorf("the cut lost nothing the backup repaired: %+v", st)
	}

	// Role swap: the old master is re-armed right after its demotion.
	master.s.SetRole(false)
	swap := master.s.Rearm()
	backup.s.SetRole(true)
	must(t, b.Do(func() error { return createFlows(150, 180) }))
	awaitClosed(t, master, swap, 60*time.Second)
	if why, _ := master.s.WaitReason(); why != ctrel.DoneBulk {
		t.Errorf("demoted master's wait completed %q, want %q", why, ctrel.DoneBulk)
	}
	if st := master.s.Status(); st.Master || !st.BulkSynced || st.Resyncs == 0 {
		t.Errorf("demoted master complete without a bulk of its receiver: %+v", st)
	}
	converge(t, b, a, 20*time.Second)
}
