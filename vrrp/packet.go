package vrrp

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// IP protocol numbers this package speaks.
const (
	ProtocolVRRP = 112 // IANA "VRRP" (RFC 9568 section 5.1.1.4)
	ProtocolAH   = 51  // IPsec AH (RFC 4302)
	// TTL is the only TTL / hop limit a multicast advert may carry
	// (RFC 9568 section 5.1.1.3, RFC 3768 section 5.2.3).
	TTL = 255
)

// VRRPv2 authentication types (RFC 3768 section 5.3.6; types 1 and 2 were
// removed by RFC 3768 but keepalived still sends them).
const (
	AuthTypeNone   = 0
	AuthTypeSimple = 1 // 8-byte clear-text password in the auth data
	AuthTypeAH     = 2 // keepalived: advert wrapped in IPsec AH
)

// Family is the IP address family an advert is carried over.
type Family uint8

// Address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) addrLen() int {
	if f == IPv6 {
		return 16
	}
	return 4
}

// familyOf returns the family of a, or 0 when a is invalid. IPv4-mapped
// IPv6 addresses count as IPv6: the wire format never mixes them.
func familyOf(a netip.Addr) Family {
	switch {
	case a.Is4():
		return IPv4
	case a.Is6():
		return IPv6
	}
	return 0
}

const (
	advertHeaderLen = 8 // fixed part of a v2 and v3 advert
	v2AuthDataLen   = 8 // trailing auth data of a v2 advert
	typeAdvert      = 1 // the only VRRP packet type
)

// Advert is a decoded VRRP ADVERTISEMENT, version 2 or 3.
type Advert struct {
	Version  uint8 // 2 or 3
	VRID     uint8
	Priority uint8
	// Interval is the (maximum) advertisement interval: whole seconds in v2
	// (1..255 s), centiseconds in v3 (10 ms .. 40.95 s).
	Interval time.Duration
	// Addrs are the virtual addresses, all of the packet's family.
	Addrs []netip.Addr
	// AuthType and AuthData exist only in v2. AuthData is the trailing 8
	// bytes as on the wire: the clear-text password (zero-padded) for
	// AuthTypeSimple, zeros by convention otherwise (Codec sends zeros).
	AuthType uint8
	AuthData [8]byte
	// Checksum is the checksum field as received. Marshal computes its own.
	Checksum uint16
}

// AdvertLen is the length in bytes of an advert of version v carrying n
// addresses of family f.
func AdvertLen(v uint8, f Family, n int) int {
	l := advertHeaderLen + n*f.addrLen()
	if v == 2 {
		l += v2AuthDataLen
	}
	return l
}

// ParseAdvert decodes the VRRP message b (exactly the IP payload after any AH
// header) carried over family f. The addresses are appended to addrs[:0], so
// a caller that reuses a slice of sufficient capacity decodes without
// allocating. It checks structure only; see VerifyChecksum.
func ParseAdvert(b []byte, f Family, addrs []netip.Addr) (Advert, error) {
	if len(b) < advertHeaderLen {
		return Advert{}, rejectGot(ReasonShort, len(b), advertHeaderLen)
	}
	a := Advert{
		Version:  b[0] >> 4,
		VRID:     b[1],
		Priority: b[2],
		Checksum: binary.BigEndian.Uint16(b[6:8]),
	}
	if a.Version != 2 && a.Version != 3 {
		return Advert{}, rejectGot(ReasonBadVersion, int(a.Version), -1)
	}
	if t := b[0] & 0x0f; t != typeAdvert {
		return Advert{}, rejectGot(ReasonBadType, int(t), typeAdvert)
	}
	if f != IPv4 && f != IPv6 {
		return Advert{}, rejectGot(ReasonBadAddress, int(f), -1)
	}
	if a.Version == 2 && f == IPv6 {
		return Advert{}, reject(ReasonV2IPv6)
	}
	n := int(b[3])
	if want := AdvertLen(a.Version, f, n); len(b) != want {
		return Advert{}, rejectGot(ReasonLengthMismatch, len(b), want)
	}
	if a.Version == 2 {
		a.AuthType = b[4]
		if a.AuthType > AuthTypeAH {
			return Advert{}, rejectGot(ReasonBadAuthType, int(a.AuthType), -1)
		}
		a.Interval = time.Duration(b[5]) * time.Second
		copy(a.AuthData[:], b[len(b)-v2AuthDataLen:])
	} else {
		// The top 4 bits are reserved: zero on send, ignored on receive.
		a.Interval = time.Duration(binary.BigEndian.Uint16(b[4:6])&0x0fff) * 10 * time.Millisecond
	}
	if a.Interval == 0 {
		return Advert{}, reject(ReasonBadInterval)
	}
	al := f.addrLen()
	a.Addrs = addrs[:0]
	for i := range n {
		p := b[advertHeaderLen+i*al:]
		if f == IPv4 {
			a.Addrs = append(a.Addrs, netip.AddrFrom4([4]byte(p[:4])))
		} else {
			a.Addrs = append(a.Addrs, netip.AddrFrom16([16]byte(p[:16])))
		}
	}
	return a, nil
}

// AppendAdvert appends the wire form of a, sent from src to dst, to b. The
// family is src's. v2 uses the message-only checksum; v3 over IPv6 always
// the pseudo-header; v3 over IPv4 the form selected by form (zero value:
// pseudo-header).
func AppendAdvert(b []byte, a *Advert, src, dst netip.Addr, form ChecksumForm) ([]byte, error) {
	f := familyOf(src)
	if f == 0 || familyOf(dst) != f {
		return b, reject(ReasonBadAddress)
	}
	if a.Version == 2 && f == IPv6 {
		return b, reject(ReasonV2IPv6)
	}
	if len(a.Addrs) > 255 {
		return b, rejectGot(ReasonUnsupportedAdvert, len(a.Addrs), 255)
	}
	for _, ad := range a.Addrs {
		if familyOf(ad) != f {
			return b, reject(ReasonBadAddress)
		}
	}
	var word1 [2]byte // bytes 4..5
	switch a.Version {
	case 2:
		if a.AuthType > AuthTypeAH {
			return b, rejectGot(ReasonBadAuthType, int(a.AuthType), -1)
		}
		s := a.Interval / time.Second
		if a.Interval%time.Second != 0 || s < 1 || s > 255 {
			return b, reject(ReasonBadInterval)
		}
		word1 = [2]byte{a.AuthType, byte(s)}
	case 3:
		cs := a.Interval / (10 * time.Millisecond)
		if a.Interval%(10*time.Millisecond) != 0 || cs < 1 || cs > 0x0fff {
			return b, reject(ReasonBadInterval)
		}
		binary.BigEndian.PutUint16(word1[:], uint16(cs))
	default:
		return b, rejectGot(ReasonBadVersion, int(a.Version), -1)
	}
	start := len(b)
	b = append(b, a.Version<<4|typeAdvert, a.VRID, a.Priority, byte(len(a.Addrs)), word1[0], word1[1], 0, 0)
	for _, ad := range a.Addrs {
		if f == IPv4 {
			a4 := ad.As4()
			b = append(b, a4[:]...)
		} else {
			a16 := ad.As16()
			b = append(b, a16[:]...)
		}
	}
	if a.Version == 2 {
		b = append(b, a.AuthData[:]...)
	}
	msg := b[start:]
	useForm := ChecksumMessageOnly
	if a.Version == 3 && (f == IPv6 || form != ChecksumMessageOnly) {
		useForm = ChecksumPseudoHeader
	}
	binary.BigEndian.PutUint16(msg[6:8], advertChecksum(msg, useForm, src, dst))
	return b, nil
}

// ChecksumForm is a way of computing the VRRP checksum.
type ChecksumForm uint8

// Checksum forms. ChecksumNone is what VerifyChecksum reports when no
// accepted form matched.
const (
	ChecksumNone ChecksumForm = iota
	// ChecksumPseudoHeader: VRRPv3 (RFC 9568 section 5.2.8), the message
	// prefixed by the IPv4 / IPv6 pseudo-header with protocol 112.
	ChecksumPseudoHeader
	// ChecksumMessageOnly: the VRRP message alone, as VRRPv2 (RFC 3768
	// section 5.3.8) and keepalived's v3_checksum_as_v2 option.
	ChecksumMessageOnly
)

func (f ChecksumForm) String() string {
	switch f {
	case ChecksumPseudoHeader:
		return "pseudo-header"
	case ChecksumMessageOnly:
		return "message-only"
	}
	return "none"
}

// ChecksumMode is which checksum forms a receiver accepts for VRRPv3 over
// IPv4. VRRPv2 always uses the message-only form, VRRPv3 over IPv6 always
// the pseudo-header.
type ChecksumMode uint8

// Checksum modes.
const (
	ChecksumModePseudoHeader ChecksumMode = iota // RFC 9568, keepalived's default
	ChecksumModeMessageOnly                      // keepalived v3_checksum_as_v2
	ChecksumModeEither                           // accept both, report which matched
)

// sendForm is the form a sender in mode m uses for VRRPv3 over IPv4.
func (m ChecksumMode) sendForm() ChecksumForm {
	if m == ChecksumModeMessageOnly {
		return ChecksumMessageOnly
	}
	return ChecksumPseudoHeader
}

// VerifyChecksum reports which accepted checksum form the VRRP message msg
// (version from its first byte) sent from src to dst satisfies, or
// ChecksumNone.
func VerifyChecksum(msg []byte, src, dst netip.Addr, mode ChecksumMode) ChecksumForm {
	f := familyOf(src)
	if len(msg) < advertHeaderLen || f == 0 || familyOf(dst) != f {
		return ChecksumNone
	}
	if msg[0]>>4 != 3 {
		if advertChecksum(msg, ChecksumMessageOnly, src, dst) == 0 {
			return ChecksumMessageOnly
		}
		return ChecksumNone
	}
	if f == IPv6 || mode != ChecksumModeMessageOnly {
		if advertChecksum(msg, ChecksumPseudoHeader, src, dst) == 0 {
			return ChecksumPseudoHeader
		}
	}
	if f == IPv4 && mode != ChecksumModePseudoHeader {
		if advertChecksum(msg, ChecksumMessageOnly, src, dst) == 0 {
			return ChecksumMessageOnly
		}
	}
	return ChecksumNone
}

// advertChecksum returns the one's complement of the one's complement sum
// of msg (prefixed by the pseudo-header for ChecksumPseudoHeader): the value
// to store in a zeroed checksum field, or 0 when msg already carries a
// correct checksum.
func advertChecksum(msg []byte, form ChecksumForm, src, dst netip.Addr) uint16 {
	var sum uint32
	if form == ChecksumPseudoHeader {
		sum = pseudoHeaderSum(src, dst, ProtocolVRRP, len(msg))
	}
	return ^fold(sumWords(sum, msg))
}

// pseudoHeaderSum is the unfolded sum of the IPv4 (RFC 768 layout) or IPv6
// (RFC 8200 section 8.1) pseudo-header.
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	var sum uint32
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		sum = sumWords(sum, s[:])
		sum = sumWords(sum, d[:])
		sum += uint32(proto) + uint32(uint16(length))
		return sum
	}
	s, d := src.As16(), dst.As16()
	sum = sumWords(sum, s[:])
	sum = sumWords(sum, d[:])
	sum += uint32(length>>16) + uint32(uint16(length)) + uint32(proto)
	return sum
}

// sumWords adds b as big-endian 16-bit words (odd tail padded with zero)
// to sum. The caller folds; 32 bits hold 65535 words, far above any
// packet here.
func sumWords(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
