package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/muros/muros-had/internal/status"
)

// printTimeline prints the group's failovers, the latest first, with their
// ages relative to the document's time.
func printTimeline(w io.Writer, st status.Status) {
	for _, f := range st.TimelineNewestFirst() {
		fmt.Fprintf(w, "timeline:      %s (%s) %s -> %s (%s)\n", f.Time.Format(time.RFC3339Nano), status.Ago(f.Time, st.Time), f.From, f.To, f.Reason)
	}
}

// printConntrack prints the conntrack replication's figures as lines.
func printConntrack(w io.Writer, st status.Status) {
	c := st.ConntrackView()
	if c == nil {
		return
	}
	synced := "not bulk synced"
	if c.BulkSynced {
		synced = "bulk synced"
	}
	line := fmt.Sprintf("%s, %s, %d flows, lag %s", c.Role, synced, c.Flows, status.Millis(c.LagMS))
	if c.Handshake != "" {
		line += ", handshake " + c.Handshake
	}
	fmt.Fprintf(w, "conntrack:     %s\n", line)
	fmt.Fprintf(w, "conntrack:     datagrams sent %d, received %d; records applied %d; lost %d, repaired %d; resyncs %d; rejected %s\n",
		c.DatagramsSent, c.DatagramsRecv, c.RecordsApplied, c.Lost, c.Repaired, c.Resyncs, counts(c.Rejected))
	if c.Waiting != "" {
		fmt.Fprintf(w, "ct waiting:    %s\n", c.Waiting)
	}
}

// printDB prints the DB replication's state as lines (its warnings are
// printDBWarnings').
func printDB(w io.Writer, st status.Status) {
	d := st.DBView()
	if d == nil {
		return
	}
	if d.Error != "" {
		fmt.Fprintf(w, "db:            ERROR %s\n", d.Error)
		return
	}
	ready := "not ready"
	if d.Ready {
		ready = "ready"
		if d.ReadyReason != "" {
			ready += " (" + d.ReadyReason + ")"
		}
	}
	pending := fmt.Sprintf("%d paths pending", d.PendingPaths)
	if d.PendingPaths > 0 {
		pending += ", oldest " + status.Millis(d.LagMillis)
	}
	fmt.Fprintf(w, "db:            %s, %s, revision %d (peer %d), last push %s, last apply %s, %s\n",
		d.Role, ready, d.Revision, d.Peer.Revision, status.Ago(d.LastSync, st.Time), status.Ago(d.LastApply, st.Time), pending)
	reach := "unreachable"
	if d.Peer.Reachable {
		reach = "reachable"
	}
	fmt.Fprintf(w, "db peer:       %s, last contact %s; rejected %s\n", reach, status.Ago(d.Peer.LastContact, st.Time), counts(d.Rejected))
	if d.LastError != "" {
		fmt.Fprintf(w, "db error:      %s\n", d.LastError)
	}
	for _, p := range d.FailedPaths {
		fmt.Fprintf(w, "db failed:     %s\n", p.Path)
	}
}

// counts renders counters by reason, sorted: "auth=1 replay=2" or "none".
func counts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
