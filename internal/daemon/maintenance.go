package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/muros/muros-had/atomicfile"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/node"
)

// Maintenance mode (`muros-had maintenance on|off`, node/maintenance.go):
// the node hands over at once and stays BACKUP until it is turned off,
// across restarts and reboots.

// maintenanceFile is the mode on disk under the state directory: the
// file's presence means on (its content says when and how it was turned
// on, for the operator). It is created atomically (atomicfile.Write) and
// removed with a sync of the directory, so a crash leaves the mode as it
// was before or after the request, never a torn state.
type maintenanceFile string

// load says whether the mode is on. A file that exists but cannot be
// read counts as on: the safe side of a doubt is a node that stays BACKUP.
func (f maintenanceFile) load() (bool, error) {
	_, err := os.Stat(string(f))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return true, fmt.Errorf("maintenance file %s: %w", f, err)
}

func (f maintenanceFile) set(on bool, now time.Time, overridden []string) error {
	if on {
		content := "on since " + now.UTC().Format(time.RFC3339) + "\n"
		if len(overridden) > 0 {
			content += "forced past: " + strings.Join(overridden, "; ") + "\n"
		}
		return atomicfile.Write(string(f), []byte(content), 0o600, "."+filepath.Base(string(f))+".tmp*")
	}
	if err := os.Remove(string(f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	dir, err := os.Open(filepath.Dir(string(f)))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// maintenanceRefusals says why the peer could not take over cleanly now
// (empty: it can). Entering maintenance leaves the VIPs to the peer, and
// no node takes them while this one is in maintenance: the peer must be
// known alive through its health answer, not itself in maintenance, and
// either MASTER already or a BACKUP whose replications are complete (its
// preemption hold lifted: conntrack bulk synced, DB copy complete).
func maintenanceRefusals(p status.PeerStatus) []string {
	var why []string
	switch {
	case !p.Polled:
		why = append(why, "the peer's health is not polled ("+p.RoleReason+"): its readiness to take over is unknown")
		return why
	case !p.Reachable:
		msg := "the peer is unreachable"
		if p.Error != "" {
			msg += " (" + p.Error + ")"
		}
		return append(why, msg)
	case p.RoleSource != "health" && p.Role != "master":
		// A master's adverts may be fresher than its health answer; any
		// other role must come from a fresh answer.
		return append(why, "no fresh health answer from the peer (role "+p.Role+")")
	}
	if p.Maintenance != nil && *p.Maintenance {
		why = append(why, "the peer is in maintenance itself: nobody would hold the VIPs")
	}
	switch p.Role {
	case "master":
		return why
	case "backup":
	default:
		return append(why, "the peer is "+strings.ToUpper(p.Role)+", not BACKUP or MASTER")
	}
	if r := p.Readiness; r != nil && r.Held {
		msg := "the peer's replications are incomplete (preemption held: " + r.Reason + ")"
		if len(r.Waiting) > 0 {
			msg = "the peer's replications are incomplete: waiting for " + strings.Join(r.Waiting, "; ")
		}
		why = append(why, msg)
	}
	if p.DBReady != nil && !*p.DBReady {
		why = append(why, "the peer's DB copy is incomplete")
	}
	return why
}

// maintenanceRequest is a request of the status listener for the loop.
type maintenanceRequest struct {
	req   status.MaintenanceRequest
	reply chan status.MaintenanceAnswer
}

// SetMaintenance turns maintenance mode on or off (POST /maintenance); the
// event loop decides and answers.
func (d *Daemon) SetMaintenance(ctx context.Context, req status.MaintenanceRequest) status.MaintenanceAnswer {
	r := &maintenanceRequest{req: req, reply: make(chan status.MaintenanceAnswer, 1)}
	if !d.send(loopEvent{maint: r}, ctx.Done(), d.stop) {
		if err := ctx.Err(); err != nil {
			return status.MaintenanceAnswer{Error: err.Error()}
		}
		return status.MaintenanceAnswer{Error: "the daemon is stopping"}
	}
	select {
	case a := <-r.reply:
		return a
	case <-ctx.Done():
		return status.MaintenanceAnswer{Error: ctx.Err().Error()}
	case <-d.stop:
		return status.MaintenanceAnswer{Error: "the daemon is stopping"}
	}
}

// maintenance runs a request in the loop: turning on is refused unless
// the peer can take over (or the request forces it); the mode is on disk
// before the core hands over, so an answered request survives a crash.
func (d *Daemon) maintenance(ctx context.Context, r *maintenanceRequest) {
	on := r.req.On
	ans := status.MaintenanceAnswer{On: d.core.Maintenance()}
	if on == ans.On {
		r.reply <- ans
		return
	}
	var overridden []string
	if on {
		why := maintenanceRefusals(d.peers.Report(time.Now()).Peer)
		if len(why) > 0 && !r.req.Force {
			d.log.Warn("maintenance refused: the peer could not take over cleanly (--force overrides)", "reasons", strings.Join(why, "; "))
			ans.Refused = why
			r.reply <- ans
			return
		}
		overridden = why
	}
	now := time.Now()
	if err := maintenanceFile(d.maintPath).set(on, now, overridden); err != nil {
		d.log.Error("maintenance mode not changed: its state cannot be persisted", "on", on, "err", err)
		ans.Error = "maintenance mode not changed: " + err.Error()
		r.reply <- ans
		return
	}
	d.maintOn.Store(on)
	if on {
		d.log.Warn("maintenance mode ON: this node hands over and stays BACKUP until `muros-had maintenance off`", "state", d.core.State(), "overridden", strings.Join(overridden, "; "))
	} else {
		d.log.Info("maintenance mode off: this node takes part in the election again", "state", d.core.State())
	}
	d.feed.Publish(status.Event{Time: now, Type: "maintenance", Active: &on})
	d.step(ctx, node.Event{Kind: node.EventMaintenance, On: on})
	ans.On, ans.Overridden = on, overridden
	r.reply <- ans
}

// loadMaintenance reads the mode at start, before the first advert.
func (d *Daemon) loadMaintenance() bool {
	on, err := maintenanceFile(d.maintPath).load()
	if err != nil {
		d.log.Error("maintenance file unreadable: starting in maintenance mode", "err", err)
	}
	if on {
		d.log.Warn("starting in maintenance mode: this node stays BACKUP until `muros-had maintenance off`")
	}
	d.maintOn.Store(on)
	return on
}
