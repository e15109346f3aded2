package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/muros/muros-had/internal/daemon"
	"github.com/muros/muros-had/internal/procout"
	"github.com/muros/muros-had/internal/sched"
	"github.com/muros/muros-had/kdf"
)

// stretchCommand is the hidden subcommand the daemon runs itself as to
// stretch the password (stretcher); it is not in the usage.
const stretchCommand = "stretch-password"

// maxPasswordInput bounds what the stretching child reads: far above any
// password the configuration accepts, far below anything that matters.
const maxPasswordInput = 64 << 10

// stretchTimeout bounds the child: Argon2id takes about 0.3 s on two
// cores; a child that has not answered in this long is killed and the
// daemon stretches in-process instead. With the fallback it stays inside
// systemd's WatchdogSec (10 s): the daemon pings the watchdog on both
// sides of the stretch (an in-process restart is already under it).
const stretchTimeout = 5 * time.Second

// cmdStretch is the child's side: the password on stdin (all of it), the
// kdf.KeyLen bytes of the master secret on stdout, nothing else.
func cmdStretch(stdin io.Reader, stdout, stderr io.Writer) int {
	pw, err := io.ReadAll(io.LimitReader(stdin, maxPasswordInput+1))
	if err == nil && len(pw) > maxPasswordInput {
		err = fmt.Errorf("password longer than %d bytes", maxPasswordInput)
	}
	var m kdf.Master
	if err == nil {
		m, err = kdf.Derive(string(pw))
	}
	clear(pw)
	if err == nil {
		err = kdf.WriteSecret(stdout, m)
	}
	if err != nil {
		fmt.Fprintf(stderr, "muros-had %s: %v\n", stretchCommand, err)
		return 1
	}
	return 0
}

// stretcher gives the daemon its master secret (daemon.Options.Stretch).
//
// Why a child: the unit starts the daemon at real-time priority (its
// CPUSchedulingPolicy=), and Argon2id's four lanes then hold every CPU of
// a small box, ahead of every time-sharing task (the kernel's deferred
// softirqs, Kea, sshd), for as long as they run: a time-sharing task
// waited 101 ms in the median of five starts in the lab, 5 ms now (bench/README.md, "A start that starves
// nothing"). The daemon cannot lower one thread for it (Argon2 spreads
// its lanes over the runtime's threads) nor take real-time back after
// lowering all of them (no CAP_SYS_NICE, RestrictRealtime=), so the work
// runs in a process of its own started time-sharing (sched.Start). The
// secret is kept while the password is unchanged: an in-process restart
// stretches nothing. Not safe for concurrent use (cmdRun's loop calls it
// once per instance).
type stretcher struct {
	log *slog.Logger
	// exe is the program run with stretchCommand: /proc/self/exe, the
	// binary this process runs even once a package upgrade replaced it
	// on disk.
	exe     string
	timeout time.Duration
	// start starts the child (sched.Start); derive is the in-process
	// fallback when the child fails (daemon.DeriveHere).
	start  func(*exec.Cmd) error
	derive func(string) (kdf.Master, error)

	// digest is SHA-256 of the password master was stretched from: the
	// password itself is not kept.
	digest [sha256.Size]byte
	master kdf.Master
}

func newStretcher(log *slog.Logger) *stretcher {
	return &stretcher{log: log, exe: "/proc/self/exe", timeout: stretchTimeout, start: sched.Start, derive: daemon.DeriveHere}
}

// Stretch returns the master secret of password: the one kept if the
// password is the last one stretched, else a child's, else (the child
// failed: logged) one derived here. A ctx done meanwhile (the daemon
// stopping) ends the child and the call.
func (s *stretcher) Stretch(ctx context.Context, password string) (kdf.Master, error) {
	digest := sha256.Sum256([]byte(password))
	if s.master.Valid() && digest == s.digest {
		return s.master, nil
	}
	m, err := s.inChild(ctx, password)
	if err != nil {
		if ctx.Err() != nil {
			return kdf.Master{}, fmt.Errorf("stretching the password: %w", ctx.Err())
		}
		s.log.Warn("stretching the password in a time-sharing process failed; stretching it here, at the daemon's priority", "err", err)
		var errHere error
		if m, errHere = s.derive(password); errHere != nil {
			return kdf.Master{}, errors.Join(err, errHere)
		}
	}
	s.digest, s.master = digest, m
	return m, nil
}

func (s *stretcher) inChild(ctx context.Context, password string) (kdf.Master, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	in := []byte(password)
	defer clear(in)
	// One byte more than a secret, so that a longer answer is refused;
	// a few kB of stderr is enough for its first line.
	out := &procout.Capture{N: kdf.KeyLen + 1}
	defer out.Clear()
	errOut := &procout.Capture{N: 4096}
	cmd := exec.CommandContext(ctx, s.exe, stretchCommand)
	cmd.Args[0] = "muros-had" // what ps shows, not /proc/self/exe
	cmd.Env = []string{}      // not NOTIFY_SOCKET, WATCHDOG_*: the child is no service
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), out, errOut
	// Wait returns once the child has exited even if something it left
	// holds the pipes.
	cmd.WaitDelay = 100 * time.Millisecond
	begin := time.Now()
	if err := s.start(cmd); err != nil {
		return kdf.Master{}, fmt.Errorf("start %s %s: %w", s.exe, stretchCommand, err)
	}
	// What the child actually runs with, read back from the kernel, for
	// the log line (TestSystemdNotify checks it on the real binary).
	policy := "unknown (ended)"
	if p, err := sched.Of(cmd.Process.Pid); err == nil {
		policy = p.String()
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		if msg := errOut.FirstLine(); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return kdf.Master{}, fmt.Errorf("%s %s: %w", s.exe, stretchCommand, err)
	}
	m, err := kdf.ReadSecret(bytes.NewReader(out.Bytes()))
	if err != nil {
		return kdf.Master{}, fmt.Errorf("%s %s: %w", s.exe, stretchCommand, err)
	}
	s.log.Info("password stretched in a child process", "pid", cmd.Process.Pid, "policy", policy, "took", time.Since(begin).Round(time.Millisecond))
	return m, nil
}

// runStretch is the dispatch entry of stretchCommand.
func runStretch(args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintf(stderr, "muros-had %s takes no arguments\n", stretchCommand)
		return 2
	}
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		fmt.Fprintf(stderr, "muros-had %s reads the password from a pipe: the daemon runs it, not people\n", stretchCommand)
		return 2
	}
	return cmdStretch(os.Stdin, stdout, stderr)
}
