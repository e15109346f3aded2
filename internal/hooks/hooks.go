// Package hooks runs the programs that make services follow the node's
// role (issue 11, "Services follow the role"), as keepalived's
// notify_master / notify_backup / notify_fault / notify_stop do, with an
// order relative to the VIPs, a timeout, and a defined fate when the next
// transition arrives.
//
// Semantics (the daemon's shell, internal/daemon, sequences them around
// the core's role action, node.ActionRole):
//
//   - Each role has a list: master (entering MASTER), backup, fault, and
//     stop (the daemon stops: the VIPs are released for good). Hooks of a
//     list run one after the other, in file order.
//   - MASTER hooks run after the VIPs are claimed (a service that binds a
//     VIP can start). A hook of the other lists runs after the release,
//     unless marked before_release: then the release waits for it, bounded
//     by its timeout (a service that must stop while it still owns the
//     address). The event loop never waits: adverts keep leaving.
//   - A hook is argv (no shell: no quoting bugs; "/bin/sh -c" is explicit),
//     or a systemd unit: "systemctl start UNIT" in the master list,
//     "systemctl stop UNIT" in the others.
//   - Environment: the daemon's own, plus MUROS_HA_STATE (the new state:
//     MASTER, BACKUP, FAULT or STOP), MUROS_HA_PREVIOUS, MUROS_HA_REASON,
//     MUROS_HA_VRIDS ("10,11"), MUROS_HA_VIPS ("203.0.113.1/24 10.0.0.1/24")
//     and MUROS_HA_HOOK (its name, "master[0]").
//   - A hook runs in a process group of its own, time-sharing (the
//     daemon's Start, internal/sched), never at the daemon's real-time
//     priority. At its timeout, or when superseded, the group gets SIGTERM,
//     then SIGKILL after Grace.
//   - Supersede: a later role action cancels the running sequence: the
//     hook running is killed and reported superseded, the hooks not yet
//     started are reported skipped, and the next sequence starts once the
//     killed group has exited (bounded by Grace), so two transitions'
//     programs never run together.
//   - Results: ok, failed (exit status or could not start), timed_out,
//     superseded, skipped, with the duration. Book keeps the last result of
//     every hook (the status), counts them by hook and outcome, and says
//     when to log: once at the first failure of a streak, once at recovery.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Role names of the hook lists, as in the configuration.
const (
	ListMaster = "master"
	ListBackup = "backup"
	ListFault  = "fault"
	ListStop   = "stop"
)

// Systemctl is the program unit hooks run.
const Systemctl = "/usr/bin/systemctl"

// DefaultTimeout bounds a hook that sets none; DefaultGrace is the time
// between SIGTERM and SIGKILL.
const (
	DefaultTimeout = 30 * time.Second
	DefaultGrace   = 5 * time.Second
)

// Hook is one program of a list.
type Hook struct {
	// Name is "<list>[<index>]": stable, a metric label.
	Name string `json:"name"`
	// Argv is the program and its arguments; Argv[0] is absolute.
	Argv    []string      `json:"argv"`
	Timeout time.Duration `json:"timeout"`
	// BeforeRelease: run before the VIPs are released (not in master).
	BeforeRelease bool `json:"before_release,omitempty"`
}

// Set is the hook lists of a configuration.
type Set struct {
	Master, Backup, Fault, Stop []Hook
}

// Empty reports whether no list has a hook.
func (s Set) Empty() bool {
	return len(s.Master)+len(s.Backup)+len(s.Fault)+len(s.Stop) == 0
}

// For returns the list of a state name (MASTER, BACKUP, FAULT, STOP).
func (s Set) For(state string) []Hook {
	switch state {
	case "MASTER":
		return s.Master
	case "BACKUP":
		return s.Backup
	case "FAULT":
		return s.Fault
	case "STOP":
		return s.Stop
	}
	return nil
}

// Split separates the hooks that run before the VIP change (before_release)
// from those that run after it, each in list order.
func Split(hs []Hook) (before, after []Hook) {
	for _, h := range hs {
		if h.BeforeRelease {
			before = append(before, h)
		} else {
			after = append(after, h)
		}
	}
	return before, after
}

// Transition is what a hook is told about the role change.
type Transition struct {
	State    string // MASTER, BACKUP, FAULT, STOP
	Previous string
	Reason   string
	VRIDs    []uint8
	VIPs     []netip.Prefix
}

// Env is the transition as environment variables for hook h.
func (t Transition) Env(h Hook) []string {
	vrids := make([]string, len(t.VRIDs))
	for i, v := range t.VRIDs {
		vrids[i] = strconv.Itoa(int(v))
	}
	vips := make([]string, len(t.VIPs))
	for i, v := range t.VIPs {
		vips[i] = v.String()
	}
	return []string{
		"MUROS_HA_STATE=" + t.State,
		"MUROS_HA_PREVIOUS=" + t.Previous,
		"MUROS_HA_REASON=" + t.Reason,
		"MUROS_HA_VRIDS=" + strings.Join(vrids, ","),
		"MUROS_HA_VIPS=" + strings.Join(vips, " "),
		"MUROS_HA_HOOK=" + h.Name,
	}
}

// Outcome is how a hook ended; its string is a metric label.
type Outcome string

// Outcomes.
const (
	OK         Outcome = "ok"
	Failed     Outcome = "failed"
	TimedOut   Outcome = "timed_out"
	Superseded Outcome = "superseded"
	Skipped    Outcome = "skipped"
)

// Result is one run of a hook.
type Result struct {
	Hook  string    `json:"hook"`
	State string    `json:"state"` // the transition's new state
	Start time.Time `json:"start"`
	// Duration until the program ended (killed included).
	Duration time.Duration `json:"duration"`
	Outcome  Outcome       `json:"outcome"`
	// ExitStatus of a failed program (-1: killed by a signal or never
	// started).
	ExitStatus int    `json:"exit_status,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Runner runs one hook as a real process.
type Runner struct {
	// Start starts a command (internal/sched.Start: time-sharing).
	Start func(*exec.Cmd) error
	// Grace between SIGTERM and SIGKILL (DefaultGrace if 0).
	Grace time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Output receives the programs' stdout and stderr (the daemon's
	// stderr: the journal); nil discards them.
	Output *os.File
}

// Run runs h for t and waits for it: until it exits, its timeout (then
// timed_out) or ctx's end (then superseded); in both last cases its
// process group is killed and reaped first.
func (r *Runner) Run(ctx context.Context, t Transition, h Hook) Result {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	grace := r.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	start := now()
	res := Result{Hook: h.Name, State: t.State, Start: start}
	if ctx.Err() != nil {
		res.Outcome = Skipped
		return res
	}
	if len(h.Argv) == 0 {
		res.Outcome, res.ExitStatus, res.Error = Failed, -1, "no program"
		return res
	}
	cmd := exec.Command(h.Argv[0], h.Argv[1:]...)
	cmd.Env = append(environ(), t.Env(h)...)
	cmd.Dir = "/"
	if r.Output != nil {
		cmd.Stdout, cmd.Stderr = r.Output, r.Output
	}
	// A process group of its own: the kill reaches what it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.Start(cmd); err != nil {
		res.Duration = now().Sub(start)
		res.Outcome, res.ExitStatus, res.Error = Failed, -1, err.Error()
		return res
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	timeout := time.NewTimer(h.Timeout)
	defer timeout.Stop()
	var err error
	select {
	case err = <-waited:
	case <-timeout.C:
		res.Outcome = TimedOut
		err = kill(cmd.Process.Pid, waited, grace)
	case <-ctx.Done():
		res.Outcome = Superseded
		err = kill(cmd.Process.Pid, waited, grace)
	}
	res.Duration = now().Sub(start)
	if res.Outcome != "" {
		res.ExitStatus = -1
		return res
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.Outcome = OK
	case errors.As(err, &ee):
		res.Outcome, res.ExitStatus, res.Error = Failed, ee.ExitCode(), ee.Error()
	default:
		res.Outcome, res.ExitStatus, res.Error = Failed, -1, err.Error()
	}
	return res
}

// private are the daemon's variables a hook must not inherit: with
// NOTIFY_SOCKET it could tell systemd the daemon is ready or stopping.
var private = []string{"NOTIFY_SOCKET=", "WATCHDOG_PID=", "WATCHDOG_USEC=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "MUROS_HA_"}

// environ is the daemon's environment without its private variables.
func environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(private, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			out = append(out, kv)
		}
	}
	return out
}

// kill ends the process group of pid: SIGTERM, then SIGKILL after grace;
// it returns once the leader is reaped.
func kill(pid int, waited <-chan error, grace time.Duration) error {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-waited:
		// The leader exited: whatever else of its group is left goes too.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return err
	case <-t.C:
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return <-waited
}

// One runs a single hook; *Runner is the real one.
type One interface {
	Run(ctx context.Context, t Transition, h Hook) Result
}

// Sequence runs hs in order with r, reporting each result as it comes.
// Once ctx ends the hook running is superseded and the rest are reported
// skipped without starting. It returns false if the sequence was cut.
func Sequence(ctx context.Context, r One, t Transition, hs []Hook, report func(Result)) bool {
	for _, h := range hs {
		var res Result
		if ctx.Err() != nil {
			res = Result{Hook: h.Name, State: t.State, Outcome: Skipped}
		} else {
			res = r.Run(ctx, t, h)
		}
		report(res)
	}
	return ctx.Err() == nil
}

// String is the result as a log or status line.
func (r Result) String() string {
	s := fmt.Sprintf("%s (%s): %s after %s", r.Hook, r.State, r.Outcome, r.Duration.Round(time.Millisecond))
	if r.Outcome == Failed {
		s += fmt.Sprintf(", exit status %d", r.ExitStatus)
		if r.Error != "" {
			s += ": " + r.Error
		}
	}
	return s
}
