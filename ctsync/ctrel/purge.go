package ctrel

import "github.com/muros/muros-had/ctsync/ctwire"

// BulkPurge is the backup's purge rule. A bulk carries every flow the
// master holds; a flow the backup's kernel holds that the completed bulk
// did not carry ended on the master while the backup was not listening
// (or before it started), and is destroyed. The shell calls Begin at a
// Verdict.BulkBegin, Add for every record it puts into the kernel (after
// its own filter: a flow the filter excludes is never in the dump it
// purges from either), and Stale at a Verdict.Synced with a dump of its
// kernel (filtered the same way).
//
// The zero value records nothing: Stale without a Begin destroys nothing
// (no bulk, no evidence that a flow is gone).
type BulkPurge struct {
	seen map[ctwire.ID]struct{}
}

// Begin starts recording a bulk; a bulk begun earlier is forgotten (a
// restarted bulk carries everything again).
func (b *BulkPurge) Begin() { b.seen = make(map[ctwire.ID]struct{}) }

// Active reports whether a bulk is being recorded.
func (b *BulkPurge) Active() bool { return b.seen != nil }

// Add records a flow the bulk carried (any operation: a DESTROY record
// names a flow the master knows of, and is applied anyway).
func (b *BulkPurge) Add(f *ctwire.Flow) {
	if b.seen != nil {
		b.seen[f.ID()] = struct{}{}
	}
}

// Stale ends the bulk and returns the flows of dumped it did not carry:
// the ones to destroy. It reuses dumped's storage.
func (b *BulkPurge) Stale(dumped []ctwire.Flow) []ctwire.Flow {
	out := b.StaleIn(dumped)
	b.seen = nil
	return out
}

// StaleIn is Stale for one chunk of a dump read in parts: the bulk stays
// recorded (records applied meanwhile are Added and so kept) until End.
func (b *BulkPurge) StaleIn(dumped []ctwire.Flow) []ctwire.Flow {
	if b.seen == nil {
		return dumped[:0]
	}
	out := dumped[:0]
	for i := range dumped {
		if _, ok := b.seen[dumped[i].ID()]; !ok {
			out = append(out, dumped[i])
		}
	}
	return out
}

// End ends the bulk once the last chunk went through StaleIn.
func (b *BulkPurge) End() { b.seen = nil }

// Abandon forgets a bulk being recorded (the node became master).
func (b *BulkPurge) Abandon() { b.seen = nil }
