package ctrel

import (
	"net/netip"
	"reflect"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/ctsync/ctwire"
	"pgregory.net/rapid"
)

// TestRecordRoundTripProperty: a conntrack flow comes out of the table's
// form as it went in. Addresses are drawn as ctnl makes them: an IPv4
// entry's, or an IPv6 entry's 16 bytes unmapped one by one, so an IPv6
// tuple may hold an IPv4 address where the kernel had ::ffff:a.b.c.d
// (2001:db8::1 -> ::ffff:10.0.0.1 kept its reply source, 10.0.0.1, but
// lost its reply destination's family when the table kept one family per
// tuple).
func TestRecordRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		addr := func(v6 bool, label string) netip.Addr {
			if !v6 {
				return netip.AddrFrom4([4]byte(rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(rt, label)))
			}
			b := [16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(rt, label))
			if rapid.Bool().Draw(rt, label+" mapped") {
				copy(b[:12], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
			}
			return netip.AddrFrom16(b).Unmap()
		}
		tuple := func(label string) ctwire.Tuple {
			v6 := rapid.Bool().Draw(rt, label+" v6")
			return ctwire.Tuple{Src: addr(v6, label+" src"), Dst: addr(v6, label+" dst"), SrcPort: rapid.Uint16().Draw(rt, label+" sport"), DstPort: rapid.Uint16().Draw(rt, label+" dport")}
		}
		f := ctwire.Flow{
			Op: ctwire.Op(rapid.Uint8().Draw(rt, "op")), Proto: rapid.Uint8().Draw(rt, "proto"), Zone: rapid.Uint16().Draw(rt, "zone"),
			Status: rapid.Uint32().Draw(rt, "status"), Timeout: rapid.Uint32().Draw(rt, "timeout"), Mark: rapid.Uint32().Draw(rt, "mark"),
			Orig: tuple("orig"), Reply: tuple("reply"),
			HasTCP: rapid.Bool().Draw(rt, "has tcp"), TCP: ctwire.TCPInfo{State: rapid.Uint8().Draw(rt, "tcp state"), FlagsOrig: rapid.Uint8().Draw(rt, "tcp flags")},
			HasLabels: rapid.Bool().Draw(rt, "has labels"), Labels: [16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(rt, "labels")),
		}
		r := recordOf(&f)
		if diff := cmp.Diff(f, r.flow(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			rt.Fatalf("flow changed through the table's form (-in +out):\n%s", diff)
		}
		if r.id != f.ID() || r.id.Key() != f.Key() {
			rt.Fatalf("ID %+v, key %+v; want %+v, %+v", r.id, r.id.Key(), f.ID(), f.Key())
		}
	})
}

// TestTableTypesHoldNoPointers: what the sender keeps per flow (the map's
// key and value, an entry, a history key) holds no pointer, so the
// garbage collector never walks it. A field added with one (a netip.Addr,
// a string, a slice) fails here.
func TestTableTypesHoldNoPointers(t *testing.T) {
	var s Sender
	for _, typ := range []reflect.Type{
		reflect.TypeOf(s.table).Key(), reflect.TypeOf(s.table).Elem(),
		reflect.TypeOf(entry{}), reflect.TypeOf(s.queue).Elem(), reflect.TypeOf(s.spare).Elem(),
		reflect.TypeOf(histSlot{}.ids).Elem(),
	} {
		if path, ok := pointerIn(typ, typ.String()); ok {
			t.Errorf("%s holds a pointer at %s", typ, path)
		}
	}
}

// pointerIn returns the path to a pointer-holding part of typ, if any.
func pointerIn(typ reflect.Type, path string) (string, bool) {
	switch typ.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.String, reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return path, true
	case reflect.Array:
		return pointerIn(typ.Elem(), path+"[]")
	case reflect.Struct:
		for i := range typ.NumField() {
			if p, ok := pointerIn(typ.Field(i).Type, path+"."+typ.Field(i).Name); ok {
				return p, true
			}
		}
	}
	return "", false
}

// TestLargeTableIsNotScanned: a sender holding 100,000 flows adds next to
// nothing to the heap the garbage collector scans (runtime/metrics
// /gc/scan/heap:bytes, measured after a collection); with Flows in the
// entries and entry pointers in the map it added 26 MB (25,936,648
// bytes, measured on the code before), walked at every cycle.
func TestLargeTableIsNotScanned(t *testing.T) {
	const flows = 100_000
	scanned := func() uint64 {
		runtime.GC()
		m := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
		metrics.Read(m)
		if m[0].Value.Kind() != metrics.KindUint64 {
			t.Fatalf("/gc/scan/heap:bytes unsupported")
		}
		return m[0].Value.Uint64()
	}
	before := scanned()
	s := NewSender(SenderConfig{Epoch: 1})
	batch := make([]ctwire.Flow, 0, 1000)
	for i := range flows {
		f := flowN(0, 3)
		f.Orig.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		f.Reply = f.Orig.Invert()
		batch = append(batch, f)
		if len(batch) == cap(batch) {
			s.Load(time.Second, 0, batch)
			batch = batch[:0]
		}
	}
	after := scanned()
	runtime.KeepAlive(s)
	if got := s.Stats().Flows; got != flows {
		t.Fatalf("%d flows in the table, want %d", got, flows)
	}
	grown := int64(after) - int64(before)
	t.Logf("scannable heap %d -> %d bytes (%+d) with %d flows", before, after, grown, flows)
	if grown > 1<<20 {
		t.Errorf("the table added %d bytes of scannable heap for %d flows, want under 1 MiB", grown, flows)
	}
}
