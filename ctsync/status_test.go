package ctsync

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/ctsync/ctrel"
	"github.com/muros/muros-had/ctsync/ctwire"
)

// TestStatusShowsHandshakeAndFloor: the backup's status says whether it
// asks or follows a verified master, which epoch it follows and its
// floor; following an epoch below the floor (the peer lost its state) is
// logged once.
func TestStatusShowsHandshakeAndFloor(t *testing.T) {
	var logs bytes.Buffer
	const floor = 9_000_000
	b := &Sync{book: openBook(t, t.TempDir()), log: slog.New(slog.NewTextHandler(&logs, nil))}
	b.book.peer = floor
	b.recv = b.newReceiver()
	var st Status
	b.handshakeStatus(&st)
	if diff := cmp.Diff(Status{Handshake: HandshakeAsking, PeerFloor: floor}, st); diff != "" {
		t.Fatalf("before the echo (-want +got):\n%s", diff)
	}
	bindReceiver(t, b) // the master answers under testEpoch, below the floor
	for seq := uint32(2); seq < 5; seq++ {
		h := ctwire.Header{Type: ctwire.TypeHeartbeat, Epoch: testEpoch, Seq: seq}
		b.onDatagram(&datagram{h: h})
	}
	b.handshakeStatus(&st)
	if diff := cmp.Diff(Status{Handshake: HandshakeVerified, FollowedEpoch: testEpoch, PeerFloor: floor}, st); diff != "" {
		t.Fatalf("after the echo (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), "lost its state"); n != 1 {
		t.Fatalf("the peer's lost state logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestMasterCountsOtherMasters: a master drops another sender's DATA,
// HEARTBEAT and ECHO datagrams (split brain, or a role swap in flight)
// and counts them by type; its stale RESYNC outcomes show too.
func TestMasterCountsOtherMasters(t *testing.T) {
	m := &Sync{book: openBook(t, t.TempDir()), master: true, log: slog.New(slog.DiscardHandler),
		sender: ctrel.NewSender(ctrel.SenderConfig{Epoch: 8000})}
	m.book.peer = 5000
	for _, typ := range []ctwire.Type{ctwire.TypeData, ctwire.TypeData, ctwire.TypeHeartbeat, ctwire.TypeEcho} {
		m.onDatagram(&datagram{h: ctwire.Header{Type: typ, Epoch: 9000, Seq: 1}})
	}
	m.onDatagram(handshakeDatagram(t, ctwire.TypeResync, 4000, 1, ctwire.Handshake{}))
	m.onDatagram(handshakeDatagram(t, ctwire.TypeResync, 4000, 2, ctwire.Handshake{}))
	m.mu.Lock()
	m.staleResyncs = m.sender.Stats().StaleResyncs
	m.mu.Unlock()
	st := m.Status()
	if diff := cmp.Diff(map[string]uint64{"data": 2, "heartbeat": 1, "echo": 1}, st.FromOtherMaster); diff != "" {
		t.Errorf("from another master (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]uint64{"echoed": 1, "rate_limited": 1}, st.StaleResyncs); diff != "" {
		t.Errorf("stale RESYNCs (-want +got):\n%s", diff)
	}
}

// TestPeerVersionShownAndLoggedOnce: a peer speaking another protocol
// version (a rolling upgrade) shows in the status and is logged once,
// its return to ours once too.
func TestPeerVersionShownAndLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	s := &Sync{log: slog.New(slog.NewTextHandler(&logs, nil))}
	for range 5 {
		s.notePeerVersion(1)
	}
	if v := s.Status().PeerProtocolVersion; v != 1 {
		t.Fatalf("peer version %d, want 1", v)
	}
	for range 5 {
		s.notePeerVersion(ctwire.Version)
	}
	if v := s.Status().PeerProtocolVersion; v != ctwire.Version {
		t.Fatalf("peer version %d, want %d", v, ctwire.Version)
	}
	if n, m := strings.Count(logs.String(), "another sync protocol version"), strings.Count(logs.String(), "version again"); n != 1 || m != 1 {
		t.Fatalf("logged %d and %d times, want once each:\n%s", n, m, logs.String())
	}
}
