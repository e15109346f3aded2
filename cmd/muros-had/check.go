package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/muros/muros-had/config"
)

// cmdCheck validates a configuration file: exit 0 with a one-line summary,
// or exit 1 with one line per problem on stderr. Warnings go to stderr in
// both cases; they do not fail the check.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: muros-had check --config FILE")
		return 2
	}
	c, err := config.Load(*path)
	if err != nil {
		var problems config.Problems
		if errors.As(err, &problems) {
			for _, p := range problems {
				fmt.Fprintln(stderr, p)
			}
			fmt.Fprintf(stderr, "%s: %d problem(s)\n", *path, len(problems))
		} else {
			fmt.Fprintf(stderr, "muros-had check: %v\n", err)
		}
		return 1
	}
	for _, w := range c.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	// The file is judged as text (it may be checked away from the
	// firewall); the symlinks this machine has are followed too, as the
	// daemon's start follows them.
	if c.DBSync.Enabled {
		if err := c.CheckReplicatedPaths(); err != nil {
			for _, l := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(stderr, "warning: %s: %s; the daemon refuses this at start\n", c.File, l)
			}
		}
	}
	fmt.Fprintln(stdout, summary(c))
	return 0
}

// summary is the one line check prints for a valid file.
func summary(c *config.Config) string {
	vips := make([]string, len(c.VIPs))
	for i, v := range c.VIPs {
		vips[i] = fmt.Sprintf("%s %s vrid %d", v.Interface, v.Address, v.VRID)
	}
	return fmt.Sprintf("%s: ok: %s priority %d, VRRPv%d auth %s advert %s, sync %s, peer %s, %d VIP(s): %s",
		c.File, c.Role, c.Priority(), c.Version(), c.Auth, c.AdvertInterval, c.SyncInterface, c.Peer, len(c.VIPs), strings.Join(vips, ", "))
}
