package ctsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/ctsync/ctnl"
	"github.com/muros/muros-had/ctsync/ctwire"
	"github.com/muros/muros-had/rawio"
)

// Netlink multicast groups of ctnetlink (enum nfnetlink_groups).
const (
	nfnlgrpConntrackNew     = 1
	nfnlgrpConntrackUpdate  = 2
	nfnlgrpConntrackDestroy = 3
)

// listener is one generation of the kernel event subscription. The
// receive loop is ours so that the socket's buffer can be forced above
// rmem_max (SO_RCVBUFFORCE), so that an error ends the generation visibly
// (the supervisor in Sync restarts it and resyncs the peer), and so that
// the master's hot path stays cheap: one recvmmsg(2) takes up to
// recvBatch queued events into buffers allocated once, ctnl.ParseEvent
// decodes them without allocating, and the loop receives them as one
// batch per read instead of one channel send per event.
type listener struct {
	c       *netlink.Conn
	sock    *rawio.Conn
	batches chan *eventBatch // to the loop
	free    chan *eventBatch // back from the loop
	errc    chan error
	stop    chan struct{}
	wg      sync.WaitGroup
}

// event is one decoded kernel event.
type event struct {
	typ ctnl.EventType
	f   ctwire.Flow
}

// eventBatch is what one read produced.
type eventBatch struct {
	events   []event
	rejected [ctnl.NumEventReasons]uint64
}

const (
	// recvBatch is the number of datagrams (each one event: ctnetlink
	// sends one skb per event) one recvmmsg takes.
	recvBatch = 64
	// recvSlot holds one event with room to spare (an IPv6 event with
	// every optional attribute is under 1 KiB); a longer one is
	// truncated and rejected, not misread.
	recvSlot = 4096
	// batchPool bounds the batches in flight: when the loop holds them
	// all, the listener waits and the socket buffer absorbs the storm.
	batchPool = 8
)

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
	sock, err := rawio.NewConn(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("ctsync: event socket: %w", err)
	}
	l := &listener{c: c, sock: sock,
		batches: make(chan *eventBatch, batchPool), free: make(chan *eventBatch, batchPool),
		errc: make(chan error, 1), stop: make(chan struct{})}
	for range batchPool {
		l.free <- &eventBatch{events: make([]event, 0, recvBatch)}
	}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

func (l *listener) run() {
	defer l.wg.Done()
	buf := make([]byte, recvBatch*recvSlot)
	msgs := rawio.NewBatch(recvBatch)
	for i := range recvBatch {
		msgs.Set(i, buf[i*recvSlot:(i+1)*recvSlot], nil)
	}
	for {
		var b *eventBatch
		select {
		case b = <-l.free:
		case <-l.stop:
			return
		}
		n, err := l.sock.ReadBatch(msgs, recvBatch)
		if err != nil {
			select {
			case <-l.stop:
			default:
				l.errc <- fmt.Errorf("ctsync: receive events: %w", err)
			}
			return
		}
		b.events = b.events[:0]
		b.rejected = [ctnl.NumEventReasons]uint64{}
		for i := range n {
			d, truncated := msgs.Received(i)
			decodeDatagram(b, d, truncated)
		}
		select {
		case l.batches <- b:
		case <-l.stop:
			return
		}
	}
}

// decodeDatagram appends the flow events of one netlink datagram to b and
// counts what it rejects.
func decodeDatagram(b *eventBatch, d []byte, truncated bool) {
	if truncated {
		b.rejected[ctnl.EventBadLength]++
		return
	}
	for len(d) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(d))
		if l < nlmsgHdrLen || l > len(d) {
			b.rejected[ctnl.EventBadLength]++
			return
		}
		b.events = append(b.events, event{})
		ev := &b.events[len(b.events)-1]
		typ, err := ctnl.ParseEvent(d[:l], &ev.f)
		switch {
		case err != nil:
			b.rejected[ctnl.EventReasonOf(err)]++
			b.events = b.events[:len(b.events)-1]
		case typ == ctnl.EventNone: // expectation events
			b.events = b.events[:len(b.events)-1]
		default:
			ev.typ = typ
		}
		d = d[min((l+3)&^3, len(d)):]
	}
}

const nlmsgHdrLen = 16

// close ends the generation and waits for its goroutine.
func (l *listener) close() {
	close(l.stop)
	l.c.Close()
	l.wg.Wait()
}

// isOverrun reports a netlink receive-buffer overrun.
func isOverrun(err error) bool { return errors.Is(err, unix.ENOBUFS) }
