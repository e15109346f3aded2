package dbsync

import (
	"sync"
	"time"
)

// Clock skew. Each token names its issue time, so the receiver refuses the
// peer's tokens when the two clocks differ by more than peerlink.AuthConfig.Leeway
// (token_not_yet_valid or token_expired): the pair needs NTP. Every answer
// to GET /api/sync/hello and GET /api/health carries the answering node's
// clock ("time"); the asking node measures the peer's offset against the
// midpoint of the request, shows it (Status.ClockSkew) and warns above
// Config.ClockSkewWarn, louder once it exceeds the leeway.

// ClockSkew is the last measurement of the peer's clock.
type ClockSkew struct {
	// OffsetMillis is the peer's clock minus this node's (positive: the
	// peer is ahead), within RTTMillis/2.
	OffsetMillis int64     `json:"offset_ms"`
	RTTMillis    int64     `json:"rtt_ms"`
	Measured     time.Time `json:"measured"`
	// Warning is set above Config.ClockSkewWarn.
	Warning string `json:"warning,omitempty"`
}

// Skew levels.
const (
	skewOK         = iota
	skewWarn       // above the warning threshold
	skewTokensFail // above the token leeway: one side's tokens are refused
)

// clockOffset is the peer's clock (peer, read while answering) minus ours
// at the midpoint of the request sent at sent and answered at received,
// and the round trip. Pure.
func clockOffset(sent, received, peer time.Time) (offset, rtt time.Duration) {
	rtt = received.Sub(sent)
	return peer.Sub(sent.Add(rtt / 2)), rtt
}

// skewLevel grades an offset. Pure.
func skewLevel(offset, warn, leeway time.Duration) int {
	a := offset.Abs()
	switch {
	case a > leeway:
		return skewTokensFail
	case warn > 0 && a > warn:
		return skewWarn
	}
	return skewOK
}

// skewMeter holds the last measurement; safe for concurrent use.
type skewMeter struct {
	mu    sync.Mutex
	last  ClockSkew
	have  bool
	level int
}

func (m *skewMeter) status() *ClockSkew {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.have {
		return nil
	}
	s := m.last
	return &s
}

// noteClock records one measurement from an answer carrying the peer's
// clock and logs when the level changes.
func (n *Node) noteClock(sent, received, peer time.Time) {
	if peer.IsZero() {
		return
	}
	off, rtt := clockOffset(sent, received, peer)
	warn, leeway := n.cfg.ClockSkewWarn, n.cfg.Auth.Leeway
	level := skewLevel(off, warn, leeway)
	s := ClockSkew{OffsetMillis: off.Milliseconds(), RTTMillis: rtt.Milliseconds(), Measured: received}
	switch level {
	case skewWarn:
		s.Warning = "clock skew with the peer above " + warn.String() + ": check NTP on both nodes"
	case skewTokensFail:
		s.Warning = "clock skew with the peer above the token leeway " + leeway.String() +
			": one node refuses the other's tokens (token_not_yet_valid/token_expired); run NTP on both nodes or raise dbsync.jwt.leeway"
	}
	n.skew.mu.Lock()
	prev := n.skew.level
	n.skew.last, n.skew.have, n.skew.level = s, true, level
	n.skew.mu.Unlock()
	if level == prev {
		return
	}
	args := []any{"offset", off.Round(time.Millisecond), "rtt", rtt.Round(time.Millisecond), "warn_above", warn, "leeway", leeway}
	switch level {
	case skewOK:
		n.log.Info("dbsync: clock skew with the peer back within bounds", args...)
	case skewWarn:
		n.stats.add("clock_skew_warnings", 1)
		n.log.Warn("dbsync: "+s.Warning, args...)
	case skewTokensFail:
		n.stats.add("clock_skew_warnings", 1)
		n.log.Error("dbsync: "+s.Warning, args...)
	}
}
