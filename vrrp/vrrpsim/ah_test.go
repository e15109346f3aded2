package vrrpsim

import (
	"fmt"
	"testing"
	"time"

	"github.com/muros/muros-had/vrrp"
)

// TestAHEpochStepBackNoSplitBrain is issue 9's reproduction: the master
// restarts with its persisted AH epoch lost and its clock behind, so its
// new epoch is below the one its peer remembers. Before the step-back rule
// the peer refused every advert of the new run as a replay, the restarted
// node (higher priority) preempted, and both stayed MASTER until the peer
// restarted. Now the peer accepts the lower epoch once the old run has been
// silent for its Master_Down_Interval: no dual-master episode outlives the
// simulator's bound (DualMasterBound + one Master_Down_Interval after a
// step-back), and the pair converges on the restarted node.
func TestAHEpochStepBackNoSplitBrain(t *testing.T) {
	for _, tc := range []struct {
		down     time.Duration // how long the master is away
		behind   time.Duration // how far its clock is behind on restart
		graceful bool
	}{
		{down: 0, behind: time.Hour},
		{down: 200 * time.Millisecond, behind: time.Hour},
		{down: 2 * time.Second, behind: time.Minute},
		{down: 30 * time.Second, behind: 24 * time.Hour},
		{down: 500 * time.Millisecond, behind: time.Hour, graceful: true},
	} {
		t.Run(fmt.Sprintf("down %v behind %v graceful %v", tc.down, tc.behind, tc.graceful), func(t *testing.T) {
			s := newPair(t, pairOpts{link: LinkConfig{AH: true, Delay: time.Millisecond}})
			s.StartAll()
			// Just after an advert of a (sent at 10.414s): the restarted
			// a's first advert then falls inside b's silence window.
			run(t, s, 10*time.Second+420*time.Millisecond)
			converged(t, s, "a")
			if tc.graceful {
				s.Shutdown("a")
			} else {
				s.Crash("a")
			}
			run(t, s, s.Now()+tc.down)
			s.LoseEpoch("a")
			s.SetClock("a", -tc.behind)
			restart := s.Now()
			s.Start("a")
			run(t, s, restart+time.Minute)
			converged(t, s, "a")
			behind := 0
			for _, r := range s.Records() {
				if r.At >= restart && r.Kind == RecReplay && r.Node == "b" {
					if r.Reason != string(vrrp.ReasonAHEpochBehind) {
						t.Errorf("b dropped %s", r)
					}
					behind++
				}
			}
			t.Logf("b dropped %d adverts of the restarted a as epoch-behind; longest dual master %v", behind, s.MaxDualMaster)
			if tc.down == 0 && behind == 0 {
				t.Error("an immediate restart should have sent inside b's silence window")
			}
			if limit := masterDown(100, time.Second) + time.Second; s.MaxDualMaster > limit {
				t.Fatalf("dual master for %v > Master_Down_Interval + one interval (%v)", s.MaxDualMaster, limit)
			}
		})
	}
}
