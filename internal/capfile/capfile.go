// Package capfile reads packet capture files: the classic libpcap format
// (draft-ietf-opsawg-pcap) and pcapng (draft-ietf-opsawg-pcapng), as
// tcpdump, tshark and dumpcap write them, either one gzip-compressed
// (RFC 1952). It gives each packet's captured bytes and its link type;
// nothing else (timestamps, comments, statistics) is kept.
//
// Why not gopacket's pcapgo: it imports gopacket/layers, whose init fills
// tables of 65,536 entries per EtherType and PPP type. Linked into the
// daemon for `muros-had inspect`, that was resident in every node (a bare
// program importing layers: 2.9 MB more RSS; the daemon without it: 1.7
// MiB less on the master, 1.6 on the backup, medians of 3 runs,
// bench/README.md, session 9).
//
// Classic pcap, in the byte order of the magic number (either):
//
//	0       4     6     8          12         16        20      24
//	+-------+-----+-----+----------+----------+---------+-------+
//	| magic | maj | min | reserved | reserved | snaplen | link  |  file header
//	+-------+-----+-----+----------+----------+---------+-------+
//	magic a1b2c3d4 (µs timestamps) or a1b23c4d (ns); link: bits 0-15
//	the link type (16-25 reserved, 26 FCS present, 28-31 FCS length:
//	ignored)
//
//	0        4         8         12        16
//	+--------+---------+---------+---------+--------------------+
//	| ts sec | ts frac | caplen  | origlen | caplen bytes       |  per packet
//	+--------+---------+---------+---------+--------------------+
//
// pcapng, a sequence of blocks, each in its section's byte order (set by
// the section header block's byte-order magic 1a2b3c4d):
//
//	0      4      8                       len-4  len
//	+------+------+-------------------------+------+
//	| type | len  | body, padded to 4 bytes | len  |
//	+------+------+-------------------------+------+
//	0a0d0d0a  section header: byte-order magic, version, section
//	          length, options; it starts a new list of interfaces
//	00000001  interface description: link type [0:2], snaplen [4:8]
//	00000006  enhanced packet: interface [0:4], timestamp [4:12],
//	          caplen [12:16], origlen [16:20], data at 20
//	00000003  simple packet: origlen [0:4], data at 4 (interface 0,
//	          captured length min(origlen, its snaplen))
//	00000002  packet (obsolete): interface [0:2], drops [2:4],
//	          timestamp [4:12], caplen [12:16], origlen [16:20], data at 20
//	other     skipped
//
// A file is input from anywhere: every length is checked against what
// the block or file holds, and no packet or block above MaxBlock is
// allocated for.
package capfile

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// MaxBlock bounds a packet record or pcapng block: larger is refused as a
// damaged file rather than allocated (tcpdump's own limit is 256 KiB per
// packet; 16 MiB leaves room for pcapng blocks with options).
const MaxBlock = 16 << 20

// Link types this package names (LINKTYPE_ values, tcpdump.org).
const (
	LinkNull     uint16 = 0
	LinkEthernet uint16 = 1
	LinkRaw      uint16 = 101
	LinkLoop     uint16 = 108
	LinkLinuxSLL uint16 = 113
	LinkIPv4     uint16 = 228
	LinkIPv6     uint16 = 229
	LinkSLL2     uint16 = 276
	// LinkUnknown is the link type of a packet whose interface the file
	// never described (not a real LINKTYPE value).
	LinkUnknown uint16 = 0xffff
)

// ErrFormat wraps every complaint about the file's content.
var ErrFormat = errors.New("capfile: damaged or unknown capture file")

const (
	pcapMicro = 0xa1b2c3d4
	pcapNano  = 0xa1b23c4d
	ngSHB     = 0x0a0d0d0a
	ngBOM     = 0x1a2b3c4d
	ngIDB     = 1
	ngPB      = 2
	ngSPB     = 3
	ngEPB     = 6
)

// Reader reads the packets of one capture file.
type Reader struct {
	r     *bufio.Reader
	order binary.ByteOrder
	ng    bool
	// link is the classic file's link type; ifaces the current pcapng
	// section's interfaces: link type and snaplen.
	link   uint16
	ifaces []iface
	buf    []byte
	// hdr receives each record or block header: a local array passed to
	// the io.Reader would escape, one allocation per packet.
	hdr [16]byte
}

type iface struct {
	link    uint16
	snaplen uint32
}

// NewReader reads the file header (or the first section header) and
// returns a Reader positioned at the first packet.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{r: bufio.NewReader(r)}
	head, err := rd.r.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("%w: file header: %w", ErrFormat, eof(err))
	}
	if head[0] == 0x1f && head[1] == 0x8b { // gzip (RFC 1952), as tcpdump -z leaves it
		z, err := gzip.NewReader(rd.r)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrFormat, err)
		}
		rd.r = bufio.NewReader(gzipErrors{z})
		if head, err = rd.r.Peek(4); err != nil {
			return nil, fmt.Errorf("%w: file header: %w", ErrFormat, eof(err))
		}
	}
	if binary.BigEndian.Uint32(head) == ngSHB { // the same in either byte order
		rd.ng = true
		return rd, nil // the section header is read as a block
	}
	var h [24]byte
	if _, err := io.ReadFull(rd.r, h[:]); err != nil {
		return nil, fmt.Errorf("%w: file header: %w", ErrFormat, eof(err))
	}
	switch {
	case binary.LittleEndian.Uint32(h[:]) == pcapMicro, binary.LittleEndian.Uint32(h[:]) == pcapNano:
		rd.order = binary.LittleEndian
	case binary.BigEndian.Uint32(h[:]) == pcapMicro, binary.BigEndian.Uint32(h[:]) == pcapNano:
		rd.order = binary.BigEndian
	default:
		return nil, fmt.Errorf("%w: magic %08x is neither pcap nor pcapng", ErrFormat, binary.BigEndian.Uint32(h[:]))
	}
	if major := rd.order.Uint16(h[4:]); major != 2 {
		return nil, fmt.Errorf("%w: pcap version %d.%d", ErrFormat, major, rd.order.Uint16(h[6:]))
	}
	rd.link = uint16(rd.order.Uint32(h[20:]))
	return rd, nil
}

// Next returns the next packet's captured bytes and link type. The bytes
// are valid until the next call. At the end of the file: io.EOF.
func (rd *Reader) Next() (data []byte, link uint16, err error) {
	if rd.ng {
		return rd.nextBlock()
	}
	return rd.nextRecord()
}

func (rd *Reader) nextRecord() ([]byte, uint16, error) {
	h := rd.hdr[:16]
	if _, err := io.ReadFull(rd.r, h); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, io.EOF
		}
		return nil, 0, fmt.Errorf("%w: record header: %w", ErrFormat, eof(err))
	}
	caplen := rd.order.Uint32(h[8:])
	if caplen > MaxBlock {
		return nil, 0, fmt.Errorf("%w: captured length %d over %d", ErrFormat, caplen, MaxBlock)
	}
	b, err := rd.read(int(caplen))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: record: %w", ErrFormat, eof(err))
	}
	return b, rd.link, nil
}

// nextBlock reads pcapng blocks until one holds a packet.
func (rd *Reader) nextBlock() ([]byte, uint16, error) {
	for {
		h := rd.hdr[:8]
		if _, err := io.ReadFull(rd.r, h); err != nil {
			if errors.Is(err, io.EOF) && rd.order != nil {
				return nil, 0, io.EOF
			}
			return nil, 0, fmt.Errorf("%w: block header: %w", ErrFormat, eof(err))
		}
		if binary.BigEndian.Uint32(h[:]) == ngSHB {
			if err := rd.section([8]byte(h)); err != nil {
				return nil, 0, err
			}
			continue
		}
		if rd.order == nil {
			return nil, 0, fmt.Errorf("%w: pcapng without a section header", ErrFormat)
		}
		typ, total := rd.order.Uint32(h[:]), rd.order.Uint32(h[4:])
		body, err := rd.blockBody(total)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: block type %d: %w", ErrFormat, typ, err)
		}
		switch typ {
		case ngIDB:
			if len(body) < 8 {
				return nil, 0, fmt.Errorf("%w: interface description block of %d bytes", ErrFormat, len(body)+12)
			}
			rd.ifaces = append(rd.ifaces, iface{link: rd.order.Uint16(body), snaplen: rd.order.Uint32(body[4:])})
		case ngEPB, ngPB:
			return rd.packet(typ, body)
		case ngSPB:
			if len(body) < 4 {
				return nil, 0, fmt.Errorf("%w: simple packet block of %d bytes", ErrFormat, len(body)+12)
			}
			if len(rd.ifaces) == 0 {
				return nil, LinkUnknown, nil
			}
			n := uint64(rd.order.Uint32(body))
			if s := rd.ifaces[0].snaplen; s != 0 && uint64(s) < n {
				n = uint64(s)
			}
			if n > uint64(len(body)-4) {
				return nil, 0, fmt.Errorf("%w: simple packet of %d bytes in a %d-byte block", ErrFormat, n, len(body)+12)
			}
			return body[4 : 4+n], rd.ifaces[0].link, nil
		}
	}
}

// packet returns the data of an enhanced or obsolete packet block: the
// interface at [0:4] (enhanced) or [0:2] (obsolete), the captured length
// at [12:16], the data at 20.
func (rd *Reader) packet(typ uint32, body []byte) ([]byte, uint16, error) {
	kind := "enhanced"
	if typ == ngPB {
		kind = "obsolete"
	}
	if len(body) < 20 {
		return nil, 0, fmt.Errorf("%w: %s packet block of %d bytes", ErrFormat, kind, len(body)+12)
	}
	ifc := rd.order.Uint32(body)
	if typ == ngPB {
		ifc = uint32(rd.order.Uint16(body))
	}
	caplen := uint64(rd.order.Uint32(body[12:]))
	if caplen > uint64(len(body)-20) {
		return nil, 0, fmt.Errorf("%w: %s packet of %d bytes in a %d-byte block", ErrFormat, kind, caplen, len(body)+12)
	}
	link := LinkUnknown
	if uint64(ifc) < uint64(len(rd.ifaces)) {
		link = rd.ifaces[ifc].link
	}
	return body[20 : 20+int(caplen)], link, nil
}

// section reads a section header block whose 8 bytes h were read: it sets
// the byte order and forgets the previous section's interfaces.
func (rd *Reader) section(h [8]byte) error {
	bom, err := rd.r.Peek(4)
	if err != nil {
		return fmt.Errorf("%w: section header: %w", ErrFormat, eof(err))
	}
	switch {
	case binary.LittleEndian.Uint32(bom) == ngBOM:
		rd.order = binary.LittleEndian
	case binary.BigEndian.Uint32(bom) == ngBOM:
		rd.order = binary.BigEndian
	default:
		return fmt.Errorf("%w: section header byte-order magic %x", ErrFormat, bom)
	}
	body, err := rd.blockBody(rd.order.Uint32(h[4:]))
	if err != nil {
		return fmt.Errorf("%w: section header: %w", ErrFormat, err)
	}
	if len(body) < 16 {
		return fmt.Errorf("%w: section header of %d bytes", ErrFormat, len(body)+12)
	}
	if major := rd.order.Uint16(body[4:]); major != 1 {
		return fmt.Errorf("%w: pcapng version %d.%d", ErrFormat, major, rd.order.Uint16(body[6:]))
	}
	rd.ifaces = rd.ifaces[:0]
	return nil
}

// blockBody reads the rest of a block of total bytes whose 8-byte header
// was read, checks the trailing length, and returns the body.
func (rd *Reader) blockBody(total uint32) ([]byte, error) {
	if total < 12 || total%4 != 0 || total > MaxBlock {
		return nil, fmt.Errorf("length %d", total)
	}
	b, err := rd.read(int(total) - 8)
	if err != nil {
		return nil, eof(err)
	}
	body, trailer := b[:len(b)-4], rd.order.Uint32(b[len(b)-4:])
	if trailer != total {
		return nil, fmt.Errorf("length %d, trailing length %d", total, trailer)
	}
	return body, nil
}

// read reads n bytes into the reader's buffer, growing it as the bytes
// arrive: a length that a damaged file claims costs no allocation beyond
// what the file holds.
func (rd *Reader) read(n int) ([]byte, error) {
	b := rd.buf[:0]
	for len(b) < n {
		chunk := min(n-len(b), 64<<10)
		b = slices.Grow(b, chunk)
		m, err := io.ReadFull(rd.r, b[len(b):len(b)+chunk])
		b = b[:len(b)+m]
		if err != nil {
			rd.buf = b[:0]
			return nil, err
		}
	}
	rd.buf = b[:0]
	return b, nil
}

// gzipErrors marks the decompressor's errors (a corrupt stream, a wrong
// checksum) as the file's.
type gzipErrors struct{ r io.Reader }

func (g gzipErrors) Read(b []byte) (int, error) {
	n, err := g.r.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: gzip: %w", ErrFormat, err)
	}
	return n, err
}

// eof turns an end of file inside a header or block into the truncation
// it is.
func eof(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
