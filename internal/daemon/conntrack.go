package daemon

import (
	"context"

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
