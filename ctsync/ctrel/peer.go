// Package ctrel is the reliability layer of conntrack synchronisation, as
// pure state machines: no sockets, goroutines or clocks. Instants are
// time.Duration values on any monotonic origin chosen by the caller.
//
// Standards: none external; it implements the sequencing, loss repair and
// bulk resynchronisation of the muros-had sync protocol whose datagrams are
// defined in package ctwire:
//
//   - Every datagram carries the sender's epoch (its incarnation,
//     NextEpoch: only grows, persisted by the caller) and a sequence
//     number incremented for every datagram. Peer accepts a datagram once:
//     a sequence number at or below the highest seen is rejected (the
//     receiver: a late datagram may carry state older than what followed
//     it, its gap is repaired with current state instead) or, for control
//     traffic, accepted only if it was recorded missing, so replays are
//     rejected.
//   - Epochs never go back. Peer starts from a floor, the highest epoch
//     ever accepted from the peer (the caller persists it across roles and
//     restarts); an epoch at or below it that is not the incarnation
//     followed, or one below the incarnation followed, is rejected as
//     epoch_stale however long the peer was silent. At, too: once the
//     receiver follows a peer below its floor, or after a restart, the
//     floor's own incarnation can only be replayed.
//   - The receiver follows an incarnation only once it has proved to be
//     live: its RESYNC carries a random nonce, drawn when the receiver
//     starts, when a higher epoch appears (a restarted master, or a replay
//     of one never followed: epoch_unverified), and when an older epoch
//     speaks after the master followed has been silent for PeerTimeout;
//     the master answers with an ECHO of it. The ECHO's incarnation is
//     adopted (Peer.Bind) whatever its epoch, and a bulk follows. A
//     captured datagram cannot answer a nonce drawn after it was sent, so
//     replays to a fresh receiver, or to a running one after any silence,
//     roll nothing back; replays of older epochs while the master talks
//     cost nothing (no handshake).
//   - Recovery from a peer that lost its state directory with its clock
//     behind (its epoch below our floor): its datagrams are stale, the
//     receiver asks once the old incarnation has been silent for
//     PeerTimeout (at once if it just started), the peer answers, the
//     receiver follows it; the floor stays where it was. Both handshake
//     messages carry the writer's floor for the reader's node, which the
//     reader's next epochs exceed: the lost epoch is regained at the next
//     incarnation. In the other direction the master answers a stale
//     RESYNC with an echo only (at most one per StaleEchoInterval, never
//     a bulk: replayed RESYNCs cost a datagram, not a table): the wiped
//     backup learns its floor, its next control datagrams are fresh, and
//     its next RESYNC gets the bulk.
//   - A master restarts a bulk in progress for a fresh RESYNC with a nonce
//     it has not seen: that receiver ignored everything before the ECHO,
//     the BULK_BEGIN included, and the ECHO goes out before the new
//     BULK_BEGIN.
//   - Sender (the master) coalesces queued changes of one flow into one
//     record carrying the flow's state at send time, remembers which flows
//     each recent datagram carried (History datagrams), answers a NACK by
//     retransmitting those flows' current state in REPAIR datagrams (aux =
//     repaired seq), and falls back to a bulk resync when the history no
//     longer holds a requested seq. An idle sender emits a HEARTBEAT every
//     Heartbeat so a lost last datagram shows as a gap within that time.
//   - Receiver (the backup) turns sequence gaps into NACKs, retries them,
//     and asks for a bulk resync when it starts, when a peer restarts, or
//     when it falls too far behind (too many gaps or a gap that cannot be
//     repaired). A bulk is a run of DATA datagrams from BULK_BEGIN to
//     BULK_END; the receiver is synced once it has seen BULK_END with no
//     gap left open since BULK_BEGIN, and then purges flows the bulk did
//     not mention (BulkPurge, the rule its shell applies).
//   - Readiness: the receiver reports whether its table is complete since
//     it was made or re-armed (Receiver.Rearm, Complete): a bulk completed
//     since, or, synced by an earlier bulk, it accepted a datagram of the
//     master since and no gap it knows of is open. A backup must hear the
//     master once: it learns of datagrams lost while its link was cut
//     only from the next one.
//   - Timeouts: the kernel reports no event when a packet refreshes a
//     conntrack timeout, so the sender periodically feeds a table dump to
//     Reconcile. A flow is re-announced when the expiry the backup was
//     given falls within RefreshMargin (three refresh intervals); every
//     announced timeout is padded by RefreshMargin. After any sweep every
//     backup copy outlives the next sweep by at least two intervals, so a
//     late sweep does not lose flows either: a flow alive on the master is
//     alive on the backup (its DESTROY event, not its timer, removes it
//     there). Refresh traffic is about one record per flow per master
//     timeout, not one per sweep.
package ctrel

import (
	"time"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// PeerConfig bounds the acceptance window.
type PeerConfig struct {
	// MaxMissing caps the recorded gaps; beyond it the receiver is too far
	// behind and must resync.
	MaxMissing int
	// PeerTimeout: after this much silence the peer counts as gone (a
	// receiver then asks whoever sends a stale epoch to prove itself).
	PeerTimeout time.Duration
	// RejectLate drops a datagram that arrives after a later one (its
	// records may be older than what was applied since) and leaves its
	// gap open, so it is repaired with the flows' current state.
	RejectLate bool
	// Floor is the highest epoch ever accepted from the peer, as the
	// caller persisted it: an epoch at or below it is stale unless it is
	// the incarnation followed.
	Floor uint64
	// Verify: Accept never adopts a new incarnation; it reports
	// ReasonEpochUnverified and only Bind adopts one (the receiver binds
	// on the ECHO of its own nonce).
	Verify bool
}

// Peer tracks one remote sender's epoch and sequence numbers.
type Peer struct {
	cfg      PeerConfig
	known    bool
	epoch    uint64 // the incarnation followed
	floor    uint64 // highest epoch ever adopted; never decreases
	highest  uint32
	missing  map[uint32]*gap
	heard    time.Duration
	overflow bool
}

type gap struct {
	nacked time.Duration
	tries  int
}

// Acceptance is the outcome of Peer.Accept.
type Acceptance struct {
	OK       bool
	Reason   ctwire.Reason
	NewEpoch bool // first datagram of a (new) sender incarnation
	Lost     int  // sequence numbers found missing by this datagram
	Late     bool // filled a recorded gap
}

// NewPeer returns an empty Peer.
func NewPeer(cfg PeerConfig) *Peer {
	if cfg.MaxMissing <= 0 {
		cfg.MaxMissing = 4096
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = 3 * time.Second
	}
	return &Peer{cfg: cfg, floor: cfg.Floor, missing: make(map[uint32]*gap)}
}

func (p *Peer) reset(h *ctwire.Header) {
	p.known = true
	p.epoch = h.Epoch
	p.floor = max(p.floor, h.Epoch)
	p.highest = h.Seq
	p.overflow = false
	clear(p.missing)
}

// Accept decides whether h is fresh and records gaps it reveals.
func (p *Peer) Accept(now time.Duration, h *ctwire.Header) Acceptance {
	var a Acceptance
	switch {
	case p.known && h.Epoch == p.epoch:
		return p.acceptSeq(now, h)
	case h.Epoch <= p.floor || (p.known && h.Epoch < p.epoch):
		// Never back: the floor's incarnation, when not the one followed
		// (we follow one below it, or restarted), and older ones send
		// replays or leftovers whatever the silence since (Bind is the
		// way back).
		return Acceptance{Reason: ctwire.ReasonEpochStale}
	case p.cfg.Verify:
		return Acceptance{Reason: ctwire.ReasonEpochUnverified}
	}
	p.reset(h)
	a.NewEpoch = true
	p.heard = now
	a.OK = true
	return a
}

// Bind adopts h's incarnation whatever its epoch: the caller has proof
// that it is live (it answered a fresh nonce). The floor does not go down.
func (p *Peer) Bind(now time.Duration, h *ctwire.Header) Acceptance {
	p.reset(h)
	p.heard = now
	return Acceptance{OK: true, NewEpoch: true}
}

// acceptSeq handles a datagram of the incarnation followed.
func (p *Peer) acceptSeq(now time.Duration, h *ctwire.Header) Acceptance {
	var a Acceptance
	switch {
	case h.Seq > p.highest:
		lost := h.Seq - p.highest - 1
		if int(lost)+len(p.missing) > p.cfg.MaxMissing {
			p.overflow = true
			clear(p.missing)
		} else {
			for s := p.highest + 1; s != h.Seq; s++ {
				p.missing[s] = &gap{nacked: -1}
			}
		}
		a.Lost = int(lost)
		p.highest = h.Seq
	default:
		if _, ok := p.missing[h.Seq]; !ok || p.cfg.RejectLate {
			return Acceptance{Reason: ctwire.ReasonReplay}
		}
		delete(p.missing, h.Seq)
		a.Late = true
	}
	p.heard = now
	a.OK = true
	return a
}

// Heard is when the peer last sent an accepted datagram.
func (p *Peer) Heard() time.Duration { return p.heard }

// Floor is the highest epoch ever adopted (the caller persists it).
func (p *Peer) Floor() uint64 { return p.floor }

// Epoch is the incarnation followed (0 before the first).
func (p *Peer) Epoch() uint64 { return p.epoch }

// Known reports whether any datagram has been accepted.
func (p *Peer) Known() bool { return p.known }

// Missing is the number of open gaps.
func (p *Peer) Missing() int { return len(p.missing) }
