package ctrel

import (
	"crypto/rand"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/ctsync/ctwire"
)

// bind makes r follow epoch ep as a master answering its nonce would: an
// ECHO of the nonce r's next RESYNC carries.
func bind(t *testing.T, r *Receiver, now time.Duration, ep uint64, seq uint32) {
	t.Helper()
	c := r.Tick(now, nil, 100)
	h := ctwire.Header{Type: ctwire.TypeEcho, Epoch: ep, Seq: seq}
	p := ctwire.AppendHandshake(nil, &ctwire.Handshake{Nonce: c.Handshake.Nonce})
	if v := r.OnDatagram(now, &h, p); v.Reason != ctwire.ReasonNone {
		t.Fatalf("echo of the receiver's nonce rejected: %+v", v)
	}
	if !r.Verified() {
		t.Fatal("receiver not verified after the echo of its nonce")
	}
}

// capture runs a master of epoch ep from its start with a backup: the
// backup binds and syncs, a flow is created and then destroyed. It returns
// every datagram the master sent, ECHOs of the backup's nonces included.
func capture(t *testing.T, ep uint64) (sent [][]byte, m *sim) {
	t.Helper()
	m = newSim(t, NewSender(SenderConfig{Epoch: ep}))
	m.tap = func(d []byte) { sent = append(sent, d) }
	m.converge(t)
	f := flowN(42, 3)
	m.s.Update(m.now, &f)
	m.step(10 * time.Millisecond)
	m.s.Destroy(m.now, f.Key())
	m.step(10 * time.Millisecond)
	m.step(time.Second) // a heartbeat
	if _, ok := m.table[f.Key()]; ok {
		t.Fatal("capture: destroyed flow still on the backup")
	}
	return sent, m
}

// replay feeds captured datagrams to r and returns the rejection reasons;
// it fails the test at the first one applied or accepted.
func replay(t *testing.T, r *Receiver, now time.Duration, ds [][]byte) map[ctwire.Reason]int {
	t.Helper()
	got := map[ctwire.Reason]int{}
	for i, d := range ds {
		h, p, err := ctwire.ParseHeader(d)
		if err != nil {
			t.Fatal(err)
		}
		v := r.OnDatagram(now+time.Duration(i)*time.Millisecond, &h, p)
		if v.Apply || v.Reason == ctwire.ReasonNone {
			t.Fatalf("replayed %v %d (epoch %d seq %d) accepted: %+v", h.Type, i, h.Epoch, h.Seq, v)
		}
		got[v.Reason]++
	}
	return got
}

// TestFreshReceiverRejectsReplays: a receiver made at a switch to backup
// or a restart (floor persisted from before) applies no replayed
// datagram: those of the floor's incarnation and older ones are stale,
// those of a later one unverified until the master answers the receiver's
// own nonce.
func TestFreshReceiverRejectsReplays(t *testing.T) {
	old, _ := capture(t, 1000)
	cur, _ := capture(t, 2000)
	r := newReceiver(t, ReceiverConfig{Peer: PeerConfig{Floor: 2000}})
	got := replay(t, r, 0, append(old, cur...))
	// The floor's incarnation is not followed: stale too.
	want := map[ctwire.Reason]int{ctwire.ReasonEpochStale: len(old) + len(cur)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rejections (-want +got):\n%s", diff)
	}
	if r.Verified() {
		t.Fatal("a replayed ECHO verified the receiver")
	}
	r = newReceiver(t, ReceiverConfig{Peer: PeerConfig{Floor: 1000}})
	got = replay(t, r, 0, append(old, cur...))
	want = map[ctwire.Reason]int{ctwire.ReasonEpochStale: len(old), ctwire.ReasonEpochUnverified: len(cur)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("floor 1000: rejections (-want +got):\n%s", diff)
	}
	// Nothing persisted (first start): the nonce alone holds.
	r = newReceiver(t, ReceiverConfig{})
	replay(t, r, 0, append(old, cur...))
	if r.Floor() != 0 {
		t.Fatalf("floor %d raised by replays", r.Floor())
	}
}

// TestRunningReceiverRejectsOldEpochAfterSilence: once the master it
// follows falls silent (dead), an older incarnation's datagrams stay
// stale; the receiver asks for proof with a new nonce, which no replay
// answers.
func TestRunningReceiverRejectsOldEpochAfterSilence(t *testing.T) {
	old, _ := capture(t, 1000)
	cur, m := capture(t, 2000)
	m.now += 4 * time.Second
	if m.r.Busy() {
		t.Fatal("idle synced receiver busy")
	}
	got := replay(t, m.r, m.now, append(old, cur...))
	if got[ctwire.ReasonEpochStale] != len(old) {
		t.Fatalf("rejections %v, want %d stale", got, len(old))
	}
	if !m.r.Busy() || m.r.Verified() {
		t.Fatal("stale epoch after silence did not make the receiver ask for proof")
	}
	if m.r.Floor() != 2000 {
		t.Fatalf("floor %d, want 2000", m.r.Floor())
	}
}

// TestStaleEpochWhileMasterTalksIsIgnored: replays of an older epoch
// while the master followed is alive cost nothing (no handshake, no bulk).
func TestStaleEpochWhileMasterTalksIsIgnored(t *testing.T) {
	old, _ := capture(t, 1000)
	_, m := capture(t, 2000)
	bulks := m.s.Stats().Bulks
	replay(t, m.r, m.now, old)
	for range 100 {
		m.step(10 * time.Millisecond)
	}
	if !m.r.Verified() || m.s.Stats().Bulks != bulks {
		t.Fatalf("verified %v, bulks %d -> %d", m.r.Verified(), bulks, m.s.Stats().Bulks)
	}
}

// TestRecoveryFromPeerWithLostState: the master's node lost its state
// directory and its clock is behind, so its new epoch is below the floor
// the backup remembers. Its datagrams are stale, but it answers the
// backup's nonce: the backup follows it and converges, running or freshly
// started, its floor never goes down, and the master learns from the
// RESYNC where its next epoch must start.
func TestRecoveryFromPeerWithLostState(t *testing.T) {
	const lowEpoch, floor = 5, 2000
	for _, fresh := range []bool{false, true} {
		_, m := capture(t, floor)
		m.s = NewSender(SenderConfig{Epoch: lowEpoch})
		for i := range 50 {
			f := flowN(i, 3)
			m.s.Update(m.now, &f)
		}
		m.step(0) // the new master's first datagrams: stale
		if fresh {
			m.r = newReceiver(t, ReceiverConfig{Peer: PeerConfig{Floor: floor}})
		}
		for range 500 { // past the peer timeout, then the handshake
			m.step(10 * time.Millisecond)
		}
		m.converge(t)
		learned := m.r.Tick(m.now, nil, 100).Handshake.Floor // what RESYNCs carry
		if m.r.Floor() != floor {
			t.Fatalf("fresh %v: floor %d, want %d (never lowered)", fresh, m.r.Floor(), floor)
		}
		if e, err := NextEpoch(learned, lowEpoch); learned != floor || e <= floor || err != nil {
			t.Fatalf("fresh %v: master learned floor %d", fresh, learned)
		}
	}
}

// TestNewIncarnationNeedsEcho: a master's restart (a higher epoch) is
// followed only once it echoes the nonce; a bulk follows the echo.
func TestNewIncarnationNeedsEcho(t *testing.T) {
	_, m := capture(t, 1000)
	m.s = NewSender(SenderConfig{Epoch: 3000})
	f := flowN(7, 3)
	m.s.Update(m.now, &f)
	m.converge(t)
	if m.r.Floor() != 3000 {
		t.Fatalf("floor %d", m.r.Floor())
	}
}

func TestNextEpoch(t *testing.T) {
	for _, tt := range []struct {
		last uint64
		wall int64
		want uint64
		err  error
	}{
		{0, 1000, 1000, nil},
		{5000, 1000, 5001, nil}, // clock behind the last epoch
		{999, 1000, 1000, nil},
		{0, -7, 1, nil},
		{math.MaxUint64 - 1, 1000, math.MaxUint64, nil},
		{math.MaxUint64, 1000, 0, ErrEpochExhausted}, // never wraps back
	} {
		got, err := NextEpoch(tt.last, tt.wall)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("NextEpoch(%d, %d) = %d, %v; want %d, %v", tt.last, tt.wall, got, err, tt.want, tt.err)
		}
	}
}

// TestResyncRequestEchoAndBulkRestart: every RESYNC is echoed first; only
// a fresh request with a new nonce restarts a bulk whose BULK_BEGIN went
// out (its requester ignored it), so that the new BULK_BEGIN follows the
// echo; a repeated nonce or a stale request never restarts one.
func TestResyncRequestEchoAndBulkRestart(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 9, MaxDatagram: 200})
	for i := range 20 {
		f := flowN(i, 3)
		s.Update(0, &f)
	}
	next := func() (ctwire.Header, []byte) {
		t.Helper()
		body, ok := s.Next(0, nil)
		if !ok {
			t.Fatal("nothing to send")
		}
		h, p, err := ctwire.ParseHeader(body)
		if err != nil {
			t.Fatal(err)
		}
		return h, p
	}
	for s.Pending() { // the queued updates
		next()
	}
	s.StartBulk()
	if h, _ := next(); h.Flags&ctwire.FlagBulkBegin == 0 {
		t.Fatalf("bulk did not begin: %+v", h)
	}
	n1 := ctwire.Handshake{Nonce: [16]byte{1}}
	for _, tt := range []struct {
		name    string
		hs      ctwire.Handshake
		fresh   bool
		restart bool
	}{
		{"fresh, new nonce", n1, true, true},
		{"fresh, same nonce (a retry)", n1, true, false},
		{"stale, new nonce", ctwire.Handshake{Nonce: [16]byte{2}}, false, false},
	} {
		bulks := s.Stats().Bulks
		s.OnResyncRequest(0, tt.hs, 77, tt.fresh)
		h, p := next()
		hs, err := ctwire.ParseHandshake(p)
		if h.Type != ctwire.TypeEcho || err != nil || hs != (ctwire.Handshake{Nonce: tt.hs.Nonce, Floor: 77}) {
			t.Fatalf("%s: first datagram %v %+v (%v), want the echo", tt.name, h.Type, hs, err)
		}
		h, _ = next()
		if restarted := h.Flags&ctwire.FlagBulkBegin != 0; restarted != tt.restart || (s.Stats().Bulks != bulks) != tt.restart {
			t.Fatalf("%s: bulk restarted %v (flags %x), want %v", tt.name, restarted, h.Flags, tt.restart)
		}
	}
}

// TestPeerEpochAtFloorIsStale: an epoch at or below the floor that is not
// the incarnation followed is stale, on a fresh peer (the master's control
// peer after a restart) as on one that follows an epoch below the floor
// (a peer that lost its state); the incarnation followed stays accepted.
func TestPeerEpochAtFloorIsStale(t *testing.T) {
	for _, tt := range []struct {
		name   string
		floor  uint64
		follow uint64 // 0: none
		epoch  uint64
		want   ctwire.Reason
	}{
		{"fresh peer, epoch at the floor", 2000, 0, 2000, ctwire.ReasonEpochStale},
		{"fresh peer, epoch below the floor", 2000, 0, 1999, ctwire.ReasonEpochStale},
		{"fresh peer, epoch above the floor", 2000, 0, 2001, ctwire.ReasonNone},
		{"following below the floor, the floor's epoch", 2000, 5, 2000, ctwire.ReasonEpochStale},
		{"following below the floor, between", 2000, 5, 1000, ctwire.ReasonEpochStale},
		{"following below the floor, its own epoch", 2000, 5, 5, ctwire.ReasonNone},
		{"following the floor's epoch", 2000, 2000, 2000, ctwire.ReasonNone},
	} {
		p := NewPeer(PeerConfig{Floor: tt.floor})
		if tt.follow != 0 {
			p.Bind(0, &ctwire.Header{Epoch: tt.follow, Seq: 1})
		}
		a := p.Accept(time.Millisecond, &ctwire.Header{Epoch: tt.epoch, Seq: 2})
		if a.Reason != tt.want {
			t.Errorf("%s: reason %v, want %v", tt.name, a.Reason, tt.want)
		}
	}
}

// TestReplayOfFloorEpochAfterRecovery: the backup follows a master whose
// epoch is below its floor (the master's node lost its state); replays of
// the old incarnation (epoch = floor) while the master talks are stale:
// no new nonce, no RESYNC, no restarted bulk.
func TestReplayOfFloorEpochAfterRecovery(t *testing.T) {
	const lowEpoch, floor = 5, 2000
	old, m := capture(t, floor)
	m.s = NewSender(SenderConfig{Epoch: lowEpoch})
	for i := range 50 {
		f := flowN(i, 3)
		m.s.Update(m.now, &f)
	}
	for range 500 {
		m.step(10 * time.Millisecond)
	}
	m.converge(t)
	if m.r.peer.Epoch() != lowEpoch {
		t.Fatalf("backup follows epoch %d, want %d", m.r.peer.Epoch(), lowEpoch)
	}
	bulks, asks := m.s.Stats().Bulks, m.r.Stats().ResyncRequests
	for range 30 { // 3 s of replays, one capture every 100 ms
		got := replay(t, m.r, m.now, old)
		if got[ctwire.ReasonEpochStale] != len(old) {
			t.Fatalf("replays of the floor's epoch: %v, want all %d stale", got, len(old))
		}
		for range 10 {
			m.step(10 * time.Millisecond)
		}
	}
	if !m.r.Verified() || m.s.Stats().Bulks != bulks || m.r.Stats().ResyncRequests != asks {
		t.Fatalf("verified %v, bulks %d -> %d, resync requests %d -> %d", m.r.Verified(), bulks, m.s.Stats().Bulks, asks, m.r.Stats().ResyncRequests)
	}
}

// TestStaleResyncEchoOnly: a stale RESYNC never starts a bulk, running or
// not; it is echoed at most once per StaleEchoInterval, the rest counted
// as rate limited.
func TestStaleResyncEchoOnly(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 9, StaleEchoInterval: 100 * time.Millisecond})
	f := flowN(1, 3)
	s.Update(0, &f)
	for s.Pending() {
		s.Next(0, nil)
	}
	hs := ctwire.Handshake{Nonce: [16]byte{3}}
	echoes := 0
	for i := range 20 { // every 30 ms: an echo every fourth
		now := time.Duration(i) * 30 * time.Millisecond
		s.OnResyncRequest(now, hs, 77, false)
		for s.Pending() {
			body, _ := s.Next(now, nil)
			if h, _, _ := ctwire.ParseHeader(body); h.Type == ctwire.TypeEcho {
				echoes++
			}
		}
	}
	want := [NumStaleOutcomes]uint64{StaleEchoed: 5, StaleLimited: 15}
	if diff := cmp.Diff(want, s.Stats().StaleResyncs); diff != "" || echoes != 5 {
		t.Fatalf("echoes %d, outcomes (-want +got):\n%s", echoes, diff)
	}
	if s.Stats().Bulks != 0 || s.Bulking() {
		t.Fatalf("stale RESYNCs started %d bulks", s.Stats().Bulks)
	}
}

// TestWrapNeedsReservedEpoch: a sender whose sequence numbers run out
// moves to the next epoch only once the caller reserved it (persisted
// it): no datagram carries an epoch a restart could reuse. It asks for the
// reservation ahead of time; the largest epoch never wraps.
func TestWrapNeedsReservedEpoch(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 500, Heartbeat: time.Millisecond})
	if _, ok := s.EpochWanted(); ok {
		t.Fatal("a new sender wants an epoch")
	}
	s.seq = math.MaxUint32 - 2
	e, ok := s.EpochWanted()
	if !ok || e != 501 {
		t.Fatalf("EpochWanted near the wrap = %d, %v; want 501", e, ok)
	}
	var seqs []uint32
	now := time.Duration(0)
	next := func() bool {
		now += time.Second
		body, ok := s.Next(now, nil)
		if ok {
			h, _, err := ctwire.ParseHeader(body)
			if err != nil {
				t.Fatal(err)
			}
			if h.Epoch != 500 && (h.Epoch != 501 || h.Seq == 0) {
				t.Fatalf("datagram epoch %d seq %d", h.Epoch, h.Seq)
			}
			seqs = append(seqs, h.Seq)
		}
		return ok
	}
	for next() {
		if len(seqs) > 10 {
			t.Fatalf("the sender wrapped without a reserved epoch: seqs %v, epoch %d", seqs, s.Epoch())
		}
	}
	if diff := cmp.Diff([]uint32{math.MaxUint32 - 1, math.MaxUint32}, seqs); diff != "" {
		t.Fatalf("seqs before the reservation (-want +got):\n%s", diff)
	}
	s.Reserve(e)
	if !next() || s.Epoch() != 501 || seqs[2] != 1 {
		t.Fatalf("after the reservation: epoch %d seqs %v", s.Epoch(), seqs)
	}
	if _, ok := s.EpochWanted(); ok {
		t.Fatal("epoch still wanted after the wrap")
	}
	top := NewSender(SenderConfig{Epoch: math.MaxUint64})
	top.seq = math.MaxUint32
	if e, ok := top.EpochWanted(); ok {
		t.Fatalf("the largest epoch wants %d", e)
	}
	top.Reserve(0)
	if _, ok := top.Next(time.Hour, nil); ok || top.Epoch() != math.MaxUint64 {
		t.Fatalf("the largest epoch wrapped to %d", top.Epoch())
	}
}

// newReceiver is NewReceiver with crypto/rand as its nonce source.
func newReceiver(t testing.TB, cfg ReceiverConfig) *Receiver {
	t.Helper()
	cfg.Rand = rand.Reader
	r, err := NewReceiver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// flakyRand fails its first fails reads, then returns bytes of 0xAB.
type flakyRand struct{ fails int }

func (f *flakyRand) Read(p []byte) (int, error) {
	if f.fails > 0 {
		f.fails--
		return 0, errors.New("entropy source down")
	}
	for i := range p {
		p[i] = 0xAB
	}
	return len(p), nil
}

// TestNonceSourceFailure: the receiver reads its nonces from the source
// its shell gives it; a failing source is an error value (no panic, no
// RESYNC with a nonce not drawn), retried at the next Tick; no source at
// all is refused.
func TestNonceSourceFailure(t *testing.T) {
	if _, err := NewReceiver(ReceiverConfig{}); !errors.Is(err, ErrNoRand) {
		t.Fatalf("receiver without a nonce source: %v", err)
	}
	src := &flakyRand{fails: 2}
	r, err := NewReceiver(ReceiverConfig{Rand: src})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Busy() {
		t.Fatal("a receiver without its nonce is not busy (no Tick to retry)")
	}
	c := r.Tick(0, nil, 100)
	if c.Err == nil || c.Resync {
		t.Fatalf("tick with the source down: err %v, resync %v", c.Err, c.Resync)
	}
	c = r.Tick(time.Second, nil, 100)
	want := ctwire.Handshake{Nonce: [16]byte{0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB}}
	if c.Err != nil || !c.Resync || c.Handshake != want {
		t.Fatalf("tick with the source back: %+v", c)
	}
}
