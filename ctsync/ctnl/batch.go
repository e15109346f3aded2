package ctnl

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// batchConn is a raw NETLINK_NETFILTER socket on which a whole datagram's
// records go to the kernel in one sendmsg; the kernel (netlink_rcv_skb)
// processes the messages in order and acknowledges each one, so a batch
// costs one send and a few receives instead of two syscalls per flow.
type batchConn struct {
	fd   int
	seq  uint32
	wbuf []byte
	rbuf []byte
	got  []bool // reused by exchange
}

const (
	nlmsgHdrLen = 16
	nlmsgError  = 2
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
	// Extended ACKs would make acknowledgements variable-sized; the plain
	// ones are 36 bytes (header + errno + the request's header).
	return &batchConn{fd: fd, rbuf: make([]byte, 1<<16)}, nil
}

func (b *batchConn) close() error { return unix.Close(b.fd) }

// exchange sends the queued messages and collects the errno of each
// (0 = success) into res, indexed by seq - base.
func (b *batchConn) exchange(base uint32, res []unix.Errno) error {
	if _, err := unix.Write(b.fd, b.wbuf); err != nil {
		return fmt.Errorf("ctnl: batch send: %w", err)
	}
	b.wbuf = b.wbuf[:0]
	got := b.got[:0]
	for range res {
		got = append(got, false)
	}
	b.got = got
	pending := len(res)
	for pending > 0 {
		n, err := unix.Read(b.fd, b.rbuf)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("ctnl: batch receive: %w", err)
		}
		p := b.rbuf[:n]
		for len(p) >= nlmsgHdrLen {
			l := int(binary.NativeEndian.Uint32(p))
			if l < nlmsgHdrLen || l > len(p) {
				return errors.New("ctnl: batch receive: malformed netlink message")
			}
			typ := binary.NativeEndian.Uint16(p[4:])
			seq := binary.NativeEndian.Uint32(p[8:])
			if typ == nlmsgError && l >= nlmsgHdrLen+4 {
				i := int(seq - base)
				if i >= 0 && i < len(res) && !got[i] {
					code := int32(binary.NativeEndian.Uint32(p[nlmsgHdrLen:]))
					res[i] = unix.Errno(-code)
					got[i] = true
					pending--
				}
			}
			al := (l + 3) &^ 3
			if al > len(p) {
				break
			}
			p = p[al:]
		}
	}
	return nil
}

// ApplyBatch applies fs like Apply, in one kernel round trip for the
// common cases; records that need a second step (an existing flow met by a
// create, an expired one met by an update, a kernel that wants a different
// CONFIRMED bit, missing connlabels) go through Apply. ok[i] reports
// whether fs[i] reached the kernel. It returns the number of failures and
// the first error.
func (in *Injector) ApplyBatch(fs []ctwire.Flow, ok []bool) (int, error) {
	if in.b == nil {
		return in.applyEach(fs, ok)
	}
	if len(fs) == 0 {
		// A datagram without records (bulk markers): an empty sendmsg
		// fails with ENODATA and would cost the batch socket.
		return 0, nil
	}
	base := in.b.seq + 1
	kinds := in.kinds[:0]
	w := in.b.wbuf[:0]
	for i := range fs {
		f := &fs[i]
		seq := base + uint32(i)
		switch _, known := in.known[f.Key()]; {
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
	in.b.wbuf = w
	in.kinds = kinds
	in.b.seq = base + uint32(len(fs)) - 1
	res := in.res[:0]
	for range fs {
		res = append(res, 0)
	}
	in.res = res
	if err := in.b.exchange(base, res); err != nil {
		// The socket is in an unknown state: drop it, redo one by one.
		in.b.close()
		in.b = nil
		return in.applyEach(fs, ok)
	}
	failed := 0
	var first error
	for i := range fs {
		f := &fs[i]
		k := f.Key()
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
