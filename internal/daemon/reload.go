package daemon

import (
	"context"
	"errors"
	"reflect"
	"slices"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vip"
)

// inPlaceChanges lists the changed keys that a reload applies without
// touching the election: the local listeners, the peer checks, the
// announcement schedule, the CPU scheduling, the role hooks and the
// health checks (restarted; the verdicts of checks kept by name stay).
func inPlaceChanges(old, cur *config.Config) []string {
	var out changeList
	add := out.add
	add("status", old.Status != cur.Status)
	add("metrics", old.Metrics != cur.Metrics)
	add("peer_check", old.PeerCheck != cur.PeerCheck)
	add("garp", old.GARP != cur.GARP)
	add("checks", !reflect.DeepEqual(old.Checks, cur.Checks))
	add("scheduling", old.Scheduling != cur.Scheduling)
	// A running hook keeps the lists it started with; the next transition
	// takes the new ones.
	add("hooks", !reflect.DeepEqual(old.Hooks, cur.Hooks))
	return out
}

// changeList collects the names of changed keys.
type changeList []string

func (c *changeList) add(name string, changed bool) {
	if changed {
		*c = append(*c, name)
	}
}

// ErrRestart is returned by Run after a reload changed something the running
// election cannot adopt in place (VIPs, VRIDs, interval, authentication, the
// sync interface...): the daemon has stopped gracefully (priority 0, VIPs
// released) and the caller starts a new one with Config.
var ErrRestart = errors.New("daemon: configuration change needs a restart of the VRRP instances")

// electionChanges lists the keys whose change cannot be applied to the
// running sync group. A role change is not among them: it only moves the
// priority, which RFC 9568 lets an instance change in place.
func electionChanges(old, cur *config.Config) []string {
	var out changeList
	add := out.add
	add("password", old.Password != cur.Password)
	add("sync_interface", old.SyncInterface != cur.SyncInterface)
	add("vips", !slices.EqualFunc(old.VIPs, cur.VIPs, func(a, b config.VIP) bool {
		return a.Interface == b.Interface && a.Address == b.Address && a.VRID == b.VRID
	}))
	add("advert_interval", old.AdvertInterval != cur.AdvertInterval)
	add("auth", old.Auth != cur.Auth)
	add("preempt", old.Preempt != cur.Preempt)
	add("preempt_delay", old.PreemptDelay != cur.PreemptDelay)
	add("vmac", old.VMAC != cur.VMAC)
	add("checksum_mode", old.ChecksumMode != cur.ChecksumMode)
	add("state_dir", old.StateDir != cur.StateDir)
	add("run_dir", old.RunDir != cur.RunDir)
	add("conntrack", !reflect.DeepEqual(old.Conntrack, cur.Conntrack))
	add("dbsync", !reflect.DeepEqual(roleNeutralDBSync(old), roleNeutralDBSync(cur)))
	// The liveness engine is built with its settings; swapping it under a
	// running election would silence the heartbeats a backup counts on.
	add("liveness", !reflect.DeepEqual(old.Liveness, cur.Liveness))
	// The peer view (its health poll and alarms) and the DB sync client
	// are built with the peer's address.
	add("peer", old.Peer != cur.Peer)
	return out
}

// roleNeutralDBSync is cfg.DBSync without the JWT issuer and audience that
// config derives from the role ("muros-had-<role>", "muros-had-<peer role>"):
// a role swap changes them and must still be an in-place priority change.
// Explicitly configured names are kept and compared.
func roleNeutralDBSync(cfg *config.Config) config.DBSync {
	db := cfg.DBSync
	if db.JWT.Issuer == "muros-had-"+string(cfg.Role) {
		db.JWT.Issuer = ""
	}
	if db.JWT.Audience == "muros-had-"+string(cfg.PeerRole()) {
		db.JWT.Audience = ""
	}
	return db
}

// reload re-reads the configuration. Nothing relevant changed: keep running,
// no re-election. Only the role changed: change the priority in place.
// Anything else: stop gracefully and let the caller restart (ErrRestart).
func (d *Daemon) reload(ctx context.Context) {
	select { // the ruleset may have changed with the configuration
	case d.rulesetKick <- struct{}{}:
	default:
	}
	if d.opts.Reload == nil {
		d.log.Warn("reload: ignored, the daemon was started without a configuration file to re-read")
		return
	}
	d.opts.Notify("RELOADING=1")
	cfg, err := d.opts.Reload()
	if err != nil {
		d.log.Error("reload: failed, keeping the running configuration", "err", err)
		d.opts.Notify("READY=1")
		return
	}
	if changed := electionChanges(d.cfg, cfg); len(changed) > 0 {
		// READY=1 comes from the restarted instance once it runs.
		d.log.Warn("reload: restarting the VRRP instances gracefully", "changed", changed)
		d.next = cfg
		return
	}
	defer d.opts.Notify("READY=1")
	old := d.cfg
	var applied []string
	if cfg.Priority() != old.Priority() {
		from := old.Priority()
		d.cfg = cfg
		// Status first: whoever reads the log line then sees the new role.
		d.status.SetRole(cfg)
		d.peers.SetAdvertInterval(cfg.AdvertInterval)
		d.step(ctx, node.Event{Kind: node.EventPriority, Priority: cfg.Priority()})
		d.log.Info("reload: priority changes in place, no restart", "role", cfg.Role, "from", from, "priority", cfg.Priority())
		if old.DBSync.Enabled && old.DBSync.JWT != cfg.DBSync.JWT {
			// The running DB sync keeps the token names it started with;
			// they still match the peer's until one of the daemons restarts.
			d.log.Warn("reload: dbsync keeps its JWT issuer/audience until the daemon restarts; set dbsync.jwt.issuer and audience explicitly to make them independent of the role",
				"issuer", old.DBSync.JWT.Issuer, "configured", cfg.DBSync.JWT.Issuer)
		}
		applied = append(applied, "role")
	}
	d.cfg = cfg
	if changed := inPlaceChanges(old, cfg); len(changed) > 0 {
		d.applyInPlace(old, changed)
		applied = append(applied, changed...)
	}
	if slices.Contains(applied, "checks") {
		d.reloadChecks(ctx)
	}
	// The role's priority moved by the checks' weights (SetRole shows the
	// role's own).
	d.status.SetPriority(d.core.Priority())
	switch {
	case len(applied) == 0:
		d.log.Info("reload: nothing relevant changed, no re-election")
	case len(applied) > 1 || applied[0] != "role":
		d.log.Info("reload: applied in place, no re-election", "changed", applied)
	}
}

// applyInPlace applies the in-place changes of a reload; d.cfg is the new
// configuration. A listener that cannot be opened keeps the old surface
// running (and its part of the configuration), so status and metrics are
// never lost to a typo.
func (d *Daemon) applyInPlace(old *config.Config, changed []string) {
	for _, k := range changed {
		switch k {
		case "garp":
			g := d.cfg.GARP
			if err := d.vips.SetSchedule(vip.Schedule{Repeat: g.Repeat, Interval: g.Interval, Refresh: g.Refresh}); err != nil {
				d.log.Error("reload: garp", "err", err)
			}
		case "scheduling":
			if d.opts.ApplyScheduling != nil {
				d.status.SetScheduling(d.opts.ApplyScheduling(d.cfg.Scheduling))
			}
		case "hooks":
			d.roles.set = hookSet(d.cfg.Hooks)
			d.roles.book.Keep(hookNames(d.roles.set))
		}
	}
	if !slices.ContainsFunc(changed, func(k string) bool { return k == "status" || k == "metrics" || k == "peer_check" }) {
		return
	}
	// The same socket path or port may be in the new configuration: the
	// old listeners go first.
	d.surface.Close()
	srv, err := d.startStatusServers(d.bg)
	if err == nil {
		d.surface = srv
		return
	}
	d.log.Error("reload: status, metrics or peer checks cannot start; keeping the previous ones", "err", err)
	cfg := *d.cfg
	cfg.Status, cfg.Metrics, cfg.PeerCheck = old.Status, old.Metrics, old.PeerCheck
	d.cfg = &cfg
	if d.surface, err = d.startStatusServers(d.bg); err != nil {
		d.log.Error("reload: the previous status listener cannot start again either: no status until a restart", "err", err)
		d.surface = nil
	}
}
