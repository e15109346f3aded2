package node

import (
	"fmt"
	"slices"

	"github.com/muros/muros-had/vrrp"
)

// Check is a health check as the core sees it: its name and the effect of
// its verdict. What it looks at and how it is damped is the shell's
// (internal/health); the core gets verdicts (EventCheck).
type Check struct {
	Name string
	// Fault: while the check fails, every instance is in FAULT (as with a
	// tracked interface down: a master sends priority 0 and releases).
	Fault bool
	// Weight (without Fault), keepalived's rule: a negative weight is
	// added to the priority while the check fails, a positive one while it
	// is OK. The sum is clamped to 1..254; an address owner (255) keeps
	// its priority.
	Weight int
}

// checkVerdict is what the core knows of a check.
type checkVerdict uint8

const (
	// checkUnproven: a check of the configuration the node started with,
	// before its first verdict. It counts as failing: a node does not
	// claim the VIPs before its checks have spoken.
	checkUnproven checkVerdict = iota
	// checkPending: a check a reload added, before its first verdict. It
	// counts for nothing: a check nobody has run yet does not move the
	// running pair.
	checkPending
	checkOK
	checkFailing
)

type checkState struct {
	Check
	verdict checkVerdict
}

// failing says whether the check's fault or negative weight applies.
func (s *checkState) failing() bool {
	return s.verdict == checkFailing || s.verdict == checkUnproven
}

// faulting says whether the check holds the node in FAULT.
func (s *checkState) faulting() bool { return s.Fault && s.failing() }

// checkTrack is the pseudo interface a fault check is tracked as by the
// state machines; ':' never appears in a Linux interface name, so it
// cannot meet a real one.
func checkTrack(name string) string { return "check:" + name }

// initChecks builds the check table and starts the instances at the
// priority the unproven checks give.
func (c *Core) initChecks(cfgs []vrrp.InstanceConfig) error {
	c.checks = map[string]*checkState{}
	for _, ch := range c.cfg.Checks {
		if ch.Name == "" {
			return fmt.Errorf("node: a health check without a name")
		}
		if _, dup := c.checks[ch.Name]; dup {
			return fmt.Errorf("node: health check %s defined twice", ch.Name)
		}
		c.checks[ch.Name] = &checkState{Check: ch, verdict: checkUnproven}
	}
	if len(cfgs) > 0 {
		c.base = cfgs[0].Priority
	}
	c.priority = c.effectivePriority()
	for i := range cfgs {
		cfgs[i].Priority = c.priority
	}
	return nil
}

// startChecks holds the instances in FAULT for the fault checks that have
// not yet spoken: the group is still in Initialize, so this only records
// the causes (the startup event then enters FAULT instead of the election).
func (c *Core) startChecks() {
	for _, name := range c.checkNames() {
		if s := c.checks[name]; s.faulting() {
			c.scratch = c.group.StepAll(vrrp.Event{Kind: vrrp.EventTrackDown, Interface: checkTrack(name)}, c.scratch[:0])
		}
	}
	c.scratch = c.scratch[:0]
}

func (c *Core) checkNames() []string {
	names := make([]string, 0, len(c.checks))
	for n := range c.checks {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Priority is the instances' priority: the base with the checks' weights.
func (c *Core) Priority() uint8 { return c.priority }

// CheckFailing reports whether the named check's effect applies now (an
// unproven check at startup counts as failing, one a reload added does not
// until its first verdict), and whether the core knows the check.
func (c *Core) CheckFailing(name string) (failing, known bool) {
	s, ok := c.checks[name]
	if !ok {
		return false, false
	}
	return s.failing(), true
}

// check applies a verdict: a fault check's cause is set or cleared on
// every instance, a weight moves the priority.
func (c *Core) check(ev Event, out []Action) []Action {
	s, ok := c.checks[ev.Check]
	if !ok {
		return out // a check the last reload removed, still reporting
	}
	wasFaulting := s.faulting()
	s.verdict = checkFailing
	if ev.OK {
		s.verdict = checkOK
	}
	out = c.track(ev, s.Name, wasFaulting, s.faulting(), out)
	return c.applyPriority(ev, out)
}

// setChecks replaces the check table (a reload). A check kept by name keeps
// its verdict; a new one counts for nothing until its first verdict; a
// removed one's effect ends.
func (c *Core) setChecks(ev Event, out []Action) []Action {
	next := map[string]*checkState{}
	for _, ch := range ev.Checks {
		st := &checkState{Check: ch, verdict: checkPending}
		if old, ok := c.checks[ch.Name]; ok {
			st.verdict = old.verdict
		}
		next[ch.Name] = st
	}
	prev := c.checks
	c.checks = next
	names := make([]string, 0, len(prev)+len(next))
	for n := range prev {
		names = append(names, n)
	}
	for n := range next {
		if _, ok := prev[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		var was, now bool
		if s, ok := prev[n]; ok {
			was = s.faulting()
		}
		if s, ok := next[n]; ok {
			now = s.faulting()
		}
		out = c.track(ev, n, was, now, out)
	}
	return c.applyPriority(ev, out)
}

// track feeds a fault check's change to every instance as its pseudo
// interface going down or up.
func (c *Core) track(ev Event, name string, was, now bool, out []Action) []Action {
	switch {
	case now && !was:
		return c.stepAll(ev, vrrp.Event{Kind: vrrp.EventTrackDown, Interface: checkTrack(name)}, out)
	case was && !now:
		return c.stepAll(ev, vrrp.Event{Kind: vrrp.EventTrackUp, Interface: checkTrack(name)}, out)
	}
	return out
}

// effectivePriority is the base priority with the weights that apply,
// clamped to 1..254; an address owner (255) is not weighed.
func (c *Core) effectivePriority() uint8 {
	if c.base == vrrp.PriorityOwner && c.maint {
		// An owner in maintenance must not claim at its election.
		return vrrp.PriorityOwner - 1
	}
	if c.base == vrrp.PriorityOwner || c.base == 0 {
		return c.base
	}
	p := int(c.base)
	for _, s := range c.checks {
		switch {
		case s.Fault:
		case s.Weight < 0 && s.failing():
			p += s.Weight
		case s.Weight > 0 && s.verdict == checkOK:
			p += s.Weight
		}
	}
	return uint8(min(max(p, 1), vrrp.PriorityOwner-1))
}

// applyPriority gives the instances the effective priority when it
// changed; a master advertises it at once (vrrp's EventSetPriority).
func (c *Core) applyPriority(ev Event, out []Action) []Action {
	p := c.effectivePriority()
	if p == c.priority || p == 0 {
		return out
	}
	c.priority = p
	return c.stepAll(ev, vrrp.Event{Kind: vrrp.EventSetPriority, Priority: p}, out)
}
