// Command muros-had is the MurOS high-availability daemon: native VRRP for the
// virtual IPs, conntrack state replication and configuration DB sync in one
// process per firewall. See SPEC.md and README.md.
//
// Each subcommand lives in its own file (run.go, check.go, status.go,
// maintenance.go, events.go, render.go, inspect.go, token.go, pair.go) as a
// func(args []string, stdout, stderr io.Writer) int returning the exit code;
// stretch.go is the hidden one the daemon runs itself as to stretch the
// password time-sharing.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time (scripts/deb.sh: -X main.version=...).
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run the daemon in the foreground (--config FILE)", cmdRun},
		{"check", "validate a configuration file (--config FILE)", cmdCheck},
		{"status", "show the cluster status (--json)", cmdStatus},
		{"maintenance", "hand over and stay BACKUP until turned off, across restarts (on|off [--force])", cmdMaintenance},
		{"events", "print transitions, hook results and alarms as JSON lines as they happen, until interrupted", cmdEvents},
		{"render", "write keepalived.conf and conntrackd.conf equivalents (--config FILE)", cmdRender},
		{"inspect", "decode VRRP/AH packets in a pcap as JSON lines ([--password P] FILE.pcap)", cmdInspect},
		{"token", "print a peer API bearer token (--config FILE)", cmdToken},
		{"fingerprint", "print this node's DB sync certificate fingerprint for the peer's dbsync.tls.peer_sha256 (--config FILE)", cmdFingerprint},
		{"pair", "pair with the peer: shared JWT secret and both certificates pinned, confirmed on both nodes ([--code CODE] --config FILE)", cmdPair},
		{"version", "print the version", cmdVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: muros-had <command> [flags]")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == stretchCommand {
		return runStretch(args[1:], stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "muros-had: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func cmdVersion(_ []string, stdout, _ io.Writer) int {
	fmt.Fprintln(stdout, "muros-had", version)
	return 0
}
