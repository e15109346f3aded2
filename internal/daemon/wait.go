package daemon

import (
	"errors"
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
	// Watch adds c's receiving sockets.
	Watch(c advertConn) error
	// Arm sets the deadline (zero: none).
	Arm(deadline time.Time)
	// Wait returns when anything may be ready, with the receiving
	// sockets' descriptors it found readable (a wait that cannot tell
	// returns none, and the loop reads the sockets without descriptors
	// every round); the loop then looks at its timers and queue too.
	// errWaitStopped once Stop was called.
	Wait() (readable []int, err error)
	// Wake and Stop may be called from any goroutine.
	Wake()
	Stop()
	// Close releases the wait (not the sockets); the loop's goroutine
	// calls it when it waits no more.
	Close()
}

var errWaitStopped = errors.New("daemon: loop wait stopped")

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

func (w pollWait) Watch(c advertConn) error {
	fc, ok := c.(receiveFDs)
	if !ok {
		return fmt.Errorf("daemon: advert socket %T cannot be polled", c)
	}
	for _, fd := range fc.ReceiveFDs() {
		if err := w.set.Add(fd); err != nil {
			return fmt.Errorf("daemon: loop wait: %w", err)
		}
	}
	return nil
}

func (w pollWait) Arm(deadline time.Time) { w.set.Arm(deadline) }

func (w pollWait) Wait() ([]int, error) {
	r, err := w.set.Wait()
	if errors.Is(err, pollset.ErrStopped) {
		return nil, errWaitStopped
	}
	return r.FDs, err
}

func (w pollWait) Wake()  { w.set.Wake() }
func (w pollWait) Stop()  { w.set.Stop() }
func (w pollWait) Close() { w.set.Close() }
