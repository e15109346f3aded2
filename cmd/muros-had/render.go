package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"

	"github.com/muros/muros-had/atomicfile"
	"github.com/muros/muros-had/config"
)

// cmdRender writes the keepalived.conf and conntrackd.conf fallback of a
// configuration into --out (default the current directory). Each place the
// fallback cannot match muros-had (no VRRPv3 authentication in keepalived,
// unauthenticated conntrackd sync, ...) is printed as a note on stderr and
// is a comment at the top of the file.
func cmdRender(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	out := fs.String("out", ".", "directory to write keepalived.conf and conntrackd.conf into")
	script := fs.String("notify-script", config.DefaultNotifyScript, "conntrackd primary-backup.sh called by keepalived on transitions")
	syncAddr := fs.String("sync-address", "", "this node's IPv4 address on the sync interface (conntrackd IPv4_interface); required")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || *syncAddr == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: muros-had render --config FILE --sync-address IP [--out DIR] [--notify-script PATH]")
		return 2
	}
	a, err := netip.ParseAddr(*syncAddr)
	if err != nil {
		fmt.Fprintf(stderr, "muros-had render: --sync-address: %v\n", err)
		return 2
	}
	opt := config.RenderOptions{NotifyScript: *script, SyncAddress: a}
	c, err := config.Load(*path)
	if err != nil {
		var problems config.Problems
		if errors.As(err, &problems) {
			for _, p := range problems {
				fmt.Fprintln(stderr, p)
			}
		} else {
			fmt.Fprintf(stderr, "muros-had render: %v\n", err)
		}
		return 1
	}
	r, err := config.Render(c, opt)
	if err != nil {
		fmt.Fprintf(stderr, "muros-had render: %v\n", err)
		return 1
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"keepalived.conf", r.Keepalived}, {"conntrackd.conf", r.Conntrackd}} {
		dst := filepath.Join(*out, f.name)
		// Replaced in one rename, so a keepalived reload never reads half a
		// file. Mode 0600: keepalived.conf may hold the password.
		if err := atomicfile.Write(dst, f.data, 0o600, "."+filepath.Base(dst)+".*"); err != nil {
			fmt.Fprintf(stderr, "muros-had render: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s\n", dst)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	return 0
}
