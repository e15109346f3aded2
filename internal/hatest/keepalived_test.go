package hatest_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

func TestParseKeepalivedNotify(t *testing.T) {
	for _, tc := range []struct {
		line  string
		state string
		ok    bool
	}{
		{`GROUP "MUROS" MASTER 0`, "MASTER", true},
		{`GROUP "MUROS" BACKUP 0`, "BACKUP", true},
		{`GROUP "MUROS" FAULT 0`, "FAULT", true},
		{`GROUP "MUROS" STOP 0`, "STOP", true},
		{`INSTANCE "LAN" MASTER 150`, "", false},
		{`GROUP "OTHER" MASTER 0`, "", false},
		{`GROUP "MUROS"`, "", false},
		{``, "", false},
	} {
		state, ok := hatest.ParseKeepalivedNotify(tc.line)
		if diff := cmp.Diff(struct {
			S  string
			OK bool
		}{tc.state, tc.ok}, struct {
			S  string
			OK bool
		}{state, ok}); diff != "" {
			t.Errorf("ParseKeepalivedNotify(%q) (-want +got):\n%s", tc.line, diff)
		}
	}
}

// fakePair is enough of a lab.Pair for KeepalivedConfig, which reads only
// names and addresses.
func fakePair() *lab.Pair {
	p := &lab.Pair{FW1: &lab.Netns{Name: "mh-fw1-1-aa"}, FW2: &lab.Netns{Name: "mh-fw2-1-bb"}}
	p.LANVIP = mustPrefix("10.10.0.1/24")
	p.WANVIP = mustPrefix("203.0.113.1/24")
	return p
}

func TestKeepalivedConfig(t *testing.T) {
	p := fakePair()
	for _, tc := range []struct {
		name      string
		o         hatest.KeepalivedOptions
		want, not []string
	}{
		{
			name: "keepalived-ah master defaults",
			o:    hatest.KeepalivedOptions{Role: "master"},
			want: []string{
				"vrrp_version 2", "version 2", "priority 150", "advert_int 1",
				"auth_type AH", `auth_pass "lab-secr"`, "state BACKUP", "interface sync0",
				"virtual_router_id 10", "virtual_router_id 11", "203.0.113.1/24 dev wan0",
				"10.10.0.1/24 dev lan0", "dont_track_primary", "vrrp_sync_group MUROS {",
			},
			not: []string{"nopreempt", "version 3", "state MASTER"},
		},
		{
			name: "none v3 backup 100ms nopreempt",
			o:    hatest.KeepalivedOptions{Role: "backup", Auth: "none", Interval: 100 * time.Millisecond, NoPreempt: true},
			want: []string{"vrrp_version 3", "version 3", "priority 100", "advert_int 0.1", "nopreempt"},
			not:  []string{"authentication", "auth_type", "version 2"},
		},
		{
			name: "priority override",
			o:    hatest.KeepalivedOptions{Role: "backup", Priority: 200, Password: "x"},
			want: []string{"priority 200", `auth_pass "x"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := hatest.KeepalivedConfig(p, p.FW1, tc.o, "/run/x.fifo")
			lines := map[string]bool{}
			for _, l := range strings.Split(conf, "\n") {
				lines[strings.TrimSpace(l)] = true
			}
			var missing, present []string
			for _, w := range tc.want {
				if !lines[w] {
					missing = append(missing, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(conf, n) {
					present = append(present, n)
				}
			}
			if diff := cmp.Diff([]string(nil), missing); diff != "" {
				t.Errorf("lines missing (-want +got):\n%s\n%s", diff, conf)
			}
			if diff := cmp.Diff([]string(nil), present); diff != "" {
				t.Errorf("unwanted text (-want +got):\n%s\n%s", diff, conf)
			}
		})
	}
}

func TestStartKeepalivedRejectsBadOptions(t *testing.T) {
	p := fakePair()
	for _, o := range []hatest.KeepalivedOptions{
		{Role: "primary"},
		{Role: "master", Interval: 1500 * time.Millisecond},        // VRRPv2 whole seconds
		{Role: "master", Auth: "none", Interval: time.Millisecond}, // keepalived falls back to 1 s
		{Role: "master", Auth: "ah"},                               // muros-had's own AH: keepalived has none
		{Role: "master", Password: "has space"},
		{Role: "master", Priority: 255},
	} {
		if _, err := hatest.StartKeepalived(p, p.FW1, o); err == nil {
			t.Errorf("StartKeepalived(%+v) accepted", o)
		}
	}
}

// TestKeepalivedPair runs the helper the way the interop tests and the
// benchmarks do, with keepalived on both firewalls: the master wins, a
// graceful stop hands over on priority 0, a restarted master preempts,
// Kill is a crash (no priority 0: the backup waits Master_Down_Interval),
// and a tracked interface going down reads FAULT.
func TestKeepalivedPair(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	p := lab.NewPairT(t, lab.Options{})
	o := hatest.KeepalivedOptions{Auth: hatest.KeepalivedAuthNone, Interval: 100 * time.Millisecond}
	o.Role = "master"
	k1, err := hatest.StartKeepalived(p, p.FW1, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k1.Close() })
	o.Role = "backup"
	k2, err := hatest.StartKeepalived(p, p.FW2, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k2.Close() })
	must := func(k *hatest.Keepalived, state string) {
		t.Helper()
		if err := k.WaitState(state, 5*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, k.Log())
		}
	}
	must(k1, "MASTER")
	must(k2, "BACKUP")
	holds(t, p.FW1, p, true)
	holds(t, p.FW2, p, false)

	if err := k1.Stop(); err != nil {
		t.Fatal(err)
	}
	must(k2, "MASTER")
	if !strings.Contains(k2.Log(), "Backup received priority 0 advertisement") {
		t.Errorf("graceful stop: no priority 0 seen by the backup:\n%s", k2.Log())
	}
	if got := k1.State(); got != "STOP" {
		t.Errorf("stopped keepalived reports %q, want STOP", got)
	}
	holds(t, p.FW1, p, false)

	if err := k1.Start(); err != nil {
		t.Fatal(err)
	}
	must(k1, "MASTER")
	must(k2, "BACKUP")
	if diff := cmp.Diff([]string{"BACKUP", "MASTER", "STOP", "BACKUP", "MASTER"}, k1.History()); diff != "" {
		t.Errorf("master's history (-want +got):\n%s", diff)
	}

	logFrom := len(k2.Log())
	if err := k1.Kill(); err != nil {
		t.Fatal(err)
	}
	must(k2, "MASTER")
	if log := k2.Log()[logFrom:]; strings.Contains(log, "priority 0") {
		t.Errorf("Kill sent priority 0, it must be a crash:\n%s", log)
	}
	holds(t, p.FW2, p, true)
	holds(t, p.FW1, p, true) // SIGKILL leaves the VIPs behind

	if err := p.SetLinkDown(p.FW2, lab.IfLAN); err != nil {
		t.Fatal(err)
	}
	must(k2, "FAULT")
}

func holds(t *testing.T, fw *lab.Netns, p *lab.Pair, want bool) {
	t.Helper()
	for _, v := range []string{p.LANVIP.Addr().String(), p.WANVIP.Addr().String()} {
		has, err := hatest.HasAddr(fw, mustPrefix(v+"/32").Addr())
		if err != nil {
			t.Fatal(err)
		}
		if has != want {
			t.Errorf("%s holds %s = %v, want %v", fw, v, has, want)
		}
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
