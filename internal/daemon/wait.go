package daemon

import (
	"fmt"
	"time"

	"github.com/muros/muros-had/pollset"
)

// loopWait parks the event loop until one of its advert sockets is
// readable, the deadline passes (the earliest of the core's timers and
// the watchdog) or another goroutine wakes it. An idle pair does little
// but send and receive an advert every interval, so this is where its
// CPU goes: the production wait (pollWait) costs one thread wakeup per
// advert received or sent, where a reader goroutine per socket handing
// each advert to the loop over a channel, and a runtime timer for the
// loop's deadline, cost two to three and woke the runtime's sysmon thread
// at every deadline besides (package pollset says why). The loop tests
// put a channel and a runtime timer in its place (testing/synctest's
// clock drives those).
type loopWait interface {
	// Watch adds c's receiving sockets and returns their descriptors by
	// protocol (VRRP, AH), as Wait reports them; none when the wait cannot
	// tell which is readable (the loop then reads c every round).
	Watch(c advertConn) ([]int, error)
	// Arm sets the deadline (zero: none).
	Arm(deadline time.Time)
	// Wait returns when anything may be ready, with the watched
	// descriptors it found readable; the loop then looks at its timers
	// and queue too.
	Wait() (readable []int, err error)
	// Wake may be called from any goroutine.
	Wake()
	// Close releases the wait (not the sockets); the loop's goroutine
	// calls it when it waits no more.
	Close()
}

// receiveFDs is what pollWait needs of an advert socket.
type receiveFDs interface{ ReceiveFDs() []int }

// pollWait is the production loopWait.
type pollWait struct{ set *pollset.Set }

func newPollWait() (loopWait, error) {
	s, err := pollset.New()
	if err != nil {
		return nil, fmt.Errorf("daemon: loop wait: %w", err)
	}
	return pollWait{set: s}, nil
}

func (w pollWait) Watch(c advertConn) ([]int, error) {
	fc, ok := c.(receiveFDs)
	if !ok {
		return nil, fmt.Errorf("daemon: advert socket %T cannot be polled", c)
	}
	fds := fc.ReceiveFDs()
	for _, fd := range fds {
		if err := w.set.Add(fd); err != nil {
			return nil, fmt.Errorf("daemon: loop wait: %w", err)
		}
	}
	return fds, nil
}

func (w pollWait) Arm(deadline time.Time) { w.set.Arm(deadline) }

func (w pollWait) Wait() ([]int, error) {
	r, err := w.set.Wait()
	return r.FDs, err
}

func (w pollWait) Wake()  { w.set.Wake() }
func (w pollWait) Close() { w.set.Close() }
