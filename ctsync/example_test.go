package ctsync_test

import (
	"context"
	"log/slog"

	"github.com/muros/muros-had/ctsync"
)

// The daemon's wiring: New in the node's namespace, Run in a goroutine,
// SetRole from the VRRP sync group's state, preemption held until Ready.
func Example() {
	s, err := ctsync.New(ctsync.Config{
		Interface: "eth2",      // sync_interface
		Password:  "change-me", // the cluster password; the sync key is derived from it
		StateDir:  "/var/lib/muros-had/ctsync",
	}, slog.Default())
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)

	s.SetRole(false) // VRRP BACKUP or FAULT; SetRole(true) on MASTER
	<-s.Ready()      // the first bulk resync is in the kernel: preemption may proceed
	st := s.Status()
	_ = st.BulkSynced // also: Flows, Lag, Lost, Repaired, Resyncs, Forged ...
}
