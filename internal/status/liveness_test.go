package status

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func cutLiveness() *LivenessStatus {
	return &LivenessStatus{
		Verdict: "alive", PeerRole: "MASTER", DetectMillis: 3, EffectiveMillis: 8,
		SyncCarrier: false,
		Paths: []LivenessPath{
			{Path: "sync", Address: "225.0.0.51 on eth2", Down: true},
			{Path: "peer", Address: "10.0.0.3:3781"},
		},
		SyncLinkDown: Alarm{Active: true, Since: time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)},
		Sent:         map[string]uint64{"sync": 10, "peer": 20},
		Received:     map[string]uint64{"sync": 9, "peer": 19},
		Drops:        map[string]uint64{"mac": 2, "replay": 1},
	}
}

func TestLivenessText(t *testing.T) {
	for _, tt := range []struct {
		name string
		l    *LivenessStatus
		want []string
	}{
		{"off", nil, []string{"off"}},
		{"peer does not speak it", &LivenessStatus{Verdict: "unknown", DetectMillis: 3}, []string{"does not speak it (plain VRRP timing)", "detect 3.0 ms"}},
		{"cut", cutLiveness(), []string{"peer ALIVE as MASTER", "detect 3.0 ms (8.0 ms now", "sync path (225.0.0.51 on eth2) DOWN", "peer path (10.0.0.3:3781) up", "NO CARRIER", "refused mac=2 replay=1"}},
		{"dead", &LivenessStatus{Verdict: "dead", PeerRole: "MASTER", DetectMillis: 3}, []string{"peer DEAD"}},
		{"quiet master", &LivenessStatus{Verdict: "alive", PeerRole: "BACKUP", DetectMillis: 3, Quiet: true}, []string{"heartbeats quiet (nothing received on the VIP interfaces)"}},
		{"backup of a quiet master", &LivenessStatus{Verdict: "alive", PeerRole: "MASTER", DetectMillis: 3, PeerHeartbeatMillis: 10}, []string{"peer heartbeats every 10.0 ms"}},
		{"never quiet", &LivenessStatus{Verdict: "alive", PeerRole: "BACKUP", DetectMillis: 3, QuietOff: "no interfaces"}, []string{"never quiet: no interfaces"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.l.String()
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
		})
	}
}

func TestPageShowsLiveness(t *testing.T) {
	var b strings.Builder
	if err := statusPage.Execute(&b, Status{Liveness: cutLiveness()}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Peer liveness", "SYNC LINK DOWN", "does not take over"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("page lacks %q", w)
		}
	}
	b.Reset()
	if err := statusPage.Execute(&b, Status{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "Peer liveness") {
		t.Error("page shows liveness while it is off")
	}
}

func TestLivenessMetrics(t *testing.T) {
	l := cutLiveness()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(LivenessCollector(func() *LivenessStatus { return l }))
	values := func() map[string]float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				name := mf.GetName()
				for _, lp := range m.GetLabel() {
					name += "{" + lp.GetName() + "=" + lp.GetValue() + "}"
				}
				if g := m.GetGauge(); g != nil {
					out[name] = g.GetValue()
				} else {
					out[name] = m.GetCounter().GetValue()
				}
			}
		}
		return out
	}
	got := values()
	for k, want := range map[string]float64{
		"muros_had_sync_link_down":                      1,
		"muros_had_liveness_path_up{path=sync}":         0,
		"muros_had_liveness_path_up{path=peer}":         1,
		"muros_had_liveness_peer_alive":                 1,
		"muros_had_liveness_rejected_total{reason=mac}": 2,
		"muros_had_liveness_received_total{path=peer}":  19,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
	l = &LivenessStatus{Verdict: "unknown"}
	if _, ok := values()["muros_had_liveness_peer_alive"]; ok {
		t.Error("peer_alive exported for a peer that never spoke")
	}
}
