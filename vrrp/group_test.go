package vrrp

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func newTestGroup(t *testing.T) *Group {
	t.Helper()
	a, b := baseConfig(), baseConfig()
	b.VRID = 11
	g, err := NewGroup([]InstanceConfig{a, b})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

type groupStep struct {
	all  bool
	vrid uint8
	ev   Event
}

func on(vrid uint8, e Event) groupStep { return groupStep{vrid: vrid, ev: e} }
func all(e Event) groupStep            { return groupStep{all: true, ev: e} }

func with(vrid uint8, as ...Action) []Action {
	for i := range as {
		as[i].VRID = vrid
	}
	return as
}

func cat(parts ...[]Action) []Action {
	var out []Action
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestGroupTransitions(t *testing.T) {
	// After startup, member 10 has Master_Down_Timer gen 1 and member 11 gen 1.
	startup := all(ev(EventStartup))
	bothMaster := []groupStep{startup, on(10, TimerEvent(TimerMasterDown, 1)), on(11, TimerEvent(TimerMasterDown, 1))}
	tests := []struct {
		name   string
		setup  []groupStep
		step   groupStep
		want   []Action
		states []State // of VRID 10, 11
	}{
		{name: "startup: all backup", step: startup,
			want: cat(with(10, notify(StateInitialize, StateBackup), setT(TimerMasterDown, down100, 1)),
				with(11, notify(StateInitialize, StateBackup), setT(TimerMasterDown, down100, 1))),
			states: []State{StateBackup, StateBackup}},
		{name: "one member wants master: group waits", setup: []groupStep{startup}, step: on(10, TimerEvent(TimerMasterDown, 1)),
			want: nil, states: []State{StateBackup, StateBackup}},
		{name: "last member wants master: all go master together", setup: bothMaster[:2], step: bothMaster[2],
			want:   cat(with(10, toMasterActions(100, 2)...), with(11, toMasterActions(100, 2)...)),
			states: []State{StateMaster, StateMaster}},
		{name: "a wish cancelled by an advert blocks the group", setup: []groupStep{startup, on(10, TimerEvent(TimerMasterDown, 1)), on(10, AdvertEvent(addrHigh, 150, time.Second))},
			step: on(11, TimerEvent(TimerMasterDown, 1)), want: nil, states: []State{StateBackup, StateBackup}},
		{name: "one member yields: all yield", setup: bothMaster, step: on(11, AdvertEvent(addrHigh, 150, time.Second)),
			want: cat(with(11, stopT(TimerAdver), act(ActionReleaseVIPs), notify(StateMaster, StateBackup), setT(TimerMasterDown, down100, 3)),
				with(10, stopT(TimerAdver), act(ActionReleaseVIPs), notify(StateMaster, StateBackup), setT(TimerMasterDown, down100, 3))),
			states: []State{StateBackup, StateBackup}},
		{name: "one member faults: all fault, masters send priority 0", setup: bothMaster, step: on(10, track(EventTrackDown, "eth0")),
			want: cat(with(10, stopT(TimerAdver), send(0), act(ActionReleaseVIPs), notify(StateMaster, StateFault)),
				with(11, stopT(TimerAdver), send(0), act(ActionReleaseVIPs), notify(StateMaster, StateFault))),
			states: []State{StateFault, StateFault}},
		{name: "fault clears: all back to backup", setup: append(bothMaster[:1:1], on(10, track(EventTrackDown, "eth0"))), step: on(10, track(EventTrackUp, "eth0")),
			want: cat(with(10, notify(StateFault, StateBackup), setT(TimerMasterDown, down100, 2)),
				with(11, notify(StateFault, StateBackup), setT(TimerMasterDown, down100, 2))),
			states: []State{StateBackup, StateBackup}},
		{name: "one of two faulty members recovers: all stay in fault", setup: []groupStep{startup, on(10, track(EventTrackDown, "eth0")), on(11, track(EventTrackDown, "eth1"))},
			step: on(10, track(EventTrackUp, "eth0")), want: nil, states: []State{StateFault, StateFault}},
		{name: "shutdown: all leave with priority 0", setup: bothMaster, step: all(ev(EventShutdown)),
			want: cat(with(10, stopT(TimerAdver), send(0), act(ActionReleaseVIPs), notify(StateMaster, StateInitialize)),
				with(11, stopT(TimerAdver), send(0), act(ActionReleaseVIPs), notify(StateMaster, StateInitialize))),
			states: []State{StateInitialize, StateInitialize}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGroup(t)
			run := func(s groupStep) []Action {
				if s.all {
					return g.StepAll(s.ev, nil)
				}
				out, err := g.Step(s.vrid, s.ev, nil)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			for _, s := range tt.setup {
				run(s)
			}
			got := run(tt.step)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Action{}, "Reason"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if st := []State{g.Member(10).State(), g.Member(11).State()}; !cmp.Equal(st, tt.states) {
				t.Errorf("states = %v, want %v", st, tt.states)
			}
		})
	}
}

func TestGroupErrors(t *testing.T) {
	g := newTestGroup(t)
	if _, err := g.Step(99, ev(EventStartup), nil); !errors.Is(err, ErrUnknownVRID) {
		t.Fatalf("step to unknown vrid: %v", err)
	}
	c := baseConfig()
	if _, err := NewGroup([]InstanceConfig{c, c}); err == nil {
		t.Fatal("duplicate vrid accepted")
	}
	if _, err := NewGroup(nil); err == nil {
		t.Fatal("empty group accepted")
	}
	bad := baseConfig()
	bad.Priority = 0
	if _, err := NewGroup([]InstanceConfig{bad}); err == nil {
		t.Fatal("invalid member accepted")
	}
}

func TestGroupState(t *testing.T) {
	g := newTestGroup(t)
	if g.State() != StateInitialize {
		t.Fatalf("new group state %v", g.State())
	}
	g.StepAll(ev(EventStartup), nil)
	if g.State() != StateBackup {
		t.Fatalf("started group state %v", g.State())
	}
	g.Step(10, TimerEvent(TimerMasterDown, 1), nil)
	g.Step(11, TimerEvent(TimerMasterDown, 1), nil)
	if g.State() != StateMaster {
		t.Fatalf("group state %v, want MASTER", g.State())
	}
}

func BenchmarkGroupAdvertReceived(b *testing.B) {
	var cfgs []InstanceConfig
	for v := uint8(10); v < 14; v++ {
		c := baseConfig()
		c.VRID = v
		cfgs = append(cfgs, c)
	}
	g, err := NewGroup(cfgs)
	if err != nil {
		b.Fatal(err)
	}
	out := g.StepAll(ev(EventStartup), make([]Action, 0, 16))
	e := AdvertEvent(addrHigh, 150, time.Second)
	b.ReportAllocs()
	for b.Loop() {
		out, err = g.Step(12, e, out[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
}
