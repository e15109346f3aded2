package config

import (
	"strings"
	"testing"
	"time"
)

// dbsync.jwt.leeway and dbsync.clock_skew_warn: decoded within their
// ranges, anything else refused with the key and line.
func TestDBSyncClockKeys(t *testing.T) {
	tests := []struct {
		name        string
		yaml        string
		wantLeeway  time.Duration
		wantWarn    time.Duration
		wantProblem string
	}{
		{name: "defaults", wantLeeway: 5 * time.Second, wantWarn: time.Second},
		{name: "set", yaml: "dbsync:\n  clock_skew_warn: 500ms\n  jwt: {leeway: 15s}\n", wantLeeway: 15 * time.Second, wantWarn: 500 * time.Millisecond},
		{name: "leeway zero", yaml: "dbsync:\n  jwt: {leeway: 0s}\n", wantProblem: "dbsync.jwt.leeway: 0s is out of range 1s..1m0s"},
		{name: "leeway too long", yaml: "dbsync:\n  jwt: {leeway: 2m}\n", wantProblem: "dbsync.jwt.leeway: 2m is out of range 1s..1m0s"},
		{name: "warn too long", yaml: "dbsync:\n  clock_skew_warn: 90s\n", wantProblem: "dbsync.clock_skew_warn: 90s is out of range 10ms..1m0s"},
		{name: "bare number", yaml: "dbsync:\n  clock_skew_warn: 2\n", wantProblem: "dbsync.clock_skew_warn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("config.yaml", []byte(minimal+tt.yaml))
			if tt.wantProblem != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantProblem) {
					t.Fatalf("Parse: %v, want a problem %q", err, tt.wantProblem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.DBSync.JWT.Leeway != tt.wantLeeway || c.DBSync.ClockSkewWarn != tt.wantWarn {
				t.Fatalf("leeway %v warn %v, want %v %v", c.DBSync.JWT.Leeway, c.DBSync.ClockSkewWarn, tt.wantLeeway, tt.wantWarn)
			}
		})
	}
}
