package ctsync

import (
	"testing"
	"time"
)

// An idle sync ticks at half the heartbeat interval (so a heartbeat is
// never more than 1.5 intervals after the last datagram), never faster
// than minIdleTick.
func TestIdleTick(t *testing.T) {
	for _, tc := range []struct {
		heartbeat, want time.Duration
	}{
		{DefaultHeartbeat, DefaultHeartbeat / 2},
		{2 * time.Second, time.Second},
		{60 * time.Millisecond, minIdleTick},
		{time.Millisecond, minIdleTick},
	} {
		s := &Sync{cfg: Config{Heartbeat: tc.heartbeat}}
		if got := s.idleTick(); got != tc.want {
			t.Errorf("heartbeat %v: idle tick %v, want %v", tc.heartbeat, got, tc.want)
		}
	}
}
