package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/hooks"
	"github.com/muros/muros-had/internal/status"
)

// fakeHooks is the loop tests' hook runner: it records each hook with the
// transition and whether the node held its VIPs when the hook started;
// a hook named in block waits until its channel closes, its timeout or
// its supersession; one named in fail exits 1.
type fakeHooks struct {
	mu      sync.Mutex
	vips    *fakeVIPs
	journal []string
	block   map[string]chan struct{}
	fail    map[string]bool
	running map[string]bool
}

func newFakeHooks(v *fakeVIPs) *fakeHooks {
	return &fakeHooks{vips: v, block: map[string]chan struct{}{}, fail: map[string]bool{}, running: map[string]bool{}}
}

func (f *fakeHooks) Run(ctx context.Context, t hooks.Transition, h hooks.Hook) hooks.Result {
	f.mu.Lock()
	f.journal = append(f.journal, fmt.Sprintf("%s %s<-%s vips=%v", h.Name, t.State, t.Previous, f.vips.Holds()))
	ch := f.block[h.Name]
	f.running[h.Name] = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.running, h.Name)
		f.mu.Unlock()
	}()
	res := hooks.Result{Hook: h.Name, State: t.State, Start: time.Now(), Outcome: hooks.OK}
	if ch != nil {
		select {
		case <-ch:
		case <-time.After(h.Timeout):
			res.Outcome, res.ExitStatus = hooks.TimedOut, -1
		case <-ctx.Done():
			res.Outcome, res.ExitStatus = hooks.Superseded, -1
		}
	}
	if res.Outcome == hooks.OK && f.fail[h.Name] {
		res.Outcome, res.ExitStatus = hooks.Failed, 1
	}
	res.Duration = time.Since(res.Start)
	if res.Outcome != hooks.OK {
		f.mu.Lock()
		f.journal = append(f.journal, h.Name+" "+string(res.Outcome))
		f.mu.Unlock()
	}
	return res
}

func (f *fakeHooks) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.journal
	f.journal = nil
	return j
}

func (f *fakeHooks) isRunning(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running[name]
}

func (f *fakeHooks) blockHook(name string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.block[name] = ch
	return ch
}

// withHooks gives n the hooks of set and a fake runner.
func withHooks(n *loopNode, set hooks.Set) *fakeHooks {
	f := newFakeHooks(n.vips)
	n.d.roles.set, n.d.roles.run = set, f
	return f
}

func hk(name string, before bool) hooks.Hook {
	return hooks.Hook{Name: name, Argv: []string{"/bin/true"}, Timeout: 2 * time.Second, BeforeRelease: before}
}

var testHookSet = hooks.Set{
	Master: []hooks.Hook{hk("master[0]", false)},
	Backup: []hooks.Hook{hk("backup[0]", true), hk("backup[1]", false)},
	Stop:   []hooks.Hook{hk("stop[0]", true), hk("stop[1]", false)},
}

// TestLoopHooksAroundClaimAndRelease: MASTER hooks run after the claim;
// before_release hooks before the release, the others after it, at every
// transition, the stop included, with the previous state.
func TestLoopHooksAroundClaimAndRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		f := withHooks(fw2, testHookSet)
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		want := []string{
			"backup[0] BACKUP<-INIT vips=false", "backup[1] BACKUP<-INIT vips=false",
			"master[0] MASTER<-BACKUP vips=true",
		}
		if diff := cmp.Diff(want, f.take()); diff != "" {
			t.Fatalf("start, then alone (-want +got):\n%s", diff)
		}
		fw1.start(t)
		settle(time.Second)
		fw2.check(t, "BACKUP")
		want = []string{"backup[0] BACKUP<-MASTER vips=true", "backup[1] BACKUP<-MASTER vips=false"}
		if diff := cmp.Diff(want, f.take()); diff != "" {
			t.Fatalf("preempted (-want +got):\n%s", diff)
		}
		fw1.halt(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		fw2.halt(t)
		want = []string{"master[0] MASTER<-BACKUP vips=true", "stop[0] STOP<-MASTER vips=true", "stop[1] STOP<-MASTER vips=false"}
		if diff := cmp.Diff(want, f.take()); diff != "" {
			t.Fatalf("takeover, then stop (-want +got):\n%s", diff)
		}
		if fw2.vips.Holds() {
			t.Fatal("fw2 stopped with its VIPs")
		}
	})
}

// TestLoopReleaseWaitsForHook: the release waits for a before_release hook
// (VIPs and replications stay as they were), the loop does not: the peer's
// adverts are still heard; the hook's timeout ends the wait.
func TestLoopReleaseWaitsForHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, fw1, fw2 := loopPair(t, loopOpts{})
		f := withHooks(fw2, testHookSet)
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		f.take()
		f.blockHook("backup[0]") // never released: ends at its timeout (2 s)
		fw1.start(t)
		settle(500 * time.Millisecond)
		if !f.isRunning("backup[0]") {
			t.Fatalf("backup[0] is not running: %v", f.take())
		}
		if got := fw2.state(); got != "BACKUP" {
			t.Fatalf("fw2 is %s, want BACKUP while its hook runs", got)
		}
		if !fw2.vips.Holds() || !fw2.ct.Master() {
			t.Fatalf("the release did not wait for the hook: VIPs held %v, conntrack sender %v", fw2.vips.Holds(), fw2.ct.Master())
		}
		heard := fw2.d.Status().Peer.LastHeard
		settle(500 * time.Millisecond)
		if after := fw2.d.Status().Peer.LastHeard; !after.After(heard) {
			t.Fatalf("the loop stopped while the hook runs: peer last heard %v, then %v", heard, after)
		}
		settle(1500 * time.Millisecond) // past the 2 s timeout
		fw2.check(t, "BACKUP")
		want := []string{"backup[0] BACKUP<-MASTER vips=true", "backup[0] timed_out", "backup[1] BACKUP<-MASTER vips=false"}
		if diff := cmp.Diff(want, f.take()); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
		st := fw2.d.Status()
		i := slices.IndexFunc(st.Hooks, func(r hooks.Result) bool { return r.Hook == "backup[0]" })
		if i < 0 || st.Hooks[i].Outcome != hooks.TimedOut {
			t.Fatalf("status hooks %+v, want backup[0] timed_out", st.Hooks)
		}
		if n := strings.Count(fw2.logText(), "role hook failed"); n != 1 {
			t.Fatalf("%d failure lines, want 1:\n%s", n, fw2.logText())
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopHookSuperseded: a transition arriving while a hook runs kills
// it (superseded) and skips the rest of its list; a VIP change the
// superseded action had not reached is not done.
func TestLoopHookSuperseded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, fw1, fw2 := loopPair(t, loopOpts{})
		f := withHooks(fw2, testHookSet)
		release := f.blockHook("master[0]")
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		f.take()
		// A MASTER hook still running when fw1 preempts.
		fw1.start(t)
		settle(time.Second)
		fw2.check(t, "BACKUP")
		want := []string{"master[0] superseded", "backup[0] BACKUP<-MASTER vips=true", "backup[1] BACKUP<-MASTER vips=false"}
		if diff := cmp.Diff(want, f.take()); diff != "" {
			t.Fatalf("MASTER hook superseded (-want +got):\n%s", diff)
		}
		close(release)
		fw1.halt(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		f.take()
		// While its before_release hook runs on the way back to BACKUP,
		// the new master stops: fw2 takes over again, the hook is killed
		// and the release it held back never happens.
		f.blockHook("backup[0]")
		fw3 := newLoopNode(t, link, "fw3", loopAddr1, loopAddr2, "master", loopOpts{})
		fw3.start(t)
		for fw2.state() != "BACKUP" {
			settle(10 * time.Millisecond)
		}
		settle(100 * time.Millisecond)
		if !f.isRunning("backup[0]") || fw2.state() != "BACKUP" {
			t.Fatalf("fw2 %s, backup[0] running %v; want BACKUP with the hook running", fw2.state(), f.isRunning("backup[0]"))
		}
		fw2.vips.mu.Lock()
		releases := fw2.vips.releases
		fw2.vips.mu.Unlock()
		fw3.halt(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		want = []string{"backup[0] BACKUP<-MASTER vips=true", "backup[0] superseded", "master[0] MASTER<-BACKUP vips=true"}
		if diff := cmp.Diff(want, f.take()); diff != "" {
			t.Fatalf("before_release hook superseded (-want +got):\n%s", diff)
		}
		fw2.vips.mu.Lock()
		after := fw2.vips.releases
		fw2.vips.mu.Unlock()
		if after != releases {
			t.Fatalf("%d releases while the superseded hook held the release back, want none", after-releases)
		}
		st := fw2.d.Status()
		outcomes := map[string]hooks.Outcome{}
		for _, r := range st.Hooks {
			outcomes[r.Hook] = r.Outcome
		}
		if diff := cmp.Diff(map[string]hooks.Outcome{"master[0]": hooks.OK, "backup[0]": hooks.Superseded, "backup[1]": hooks.Skipped}, outcomes); diff != "" {
			t.Fatalf("status hooks (-want +got):\n%s", diff)
		}
		fw2.halt(t)
	})
}

// TestLoopHookFailureLoggedOnce: a hook failing at every transition is
// logged once, counted each time and shown in the status.
func TestLoopHookFailureLoggedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, _, fw2 := loopPair(t, loopOpts{})
		f := withHooks(fw2, testHookSet)
		f.fail["master[0]"] = true
		fw2.start(t)
		for i := range 2 {
			settle(time.Second)
			fw2.check(t, "MASTER")
			fw1 := newLoopNode(t, link, fmt.Sprintf("fw1-%d", i), loopAddr1, loopAddr2, "master", loopOpts{})
			fw1.start(t)
			settle(time.Second)
			fw2.check(t, "BACKUP")
			fw1.halt(t)
		}
		settle(time.Second)
		fw2.check(t, "MASTER")
		if n := strings.Count(fw2.logText(), "role hook failed"); n != 1 {
			t.Fatalf("%d failure lines for 3 failures, want 1:\n%s", n, fw2.logText())
		}
		st := fw2.d.Status()
		i := slices.IndexFunc(st.Hooks, func(r hooks.Result) bool { return r.Hook == "master[0]" })
		if i < 0 || st.Hooks[i].Outcome != hooks.Failed || st.Hooks[i].ExitStatus != 1 {
			t.Fatalf("status hooks %+v, want master[0] failed, exit 1", st.Hooks)
		}
		fw2.halt(t)
	})
}

// TestLoopReloadChangesHooks: a reload that adds hooks applies them in
// place (no restart of the instances, no re-election); the next
// transition runs them, units as systemctl stop in the backup list.
func TestLoopReloadChangesHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link, _, fw2 := loopPair(t, loopOpts{})
		f := withHooks(fw2, hooks.Set{})
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		fw2.d.opts.Reload = func() (*config.Config, error) {
			cfg := loopConfig(t, fw2.dir, "backup", loopAddr1, false)
			cfg.Hooks.Backup = []config.Hook{{Unit: "haproxy.service", Timeout: time.Second}}
			return cfg, nil
		}
		fw2.d.Trigger()
		settle(time.Second)
		fw2.check(t, "MASTER")
		if log := fw2.logText(); strings.Contains(log, "to=INIT") || !strings.Contains(log, "changed=[hooks]") {
			t.Fatalf("the reload did not apply the hooks in place:\n%s", log)
		}
		fw1 := newLoopNode(t, link, "fw1", loopAddr1, loopAddr2, "master", loopOpts{})
		fw1.start(t)
		settle(time.Second)
		fw2.check(t, "BACKUP")
		if diff := cmp.Diff([]string{"backup[0] BACKUP<-MASTER vips=false"}, f.take()); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
		if got := fw2.d.roles.set.Backup[0].Argv; !slices.Equal(got, []string{hooks.Systemctl, "stop", "haproxy.service"}) {
			t.Fatalf("unit hook runs %v", got)
		}
		fw1.halt(t)
		fw2.halt(t)
	})
}

// TestLoopClaimFailureDelaysMasterHooks: the MASTER hooks wait for the
// claim that succeeds (the retry), and the retry does not run them twice.
func TestLoopClaimFailureDelaysMasterHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, fw2 := loopPair(t, loopOpts{})
		f := withHooks(fw2, testHookSet)
		fw2.vips.fail(1, 0)
		fw2.start(t)
		settle(3 * time.Second) // takeover, failed claim, retry after 1 s
		fw2.check(t, "MASTER")
		want := []string{"backup[0] BACKUP<-INIT vips=false", "backup[1] BACKUP<-INIT vips=false", "master[0] MASTER<-BACKUP vips=true"}
		if diff := cmp.Diff(want, f.take()); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
		fw2.halt(t)
	})
}

// TestLoopEventsStream: the loop streams each instance transition, the
// node's role change and each hook result.
func TestLoopEventsStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, fw2 := loopPair(t, loopOpts{})
		withHooks(fw2, hooks.Set{Master: []hooks.Hook{hk("master[0]", false)}})
		lines, cancel, ok := fw2.d.feed.Subscribe()
		if !ok {
			t.Fatal("no subscription")
		}
		fw2.start(t)
		settle(time.Second)
		fw2.check(t, "MASTER")
		fw2.halt(t)
		cancel()
		var got []string
		for l := range lines {
			var e status.Event
			if err := json.Unmarshal(l, &e); err != nil {
				t.Fatal(err)
			}
			s := e.Type + " " + e.From + "->" + e.To
			if e.VRID != 0 {
				s = fmt.Sprintf("%s vrid %d", s, e.VRID)
			}
			if e.Hook != nil {
				s = e.Type + " " + e.Hook.Hook + " " + string(e.Hook.Outcome)
			}
			got = append(got, s)
		}
		want := []string{
			"transition INIT->BACKUP vrid 10", "transition INIT->BACKUP vrid 11", "role INIT->BACKUP",
			// MASTER is issued at the first member's claim (node.Core.translate).
			"transition BACKUP->MASTER vrid 10", "role BACKUP->MASTER", "transition BACKUP->MASTER vrid 11", "hook master[0] ok",
			"transition MASTER->INIT vrid 10", "transition MASTER->INIT vrid 11", "role MASTER->STOP",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
}
