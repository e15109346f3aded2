package ctsync

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink multicast groups of ctnetlink (enum nfnetlink_groups).
const (
	nfnlgrpConntrackNew     = 1
	nfnlgrpConntrackUpdate  = 2
	nfnlgrpConntrackDestroy = 3
)

// listener is one generation of the kernel event subscription. Events are
// decoded with ti-mo/conntrack; the receive loop is ours so that the
// socket's buffer can be forced above rmem_max (SO_RCVBUFFORCE) and so that
// an error ends the generation visibly: the supervisor in Sync restarts it
// and resyncs the peer.
type listener struct {
	c      *netlink.Conn
	events chan conntrack.Event
	errc   chan error
	stop   chan struct{}
	wg     sync.WaitGroup
}

// inNamespace runs fn on a thread switched into ns (the namespace Sync was
// created in), so sockets opened by later restarts land there too.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("ctsync: current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("ctsync: enter netns: %w", err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine.
		return errors.Join(fnErr, fmt.Errorf("ctsync: leave netns: %w", err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

func setReadBuffer(c *netlink.Conn, size int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		if serr != nil {
			// Without CAP_NET_ADMIN: capped by net.core.rmem_max.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func startListener(ns netns.NsHandle, readBuffer int) (*listener, error) {
	var c *netlink.Conn
	err := inNamespace(ns, func() error {
		var err error
		c, err = netlink.Dial(unix.NETLINK_NETFILTER, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ctsync: dial ctnetlink events: %w", err)
	}
	if err := setReadBuffer(c, readBuffer); err != nil {
		c.Close()
		return nil, fmt.Errorf("ctsync: event socket buffer: %w", err)
	}
	for _, g := range []uint32{nfnlgrpConntrackNew, nfnlgrpConntrackUpdate, nfnlgrpConntrackDestroy} {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return nil, fmt.Errorf("ctsync: join ctnetlink group %d: %w", g, err)
		}
	}
	l := &listener{c: c, events: make(chan conntrack.Event, 4096), errc: make(chan error, 1), stop: make(chan struct{})}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

func (l *listener) run() {
	defer l.wg.Done()
	for {
		msgs, err := l.c.Receive()
		if err != nil {
			select {
			case <-l.stop:
			default:
				l.errc <- err
			}
			return
		}
		for _, m := range msgs {
			var ev conntrack.Event
			if err := ev.Unmarshal(m); err != nil || ev.Flow == nil {
				continue // not a flow event (expectations, unknown types)
			}
			select {
			case l.events <- ev:
			case <-l.stop:
				return
			}
		}
	}
}

// close ends the generation and waits for its goroutine.
func (l *listener) close() {
	close(l.stop)
	l.c.Close()
	l.wg.Wait()
}

// isOverrun reports a netlink receive-buffer overrun.
func isOverrun(err error) bool { return errors.Is(err, unix.ENOBUFS) }
