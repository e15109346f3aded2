package node

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/vrrp"
)

func withChecks(cfg Config, checks ...Check) Config {
	cfg.Checks = checks
	return cfg
}

func checkEv(name string, ok bool) Event {
	return Event{Kind: EventCheck, Now: t0, Check: name, OK: ok}
}

// roles keeps the roles the actions ask for.
func roles(acts []Action) []vrrp.State {
	var out []vrrp.State
	for _, a := range kinds(acts, ActionRole) {
		out = append(out, a.Role)
	}
	return out
}

// adverts keeps the priorities of the adverts sent for vrid 10.
func adverts(acts []Action) []uint8 {
	var out []uint8
	for _, a := range kinds(acts, ActionSendAdvert) {
		if a.VRID == 10 {
			out = append(out, a.Priority)
		}
	}
	return out
}

// TestCheckFault: a fault check holds the node in FAULT from startup until
// its first OK verdict; failing later, a master leaves (priority 0 advert,
// role FAULT) and comes back to the election when it recovers.
func TestCheckFault(t *testing.T) {
	c := newCore(t, withChecks(pairConfig(150, false), Check{Name: "upstream", Fault: true}))
	acts := c.Step(Event{Kind: EventStartup, Now: t0}, nil)
	if diff := cmp.Diff([]vrrp.State{vrrp.StateFault}, roles(acts)); diff != "" {
		t.Fatalf("startup with an unproven fault check (-want +got):\n%s", diff)
	}
	if got := kinds(acts, ActionSendAdvert); len(got) != 0 {
		t.Fatalf("adverts sent in FAULT: %+v", got)
	}
	acts = c.Step(checkEv("upstream", true), nil)
	if c.State() != vrrp.StateBackup {
		t.Fatalf("after the first OK verdict: %v, want BACKUP", c.State())
	}
	for _, vrid := range []uint8{10, 11} {
		fire(c, acts, TimerKey{vrid, vrrp.TimerMasterDown})
	}
	if c.State() != vrrp.StateMaster {
		t.Fatalf("not MASTER: %v", c.State())
	}
	acts = c.Step(checkEv("upstream", false), nil)
	if diff := cmp.Diff([]vrrp.State{vrrp.StateFault}, roles(acts)); diff != "" {
		t.Errorf("check failing on a master: roles (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint8{0}, adverts(acts)); diff != "" {
		t.Errorf("check failing on a master: adverts (-want +got):\n%s", diff)
	}
	if r := kinds(acts, ActionRole); len(r) == 1 && r[0].Reason != "health check upstream failing" {
		t.Errorf("FAULT reason %q, want the check named", r[0].Reason)
	}
	// Another check's verdict or a repeat changes nothing.
	if acts := c.Step(checkEv("upstream", false), nil); len(acts) != 0 {
		t.Errorf("repeated failing verdict: %+v", acts)
	}
	if acts := c.Step(checkEv("unknown", true), nil); len(acts) != 0 {
		t.Errorf("verdict of an unknown check: %+v", acts)
	}
	acts = c.Step(checkEv("upstream", true), nil)
	if diff := cmp.Diff([]vrrp.State{vrrp.StateBackup}, roles(acts)); diff != "" {
		t.Errorf("check recovered: roles (-want +got):\n%s", diff)
	}
}

// TestCheckWeight: the priority is the base with the weights that apply
// (negative while failing, unproven included; positive while OK), clamped
// to 1..254; a master advertises each change at once.
func TestCheckWeight(t *testing.T) {
	for _, tc := range []struct {
		name    string
		base    uint8
		checks  []Check
		verdict []Event
		start   uint8 // priority at startup (checks unproven)
		want    uint8 // after the verdicts
	}{
		{"negative applies while unproven and failing", 150, []Check{{Name: "gw", Weight: -60}}, []Event{checkEv("gw", false)}, 90, 90},
		{"negative lifted when OK", 150, []Check{{Name: "gw", Weight: -60}}, []Event{checkEv("gw", true)}, 90, 150},
		{"positive only when OK", 100, []Check{{Name: "web", Weight: 60}}, []Event{checkEv("web", true)}, 100, 160},
		{"positive not while failing", 100, []Check{{Name: "web", Weight: 60}}, []Event{checkEv("web", true), checkEv("web", false)}, 100, 100},
		{"sum of several", 150, []Check{{Name: "a", Weight: -30}, {Name: "b", Weight: -30}, {Name: "c", Weight: 10}},
			[]Event{checkEv("a", false), checkEv("b", true), checkEv("c", true)}, 90, 130},
		{"clamped at 1", 100, []Check{{Name: "a", Weight: -200}}, nil, 1, 1},
		{"clamped at 254", 150, []Check{{Name: "a", Weight: 200}}, []Event{checkEv("a", true)}, 150, 254},
		{"owner not weighed", 255, []Check{{Name: "a", Weight: -200}}, []Event{checkEv("a", false)}, 255, 255},
		{"fault check weighs nothing", 150, []Check{{Name: "a", Fault: true, Weight: -50}}, []Event{checkEv("a", true)}, 150, 150},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCore(t, withChecks(pairConfig(tc.base, false), tc.checks...))
			if got := c.Priority(); got != tc.start {
				t.Errorf("priority at startup = %d, want %d", got, tc.start)
			}
			if got := c.Group().Member(10).Priority(); got != tc.start {
				t.Errorf("instance priority at startup = %d, want %d", got, tc.start)
			}
			c.Step(Event{Kind: EventStartup, Now: t0}, nil)
			for _, ev := range tc.verdict {
				c.Step(ev, nil)
			}
			if got := c.Group().Member(11).Priority(); got != tc.want {
				t.Errorf("instance priority = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestCheckWeightMasterAdvertises: a weight change on a master is
// advertised at once, so a better backup preempts without waiting an
// interval; the base priority of a reload keeps the weights.
func TestCheckWeightMasterAdvertises(t *testing.T) {
	c := newCore(t, withChecks(pairConfig(150, false), Check{Name: "gw", Weight: -60}))
	c.Step(checkEv("gw", true), nil)
	startMaster(t, c)
	acts := c.Step(checkEv("gw", false), nil)
	if diff := cmp.Diff([]uint8{90}, adverts(acts)); diff != "" {
		t.Errorf("weight applied on a master: adverts (-want +got):\n%s", diff)
	}
	if c.State() != vrrp.StateMaster {
		t.Errorf("a weight moved the state: %v", c.State())
	}
	// A reload to backup's base priority keeps the failing weight.
	acts = c.Step(Event{Kind: EventPriority, Now: t0, Priority: 100}, nil)
	if diff := cmp.Diff([]uint8{40}, adverts(acts)); diff != "" {
		t.Errorf("new base priority: adverts (-want +got):\n%s", diff)
	}
	acts = c.Step(checkEv("gw", true), nil)
	if diff := cmp.Diff([]uint8{100}, adverts(acts)); diff != "" {
		t.Errorf("check recovered: adverts (-want +got):\n%s", diff)
	}
}

// TestChecksReload: a reload that adds a check does not move the node
// until the check's first verdict; a kept check keeps its verdict; a
// removed check's effect ends.
func TestChecksReload(t *testing.T) {
	c := newCore(t, withChecks(pairConfig(150, false), Check{Name: "kept", Weight: -10}))
	c.Step(checkEv("kept", false), nil)
	startMaster(t, c)
	if c.Priority() != 140 {
		t.Fatalf("priority %d, want 140", c.Priority())
	}
	acts := c.Step(Event{Kind: EventChecks, Now: t0, Checks: []Check{
		{Name: "kept", Weight: -10}, {Name: "new", Fault: true}, {Name: "neww", Weight: -50},
	}}, nil)
	if got := kinds(acts, ActionRole, ActionSendAdvert); len(got) != 0 {
		t.Errorf("adding checks moved the master: %+v", got)
	}
	if c.State() != vrrp.StateMaster || c.Priority() != 140 {
		t.Fatalf("after adding checks: %v priority %d, want MASTER 140", c.State(), c.Priority())
	}
	if acts := c.Step(checkEv("new", false), nil); !cmp.Equal(roles(acts), []vrrp.State{vrrp.StateFault}) {
		t.Errorf("new fault check failing: roles %v, want [FAULT]", roles(acts))
	}
	// Removing the failing fault check ends the FAULT.
	acts = c.Step(Event{Kind: EventChecks, Now: t0, Checks: []Check{{Name: "kept", Weight: -10}}}, nil)
	if !cmp.Equal(roles(acts), []vrrp.State{vrrp.StateBackup}) {
		t.Errorf("failing fault check removed: roles %v, want [BACKUP]", roles(acts))
	}
	// Removing the failing weight lifts it.
	c.Step(Event{Kind: EventChecks, Now: t0}, nil)
	if c.Priority() != 150 {
		t.Errorf("every check removed: priority %d, want 150", c.Priority())
	}
}
