package status

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// TimelineLen is how many group state changes the timeline keeps.
const TimelineLen = 20

// DBView is the part of the DB sync's status (package dbsync, whose Status
// the document carries as is) that the text and the page show. It is read
// back from the JSON form, so the client of `muros-had status`, which only
// has the JSON, shows the same as the page.
type DBView struct {
	Role         string     `json:"role"`
	Revision     uint64     `json:"revision"`
	PendingPaths int        `json:"pending_paths"`
	LagMillis    float64    `json:"lag_ms"`
	LastSync     *time.Time `json:"last_sync"`
	LastApply    *time.Time `json:"last_apply"`
	LastError    string     `json:"last_error"`
	Ready        bool       `json:"ready"`
	ReadyReason  string     `json:"ready_reason"`
	Waiting      string     `json:"waiting"`
	Conflicts    []string   `json:"conflicts"`
	FailedPaths  []struct {
		Path string `json:"path"`
	} `json:"failed_paths"`
	Rejected map[string]uint64 `json:"rejected"`
	Peer     struct {
		Reachable   bool       `json:"reachable"`
		Revision    uint64     `json:"revision"`
		LastContact *time.Time `json:"last_contact"`
	} `json:"peer"`
	ClockSkew *struct {
		OffsetMillis int64  `json:"offset_ms"`
		Warning      string `json:"warning"`
	} `json:"clock_skew"`
	// Error: DB sync failed to start (the daemon's {"error": ...}).
	Error string `json:"error"`
}

// ConntrackView is the conntrack part of s, nil when conntrack sync is off.
func (s Status) ConntrackView() *ConntrackStatus {
	switch c := s.Conntrack.(type) {
	case nil:
		return nil
	case *ConntrackStatus:
		return c
	}
	var c ConntrackStatus
	if reread(s.Conntrack, &c) != nil {
		return nil
	}
	return &c
}

// DBView is the DB sync part of s, nil when DB sync is off.
func (s Status) DBView() *DBView {
	if s.DB == nil {
		return nil
	}
	var d DBView
	if err := reread(s.DB, &d); err != nil {
		return &DBView{Error: "unreadable DB sync status: " + err.Error()}
	}
	return &d
}

// InMaintenance: the peer's fresh answer says it is in maintenance (a
// template's if takes any non-nil pointer for true).
func (p PeerStatus) InMaintenance() bool { return p.Maintenance != nil && *p.Maintenance }

// reread decodes the JSON form of v into out.
func reread(v, out any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	return nil
}

// TimelineNewestFirst is the timeline, the latest change first.
func (s Status) TimelineNewestFirst() []Failover {
	t := slices.Clone(s.Timeline)
	slices.Reverse(t)
	return t
}

// Ago says how long before now t was, e.g. "3.2 s ago"; "never" for a zero
// or nil time, the absolute time when now is unknown (a document without
// its time) or t is after now (the clocks of the two nodes may differ).
func Ago(t any, now time.Time) string {
	var at time.Time
	switch v := t.(type) {
	case time.Time:
		at = v
	case *time.Time:
		if v != nil {
			at = *v
		}
	}
	if at.IsZero() {
		return "never"
	}
	d := now.Sub(at)
	if now.IsZero() || d < 0 {
		return at.UTC().Format(time.RFC3339)
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.1f s ago", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%.1f min ago", d.Minutes())
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1f h ago", d.Hours())
	}
	return fmt.Sprintf("%.0f days ago", d.Hours()/24)
}

// Millis renders a duration in milliseconds with its unit.
func Millis(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.2f s", ms/1000)
	}
	return fmt.Sprintf("%.1f ms", ms)
}
