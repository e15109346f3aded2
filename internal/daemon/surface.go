package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/peerview"
	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/internal/sched"
	"github.com/muros/muros-had/internal/status"
)

// Status returns the current cluster status.
func (d *Daemon) Status() status.Status {
	s := d.statusCore()
	if d.db != nil {
		db := d.db.Status()
		s.DB = &db
	} else if d.dbErr != "" {
		s.DB = map[string]string{"error": d.dbErr}
	}
	return s
}

// statusCore is the status without the DB part: the DB replication's health
// document includes it, so it must not call back into the replication.
func (d *Daemon) statusCore() status.Status {
	s := d.status.Snapshot(time.Now())
	s.Maintenance = d.maintOn.Load()
	s.Adverts = d.stats.Adverts()
	if d.ct != nil {
		s.Conntrack = status.FromConntrack(d.ct.Status())
	}
	s.Liveness = d.livenessStatus()
	if d.roles.book != nil {
		s.Hooks = d.roles.book.Last()
	}
	return s
}

// registerSyncMetrics adds the conntrack and DB replication metrics to the
// daemon's registry.
func (d *Daemon) registerSyncMetrics() {
	if d.ct != nil {
		d.stats.Registry().MustRegister(status.ConntrackCollector(d.ct.Status))
	}
	if d.lv != nil {
		d.stats.Registry().MustRegister(status.LivenessCollector(d.livenessStatus))
	}
	if db, ok := d.db.(*dbsync.Node); ok && db != nil {
		d.stats.Registry().MustRegister(db.Collector())
	}
}

type closers []func() error

func (c closers) Close() error {
	var errs []error
	for _, f := range c {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// startStatusServers starts the peer checks, the local status listener
// (JSON, page, metrics) and the Prometheus listener.
func (d *Daemon) startStatusServers(ctx context.Context) (closers, error) {
	// The peer and ruleset checks live as long as the status they feed.
	cs := closers{d.startPeerChecks(ctx)}
	metrics := ""
	if d.cfg.Metrics.Enabled {
		metrics = d.cfg.Metrics.Listen
	}
	stop, err := status.Serve(d.cfg.Status.Listen, metrics, d.Status, d.stats.Registry(), d.feed, status.MaintenanceRoute(d.SetMaintenance))
	if err != nil {
		cs.Close()
		return nil, fmt.Errorf("daemon: %w", err)
	}
	cs = append(cs, stop)
	if d.cfg.Status.HTTP != "" {
		stopPage, err := status.ServePage(d.cfg.Status.HTTP, d.Status, d.stats.Registry())
		if err != nil {
			cs.Close()
			return nil, fmt.Errorf("daemon: %w", err)
		}
		cs = append(cs, stopPage)
	}
	return cs, nil
}

// startPeerChecks starts the peer health poll (when DB sync runs), the
// ruleset fingerprint (unless off) and the alarm evaluation; the returned
// function stops them and waits.
func (d *Daemon) startPeerChecks(ctx context.Context) func() error {
	pc := d.cfg.PeerCheck
	c := peerview.Checks{
		Interval: pc.Interval, RulesetInterval: pc.RulesetInterval,
		Ruleset: ruleset.NFT(sched.Start),
		// A reload is the operator's "configuration changed": the ruleset
		// may have changed too (reload.go kicks it).
		Kick: d.rulesetKick,
		OnAlarm: func(name string, active bool, at time.Time) {
			d.feed.Publish(status.Event{Time: at, Type: "alarm", Alarm: name, Active: &active})
		},
	}
	switch h, ok := d.db.(peerview.HealthClient); {
	case ok:
		c.Client = h
	case d.dbErr != "":
		c.HealthOff = "peer health not polled: DB sync failed to start (" + d.dbErr + ")"
	default:
		c.HealthOff = "peer health not polled: DB sync is off, so the peer has no HTTPS listener"
	}
	return d.peers.Start(ctx, c, d.stats, d.log.With("component", "peer-check"))
}
