package peerview

import (
	"context"
	"sync"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/ruleset"
)

// HealthClient fetches the peer's health document (dbsync.Node).
type HealthClient interface {
	PeerHealth(ctx context.Context) ([]byte, error)
}

// Metrics is what the checks count (status.Metrics).
type Metrics interface {
	PeerPolled(reason string)
	Alarms(splitBrain, drift bool)
	RulesetFailed()
}

// Logger is the part of *slog.Logger the checks use.
type Logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
	Error(msg string, args ...any)
}

// pollTimeout bounds one health request: a black-holed management link
// must not hold the next poll back for long.
func pollTimeout(interval time.Duration) time.Duration {
	return min(max(interval, time.Second), 5*time.Second)
}

// runPeerPoll polls the peer's health every interval until ctx ends.
func runPeerPoll(ctx context.Context, interval time.Duration, client HealthClient, m *Monitor, stats Metrics) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p := &peerPoll{sent: time.Now()}
		rctx, cancel := context.WithTimeout(ctx, pollTimeout(interval))
		body, err := client.PeerHealth(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.at = time.Now()
		reason := ""
		if err != nil {
			reason, p.err = peerFailRequest, err.Error()
		} else if p.doc, reason, err = parsePeerHealth(body); err != nil {
			p.err = err.Error()
		}
		stats.PeerPolled(reason)
		m.polled(p)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runPeerAlarms re-derives the view every tick and reports the split brain
// and ruleset drift alarms as they start and end.
func runPeerAlarms(ctx context.Context, tick, driftGrace time.Duration, m *Monitor, stats Metrics, log Logger, onAlarm func(name string, active bool, at time.Time)) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		ev := m.evaluate(time.Now(), driftGrace)
		stats.Alarms(ev.splitBrain, ev.drift)
		if onAlarm != nil {
			now := time.Now()
			if ev.splitBrainStep != 0 {
				onAlarm(AlarmSplitBrain, ev.splitBrainStep > 0, now)
			}
			if ev.driftStep != 0 {
				onAlarm(AlarmRulesetDrift, ev.driftStep > 0, now)
			}
		}
		switch ev.splitBrainStep {
		case 1:
			log.Error("SPLIT BRAIN: this node and the peer are both MASTER and both hold the VIPs; VRRP adverts do not get through between them (check the sync link and the nftables rules on it)",
				"peer", ev.view.role, "source", ev.view.source, "management", ev.management, "since", ev.splitBrainSince)
		case -1:
			log.Error("split brain ended: the peer is no longer seen as MASTER beside this node",
				"state", ev.local, "peer", ev.view.role, "source", ev.view.source, "reachable", ev.view.reachable, "err", ev.view.err)
		}
		switch ev.driftStep {
		case 1:
			log.Warn("ruleset drift: the nftables rulesets of the two nodes differ", "local", ev.localFP, "peer", ev.peerFP)
		case -1:
			log.Warn("ruleset drift ended: the two nodes have the same nftables ruleset again", "fingerprint", ev.localFP)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Checks configures the peer checks.
type Checks struct {
	// Interval between health polls (config.DefaultPeerCheck when 0) and
	// between ruleset fingerprints (0: ruleset check off).
	Interval, RulesetInterval time.Duration
	// Client polls the peer's health; nil when it cannot be polled,
	// HealthOff says why.
	Client    HealthClient
	HealthOff string
	// Ruleset lists the local nftables ruleset; Kick asks for a
	// fingerprint now.
	Ruleset ruleset.Lister
	Kick    <-chan struct{}
	// OnAlarm, if set, is told when an alarm (AlarmSplitBrain,
	// AlarmRulesetDrift) starts or ends (the events stream). It must not
	// block.
	OnAlarm func(name string, active bool, at time.Time)
}

// Alarm names, as the events stream gives them.
const (
	AlarmSplitBrain   = "split_brain"
	AlarmRulesetDrift = "ruleset_drift"
)

// Start starts the peer health poll (with a client), the ruleset
// fingerprint (unless off) and the alarm evaluation; the returned function
// stops them and waits.
func (m *Monitor) Start(ctx context.Context, c Checks, metrics Metrics, log Logger) func() error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if c.Interval <= 0 {
		c.Interval = config.DefaultPeerCheck
	}
	rulesetOff := ""
	if c.RulesetInterval <= 0 {
		rulesetOff = "ruleset check is off (peer_check.ruleset_interval: 0)"
	}
	m.setup(2*c.Interval+pollTimeout(c.Interval), c.HealthOff, rulesetOff)
	if c.Client != nil {
		wg.Go(func() { runPeerPoll(ctx, c.Interval, c.Client, m, metrics) })
	}
	if c.RulesetInterval > 0 {
		wg.Go(func() {
			ruleset.Watch(ctx, c.RulesetInterval, c.Ruleset, c.Kick, func(st ruleset.Status) {
				m.localRuleset(st)
				if st.Error != "" && st.Fingerprint == "" {
					metrics.RulesetFailed()
				}
			}, log)
		})
	}
	tick := min(max(c.Interval/4, 200*time.Millisecond), time.Second)
	wg.Go(func() { runPeerAlarms(ctx, tick, c.RulesetInterval+c.Interval, m, metrics, log, c.OnAlarm) })
	return func() error {
		cancel()
		wg.Wait()
		return nil
	}
}
