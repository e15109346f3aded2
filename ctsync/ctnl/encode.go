package ctnl

import (
	"encoding/binary"
	"net/netip"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// Direct encoding of the ctnetlink requests ApplyBatch sends: the same
// bytes CreateAttrs / UpdateAttrs / DeleteAttrs produce through
// netfilter.MarshalNetlink, appended into one reused buffer without
// building attribute trees (the backup's hot path).
//
// A message is
//
//	nlmsghdr   len u32, type u16 = NFNL_SUBSYS_CTNETLINK<<8 | msg,
//	           flags u16, seq u32, pid u32 (0)        native byte order
//	nfgenmsg   family u8, version u8 (0), res_id u16 (0)
//	attributes nla_len u16, nla_type u16 (native; NLA_F_NESTED 0x8000 on
//	           nests), payload in network byte order, padded to 4 bytes
//
// with nla_len covering header and unpadded payload (for a nest, its
// padded children).

const (
	nfnlSubsysCTNetlink = 1
	nlmFRequest         = 0x1
	nlmFAck             = 0x4
	nlmFExcl            = 0x200
	nlmFCreate          = 0x400
	nlaFNested          = 0x8000
	nfgenmsgLen         = 4
	afInet              = 2
	afInet6             = 10
)

// appendMsgHeader starts a message; finishMsg fills in its length.
func appendMsgHeader(b []byte, msgType uint8, flags uint16, fam uint8, seq uint32) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, nfnlSubsysCTNetlink<<8|uint16(msgType))
	b = binary.NativeEndian.AppendUint16(b, nlmFRequest|nlmFAck|flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, fam, 0, 0, 0)
}

func finishMsg(b []byte, start int) []byte {
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func appendAttrHeader(b []byte, typ uint16, payload int) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+payload))
	return binary.NativeEndian.AppendUint16(b, typ)
}

func appendU8Attr(b []byte, typ uint16, v uint8) []byte {
	return append(appendAttrHeader(b, typ, 1), v, 0, 0, 0)
}

func appendU16Attr(b []byte, typ uint16, v uint16) []byte {
	b = binary.BigEndian.AppendUint16(appendAttrHeader(b, typ, 2), v)
	return append(b, 0, 0)
}

func appendU32Attr(b []byte, typ uint16, v uint32) []byte {
	return binary.BigEndian.AppendUint32(appendAttrHeader(b, typ, 4), v)
}

// appendAddrAttr writes a's bytes as AsSlice would: 4 for IPv4, 16 for
// IPv6 (including v4-mapped), none for the zero Addr.
func appendAddrAttr(b []byte, typ uint16, a netip.Addr) []byte {
	switch {
	case a.Is4():
		a4 := a.As4()
		return append(appendAttrHeader(b, typ, 4), a4[:]...)
	case a.IsValid():
		a16 := a.As16()
		return append(appendAttrHeader(b, typ, 16), a16[:]...)
	}
	return appendAttrHeader(b, typ, 0)
}

// beginNest writes a nest header whose length endNest fills in.
func beginNest(b []byte, typ uint16) ([]byte, int) {
	return appendAttrHeader(b, typ|nlaFNested, 0), len(b)
}

func endNest(b []byte, start int) []byte {
	binary.NativeEndian.PutUint16(b[start:], uint16(len(b)-start))
	return b
}

func appendTuple(b []byte, typ uint16, proto uint8, t ctwire.Tuple) []byte {
	b, tup := beginNest(b, typ)
	b, ip := beginNest(b, ctaTupleIP)
	if t.Src.Is4() {
		b = appendAddrAttr(b, ctaIPv4Src, t.Src)
		b = appendAddrAttr(b, ctaIPv4Dst, t.Dst)
	} else {
		b = appendAddrAttr(b, ctaIPv6Src, t.Src)
		b = appendAddrAttr(b, ctaIPv6Dst, t.Dst)
	}
	b = endNest(b, ip)
	b, pr := beginNest(b, ctaTupleProto)
	b = appendU8Attr(b, ctaProtoNum, proto)
	switch proto {
	case ipProtoICMP:
		b = appendU16Attr(b, ctaProtoICMPID, t.SrcPort)
		b = appendU8Attr(b, ctaProtoICMPType, byte(t.DstPort>>8))
		b = appendU8Attr(b, ctaProtoICMPCode, byte(t.DstPort))
	case ipProtoICMPv6:
		b = appendU16Attr(b, ctaProtoICMP6ID, t.SrcPort)
		b = appendU8Attr(b, ctaProtoICMP6Typ, byte(t.DstPort>>8))
		b = appendU8Attr(b, ctaProtoICMP6Cod, byte(t.DstPort))
	default:
		b = appendU16Attr(b, ctaProtoSrcPort, t.SrcPort)
		b = appendU16Attr(b, ctaProtoDstPort, t.DstPort)
	}
	b = endNest(b, pr)
	return endNest(b, tup)
}

func appendNAT(b []byte, typ uint16, a netip.Addr, port uint16, withPort bool) []byte {
	minT, maxT := uint16(ctaNATV4MinIP), uint16(ctaNATV4MaxIP)
	if !a.Is4() {
		minT, maxT = ctaNATV6MinIP, ctaNATV6MaxIP
	}
	b, n := beginNest(b, typ)
	b = appendAddrAttr(b, minT, a)
	b = appendAddrAttr(b, maxT, a)
	if withPort {
		var p int
		b, p = beginNest(b, ctaNATProto)
		b = appendU16Attr(b, ctaProtoNATPortMin, port)
		b = appendU16Attr(b, ctaProtoNATPortMax, port)
		b = endNest(b, p)
	}
	return endNest(b, n)
}

func appendTCP(b []byte, t ctwire.TCPInfo) []byte {
	state := t.State
	if state >= maxTCPConntrackStates {
		state = 3 // ESTABLISHED; the kernel rejects unknown states
	}
	b, pi := beginNest(b, ctaProtoInfo)
	b, tcp := beginNest(b, ctaProtoInfoTCP)
	b = appendU8Attr(b, ctaTCPState, state)
	b = appendU8Attr(b, ctaTCPWScaleOrig, t.WScaleOrig)
	b = appendU8Attr(b, ctaTCPWScaleReply, t.WScaleReply)
	b = append(appendAttrHeader(b, ctaTCPFlagsOrig, 2), t.FlagsOrig|tcpFlagBeLiberal, 0xff, 0, 0)
	b = append(appendAttrHeader(b, ctaTCPFlagsReply, 2), t.FlagsReply|tcpFlagBeLiberal, 0xff, 0, 0)
	b = endNest(b, tcp)
	return endNest(b, pi)
}

// appendCommon mirrors common.
func appendCommon(b []byte, f *ctwire.Flow, confirmed, create bool) []byte {
	timeout := f.Timeout
	if timeout == 0 {
		timeout = defaultInjectTimeout
	}
	status := f.Status & statusSettable
	if confirmed {
		status |= StatusConfirmed
	}
	b = appendU32Attr(b, ctaTimeout, timeout)
	b = appendU32Attr(b, ctaStatus, status)
	b = appendU32Attr(b, ctaMark, f.Mark)
	if f.Zone != 0 {
		b = appendU16Attr(b, ctaZone, f.Zone)
	}
	if f.Proto == ipProtoTCP && (f.HasTCP || create) {
		t := f.TCP
		if !f.HasTCP {
			t = ctwire.TCPInfo{State: tcpStateSynSent}
			if f.Status&StatusSeenReply != 0 {
				t.State = tcpStateEstablished
			}
		}
		b = appendTCP(b, t)
	}
	if f.HasLabels {
		b = append(appendAttrHeader(b, ctaLabels, labelsLen), f.Labels[:]...)
	}
	return b
}

func famOf(f *ctwire.Flow) uint8 {
	if f.Orig.Src.Is4() {
		return afInet
	}
	return afInet6
}

// AppendCreate appends the IPCTNL_MSG_CT_NEW request (NLM_F_CREATE|
// NLM_F_EXCL, acknowledged) that creates f with its NAT bindings: the
// message CreateAttrs describes.
func AppendCreate(b []byte, f *ctwire.Flow, confirmed bool, seq uint32) []byte {
	start := len(b)
	b = appendMsgHeader(b, ipctnlMsgCTNew, nlmFCreate|nlmFExcl, famOf(f), seq)
	n := NATOf(f)
	reply := f.Reply
	if n.SrcNAT || n.DstNAT {
		reply = f.Orig.Invert()
	}
	b = appendTuple(b, ctaTupleOrig, f.Proto, f.Orig)
	b = appendTuple(b, ctaTupleReply, f.Proto, reply)
	b = appendCommon(b, f, confirmed, true)
	icmp := isICMP(f.Proto)
	if n.DstNAT {
		b = appendNAT(b, ctaNATDst, n.DstAddr, n.DstPort, !icmp)
	}
	if n.SrcNAT {
		b = appendNAT(b, ctaNATSrc, n.SrcAddr, n.SrcPort, true)
	}
	return finishMsg(b, start)
}

// AppendUpdate appends the IPCTNL_MSG_CT_NEW request that changes the
// existing entry for f: the message UpdateAttrs describes.
func AppendUpdate(b []byte, f *ctwire.Flow, seq uint32) []byte {
	start := len(b)
	b = appendMsgHeader(b, ipctnlMsgCTNew, 0, famOf(f), seq)
	b = appendTuple(b, ctaTupleOrig, f.Proto, f.Orig)
	b = appendCommon(b, f, true, false)
	return finishMsg(b, start)
}

// AppendDelete appends the IPCTNL_MSG_CT_DELETE request for f's key: the
// message DeleteAttrs describes.
func AppendDelete(b []byte, f *ctwire.Flow, seq uint32) []byte {
	start := len(b)
	b = appendMsgHeader(b, ipctnlMsgCTDelete, 0, famOf(f), seq)
	b = appendTuple(b, ctaTupleOrig, f.Proto, f.Orig)
	if f.Zone != 0 {
		b = appendU16Attr(b, ctaZone, f.Zone)
	}
	return finishMsg(b, start)
}
