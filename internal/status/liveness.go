package status

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LivenessStatus is the peer-liveness protocol's part of the document
// (package liveness): the verdict on the peer, its paths, the sync link
// alarm.
type LivenessStatus struct {
	// Verdict: unknown (the peer has not spoken the protocol: plain VRRP
	// applies), alive, dead or left.
	Verdict  string `json:"verdict"`
	PeerRole string `json:"peer_role,omitempty"`
	// Detect is the detection time: every path silent that long (the
	// second path probed for half of it) is a dead peer.
	DetectMillis float64 `json:"detect_ms"`
	// EffectiveMillis is the detection time in force: more than
	// DetectMillis after the peer's heartbeats arrived late (a loaded
	// machine), twice the longest recent silence, decaying back.
	EffectiveMillis float64 `json:"effective_detect_ms"`
	// SyncCarrier: the sync link has carrier here.
	SyncCarrier bool           `json:"sync_carrier"`
	Paths       []LivenessPath `json:"paths"`
	// SyncLinkDown: the sync link's path is down while the peer is alive
	// on another: adverts and conntrack sync do not pass, the node does
	// not take over (no split brain), the operator must mend the link.
	SyncLinkDown Alarm `json:"sync_link_down"`
	// Shared warns that the second path leaves by the sync interface: it
	// is not independent of the sync cable.
	Shared string `json:"shared_path,omitempty"`
	// Stalls counts the times this node itself ran too late to judge a
	// probe (an overloaded machine): the probe started again.
	Stalls uint64 `json:"stalls"`
	// Confirms counts the confirmations VRRP's missed adverts asked for
	// (a held Master_Down_Interval: the peer was last heard alive as
	// master).
	Confirms uint64 `json:"confirms"`
	// Quiet: this node is a master that has received nothing on its VIP
	// interfaces for liveness.quiet_after and heartbeats at the quiet
	// period; QuietOff says why it never does (empty: it can).
	Quiet    bool   `json:"quiet"`
	QuietOff string `json:"quiet_off,omitempty"`
	// PeerHeartbeatMillis is the heartbeat period the peer announces on
	// the sync link: the detection time follows it when the peer is quiet.
	PeerHeartbeatMillis float64           `json:"peer_heartbeat_ms,omitempty"`
	Sent                map[string]uint64 `json:"sent"`
	Received            map[string]uint64 `json:"received"`
	Drops               map[string]uint64 `json:"drops,omitempty"`
}

// LivenessPath is one path of the protocol.
type LivenessPath struct {
	Path      string    `json:"path"`
	Address   string    `json:"address"`
	Down      bool      `json:"down"`
	Since     time.Time `json:"since,omitzero"` // of the current up/down state
	LastHeard time.Time `json:"last_heard,omitzero"`
}

// String is the one-line text form for `muros-had status`.
func (l *LivenessStatus) String() string {
	if l == nil {
		return "off"
	}
	var b strings.Builder
	switch l.Verdict {
	case "unknown":
		b.WriteString("peer does not speak it (plain VRRP timing)")
	default:
		fmt.Fprintf(&b, "peer %s", strings.ToUpper(l.Verdict))
		if l.PeerRole != "" && l.Verdict == "alive" {
			fmt.Fprintf(&b, " as %s", l.PeerRole)
		}
	}
	fmt.Fprintf(&b, ", detect %s", Millis(l.DetectMillis))
	if l.EffectiveMillis > l.DetectMillis {
		fmt.Fprintf(&b, " (%s now: the peer's heartbeats arrived late)", Millis(l.EffectiveMillis))
	}
	for _, p := range l.Paths {
		state := "up"
		if p.Down {
			state = "DOWN"
		}
		fmt.Fprintf(&b, "; %s path (%s) %s", p.Path, p.Address, state)
	}
	if !l.SyncCarrier {
		b.WriteString("; sync link has NO CARRIER")
	}
	if l.Quiet {
		b.WriteString("; heartbeats quiet (nothing received on the VIP interfaces)")
	} else if strings.EqualFold(l.PeerRole, "master") && l.PeerHeartbeatMillis > 0 {
		fmt.Fprintf(&b, "; peer heartbeats every %s", Millis(l.PeerHeartbeatMillis))
	}
	if l.QuietOff != "" {
		fmt.Fprintf(&b, "; never quiet: %s", l.QuietOff)
	}
	if l.Stalls > 0 {
		fmt.Fprintf(&b, "; %d own stalls (this node ran too late to judge a probe)", l.Stalls)
	}
	if l.Confirms > 0 {
		fmt.Fprintf(&b, "; %d confirmations after missed adverts", l.Confirms)
	}
	if len(l.Drops) > 0 {
		keys := make([]string, 0, len(l.Drops))
		for k := range l.Drops {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = fmt.Sprintf("%s=%d", k, l.Drops[k])
		}
		b.WriteString("; refused " + strings.Join(keys, " "))
	}
	return b.String()
}

// LivenessCollector exports the liveness figures.
func LivenessCollector(status func() *LivenessStatus) prometheus.Collector {
	return livenessCollector{status}
}

type livenessCollector struct{ status func() *LivenessStatus }

var (
	livenessVerdictDesc = prometheus.NewDesc("muros_had_liveness_peer_alive",
		"1 while the peer-liveness protocol hears the peer on some path, 0 when it is dead or left, absent while the peer has not spoken it.", nil, nil)
	livenessPathDesc = prometheus.NewDesc("muros_had_liveness_path_up",
		"1 while the path brings the peer's messages.", []string{"path"}, nil)
	livenessSyncDownDesc = prometheus.NewDesc("muros_had_sync_link_down",
		"1 while the sync link is down and the peer alive on another path (no takeover; adverts and conntrack sync do not pass).", nil, nil)
	livenessSentDesc = prometheus.NewDesc("muros_had_liveness_sent_total",
		"Liveness messages sent, by path.", []string{"path"}, nil)
	livenessReceivedDesc = prometheus.NewDesc("muros_had_liveness_received_total",
		"Liveness messages received and authenticated, by path.", []string{"path"}, nil)
	livenessStallDesc = prometheus.NewDesc("muros_had_liveness_stalls_total",
		"Times this node itself ran too late to judge a probe (the probe started again instead of a verdict).", nil, nil)
	livenessConfirmDesc = prometheus.NewDesc("muros_had_liveness_confirms_total",
		"Confirmations asked because VRRP's Master_Down_Interval passed without an advert while the peer was last heard alive as master.", nil, nil)
	livenessQuietDesc = prometheus.NewDesc("muros_had_liveness_quiet",
		"1 while this master heartbeats at the quiet period (nothing received on its VIP interfaces for liveness.quiet_after).", nil, nil)
	livenessDropDesc = prometheus.NewDesc("muros_had_liveness_rejected_total",
		"Liveness messages refused, by reason.", []string{"reason"}, nil)
)

func (c livenessCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{livenessVerdictDesc, livenessPathDesc, livenessSyncDownDesc, livenessSentDesc, livenessReceivedDesc, livenessStallDesc, livenessConfirmDesc, livenessQuietDesc, livenessDropDesc} {
		ch <- d
	}
}

func (c livenessCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	if s == nil {
		return
	}
	if s.Verdict != "unknown" {
		ch <- prometheus.MustNewConstMetric(livenessVerdictDesc, prometheus.GaugeValue, b2f(s.Verdict == "alive"))
	}
	for _, p := range s.Paths {
		ch <- prometheus.MustNewConstMetric(livenessPathDesc, prometheus.GaugeValue, b2f(!p.Down), p.Path)
	}
	ch <- prometheus.MustNewConstMetric(livenessSyncDownDesc, prometheus.GaugeValue, b2f(s.SyncLinkDown.Active))
	for path, n := range s.Sent {
		ch <- prometheus.MustNewConstMetric(livenessSentDesc, prometheus.CounterValue, float64(n), path)
	}
	for path, n := range s.Received {
		ch <- prometheus.MustNewConstMetric(livenessReceivedDesc, prometheus.CounterValue, float64(n), path)
	}
	ch <- prometheus.MustNewConstMetric(livenessStallDesc, prometheus.CounterValue, float64(s.Stalls))
	ch <- prometheus.MustNewConstMetric(livenessConfirmDesc, prometheus.CounterValue, float64(s.Confirms))
	ch <- prometheus.MustNewConstMetric(livenessQuietDesc, prometheus.GaugeValue, b2f(s.Quiet))
	for reason, n := range s.Drops {
		ch <- prometheus.MustNewConstMetric(livenessDropDesc, prometheus.CounterValue, float64(n), reason)
	}
}
