package peerlink

// Pairing, the shell: the listener (PairListener.Serve) and the joiner
// (Join) run the exchange of pair.go over TLS 1.3 with both certificates
// presented, ask the operator through PairConfig.Confirm and hand the
// outcome to PairConfig.Write only once both operators said yes.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// PairSummary is what the operator confirms: both fingerprints and names,
// and the peer's address.
type PairSummary struct {
	SelfFingerprint, PeerFingerprint string
	Self, Peer                       PairNames
	PeerAddr                         netip.AddrPort
}

// PairResult is a pairing both sides confirmed.
type PairResult struct {
	PairSummary
	Secret [32]byte
	// PeerWrote: the peer said it wrote its files too (MsgDone).
	PeerWrote bool
}

// PairConfig configures either side.
type PairConfig struct {
	Identity Identity
	Names    PairNames // this node's: JWT issuer, audience, algorithm
	// Peer is the configured peer address: the listener accepts only
	// connections from it, the joiner dials it.
	Peer netip.Addr
	// Current is the pin this node holds; Force lets a pairing replace a
	// pin-file pin of another certificate (CheckPairable).
	Current CurrentPin
	Force   bool
	// ExpectPeer, when set (normalized hex), is the only peer certificate
	// accepted, checked right after the TLS handshake.
	ExpectPeer string
	// Confirm asks the operator; it must return when ctx ends. Called once
	// per pairing, after both proofs verified.
	Confirm func(ctx context.Context, s PairSummary) (bool, error)
	// Write stores the outcome (pin, then secret); called once both
	// confirmed, before this side says MsgDone.
	Write func(PairResult) error
	// StepTimeout bounds each step of the exchange other than the
	// confirmation (default 30 s).
	StepTimeout time.Duration
	Now         func() time.Time // default time.Now
	Rand        io.Reader        // default crypto/rand.Reader
	Log         *slog.Logger
}

func (c *PairConfig) defaults() error {
	if c.StepTimeout == 0 {
		c.StepTimeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if len(c.Identity.Cert.Certificate) == 0 {
		return errors.New("pairing: no TLS identity")
	}
	if c.Confirm == nil || c.Write == nil {
		return errors.New("pairing: Confirm and Write are required")
	}
	if !c.Peer.IsValid() {
		return errors.New("pairing: no peer address")
	}
	return nil
}

func certSum(der []byte) [32]byte { return sha256.Sum256(der) }

// pairTLS is the TLS 1.3 configuration of either side: this node's
// certificate, the peer's required and taken as it is (the exchange's
// proofs and the operator authenticate it, not a chain).
func pairTLS(id Identity, server bool) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
	}
	if server {
		c.ClientAuth = tls.RequireAnyClientCert
	} else {
		c.InsecureSkipVerify = true // the peer's certificate is what the pairing learns
	}
	return c
}

// pairConn is one TLS connection of the exchange.
type pairConn struct {
	c    *tls.Conn
	cfg  *PairConfig
	peer [32]byte // the peer's certificate's SHA-256
	addr netip.AddrPort
}

func (p *pairConn) send(m PairMessage) error {
	_, err := p.c.Write(AppendPairMessage(nil, m))
	return err
}

func (p *pairConn) refuse(reason string) {
	p.c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = p.send(PairMessage{Type: MsgRefuse, Reason: reason})
}

// recv reads the next message, which must be of type want; a MsgRefuse
// becomes the peer's PairError.
func (p *pairConn) recv(want PairMsgType) (PairMessage, error) {
	m, err := ReadPairMessage(p.c)
	if err != nil {
		if errors.Is(err, ErrPairMessage) {
			return m, &PairError{Reason: PairMalformed, Err: err}
		}
		return m, fmt.Errorf("pairing: reading from %s: %w", p.addr, err)
	}
	if m.Type == MsgRefuse {
		return m, &PairError{Reason: m.Reason, Peer: true}
	}
	if m.Type != want {
		return m, &PairError{Reason: PairMalformed, Err: fmt.Errorf("message %d, want %d", m.Type, want)}
	}
	return m, nil
}

// stepDeadline bounds the next step; connection deadlines are the
// kernel's wall clock, whatever Now says.
func (p *pairConn) stepDeadline() {
	p.c.SetDeadline(time.Now().Add(p.cfg.StepTimeout))
}

func hexSum(s [32]byte) string { return hex.EncodeToString(s[:]) }

func (p *pairConn) checkExpected() error {
	if p.cfg.ExpectPeer != "" && hexSum(p.peer) != p.cfg.ExpectPeer {
		return refusal(PairFingerprint, "the box at %s has certificate %s, expected %s", p.addr, hexSum(p.peer), p.cfg.ExpectPeer)
	}
	return nil
}

func newNonce(r io.Reader) ([32]byte, error) {
	var n [32]byte
	_, err := io.ReadFull(r, n[:])
	return n, err
}

// PairListener is the side that shows the code and waits for the peer.
type PairListener struct {
	cfg      PairConfig
	code     PairCode
	expires  time.Time
	attempts PairAttempts
	// refused, when set, hears each refused attempt the listener
	// survives (tests wait on it instead of on time).
	refused func(error)
}

// NewPairListener prepares a listener for code, valid for ttl from now.
func NewPairListener(cfg PairConfig, code PairCode, ttl time.Duration) (*PairListener, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if code.IsZero() || ttl <= 0 {
		return nil, errors.New("pairing: a code and a lifetime are required")
	}
	return &PairListener{cfg: cfg, code: code, expires: cfg.Now().Add(ttl)}, nil
}

// Rejected counts the refused attempts by reason.
func (l *PairListener) Rejected() map[string]uint64 { return l.attempts.Counts() }

// Serve accepts connections on ln, one at a time, until one pairing was
// confirmed or failed after both proofs verified (one pairing per code),
// the code is void or expired, or ctx ends. It closes ln.
func (l *PairListener) Serve(ctx context.Context, ln net.Listener) (PairResult, error) {
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				if !l.cfg.Now().Before(l.expires) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return PairResult{}, refusal(PairCodeExpired, "the code expired unused")
				}
				return PairResult{}, ctx.Err()
			}
			return PairResult{}, fmt.Errorf("pairing: accept: %w", err)
		}
		res, done, err := l.attempt(ctx, raw)
		if done {
			return res, err
		}
		l.cfg.Log.Warn("pairing: attempt refused", "remote", raw.RemoteAddr().String(), "err", err)
		if l.refused != nil {
			l.refused(err)
		}
	}
}

// attempt handles one connection; done says the listener stops with
// (res, err).
func (l *PairListener) attempt(ctx context.Context, raw net.Conn) (res PairResult, done bool, err error) {
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	ap, _ := netip.ParseAddrPort(raw.RemoteAddr().String())
	if ap.Addr().Unmap().WithZone("") != l.cfg.Peer.Unmap().WithZone("") {
		l.attempts.Fail(PairWrongSource, l.cfg.Now())
		return res, false, refusal(PairWrongSource, "connection from %s, the configured peer is %s", ap.Addr(), l.cfg.Peer)
	}
	if !l.attempts.Admit(l.cfg.Now()) {
		return res, false, refusal(PairRateLimited, "too soon after a failed attempt")
	}
	fail := func(e error) (PairResult, bool, error) {
		var pe *PairError
		reason := PairMalformed
		if errors.As(e, &pe) {
			reason = pe.Reason
		}
		void := l.attempts.Fail(reason, l.cfg.Now())
		if void {
			return PairResult{}, true, refusal(PairCodeVoid, "%d wrong codes: this code is void, run pair again for a new one", l.attempts.MaxWrongCodes)
		}
		return PairResult{}, reason == PairCodeExpired, e
	}
	tc := tls.Server(raw, pairTLS(l.cfg.Identity, true))
	p := &pairConn{c: tc, cfg: &l.cfg, addr: ap}
	p.stepDeadline()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(refusal(PairHandshake, "TLS handshake with %s: %v", ap, err))
	}
	p.peer = certSum(tc.ConnectionState().PeerCertificates[0].Raw)
	if err := p.checkExpected(); err != nil {
		p.refuse(PairFingerprint)
		return fail(err)
	}
	nonce, err := newNonce(l.cfg.Rand)
	if err != nil {
		return PairResult{}, true, err
	}
	if err := p.send(PairMessage{Type: MsgListenerHello, Version: PairVersion, Nonce: nonce, Names: l.cfg.Names}); err != nil {
		return fail(refusal(PairHandshake, "sending hello: %v", err))
	}
	jh, err := p.recv(MsgJoinerHello)
	if err != nil {
		return fail(err)
	}
	t := PairTranscript{
		ListenerCert: certSum(l.cfg.Identity.Cert.Certificate[0]), JoinerCert: p.peer,
		ListenerNonce: nonce, JoinerNonce: jh.Nonce,
		Listener: l.cfg.Names, Joiner: jh.Names,
	}
	if !l.cfg.Now().Before(l.expires) {
		p.refuse(PairCodeExpired)
		return fail(refusal(PairCodeExpired, "the code expired at %s", l.expires.Format(time.RFC3339)))
	}
	if !VerifyPairProof(l.code, t, RoleJoiner, jh.Proof) {
		p.refuse(PairWrongCode)
		return fail(refusal(PairWrongCode, "the box at %s (certificate %s) does not know the code", ap, hexSum(p.peer)))
	}
	// From here the peer proved the code: whatever happens, this code
	// has served its one pairing.
	if err := CheckPairNames(l.cfg.Names, jh.Names); err != nil {
		p.refuse(PairNamesMismatch)
		return PairResult{}, true, err
	}
	if err := CheckPairable(l.cfg.Current, hexSum(p.peer), l.cfg.Force); err != nil {
		p.refuse(PairPairedElsewhere)
		return PairResult{}, true, err
	}
	if err := p.send(PairMessage{Type: MsgListenerProof, Proof: PairProof(l.code, t, RoleListener)}); err != nil {
		return PairResult{}, true, fmt.Errorf("pairing: sending proof: %w", err)
	}
	res, err = p.finish(ctx, t, jh.Names, true)
	return res, true, err
}

// Join is the side that typed the code: it dials the configured peer with
// dial (address cfg.Peer and the pairing port), proves the code, checks the
// listener's proof and goes on as the listener does.
func Join(ctx context.Context, cfg PairConfig, code PairCode, dial func(ctx context.Context) (net.Conn, error)) (PairResult, error) {
	if err := cfg.defaults(); err != nil {
		return PairResult{}, err
	}
	raw, err := dial(ctx)
	if err != nil {
		return PairResult{}, fmt.Errorf("pairing: no pairing listener at the peer %s (it stops after one pairing or when its code expires): %w", cfg.Peer, err)
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	ap, _ := netip.ParseAddrPort(raw.RemoteAddr().String())
	tc := tls.Client(raw, pairTLS(cfg.Identity, false))
	p := &pairConn{c: tc, cfg: &cfg, addr: ap}
	p.stepDeadline()
	if err := tc.HandshakeContext(ctx); err != nil {
		return PairResult{}, refusal(PairHandshake, "TLS handshake with %s: %v", ap, err)
	}
	p.peer = certSum(tc.ConnectionState().PeerCertificates[0].Raw)
	// Before anything of the code leaves: a box we would refuse anyway
	// gets no proof to work on.
	if err := p.checkExpected(); err != nil {
		p.refuse(PairFingerprint)
		return PairResult{}, err
	}
	if err := CheckPairable(cfg.Current, hexSum(p.peer), cfg.Force); err != nil {
		p.refuse(PairPairedElsewhere)
		return PairResult{}, err
	}
	lh, err := p.recv(MsgListenerHello)
	if err != nil {
		return PairResult{}, err
	}
	if err := CheckPairNames(cfg.Names, lh.Names); err != nil {
		p.refuse(PairNamesMismatch)
		return PairResult{}, err
	}
	nonce, err := newNonce(cfg.Rand)
	if err != nil {
		return PairResult{}, err
	}
	t := PairTranscript{
		ListenerCert: p.peer, JoinerCert: certSum(cfg.Identity.Cert.Certificate[0]),
		ListenerNonce: lh.Nonce, JoinerNonce: nonce,
		Listener: lh.Names, Joiner: cfg.Names,
	}
	if err := p.send(PairMessage{Type: MsgJoinerHello, Version: PairVersion, Nonce: nonce, Names: cfg.Names, Proof: PairProof(code, t, RoleJoiner)}); err != nil {
		return PairResult{}, fmt.Errorf("pairing: sending hello: %w", err)
	}
	lp, err := p.recv(MsgListenerProof)
	if err != nil {
		return PairResult{}, err
	}
	if !VerifyPairProof(code, t, RoleListener, lp.Proof) {
		p.refuse(PairPeerProof)
		return PairResult{}, refusal(PairPeerProof, "the box at %s (certificate %s) does not know this code: it is not the box that showed it", ap, hexSum(p.peer))
	}
	return p.finish(ctx, t, lh.Names, false)
}

// finish asks the operator, trades the shares once both said yes, writes
// and trades MsgDone. Either side's no, or a lost connection before both
// shares, writes nothing.
func (p *pairConn) finish(ctx context.Context, t PairTranscript, peerNames PairNames, listener bool) (PairResult, error) {
	cfg := p.cfg
	sum := PairSummary{
		SelfFingerprint: hexSum(certSum(cfg.Identity.Cert.Certificate[0])), PeerFingerprint: hexSum(p.peer),
		Self: cfg.Names, Peer: peerNames, PeerAddr: p.addr,
	}
	share, err := newNonce(cfg.Rand)
	if err != nil {
		return PairResult{}, err
	}
	// The confirmation waits for people: no step deadline, ctx bounds it.
	p.c.SetDeadline(time.Time{})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		ok  bool
		err error
	}
	local := make(chan answer, 1)
	go func() {
		ok, err := cfg.Confirm(cctx, sum)
		local <- answer{ok, err}
	}()
	type incoming struct {
		m   PairMessage
		err error
	}
	remote := make(chan incoming, 1)
	go func() {
		m, err := p.recv(MsgConfirm)
		remote <- incoming{m, err}
	}()
	var peerShare *[32]byte
	confirmed := false
	for !confirmed || peerShare == nil {
		select {
		case a := <-local:
			local = nil
			if a.err != nil || !a.ok {
				p.refuse(PairDeclined)
				if a.err != nil {
					return PairResult{}, &PairError{Reason: PairDeclined, Err: a.err}
				}
				return PairResult{}, refusal(PairDeclined, "not confirmed on this node: nothing written")
			}
			confirmed = true
			if err := p.send(PairMessage{Type: MsgConfirm, Share: share}); err != nil {
				// The peer may have refused and closed meanwhile: its
				// reason says more than the broken write.
				if remote != nil {
					if in := <-remote; in.err != nil {
						return PairResult{}, in.err
					}
				}
				return PairResult{}, fmt.Errorf("pairing: sending confirmation: %w", err)
			}
		case in := <-remote:
			remote = nil
			if in.err != nil {
				return PairResult{}, in.err
			}
			s := in.m.Share
			peerShare = &s
		case <-ctx.Done():
			return PairResult{}, fmt.Errorf("pairing: waiting for the confirmations: %w", ctx.Err())
		}
	}
	ls, js := share, *peerShare
	if !listener {
		ls, js = js, share
	}
	res := PairResult{PairSummary: sum, Secret: PairSecret(t, ls, js)}
	if err := cfg.Write(res); err != nil {
		p.refuse(PairWriteFailed)
		return PairResult{}, &PairError{Reason: PairWriteFailed, Err: err}
	}
	p.stepDeadline()
	if err := p.send(PairMessage{Type: MsgDone}); err != nil {
		return res, nil // written here; the peer's side is reported by its own run
	}
	if _, err := p.recv(MsgDone); err == nil {
		res.PeerWrote = true
	} else {
		cfg.Log.Warn("pairing: the peer did not say it wrote its files", "err", err)
	}
	return res, nil
}
