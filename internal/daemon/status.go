package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/ruleset"
	"github.com/muros/muros-had/vrrp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is the Cluster status of SPEC "Operator surface": what `muros-had
// status` prints, the status page shows and /api/health returns.
type Status struct {
	Node     string    `json:"node"`
	Role     string    `json:"role"`  // configured role: master | backup
	State    string    `json:"state"` // the sync group's VRRP state now
	Priority uint8     `json:"priority"`
	Since    time.Time `json:"since"` // daemon start
	// Scheduling is the process's CPU scheduling (config scheduling:), or
	// why it could not be set.
	Scheduling   string          `json:"scheduling,omitempty"`
	Peer         PeerStatus      `json:"peer"`
	LastFailover *Failover       `json:"last_failover,omitempty"`
	VIPs         []VIPStatus     `json:"vips"`
	Links        map[string]bool `json:"links"` // tracked interface -> up
	Adverts      AdvertStats     `json:"adverts"`
	Foreign      []ForeignRouter `json:"foreign_routers,omitempty"`
	// VIPError is the last failed claim or release, retried every second
	// until it succeeds; empty when the kernel agrees with the state.
	VIPError string `json:"vip_error,omitempty"`
	// Readiness: whether preemption is held for the replications (nil
	// when neither conntrack nor DB sync is on).
	Readiness *Readiness `json:"readiness,omitempty"`
	Conntrack any        `json:"conntrack,omitempty"`
	DB        any        `json:"db,omitempty"`
	// SplitBrain: this node and the peer are both MASTER (peer.go).
	SplitBrain Alarm `json:"split_brain"`
	// Ruleset compares the nftables ruleset fingerprints of both nodes.
	Ruleset RulesetCompare `json:"ruleset"`
}

// Alarm is a reported condition: active or not, and since when.
type Alarm struct {
	Active bool      `json:"active"`
	Since  time.Time `json:"since,omitzero"` // start of the current verdict
}

// RulesetCompare is this node's ruleset fingerprint beside the peer's.
type RulesetCompare struct {
	Local ruleset.Status `json:"local"`
	// Peer is the fingerprint in the peer's last fresh health answer.
	Peer *ruleset.Status `json:"peer,omitempty"`
	// Drift: the fingerprints differ (reported once they differed for a
	// grace period; while either is unknown the last verdict stands).
	Drift      bool      `json:"drift"`
	DriftSince time.Time `json:"drift_since,omitzero"`
	// Off says why there is nothing to compare (check off, no DB sync).
	Off string `json:"off,omitempty"`
}

// Readiness says whether this node's VRRP preemption is held until its
// replications are complete (at start and at every return to BACKUP), and
// why.
type Readiness struct {
	Held bool `json:"held"`
	// Reason: while held, what re-armed the hold (start, back from FAULT,
	// stepped down from MASTER); once allowed, what lifted it (replications
	// complete, startup timeout).
	Reason string `json:"reason"`
	// Waiting lists what a held node still waits for.
	Waiting []string  `json:"waiting,omitempty"`
	Since   time.Time `json:"since"`
	Holds   uint64    `json:"holds"` // holds since start (each entry into BACKUP)
}

// String is the one-line text form, e.g. for `muros-had status`.
func (r *Readiness) String() string {
	if r == nil {
		return "not held (no replication on)"
	}
	since := r.Since.Format(time.RFC3339)
	if !r.Held {
		return "preemption allowed since " + since + ": " + r.Reason
	}
	s := "preemption HELD since " + since + " (" + r.Reason + ")"
	if len(r.Waiting) > 0 {
		s += ": waiting for " + strings.Join(r.Waiting, "; ")
	}
	return s
}

// PeerStatus is what this node knows of the other one (peer.go).
type PeerStatus struct {
	Management string `json:"management"` // configured peer management IP
	Address    string `json:"address,omitempty"`
	// Role: master | backup | fault | init (its own state, from its health
	// answer or, for master, its adverts) | leaving (priority 0 advert) |
	// not-master (its adverts stopped, nothing newer) | unknown.
	Role string `json:"role"`
	// RoleSource: adverts | health; RoleReason says why the role is not
	// better known.
	RoleSource string    `json:"role_source,omitempty"`
	RoleReason string    `json:"role_reason,omitempty"`
	Priority   *uint8    `json:"priority,omitempty"`
	LastAdvert time.Time `json:"last_advert,omitzero"`
	// Polled: this node polls the peer's GET /api/health (DB sync runs).
	// Reachable: the last poll was answered; Error is that poll's failure.
	Polled    bool   `json:"polled"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// LastHeard is the last advert or health answer, whichever is newer.
	LastHeard time.Time `json:"last_heard,omitzero"`
	// Readiness and DBReady are the peer's own, from a fresh answer.
	Readiness *Readiness `json:"readiness,omitempty"`
	DBReady   *bool      `json:"db_ready,omitempty"`
}

// Failover is the last change of the group's state.
type Failover struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
}

// VIPStatus is one virtual IP and its VRRP instance.
type VIPStatus struct {
	VRID      uint8  `json:"vrid"`
	Interface string `json:"interface"`
	Address   string `json:"address"`
	State     string `json:"state"`
}

// AdvertStats counts adverts sent and dropped by reason.
type AdvertStats struct {
	Sent       uint64            `json:"sent"`
	SendErrors uint64            `json:"send_errors"`
	Rejected   map[string]uint64 `json:"rejected"`
}

// ForeignRouter is a router that advertises one of our VRIDs with addresses
// that are not ours: a VRID collision on the link.
type ForeignRouter struct {
	VRID     uint8     `json:"vrid"`
	Address  string    `json:"address"`
	LastSeen time.Time `json:"last_seen"`
}

// statusBook holds the status fields the event loop updates; readers take a
// snapshot under the lock.
type statusBook struct {
	mu      sync.Mutex
	st      Status
	peerPri uint8
	// readyGen is the generation of the gate that last set st.Readiness: a
	// superseded gate's late update is dropped.
	readyGen uint64
	// peerDownAfter: the peer is no longer master once its adverts stop for
	// longer than a backup would wait (3 intervals plus slack). Kept here,
	// under the lock, because reload changes the interval while status
	// readers run.
	peerDownAfter time.Duration

	// Peer health and ruleset (peer.go, ruleset.go).
	masterSince time.Time // when the group last became MASTER; zero otherwise
	poll        *peerPoll // last health request
	answer      *peerPoll // last answered health request
	healthTTL   time.Duration
	healthOff   string // why the peer's health is not polled
	ruleset     ruleset.Status
	rulesetOff  string // why the local ruleset is not fingerprinted
	splitBrain  alarm
	drift       alarm
}

func newStatusBook(cfg *config.Config) *statusBook {
	host, _ := os.Hostname()
	b := &statusBook{peerDownAfter: 4*cfg.AdvertInterval + time.Second, healthOff: "peer health not polled (the daemon is not running)", st: Status{
		Node:     host,
		Role:     string(cfg.Role),
		State:    vrrp.StateInitialize.String(),
		Priority: cfg.Priority(),
		Since:    time.Now().UTC(),
		Peer:     PeerStatus{Management: cfg.Peer.String(), Role: "unknown"},
		Links:    map[string]bool{},
	}}
	for _, v := range cfg.VIPs {
		b.st.VIPs = append(b.st.VIPs, VIPStatus{VRID: v.VRID, Interface: v.Interface, Address: v.Address.String(), State: vrrp.StateInitialize.String()})
	}
	return b
}

func (b *statusBook) transition(vrid uint8, from, to vrrp.State, reason string, now time.Time, group vrrp.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.st.VIPs {
		if b.st.VIPs[i].VRID == vrid {
			b.st.VIPs[i].State = to.String()
		}
	}
	if g := group.String(); g != b.st.State {
		// A failover is the group entering or leaving MASTER, or going to
		// FAULT; a start as BACKUP is not one.
		master, fault := vrrp.StateMaster.String(), vrrp.StateFault.String()
		if g == master || b.st.State == master || g == fault {
			b.st.LastFailover = &Failover{Time: now.UTC(), From: b.st.State, To: g, Reason: reason}
		}
		if g == master {
			b.masterSince = now
		} else {
			b.masterSince = time.Time{}
		}
		b.st.State = g
	}
}

// readiness records a change of the preemption hold by the event loop;
// newHold counts a new hold.
func (b *statusBook) readiness(gen uint64, held bool, reason string, waiting []string, now time.Time, newHold bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var holds uint64
	if b.st.Readiness != nil {
		holds = b.st.Readiness.Holds
	}
	if newHold {
		holds++
	}
	b.readyGen = gen
	b.st.Readiness = &Readiness{Held: held, Reason: reason, Waiting: slices.Clone(waiting), Since: now.UTC(), Holds: holds}
}

// readinessWaiting updates what the current gate (gen) still waits for.
func (b *statusBook) readinessWaiting(gen uint64, waiting []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.readyGen || b.st.Readiness == nil || !b.st.Readiness.Held || slices.Equal(waiting, b.st.Readiness.Waiting) {
		return
	}
	r := *b.st.Readiness
	r.Waiting = slices.Clone(waiting)
	b.st.Readiness = &r
}

func (b *statusBook) peerAdvert(vrid uint8, src netip.Addr, priority uint8, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Peer.Address = src.String()
	b.st.Peer.LastAdvert = now.UTC()
	b.peerPri = priority
}

func (b *statusBook) foreignRouter(vrid uint8, src netip.Addr, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.st.Foreign {
		if b.st.Foreign[i].VRID == vrid && b.st.Foreign[i].Address == src.String() {
			b.st.Foreign[i].LastSeen = now.UTC()
			return
		}
	}
	b.st.Foreign = append(b.st.Foreign, ForeignRouter{VRID: vrid, Address: src.String(), LastSeen: now.UTC()})
}

func (b *statusBook) setScheduling(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Scheduling = s
}

func (b *statusBook) setRole(cfg *config.Config) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Role = string(cfg.Role)
	b.st.Priority = cfg.Priority()
	b.peerDownAfter = 4*cfg.AdvertInterval + time.Second
}

func (b *statusBook) vipError(op string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		b.st.VIPError = ""
		return
	}
	b.st.VIPError = op + ": " + err.Error()
}

func (b *statusBook) link(ifname string, up bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.Links[ifname] = up
}

// snapshot returns a copy; peer role is derived from how recent its adverts
// are (only a master advertises).
func (b *statusBook) snapshot(now time.Time) Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.st
	s.VIPs = slices.Clone(b.st.VIPs)
	s.Foreign = slices.Clone(b.st.Foreign)
	s.Links = make(map[string]bool, len(b.st.Links))
	for k, v := range b.st.Links {
		s.Links[k] = v
	}
	if b.st.LastFailover != nil {
		f := *b.st.LastFailover
		s.LastFailover = &f
	}
	if b.st.Readiness != nil {
		// Replaced, never modified in place: the copy may share Waiting.
		r := *b.st.Readiness
		s.Readiness = &r
	}
	if !s.Peer.LastAdvert.IsZero() {
		p := b.peerPri
		s.Peer.Priority = &p
	}
	v := derivePeerView(b.peerInputs(now))
	s.Peer.Role, s.Peer.RoleSource, s.Peer.RoleReason = v.role, v.source, v.reason
	// UTC() of the zero Time is the zero Time: omitzero still omits it.
	s.Peer.Reachable, s.Peer.Error, s.Peer.LastHeard = v.reachable, v.err, v.lastHeard.UTC()
	s.Peer.Readiness, s.Peer.DBReady = v.readiness, v.dbReady
	s.Peer.Polled = b.healthOff == ""
	s.SplitBrain = Alarm{Active: b.splitBrain.on, Since: b.splitBrain.since.UTC()}
	s.Ruleset = RulesetCompare{Local: b.ruleset, Peer: v.peerRuleset, Drift: b.drift.on, DriftSince: b.drift.since.UTC()}
	s.Ruleset.Off = joinReason(b.rulesetOff, b.healthOff)
	return s
}

// peerInputs gathers the view's inputs; b.mu is held.
func (b *statusBook) peerInputs(now time.Time) peerInputs {
	return peerInputs{
		now: now, local: b.st.State, masterSince: b.masterSince,
		advertAt: b.st.Peer.LastAdvert, advertPri: b.peerPri, advertTTL: b.peerDownAfter,
		poll: b.poll, answer: b.answer, healthTTL: b.healthTTL, healthOff: b.healthOff,
	}
}

// peerCheckSetup records how the peer and ruleset checks run: healthOff and
// rulesetOff say why one does not.
func (b *statusBook) peerCheckSetup(healthTTL time.Duration, healthOff, rulesetOff string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.healthTTL, b.healthOff, b.rulesetOff = healthTTL, healthOff, rulesetOff
}

// peerPolled records a health request's outcome.
func (b *statusBook) peerPolled(p *peerPoll) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.poll = p
	if p.err == "" {
		b.answer = p
	}
}

// localRuleset records this node's latest fingerprint.
func (b *statusBook) localRuleset(r ruleset.Status) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ruleset = r
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

// evaluateAlarms steps the split brain and drift alarms on the current
// view; the caller logs the steps.
func (b *statusBook) evaluateAlarms(now time.Time, driftGrace time.Duration) alarmEvents {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := derivePeerView(b.peerInputs(now))
	ev := alarmEvents{view: v, local: b.st.State, management: b.st.Peer.Management, localFP: b.ruleset.Fingerprint}
	// The split brain evidence is recent by construction (derivePeerView):
	// no further grace. Unknown counts as ended: a peer that vanished
	// during a split brain must not keep the report up forever.
	ev.splitBrainStep = b.splitBrain.step(v.splitBrain, true, now, 0)
	drift, known := rulesetDrift(b.ruleset, v.peerRuleset)
	ev.driftStep = b.drift.step(drift, known, now, driftGrace)
	if v.peerRuleset != nil {
		ev.peerFP = v.peerRuleset.Fingerprint
	}
	ev.splitBrain, ev.drift, ev.splitBrainSince = b.splitBrain.on, b.drift.on, b.splitBrain.since.UTC()
	return ev
}

// rxStats counts adverts; the counters are Prometheus metrics in a registry
// of the daemon's own (no global registry: several daemons per process in
// tests).
type rxStats struct {
	reg      *prometheus.Registry
	rejected *prometheus.CounterVec
	// ahKeys: accepted muros-had AH adverts by key version (v1, v2): a
	// pair upgraded one node at a time shows when it has left v1.
	ahKeys   *prometheus.CounterVec
	sentC    prometheus.Counter
	sendErrs prometheus.Counter
	// groupState and vridState are enum gauges: 1 on the current state's
	// series, 0 on the others, so a dashboard can sum or alert on one label.
	groupState  *prometheus.GaugeVec
	vridState   *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	// Readiness: the hold now, holds started, holds ended by the timeout.
	held         prometheus.Gauge
	holds        prometheus.Counter
	holdTimeouts prometheus.Counter
	// Peer checks (peer.go, ruleset.go).
	splitBrain    prometheus.Gauge
	drift         prometheus.Gauge
	peerReachable prometheus.Gauge
	peerPolls     prometheus.Counter
	peerFailures  *prometheus.CounterVec
	rulesetErrors prometheus.Counter
	mu            sync.Mutex
	byReason      map[string]uint64
	nSent         uint64
	nSendErr      uint64
}

func newRxStats() *rxStats {
	s := &rxStats{
		reg: prometheus.NewRegistry(),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_vrrp_adverts_rejected_total", Help: "VRRP adverts dropped, by reason.",
		}, []string{"reason"}),
		ahKeys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_vrrp_ah_key_accepted_total", Help: "Adverts accepted with muros-had's AH, by the key version they were signed with (v1: unstretched password, an old peer or a fallback for one; v2: Argon2id).",
		}, []string{"version"}),
		sentC:    prometheus.NewCounter(prometheus.CounterOpts{Name: "muros_had_vrrp_adverts_sent_total", Help: "VRRP adverts sent."}),
		sendErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "muros_had_vrrp_advert_send_errors_total", Help: "VRRP adverts the kernel refused."}),
		groupState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "muros_had_vrrp_group_state", Help: "State of the sync group (1 on the current state).",
		}, []string{"state"}),
		vridState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "muros_had_vrrp_instance_state", Help: "State of each VRRP instance (1 on the current state).",
		}, []string{"vrid", "state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_vrrp_transitions_total", Help: "VRRP instance state changes, by VRID and new state.",
		}, []string{"vrid", "to"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "muros_had_preemption_held",
			Help: "1 while VRRP preemption is held until the conntrack and DB replications are complete (after a start or a return to BACKUP), else 0.",
		}),
		holds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "muros_had_preemption_holds_total", Help: "Preemption holds started (one per entry into BACKUP with a replication on).",
		}),
		holdTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "muros_had_preemption_hold_timeouts_total",
			Help: "Preemption holds lifted by conntrack.resync.startup_timeout with a replication still incomplete.",
		}),
		splitBrain: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "muros_had_split_brain",
			Help: "1 while this node and the peer are both MASTER (the peer says so over GET /api/health, or its adverts keep coming), else 0.",
		}),
		drift: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "muros_had_ruleset_drift", Help: "1 while the nftables ruleset fingerprints of the two nodes differ, else 0.",
		}),
		peerReachable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "muros_had_peer_health_reachable", Help: "1 when the last GET /api/health on the peer was answered, else 0.",
		}),
		peerPolls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "muros_had_peer_health_polls_total", Help: "GET /api/health requests sent to the peer.",
		}),
		peerFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_peer_health_failures_total", Help: "GET /api/health requests to the peer without a usable answer, by reason.",
		}, []string{"reason"}),
		rulesetErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "muros_had_ruleset_check_errors_total", Help: "Ruleset fingerprints that failed (nft missing or failing).",
		}),
		byReason: map[string]uint64{},
	}
	s.reg.MustRegister(s.rejected, s.ahKeys, s.sentC, s.sendErrs, s.groupState, s.vridState, s.transitions, s.held, s.holds, s.holdTimeouts,
		s.splitBrain, s.drift, s.peerReachable, s.peerPolls, s.peerFailures, s.rulesetErrors)
	return s
}

// initStates sets every instance and the group to INIT, so each series
// exists from the start.
func (s *rxStats) initStates(cfg *config.Config) {
	setEnum(func(state string) prometheus.Gauge { return s.groupState.WithLabelValues(state) }, vrrp.StateInitialize)
	for _, v := range cfg.VIPs {
		vrid := strconv.Itoa(int(v.VRID))
		setEnum(func(state string) prometheus.Gauge { return s.vridState.WithLabelValues(vrid, state) }, vrrp.StateInitialize)
	}
}

// stateChange records an instance transition and the group state after it.
func (s *rxStats) stateChange(vrid uint8, to, group vrrp.State) {
	id := strconv.Itoa(int(vrid))
	s.transitions.WithLabelValues(id, to.String()).Inc()
	setEnum(func(state string) prometheus.Gauge { return s.vridState.WithLabelValues(id, state) }, to)
	setEnum(func(state string) prometheus.Gauge { return s.groupState.WithLabelValues(state) }, group)
}

// setEnum sets the series of every state the gauges carry: 1 for cur.
func setEnum(gauge func(state string) prometheus.Gauge, cur vrrp.State) {
	for _, st := range []vrrp.State{vrrp.StateInitialize, vrrp.StateBackup, vrrp.StateMaster, vrrp.StateFault} {
		v := 0.0
		if st == cur {
			v = 1
		}
		gauge(st.String()).Set(v)
	}
}

// preemptionHeld sets the hold gauge; newHold counts a new hold.
func (s *rxStats) preemptionHeld(held, newHold bool) {
	if held {
		s.held.Set(1)
	} else {
		s.held.Set(0)
	}
	if newHold {
		s.holds.Inc()
	}
}

func (s *rxStats) holdTimedOut() { s.holdTimeouts.Inc() }

// peerPolled counts a health request; reason is empty when it was answered.
func (s *rxStats) peerPolled(reason string) {
	s.peerPolls.Inc()
	if reason == "" {
		s.peerReachable.Set(1)
		return
	}
	s.peerReachable.Set(0)
	s.peerFailures.WithLabelValues(reason).Inc()
}

// alarms sets the split brain and drift gauges.
func (s *rxStats) alarms(splitBrain, drift bool) {
	s.splitBrain.Set(b2f(splitBrain))
	s.drift.Set(b2f(drift))
}

func (s *rxStats) rulesetFailed() { s.rulesetErrors.Inc() }

func (s *rxStats) reject(reason string) {
	s.rejected.WithLabelValues(reason).Inc()
	s.mu.Lock()
	s.byReason[reason]++
	s.mu.Unlock()
}

// heardKey counts an accepted AH advert by its key version.
func (s *rxStats) heardKey(v vrrp.KeyVersion) {
	if v != 0 {
		s.ahKeys.WithLabelValues(v.String()).Inc()
	}
}

func (s *rxStats) sent() {
	s.sentC.Inc()
	s.mu.Lock()
	s.nSent++
	s.mu.Unlock()
}

func (s *rxStats) sendError() {
	s.sendErrs.Inc()
	s.mu.Lock()
	s.nSendErr++
	s.mu.Unlock()
}

func (s *rxStats) snapshot() AdvertStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := make(map[string]uint64, len(s.byReason))
	for k, v := range s.byReason {
		r[k] = v
	}
	return AdvertStats{Sent: s.nSent, SendErrors: s.nSendErr, Rejected: r}
}

// Status returns the current cluster status.
func (d *Daemon) Status() Status {
	s := d.statusCore()
	if d.db != nil {
		db := d.db.Status()
		s.DB = &db
	} else if d.dbErr != "" {
		s.DB = map[string]string{"error": d.dbErr}
	}
	return s
}

// statusCore is the status without the DB part: the DB replication's health
// document includes it, so it must not call back into the replication.
func (d *Daemon) statusCore() Status {
	s := d.status.snapshot(time.Now())
	s.Adverts = d.stats.snapshot()
	if d.ct != nil {
		s.Conntrack = conntrackStatus(d.ct.Status())
	}
	return s
}

type closers []func() error

func (c closers) Close() error {
	var errs []error
	for _, f := range c {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// startStatusServers starts the local status listener (JSON, page, metrics)
// and the Prometheus listener.
func (d *Daemon) startStatusServers(ctx context.Context) (closers, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d.Status())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusPage.Execute(w, d.Status())
	})
	metrics := promhttp.HandlerFor(d.stats.reg, promhttp.HandlerOpts{})
	mux.Handle("GET /metrics", metrics)

	// The peer and ruleset checks live as long as the status they feed.
	cs := closers{d.startPeerChecks(ctx)}
	l, err := listen(d.cfg.Status.Listen)
	if err != nil {
		cs.Close()
		return nil, fmt.Errorf("daemon: status listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	cs = append(cs, srv.Close)
	if d.cfg.Metrics.Enabled && d.cfg.Metrics.Listen != "" {
		ml, err := listen(d.cfg.Metrics.Listen)
		if err != nil {
			cs.Close()
			return nil, fmt.Errorf("daemon: metrics listener: %w", err)
		}
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", metrics)
		ms := &http.Server{Handler: mm, ReadHeaderTimeout: 5 * time.Second}
		go ms.Serve(ml)
		cs = append(cs, ms.Close)
	}
	return cs, nil
}

// listen opens a unix socket (absolute path; a stale socket file from a
// crashed run is replaced) or a TCP listener.
func listen(addr string) (net.Listener, error) {
	if strings.HasPrefix(addr, "/") {
		if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
			return nil, err
		}
		// A socket file that still answers belongs to a running daemon: two
		// daemons on one run dir would fight over the same VIPs. One that
		// does not answer is left over from a crash and is replaced.
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by a running daemon", addr)
		}
		_ = os.Remove(addr)
		l, err := net.Listen("unix", addr)
		if err != nil {
			return nil, err
		}
		_ = os.Chmod(addr, 0o660)
		return l, nil
	}
	return net.Listen("tcp", addr)
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>muros-had: {{.Node}}</title>
<meta http-equiv="refresh" content="2">
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}
.MASTER{color:#070}.BACKUP{color:#555}.FAULT{color:#b00}</style></head><body>
<h1>Cluster status</h1>
<table>
<tr><th>Node</th><td>{{.Node}} ({{.Role}}, priority {{.Priority}})</td></tr>
<tr><th>Local state</th><td class="{{.State}}">{{.State}}</td></tr>
{{with .Scheduling}}<tr><th>Scheduling</th><td>{{.}}</td></tr>{{end}}
<tr><th>Peer</th><td>{{.Peer.Management}}: {{.Peer.Role}}{{if eq .Peer.RoleSource "health"}} (from its health answer{{with .Peer.Address}}; last adverts from {{.}}{{end}}){{else}}{{with .Peer.Address}} (adverts from {{.}}){{end}}{{end}}{{with .Peer.RoleReason}}: {{.}}{{end}}</td></tr>
<tr><th>Peer health</th><td>{{if not .Peer.Polled}}not polled{{else if .Peer.Reachable}}reachable{{else}}unreachable{{with .Peer.Error}} ({{.}}){{end}}{{end}}{{if not .Peer.LastHeard.IsZero}}, last heard {{.Peer.LastHeard.Format "2006-01-02 15:04:05.000Z07:00"}}{{end}}{{with .Peer.Readiness}}; peer {{.}}{{end}}</td></tr>
{{if .SplitBrain.Active}}<tr><th class="FAULT">SPLIT BRAIN</th><td class="FAULT">this node and the peer are both MASTER since {{.SplitBrain.Since.Format "2006-01-02 15:04:05Z07:00"}}</td></tr>{{end}}
<tr><th>Ruleset</th><td>{{with .Ruleset}}{{if .Drift}}<span class="FAULT">DRIFT since {{.DriftSince.Format "2006-01-02 15:04:05Z07:00"}}</span>: {{end}}local {{or .Local.Fingerprint "none"}}{{with .Local.Error}} ({{.}}){{end}}, peer {{with .Peer}}{{or .Fingerprint "none"}}{{with .Error}} ({{.}}){{end}}{{else}}unknown{{end}}{{with .Off}}; {{.}}{{end}}{{end}}</td></tr>
{{with .Readiness}}<tr><th>Preemption</th><td>{{.}}</td></tr>{{end}}
<tr><th>Last failover</th><td>{{with .LastFailover}}{{.Time.Format "2006-01-02 15:04:05.000Z07:00"}}: {{.From}} &rarr; {{.To}} ({{.Reason}}){{else}}none{{end}}</td></tr>
</table>
<h2>VIPs</h2>
<table><tr><th>VRID</th><th>Interface</th><th>Address</th><th>State</th></tr>
{{range .VIPs}}<tr><td>{{.VRID}}</td><td>{{.Interface}}</td><td>{{.Address}}</td><td class="{{.State}}">{{.State}}</td></tr>{{end}}
</table>
<h2>Adverts</h2><p>sent {{.Adverts.Sent}}, rejected: {{range $k, $v := .Adverts.Rejected}}{{$k}}={{$v}} {{else}}none{{end}}</p>
{{with .Foreign}}<h2>Foreign routers on our VRIDs</h2><ul>{{range .}}<li>VRID {{.VRID}} from {{.Address}}, last seen {{.LastSeen}}</li>{{end}}</ul>{{end}}
</body></html>
`))

// FetchStatus asks the daemon listening on addr (unix socket path or
// host:port) for its status; it returns the decoded status and the raw JSON.
func FetchStatus(ctx context.Context, addr string) (Status, []byte, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	url := "http://" + addr + "/status"
	if strings.HasPrefix(addr, "/") {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}
		url = "http://muros-had/status"
	}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Status{}, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Status{}, nil, fmt.Errorf("daemon not reachable at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, nil, fmt.Errorf("daemon at %s answered %s", addr, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Status{}, nil, fmt.Errorf("reading status from %s: %w", addr, err)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return Status{}, body, fmt.Errorf("bad status from %s: %w", addr, err)
	}
	return st, body, nil
}
