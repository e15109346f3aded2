package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/muros/muros-had/config"
)

// TestLoopReloadRefusedPasswordKeepsRunning: after an upgrade that refuses
// the running password (the old example's change-me), a SIGHUP with that
// file re-reads it through config.Load as `muros-had run` does: the reload
// fails, the daemon says why and keeps its running configuration (no
// restart of the instances, VIPs kept, same priority) although the file
// also changes keys that would restart them.
func TestLoopReloadRefusedPasswordKeepsRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		fw1.start(t)
		fw2.start(t)
		settle(time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		path := filepath.Join(fw1.dir, "ha.yaml")
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		weak := strings.Replace(string(src), "password: pA7-kx2Q-9mZr-Lw4e-Tb6v", "password: change-me", 1)
		weak = strings.Replace(weak, "advert_interval: 100ms", "advert_interval: 200ms", 1)
		if weak == string(src) {
			t.Fatal("the loop configuration changed: nothing replaced")
		}
		if err := os.WriteFile(path, []byte(weak), 0o600); err != nil {
			t.Fatal(err)
		}
		fw1.d.opts.Reload = func() (*config.Config, error) { return config.Load(path) }
		before := fw1.d.Status()
		fw1.d.Trigger()
		settle(2 * time.Second)
		fw1.check(t, "MASTER")
		fw2.check(t, "BACKUP")
		log := fw1.logText()
		for _, want := range []string{"reload: failed, keeping the running configuration", "is a placeholder", "Changing the password"} {
			if !strings.Contains(log, want) {
				t.Errorf("fw1's log does not say %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, "to=INIT") || strings.Contains(log, "restarting the VRRP instances") {
			t.Errorf("fw1 restarted its instances on a refused reload:\n%s", log)
		}
		after := fw1.d.Status()
		if after.Priority != before.Priority || after.Role != before.Role || (after.LastFailover == nil) != (before.LastFailover == nil) ||
			(after.LastFailover != nil && !after.LastFailover.Time.Equal(before.LastFailover.Time)) {
			t.Errorf("status changed across the refused reload: before %+v, after %+v", before, after)
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}
