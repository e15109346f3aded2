package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/status"
)

// cmdEvents prints the local daemon's events as they happen, one JSON line
// each (transitions, role changes, hook results, alarms), until
// interrupted: the status listener's GET /events.
func cmdEvents(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return events(ctx, args, stdout, stderr)
}

func events(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/muros-had/muros-had.yaml", "configuration `file` (to find the status listener)")
	listen := fs.String("listen", "", "status listener (unix socket path or host:port); overrides --config")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	addr := *listen
	if addr == "" {
		cfg, err := config.LoadForClient(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		addr = cfg.Status.Listen
	}
	if err := status.Follow(ctx, addr, stdout); err != nil {
		fmt.Fprintf(stderr, "muros-had events: %v\n", err)
		return 1
	}
	if ctx.Err() == nil {
		fmt.Fprintln(stderr, "muros-had events: the daemon closed the stream")
		return 1
	}
	return 0
}
