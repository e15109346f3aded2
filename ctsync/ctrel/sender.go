package ctrel

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// SenderConfig tunes the master side.
type SenderConfig struct {
	// Epoch identifies this sender incarnation (NextEpoch).
	Epoch uint64
	// MaxDatagram is the largest datagram, MAC included (link MTU - 28).
	MaxDatagram int
	// History is how many recent datagrams are remembered for repair.
	History int
	// Heartbeat is the longest the sender stays silent.
	Heartbeat time.Duration
	// Refresh is the interval at which the shell calls Reconcile; announced
	// timeouts are padded by RefreshMargin intervals.
	Refresh time.Duration
	// StaleEchoInterval is the least time between two echoes of stale
	// RESYNCs (OnResyncRequest): replays cost at most one datagram per
	// interval. Default 100 ms (a wiped backup asks once a second).
	StaleEchoInterval time.Duration
	// BulkRate paces bulk datagrams (per second, in bursts of up to
	// BulkRate/100, the work of 10 ms): a bulk is table-sized work, and
	// the shell runs at real-time priority beside the forwarding path.
	// Queued changes, repairs and echoes are not paced. 0: unpaced.
	BulkRate int
}

func (c *SenderConfig) defaults() {
	if c.MaxDatagram <= 0 {
		c.MaxDatagram = 1500 - ctwire.IPUDPOverhead
	}
	if c.History <= 0 {
		c.History = 4096
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 250 * time.Millisecond
	}
	if c.Refresh <= 0 {
		c.Refresh = 10 * time.Second
	}
	if c.StaleEchoInterval <= 0 {
		c.StaleEchoInterval = 100 * time.Millisecond
	}
}

// RefreshMargin is, in refresh intervals, both the padding added to every
// announced timeout and how close to expiry a backup copy may come before
// it is re-announced.
const RefreshMargin = 3

type entry struct {
	rec     flowRecord
	queued  bool
	gone    bool          // destroyed; kept until the DESTROY is sent
	expiry  time.Duration // when the backup's copy times out
	touched time.Duration // last event or dump that mentioned it
	sweep   uint32        // the last sweep whose dump held it
}

type histSlot struct {
	seq   uint32
	flags uint16 // bulk flags, so a repair of a BULK_END still ends the bulk
	ids   []ctwire.ID
}

// SenderStats are cumulative counters.
type SenderStats struct {
	Datagrams   uint64
	Records     uint64
	Coalesced   uint64 // updates merged into an already queued record
	Heartbeats  uint64
	Repairs     uint64 // REPAIR datagrams sent
	Bulks       uint64 // bulk resyncs started
	Refreshed   uint64 // records re-announced to keep timeouts fresh
	NACKsServed uint64
	// StaleResyncs counts the RESYNCs of stale incarnations by what they
	// got (StaleEchoed, StaleLimited).
	StaleResyncs [NumStaleOutcomes]uint64
	Flows        int // flows in the replicated table
	Queued       int
}

// Sender is the master's state machine. Feed it flow changes, NACKs and
// resync requests; call Next to obtain datagrams to send.
type Sender struct {
	cfg SenderConfig
	seq uint32
	// table indexes the entries (entryAt) by ID. Nothing the sender keeps
	// per flow holds a pointer: the map, the entry blocks, the queues and
	// the history are memory the garbage collector never walks, however
	// large the table (flowRecord says why that matters).
	table    map[ctwire.ID]uint32
	queue    []ctwire.ID
	qhead    int
	bulk     []ctwire.ID
	bulkNext int
	bulkOn   bool
	bulkSent bool // BULK_BEGIN sent
	repairs  []uint32
	// the repair in progress: its remaining flows and bulk-end flag
	repairIDs    []ctwire.ID
	repairEnd    uint16
	repairLoaded bool
	hist         []histSlot
	lastSend     time.Duration
	turn         bool // alternate queue and bulk
	stats        SenderStats
	// entries are carved from blocks and recycled through spare: a storm
	// of new flows costs one allocation per entryBlock flows, not one per
	// flow (the garbage collector's share of the master's time). Entry i
	// is blocks[i/entryBlock][i%entryBlock]; carved counts the entries
	// handed out.
	blocks [][]entry
	carved uint32
	spare  []uint32
	// the incremental sweep in progress (BeginSweep .. EndSweep)
	sweepGen   uint32
	sweepStart time.Duration
	sweeping   bool
	// tombs are the IDs of flows destroyed and announced during the open
	// sweep: their entries stay (gone) until it ends, so that a dump chunk
	// read before the destruction but merged after it cannot revive them.
	tombs []ctwire.ID
	// echo is the handshake the next datagram answers (echoDue);
	// lastNonce the last fresh request's nonce.
	echo      ctwire.Handshake
	echoDue   bool
	lastNonce [16]byte
	// staleEchoAt: when the last stale RESYNC was echoed.
	staleEchoAt time.Duration
	// reserved: the highest epoch the caller persisted (Reserve); the
	// sender wraps to no epoch above it.
	reserved uint64
	// loading: the open sweep fills a new sender's table (BeginLoad);
	// holdBulk: no bulk may begin before the open sweep ends (its table
	// is not the kernel's yet, and the receiver purges what a bulk does
	// not carry).
	loading, holdBulk bool
	// bulkTokens: bulk datagrams allowed now (BulkRate), as of tokensAt.
	bulkTokens float64
	tokensAt   time.Duration
}

const entryBlock = 1024

// entryAt is entry i. Blocks never move, so the pointer stays valid
// while the entry is in the table.
func (s *Sender) entryAt(i uint32) *entry { return &s.blocks[i/entryBlock][i%entryBlock] }

// lookup returns id's entry, nil if the table has none.
func (s *Sender) lookup(id ctwire.ID) *entry {
	if i, ok := s.table[id]; ok {
		return s.entryAt(i)
	}
	return nil
}

// insert gives id a zeroed entry (id must have none).
func (s *Sender) insert(id ctwire.ID) *entry {
	var i uint32
	if n := len(s.spare); n > 0 {
		i = s.spare[n-1]
		s.spare = s.spare[:n-1]
	} else {
		if s.carved%entryBlock == 0 {
			s.blocks = append(s.blocks, make([]entry, entryBlock))
		}
		i = s.carved
		s.carved++
	}
	s.table[id] = i
	e := s.entryAt(i)
	*e = entry{}
	return e
}

// forget removes id's entry from the table and keeps it for reuse; no
// other structure refers to entries (queues and history hold IDs).
func (s *Sender) forget(id ctwire.ID) {
	if i, ok := s.table[id]; ok {
		delete(s.table, id)
		s.spare = append(s.spare, i)
	}
}

// NewSender returns a Sender with an empty table.
func NewSender(cfg SenderConfig) *Sender {
	cfg.defaults()
	return &Sender{cfg: cfg, table: make(map[ctwire.ID]uint32), hist: make([]histSlot, cfg.History), lastSend: -1 << 62, staleEchoAt: -1 << 62, reserved: cfg.Epoch, tokensAt: -1 << 62}
}

// Stats returns the counters.
func (s *Sender) Stats() SenderStats {
	st := s.stats
	st.Flows = len(s.table)
	st.Queued = len(s.queue) - s.qhead
	return st
}

func (s *Sender) enqueue(id ctwire.ID, e *entry) {
	if e.queued {
		s.stats.Coalesced++
		return
	}
	e.queued = true
	s.queue = append(s.queue, id)
}

// Update records a flow's new state (NEW or UPDATE event, or a dump).
func (s *Sender) Update(now time.Duration, f *ctwire.Flow) {
	id := f.ID()
	e := s.lookup(id)
	if e == nil {
		e = s.insert(id)
	}
	old := e.rec
	e.rec = recordOf(f)
	e.rec.op = ctwire.OpUpdate
	// ctnetlink omits CTA_PROTOINFO and CTA_LABELS from an UPDATE event
	// that did not change them: keep what an earlier event said.
	if !f.HasTCP && old.hasTCP && old.id.Proto == f.Proto {
		e.rec.hasTCP, e.rec.tcp = true, old.tcp
	}
	if !f.HasLabels && old.hasLabels {
		e.rec.hasLabels, e.rec.labels = true, old.labels
	}
	e.gone = false
	e.touched = now
	s.enqueue(id, e)
}

// Destroy records that a flow ended.
func (s *Sender) Destroy(now time.Duration, k ctwire.Key) { s.destroy(now, k.ID()) }

// destroy is Destroy of id.
func (s *Sender) destroy(now time.Duration, id ctwire.ID) {
	e := s.lookup(id)
	if e == nil {
		// Unknown (filtered, or predates us and missed by the dump): still
		// tell the backup, it may hold a copy from a bulk.
		e = s.insert(id)
		e.rec = flowRecord{id: id, reply: id.Orig.Invert()}
	}
	e.gone = true
	e.touched = now
	s.enqueue(id, e)
}

// Reconcile merges a table dump taken at dumpStart: changed or new flows
// are queued, flows whose backup copy would expire within RefreshMargin
// intervals are re-announced, and flows absent from the dump that no event
// mentioned since dumpStart are destroyed. Reset(true) semantics are the
// caller's: use it after a listener restart too. It is BeginSweep,
// SweepFlows and EndSweep in one call, and ends any sweep in progress.
func (s *Sender) Reconcile(now, dumpStart time.Duration, flows []ctwire.Flow) {
	s.BeginSweep(dumpStart)
	s.SweepFlows(now, flows)
	s.EndSweep(now)
}

// BeginSweep starts an incremental Reconcile against a dump requested at
// dumpStart, whose flows arrive through SweepFlows in chunks while events
// keep coming through Update and Destroy; EndSweep closes it. A sweep
// begun while another is open replaces it.
func (s *Sender) BeginSweep(dumpStart time.Duration) {
	s.buryTombs()
	s.sweepGen++
	s.sweepStart = dumpStart
	s.sweeping = true
	s.loading = false
}

// BeginLoad starts filling a new sender's table from a dump requested at
// dumpStart, read in chunks (SweepFlows) while events keep coming: Load
// done incrementally, so that a new master never reads its table in one
// piece on the takeover path. Like Load it queues nothing (the flows are
// in the peer's table already, or reach it by the bulk it asks for);
// flows an event mentioned since dumpStart keep the event's state, and a
// flow destroyed meanwhile is not revived by a chunk read before its
// DESTROY (the sweep's tombs). No bulk begins before EndSweep: a bulk
// of a partial table would make the receiver purge live flows.
func (s *Sender) BeginLoad(dumpStart time.Duration) {
	s.BeginSweep(dumpStart)
	s.loading = true
	s.holdBulk = true
}

// BeginResync is BeginSweep for a sweep that must end before a bulk may
// begin (a listener restart: events were lost, the table is in doubt
// until the dump is merged).
func (s *Sender) BeginResync(dumpStart time.Duration) {
	s.BeginSweep(dumpStart)
	s.holdBulk = true
}

// Loading reports whether a load or resync sweep holds bulks back
// (BeginLoad, BeginResync) and has not ended.
func (s *Sender) Loading() bool { return s.holdBulk }

// AbortSweep drops the sweep in progress (a failed dump): nothing absent
// from a partial dump may be destroyed. A bulk held for it stays held: the
// caller begins the sweep again.
func (s *Sender) AbortSweep() {
	s.sweeping = false
	s.buryTombs()
}

// buryTombs forgets the flows destroyed during the sweep that ended.
func (s *Sender) buryTombs() {
	for _, id := range s.tombs {
		if e := s.lookup(id); e != nil && e.gone && !e.queued {
			s.forget(id)
		}
	}
	s.tombs = s.tombs[:0]
}

// Sweeping reports whether a sweep is open.
func (s *Sender) Sweeping() bool { return s.sweeping }

// SweepFlows merges one chunk of the open sweep's dump (see Reconcile).
// Outside a sweep it does nothing.
func (s *Sender) SweepFlows(now time.Duration, flows []ctwire.Flow) {
	if !s.sweeping {
		return
	}
	if s.loading {
		s.loadFlows(now, flows)
		return
	}
	for i := range flows {
		f := &flows[i]
		id := f.ID()
		e := s.lookup(id)
		if e != nil && e.touched > s.sweepStart {
			// An event is newer than the dump (a destruction included:
			// the chunk was read before it, or the walk passed first).
			e.sweep = s.sweepGen
			continue
		}
		if e == nil || e.gone {
			s.Update(now, f)
			s.lookup(id).sweep = s.sweepGen
			continue
		}
		e.sweep = s.sweepGen
		rec := recordOf(f)
		old := e.rec
		old.timeout, old.op = rec.timeout, ctwire.OpUpdate
		changed := old != rec
		e.rec = rec
		e.rec.op = ctwire.OpUpdate
		masterExpiry := now + time.Duration(f.Timeout)*time.Second
		stale := e.expiry < now+RefreshMargin*s.cfg.Refresh && e.expiry < masterExpiry
		if changed || stale {
			if stale && !changed && !e.queued {
				s.stats.Refreshed++
			}
			s.enqueue(id, e)
		}
	}
}

// EndSweep closes the open sweep: flows its dump did not hold and no event
// mentioned since it began ended while nobody was listening, and are
// destroyed. Outside a sweep it does nothing.
// It reports whether a sweep was running (a Reconcile may have replaced
// it meanwhile).
func (s *Sender) EndSweep(now time.Duration) bool {
	if !s.sweeping {
		return false
	}
	s.sweeping = false
	s.loading, s.holdBulk = false, false
	for id, i := range s.table {
		if e := s.entryAt(i); e.sweep == s.sweepGen || e.gone || e.touched > s.sweepStart {
			continue
		}
		s.destroy(now, id)
	}
	s.buryTombs()
	return true
}

// loadFlows merges a chunk of a load (BeginLoad): Load's rule, with the
// sweep's marks so that EndSweep keeps them.
func (s *Sender) loadFlows(now time.Duration, flows []ctwire.Flow) {
	for i := range flows {
		f := &flows[i]
		id := f.ID()
		e := s.lookup(id)
		if e != nil && e.touched > s.sweepStart {
			e.sweep = s.sweepGen
			continue
		}
		if e == nil {
			e = s.insert(id)
		}
		*e = entry{rec: recordOf(f), touched: now, sweep: s.sweepGen}
		e.rec.op = ctwire.OpUpdate
	}
}

// Load fills the table from a dump taken at dumpStart without queueing
// anything: for a new master, whose bulk (StartBulk) carries the flows
// anyway. Flows an event mentioned since dumpStart keep the event's state.
func (s *Sender) Load(now, dumpStart time.Duration, flows []ctwire.Flow) {
	for i := range flows {
		f := &flows[i]
		id := f.ID()
		e := s.lookup(id)
		if e != nil && e.touched > dumpStart {
			continue
		}
		if e == nil {
			e = s.insert(id)
		}
		*e = entry{rec: recordOf(f), touched: now}
		e.rec.op = ctwire.OpUpdate
	}
}

// StartBulk begins a bulk resync of the whole table (a resync request, a
// NACK beyond the history, or a listener restart).
// The key snapshot is taken when BULK_BEGIN is built, so every flow sent
// before BULK_BEGIN is in the bulk and every change after it follows it:
// the receiver's purge at BULK_END never removes a live flow.
func (s *Sender) StartBulk() {
	s.bulk = s.bulk[:0]
	s.bulkNext = 0
	s.bulkOn = true
	s.bulkSent = false
	s.stats.Bulks++
}

// Bulking reports whether a bulk is in progress.
func (s *Sender) Bulking() bool { return s.bulkOn }

// OnResync handles a resync request; a bulk already running is not
// restarted (the requester joins at the next BULK_BEGIN if it missed this
// one: it keeps asking).
func (s *Sender) OnResync() {
	if !s.bulkOn {
		s.StartBulk()
	}
}

// StaleOutcome is what a stale RESYNC got (OnResyncRequest); the names
// double as metric labels.
type StaleOutcome uint8

const (
	StaleEchoed  StaleOutcome = iota // echoed (no bulk)
	StaleLimited                     // dropped: an echo went out within StaleEchoInterval
	NumStaleOutcomes
)

func (o StaleOutcome) String() string {
	switch o {
	case StaleEchoed:
		return "echoed"
	case StaleLimited:
		return "rate_limited"
	}
	return "unknown"
}

// OnResyncRequest handles a RESYNC received at now: its nonce is echoed
// by the next datagram (an ECHO, whose floor tells the requester the
// highest epoch this node accepted from it). fresh: the request came from
// a control incarnation the caller accepted (not a stale epoch); a bulk
// follows it. A fresh request with a nonce not seen before comes from a
// receiver that followed nobody until this echo and ignored what it
// heard: a bulk whose BULK_BEGIN went out already is restarted so that it
// begins after the echo. A stale request (a replay, or a requester whose
// state was wiped) gets an echo and never a bulk, at most one echo per
// StaleEchoInterval: a replay costs a datagram, not the table. The wiped
// requester learns its floor from the echo; its next RESYNC, under an
// epoch above it, is fresh and gets the bulk.
func (s *Sender) OnResyncRequest(now time.Duration, hs ctwire.Handshake, floor uint64, fresh bool) {
	if !fresh {
		if s.staleEchoAt > now-s.cfg.StaleEchoInterval {
			s.stats.StaleResyncs[StaleLimited]++
			return
		}
		s.staleEchoAt = now
		s.stats.StaleResyncs[StaleEchoed]++
		s.echo = ctwire.Handshake{Nonce: hs.Nonce, Floor: floor}
		s.echoDue = true
		return
	}
	s.echo = ctwire.Handshake{Nonce: hs.Nonce, Floor: floor}
	s.echoDue = true
	if hs.Nonce != s.lastNonce {
		s.lastNonce = hs.Nonce
		if s.bulkOn && s.bulkSent {
			s.StartBulk()
			return
		}
	}
	s.OnResync()
}

// OnNACK queues repairs for the given range.
func (s *Sender) OnNACK(r ctwire.Range) {
	s.stats.NACKsServed++
	if r.Last < r.First || r.Last-r.First > uint32(len(s.hist)) || r.Last > s.seq {
		s.OnResync()
		return
	}
	for q := r.First; ; q++ {
		slot := &s.hist[int(q)%len(s.hist)]
		if slot.seq != q || q == 0 {
			s.OnResync() // evicted: only a bulk can repair it
			return
		}
		s.repairs = append(s.repairs, q)
		if q == r.Last {
			break
		}
	}
}

// Pending reports whether Next has a data datagram to produce (or will
// have one within 10 ms: a bulk waiting for its pace).
func (s *Sender) Pending() bool {
	return s.echoDue || len(s.repairs) > 0 || s.qhead < len(s.queue) || s.bulkLive()
}

// bulkLive reports whether a bulk is in progress and may send: not held
// for a load (a bulk already begun goes on: its snapshot was taken).
func (s *Sender) bulkLive() bool {
	return s.bulkOn && (s.bulkSent || !s.holdBulk)
}

// bulkPaced reports whether the pace lets a bulk datagram go at now
// (the caller takes its token when it sends one).
func (s *Sender) bulkPaced(now time.Duration) bool {
	if s.cfg.BulkRate <= 0 {
		return true
	}
	burst := max(float64(s.cfg.BulkRate)/100, 1)
	if el := now - s.tokensAt; el > 0 {
		s.bulkTokens = min(burst, s.bulkTokens+el.Seconds()*float64(s.cfg.BulkRate))
		s.tokensAt = now
	}
	return s.bulkTokens >= 1
}

func (s *Sender) record(now time.Duration, id ctwire.ID, f *ctwire.Flow) {
	e := s.lookup(id)
	if e == nil || e.gone {
		reply := id.Orig.Invert()
		if e != nil {
			reply = e.rec.reply
		}
		*f = ctwire.Flow{Op: ctwire.OpDestroy, Proto: id.Proto, Zone: id.Zone, Orig: id.Orig.Tuple(), Reply: reply.Tuple()}
		return
	}
	*f = e.rec.flow()
	pad := RefreshMargin * s.cfg.Refresh
	f.Timeout += uint32(pad / time.Second)
	e.expiry = now + time.Duration(f.Timeout)*time.Second
}

// Next appends the next datagram body (header + payload, no MAC) to b and
// returns it with true, or returns b, false when nothing is due. The caller
// seals and sends it. Next is allocation-free once the history slots and
// queues have grown to their working size.
func (s *Sender) Next(now time.Duration, b []byte) ([]byte, bool) {
	limit := s.cfg.MaxDatagram - ctwire.MACLen
	start := len(b)
	h := ctwire.Header{Type: ctwire.TypeData, Epoch: s.cfg.Epoch}
	var f ctwire.Flow
	var slot *histSlot
	count := 0
	put := func(id ctwire.ID) bool {
		s.record(now, id, &f)
		if len(b)+ctwire.RecordLen(&f) > start+limit {
			return false
		}
		b = ctwire.AppendFlow(b, &f)
		slot.ids = append(slot.ids, id)
		count++
		return true
	}
	if !s.wrap() {
		return b, false // the next epoch is not reserved (EpochWanted)
	}
	bulkGo := s.bulkLive() && s.bulkPaced(now)
	begin := func() {
		s.seq++
		h.Seq, h.Epoch = s.seq, s.cfg.Epoch
		slot = &s.hist[int(h.Seq)%len(s.hist)]
		slot.seq = h.Seq
		slot.flags = 0
		slot.ids = slot.ids[:0]
	}
	switch {
	case s.echoDue:
		// First: a bulk the request restarted must begin after it.
		s.echoDue = false
		s.seq++
		h = ctwire.Header{Type: ctwire.TypeEcho, Epoch: s.cfg.Epoch, Seq: s.seq}
		slot = &s.hist[int(h.Seq)%len(s.hist)]
		slot.seq, slot.flags, slot.ids = h.Seq, 0, slot.ids[:0]
		b = ctwire.AppendHandshake(ctwire.AppendHeader(b, &h), &s.echo)
		ctwire.SetPayload(b[start:], 0)
	case len(s.repairs) > 0:
		q := s.repairs[0]
		if !s.repairLoaded {
			old := &s.hist[int(q)%len(s.hist)]
			if old.seq != q {
				s.repairs = s.repairs[1:]
				s.OnResync()
				return s.Next(now, b)
			}
			// Copy: begin() below may reuse this very slot.
			s.repairIDs = append(s.repairIDs[:0], old.ids...)
			s.repairEnd = old.flags & ctwire.FlagBulkEnd
			s.repairLoaded = true
		}
		begin()
		hdr := len(b)
		b = ctwire.AppendHeader(b, &h)
		for len(s.repairIDs) > 0 && put(s.repairIDs[0]) {
			s.repairIDs = s.repairIDs[1:]
		}
		if len(s.repairIDs) == 0 {
			// Only the last part of a repair closes the receiver's gap, so
			// a gap never closes before all its flows were resent.
			binary.BigEndian.PutUint16(b[hdr+2:], ctwire.FlagRepair|s.repairEnd)
			binary.BigEndian.PutUint32(b[hdr+16:], q)
			slot.flags = s.repairEnd
			s.repairs = s.repairs[1:]
			s.repairLoaded = false
		}
		s.stats.Repairs++
	case s.qhead < len(s.queue) && (!bulkGo || !s.turn):
		s.turn = true
		begin()
		b = ctwire.AppendHeader(b, &h)
		for s.qhead < len(s.queue) {
			id := s.queue[s.qhead]
			e := s.lookup(id)
			if !put(id) {
				break
			}
			s.qhead++
			if e != nil {
				e.queued = false
				if e.gone {
					if s.sweeping {
						s.tombs = append(s.tombs, id)
					} else {
						s.forget(id)
					}
				}
			}
		}
		if s.qhead == len(s.queue) {
			s.queue, s.qhead = s.queue[:0], 0
		}
	case bulkGo:
		s.turn = false
		if s.cfg.BulkRate > 0 {
			s.bulkTokens--
		}
		begin()
		h.Flags = ctwire.FlagBulk
		if !s.bulkSent {
			h.Flags |= ctwire.FlagBulkBegin
			s.bulkSent = true
			for id, i := range s.table {
				if !s.entryAt(i).gone {
					s.bulk = append(s.bulk, id)
				}
			}
		}
		hdr := len(b)
		b = ctwire.AppendHeader(b, &h)
		for s.bulkNext < len(s.bulk) {
			id := s.bulk[s.bulkNext]
			if e := s.lookup(id); e == nil || e.gone {
				s.bulkNext++
				continue
			}
			if !put(id) {
				break
			}
			s.bulkNext++
		}
		if s.bulkNext == len(s.bulk) {
			s.bulkOn = false
			b[hdr+3] |= byte(ctwire.FlagBulkEnd) // low byte of the flags field
			slot.flags = ctwire.FlagBulkEnd
		}
	case now-s.lastSend >= s.cfg.Heartbeat:
		s.seq++
		h = ctwire.Header{Type: ctwire.TypeHeartbeat, Epoch: s.cfg.Epoch, Seq: s.seq}
		// A heartbeat consumes a seq but carries no flow: keep the slot
		// consistent so a NACK for it is served with an empty repair.
		slot = &s.hist[int(h.Seq)%len(s.hist)]
		slot.seq, slot.flags, slot.ids = h.Seq, 0, slot.ids[:0]
		b = ctwire.AppendHeader(b, &h)
		s.stats.Heartbeats++
	default:
		return b, false
	}
	if h.Type == ctwire.TypeData {
		ctwire.SetPayload(b[start:], count)
		s.stats.Records += uint64(count)
	}
	s.stats.Datagrams++
	s.lastSend = now
	return b, true
}

// NextEpoch is the epoch of a new sender incarnation: the wall clock in
// Unix nanoseconds, but above last, the highest epoch the node used before
// (persisted) or learned that its peer accepted from it. Epochs therefore
// only grow, across restarts too, even when the clock steps back.
// The largest epoch has no successor: ErrEpochExhausted (wrapping to a
// small epoch would make every later incarnation stale to the peer).
func NextEpoch(last uint64, wallUnixNano int64) (uint64, error) {
	if last == math.MaxUint64 {
		return 0, ErrEpochExhausted
	}
	return max(uint64(max(wallUnixNano, 0)), last+1), nil
}

// ErrEpochExhausted: the node used the largest epoch; no new incarnation
// can exceed it.
var ErrEpochExhausted = errors.New("ctrel: epochs exhausted (the last one used is the largest)")

// wrapAhead is how many sequence numbers before the wrap EpochWanted asks
// for the next epoch: far more than a shell sends between two calls.
const wrapAhead = 1 << 16

// EpochWanted reports the epoch the sender moves to when its sequence
// numbers run out, once that is within wrapAhead datagrams and the caller
// has not reserved it yet: persist it, then Reserve it. Next sends nothing
// past the last sequence number until then.
func (s *Sender) EpochWanted() (uint64, bool) {
	if s.seq < math.MaxUint32-wrapAhead || s.cfg.Epoch == math.MaxUint64 || s.reserved > s.cfg.Epoch {
		return 0, false
	}
	return s.cfg.Epoch + 1, true
}

// Reserve tells the sender that epochs up to e are persisted.
func (s *Sender) Reserve(e uint64) { s.reserved = max(s.reserved, e) }

// wrap starts a new epoch before the sequence number space runs out; the
// receiver sees a restart and resyncs. It reports false when the next
// epoch is not reserved (persisted by the caller) yet: nothing may be
// sent then.
func (s *Sender) wrap() bool {
	if s.seq < math.MaxUint32 {
		return true
	}
	if s.cfg.Epoch == math.MaxUint64 || s.reserved <= s.cfg.Epoch {
		return false
	}
	s.cfg.Epoch++
	s.seq = 0
	for i := range s.hist {
		s.hist[i].seq = 0
	}
	return true
}

// Epoch is the current epoch.
func (s *Sender) Epoch() uint64 { return s.cfg.Epoch }

// Sent stamps the wall-clock send time into a datagram body from Next.
func Sent(body []byte, unixNano int64) {
	for i := 0; i < 8; i++ {
		body[20+i] = byte(uint64(unixNano) >> (56 - 8*i))
	}
}

// Seq is the last sequence number used.
func (s *Sender) Seq() uint32 { return s.seq }
