package daemon

import (
	"context"
	"strings"
	"time"

	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/vrrp"
)

// Readiness. With conntrack or DB sync on, the VRRP instances hold
// preemption (vrrp.InstanceConfig.WaitReady) until this node's replications
// are complete: a node that took the VIPs back without the flows created on
// the peer meanwhile would reset those connections, and one with a stale
// configuration DB would push it over the operator's edits on the peer.
// That is true after a start, and equally whenever the sync group returns
// to BACKUP without a restart: from FAULT (a tracked link back up) or from
// MASTER (a better master, a priority 0 from the peer, a reload). Each such
// entry re-arms the hold (vrrp.EventNotReady) and starts a new gate, which
// sends vrrp.EventReady once every replication is complete again, or when
// conntrack.resync.startup_timeout runs out (a node that cannot get the
// master's state must not block its own election forever). A newer gate
// supersedes an older one: each has its own context and generation. The
// hold never delays the takeover of a master that is gone (package vrrp).

// ctPollInterval is how often a gate reads ctsync's status snapshot.
const ctPollInterval = 50 * time.Millisecond

// Names of the replications, in the log and the status.
const (
	repConntrack = "conntrack bulk sync"
	repDB        = "DB sync (this node holds the master's content)"
)

// readyEvent is a gate's verdict, sent to the event loop.
type readyEvent struct {
	gen        uint64   // the gate's generation: a superseded gate's verdict is dropped
	timedOut   bool     // the startup timeout ran out
	incomplete []string // with timedOut: what was still incomplete
}

// ctWait judges the conntrack part of one readiness wait from successive
// ctsync status snapshots. Pure.
//
// The table is complete again when, after this wait began and with the node
// a receiver, either a bulk resync completed (ctsync starts one whenever a
// node becomes a receiver, and whenever a gap cannot be repaired), or the
// receiver, synced by an earlier bulk, heard the master's stream again with
// no gap left open (a backup whose sync link was cut learns of the datagrams
// it missed only from the next one it receives, so it must hear one).
//
// The snapshot trails SetRole by a step of ctsync's loop: right after a
// demotion it may still show the sender. Its counters are judged only from
// the first receiver snapshot on (the base): a receiver made by the
// demotion starts with fresh counters and BulkSynced false. If the sender
// was seen first, the first receiver snapshot is of that new receiver, so
// BulkSynced there already means a bulk since the hold began.
type ctWait struct {
	sawSender bool
	seen      bool
	base      ctsync.Status
}

// ctVerdict is what ctWait concluded from one snapshot.
type ctVerdict struct {
	done bool
	// why: when done, how the table became complete; otherwise what the
	// wait is waiting for.
	why string
}

// Conntrack wait states, in the log and the status.
const (
	ctWhySender  = "conntrack: this node is still the sender (role change in progress)"
	ctWhyBulk    = "conntrack: bulk sync from the master not complete"
	ctWhySilent  = "conntrack: nothing heard from the master's sync stream since the hold began"
	ctWhyGap     = "conntrack: repairing sync datagrams lost since the hold began"
	ctDoneBulk   = "a bulk sync completed since the hold began"
	ctDoneStream = "in sync: the master's stream heard with no gap since the hold began"
)

func (w *ctWait) observe(s ctsync.Status) ctVerdict {
	if s.Master {
		w.sawSender = true
		return ctVerdict{why: ctWhySender}
	}
	if !w.seen {
		w.seen, w.base = true, s
		if w.sawSender && s.BulkSynced {
			return ctVerdict{done: true, why: ctDoneBulk}
		}
	}
	switch {
	case !s.BulkSynced:
		return ctVerdict{why: ctWhyBulk}
	case s.Resyncs > w.base.Resyncs:
		return ctVerdict{done: true, why: ctDoneBulk}
	case s.DatagramsReceived == w.base.DatagramsReceived:
		return ctVerdict{why: ctWhySilent}
	case openGaps(s) > openGaps(w.base):
		return ctVerdict{why: ctWhyGap}
	}
	return ctVerdict{done: true, why: ctDoneStream}
}

// openGaps estimates the sequence gaps a receiver has not repaired yet.
func openGaps(s ctsync.Status) uint64 {
	if s.Lost > s.Repaired {
		return s.Lost - s.Repaired
	}
	return 0
}

// holdCause says why the group is entering BACKUP, for the log and status.
func holdCause(from vrrp.State) string {
	switch from {
	case vrrp.StateMaster:
		return "stepped down from MASTER"
	case vrrp.StateFault:
		return "back from FAULT"
	}
	return "start"
}

// noteGroupState runs after every batch of actions. Entering BACKUP (from
// INIT, MASTER or FAULT) re-arms the readiness hold and starts a gate;
// leaving BACKUP ends the current gate. Entering FAULT holds preemption too
// (moot while in FAULT; the status says so until the return).
func (d *Daemon) noteGroupState(ctx context.Context) {
	now, prev := d.group.State(), d.lastGroup
	if now == prev {
		return
	}
	d.lastGroup = now
	if !holdsPreemption(d.cfg) {
		return
	}
	if d.gateCancel != nil {
		d.gateCancel()
		d.gateCancel = nil
	}
	d.gateGen++ // a verdict of the gate just ended is stale
	switch now {
	case vrrp.StateBackup:
		d.holdPreemption(ctx, prev)
	case vrrp.StateFault:
		d.apply(ctx, d.group.StepAll(vrrp.Event{Kind: vrrp.EventNotReady}, d.actions[:0]))
		d.status.readiness(d.gateGen, true, "FAULT: the hold is re-armed on the return to BACKUP", nil, time.Now(), false)
		d.stats.preemptionHeld(true, false)
	case vrrp.StateMaster:
		d.status.readiness(d.gateGen, false, "MASTER: the hold is re-armed on the return to BACKUP", nil, time.Now(), false)
		d.stats.preemptionHeld(false, false)
	}
}

// holdPreemption re-arms the hold as the group enters BACKUP from the state
// from, and starts the gate that lifts it.
func (d *Daemon) holdPreemption(ctx context.Context, from vrrp.State) {
	cause := holdCause(from)
	d.apply(ctx, d.group.StepAll(vrrp.Event{Kind: vrrp.EventNotReady}, d.actions[:0]))
	var waiting []string
	if d.ct != nil {
		waiting = append(waiting, repConntrack)
	}
	var db <-chan struct{}
	if d.db != nil {
		waiting = append(waiting, repDB)
		if from == vrrp.StateInitialize {
			db = d.db.Ready() // a new node's first wait is open already
		} else {
			db = d.db.Rearm()
		}
	}
	timeout := d.cfg.Conntrack.Resync.StartupTimeout
	d.log.Info("preemption held until the replications are complete", "cause", cause,
		"waiting", strings.Join(waiting, ", "), "timeout", timeout)
	d.status.readiness(d.gateGen, true, cause, waiting, time.Now(), true)
	d.stats.preemptionHeld(true, true)
	gctx, cancel := context.WithCancel(d.bg)
	d.gateCancel = cancel
	gen := d.gateGen
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.readinessGate(gctx, gen, db, timeout)
	}()
}

// readinessGate waits until every replication of this node is complete
// again (conntrack: see ctWait; DB: db closed), or timeout, and sends its
// verdict to the loop. It ends early when ctx is cancelled (superseded).
func (d *Daemon) readinessGate(ctx context.Context, gen uint64, db <-chan struct{}, timeout time.Duration) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var ct *ctWait
	var poll <-chan time.Time
	ctWhy := ""
	if d.ct != nil {
		ct = &ctWait{}
		tk := time.NewTicker(ctPollInterval)
		defer tk.Stop()
		poll = tk.C
	}
	dbPending := db != nil
	check := func() {
		if ct == nil {
			return
		}
		v := ct.observe(d.ct.Status())
		if v.done {
			d.log.Info(repConntrack+" complete", "how", v.why)
			ct, poll = nil, nil
			return
		}
		ctWhy = v.why
	}
	waiting := func() []string {
		var w []string
		if ct != nil {
			w = append(w, ctWhy)
		}
		if dbPending {
			w = append(w, repDB)
		}
		return w
	}
	check()
	for ct != nil || dbPending {
		d.status.readinessWaiting(gen, waiting())
		select {
		case <-ctx.Done():
			return
		case <-poll:
			check()
		case <-db:
			d.log.Info(repDB + " complete")
			dbPending, db = false, nil
		case <-expired:
			ev := &readyEvent{gen: gen, timedOut: true}
			if ct != nil {
				ev.incomplete = append(ev.incomplete, repConntrack)
			}
			if dbPending {
				ev.incomplete = append(ev.incomplete, repDB)
			}
			d.sendReady(ctx, ev)
			return
		}
	}
	d.sendReady(ctx, &readyEvent{gen: gen})
}

func (d *Daemon) sendReady(ctx context.Context, ev *readyEvent) {
	select {
	case d.events <- loopEvent{ready: ev}:
	case <-ctx.Done():
	}
}

// handleReady lifts the hold on the verdict of the current gate.
func (d *Daemon) handleReady(ctx context.Context, ev *readyEvent) {
	if ev.gen != d.gateGen {
		return // superseded: a newer gate decides
	}
	d.gateCancel = nil // the gate has returned
	reason := "replications complete"
	if ev.timedOut {
		reason = "startup timeout; incomplete: " + strings.Join(ev.incomplete, ", ")
		d.log.Warn("replication not complete within the startup timeout (conntrack.resync.startup_timeout, one bound for conntrack and DB sync): preemption allowed anyway",
			"timeout", d.cfg.Conntrack.Resync.StartupTimeout, "incomplete", strings.Join(ev.incomplete, ", "))
	} else {
		d.log.Info("replication ready: preemption allowed", "reason", reason)
	}
	d.status.readiness(d.gateGen, false, reason, nil, time.Now(), false)
	d.stats.preemptionHeld(false, false)
	if ev.timedOut {
		d.stats.holdTimedOut()
	}
	d.apply(ctx, d.group.StepAll(vrrp.Event{Kind: vrrp.EventReady}, d.actions[:0]))
}
