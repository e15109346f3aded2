package ctnl

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// Dumper reads the whole conntrack table (every family and zone) through
// its own NETLINK_NETFILTER socket, one netlink datagram at a time, and
// decodes it with ParseEvent, without allocating per flow. The kernel
// walks its table as the datagrams are read (a netlink dump is paced by
// its reader), so a reader that takes a chunk, hands it on and comes back
// for the next never holds the table, nor its caller, for the length of a
// whole dump: the master's refresh sweep runs beside the event stream.
//
// The request is IPCTNL_MSG_CT_GET with NLM_F_REQUEST|NLM_F_DUMP and
// nfgenmsg family AF_UNSPEC; the answers are IPCTNL_MSG_CT_NEW messages
// (NLM_F_MULTI) in datagrams of up to 32 KiB, ended by NLMSG_DONE.
//
// After any error the socket's state is unknown (the kernel may still be
// running the dump, and answer the next request with EBUSY): the next
// Start opens a new socket in the dumper's namespace.
type Dumper struct {
	fd     int
	ns     netns.NsHandle
	seq    uint32
	buf    []byte
	active bool
	broken bool
}

const (
	ipctnlMsgCTGet = 1
	nlmFDump       = 0x300 // NLM_F_ROOT | NLM_F_MATCH
	nlmsgDone      = 3
	// dumpBuf is the largest datagram the kernel builds for a dump
	// (netlink_dump caps its allocation at 32 KiB); a smaller buffer would
	// make it build smaller ones.
	dumpBuf = 32 << 10
)

// DialDumper opens a Dumper's socket in the calling thread's namespace.
// The socket blocks: use it from a goroutine of its own.
func DialDumper() (*Dumper, error) {
	fd, err := dumpSocket()
	if err != nil {
		return nil, err
	}
	ns, err := netns.Get()
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnl: namespace handle: %w", err)
	}
	return &Dumper{fd: fd, ns: ns, buf: make([]byte, dumpBuf)}, nil
}

func dumpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, fmt.Errorf("ctnl: dump socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("ctnl: dump bind: %w", err)
	}
	return fd, nil
}

// Close closes the socket.
func (d *Dumper) Close() error {
	d.ns.Close()
	if d.fd < 0 {
		return nil
	}
	return unix.Close(d.fd)
}

// Abandon drops a dump still running without reading the rest of it: the
// socket is replaced at the next Start, and the kernel ends the dump with
// it (reading it to its end would walk the rest of the table at once).
func (d *Dumper) Abandon() {
	if d.active {
		d.fail()
	}
}

// fail ends the dump on an error: the socket is replaced at the next Start.
func (d *Dumper) fail() {
	d.active, d.broken = false, true
}

// Start requests a dump of the table. A dump still running is read to its
// end first and dropped (the kernel runs one dump per socket at a time).
func (d *Dumper) Start() error {
	if d.broken {
		fd, err := dialIn(d.ns, dumpSocket)
		if err != nil {
			return fmt.Errorf("ctnl: reopen the dump socket: %w", err)
		}
		if d.fd >= 0 {
			unix.Close(d.fd)
		}
		d.fd, d.broken = fd, false
	}
	for d.active {
		if _, _, err := d.Next(nil, nil); err != nil {
			break
		}
	}
	d.seq++
	var req [nlmsgHdrLen + nfgenmsgLen]byte
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], nfnlSubsysCTNetlink<<8|ipctnlMsgCTGet)
	binary.NativeEndian.PutUint16(req[6:], nlmFRequest|nlmFDump)
	binary.NativeEndian.PutUint32(req[8:], d.seq)
	// nfgenmsg: family AF_UNSPEC (every family), version 0, res_id 0.
	if _, err := unix.Write(d.fd, req[:]); err != nil {
		d.fail()
		return fmt.Errorf("ctnl: dump request: %w", err)
	}
	d.active = true
	return nil
}

// Next reads the next datagram of the dump and appends its flows to fs.
// done reports that the dump is complete (fs then holds the last flows, if
// any). rejected counts messages ParseEvent refused, by reason; they are
// skipped. An error ends the dump: its flows so far are not the table.
func (d *Dumper) Next(fs []ctwire.Flow, rejected *[NumEventReasons]uint64) (_ []ctwire.Flow, done bool, err error) {
	if !d.active {
		return fs, true, errors.New("ctnl: dump not started")
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			d.fail()
			return fs, true, fmt.Errorf("ctnl: dump receive: %w", err)
		}
		var mine bool
		fs, mine, done, err = parseDumpDatagram(d.buf[:n], d.seq, fs, rejected)
		switch {
		case err != nil:
			d.fail()
			return fs, true, err
		case done:
			d.active = false
			return fs, true, nil
		case mine:
			return fs, false, nil
		}
		// Not ours (nothing else is sent on this socket): read on.
	}
}

// parseDumpDatagram reads one datagram of the answer to the dump request
// with sequence number seq. The flows of its messages are appended to fs
// (a message ParseEvent refuses is skipped and counted in rejected by
// reason). mine reports a message of this dump; messages with another
// sequence number are skipped. done reports the control message that ends
// the dump: NLMSG_DONE, whose payload is the dump's status (a negative
// errno: the kernel cut it short, ENOMEM say, and it is not the whole
// table), or NLMSG_ERROR (the request failed, or an acknowledgement that
// a dump never sends); both but a zero status are errors, as is a message
// whose length runs outside the datagram. Nothing after the end is read.
func parseDumpDatagram(p []byte, seq uint32, fs []ctwire.Flow, rejected *[NumEventReasons]uint64) (_ []ctwire.Flow, mine, done bool, err error) {
	for len(p) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(p))
		if l < nlmsgHdrLen || l > len(p) {
			return fs, mine, true, errors.New("ctnl: dump receive: malformed netlink message")
		}
		typ := binary.NativeEndian.Uint16(p[4:])
		if binary.NativeEndian.Uint32(p[8:]) == seq {
			mine = true
			switch typ {
			case nlmsgDone:
				if l >= nlmsgHdrLen+4 {
					if code := int32(binary.NativeEndian.Uint32(p[nlmsgHdrLen:])); code < 0 {
						return fs, true, true, fmt.Errorf("ctnl: dump ended early: %w", unix.Errno(-code))
					}
				}
				return fs, true, true, nil
			case nlmsgError:
				if l >= nlmsgHdrLen+4 {
					if code := int32(binary.NativeEndian.Uint32(p[nlmsgHdrLen:])); code != 0 {
						return fs, true, true, fmt.Errorf("ctnl: dump: %w", unix.Errno(-code))
					}
				}
				return fs, true, true, errors.New("ctnl: dump: unexpected acknowledgement")
			default:
				fs = append(fs, ctwire.Flow{})
				typ, err := ParseEvent(p[:l], &fs[len(fs)-1])
				if err != nil || typ == EventNone {
					fs = fs[:len(fs)-1]
					if err != nil && rejected != nil {
						rejected[EventReasonOf(err)]++
					}
				}
			}
		}
		p = p[min((l+3)&^3, len(p)):]
	}
	return fs, mine, false, nil
}
