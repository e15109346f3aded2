package lab

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTargets(t *testing.T) {
	ms := time.Millisecond
	us := time.Microsecond
	for _, tc := range []struct {
		interval time.Duration
		priority uint8
		want     Bounds
	}{
		// Skew = 156/256 x interval for the backup (priority 100).
		{10 * ms, 100, Bounds{Skew: 6093750, MasterDown: 36093750, CrashTarget: 41093750, GracefulTarget: 11093750}},
		{100 * ms, 100, Bounds{Skew: 60937500, MasterDown: 360937500, CrashTarget: 365937500, GracefulTarget: 65937500}},
		{time.Second, 100, Bounds{Skew: 609375 * us, MasterDown: 3609375 * us, CrashTarget: 3614375 * us, GracefulTarget: 614375 * us}},
		// The master's own skew (priority 150) is shorter: 106/256.
		{time.Second, 150, Bounds{Skew: 414062500, MasterDown: 3414062500, CrashTarget: 3419062500, GracefulTarget: 419062500}},
	} {
		if diff := cmp.Diff(tc.want, Targets(tc.interval, tc.priority)); diff != "" {
			t.Errorf("Targets(%v, %d) (-want +got):\n%s", tc.interval, tc.priority, diff)
		}
	}
}

func TestOutcomeErr(t *testing.T) {
	ms := time.Millisecond
	// A 2 s run, master taken away from 1000 to 1010 ms.
	run := func(gap, from, lastAge time.Duration, received int) UDPProbeResult {
		return UDPProbeResult{Received: received, MaxGap: gap, MaxGapFrom: from, Elapsed: 2000 * ms, LastReplyAge: lastAge}
	}
	for _, tc := range []struct {
		name string
		res  UDPProbeResult
		want error
	}{
		{"failover", run(300*ms, 1002*ms, 0, 1700), nil},
		{"gap began just before the trigger", run(300*ms, 999*ms, 0, 1700), nil},
		{"no reply", run(2000*ms, 0, 2000*ms, 0), ErrNoReplies},
		{"never came back", run(1000*ms, 1000*ms, 1000*ms, 1000), ErrNotRecovered},
		{"silent at the end", run(300*ms, 1002*ms, 250*ms, 1500), ErrSilentAtEnd},
		{"stall before the trigger", run(30*ms, 500*ms, 0, 1900), ErrGapNotAtEvent},
		{"stall after the trigger", run(30*ms, 1500*ms, 0, 1900), ErrGapNotAtEvent},
	} {
		err := Outcome(tc.res, 1000*ms, 1010*ms).Err()
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: Err() = %v, want %v", tc.name, err, tc.want)
		}
	}
}
