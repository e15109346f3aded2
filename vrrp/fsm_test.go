package vrrp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	addrLow  = netip.MustParseAddr("192.0.2.1")
	addrMid  = netip.MustParseAddr("192.0.2.5")
	addrHigh = netip.MustParseAddr("192.0.2.9")
)

func baseConfig() InstanceConfig {
	return InstanceConfig{VRID: 10, Priority: 100, Interval: time.Second, Primary: addrMid}
}

// Shorthands for expected actions of VRID 10.
func notify(from, to State) Action { return Action{Kind: ActionNotify, VRID: 10, From: from, To: to} }
func setT(t TimerID, after time.Duration, gen uint64) Action {
	return Action{Kind: ActionSetTimer, VRID: 10, Timer: t, After: after, Gen: gen}
}
func stopT(t TimerID) Action                 { return Action{Kind: ActionStopTimer, VRID: 10, Timer: t} }
func send(prio uint8) Action                 { return Action{Kind: ActionSendAdvert, VRID: 10, Priority: prio} }
func act(k ActionKind) Action                { return Action{Kind: k, VRID: 10} }
func ev(k EventKind) Event                   { return Event{Kind: k} }
func track(k EventKind, ifname string) Event { return Event{Kind: k, Interface: ifname} }

// down100 is Master_Down_Interval for priority 100 and a 1s interval:
// 3s + (156 * 1s) / 256.
const down100 = 3*time.Second + 609375*time.Microsecond
const skew100 = 609375 * time.Microsecond

// toMaster is Backup -> Master after Master_Down_Timer gen 1 fired.
func toMasterActions(prio uint8, gen uint64) []Action {
	return []Action{notify(StateBackup, StateMaster), act(ActionClaimVIPs), send(prio), act(ActionAnnounce), setT(TimerAdver, time.Second, gen)}
}

func TestMachineTransitions(t *testing.T) {
	startup := ev(EventStartup)
	asMaster := []Event{startup, TimerEvent(TimerMasterDown, 1)} // adver timer gen 2
	tests := []struct {
		name      string
		cfg       func(*InstanceConfig)
		setup     []Event
		event     Event
		want      []Action
		wantState State
		ignored   IgnoreReason // checked when wantIgnored
		wantIgn   bool
	}{
		{name: "6.4.1 startup goes backup with Master_Down_Timer",
			event: startup, wantState: StateBackup,
			want: []Action{notify(StateInitialize, StateBackup), setT(TimerMasterDown, down100, 1)}},
		{name: "6.4.1 owner goes master at once",
			cfg:   func(c *InstanceConfig) { c.Priority = 255 },
			event: startup, wantState: StateMaster,
			want: []Action{notify(StateInitialize, StateBackup), notify(StateBackup, StateMaster), act(ActionClaimVIPs), send(255), act(ActionAnnounce), setT(TimerAdver, time.Second, 1)}},
		{name: "startup with a tracked interface down goes fault",
			setup: []Event{track(EventTrackDown, "eth0")}, event: startup, wantState: StateFault,
			want: []Action{notify(StateInitialize, StateFault)}},
		{name: "liveness: master dead goes master at once",
			setup: []Event{startup, AdvertEvent(addrHigh, 150, time.Second)}, event: Event{Kind: EventMasterDead, Reason: "dead"}, wantState: StateMaster,
			want: []Action{stopT(TimerMasterDown), notify(StateBackup, StateMaster), act(ActionClaimVIPs), send(100), act(ActionAnnounce), setT(TimerAdver, time.Second, 3)}},
		{name: "liveness: master dead while the master left (priority 0) skips the skew",
			setup: []Event{startup, AdvertEvent(addrHigh, 0, time.Second)}, event: Event{Kind: EventMasterDead, Reason: "left"}, wantState: StateMaster,
			want: []Action{stopT(TimerMasterDown), notify(StateBackup, StateMaster), act(ActionClaimVIPs), send(100), act(ActionAnnounce), setT(TimerAdver, time.Second, 3)}},
		{name: "liveness: master dead is nothing to a master",
			setup: asMaster, event: Event{Kind: EventMasterDead}, wantState: StateMaster,
			want: nil, wantIgn: true, ignored: IgnoreNotRunning},
		{name: "liveness: Master_Down_Timer held while the master is alive elsewhere, and the liveness protocol asked to confirm",
			setup: []Event{startup, {Kind: EventMasterAlive, Alive: true}}, event: TimerEvent(TimerMasterDown, 1), wantState: StateBackup,
			want: []Action{{Kind: ActionConfirmMaster, VRID: 10}}, wantIgn: true, ignored: IgnoreMasterAlive},
		{name: "liveness: a lower-priority master whose adverts arrive is preempted, alive or not",
			setup: []Event{startup, {Kind: EventMasterAlive, Alive: true}, AdvertEvent(addrHigh, 50, time.Second)}, event: TimerEvent(TimerMasterDown, 1), wantState: StateMaster,
			want: toMasterActions(100, 2)},
		{name: "liveness: a held expiry takes over when the master is no longer master anywhere",
			setup: []Event{startup, {Kind: EventMasterAlive, Alive: true}, TimerEvent(TimerMasterDown, 1)}, event: Event{Kind: EventMasterAlive, Alive: false}, wantState: StateMaster,
			want: toMasterActions(100, 2)},
		{name: "liveness: an advert after a held expiry cancels it",
			setup: []Event{startup, {Kind: EventMasterAlive, Alive: true}, TimerEvent(TimerMasterDown, 1), AdvertEvent(addrHigh, 150, time.Second)}, event: Event{Kind: EventMasterAlive, Alive: false}, wantState: StateBackup,
			want: nil},
		{name: "liveness: the hold does not delay a master that left (priority 0)",
			setup: []Event{startup, {Kind: EventMasterAlive, Alive: true}, AdvertEvent(addrHigh, 0, time.Second)}, event: TimerEvent(TimerMasterDown, 2), wantState: StateMaster,
			want: toMasterActions(100, 3)},
		{name: "6.4.2 Master_Down_Timer fires: master",
			setup: []Event{startup}, event: TimerEvent(TimerMasterDown, 1), wantState: StateMaster,
			want: toMasterActions(100, 2)},
		{name: "6.4.2 higher advert resets timer with learned interval",
			setup: []Event{startup}, event: AdvertEvent(addrHigh, 150, 2*time.Second), wantState: StateBackup,
			want: []Action{setT(TimerMasterDown, 6*time.Second+2*156*time.Second/256, 2)}},
		{name: "6.4.2 equal advert resets timer",
			setup: []Event{startup}, event: AdvertEvent(addrLow, 100, time.Second), wantState: StateBackup,
			want: []Action{setT(TimerMasterDown, down100, 2)}},
		{name: "6.4.2 preempt: lower advert discarded, timer untouched",
			setup: []Event{startup}, event: AdvertEvent(addrHigh, 50, time.Second), wantState: StateBackup,
			want: nil, wantIgn: true, ignored: IgnoreLowerPriority},
		{name: "6.4.2 nopreempt: lower advert accepted",
			cfg:   func(c *InstanceConfig) { c.NoPreempt = true },
			setup: []Event{startup}, event: AdvertEvent(addrHigh, 50, time.Second), wantState: StateBackup,
			want: []Action{setT(TimerMasterDown, down100, 2)}},
		{name: "6.4.2 priority 0: Master_Down_Timer = Skew_Time",
			setup: []Event{startup, AdvertEvent(addrHigh, 150, time.Second)}, event: AdvertEvent(addrHigh, 0, time.Second), wantState: StateBackup,
			want: []Action{setT(TimerMasterDown, skew100, 3)}},
		{name: "6.4.2 shutdown in backup",
			setup: []Event{startup}, event: ev(EventShutdown), wantState: StateInitialize,
			want: []Action{stopT(TimerMasterDown), notify(StateBackup, StateInitialize)}},
		{name: "stale Master_Down_Timer ignored",
			setup: []Event{startup, AdvertEvent(addrHigh, 150, time.Second)}, event: TimerEvent(TimerMasterDown, 1), wantState: StateBackup,
			want: nil, wantIgn: true, ignored: IgnoreStaleTimer},
		{name: "own address ignored",
			setup: []Event{startup}, event: AdvertEvent(addrMid, 200, time.Second), wantState: StateBackup,
			want: nil, wantIgn: true, ignored: IgnoreOwnAddress},
		{name: "6.4.3 Adver_Timer fires: advert and re-arm",
			setup: asMaster, event: TimerEvent(TimerAdver, 2), wantState: StateMaster,
			want: []Action{send(100), setT(TimerAdver, time.Second, 3)}},
		{name: "6.4.3 higher advert: backup",
			setup: asMaster, event: AdvertEvent(addrLow, 101, 3*time.Second), wantState: StateBackup,
			want: []Action{stopT(TimerAdver), act(ActionReleaseVIPs), notify(StateMaster, StateBackup), setT(TimerMasterDown, 9*time.Second+156*3*time.Second/256, 3)}},
		{name: "6.4.3 equal priority, higher address: backup",
			setup: asMaster, event: AdvertEvent(addrHigh, 100, time.Second), wantState: StateBackup,
			want: []Action{stopT(TimerAdver), act(ActionReleaseVIPs), notify(StateMaster, StateBackup), setT(TimerMasterDown, down100, 3)}},
		{name: "6.4.3 equal priority, lower address: discarded",
			setup: asMaster, event: AdvertEvent(addrLow, 100, time.Second), wantState: StateMaster,
			want: nil, wantIgn: true, ignored: IgnoreLowerPriority},
		{name: "6.4.3 lower priority: discarded",
			setup: asMaster, event: AdvertEvent(addrHigh, 99, time.Second), wantState: StateMaster,
			want: nil, wantIgn: true, ignored: IgnoreLowerPriority},
		{name: "6.4.3 priority 0 received: advert at once",
			setup: asMaster, event: AdvertEvent(addrHigh, 0, time.Second), wantState: StateMaster,
			want: []Action{send(100), setT(TimerAdver, time.Second, 3)}},
		{name: "6.4.3 shutdown: priority 0 then release",
			setup: asMaster, event: ev(EventShutdown), wantState: StateInitialize,
			want: []Action{stopT(TimerAdver), send(0), act(ActionReleaseVIPs), notify(StateMaster, StateInitialize)}},
		{name: "master: tracked interface down: priority 0, release, fault",
			setup: asMaster, event: track(EventTrackDown, "eth0"), wantState: StateFault,
			want: []Action{stopT(TimerAdver), send(0), act(ActionReleaseVIPs), notify(StateMaster, StateFault)}},
		{name: "backup: tracked interface down: fault",
			setup: []Event{startup}, event: track(EventTrackDown, "eth0"), wantState: StateFault,
			want: []Action{stopT(TimerMasterDown), notify(StateBackup, StateFault)}},
		{name: "fault: adverts ignored",
			setup: []Event{startup, track(EventTrackDown, "eth0")}, event: AdvertEvent(addrHigh, 0, time.Second), wantState: StateFault,
			want: nil, wantIgn: true, ignored: IgnoreNotRunning},
		{name: "fault: one of two interfaces up stays fault",
			setup: []Event{startup, track(EventTrackDown, "eth0"), track(EventTrackDown, "eth1")}, event: track(EventTrackUp, "eth0"), wantState: StateFault,
			want: nil},
		{name: "fault: all interfaces up: backup",
			setup: []Event{startup, track(EventTrackDown, "eth0")}, event: track(EventTrackUp, "eth0"), wantState: StateBackup,
			want: []Action{notify(StateFault, StateBackup), setT(TimerMasterDown, down100, 2)}},
		{name: "fault: shutdown",
			setup: []Event{startup, track(EventTrackDown, "eth0")}, event: ev(EventShutdown), wantState: StateInitialize,
			want: []Action{notify(StateFault, StateInitialize)}},
		{name: "master: priority change advertised at once",
			setup: asMaster, event: Event{Kind: EventSetPriority, Priority: 50}, wantState: StateMaster,
			want: []Action{send(50), setT(TimerAdver, time.Second, 3)}},
		{name: "priority 0 cannot be set",
			setup: asMaster, event: Event{Kind: EventSetPriority, Priority: 0}, wantState: StateMaster,
			want: nil, wantIgn: true, ignored: IgnoreBadPriority},
		{name: "preempt delay armed at startup",
			cfg:   func(c *InstanceConfig) { c.PreemptDelay = 5 * time.Second },
			event: startup, wantState: StateBackup,
			want: []Action{notify(StateInitialize, StateBackup), setT(TimerMasterDown, down100, 1), setT(TimerPreemptDelay, 5*time.Second, 2)}},
		{name: "preempt delay running: lower advert accepted",
			cfg:   func(c *InstanceConfig) { c.PreemptDelay = 5 * time.Second },
			setup: []Event{startup}, event: AdvertEvent(addrHigh, 50, time.Second), wantState: StateBackup,
			want: []Action{setT(TimerMasterDown, down100, 3)}},
		{name: "preempt delay elapsed: lower advert discarded",
			cfg:   func(c *InstanceConfig) { c.PreemptDelay = 5 * time.Second },
			setup: []Event{startup, AdvertEvent(addrHigh, 50, time.Second), TimerEvent(TimerPreemptDelay, 2)}, event: AdvertEvent(addrHigh, 50, time.Second), wantState: StateBackup,
			want: nil, wantIgn: true, ignored: IgnoreLowerPriority},
		{name: "preempt delay: higher advert cancels hold-off",
			cfg:   func(c *InstanceConfig) { c.PreemptDelay = 5 * time.Second },
			setup: []Event{startup}, event: AdvertEvent(addrHigh, 200, time.Second), wantState: StateBackup,
			want: []Action{stopT(TimerPreemptDelay), setT(TimerMasterDown, down100, 3)}},
		{name: "preempt delay: lower advert after higher restarts hold-off",
			cfg:   func(c *InstanceConfig) { c.PreemptDelay = 5 * time.Second },
			setup: []Event{startup, AdvertEvent(addrHigh, 200, time.Second)}, event: AdvertEvent(addrLow, 50, time.Second), wantState: StateBackup,
			want: []Action{setT(TimerPreemptDelay, 5*time.Second, 4), setT(TimerMasterDown, down100, 5)}},
		{name: "not ready: lower advert accepted (no preemption)",
			cfg:   func(c *InstanceConfig) { c.WaitReady = true },
			setup: []Event{startup}, event: AdvertEvent(addrHigh, 50, time.Second), wantState: StateBackup,
			want: []Action{setT(TimerMasterDown, down100, 2)}},
		{name: "ready: lower advert discarded (preemption)",
			cfg:   func(c *InstanceConfig) { c.WaitReady = true },
			setup: []Event{startup, ev(EventReady)}, event: AdvertEvent(addrHigh, 50, time.Second), wantState: StateBackup,
			want: nil, wantIgn: true, ignored: IgnoreLowerPriority},
		{name: "not ready: takeover of a gone master is never held",
			cfg:   func(c *InstanceConfig) { c.WaitReady = true },
			setup: []Event{startup}, event: TimerEvent(TimerMasterDown, 1), wantState: StateMaster,
			want: toMasterActions(100, 2)},
		{name: "not ready: priority 0 still gives Skew_Time",
			cfg:   func(c *InstanceConfig) { c.WaitReady = true },
			setup: []Event{startup}, event: AdvertEvent(addrHigh, 0, time.Second), wantState: StateBackup,
			want: []Action{setT(TimerMasterDown, skew100, 2)}},
		{name: "VRRPv2 skew is not scaled by the interval",
			cfg:   func(c *InstanceConfig) { c.Version = 2; c.Interval = 2 * time.Second },
			event: startup, wantState: StateBackup,
			want: []Action{notify(StateInitialize, StateBackup), setT(TimerMasterDown, 6*time.Second+skew100, 1)}},
		{name: "initialize ignores adverts",
			event: AdvertEvent(addrHigh, 150, time.Second), wantState: StateInitialize,
			want: nil, wantIgn: true, ignored: IgnoreNotRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			m, err := NewMachine(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range tt.setup {
				m.Step(e, nil)
			}
			before := m.Ignored()
			got := m.Step(tt.event, nil)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Action{}, "Reason"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if m.State() != tt.wantState {
				t.Errorf("state = %v, want %v", m.State(), tt.wantState)
			}
			for _, a := range got {
				if a.Kind == ActionNotify && a.Reason == "" {
					t.Errorf("notify %v->%v without a reason", a.From, a.To)
				}
			}
			after := m.Ignored()
			if tt.wantIgn && after[tt.ignored] != before[tt.ignored]+1 {
				t.Errorf("ignored[%v] = %d, want %d", tt.ignored, after[tt.ignored], before[tt.ignored]+1)
			}
		})
	}
}

func TestMachineReasons(t *testing.T) {
	m, err := NewMachine(baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	m.Step(ev(EventStartup), nil)
	m.Step(AdvertEvent(addrHigh, 150, time.Second), nil)
	m.Step(AdvertEvent(addrHigh, 0, time.Second), nil)
	got := m.Step(TimerEvent(TimerMasterDown, 3), nil)
	if len(got) == 0 || got[0].Kind != ActionNotify || !strings.Contains(got[0].Reason, "priority 0") || !strings.Contains(got[0].Reason, addrHigh.String()) {
		t.Fatalf("reason for takeover after priority 0 = %+v", got)
	}
	got = m.Step(track(EventTrackDown, "eth1"), nil)
	if !strings.Contains(got[len(got)-1].Reason, "eth1") {
		t.Fatalf("fault reason %q does not name the interface", got[len(got)-1].Reason)
	}
}

func TestInstanceConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*InstanceConfig)
		want string // substring of the error, "" for valid
	}{
		{"valid", func(*InstanceConfig) {}, ""},
		{"vrid 0", func(c *InstanceConfig) { c.VRID = 0 }, "vrid 0"},
		{"priority 0", func(c *InstanceConfig) { c.Priority = 0 }, "priority 0"},
		{"v3 interval too small", func(c *InstanceConfig) { c.Interval = 5 * time.Millisecond }, "10ms"},
		{"v3 interval not in cs", func(c *InstanceConfig) { c.Interval = 15 * time.Millisecond }, "10ms"},
		{"v3 interval too big", func(c *InstanceConfig) { c.Interval = 41 * time.Second }, "40.95s"},
		{"v2 fractional", func(c *InstanceConfig) { c.Version = 2; c.Interval = 1500 * time.Millisecond }, "whole seconds"},
		{"bad version", func(c *InstanceConfig) { c.Version = 4 }, "version 4"},
		{"no primary", func(c *InstanceConfig) { c.Primary = netip.Addr{} }, "primary"},
		{"negative delay", func(c *InstanceConfig) { c.PreemptDelay = -time.Second }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.mod(&c)
			_, err := NewMachine(c)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSkewAndMasterDown(t *testing.T) {
	tests := []struct {
		prio     uint8
		interval time.Duration
		skew     time.Duration
		down     time.Duration
	}{
		{255, time.Second, time.Second / 256, 3*time.Second + time.Second/256},
		{1, time.Second, 255 * time.Second / 256, 3*time.Second + 255*time.Second/256},
		{150, 100 * time.Millisecond, 106 * 100 * time.Millisecond / 256, 300*time.Millisecond + 106*100*time.Millisecond/256},
		{100, 10 * time.Millisecond, 156 * 10 * time.Millisecond / 256, 30*time.Millisecond + 156*10*time.Millisecond/256},
	}
	for _, tt := range tests {
		c := baseConfig()
		c.Priority, c.Interval = tt.prio, tt.interval
		m, err := NewMachine(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := []time.Duration{m.SkewTime(), m.MasterDownInterval()}; !cmp.Equal(got, []time.Duration{tt.skew, tt.down}) {
			t.Errorf("prio %d interval %v: skew, down = %v, want %v %v", tt.prio, tt.interval, got, tt.skew, tt.down)
		}
	}
}

func BenchmarkMachineAdvertReceived(b *testing.B) {
	m, err := NewMachine(baseConfig())
	if err != nil {
		b.Fatal(err)
	}
	out := make([]Action, 0, 8)
	m.Step(ev(EventStartup), out[:0])
	e := AdvertEvent(addrHigh, 150, time.Second)
	b.ReportAllocs()
	for b.Loop() {
		out = m.Step(e, out[:0])
	}
}

func BenchmarkMachineAdverTimer(b *testing.B) {
	m, err := NewMachine(baseConfig())
	if err != nil {
		b.Fatal(err)
	}
	out := make([]Action, 0, 8)
	out = m.Step(ev(EventStartup), out[:0])
	out = m.Step(TimerEvent(TimerMasterDown, out[len(out)-1].Gen), out[:0])
	gen := out[len(out)-1].Gen
	b.ReportAllocs()
	for b.Loop() {
		out = m.Step(TimerEvent(TimerAdver, gen), out[:0])
		gen = out[len(out)-1].Gen
	}
}
