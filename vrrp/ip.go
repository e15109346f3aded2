package vrrp

import (
	"encoding/binary"
	"net/netip"
)

// Header lengths.
const (
	IPv4HeaderLen = 20 // without options; what AppendIPv4 writes
	IPv6HeaderLen = 40
)

// IPv4Header is the part of an IPv4 header (RFC 791 section 3.1) VRRP needs.
type IPv4Header struct {
	TOS       uint8
	TotalLen  uint16 // header + payload, bytes
	ID        uint16
	FlagsFrag uint16 // 3 flag bits, 13 bits fragment offset
	TTL       uint8
	Protocol  uint8
	Checksum  uint16 // as received; AppendIPv4 computes its own
	Src, Dst  netip.Addr
	// HeaderLen is IHL*4 as received (options included). Options are
	// reachable as the bytes between 20 and HeaderLen of the parsed slice.
	HeaderLen int
}

const (
	ipv4FlagMF     = 0x2000
	ipv4OffsetMask = 0x1fff
)

// ParseIPv4 decodes the IPv4 header at the start of pkt and returns it with
// the payload (pkt cut to TotalLen: link-layer padding is dropped). It
// rejects fragments and a wrong header checksum.
func ParseIPv4(pkt []byte) (IPv4Header, []byte, error) {
	if len(pkt) < IPv4HeaderLen {
		return IPv4Header{}, nil, rejectGot(ReasonIPShort, len(pkt), IPv4HeaderLen)
	}
	if v := pkt[0] >> 4; v != 4 {
		return IPv4Header{}, nil, rejectGot(ReasonIPBadVersion, int(v), 4)
	}
	h := IPv4Header{
		HeaderLen: int(pkt[0]&0x0f) * 4,
		TOS:       pkt[1],
		TotalLen:  binary.BigEndian.Uint16(pkt[2:4]),
		ID:        binary.BigEndian.Uint16(pkt[4:6]),
		FlagsFrag: binary.BigEndian.Uint16(pkt[6:8]),
		TTL:       pkt[8],
		Protocol:  pkt[9],
		Checksum:  binary.BigEndian.Uint16(pkt[10:12]),
		Src:       netip.AddrFrom4([4]byte(pkt[12:16])),
		Dst:       netip.AddrFrom4([4]byte(pkt[16:20])),
	}
	if h.HeaderLen < IPv4HeaderLen || h.HeaderLen > len(pkt) {
		return IPv4Header{}, nil, rejectGot(ReasonIPBadHeaderLen, h.HeaderLen, -1)
	}
	if int(h.TotalLen) < h.HeaderLen || int(h.TotalLen) > len(pkt) {
		return IPv4Header{}, nil, rejectGot(ReasonIPBadTotalLen, int(h.TotalLen), len(pkt))
	}
	if h.FlagsFrag&(ipv4FlagMF|ipv4OffsetMask) != 0 {
		return IPv4Header{}, nil, reject(ReasonIPFragment)
	}
	if fold(sumWords(0, pkt[:h.HeaderLen])) != 0xffff {
		return IPv4Header{}, nil, reject(ReasonIPBadChecksum)
	}
	return h, pkt[h.HeaderLen:h.TotalLen], nil
}

// AppendIPv4 appends a 20-byte IPv4 header (no options) for a payload of
// payloadLen bytes, computing TotalLen and the header checksum. Src and Dst
// must be IPv4.
func AppendIPv4(b []byte, h *IPv4Header, payloadLen int) []byte {
	start := len(b)
	s, d := h.Src.As4(), h.Dst.As4()
	b = append(b,
		0x45, h.TOS, 0, 0,
		byte(h.ID>>8), byte(h.ID), byte(h.FlagsFrag>>8), byte(h.FlagsFrag),
		h.TTL, h.Protocol, 0, 0)
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	hdr := b[start:]
	binary.BigEndian.PutUint16(hdr[2:4], uint16(IPv4HeaderLen+payloadLen))
	binary.BigEndian.PutUint16(hdr[10:12], ^fold(sumWords(0, hdr)))
	return b
}

// IPv6Header is the fixed IPv6 header (RFC 8200 section 3).
type IPv6Header struct {
	TrafficClass uint8
	FlowLabel    uint32 // 20 bits
	PayloadLen   uint16
	NextHeader   uint8
	HopLimit     uint8
	Src, Dst     netip.Addr
}

// ParseIPv6 decodes the fixed IPv6 header at the start of pkt and returns it
// with the payload (cut to PayloadLen). Extension headers are not walked:
// the caller looks at NextHeader (VRRP or AH are the only ones expected).
func ParseIPv6(pkt []byte) (IPv6Header, []byte, error) {
	if len(pkt) < IPv6HeaderLen {
		return IPv6Header{}, nil, rejectGot(ReasonIPShort, len(pkt), IPv6HeaderLen)
	}
	if v := pkt[0] >> 4; v != 6 {
		return IPv6Header{}, nil, rejectGot(ReasonIPBadVersion, int(v), 6)
	}
	w := binary.BigEndian.Uint32(pkt[0:4])
	h := IPv6Header{
		TrafficClass: uint8(w >> 20),
		FlowLabel:    w & 0xfffff,
		PayloadLen:   binary.BigEndian.Uint16(pkt[4:6]),
		NextHeader:   pkt[6],
		HopLimit:     pkt[7],
		Src:          netip.AddrFrom16([16]byte(pkt[8:24])),
		Dst:          netip.AddrFrom16([16]byte(pkt[24:40])),
	}
	if int(h.PayloadLen) > len(pkt)-IPv6HeaderLen {
		return IPv6Header{}, nil, rejectGot(ReasonIPBadTotalLen, int(h.PayloadLen), len(pkt)-IPv6HeaderLen)
	}
	return h, pkt[IPv6HeaderLen : IPv6HeaderLen+int(h.PayloadLen)], nil
}

// AppendIPv6 appends a fixed IPv6 header for a payload of payloadLen bytes.
// Src and Dst must be IPv6.
func AppendIPv6(b []byte, h *IPv6Header, payloadLen int) []byte {
	w := uint32(6)<<28 | uint32(h.TrafficClass)<<20 | h.FlowLabel&0xfffff
	s, d := h.Src.As16(), h.Dst.As16()
	b = append(b, byte(w>>24), byte(w>>16), byte(w>>8), byte(w),
		byte(payloadLen>>8), byte(payloadLen), h.NextHeader, h.HopLimit)
	b = append(b, s[:]...)
	return append(b, d[:]...)
}
