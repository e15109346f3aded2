package ctrel

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/ctsync/ctwire"
	"pgregory.net/rapid"
)

// completeness is one answer of Receiver.Complete.
type completeness struct {
	Done bool
	Why  string
}

// TestReceiverComplete: the completeness signal through a receiver's life:
// a fresh receiver is incomplete until its first bulk; after a re-arm a
// synced receiver must hear the master with no gap open, or complete a
// bulk.
func TestReceiverComplete(t *testing.T) {
	r := newReceiver(t, ReceiverConfig{})
	at := time.Duration(0)
	dgram := func(seq uint32, flags uint16, aux uint32) func() {
		return func() {
			at += time.Millisecond
			h := ctwire.Header{Type: ctwire.TypeData, Epoch: 5, Seq: seq, Flags: flags, Aux: aux}
			if v := r.OnDatagram(at, &h, nil); v.Reason != ctwire.ReasonNone {
				t.Fatalf("seq %d rejected: %v", seq, v.Reason)
			}
		}
	}
	heartbeat := func(seq uint32) func() {
		return func() {
			at += time.Millisecond
			h := ctwire.Header{Type: ctwire.TypeHeartbeat, Epoch: 5, Seq: seq}
			if v := r.OnDatagram(at, &h, nil); v.Reason != ctwire.ReasonNone {
				t.Fatalf("heartbeat %d rejected: %v", seq, v.Reason)
			}
		}
	}
	const bulk, begin, end, repair = ctwire.FlagBulk, ctwire.FlagBulkBegin, ctwire.FlagBulkEnd, ctwire.FlagRepair
	steps := []struct {
		name string
		do   func()
		want completeness
	}{
		{"fresh receiver", func() {}, completeness{false, WaitBulk}},
		{"bound to the master", func() { bind(t, r, at, 5, 9) }, completeness{false, WaitBulk}},
		{"bulk begins", dgram(10, begin|bulk, 0), completeness{false, WaitBulk}},
		{"bulk ends", dgram(11, bulk|end, 0), completeness{true, DoneBulk}},
		{"re-armed", r.Rearm, completeness{false, WaitSilent}},
		{"a heartbeat", heartbeat(12), completeness{true, DoneStream}},
		{"re-armed again", r.Rearm, completeness{false, WaitSilent}},
		{"a datagram after two lost", dgram(15, 0, 0), completeness{false, WaitGap}},
		{"one repaired", dgram(16, repair, 13), completeness{false, WaitGap}},
		{"both repaired", dgram(17, repair, 14), completeness{true, DoneStream}},
		{"re-armed, gap open at once", func() { r.Rearm(); dgram(19, 0, 0)() }, completeness{false, WaitGap}},
		{"the gap given up: a bulk asked for", r.RequestResync, completeness{false, WaitBulk}},
		{"the bulk begins", dgram(20, begin|bulk, 0), completeness{false, WaitBulk}},
		{"the bulk ends", dgram(21, bulk|end, 0), completeness{true, DoneBulk}},
		{"a gap after the bulk", dgram(23, 0, 0), completeness{false, WaitGap}},
		{"repaired", dgram(24, repair, 22), completeness{true, DoneBulk}},
	}
	for _, s := range steps {
		s.do()
		done, why := r.Complete()
		if d := cmp.Diff(s.want, completeness{done, why}); d != "" {
			t.Fatalf("%s: (-want +got):\n%s", s.name, d)
		}
	}
}

// A new receiver (made at each switch to backup) starts incomplete
// whatever its floor, and a master's new incarnation makes a synced
// receiver wait for the new master's bulk.
func TestReceiverCompleteNewIncarnation(t *testing.T) {
	m := newSim(t, NewSender(SenderConfig{Epoch: 1}))
	if done, why := m.r.Complete(); done || why != WaitBulk {
		t.Fatalf("fresh receiver: %v %q", done, why)
	}
	m.converge(t)
	if done, why := m.r.Complete(); !done || why != DoneBulk {
		t.Fatalf("after the first bulk: %v %q", done, why)
	}
	m.r.Rearm()
	m.s = NewSender(SenderConfig{Epoch: 2}) // the master restarted
	m.step(10 * time.Millisecond)
	for i := 0; i < 400; i++ {
		if done, why := m.r.Complete(); done && why != DoneBulk {
			t.Fatalf("at %v complete (%q) before the new master's bulk", m.now, why)
		}
		m.step(10 * time.Millisecond)
	}
	if done, why := m.r.Complete(); !done || why != DoneBulk {
		t.Fatalf("after the new master's bulk: %v %q", done, why)
	}
}

// TestCompleteUnderLoss is the property over the simulated pair: whatever
// the loss and wherever the re-arms fall, the receiver never reports
// complete while it is not synced or a gap is open, nor without a bulk or
// an accepted datagram since the re-arm; and once the loss stops it
// reports complete.
func TestCompleteUnderLoss(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 3))
		loss := rapid.IntRange(0, 50).Draw(rt, "loss%")
		m := newSim(t, NewSender(SenderConfig{Epoch: 1, History: rapid.IntRange(8, 256).Draw(rt, "history"), MaxDatagram: 400}))
		lossy := true
		m.dropData = func() bool { return lossy && rng.IntN(100) < loss }
		m.dropCtl = func() bool { return lossy && rng.IntN(100) < loss }
		base := m.r.Stats()
		check := func(where string) {
			done, why := m.r.Complete()
			if !done {
				return
			}
			st := m.r.Stats()
			switch {
			case !m.r.Synced():
				rt.Fatalf("%s at %v: complete (%q) while not synced", where, m.now, why)
			case m.r.Missing() > 0:
				rt.Fatalf("%s at %v: complete (%q) with %d gaps open", where, m.now, why, m.r.Missing())
			case st.BulksCompleted == base.BulksCompleted && st.Accepted == base.Accepted:
				rt.Fatalf("%s at %v: complete (%q) with nothing accepted since the re-arm", where, m.now, why)
			case why == DoneBulk && st.BulksCompleted == base.BulksCompleted:
				rt.Fatalf("%s at %v: %q with no bulk since the re-arm", where, m.now, why)
			}
		}
		m.afterDeliver = func() { check("after a datagram") }
		steps := rapid.IntRange(1, 300).Draw(rt, "steps")
		for i := range steps {
			switch rng.IntN(8) {
			case 0:
				m.r.Rearm()
				base = m.r.Stats()
			case 1:
				f := flowN(rng.IntN(100), 3)
				m.s.Destroy(m.now, f.Key())
			default:
				f := flowN(rng.IntN(100), uint8(1+rng.IntN(8)))
				m.s.Update(m.now, &f)
			}
			if rng.IntN(3) == 0 {
				m.step(time.Duration(rng.IntN(300)) * time.Millisecond)
				check(fmt.Sprintf("step %d", i))
			}
		}
		lossy = false
		m.converge(t)
		if done, why := m.r.Complete(); !done {
			rt.Fatalf("not complete once the loss stopped: %q (stats %+v)", why, m.r.Stats())
		}
	})
}

// TestBulkPurge: the flows a completed bulk did not carry are the stale
// ones; without a bulk begun nothing is.
func TestBulkPurge(t *testing.T) {
	flows := []ctwire.Flow{flowN(1, 3), flowN(2, 3), flowN(3, 3), flowN(4, 3)}
	dump := func() []ctwire.Flow { return append([]ctwire.Flow(nil), flows...) }
	ids := func(fs []ctwire.Flow) []uint16 {
		var out []uint16
		for _, f := range fs {
			out = append(out, f.Orig.SrcPort-1024)
		}
		return out
	}
	for _, tt := range []struct {
		name string
		run  func(b *BulkPurge) []ctwire.Flow
		want []uint16
	}{
		{"no bulk begun: nothing stale", func(b *BulkPurge) []ctwire.Flow {
			b.Add(&flows[0])
			return b.Stale(dump())
		}, nil},
		{"the flows not carried", func(b *BulkPurge) []ctwire.Flow {
			b.Begin()
			b.Add(&flows[0])
			f := flows[2]
			f.Op, f.TCP.State = ctwire.OpDestroy, 7 // any operation, any state: the flow's identity counts
			b.Add(&f)
			return b.Stale(dump())
		}, []uint16{2, 4}},
		{"a restarted bulk forgets the first", func(b *BulkPurge) []ctwire.Flow {
			b.Begin()
			b.Add(&flows[0])
			b.Begin()
			b.Add(&flows[1])
			return b.Stale(dump())
		}, []uint16{1, 3, 4}},
		{"an empty bulk: everything stale", func(b *BulkPurge) []ctwire.Flow {
			b.Begin()
			return b.Stale(dump())
		}, []uint16{1, 2, 3, 4}},
		{"Stale ends the bulk", func(b *BulkPurge) []ctwire.Flow {
			b.Begin()
			b.Stale(dump())
			b.Add(&flows[0])
			return b.Stale(dump())
		}, nil},
		{"abandoned", func(b *BulkPurge) []ctwire.Flow {
			b.Begin()
			b.Abandon()
			return b.Stale(dump())
		}, nil},
		{"same tuple in another zone is another flow", func(b *BulkPurge) []ctwire.Flow {
			b.Begin()
			for i := range flows {
				f := flows[i]
				f.Zone = 9
				b.Add(&f)
			}
			return b.Stale(dump())
		}, []uint16{1, 2, 3, 4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b BulkPurge
			if d := cmp.Diff(tt.want, ids(tt.run(&b))); d != "" {
				t.Fatalf("stale flows (-want +got):\n%s", d)
			}
			if b.Active() {
				t.Fatal("still recording after Stale")
			}
		})
	}
}
