package lab

// The pure judgement of a failover run that the demo and the benchmarks
// share: what RFC 9568 lets a backup take (Skew_Time, Master_Down_Interval,
// section 6.1) and whether a UDP probe run (ProbeUDP) measured the failover
// or something else.

import (
	"errors"
	"fmt"
	"time"
)

// Bounds are the RFC 9568 timers of a backup and the targets the failover
// gap is held to.
type Bounds struct {
	Skew           time.Duration // Skew_Time = (256 - priority) x interval / 256
	MasterDown     time.Duration // Master_Down_Interval = 3 x interval + Skew_Time
	CrashTarget    time.Duration // MasterDown + 5 ms (GARP and one probe slot)
	GracefulTarget time.Duration // Skew + 5 ms
}

// Targets returns the bounds for a backup of the given priority at interval.
func Targets(interval time.Duration, priority uint8) Bounds {
	skew := time.Duration(256-int64(priority)) * interval / 256
	md := 3*interval + skew
	return Bounds{
		Skew:           skew,
		MasterDown:     md,
		CrashTarget:    md + 5*time.Millisecond,
		GracefulTarget: skew + 5*time.Millisecond,
	}
}

// FailoverOutcome is one failover as the client saw it.
type FailoverOutcome struct {
	Gap     time.Duration // longest time without a reply in the run
	GapFrom time.Duration // where it began, from the start of the probe
	// Trigger and TriggerDone bracket the start of the failover: by
	// TriggerDone the master has stopped forwarding, so the failover's gap
	// begins in between (same origin).
	Trigger, TriggerDone time.Duration
	// LastReply is the offset of the last reply (zero if none).
	LastReply time.Duration
	Received  int
	Lost      int
	SendLag   time.Duration // the prober's worst lag behind its schedule
	end       time.Duration
	lastAge   time.Duration
}

// Outcome reads a probe run in which the master was taken away between
// offsets trigger and done.
func Outcome(res UDPProbeResult, trigger, done time.Duration) FailoverOutcome {
	o := FailoverOutcome{
		Gap: res.MaxGap, GapFrom: res.MaxGapFrom, Trigger: trigger, TriggerDone: done,
		Received: res.Received, Lost: res.Lost, SendLag: res.MaxSendLag,
		end: res.Elapsed, lastAge: res.LastReplyAge,
	}
	if res.Received > 0 {
		o.LastReply = res.Elapsed - res.LastReplyAge
	}
	return o
}

// maxSilenceAtEnd is how long the path may be quiet at the end of a run
// before the failover counts as not recovered.
const maxSilenceAtEnd = 200 * time.Millisecond

// Reasons a failover run is not a measurement.
var (
	ErrNoReplies     = errors.New("no reply at all: the path through the VIPs never worked")
	ErrNotRecovered  = errors.New("no reply after the master was taken away: the path never came back")
	ErrSilentAtEnd   = errors.New("the path went silent again before the end of the run")
	ErrGapNotAtEvent = errors.New("the longest gap is not the failover")
)

// Err says why the run does not measure a failover, or nil. The longest gap
// must begin while the master was being taken away (or just before: the
// last reply may precede the trigger by up to one probe interval plus the
// prober's lag) and end after the trigger: a gap elsewhere would mean the
// failover was shorter than the prober's noise, or that the path broke at
// another time.
func (o FailoverOutcome) Err() error {
	switch {
	case o.Received == 0:
		return ErrNoReplies
	case o.LastReply <= o.Trigger:
		return fmt.Errorf("%w (last reply at %v, trigger at %v)", ErrNotRecovered, o.LastReply, o.Trigger)
	case o.lastAge > maxSilenceAtEnd:
		return fmt.Errorf("%w (silent for the last %v)", ErrSilentAtEnd, o.lastAge)
	case o.GapFrom > o.TriggerDone || o.GapFrom+o.Gap < o.Trigger:
		return fmt.Errorf("%w: %v from %v, trigger from %v to %v", ErrGapNotAtEvent, o.Gap, o.GapFrom, o.Trigger, o.TriggerDone)
	}
	return nil
}
