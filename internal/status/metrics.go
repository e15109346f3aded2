package status

import (
	"strconv"
	"sync"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/vrrp"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts adverts, state changes, holds and peer checks; the counters
// are Prometheus metrics in a registry of the daemon's own (no global registry: several daemons per process in
// tests).
type Metrics struct {
	reg      *prometheus.Registry
	rejected *prometheus.CounterVec
	// ahKeys: accepted muros-had AH adverts by key version (v1, v2): a
	// pair upgraded one node at a time shows when it has left v1.
	ahKeys *prometheus.CounterVec
	// ahKeyCounters are ahKeys' counters by version, each looked up once.
	ahKeyCounters [vrrp.KeyV2 + 1]prometheus.Counter
	ahKeyOnce     [vrrp.KeyV2 + 1]sync.Once
	sentC         prometheus.Counter
	sendErrs      prometheus.Counter
	readErrs      prometheus.Counter
	// groupState and vridState are enum gauges: 1 on the current state's
	// series, 0 on the others, so a dashboard can sum or alert on one label.
	groupState  *prometheus.GaugeVec
	vridState   *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	// Readiness: the hold now, holds started, holds ended by the timeout.
	held         prometheus.Gauge
	holds        prometheus.Counter
	holdTimeouts prometheus.Counter
	// Peer checks (package peerview).
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

// NewMetrics registers the daemon's metrics in a new registry.
func NewMetrics() *Metrics {
	s := &Metrics{
		reg: prometheus.NewRegistry(),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_vrrp_adverts_rejected_total", Help: "VRRP adverts dropped, by reason.",
		}, []string{"reason"}),
		ahKeys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "muros_had_vrrp_ah_key_accepted_total", Help: "Adverts accepted with muros-had's AH, by the key version they were signed with (v1: unstretched password, an old peer or a fallback for one; v2: Argon2id).",
		}, []string{"version"}),
		sentC:    prometheus.NewCounter(prometheus.CounterOpts{Name: "muros_had_vrrp_adverts_sent_total", Help: "VRRP adverts sent."}),
		sendErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "muros_had_vrrp_advert_send_errors_total", Help: "VRRP adverts the kernel refused."}),
		readErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "muros_had_vrrp_advert_read_errors_total", Help: "Reads of the VRRP and AH sockets that failed (a datagram refused is muros_had_vrrp_adverts_rejected_total)."}),
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
	s.reg.MustRegister(s.rejected, s.ahKeys, s.sentC, s.sendErrs, s.readErrs, s.groupState, s.vridState, s.transitions, s.held, s.holds, s.holdTimeouts,
		s.splitBrain, s.drift, s.peerReachable, s.peerPolls, s.peerFailures, s.rulesetErrors)
	return s
}

// Registry is the registry /metrics serves; the replications add their
// collectors to it.
func (s *Metrics) Registry() *prometheus.Registry { return s.reg }

// InitStates sets every instance and the group to INIT, so each series
// exists from the start.
func (s *Metrics) InitStates(cfg *config.Config) {
	setEnum(func(state string) prometheus.Gauge { return s.groupState.WithLabelValues(state) }, vrrp.StateInitialize)
	for _, v := range cfg.VIPs {
		vrid := strconv.Itoa(int(v.VRID))
		setEnum(func(state string) prometheus.Gauge { return s.vridState.WithLabelValues(vrid, state) }, vrrp.StateInitialize)
	}
}

// StateChange records an instance transition and the group state after it.
func (s *Metrics) StateChange(vrid uint8, to, group vrrp.State) {
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

// PreemptionHeld sets the hold gauge; newHold counts a new hold.
func (s *Metrics) PreemptionHeld(held, newHold bool) {
	if held {
		s.held.Set(1)
	} else {
		s.held.Set(0)
	}
	if newHold {
		s.holds.Inc()
	}
}

// HoldTimedOut counts a hold lifted by the startup timeout.
func (s *Metrics) HoldTimedOut() { s.holdTimeouts.Inc() }

// PeerPolled counts a health request; reason is empty when it was answered.
func (s *Metrics) PeerPolled(reason string) {
	s.peerPolls.Inc()
	if reason == "" {
		s.peerReachable.Set(1)
		return
	}
	s.peerReachable.Set(0)
	s.peerFailures.WithLabelValues(reason).Inc()
}

// Alarms sets the split brain and drift gauges.
func (s *Metrics) Alarms(splitBrain, drift bool) {
	s.splitBrain.Set(b2f(splitBrain))
	s.drift.Set(b2f(drift))
}

// RulesetFailed counts a ruleset fingerprint that failed.
func (s *Metrics) RulesetFailed() { s.rulesetErrors.Inc() }

// Reject counts an advert dropped for reason.
func (s *Metrics) Reject(reason string) {
	s.rejected.WithLabelValues(reason).Inc()
	s.mu.Lock()
	s.byReason[reason]++
	s.mu.Unlock()
}

// HeardKey counts an accepted AH advert by its key version. Every advert
// a backup hears comes here: the counter of each version is looked up
// once (WithLabelValues hashes its labels: 7 % of an idle backup's perf
// samples when it ran per advert).
func (s *Metrics) HeardKey(v vrrp.KeyVersion) {
	if v == 0 {
		return
	}
	if int(v) < len(s.ahKeyCounters) {
		s.ahKeyOnce[v].Do(func() { s.ahKeyCounters[v] = s.ahKeys.WithLabelValues(v.String()) })
		s.ahKeyCounters[v].Inc()
		return
	}
	s.ahKeys.WithLabelValues(v.String()).Inc()
}

// Sent counts an advert sent.
func (s *Metrics) Sent() {
	s.sentC.Inc()
	s.mu.Lock()
	s.nSent++
	s.mu.Unlock()
}

// ReadError counts a failed read of an advert socket.
func (s *Metrics) ReadError() { s.readErrs.Inc() }

// SendError counts an advert the kernel refused.
func (s *Metrics) SendError() {
	s.sendErrs.Inc()
	s.mu.Lock()
	s.nSendErr++
	s.mu.Unlock()
}

// Adverts is the advert counters' part of the document.
func (s *Metrics) Adverts() AdvertStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := make(map[string]uint64, len(s.byReason))
	for k, v := range s.byReason {
		r[k] = v
	}
	return AdvertStats{Sent: s.nSent, SendErrors: s.nSendErr, Rejected: r}
}

// ConntrackCollector exports the conntrack replication's figures, read from
// its status snapshot at scrape time, so the hot path keeps no second set
// of counters.
func ConntrackCollector(status func() ctsync.Status) prometheus.Collector {
	return conntrackCollector{status}
}

type conntrackCollector struct{ status func() ctsync.Status }

type ctMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s *ctsync.Status) float64
}

func ctDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("muros_had_conntrack_"+name, help, nil, nil)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ctMetrics lists the exported conntrack replication figures.
func ctMetrics() []ctMetric {
	c, g := prometheus.CounterValue, prometheus.GaugeValue
	return []ctMetric{
		{ctDesc("sender", "1 while this node sends its table (master), 0 while it receives."), g, func(s *ctsync.Status) float64 { return b2f(s.Master) }},
		{ctDesc("bulk_synced", "1 when this node holds a complete copy of the master's table."), g, func(s *ctsync.Status) float64 { return b2f(s.BulkSynced) }},
		{ctDesc("flows", "Flows in the replicated table."), g, func(s *ctsync.Status) float64 { return float64(s.Flows) }},
		{ctDesc("lag_seconds", "Send-to-kernel delay of the last applied datagram (backup)."), g, func(s *ctsync.Status) float64 { return s.Lag.Seconds() }},
		{ctDesc("datagrams_sent_total", "Sync datagrams sent."), c, func(s *ctsync.Status) float64 { return float64(s.DatagramsSent) }},
		{ctDesc("datagrams_received_total", "Sync datagrams received and authenticated."), c, func(s *ctsync.Status) float64 { return float64(s.DatagramsReceived) }},
		{ctDesc("records_applied_total", "Flow records written to the kernel table (backup)."), c, func(s *ctsync.Status) float64 { return float64(s.RecordsApplied) }},
		{ctDesc("lost_total", "Sequence gaps detected."), c, func(s *ctsync.Status) float64 { return float64(s.Lost) }},
		{ctDesc("repaired_total", "Sequence gaps repaired."), c, func(s *ctsync.Status) float64 { return float64(s.Repaired) }},
		{ctDesc("resyncs_total", "Bulk resyncs completed (backup) or sent (master)."), c, func(s *ctsync.Status) float64 { return float64(s.Resyncs) }},
		{ctDesc("listener_restarts_total", "Kernel event listener restarts (ENOBUFS and other receive errors)."), c, func(s *ctsync.Status) float64 { return float64(s.ListenerRestarts) }},
		{ctDesc("inject_errors_total", "Flow records the kernel refused."), c, func(s *ctsync.Status) float64 { return float64(s.InjectErrors) }},
		{ctDesc("forged_total", "Datagrams dropped for a bad MAC."), c, func(s *ctsync.Status) float64 { return float64(s.Forged) }},
		{ctDesc("sweeps_total", "Refresh sweeps of the kernel table completed (master)."), c, func(s *ctsync.Status) float64 { return float64(s.Sweeps) }},
		{ctDesc("inject_redials_total", "Kernel batch sockets replaced after a failed exchange (backup)."), c, func(s *ctsync.Status) float64 { return float64(s.InjectRedials) }},
		{ctDesc("records_filtered_total", "Received flow records the backup's own filter excludes (not put into the kernel)."), c, func(s *ctsync.Status) float64 { return float64(s.RecordsFiltered) }},
		{ctDesc("state_errors_total", "Failed writes of the sync epochs to the state directory."), c, func(s *ctsync.Status) float64 { return float64(s.StateErrors) }},
		{ctDesc("nonce_errors_total", "Handshake nonces that could not be drawn (backup)."), c, func(s *ctsync.Status) float64 { return float64(s.NonceErrors) }},
		{ctDesc("peer_protocol_version", "The peer's sync protocol version (0: not heard yet); another than this node's pauses replication."), g, func(s *ctsync.Status) float64 { return float64(s.PeerProtocolVersion) }},
	}
}

func (conntrackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range ctMetrics() {
		ch <- m.desc
	}
	ch <- prometheus.NewDesc("muros_had_conntrack_rejected_total", "Sync datagrams or records dropped, by reason.", []string{"reason"}, nil)
	other, stale := ctLabeledDescs()
	ch <- other
	ch <- stale
}

// ctLabeledDescs are the conntrack counters by type and by outcome.
func ctLabeledDescs() (otherMaster, staleResyncs *prometheus.Desc) {
	return prometheus.NewDesc("muros_had_conntrack_from_other_master_total",
			"Another sender's datagrams the master dropped (split brain or a role swap in flight), by type.", []string{"type"}, nil),
		prometheus.NewDesc("muros_had_conntrack_stale_resyncs_total",
			"RESYNCs of stale incarnations the master got (replays, or a backup that lost its state), by outcome; none gets a bulk.", []string{"outcome"}, nil)
}

func (c conntrackCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	for _, m := range ctMetrics() {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s))
	}
	rd := prometheus.NewDesc("muros_had_conntrack_rejected_total", "Sync datagrams or records dropped, by reason.", []string{"reason"}, nil)
	for reason, n := range s.Rejected {
		ch <- prometheus.MustNewConstMetric(rd, prometheus.CounterValue, float64(n), reason)
	}
	other, stale := ctLabeledDescs()
	for typ, n := range s.FromOtherMaster {
		ch <- prometheus.MustNewConstMetric(other, prometheus.CounterValue, float64(n), typ)
	}
	for outcome, n := range s.StaleResyncs {
		ch <- prometheus.MustNewConstMetric(stale, prometheus.CounterValue, float64(n), outcome)
	}
}
