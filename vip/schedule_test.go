package vip

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestScheduleDelay(t *testing.T) {
	type step struct {
		D  time.Duration
		OK bool
	}
	tests := []struct {
		name string
		s    Schedule
		want []step // rounds 0..len-1
	}{
		{"single", Schedule{Repeat: 1}, []step{{0, true}, {0, false}, {0, false}}},
		{"burst", Schedule{Repeat: 3, Interval: time.Second}, []step{{0, true}, {time.Second, true}, {time.Second, true}, {0, false}}},
		{"burst then refresh", Schedule{Repeat: 2, Interval: 100 * time.Millisecond, Refresh: time.Minute},
			[]step{{0, true}, {100 * time.Millisecond, true}, {time.Minute, true}, {time.Minute, true}}},
		{"no gap", Schedule{Repeat: 3}, []step{{0, true}, {0, true}, {0, true}, {0, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []step
			for n := range tt.want {
				d, ok := tt.s.Delay(n)
				got = append(got, step{d, ok})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Delay (-want +got):\n%s", diff)
			}
		})
	}
}

func TestScheduleValidate(t *testing.T) {
	tests := []struct {
		s    Schedule
		fail bool
	}{
		{DefaultSchedule(), false},
		{Schedule{Repeat: 1}, false},
		{Schedule{Repeat: 0}, true},
		{Schedule{Repeat: 1, Interval: -1}, true},
		{Schedule{Repeat: 1, Refresh: -time.Second}, true},
	}
	for _, tt := range tests {
		if err := tt.s.Validate(); (err != nil) != tt.fail {
			t.Errorf("%+v: Validate() = %v, want failure %v", tt.s, err, tt.fail)
		}
	}
}

// run announces at exactly the scheduled virtual instants and stops when
// cancelled.
func TestScheduleRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name  string
		s     Schedule
		until time.Duration // cancel after
		want  []time.Duration
	}{
		{"burst", Schedule{Repeat: 3, Interval: 200 * time.Millisecond}, time.Hour,
			[]time.Duration{0, 200 * time.Millisecond, 400 * time.Millisecond}},
		{"refresh", Schedule{Repeat: 2, Interval: time.Second, Refresh: 10 * time.Second}, 35 * time.Second,
			[]time.Duration{0, time.Second, 11 * time.Second, 21 * time.Second, 31 * time.Second}},
		{"cancelled mid-burst", Schedule{Repeat: 5, Interval: time.Second}, 2500 * time.Millisecond,
			[]time.Duration{0, time.Second, 2 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				start := time.Now()
				var got []time.Duration
				finished := make(chan struct{})
				go func() {
					defer close(finished)
					tt.s.run(ctx, func() { got = append(got, time.Since(start)) })
				}()
				time.Sleep(tt.until)
				cancel()
				<-finished
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("announcement times (-want +got):\n%s", diff)
				}
			})
		})
	}
}
