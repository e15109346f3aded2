// Package sched gives the daemon a CPU scheduling policy of its own: a
// real-time policy (SCHED_RR or SCHED_FIFO, sched(7)) so that VRRP adverts
// leave on time and conntrack events are replicated as they happen on a
// firewall whose CPUs are busy with other work, as conntrackd (SCHED_RR 99
// by default) and keepalived (vrrp_rt_priority) do.
//
// Linux applies a policy per thread, and a Go program has several threads
// before main runs. Apply sets the policy of every thread the process has
// (read from /proc/self/task, repeated until no new thread appears); a
// thread the runtime creates later is cloned from an existing one and
// inherits the policy (SCHED_RESET_ON_FORK is not set, since it would
// reset those threads too).
//
// Programs the daemon runs (nft, sqlite3) must not inherit a real-time
// policy: a long ruleset listing at real-time priority would hold a CPU
// against the firewall's own time-sharing work. Start forks them from a
// thread of their own that is set back to SCHED_OTHER first and ended
// afterwards, so the daemon's other threads keep their policy.
package sched

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Policy names as in the configuration.
const (
	RR    = "rr"
	FIFO  = "fifo"
	Other = "other"
)

// Policy is a scheduling policy: RR or FIFO with a real-time priority
// (1..99), or Other (time-sharing) with a nice value (-20..19).
type Policy struct {
	Kind     string
	Priority int // RR, FIFO
	Nice     int // Other
}

func (p Policy) String() string {
	if p.Kind == Other {
		return fmt.Sprintf("SCHED_OTHER nice %d", p.Nice)
	}
	return fmt.Sprintf("SCHED_%s priority %d", map[string]string{RR: "RR", FIFO: "FIFO"}[p.Kind], p.Priority)
}

// attr is the kernel's form of p.
func (p Policy) attr() (*unix.SchedAttr, error) {
	a := &unix.SchedAttr{Size: unix.SizeofSchedAttr}
	switch p.Kind {
	case RR, FIFO:
		if p.Priority < 1 || p.Priority > 99 {
			return nil, fmt.Errorf("sched: real-time priority %d out of 1..99", p.Priority)
		}
		a.Policy = unix.SCHED_RR
		if p.Kind == FIFO {
			a.Policy = unix.SCHED_FIFO
		}
		a.Priority = uint32(p.Priority)
	case Other:
		if p.Nice < -20 || p.Nice > 19 {
			return nil, fmt.Errorf("sched: nice %d out of -20..19", p.Nice)
		}
		a.Policy = unix.SCHED_NORMAL
		a.Nice = int32(p.Nice)
	default:
		return nil, fmt.Errorf("sched: unknown policy %q", p.Kind)
	}
	return a, nil
}

// Lowest is the policy for work that no one waits for: time-sharing at
// the weakest nice. Any thread may take it, whatever its policy, without
// CAP_SYS_NICE and under systemd's RestrictRealtime= (lowering is never
// refused); nothing but a privileged call takes a thread back up.
func Lowest() Policy { return Policy{Kind: Other, Nice: 19} }

// Of returns the policy of thread tid (0: the calling thread).
func Of(tid int) (Policy, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return Policy{}, fmt.Errorf("sched: sched_getattr(%d): %w", tid, err)
	}
	switch a.Policy {
	case unix.SCHED_RR:
		return Policy{Kind: RR, Priority: int(a.Priority)}, nil
	case unix.SCHED_FIFO:
		return Policy{Kind: FIFO, Priority: int(a.Priority)}, nil
	case unix.SCHED_NORMAL:
		return Policy{Kind: Other, Nice: int(a.Nice)}, nil
	}
	return Policy{Kind: "policy-" + strconv.Itoa(int(a.Policy))}, nil
}

// Apply sets p on every thread of the process and returns how many threads
// have it. A thread that ends meanwhile is skipped; an EPERM names what is
// missing.
func Apply(p Policy) (int, error) {
	a, err := p.attr()
	if err != nil {
		return 0, err
	}
	done := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		tids, err := threads()
		if err != nil {
			return len(done), err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh++
			if cur, err := Of(tid); err == nil && cur == p {
				// Already so (the unit's CPUSchedulingPolicy=): no call
				// that RestrictRealtime= or a missing CAP_SYS_NICE refuses.
				done[tid] = true
				continue
			}
			switch err := unix.SchedSetAttr(tid, a, 0); {
			case err == nil:
				done[tid] = true
			case errors.Is(err, unix.ESRCH): // the thread ended
			case errors.Is(err, unix.EPERM):
				return len(done), fmt.Errorf("sched: %s: %w (needs CAP_SYS_NICE, or the unit's CPUSchedulingPolicy=)", p, err)
			default:
				return len(done), fmt.Errorf("sched: %s on thread %d: %w", p, tid, err)
			}
		}
		if fresh == 0 {
			return len(done), nil
		}
	}
	return len(done), errors.New("sched: threads kept appearing while the policy was set")
}

func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("sched: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// Start starts cmd with the time-sharing policy (SCHED_OTHER, keeping the
// thread's nice value, 0 unless the operator set one) whatever the
// daemon's own policy: the fork happens on a thread locked for the purpose,
// set to SCHED_OTHER, and that thread ends with the call (a locked
// goroutine that returns takes its thread with it; if it was the main
// thread, which cannot exit, the runtime parks it for good instead: it
// never runs Go code again).
func Start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread, now SCHED_OTHER, is not reused.
		if err := toOther(); err != nil {
			errc <- fmt.Errorf("sched: back to SCHED_OTHER before starting %s: %w", cmd.Path, err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// toOther sets the calling thread to SCHED_OTHER with sched_setscheduler(2),
// not sched_setattr(2): systemd's RestrictRealtime= filter inspects the
// policy argument of sched_setscheduler (and lets SCHED_OTHER through),
// while sched_setattr carries it behind a pointer a filter cannot read.
func toOther() error {
	var param struct{ priority int32 } // struct sched_param
	_, _, errno := unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_NORMAL, uintptr(unsafe.Pointer(&param)))
	if errno != 0 {
		return errno
	}
	return nil
}
