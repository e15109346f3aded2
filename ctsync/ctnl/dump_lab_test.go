package ctnl

import (
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/ctsync/ctwire"
	"github.com/muros/muros-had/lab"
)

// TestDumper: a table of IPv4 and IPv6 flows, NAT'd and in zones, read
// chunk by chunk through Dumper, equals ti-mo/conntrack's dump of it as
// FromKernel converts it; the dump spans several datagrams, a second dump
// on the same socket works, and a dump started while one is half read
// still returns the whole table.
func TestDumper(t *testing.T) {
	ns := lab.NewNetnsT(t, "ctnldump")
	in := injectorIn(t, ns)
	const n = 1500
	fs := make([]ctwire.Flow, n)
	for i := range fs {
		o := ctwire.Tuple{Src: netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)}), Dst: addr("198.51.100.3"), SrcPort: uint16(10000 + i), DstPort: 443}
		if i%5 == 0 {
			o.Src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
			o.Dst = netip.MustParseAddr("2001:db8::1")
		}
		r := o.Invert()
		if i%7 == 0 && o.Src.Is4() {
			r.Dst, r.DstPort = addr("203.0.113.9"), uint16(40000+i) // SNAT
		}
		fs[i] = ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured, Timeout: 600,
			Orig: o, Reply: r, HasTCP: true, TCP: ctwire.TCPInfo{State: 3}, Mark: uint32(i), Zone: uint16(i % 3)}
	}
	ok := make([]bool, n)
	if f, err := in.ApplyBatch(fs, ok); f != 0 {
		t.Fatalf("%d failures: %v", f, err)
	}
	var want []ctwire.Flow
	for _, k := range dumpIn(t, ns) {
		f, ok := FromKernel(&k)
		if !ok {
			t.Fatalf("FromKernel refused %+v", k)
		}
		want = append(want, f)
	}
	if len(want) != n {
		t.Fatalf("ti-mo dump holds %d flows, want %d", len(want), n)
	}
	var d *Dumper
	if err := ns.Do(func() (err error) { d, err = DialDumper(); return err }); err != nil {
		t.Fatalf("dumper: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	read := func(stopAfter int) (got []ctwire.Flow, chunks int) {
		t.Helper()
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		var rejected [NumEventReasons]uint64
		for {
			var done bool
			var err error
			got, done, err = d.Next(got, &rejected)
			if err != nil {
				t.Fatalf("chunk %d: %v", chunks, err)
			}
			chunks++
			if done || chunks == stopAfter {
				break
			}
		}
		if rejected != ([NumEventReasons]uint64{}) {
			t.Fatalf("rejected %v", rejected)
		}
		return got, chunks
	}
	// Sorted, and timeouts (they tick between the dumps) checked apart.
	order := func(fs []ctwire.Flow) {
		slices.SortFunc(fs, func(a, b ctwire.Flow) int { return int(a.Mark) - int(b.Mark) })
		for i := range fs {
			if fs[i].Timeout < 590 || fs[i].Timeout > 600 {
				t.Fatalf("flow %d: timeout %d, want about 600", i, fs[i].Timeout)
			}
			fs[i].Timeout = 0
		}
	}
	order(want)
	eq := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	for round := range 2 {
		got, chunks := read(0)
		if chunks < 3 {
			t.Errorf("round %d: the dump came in %d datagrams; want several", round, chunks)
		}
		order(got)
		if diff := cmp.Diff(want, got, eq); diff != "" {
			t.Fatalf("round %d: Dumper differs from ti-mo (-ti-mo +Dumper):\n%s", round, diff)
		}
	}
	if _, chunks := read(2); chunks != 2 {
		t.Fatalf("stopped after %d chunks", chunks)
	}
	got, _ := read(0)
	order(got)
	if diff := cmp.Diff(want, got, eq); diff != "" {
		t.Fatalf("after an abandoned dump: (-ti-mo +Dumper):\n%s", diff)
	}

	// A socket that fails in the middle of a dump (here: closed under
	// the dumper, so every call on it fails) is replaced at the next
	// Start, in the dumper's namespace although this goroutine is not in
	// it, and the next dump is whole.
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Next(nil, nil); err != nil {
		t.Fatal(err)
	}
	fd := d.fd
	d.fd = -1
	syscall.Close(fd)
	if _, _, err := d.Next(nil, nil); err == nil {
		t.Fatal("Next on a broken socket: no error")
	}
	got, _ = read(0)
	order(got)
	if diff := cmp.Diff(want, got, eq); diff != "" {
		t.Fatalf("after a broken socket: (-ti-mo +Dumper):\n%s", diff)
	}
	if got, want := netnsCookie(t, d.fd), nsCookie(t, ns); got != want {
		t.Fatalf("reopened dump socket in namespace cookie %d, the dumper's is %d", got, want)
	}
}
