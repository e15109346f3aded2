package ctsync

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/ctsync/ctrel"
	"github.com/muros/muros-had/ctsync/ctwire"
)

const testEpoch = 7000

// bindReceiver makes the backup s follow epoch testEpoch, as the master
// answering its nonce does (an ECHO at seq 1).
func bindReceiver(t *testing.T, s *Sync) {
	t.Helper()
	c := s.recv.Tick(0, nil, 100)
	s.onDatagram(handshakeDatagram(t, ctwire.TypeEcho, testEpoch, 1, c.Handshake))
	if !s.recv.Verified() {
		t.Fatal("backup not verified after the echo of its nonce")
	}
}

func handshakeDatagram(t *testing.T, typ ctwire.Type, ep uint64, seq uint32, hs ctwire.Handshake) *datagram {
	t.Helper()
	h := ctwire.Header{Type: typ, Epoch: ep, Seq: seq}
	b := ctwire.AppendHandshake(ctwire.AppendHeader(nil, &h), &hs)
	ctwire.SetPayload(b, 0)
	h, p, err := ctwire.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	return &datagram{h: h, p: p}
}

func openBook(t *testing.T, dir string) *epochBook {
	t.Helper()
	b, err := openEpochBook(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEpochGrowsAcrossRestarts: a restarted node's epoch exceeds its last
// one even when its clock went back an hour; the peer floor survives too.
func TestEpochGrowsAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctsync")
	t0 := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	b := openBook(t, dir)
	e1, err := b.next(t0)
	if err != nil || e1 != uint64(t0.UnixNano()) {
		t.Fatalf("first epoch %d, %v", e1, err)
	}
	if err := b.raisePeer(5000); err != nil {
		t.Fatal(err)
	}
	b = openBook(t, dir) // restart, clock behind
	e2, err := b.next(t0.Add(-time.Hour))
	if err != nil || e2 <= e1 {
		t.Fatalf("epoch after restart with the clock behind: %d, want > %d (%v)", e2, e1, err)
	}
	b = openBook(t, dir)
	if b.own != e2 || b.peer != 5000 {
		t.Fatalf("book after restart: own %d peer %d, want %d 5000", b.own, b.peer, e2)
	}
	s := &Sync{book: b}
	if f := s.newReceiver().Floor(); f != 5000 {
		t.Fatalf("receiver floor %d, want the persisted 5000", f)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Fatalf("state directory holds %d entries (temporary files left?)", len(ents))
	}
}

func TestEpochBookRefusesUnwritableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openEpochBook(filepath.Join(file, "ctsync"), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a state directory that cannot exist was accepted")
	}
}

// TestEpochBookRefusesGarbage: a corrupt or unreadable epoch file stops
// the start and is kept as it is (the VRRP epoch's policy): the files are
// only ever replaced atomically, so a bad one is damage the operator must
// look at, and starting from 0 could reuse an epoch the peer remembers.
func TestEpochBookRefusesGarbage(t *testing.T) {
	for _, name := range []string{ownEpochFile, peerEpochFile} {
		for _, content := range []string{"x\n", "", "-1\n", "18446744073709551616\n"} {
			dir := t.TempDir()
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := openEpochBook(dir, slog.New(slog.DiscardHandler)); err == nil {
				t.Errorf("%s %q: accepted", name, content)
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != content {
				t.Errorf("%s %q: file now %q (%v), want it kept", name, content, got, err)
			}
		}
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, ownEpochFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := openEpochBook(dir, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("unreadable epoch file (a directory) accepted")
	}
}

// TestEpochBookCleansTemporaries: temporary files a crash left between
// create and rename are removed at the start; the values are kept.
func TestEpochBookCleansTemporaries(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{ownEpochFile: "5\n", ".epoch.tmp123": "99", ".peer-epoch.tmp9": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := openBook(t, dir)
	if b.own != 5 {
		t.Fatalf("own %d, want 5", b.own)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{ownEpochFile}, names); diff != "" {
		t.Fatalf("state directory (-want +got):\n%s", diff)
	}
}

// TestEpochBookExhausted: a book at the largest epoch refuses a new
// incarnation instead of wrapping to a small one.
func TestEpochBookExhausted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ownEpochFile), []byte("18446744073709551615\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := openBook(t, dir)
	if e, err := b.next(time.Now()); !errors.Is(err, ctrel.ErrEpochExhausted) {
		t.Fatalf("next = %d, %v; want ErrEpochExhausted", e, err)
	}
}

// TestRecoveryThroughShells: the backup B lost its state directory and
// its clock is behind: its control epoch is below the floor the master M
// remembers. M echoes B's RESYNC (stale: no bulk, a replay could ask as
// well) with that floor; B, on the echo of its own nonce, follows M and
// moves its epochs above the floor, persisted, so its next RESYNC is
// fresh and gets the bulk.
func TestRecoveryThroughShells(t *testing.T) {
	const floor = 9_000_000
	m := &Sync{book: openBook(t, t.TempDir()), master: true, sender: ctrel.NewSender(ctrel.SenderConfig{Epoch: 8000})}
	m.book.peer = floor
	bdir := t.TempDir()
	b := &Sync{book: openBook(t, bdir), log: slog.New(slog.DiscardHandler), ctlEp: 3}
	b.recv = b.newReceiver()
	c := b.recv.Tick(0, nil, 100)
	if !c.Resync {
		t.Fatal("fresh backup does not ask")
	}
	m.onDatagrams([]datagram{*handshakeDatagram(t, ctwire.TypeResync, b.ctlEp, 1, c.Handshake)})
	if m.rejected[ctwire.ReasonEpochStale] != 1 {
		t.Fatalf("stale RESYNC not counted: %v", m.rejected)
	}
	body, ok := m.sender.Next(0, nil)
	if !ok {
		t.Fatal("master sent nothing")
	}
	h, p, err := ctwire.ParseHeader(body)
	if err != nil || h.Type != ctwire.TypeEcho {
		t.Fatalf("first datagram %v, %v; want the echo", h.Type, err)
	}
	if m.sender.Bulking() || m.sender.Stats().Bulks != 0 {
		t.Fatal("a stale RESYNC started a bulk")
	}
	b.onDatagrams([]datagram{{h: h, p: p}})
	if !b.recv.Verified() {
		t.Fatal("backup does not follow the master that answered its nonce")
	}
	if b.ctlEp != 0 || b.book.own != floor {
		t.Fatalf("backup control epoch %d, own %d: want renewed above %d", b.ctlEp, b.book.own, floor)
	}
	if e := b.ctlEpoch(); e <= floor {
		t.Fatalf("new control epoch %d not above the floor", e)
	}
	if got := openBook(t, bdir).own; got <= floor {
		t.Fatalf("learned floor not persisted: %d", got)
	}
	// The fresh control epoch is accepted: a NACK is served.
	c = b.recv.Tick(time.Second, nil, 100)
	m.onDatagrams([]datagram{*handshakeDatagram(t, ctwire.TypeResync, b.ctlEp, 2, c.Handshake)})
	if n := m.rejected[ctwire.ReasonEpochStale]; n != 1 {
		t.Fatalf("fresh control epoch rejected as stale (%d)", n)
	}
	if !m.sender.Bulking() {
		t.Fatal("no bulk for the fresh RESYNC")
	}
}

// TestStaleResyncReplayStartsNoBulk: a captured RESYNC of an incarnation
// the master no longer accepts (stale), replayed again and again, is
// answered at most by an echo and never starts a bulk (a replay must not
// make the master send its whole table each time).
func TestStaleResyncReplayStartsNoBulk(t *testing.T) {
	const floor = 9_000_000
	m := &Sync{book: openBook(t, t.TempDir()), master: true, log: slog.New(slog.DiscardHandler),
		sender: ctrel.NewSender(ctrel.SenderConfig{Epoch: 8000})}
	m.book.peer = floor
	stale := handshakeDatagram(t, ctwire.TypeResync, floor-1, 1, ctwire.Handshake{Nonce: [16]byte{7}})
	const n = 10
	echoes := 0
	for range n {
		m.onDatagrams([]datagram{*stale})
		for {
			body, ok := m.sender.Next(0, nil)
			if !ok {
				break
			}
			h, _, err := ctwire.ParseHeader(body)
			if err != nil {
				t.Fatal(err)
			}
			if h.Type == ctwire.TypeEcho {
				echoes++
			}
		}
	}
	if b := m.sender.Stats().Bulks; b != 0 {
		t.Fatalf("%d replays of a stale RESYNC started %d bulks, want 0", n, b)
	}
	if echoes < 1 || m.rejected[ctwire.ReasonEpochStale] != n {
		t.Fatalf("echoes %d, stale %d; want at least one echo and %d counted stale", echoes, m.rejected[ctwire.ReasonEpochStale], n)
	}
}

// TestControlEpochAtFloorRenewed: the master restarted and remembers the
// backup's control epoch as its floor; the backup's control traffic under
// that very epoch is stale (a restarted master cannot tell it from a
// replay), the master echoes it, and the backup then renews its control
// epoch above the floor, which the master accepts.
func TestControlEpochAtFloorRenewed(t *testing.T) {
	const floor = 9_000_000
	m := &Sync{book: openBook(t, t.TempDir()), master: true, log: slog.New(slog.DiscardHandler),
		sender: ctrel.NewSender(ctrel.SenderConfig{Epoch: 9_500_000})}
	m.book.peer = floor
	b := &Sync{book: openBook(t, t.TempDir()), log: slog.New(slog.DiscardHandler), ctlEp: floor}
	b.book.own = floor
	b.recv = b.newReceiver()
	c := b.recv.Tick(0, nil, 100)
	m.onDatagrams([]datagram{*handshakeDatagram(t, ctwire.TypeResync, b.ctlEp, 1, c.Handshake)})
	if n := m.rejected[ctwire.ReasonEpochStale]; n != 1 {
		t.Fatalf("RESYNC under the floor's epoch to a restarted master: %d stale, want 1", n)
	}
	body, ok := m.sender.Next(0, nil)
	if !ok {
		t.Fatal("no echo")
	}
	h, p, err := ctwire.ParseHeader(body)
	if err != nil || h.Type != ctwire.TypeEcho {
		t.Fatalf("%v %v, want the echo", h.Type, err)
	}
	b.onDatagrams([]datagram{{h: h, p: p}})
	if e := b.ctlEpoch(); e <= floor {
		t.Fatalf("backup control epoch %d, want renewed above %d", e, floor)
	}
	c = b.recv.Tick(time.Second, nil, 100)
	m.onDatagrams([]datagram{*handshakeDatagram(t, ctwire.TypeResync, b.ctlEp, 2, c.Handshake)})
	if n := m.rejected[ctwire.ReasonEpochStale]; n != 1 {
		t.Fatalf("renewed control epoch rejected as stale (%d)", n)
	}
	if !m.sender.Bulking() {
		t.Fatal("no bulk for the backup's fresh RESYNC")
	}
}
