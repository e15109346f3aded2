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
	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/internal/status"
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
		// Only the listener is needed: a file run would refuse (a weak
		// password after an upgrade) must not hide the running daemon.
		cfg, err := config.LoadForClient(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		addr = cfg.Status.Listen
	}
	st, body, err := status.Fetch(context.Background(), addr)
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

func printStatus(w io.Writer, st status.Status) {
	fmt.Fprintf(w, "node:          %s (%s, priority %d)\n", st.Node, st.Role, st.Priority)
	fmt.Fprintf(w, "local state:   %s\n", st.State)
	if st.Maintenance {
		fmt.Fprintln(w, "MAINTENANCE:   on: this node handed over and stays BACKUP until `muros-had maintenance off`")
	}
	if st.Scheduling != "" {
		fmt.Fprintf(w, "scheduling:    %s\n", st.Scheduling)
	}
	printPeer(w, st)
	if l := st.Liveness; l != nil {
		fmt.Fprintf(w, "liveness:      %s\n", l)
		if l.SyncLinkDown.Active {
			fmt.Fprintf(w, "ALARM:         SYNC LINK DOWN since %s: the peer is alive on the second path, so this node does not take over; adverts and conntrack sync do not pass until the link is mended\n", l.SyncLinkDown.Since.Format(time.RFC3339))
		}
		if l.Shared != "" {
			fmt.Fprintf(w, "WARNING:       %s\n", l.Shared)
		}
	}
	if st.Readiness != nil {
		fmt.Fprintf(w, "preemption:    %s\n", st.Readiness)
	}
	if f := st.LastFailover; f != nil {
		fmt.Fprintf(w, "last failover: %s %s -> %s (%s)\n", f.Time.Format(time.RFC3339Nano), f.From, f.To, f.Reason)
	} else {
		fmt.Fprintln(w, "last failover: none")
	}
	printTimeline(w, st)
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
	for _, c := range st.Checks {
		fmt.Fprintf(w, "check:         %s\n", checkLine(c))
	}
	for _, h := range st.Hooks {
		fmt.Fprintf(w, "hook:          %s\n", h)
	}
	for _, f := range st.Foreign {
		fmt.Fprintf(w, "WARNING:       foreign router %s advertises our VRID %d (last %s)\n", f.Address, f.VRID, f.LastSeen.Format(time.RFC3339))
	}
	printConntrack(w, st)
	if st.DB != nil {
		printDB(w, st)
		b, _ := json.Marshal(st.DB)
		printDBWarnings(w, b)
	}
}

// printDBWarnings spells out what in the DB sync status needs the
// operator: clock skew, files both nodes changed, why a backup waits.
func printDBWarnings(w io.Writer, db []byte) {
	var s struct {
		ClockSkew *dbsync.ClockSkew `json:"clock_skew"`
		Conflicts []string          `json:"conflicts"`
		Waiting   string            `json:"waiting"`
	}
	if json.Unmarshal(db, &s) != nil {
		return
	}
	if c := s.ClockSkew; c != nil && c.Warning != "" {
		fmt.Fprintf(w, "WARNING:       the peer's clock is off by %v: %s\n", time.Duration(c.OffsetMillis)*time.Millisecond, c.Warning)
	}
	if len(s.Conflicts) > 0 {
		fmt.Fprintf(w, "WARNING:       %d files changed on both nodes (split brain) are not replicated until changed on the master: %s\n",
			len(s.Conflicts), strings.Join(s.Conflicts, ", "))
	}
	if s.Waiting != "" {
		fmt.Fprintf(w, "db waiting:    %s\n", s.Waiting)
	}
}

// printPeer prints the peer view, the split brain alarm and the ruleset
// comparison.
func printPeer(w io.Writer, st status.Status) {
	p := st.Peer
	peer := p.Role
	switch {
	case p.RoleSource == "health" && p.Address != "":
		peer += " (from its health answer; last adverts from " + p.Address + ")"
	case p.RoleSource == "health":
		peer += " (from its health answer)"
	case p.Address != "":
		peer += " (adverts from " + p.Address + ")"
	}
	if p.RoleReason != "" {
		peer += ": " + p.RoleReason
	}
	fmt.Fprintf(w, "peer:          %s: %s\n", p.Management, peer)
	var health string
	switch {
	case !p.Polled:
		health = "not polled"
	case p.Reachable:
		health = "reachable"
	case p.Error != "":
		health = "unreachable (" + p.Error + ")"
	default:
		health = "no answer yet"
	}
	if !p.LastHeard.IsZero() {
		health += ", last heard " + p.LastHeard.Format(time.RFC3339Nano)
	}
	if p.Readiness != nil {
		health += "; peer " + p.Readiness.String()
	}
	if p.InMaintenance() {
		health += "; peer in MAINTENANCE (it stays BACKUP: it takes nothing over from this node)"
	}
	fmt.Fprintf(w, "peer health:   %s\n", health)
	if st.SplitBrain.Active {
		fmt.Fprintf(w, "SPLIT BRAIN:   this node and the peer are both MASTER since %s\n", st.SplitBrain.Since.Format(time.RFC3339))
	}
	r := st.Ruleset
	fp := func(s *ruleset.Status) string {
		if s == nil {
			return "unknown"
		}
		out := s.Fingerprint
		if out == "" {
			out = "none"
		}
		if s.Error != "" {
			out += " (" + s.Error + ")"
		}
		return out
	}
	verdict := "same"
	switch {
	case r.Drift:
		verdict = "DRIFT since " + r.DriftSince.Format(time.RFC3339)
	case r.Local.Fingerprint == "" || r.Peer == nil || r.Peer.Fingerprint == "":
		verdict = "not compared"
	case r.Local.Fingerprint != r.Peer.Fingerprint:
		verdict = "differ (not yet reported)"
	}
	line := fmt.Sprintf("%s: local %s, peer %s", verdict, fp(&r.Local), fp(r.Peer))
	if r.Off != "" {
		line += "; " + r.Off
	}
	fmt.Fprintf(w, "ruleset:       %s\n", line)
}

// checkLine is one health check in the text status: verdict and since
// when, what it looks at and its effect, the last result.
func checkLine(c status.CheckStatus) string {
	line := fmt.Sprintf("%-12s %-7s", c.Name, c.State)
	if !c.Since.IsZero() {
		line += " since " + c.Since.Format(time.RFC3339)
	}
	line += fmt.Sprintf(" (%s, %s)", c.Target, c.Effect)
	if !c.LastAt.IsZero() {
		line += fmt.Sprintf(", last result: %s (at %s, took %s)", c.Last, c.LastAt.Format(time.RFC3339), c.LastTook.Round(time.Millisecond))
	}
	if c.Run > 0 {
		line += fmt.Sprintf(", %d in a row against the verdict", c.Run)
	}
	return line
}
