package daemon

import (
	"context"
	"strings"
	"time"

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
// complete again. conntrack.resync.startup_timeout ends the conntrack wait
// (a node that cannot get the master's flows must not block its own
// election forever), never the DB one: while the group is BACKUP the
// master's adverts are heard, it is alive and may hold newer configuration
// (dbsync is told so and does not give up on an unreachable peer either),
// so the hold stays and the status says why. The core lifts the hold on
// the verdict of the current wait only. The hold never delays the takeover
// of a master that is gone (package vrrp); such a node keeps its DB content
// and pushes nothing until the peer returns and the two are reconciled
// (package dbsync).

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
		d.status.Readiness(a.Gen, true, a.Reason, nil, time.Now(), false)
		d.stats.PreemptionHeld(true, false)
	case a.Verdict && a.TimedOut:
		d.log.Warn("conntrack replication not complete within the startup timeout (conntrack.resync.startup_timeout): preemption allowed anyway",
			"timeout", d.cfg.Conntrack.Resync.StartupTimeout, "incomplete", strings.Join(a.Pending, ", "))
		d.status.Readiness(a.Gen, false, "startup timeout; incomplete: "+strings.Join(a.Pending, ", "), nil, time.Now(), false)
		d.stats.PreemptionHeld(false, false)
		d.stats.HoldTimedOut()
	case a.Verdict:
		d.log.Info("replication ready: preemption allowed", "reason", a.Reason)
		d.status.Readiness(a.Gen, false, a.Reason, nil, time.Now(), false)
		d.stats.PreemptionHeld(false, false)
	default: // MASTER: nothing to wait for until the return to BACKUP
		d.status.Readiness(a.Gen, false, a.Reason, nil, time.Now(), false)
		d.stats.PreemptionHeld(false, false)
	}
}

// startWait starts the readiness wait of generation gen as the group enters
// BACKUP from the state from.
func (d *Daemon) startWait(gen uint64, from vrrp.State, cause string) {
	var waiting []string
	var ct <-chan struct{}
	if d.ct != nil {
		waiting = append(waiting, repConntrack)
		// After the role action's SetRole(false): the wait is the
		// receiver's of this backup period (ctsync orders the two).
		ct = d.ct.Rearm()
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
	d.status.Readiness(gen, true, cause, waiting, time.Now(), true)
	d.stats.PreemptionHeld(true, true)
	gctx, cancel := context.WithCancel(d.bg)
	d.gateCancel = cancel
	d.wg.Go(func() { d.readinessGate(gctx, gen, ct, db, timeout) })
}

// readinessGate waits until every replication of this node is complete
// again (conntrack: ct closed, see ctsync's Rearm; DB: db closed), or
// timeout, and sends its verdict to the loop. Meanwhile the status shows
// what conntrack waits for, updated when ctsync reports a change. It ends
// early when ctx is cancelled (superseded).
func (d *Daemon) readinessGate(ctx context.Context, gen uint64, ct, db <-chan struct{}, timeout time.Duration) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	ctPending := ct != nil
	var ctChanged <-chan struct{}
	ctWhy := repConntrack // until ctsync has judged the wait
	readCT := func() {
		why, changed := d.ct.WaitReason()
		if why != "" {
			ctWhy = why
		}
		ctChanged = changed
	}
	if ctPending {
		readCT()
	}
	dbPending := db != nil
	ctGaveUp := false // the startup timeout ended the conntrack wait
	dbHeld := ""      // past the startup timeout: why the DB part still holds
	var refresh <-chan time.Time
	heldWhy := func() string {
		if d.db != nil {
			if w := d.db.Status().Waiting; w != "" {
				return w
			}
		}
		return "the master is alive but has not brought this node up to date"
	}
	waiting := func() []string {
		var w []string
		if ctPending {
			w = append(w, ctWhy)
		}
		if dbPending {
			w = append(w, repDB+dbHeld)
		}
		return w
	}
	for ctPending || dbPending {
		d.status.ReadinessWaiting(gen, waiting())
		select {
		case <-ctx.Done():
			return
		case <-ctChanged:
			readCT()
		case <-ct:
			why, _ := d.ct.WaitReason()
			d.log.Info(repConntrack+" complete", "how", why)
			ctPending, ct, ctChanged = false, nil, nil
		case <-db:
			d.log.Info(repDB + " complete")
			dbPending, db = false, nil
		case <-refresh:
			dbHeld = ": held past the startup timeout: " + heldWhy()
		case <-expired:
			expired = nil
			if ctPending {
				ctPending, ct, ctChanged, ctGaveUp = false, nil, nil, true
			}
			if !dbPending {
				d.sendReady(ctx, &readyEvent{gen: gen, timedOut: true, incomplete: []string{repConntrack}})
				return
			}
			// The DB part never times out: in BACKUP the master's adverts
			// are heard, so it is alive and holds content this node may
			// lack; preempting now would serve (and could push) stale
			// configuration. A master that dies is taken over at once,
			// hold or not.
			why := heldWhy()
			dbHeld = ": held past the startup timeout: " + why
			tk := time.NewTicker(time.Second)
			defer tk.Stop()
			refresh = tk.C
			d.log.Warn("replication not complete within the startup timeout: preemption stays held until the DB sync completes (the master is alive; its DB content may be newer)",
				"timeout", timeout, "why", why, "conntrack_complete", !ctGaveUp)
		}
	}
	if ctGaveUp {
		d.sendReady(ctx, &readyEvent{gen: gen, timedOut: true, incomplete: []string{repConntrack}})
		return
	}
	d.sendReady(ctx, &readyEvent{gen: gen})
}

func (d *Daemon) sendReady(ctx context.Context, ev *readyEvent) {
	d.send(loopEvent{ready: ev}, ctx.Done(), nil)
}

// handleReady gives a wait's verdict to the core, which lifts the hold if
// the wait is still the current one.
func (d *Daemon) handleReady(ctx context.Context, ev *readyEvent) {
	if ev.gen == d.gateGen {
		d.gateCancel = nil // the gate has returned
	}
	d.step(ctx, node.Event{Kind: node.EventReady, Gen: ev.gen, TimedOut: ev.timedOut, Incomplete: ev.incomplete})
}
