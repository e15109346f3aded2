// Package health runs muros-had's health checks (issue 11 "Services follow
// the role"): a command's exit status, an ICMP echo of an address through
// a given interface, a process by name, a file's presence. Each check runs
// in a goroutine of its own, off the daemon's event loop, at its interval
// and bounded by its timeout; its results pass through a Damper (the pure
// rise/fall counter) and every result is reported with the verdict it left,
// so the shell can show the last result and feed only verdict changes to
// the decision core (package node).
//
// Damping: a check's verdict turns OK after Rise successes in a row and
// failing after Fall failures in a row; a run of the other result shorter
// than that leaves it where it is, so a flapping check is held by its
// counts, not by when it happens to be sampled.
//
// Start: a check's verdict is unknown until its first result, and the first
// result sets it directly. The core counts an unknown check as failing at
// startup (a node does not claim the VIPs before its checks have spoken:
// the safe side for a firewall whose upstream may be down) at the cost of
// one timeout at most; the damping applies from the second result on
// (keepalived instead starts its scripts as OK unless init_fail is set).
package health

// Damper is the rise/fall state machine of one check. The zero value has
// no verdict yet; Rise and Fall must be at least 1.
type Damper struct {
	Rise, Fall int

	known bool
	ok    bool
	// run counts the results in a row that disagree with the verdict.
	run int
}

// Known reports whether the check has a verdict (it has had a result).
func (d Damper) Known() bool { return d.known }

// OK is the verdict: false while unknown.
func (d Damper) OK() bool { return d.known && d.ok }

// Run is how many results in a row disagree with the verdict so far.
func (d Damper) Run() int { return d.run }

// Observe takes one result and returns the damper after it and whether the
// verdict changed (the first result always sets it).
func (d Damper) Observe(success bool) (Damper, bool) {
	if !d.known {
		d.known, d.ok, d.run = true, success, 0
		return d, true
	}
	if success == d.ok {
		d.run = 0
		return d, false
	}
	d.run++
	need := d.Fall
	if success {
		need = d.Rise
	}
	if d.run < max(need, 1) {
		return d, false
	}
	d.ok, d.run = success, 0
	return d, true
}
