package dbsync

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the Node's counters and state to Prometheus; the daemon
// registers it on its local /metrics listener.
func (n *Node) Collector() prometheus.Collector { return nodeCollector{n} }

type nodeCollector struct{ n *Node }

var (
	descRejected = prometheus.NewDesc("muros_had_dbsync_rejected_total",
		"Requests or pushes refused, by reason.", []string{"reason"}, nil)
	descEvents = prometheus.NewDesc("muros_had_dbsync_events_total",
		"Replication events (pushes, entries, bytes, errors), by kind.", []string{"kind"}, nil)
	descRevision = prometheus.NewDesc("muros_had_dbsync_revision",
		"Last revision produced (master) or applied (backup).", nil, nil)
	descLag = prometheus.NewDesc("muros_had_dbsync_lag_seconds",
		"Age of the oldest local change not yet on the peer (master).", nil, nil)
	descPending = prometheus.NewDesc("muros_had_dbsync_pending_paths",
		"Changed paths not yet pushed (master).", nil, nil)
	descPeerUp = prometheus.NewDesc("muros_had_dbsync_peer_reachable",
		"1 when the last request to the peer got an answer.", nil, nil)
	descMaster = prometheus.NewDesc("muros_had_dbsync_master",
		"1 when this node pushes (VRRP master).", nil, nil)
	descReady = prometheus.NewDesc("muros_had_dbsync_ready",
		"1 once this node holds the master's content or may preempt anyway.", nil, nil)
	descPathFailures = prometheus.NewDesc("muros_had_dbsync_path_failures_total",
		"Replicated paths a batch could not apply (the rest of the batch did), by reason.", []string{"reason"}, nil)
	descFailedPaths = prometheus.NewDesc("muros_had_dbsync_failed_paths",
		"Replicated paths whose latest apply failed (backup).", nil, nil)
	descClockSkew = prometheus.NewDesc("muros_had_dbsync_peer_clock_offset_seconds",
		"The peer's clock minus this node's, last measured from its answers (absent until measured). The pair needs NTP: beyond dbsync.jwt.leeway one node refuses the other's tokens.", nil, nil)
	descConflicts = prometheus.NewDesc("muros_had_dbsync_conflicts",
		"Files both nodes changed independently (split brain), neither pushed until changed on the master (master).", nil, nil)
)

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRejected, descEvents, descRevision, descLag, descPending, descPeerUp, descMaster, descReady, descPathFailures, descFailedPaths, descClockSkew, descConflicts} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.Status()
	for reason, v := range s.Rejected {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(v), reason)
	}
	for kind, v := range s.Stats {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(v), kind)
	}
	ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(s.Revision))
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(s.LagMillis)/1000)
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.PendingPaths))
	ch <- prometheus.MustNewConstMetric(descPeerUp, prometheus.GaugeValue, b2f(s.Peer.Reachable))
	ch <- prometheus.MustNewConstMetric(descMaster, prometheus.GaugeValue, b2f(s.Role == "master"))
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(s.Ready))
	for reason, v := range s.PathFailures {
		ch <- prometheus.MustNewConstMetric(descPathFailures, prometheus.CounterValue, float64(v), reason)
	}
	ch <- prometheus.MustNewConstMetric(descFailedPaths, prometheus.GaugeValue, float64(len(s.FailedPaths)))
	if s.ClockSkew != nil {
		ch <- prometheus.MustNewConstMetric(descClockSkew, prometheus.GaugeValue, float64(s.ClockSkew.OffsetMillis)/1000)
	}
	ch <- prometheus.MustNewConstMetric(descConflicts, prometheus.GaugeValue, float64(len(s.Conflicts)))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
