package vrrp

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestParseIPv4(t *testing.T) {
	pkt := mustHex(t, kaV3)
	h, payload, err := ParseIPv4(append(pkt, make([]byte, 14)...)) // Ethernet padding
	if err != nil {
		t.Fatal(err)
	}
	want := IPv4Header{TOS: 0xc0, TotalLen: 32, ID: 1, TTL: 255, Protocol: ProtocolVRRP, Checksum: 0xd036,
		Src: netip.MustParseAddr("10.99.0.1"), Dst: netip.MustParseAddr("224.0.0.18"), HeaderLen: 20}
	if diff := cmp.Diff(want, h, addrCmp); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(pkt[20:], payload); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}
	out := AppendIPv4(nil, &h, len(payload))
	if diff := cmp.Diff(pkt[:20], out); diff != "" {
		t.Errorf("AppendIPv4 (-keepalived +ours):\n%s", diff)
	}
}

func TestParseIPv4Options(t *testing.T) {
	// IHL 6: a 4-byte option (router alert 94 04 00 00) before the payload.
	h := IPv4Header{TTL: 255, Protocol: ProtocolVRRP, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("224.0.0.18")}
	p := AppendIPv4(nil, &h, 8)
	p = append(p[:20], 0x94, 0x04, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8)
	p[0] = 0x46
	p[3] = 32
	fixIPv4Checksum(p)
	got, payload, err := ParseIPv4(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.HeaderLen != 24 || string(payload) != "\x01\x02\x03\x04\x05\x06\x07\x08" {
		t.Errorf("HeaderLen %d payload %x", got.HeaderLen, payload)
	}
}

func TestParseIPv4Rejects(t *testing.T) {
	good := mustHex(t, kaV3)
	mod := func(f func(p []byte), fix bool) []byte {
		p := append([]byte(nil), good...)
		f(p)
		if fix {
			fixIPv4Checksum(p)
		}
		return p
	}
	tests := []struct {
		name string
		pkt  []byte
		want Reason
	}{
		{"empty", nil, ReasonIPShort},
		{"19 bytes", good[:19], ReasonIPShort},
		{"version 6", mod(func(p []byte) { p[0] = 0x65 }, false), ReasonIPBadVersion},
		{"ihl 4", mod(func(p []byte) { p[0] = 0x44 }, false), ReasonIPBadHeaderLen},
		{"ihl 15 beyond packet", mod(func(p []byte) { p[0] = 0x4f }, false), ReasonIPBadHeaderLen},
		{"total length short of header", mod(func(p []byte) { p[3] = 19 }, true), ReasonIPBadTotalLen},
		{"total length beyond packet", mod(func(p []byte) { p[3] = 33 }, true), ReasonIPBadTotalLen},
		{"more fragments", mod(func(p []byte) { p[6] = 0x20 }, true), ReasonIPFragment},
		{"fragment offset", mod(func(p []byte) { p[7] = 1 }, true), ReasonIPFragment},
		{"checksum", mod(func(p []byte) { p[11]++ }, false), ReasonIPBadChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseIPv4(tt.pkt)
			if diff := cmp.Diff(tt.want, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s\nerr: %v", diff, err)
			}
		})
	}
	// DF is allowed: only MF and the offset make a fragment.
	if _, _, err := ParseIPv4(mod(func(p []byte) { p[6] = 0x40 }, true)); err != nil {
		t.Errorf("DF rejected: %v", err)
	}
}

func TestParseIPv6Rejects(t *testing.T) {
	h := IPv6Header{NextHeader: ProtocolVRRP, HopLimit: 255, Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("ff02::12")}
	good := append(AppendIPv6(nil, &h, 4), 1, 2, 3, 4)
	tests := []struct {
		name string
		pkt  []byte
		want Reason
	}{
		{"39 bytes", good[:39], ReasonIPShort},
		{"version 4", append([]byte{0x45}, good[1:]...), ReasonIPBadVersion},
		{"payload length beyond packet", good[:43], ReasonIPBadTotalLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseIPv6(tt.pkt)
			if diff := cmp.Diff(tt.want, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIPHeaderRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		payload := rapid.SliceOfN(rapid.Byte(), 0, 100).Draw(t, "payload")
		if rapid.Bool().Draw(t, "v6") {
			src, dst := genSrcDst(t, IPv6)
			h := IPv6Header{
				TrafficClass: rapid.Uint8().Draw(t, "tc"), FlowLabel: rapid.Uint32Range(0, 0xfffff).Draw(t, "flow"),
				PayloadLen: uint16(len(payload)), NextHeader: rapid.Uint8().Draw(t, "nh"), HopLimit: rapid.Uint8().Draw(t, "hl"),
				Src: src, Dst: dst,
			}
			p := append(AppendIPv6(nil, &h, len(payload)), payload...)
			got, pl, err := ParseIPv6(p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(h, got, addrCmp); diff != "" {
				t.Fatalf("(-sent +parsed):\n%s", diff)
			}
			if string(pl) != string(payload) {
				t.Fatal("payload differs")
			}
			return
		}
		src, dst := genSrcDst(t, IPv4)
		h := IPv4Header{
			TOS: rapid.Uint8().Draw(t, "tos"), ID: rapid.Uint16().Draw(t, "id"),
			FlagsFrag: rapid.SampledFrom([]uint16{0, 0x4000}).Draw(t, "df"), TTL: rapid.Uint8().Draw(t, "ttl"),
			Protocol: rapid.Uint8().Draw(t, "proto"), Src: src, Dst: dst,
		}
		p := append(AppendIPv4(nil, &h, len(payload)), payload...)
		got, pl, err := ParseIPv4(p)
		if err != nil {
			t.Fatal(err)
		}
		h.TotalLen, h.HeaderLen, h.Checksum = uint16(len(p)), 20, got.Checksum
		if diff := cmp.Diff(h, got, addrCmp); diff != "" {
			t.Fatalf("(-sent +parsed):\n%s", diff)
		}
		if string(pl) != string(payload) {
			t.Fatal("payload differs")
		}
	})
}
