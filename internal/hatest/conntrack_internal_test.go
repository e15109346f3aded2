package hatest

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ti-mo/conntrack"
)

var addrPortCmp = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

func TestNormaliseFlow(t *testing.T) {
	client, server, vip := netip.MustParseAddr("10.10.0.100"), netip.MustParseAddr("203.0.113.100"), netip.MustParseAddr("203.0.113.1")
	ap := netip.AddrPortFrom

	snat := conntrack.NewFlow(6, conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured|conntrack.StatusSrcNAT|conntrack.StatusSrcNATDone,
		client, server, 40000, 9000, 431999, 7)
	snat.TupleReply.IP.DestinationAddress = vip
	snat.TupleReply.Proto.DestinationPort = 40001
	snat.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: TCPEstablished, OriginalWindowScale: 7}
	snat.ID, snat.Use, snat.CountersOrig.Packets = 12345, 2, 99

	udp := conntrack.NewFlow(17, conntrack.StatusConfirmed|conntrack.StatusSeenReply, client, server, 5353, 53, 30, 0)
	udp.Zone = 3

	icmp := conntrack.NewFlow(1, conntrack.StatusConfirmed, client, server, 0, 0, 30, 0)
	icmp.TupleOrig.Proto.ICMPv4 = true
	icmp.TupleOrig.Proto.ICMPID, icmp.TupleOrig.Proto.ICMPType = 77, 8
	icmp.TupleReply.Proto.ICMPv4 = true
	icmp.TupleReply.Proto.ICMPID = 77 // echo reply, type 0

	for _, tc := range []struct {
		name string
		in   conntrack.Flow
		want CTFlow
		snat bool
	}{
		{"source-NATed TCP: timeout, id, counters and bookkeeping bits dropped", snat, CTFlow{
			Proto: 6, OrigSrc: ap(client, 40000), OrigDst: ap(server, 9000), ReplySrc: ap(server, 9000), ReplyDst: ap(vip, 40001),
			Mark: 7, Status: uint32(conntrack.StatusSeenReply | conntrack.StatusAssured | conntrack.StatusSrcNAT),
			HasTCPInfo: true, TCPState: TCPEstablished,
		}, true},
		{"UDP in a zone", udp, CTFlow{
			Proto: 17, Zone: 3, OrigSrc: ap(client, 5353), OrigDst: ap(server, 53), ReplySrc: ap(server, 53), ReplyDst: ap(client, 5353),
			Status: uint32(conntrack.StatusSeenReply),
		}, false},
		{"ICMP echo: identifier and type as ports", icmp, CTFlow{
			Proto: 1, OrigSrc: ap(client, 77), OrigDst: ap(server, 8<<8), ReplySrc: ap(server, 77), ReplyDst: ap(client, 0),
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := normalise(&tc.in)
			if diff := cmp.Diff(tc.want, got, addrPortCmp); diff != "" {
				t.Errorf("normalise (-want +got):\n%s", diff)
			}
			if got.SrcNATed() != tc.snat {
				t.Errorf("SrcNATed() = %v, want %v", got.SrcNATed(), tc.snat)
			}
		})
	}
}

func TestCTFlowOrder(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	mk := func(proto uint8, sport uint16) CTFlow {
		return CTFlow{Proto: proto, OrigSrc: netip.AddrPortFrom(a, sport), OrigDst: netip.AddrPortFrom(a, 1)}
	}
	got := []CTFlow{mk(17, 1), mk(6, 2), mk(6, 1)}
	slices.SortFunc(got, compareCTFlow)
	want := []CTFlow{mk(6, 1), mk(6, 2), mk(17, 1)}
	if diff := cmp.Diff(want, got, addrPortCmp); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}
