package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/procout"
	"github.com/muros/muros-had/internal/sched"
)

// Probe looks once. It returns nil when the check passes, or why it does
// not; it must return by the context's deadline (the check's timeout).
type Probe interface {
	Probe(ctx context.Context) error
}

// ProbeFunc adapts a function to Probe.
type ProbeFunc func(ctx context.Context) error

// Probe calls f.
func (f ProbeFunc) Probe(ctx context.Context) error { return f(ctx) }

// ErrTimeout is the result of a probe its timeout cut short.
var ErrTimeout = errors.New("timed out")

// NewProbe builds the probe of a configured check.
func NewProbe(ch config.Check) (Probe, error) {
	switch ch.Kind {
	case config.CheckCommand:
		return Command{Argv: ch.Command}, nil
	case config.CheckPing:
		return Ping{Address: ch.Address, Interface: ch.Interface}, nil
	case config.CheckProcess:
		return Process{Name: ch.Process, Proc: "/proc"}, nil
	case config.CheckFile:
		return File{Path: ch.Path, Exists: ch.Exists}, nil
	}
	return nil, fmt.Errorf("health: check %s: unknown kind %q", ch.Name, ch.Kind)
}

// Command runs a program (no shell) and passes when it exits 0. It starts
// time-sharing (sched.Start) whatever the daemon's real-time policy, in a
// process group of its own that the timeout kills whole, so a script's
// children do not outlive it.
type Command struct {
	Argv []string
}

// Probe runs the program once.
func (c Command) Probe(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A grandchild holding the output pipe open must not hold the check.
	cmd.WaitDelay = 100 * time.Millisecond
	out := &procout.Capture{N: 512}
	cmd.Stdout, cmd.Stderr = out, out
	if err := sched.Start(cmd); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		return ErrTimeout
	}
	if err != nil {
		if msg := out.FirstLine(); msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}

// Process passes when a process whose name (/proc/PID/comm) is Name runs.
type Process struct {
	Name string
	Proc string // the proc file system's mount point (tests give another)
}

// Probe scans Proc once.
func (p Process) Probe(ctx context.Context) error {
	ents, err := os.ReadDir(p.Proc)
	if err != nil {
		return fmt.Errorf("listing processes: %w", err)
	}
	for _, e := range ents {
		if ctx.Err() != nil {
			return ErrTimeout
		}
		if !e.IsDir() || e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.Proc, e.Name(), "comm"))
		if err != nil {
			continue // exited meanwhile
		}
		if strings.TrimSuffix(string(b), "\n") == p.Name {
			return nil
		}
	}
	return fmt.Errorf("no process named %s", p.Name)
}

// File passes when Path exists (Exists) or does not (!Exists).
type File struct {
	Path   string
	Exists bool
}

// Probe stats the path once. Any error but "does not exist" fails the
// check either way: a file the daemon cannot see is not known absent.
func (f File) Probe(context.Context) error {
	_, err := os.Stat(f.Path)
	switch {
	case err == nil && f.Exists, errors.Is(err, os.ErrNotExist) && !f.Exists:
		return nil
	case err == nil:
		return fmt.Errorf("%s exists", f.Path)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist", f.Path)
	}
	return err
}
