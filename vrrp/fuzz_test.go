package vrrp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket/pcapgo"
)

// fuzzPassword is the password of the synthetic AH seeds and of the
// captures in testdata/pcaps (the capture script uses it too; packets with
// another password simply exercise the failure path).
const fuzzPassword = "secretpw1234"

// captureIPPackets returns the IP packets (link layer stripped) of every
// capture in the repository's testdata/pcaps. Zero files is fine.
func captureIPPackets(t testing.TB) [][]byte {
	t.Helper()
	var files []string
	for _, pat := range []string{"*.pcap", "*.pcapng"} {
		m, err := filepath.Glob(filepath.Join("..", "testdata", "pcaps", pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	var out [][]byte
	for _, f := range files {
		pkts, err := readCapture(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, pkts...)
	}
	return out
}

func readCapture(path string) ([][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var (
		next     func() ([]byte, error)
		linkType int
	)
	if len(raw) >= 4 && binary.BigEndian.Uint32(raw) == 0x0a0d0d0a {
		r, err := pcapgo.NewNgReader(bytes.NewReader(raw), pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, err
		}
		linkType = int(r.LinkType())
		next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
	} else {
		r, err := pcapgo.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		linkType = int(r.LinkType())
		next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
	}
	var out [][]byte
	for {
		d, err := next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if ip := stripLinkLayer(linkType, d); ip != nil {
			out = append(out, append([]byte(nil), ip...))
		}
	}
}

// stripLinkLayer returns the IP packet inside a frame of the given pcap
// link type, or nil when it is not IPv4 / IPv6.
func stripLinkLayer(linkType int, d []byte) []byte {
	var ethType uint16
	switch linkType {
	case 1: // Ethernet, optionally 802.1Q tagged
		if len(d) < 14 {
			return nil
		}
		ethType, d = binary.BigEndian.Uint16(d[12:14]), d[14:]
		for (ethType == 0x8100 || ethType == 0x88a8) && len(d) >= 4 {
			ethType, d = binary.BigEndian.Uint16(d[2:4]), d[4:]
		}
	case 113: // Linux cooked v1
		if len(d) < 16 {
			return nil
		}
		ethType, d = binary.BigEndian.Uint16(d[14:16]), d[16:]
	case 276: // Linux cooked v2
		if len(d) < 20 {
			return nil
		}
		ethType, d = binary.BigEndian.Uint16(d[0:2]), d[20:]
	case 0, 108: // BSD loopback: 4-byte family in host / network order
		if len(d) < 4 {
			return nil
		}
		d = d[4:]
	case 101, 12, 14, 228, 229: // raw IP
	default:
		return nil
	}
	if len(d) == 0 || (ethType != 0 && ethType != 0x0800 && ethType != 0x86dd) {
		return nil
	}
	if v := d[0] >> 4; v != 4 && v != 6 {
		return nil
	}
	return d
}

// syntheticPackets builds one packet per mode / family / checksum form,
// plus the keepalived captures embedded in codec_test.go.
func syntheticPackets(t testing.TB) [][]byte {
	t.Helper()
	now := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)
	src4, dst4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
	src6, dst6 := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")
	var out [][]byte
	for _, cfg := range []Config{
		{Version: 2}, {Version: 2, Auth: AuthPass, Password: fuzzPassword}, {Version: 2, Auth: AuthKeepalivedAH, Password: fuzzPassword},
		{Version: 3}, {Version: 3, Checksum: ChecksumModeMessageOnly}, {Version: 3, Auth: AuthAH, Password: fuzzPassword},
	} {
		c := mustCodec(t, cfg)
		for _, fam := range []struct{ src, dst, vip netip.Addr }{
			{src4, dst4, netip.MustParseAddr("203.0.113.1")}, {src6, dst6, netip.MustParseAddr("2001:db8::1")},
		} {
			if cfg.Version == 2 && fam.src.Is6() {
				continue
			}
			a := Advert{VRID: 10, Priority: 150, Interval: time.Second, Addrs: []netip.Addr{fam.vip, fam.vip}}
			p, err := c.AppendPacket(nil, fam.src, fam.dst, &a, NewAHCounter(0, now).Next(now))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
	}
	for _, h := range []string{kaAHSeq1, kaAHSeq3Prio0, kaPass, kaV3, ahSHA256IPv4, ahSHA256IPv6} {
		out = append(out, mustHex(t, h))
	}
	return out
}

func seedPackets(t testing.TB) [][]byte {
	return append(syntheticPackets(t), captureIPPackets(t)...)
}

// vrrpMessage returns the VRRP message and family inside an IP packet (AH
// skipped), for seeding the advert decoder.
func vrrpMessage(pkt []byte) ([]byte, Family, bool) {
	var f Family
	var proto uint8
	var payload []byte
	switch {
	case len(pkt) > 0 && pkt[0]>>4 == 4:
		h, p, err := ParseIPv4(pkt)
		if err != nil {
			return nil, 0, false
		}
		f, proto, payload = IPv4, h.Protocol, p
	case len(pkt) > 0 && pkt[0]>>4 == 6:
		h, p, err := ParseIPv6(pkt)
		if err != nil {
			return nil, 0, false
		}
		f, proto, payload = IPv6, h.NextHeader, p
	default:
		return nil, 0, false
	}
	if proto != ProtocolVRRP && proto != ProtocolAH {
		return nil, 0, false
	}
	if proto == ProtocolAH {
		_, rest, err := ParseAH(payload)
		if err != nil {
			return nil, 0, false
		}
		payload = rest
	}
	return payload, f, true
}

// advertEqual compares adverts treating nil and empty address lists alike.
var advertOpts = []cmp.Option{addrCmp, cmp.Comparer(func(x, y []netip.Addr) bool {
	return len(x) == len(y) && (len(x) == 0 || cmp.Equal(x, y, addrCmp))
})}

func FuzzParseAdvert(f *testing.F) {
	for _, p := range seedPackets(f) {
		if msg, fam, ok := vrrpMessage(p); ok {
			f.Add(msg, fam == IPv6)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		fam := IPv4
		if v6 {
			fam = IPv6
		}
		a, err := ParseAdvert(b, fam, nil)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without reason: %v", err)
			}
			return
		}
		src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
		if v6 {
			src, dst = netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")
		}
		out, err := AppendAdvert(nil, &a, src, dst, ChecksumPseudoHeader)
		if err != nil {
			t.Fatalf("decoded advert does not encode: %v (%+v)", err, a)
		}
		if len(out) != len(b) {
			t.Fatalf("re-encoded length %d, input %d", len(out), len(b))
		}
		// Identical except the checksum and v3's reserved bits.
		want := append([]byte(nil), b...)
		copy(want[6:8], out[6:8])
		if a.Version == 3 {
			want[4] &= 0x0f
		}
		if !bytes.Equal(want, out) {
			t.Fatalf("re-encoded\n%x\nwant\n%x", out, want)
		}
		if VerifyChecksum(out, src, dst, ChecksumModePseudoHeader) == ChecksumNone {
			t.Fatal("re-encoded checksum does not verify")
		}
		again, err := ParseAdvert(out, fam, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Checksum = again.Checksum
		if diff := cmp.Diff(a, again, advertOpts...); diff != "" {
			t.Fatalf("decode->encode->decode (-first +second):\n%s", diff)
		}
	})
}

func FuzzAHVerify(f *testing.F) {
	for _, p := range seedPackets(f) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c := mustCodec(t, Config{Version: 3, Password: fuzzPassword, Checksum: ChecksumModeEither})
		r, err := c.Inspect(pkt, nil)
		if err != nil || (r.Auth != AuthAH && r.Auth != AuthKeepalivedAH) {
			return
		}
		if !r.AuthChecked {
			t.Fatal("AH packet not checked although a password is set")
		}
		if r.AuthOK {
			// Any change to the ICV must fail.
			p := append([]byte(nil), pkt...)
			icv := ahICVOffset(p)
			p[icv] ^= 0x80
			if r2, err := c.Inspect(p, nil); err == nil && r2.AuthOK {
				t.Fatal("ICV bit flip still verifies")
			}
		}
		// Round trip: re-sign the advert with the packet's SPI / seq.
		cfg := Config{Version: 3, Auth: AuthAH, Password: fuzzPassword, Checksum: ChecksumModeEither}
		ctr := AHCounter{Epoch: max(r.SPI, 256), Seq: r.Seq}
		if r.Auth == AuthKeepalivedAH {
			cfg.Version, cfg.Auth, ctr = 2, AuthKeepalivedAH, AHCounter{Seq: r.Seq}
		}
		if int(r.Advert.Version) != int(cfg.Version) || (cfg.Version == 2 && !r.Src.Is4()) {
			return
		}
		signer := mustCodec(t, cfg)
		out, err := signer.AppendPacket(nil, r.Src, r.Dst, &r.Advert, ctr)
		if err != nil {
			t.Fatalf("AppendPacket: %v", err)
		}
		got, err := signer.Inspect(out, nil)
		if err != nil || !got.AuthOK || !got.ChecksumOK() || got.Seq != ctr.Seq {
			t.Fatalf("re-signed packet: %+v, %v", got, err)
		}
	})
}

// ahICVOffset returns the offset of the first ICV byte of a parsed AH packet.
func ahICVOffset(p []byte) int {
	if p[0]>>4 == 4 {
		return int(p[0]&0x0f)*4 + ahFixedLen
	}
	return IPv6HeaderLen + ahFixedLen
}

func FuzzDecodePacket(f *testing.F) {
	for _, p := range seedPackets(f) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		inspector := mustCodec(t, Config{Version: 3, Password: fuzzPassword, Checksum: ChecksumModeEither})
		r, err := inspector.Inspect(pkt, nil)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without reason: %v", err)
			}
			return
		}
		// Every strict decoder agrees with the inspector: it either
		// accepts, or rejects with a reason.
		for _, cfg := range []Config{
			{Version: 2}, {Version: 2, Auth: AuthPass, Password: fuzzPassword}, {Version: 2, Auth: AuthKeepalivedAH, Password: fuzzPassword},
			{Version: 3}, {Version: 3, Auth: AuthAH, Password: fuzzPassword},
		} {
			d, err := mustCodec(t, cfg).Decode(pkt, nil)
			if err != nil {
				if ReasonOf(err) == "" {
					t.Fatalf("error without reason: %v", err)
				}
				continue
			}
			if d.Auth != cfg.Auth || (cfg.Auth != AuthNone && !d.AuthOK) || !d.ChecksumOK() || d.TTL != TTL {
				t.Fatalf("Decode(%+v) accepted %+v", cfg, d)
			}
		}
		// Round trip through a plain codec of the same version.
		if r.Advert.Version == 2 && r.Src.Is6() {
			t.Fatal("v2 over IPv6 decoded")
		}
		plain := mustCodec(t, Config{Version: r.Advert.Version})
		out, err := plain.AppendPacket(nil, r.Src, r.Dst, &r.Advert, AHCounter{})
		if err != nil {
			t.Fatalf("AppendPacket(%+v): %v", r.Advert, err)
		}
		got, err := plain.Decode(out, nil)
		if err != nil {
			t.Fatalf("Decode of re-encoded packet: %v", err)
		}
		want := r.Advert
		want.AuthType, want.AuthData, want.Checksum = AuthTypeNone, [8]byte{}, got.Advert.Checksum
		if diff := cmp.Diff(want, got.Advert, advertOpts...); diff != "" {
			t.Fatalf("decode->encode->decode (-first +second):\n%s", diff)
		}
	})
}

// TestCaptureSeedsDecode makes sure every VRRP packet of the repository's
// captures decodes structurally (malformed captures would silently weaken
// the fuzz seeds and the replay tests).
func TestCaptureSeedsDecode(t *testing.T) {
	c := mustCodec(t, Config{Version: 3, Password: fuzzPassword, Checksum: ChecksumModeEither})
	for i, p := range captureIPPackets(t) {
		if _, _, ok := vrrpMessage(p); !ok {
			continue
		}
		if r, err := c.Inspect(p, nil); err != nil {
			t.Errorf("capture packet %d: %v", i, err)
		} else if !r.ChecksumOK() {
			t.Errorf("capture packet %d: bad checksum: %+v", i, r)
		}
	}
}
