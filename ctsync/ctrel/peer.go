// Package ctrel is the reliability layer of conntrack synchronisation, as
// pure state machines: no sockets, goroutines or clocks. Instants are
// time.Duration values on any monotonic origin chosen by the caller.
//
// Standards: none external; it implements the sequencing, loss repair and
// bulk resynchronisation of the muros-had sync protocol whose datagrams are
// defined in package ctwire:
//
//   - Every datagram carries the sender's epoch (start time) and a sequence
//     number incremented for every datagram. Peer accepts a datagram once:
//     a sequence number at or below the highest seen is rejected (the
//     receiver: a late datagram may carry state older than what followed
//     it, its gap is repaired with current state instead) or, for control
//     traffic, accepted only if it was recorded missing, so replays are
//     rejected; a smaller epoch is
//     rejected unless the peer has been silent for PeerTimeout (a clock
//     stepped back across a restart).
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
//     not mention.
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
	// PeerTimeout: after this much silence a smaller epoch is accepted as a
	// restart.
	PeerTimeout time.Duration
	// RejectLate drops a datagram that arrives after a later one (its
	// records may be older than what was applied since) and leaves its
	// gap open, so it is repaired with the flows' current state.
	RejectLate bool
}

// Peer tracks one remote sender's epoch and sequence numbers.
type Peer struct {
	cfg      PeerConfig
	known    bool
	epoch    uint64
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
	return &Peer{cfg: cfg, missing: make(map[uint32]*gap)}
}

func (p *Peer) reset(h *ctwire.Header) {
	p.known = true
	p.epoch = h.Epoch
	p.highest = h.Seq
	p.overflow = false
	clear(p.missing)
}

// Accept decides whether h is fresh and records gaps it reveals.
func (p *Peer) Accept(now time.Duration, h *ctwire.Header) Acceptance {
	var a Acceptance
	switch {
	case !p.known || h.Epoch > p.epoch:
		p.reset(h)
		a.NewEpoch = true
	case h.Epoch < p.epoch:
		if now-p.heard < p.cfg.PeerTimeout {
			return Acceptance{Reason: ctwire.ReasonEpoch}
		}
		p.reset(h)
		a.NewEpoch = true
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

// Known reports whether any datagram has been accepted.
func (p *Peer) Known() bool { return p.known }

// Missing is the number of open gaps.
func (p *Peer) Missing() int { return len(p.missing) }
