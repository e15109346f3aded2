package daemon

import (
	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/dbsync"
	"github.com/prometheus/client_golang/prometheus"
)

// registerSyncMetrics adds the conntrack and DB replication metrics to the
// daemon's registry. The conntrack figures are read from ctsync's status
// snapshot at scrape time, so the hot path keeps no second set of counters.
func (d *Daemon) registerSyncMetrics() {
	if d.ct != nil {
		d.stats.reg.MustRegister(conntrackCollector{d.ct})
	}
	if db, ok := d.db.(*dbsync.Node); ok && db != nil {
		d.stats.reg.MustRegister(db.Collector())
	}
}

type conntrackCollector struct{ ct conntrackSync }

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
	}
}

func (conntrackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range ctMetrics() {
		ch <- m.desc
	}
	ch <- prometheus.NewDesc("muros_had_conntrack_rejected_total", "Sync datagrams or records dropped, by reason.", []string{"reason"}, nil)
}

func (c conntrackCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.ct.Status()
	for _, m := range ctMetrics() {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s))
	}
	rd := prometheus.NewDesc("muros_had_conntrack_rejected_total", "Sync datagrams or records dropped, by reason.", []string{"reason"}, nil)
	for reason, n := range s.Rejected {
		ch <- prometheus.MustNewConstMetric(rd, prometheus.CounterValue, float64(n), reason)
	}
}
