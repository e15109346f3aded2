package daemon

import (
	"context"
	"strings"
	"time"

	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vrrp"
)

// Readiness. With conntrack or DB sync on, the node holds preemption until
// its replications are complete: a node that took the VIPs back without the
// flows created on the peer meanwhile would reset those connections, and
// one with a stale configuration DB would push it over the operator's edits
// on the peer. That is true after a start, and equally whenever the sync
// group returns to BACKUP without a restart: from FAULT (a tracked link
// back up) or from MASTER (a better master, a priority 0 from the peer, a
// reload). The core (package node) re-arms the hold at each such entry and
// asks for a wait of a new generation (node.ActionHold); the wait here
// watches the replications and sends its verdict once every replication is
// complete again, or when conntrack.resync.startup_timeout runs out (a
// node that cannot get the master's state must not block its own election
// forever). The core lifts the hold on the verdict of the current wait
// only. The hold never delays the takeover of a master that is gone
// (package vrrp).

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

// hold executes the core's hold actions: the status and metrics, and the
// readiness waits. A wait of an older generation is stale: it ends.
func (d *Daemon) hold(ctx context.Context, a node.Action) {
	if d.gateCancel != nil {
		d.gateCancel()
		d.gateCancel = nil
	}
	d.gateGen = a.Gen
	switch {
	case a.Wait:
		d.startWait(a.Gen, a.From, a.Reason)
	case a.Held:
		d.status.readiness(a.Gen, true, a.Reason, nil, time.Now(), false)
		d.stats.preemptionHeld(true, false)
	case a.Verdict && a.TimedOut:
		d.log.Warn("replication not complete within the startup timeout (conntrack.resync.startup_timeout, one bound for conntrack and DB sync): preemption allowed anyway",
			"timeout", d.cfg.Conntrack.Resync.StartupTimeout, "incomplete", strings.Join(a.Pending, ", "))
		d.status.readiness(a.Gen, false, "startup timeout; incomplete: "+strings.Join(a.Pending, ", "), nil, time.Now(), false)
		d.stats.preemptionHeld(false, false)
		d.stats.holdTimedOut()
	case a.Verdict:
		d.log.Info("replication ready: preemption allowed", "reason", a.Reason)
		d.status.readiness(a.Gen, false, a.Reason, nil, time.Now(), false)
		d.stats.preemptionHeld(false, false)
	default: // MASTER: nothing to wait for until the return to BACKUP
		d.status.readiness(a.Gen, false, a.Reason, nil, time.Now(), false)
		d.stats.preemptionHeld(false, false)
	}
}

// startWait starts the readiness wait of generation gen as the group enters
// BACKUP from the state from.
func (d *Daemon) startWait(gen uint64, from vrrp.State, cause string) {
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
	d.status.readiness(gen, true, cause, waiting, time.Now(), true)
	d.stats.preemptionHeld(true, true)
	gctx, cancel := context.WithCancel(d.bg)
	d.gateCancel = cancel
	d.wg.Go(func() { d.readinessGate(gctx, gen, db, timeout) })
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

// handleReady gives a wait's verdict to the core, which lifts the hold if
// the wait is still the current one.
func (d *Daemon) handleReady(ctx context.Context, ev *readyEvent) {
	if ev.gen == d.gateGen {
		d.gateCancel = nil // the gate has returned
	}
	d.step(ctx, node.Event{Kind: node.EventReady, Gen: ev.gen, TimedOut: ev.timedOut, Incomplete: ev.incomplete})
}
