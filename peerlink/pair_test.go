package peerlink

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestPairCodeRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.SliceOfN(rapid.Byte(), codeDataChars, codeDataChars).Draw(t, "seed")
		c, err := NewPairCode(bytes.NewReader(seed))
		if err != nil {
			t.Fatal(err)
		}
		s := c.String()
		if len(s) != 29 || strings.Count(s, "-") != 5 {
			t.Fatalf("code %q: want 6 groups of 4", s)
		}
		// As typed: any case, spaces for hyphens, O for 0, L for 1.
		typed := strings.ToLower(strings.ReplaceAll(s, "-", " "))
		typed = strings.ReplaceAll(strings.ReplaceAll(typed, "0", "o"), "1", "l")
		for _, in := range []string{s, typed} {
			got, err := ParsePairCode(in)
			if err != nil {
				t.Fatalf("ParsePairCode(%q): %v", in, err)
			}
			if got != c {
				t.Fatalf("ParsePairCode(%q) = %v, want %v", in, got, c)
			}
		}
	})
}

// TestPairCodeTypos: every single-symbol change and every swap of two
// different symbols is caught by the checksum (not only most of them).
func TestPairCodeTypos(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.SliceOfN(rapid.Byte(), codeDataChars, codeDataChars).Draw(t, "seed")
		c, _ := NewPairCode(bytes.NewReader(seed))
		sym := []byte(strings.ReplaceAll(c.String(), "-", ""))
		i := rapid.IntRange(0, len(sym)-1).Draw(t, "i")
		typo := append([]byte(nil), sym...)
		if rapid.Bool().Draw(t, "swap") {
			j := rapid.IntRange(0, len(sym)-1).Draw(t, "j")
			if sym[i] == sym[j] {
				t.Skip("same symbol")
			}
			typo[i], typo[j] = typo[j], typo[i]
		} else {
			r := crockford[rapid.IntRange(0, 31).Draw(t, "sym")]
			if r == sym[i] {
				t.Skip("same symbol")
			}
			typo[i] = r
		}
		if _, err := ParsePairCode(string(typo)); !errors.Is(err, ErrCodeTypo) {
			t.Fatalf("ParsePairCode(%s) of %s: %v, want ErrCodeTypo", typo, sym, err)
		}
	})
}

func TestParsePairCodeRefuses(t *testing.T) {
	for _, in := range []string{"", "ABCD", "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345", "ABCD-EFGH-JKMN-PQRS-TVWX-YZ0U", "ÄBCD-EFGH-JKMN-PQRS-TVWX-YZ01"} {
		if _, err := ParsePairCode(in); !errors.Is(err, ErrCodeTypo) {
			t.Errorf("ParsePairCode(%q): %v, want ErrCodeTypo", in, err)
		}
	}
}

func pairNamesGen() *rapid.Generator[PairNames] {
	name := rapid.StringMatching(`[!-~]{1,40}`)
	return rapid.Custom(func(t *rapid.T) PairNames {
		return PairNames{Node: name.Draw(t, "node"), Peer: name.Draw(t, "peer"), Alg: rapid.SampledFrom([]string{"HS256", "HS384", "HS512"}).Draw(t, "alg")}
	})
}

func bytes32(t *rapid.T, label string) (b [32]byte) {
	copy(b[:], rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, label))
	return b
}

func pairMessageGen() *rapid.Generator[PairMessage] {
	return rapid.Custom(func(t *rapid.T) PairMessage {
		m := PairMessage{Type: rapid.SampledFrom([]PairMsgType{MsgListenerHello, MsgJoinerHello, MsgListenerProof, MsgConfirm, MsgRefuse, MsgDone}).Draw(t, "type")}
		switch m.Type {
		case MsgListenerHello, MsgJoinerHello:
			m.Version, m.Nonce, m.Names = PairVersion, bytes32(t, "nonce"), pairNamesGen().Draw(t, "names")
			if m.Type == MsgJoinerHello {
				m.Proof = bytes32(t, "proof")
			}
		case MsgListenerProof:
			m.Proof = bytes32(t, "proof")
		case MsgConfirm:
			m.Share = bytes32(t, "share")
		case MsgRefuse:
			m.Reason = rapid.StringMatching(`[a-z_]{1,64}`).Draw(t, "reason")
		}
		return m
	})
}

func TestPairMessageRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := pairMessageGen().Draw(t, "m")
		b := AppendPairMessage(nil, m)
		got, err := ParsePairMessage(b)
		if err != nil {
			t.Fatalf("ParsePairMessage: %v", err)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Fatalf("round trip (-sent +got):\n%s", diff)
		}
		if r, err := ReadPairMessage(bytes.NewReader(b)); err != nil || r != m {
			t.Fatalf("ReadPairMessage: %v, %v", r, err)
		}
		for n := range len(b) {
			if _, err := ParsePairMessage(b[:n]); err == nil {
				t.Fatalf("a frame cut at %d of %d bytes parsed", n, len(b))
			}
		}
		if _, err := ParsePairMessage(append(b, 0)); err == nil {
			t.Fatal("a frame with a byte after it parsed")
		}
	})
}

func TestParsePairMessageRefuses(t *testing.T) {
	hello := AppendPairMessage(nil, PairMessage{Type: MsgListenerHello, Version: 1, Names: PairNames{"a", "b", "HS256"}})
	badVersion := append([]byte(nil), hello...)
	badVersion[3] = 2
	space := AppendPairMessage(nil, PairMessage{Type: MsgRefuse, Reason: "a b"})
	long := []byte{byte(MsgDone), 0x04, 0x01}
	for name, b := range map[string][]byte{
		"unknown type": {9, 0, 0},
		"version":      badVersion,
		"space":        space,
		"body limit":   long,
		"empty name":   AppendPairMessage(nil, PairMessage{Type: MsgListenerHello, Version: 1, Names: PairNames{"", "b", "HS256"}}),
		"done body":    {byte(MsgDone), 0, 1, 0},
	} {
		if _, err := ParsePairMessage(b); !errors.Is(err, ErrPairMessage) {
			t.Errorf("%s: %v, want ErrPairMessage", name, err)
		}
	}
}

// FuzzParsePairMessage: whatever arrives from the network decodes or is an
// error, never a panic; what decodes is canonical (encodes to the same
// bytes).
func FuzzParsePairMessage(f *testing.F) {
	for _, m := range []PairMessage{
		{Type: MsgListenerHello, Version: 1, Names: PairNames{"muros-had-master", "muros-had-backup", "HS256"}},
		{Type: MsgJoinerHello, Version: 1, Names: PairNames{"fw-b", "fw-a", "HS512"}, Proof: [32]byte{1}},
		{Type: MsgListenerProof, Proof: [32]byte{2}},
		{Type: MsgConfirm, Share: [32]byte{3}},
		{Type: MsgRefuse, Reason: PairWrongCode},
		{Type: MsgDone},
	} {
		f.Add(AppendPairMessage(nil, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParsePairMessage(b)
		if err != nil {
			if !errors.Is(err, ErrPairMessage) {
				t.Fatalf("error not ErrPairMessage: %v", err)
			}
			return
		}
		if re := AppendPairMessage(nil, m); !bytes.Equal(re, b) {
			t.Fatalf("not canonical: %x re-encodes to %x", b, re)
		}
		if r, err := ReadPairMessage(bytes.NewReader(b)); err != nil || r != m {
			t.Fatalf("ReadPairMessage disagrees: %v, %v", r, err)
		}
	})
}

// TestPairProofBinding: a proof verifies only for the code, both
// certificates, both nonces, both hellos' names and the role it was made
// for: a proof recorded in one exchange is worth nothing in another.
func TestPairProofBinding(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		code, _ := NewPairCode(bytes.NewReader(rapid.SliceOfN(rapid.Byte(), 20, 20).Draw(t, "code")))
		tr := PairTranscript{
			ListenerCert: bytes32(t, "lc"), JoinerCert: bytes32(t, "jc"),
			ListenerNonce: bytes32(t, "ln"), JoinerNonce: bytes32(t, "jn"),
			Listener: pairNamesGen().Draw(t, "l"), Joiner: pairNamesGen().Draw(t, "j"),
		}
		role := rapid.SampledFrom([]string{RoleListener, RoleJoiner}).Draw(t, "role")
		p := PairProof(code, tr, role)
		if !VerifyPairProof(code, tr, role, p) {
			t.Fatal("proof does not verify")
		}
		other := map[string]string{RoleListener: RoleJoiner, RoleJoiner: RoleListener}[role]
		if VerifyPairProof(code, tr, other, p) {
			t.Fatal("a proof verifies for the other side's role")
		}
		changed := tr
		switch rapid.IntRange(0, 6).Draw(t, "field") {
		case 0:
			changed.ListenerCert[rapid.IntRange(0, 31).Draw(t, "i")] ^= 1
		case 1:
			changed.JoinerCert[rapid.IntRange(0, 31).Draw(t, "i")] ^= 1
		case 2:
			changed.ListenerNonce[rapid.IntRange(0, 31).Draw(t, "i")] ^= 1
		case 3:
			changed.JoinerNonce[rapid.IntRange(0, 31).Draw(t, "i")] ^= 1
		case 4:
			changed.Listener.Node += "x"
		case 5:
			changed.Joiner.Alg += "x"
		case 6:
			code2, _ := NewPairCode(bytes.NewReader(rapid.SliceOfN(rapid.Byte(), 20, 20).Draw(t, "code2")))
			if code2 == code {
				t.Skip("same code")
			}
			if VerifyPairProof(code2, tr, role, p) {
				t.Fatal("proof verifies under another code")
			}
			return
		}
		if VerifyPairProof(code, changed, role, p) {
			t.Fatalf("proof verifies for a changed transcript")
		}
		a, b := bytes32(t, "a"), bytes32(t, "b")
		if PairSecret(tr, a, b) == PairSecret(changed, a, b) || PairSecret(tr, a, b) == PairSecret(tr, b, a) {
			t.Fatal("secret not bound to the transcript and to which share is whose")
		}
	})
}

func TestCheckPairable(t *testing.T) {
	const peer, other = "aa", "bb"
	for _, c := range []struct {
		name  string
		cur   CurrentPin
		force bool
		want  string // reason, "" for allowed
	}{
		{"nothing pinned", CurrentPin{}, false, ""},
		{"same box again", CurrentPin{Pin: peer}, false, ""},
		{"same box in the config file", CurrentPin{Pin: peer, FromConfig: true}, false, ""},
		{"another box", CurrentPin{Pin: other}, false, PairPairedElsewhere},
		{"another box, forced", CurrentPin{Pin: other}, true, ""},
		{"another box in the config file, forced", CurrentPin{Pin: other, FromConfig: true}, true, PairPairedElsewhere},
	} {
		err := CheckPairable(c.cur, peer, c.force)
		if diff := cmp.Diff(c.want, reasonOf(err)); diff != "" {
			t.Errorf("%s: reason (-want +got):\n%s (%v)", c.name, diff, err)
		}
	}
}

func reasonOf(err error) string {
	var pe *PairError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func TestPairAttempts(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var a PairAttempts
	if !a.Admit(t0) {
		t.Fatal("first attempt refused")
	}
	if a.Fail(PairWrongSource, t0) || !a.Admit(t0) {
		t.Fatal("a stranger's connection delays or voids the peer's attempts")
	}
	if a.Fail(PairWrongCode, t0) {
		t.Fatal("void after one wrong code")
	}
	if a.Admit(t0.Add(999 * time.Millisecond)) {
		t.Fatal("admitted within the backoff")
	}
	if !a.Admit(t0.Add(time.Second)) {
		t.Fatal("refused after the backoff")
	}
	a.Fail(PairHandshake, t0.Add(time.Second))
	if a.Fail(PairWrongCode, t0.Add(3*time.Second)) {
		t.Fatal("void after two wrong codes")
	}
	if !a.Fail(PairWrongCode, t0.Add(5*time.Second)) {
		t.Fatal("not void after three wrong codes")
	}
	want := map[string]uint64{PairWrongSource: 1, PairRateLimited: 1, PairHandshake: 1, PairWrongCode: 3, PairCodeVoid: 1}
	if diff := cmp.Diff(want, a.Counts()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

// The exchange in process: connections are in-memory pipes whose remote
// address is chosen, so the listener's source check sees what a real
// network would show.

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

type memListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *memListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *memListener) Addr() net.Addr { return &net.TCPAddr{} }

// dialFrom connects to l as a client at from, the server seeing the
// listener's address at.
func (l *memListener) dialFrom(from, at string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		c, s := bufferedPipe()
		select {
		case l.conns <- addrConn{s, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from))}:
			return addrConn{c, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(at))}, nil
		case <-l.done:
			c.Close()
			s.Close()
			return nil, errors.New("connection refused")
		case <-ctx.Done():
			c.Close()
			s.Close()
			return nil, ctx.Err()
		}
	}
}

// bufferedPipe is net.Pipe with a message's worth of buffer each way
// (one relay goroutine per direction), as a TCP connection has: both
// sides may write at once.
func bufferedPipe() (net.Conn, net.Conn) {
	a, a2 := net.Pipe()
	b2, b := net.Pipe()
	go func() { io.Copy(b2, a2); b2.Close() }()
	go func() { io.Copy(a2, b2); a2.Close() }()
	return a, b
}

func newTestIdentity(t *testing.T, name string) Identity {
	t.Helper()
	c, k, err := selfSigned(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseIdentity(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var (
	addrA  = netip.MustParseAddr("192.0.2.1")
	addrB  = netip.MustParseAddr("192.0.2.2")
	namesA = PairNames{"muros-had-master", "muros-had-backup", "HS256"}
	namesB = PairNames{"muros-had-backup", "muros-had-master", "HS256"}
)

// side is one node's configuration and what it wrote.
type side struct {
	cfg     PairConfig
	mu      sync.Mutex
	written []PairResult
	asked   []PairSummary
}

func newSide(id Identity, names PairNames, peer netip.Addr, yes bool) *side {
	s := &side{}
	s.cfg = PairConfig{
		Identity: id, Names: names, Peer: peer,
		Confirm: func(ctx context.Context, sum PairSummary) (bool, error) {
			s.mu.Lock()
			s.asked = append(s.asked, sum)
			s.mu.Unlock()
			return yes, nil
		},
		Write: func(r PairResult) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.written = append(s.written, r)
			return nil
		},
		StepTimeout: 5 * time.Second,
	}
	return s
}

func (s *side) wrote() []PairResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PairResult(nil), s.written...)
}

// run serves a listener for a and joins it from b, returning both
// outcomes.
func runPair(t *testing.T, l *PairListener, ln *memListener, joinCfg PairConfig, code PairCode, from string) (lres PairResult, lerr error, jres PairResult, jerr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refused := make(chan struct{}, 16)
	l.refused = func(error) { refused <- struct{}{} }
	done := make(chan struct{})
	go func() {
		defer close(done)
		lres, lerr = l.Serve(ctx, ln)
	}()
	jres, jerr = Join(ctx, joinCfg, code, ln.dialFrom(from, "192.0.2.1:7444"))
	if jerr != nil {
		// A refused joiner may leave the listener waiting for the next
		// attempt: once it has dealt with this one, stop it.
		select {
		case <-refused:
			cancel()
		case <-done:
		}
	}
	<-done
	return
}

func newCode(t *testing.T) PairCode {
	c, err := NewPairCode(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPairExchange(t *testing.T) {
	idA, idB := newTestIdentity(t, "a"), newTestIdentity(t, "b")
	a, b := newSide(idA, namesA, addrB, true), newSide(idB, namesB, addrA, true)
	code := newCode(t)
	l, err := NewPairListener(a.cfg, code, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	lres, lerr, jres, jerr := runPair(t, l, newMemListener(), b.cfg, code, "192.0.2.2:40000")
	if lerr != nil || jerr != nil {
		t.Fatalf("listener: %v, joiner: %v", lerr, jerr)
	}
	if lres.Secret != jres.Secret || lres.Secret == ([32]byte{}) {
		t.Fatal("the two sides derived different secrets")
	}
	if lres.PeerFingerprint != idB.Fingerprint || jres.PeerFingerprint != idA.Fingerprint {
		t.Fatalf("pins: listener %s (want %s), joiner %s (want %s)", lres.PeerFingerprint, idB.Fingerprint, jres.PeerFingerprint, idA.Fingerprint)
	}
	if !lres.PeerWrote || !jres.PeerWrote {
		t.Error("a side did not hear the other's done")
	}
	// Both operators saw both fingerprints, the same two.
	for _, s := range []*side{a, b} {
		if len(s.asked) != 1 || len(s.written) != 1 {
			t.Fatalf("asked %d, wrote %d times", len(s.asked), len(s.written))
		}
	}
	if a.asked[0].SelfFingerprint != b.asked[0].PeerFingerprint || a.asked[0].PeerFingerprint != b.asked[0].SelfFingerprint {
		t.Errorf("the two screens disagree: %+v / %+v", a.asked[0], b.asked[0])
	}
}

func TestPairRefusals(t *testing.T) {
	idA, idB, idC := newTestIdentity(t, "a"), newTestIdentity(t, "b"), newTestIdentity(t, "c")
	for _, c := range []struct {
		name string
		// setup changes the sides before the run; listener reason and
		// joiner reason wanted ("" when that side does not stop with an
		// error of its own, e.g. the listener waiting on).
		setup            func(a, b *side, joinCode *PairCode, from *string)
		lreason, jreason string
		// counted: the reason the listener counted when it goes on
		// waiting (lreason "": a refusal before the joiner's proof does
		// not end the listener).
		counted string
	}{
		{"wrong code", func(a, b *side, jc *PairCode, _ *string) {
			*jc, _ = NewPairCode(bytes.NewReader(bytes.Repeat([]byte{7}, 20)))
		}, "", PairWrongCode, PairWrongCode},
		{"not from the configured peer", func(a, b *side, _ *PairCode, from *string) {
			*from = "198.51.100.9:40000"
		}, "", PairHandshake, PairWrongSource},
		{"joiner declines", func(a, b *side, _ *PairCode, _ *string) {
			b.cfg.Confirm = func(context.Context, PairSummary) (bool, error) { return false, nil }
		}, PairDeclined, PairDeclined, ""},
		{"listener declines", func(a, b *side, _ *PairCode, _ *string) {
			a.cfg.Confirm = func(context.Context, PairSummary) (bool, error) { return false, nil }
		}, PairDeclined, PairDeclined, ""},
		{"joiner paired elsewhere", func(a, b *side, _ *PairCode, _ *string) {
			b.cfg.Current = CurrentPin{Pin: idC.Fingerprint}
		}, "", PairPairedElsewhere, PairPairedElsewhere},
		{"listener paired elsewhere", func(a, b *side, _ *PairCode, _ *string) {
			a.cfg.Current = CurrentPin{Pin: idC.Fingerprint}
		}, PairPairedElsewhere, PairPairedElsewhere, ""},
		{"expected fingerprint differs", func(a, b *side, _ *PairCode, _ *string) {
			b.cfg.ExpectPeer = idC.Fingerprint
		}, "", PairFingerprint, PairFingerprint},
		{"names do not match (two masters)", func(a, b *side, _ *PairCode, _ *string) {
			b.cfg.Names = namesA
		}, "", PairNamesMismatch, PairNamesMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := newSide(idA, namesA, addrB, true), newSide(idB, namesB, addrA, true)
			code := newCode(t)
			joinCode, from := code, "192.0.2.2:40000"
			c.setup(a, b, &joinCode, &from)
			l, err := NewPairListener(a.cfg, code, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			_, lerr, _, jerr := runPair(t, l, newMemListener(), b.cfg, joinCode, from)
			want := c.lreason
			if want == "" {
				want = "other: context canceled"
			}
			if got := reasonOf(lerr); got != want {
				t.Errorf("listener: %q, want %q (%v)", got, want, lerr)
			}
			if got := reasonOf(jerr); got != c.jreason {
				t.Errorf("joiner: %q, want %q (%v)", got, c.jreason, jerr)
			}
			if c.counted != "" && l.Rejected()[c.counted] != 1 {
				t.Errorf("listener counted %v, want one %s", l.Rejected(), c.counted)
			}
			if len(a.wrote())+len(b.wrote()) != 0 {
				t.Error("a refused pairing wrote files")
			}
		})
	}
}

// TestPairVoidAfterWrongCodes: the third wrong code voids the code; the
// listener stops and the right code no longer pairs.
func TestPairVoidAfterWrongCodes(t *testing.T) {
	idA, idB := newTestIdentity(t, "a"), newTestIdentity(t, "b")
	a, b := newSide(idA, namesA, addrB, true), newSide(idB, namesB, addrA, true)
	code := newCode(t)
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	a.cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(2 * time.Second); return now }
	l, _ := NewPairListener(a.cfg, code, time.Hour)
	ln := newMemListener()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := l.Serve(ctx, ln); done <- err }()
	wrong, _ := NewPairCode(bytes.NewReader(bytes.Repeat([]byte{9}, 20)))
	for i := range 3 {
		if _, err := Join(ctx, b.cfg, wrong, ln.dialFrom("192.0.2.2:40000", "192.0.2.1:7444")); reasonOf(err) != PairWrongCode {
			t.Fatalf("wrong code %d: %v", i+1, err)
		}
	}
	if err := <-done; reasonOf(err) != PairCodeVoid {
		t.Fatalf("listener after three wrong codes: %v", err)
	}
	if _, err := Join(ctx, b.cfg, code, ln.dialFrom("192.0.2.2:40000", "192.0.2.1:7444")); err == nil {
		t.Fatal("the right code paired after the code was void")
	}
	if got := l.Rejected(); got[PairWrongCode] != 3 || got[PairCodeVoid] != 1 {
		t.Errorf("counts %v", got)
	}
}

// TestPairExpiredCode: a proof that arrives after the code's lifetime is
// refused, even on a connection accepted before.
func TestPairExpiredCode(t *testing.T) {
	idA, idB := newTestIdentity(t, "a"), newTestIdentity(t, "b")
	a, b := newSide(idA, namesA, addrB, true), newSide(idB, namesB, addrA, true)
	code := newCode(t)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	a.cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l, _ := NewPairListener(a.cfg, code, 5*time.Minute)
	mu.Lock()
	now = now.Add(5 * time.Minute)
	mu.Unlock()
	lres, lerr, _, jerr := runPair(t, l, newMemListener(), b.cfg, code, "192.0.2.2:40000")
	_ = lres
	if reasonOf(lerr) != PairCodeExpired || reasonOf(jerr) != PairCodeExpired {
		t.Fatalf("listener %v, joiner %v: want code_expired on both", lerr, jerr)
	}
}

// TestPairWrongBox: the box answering at the peer address is not the one
// that showed the code. One running its own pairing with another code
// refuses the joiner's proof; one that answers anything (an impostor)
// cannot make the listener's proof, and the joiner refuses it. Nothing is
// written either way.
func TestPairWrongBox(t *testing.T) {
	idB, idC := newTestIdentity(t, "b"), newTestIdentity(t, "c")
	b := newSide(idB, namesB, addrA, true)
	code := newCode(t) // shown by the real box A, which is not there

	t.Run("another pairing", func(t *testing.T) {
		c := newSide(idC, namesA, addrB, true)
		l, _ := NewPairListener(c.cfg, newCode(t), time.Minute)
		_, _, _, jerr := runPair(t, l, newMemListener(), b.cfg, code, "192.0.2.2:40000")
		if reasonOf(jerr) != PairWrongCode {
			t.Fatalf("joiner: %v", jerr)
		}
	})
	t.Run("impostor", func(t *testing.T) {
		ln := newMemListener()
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got []PairMessage
		done := make(chan struct{})
		go func() {
			defer close(done)
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			defer raw.Close()
			tc := pairTLSServer(raw, idC)
			if tc.HandshakeContext(ctx) != nil {
				return
			}
			tc.Write(AppendPairMessage(nil, PairMessage{Type: MsgListenerHello, Version: 1, Names: namesA}))
			m, _ := ReadPairMessage(tc)
			got = append(got, m)
			tc.Write(AppendPairMessage(nil, PairMessage{Type: MsgListenerProof, Proof: [32]byte{0xba, 0xd}}))
			m, _ = ReadPairMessage(tc)
			got = append(got, m)
		}()
		_, jerr := Join(ctx, b.cfg, code, ln.dialFrom("192.0.2.2:40000", "192.0.2.1:7444"))
		<-done
		if reasonOf(jerr) != PairPeerProof {
			t.Fatalf("joiner: %v, want peer_proof", jerr)
		}
		if len(got) != 2 || got[1].Type != MsgRefuse || got[1].Reason != PairPeerProof {
			t.Errorf("the impostor got %+v", got)
		}
	})
	if len(b.wrote()) != 0 {
		t.Error("the joiner wrote files for the wrong box")
	}
}

func pairTLSServer(raw net.Conn, id Identity) *tls.Conn { return tls.Server(raw, pairTLS(id, true)) }

func tlsClient(raw net.Conn, c *tls.Config) *tls.Conn { return tls.Client(raw, c) }

// TestPairReplay: the joiner's messages of a pairing, recorded in clear
// (more than a network recording gives), replayed to a listener with the
// same code and by a client with the joiner's very certificate, do not
// pair: the listener's nonce is new, so the recorded proof does not
// verify.
func TestPairReplay(t *testing.T) {
	idA, idB := newTestIdentity(t, "a"), newTestIdentity(t, "b")
	a, b := newSide(idA, namesA, addrB, true), newSide(idB, namesB, addrA, true)
	code := newCode(t)
	var recorded []PairMessage
	rec := b.cfg
	l, _ := NewPairListener(a.cfg, code, time.Minute)
	// Record the joiner's hello (with its proof) and confirmation by
	// running the joiner's steps through the codec on a live exchange.
	ln := newMemListener()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); l.Serve(ctx, ln) }()
	raw, err := ln.dialFrom("192.0.2.2:40000", "192.0.2.1:7444")(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc := tlsClient(raw, pairTLS(rec.Identity, false))
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	lh, err := ReadPairMessage(tc)
	if err != nil {
		t.Fatal(err)
	}
	tr := PairTranscript{ListenerCert: certSum(idA.Cert.Certificate[0]), JoinerCert: certSum(idB.Cert.Certificate[0]),
		ListenerNonce: lh.Nonce, JoinerNonce: [32]byte{42}, Listener: lh.Names, Joiner: namesB}
	hello := PairMessage{Type: MsgJoinerHello, Version: 1, Nonce: [32]byte{42}, Names: namesB, Proof: PairProof(code, tr, RoleJoiner)}
	recorded = append(recorded, hello, PairMessage{Type: MsgConfirm, Share: [32]byte{1}}, PairMessage{Type: MsgDone})
	for _, m := range recorded {
		tc.Write(AppendPairMessage(nil, m))
	}
	for {
		m, err := ReadPairMessage(tc)
		if err != nil || m.Type == MsgDone {
			break
		}
	}
	tc.Close()
	<-done
	if len(a.wrote()) != 1 {
		t.Fatalf("the recorded pairing itself did not pair: %d writes", len(a.wrote()))
	}

	// The replay, to a new listener with the same code.
	a2 := newSide(idA, namesA, addrB, true)
	l2, _ := NewPairListener(a2.cfg, code, time.Minute)
	ln2 := newMemListener()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	done2 := make(chan error, 1)
	go func() { _, err := l2.Serve(ctx2, ln2); done2 <- err }()
	raw2, err := ln2.dialFrom("192.0.2.2:40000", "192.0.2.1:7444")(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	tc2 := tlsClient(raw2, pairTLS(rec.Identity, false))
	if err := tc2.HandshakeContext(ctx2); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPairMessage(tc2); err != nil {
		t.Fatal(err)
	}
	// The recorded hello and its proof; the rest would follow an
	// accepted proof.
	tc2.Write(AppendPairMessage(nil, recorded[0]))
	answer, _ := ReadPairMessage(tc2)
	tc2.Close()
	cancel2()
	<-done2
	if answer.Type != MsgRefuse || answer.Reason != PairWrongCode {
		t.Errorf("the replayed proof got %+v, want a wrong_code refusal", answer)
	}
	if len(a2.wrote()) != 0 {
		t.Error("the replay paired")
	}
	if got := l2.Rejected()[PairWrongCode]; got != 1 {
		t.Errorf("wrong_code counted %d times", got)
	}
}
