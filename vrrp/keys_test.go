package vrrp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/kdf"
)

// TestMixedKeyVersions: a node upgraded to version-2 keys and one that
// only knows version 1 (no Master) understand each other exactly when the
// new node falls back (AHCounter.LegacyKey), the reserved field names the
// key, and no one can move a packet to another key version without the
// key: the field is inside the ICV.
func TestMixedKeyVersions(t *testing.T) {
	const password = "pA7-kx2Q-9mZr-Lw4e-Tb6v"
	master, err := kdf.Derive(password)
	if err != nil {
		t.Fatal(err)
	}
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
	now := time.Unix(1.8e9, 0)
	old := mustCodec(t, Config{Version: 3, Auth: AuthAH, Password: password})
	upgraded := mustCodec(t, Config{Version: 3, Auth: AuthAH, Password: password, Master: master})
	type verdict struct {
		OK           bool
		Key          KeyVersion
		PeerSpeaksV2 bool
	}
	tests := []struct {
		name      string
		sender    *Codec
		legacy    bool
		edit      func(pkt []byte) // applied to the IPv4 packet after signing
		atOld     verdict
		atNew     verdict
		wantField uint16
	}{
		{name: "new to new: version 2", sender: upgraded,
			atOld: verdict{false, KeyV2, true}, atNew: verdict{true, KeyV2, true}, wantField: 2},
		{name: "new falling back: version 1, says it speaks 2", sender: upgraded, legacy: true,
			atOld: verdict{true, KeyV1, true}, atNew: verdict{true, KeyV1, true}, wantField: 1},
		{name: "old: version 1 only", sender: old,
			atOld: verdict{true, KeyV1, false}, atNew: verdict{true, KeyV1, false}, wantField: 0},
		{name: "old ignores LegacyKey", sender: old, legacy: true,
			atOld: verdict{true, KeyV1, false}, atNew: verdict{true, KeyV1, false}, wantField: 0},
		{name: "forged downgrade of a version-2 packet", sender: upgraded, edit: setReserved(1),
			atOld: verdict{false, KeyV1, true}, atNew: verdict{false, KeyV1, true}, wantField: 1},
		{name: "forged 'speaks only v1' on a fallback packet", sender: upgraded, legacy: true, edit: setReserved(0),
			atOld: verdict{false, KeyV1, false}, atNew: verdict{false, KeyV1, false}, wantField: 0},
		{name: "unknown key version", sender: upgraded, edit: setReserved(3),
			atOld: verdict{false, 0, false}, atNew: verdict{false, 0, false}, wantField: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctr := NewAHCounter(0, now).Next(now)
			ctr.LegacyKey = tt.legacy
			a := Advert{VRID: 10, Priority: 150, Interval: time.Second}
			pkt, err := tt.sender.AppendPacket(nil, src, dst, &a, ctr)
			if err != nil {
				t.Fatal(err)
			}
			if tt.edit != nil {
				tt.edit(pkt)
			}
			h, _, err := ParseAH(pkt[IPv4HeaderLen:])
			if err != nil {
				t.Fatal(err)
			}
			if h.Reserved != tt.wantField {
				t.Errorf("reserved field %d, want %d", h.Reserved, tt.wantField)
			}
			for _, rx := range []struct {
				name  string
				codec *Codec
				want  verdict
			}{{"old receiver", old, tt.atOld}, {"new receiver", upgraded, tt.atNew}} {
				r, err := rx.codec.Decode(pkt, nil)
				got := verdict{err == nil, r.KeyVersion, r.PeerSpeaksV2}
				if diff := cmp.Diff(rx.want, got); diff != "" {
					t.Errorf("%s (err %v) (-want +got):\n%s", rx.name, err, diff)
				}
				if err != nil && ReasonOf(err) != ReasonAuthFailed {
					t.Errorf("%s: reason %q, want %q", rx.name, ReasonOf(err), ReasonAuthFailed)
				}
			}
		})
	}
}

// setReserved rewrites the AH reserved field of an IPv4 packet (IHL 5).
func setReserved(v uint16) func([]byte) {
	return func(pkt []byte) {
		pkt[IPv4HeaderLen+2], pkt[IPv4HeaderLen+3] = byte(v>>8), byte(v)
	}
}

// TestPeerKeys: the sender falls back to version 1 exactly while the peer's
// latest accepted advert says it speaks only version 1, and returns to
// version 2 as soon as an accepted advert says it speaks 2 (a pair where
// both nodes fell back while upgrading one at a time leaves the fallback).
func TestPeerKeys(t *testing.T) {
	ah := func(ok, v2 bool) *Received {
		return &Received{Auth: AuthAH, AuthChecked: true, AuthOK: ok, KeyVersion: KeyV1, PeerSpeaksV2: v2}
	}
	steps := []struct {
		name   string
		heard  *Received
		legacy bool
	}{
		{"nothing heard: version 2", nil, false},
		{"an old peer", ah(true, false), true},
		{"an unauthenticated claim to speak 2 changes nothing", ah(false, true), true},
		{"another scheme changes nothing", &Received{Auth: AuthKeepalivedAH, AuthOK: true}, true},
		{"the peer upgraded, falling back itself", ah(true, true), false},
		{"the peer downgraded again", ah(true, false), true},
	}
	var p PeerKeys
	for _, s := range steps {
		if s.heard != nil {
			p = p.Heard(s.heard)
		}
		ctr := p.Stamp(AHCounter{Epoch: 300, Seq: 4})
		if ctr.LegacyKey != s.legacy {
			t.Errorf("%s: LegacyKey %v, want %v", s.name, ctr.LegacyKey, s.legacy)
		}
		if next := ctr.Next(time.Unix(0, 0)); next.LegacyKey != ctr.LegacyKey {
			t.Errorf("%s: Next lost LegacyKey", s.name)
		}
	}
}

// FuzzAHKeyVersions: whatever arrives, a codec with both key versions
// names the version it checked, a packet it accepts no longer verifies
// once its key-version field is changed, and its advert re-signed either
// way verifies with the version the sender chose.
func FuzzAHKeyVersions(f *testing.F) {
	master, err := kdf.Derive(fuzzPassword)
	if err != nil {
		f.Fatal(err)
	}
	cfg := Config{Version: 3, Auth: AuthAH, Password: fuzzPassword, Master: master, Checksum: ChecksumModeEither}
	seed, err := NewCodec(cfg)
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range seedPackets(f) {
		f.Add(p)
	}
	for _, legacy := range []bool{false, true} {
		a := Advert{VRID: 7, Priority: 100, Interval: time.Second, Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.7")}}
		p, err := seed.AppendPacket(nil, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18"), &a, AHCounter{Epoch: 300, Seq: 1, LegacyKey: legacy})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c := mustCodec(t, cfg)
		r, err := c.Inspect(pkt, nil)
		if err != nil || r.Auth != AuthAH {
			return
		}
		if r.AuthOK && r.KeyVersion != KeyV1 && r.KeyVersion != KeyV2 {
			t.Fatalf("accepted with key version %v", r.KeyVersion)
		}
		if r.AuthOK && pkt[0]>>4 == 4 {
			at := int(pkt[0]&0x0f) * 4
			for _, v := range []uint16{0, 1, 2, 3} {
				p := append([]byte(nil), pkt...)
				if uint16(p[at+2])<<8|uint16(p[at+3]) == v {
					continue
				}
				p[at+2], p[at+3] = byte(v>>8), byte(v)
				if r2, err := c.Inspect(p, nil); err == nil && r2.AuthOK && r2.KeyVersion != r.KeyVersion {
					t.Fatalf("moved from key %v to %v by rewriting the field", r.KeyVersion, r2.KeyVersion)
				}
			}
		}
		for _, legacy := range []bool{false, true} {
			out, err := c.AppendPacket(nil, r.Src, r.Dst, &r.Advert, AHCounter{Epoch: max(r.SPI, 256), Seq: r.Seq, LegacyKey: legacy})
			if err != nil {
				return // e.g. a source of the other family than the destination
			}
			got, err := c.Inspect(out, nil)
			want := KeyV2
			if legacy {
				want = KeyV1
			}
			if err != nil || !got.AuthOK || got.KeyVersion != want || !got.PeerSpeaksV2 {
				t.Fatalf("re-signed (legacy %v): %+v, %v", legacy, got, err)
			}
		}
	})
}
