package vrrp

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/muros/muros-had/kdf"
)

// AHScheme is an ICV algorithm with its AH layout.
type AHScheme uint8

// AH schemes.
const (
	// AHKeepalived is keepalived's VRRPv2 AH: HMAC-MD5-96 keyed with the
	// password cut / zero-padded to 8 bytes, SPI = IPv4 source address,
	// 24-byte AH (payload length 4).
	AHKeepalived AHScheme = iota + 1
	// AHSHA256 is muros-had's AH: HMAC-SHA-256-128 keyed with the
	// version-2 key (Argon2id then HKDF, package kdf) or, for a peer that
	// only speaks version 1, HKDF-SHA-256(password); the reserved field
	// says which (KeyVersion). SPI = sender epoch, 32-byte AH (payload
	// length 6: 16-byte ICV + 4 zero bytes so the header is a multiple of
	// 8 bytes as IPv6 requires).
	AHSHA256
)

func (s AHScheme) String() string {
	switch s {
	case AHKeepalived:
		return "keepalived-ah"
	case AHSHA256:
		return "ah"
	}
	return "unknown"
}

const (
	ahFixedLen        = 12 // next header, payload len, reserved, SPI, sequence
	ahKeepalivedLen   = 24
	ahSHA256Len       = 32
	ahKeepalivedICV   = 12
	ahSHA256ICV       = 16
	ahSHA256Info      = "muros-had vrrp ah hmac-sha256-128 v1"
	ahSHA256InfoV2    = "muros-had vrrp ah hmac-sha256-128 v2"
	keepalivedKeyLen  = 8
	maxIPv4HeaderLen  = 60
	ahScratchLen      = maxIPv4HeaderLen + ahSHA256Len
	keepalivedSeqBase = 1704067200 // 2024-01-01T00:00:00Z, origin of the keepalived sequence floor
)

// Len is the AH header length in bytes for scheme s.
func (s AHScheme) Len() int {
	if s == AHKeepalived {
		return ahKeepalivedLen
	}
	return ahSHA256Len
}

func (s AHScheme) icvLen() int {
	if s == AHKeepalived {
		return ahKeepalivedICV
	}
	return ahSHA256ICV
}

// AHHeader is an IPsec Authentication Header (RFC 4302 section 2).
type AHHeader struct {
	NextHeader uint8
	PayloadLen uint8 // length in 32-bit words minus 2
	Reserved   uint16
	SPI        uint32
	Seq        uint32
	ICV        []byte // ICV field including any padding; aliases the input
}

// Scheme reports which scheme's layout the header has (by its length), or 0.
func (h *AHHeader) Scheme() AHScheme {
	switch int(h.PayloadLen+2) * 4 {
	case ahKeepalivedLen:
		return AHKeepalived
	case ahSHA256Len:
		return AHSHA256
	}
	return 0
}

// ParseAH decodes the AH header at the start of b and returns it with the
// protected payload. It only accepts the two layouts of this package and a
// next header of VRRP.
func ParseAH(b []byte) (AHHeader, []byte, error) {
	if len(b) < ahFixedLen {
		return AHHeader{}, nil, rejectGot(ReasonAHShort, len(b), ahFixedLen)
	}
	h := AHHeader{
		NextHeader: b[0],
		PayloadLen: b[1],
		Reserved:   binary.BigEndian.Uint16(b[2:4]),
		SPI:        binary.BigEndian.Uint32(b[4:8]),
		Seq:        binary.BigEndian.Uint32(b[8:12]),
	}
	if h.NextHeader != ProtocolVRRP {
		return AHHeader{}, nil, rejectGot(ReasonAHBadNextHeader, int(h.NextHeader), ProtocolVRRP)
	}
	if h.Scheme() == 0 {
		return AHHeader{}, nil, rejectGot(ReasonAHBadLength, int(h.PayloadLen), -1)
	}
	n := int(h.PayloadLen+2) * 4
	if len(b) < n {
		return AHHeader{}, nil, rejectGot(ReasonAHShort, len(b), n)
	}
	h.ICV = b[ahFixedLen:n]
	return h, b[n:], nil
}

// KeyVersion is the key derivation an AHSHA256 advert is signed with; the
// AH reserved field carries it (package doc, "Key versions").
type KeyVersion uint8

// Key versions. The reserved-field values 0 and 1 both mean a version-1
// key: 0 from a sender that knows nothing else (muros-had before version
// 2), 1 from a sender that also speaks version 2 and falls back for a
// version-1 peer.
const (
	KeyV1 KeyVersion = 1 // HKDF-SHA-256 of the password (SHA256Key)
	KeyV2 KeyVersion = 2 // Argon2id, then HKDF (kdf.Master.Key)
)

func (v KeyVersion) String() string {
	switch v {
	case KeyV1:
		return "v1"
	case KeyV2:
		return "v2"
	}
	return "none"
}

// AH reserved-field values of AHSHA256.
const (
	ahReservedV1Only = 0 // v1 key; the sender speaks only v1
	ahReservedV1     = 1 // v1 key; the sender also speaks v2
	ahReservedV2     = 2 // v2 key
)

// appendAH appends an AH header of scheme s with a zero ICV field.
func appendAH(b []byte, s AHScheme, reserved uint16, spi, seq uint32) []byte {
	n := s.Len()
	b = append(b, ProtocolVRRP, byte(n/4-2), byte(reserved>>8), byte(reserved),
		byte(spi>>24), byte(spi>>16), byte(spi>>8), byte(spi),
		byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
	for range n - ahFixedLen {
		b = append(b, 0)
	}
	return b
}

// ahSigner computes and checks ICVs of one scheme. It keeps its HMAC state
// and scratch space so that signing and verifying do not allocate; it is
// therefore not safe for concurrent use.
type ahSigner struct {
	scheme  AHScheme
	mac     hash.Hash
	sum     [sha256.Size]byte
	scratch [ahScratchLen]byte
}

// KeepalivedKey is keepalived's AH / simple-password key: the password cut
// or zero-padded to 8 bytes (vrrp_parser.c, auth_pass).
func KeepalivedKey(password string) [8]byte {
	var k [8]byte
	copy(k[:], password)
	return k
}

// SHA256Key is the version-1 HMAC-SHA-256 key of the AHSHA256 scheme:
// HKDF-SHA-256 (RFC 5869) of the whole password, fixed salt and info, no
// stretching (kdf.Legacy).
func SHA256Key(password string) ([]byte, error) {
	k, err := kdf.Legacy(password, ahSHA256Info)
	if err != nil {
		return nil, fmt.Errorf("vrrp: derive AH key: %w", err)
	}
	return k, nil
}

// SHA256KeyV2 is the version-2 key of the AHSHA256 scheme:
// HKDF-Expand-SHA-256 of the Argon2id master secret, info
// "muros-had vrrp ah hmac-sha256-128 v2".
func SHA256KeyV2(m kdf.Master) ([]byte, error) {
	k, err := m.Key(ahSHA256InfoV2)
	if err != nil {
		return nil, fmt.Errorf("vrrp: derive AH key: %w", err)
	}
	return k, nil
}

func newAHSigner(s AHScheme, password string) (*ahSigner, error) {
	if password == "" {
		return nil, errors.New("vrrp: AH needs a non-empty password")
	}
	switch s {
	case AHKeepalived:
		k := KeepalivedKey(password)
		return &ahSigner{scheme: s, mac: hmac.New(md5.New, k[:])}, nil
	case AHSHA256:
		k, err := SHA256Key(password)
		if err != nil {
			return nil, err
		}
		return newSHA256Signer(k), nil
	}
	return nil, fmt.Errorf("vrrp: unknown AH scheme %d", s)
}

func newSHA256Signer(key []byte) *ahSigner {
	return &ahSigner{scheme: AHSHA256, mac: hmac.New(sha256.New, key)}
}

// icv computes the scheme's ICV of ipHdr (IPv4 with options, or the
// 40-byte IPv6 header) followed by ah (AH header then VRRP) into
// s.sum[:icvLen]. Mutable fields are zeroed in copies, never in the input:
// IPv4 TOS, flags/fragment offset, header checksum, and the TTL when
// zeroTTL; IPv6 traffic class, flow label and hop limit; the ICV field.
func (s *ahSigner) icv(ipHdr, ah []byte, zeroTTL bool) []byte {
	n := s.scheme.Len()
	sc := s.scratch[:0]
	sc = append(sc, ipHdr...)
	if ipHdr[0]>>4 == 4 {
		sc[1] = 0             // TOS
		sc[6], sc[7] = 0, 0   // flags, fragment offset
		sc[10], sc[11] = 0, 0 // header checksum
		if zeroTTL {
			sc[8] = 0
		}
	} else {
		sc[0] &= 0xf0                 // version kept; traffic class high nibble
		sc[1], sc[2], sc[3] = 0, 0, 0 // traffic class low nibble, flow label
		sc[7] = 0                     // hop limit
	}
	sc = append(sc, ah[:ahFixedLen]...)
	for range n - ahFixedLen {
		sc = append(sc, 0)
	}
	s.mac.Reset()
	s.mac.Write(sc)
	s.mac.Write(ah[n:])
	return s.mac.Sum(s.sum[:0])[:s.scheme.icvLen()]
}

// sign fills the ICV field of ah (an AH header of s's scheme followed by
// VRRP, zero ICV field) protected together with ipHdr.
func (s *ahSigner) sign(ipHdr, ah []byte, zeroTTL bool) {
	copy(ah[ahFixedLen:], s.icv(ipHdr, ah, zeroTTL))
}

// verify checks the ICV of ah against ipHdr in constant time.
func (s *ahSigner) verify(ipHdr, ah []byte, zeroTTL bool) bool {
	n := s.scheme.Len()
	field := ah[ahFixedLen:n]
	icvLen := s.scheme.icvLen()
	ok := hmac.Equal(s.icv(ipHdr, ah, zeroTTL), field[:icvLen])
	pad := byte(0)
	for _, c := range field[icvLen:] {
		pad |= c
	}
	return ok && pad == 0
}

// AHCounter is a sender's AH anti-replay state. The caller keeps it, calls
// a Next method before each advert and persists Epoch whenever it changes
// (AHSHA256 only).
type AHCounter struct {
	Epoch uint32 // AHSHA256: the SPI; grows across restarts
	Seq   uint32 // last sequence number sent; 0 before the first
	// LegacyKey (AHSHA256): sign with the version-1 key, for a peer that
	// speaks only version 1 (KeyFallback). Kept by Next.
	LegacyKey bool
}

// NewAHCounter starts the AHSHA256 sender state of a process: epoch =
// max(now in Unix seconds, lastEpoch+1) where lastEpoch is the value the
// previous run persisted (0 if none), so the epoch only grows across
// restarts even if the clock steps back.
func NewAHCounter(lastEpoch uint32, now time.Time) AHCounter {
	return AHCounter{Epoch: max(unixSeconds32(now), lastEpoch+1, 256)}
}

// Next returns the AHSHA256 counter for the next advert: seq+1, or a new
// epoch starting at seq 1 when the sequence space is exhausted (2^32-1
// adverts, 497 days at 10 ms).
func (c AHCounter) Next(now time.Time) AHCounter {
	if c.Seq == ^uint32(0) {
		return AHCounter{Epoch: max(unixSeconds32(now), c.Epoch+1), Seq: 1, LegacyKey: c.LegacyKey}
	}
	return AHCounter{Epoch: c.Epoch, Seq: c.Seq + 1, LegacyKey: c.LegacyKey}
}

// NextKeepalived returns the keepalived-ah counter for the next advert:
// seq = max(seq+1, floor(now)) with floor = half-seconds since 2024-01-01
// (two sequence numbers per second), capped at 0xFFFFFFFD (keepalived
// treats anything above as a wrapped counter). The time floor is what makes
// a restart safe without persistence; see the package doc for the bound.
func (c AHCounter) NextKeepalived(now time.Time) AHCounter {
	floor := max((now.UnixMilli()-keepalivedSeqBase*1000)/500, 0)
	seq := max(int64(c.Seq)+1, floor)
	return AHCounter{Seq: uint32(min(seq, 0xfffffffd))}
}

func unixSeconds32(t time.Time) uint32 {
	s := t.Unix()
	if s < 0 {
		return 0
	}
	return uint32(min(s, int64(^uint32(0))))
}

// ReplaySeenEpochs is how many epochs a peer has left (besides its
// current one) a ReplayState remembers; see AcceptAt.
const ReplaySeenEpochs = 16

// ReplayState is a receiver's anti-replay memory for one peer (one source
// address and scheme). It is a value: the caller keeps one per peer.
type ReplayState struct {
	SPI   uint32
	Seq   uint32
	Valid bool // false until the first authenticated advert
	// Last is when the last advert was accepted (AcceptAt's now).
	Last time.Time
	// Max is the largest epoch (SPI) ever accepted.
	Max uint32
	// Seen are the epochs (SPIs) accepted before SPI, most recent first;
	// 0 marks an empty slot (epochs are >= 256). None of them is accepted
	// again.
	Seen [ReplaySeenEpochs]uint32
}

// Accept is AcceptAt without the step-back rule: a packet is accepted only
// if it is newer than the last accepted one. For keepalived-ah the SPI is
// the fixed source address, so this is exactly keepalived's "seq > last"
// rule.
func (r ReplayState) Accept(spi, seq uint32) (ReplayState, error) {
	return r.AcceptAt(spi, seq, time.Time{}, 0)
}

// AcceptAt returns the state after an authenticated advert with (spi, seq)
// received at now (the receiver's clock; time.Now's monotonic reading makes
// the silence immune to clock steps), or an error if it is a replay:
//
//   - the current epoch (spi == SPI) needs a larger sequence (ReasonReplay);
//   - an epoch the peer has left (one of Seen) is never accepted again
//     (ReasonReplay), whether below or above the current one;
//   - an epoch above every epoch ever accepted (Max) is a restarted sender
//     and is accepted at once;
//   - any other epoch is a sender restarted with its persisted epoch lost
//     and its clock behind: it is accepted only once the peer has been
//     silent (no advert accepted) for at least silence, else
//     ReasonAHEpochBehind. silence <= 0 never accepts it.
//
// Why that bounds replays: a captured advert whose epoch is above Max was
// never sent (every advert sent was delivered and accepted, or its epoch
// would not be above Max), so within the silence window nothing but a
// fresh advert is accepted. While the peer is alive it advertises every
// interval, so silence (the caller passes its Master_Down_Interval) is only
// reached when the peer is down or cut off, when the receiver has already
// declared it down. Even then nothing this receiver accepted before (the
// current epoch and the last ReplaySeenEpochs ones) is accepted again, so a
// captured advert can only be replayed if it comes from an epoch this
// receiver never accepted (sent while it was not running, or more than
// ReplaySeenEpochs epochs ago), and only while the peer is silent. Rejected
// adverts do not count as activity, so replays cannot hold the step-back
// off either. The price: a sender restarted with an epoch at or below Max
// is heard only after silence; the pair can be double master for up to
// that long, never longer.
func (r ReplayState) AcceptAt(spi, seq uint32, now time.Time, silence time.Duration) (ReplayState, error) {
	if !r.Valid {
		return ReplayState{SPI: spi, Seq: seq, Valid: true, Last: now, Max: spi}, nil
	}
	if spi == r.SPI {
		if seq <= r.Seq {
			return r, rejectGot(ReasonReplay, int(seq), int(r.Seq)+1)
		}
		r.Seq, r.Last = seq, now
		return r, nil
	}
	if r.left(spi) {
		return r, rejectGot(ReasonReplay, int(spi), int(r.SPI))
	}
	if spi <= r.Max && (silence <= 0 || now.Sub(r.Last) < silence) {
		return r, rejectGot(ReasonAHEpochBehind, int(spi), int(r.Max)+1)
	}
	copy(r.Seen[1:], r.Seen[:])
	r.Seen[0] = r.SPI
	r.SPI, r.Seq, r.Last, r.Max = spi, seq, now, max(r.Max, spi)
	return r, nil
}

func (r *ReplayState) left(spi uint32) bool {
	for _, e := range r.Seen {
		if e == spi && e != 0 {
			return true
		}
	}
	return false
}

// PeerKeys is what a node knows of its peer's key derivation, from the
// authenticated adverts it accepted (after the replay check, so a replayed
// advert of an older version cannot move it). The zero value knows nothing
// and sends version 2.
type PeerKeys struct {
	// V1Only: the peer's latest accepted advert carried reserved value 0,
	// i.e. the peer derives only version-1 keys.
	V1Only bool
}

// Heard returns the knowledge after accepting r (AHSHA256 adverts only;
// others leave it unchanged).
func (p PeerKeys) Heard(r *Received) PeerKeys {
	if r.Auth != AuthAH || !r.AuthOK {
		return p
	}
	return PeerKeys{V1Only: !r.PeerSpeaksV2}
}

// Stamp sets the counter's key for the next advert: version 1 while the
// peer speaks only version 1, else version 2.
func (p PeerKeys) Stamp(c AHCounter) AHCounter {
	c.LegacyKey = p.V1Only
	return c
}
