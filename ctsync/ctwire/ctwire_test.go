package ctwire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/muros/muros-had/kdf"
)

var testKey = DeriveKey([]byte("change-me"))

func sampleTCP() Flow {
	return Flow{
		Op: OpUpdate, Proto: 6, Zone: 0, Status: 0x1ce, Timeout: 432000, Mark: 0x42,
		Orig:   Tuple{Src: netip.MustParseAddr("10.10.0.5"), Dst: netip.MustParseAddr("198.51.100.7"), SrcPort: 40000, DstPort: 443},
		Reply:  Tuple{Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("203.0.113.1"), SrcPort: 443, DstPort: 61000},
		HasTCP: true, TCP: TCPInfo{State: 3, WScaleOrig: 7, WScaleReply: 9, FlagsOrig: 0x23, FlagsReply: 0x23},
	}
}

func sampleUDP6() Flow {
	return Flow{
		Op: OpUpdate, Proto: 17, Zone: 7, Status: 0x8, Timeout: 30,
		Orig:      Tuple{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::53"), SrcPort: 5353, DstPort: 53},
		Reply:     Tuple{Src: netip.MustParseAddr("2001:db8::53"), Dst: netip.MustParseAddr("2001:db8::1"), SrcPort: 53, DstPort: 5353},
		HasLabels: true, Labels: [16]byte{0: 1, 15: 0x80},
	}
}

// TestRecordLayout pins the byte layout documented in the package doc.
func TestRecordLayout(t *testing.T) {
	f := sampleTCP()
	b := AppendFlow(nil, &f)
	want := []byte{
		0, 52, 1, 4, 6, 1, 0, 0, // length, op, family, proto, present, zone
		0, 0, 0x01, 0xce, // status
		0, 6, 0x97, 0x80, // timeout 432000
		0, 0, 0, 0x42, // mark
		10, 10, 0, 5, 198, 51, 100, 7, 0x9c, 0x40, 0x01, 0xbb, // orig
		198, 51, 100, 7, 203, 0, 113, 1, 0x01, 0xbb, 0xee, 0x48, // reply
		3, 7, 9, 0x23, 0x23, 0, 0, 0, // tcp
	}
	if diff := cmp.Diff(want, b); diff != "" {
		t.Fatalf("record bytes (-want +got):\n%s", diff)
	}
	h := Header{Type: TypeData, Flags: FlagBulk, Epoch: 0x0102030405060708, Seq: 9, Aux: 3, Sent: 0x1112131415161718}
	hb := AppendHeader(nil, &h)
	hb = append(hb, b...)
	SetPayload(hb, 1)
	wantH := []byte{Version, 1, 0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 0, 0, 0, 3, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0, 1, 0, 52}
	if diff := cmp.Diff(wantH, hb[:HeaderLen]); diff != "" {
		t.Fatalf("header bytes (-want +got):\n%s", diff)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		f    Flow
	}{
		{"tcp4 nat", sampleTCP()},
		{"udp6 labels zone", sampleUDP6()},
		{"icmp destroy", Flow{Op: OpDestroy, Proto: 1, Orig: Tuple{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 77, DstPort: 8 << 8}, Reply: Tuple{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1"), SrcPort: 77}}},
	}
	a := NewAuth(testKey)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Header{Type: TypeData, Epoch: 5, Seq: 77}
			d := AppendHeader(nil, &h)
			d = AppendFlow(d, &tt.f)
			d = AppendFlow(d, &tt.f)
			SetPayload(d, 2)
			d = a.Seal(d)
			body, err := a.Open(d)
			if err != nil {
				t.Fatal(err)
			}
			gh, p, err := ParseHeader(body)
			if err != nil {
				t.Fatal(err)
			}
			if gh.Count != 2 || gh.Seq != 77 || gh.Epoch != 5 {
				t.Fatalf("header %+v", gh)
			}
			it := NewRecords(p, gh.Count)
			var got []Flow
			var f Flow
			for it.Next(&f) {
				got = append(got, f)
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]Flow{tt.f, tt.f}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestRejects(t *testing.T) {
	a := NewAuth(testKey)
	good := func() []byte {
		f := sampleTCP()
		h := Header{Type: TypeData, Epoch: 1, Seq: 1}
		d := AppendFlow(AppendHeader(nil, &h), &f)
		SetPayload(d, 1)
		return d
	}
	tests := []struct {
		name   string
		mutate func(d []byte) []byte // applied before sealing
		seal   func(d []byte) []byte
		want   Reason
	}{
		{"short", func(d []byte) []byte { return d[:10] }, func(d []byte) []byte { return d }, ReasonShort},
		{"wrong key", nil, func(d []byte) []byte { return NewAuth(DeriveKey([]byte("other"))).Seal(d) }, ReasonMAC},
		{"bit flip after seal", nil, func(d []byte) []byte { d = a.Seal(d); d[40] ^= 1; return d }, ReasonMAC},
		{"version 1", func(d []byte) []byte { d[0] = 1; return d }, nil, ReasonVersion},
		{"type", func(d []byte) []byte { d[1] = 9; return d }, nil, ReasonType},
		{"flags", func(d []byte) []byte { d[2] = 0x80; return d }, nil, ReasonFlags},
		{"length", func(d []byte) []byte { d[31]++; return d }, nil, ReasonLength},
		{"record op", func(d []byte) []byte { d[HeaderLen+2] = 7; return d }, nil, ReasonOp},
		{"record family", func(d []byte) []byte { d[HeaderLen+3] = 5; return d }, nil, ReasonFamily},
		{"record length", func(d []byte) []byte { d[HeaderLen+1] = 30; return d }, nil, ReasonRecord},
		{"count too high", func(d []byte) []byte { d[29] = 2; return d }, nil, ReasonShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := good()
			if tt.mutate != nil {
				d = tt.mutate(d)
			}
			if tt.seal != nil {
				d = tt.seal(d)
			} else {
				d = a.Seal(d)
			}
			got := ReasonNone
			body, err := a.Open(d)
			if err == nil {
				var h Header
				var p []byte
				h, p, err = ParseHeader(body)
				if err == nil {
					it := NewRecords(p, h.Count)
					var f Flow
					for it.Next(&f) {
					}
					err = it.Err()
				}
			}
			got = ReasonOf(err)
			if got != tt.want {
				t.Fatalf("reason %v, want %v (err %v)", got, tt.want, err)
			}
		})
	}
}

// hkdf32 is RFC 5869 written out (one output block), to pin LegacyKey.
func hkdf32(password, salt, info string) []byte {
	ext := hmac.New(sha256.New, []byte(salt))
	ext.Write([]byte(password))
	exp := hmac.New(sha256.New, ext.Sum(nil))
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

// TestDeriveKey pins both key versions: version 2 is HKDF-Expand of the
// Argon2id master with the sync label, distinct from the VRRP AH key;
// version 1 is the documented HKDF of the password.
func TestDeriveKey(t *testing.T) {
	m, err := kdf.Derive("change-me")
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Key("muros-had ctsync hmac-sha256-128 v2")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(testKey, want) {
		t.Fatal("DeriveKey is not HKDF-Expand of the Argon2id master with the sync label")
	}
	if k, _ := KeyFrom(m); !bytes.Equal(k, want) {
		t.Fatal("KeyFrom and DeriveKey differ")
	}
	if ah, _ := m.Key("muros-had vrrp ah hmac-sha256-128 v2"); bytes.Equal(testKey, ah) {
		t.Fatal("sync key equals the VRRP AH key")
	}
	v1 := LegacyKey([]byte("change-me"))
	if !bytes.Equal(v1, hkdf32("change-me", "muros-had", "muros-had ctsync hmac-sha256-128 v1")) {
		t.Fatal("LegacyKey is not the documented HKDF")
	}
	if bytes.Equal(v1, testKey) {
		t.Fatal("the version-2 key is the unstretched one")
	}
}

// TestLegacyPeer: during a rolling upgrade, an authentic datagram of a
// version-1 node (protocol 1, key 1) is counted as "version", a forged one
// as "mac", and a version-1 key on a version-2 datagram as "mac": nothing
// keyed with version 1 is ever accepted.
func TestLegacyPeer(t *testing.T) {
	v1 := LegacyKey([]byte("change-me"))
	body := func(version byte) []byte {
		b := AppendHeader(nil, &Header{Type: TypeHeartbeat, Epoch: 7, Seq: 1})
		b[0] = version
		return b
	}
	rx := NewAuth(testKey).WithLegacy(v1)
	tests := []struct {
		name string
		d    []byte
		want Reason
	}{
		{"old node: protocol 1, key 1", NewAuth(v1).Seal(body(1)), ReasonVersion},
		{"key 1 on protocol 2", NewAuth(v1).Seal(body(2)), ReasonMAC},
		{"forged protocol 1", NewAuth(DeriveKey([]byte("other-password"))).Seal(body(1)), ReasonMAC},
		{"new node", NewAuth(testKey).Seal(body(2)), ReasonNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rx.Open(tt.d)
			if diff := cmp.Diff(tt.want, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := NewAuth(testKey).Open(NewAuth(v1).Seal(body(1))); ReasonOf(err) != ReasonMAC {
		t.Errorf("without WithLegacy: %v, want mac", err)
	}
}

func genAddr(t *rapid.T, v6 bool, label string) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, label)))
	}
	return netip.AddrFrom4([4]byte(rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(t, label)))
}

func genFlow(t *rapid.T) Flow {
	v6 := rapid.Bool().Draw(t, "v6")
	tup := func(p string) Tuple {
		return Tuple{Src: genAddr(t, v6, p+"src"), Dst: genAddr(t, v6, p+"dst"), SrcPort: rapid.Uint16().Draw(t, p+"sp"), DstPort: rapid.Uint16().Draw(t, p+"dp")}
	}
	f := Flow{
		Op: Op(rapid.IntRange(1, 2).Draw(t, "op")), Proto: rapid.Uint8().Draw(t, "proto"), Zone: rapid.Uint16().Draw(t, "zone"),
		Status: rapid.Uint32().Draw(t, "status"), Timeout: rapid.Uint32().Draw(t, "timeout"), Mark: rapid.Uint32().Draw(t, "mark"),
		Orig: tup("o"), Reply: tup("r"), HasTCP: rapid.Bool().Draw(t, "hastcp"), HasLabels: rapid.Bool().Draw(t, "haslabels"),
	}
	if v6 && f.Orig.Src.Is4In6() {
		f.Orig.Src = netip.IPv6Loopback()
	}
	if f.HasTCP {
		b := rapid.SliceOfN(rapid.Byte(), 5, 5).Draw(t, "tcp")
		f.TCP = TCPInfo{b[0], b[1], b[2], b[3], b[4]}
	}
	if f.HasLabels {
		f.Labels = [16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "labels"))
	}
	return f
}

// TestRoundTripProperty: any record survives Marshal/Parse unchanged.
func TestRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := genFlow(t)
		b := AppendFlow(nil, &f)
		if len(b) != RecordLen(&f) {
			t.Fatalf("len %d != RecordLen %d", len(b), RecordLen(&f))
		}
		var g Flow
		n, err := ParseFlow(b, &g)
		if err != nil || n != len(b) {
			t.Fatalf("parse: n=%d err=%v", n, err)
		}
		if g != f {
			t.Fatalf("round trip mismatch:\n%+v\n%+v", f, g)
		}
	})
}

func FuzzDatagram(f *testing.F) {
	a := NewAuth(testKey)
	fl := sampleTCP()
	u6 := sampleUDP6()
	h := Header{Type: TypeData, Epoch: 1, Seq: 1}
	d := AppendFlow(AppendFlow(AppendHeader(nil, &h), &fl), &u6)
	SetPayload(d, 2)
	f.Add(a.Seal(d))
	f.Add(d) // unsealed: body only
	n := Header{Type: TypeNACK, Epoch: 1, Seq: 2}
	nd := AppendRange(AppendHeader(nil, &n), Range{3, 9})
	SetPayload(nd, 1)
	f.Add(a.Seal(nd))
	hb := Header{Type: TypeHeartbeat, Epoch: 1, Seq: 3}
	f.Add(a.Seal(AppendHeader(nil, &hb)))
	for _, typ := range []Type{TypeResync, TypeEcho} {
		rh := Header{Type: typ, Epoch: 1, Seq: 4}
		rd := AppendHandshake(AppendHeader(nil, &rh), &Handshake{Nonce: [16]byte{1, 2, 3}, Floor: 7})
		SetPayload(rd, 0)
		f.Add(a.Seal(rd))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, d []byte) {
		// The MAC check runs first in production; fuzz the parsers behind
		// it directly too, since the MAC is no defence against a bug.
		for _, body := range [][]byte{d, nil} {
			if body == nil {
				var err error
				if body, err = a.Open(d); err != nil {
					continue
				}
			}
			h, p, err := ParseHeader(body)
			if err != nil {
				continue
			}
			switch h.Type {
			case TypeData:
				it := NewRecords(p, h.Count)
				var fl Flow
				for it.Next(&fl) {
					re := AppendFlow(nil, &fl)
					var g Flow
					if _, err := ParseFlow(re, &g); err != nil || g != fl {
						t.Fatalf("re-encode mismatch: %v", err)
					}
				}
			case TypeNACK:
				for i := 0; i < int(h.Count); i++ {
					_ = RangeAt(p, i)
				}
			case TypeResync, TypeEcho:
				hs, err := ParseHandshake(p)
				if err != nil {
					t.Fatalf("ParseHeader passed a %v payload ParseHandshake refuses: %v", h.Type, err)
				}
				if re := AppendHandshake(nil, &hs); !bytes.Equal(re, p) {
					t.Fatal("handshake re-encode mismatch")
				}
			}
		}
	})
}

func BenchmarkMarshalDatagram(b *testing.B) {
	a := NewAuth(testKey)
	f := sampleTCP()
	buf := make([]byte, 0, 1500)
	b.ReportAllocs()
	for b.Loop() {
		h := Header{Type: TypeData, Epoch: 1, Seq: 1}
		d := AppendHeader(buf[:0], &h)
		for i := 0; i < 26; i++ {
			d = AppendFlow(d, &f)
		}
		SetPayload(d, 26)
		buf = a.Seal(d)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkParseDatagram(b *testing.B) {
	a := NewAuth(testKey)
	f := sampleTCP()
	h := Header{Type: TypeData, Epoch: 1, Seq: 1}
	d := AppendHeader(nil, &h)
	for i := 0; i < 26; i++ {
		d = AppendFlow(d, &f)
	}
	SetPayload(d, 26)
	d = a.Seal(d)
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	for b.Loop() {
		body, err := a.Open(d)
		if err != nil {
			b.Fatal(err)
		}
		h, p, err := ParseHeader(body)
		if err != nil {
			b.Fatal(err)
		}
		it := NewRecords(p, h.Count)
		var g Flow
		for it.Next(&g) {
		}
		if it.Err() != nil {
			b.Fatal(it.Err())
		}
	}
}

func BenchmarkFlowRecord(b *testing.B) {
	f := sampleTCP()
	buf := make([]byte, 0, 64)
	var g Flow
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFlow(buf[:0], &f)
		if _, err := ParseFlow(buf, &g); err != nil {
			b.Fatal(err)
		}
	}
}

// TestID: IDs are equal exactly when keys are, IPv4 and IPv4-mapped IPv6
// included, and Flow.ID agrees with Key.ID.
func TestID(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1")
	mapped := netip.MustParseAddr("::ffff:192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8::1")
	keys := []Key{
		{Orig: Tuple{Src: v4, Dst: v4, SrcPort: 1, DstPort: 2}, Proto: 6},
		{Orig: Tuple{Src: mapped, Dst: mapped, SrcPort: 1, DstPort: 2}, Proto: 6},
		{Orig: Tuple{Src: v6, Dst: v4, SrcPort: 1, DstPort: 2}, Proto: 6},
		{Orig: Tuple{Src: v4, Dst: v4, SrcPort: 2, DstPort: 1}, Proto: 6},
		{Orig: Tuple{Src: v4, Dst: v4, SrcPort: 1, DstPort: 2}, Proto: 17},
		{Orig: Tuple{Src: v4, Dst: v4, SrcPort: 1, DstPort: 2}, Proto: 6, Zone: 1},
	}
	for i, a := range keys {
		f := Flow{Proto: a.Proto, Zone: a.Zone, Orig: a.Orig}
		if f.ID() != a.ID() {
			t.Errorf("key %d: Flow.ID %+v != Key.ID %+v", i, f.ID(), a.ID())
		}
		for j, b := range keys {
			if (a == b) != (a.ID() == b.ID()) {
				t.Errorf("keys %d and %d: equal %v, IDs equal %v", i, j, a == b, a.ID() == b.ID())
			}
		}
	}
}

// TestHandshakeLayout pins the RESYNC / ECHO payload of the package doc.
func TestHandshakeLayout(t *testing.T) {
	h := Header{Type: TypeEcho, Epoch: 2, Seq: 5}
	hs := Handshake{Floor: 0x0102030405060708}
	for i := range hs.Nonce {
		hs.Nonce[i] = byte(0xa0 + i)
	}
	d := AppendHandshake(AppendHeader(nil, &h), &hs)
	SetPayload(d, 0)
	want := []byte{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 1, 2, 3, 4, 5, 6, 7, 8}
	if diff := cmp.Diff(want, d[HeaderLen:]); diff != "" {
		t.Fatalf("payload (-want +got):\n%s", diff)
	}
	gh, p, err := ParseHeader(d)
	if err != nil || gh.Count != 0 || gh.Length != HandshakeLen {
		t.Fatalf("header %+v err %v", gh, err)
	}
	got, err := ParseHandshake(p)
	if err != nil || got != hs {
		t.Fatalf("ParseHandshake = %+v, %v", got, err)
	}
	for _, typ := range []Type{TypeResync, TypeEcho} {
		short := Header{Type: typ, Epoch: 2, Seq: 6}
		if _, _, err := ParseHeader(AppendHeader(nil, &short)); ReasonOf(err) != ReasonLength {
			t.Errorf("%v without its payload: %v, want length", typ, err)
		}
	}
}
