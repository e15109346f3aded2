// Package node is the decision core of one muros-had node: everything the
// node decides, as a pure function from events to actions. It owns
//
//   - the instance table and every receive check of an advert: the codec's
//     checks (vrrp.Config.Check: TTL 255, version, authentication kind and
//     ICV result, checksum), the node's own adverts looped back, unknown
//     VRID, wrong address family (RFC 9568 section 7: IPv4 and IPv6 VRIDs are
//     separate spaces), a foreign address list (a VRID collision), and the
//     AH anti-replay windows per source (RFC 4302 section 3.4.3);
//   - the AH send counters (epoch and sequence, RFC 4302 section 3.3.3) and
//     when their epoch must be persisted;
//   - the sync group of RFC 9568 section 6 state machines (package vrrp);
//   - the preemption hold: re-armed at every entry into BACKUP, lifted by
//     the readiness verdict of the current wait only;
//   - the health checks' effects (checks.go): a failing fault check holds
//     every instance in FAULT as a tracked interface down does; weights
//     move the priority (keepalived's rule: negative while failing,
//     positive while OK; clamped to 1..254, an owner is not weighed). A
//     check counts as failing until its first verdict at startup, and for
//     nothing until then when a reload added it;
//   - the node's role: MASTER (VIPs held, conntrack and DB replication
//     senders) or not (VIPs released, both replications receivers), issued
//     as one action so that VIPs and replication roles never disagree, and
//     re-issued whole until the shell reports it done.
//
// Nothing here opens a socket, starts a goroutine or reads a clock: the
// shell (internal/daemon) feeds events stamped with the time and runs the
// actions through its adapters. Data flows one way:
//
//	raw socket ──▶ vrrp.Codec.Inspect (reader: structure, ICV) ──▶ Event
//	timers, links, checks, readiness, role results ─────────────▶ Event
//	                                                               │
//	                                                           Core.Step
//	                                                               │
//	send advert, timers, role (VIPs + replication roles), ◀────────┘
//	announce, notify, hold/wait, persist epoch, drop (reason)
//
// The core has no wire format of its own: adverts are RFC 9568 section 5
// packets (package vrrp draws them), decoded before they get here.
package node
