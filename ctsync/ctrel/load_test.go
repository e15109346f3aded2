package ctrel

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/muros/muros-had/ctsync/ctwire"
	"pgregory.net/rapid"
)

// TestIncrementalLoadConverges: a new master fills its table from a dump
// read in chunks while events keep coming (BeginLoad, SweepFlows,
// EndSweep); the backup, which asked for a bulk meanwhile, gets no
// BULK_BEGIN before the load ended, and ends up with the kernel's table:
// nothing the dump missed, nothing an event destroyed during the load
// revived by a chunk read before it.
func TestIncrementalLoadConverges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 3))
		m := newSim(t, NewSender(SenderConfig{Epoch: 1, MaxDatagram: 600}))
		const space = 60
		kernel := map[ctwire.Key]ctwire.Flow{}
		for range rapid.IntRange(0, space).Draw(rt, "flows at takeover") {
			f := flowN(rng.IntN(space), uint8(1+rng.IntN(8)))
			kernel[f.Key()] = f
		}
		bulkBegun := false
		m.tap = func(body []byte) {
			h, _, err := ctwire.ParseHeader(body)
			if err != nil {
				t.Fatal(err)
			}
			if h.Flags&ctwire.FlagBulkBegin != 0 {
				if m.s.Loading() {
					t.Fatalf("at %v: BULK_BEGIN while the load is open", m.now)
				}
				bulkBegun = true
			}
		}
		live := func() {
			f := flowN(rng.IntN(space), uint8(1+rng.IntN(8)))
			m.now += time.Millisecond
			if _, ok := kernel[f.Key()]; ok && rng.IntN(3) == 0 {
				delete(kernel, f.Key())
				m.s.Destroy(m.now, f.Key())
				return
			}
			kernel[f.Key()] = f
			m.s.Update(m.now, &f)
		}
		m.s.BeginLoad(m.now)
		if !m.s.Loading() {
			t.Fatal("Loading() false after BeginLoad")
		}
		snapshot := maps.Clone(kernel)
		keys := slices.Collect(maps.Keys(snapshot))
		for k := range space { // flows the walk may meet that appear later
			if f := flowN(k, 1); !slices.Contains(keys, f.Key()) {
				keys = append(keys, f.Key())
			}
		}
		rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		for len(keys) > 0 {
			switch rng.IntN(3) {
			case 0:
				live()
			case 1:
				m.step(time.Millisecond)
			default:
				n := min(len(keys), 1+rng.IntN(10))
				var chunk []ctwire.Flow
				for _, k := range keys[:n] {
					old, inSnap := snapshot[k]
					cur, inNow := kernel[k]
					switch {
					case inSnap && (!inNow || rng.IntN(2) == 0):
						chunk = append(chunk, old)
					case inNow && (inSnap || rng.IntN(2) == 0):
						chunk = append(chunk, cur)
					}
				}
				keys = keys[n:]
				m.now += time.Millisecond
				m.s.SweepFlows(m.now, chunk)
			}
		}
		if !m.s.EndSweep(m.now) {
			t.Fatal("EndSweep found no open load")
		}
		if m.s.Loading() {
			t.Fatal("Loading() true after EndSweep")
		}
		for range 400 {
			m.step(10 * time.Millisecond)
		}
		if !bulkBegun {
			t.Fatal("the backup's resync request never got a bulk")
		}
		if diff := cmp.Diff(stripTimeouts(kernel), stripTimeouts(m.table), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Fatalf("backup differs from the kernel (-kernel +backup):\n%s", diff)
		}
	})
}

// TestLoadQueuesNothing: the flows a load reads are the peer's already
// (or reach it by the bulk it asks for): none is queued, none is sent.
func TestLoadQueuesNothing(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 1})
	s.BeginLoad(0)
	var chunk []ctwire.Flow
	for i := range 300 {
		chunk = append(chunk, flowN(i, 3))
	}
	s.SweepFlows(time.Millisecond, chunk[:100])
	s.SweepFlows(2*time.Millisecond, chunk[100:])
	s.EndSweep(3 * time.Millisecond)
	got := s.Stats()
	if diff := cmp.Diff(SenderStats{Flows: 300}, got); diff != "" {
		t.Errorf("stats after the load (-want +got):\n%s", diff)
	}
	if s.Pending() {
		t.Error("Pending() after a load with nothing asked")
	}
}

// TestBulkWaitsForLoadNotQueue: while a load holds the bulk back, queued
// changes still go out; the bulk begins with the first Next after the
// load ended.
func TestBulkWaitsForLoadNotQueue(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 1, Heartbeat: time.Hour})
	s.BeginLoad(0)
	s.OnResync()
	if s.Pending() {
		t.Fatal("Pending() with only a held bulk")
	}
	f := flowN(1, 3)
	s.Update(time.Millisecond, &f)
	var types []uint16
	for {
		b, ok := s.Next(2*time.Millisecond, nil)
		if !ok {
			break
		}
		h, _, err := ctwire.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, h.Flags&(ctwire.FlagBulk|ctwire.FlagBulkBegin|ctwire.FlagBulkEnd))
	}
	if diff := cmp.Diff([]uint16{0}, types); diff != "" {
		t.Fatalf("datagram bulk flags during the load (-want +got):\n%s", diff)
	}
	s.SweepFlows(3*time.Millisecond, []ctwire.Flow{flowN(2, 3)})
	s.EndSweep(4 * time.Millisecond)
	if !s.Pending() {
		t.Fatal("the held bulk is not pending after the load")
	}
	b, ok := s.Next(5*time.Millisecond, nil)
	if !ok {
		t.Fatal("no datagram after the load")
	}
	h, _, err := ctwire.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := ctwire.FlagBulk | ctwire.FlagBulkBegin | ctwire.FlagBulkEnd; h.Flags != want || h.Count != 2 {
		t.Fatalf("first datagram after the load: flags %#x count %d, want %#x count 2", h.Flags, h.Count, want)
	}
}

// TestBulkPace: with BulkRate, a bulk never sends more than a burst (10 ms
// of the rate) plus the rate times the elapsed time, still ends, and does
// not hold back queued changes.
func TestBulkPace(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		rate := rapid.IntRange(100, 20000).Draw(rt, "rate")
		flows := rapid.IntRange(1, 3000).Draw(rt, "flows")
		s := NewSender(SenderConfig{Epoch: 1, MaxDatagram: 300, BulkRate: rate, Heartbeat: time.Hour})
		for i := range flows {
			f := flowN(i, 3)
			s.Update(0, &f)
		}
		for s.Pending() {
			if _, ok := s.Next(0, nil); !ok {
				t.Fatal("queued flows not sent")
			}
		}
		start := time.Duration(rapid.Int64Range(int64(time.Millisecond), int64(time.Hour)).Draw(rt, "start"))
		s.OnResync()
		burst := max(float64(rate)/100, 1)
		now, sent, queued := start, 0, 0
		for steps := 0; s.Bulking(); steps++ {
			if steps > 1_000_000 {
				t.Fatalf("bulk of %d flows at %d/s not done after %v", flows, rate, now-start)
			}
			now += time.Duration(rapid.Int64Range(0, int64(20*time.Millisecond)).Draw(rt, "step"))
			if rapid.IntRange(0, 9).Draw(rt, "event") == 0 {
				f := flowN(rapid.IntRange(0, flows-1).Draw(rt, "flow"), 4)
				s.Update(now, &f)
				queued++
			}
			for {
				b, ok := s.Next(now, nil)
				if !ok {
					break
				}
				h, _, err := ctwire.ParseHeader(b)
				if err != nil {
					t.Fatal(err)
				}
				if h.Flags&ctwire.FlagBulk != 0 {
					sent++
				} else if h.Type == ctwire.TypeData {
					queued = 0
				}
			}
			if limit := burst + (now-start).Seconds()*float64(rate); float64(sent) > limit+1e-9 {
				t.Fatalf("%d bulk datagrams by %v at %d/s: limit %.1f", sent, now-start, rate, limit)
			}
			if queued > 0 {
				t.Fatalf("a queued change waited for the bulk's pace at %v", now-start)
			}
		}
	})
}

// TestBulkPurgeInChunks: a purge read in chunks (StaleIn, End) finds
// what Stale finds on the whole dump, and keeps a flow recorded between
// two chunks (a record applied after the bulk ended).
func TestBulkPurgeInChunks(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		var whole, chunked BulkPurge
		whole.Begin()
		chunked.Begin()
		var dump []ctwire.Flow
		for i := range rapid.IntRange(0, 200).Draw(rt, "flows") {
			f := flowN(i, 3)
			dump = append(dump, f)
			if rapid.Bool().Draw(rt, "in bulk") {
				whole.Add(&f)
				chunked.Add(&f)
			}
		}
		late := flowN(1000, 3)
		dump = append(dump, late)
		want := whole.Stale(append([]ctwire.Flow(nil), dump...))
		want = slices.DeleteFunc(want, func(f ctwire.Flow) bool { return f.ID() == late.ID() })
		var got []ctwire.Flow
		rest := append([]ctwire.Flow(nil), dump...)
		added := false
		for len(rest) > 0 {
			n := rapid.IntRange(1, len(rest)).Draw(rt, "chunk")
			if !added && rapid.Bool().Draw(rt, "late record now") {
				chunked.Add(&late)
				added = true
			}
			got = append(got, chunked.StaleIn(rest[:n])...)
			rest = rest[n:]
		}
		chunked.End()
		lateStale := slices.ContainsFunc(got, func(f ctwire.Flow) bool { return f.ID() == late.ID() })
		if added == lateStale {
			t.Fatalf("flow recorded before its chunk: %v; taken for stale: %v", added, lateStale)
		}
		got = slices.DeleteFunc(got, func(f ctwire.Flow) bool { return f.ID() == late.ID() })
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Fatalf("chunked purge differs (-whole +chunked):\n%s", diff)
		}
		if chunked.Active() {
			t.Fatal("still recording after End")
		}
	})
}
