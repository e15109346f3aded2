package pollset

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSet(t *testing.T) *Set {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// later calls f from another goroutine after d; the returned channel is
// closed once it has.
func later(d time.Duration, f func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d)
		f()
	}()
	return done
}

// datagramPair returns a connected pair of datagram sockets, non-blocking.
func datagramPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	return fds[0], fds[1]
}

func TestWakeFromAnotherGoroutine(t *testing.T) {
	s := newSet(t)
	done := later(5*time.Millisecond, s.Wake)
	r, err := s.Wait()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if !r.Woken || r.Expired || len(r.FDs) != 0 {
		t.Fatalf("Wait = %+v, want woken only", r)
	}
}

func TestWakesBeforeWaitCoalesce(t *testing.T) {
	s := newSet(t)
	s.Wake()
	s.Wake()
	s.Wake()
	if r, err := s.Wait(); err != nil || !r.Woken {
		t.Fatalf("Wait = %+v, %v; want woken", r, err)
	}
	// The three were one: nothing is pending now, and the deadline below
	// is what ends the next wait.
	s.Arm(time.Now().Add(time.Millisecond))
	if r, err := s.Wait(); err != nil || r.Woken || !r.Expired {
		t.Fatalf("second Wait = %+v, %v; want the deadline only", r, err)
	}
}

func TestDeadlineNeverEarly(t *testing.T) {
	s := newSet(t)
	for range 20 {
		deadline := time.Now().Add(300 * time.Microsecond)
		s.Arm(deadline)
		r, err := s.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if now := time.Now(); !r.Expired || now.Before(deadline) {
			t.Fatalf("Wait = %+v at %v before the deadline", r, deadline.Sub(now))
		}
	}
}

func TestArmPastExpiresAtOnce(t *testing.T) {
	s := newSet(t)
	s.Arm(time.Now().Add(-time.Second))
	r, err := s.Wait()
	if err != nil || !r.Expired {
		t.Fatalf("Wait = %+v, %v; want expired", r, err)
	}
}

func TestArmZeroDisarms(t *testing.T) {
	s := newSet(t)
	s.Arm(time.Now().Add(2 * time.Millisecond))
	s.Arm(time.Time{})
	done := later(20*time.Millisecond, s.Wake)
	r, err := s.Wait()
	<-done
	if err != nil || r.Expired || !r.Woken {
		t.Fatalf("Wait = %+v, %v; want woken, the disarmed deadline not expired", r, err)
	}
}

// An expired deadline is disarmed: arming the same instant again sets it
// again instead of being taken for the one already set.
func TestRearmSameDeadlineAfterExpiry(t *testing.T) {
	s := newSet(t)
	deadline := time.Now().Add(-time.Millisecond)
	s.Arm(deadline)
	if r, err := s.Wait(); err != nil || !r.Expired {
		t.Fatalf("Wait = %+v, %v", r, err)
	}
	s.Arm(deadline)
	if r, err := s.Wait(); err != nil || !r.Expired {
		t.Fatalf("Wait after re-arming = %+v, %v; want expired again", r, err)
	}
}

func TestDescriptorsAreLevelTriggered(t *testing.T) {
	s := newSet(t)
	a, b := datagramPair(t)
	if err := s.Add(b); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"one", "two"} {
		if _, err := unix.Write(a, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for range 2 {
		r, err := s.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.FDs) != 1 || r.FDs[0] != b {
			t.Fatalf("Wait = %+v, want fd %d ready", r, b)
		}
		// One datagram per readiness: the second must be reported again.
		buf := make([]byte, 16)
		n, err := unix.Read(b, buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(buf[:n]))
	}
	if got[0] != "one" || got[1] != "two" {
		t.Fatalf("read %q", got)
	}
	// Drained: only the wake ends the next wait.
	s.Wake()
	if r, err := s.Wait(); err != nil || len(r.FDs) != 0 || !r.Woken {
		t.Fatalf("Wait after draining = %+v, %v", r, err)
	}
}

func TestStop(t *testing.T) {
	s := newSet(t)
	done := later(5*time.Millisecond, s.Stop)
	_, err := s.Wait()
	<-done
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Wait = %v, want ErrStopped", err)
	}
	if _, err := s.Wait(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Wait after Stop = %v, want ErrStopped for good", err)
	}
}

// Wake and Stop after Close must not write to a descriptor number that
// the process may have reused.
func TestWakeAfterCloseTouchesNothing(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	a, b := datagramPair(t)
	s.Wake()
	s.Stop()
	s.Close()
	buf := make([]byte, 8)
	for _, fd := range []int{a, b} {
		if n, err := unix.Read(fd, buf); !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("fd %d read %d, %v after wakes of a closed set: want nothing written", fd, n, err)
		}
	}
}

// A wait that finds something ready allocates nothing: the daemon's loop
// and the liveness engine wait once per advert or heartbeat.
func TestWaitAllocatesNothing(t *testing.T) {
	s := newSet(t)
	past := time.Now().Add(-time.Hour)
	allocs := testing.AllocsPerRun(100, func() {
		s.Wake()
		s.Arm(past)
		if _, err := s.Wait(); err != nil {
			t.Fatal(err)
		}
		past = past.Add(time.Nanosecond) // a new deadline each round
	})
	if allocs != 0 {
		t.Fatalf("Wait allocates %v times per call, want 0", allocs)
	}
}

// The daemon's loop arms the same deadline round after round while other
// things wake it: a deadline armed again unchanged (no system call) still
// fires, and not before it is due.
func TestArmSameDeadlineAcrossWakes(t *testing.T) {
	s := newSet(t)
	deadline := time.Now().Add(20 * time.Millisecond)
	s.Arm(deadline)
	s.Wake()
	if r, err := s.Wait(); err != nil || !r.Woken || r.Expired {
		t.Fatalf("Wait = %+v, %v; want woken before the deadline", r, err)
	}
	s.Arm(deadline)
	r, err := s.Wait()
	if err != nil || !r.Expired {
		t.Fatalf("Wait = %+v, %v; want the deadline", r, err)
	}
	if now := time.Now(); now.Before(deadline) {
		t.Fatalf("expired %v before the deadline", deadline.Sub(now))
	}
}
