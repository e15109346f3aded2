package node

import "github.com/muros/muros-had/vrrp"

// Peer liveness (EventPeer): the verdicts of package liveness, which hears
// the peer daemon on more than one path, decide two things VRRP alone
// cannot.
//
//   - A peer that is dead on every path, that has left, or that was master
//     and says it no longer is (it went to FAULT, into maintenance, or
//     stepped down) is taken over at once: a BACKUP group commits as if
//     Master_Down_Timer had fired, without waiting for it (or for
//     Skew_Time after a priority 0 advert).
//   - Both nodes MASTER (a false verdict, or a start with the sync link
//     cut) and the peer's priority is higher: this node steps down as if
//     the peer's advert had arrived, so a split brain ends within a
//     liveness round trip even while the advert path is cut.
//   - While the peer is alive as master on some path, Master_Down_Timer
//     firing is held (vrrp.EventMasterAlive): the adverts are lost, the
//     master is not, so the node stays BACKUP instead of splitting the
//     pair; the shell raises "sync link down". If the peer then stops
//     being master, the held expiry takes over.
//
// A peer that never spoke the protocol sends no verdict, and RFC 9568
// applies unchanged. Maintenance mode swallows the takeover (the node
// never becomes MASTER while it is on) but keeps the peer's state.
func (c *Core) peer(ev Event, out []Action) []Action {
	wasMaster := c.peerMaster
	c.peerMaster = !ev.PeerDead && ev.PeerMaster
	var why string
	switch {
	case ev.PeerDead:
		why = "peer " + ev.Reason
	case wasMaster && !c.peerMaster:
		why = "peer is no longer master: " + ev.Reason
	}
	// The hold, per member: the peer is master of the VRIDs it runs. A
	// VRID it does not run (a VIP added on this node first, in a rolling
	// reload) is not held: nobody else advertises it.
	for _, m := range c.group.Members() {
		v := m.VRID()
		alive := c.peerMaster && ev.PeerVRIDs[v/8]&(0x80>>(v%8)) != 0
		if alive != c.peerHeld[v] {
			c.peerHeld[v] = alive
			if !alive && (c.maint || why != "") {
				// Not lifted here. In maintenance, lifting would let a
				// held expiry take over: the mode's end lifts it
				// (releaseHolds). On a verdict, EventMasterDead below
				// lifts it and takes over with the verdict's reason,
				// which the log should show.
				continue
			}
			out = c.stepOne(ev, v, vrrp.Event{Kind: vrrp.EventMasterAlive, Alive: alive}, out)
		}
	}
	if c.peerMaster && c.group.State() == vrrp.StateMaster && ev.PeerPriority > c.priority {
		// Both MASTER, and the peer's priority is higher: what its adverts
		// would make this node do if they arrived, done on the word of the
		// liveness protocol, because they may not (a cut sync link after a
		// false verdict would otherwise split the pair until it is
		// mended). Equal priorities are left to the adverts' address rule.
		for _, m := range c.group.Members() {
			if v := m.VRID(); ev.PeerVRIDs[v/8]&(0x80>>(v%8)) != 0 {
				return c.stepOne(ev, v, vrrp.AdvertEvent(ev.PeerAddr, ev.PeerPriority, m.Config().Interval), out)
			}
		}
	}
	if why == "" || c.maint {
		return out
	}
	return c.stepAll(ev, vrrp.Event{Kind: vrrp.EventMasterDead, Reason: why}, out)
}

// releaseHolds tells the members the peer does not hold alive as master
// (peerHeld) so: maintenance, which kept their holds while it was on,
// has ended.
func (c *Core) releaseHolds(ev Event, out []Action) []Action {
	for _, m := range c.group.Members() {
		if v := m.VRID(); !c.peerHeld[v] {
			out = c.stepOne(ev, v, vrrp.Event{Kind: vrrp.EventMasterAlive}, out)
		}
	}
	return out
}

// PeerMaster reports whether the last peer-liveness verdict said the peer
// is alive as master.
func (c *Core) PeerMaster() bool { return c.peerMaster }
