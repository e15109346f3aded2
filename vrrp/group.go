package vrrp

// Sync group: the VRRP instances of one node (one per VIP/VRID) move
// together so that the pair never splits its VIPs between nodes (SPEC: "All
// VIPs move together").
//
// Rules, applied after every event to whole group, in this order:
//  1. FAULT: if any member has a fault of its own (a tracked interface down),
//     every member is held in FAULT; they leave it together when none has.
//  2. Backup: if a member left Master because it heard a better master, every
//     other member leaves Master too.
//  3. Master: a member whose own RFC 9568 machine would become Master only
//     "wants" to; the group commits the transition for all members at once
//     when every member wants it (or already is Master), and never otherwise.
//
// keepalived (vrrp_sync.c) has the same three rules, with differences:
//   - a keepalived member that wants Master but must wait re-arms its
//     Master_Down_Timer to 3 * Master_Adver_Interval + minimum skew and asks
//     again when it fires; ours keeps the wish latched until the member hears
//     an advert that cancels it, and re-evaluates on every group event, so it
//     goes Master the moment the last member agrees, with no extra timer.
//   - keepalived's sync group also forces its members' priorities together
//     only through configuration; we require nothing of the members'
//     priorities (the SPEC gives them all the same one).
//   - keepalived lets a group of one member degenerate to a plain instance;
//     ours behaves the same by construction.
//   - an address owner (priority 255) in a group with non-owners waits for
//     them like any member: the RFC's "owner is Master at once" holds only
//     when every member is an owner. Never splitting VIPs comes first.
//   - a member that gets no adverts while its siblings still hear the
//     master (one-sided loss) does not pull the group to Master; the group
//     goes Master only when every member has lost the master, so a lossy
//     VRID can delay a real takeover up to its own Master_Down_Interval.

import (
	"errors"
	"fmt"
)

// Group is a sync group of VRRP instances on one node. Like Machine it is
// pure: events in, actions (tagged with the member's VRID) out.
type Group struct {
	members []*Machine
	byVRID  [256]int8 // index+1 into members; 0 = not a member
}

// NewGroup builds a group of one machine per config. VRIDs must differ.
func NewGroup(cfgs []InstanceConfig) (*Group, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("vrrp sync group: no instances")
	}
	if len(cfgs) > 127 {
		return nil, fmt.Errorf("vrrp sync group: %d instances, at most 127", len(cfgs))
	}
	g := &Group{}
	for _, c := range cfgs {
		if g.byVRID[c.VRID] != 0 {
			return nil, fmt.Errorf("vrrp sync group: vrid %d appears twice", c.VRID)
		}
		m, err := NewMachine(c)
		if err != nil {
			return nil, fmt.Errorf("vrrp sync group: %w", err)
		}
		g.members = append(g.members, m)
		g.byVRID[c.VRID] = int8(len(g.members))
	}
	return g, nil
}

// Member returns the machine of vrid (nil if none). Read its state through
// it; do not Step it directly, or the group rules are bypassed.
func (g *Group) Member(vrid uint8) *Machine {
	i := g.byVRID[vrid]
	if i == 0 {
		return nil
	}
	return g.members[i-1]
}

// Members returns the machines in configuration order (read-only use).
func (g *Group) Members() []*Machine { return g.members }

// State summarises the group: FAULT if any member is, MASTER if all are,
// INIT if all are, BACKUP otherwise.
func (g *Group) State() State {
	var n [4]int
	for _, m := range g.members {
		n[m.state]++
	}
	switch {
	case n[StateFault] > 0:
		return StateFault
	case n[StateMaster] == len(g.members):
		return StateMaster
	case n[StateInitialize] == len(g.members):
		return StateInitialize
	}
	return StateBackup
}

// Ignored sums the members' ignored-event counters, by reason.
func (g *Group) Ignored() IgnoreCounts {
	var sum IgnoreCounts
	for _, m := range g.members {
		for r, n := range m.ignored {
			sum[r] += n
		}
	}
	return sum
}

// ErrUnknownVRID is returned by Step for an event addressed to no member.
var ErrUnknownVRID = errors.New("vrrp sync group: no instance with that vrid")

// Step feeds an event to the member with vrid and applies the group rules.
// Actions are appended to out, each tagged with its member's VRID.
func (g *Group) Step(vrid uint8, ev Event, out []Action) ([]Action, error) {
	m := g.Member(vrid)
	if m == nil {
		return out, fmt.Errorf("%w: %d", ErrUnknownVRID, vrid)
	}
	wasMaster := m.state == StateMaster
	out = m.step(ev, out)
	return g.reconcile(out, m, wasMaster && m.state == StateBackup), nil
}

// StepAll feeds an event to every member (startup, shutdown, readiness,
// a priority change for the whole node) and applies the group rules.
func (g *Group) StepAll(ev Event, out []Action) []Action {
	var demoted *Machine
	for _, m := range g.members {
		wasMaster := m.state == StateMaster
		out = m.step(ev, out)
		if wasMaster && m.state == StateBackup && demoted == nil {
			demoted = m
		}
	}
	return g.reconcile(out, demoted, demoted != nil)
}

// reconcile applies the group rules after member cause changed. demoted
// says cause went from Master to Backup in this step.
func (g *Group) reconcile(out []Action, cause *Machine, demoted bool) []Action {
	// Rule 1: one member's own fault holds all in FAULT.
	var faulty *Machine
	for _, m := range g.members {
		if len(m.down) > 0 {
			faulty = m
			break
		}
	}
	// The hold is set on the faulty members too, so that one of several
	// faulty members recovering stays in FAULT instead of flapping through
	// Backup until the group re-evaluates.
	for _, m := range g.members {
		if faulty != nil {
			out = m.setGroupFault(true, out, fmt.Sprintf("sync group: vrid %d in fault (%s)", faulty.cfg.VRID, faulty.faultCause()))
		} else {
			out = m.setGroupFault(false, out, "sync group: all tracked interfaces up")
		}
	}
	// Rule 2: one member yielding to a better master takes the rest along.
	if demoted {
		for _, m := range g.members {
			if m != cause && m.state == StateMaster {
				// Until its own advert arrives, assume the new master's
				// instances share the interval learned by cause: a stale
				// (own, possibly much shorter) interval would time out
				// before the new master's first advert for this VRID.
				m.masterAdverInterval = cause.masterAdverInterval
				m.masterAddr = cause.masterAddr
				out = m.leaveMaster(out, fmt.Sprintf("sync group: vrid %d yielded to %v", cause.cfg.VRID, cause.masterAddr))
			}
		}
	}
	// Rule 3: Master only when every member wants it.
	want := false
	for _, m := range g.members {
		switch {
		case m.wantMaster:
			want = true
		case m.state == StateMaster:
		default:
			return out
		}
	}
	if !want {
		return out
	}
	for _, m := range g.members {
		if m.wantMaster {
			why := m.wantReason
			if len(g.members) > 1 {
				why += " (sync group: all members agree)"
			}
			out = m.becomeMaster(out, why)
		}
	}
	return out
}
