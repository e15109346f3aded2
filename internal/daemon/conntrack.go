package daemon

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/ctsync"
)

// conntrackSync is what the daemon needs of the conntrack replication
// (package ctsync): it follows the VRRP role and reports when the node
// holds a complete copy of the master's table again: Rearm (after
// SetRole(false)) starts a readiness wait and returns the channel closed
// when it is complete; WaitReason says what the wait waits for, or how it
// completed, and changes when that does.
type conntrackSync interface {
	Run(ctx context.Context) error
	SetRole(master bool)
	Ready() <-chan struct{}
	Rearm() <-chan struct{}
	WaitReason() (why string, changed <-chan struct{})
	Status() ctsync.Status
}

// protocolNumber maps the configuration's protocol names to IP protocol
// numbers.
func protocolNumber(name string) (uint8, bool) {
	switch name {
	case "tcp":
		return 6, true
	case "udp":
		return 17, true
	case "sctp":
		return 132, true
	case "dccp":
		return 33, true
	case "icmp":
		return 1, true
	case "icmpv6":
		return 58, true
	}
	return 0, false
}

// newConntrackSync builds the replication from the configuration. It opens
// its sockets in the daemon's network namespace.
func newConntrackSync(cfg *config.Config, d *Daemon) (*ctsync.Sync, error) {
	f := ctsync.Filter{
		Include:        cfg.Conntrack.Filter.Include,
		Exclude:        cfg.Conntrack.Filter.Exclude,
		ReplicateLocal: !cfg.Conntrack.Filter.ExcludeLocal,
	}
	for _, p := range cfg.Conntrack.Filter.Protocols {
		n, ok := protocolNumber(p)
		if !ok {
			return nil, fmt.Errorf("daemon: conntrack filter: unknown protocol %q", p)
		}
		f.Protocols = append(f.Protocols, n)
	}
	s, err := ctsync.New(ctsync.Config{
		Interface: cfg.SyncInterface,
		Group:     cfg.Conntrack.Group,
		Port:      int(cfg.Conntrack.Port),
		Password:  cfg.Password,
		Master:    d.master, // stretched once in Run
		Filter:    f,
		// The sync epochs survive restarts here (replay protection).
		StateDir: filepath.Join(cfg.StateDir, "ctsync"),
	}, d.log.With("component", "ctsync"))
	if err != nil {
		return nil, fmt.Errorf("daemon: conntrack sync: %w", err)
	}
	return s, nil
}
