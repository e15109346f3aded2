// Package nodecfg derives what the daemon's parts are configured with from
// the YAML configuration (package config): the decision core (node.Config,
// one VRRP instance per VIP), the VRRP codecs (auth, key versions,
// checksum), the VIP manager, and the address families, tracked interfaces
// and VRIDs they span. Pure functions of the configuration.
package nodecfg

import (
	"log/slog"
	"net/netip"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/node"
	"github.com/muros/muros-had/vip"
	"github.com/muros/muros-had/vrrp"
)

// Core derives the core's configuration: one VRRP instance per VIP,
// the receive checks, and the readiness hold. primary is the source address
// of each family's socket.
func Core(cfg *config.Config, primary map[vrrp.Family]netip.Addr, syncIndex int, lastEpoch uint32) node.Config {
	version := 3
	if cfg.Auth == config.AuthKeepalivedAH {
		version = 2
	}
	nc := node.Config{
		Codec: Codec(cfg, kdf.Master{}), // the checks need no key
		Own:   primary,
		// A node does not preempt before its conntrack table is complete
		// (SPEC) nor with a stale configuration DB (SPEC "takeover
		// ordering"), after a start or any return to BACKUP; takeover from
		// a dead master is never held (package vrrp). The readiness wait
		// lifts the hold (the daemon's readiness gate).
		HoldReady:     holdsPreemption(cfg),
		SyncInterface: cfg.SyncInterface,
		SyncIndex:     syncIndex,
		LastEpoch:     lastEpoch,
	}
	for _, v := range cfg.VIPs {
		fam := FamilyOf(v.Address.Addr())
		nc.Instances = append(nc.Instances, node.Instance{
			VRRP: vrrp.InstanceConfig{
				VRID:         v.VRID,
				Priority:     cfg.Priority(),
				Interval:     cfg.AdvertInterval,
				Version:      version,
				Primary:      primary[fam],
				NoPreempt:    !cfg.Preempt,
				PreemptDelay: cfg.PreemptDelay,
			},
			Family:    fam,
			Interface: v.Interface,
			Addrs:     []netip.Addr{v.Address.Addr()},
		})
	}
	return nc
}

// holdsPreemption reports whether the node holds preemption until its
// replications are complete: at start and at every return to BACKUP
// (the daemon's readiness gate).
func holdsPreemption(cfg *config.Config) bool {
	return cfg.Conntrack.Enabled || cfg.DBSync.Enabled
}

// FamilyOf is the address family of a (an IPv4-mapped address is IPv4).
func FamilyOf(a netip.Addr) vrrp.Family {
	if a.Is4() || a.Is4In6() {
		return vrrp.IPv4
	}
	return vrrp.IPv6
}

// Codec is the VRRP codec configuration; master gives the version-2
// AH key (without it the codec speaks version-1 keys only).
func Codec(cfg *config.Config, master kdf.Master) vrrp.Config {
	c := vrrp.Config{Version: 3, Password: cfg.Password, Checksum: vrrp.ChecksumModePseudoHeader, Master: master}
	switch cfg.Auth {
	case config.AuthKeepalivedAH:
		c.Version = 2
		c.Auth = vrrp.AuthKeepalivedAH
	case config.AuthAH:
		c.Auth = vrrp.AuthAH
	default:
		c.Auth = vrrp.AuthNone
	}
	if cfg.ChecksumMode == config.ChecksumMessageOnly {
		c.Checksum = vrrp.ChecksumModeMessageOnly
	}
	return c
}

// Families lists the address families of the VIPs, in order of first use:
// one VRRP socket each.
func Families(cfg *config.Config) []vrrp.Family {
	var out []vrrp.Family
	seen := map[vrrp.Family]bool{}
	for _, v := range cfg.VIPs {
		f := FamilyOf(v.Address.Addr())
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// Tracked lists the interfaces of the VIPs, each once: their links are
// watched.
func Tracked(cfg *config.Config) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range cfg.VIPs {
		if !seen[v.Interface] {
			seen[v.Interface] = true
			out = append(out, v.Interface)
		}
	}
	return out
}

// VRIDs lists the VRIDs of the VIPs (for the start log line).
func VRIDs(cfg *config.Config) []int {
	var out []int
	for _, v := range cfg.VIPs {
		out = append(out, int(v.VRID))
	}
	return out
}

// VIPs is the VIP manager's configuration: the addresses, the optional
// virtual MAC and the gratuitous ARP / unsolicited NA schedule.
func VIPs(cfg *config.Config, log *slog.Logger) vip.Config {
	c := vip.Config{
		VirtualMAC: cfg.VMAC,
		Schedule:   vip.Schedule{Repeat: cfg.GARP.Repeat, Interval: cfg.GARP.Interval, Refresh: cfg.GARP.Refresh},
		Router:     true,
		Logger:     log,
	}
	for _, v := range cfg.VIPs {
		c.VIPs = append(c.VIPs, vip.VIP{Interface: v.Interface, Prefix: v.Address, VRID: v.VRID})
	}
	return c
}
