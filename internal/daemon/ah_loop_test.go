package daemon

import (
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// ahKeyAccepted is muros_had_vrrp_ah_key_accepted_total{version} of n.
func ahKeyAccepted(t *testing.T, n *loopNode, version string) float64 {
	t.Helper()
	mfs, err := n.d.stats.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "muros_had_vrrp_ah_key_accepted_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "version" && l.GetValue() == version {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestLoopAHKeyVersion2: two upgraded daemons authenticate their adverts
// with the version-2 key (the password stretched once per run), and the
// backup counts what it accepted by key version.
func TestLoopAHKeyVersion2(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		if v2, v1 := ahKeyAccepted(t, fw2, "v2"), ahKeyAccepted(t, fw2, "v1"); v2 == 0 || v1 != 0 {
			t.Errorf("fw2 accepted %v adverts with key v2 and %v with v1; want only v2", v2, v1)
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopAHEpochStepBack is issue 9's reproduction through two whole
// daemons: the master's first run has an epoch far above its clock (as if
// its clock had been ahead), it crashes, its ah-epoch file is lost, and it
// restarts with an epoch below the one the backup (now MASTER) remembers.
// Before, the backup refused every advert of the restarted node as a
// replay and both stayed MASTER; now the pair converges on the restarted
// node (priority 150) within a Master_Down_Interval of its return.
func TestLoopAHEpochStepBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, fw1, fw2 := loopPair(t, loopOpts{})
		epochFile := filepath.Join(fw1.cfg.StateDir, "ah-epoch")
		if err := os.MkdirAll(fw1.cfg.StateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(epochFile, []byte("2000000000\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		link.setCut(loopAddr1, true) // a crash: no priority 0
		fw1.halt(t)
		link.setCut(loopAddr1, false)
		if err := os.Remove(epochFile); err != nil {
			t.Fatal(err)
		}
		settle(time.Second)
		fw2.check(t, "MASTER")
		fw1.d = restartable(t, fw1, link)
		fw1.start(t)
		// fw1 starts BACKUP, waits its Master_Down_Interval and preempts;
		// fw2, silent from fw1 since the crash, must yield at once: the
		// pair is never both MASTER for more than a Master_Down_Interval.
		for fw1.state() != "MASTER" {
			settle(10 * time.Millisecond)
		}
		both := time.Now()
		for fw2.state() != "BACKUP" {
			if d, mdi := time.Since(both), 3*loopInterval+loopInterval*156/256; d > mdi {
				t.Fatalf("both MASTER for %v > Master_Down_Interval %v after the restart\nfw2:\n%s", d, mdi, fw2.logText())
			}
			settle(10 * time.Millisecond)
		}
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		fw1.halt(t)
		fw2.halt(t)
	})
}

// restartable is a new daemon for n's configuration and fakes (a Daemon
// runs once), as after a process restart.
func restartable(t *testing.T, n *loopNode, link *simLink) *Daemon {
	t.Helper()
	return n.newDaemon(t, link)
}
