package peerview

import (
	"net/netip"
	"sync"
	"time"

	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/vrrp"
)

// tracker is the peer view's state, fed by typed events, with the split
// brain and drift alarms. Pure: time comes with each event.
type tracker struct {
	management string // the configured peer management address
	// Adverts from the peer: source, last one, its priority; they say
	// "master" for advertTTL. The source is kept as it came and written
	// out only for a report: adverts come every few milliseconds, reports
	// when someone asks.
	advertAddr netip.Addr
	advertAt   time.Time
	advertPri  uint8
	advertTTL  time.Duration
	// This node's group state and when it last became MASTER (zero
	// otherwise).
	local       string
	masterSince time.Time
	// Health polls: the last request and the last answered one.
	poll, answer *peerPoll
	healthTTL    time.Duration
	healthOff    string // why the peer's health is not polled
	ruleset      ruleset.Status
	rulesetOff   string // why the local ruleset is not fingerprinted
	splitBrain   alarm
	drift        alarm
}

// advertTTL: the peer is no longer master once its adverts stop for longer
// than a backup would wait (3 intervals plus slack).
func advertTTL(interval time.Duration) time.Duration { return 4*interval + time.Second }

func newTracker(management string, advertInterval time.Duration) tracker {
	return tracker{
		management: management, advertTTL: advertTTL(advertInterval),
		local:     vrrp.StateInitialize.String(),
		healthOff: "peer health not polled (the daemon is not running)",
	}
}

// advert records an advert heard from the peer.
func (t *tracker) advert(src netip.Addr, priority uint8, now time.Time) {
	t.advertAddr, t.advertAt, t.advertPri = src, now.UTC(), priority
}

// addrString is a's text, empty for no address (no advert seen yet).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// localState records this node's group state.
func (t *tracker) localState(group vrrp.State, now time.Time) {
	g := group.String()
	if g == t.local {
		return
	}
	if group == vrrp.StateMaster {
		t.masterSince = now
	} else {
		t.masterSince = time.Time{}
	}
	t.local = g
}

// polled records a health request's outcome.
func (t *tracker) polled(p *peerPoll) {
	t.poll = p
	if p.err == "" {
		t.answer = p
	}
}

func (t *tracker) inputs(now time.Time) peerInputs {
	return peerInputs{
		now: now, local: t.local, masterSince: t.masterSince,
		advertAt: t.advertAt, advertPri: t.advertPri, advertTTL: t.advertTTL,
		poll: t.poll, answer: t.answer, healthTTL: t.healthTTL, healthOff: t.healthOff,
	}
}

// report is the peer's part of the status document at now.
func (t *tracker) report(now time.Time) status.PeerReport {
	v := derivePeerView(t.inputs(now))
	p := status.PeerStatus{
		Management: t.management, Address: addrString(t.advertAddr), LastAdvert: t.advertAt,
		Role: v.role, RoleSource: v.source, RoleReason: v.reason,
		Polled: t.healthOff == "", Reachable: v.reachable, Error: v.err,
		// UTC() of the zero Time is the zero Time: omitzero still omits it.
		LastHeard: v.lastHeard.UTC(),
		Readiness: v.readiness, DBReady: v.dbReady, Maintenance: v.maintenance,
	}
	if !t.advertAt.IsZero() {
		pri := t.advertPri
		p.Priority = &pri
	}
	return status.PeerReport{
		Peer:       p,
		SplitBrain: status.Alarm{Active: t.splitBrain.on, Since: t.splitBrain.since.UTC()},
		Ruleset: status.RulesetCompare{
			Local: t.ruleset, Peer: v.peerRuleset, Drift: t.drift.on, DriftSince: t.drift.since.UTC(),
			Off: joinReason(t.rulesetOff, t.healthOff),
		},
	}
}

// alarmEvents is one evaluation of the alarms.
type alarmEvents struct {
	view                      peerView
	local, management         string
	splitBrain, drift         bool
	splitBrainStep, driftStep int
	splitBrainSince           time.Time
	localFP, peerFP           string
}

// evaluate steps the split brain and drift alarms on the view at now; the
// caller logs the steps.
func (t *tracker) evaluate(now time.Time, driftGrace time.Duration) alarmEvents {
	v := derivePeerView(t.inputs(now))
	ev := alarmEvents{view: v, local: t.local, management: t.management, localFP: t.ruleset.Fingerprint}
	// The split brain evidence is recent by construction (derivePeerView):
	// no further grace. Unknown counts as ended: a peer that vanished
	// during a split brain must not keep the report up forever.
	ev.splitBrainStep = t.splitBrain.step(v.splitBrain, true, now, 0)
	drift, known := rulesetDrift(t.ruleset, v.peerRuleset)
	ev.driftStep = t.drift.step(drift, known, now, driftGrace)
	if v.peerRuleset != nil {
		ev.peerFP = v.peerRuleset.Fingerprint
	}
	ev.splitBrain, ev.drift, ev.splitBrainSince = t.splitBrain.on, t.drift.on, t.splitBrain.since.UTC()
	return ev
}

// Monitor is the peer view shared by the event loop (adverts, state
// changes), the peer checks (polls, ruleset, alarm ticks) and the status
// readers.
type Monitor struct {
	mu sync.Mutex
	t  tracker
}

// NewMonitor starts the view of the peer at the management address, whose
// adverts come every advertInterval.
func NewMonitor(management string, advertInterval time.Duration) *Monitor {
	return &Monitor{t: newTracker(management, advertInterval)}
}

// Advert records an advert heard from the peer.
func (m *Monitor) Advert(src netip.Addr, priority uint8, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t.advert(src, priority, now)
}

// LocalState records this node's group state after a transition.
func (m *Monitor) LocalState(group vrrp.State, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t.localState(group, now)
}

// SetAdvertInterval follows a reloaded advert interval.
func (m *Monitor) SetAdvertInterval(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t.advertTTL = advertTTL(d)
}

// Report is the peer's part of the status document at now
// (status.PeerSource).
func (m *Monitor) Report(now time.Time) status.PeerReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.report(now)
}

// setup records how the checks run: healthOff and rulesetOff say why one
// does not.
func (m *Monitor) setup(healthTTL time.Duration, healthOff, rulesetOff string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t.healthTTL, m.t.healthOff, m.t.rulesetOff = healthTTL, healthOff, rulesetOff
}

func (m *Monitor) polled(p *peerPoll) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t.polled(p)
}

func (m *Monitor) localRuleset(r ruleset.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t.ruleset = r
}

func (m *Monitor) evaluate(now time.Time, driftGrace time.Duration) alarmEvents {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t.evaluate(now, driftGrace)
}
