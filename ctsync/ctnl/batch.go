package ctnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// batchConn is a raw NETLINK_NETFILTER socket on which many records go to
// the kernel in one sendmsg. The kernel (netlink_rcv_skb) processes the
// messages in order, in the sender's context, and answers only the failed
// ones and the last one (the only message carrying NLM_F_ACK): a chunk of
// maxChunk records costs one send and, when nothing fails, one receive of
// one acknowledgement, instead of two syscalls and an acknowledgement skb
// per flow. The last acknowledgement is the end marker: everything the
// kernel had to say about the chunk is queued before it.
type batchConn struct {
	fd   int
	seq  uint32
	wbuf []byte
	rbuf []byte
	offs []int // start of each message in wbuf
}

const (
	nlmsgHdrLen = 16
	nlmsgError  = 2
	// maxChunk bounds the records of one sendmsg so that even a chunk in
	// which every record fails gets all its error messages into batchRcvBuf
	// (NETLINK_CAP_ACK: an error is 36 bytes, an skb under 1 KiB), and
	// the request stays far below the socket's send buffer.
	maxChunk = 256
	// batchRcvBuf is the batch socket's receive buffer (SO_RCVBUFFORCE).
	batchRcvBuf = 4 << 20
)

func dialBatch() (*batchConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("ctnl: batch socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnl: batch bind: %w", err)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, batchRcvBuf) != nil {
		// Without CAP_NET_ADMIN: as large as rmem_max allows.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, batchRcvBuf)
	}
	// An error message without a copy of the failed request: small and
	// fixed-size (header + errno + the request's header). Extended ACKs
	// stay off for the same reason.
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnl: batch NETLINK_CAP_ACK: %w", err)
	}
	return &batchConn{fd: fd, rbuf: make([]byte, 1<<16)}, nil
}

func (b *batchConn) close() error { return unix.Close(b.fd) }

// exchange sends the queued messages (sequence numbers base ..
// base+len(res)-1, offsets in b.offs), leaving NLM_F_ACK on the last one
// only, and stores the errno of each (0 = success) in res.
func (b *batchConn) exchange(base uint32, res []unix.Errno) error {
	if len(res) == 0 || len(b.offs) != len(res) {
		return fmt.Errorf("ctnl: batch of %d messages, %d offsets", len(res), len(b.offs))
	}
	for _, o := range b.offs[:len(b.offs)-1] {
		fl := binary.NativeEndian.Uint16(b.wbuf[o+6:])
		binary.NativeEndian.PutUint16(b.wbuf[o+6:], fl&^nlmFAck)
	}
	_, err := unix.Write(b.fd, b.wbuf)
	b.wbuf, b.offs = b.wbuf[:0], b.offs[:0]
	if err != nil {
		return fmt.Errorf("ctnl: batch send: %w", err)
	}
	clear(res)
	for {
		n, err := unix.Read(b.fd, b.rbuf)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// ENOBUFS here means answers were lost: the outcome of some
			// records is unknown, the caller redoes the chunk.
			return fmt.Errorf("ctnl: batch receive: %w", err)
		}
		if done, err := parseAcks(b.rbuf[:n], base, res); done || err != nil {
			return err
		}
	}
}

// parseAcks reads one datagram of the kernel's answers to a batch whose
// messages carry sequence numbers base .. base+len(res)-1: each NLMSG_ERROR
// message (struct nlmsgerr: a negative errno, or 0 for the acknowledgement,
// then the request's header) sets the errno of its record in res. Messages
// of other types or sequence numbers are skipped. done reports the answer
// to the last record, the end marker: nothing after it is read. A message
// whose length runs outside the datagram is an error.
func parseAcks(p []byte, base uint32, res []unix.Errno) (done bool, err error) {
	last := base + uint32(len(res)) - 1
	for len(p) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(p))
		if l < nlmsgHdrLen || l > len(p) {
			return false, errors.New("ctnl: batch receive: malformed netlink message")
		}
		typ := binary.NativeEndian.Uint16(p[4:])
		seq := binary.NativeEndian.Uint32(p[8:])
		if typ == nlmsgError && l >= nlmsgHdrLen+4 {
			if i := int(seq - base); i >= 0 && i < len(res) {
				res[i] = unix.Errno(-int32(binary.NativeEndian.Uint32(p[nlmsgHdrLen:])))
				if seq == last {
					return true, nil
				}
			}
		}
		p = p[min((l+3)&^3, len(p)):]
	}
	return false, nil
}

// ApplyBatch applies fs like Apply, in one kernel round trip per maxChunk
// records for the common cases; records that need a second step (an
// existing flow met by a create, an expired one met by an update, a kernel
// that wants a different CONFIRMED bit, missing connlabels) go through
// Apply. ok[i] reports whether fs[i] reached the kernel. It returns the
// number of failures and the first error.
//
// A failed exchange (the socket's state is then unknown) closes the batch
// socket, counts a BatchRedial, opens a new one and redoes that chunk one
// record at a time; while no batch socket can be opened, records go one by
// one and every call tries again.
//
// A chunk never holds two records of one flow: a record that fails is
// redone after the whole chunk went through the kernel, so a later record
// of the same flow in that chunk (a DESTROY after an UPDATE) would run
// before it, and the redo would bring back a flow that ended.
func (in *Injector) ApplyBatch(fs []ctwire.Flow, ok []bool) (int, error) {
	failed := 0
	var first error
	for len(fs) > 0 {
		n := in.chunkLen(fs)
		f, err := in.applyChunk(fs[:n], ok[:n])
		failed += f
		if first == nil {
			first = err
		}
		fs, ok = fs[n:], ok[n:]
	}
	return failed, first
}

// chunkLen is how many of fs go in the next chunk: at most maxChunk, and
// no flow twice.
func (in *Injector) chunkLen(fs []ctwire.Flow) int {
	clear(in.inChunk)
	n := min(len(fs), maxChunk)
	for i := range n {
		id := fs[i].ID()
		if _, dup := in.inChunk[id]; dup {
			return i
		}
		in.inChunk[id] = struct{}{}
	}
	return n
}

// redial opens a batch socket in the injector's namespace.
func (in *Injector) redial() (*batchConn, error) { return dialIn(in.ns, dialBatch) }

// dialIn runs dial inside ns on a thread of its own: the caller's thread
// may be in another namespace, and the locked thread ends with the
// goroutine, so its namespace is never restored or reused. A socket keeps
// the namespace it was opened in.
func dialIn[T any](ns netns.NsHandle, dial func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		if err := netns.Set(ns); err != nil {
			ch <- result{err: fmt.Errorf("ctnl: enter namespace: %w", err)}
			return
		}
		v, err := dial()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

func (in *Injector) applyChunk(fs []ctwire.Flow, ok []bool) (int, error) {
	if in.b == nil {
		b, err := in.redial()
		if err != nil {
			return in.applyEach(fs, ok)
		}
		in.b = b
	}
	base := in.b.seq + 1
	kinds := in.kinds[:0]
	w := in.b.wbuf[:0]
	offs := in.b.offs[:0]
	for i := range fs {
		f := &fs[i]
		seq := base + uint32(i)
		offs = append(offs, len(w))
		switch _, known := in.known[f.ID()]; {
		case f.Op == ctwire.OpDestroy:
			kinds = append(kinds, opDelete)
			w = AppendDelete(w, f, seq)
		case known:
			kinds = append(kinds, opUpdate)
			w = AppendUpdate(w, f, seq)
		default:
			kinds = append(kinds, opCreate)
			w = AppendCreate(w, f, in.confirm, seq)
		}
	}
	in.b.wbuf, in.b.offs = w, offs
	in.kinds = kinds
	in.b.seq = base + uint32(len(fs)) - 1
	res := in.res[:0]
	for range fs {
		res = append(res, 0)
	}
	in.res = res
	if err := in.b.exchange(base, res); err != nil {
		// Unknown state: a new socket, and this chunk one by one (a
		// create that did land meets EEXIST there and becomes an update).
		in.b.close()
		in.b = nil
		in.stats.BatchRedials++
		return in.applyEach(fs, ok)
	}
	failed := 0
	var first error
	for i := range fs {
		f := &fs[i]
		k := f.ID()
		e := res[i]
		switch {
		case e == 0 && kinds[i] == opDelete, kinds[i] == opDelete && e == unix.ENOENT:
			delete(in.known, k)
			in.stats.Deleted++
			ok[i] = true
		case e == 0 && kinds[i] == opUpdate:
			in.stats.Updated++
			ok[i] = true
		case e == 0:
			in.known[k] = struct{}{}
			in.stats.Created++
			ok[i] = true
		default:
			if e == unix.EEXIST {
				in.known[k] = struct{}{}
			}
			if kinds[i] == opUpdate && e == unix.ENOENT {
				delete(in.known, k)
			}
			err := in.Apply(f)
			ok[i] = err == nil
			if err != nil {
				failed++
				if first == nil {
					first = err
				}
			}
		}
	}
	return failed, first
}

func (in *Injector) applyEach(fs []ctwire.Flow, ok []bool) (int, error) {
	failed := 0
	var first error
	for i := range fs {
		err := in.Apply(&fs[i])
		ok[i] = err == nil
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	return failed, first
}

type opKind uint8

const (
	opCreate opKind = iota
	opUpdate
	opDelete
)
