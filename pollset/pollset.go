// Package pollset lets one goroutine wait for a few descriptors, one
// deadline and wake-ups from other goroutines at the cost of one thread
// wakeup each, with no runtime timer and no blocking system call.
//
// It exists for the daemon's idle cost. An idle muros-had pair does little
// but send and receive a packet or two every few milliseconds, so what it
// costs is its thread wakeups, and the Go runtime adds several to each
// event when the event comes through its own machinery:
//
//   - a runtime timer (time.Timer, a read deadline) wakes the sysmon
//     thread at every deadline (sysmon sleeps until the next timer), and
//     the goroutine it readies starts a spinning thread (wakep);
//   - a goroutine that reads a socket and hands the datagram to another
//     over a channel wakes a second thread for the receiver;
//   - a system call entered through the runtime's syscall entry wakes
//     sysmon when every P was idle.
//
// A Set is an epoll instance (epoll(7)) of its own holding the caller's
// descriptors, an eventfd (eventfd(2)) for Wake and a timerfd
// (timerfd_create(2), CLOCK_MONOTONIC, to the nanosecond where the
// runtime's timers round to the millisecond) for the deadline. The epoll
// descriptor itself sits in the runtime's network poller (epoll instances
// are pollable), so Wait parks its goroutine without a blocking system
// call, and the thread that polls the network runs it when anything in the
// set is ready: one wakeup. Every system call Wait, Arm and Wake make is
// raw (no runtime syscall entry) and non-blocking.
//
//	runtime poller (epoll_wait in findRunnable)
//	   └── Set's epoll fd (edge: "something in the set is ready")
//	          ├── eventfd   Wake() from any goroutine
//	          ├── timerfd   Arm(deadline)
//	          └── caller's descriptors (level-triggered EPOLLIN)
//
// The caller's descriptors are level-triggered: a caller that reads one
// datagram per readiness is told again at once if another is queued, and
// pays no read that answers EAGAIN in the common case of one.
package pollset

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrStopped is returned by Wait once Stop was called.
var ErrStopped = errors.New("pollset: stopped")

// Set is one goroutine's wait. Add, Arm, Wait and Close belong to the
// goroutine that waits; Wake and Stop may be called from any goroutine.
type Set struct {
	epollFD, timerFD int
	epoll            *os.File // epollFD in the runtime's poller
	rc               syscall.RawConn
	armed            time.Time // the deadline the timerfd is set to
	events           [16]unix.EpollEvent
	ready            []int
	// poll is the non-blocking epoll_pwait Wait hands the runtime's
	// poller, made once (a closure per Wait would allocate per wakeup);
	// it leaves its result in n and errno.
	poll  func(fd uintptr) bool
	n     int
	errno syscall.Errno

	mu      sync.Mutex // guards wakeFD against Close, and stopped
	wakeFD  int
	stopped bool
}

// Ready is what a Wait found: the caller's descriptors that are readable,
// whether Wake was called and whether the deadline passed. Any of them may
// be spurious (a wake-up already handled, a datagram already read): the
// caller checks its own state.
type Ready struct {
	FDs     []int // aliases the Set's buffer until the next Wait
	Woken   bool
	Expired bool
}

// New opens the set's epoll instance, eventfd and timerfd.
func New() (*Set, error) {
	s := &Set{epollFD: -1, timerFD: -1, wakeFD: -1}
	s.poll = func(fd uintptr) bool {
		// Non-blocking; false parks the goroutine in the runtime's
		// poller until the epoll set has something.
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&s.events[0])), uintptr(len(s.events)), 0, 0, 0)
		s.n, s.errno = int(r), e
		if e == unix.EINTR || e == unix.EAGAIN {
			s.n, s.errno = 0, 0
		}
		return s.errno != 0 || s.n > 0
	}
	fail := func(what string, err error) (*Set, error) {
		s.Close()
		return nil, fmt.Errorf("pollset: %s: %w", what, err)
	}
	var err error
	if s.wakeFD, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fail("eventfd", err)
	}
	if s.timerFD, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		return fail("timerfd", err)
	}
	if s.epollFD, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail("epoll", err)
	}
	for _, fd := range []int{s.wakeFD, s.timerFD} {
		if err := s.Add(fd); err != nil {
			return fail("epoll add", err)
		}
	}
	// Non-blocking, so os.NewFile puts it in the runtime's poller; the
	// File owns the descriptor from here on.
	if err := unix.SetNonblock(s.epollFD, true); err != nil {
		return fail("epoll", err)
	}
	s.epoll = os.NewFile(uintptr(s.epollFD), "pollset")
	if s.rc, err = s.epoll.SyscallConn(); err != nil {
		return fail("epoll", err)
	}
	return s, nil
}

// Add watches fd for reading, level-triggered. The caller keeps ownership
// of fd. Closing it takes it out of the set (epoll(7)); do that while no
// Wait runs, or a new descriptor given the same number could be reported
// ready in its place.
func (s *Set) Add(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(s.epollFD, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("pollset: add fd %d: %w", fd, err)
	}
	return nil
}

// Wake makes the waiting (or the next) Wait return with Woken set. Any
// goroutine may call it; wake-ups before a Wait coalesce into one.
func (s *Set) Wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakeLocked()
}

func (s *Set) wakeLocked() {
	if s.wakeFD < 0 {
		return
	}
	one := [8]byte{1}
	// The counter saturates long before it matters, and EAGAIN means a
	// wake-up is pending anyway.
	unix.RawSyscall(unix.SYS_WRITE, uintptr(s.wakeFD), uintptr(unsafe.Pointer(&one[0])), 8)
}

// Stop makes the waiting (or the next) Wait return ErrStopped, for good.
// Any goroutine may call it.
func (s *Set) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.wakeLocked()
}

// Arm sets the deadline (zero: none). A deadline already past makes the
// next Wait return at once with Expired. Setting the deadline it is set to
// costs nothing.
func (s *Set) Arm(deadline time.Time) {
	if deadline.Equal(s.armed) {
		return
	}
	s.armed = deadline
	var spec unix.ItimerSpec
	if !deadline.IsZero() {
		// Relative to a clock read before the call: the timer never
		// fires before the deadline (both are CLOCK_MONOTONIC). Zero
		// would disarm it, hence at least 1 ns.
		spec.Value = unix.NsecToTimespec(max(int64(time.Until(deadline)), 1))
	}
	unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(s.timerFD), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0)
}

// Wait parks until a descriptor is readable, Wake was called or the
// deadline passed, and says which. Once the deadline has expired it is
// disarmed: Arm it again for another.
func (s *Set) Wait() (Ready, error) {
	if s.isStopped() {
		return Ready{}, ErrStopped
	}
	if err := s.rc.Read(s.poll); err != nil {
		return Ready{}, fmt.Errorf("pollset: wait: %w", err)
	}
	if s.errno != 0 {
		return Ready{}, fmt.Errorf("pollset: epoll_pwait: %w", s.errno)
	}
	r := Ready{FDs: s.ready[:0]}
	for _, ev := range s.events[:s.n] {
		switch fd := int(ev.Fd); fd {
		case s.wakeFD:
			drain(fd)
			r.Woken = true
		case s.timerFD:
			drain(fd)
			r.Expired = true
			s.armed = time.Time{}
		default:
			r.FDs = append(r.FDs, fd)
		}
	}
	s.ready = r.FDs
	if r.Woken && s.isStopped() {
		return Ready{}, ErrStopped
	}
	return r, nil
}

func (s *Set) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// Close closes the set's descriptors (not the caller's). Call it from the
// waiting goroutine once it waits no more.
func (s *Set) Close() {
	s.mu.Lock()
	s.stopped = true
	if s.wakeFD >= 0 {
		// Under the lock Wake writes it under: no wake-up can reach a
		// closed (or reused) descriptor number.
		unix.Close(s.wakeFD)
		s.wakeFD = -1
	}
	s.mu.Unlock()
	if s.timerFD >= 0 {
		unix.Close(s.timerFD)
		s.timerFD = -1
	}
	if s.epoll != nil {
		s.epoll.Close()
		s.epoll = nil
	} else if s.epollFD >= 0 {
		unix.Close(s.epollFD)
	}
	s.epollFD = -1
}

// drain reads an eventfd's or timerfd's counter.
func drain(fd int) {
	var b [8]byte
	unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 8)
}
