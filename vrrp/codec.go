package vrrp

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/muros/muros-had/kdf"
)

// AuthMode is how adverts are authenticated; in a Received it is what the
// packet carried.
type AuthMode uint8

// Authentication modes.
const (
	AuthNone         AuthMode = iota // plain RFC 9568 / RFC 3768
	AuthPass                         // VRRPv2 auth type 1, clear-text password (inspection, keepalived interop)
	AuthKeepalivedAH                 // keepalived's VRRPv2 in IPsec AH, HMAC-MD5-96
	AuthAH                           // muros-had's VRRPv3 in IPsec AH, HMAC-SHA-256-128
)

var authModeNames = [...]string{"none", "pass", "keepalived-ah", "ah"}

func (m AuthMode) String() string {
	if int(m) < len(authModeNames) {
		return authModeNames[m]
	}
	return fmt.Sprintf("AuthMode(%d)", uint8(m))
}

// ParseAuthMode parses the configuration spelling of an AuthMode.
func ParseAuthMode(s string) (AuthMode, error) {
	for i, n := range authModeNames {
		if s == n {
			return AuthMode(i), nil
		}
	}
	return 0, fmt.Errorf("vrrp: unknown auth mode %q (want none, pass, keepalived-ah or ah)", s)
}

// Config configures a Codec.
type Config struct {
	Version  uint8 // 2 or 3
	Auth     AuthMode
	Password string // required for pass, keepalived-ah and ah; optional for none (enables inspection)
	// Master is the password stretched once (kdf.Derive): it
	// gives the version-2 AH key. Without it the ah scheme signs and
	// checks version-1 keys only (what muros-had spoke before version 2).
	Master   kdf.Master
	Checksum ChecksumMode
	// Unicast adverts: the TTL is not required to be 255, and keepalived-ah
	// zeroes the TTL in the ICV (keepalived's VRRP_FLAG_UNICAST rule).
	Unicast bool
}

// Codec encodes and decodes complete VRRP packets (IP header, optional AH,
// VRRP) for one configuration. It holds HMAC state for allocation-free
// signing, so a Codec is not safe for concurrent use: give each goroutine
// its own.
type Codec struct {
	cfg        Config
	keepalived *ahSigner // nil without a password
	sha        *ahSigner // version-1 key; nil without a password
	sha2       *ahSigner // version-2 key; nil without Master
	passKey    [8]byte
	hdr6       [IPv6HeaderLen]byte
}

// NewCodec checks cfg and prepares the keys.
func NewCodec(cfg Config) (*Codec, error) {
	if cfg.Version != 2 && cfg.Version != 3 {
		return nil, fmt.Errorf("vrrp: codec version %d, want 2 or 3", cfg.Version)
	}
	if cfg.Checksum > ChecksumModeEither {
		return nil, fmt.Errorf("vrrp: unknown checksum mode %d", cfg.Checksum)
	}
	switch cfg.Auth {
	case AuthNone:
	case AuthPass, AuthKeepalivedAH:
		if cfg.Version != 2 {
			return nil, fmt.Errorf("vrrp: auth %s needs VRRPv2", cfg.Auth)
		}
	case AuthAH:
		if cfg.Version != 3 {
			return nil, fmt.Errorf("vrrp: auth %s needs VRRPv3", cfg.Auth)
		}
	default:
		return nil, fmt.Errorf("vrrp: unknown auth mode %d", cfg.Auth)
	}
	if cfg.Auth != AuthNone && cfg.Password == "" {
		return nil, fmt.Errorf("vrrp: auth %s needs a password", cfg.Auth)
	}
	c := &Codec{cfg: cfg}
	if cfg.Password != "" {
		var err error
		if c.keepalived, err = newAHSigner(AHKeepalived, cfg.Password); err != nil {
			return nil, err
		}
		if c.sha, err = newAHSigner(AHSHA256, cfg.Password); err != nil {
			return nil, err
		}
		c.passKey = KeepalivedKey(cfg.Password)
	}
	if cfg.Master.Valid() {
		k, err := SHA256KeyV2(cfg.Master)
		if err != nil {
			return nil, err
		}
		c.sha2 = newSHA256Signer(k)
	}
	return c, nil
}

// Config returns the configuration the codec was built with.
func (c *Codec) Config() Config { return c.cfg }

// Received is a decoded packet and what was checked about it.
type Received struct {
	Advert   Advert
	Src, Dst netip.Addr
	TTL      uint8    // IPv4 TTL or IPv6 hop limit
	Auth     AuthMode // the authentication the packet carries
	SPI, Seq uint32   // AH only
	// KeyVersion (AHSHA256): the key the reserved field names and the ICV
	// was checked with; 0 for an unknown reserved value. PeerSpeaksV2: the
	// sender derives version-2 keys (reserved 1 or 2).
	KeyVersion   KeyVersion
	PeerSpeaksV2 bool
	// Checksum is the checksum form that matched under the codec's mode,
	// ChecksumNone if the checksum is wrong.
	Checksum ChecksumForm
	// AuthChecked says a password was available for the packet's Auth;
	// AuthOK is then the result (ICV and SPI, or password). Replay is not
	// part of it: see ReplayState.
	AuthChecked bool
	AuthOK      bool
}

// ChecksumOK reports whether the VRRP checksum is right.
func (r *Received) ChecksumOK() bool { return r.Checksum != ChecksumNone }

// Inspect decodes a full IP packet (IPv4 or IPv6 header first) and reports
// checksum and authentication results without enforcing them, for
// `muros-had inspect`. Errors are structural only. Addresses are appended
// to addrs[:0].
func (c *Codec) Inspect(pkt []byte, addrs []netip.Addr) (Received, error) {
	if len(pkt) == 0 {
		return Received{}, rejectGot(ReasonIPShort, 0, IPv4HeaderLen)
	}
	switch pkt[0] >> 4 {
	case 4:
		h, payload, err := ParseIPv4(pkt)
		if err != nil {
			return Received{}, err
		}
		return c.inspect(pkt[:h.HeaderLen], IPv4, h.Protocol, h.Src, h.Dst, h.TTL, payload, addrs)
	case 6:
		h, payload, err := ParseIPv6(pkt)
		if err != nil {
			return Received{}, err
		}
		return c.inspect(pkt[:IPv6HeaderLen], IPv6, h.NextHeader, h.Src, h.Dst, h.HopLimit, payload, addrs)
	}
	return Received{}, rejectGot(ReasonIPBadVersion, int(pkt[0]>>4), -1)
}

// InspectIPv6Payload is Inspect for what an IPv6 raw socket delivers: the
// payload after the IPv6 header, with proto the socket's protocol (112 or
// 51), src from the peer address, dst from IPV6_PKTINFO and hopLimit from
// IPV6_HOPLIMIT control messages.
func (c *Codec) InspectIPv6Payload(payload []byte, proto uint8, src, dst netip.Addr, hopLimit uint8, addrs []netip.Addr) (Received, error) {
	if !src.Is6() || !dst.Is6() || len(payload) > 0xffff {
		return Received{}, reject(ReasonBadAddress)
	}
	// The ICV covers the IPv6 header with its mutable fields zeroed, so
	// the immutable ones are all that is needed to rebuild it.
	hdr := AppendIPv6(c.hdr6[:0], &IPv6Header{NextHeader: proto, HopLimit: hopLimit, Src: src, Dst: dst}, len(payload))
	return c.inspect(hdr, IPv6, proto, src, dst, hopLimit, payload, addrs)
}

func (c *Codec) inspect(ipHdr []byte, f Family, proto uint8, src, dst netip.Addr, ttl uint8, payload []byte, addrs []netip.Addr) (Received, error) {
	r := Received{Src: src, Dst: dst, TTL: ttl}
	vrrpMsg := payload
	var scheme AHScheme
	var reserved uint16
	switch proto {
	case ProtocolVRRP:
	case ProtocolAH:
		ah, rest, err := ParseAH(payload)
		if err != nil {
			return Received{}, err
		}
		r.SPI, r.Seq, vrrpMsg, scheme, reserved = ah.SPI, ah.Seq, rest, ah.Scheme(), ah.Reserved
	default:
		return Received{}, rejectGot(ReasonIPBadProtocol, int(proto), -1)
	}
	a, err := ParseAdvert(vrrpMsg, f, addrs)
	if err != nil {
		return Received{}, err
	}
	r.Advert = a
	r.Checksum = VerifyChecksum(vrrpMsg, src, dst, c.cfg.Checksum)
	switch {
	case scheme == AHKeepalived:
		r.Auth = AuthKeepalivedAH
		if c.keepalived != nil {
			r.AuthChecked = true
			spiOK := f == IPv4 && r.SPI == addr4Uint32(src)
			r.AuthOK = c.keepalived.verify(ipHdr, payload, c.cfg.Unicast) && spiOK
		}
	case scheme == AHSHA256:
		r.Auth = AuthAH
		if c.sha != nil {
			r.AuthChecked = true
			var signer *ahSigner
			switch reserved {
			case ahReservedV1Only, ahReservedV1:
				signer, r.KeyVersion = c.sha, KeyV1
			case ahReservedV2:
				signer, r.KeyVersion = c.sha2, KeyV2 // nil without Master: fails
			}
			r.PeerSpeaksV2 = reserved == ahReservedV1 || reserved == ahReservedV2
			r.AuthOK = signer != nil && signer.verify(ipHdr, payload, true) && r.SPI >= 256
		}
	case a.Version == 2 && a.AuthType == AuthTypeSimple:
		r.Auth = AuthPass
		if c.cfg.Password != "" {
			r.AuthChecked = true
			r.AuthOK = subtle.ConstantTimeCompare(a.AuthData[:], c.passKey[:]) == 1
		}
	}
	return r, nil
}

// Decode is Inspect plus every check a receiver must make before acting on
// an advert: TTL 255 (unless unicast), the configured version and
// authentication (including the v2 auth type field), the checksum and the
// ICV or password. The error's reason (ReasonOf) is the counter label.
// Replay is left to the caller's per-peer ReplayState. When only an
// enforced check fails, the returned Received is still filled in, for
// logging.
func (c *Codec) Decode(pkt []byte, addrs []netip.Addr) (Received, error) {
	r, err := c.Inspect(pkt, addrs)
	if err != nil {
		return r, err
	}
	return r, c.enforce(&r)
}

// DecodeIPv6Payload is Decode for an IPv6 raw socket; see InspectIPv6Payload.
func (c *Codec) DecodeIPv6Payload(payload []byte, proto uint8, src, dst netip.Addr, hopLimit uint8, addrs []netip.Addr) (Received, error) {
	r, err := c.InspectIPv6Payload(payload, proto, src, dst, hopLimit, addrs)
	if err != nil {
		return r, err
	}
	return r, c.enforce(&r)
}

func (c *Codec) enforce(r *Received) error { return c.cfg.Check(r) }

// Check makes every check a receiver configured with cfg must make before
// acting on an advert that Inspect decoded (TTL, version, authentication
// kind and result, checksum), and returns the first that fails as an error
// carrying its Reason. It is pure, so an event loop can own the decision
// while a reader goroutine does the decoding and the ICV.
func (cfg Config) Check(r *Received) error {
	if !cfg.Unicast && r.TTL != TTL {
		return rejectGot(ReasonBadTTL, int(r.TTL), TTL)
	}
	if r.Advert.Version != cfg.Version {
		return rejectGot(ReasonBadVersion, int(r.Advert.Version), int(cfg.Version))
	}
	if r.Auth != cfg.Auth {
		return rejectGot(ReasonAuthMismatch, int(r.Auth), int(cfg.Auth))
	}
	if r.Advert.Version == 2 {
		want := uint8(AuthTypeNone)
		switch cfg.Auth {
		case AuthPass:
			want = AuthTypeSimple
		case AuthKeepalivedAH:
			want = AuthTypeAH
		}
		if r.Advert.AuthType != want {
			return rejectGot(ReasonAuthMismatch, int(r.Advert.AuthType), int(want))
		}
	}
	if cfg.Auth != AuthNone && !r.AuthOK {
		return reject(ReasonAuthFailed)
	}
	if !r.ChecksumOK() {
		return reject(ReasonBadChecksum)
	}
	return nil
}

// AppendPacket appends a complete packet carrying a from src to dst: IP
// header (TOS / traffic class 0xc0, TTL / hop limit 255, protocol 112 or
// 51), the AH header when configured, then the advert. The advert's
// Version, AuthType and AuthData are set from the codec's configuration.
// ctr is the sender's AHCounter already advanced for this packet (Next or
// NextKeepalived); it is ignored without AH, except that its Seq also
// seeds the IPv4 ID. For IPv6 the raw-socket payload starts at
// IPv6HeaderLen; the checksum is filled in, so do not set IPV6_CHECKSUM.
func (c *Codec) AppendPacket(b []byte, src, dst netip.Addr, a *Advert, ctr AHCounter) ([]byte, error) {
	f := familyOf(src)
	if f == 0 || familyOf(dst) != f {
		return b, reject(ReasonBadAddress)
	}
	adv := *a
	adv.Version = c.cfg.Version
	adv.AuthType, adv.AuthData = AuthTypeNone, [8]byte{}
	var signer *ahSigner
	var spi uint32
	var reserved uint16
	proto := uint8(ProtocolVRRP)
	switch c.cfg.Auth {
	case AuthPass:
		adv.AuthType, adv.AuthData = AuthTypeSimple, c.passKey
	case AuthKeepalivedAH:
		if f != IPv4 {
			return b, reject(ReasonV2IPv6)
		}
		adv.AuthType = AuthTypeAH
		signer, spi, proto = c.keepalived, addr4Uint32(src), ProtocolAH
	case AuthAH:
		if ctr.Epoch < 256 {
			return b, rejectGot(ReasonAHBadSPI, int(ctr.Epoch), 256)
		}
		signer, spi, proto = c.sha, ctr.Epoch, ProtocolAH
		switch {
		case c.sha2 == nil:
			reserved = ahReservedV1Only
		case ctr.LegacyKey:
			reserved = ahReservedV1
		default:
			signer, reserved = c.sha2, ahReservedV2
		}
	}
	payloadLen := AdvertLen(adv.Version, f, len(adv.Addrs))
	if signer != nil {
		payloadLen += signer.scheme.Len()
	}
	start := len(b)
	if f == IPv4 {
		id := uint16(ctr.Seq)
		if id == 0 && signer != nil {
			// The kernel replaces a zero ID under IP_HDRINCL, which would
			// break the ICV (keepalived skips 0 for the same reason).
			id = 1
		}
		b = AppendIPv4(b, &IPv4Header{TOS: 0xc0, ID: id, TTL: TTL, Protocol: proto, Src: src, Dst: dst}, payloadLen)
	} else {
		b = AppendIPv6(b, &IPv6Header{TrafficClass: 0xc0, NextHeader: proto, HopLimit: TTL, Src: src, Dst: dst}, payloadLen)
	}
	hdrEnd := len(b)
	if signer != nil {
		b = appendAH(b, signer.scheme, reserved, spi, ctr.Seq)
	}
	b, err := AppendAdvert(b, &adv, src, dst, c.cfg.Checksum.sendForm())
	if err != nil {
		return b[:start], err
	}
	if signer != nil {
		signer.sign(b[start:hdrEnd], b[hdrEnd:], c.cfg.Auth == AuthKeepalivedAH && c.cfg.Unicast || c.cfg.Auth == AuthAH)
	}
	return b, nil
}

// addr4Uint32 is an IPv4 address as keepalived's SPI (network byte order
// read as a big-endian number), 0 for other families.
func addr4Uint32(a netip.Addr) uint32 {
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}
