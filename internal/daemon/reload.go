package daemon

import (
	"context"
	"errors"
	"reflect"
	"slices"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/vrrp"
)

// ErrRestart is returned by Run after a reload changed something the running
// election cannot adopt in place (VIPs, VRIDs, interval, authentication, the
// sync interface...): the daemon has stopped gracefully (priority 0, VIPs
// released) and the caller starts a new one with Config.
var ErrRestart = errors.New("daemon: configuration change needs a restart of the VRRP instances")

// electionChanges lists the keys whose change cannot be applied to the
// running sync group. A role change is not among them: it only moves the
// priority, which RFC 9568 lets an instance change in place.
func electionChanges(old, cur *config.Config) []string {
	var out []string
	add := func(name string, changed bool) {
		if changed {
			out = append(out, name)
		}
	}
	add("password", old.Password != cur.Password)
	add("sync_interface", old.SyncInterface != cur.SyncInterface)
	add("vips", !slices.EqualFunc(old.VIPs, cur.VIPs, func(a, b config.VIP) bool {
		return a.Interface == b.Interface && a.Address == b.Address && a.VRID == b.VRID
	}))
	add("advert_interval", old.AdvertInterval != cur.AdvertInterval)
	add("auth", old.Auth != cur.Auth)
	add("preempt", old.Preempt != cur.Preempt)
	add("preempt_delay", old.PreemptDelay != cur.PreemptDelay)
	add("garp", old.GARP != cur.GARP)
	add("vmac", old.VMAC != cur.VMAC)
	add("checksum_mode", old.ChecksumMode != cur.ChecksumMode)
	add("state_dir", old.StateDir != cur.StateDir)
	add("run_dir", old.RunDir != cur.RunDir)
	add("status", old.Status != cur.Status)
	add("metrics", old.Metrics != cur.Metrics)
	add("conntrack", !reflect.DeepEqual(old.Conntrack, cur.Conntrack))
	add("dbsync", !reflect.DeepEqual(roleNeutralDBSync(old), roleNeutralDBSync(cur)))
	// The DB sync client is built with the peer's address.
	add("peer", old.Peer != cur.Peer && (old.DBSync.Enabled || cur.DBSync.Enabled))
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
	if cfg.Priority() != d.cfg.Priority() {
		old, from := d.cfg, d.cfg.Priority()
		d.cfg = cfg
		// Status first: whoever reads the log line then sees the new role.
		d.status.setRole(cfg)
		d.apply(ctx, d.group.StepAll(vrrp.Event{Kind: vrrp.EventSetPriority, Priority: cfg.Priority()}, d.actions[:0]))
		d.log.Info("reload: priority changes in place, no restart", "role", cfg.Role, "from", from, "priority", cfg.Priority())
		if old.DBSync.Enabled && old.DBSync.JWT != cfg.DBSync.JWT {
			// The running DB sync keeps the token names it started with;
			// they still match the peer's until one of the daemons restarts.
			d.log.Warn("reload: dbsync keeps its JWT issuer/audience until the daemon restarts; set dbsync.jwt.issuer and audience explicitly to make them independent of the role",
				"issuer", old.DBSync.JWT.Issuer, "configured", cfg.DBSync.JWT.Issuer)
		}
		return
	}
	d.cfg = cfg
	d.log.Info("reload: nothing relevant changed, no re-election")
}
