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
				if r.At >= restart && r.Kind == RecDrop && r.Node == "b" {
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

// TestAHRollingKeyUpgrade upgrades a pair of version-1 nodes to version-2
// AH keys one node at a time, in both orders, with graceful restarts: every
// advert sent is accepted by the peer (no auth_failed drop, so no false
// takeover and no dual master beyond the simulator's bound), and once both
// are upgraded and have heard each other the pair signs with version 2.
func TestAHRollingKeyUpgrade(t *testing.T) {
	for _, first := range []string{"a", "b"} { // a is the master (priority 150)
		t.Run("upgrade "+first+" first", func(t *testing.T) {
			s, err := New(LinkConfig{AH: true, Delay: time.Millisecond},
				NodeConfig{Name: "a", Addr: addrA, Instances: instances(150, time.Second, nil, 10, 11), KeyV1Only: true},
				NodeConfig{Name: "b", Addr: addrB, Instances: instances(100, time.Second, nil, 10, 11), KeyV1Only: true})
			if err != nil {
				t.Fatal(err)
			}
			s.StartAll()
			run(t, s, 10*time.Second)
			converged(t, s, "a")
			second := map[string]string{"a": "b", "b": "a"}[first]
			for _, name := range []string{first, second} {
				s.Shutdown(name)
				run(t, s, s.Now()+2*time.Second)
				s.Upgrade(name)
				s.Start(name)
				run(t, s, s.Now()+20*time.Second)
				converged(t, s, "a")
			}
			// A master that fell back keeps version 1 until it hears its
			// peer: the next failover ends it.
			s.Crash("a")
			run(t, s, s.Now()+10*time.Second)
			converged(t, s, "b")
			s.Start("a")
			run(t, s, s.Now()+20*time.Second)
			converged(t, s, "a")
			for _, r := range s.Records() {
				if r.Kind == RecDrop && r.Reason != string(vrrp.ReasonAHEpochBehind) {
					t.Errorf("dropped: %s", r)
				}
			}
			var last []Record
			for _, r := range s.Records() {
				if r.Kind == RecDeliver && r.At > s.Now()-5*time.Second {
					last = append(last, r)
				}
			}
			if len(last) == 0 {
				t.Fatal("no advert delivered in the last 5 s")
			}
			for _, r := range last {
				if r.Key != vrrp.KeyV2 {
					t.Fatalf("after the upgrade and a failover, still %s\n%s", r, s.Dump(30))
				}
			}
		})
	}
}

// TestAHUpgradedNodeFallsBackForOldPeer: an upgraded node that becomes
// master while its old peer is the backup signs with version 1, so the old
// peer accepts its adverts and never takes over.
func TestAHUpgradedNodeFallsBackForOldPeer(t *testing.T) {
	s, err := New(LinkConfig{AH: true, Delay: time.Millisecond},
		NodeConfig{Name: "a", Addr: addrA, Instances: instances(150, time.Second, nil, 10), KeyV1Only: true},
		NodeConfig{Name: "b", Addr: addrB, Instances: instances(200, time.Second, nil, 10)})
	if err != nil {
		t.Fatal(err)
	}
	s.Start("a")
	run(t, s, 10*time.Second)
	s.Start("b") // hears the old master a, then preempts it
	run(t, s, 60*time.Second)
	converged(t, s, "b")
	for _, r := range s.Records() {
		if r.Kind == RecDrop {
			t.Errorf("dropped: %s", r)
		}
		if r.Kind == RecSend && r.Node == "b" && r.Key != vrrp.KeyV1 {
			t.Errorf("b sent with %s to an old peer: %s", r.Key, r)
		}
	}
}
