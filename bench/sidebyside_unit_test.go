package bench

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/net/bpf"
	"pgregory.net/rapid"
)

// ipMonitorSample is `ip -ts monitor address` output as iproute2 6.1
// prints it (captured in a scratch namespace), with an IPv6 line and a
// last line cut short by the monitor's end.
const ipMonitorSample = `[2026-12-07T07:29:03.477476] 3: v0    inet 10.99.0.1/24 scope global v0
       valid_lft forever preferred_lft forever
[2026-12-07T07:29:03.480874] 3: v0    inet 10.99.0.5/24 scope global secondary v0
       valid_lft forever preferred_lft forever
[2026-12-07T07:29:03.483399] Deleted 3: v0    inet 10.99.0.5/24 scope global secondary v0
       valid_lft forever preferred_lft forever
[2026-12-07T07:29:03.487205] Deleted 3: v0    inet6 fe80::c474:acff:fecc:e517/64 scope link tentative 
       valid_lft forever preferred_lft forever
[2026-12-07T07:29:03.49`

func TestParseIPMonitor(t *testing.T) {
	at := func(us int) time.Time { return time.Date(2026, 12, 7, 7, 29, 3, us*1000, time.UTC) }
	got, err := ParseIPMonitor(ipMonitorSample, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	want := []AddrEvent{
		{At: at(477476), Addr: netip.MustParseAddr("10.99.0.1")},
		{At: at(480874), Addr: netip.MustParseAddr("10.99.0.5")},
		{At: at(483399), Addr: netip.MustParseAddr("10.99.0.5"), Deleted: true},
		{At: at(487205), Addr: netip.MustParseAddr("fe80::c474:acff:fecc:e517"), Deleted: true},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("ParseIPMonitor (-want +got):\n%s", diff)
	}
	for _, bad := range []string{
		"3: v0 inet 10.0.0.1/24\n",                             // no stamp
		"[2026-12-07 07:29:03] 3: v0 inet 10.0.0.1/24\n",       // other stamp
		"[2026-12-07T07:29:03.477476] 3: v0 inet 10.0.0.1\n",   // no prefix
		"[2026-12-07T07:29:03.477476] v0 inet 10.0.0.1/24 x\n", // no index
	} {
		if _, err := ParseIPMonitor(bad, time.UTC); !errors.Is(err, ErrMonitorLine) {
			t.Errorf("ParseIPMonitor(%q): %v, want ErrMonitorLine", bad, err)
		}
	}
}

func FuzzParseIPMonitor(f *testing.F) {
	f.Add(ipMonitorSample)
	f.Add("[x] Deleted\n")
	f.Fuzz(func(t *testing.T, s string) {
		ev, err := ParseIPMonitor(s, time.UTC)
		if err != nil && ev != nil {
			t.Fatalf("error %v with events %v", err, ev)
		}
		if err == nil && len(ev) > strings.Count(s, "\n") {
			t.Fatalf("%d events from %d lines", len(ev), strings.Count(s, "\n"))
		}
	})
}

func TestMeasureSplitBrain(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	lan, wan := netip.MustParseAddr("10.10.0.1"), netip.MustParseAddr("203.0.113.1")
	other := netip.MustParseAddr("10.10.0.99")
	add := func(ms int, a netip.Addr) AddrEvent { return AddrEvent{At: at(ms), Addr: a} }
	del := func(ms int, a netip.Addr) AddrEvent { return AddrEvent{At: at(ms), Addr: a, Deleted: true} }
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	master := Holding{Initially: true}
	for _, tc := range []struct {
		name   string
		a, b   Holding
		window [2]int
		want   SplitBrain
	}{
		{"no takeover", master, Holding{}, [2]int{0, 3000}, SplitBrain{}},
		{"backup claims and keeps", master, Holding{Events: []AddrEvent{add(40, lan), add(41, wan)}},
			[2]int{0, 3000}, SplitBrain{Total: ms(2960), First: ms(40)}},
		{"backup claims, master releases", Holding{Initially: true, Events: []AddrEvent{del(100, lan), del(100, wan)}},
			Holding{Events: []AddrEvent{add(40, lan), add(40, wan)}}, [2]int{0, 3000}, SplitBrain{Total: ms(60), First: ms(40)}},
		{"one VIP enough", master, Holding{Events: []AddrEvent{add(50, wan), add(500, lan), del(700, wan), del(800, lan)}},
			[2]int{0, 3000}, SplitBrain{Total: ms(750), First: ms(50)}},
		{"twice", master, Holding{Events: []AddrEvent{add(10, lan), del(20, lan), add(100, lan), del(130, lan)}},
			[2]int{0, 3000}, SplitBrain{Total: ms(40), First: ms(10)}},
		{"other addresses do not count", master, Holding{Events: []AddrEvent{add(10, other)}}, [2]int{0, 3000}, SplitBrain{}},
		{"events before the window set the start", Holding{Initially: false, Events: []AddrEvent{add(-50, lan)}},
			Holding{Events: []AddrEvent{add(-10, lan)}}, [2]int{0, 1000}, SplitBrain{Total: ms(1000), First: 0}},
		{"events after the window ignored", master, Holding{Events: []AddrEvent{add(1500, lan)}}, [2]int{0, 1000}, SplitBrain{}},
		{"split at the end", master, Holding{Events: []AddrEvent{add(900, lan)}}, [2]int{0, 1000}, SplitBrain{Total: ms(100), First: ms(900)}},
	} {
		got := MeasureSplitBrain(tc.a, tc.b, []netip.Addr{lan, wan}, at(tc.window[0]), at(tc.window[1]))
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
		// The measure is symmetric in the two nodes.
		if again := MeasureSplitBrain(tc.b, tc.a, []netip.Addr{lan, wan}, at(tc.window[0]), at(tc.window[1])); again != got {
			t.Errorf("%s: swapped nodes give %+v, want %+v", tc.name, again, got)
		}
	}
}

// TestMeasureSplitBrainProperties: the split never exceeds the window nor
// the time the backup held the address, and starts inside the window.
func TestMeasureSplitBrainProperties(t *testing.T) {
	vip := netip.MustParseAddr("10.10.0.1")
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	rapid.Check(t, func(t *rapid.T) {
		steps := rapid.SliceOfN(rapid.IntRange(1, 500), 0, 20).Draw(t, "steps")
		var ev []AddrEvent
		at, holds := t0, false
		var held time.Duration
		to := t0.Add(3 * time.Second)
		for i, s := range steps {
			next := at.Add(time.Duration(s) * time.Millisecond)
			if holds && at.Before(to) {
				end := next
				if end.After(to) {
					end = to
				}
				held += end.Sub(at)
			}
			at = next
			holds = i%2 == 0
			ev = append(ev, AddrEvent{At: at, Addr: vip, Deleted: !holds})
		}
		if holds && at.Before(to) {
			held += to.Sub(at)
		}
		got := MeasureSplitBrain(Holding{Initially: true}, Holding{Events: ev}, []netip.Addr{vip}, t0, to)
		if got.Total != held {
			t.Fatalf("split %v, want the backup's hold %v (master held throughout)", got.Total, held)
		}
		if got.First < 0 || got.First > 3*time.Second || (got.Total == 0 && got.First != 0) {
			t.Fatalf("first %v with total %v", got.First, got.Total)
		}
	})
}

func TestParseKeepalivedVersion(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"Keepalived v2.4.3 (07/20,2026)\n\nCopyright(C) 2001-2026 Alexandre Cassen\n", "2.4.3", nil},
		{"Keepalived v2.2.7 (01/16,2022)\n", "2.2.7", nil},
		{"keepalived: unknown option\n", "", ErrKeepalivedVersion},
		{"Keepalived v\n", "", ErrKeepalivedVersion},
		{"Keepalived v2.4.3-dirty\n", "", ErrKeepalivedVersion},
		{"", "", ErrKeepalivedVersion},
	} {
		got, err := ParseKeepalivedVersion(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("ParseKeepalivedVersion(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestAdvertFilter runs the filter in x/net/bpf's VM: the node's adverts,
// plain or in AH, pass (64 bytes kept); the peer's adverts, other IP
// protocols, ARP and IPv6 do not.
func TestAdvertFilter(t *testing.T) {
	fw1, fw2 := [4]byte{192, 168, 255, 1}, [4]byte{192, 168, 255, 2}
	raw, err := AdvertFilter(netip.AddrFrom4(fw2))
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	udp := advertFrame(fw2, 100, false)
	udp[14+9] = 17
	ipv6 := advertFrame(fw2, 100, false)
	ipv6[12], ipv6[13] = 0x86, 0xdd
	for _, tc := range []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"own plain advert", advertFrame(fw2, 100, false), true},
		{"own AH advert", advertFrame(fw2, 100, true), true},
		{"own priority 0", advertFrame(fw2, 0, false), true},
		{"peer's advert", advertFrame(fw1, 150, false), false},
		{"own UDP (heartbeats, BFD)", udp, false},
		{"ARP", garpFrame(fw2, fw2), false},
		{"IPv6 ethertype", ipv6, false},
	} {
		n, err := vm.Run(tc.frame)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (n > 0) != tc.pass {
			t.Errorf("%s: filter kept %d bytes, want pass %v", tc.name, n, tc.pass)
		}
	}
	if _, err := AdvertFilter(netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("an IPv6 source gave a filter")
	}
}

func TestCountEpisodes(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sent := []time.Time{at(0), at(20), at(30), at(61), at(100), at(500)}
	got := CountEpisodes(sent, 10*time.Millisecond, at(5), at(400))
	// 20, 30 one episode; 61 is 31 ms after 30 (> 3 intervals): another;
	// 100 another; 0 and 500 outside.
	if want := (FalseTakeovers{Adverts: 4, Episodes: 3}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := CountEpisodes(nil, 10*time.Millisecond, at(0), at(1)); got != (FalseTakeovers{}) {
		t.Errorf("none: %+v", got)
	}
}

func TestIsolateScript(t *testing.T) {
	s := IsolateScript("bench_hang")
	for _, want := range []string{
		"table inet bench_hang", "hook prerouting", "hook output", "policy drop",
		"table arp bench_hang", "hook input",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if strings.Count(s, "policy drop") != 4 {
		t.Errorf("want 4 dropping chains (IP in/out, ARP in/out):\n%s", s)
	}
}

func TestEventGap(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	d := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	for _, tc := range []struct {
		name               string
		arrivals           []time.Duration
		trigger, done, end int
		gap, from          int
		ok                 bool
	}{
		// A 4 ms failover at 300 ms; the machine stalled 20 ms at 500.
		{"failover shorter than a stall elsewhere", ms(1, 2, 299, 303, 304, 500, 520, 521), 299, 300, 600, 4, 299, true},
		{"longest of several overlapping the trigger", ms(1, 10, 12, 30, 31), 11, 25, 40, 18, 12, true},
		{"silence from the start", ms(50, 51), 10, 11, 60, 50, 0, true},
		{"silence to the end", ms(1, 2), 10, 11, 60, 58, 2, true},
		{"unordered arrivals", ms(304, 1, 299, 2), 299, 300, 305, 5, 299, true},
		{"no reply", nil, 10, 11, 60, 0, 0, false},
	} {
		gap, from, ok := EventGap(tc.arrivals, d(tc.trigger), d(tc.done), d(tc.end))
		if gap != d(tc.gap) || from != d(tc.from) || ok != tc.ok {
			t.Errorf("%s: EventGap = %v from %v (%v), want %v from %v (%v)", tc.name, gap, from, ok, d(tc.gap), d(tc.from), tc.ok)
		}
	}
}
