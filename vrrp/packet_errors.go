package vrrp

import (
	"errors"
	"strconv"
)

// Reason says why a received packet was rejected. Its string form is a
// stable, low-cardinality counter label (e.g. a Prometheus label value).
type Reason string

// Rejection reasons. Every error returned by a decoder in this package carries
// exactly one of them (see ReasonOf).
const (
	ReasonShort             Reason = "short"              // fewer bytes than the fixed header needs
	ReasonBadVersion        Reason = "bad_version"        // VRRP version not 2 or 3
	ReasonBadType           Reason = "bad_type"           // VRRP type not 1 (ADVERTISEMENT)
	ReasonLengthMismatch    Reason = "length_mismatch"    // length disagrees with the address count
	ReasonBadChecksum       Reason = "bad_checksum"       // VRRP checksum wrong in every accepted form
	ReasonV2IPv6            Reason = "v2_ipv6"            // VRRPv2 carried over IPv6 (RFC 3768 is IPv4 only)
	ReasonBadAuthType       Reason = "bad_auth_type"      // VRRPv2 auth type not 0, 1 or 2
	ReasonBadInterval       Reason = "bad_interval"       // advertisement interval of zero
	ReasonIPShort           Reason = "ip_short"           // truncated IP header
	ReasonIPBadVersion      Reason = "ip_bad_version"     // IP version nibble not 4 or 6
	ReasonIPBadHeaderLen    Reason = "ip_bad_header_len"  // IPv4 IHL below 5 or beyond the packet
	ReasonIPBadTotalLen     Reason = "ip_bad_total_len"   // IP length field disagrees with the bytes received
	ReasonIPFragment        Reason = "ip_fragment"        // IPv4 fragment (VRRP is never fragmented)
	ReasonIPBadChecksum     Reason = "ip_bad_checksum"    // IPv4 header checksum wrong
	ReasonIPBadProtocol     Reason = "ip_bad_protocol"    // neither VRRP (112) nor AH (51)
	ReasonBadTTL            Reason = "bad_ttl"            // TTL / hop limit not 255
	ReasonAHShort           Reason = "ah_short"           // truncated AH header
	ReasonAHBadNextHeader   Reason = "ah_bad_next_header" // AH does not protect VRRP
	ReasonAHBadLength       Reason = "ah_bad_length"      // AH payload length not one this package speaks
	ReasonAHBadSPI          Reason = "ah_bad_spi"         // SPI not the source address / reserved value
	ReasonAHBadPadding      Reason = "ah_bad_padding"     // non-zero ICV padding
	ReasonAuthMismatch      Reason = "auth_mismatch"      // authentication kind differs from the configured one
	ReasonAuthFailed        Reason = "auth_failed"        // ICV or password does not match
	ReasonReplay            Reason = "replay"             // AH sequence/epoch not newer than the last accepted
	ReasonAHEpochBehind     Reason = "ah_epoch_behind"    // AH epoch below the peer's current one while the peer is not silent
	ReasonBadAddress        Reason = "bad_address"        // source/destination of the wrong family or invalid
	ReasonUnsupportedAdvert Reason = "unsupported"        // advert cannot be encoded (marshal side)
)

// Error is a rejected packet or an advert that cannot be encoded. Got and
// Want give detail (e.g. the version seen) when meaningful; both -1 otherwise.
type Error struct {
	Reason Reason
	Got    int
	Want   int
}

func (e *Error) Error() string {
	s := "vrrp: " + string(e.Reason)
	if e.Got >= 0 {
		s += " (got " + strconv.Itoa(e.Got)
		if e.Want >= 0 {
			s += ", want " + strconv.Itoa(e.Want)
		}
		s += ")"
	}
	return s
}

// Is makes errors.Is(err, &Error{Reason: r}) match on the reason alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

func reject(r Reason) error { return &Error{Reason: r, Got: -1, Want: -1} }

func rejectGot(r Reason, got, want int) error { return &Error{Reason: r, Got: got, Want: want} }

// ReasonOf returns the rejection reason carried by err, or "" if err is nil
// or does not come from this package.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
