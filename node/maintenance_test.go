package node

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/vrrp"
)

func maintEv(on bool) Event { return Event{Kind: EventMaintenance, Now: t0, On: on} }

// fireAll fires every member's Master_Down_Timer armed in acts.
func fireAll(c *Core, acts []Action) []Action {
	var out []Action
	for _, vrid := range []uint8{10, 11} {
		out = append(out, fire(c, acts, TimerKey{vrid, vrrp.TimerMasterDown})...)
	}
	return out
}

// TestMaintenance: a master in maintenance hands over (priority 0 advert,
// role BACKUP) and never becomes MASTER while the mode is on, neither when
// its Master_Down_Timer fires (the peer is gone) nor after a leaving
// master's priority 0; turning it off restarts the election.
func TestMaintenance(t *testing.T) {
	type step struct {
		name    string
		ev      func(c *Core, last []Action) []Action
		roles   []vrrp.State
		adverts []uint8
		state   vrrp.State
	}
	on := func(c *Core, _ []Action) []Action { return c.Step(maintEv(true), nil) }
	off := func(c *Core, _ []Action) []Action { return c.Step(maintEv(false), nil) }
	timers := func(c *Core, last []Action) []Action { return fireAll(c, last) }
	start := func(c *Core, _ []Action) []Action { return c.Step(Event{Kind: EventStartup, Now: t0}, nil) }
	peer := newWire(t, peer4, password, 1000)
	leaving := func(c *Core, _ []Action) []Action {
		var out []Action
		out = append(out, c.Step(peer.event(10, 0, vipWAN), nil)...)
		return append(out, c.Step(peer.event(11, 0, vipLAN), nil)...)
	}
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{
			name: "master hands over and stays backup",
			cfg:  pairConfig(150, false),
			steps: []step{
				{name: "start", ev: start, state: vrrp.StateBackup, roles: []vrrp.State{vrrp.StateBackup}},
				{name: "master down", ev: timers, state: vrrp.StateMaster, roles: []vrrp.State{vrrp.StateMaster}, adverts: []uint8{150}},
				{name: "on", ev: on, state: vrrp.StateBackup, roles: []vrrp.State{vrrp.StateBackup}, adverts: []uint8{0}},
				{name: "on again", ev: on, state: vrrp.StateBackup},
				{name: "master down in maintenance", ev: timers, state: vrrp.StateBackup},
				{name: "peer leaves", ev: leaving, state: vrrp.StateBackup},
				{name: "skew time over", ev: timers, state: vrrp.StateBackup},
				{name: "off", ev: off, state: vrrp.StateBackup},
				{name: "master down after off", ev: timers, state: vrrp.StateMaster, roles: []vrrp.State{vrrp.StateMaster}, adverts: []uint8{150}},
			},
		},
		{
			name: "starts in maintenance",
			cfg:  func() Config { c := pairConfig(150, false); c.Maintenance = true; return c }(),
			steps: []step{
				{name: "start", ev: start, state: vrrp.StateBackup, roles: []vrrp.State{vrrp.StateBackup}},
				{name: "master down", ev: timers, state: vrrp.StateBackup},
				{name: "off", ev: off, state: vrrp.StateBackup},
				{name: "master down after off", ev: timers, state: vrrp.StateMaster, roles: []vrrp.State{vrrp.StateMaster}, adverts: []uint8{150}},
			},
		},
		{
			name: "address owner in maintenance does not claim",
			cfg:  func() Config { c := pairConfig(vrrp.PriorityOwner, false); c.Maintenance = true; return c }(),
			steps: []step{
				{name: "start", ev: start, state: vrrp.StateBackup, roles: []vrrp.State{vrrp.StateBackup}},
				{name: "master down", ev: timers, state: vrrp.StateBackup},
				{name: "off", ev: off, state: vrrp.StateMaster, roles: []vrrp.State{vrrp.StateMaster}, adverts: []uint8{vrrp.PriorityOwner}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCore(t, tt.cfg)
			var last []Action
			for _, s := range tt.steps {
				acts := s.ev(c, last)
				if diff := cmp.Diff(s.roles, roles(acts)); diff != "" {
					t.Errorf("%s: roles (-want +got):\n%s", s.name, diff)
				}
				if diff := cmp.Diff(s.adverts, adverts(acts)); diff != "" {
					t.Errorf("%s: adverts of vrid 10 (-want +got):\n%s", s.name, diff)
				}
				if c.State() != s.state {
					t.Fatalf("%s: state %v, want %v", s.name, c.State(), s.state)
				}
				if len(acts) > 0 {
					last = acts
				}
			}
		})
	}
}

// TestMaintenanceNotifies: the hand-over is reported as MASTER -> BACKUP
// with its reason, without the Initialize it passes through.
func TestMaintenanceNotifies(t *testing.T) {
	c := newCore(t, pairConfig(150, false))
	startMaster(t, c)
	var got []Action
	for _, a := range kinds(c.Step(maintEv(true), nil), ActionNotify) {
		got = append(got, Action{Kind: a.Kind, VRID: a.VRID, From: a.From, To: a.To, Reason: a.Reason})
	}
	want := []Action{
		{Kind: ActionNotify, VRID: 10, From: vrrp.StateMaster, To: vrrp.StateBackup, Reason: "maintenance on: handing over"},
		{Kind: ActionNotify, VRID: 11, From: vrrp.StateMaster, To: vrrp.StateBackup, Reason: "maintenance on: handing over"},
	}
	if diff := cmp.Diff(want, got, addrs); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
	if !c.Maintenance() {
		t.Error("Maintenance() false after on")
	}
}
