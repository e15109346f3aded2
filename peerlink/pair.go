package peerlink

// Pairing, the pure part: the one-time code, the messages of the exchange
// and their codec, the transcript, the proofs and the secret derived from
// it, the listener's book of attempts and the decision whether this node may
// pair with a given peer. pairconn.go runs the exchange over TLS.

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// PairVersion is the version of the pairing exchange (the hellos' first
// byte, and the labels of every derivation).
const PairVersion = 1

// The one-time code: codeDataChars random symbols of Crockford's base32
// (5 bits each: 100 bits) and codeCheckChars of checksum, so a typo is
// caught on the joiner's side without spending one of the listener's
// attempts. Shown in groups of four: XXXX-XXXX-XXXX-XXXX-XXXX-XXXX.
const (
	codeDataChars  = 20
	codeCheckChars = 4
	codeGroup      = 4
	crockford      = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)

// PairCode is a one-time pairing code. Its 100 random bits key the proofs
// (PairProof): a recorded exchange, even a decrypted one, leaves an
// attacker 2^100 codes to try offline.
type PairCode struct {
	data string // codeDataChars symbols of crockford
}

// ErrCodeTypo is ParsePairCode's error for a code mistyped: wrong length,
// a character that is not in the code's alphabet, or a checksum that does
// not match.
var ErrCodeTypo = errors.New("pairing code mistyped")

// NewPairCode draws a code from rand (crypto/rand.Reader).
func NewPairCode(rand io.Reader) (PairCode, error) {
	var b [codeDataChars]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return PairCode{}, fmt.Errorf("pairing code: %w", err)
	}
	for i := range b {
		b[i] = crockford[b[i]&31] // 256 is a multiple of 32: uniform
	}
	return PairCode{data: string(b[:])}, nil
}

// IsZero reports whether c is the zero code (none).
func (c PairCode) IsZero() bool { return c.data == "" }

// codeCheck is the checksum symbols of data: sum of v_i * w_i modulo the
// prime codeCheckMod, v_i the value of symbol i and w_i = 7^(i+1) mod the
// prime (all distinct, none zero), in 20 bits. Over a prime field a
// single changed symbol changes the sum by d*w_i (d, w_i not 0), and two
// different symbols swapped by (a-b)(w_i-w_j): every one-symbol typo and
// every transposition is caught, not just most.
func codeCheck(data string) string {
	var v, w uint64 = 0, 1
	for i := 0; i < len(data); i++ {
		w = w * 7 % codeCheckMod
		v = (v + uint64(strings.IndexByte(crockford, data[i]))*w) % codeCheckMod
	}
	var out [codeCheckChars]byte
	for i := codeCheckChars - 1; i >= 0; i-- {
		out[i] = crockford[v&31]
		v >>= 5
	}
	return string(out[:])
}

// codeCheckMod is the largest prime below 2^20.
const codeCheckMod = 1048573

// String is the code as the operator types it.
func (c PairCode) String() string {
	if c.IsZero() {
		return ""
	}
	all := c.data + codeCheck(c.data)
	var b strings.Builder
	for i := 0; i < len(all); i += codeGroup {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(all[i : i+codeGroup])
	}
	return b.String()
}

// ParsePairCode reads a typed code: any case, hyphens and spaces ignored,
// O read as 0 and I, L as 1 (Crockford's rules for what a human types).
func ParsePairCode(s string) (PairCode, error) {
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			continue
		case r == 'O':
			r = '0'
		case r == 'I' || r == 'L':
			r = '1'
		}
		if r > 0x7f || strings.IndexByte(crockford, byte(r)) < 0 {
			return PairCode{}, fmt.Errorf("%w: %q is not one of the code's characters", ErrCodeTypo, r)
		}
		b.WriteRune(r)
	}
	all := b.String()
	if len(all) != codeDataChars+codeCheckChars {
		return PairCode{}, fmt.Errorf("%w: %d characters, want %d", ErrCodeTypo, len(all), codeDataChars+codeCheckChars)
	}
	data := all[:codeDataChars]
	if codeCheck(data) != all[codeDataChars:] {
		return PairCode{}, fmt.Errorf("%w: its last group does not match the others", ErrCodeTypo)
	}
	return PairCode{data: data}, nil
}

// PairMsgType is a pairing message's first byte.
type PairMsgType uint8

// The messages, in the order they are sent (package doc, "Pairing").
const (
	MsgListenerHello PairMsgType = 1 // listener -> joiner, first
	MsgJoinerHello   PairMsgType = 2 // joiner -> listener, with its proof
	MsgListenerProof PairMsgType = 3 // listener -> joiner
	MsgConfirm       PairMsgType = 4 // either way, the operator said yes
	MsgRefuse        PairMsgType = 5 // either way, at any step
	MsgDone          PairMsgType = 6 // either way, the files are written
)

// PairNames are what a node says of itself in its hello: its JWT issuer,
// its audience (the peer's issuer) and its JWT algorithm.
type PairNames struct {
	Node, Peer, Alg string
}

// PairMessage is one message of the exchange; the fields its type does not
// carry are zero.
type PairMessage struct {
	Type    PairMsgType
	Version uint8    // hellos
	Nonce   [32]byte // hellos
	Names   PairNames
	Proof   [32]byte // joiner hello, listener proof
	Share   [32]byte // confirm
	Reason  string   // refuse
}

// Limits of the codec.
const (
	pairHeaderLen  = 3
	maxPairBody    = 1024
	maxPairAlgLen  = 16
	maxPairReason  = 64
	maxPairNameLen = 253
)

// ErrPairMessage wraps every decoding error of a pairing message.
var ErrPairMessage = errors.New("malformed pairing message")

func appendStr8(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// AppendPairMessage appends m's frame to b.
func AppendPairMessage(b []byte, m PairMessage) []byte {
	start := len(b)
	b = append(b, byte(m.Type), 0, 0)
	switch m.Type {
	case MsgListenerHello, MsgJoinerHello:
		b = append(b, m.Version)
		b = append(b, m.Nonce[:]...)
		b = appendStr8(b, m.Names.Node)
		b = appendStr8(b, m.Names.Peer)
		b = appendStr8(b, m.Names.Alg)
		if m.Type == MsgJoinerHello {
			b = append(b, m.Proof[:]...)
		}
	case MsgListenerProof:
		b = append(b, m.Proof[:]...)
	case MsgConfirm:
		b = append(b, m.Share[:]...)
	case MsgRefuse:
		b = appendStr8(b, m.Reason)
	}
	binary.BigEndian.PutUint16(b[start+1:], uint16(len(b)-start-pairHeaderLen))
	return b
}

// pairReader walks a message body.
type pairReader struct {
	b   []byte
	err error
}

func (r *pairReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrPairMessage}, args...)...)
	}
}

func (r *pairReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail("truncated: %d bytes left, want %d", len(r.b), n)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *pairReader) fixed(dst *[32]byte) { copy(dst[:], r.bytes(32)) }

// str8 reads a length-prefixed printable string of 1..max bytes.
func (r *pairReader) str8(what string, max int) string {
	n := r.bytes(1)
	if r.err != nil {
		return ""
	}
	s := string(r.bytes(int(n[0])))
	if r.err != nil {
		return ""
	}
	if len(s) == 0 || len(s) > max {
		r.fail("%s of %d bytes: want 1..%d", what, len(s), max)
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			r.fail("%s %q: want printable ASCII without spaces", what, s)
			return ""
		}
	}
	return s
}

// ParsePairMessage decodes one whole frame (header and body, nothing
// after). Unknown types, versions, lengths that disagree with the type and
// strings that are empty, too long or not printable ASCII are errors.
func ParsePairMessage(frame []byte) (PairMessage, error) {
	var m PairMessage
	if len(frame) < pairHeaderLen {
		return m, fmt.Errorf("%w: %d bytes, shorter than the header", ErrPairMessage, len(frame))
	}
	n := int(binary.BigEndian.Uint16(frame[1:]))
	if n > maxPairBody {
		return m, fmt.Errorf("%w: body of %d bytes, more than %d", ErrPairMessage, n, maxPairBody)
	}
	if len(frame) != pairHeaderLen+n {
		return m, fmt.Errorf("%w: frame of %d bytes, header says %d", ErrPairMessage, len(frame), pairHeaderLen+n)
	}
	m.Type = PairMsgType(frame[0])
	r := &pairReader{b: frame[pairHeaderLen:]}
	switch m.Type {
	case MsgListenerHello, MsgJoinerHello:
		if v := r.bytes(1); r.err == nil {
			m.Version = v[0]
			if m.Version != PairVersion {
				r.fail("version %d, want %d", m.Version, PairVersion)
			}
		}
		r.fixed(&m.Nonce)
		m.Names.Node = r.str8("node name", maxPairNameLen)
		m.Names.Peer = r.str8("peer name", maxPairNameLen)
		m.Names.Alg = r.str8("algorithm", maxPairAlgLen)
		if m.Type == MsgJoinerHello {
			r.fixed(&m.Proof)
		}
	case MsgListenerProof:
		r.fixed(&m.Proof)
	case MsgConfirm:
		r.fixed(&m.Share)
	case MsgRefuse:
		m.Reason = r.str8("reason", maxPairReason)
	case MsgDone:
	default:
		return PairMessage{}, fmt.Errorf("%w: type %d", ErrPairMessage, m.Type)
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d bytes after the message", len(r.b))
	}
	if r.err != nil {
		return PairMessage{}, r.err
	}
	return m, nil
}

// ReadPairMessage reads one frame from r and decodes it.
func ReadPairMessage(r io.Reader) (PairMessage, error) {
	var h [pairHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return PairMessage{}, err
	}
	n := int(binary.BigEndian.Uint16(h[1:]))
	if n > maxPairBody {
		return PairMessage{}, fmt.Errorf("%w: body of %d bytes, more than %d", ErrPairMessage, n, maxPairBody)
	}
	frame := make([]byte, pairHeaderLen+n)
	copy(frame, h[:])
	if _, err := io.ReadFull(r, frame[pairHeaderLen:]); err != nil {
		return PairMessage{}, fmt.Errorf("%w: %w", ErrPairMessage, err)
	}
	return ParsePairMessage(frame)
}

// PairTranscript is what both sides saw of one exchange: the SHA-256 of
// each TLS certificate as presented in this connection, each side's nonce
// and names. Both proofs and the secret are bound to it, so a proof made
// for another connection, certificate or nonce does not verify.
type PairTranscript struct {
	ListenerCert, JoinerCert   [32]byte
	ListenerNonce, JoinerNonce [32]byte
	Listener, Joiner           PairNames
}

// Hash is the SHA-256 of the transcript's encoding (package doc).
func (t PairTranscript) Hash() [32]byte {
	b := []byte(fmt.Sprintf("muros-had pair v%d\x00", PairVersion))
	b = append(b, t.ListenerCert[:]...)
	b = append(b, t.JoinerCert[:]...)
	b = append(b, t.ListenerNonce[:]...)
	b = append(b, t.JoinerNonce[:]...)
	for _, n := range []PairNames{t.Listener, t.Joiner} {
		b = appendStr8(b, n.Node)
		b = appendStr8(b, n.Peer)
		b = appendStr8(b, n.Alg)
	}
	return sha256.Sum256(b)
}

// The two sides of the exchange, the labels of their proofs.
const (
	RoleListener = "listener"
	RoleJoiner   = "joiner"
)

// PairProof is the side's proof of knowing code in the exchange t:
// HMAC-SHA-256 keyed by HKDF-SHA-256 (RFC 5869) of the code with the
// transcript's hash as salt, over the side's label.
func PairProof(code PairCode, t PairTranscript, role string) [32]byte {
	h := t.Hash()
	key, err := hkdf.Key(sha256.New, []byte(code.data), h[:], fmt.Sprintf("muros-had pair v%d proof", PairVersion), 32)
	if err != nil {
		panic(err) // 32 bytes of SHA-256 HKDF cannot fail
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(role))
	var out [32]byte
	copy(out[:], mac.Sum(nil))
	return out
}

// VerifyPairProof reports, in constant time, whether got is the side's
// proof for code in t.
func VerifyPairProof(code PairCode, t PairTranscript, role string, got [32]byte) bool {
	want := PairProof(code, t, role)
	return hmac.Equal(want[:], got[:])
}

// PairSecret is the shared JWT secret: HKDF-SHA-256 of both sides'
// shares (sent only after both operators confirmed) with the transcript's
// hash as salt. Neither side alone chooses it.
func PairSecret(t PairTranscript, listenerShare, joinerShare [32]byte) [32]byte {
	h := t.Hash()
	ikm := append(append([]byte{}, listenerShare[:]...), joinerShare[:]...)
	key, err := hkdf.Key(sha256.New, ikm, h[:], fmt.Sprintf("muros-had pair v%d jwt secret", PairVersion), 32)
	if err != nil {
		panic(err)
	}
	var out [32]byte
	copy(out[:], key)
	return out
}

// SecretFileContent is what the JWT secret file holds: the secret in hex
// (64 characters, a 256-bit key for any HS algorithm) and a newline.
func SecretFileContent(secret [32]byte) []byte {
	return []byte(hex.EncodeToString(secret[:]) + "\n")
}

// Pairing refusal reasons (counted by the listener, sent in MsgRefuse,
// shown to the operator).
const (
	PairWrongSource     = "wrong_source"     // a connection not from the configured peer address
	PairRateLimited     = "rate_limited"     // too soon after a failed attempt
	PairHandshake       = "handshake"        // TLS failed (a replayed recording ends here)
	PairMalformed       = "malformed"        // a message that does not decode, or out of order
	PairWrongCode       = "wrong_code"       // the joiner's proof does not verify
	PairCodeVoid        = "code_void"        // too many wrong codes: this code is spent
	PairCodeExpired     = "code_expired"     // the proof came after the code's lifetime
	PairPeerProof       = "peer_proof"       // the listener's proof does not verify: another box
	PairNamesMismatch   = "names"            // issuer/audience/algorithm do not match
	PairFingerprint     = "fingerprint"      // the peer's certificate is not the expected one
	PairPairedElsewhere = "paired_elsewhere" // this node pins another certificate
	PairDeclined        = "declined"         // an operator answered no
	PairWriteFailed     = "write_failed"     // a side could not write its files
)

// PairError is a refusal of the pairing: Reason is one of the Pair*
// reasons, Peer says the other side sent it.
type PairError struct {
	Reason string
	Peer   bool
	Err    error
}

func (e *PairError) Error() string {
	who := "refused"
	if e.Peer {
		who = "refused by the peer"
	}
	if e.Err == nil {
		return fmt.Sprintf("pairing %s (%s)", who, e.Reason)
	}
	return fmt.Sprintf("pairing %s (%s): %v", who, e.Reason, e.Err)
}

func (e *PairError) Unwrap() error { return e.Err }

func refusal(reason string, format string, args ...any) *PairError {
	return &PairError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// CheckPairNames checks that the peer's hello describes this node's
// counterpart: its issuer is this node's audience and the other way
// round, and both sign with the same algorithm.
func CheckPairNames(self, peer PairNames) error {
	if peer.Node != self.Peer || peer.Peer != self.Node || peer.Alg != self.Alg {
		return refusal(PairNamesMismatch,
			"this node is %q expecting %q (%s), the peer is %q expecting %q (%s): check role and dbsync.jwt on both",
			self.Node, self.Peer, self.Alg, peer.Node, peer.Peer, peer.Alg)
	}
	return nil
}

// CurrentPin is the pin this node holds before pairing.
type CurrentPin struct {
	Pin string // normalized hex; empty: none
	// FromConfig: the pin is dbsync.tls.peer_sha256 in the configuration
	// file, which pairing does not edit (the pin file is read only when
	// the file has none).
	FromConfig bool
}

// CheckPairable decides whether this node may pair with the peer whose
// certificate has fingerprint peerFP: always when it pins nothing or
// pins that certificate (pairing again with the same box); with force
// when it pins another from the pin file; never when the configuration
// file pins another (the operator removes the key first).
func CheckPairable(cur CurrentPin, peerFP string, force bool) error {
	if cur.Pin == "" || cur.Pin == peerFP {
		return nil
	}
	if cur.FromConfig {
		return refusal(PairPairedElsewhere,
			"dbsync.tls.peer_sha256 in the configuration pins %s, not the peer's %s: remove the key (the pin file is used without it) and pair again", cur.Pin, peerFP)
	}
	if !force {
		return refusal(PairPairedElsewhere,
			"this node is paired with the box whose certificate is %s, not %s: pair with --force to replace it", cur.Pin, peerFP)
	}
	return nil
}

// PairAttempts is the listener's book of attempts: every refusal counted by
// reason; a wrong code spends one of MaxWrongCodes tries of the code (the
// code is void after the last), and after any failure from the peer's
// address the next attempt waits Backoff.
type PairAttempts struct {
	MaxWrongCodes int           // default 3
	Backoff       time.Duration // default 1 s
	wrongCodes    int
	lastFailure   time.Time
	counts        map[string]uint64
}

func (a *PairAttempts) defaults() {
	if a.MaxWrongCodes == 0 {
		a.MaxWrongCodes = 3
	}
	if a.Backoff == 0 {
		a.Backoff = time.Second
	}
	if a.counts == nil {
		a.counts = map[string]uint64{}
	}
}

// Admit decides whether an attempt from the peer's address may start at
// now; a refusal is counted.
func (a *PairAttempts) Admit(now time.Time) bool {
	a.defaults()
	if !a.lastFailure.IsZero() && now.Sub(a.lastFailure) < a.Backoff {
		a.counts[PairRateLimited]++
		return false
	}
	return true
}

// Fail counts a failed attempt at now for reason and reports whether the
// code is now void (the last wrong code). Reasons that do not come from
// the peer's address (wrong_source, rate_limited) do not start a backoff:
// a stranger must not delay the peer.
func (a *PairAttempts) Fail(reason string, now time.Time) (void bool) {
	a.defaults()
	a.counts[reason]++
	if reason == PairWrongSource || reason == PairRateLimited {
		return false
	}
	a.lastFailure = now
	if reason == PairWrongCode {
		a.wrongCodes++
		if a.wrongCodes >= a.MaxWrongCodes {
			a.counts[PairCodeVoid]++
			return true
		}
	}
	return false
}

// Counts is a copy of the refusals by reason.
func (a *PairAttempts) Counts() map[string]uint64 {
	out := make(map[string]uint64, len(a.counts))
	for k, v := range a.counts {
		out[k] = v
	}
	return out
}

// FormatFingerprint shows a fingerprint (normalized hex) in groups of eight
// for reading aloud and comparing across two screens.
func FormatFingerprint(fp string) string {
	var b strings.Builder
	for i := 0; i < len(fp); i += 8 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(fp[i:min(i+8, len(fp))])
	}
	return b.String()
}
