package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/daemon"
)

// cmdStatus prints the Cluster status of the local daemon.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	path := fs.String("config", "/etc/muros-had/muros-had.yaml", "configuration `file` (to find the status listener)")
	listen := fs.String("listen", "", "status listener (unix socket path or host:port); overrides --config")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	addr := *listen
	if addr == "" {
		cfg, err := config.Load(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		addr = cfg.Status.Listen
	}
	st, body, err := daemon.FetchStatus(context.Background(), addr)
	if err != nil {
		fmt.Fprintf(stderr, "muros-had status: %v\n", err)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st daemon.Status) {
	fmt.Fprintf(w, "node:          %s (%s, priority %d)\n", st.Node, st.Role, st.Priority)
	fmt.Fprintf(w, "local state:   %s\n", st.State)
	peer := st.Peer.Role
	if st.Peer.Address != "" {
		peer += " (adverts from " + st.Peer.Address + ")"
	}
	fmt.Fprintf(w, "peer:          %s: %s\n", st.Peer.Management, peer)
	if f := st.LastFailover; f != nil {
		fmt.Fprintf(w, "last failover: %s %s -> %s (%s)\n", f.Time.Format(time.RFC3339Nano), f.From, f.To, f.Reason)
	} else {
		fmt.Fprintln(w, "last failover: none")
	}
	for _, v := range st.VIPs {
		fmt.Fprintf(w, "vip:           vrid %-3d %-8s %-20s %s\n", v.VRID, v.Interface, v.Address, v.State)
	}
	reasons := make([]string, 0, len(st.Adverts.Rejected))
	for k, v := range st.Adverts.Rejected {
		reasons = append(reasons, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(reasons)
	if len(reasons) == 0 {
		reasons = append(reasons, "none")
	}
	fmt.Fprintf(w, "adverts:       sent %d, rejected %s\n", st.Adverts.Sent, strings.Join(reasons, " "))
	for _, f := range st.Foreign {
		fmt.Fprintf(w, "WARNING:       foreign router %s advertises our VRID %d (last %s)\n", f.Address, f.VRID, f.LastSeen.Format(time.RFC3339))
	}
	if st.Conntrack != nil {
		b, _ := json.Marshal(st.Conntrack)
		fmt.Fprintf(w, "conntrack:     %s\n", b)
	}
	if st.DB != nil {
		b, _ := json.Marshal(st.DB)
		fmt.Fprintf(w, "db:            %s\n", b)
	}
}
