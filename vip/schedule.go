package vip

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Schedule says when a new master announces its VIPs: Repeat rounds Interval
// apart at takeover, then one round every Refresh while master (0 = no
// refresh). A round is one gratuitous ARP request and reply per IPv4 VIP and
// one unsolicited neighbour advertisement per IPv6 VIP.
type Schedule struct {
	Repeat   int
	Interval time.Duration
	Refresh  time.Duration
}

// DefaultSchedule is keepalived's garp_master_repeat (5) with a short gap
// between rounds so a lost frame is covered; no refresh.
func DefaultSchedule() Schedule { return Schedule{Repeat: 5, Interval: 200 * time.Millisecond} }

// Validate reports a schedule that cannot be run.
func (s Schedule) Validate() error {
	var errs []error
	if s.Repeat < 1 {
		errs = append(errs, fmt.Errorf("vip: announcement repeat %d: must be at least 1", s.Repeat))
	}
	if s.Interval < 0 {
		errs = append(errs, fmt.Errorf("vip: announcement interval %s: must not be negative", s.Interval))
	}
	if s.Refresh < 0 {
		errs = append(errs, fmt.Errorf("vip: announcement refresh %s: must not be negative", s.Refresh))
	}
	return errors.Join(errs...)
}

// Delay returns how long after round n-1 round n is due (round 0 is due at
// once), and false when there is no round n.
func (s Schedule) Delay(n int) (time.Duration, bool) {
	switch {
	case n <= 0:
		return 0, true
	case n < s.Repeat:
		return s.Interval, true
	case s.Refresh > 0:
		return s.Refresh, true
	default:
		return 0, false
	}
}

// run calls announce at the times of s until the schedule ends or ctx is
// done.
func (s Schedule) run(ctx context.Context, announce func()) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for n := 0; ; n++ {
		d, ok := s.Delay(n)
		if !ok {
			return
		}
		if d > 0 {
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		announce()
	}
}
