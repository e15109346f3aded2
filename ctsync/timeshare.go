package ctsync

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// timeSharing sets the calling thread (locked by the caller) to
// SCHED_OTHER, whatever policy the process runs its other threads at, with
// the nice value it has. Not lower than that: on a machine saturated with
// time-sharing work a nice-19 reader would get almost nothing, and the
// bulk a returning backup waits for (its readiness) waits for the read
// (measured: no difference in the takeover gap between nice 0 and 19,
// bench/README.md). It uses sched_setscheduler(2), whose policy argument
// systemd's RestrictRealtime= filter can read and lets through for
// SCHED_OTHER (as the daemon's own sched package does for the programs it
// starts).
func timeSharing() error {
	var param struct{ priority int32 } // struct sched_param
	_, _, errno := unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_NORMAL, uintptr(unsafe.Pointer(&param)))
	if errno != 0 {
		return fmt.Errorf("sched_setscheduler SCHED_OTHER: %w", errno)
	}
	return nil
}
