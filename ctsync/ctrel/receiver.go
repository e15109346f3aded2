package ctrel

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// ReceiverConfig tunes the backup side.
type ReceiverConfig struct {
	Peer PeerConfig
	// NACKRetry is how long an unanswered NACK waits before it is repeated.
	NACKRetry time.Duration
	// NACKTries is how many NACKs a gap gets before the receiver gives up
	// on it and asks for a bulk resync.
	NACKTries int
	// ResyncRetry is how often a pending resync request is repeated while
	// no bulk is arriving.
	ResyncRetry time.Duration
	// Rand supplies the handshake nonces (the shell passes crypto/rand's
	// Reader; required: the core reads no source of its own).
	Rand io.Reader
}

func (c *ReceiverConfig) defaults() {
	if c.NACKRetry <= 0 {
		c.NACKRetry = 50 * time.Millisecond
	}
	if c.NACKTries <= 0 {
		c.NACKTries = 8
	}
	if c.ResyncRetry <= 0 {
		c.ResyncRetry = time.Second
	}
}

// Receiver is the backup's state machine.
type Receiver struct {
	cfg        ReceiverConfig
	peer       *Peer
	synced     bool
	everSynced bool
	wantResync bool
	inBulk     bool
	bulkEnded  bool
	resyncAt   time.Duration // last resync request sent
	bulkHeard  time.Duration
	bulkSeq    uint32 // seq of the current bulk's BULK_BEGIN
	// asking: the receiver waits for the ECHO of nonce, the proof that
	// the incarnation sending it is live (not a replay).
	asking bool
	nonce  [16]byte
	// askErr: drawing the nonce failed; Tick draws again.
	askErr error
	// The readiness window, since the receiver was made or re-armed:
	// heard, a datagram of the master was accepted; bulked, a bulk
	// completed.
	heard, bulked bool
	stats         ReceiverStats
}

// ReceiverStats are cumulative counters.
type ReceiverStats struct {
	Accepted       uint64
	Lost           uint64 // sequence numbers detected missing
	Repaired       uint64 // gaps closed by a repair or late datagram
	NACKsSent      uint64
	ResyncRequests uint64
	BulksCompleted uint64
	GaveUp         uint64 // gaps abandoned for a resync
	Rejected       [ctwire.NumReasons]uint64
}

// Verdict tells the shell what to do with a datagram.
type Verdict struct {
	// Apply: inject the datagram's records.
	Apply bool
	// BulkBegin: a bulk starts with this datagram; start recording the
	// keys it and later bulk datagrams carry.
	BulkBegin bool
	// Learned: an ECHO of our nonce said the master has accepted epochs
	// up to this one from our node: the caller's next epochs start above
	// it (0: nothing learned).
	Learned uint64
	// Synced: the bulk is complete; purge the flows not recorded since
	// BulkBegin (the verdict of a later datagram may carry it, once the
	// last gap is repaired).
	Synced bool
	Reason ctwire.Reason
	// Err: a nonce could not be drawn (Rand failed); the receiver tries
	// again at every Tick, and follows nobody new meanwhile.
	Err error
}

// ErrNoRand: ReceiverConfig.Rand is nil.
var ErrNoRand = errors.New("ctrel: receiver without a nonce source")

// NewReceiver returns a receiver that follows no incarnation yet: it asks
// for a bulk with a fresh nonce, and adopts the master that echoes it.
// cfg.Peer.Floor is the highest epoch accepted from the peer before (the
// caller persists Floor across receivers and restarts). A first nonce
// that cannot be drawn is drawn again at every Tick (Control.Err).
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	if cfg.Rand == nil {
		return nil, ErrNoRand
	}
	cfg.defaults()
	cfg.Peer.RejectLate = true
	cfg.Peer.Verify = true
	r := &Receiver{cfg: cfg, peer: NewPeer(cfg.Peer), wantResync: true, resyncAt: -1 << 62}
	r.ask()
	return r, nil
}

// ask starts waiting for the ECHO of a new nonce (no-op while waiting).
// If the nonce cannot be drawn the receiver does not ask (an old nonce
// must not be reused) and Tick tries again.
func (r *Receiver) ask() error {
	if r.asking {
		return nil
	}
	if _, err := io.ReadFull(r.cfg.Rand, r.nonce[:]); err != nil {
		r.askErr = fmt.Errorf("ctrel: nonce source: %w", err)
		return r.askErr
	}
	r.asking, r.askErr = true, nil
	return nil
}

// Floor is the highest epoch ever adopted from the peer: persist it and
// give it to the next receiver.
func (r *Receiver) Floor() uint64 { return r.peer.Floor() }

// Epoch is the master's incarnation followed (0 before the first).
func (r *Receiver) Epoch() uint64 { return r.peer.Epoch() }

// Asking reports whether the receiver waits for the echo of its nonce, or
// for a nonce it could not draw yet.
func (r *Receiver) Asking() bool { return r.asking || r.askErr != nil }

// Verified reports whether the receiver follows an incarnation that
// answered its nonce and is not asking again.
func (r *Receiver) Verified() bool { return r.peer.known && !r.asking }

// Busy reports whether timers are running: a gap waiting for its repair,
// a resync wanted, a nonce waiting for its echo, or a bulk in progress.
// An idle receiver needs Tick only to notice a silent master (seconds), a
// busy one every few ms.
func (r *Receiver) Busy() bool {
	return len(r.peer.missing) > 0 || r.wantResync || r.inBulk || r.asking || r.askErr != nil
}

// Synced reports whether the receiver holds a complete copy.
func (r *Receiver) Synced() bool { return r.synced }

// EverSynced reports whether a bulk has ever completed.
func (r *Receiver) EverSynced() bool { return r.everSynced }

// Stats returns the counters.
func (r *Receiver) Stats() ReceiverStats { return r.stats }

// Missing is the number of open gaps.
func (r *Receiver) Missing() int { return r.peer.Missing() }

// RequestResync makes the receiver ask for a bulk (e.g. after injection
// failures left the kernel table in doubt).
func (r *Receiver) RequestResync() {
	r.wantResync = true
	r.synced = false
	// A bulk in progress can no longer complete us: gaps were dropped.
	r.inBulk, r.bulkEnded = false, false
}

// OnDatagram accepts or rejects an authenticated datagram from the master
// (p is its payload, as returned by ctwire.ParseHeader).
func (r *Receiver) OnDatagram(now time.Duration, h *ctwire.Header, p []byte) Verdict {
	if h.Type == ctwire.TypeNACK || h.Type == ctwire.TypeResync {
		// Another backup's control traffic; not for us.
		return Verdict{}
	}
	var a Acceptance
	var learned uint64
	if h.Type == ctwire.TypeEcho {
		hs, err := ctwire.ParseHandshake(p)
		if err != nil {
			r.stats.Rejected[ctwire.ReasonLength]++
			return Verdict{Reason: ctwire.ReasonLength}
		}
		if r.asking && hs.Nonce == r.nonce {
			// Only a live master can answer a nonce drawn after the
			// datagrams an attacker may have captured: adopt its
			// incarnation, older than the floor or not.
			r.asking = false
			learned = hs.Floor
			if !r.peer.known || h.Epoch != r.peer.epoch {
				a = r.peer.Bind(now, h)
			}
		}
	}
	if !a.OK {
		a = r.peer.Accept(now, h)
	}
	if !a.OK {
		r.stats.Rejected[a.Reason]++
		var err error
		switch {
		case a.Reason == ctwire.ReasonEpochUnverified:
			// A new incarnation, or a replay of one we never followed.
			err = r.ask()
		case a.Reason == ctwire.ReasonEpochStale && now-r.peer.heard >= r.cfg.Peer.PeerTimeoutOr():
			// The master we follow fell silent and an older epoch
			// speaks: a replay, or the peer restarted with its state
			// lost and its clock behind. Only the latter can answer.
			err = r.ask()
		}
		return Verdict{Reason: a.Reason, Learned: learned, Err: err}
	}
	r.stats.Accepted++
	r.heard = true
	r.stats.Lost += uint64(a.Lost)
	if a.Late {
		r.stats.Repaired++
	}
	if a.NewEpoch {
		// A new master incarnation: its table is the truth now.
		r.RequestResync()
		r.inBulk = false
	}
	if r.peer.overflow {
		r.peer.overflow = false
		r.RequestResync()
	}
	if h.Flags&ctwire.FlagRepair != 0 {
		if _, ok := r.peer.missing[h.Aux]; ok {
			delete(r.peer.missing, h.Aux)
			r.stats.Repaired++
		}
	}
	v := Verdict{Apply: h.Type == ctwire.TypeData, Learned: learned}
	if h.Flags&ctwire.FlagBulkBegin != 0 && r.wantResync {
		// Gaps before the bulk are superseded by it.
		clear(r.peer.missing)
		r.inBulk, r.bulkEnded, r.wantResync = true, false, false
		r.bulkHeard = now
		r.bulkSeq = h.Seq
		v.BulkBegin = true
	}
	if r.inBulk {
		if h.Flags&ctwire.FlagBulk != 0 {
			r.bulkHeard = now
		}
		// A repair names the seq it replaces: only an END of this bulk
		// (not a late repair of an older bulk's END) ends it.
		endSeq := h.Seq
		if h.Flags&ctwire.FlagRepair != 0 {
			endSeq = h.Aux
		}
		if h.Flags&ctwire.FlagBulkEnd != 0 && endSeq-r.bulkSeq < 1<<31 {
			r.bulkEnded = true
		}
		if r.bulkEnded && r.peer.Missing() == 0 {
			r.inBulk, r.bulkEnded = false, false
			r.synced, r.everSynced, r.bulked = true, true, true
			r.stats.BulksCompleted++
			v.Synced = true
		}
	}
	return v
}

// Readiness: a backup must not preempt before its table is complete again
// (flows created on the master meanwhile would be reset by the takeover).
// The caller re-arms the receiver whenever a readiness wait begins (the
// node returned to backup); Complete says whether the table is complete
// since. Why strings of Complete, shown by the daemon's status:
const (
	WaitBulk   = "conntrack: bulk sync from the master not complete"
	WaitSilent = "conntrack: nothing heard from the master's sync stream since the hold began"
	WaitGap    = "conntrack: repairing sync datagrams lost since the hold began"
	DoneBulk   = "a bulk sync completed since the hold began"
	DoneStream = "in sync: the master's stream heard with no gap since the hold began"
)

// Rearm starts a readiness wait: what the receiver heard before no longer
// counts. A new receiver starts armed.
func (r *Receiver) Rearm() { r.heard, r.bulked = false, false }

// Complete reports whether the table is complete since the receiver was
// made or re-armed, and why (see the Wait* and Done* strings): a bulk
// completed since, or the receiver, synced by an earlier bulk, accepted a
// datagram of the master since and has no gap open. A receiver learns of
// the datagrams it missed (a cut sync link) only from the next one it
// accepts, so it must hear one; a gap it knows of is open until repaired,
// and one it gives up on asks for a bulk (no longer synced).
func (r *Receiver) Complete() (done bool, why string) {
	switch {
	case !r.synced:
		return false, WaitBulk
	case r.peer.Missing() > 0:
		return false, WaitGap
	case r.bulked:
		return true, DoneBulk
	case !r.heard:
		return false, WaitSilent
	}
	return true, DoneStream
}

// Control is what the receiver wants sent now.
type Control struct {
	NACK   []ctwire.Range
	Resync bool
	// Handshake is the RESYNC's payload: the nonce the master must echo
	// and the receiver's floor.
	Handshake ctwire.Handshake
	// Err: the nonce the receiver needs could not be drawn (retried at
	// the next Tick); no RESYNC goes out without one.
	Err error
}

// Tick returns the NACKs and resync request due at now. ranges is reused
// as the NACK buffer. maxRanges caps the ranges (datagram size).
func (r *Receiver) Tick(now time.Duration, ranges []ctwire.Range, maxRanges int) Control {
	var c Control
	if r.askErr != nil {
		c.Err = r.ask()
	}
	if r.inBulk && now-r.bulkHeard > r.cfg.Peer.PeerTimeoutOr() {
		// The bulk stalled (master gone or restarted mid-bulk): ask again.
		r.inBulk, r.bulkEnded = false, false
		r.wantResync = true
	}
	if (r.wantResync && !r.inBulk || r.asking) && r.askErr == nil && now-r.resyncAt >= r.cfg.ResyncRetry {
		r.resyncAt = now
		r.stats.ResyncRequests++
		c.Resync = true
	}
	c.Handshake = ctwire.Handshake{Nonce: r.nonce, Floor: r.peer.Floor()}
	if len(r.peer.missing) == 0 {
		return c
	}
	seqs := make([]uint32, 0, len(r.peer.missing))
	gaveUp := false
	for s, g := range r.peer.missing {
		if g.nacked >= 0 && now-g.nacked < r.cfg.NACKRetry {
			continue
		}
		if g.tries >= r.cfg.NACKTries {
			gaveUp = true
			continue
		}
		seqs = append(seqs, s)
	}
	if gaveUp {
		r.stats.GaveUp++
		clear(r.peer.missing)
		r.RequestResync()
		if r.inBulk {
			r.inBulk, r.bulkEnded = false, false
		}
		if r.askErr == nil && now-r.resyncAt >= r.cfg.ResyncRetry {
			r.resyncAt = now
			r.stats.ResyncRequests++
			c.Resync = true
		}
		return c
	}
	slices.Sort(seqs)
	ranges = ranges[:0]
	for _, s := range seqs {
		if n := len(ranges); n > 0 && ranges[n-1].Last+1 == s {
			ranges[n-1].Last = s
		} else {
			if n == maxRanges {
				break
			}
			ranges = append(ranges, ctwire.Range{First: s, Last: s})
		}
		g := r.peer.missing[s]
		g.nacked = now
		g.tries++
	}
	if len(ranges) > 0 {
		r.stats.NACKsSent++
		c.NACK = ranges
	}
	return c
}

// PeerTimeoutOr returns the configured peer timeout or its default.
func (c PeerConfig) PeerTimeoutOr() time.Duration {
	if c.PeerTimeout <= 0 {
		return 3 * time.Second
	}
	return c.PeerTimeout
}
