package ctnl

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// Event decoding for the master's hot path: one ctnetlink event message,
// read from the kernel by the listener, straight into a ctwire.Flow with
// no allocation. The result is what FromKernel makes of the same message
// decoded by ti-mo/conntrack (a differential fuzz test holds the two
// together). The message is
//
//	nlmsghdr  16 bytes: len u32, type u16 = subsystem<<8 | msg, flags u16,
//	          seq u32, pid u32 (native byte order)
//	nfgenmsg  4 bytes: family, version, res_id
//	attributes (see encode.go): CTA_TUPLE_ORIG / _REPLY {CTA_TUPLE_IP
//	          {CTA_IP_V4_SRC/DST (4 bytes) or V6 (16)}, CTA_TUPLE_PROTO
//	          {CTA_PROTO_NUM u8, ports u16 or ICMP id u16, type u8, code u8}},
//	          CTA_STATUS u32, CTA_TIMEOUT u32, CTA_MARK u32, CTA_ZONE u16,
//	          CTA_PROTOINFO {CTA_PROTOINFO_TCP {state u8, wscale u8 x2,
//	          flags {flags u8, mask u8} x2}}, CTA_LABELS 16 bytes; others
//	          are skipped.
//
// An IPCTNL_MSG_CT_NEW with NLM_F_CREATE or NLM_F_EXCL is a new entry,
// without them an update; IPCTNL_MSG_CT_DELETE a destroyed one.

// EventType is the kind of a conntrack event.
type EventType uint8

// Event types. EventNone is a message that is no flow event (expectation
// events): skipped, not an error.
const (
	EventNone EventType = iota
	EventNew
	EventUpdate
	EventDestroy
)

// EventReason is why an event message was rejected.
type EventReason uint8

// Rejection reasons.
const (
	EventOK        EventReason = iota
	EventShort                 // shorter than its headers
	EventBadLength             // a length field disagrees with the bytes
	EventBadType               // a ctnetlink message type that is no event
	EventBadAttr               // an attribute of the wrong size
	EventNoTuple               // no original tuple with both addresses
	NumEventReasons
)

func (r EventReason) String() string {
	switch r {
	case EventOK:
		return "ok"
	case EventShort:
		return "short"
	case EventBadLength:
		return "bad length"
	case EventBadType:
		return "bad type"
	case EventBadAttr:
		return "bad attribute"
	case EventNoTuple:
		return "no tuple"
	}
	return "unknown"
}

// EventError is a rejected event message.
type EventError struct{ Reason EventReason }

func (e *EventError) Error() string { return "ctnl: event rejected: " + e.Reason.String() }

// Preallocated so that rejecting costs no allocation either.
var (
	errEventShort     = &EventError{EventShort}
	errEventBadLength = &EventError{EventBadLength}
	errEventBadType   = &EventError{EventBadType}
	errEventBadAttr   = &EventError{EventBadAttr}
	errEventNoTuple   = &EventError{EventNoTuple}
)

// EventReasonOf returns the reason of an error from ParseEvent.
func EventReasonOf(err error) EventReason {
	var e *EventError
	if errors.As(err, &e) {
		return e.Reason
	}
	return EventBadAttr
}

const (
	nfnlSubsysCTNetlinkExp = 2
	ctaProtoInfoTCPNum     = ctaProtoInfoTCP
)

// attrIter walks one level of netlink attributes.
type attrIter struct {
	b    []byte
	typ  uint16
	data []byte
	err  bool
}

func (it *attrIter) next() bool {
	if len(it.b) == 0 || it.err {
		return false
	}
	if len(it.b) < 4 {
		it.err = true
		return false
	}
	l := int(binary.NativeEndian.Uint16(it.b))
	if l == 0 {
		// Tolerated like mdlayher/netlink does: no data, skip the header.
		l = 4
	}
	if l < 4 || l > len(it.b) {
		it.err = true
		return false
	}
	// Compared in the low byte, as ti-mo/conntrack (whose decoding the
	// differential fuzz test holds this one to) does: every ctnetlink
	// attribute type fits in it, and the flag bits are above it.
	it.typ = binary.NativeEndian.Uint16(it.b[2:]) & 0xff
	it.data = it.b[4:l]
	al := (l + 3) &^ 3
	it.b = it.b[min(al, len(it.b)):]
	return true
}

// kernelTuple is a tuple as the kernel sends it, before the ICMP fields
// are folded into the wire tuple's ports.
type kernelTuple struct {
	src, dst         netip.Addr
	proto            uint8
	sport, dport     uint16
	icmpID           uint16
	icmpType, icmpCo uint8
}

func (k *kernelTuple) wire() ctwire.Tuple {
	w := ctwire.Tuple{Src: k.src.Unmap(), Dst: k.dst.Unmap()}
	if isICMP(k.proto) {
		w.SrcPort, w.DstPort = k.icmpID, uint16(k.icmpType)<<8|uint16(k.icmpCo)
	} else {
		w.SrcPort, w.DstPort = k.sport, k.dport
	}
	return w
}

func parseAddrAttr(d []byte) (netip.Addr, bool) {
	switch len(d) {
	case 4:
		return netip.AddrFrom4([4]byte(d)), true
	case 16:
		return netip.AddrFrom16([16]byte(d)), true
	}
	return netip.Addr{}, false
}

func parseTuple(b []byte, t *kernelTuple) error {
	*t = kernelTuple{}
	it := attrIter{b: b}
	for it.next() {
		switch it.typ {
		case ctaTupleIP:
			t.src, t.dst = netip.Addr{}, netip.Addr{}
			ip := attrIter{b: it.data}
			for ip.next() {
				a, ok := parseAddrAttr(ip.data)
				if !ok {
					return errEventBadAttr
				}
				switch ip.typ {
				case ctaIPv4Src, ctaIPv6Src:
					t.src = a
				case ctaIPv4Dst, ctaIPv6Dst:
					t.dst = a
				}
			}
			if ip.err {
				return errEventBadLength
			}
		case ctaTupleProto:
			t.proto, t.sport, t.dport, t.icmpID, t.icmpType, t.icmpCo = 0, 0, 0, 0, 0, 0
			pr := attrIter{b: it.data}
			for pr.next() {
				var ok bool
				switch pr.typ {
				case ctaProtoNum:
					t.proto, ok = u8(pr.data)
				case ctaProtoSrcPort:
					t.sport, ok = u16(pr.data)
				case ctaProtoDstPort:
					t.dport, ok = u16(pr.data)
				case ctaProtoICMPID, ctaProtoICMP6ID:
					t.icmpID, ok = u16(pr.data)
				case ctaProtoICMPType, ctaProtoICMP6Typ:
					t.icmpType, ok = u8(pr.data)
				case ctaProtoICMPCode, ctaProtoICMP6Cod:
					t.icmpCo, ok = u8(pr.data)
				default:
					ok = true
				}
				if !ok {
					return errEventBadAttr
				}
			}
			if pr.err {
				return errEventBadLength
			}
		}
	}
	if it.err {
		return errEventBadLength
	}
	return nil
}

func u8(d []byte) (uint8, bool) {
	if len(d) != 1 {
		return 0, false
	}
	return d[0], true
}

func u16(d []byte) (uint16, bool) {
	if len(d) != 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(d), true
}

func u32(d []byte) (uint32, bool) {
	if len(d) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(d), true
}

func parseTCP(b []byte, t *ctwire.TCPInfo) error {
	it := attrIter{b: b}
	for it.next() {
		var ok bool
		switch it.typ {
		case ctaTCPState:
			t.State, ok = u8(it.data)
		case ctaTCPWScaleOrig:
			t.WScaleOrig, ok = u8(it.data)
		case ctaTCPWScaleReply:
			t.WScaleReply, ok = u8(it.data)
		case ctaTCPFlagsOrig, ctaTCPFlagsReply:
			// struct nf_ct_tcp_flags {flags, mask}: the flags byte.
			var v uint16
			v, ok = u16(it.data)
			if it.typ == ctaTCPFlagsOrig {
				t.FlagsOrig = uint8(v >> 8)
			} else {
				t.FlagsReply = uint8(v >> 8)
			}
		default:
			ok = true
		}
		if !ok {
			return errEventBadAttr
		}
	}
	if it.err {
		return errEventBadLength
	}
	return nil
}

// ParseEvent decodes one ctnetlink event message (from its nlmsghdr) into
// f as FromKernel would, and returns its kind. A message that is no flow
// event returns EventNone and no error. It does not allocate.
func ParseEvent(msg []byte, f *ctwire.Flow) (EventType, error) {
	if len(msg) < nlmsgHdrLen+nfgenmsgLen {
		return EventNone, errEventShort
	}
	if l := binary.NativeEndian.Uint32(msg); l < nlmsgHdrLen+nfgenmsgLen || int(l) > len(msg) {
		return EventNone, errEventBadLength
	}
	msg = msg[:binary.NativeEndian.Uint32(msg)]
	typ := binary.NativeEndian.Uint16(msg[4:])
	flags := binary.NativeEndian.Uint16(msg[6:])
	var et EventType
	switch typ >> 8 {
	case nfnlSubsysCTNetlink:
		switch uint8(typ) {
		case ipctnlMsgCTNew:
			et = EventUpdate
			if flags&(nlmFCreate|nlmFExcl) != 0 {
				et = EventNew
			}
		case ipctnlMsgCTDelete:
			et = EventDestroy
		default:
			return EventNone, errEventBadType
		}
	case nfnlSubsysCTNetlinkExp:
		return EventNone, nil
	default:
		return EventNone, errEventBadType
	}

	*f = ctwire.Flow{Op: ctwire.OpUpdate}
	var orig, reply kernelTuple
	var labels []byte
	it := attrIter{b: msg[nlmsgHdrLen+nfgenmsgLen:]}
	for it.next() {
		var ok bool
		switch it.typ {
		case ctaTupleOrig:
			if err := parseTuple(it.data, &orig); err != nil {
				return EventNone, err
			}
			ok = true
		case ctaTupleReply:
			if err := parseTuple(it.data, &reply); err != nil {
				return EventNone, err
			}
			ok = true
		case ctaStatus:
			f.Status, ok = u32(it.data)
		case ctaTimeout:
			f.Timeout, ok = u32(it.data)
		case ctaMark:
			f.Mark, ok = u32(it.data)
		case ctaZone:
			f.Zone, ok = u16(it.data)
		case ctaLabels:
			labels, ok = it.data, true
		case ctaProtoInfo:
			f.HasTCP, f.TCP = false, ctwire.TCPInfo{}
			pi := attrIter{b: it.data}
			for pi.next() {
				if pi.typ == ctaProtoInfoTCPNum {
					f.HasTCP = true
					if err := parseTCP(pi.data, &f.TCP); err != nil {
						return EventNone, err
					}
				}
			}
			ok = !pi.err
		default:
			ok = true
		}
		if !ok {
			return EventNone, errEventBadAttr
		}
	}
	if it.err {
		return EventNone, errEventBadLength
	}
	if !orig.src.IsValid() || !orig.dst.IsValid() {
		return EventNone, errEventNoTuple
	}
	f.Proto = orig.proto
	f.Orig = orig.wire()
	if reply.src.IsValid() {
		f.Reply = reply.wire()
	} else {
		f.Reply = f.Orig.Invert()
	}
	if len(labels) == labelsLen && [labelsLen]byte(labels) != [labelsLen]byte{} {
		f.HasLabels = true
		f.Labels = [labelsLen]byte(labels)
	}
	return et, nil
}
