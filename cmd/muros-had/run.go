package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/daemon"
	"github.com/muros/muros-had/internal/sched"
)

// cmdRun runs the daemon in the foreground until SIGTERM/SIGINT; SIGHUP
// reloads the configuration.
func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/muros-had/muros-had.yaml", "configuration `file`")
	level := fs.String("log-level", "info", "debug | info | warn | error")
	format := fs.String("log-format", "text", "text | json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "muros-had run: --log-level: %v\n", err)
		return 2
	}
	hopts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if *format == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h)

	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		log.Warn("configuration", "warning", w.String())
	}

	// Before the daemon starts its goroutines: fewer threads to set, and
	// every later one inherits the policy.
	schedState := applyScheduling(cfg.Scheduling, log)
	if n, ok := spareProcs(os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0)); ok {
		runtime.GOMAXPROCS(n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	notify := func(state string) { _, _ = sddaemon.SdNotify(false, state) }
	wd, _ := sddaemon.SdWatchdogEnabled(false)
	stretch := newStretcher(log)
	for {
		d, err := daemon.New(daemon.Options{
			Config: cfg, Logger: log, Notify: notify, WatchdogInterval: wd / 2, Scheduling: schedState,
			ApplyScheduling: func(c config.Scheduling) string { return applyScheduling(c, log) },
			Left:            func() { lowerForTeardown(log) },
			Stretch:         stretch.Stretch,
			Reload:          func() (*config.Config, error) { return config.Load(*path) },
		})
		if err != nil {
			log.Error("start", "err", err)
			return 1
		}
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-hup:
					d.Trigger()
				case <-done:
					return
				}
			}
		}()
		err = d.Run(ctx)
		close(done)
		if errors.Is(err, daemon.ErrRestart) {
			if ctx.Err() != nil {
				return 0 // stopped while restarting: the old instance already left gracefully
			}
			cfg = d.NextConfig()
			for _, w := range cfg.Warnings {
				log.Warn("configuration", "warning", w.String())
			}
			continue
		}
		if err != nil {
			log.Error("stopped", "err", err)
			return 1
		}
		return 0
	}
}

// applyScheduling gives the process the configured CPU scheduling and
// returns the outcome for the status. A refusal is a warning: the daemon
// works time-sharing, with adverts and replication less punctual under load.
func applyScheduling(c config.Scheduling, log *slog.Logger) string {
	p := sched.Policy{Kind: c.Policy, Priority: c.Priority, Nice: c.Nice}
	n, err := sched.Apply(p)
	if err != nil {
		cur, _ := sched.Of(0)
		log.Warn("scheduling: cannot set the configured policy; running with the inherited one", "want", p.String(), "have", cur.String(), "err", err)
		return fmt.Sprintf("%s (wanted %s: %v)", cur, p, err)
	}
	log.Info("scheduling", "policy", p.String(), "threads", n)
	return p.String()
}

// lowerForTeardown runs once a final stop has left the pair (the stop's
// adverts out, the VIPs released): the process goes to sched.Lowest for
// the rest, work no one waits for. Why: at a graceful handover of a
// 250,000-flow table, the leaving node's teardown ran 11.7 ms at
// real-time priority after the handover (sched_switch ring), ahead of
// every time-sharing task and deferred softirq on its CPU: in the lab,
// where both nodes share two CPUs, the new master's forwarding (TCP
// stall median 13.8 ms against 4.9 ms with an empty table); on a real
// pair, the leaving box's last packets. Lowered, 6.2 against 4.4 ms
// (ConntrackTakeoverGap/graceful, 10 runs each, bench/README.md). An
// in-process restart does not come here: its next instance could not
// take real-time back (the unit grants no CAP_SYS_NICE, and its
// RestrictRealtime= forbids it anyway).
func lowerForTeardown(log *slog.Logger) {
	p := sched.Lowest()
	if n, err := sched.Apply(p); err != nil {
		log.Warn("scheduling: cannot lower the stopping daemon's priority", "want", p.String(), "err", err)
	} else {
		log.Info("left the pair; the rest of the stop runs at the lowest priority", "policy", p.String(), "threads", n)
	}
}

// spareProcs is the number of Ps the daemon runs with: one more than the
// runtime's default (the CPUs it may use), unless the operator set
// GOMAXPROCS (ok false: leave it). Why: the liveness engine and the VRRP
// loop wait in the runtime's network poller, and a goroutine it readies
// runs only when a P is free to poll; while table work (the refresh
// sweep's read and merge of 250,000 flows, a takeover's load) keeps every
// P busy, nothing polls but the sysmon thread, every 10 ms, and the
// heartbeats went out late (the peer's adaptive detection stayed at 29 ms
// instead of its 3 ms floor, ConntrackTakeoverGap at 250,000 flows, 14:50
// UTC; 3.8 ms with GOMAXPROCS=3, 14:55). With a spare P a thread always sits in the
// poller; the kernel then runs it ahead of the time-sharing table reader
// (the daemon's threads are real-time).
func spareProcs(env string, def int) (int, bool) {
	if env != "" {
		return 0, false
	}
	return def + 1, true
}
