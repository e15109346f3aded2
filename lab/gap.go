package lab

import "time"

// GapMeter is the pure core of the probers: it is fed the arrival instants
// of replies (as offsets from the start of a run) and keeps the largest
// interval without any reply, which is what a user of the path sees
// during a failover. It does no I/O and reads no clock.
type GapMeter struct {
	last    time.Duration
	max     time.Duration
	maxFrom time.Duration
	count   int
}

// Observe records a reply at offset at. Offsets must not go backwards
// (earlier ones are ignored).
func (g *GapMeter) Observe(at time.Duration) {
	if at < g.last {
		return
	}
	if gap := at - g.last; gap > g.max {
		g.max, g.maxFrom = gap, g.last
	}
	g.last = at
	g.count++
}

// Finish closes the run at offset end: a path that went silent and never
// came back counts from its last reply to end. The gap before the first
// reply counts from 0.
func (g *GapMeter) Finish(end time.Duration) {
	if end > g.last {
		if gap := end - g.last; gap > g.max {
			g.max, g.maxFrom = gap, g.last
		}
	}
}

// Max returns the largest gap and the offset where it began.
func (g *GapMeter) Max() (gap, from time.Duration) { return g.max, g.maxFrom }

// Count is the number of observations.
func (g *GapMeter) Count() int { return g.count }

// SeqTracker counts unique, duplicate and reordered sequence numbers of a
// probe run. Sequence numbers are 0..n-1 for n sent.
type SeqTracker struct {
	seen       []bool
	highest    uint64
	any        bool
	Unique     int
	Duplicates int
	Reordered  int
	Bogus      int // beyond what was sent
}

// NewSeqTracker sizes the tracker for up to capacity sequence numbers.
func NewSeqTracker(capacity int) *SeqTracker {
	return &SeqTracker{seen: make([]bool, capacity)}
}

// Add records seq and reports whether it is new.
func (s *SeqTracker) Add(seq uint64) bool {
	if seq >= uint64(len(s.seen)) {
		s.Bogus++
		return false
	}
	if s.seen[seq] {
		s.Duplicates++
		return false
	}
	s.seen[seq] = true
	s.Unique++
	if s.any && seq < s.highest {
		s.Reordered++
	}
	if !s.any || seq > s.highest {
		s.highest, s.any = seq, true
	}
	return true
}
