package ctrel

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/ctsync/ctwire"
	"pgregory.net/rapid"
)

// sim joins a Sender and a Receiver through a lossy link and applies the
// receiver's verdicts to a model of the backup's kernel table, the way the
// shell does (the purge through the shell's own BulkPurge).
type sim struct {
	t        testing.TB
	now      time.Duration
	s        *Sender
	r        *Receiver
	table    map[ctwire.Key]ctwire.Flow // backup kernel model
	purge    BulkPurge
	dropData func() bool
	dropCtl  func() bool
	buf      []byte
	ranges   []ctwire.Range
	rejected int
	logf     func(string, ...any)
	// tap, if set, sees every datagram the sender produced (a capture).
	tap func([]byte)
	// afterDeliver, if set, runs after each datagram the receiver got.
	afterDeliver func()
}

func newSim(t testing.TB, s *Sender) *sim {
	return &sim{
		t: t, s: s,
		r:        newReceiver(t, ReceiverConfig{}),
		table:    map[ctwire.Key]ctwire.Flow{},
		dropData: func() bool { return false },
		dropCtl:  func() bool { return false },
	}
}

func (m *sim) deliver(body []byte) {
	h, p, err := ctwire.ParseHeader(body)
	if err != nil {
		m.t.Fatalf("sender produced bad datagram: %v", err)
	}
	v := m.r.OnDatagram(m.now, &h, p)
	if m.logf != nil {
		m.logf("recv %v seq %d flags %x aux %d count %d -> %+v missing %d", h.Type, h.Seq, h.Flags, h.Aux, h.Count, v, m.r.Missing())
	}
	if v.Reason != ctwire.ReasonNone && v.Reason != ctwire.ReasonEpochUnverified {
		// (unverified: what the master sent before it answered the
		// receiver's nonce, at every start)
		m.rejected++
	}
	if v.BulkBegin {
		m.purge.Begin()
	}
	if v.Apply {
		it := ctwire.NewRecords(p, h.Count)
		var f ctwire.Flow
		for it.Next(&f) {
			k := f.Key()
			m.purge.Add(&f)
			if f.Op == ctwire.OpDestroy {
				delete(m.table, k)
			} else {
				m.table[k] = f
			}
		}
		if it.Err() != nil {
			m.t.Fatal(it.Err())
		}
	}
	if v.Synced {
		dump := slices.Collect(maps.Values(m.table))
		for _, f := range m.purge.Stale(dump) {
			delete(m.table, f.Key())
		}
	}
	if m.afterDeliver != nil {
		m.afterDeliver()
	}
}

// step advances time by d and runs both sides once.
func (m *sim) step(d time.Duration) {
	m.now += d
	for {
		body, ok := m.s.Next(m.now, m.buf[:0])
		if !ok {
			break
		}
		m.buf = body
		if m.tap != nil {
			m.tap(append([]byte(nil), body...))
		}
		if !m.dropData() {
			m.deliver(append([]byte(nil), body...))
		}
	}
	busy := m.r.Busy()
	c := m.r.Tick(m.now, m.ranges, 100)
	// The shell ticks slowly while the receiver is not Busy: any timer
	// work Tick finds must have been announced by Busy.
	if (c.Resync || len(c.NACK) > 0) && !busy {
		m.t.Errorf("at %v Tick sent resync %v, NACK %v while Busy() was false", m.now, c.Resync, c.NACK)
	}
	if m.logf != nil && (c.Resync || len(c.NACK) > 0) {
		m.logf("ctl resync %v nack %v", c.Resync, c.NACK)
	}
	if c.Resync && !m.dropCtl() {
		m.s.OnResyncRequest(m.now, c.Handshake, 0, true)
	}
	if len(c.NACK) > 0 && !m.dropCtl() {
		for _, rg := range c.NACK {
			m.s.OnNACK(rg)
		}
	}
}

// masterView is what the backup must converge to (timeouts ignored).
func (m *sim) masterView() map[ctwire.Key]ctwire.Flow {
	out := map[ctwire.Key]ctwire.Flow{}
	for id, i := range m.s.table {
		if e := m.s.entryAt(i); !e.gone {
			f := e.rec.flow()
			if f.ID() != id {
				m.t.Fatalf("table entry under %+v holds flow %+v", id, f.Key())
			}
			out[f.Key()] = f
		}
	}
	return out
}

func stripTimeouts(in map[ctwire.Key]ctwire.Flow) map[ctwire.Key]ctwire.Flow {
	out := map[ctwire.Key]ctwire.Flow{}
	for k, f := range in {
		f.Timeout = 0
		f.Op = ctwire.OpUpdate
		out[k] = f
	}
	return out
}

func flowN(i int, state uint8) ctwire.Flow {
	a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	b := netip.MustParseAddr("198.51.100.1")
	o := ctwire.Tuple{Src: a, Dst: b, SrcPort: uint16(1024 + i), DstPort: 443}
	return ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: 0xe, Timeout: 120, Orig: o, Reply: o.Invert(), HasTCP: true, TCP: ctwire.TCPInfo{State: state}}
}

func (m *sim) converge(t testing.TB) {
	t.Helper()
	for i := 0; i < 400; i++ {
		m.step(10 * time.Millisecond)
	}
	if diff := cmp.Diff(stripTimeouts(m.masterView()), stripTimeouts(m.table), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("backup differs from master (-master +backup):\n%s", diff)
	}
	if !m.r.Synced() {
		t.Fatalf("receiver not synced: %+v", m.r.Stats())
	}
}

func TestLosslessReplication(t *testing.T) {
	m := newSim(t, NewSender(SenderConfig{Epoch: 1}))
	m.step(0)
	for i := 0; i < 500; i++ {
		f := flowN(i, 1)
		m.s.Update(m.now, &f)
	}
	m.step(time.Millisecond)
	for i := 0; i < 500; i += 2 {
		f := flowN(i, 3)
		m.s.Update(m.now, &f)
	}
	for i := 1; i < 500; i += 5 {
		f := flowN(i, 3)
		m.s.Destroy(m.now, f.Key())
	}
	m.converge(t)
	st := m.s.Stats()
	if st.Coalesced != 0 && st.Records == 0 {
		t.Fatalf("stats %+v", st)
	}
	if m.rejected != 0 {
		t.Fatalf("%d datagrams rejected on a clean link", m.rejected)
	}
}

func TestCoalescing(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 1})
	f := flowN(1, 1)
	for st := uint8(1); st <= 5; st++ {
		f.TCP.State = st
		s.Update(0, &f)
	}
	body, ok := s.Next(0, nil)
	if !ok {
		t.Fatal("nothing to send")
	}
	h, p, err := ctwire.ParseHeader(body)
	if err != nil {
		t.Fatal(err)
	}
	if h.Count != 1 {
		t.Fatalf("count %d, want 1 coalesced record", h.Count)
	}
	var g ctwire.Flow
	if _, err := ctwire.ParseFlow(p, &g); err != nil || g.TCP.State != 5 {
		t.Fatalf("record carries state %d (err %v), want the latest 5", g.TCP.State, err)
	}
	if got := s.Stats().Coalesced; got != 4 {
		t.Fatalf("coalesced %d, want 4", got)
	}
}

// TestUpdateKeepsOmittedAttributes: an UPDATE event without protoinfo or
// labels (ctnetlink leaves out what did not change) keeps the known ones.
func TestUpdateKeepsOmittedAttributes(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 1})
	f := flowN(1, 3)
	f.TCP.WScaleOrig = 7
	f.HasLabels, f.Labels[0] = true, 1
	s.Update(0, &f)
	u := f
	u.HasTCP, u.TCP, u.HasLabels, u.Labels = false, ctwire.TCPInfo{}, false, [16]byte{}
	u.Mark = 5
	s.Update(0, &u)
	body, _ := s.Next(0, nil)
	_, p, err := ctwire.ParseHeader(body)
	if err != nil {
		t.Fatal(err)
	}
	var g ctwire.Flow
	if _, err := ctwire.ParseFlow(p, &g); err != nil {
		t.Fatal(err)
	}
	want := f
	want.Mark = 5
	want.Timeout = g.Timeout
	if diff := cmp.Diff(want, g, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

// TestHeartbeatRevealsLostLast: the last datagram before silence is lost;
// the next heartbeat (within 250ms) exposes the gap and the NACK repairs it.
func TestHeartbeatRevealsLostLast(t *testing.T) {
	m := newSim(t, NewSender(SenderConfig{Epoch: 1}))
	m.converge(t) // initial bulk of an empty table
	f := flowN(7, 3)
	m.s.Update(m.now, &f)
	drop := true
	m.dropData = func() bool { d := drop; drop = false; return d }
	for i := 0; i < 100 && len(m.table) == 0; i++ {
		m.step(10 * time.Millisecond)
	}
	if len(m.table) != 1 {
		t.Fatalf("lost last update not repaired within 1s; stats %+v", m.r.Stats())
	}
	if m.r.Stats().Repaired == 0 {
		t.Fatal("no repair counted")
	}
}

func TestReplayRejected(t *testing.T) {
	r := newReceiver(t, ReceiverConfig{})
	bind(t, r, 0, 5, 9)
	h := ctwire.Header{Type: ctwire.TypeData, Epoch: 5, Seq: 10}
	if v := r.OnDatagram(0, &h, nil); !v.Apply {
		t.Fatal("first datagram not applied")
	}
	if v := r.OnDatagram(time.Millisecond, &h, nil); v.Apply || v.Reason != ctwire.ReasonReplay {
		t.Fatalf("replay verdict %+v", v)
	}
	old := ctwire.Header{Type: ctwire.TypeData, Epoch: 4, Seq: 99}
	if v := r.OnDatagram(2*time.Millisecond, &old, nil); v.Apply || v.Reason != ctwire.ReasonEpochStale {
		t.Fatalf("old epoch verdict %+v", v)
	}
}

// TestHistoryOverflowFallsBackToBulk: a NACK for a seq no longer in the
// history triggers a bulk.
func TestHistoryOverflowFallsBackToBulk(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 1, History: 4})
	for i := 0; i < 10; i++ {
		f := flowN(i, 3)
		s.Update(0, &f)
		s.Next(0, nil)
	}
	s.OnNACK(ctwire.Range{First: 2, Last: 2})
	if !s.Bulking() {
		t.Fatal("evicted seq did not start a bulk")
	}
}

// TestBackupRestartResyncs: a fresh receiver joining mid-stream converges
// through a bulk and purges nothing live.
func TestBackupRestartResyncs(t *testing.T) {
	m := newSim(t, NewSender(SenderConfig{Epoch: 1}))
	for i := 0; i < 300; i++ {
		f := flowN(i, 3)
		m.s.Update(m.now, &f)
	}
	m.converge(t)
	m.r = newReceiver(t, ReceiverConfig{})
	m.table = map[ctwire.Key]ctwire.Flow{}
	ghost := flowN(9999, 3) // stale flow the new backup holds from before
	m.table[ghost.Key()] = ghost
	for i := 300; i < 400; i++ {
		f := flowN(i, 3)
		m.s.Update(m.now, &f)
		m.step(time.Millisecond)
	}
	m.converge(t)
	if m.r.Stats().BulksCompleted != 1 {
		t.Fatalf("bulks %d", m.r.Stats().BulksCompleted)
	}
}

// TestTimeoutRefresh: a flow whose master timeout keeps being refreshed by
// traffic (no events) never expires on the backup.
func TestTimeoutRefresh(t *testing.T) {
	const refresh = 10 * time.Second
	s := NewSender(SenderConfig{Epoch: 1, Refresh: refresh})
	f := flowN(1, 3)
	f.HasTCP, f.Proto, f.Timeout = false, 17, 30
	s.Update(0, &f)
	m := newSim(t, s)
	var backupExpiry time.Duration
	note := func() {
		if g, ok := m.table[f.Key()]; ok && g.Timeout != 0 {
			backupExpiry = m.now + time.Duration(g.Timeout)*time.Second
			m.table[f.Key()] = ctwire.Flow{Timeout: 0, Orig: g.Orig, Proto: g.Proto}
		}
	}
	m.step(0)
	note()
	for now := time.Duration(0); now < 30*time.Minute; now += refresh {
		// Master: traffic keeps the flow at 30s; a sweep every interval.
		for m.now < now {
			m.step(100 * time.Millisecond)
			note()
			if m.now > backupExpiry {
				t.Fatalf("backup copy expired at %v while alive on master", backupExpiry)
			}
		}
		s.Reconcile(m.now, m.now, []ctwire.Flow{f})
	}
	if s.Stats().Refreshed == 0 {
		t.Fatal("no refresh counted")
	}
	if got := s.Stats().Records; got > 200 {
		t.Fatalf("%d records in 30 min: refresh too chatty", got)
	}
}

// TestConvergesUnderLoss is the property: whatever the loss pattern (data
// and control, up to 40%), once loss stops the backup converges to the
// master's table and reports synced.
func TestConvergesUnderLoss(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		seed := rapid.Uint64().Draw(rt, "seed")
		loss := rapid.IntRange(0, 40).Draw(rt, "loss%")
		hist := rapid.IntRange(8, 512).Draw(rt, "history")
		rng := rand.New(rand.NewPCG(seed, 1))
		m := newSim(t, NewSender(SenderConfig{Epoch: 1, History: hist, MaxDatagram: 400}))
		lossy := true
		m.dropData = func() bool { return lossy && rng.IntN(100) < loss }
		m.dropCtl = func() bool { return lossy && rng.IntN(100) < loss }
		n := rapid.IntRange(1, 300).Draw(rt, "flows")
		for i := 0; i < n; i++ {
			f := flowN(rng.IntN(200), uint8(1+rng.IntN(8)))
			switch rng.IntN(5) {
			case 0:
				m.s.Destroy(m.now, f.Key())
			default:
				m.s.Update(m.now, &f)
			}
			if rng.IntN(10) == 0 {
				m.step(time.Duration(rng.IntN(50)) * time.Millisecond)
			}
		}
		for i := 0; i < 300; i++ {
			m.step(10 * time.Millisecond)
		}
		lossy = false
		m.converge(t)
	})
}

func BenchmarkSenderNext(b *testing.B) {
	s := NewSender(SenderConfig{Epoch: 1})
	flows := make([]ctwire.Flow, 26)
	for i := range flows {
		flows[i] = flowN(i, 3)
	}
	buf := make([]byte, 0, 1500)
	for i := range flows { // warm the history slots and queue
		s.Update(0, &flows[i])
	}
	for i := 0; i < 5000; i++ {
		for j := range flows {
			s.Update(0, &flows[j])
		}
		buf, _ = s.Next(0, buf[:0])
	}
	b.ReportAllocs()
	for b.Loop() {
		for i := range flows {
			s.Update(0, &flows[i])
		}
		buf, _ = s.Next(0, buf[:0])
	}
}

// TestLateDatagramNotApplied: a datagram overtaken by a later one is not
// applied (it would roll the flow back); its gap is repaired with the
// flow's current state.
func TestLateDatagramNotApplied(t *testing.T) {
	m := newSim(t, NewSender(SenderConfig{Epoch: 1}))
	m.converge(t)
	f := flowN(3, 1)
	m.s.Update(m.now, &f)
	d1, _ := m.s.Next(m.now, nil)
	f.TCP.State = 2
	m.s.Update(m.now, &f)
	d2, _ := m.s.Next(m.now, nil)
	m.deliver(d2)
	m.deliver(d1) // late
	if got := m.table[f.Key()].TCP.State; got != 2 {
		t.Fatalf("late datagram rolled the flow back to state %d", got)
	}
	if m.rejected != 1 {
		t.Fatalf("late datagram not rejected (%d)", m.rejected)
	}
	m.converge(t)
	if m.r.Stats().Repaired == 0 {
		t.Fatal("gap left by the late datagram not repaired")
	}
}

// TestIncrementalSweepConverges is the property of the master's refresh
// sweep run beside the event stream: whatever changes the sender missed
// before the sweep (an overrun), and however the dump's chunks interleave
// with live events, datagrams and the dump's own view of each flow (the
// kernel walks its table while it changes: a chunk may show a flow as it
// was when the sweep began or as it is when the chunk is read), once the
// sweep ends the backup converges to the kernel's table.
func TestIncrementalSweepConverges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 2))
		m := newSim(t, NewSender(SenderConfig{Epoch: 1, MaxDatagram: 600}))
		kernel := map[ctwire.Key]ctwire.Flow{}
		const space = 60
		live := func() { // one event the listener reports
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
		for range rapid.IntRange(0, 80).Draw(rt, "events before") {
			live()
		}
		m.converge(t)
		// Missed events: the kernel changes, the sender is not told.
		for range rapid.IntRange(0, 40).Draw(rt, "missed") {
			f := flowN(rng.IntN(space), uint8(1+rng.IntN(8)))
			if _, ok := kernel[f.Key()]; ok && rng.IntN(2) == 0 {
				delete(kernel, f.Key())
			} else {
				kernel[f.Key()] = f
			}
		}
		m.now += time.Millisecond
		m.s.BeginSweep(m.now)
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
		m.s.EndSweep(m.now)
		for range 400 {
			m.step(10 * time.Millisecond)
		}
		if diff := cmp.Diff(stripTimeouts(kernel), stripTimeouts(m.table), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Fatalf("backup differs from the kernel (-kernel +backup):\n%s", diff)
		}
	})
}

// TestEndSweepReportsWhetherItRan: a sweep that a Reconcile replaced
// (a listener restart's fresh dump) is not completed again by the late end
// of its own dump, and is not counted as one.
func TestEndSweepReportsWhetherItRan(t *testing.T) {
	s := NewSender(SenderConfig{Epoch: 1})
	s.BeginSweep(0)
	s.SweepFlows(time.Millisecond, nil)
	if !s.EndSweep(2 * time.Millisecond) {
		t.Fatal("EndSweep of a running sweep reported none")
	}
	s.BeginSweep(3 * time.Millisecond)
	s.Reconcile(4*time.Millisecond, 4*time.Millisecond, nil)
	if s.EndSweep(5 * time.Millisecond) {
		t.Fatal("EndSweep after a Reconcile reported a sweep")
	}
	if s.EndSweep(6 * time.Millisecond) {
		t.Fatal("EndSweep outside a sweep reported one")
	}
}
