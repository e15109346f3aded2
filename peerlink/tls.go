package peerlink

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// NormalizeFingerprint accepts hex with or without colons, any case.
func NormalizeFingerprint(s string) (string, error) {
	s = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("fingerprint %q: want 64 hex digits (SHA-256)", s)
	}
	return s, nil
}

// FingerprintMatches reports whether the certificate der has the pinned
// fingerprint pin (normalized hex), in constant time.
func FingerprintMatches(der []byte, pin string) bool {
	sum := sha256.Sum256(der)
	want, err := hex.DecodeString(pin)
	return err == nil && subtle.ConstantTimeCompare(sum[:], want) == 1
}

// ErrPin is the client's handshake error when the server's certificate is
// not the pinned one.
var ErrPin = errors.New("peer certificate does not match the pinned fingerprint")

// ClientTLS trusts exactly the pinned certificate; chain and name checks
// are replaced by the pin (the peer's certificate is self-signed or the
// operator's, whatever its issuer).
func ClientTLS(id Identity, pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.Cert},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate's pin check
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !FingerprintMatches(raw[0], pin) {
				return ErrPin
			}
			return nil
		},
	}
}

// ServerTLS is the configuration of the peer-facing listener: TLS 1.3
// only, this node's certificate, and a client certificate requested (not
// required, so an operator's curl can reach /api/health; the sync
// endpoints require the pinned peer certificate).
func ServerTLS(id Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequestClientCert,
	}
}
