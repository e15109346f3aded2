package liveness

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"time"
)

// Size is the length of every message.
const Size = 96

// Version is the protocol version this package speaks.
const Version = 1

// KeyLabel is the HKDF info label of the message key (package kdf).
const KeyLabel = "muros-had liveness hmac-sha256-128 v1"

// KeyLen is the length of the HMAC key.
const KeyLen = 32

const (
	vridOffset = 48
	macOffset  = 80
	macLen     = 16
)

// Type is a message type.
type Type uint8

// Message types.
const (
	TypeHeartbeat Type = iota + 1
	TypeProbe
	TypeReply
	TypeLeaving
)

var typeNames = [...]string{"", "heartbeat", "probe", "reply", "leaving"}

func (t Type) String() string {
	if t > 0 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Path names one of the paths between the two nodes.
type Path uint8

// The paths.
const (
	PathSync Path = iota + 1 // the sync link (multicast, TTL 1)
	PathPeer                 // unicast to the peer's address off the sync link
)

// NumPaths is the number of paths (indexes 1..NumPaths).
const NumPaths = 2

var pathNames = [...]string{"", "sync", "peer"}

func (p Path) String() string {
	if p > 0 && int(p) < len(pathNames) {
		return pathNames[p]
	}
	return fmt.Sprintf("Path(%d)", uint8(p))
}

// Role is the sender's role in the pair.
type Role uint8

// Roles, as the VRRP states of the sender's sync group.
const (
	RoleInit Role = iota + 1
	RoleBackup
	RoleMaster
	RoleFault
)

var roleNames = [...]string{"", "INIT", "BACKUP", "MASTER", "FAULT"}

func (r Role) String() string {
	if r > 0 && int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// FlagSyncCarrier says the sender's sync link has carrier. It is the only
// flag this release reads. A message may carry others, from a later
// release: they are accepted and ignored, not refused (the message is
// authentic; refusing it would make every new flag break a rolling
// upgrade, as a new reserved byte would), so a later release can
// announce a feature with a flag and tell an earlier peer by its
// absence in the peer's messages.
const FlagSyncCarrier uint8 = 1 << 0

// Message is one decoded message.
type Message struct {
	Type     Type
	Path     Path
	Role     Role
	Priority uint8
	Flags    uint8
	Epoch    uint64
	Seq      uint64
	// EchoEpoch and EchoSeq are the newest message the sender has heard
	// from the receiver (zero: none yet).
	EchoEpoch uint64
	EchoSeq   uint64
	// Interval is the sender's heartbeat period on this path.
	Interval time.Duration
	// VRIDs are the VRRP instances the sender runs (bit v of byte v/8,
	// most significant first): its role is theirs. A VRID the peer does
	// not run is not held by its liveness (a rolling reload adding a VIP).
	VRIDs VRIDSet
}

// VRIDSet is a set of VRIDs (0..255) as a bitmap.
type VRIDSet [32]byte

// Add adds v.
func (s *VRIDSet) Add(v uint8) { s[v/8] |= 0x80 >> (v % 8) }

// Has reports whether v is in the set.
func (s VRIDSet) Has(v uint8) bool { return s[v/8]&(0x80>>(v%8)) != 0 }

// Reason is why a message was refused; it doubles as a metric label.
type Reason string

// Refusal reasons.
const (
	ReasonShort     Reason = "short"      // not Size bytes
	ReasonVersion   Reason = "version"    // another protocol version
	ReasonMAC       Reason = "mac"        // authentication failed
	ReasonMalformed Reason = "malformed"  // unknown type, path or role, reserved bytes set, zero epoch or seq
	ReasonWrongPath Reason = "wrong_path" // sent on one path, received on another
	ReasonSelf      Reason = "self"       // our own message looped back
	ReasonReplay    Reason = "replay"     // not newer than the newest accepted of its epoch
	// ReasonUnfresh: an epoch not yet adopted and an echo that proves
	// nothing (a peer that just started, or a recording): answered, not
	// believed.
	ReasonUnfresh Reason = "unfresh"
	// ReasonLeft: a message of an incarnation that said LEAVING.
	ReasonLeft Reason = "left"
	// ReasonSource: a message on the peer path from another address than
	// the peer's.
	ReasonSource Reason = "source"
)

// Reasons lists every refusal reason (metric label values).
var Reasons = []Reason{ReasonShort, ReasonVersion, ReasonMAC, ReasonMalformed, ReasonWrongPath, ReasonSelf, ReasonReplay, ReasonUnfresh, ReasonLeft, ReasonSource}

// Error is a refused message with its reason.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "liveness: " + string(e.Reason)
	}
	return "liveness: " + string(e.Reason) + ": " + e.Detail
}

// ReasonOf returns the refusal reason of err ("" if it is none).
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Codec authenticates and encodes messages with one key. It keeps an HMAC
// state and a scratch buffer, so Append and Parse do not allocate; a Codec
// is not safe for concurrent use (give each goroutine its own).
type Codec struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewCodec returns a codec keyed with key (KeyLen bytes).
func NewCodec(key []byte) (*Codec, error) {
	if len(key) != KeyLen {
		return nil, fmt.Errorf("liveness: key is %d bytes, want %d", len(key), KeyLen)
	}
	return &Codec{mac: hmac.New(sha256.New, key)}, nil
}

// Append appends m, authenticated, to dst.
func (c *Codec) Append(dst []byte, m Message) []byte {
	start := len(dst)
	dst = append(dst, Version, byte(m.Type), byte(m.Path), byte(m.Role), m.Priority, m.Flags, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, m.Epoch)
	dst = binary.BigEndian.AppendUint64(dst, m.Seq)
	dst = binary.BigEndian.AppendUint64(dst, m.EchoEpoch)
	dst = binary.BigEndian.AppendUint64(dst, m.EchoSeq)
	us := m.Interval / time.Microsecond
	if us < 0 {
		us = 0
	}
	if us > 1<<32-1 {
		us = 1<<32 - 1
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(us))
	dst = binary.BigEndian.AppendUint32(dst, 0)
	dst = append(dst, m.VRIDs[:]...)
	return append(dst, c.tag(dst[start:start+macOffset])...)
}

func (c *Codec) tag(b []byte) []byte {
	c.mac.Reset()
	c.mac.Write(b)
	return c.mac.Sum(c.sum[:0])[:macLen]
}

// Parse checks b's length, version and MAC, then its fields, and returns
// the message. The MAC is checked before any field is trusted.
func (c *Codec) Parse(b []byte) (Message, error) {
	if len(b) != Size {
		return Message{}, &Error{Reason: ReasonShort, Detail: fmt.Sprintf("%d bytes", len(b))}
	}
	if b[0] != Version {
		return Message{}, &Error{Reason: ReasonVersion, Detail: fmt.Sprintf("version %d", b[0])}
	}
	if !hmac.Equal(c.tag(b[:macOffset]), b[macOffset:]) {
		return Message{}, &Error{Reason: ReasonMAC}
	}
	return decodeFields(b)
}

// decodeFields decodes an authenticated message's fields.
func decodeFields(b []byte) (Message, error) {
	m := Message{
		Type:      Type(b[1]),
		Path:      Path(b[2]),
		Role:      Role(b[3]),
		Priority:  b[4],
		Flags:     b[5],
		Epoch:     binary.BigEndian.Uint64(b[8:]),
		Seq:       binary.BigEndian.Uint64(b[16:]),
		EchoEpoch: binary.BigEndian.Uint64(b[24:]),
		EchoSeq:   binary.BigEndian.Uint64(b[32:]),
		Interval:  time.Duration(binary.BigEndian.Uint32(b[40:])) * time.Microsecond,
	}
	copy(m.VRIDs[:], b[vridOffset:macOffset])
	switch {
	case m.Type < TypeHeartbeat || m.Type > TypeLeaving:
		return Message{}, &Error{Reason: ReasonMalformed, Detail: fmt.Sprintf("type %d", b[1])}
	case m.Path < PathSync || m.Path > PathPeer:
		return Message{}, &Error{Reason: ReasonMalformed, Detail: fmt.Sprintf("path %d", b[2])}
	case m.Role < RoleInit || m.Role > RoleFault:
		return Message{}, &Error{Reason: ReasonMalformed, Detail: fmt.Sprintf("role %d", b[3])}
	case b[6] != 0 || b[7] != 0 || binary.BigEndian.Uint32(b[44:]) != 0:
		return Message{}, &Error{Reason: ReasonMalformed, Detail: "reserved bits set"}
	case m.Epoch == 0 || m.Seq == 0:
		return Message{}, &Error{Reason: ReasonMalformed, Detail: "zero epoch or seq"}
	case (m.EchoEpoch == 0) != (m.EchoSeq == 0):
		return Message{}, &Error{Reason: ReasonMalformed, Detail: "half an echo"}
	}
	return m, nil
}
