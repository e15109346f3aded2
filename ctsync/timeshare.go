package ctsync

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tableNice is the nice value of the thread that reads the table: below
// the firewall's own time-sharing work (its nice-0 processes get about 70
// times its share of a contended CPU), which a table read can wait for;
// it still progresses on a busy machine (unlike SCHED_IDLE), so a bulk
// held for the read is not held forever.
const tableNice = 19

// timeSharing sets the calling thread (locked by the caller) to
// SCHED_OTHER at tableNice, whatever policy the process runs its other
// threads at. It uses sched_setscheduler(2), whose policy argument
// systemd's RestrictRealtime= filter can read and lets through for
// SCHED_OTHER (as the daemon's own sched package does for the programs it
// starts); raising a thread's nice value needs no privilege.
func timeSharing() error {
	var param struct{ priority int32 } // struct sched_param
	_, _, errno := unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_NORMAL, uintptr(unsafe.Pointer(&param)))
	if errno != 0 {
		return fmt.Errorf("sched_setscheduler SCHED_OTHER: %w", errno)
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), tableNice); err != nil {
		return fmt.Errorf("nice %d: %w", tableNice, err)
	}
	return nil
}
