package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// dbsync.limits: values in range are taken, anything that would not limit
// is refused naming the key and line.
func TestDBSyncLimits(t *testing.T) {
	c := mustParse(t, minimal+"dbsync:\n  limits: {connections: 16, connections_per_source: 4, rate_per_source: 2, burst_per_source: 5}\n")
	if d := cmp.Diff(DBSyncLimits{Connections: 16, ConnectionsPerSource: 4, RatePerSource: 2, BurstPerSource: 5}, c.DBSync.Limits); d != "" {
		t.Fatalf("limits (-want +got):\n%s", d)
	}
	c = mustParse(t, minimal+"dbsync:\n  limits: {connections: 16}\n")
	if got := c.DBSync.Limits; got.ConnectionsPerSource != 8 || got.RatePerSource != 10 {
		t.Fatalf("unnamed limits did not keep their defaults: %+v", got)
	}
	for _, tt := range []struct{ src, want string }{
		{"connections: 0", "dbsync.limits.connections: 0 is out of range 1..4096"},
		{"connections: 100000", "dbsync.limits.connections: 100000 is out of range 1..4096"},
		{"connections_per_source: 1", "dbsync.limits.connections_per_source: 1 is out of range 2..4096"},
		{"rate_per_source: 0", "dbsync.limits.rate_per_source: 0 is out of range 1..1000"},
		{"burst_per_source: -1", "dbsync.limits.burst_per_source: -1 is out of range 1..10000"},
		{"connections: 4", "dbsync.limits.connections_per_source: 8 is more than dbsync.limits.connections (4)"},
	} {
		_, err := Parse("config.yaml", []byte(minimal+"dbsync:\n  limits: {"+tt.src+"}\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want a problem %q", tt.src, err, tt.want)
		}
	}
}
