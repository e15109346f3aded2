package ctnl

import (
	"golang.org/x/sys/unix"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ti-mo/conntrack"

	"github.com/muros/muros-had/ctsync/ctwire"
	"github.com/muros/muros-had/lab"
)

func dumpIn(t *testing.T, ns *lab.Netns) []conntrack.Flow {
	t.Helper()
	var flows []conntrack.Flow
	err := ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err = c.Dump(nil)
		return err
	})
	if err != nil {
		t.Fatalf("dump in %s: %v", ns, err)
	}
	return flows
}

func injectorIn(t *testing.T, ns *lab.Netns) *Injector {
	t.Helper()
	var in *Injector
	if err := ns.Do(func() (err error) { in, err = DialInjector(); return err }); err != nil {
		t.Fatalf("injector: %v", err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

func find(flows []conntrack.Flow, k ctwire.Key) (ctwire.Flow, bool) {
	for i := range flows {
		if f, ok := FromKernel(&flows[i]); ok && f.Key() == k {
			return f, true
		}
	}
	return ctwire.Flow{}, false
}

var addr = netip.MustParseAddr

// TestInjectNAT: a flow with source and destination NAT is recreated with
// both mappings (reply tuple and IPS_*_NAT status), TCP state and be-liberal
// flags; updated in place; deleted.
func TestInjectNAT(t *testing.T) {
	ns := lab.NewNetnsT(t, "ctnl")
	in := injectorIn(t, ns)

	tests := []struct {
		name       string
		f          ctwire.Flow
		wantStatus uint32 // bits that must be set
	}{
		{"snat+dnat tcp", ctwire.Flow{
			Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured, Timeout: 300, Mark: 0x2a,
			Orig:   ctwire.Tuple{Src: addr("10.10.0.5"), Dst: addr("203.0.113.1"), SrcPort: 40000, DstPort: 8080},
			Reply:  ctwire.Tuple{Src: addr("192.168.50.10"), Dst: addr("192.168.50.1"), SrcPort: 80, DstPort: 61001},
			HasTCP: true, TCP: ctwire.TCPInfo{State: 3, WScaleOrig: 7, WScaleReply: 7, FlagsOrig: 0x03, FlagsReply: 0x03},
		}, 1<<4 | 1<<5 | 1<<7 | 1<<8}, // SRC_NAT DST_NAT SRC_NAT_DONE DST_NAT_DONE
		{"snat udp", ctwire.Flow{
			Op: ctwire.OpUpdate, Proto: 17, Status: StatusSeenReply, Timeout: 60,
			Orig:  ctwire.Tuple{Src: addr("10.10.0.6"), Dst: addr("198.51.100.53"), SrcPort: 5000, DstPort: 53},
			Reply: ctwire.Tuple{Src: addr("198.51.100.53"), Dst: addr("203.0.113.1"), SrcPort: 53, DstPort: 5000},
		}, 1 << 4},
		{"plain tcp zone", ctwire.Flow{
			Op: ctwire.OpUpdate, Proto: 6, Zone: 3, Status: StatusSeenReply | StatusAssured, Timeout: 300,
			Orig:   ctwire.Tuple{Src: addr("10.10.0.7"), Dst: addr("198.51.100.8"), SrcPort: 41000, DstPort: 22},
			Reply:  ctwire.Tuple{Src: addr("198.51.100.8"), Dst: addr("10.10.0.7"), SrcPort: 22, DstPort: 41000},
			HasTCP: true, TCP: ctwire.TCPInfo{State: 3},
		}, StatusSeenReply | StatusAssured},
		{"udp6", ctwire.Flow{
			Op: ctwire.OpUpdate, Proto: 17, Status: StatusSeenReply, Timeout: 60, Mark: 3,
			Orig:  ctwire.Tuple{Src: addr("2001:db8:1::5"), Dst: addr("2001:db8:2::53"), SrcPort: 5000, DstPort: 53},
			Reply: ctwire.Tuple{Src: addr("2001:db8:2::53"), Dst: addr("2001:db8:1::5"), SrcPort: 53, DstPort: 5000},
		}, StatusSeenReply},
		{"tcp6 dnat", ctwire.Flow{
			Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured, Timeout: 300,
			Orig:   ctwire.Tuple{Src: addr("2001:db8:9::1"), Dst: addr("2001:db8:1::1"), SrcPort: 40001, DstPort: 443},
			Reply:  ctwire.Tuple{Src: addr("2001:db8:1::80"), Dst: addr("2001:db8:9::1"), SrcPort: 8443, DstPort: 40001},
			HasTCP: true, TCP: ctwire.TCPInfo{State: 3},
		}, 1<<5 | 1<<8},
		{"icmp", ctwire.Flow{
			Op: ctwire.OpUpdate, Proto: 1, Timeout: 30,
			Orig:  ctwire.Tuple{Src: addr("10.10.0.8"), Dst: addr("198.51.100.9"), SrcPort: 99, DstPort: 8 << 8},
			Reply: ctwire.Tuple{Src: addr("198.51.100.9"), Dst: addr("10.10.0.8"), SrcPort: 99, DstPort: 0},
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.f
			if err := in.Apply(&f); err != nil {
				t.Fatalf("create: %v", err)
			}
			got, ok := find(dumpIn(t, ns), f.Key())
			if !ok {
				t.Fatal("flow not in the kernel table after Apply")
			}
			if diff := cmp.Diff(f.Reply, got.Reply, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("reply tuple (NAT) differs (-want +got):\n%s", diff)
			}
			if got.Status&tt.wantStatus != tt.wantStatus {
				t.Fatalf("status %#x lacks %#x", got.Status, tt.wantStatus)
			}
			if got.Mark != f.Mark {
				t.Fatalf("mark %#x want %#x", got.Mark, f.Mark)
			}
			if f.HasTCP {
				if got.TCP.State != f.TCP.State || got.TCP.FlagsOrig&tcpFlagBeLiberal == 0 || got.TCP.FlagsReply&tcpFlagBeLiberal == 0 {
					t.Fatalf("tcp info %+v: want state %d and be-liberal both ways", got.TCP, f.TCP.State)
				}
				if got.TCP.WScaleOrig != f.TCP.WScaleOrig {
					t.Fatalf("wscale %d want %d", got.TCP.WScaleOrig, f.TCP.WScaleOrig)
				}
			}
			// Update in place: new mark, and again through a fresh injector
			// (unknown key: create hits EEXIST and falls back to update).
			f.Mark = 0x77
			if err := in.Apply(&f); err != nil {
				t.Fatalf("update: %v", err)
			}
			in2 := injectorIn(t, ns)
			f.Mark = 0x78
			if err := in2.Apply(&f); err != nil {
				t.Fatalf("update via EEXIST: %v", err)
			}
			got, _ = find(dumpIn(t, ns), f.Key())
			if got.Mark != 0x78 {
				t.Fatalf("mark after update %#x", got.Mark)
			}
			d := f
			d.Op = ctwire.OpDestroy
			if err := in.Apply(&d); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if _, ok := find(dumpIn(t, ns), f.Key()); ok {
				t.Fatal("flow still present after delete")
			}
			if err := in.Apply(&d); err != nil {
				t.Fatalf("delete of a missing flow must be a no-op: %v", err)
			}
		})
	}
}

// TestInjectLabels: connlabels are recreated where the ruleset uses them,
// and the flow is still created where it does not.
func TestInjectLabels(t *testing.T) {
	ns := lab.NewNetnsT(t, "ctnllbl")
	f := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 17, Status: StatusSeenReply, Timeout: 60,
		Orig:      ctwire.Tuple{Src: addr("10.7.0.1"), Dst: addr("10.7.0.2"), SrcPort: 1, DstPort: 2},
		Reply:     ctwire.Tuple{Src: addr("10.7.0.2"), Dst: addr("10.7.0.1"), SrcPort: 2, DstPort: 1},
		HasLabels: true, Labels: [16]byte{0: 0x05}}
	in := injectorIn(t, ns)
	if err := in.Apply(&f); err != nil {
		t.Fatalf("create without label support: %v", err)
	}
	// This kernel creates the flow and ignores the labels; others refuse
	// and Apply retries without them. Either way the flow exists.
	if _, ok := find(dumpIn(t, ns), f.Key()); !ok {
		t.Fatal("flow with labels not created where labels are unused")
	}
	d := f
	d.Op = ctwire.OpDestroy
	if err := in.Apply(&d); err != nil {
		t.Fatal(err)
	}
	out, err := ns.Run("nft", "add table inet lbl; add chain inet lbl c { type filter hook input priority 0; }; add rule inet lbl c ct label set 127")
	if err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	if err := in.Apply(&f); err != nil {
		t.Fatalf("create with labels: %v", err)
	}
	got, ok := find(dumpIn(t, ns), f.Key())
	if !ok || !got.HasLabels || got.Labels != f.Labels {
		t.Fatalf("labels not recreated: %+v", got)
	}
}

// TestFromKernelConntrackCLI: a NAT'd flow made by conntrack(8) converts to
// a record that re-injects identically in another namespace.
func TestFromKernelConntrackCLI(t *testing.T) {
	a := lab.NewNetnsT(t, "ctnla")
	b := lab.NewNetnsT(t, "ctnlb")
	out, err := a.Run("conntrack", "-I", "-p", "tcp", "-s", "10.1.0.2", "-d", "198.51.100.20", "--sport", "33000", "--dport", "443",
		"--state", "ESTABLISHED", "-u", "SEEN_REPLY,ASSURED", "-t", "500", "--mark", "9", "--src-nat", "203.0.113.9")
	if err != nil {
		t.Fatalf("conntrack -I: %v: %s", err, out)
	}
	flows := dumpIn(t, a)
	if len(flows) != 1 {
		t.Fatalf("%d flows in master namespace", len(flows))
	}
	f, ok := FromKernel(&flows[0])
	if !ok {
		t.Fatal("FromKernel refused the flow")
	}
	if n := NATOf(&f); !n.SrcNAT || n.SrcAddr != addr("203.0.113.9") || n.DstNAT {
		t.Fatalf("NAT %+v from reply %+v", n, f.Reply)
	}
	in := injectorIn(t, b)
	if err := in.Apply(&f); err != nil {
		t.Fatal(err)
	}
	got, ok := find(dumpIn(t, b), f.Key())
	if !ok {
		t.Fatal("not injected")
	}
	want := f
	want.Timeout, got.Timeout = 0, 0
	want.TCP.FlagsOrig |= tcpFlagBeLiberal
	want.TCP.FlagsReply |= tcpFlagBeLiberal
	const natBits = 1<<4 | 1<<5 | 1<<7 | 1<<8
	if got.Status&natBits != want.Status&natBits {
		t.Fatalf("NAT status %#x want %#x", got.Status&natBits, want.Status&natBits)
	}
	want.Status, got.Status = 0, 0
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("re-injected flow differs (-want +got):\n%s", diff)
	}
	if l, _ := b.Run("conntrack", "-L"); !strings.Contains(l, "203.0.113.9") {
		t.Fatalf("conntrack -L in backup does not show the NAT address:\n%s", l)
	}
}

// TestApplyBatch: one round trip per batch, with the second-step cases
// (create of an existing flow, delete of a missing one) handled.
func TestApplyBatch(t *testing.T) {
	ns := lab.NewNetnsT(t, "ctnlbatch")
	in := injectorIn(t, ns)
	var fs []ctwire.Flow
	for i := 0; i < 30; i++ {
		o := ctwire.Tuple{Src: netip.AddrFrom4([4]byte{10, 5, 0, byte(i)}), Dst: addr("198.51.100.1"), SrcPort: uint16(30000 + i), DstPort: 443}
		r := o.Invert()
		if i%3 == 0 {
			r.Dst, r.DstPort = addr("203.0.113.1"), uint16(50000+i) // SNAT
		}
		fs = append(fs, ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured, Timeout: 600,
			Orig: o, Reply: r, HasTCP: true, TCP: ctwire.TCPInfo{State: 3}, Mark: uint32(i)})
	}
	// An empty batch (a datagram of bulk markers only) is no error and
	// keeps the batch socket.
	if n, err := in.ApplyBatch(nil, nil); n != 0 || err != nil || in.b == nil {
		t.Fatalf("empty batch: %d failures, %v, batch socket kept %v", n, err, in.b != nil)
	}
	ok := make([]bool, len(fs))
	if n, err := in.ApplyBatch(fs, ok); n != 0 {
		t.Fatalf("%d failures: %v", n, err)
	}
	flows := dumpIn(t, ns)
	for i := range fs {
		got, found := find(flows, fs[i].Key())
		if !found || got.Reply != fs[i].Reply || got.Mark != fs[i].Mark {
			t.Fatalf("flow %d: found %v got %+v want reply %+v", i, found, got, fs[i].Reply)
		}
	}
	// A fresh injector does not know them: creates meet EEXIST, then update.
	in2 := injectorIn(t, ns)
	for i := range fs {
		fs[i].Mark += 100
	}
	if n, err := in2.ApplyBatch(fs, ok); n != 0 {
		t.Fatalf("%d failures on re-apply: %v", n, err)
	}
	flows = dumpIn(t, ns)
	for i := range fs {
		if got, _ := find(flows, fs[i].Key()); got.Mark != fs[i].Mark {
			t.Fatalf("flow %d mark %d want %d", i, got.Mark, fs[i].Mark)
		}
	}
	for i := range fs {
		fs[i].Op = ctwire.OpDestroy
	}
	fs = append(fs, fs[0]) // a delete of a flow already deleted in this batch
	ok = make([]bool, len(fs))
	if n, err := in2.ApplyBatch(fs, ok); n != 0 {
		t.Fatalf("%d failures on delete: %v", n, err)
	}
	if n := len(dumpIn(t, ns)); n != 0 {
		t.Fatalf("%d flows left after batch delete", n)
	}
	if st := in2.Stats(); st.Created != 0 || st.Updated != 30 || st.Deleted != 31 {
		t.Fatalf("stats %+v", st)
	}
	// Every batch went in one round trip: no fallback to one by one.
	if in.b == nil || in2.b == nil {
		t.Fatalf("batch socket dropped (first injector %v, second %v)", in.b != nil, in2.b != nil)
	}
}

// TestApplyBatchChunksAndRedial: a batch larger than one chunk in which
// every record fails its first step (a fresh injector creates flows that
// exist: EEXIST, then update) gets every error answered and every record
// applied; a batch socket that breaks is replaced and counted, the chunk
// in flight still lands.
func TestApplyBatchChunksAndRedial(t *testing.T) {
	ns := lab.NewNetnsT(t, "ctnlchunk")
	in := injectorIn(t, ns)
	const n = 3*maxChunk + 17
	fs := make([]ctwire.Flow, n)
	for i := range fs {
		o := ctwire.Tuple{Src: netip.AddrFrom4([4]byte{10, 6, byte(i >> 8), byte(i)}), Dst: addr("198.51.100.2"), SrcPort: uint16(20000 + i), DstPort: 80}
		fs[i] = ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured, Timeout: 600,
			Orig: o, Reply: o.Invert(), HasTCP: true, TCP: ctwire.TCPInfo{State: 3}, Mark: 1}
	}
	ok := make([]bool, n)
	if f, err := in.ApplyBatch(fs, ok); f != 0 {
		t.Fatalf("%d failures: %v", f, err)
	}
	if got := len(dumpIn(t, ns)); got != n {
		t.Fatalf("kernel holds %d flows, want %d", got, n)
	}
	in2 := injectorIn(t, ns)
	for i := range fs {
		fs[i].Mark = 2
	}
	clear(ok)
	if f, err := in2.ApplyBatch(fs, ok); f != 0 {
		t.Fatalf("%d failures on re-apply: %v", f, err)
	}
	for i, o := range ok {
		if !o {
			t.Fatalf("record %d not reported applied", i)
		}
	}
	for _, got := range dumpIn(t, ns) {
		if got.Mark != 2 {
			t.Fatalf("flow %+v: mark %d, want 2", got.TupleOrig, got.Mark)
		}
	}
	if st := in2.Stats(); st.Updated != n || st.Created != 0 || st.BatchRedials != 0 {
		t.Fatalf("stats %+v, want %d updates and no redial", st, n)
	}

	// Break the batch socket under the injector: the next batch redials.
	fd := in2.b.fd
	in2.b.fd = -1 // every call on it fails, as on a broken socket
	syscall.Close(fd)
	for i := range fs {
		fs[i].Mark = 3
	}
	clear(ok)
	if f, err := in2.ApplyBatch(fs, ok); f != 0 {
		t.Fatalf("%d failures after the socket broke: %v", f, err)
	}
	if st := in2.Stats(); st.BatchRedials != 1 || in2.b == nil {
		t.Fatalf("after a broken socket: stats %+v, batch socket %v; want one redial and a socket", st, in2.b != nil)
	}
	for _, got := range dumpIn(t, ns) {
		if got.Mark != 3 {
			t.Fatalf("flow %+v: mark %d, want 3", got.TupleOrig, got.Mark)
		}
	}

	// The redialled socket is in the injector's namespace, not the
	// caller's (this test runs outside ns), and new flows land in ns.
	if got, want := netnsCookie(t, in2.b.fd), nsCookie(t, ns); got != want {
		t.Fatalf("redialled batch socket in namespace cookie %d, the injector's is %d", got, want)
	}
	fresh := make([]ctwire.Flow, 5)
	for i := range fresh {
		o := ctwire.Tuple{Src: netip.AddrFrom4([4]byte{10, 7, 0, byte(i)}), Dst: addr("198.51.100.3"), SrcPort: uint16(40000 + i), DstPort: 80}
		fresh[i] = ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured, Timeout: 600,
			Orig: o, Reply: o.Invert(), HasTCP: true, TCP: ctwire.TCPInfo{State: 3}}
	}
	before := in2.Stats().Created
	if f, err := in2.ApplyBatch(fresh, make([]bool, len(fresh))); f != 0 {
		t.Fatalf("%d failures creating after the redial: %v", f, err)
	}
	flows := dumpIn(t, ns)
	for i := range fresh {
		if _, found := find(flows, fresh[i].Key()); !found {
			t.Fatalf("flow %d created after the redial is not in %s", i, ns)
		}
	}
	if got := in2.Stats().Created - before; got != uint64(len(fresh)) {
		t.Fatalf("%d creates counted, want %d", got, len(fresh))
	}
}

// TestApplyBatchRedoKeepsOrder: a record that fails its first step is
// redone after its chunk; a DESTROY of the same flow later in the batch
// must still come after it, or the flow would be back on the backup after
// it ended on the master.
func TestApplyBatchRedoKeepsOrder(t *testing.T) {
	ns := lab.NewNetnsT(t, "ctnlorder")
	o := ctwire.Tuple{Src: addr("10.8.0.1"), Dst: addr("198.51.100.4"), SrcPort: 41000, DstPort: 443}
	f := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured, Timeout: 600,
		Orig: o, Reply: o.Invert(), HasTCP: true, TCP: ctwire.TCPInfo{State: 3}}
	destroy := f
	destroy.Op = ctwire.OpDestroy
	ok := make([]bool, 2)

	// A flow in the kernel that the injector does not know (a restart
	// with the table intact): the update's create meets EEXIST.
	a := injectorIn(t, ns)
	if n, err := a.ApplyBatch([]ctwire.Flow{f}, ok[:1]); n != 0 {
		t.Fatal(err)
	}
	b := injectorIn(t, ns)
	if n, err := b.ApplyBatch([]ctwire.Flow{f, destroy}, ok); n != 0 {
		t.Fatalf("%d failures: %v", n, err)
	}
	if _, found := find(dumpIn(t, ns), f.Key()); found {
		t.Fatal("unknown flow: updated then destroyed in one batch, but it is in the kernel")
	}

	// A flow the injector knows but that expired meanwhile: the update
	// meets ENOENT and becomes a create.
	if n, err := b.ApplyBatch([]ctwire.Flow{f}, ok[:1]); n != 0 {
		t.Fatal(err)
	}
	if n, err := a.ApplyBatch([]ctwire.Flow{destroy}, ok[:1]); n != 0 { // gone behind b's back
		t.Fatal(err)
	}
	if n, err := b.ApplyBatch([]ctwire.Flow{f, destroy}, ok); n != 0 {
		t.Fatalf("%d failures: %v", n, err)
	}
	if _, found := find(dumpIn(t, ns), f.Key()); found {
		t.Fatal("expired flow: updated then destroyed in one batch, but it is in the kernel")
	}
}

// soNetnsCookie is SO_NETNS_COOKIE (asm-generic 71, Linux 5.14): the
// cookie of the network namespace a socket lives in.
const soNetnsCookie = 71

func netnsCookie(t *testing.T, fd int) uint64 {
	t.Helper()
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
	if err != nil {
		t.Fatalf("SO_NETNS_COOKIE: %v", err)
	}
	return v
}

// nsCookie is the cookie of ns, from a socket opened in it.
func nsCookie(t *testing.T, ns *lab.Netns) uint64 {
	t.Helper()
	var c uint64
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		c = netnsCookie(t, fd)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return c
}
