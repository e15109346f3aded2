package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/muros/muros-had/internal/sched"
	"github.com/muros/muros-had/kdf"
)

// stretchCommand is the hidden subcommand the daemon runs itself as to
// stretch the password (stretcher); it is not in the usage.
const stretchCommand = "stretch-password"

// maxPasswordInput bounds what the stretching child reads: far above any
// password the configuration accepts, far below anything that matters.
const maxPasswordInput = 64 << 10

// stretchTimeout bounds the child: Argon2id takes about a quarter of a
// second on two cores; a child that has not answered in this long is
// killed and the daemon stretches in-process instead.
const stretchTimeout = time.Minute

// cmdStretch is the child's side: the password on stdin (all of it), the
// kdf.KeyLen bytes of the master secret on stdout, nothing else.
func cmdStretch(stdin io.Reader, stdout, stderr io.Writer) int {
	pw, err := io.ReadAll(io.LimitReader(stdin, maxPasswordInput+1))
	if err == nil && len(pw) > maxPasswordInput {
		err = fmt.Errorf("password longer than %d bytes", maxPasswordInput)
	}
	if err != nil {
		fmt.Fprintf(stderr, "muros-had %s: %v\n", stretchCommand, err)
		return 1
	}
	m, err := kdf.Derive(string(pw))
	if err != nil {
		fmt.Fprintf(stderr, "muros-had %s: %v\n", stretchCommand, err)
		return 1
	}
	secret, _ := m.Secret()
	if _, err := stdout.Write(secret[:]); err != nil {
		fmt.Fprintf(stderr, "muros-had %s: %v\n", stretchCommand, err)
		return 1
	}
	return 0
}

// stretcher gives the daemon its master secret (daemon.Options.Stretch).
//
// Why a child: the unit starts the daemon at real-time priority (its
// CPUSchedulingPolicy=), and Argon2id holds every CPU for a quarter of a
// second (four lanes). In the daemon that is a quarter second in which no
// time-sharing task runs on the box: not the kernel's deferred softirqs
// (forwarding under load), not Kea, not sshd (bench/README.md, session
// 10). The daemon cannot lower one thread for it (Argon2 spreads its lanes
// over the runtime's threads) nor take real-time back after lowering all
// of them (no CAP_SYS_NICE, RestrictRealtime=), so the work runs in a
// process of its own started time-sharing (sched.Start). The result is
// remembered: an in-process restart with the same password stretches
// nothing.
type stretcher struct {
	log *slog.Logger
	// exe is the program run with stretchCommand: /proc/self/exe, the
	// binary this process runs even once a package upgrade replaced it
	// on disk.
	exe string
	// start starts the child (sched.Start); derive is the in-process
	// fallback when the child fails (kdf.Derive).
	start  func(*exec.Cmd) error
	derive func(string) (kdf.Master, error)

	password string
	master   kdf.Master
}

func newStretcher(log *slog.Logger) *stretcher {
	return &stretcher{log: log, exe: "/proc/self/exe", start: sched.Start, derive: kdf.Derive}
}

// Stretch returns the master secret of password: the one remembered if
// the password is the last one stretched, else a child's, else (the child
// failed: logged) one derived here.
func (s *stretcher) Stretch(password string) (kdf.Master, error) {
	if s.master.Valid() && password == s.password {
		return s.master, nil
	}
	m, err := s.inChild(password)
	if err != nil {
		s.log.Warn("stretching the password in a time-sharing process failed; stretching it here, at the daemon's priority", "err", err)
		if m, err = s.derive(password); err != nil {
			return kdf.Master{}, err
		}
	}
	s.password, s.master = password, m
	return m, nil
}

func (s *stretcher) inChild(password string) (kdf.Master, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stretchTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, s.exe, stretchCommand)
	cmd.Stdin = bytes.NewReader([]byte(password))
	cmd.Stdout, cmd.Stderr = &out, &errOut
	begin := time.Now()
	if err := s.start(cmd); err != nil {
		return kdf.Master{}, fmt.Errorf("start %s %s: %w", s.exe, stretchCommand, err)
	}
	// What the child actually runs with, read back from the kernel (the
	// status of a start says so; TestSystemdNotify checks it).
	policy := "unknown (ended)"
	if p, err := sched.Of(cmd.Process.Pid); err == nil {
		policy = p.String()
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w after %s", ctx.Err(), stretchTimeout)
		}
		return kdf.Master{}, fmt.Errorf("%s %s: %w: %s", s.exe, stretchCommand, err, bytes.TrimSpace(errOut.Bytes()))
	}
	m, err := kdf.FromSecret(out.Bytes())
	if err != nil {
		return kdf.Master{}, fmt.Errorf("%s %s: %w", s.exe, stretchCommand, err)
	}
	s.log.Info("password stretched in a child process", "pid", cmd.Process.Pid, "policy", policy, "took", time.Since(begin).Round(time.Millisecond))
	return m, nil
}

// runStretch is the dispatch entry of stretchCommand.
func runStretch(_ []string, stdout, stderr io.Writer) int {
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		fmt.Fprintf(stderr, "muros-had %s reads the password from a pipe: the daemon runs it, not people\n", stretchCommand)
		return 2
	}
	return cmdStretch(os.Stdin, stdout, stderr)
}
