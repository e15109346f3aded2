package ctnl

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/muros/muros-had/ctsync/ctwire"
)

var addrEq = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// viaTiMo is the reference decoding: ti-mo/conntrack's Event.Unmarshal,
// then FromKernel. ok is false when either refuses the message.
func viaTiMo(msg []byte) (et EventType, f ctwire.Flow, expect, ok bool) {
	if len(msg) < nlmsgHdrLen {
		return 0, f, false, false
	}
	l := int(binary.NativeEndian.Uint32(msg))
	if l < nlmsgHdrLen || l > len(msg) {
		return 0, f, false, false
	}
	m := netlink.Message{
		Header: netlink.Header{
			Length:   uint32(l),
			Type:     netlink.HeaderType(binary.NativeEndian.Uint16(msg[4:])),
			Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(msg[6:])),
			Sequence: binary.NativeEndian.Uint32(msg[8:]),
			PID:      binary.NativeEndian.Uint32(msg[12:]),
		},
		Data: msg[nlmsgHdrLen:l],
	}
	var ev conntrack.Event
	if err := ev.Unmarshal(m); err != nil {
		return 0, f, false, false
	}
	if ev.Flow == nil {
		return EventNone, f, ev.Expect != nil, false
	}
	f, ok = FromKernel(ev.Flow)
	switch ev.Type {
	case conntrack.EventNew:
		et = EventNew
	case conntrack.EventUpdate:
		et = EventUpdate
	case conntrack.EventDestroy:
		et = EventDestroy
	}
	return et, f, false, ok
}

// eventSeeds are kernel-shaped event messages: the requests the injector
// sends have the layout of the kernel's events (tuples, status, timeout,
// mark, zone, protoinfo, labels; NAT attributes are skipped).
func eventSeeds() [][]byte {
	var seeds [][]byte
	for i, c := range encodeCases() {
		seeds = append(seeds,
			AppendCreate(nil, &c.f, true, uint32(i)),
			AppendUpdate(nil, &c.f, uint32(i)),
			AppendDelete(nil, &c.f, uint32(i)))
	}
	exp := AppendDelete(nil, &encodeCases()[0].f, 1)
	binary.NativeEndian.PutUint16(exp[4:], nfnlSubsysCTNetlinkExp<<8)
	return append(seeds, exp)
}

func TestParseEventMatchesTiMo(t *testing.T) {
	for i, msg := range eventSeeds() {
		wantT, want, expect, ok := viaTiMo(msg)
		if !ok && !expect {
			t.Fatalf("seed %d: ti-mo refuses it", i)
		}
		var got ctwire.Flow
		gotT, err := ParseEvent(msg, &got)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if expect {
			if gotT != EventNone {
				t.Fatalf("seed %d: expectation event parsed as %d", i, gotT)
			}
			continue
		}
		if d := cmp.Diff(want, got, addrEq); d != "" || gotT != wantT {
			t.Fatalf("seed %d: type %d, want %d; -ti-mo +ParseEvent\n%s", i, gotT, wantT, d)
		}
	}
}

func TestParseEventRejects(t *testing.T) {
	good := AppendUpdate(nil, &encodeCases()[0].f, 1)
	short := good[:10]
	longer := append([]byte(nil), good...)
	binary.NativeEndian.PutUint32(longer, uint32(len(good)+4))
	badType := append([]byte(nil), good...)
	binary.NativeEndian.PutUint16(badType[4:], nfnlSubsysCTNetlink<<8|1) // IPCTNL_MSG_CT_GET
	badAttr := append([]byte(nil), good...)
	// The first attribute is the original tuple; make its length overrun.
	binary.NativeEndian.PutUint16(badAttr[nlmsgHdrLen+nfgenmsgLen:], 0xfff0)
	noTuple := AppendUpdate(nil, &encodeCases()[0].f, 1)[:nlmsgHdrLen+nfgenmsgLen]
	binary.NativeEndian.PutUint32(noTuple, uint32(len(noTuple)))
	for _, c := range []struct {
		name string
		msg  []byte
		want EventReason
	}{
		{"short", short, EventShort},
		{"length beyond the bytes", longer, EventBadLength},
		{"get is no event", badType, EventBadType},
		{"attribute overrun", badAttr, EventBadLength},
		{"no tuple", noTuple, EventNoTuple},
	} {
		var f ctwire.Flow
		_, err := ParseEvent(c.msg, &f)
		if got := EventReasonOf(err); got != c.want {
			t.Errorf("%s: reason %v (%v), want %v", c.name, got, err, c.want)
		}
	}
}

func TestParseEventAllocationFree(t *testing.T) {
	seeds := eventSeeds()
	var f ctwire.Flow
	allocs := testing.AllocsPerRun(100, func() {
		for _, m := range seeds {
			ParseEvent(m, &f)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations, want 0", allocs)
	}
}

// FuzzParseEvent holds ParseEvent to ti-mo/conntrack + FromKernel: it
// must not panic, and wherever the reference accepts a message, it must
// return the same event type and flow.
func FuzzParseEvent(f *testing.F) {
	for _, s := range eventSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var got ctwire.Flow
		gotT, err := ParseEvent(msg, &got)
		wantT, want, expect, ok := viaTiMo(msg)
		if expect && (err != nil || gotT != EventNone) {
			t.Fatalf("expectation event: type %d err %v", gotT, err)
		}
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("ParseEvent refuses what ti-mo accepts: %v", err)
		}
		if d := cmp.Diff(want, got, addrEq); d != "" || gotT != wantT {
			t.Fatalf("type %d, want %d; -ti-mo +ParseEvent\n%s", gotT, wantT, d)
		}
	})
}

func BenchmarkParseEvent(b *testing.B) {
	msg := AppendCreate(nil, &encodeCases()[0].f, true, 1)
	var f ctwire.Flow
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent(msg, &f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTiMoEvent(b *testing.B) {
	msg := AppendCreate(nil, &encodeCases()[0].f, true, 1)
	b.ReportAllocs()
	for b.Loop() {
		viaTiMo(msg)
	}
}
