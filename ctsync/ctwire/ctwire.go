package ctwire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/netip"

	"github.com/muros/muros-had/kdf"
)

// Version is the protocol version this package speaks. Version 2 added the
// RESYNC nonce and the ECHO answer (version 1 had neither).
const Version = 2

// Sizes of the fixed parts of a datagram.
const (
	HeaderLen = 32
	MACLen    = 16
	// Overhead is what a datagram adds around its payload.
	Overhead = HeaderLen + MACLen
	// IPUDPOverhead is the IPv4 + UDP header size subtracted from the MTU.
	IPUDPOverhead = 28
	// IPv6UDPOverhead is the same over IPv6 (no extension headers).
	IPv6UDPOverhead = 48
	// MaxRecordLen is the largest record Marshal writes (IPv6, TCP, labels).
	MaxRecordLen = 28 + 4*16 + 8 + 16
	// NACKRangeLen is the size of one NACK range.
	NACKRangeLen = 8
	// HandshakeLen is the payload of a RESYNC or an ECHO.
	HandshakeLen = 24
)

// Type is the datagram type.
type Type uint8

// Datagram types.
const (
	TypeData      Type = 1
	TypeHeartbeat Type = 2
	TypeNACK      Type = 3
	TypeResync    Type = 4
	TypeEcho      Type = 5
)

func (t Type) String() string {
	switch t {
	case TypeData:
		return "data"
	case TypeHeartbeat:
		return "heartbeat"
	case TypeNACK:
		return "nack"
	case TypeResync:
		return "resync"
	case TypeEcho:
		return "echo"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Header flags.
const (
	FlagBulkBegin uint16 = 1 << 0
	FlagBulkEnd   uint16 = 1 << 1
	FlagBulk      uint16 = 1 << 2
	FlagRepair    uint16 = 1 << 3
	knownFlags           = FlagBulkBegin | FlagBulkEnd | FlagBulk | FlagRepair
)

// Header is the fixed datagram header.
type Header struct {
	Type   Type
	Flags  uint16
	Epoch  uint64
	Seq    uint32
	Aux    uint32
	Sent   int64
	Count  uint16
	Length uint16
}

// Op is what a record asks the receiver to do.
type Op uint8

// Record operations.
const (
	OpUpdate  Op = 1
	OpDestroy Op = 2
)

// Tuple is one direction of a flow. For ICMP, SrcPort carries the
// identifier and DstPort type<<8|code.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Invert returns the tuple seen from the other direction.
func (t Tuple) Invert() Tuple {
	return Tuple{Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort}
}

// TCPInfo is the TCP conntrack state (CTA_PROTOINFO_TCP).
type TCPInfo struct {
	State                   uint8
	WScaleOrig, WScaleReply uint8
	FlagsOrig, FlagsReply   uint8
}

// Key identifies a flow: original tuple, protocol and zone.
type Key struct {
	Orig  Tuple
	Proto uint8
	Zone  uint16
}

// RawTuple is a Tuple without pointers (netip.Addr holds one): the
// addresses in netip.Addr.As16's form, each with its own family, since
// ctnl unmaps them one by one (an IPv6 flow to ::ffff:10.0.0.1 has an
// IPv6 source and an IPv4 destination). Tuple and RawTuple convert both
// ways exactly for valid addresses without an IPv6 zone, which is what
// conntrack's tuples hold.
type RawTuple struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Src4, Dst4       bool
}

// Raw is t without pointers.
func (t Tuple) Raw() RawTuple {
	return RawTuple{Src: t.Src.As16(), Dst: t.Dst.As16(), SrcPort: t.SrcPort, DstPort: t.DstPort, Src4: t.Src.Is4(), Dst4: t.Dst.Is4()}
}

// Tuple is r as a Tuple.
func (r RawTuple) Tuple() Tuple {
	return Tuple{Src: addr16(r.Src, r.Src4), Dst: addr16(r.Dst, r.Dst4), SrcPort: r.SrcPort, DstPort: r.DstPort}
}

// Invert returns the tuple seen from the other direction.
func (r RawTuple) Invert() RawTuple {
	return RawTuple{Src: r.Dst, Dst: r.Src, SrcPort: r.DstPort, DstPort: r.SrcPort, Src4: r.Dst4, Dst4: r.Src4}
}

// addr16 is the address b (As16's form) holds, IPv4 if v4.
func addr16(b [16]byte, v4 bool) netip.Addr {
	if v4 {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b)
}

// ID is a Key as a fixed-size value without pointers: one memory hash
// and compare instead of one per field, and a map keyed by ID with
// pointer-free values is never scanned by the garbage collector. The hot
// tables of the sender and the injector use it.
type ID struct {
	Orig  RawTuple
	Proto uint8
	Zone  uint16
}

// ID returns k's ID.
func (k Key) ID() ID { return ID{Orig: k.Orig.Raw(), Proto: k.Proto, Zone: k.Zone} }

// Key returns the Key id was made from (exact as RawTuple says).
func (id ID) Key() Key { return Key{Orig: id.Orig.Tuple(), Proto: id.Proto, Zone: id.Zone} }

// ID returns the flow's ID (f.Key().ID()).
func (f *Flow) ID() ID { return ID{Orig: f.Orig.Raw(), Proto: f.Proto, Zone: f.Zone} }

// Flow is one flow record.
type Flow struct {
	Op        Op
	Proto     uint8
	Zone      uint16
	Status    uint32
	Timeout   uint32
	Mark      uint32
	Orig      Tuple
	Reply     Tuple
	HasTCP    bool
	TCP       TCPInfo
	HasLabels bool
	Labels    [16]byte
}

// Key returns the flow's identity.
func (f *Flow) Key() Key { return Key{Orig: f.Orig, Proto: f.Proto, Zone: f.Zone} }

// IPv6 reports whether the flow is IPv6.
func (f *Flow) IPv6() bool { return f.Orig.Src.Is6() && !f.Orig.Src.Is4In6() }

// Reason names why input was rejected; callers count by reason.
type Reason uint8

// Rejection reasons.
const (
	ReasonNone Reason = iota
	ReasonShort
	ReasonVersion
	ReasonType
	ReasonFlags
	ReasonLength
	ReasonMAC
	ReasonRecord
	ReasonFamily
	ReasonOp
	ReasonReplay
	// ReasonEpochStale: an epoch below the highest one accepted from the
	// peer (or below the incarnation the receiver follows).
	ReasonEpochStale
	// ReasonEpochUnverified: an incarnation that has not yet answered the
	// receiver's nonce (package ctrel).
	ReasonEpochUnverified
	numReasons
)

// NumReasons is the number of Reason values, for counter arrays.
const NumReasons = int(numReasons)

var reasonNames = [...]string{"none", "short", "version", "type", "flags", "length", "mac", "record", "family", "op", "replay", "epoch_stale", "epoch_unverified"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Error is a rejection with its reason.
type Error struct{ Reason Reason }

func (e *Error) Error() string { return "ctwire: rejected: " + e.Reason.String() }

// Preallocated errors keep the parse path allocation-free.
var (
	errShort   = &Error{ReasonShort}
	errVersion = &Error{ReasonVersion}
	errType    = &Error{ReasonType}
	errFlags   = &Error{ReasonFlags}
	errLength  = &Error{ReasonLength}
	errMAC     = &Error{ReasonMAC}
	errRecord  = &Error{ReasonRecord}
	errFamily  = &Error{ReasonFamily}
	errOp      = &Error{ReasonOp}
)

// ReasonOf extracts the Reason from an error returned by this package.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonNone
}

// AppendHeader appends the 32-byte header.
func AppendHeader(b []byte, h *Header) []byte {
	b = append(b, Version, byte(h.Type))
	b = binary.BigEndian.AppendUint16(b, h.Flags)
	b = binary.BigEndian.AppendUint64(b, h.Epoch)
	b = binary.BigEndian.AppendUint32(b, h.Seq)
	b = binary.BigEndian.AppendUint32(b, h.Aux)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Sent))
	b = binary.BigEndian.AppendUint16(b, h.Count)
	b = binary.BigEndian.AppendUint16(b, h.Length)
	return b
}

// ParseHeader decodes the header of an authenticated datagram body (the
// datagram without its MAC, as returned by Auth.Open) and returns the
// payload.
func ParseHeader(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, nil, errShort
	}
	if b[0] != Version {
		return h, nil, errVersion
	}
	h.Type = Type(b[1])
	if h.Type < TypeData || h.Type > TypeEcho {
		return h, nil, errType
	}
	h.Flags = binary.BigEndian.Uint16(b[2:])
	if h.Flags&^knownFlags != 0 {
		return h, nil, errFlags
	}
	h.Epoch = binary.BigEndian.Uint64(b[4:])
	h.Seq = binary.BigEndian.Uint32(b[12:])
	h.Aux = binary.BigEndian.Uint32(b[16:])
	h.Sent = int64(binary.BigEndian.Uint64(b[20:]))
	h.Count = binary.BigEndian.Uint16(b[28:])
	h.Length = binary.BigEndian.Uint16(b[30:])
	if int(h.Length) != len(b)-HeaderLen {
		return h, nil, errLength
	}
	p := b[HeaderLen:]
	switch h.Type {
	case TypeHeartbeat:
		if h.Count != 0 || h.Length != 0 {
			return h, nil, errLength
		}
	case TypeResync, TypeEcho:
		if h.Count != 0 || h.Length != HandshakeLen {
			return h, nil, errLength
		}
	case TypeNACK:
		if int(h.Count)*NACKRangeLen != len(p) {
			return h, nil, errLength
		}
	}
	return h, p, nil
}

// SetPayload patches count and length into a datagram built with
// AppendHeader (b starts at the header) once the payload has been appended.
func SetPayload(b []byte, count int) {
	binary.BigEndian.PutUint16(b[28:], uint16(count))
	binary.BigEndian.PutUint16(b[30:], uint16(len(b)-HeaderLen))
}

// RecordLen is the encoded size of f.
func RecordLen(f *Flow) int {
	a := 4
	if f.IPv6() {
		a = 16
	}
	n := 28 + 4*a
	if f.HasTCP {
		n += 8
	}
	if f.HasLabels {
		n += 16
	}
	return n
}

func appendAddr(b []byte, a netip.Addr, v6 bool) []byte {
	if v6 {
		s := a.As16()
		return append(b, s[:]...)
	}
	if !a.Is4() {
		return append(b, 0, 0, 0, 0)
	}
	s := a.As4()
	return append(b, s[:]...)
}

// AppendFlow appends f's record. Addresses of the wrong family are written
// as zeros of the record's family (the flow's orig source decides it).
func AppendFlow(b []byte, f *Flow) []byte {
	v6 := f.IPv6()
	b = binary.BigEndian.AppendUint16(b, uint16(RecordLen(f)))
	fam := byte(4)
	if v6 {
		fam = 6
	}
	var present byte
	if f.HasTCP {
		present |= 1
	}
	if f.HasLabels {
		present |= 2
	}
	b = append(b, byte(f.Op), fam, f.Proto, present)
	b = binary.BigEndian.AppendUint16(b, f.Zone)
	b = binary.BigEndian.AppendUint32(b, f.Status)
	b = binary.BigEndian.AppendUint32(b, f.Timeout)
	b = binary.BigEndian.AppendUint32(b, f.Mark)
	for _, t := range [2]*Tuple{&f.Orig, &f.Reply} {
		b = appendAddr(b, t.Src, v6)
		b = appendAddr(b, t.Dst, v6)
		b = binary.BigEndian.AppendUint16(b, t.SrcPort)
		b = binary.BigEndian.AppendUint16(b, t.DstPort)
	}
	if f.HasTCP {
		b = append(b, f.TCP.State, f.TCP.WScaleOrig, f.TCP.WScaleReply, f.TCP.FlagsOrig, f.TCP.FlagsReply, 0, 0, 0)
	}
	if f.HasLabels {
		b = append(b, f.Labels[:]...)
	}
	return b
}

func parseAddr(b []byte, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte(b[:16]))
	}
	return netip.AddrFrom4([4]byte(b[:4]))
}

// ParseFlow decodes the record at the start of b into f and returns the
// number of bytes it occupies.
func ParseFlow(b []byte, f *Flow) (int, error) {
	if len(b) < 2 {
		return 0, errShort
	}
	n := int(binary.BigEndian.Uint16(b))
	if n < 20 || n > len(b) {
		return 0, errRecord
	}
	r := b[:n]
	f.Op = Op(r[2])
	if f.Op != OpUpdate && f.Op != OpDestroy {
		return 0, errOp
	}
	var a int
	switch r[3] {
	case 4:
		a = 4
	case 6:
		a = 16
	default:
		return 0, errFamily
	}
	f.Proto = r[4]
	present := r[5]
	if present&^3 != 0 {
		return 0, errRecord
	}
	f.HasTCP = present&1 != 0
	f.HasLabels = present&2 != 0
	need := 28 + 4*a
	if f.HasTCP {
		need += 8
	}
	if f.HasLabels {
		need += 16
	}
	if n < need {
		return 0, errRecord
	}
	v6 := a == 16
	f.Zone = binary.BigEndian.Uint16(r[6:])
	f.Status = binary.BigEndian.Uint32(r[8:])
	f.Timeout = binary.BigEndian.Uint32(r[12:])
	f.Mark = binary.BigEndian.Uint32(r[16:])
	off := 20
	for _, t := range [2]*Tuple{&f.Orig, &f.Reply} {
		t.Src = parseAddr(r[off:], v6)
		t.Dst = parseAddr(r[off+a:], v6)
		t.SrcPort = binary.BigEndian.Uint16(r[off+2*a:])
		t.DstPort = binary.BigEndian.Uint16(r[off+2*a+2:])
		off += 2*a + 4
	}
	f.TCP = TCPInfo{}
	if f.HasTCP {
		t := r[off : off+8]
		f.TCP = TCPInfo{State: t[0], WScaleOrig: t[1], WScaleReply: t[2], FlagsOrig: t[3], FlagsReply: t[4]}
		off += 8
	}
	f.Labels = [16]byte{}
	if f.HasLabels {
		copy(f.Labels[:], r[off:off+16])
	}
	return n, nil
}

// Records iterates over the flow records of a DATA payload without
// allocating: for it.Next(&f) { ... }; then check it.Err().
type Records struct {
	b    []byte
	left int
	err  error
}

// NewRecords returns an iterator over count records in payload.
func NewRecords(payload []byte, count uint16) Records {
	return Records{b: payload, left: int(count)}
}

// Next decodes the next record into f.
func (it *Records) Next(f *Flow) bool {
	if it.err != nil {
		return false
	}
	if it.left == 0 {
		if len(it.b) != 0 {
			it.err = errLength
		}
		return false
	}
	n, err := ParseFlow(it.b, f)
	if err != nil {
		it.err = err
		return false
	}
	it.b = it.b[n:]
	it.left--
	return true
}

// Err is the first decoding error, if any.
func (it *Records) Err() error { return it.err }

// Range is an inclusive range of sequence numbers.
type Range struct{ First, Last uint32 }

// AppendRange appends one NACK range.
func AppendRange(b []byte, r Range) []byte {
	b = binary.BigEndian.AppendUint32(b, r.First)
	return binary.BigEndian.AppendUint32(b, r.Last)
}

// RangeAt decodes the i-th range of a NACK payload (validated by
// ParseHeader).
func RangeAt(payload []byte, i int) Range {
	p := payload[i*NACKRangeLen:]
	return Range{First: binary.BigEndian.Uint32(p), Last: binary.BigEndian.Uint32(p[4:])}
}

// Handshake is the payload of a RESYNC (the backup's request) and of the
// ECHO that answers it.
type Handshake struct {
	// Nonce: RESYNC, chosen at random by the requester; ECHO, the nonce of
	// the RESYNC it answers.
	Nonce [16]byte
	// Floor is the highest epoch the writer has accepted from the reader's
	// node (0: none). The reader's next epochs start above it.
	Floor uint64
}

// AppendHandshake appends a RESYNC or ECHO payload; SetPayload(b, 0)
// completes the datagram.
func AppendHandshake(b []byte, hs *Handshake) []byte {
	b = append(b, hs.Nonce[:]...)
	return binary.BigEndian.AppendUint64(b, hs.Floor)
}

// ParseHandshake decodes the payload of a RESYNC or ECHO (as returned by
// ParseHeader, which checked its length).
func ParseHandshake(p []byte) (Handshake, error) {
	var hs Handshake
	if len(p) != HandshakeLen {
		return hs, errLength
	}
	copy(hs.Nonce[:], p)
	hs.Floor = binary.BigEndian.Uint64(p[16:])
	return hs, nil
}

// Key info labels: one per purpose and key version, so the sync key
// differs from the VRRP AH key and from every other key derived from the
// cluster password.
const (
	keyInfo   = "muros-had ctsync hmac-sha256-128 v2"
	keyInfoV1 = "muros-had ctsync hmac-sha256-128 v1"
)

// KeyFrom is the 32-byte sync MAC key of protocol version 2:
// HKDF-Expand-SHA-256 of the Argon2id master secret (package kdf), info
// "muros-had ctsync hmac-sha256-128 v2".
func KeyFrom(m kdf.Master) ([]byte, error) {
	k, err := m.Key(keyInfo)
	if err != nil {
		return nil, fmt.Errorf("ctwire: %w", err)
	}
	return k, nil
}

// DeriveKey is KeyFrom(kdf.Derive(password)). It stretches the password
// (about a quarter of a second, 64 MiB): a process that also needs other
// keys derives the master once and calls KeyFrom.
func DeriveKey(password []byte) []byte {
	m, err := kdf.Derive(string(password))
	if err != nil {
		panic("ctwire: " + err.Error()) // only for an empty password, refused by every caller
	}
	k, err := KeyFrom(m)
	if err != nil {
		panic(err.Error()) // m is derived
	}
	return k
}

// LegacyKey is the sync key of protocol version 1 (HKDF-SHA-256 of the
// password, salt "muros-had", info "muros-had ctsync hmac-sha256-128 v1",
// no stretching). Version 2 never sends with it; Auth.WithLegacy uses it
// to tell a version-1 node's authentic datagrams from forged ones.
func LegacyKey(password []byte) []byte {
	k, err := kdf.Legacy(string(password), keyInfoV1)
	if err != nil {
		panic("ctwire: " + err.Error()) // hkdf fails only for outputs over 255 blocks
	}
	return k
}

// Auth appends and checks datagram MACs. It is not safe for concurrent use:
// give each goroutine its own.
type Auth struct {
	mac    hash.Hash
	legacy hash.Hash // version-1 key (WithLegacy), receive diagnostics only
	sum    [sha256.Size]byte
}

// NewAuth returns an Auth keyed with key (from KeyFrom or DeriveKey).
func NewAuth(key []byte) *Auth {
	return &Auth{mac: hmac.New(sha256.New, key)}
}

// WithLegacy makes Open report a datagram of protocol version 1 that is
// authentic under the version-1 key (LegacyKey) as ReasonVersion, as
// before the keys changed with the protocol, instead of ReasonMAC: a
// not-yet-upgraded peer is not a forger. Nothing it sends is accepted.
func (a *Auth) WithLegacy(key []byte) *Auth {
	a.legacy = hmac.New(sha256.New, key)
	return a
}

func (a *Auth) compute(body []byte) []byte {
	a.mac.Reset()
	a.mac.Write(body)
	return a.mac.Sum(a.sum[:0])[:MACLen]
}

// Seal appends the MAC over the whole of b (header and payload) to b.
func (a *Auth) Seal(b []byte) []byte {
	return append(b, a.compute(b)...)
}

// Open checks the MAC at the end of a received datagram and returns the
// authenticated body (header and payload).
func (a *Auth) Open(d []byte) ([]byte, error) {
	if len(d) < Overhead {
		return nil, errShort
	}
	body := d[:len(d)-MACLen]
	if !hmac.Equal(a.compute(body), d[len(d)-MACLen:]) {
		if a.legacy != nil && body[0] == 1 {
			a.legacy.Reset()
			a.legacy.Write(body)
			if hmac.Equal(a.legacy.Sum(a.sum[:0])[:MACLen], d[len(d)-MACLen:]) {
				return nil, errVersion
			}
		}
		return nil, errMAC
	}
	return body, nil
}
