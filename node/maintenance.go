package node

import "github.com/muros/muros-had/vrrp"

// Maintenance mode (EventMaintenance, Config.Maintenance): the operator takes
// the node out of service. A MASTER hands over gracefully, as at a
// shutdown: it advertises priority 0 (RFC 9568 section 6.4.3: the backup
// takes over after Skew_Time instead of Master_Down_Interval), releases the
// VIPs and stays BACKUP. While the mode is on the node never becomes
// MASTER, whatever happens to the peer: its Master_Down_Timer is swallowed
// (no member ever "wants" Master, so the sync group never commits) and an
// address owner's 255 is advertised as 254 so that it does not claim at the
// election either. This is stricter than CARP's demotion or keepalived's
// priority tricks, where a node "in maintenance" still takes over when it
// is the only one left: an operator working on a node must be able to
// count on it not taking the traffic. The price is that a peer dying
// meanwhile leaves no master; the daemon refuses to enter the mode unless
// the peer is ready to take over (internal/daemon) and both nodes' status
// show it.
//
// Turning the mode off restarts the election of a BACKUP group (the
// swallowed timer is re-armed, the preempt delay starts again): the node
// takes over after Master_Down_Interval when the peer is gone, or preempts
// a lower-priority master as any backup does (still held by readiness).

// maintenance turns the mode on or off.
func (c *Core) maintenance(ev Event, out []Action) []Action {
	if ev.On == c.maint {
		return out
	}
	c.maint = ev.On
	out = c.applyPriority(ev, out)
	state := c.group.State()
	switch {
	case c.maint && state == vrrp.StateMaster:
		out = c.restartElection(ev, out, "maintenance on: handing over")
	case !c.maint && state == vrrp.StateBackup:
		out = c.restartElection(ev, out, "maintenance off")
	}
	if !c.maint {
		out = c.releaseHolds(ev, out)
	}
	return out
}

// restartElection takes every member through Initialize (a master sends
// priority 0 and releases, RFC 9568 "Shutdown") and back into the election
// in one batch. The intermediate Initialize is not shown: the notifications
// report the change from the state before to the state after, with why.
func (c *Core) restartElection(ev Event, out []Action, why string) []Action {
	before := make(map[uint8]vrrp.State, len(c.cfg.Instances))
	for _, m := range c.group.Members() {
		before[m.VRID()] = m.State()
	}
	acts := c.group.StepAll(vrrp.Event{Kind: vrrp.EventShutdown}, c.scratch[:0])
	acts = c.group.StepAll(vrrp.Event{Kind: vrrp.EventStartup}, acts)
	kept := acts[:0]
	for _, a := range acts {
		if a.Kind == vrrp.ActionNotify {
			if a.To == vrrp.StateInitialize {
				continue
			}
			a.From = before[a.VRID]
			if a.From == a.To {
				continue
			}
			a.Reason = why
		}
		kept = append(kept, a)
	}
	return c.translate(ev, kept, out)
}

// maintenanceTimer says whether a timer event is one the mode swallows: a
// member's Master_Down_Timer would make it want Master.
func (c *Core) maintenanceTimer(ev Event) bool {
	return c.maint && ev.Timer.VRID != 0 && ev.Timer.Timer == vrrp.TimerMasterDown
}

// Maintenance reports whether maintenance mode is on.
func (c *Core) Maintenance() bool { return c.maint }
