package status

import (
	"slices"
	"time"
)

// CheckStatus is one health check in the document: what it looks at, its
// effect, its damped verdict and since when, and its last result.
type CheckStatus struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`   // command | ping | process | file
	Target string `json:"target"` // what it looks at, e.g. "ping 192.0.2.1 via eth1"
	Effect string `json:"effect"` // fault | weight -20
	// State is the damped verdict: ok, failing, or unknown before the
	// first result.
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"` // when the verdict last changed
	// Last is the last result ("ok" or why it failed), when, and how long
	// the probe took.
	Last     string        `json:"last,omitempty"`
	LastAt   time.Time     `json:"last_at,omitzero"`
	LastTook time.Duration `json:"last_took,omitempty"`
	// Run counts the results in a row that disagree with the verdict
	// (towards rise or fall).
	Run int `json:"run,omitempty"`
}

// Check states.
const (
	CheckUnknown = "unknown"
	CheckOK      = "ok"
	CheckFailing = "failing"
)

// SetChecks replaces the list of checks (start, reload): a check kept by
// name keeps its verdict and last result.
func (b *Book) SetChecks(checks []CheckStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make([]CheckStatus, len(checks))
	for i, c := range checks {
		if j := slices.IndexFunc(b.st.Checks, func(o CheckStatus) bool { return o.Name == c.Name }); j >= 0 {
			o := b.st.Checks[j]
			c.State, c.Since, c.Last, c.LastAt, c.LastTook, c.Run = o.State, o.Since, o.Last, o.LastAt, o.LastTook, o.Run
		}
		if c.State == "" {
			c.State = CheckUnknown
		}
		next[i] = c
	}
	b.st.Checks = next
}

// CheckResult records a check's result and the verdict it left.
func (b *Book) CheckResult(name string, verdict bool, changed bool, detail string, at time.Time, took time.Duration, run int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.IndexFunc(b.st.Checks, func(o CheckStatus) bool { return o.Name == name })
	if i < 0 {
		return // removed by a reload meanwhile
	}
	c := &b.st.Checks[i]
	state := CheckFailing
	if verdict {
		state = CheckOK
	}
	if changed || c.State != state {
		c.State, c.Since = state, at.UTC()
	}
	c.Last, c.LastAt, c.LastTook, c.Run = detail, at.UTC(), took, run
}

// SetPriority records the priority the instances advertise (the role's,
// moved by the health checks' weights).
func (b *Book) SetPriority(p uint8) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Priority = p
}
