package daemon

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/hooks"
	"github.com/muros/muros-had/internal/sched"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vrrp"
)

// Role hooks (package hooks) around the core's role action. The action
// stays one operation for the core (node.ActionRole, answered with
// node.EventRoleDone once the VIPs changed), and the loop never waits for a
// program:
//
//   - no before_release hook: the VIP change runs in the loop at once, as
//     without hooks; the hooks after it run in a goroutine;
//   - before_release hooks: a goroutine runs them, then hands the VIP
//     change back to the loop (loopEvent.role), which does it and reports
//     it done; then the hooks after it;
//   - a new role action supersedes the running job: its context is
//     cancelled (the running program is killed, the rest skipped), a VIP
//     change it had not reached is not done (the new action does its own),
//     and the new job's programs start once the old ones have exited;
//   - a re-issue after a failed VIP change (Retry) runs no hook again; the
//     hooks after the change wait for the re-issue that succeeds;
//   - at a stop the loop ends anyway: the stop hooks run in it, in order,
//     bounded by their timeouts.

// hookRunner runs one hook: *hooks.Runner, or the loop tests' fake.
type hookRunner interface {
	Run(ctx context.Context, t hooks.Transition, h hooks.Hook) hooks.Result
}

// roleHooks is the loop's hook state.
type roleHooks struct {
	set  hooks.Set // the configuration's, replaced by a reload
	run  hookRunner
	book *hooks.Book
	feed *status.Feed
	// job is the last role action's (nil before the first); last is the
	// state it entered (the next one's MUROS_HA_PREVIOUS).
	job      *roleJob
	last     string
	stopping bool // shutdown: the stop action runs its hooks in the loop
}

// roleJob is one role action with its hooks.
type roleJob struct {
	a      node.Action
	t      hooks.Transition
	after  []hooks.Hook
	ctx    context.Context
	cancel context.CancelFunc
	// prev is closed once the programs of the job this one superseded
	// have exited (nil: none running).
	prev <-chan struct{}
	// phase is closed when this job's current goroutine ends (nil: none).
	phase chan struct{}
	// afterPending: the VIP change failed; the after hooks wait for the
	// re-issue that succeeds.
	afterPending bool
}

func newRoleHooks(cfg *config.Config, run hookRunner, feed *status.Feed) roleHooks {
	if run == nil {
		run = &hooks.Runner{Start: sched.Start, Output: os.Stderr}
	}
	return roleHooks{set: hookSet(cfg.Hooks), run: run, book: hooks.NewBook(), feed: feed, last: "INIT"}
}

// hookSet names the configured hooks and turns units into systemctl:
// start when entering MASTER, stop otherwise.
func hookSet(c config.Hooks) hooks.Set {
	conv := func(list string, hs []config.Hook) []hooks.Hook {
		var out []hooks.Hook
		for i, h := range hs {
			argv := h.Command
			if h.Unit != "" {
				verb := "stop"
				if list == hooks.ListMaster {
					verb = "start"
				}
				argv = []string{hooks.Systemctl, verb, h.Unit}
			}
			out = append(out, hooks.Hook{Name: fmt.Sprintf("%s[%d]", list, i), Argv: argv, Timeout: h.Timeout, BeforeRelease: h.BeforeRelease})
		}
		return out
	}
	return hooks.Set{
		Master: conv(hooks.ListMaster, c.Master),
		Backup: conv(hooks.ListBackup, c.Backup),
		Fault:  conv(hooks.ListFault, c.Fault),
		Stop:   conv(hooks.ListStop, c.Stop),
	}
}

// hookNames lists the names of every hook of s.
func hookNames(s hooks.Set) []string {
	var out []string
	for _, l := range [][]hooks.Hook{s.Master, s.Backup, s.Fault, s.Stop} {
		for _, h := range l {
			out = append(out, h.Name)
		}
	}
	return out
}

// stateName is a role as hooks and the events stream name it: the role
// the core gives a stopping node (INIT) is STOP.
func stateName(s vrrp.State) string {
	if s == vrrp.StateInitialize {
		return "STOP"
	}
	return s.String()
}

// role executes a role action with its hooks. It returns the EventRoleDone
// to feed back, or false when before_release hooks run first (the loop
// gets the VIP change as a loopEvent.role).
func (d *Daemon) role(ctx context.Context, a node.Action) (node.Event, bool) {
	r := &d.roles
	if a.Retry {
		err := d.runRole(ctx, a)
		if j := r.job; err == nil && j != nil && j.afterPending && j.a.Role == a.Role {
			d.startAfter(j)
		}
		return node.Event{Kind: node.EventRoleDone, Gen: a.Gen, Err: err}, true
	}
	var prev <-chan struct{}
	if old := r.job; old != nil {
		old.cancel()
		if old.phase != nil {
			prev = old.phase
		}
		if old.afterPending {
			// Its VIP change never succeeded: the hooks after it never run.
			d.skipped(old.t, old.after)
			old.afterPending = false
		}
	}
	state := stateName(a.Role)
	t := hooks.Transition{State: state, Previous: r.last, Reason: a.Reason}
	for _, v := range d.cfg.VIPs {
		t.VRIDs = append(t.VRIDs, v.VRID)
		t.VIPs = append(t.VIPs, v.Address)
	}
	r.last = state
	r.feed.Publish(status.Event{Time: time.Now(), Type: "role", From: t.Previous, To: state, Reason: a.Reason})
	before, after := hooks.Split(r.set.For(state))
	jctx, cancel := context.WithCancel(d.bg)
	job := &roleJob{a: a, t: t, after: after, ctx: jctx, cancel: cancel, prev: prev}
	r.job = job
	if r.stopping {
		// The loop ends after this action: nothing is left to keep
		// running, and the stop hooks must end before the process does.
		waitClosed(prev)
		hooks.Sequence(jctx, r.run, t, before, d.hookDone)
		// The 5 s of the stop's VIP release start after the hooks.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		err := d.runRole(rctx, a)
		hooks.Sequence(jctx, r.run, t, after, d.hookDone)
		return node.Event{Kind: node.EventRoleDone, Gen: a.Gen, Err: err}, true
	}
	if len(before) == 0 {
		return node.Event{Kind: node.EventRoleDone, Gen: a.Gen, Err: d.changeVIPs(ctx, job)}, true
	}
	job.phase = d.goPhase(func() {
		waitClosed(prev)
		if !hooks.Sequence(jctx, r.run, t, before, d.hookDone) {
			d.skipped(t, after)
			return // superseded: the next action changes the VIPs
		}
		d.send(loopEvent{role: job}, jctx.Done(), d.stop)
	})
	return node.Event{}, false
}

// roleStep is the VIP change of a job whose before_release hooks are done.
func (d *Daemon) roleStep(ctx context.Context, job *roleJob) {
	if job != d.roles.job || job.ctx.Err() != nil {
		return // superseded meanwhile
	}
	err := d.changeVIPs(ctx, job)
	d.step(ctx, node.Event{Kind: node.EventRoleDone, Gen: job.a.Gen, Err: err})
}

// changeVIPs runs the role's VIP change and, once it succeeded, the hooks
// after it.
func (d *Daemon) changeVIPs(ctx context.Context, job *roleJob) error {
	err := d.runRole(ctx, job.a)
	if err != nil {
		job.afterPending = true
		return err
	}
	d.startAfter(job)
	return nil
}

func (d *Daemon) startAfter(job *roleJob) {
	job.afterPending = false
	if len(job.after) == 0 {
		return
	}
	prev := job.prev
	job.phase = d.goPhase(func() {
		waitClosed(prev)
		hooks.Sequence(job.ctx, d.roles.run, job.t, job.after, d.hookDone)
	})
}

// goPhase runs f in one of Run's goroutines; the channel closes when it ends.
func (d *Daemon) goPhase(f func()) chan struct{} {
	done := make(chan struct{})
	d.wg.Go(func() {
		defer close(done)
		f()
	})
	return done
}

func waitClosed(c <-chan struct{}) {
	if c != nil {
		<-c
	}
}

// skipped reports hooks a supersession left unstarted.
func (d *Daemon) skipped(t hooks.Transition, hs []hooks.Hook) {
	for _, h := range hs {
		d.hookDone(hooks.Result{Hook: h.Name, State: t.State, Start: time.Now(), Outcome: hooks.Skipped})
	}
}

// hookDone books a hook's result (status, metric), logs the first failure
// of a streak and the recovery, and streams it. Called from the jobs'
// goroutines.
func (d *Daemon) hookDone(res hooks.Result) {
	switch d.roles.book.Record(res) {
	case hooks.LogFailure:
		d.log.Error("role hook failed; further failures of it are counted, not logged", "hook", res.Hook, "state", res.State,
			"outcome", res.Outcome, "exit_status", res.ExitStatus, "err", res.Error, "took", res.Duration)
	case hooks.LogRecovered:
		d.log.Info("role hook succeeded again", "hook", res.Hook, "state", res.State)
	}
	if res.Outcome == hooks.Superseded {
		d.log.Info("role hook superseded by a later transition", "hook", res.Hook, "state", res.State)
	}
	d.roles.feed.Publish(status.Event{Time: time.Now(), Type: "hook", Hook: &res})
}
