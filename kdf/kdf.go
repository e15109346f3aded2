// Package kdf derives muros-had's authentication keys from the cluster
// password.
//
// Version 2 (this package's Master): the password is stretched once with
// Argon2id (RFC 9106) into a 32-byte master secret (the daemon does it in
// a child process, WriteSecret / ReadSecret, and keeps it while the
// password is unchanged), and
// every key is HKDF-Expand-SHA-256 (RFC 5869 section 2.3) of that secret
// with a per-purpose info label (Master.Key). Argon2id parameters are RFC
// 9106 section 4's second recommended option: t = 3 passes, m = 64 MiB,
// p = 4 lanes, 32-byte output; the salt is the fixed string Salt. One
// derivation costs about 0.1-0.25 s on the 2-core test machine
// (BenchmarkDerive), so an offline guess against a captured packet costs
// the same, instead of the two SHA-256 compressions of version 1.
//
// Why the salt is fixed: a salt only defeats precomputation if it differs
// between clusters, and both nodes must derive it identically from what
// they already share. The configuration has no cluster identity that is
// guaranteed equal on both nodes and stable across a rolling change (the
// VIP list and VRIDs change by reloading one node at a time; a salt taken
// from them would cut VRRP and conntrack sync between the nodes exactly
// then and cause a split brain). A precomputed table therefore serves every
// cluster, but at Argon2id's cost per candidate and 64 MiB per guess in
// flight; the defence remains a strong password (config validation).
//
// Version 1 (Legacy) is what muros-had used before: HKDF-SHA-256 of the
// password itself with salt "muros-had" and the purpose's v1 info label, no
// stretching. It is kept only so that a pair upgraded one node at a time
// keeps working; the protocols (package vrrp, ctsync/ctwire) say when they
// still send with it.
package kdf

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters of version 2 (RFC 9106 section 4, second option).
const (
	Time      = 3
	MemoryKiB = 64 * 1024
	Threads   = 4
	// Salt is the Argon2id salt of version 2 (16 bytes, RFC 9106's
	// recommended length); see the package doc for why it is fixed.
	Salt = "muros-had kdf v2"
	// LegacySalt is the HKDF salt of version 1.
	LegacySalt = "muros-had"
	KeyLen     = sha256.Size
)

// Master is the stretched cluster secret of version 2. Derive it once per
// password and hand it to every component; Key is cheap.
type Master struct {
	secret [KeyLen]byte
	set    bool
}

// Derive stretches password with Argon2id. It costs about a quarter of a
// second and 64 MiB of memory, so call it once.
func Derive(password string) (Master, error) {
	if password == "" {
		return Master{}, errors.New("kdf: empty password")
	}
	var m Master
	copy(m.secret[:], argon2.IDKey([]byte(password), []byte(Salt), Time, MemoryKiB, Threads, KeyLen))
	m.set = true
	return m, nil
}

// Valid reports whether m holds a secret (from Derive, or handed over by
// the process that ran Derive: ReadSecret).
func (m Master) Valid() bool { return m.set }

// WriteSecret writes m's secret, KeyLen bytes, to w: the one hand-over
// that needs the raw secret, from a process that ran Derive to the
// daemon that uses it (cmd/muros-had stretches in a time-sharing child,
// so that Argon2id does not run at the daemon's real-time priority).
func WriteSecret(w io.Writer, m Master) error {
	if !m.set {
		return errors.New("kdf: master secret not derived")
	}
	if _, err := w.Write(m.secret[:]); err != nil {
		return fmt.Errorf("kdf: writing the master secret: %w", err)
	}
	return nil
}

// ReadSecret reads what WriteSecret wrote: exactly KeyLen bytes, not all
// zero (what an unset Master would carry), then the end of r (a longer
// answer is not a secret either).
func ReadSecret(r io.Reader) (Master, error) {
	var m Master
	if _, err := io.ReadFull(r, m.secret[:]); err != nil {
		clear(m.secret[:])
		return Master{}, fmt.Errorf("kdf: reading the master secret: %w", err)
	}
	var extra [1]byte
	switch _, err := io.ReadFull(r, extra[:]); {
	case errors.Is(err, io.EOF): // the end: exactly a secret
	case err == nil:
		clear(m.secret[:])
		return Master{}, fmt.Errorf("kdf: more than the %d bytes of a master secret", KeyLen)
	default:
		clear(m.secret[:])
		return Master{}, fmt.Errorf("kdf: reading the master secret: %w", err)
	}
	if m.secret == [KeyLen]byte{} {
		return Master{}, errors.New("kdf: master secret is all zero")
	}
	m.set = true
	return m, nil
}

// String, GoString and LogValue keep the secret out of logs and dumps of
// the configurations that carry it.
func (m Master) String() string {
	if !m.set {
		return "kdf.Master(none)"
	}
	return "kdf.Master(redacted)"
}

// GoString is String (for %#v).
func (m Master) GoString() string { return m.String() }

// LogValue is String (log/slog).
func (m Master) LogValue() slog.Value { return slog.StringValue(m.String()) }

// Key is the 32-byte version-2 key for the purpose named by info:
// HKDF-Expand-SHA-256(master, info). Distinct labels give independent keys.
func (m Master) Key(info string) ([]byte, error) {
	if !m.set {
		return nil, errors.New("kdf: master secret not derived")
	}
	k, err := hkdf.Expand(sha256.New, m.secret[:], info, KeyLen)
	if err != nil {
		return nil, fmt.Errorf("kdf: expand %q: %w", info, err)
	}
	return k, nil
}

// Legacy is the version-1 key for the purpose named by info:
// HKDF-SHA-256(password, salt "muros-had", info), not stretched.
func Legacy(password, info string) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, []byte(password), []byte(LegacySalt), info, KeyLen)
	if err != nil {
		return nil, fmt.Errorf("kdf: legacy key %q: %w", info, err)
	}
	return k, nil
}
