package ctnl

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"pgregory.net/rapid"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// treeMessage is the reference encoding: the attribute trees of
// CreateAttrs / UpdateAttrs / DeleteAttrs through netfilter.MarshalNetlink,
// framed the way the batch path framed them before AppendCreate & co.
func treeMessage(t fataler, msgType uint8, flags netlink.HeaderFlags, f *ctwire.Flow, attrs []netfilter.Attribute, seq uint32) []byte {
	m, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: netfilter.MessageType(msgType),
		Family:      family(f),
	}, attrs)
	if err != nil {
		t.Fatalf("MarshalNetlink: %v", err)
	}
	var b []byte
	b = binary.NativeEndian.AppendUint32(b, uint32(nlmsgHdrLen+len(m.Data)))
	b = binary.NativeEndian.AppendUint16(b, uint16(m.Header.Type))
	b = binary.NativeEndian.AppendUint16(b, uint16(netlink.Request|netlink.Acknowledge|flags))
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, m.Data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// fataler is what the comparisons need from *testing.T and *rapid.T.
type fataler interface{ Fatalf(string, ...any) }

type encodeCase struct {
	name string
	f    ctwire.Flow
}

func encodeCases() []encodeCase {
	a4 := netip.MustParseAddr
	tcp := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: StatusSeenReply | StatusAssured | StatusConfirmed, Timeout: 3600, Mark: 7,
		Orig:   ctwire.Tuple{Src: a4("10.0.0.1"), Dst: a4("192.0.2.1"), SrcPort: 40000, DstPort: 443},
		Reply:  ctwire.Tuple{Src: a4("192.0.2.1"), Dst: a4("10.0.0.1"), SrcPort: 443, DstPort: 40000},
		HasTCP: true, TCP: ctwire.TCPInfo{State: 3, WScaleOrig: 7, WScaleReply: 9, FlagsOrig: 0x23, FlagsReply: 0x22}}
	snat := tcp
	snat.Reply.Dst, snat.Reply.DstPort = a4("198.51.100.9"), 61000
	dnat := tcp
	dnat.Reply.Src, dnat.Reply.SrcPort = a4("10.1.1.1"), 8443
	both := snat
	both.Reply.Src, both.Reply.SrcPort = a4("10.1.1.1"), 8443
	noTCP := tcp
	noTCP.HasTCP, noTCP.Timeout, noTCP.Status = false, 0, 0
	noTCPSeen := noTCP
	noTCPSeen.Status = StatusSeenReply
	badState := tcp
	badState.TCP.State = 200
	zoned := tcp
	zoned.Zone, zoned.HasLabels = 12, true
	zoned.Labels = [16]byte{0: 1, 15: 0x80}
	udp := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 17, Timeout: 30,
		Orig:  ctwire.Tuple{Src: a4("2001:db8::1"), Dst: a4("2001:db8::2"), SrcPort: 53000, DstPort: 53},
		Reply: ctwire.Tuple{Src: a4("2001:db8::2"), Dst: a4("2001:db8:1::1"), SrcPort: 53, DstPort: 1000}}
	icmp := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 1, Timeout: 30,
		Orig:  ctwire.Tuple{Src: a4("10.0.0.1"), Dst: a4("192.0.2.1"), SrcPort: 0x1234, DstPort: 8 << 8},
		Reply: ctwire.Tuple{Src: a4("192.0.2.1"), Dst: a4("198.51.100.9"), SrcPort: 0x4321, DstPort: 0}}
	icmpDNAT := icmp
	icmpDNAT.Reply = ctwire.Tuple{Src: a4("10.9.9.9"), Dst: a4("10.0.0.1"), SrcPort: 0x1234}
	icmp6 := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 58, Zone: 3,
		Orig:  ctwire.Tuple{Src: a4("2001:db8::1"), Dst: a4("2001:db8::2"), SrcPort: 9, DstPort: 128 << 8},
		Reply: ctwire.Tuple{Src: a4("2001:db8::2"), Dst: a4("2001:db8::1"), SrcPort: 9, DstPort: 129 << 8}}
	mapped := udp
	mapped.Orig.Src, mapped.Orig.Dst = a4("::ffff:10.0.0.1"), a4("::ffff:10.0.0.2")
	mapped.Reply = mapped.Orig.Invert()
	return []encodeCase{
		{"tcp", tcp}, {"snat", snat}, {"dnat", dnat}, {"snat+dnat", both},
		{"tcp without state", noTCP}, {"tcp without state, seen reply", noTCPSeen},
		{"unknown tcp state", badState}, {"zone and labels", zoned},
		{"udp6 snat", udp}, {"icmp snat", icmp}, {"icmp dnat", icmpDNAT},
		{"icmpv6 zone", icmp6}, {"v4-mapped", mapped},
	}
}

func checkSame(t fataler, f *ctwire.Flow, seq uint32) {
	for _, confirmed := range []bool{false, true} {
		want := treeMessage(t, ipctnlMsgCTNew, netlink.Create|netlink.Excl, f, CreateAttrs(f, confirmed), seq)
		if d := cmp.Diff(want, AppendCreate(nil, f, confirmed, seq)); d != "" {
			t.Fatalf("create (confirmed %v) of %+v: -tree +direct\n%s", confirmed, f, d)
		}
	}
	want := treeMessage(t, ipctnlMsgCTNew, 0, f, UpdateAttrs(f), seq)
	if d := cmp.Diff(want, AppendUpdate(nil, f, seq)); d != "" {
		t.Fatalf("update of %+v: -tree +direct\n%s", f, d)
	}
	want = treeMessage(t, ipctnlMsgCTDelete, 0, f, DeleteAttrs(f.Key()), seq)
	if d := cmp.Diff(want, AppendDelete(nil, f, seq)); d != "" {
		t.Fatalf("delete of %+v: -tree +direct\n%s", f, d)
	}
}

func TestAppendMatchesAttributeTrees(t *testing.T) {
	for i, c := range encodeCases() {
		t.Run(c.name, func(t *testing.T) { checkSame(t, &c.f, uint32(i)*7919) })
	}
}

func TestAppendBatchConcatenates(t *testing.T) {
	var want, got []byte
	for i, c := range encodeCases() {
		want = append(want, treeMessage(t, ipctnlMsgCTNew, 0, &c.f, UpdateAttrs(&c.f), uint32(i))...)
		got = AppendUpdate(got, &c.f, uint32(i))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("-tree +direct\n%s", d)
	}
}

func addrGen(v6 bool) *rapid.Generator[netip.Addr] {
	return rapid.Custom(func(t *rapid.T) netip.Addr {
		if v6 {
			return netip.AddrFrom16([16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "a16")))
		}
		return netip.AddrFrom4([4]byte(rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(t, "a4")))
	})
}

func TestAppendMatchesAttributeTreesProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		v6 := rapid.Bool().Draw(t, "v6")
		addr := addrGen(v6)
		tuple := rapid.Custom(func(t *rapid.T) ctwire.Tuple {
			return ctwire.Tuple{Src: addr.Draw(t, "src"), Dst: addr.Draw(t, "dst"),
				SrcPort: rapid.Uint16().Draw(t, "sport"), DstPort: rapid.Uint16().Draw(t, "dport")}
		})
		f := ctwire.Flow{
			Op:      ctwire.OpUpdate,
			Proto:   rapid.SampledFrom([]uint8{1, 6, 17, 58, 132}).Draw(t, "proto"),
			Zone:    rapid.SampledFrom([]uint16{0, 0, 1, 65535}).Draw(t, "zone"),
			Status:  rapid.Uint32().Draw(t, "status"),
			Timeout: rapid.Uint32().Draw(t, "timeout"),
			Mark:    rapid.Uint32().Draw(t, "mark"),
			Orig:    tuple.Draw(t, "orig"),
		}
		if rapid.Bool().Draw(t, "symmetric") {
			f.Reply = f.Orig.Invert()
		} else {
			f.Reply = tuple.Draw(t, "reply")
		}
		if f.HasTCP = rapid.Bool().Draw(t, "hasTCP"); f.HasTCP {
			f.TCP = ctwire.TCPInfo{State: rapid.Uint8().Draw(t, "state"), WScaleOrig: rapid.Uint8().Draw(t, "wso"),
				WScaleReply: rapid.Uint8().Draw(t, "wsr"), FlagsOrig: rapid.Uint8().Draw(t, "fo"), FlagsReply: rapid.Uint8().Draw(t, "fr")}
		}
		if f.HasLabels = rapid.Bool().Draw(t, "hasLabels"); f.HasLabels {
			f.Labels = [16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "labels"))
		}
		checkSame(t, &f, rapid.Uint32().Draw(t, "seq"))
	})
}

func TestAppendAllocationFree(t *testing.T) {
	cs := encodeCases()
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() {
		b := buf[:0]
		for i := range cs {
			b = AppendCreate(b, &cs[i].f, true, 1)
			b = AppendUpdate(b, &cs[i].f, 2)
			b = AppendDelete(b, &cs[i].f, 3)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch, want 0", allocs)
	}
}

func BenchmarkAppendCreate(b *testing.B) {
	f := encodeCases()[0].f
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendCreate(buf[:0], &f, true, 1)
	}
}

func BenchmarkCreateAttrsTree(b *testing.B) {
	f := encodeCases()[0].f
	b.ReportAllocs()
	for b.Loop() {
		_ = treeMessage(b, ipctnlMsgCTNew, netlink.Create|netlink.Excl, &f, CreateAttrs(&f, true), 1)
	}
}
