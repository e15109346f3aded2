package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/status"
)

// cmdMaintenance turns the local daemon's maintenance mode on or off
// (POST /maintenance on the status listener). On, the node hands over to
// the peer at once and stays BACKUP until turned off, across restarts;
// the daemon refuses, with its reasons, when the peer could not take over
// cleanly now, unless --force.
func cmdMaintenance(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("maintenance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/muros-had/muros-had.yaml", "configuration `file` (to find the status listener)")
	listen := fs.String("listen", "", "status listener (unix socket path or host:port); overrides --config")
	force := fs.Bool("force", false, "turn maintenance on although the peer is not ready to take over (unreachable, replications incomplete)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: muros-had maintenance [--force] [--config FILE | --listen ADDR] on|off")
		fs.PrintDefaults()
	}
	// Flags may come after on|off too.
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		words = append(words, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(words) != 1 || (words[0] != "on" && words[0] != "off") {
		fs.Usage()
		return 2
	}
	on := words[0] == "on"
	addr := *listen
	if addr == "" {
		cfg, err := config.LoadForClient(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		addr = cfg.Status.Listen
	}
	ans, err := status.SetMaintenance(context.Background(), addr, status.MaintenanceRequest{On: on, Force: *force})
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "muros-had maintenance: %v\n", err)
		return 1
	case ans.Error != "":
		fmt.Fprintf(stderr, "muros-had maintenance: %s\n", ans.Error)
		return 1
	case len(ans.Refused) > 0:
		fmt.Fprintln(stderr, "muros-had maintenance: refused: the peer could not take over cleanly now:")
		for _, r := range ans.Refused {
			fmt.Fprintf(stderr, "  - %s\n", r)
		}
		fmt.Fprintln(stderr, "(--force overrides: while this node is in maintenance it never takes the VIPs, even if the peer dies)")
		return 1
	}
	for _, r := range ans.Overridden {
		fmt.Fprintf(stderr, "muros-had maintenance: forced past: %s\n", r)
	}
	if ans.On {
		fmt.Fprintln(stdout, "maintenance on: this node hands over and stays BACKUP until `muros-had maintenance off`")
	} else {
		fmt.Fprintln(stdout, "maintenance off: this node takes part in the election again")
	}
	return 0
}
