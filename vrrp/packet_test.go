package vrrp

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// Known answers computed by hand from the RFC layouts; checksums
// cross-checked with an independent Python one's-complement sum.
var advertVectors = []struct {
	name     string
	hex      string
	f        Family
	src, dst string
	form     ChecksumForm
	want     Advert
}{
	{
		// 21 = v2|advert, vrid 1, prio 100, 1 addr, auth 0, 1 s, cksum,
		// 192.168.1.1, 8 zero auth bytes. Sum 0x2101+0x6401+0x0001+0xc0a8+
		// 0x0101 = 0x146ac -> 0x46ad -> ~ = 0xb952.
		name: "v2", hex: "21016401000" + "1b952c0a801010000000000000000", f: IPv4,
		src: "192.168.1.2", dst: "224.0.0.18", form: ChecksumMessageOnly,
		want: Advert{Version: 2, VRID: 1, Priority: 100, Interval: time.Second, Addrs: addrs("192.168.1.1"), Checksum: 0xb952},
	},
	{
		// v3, vrid 10, prio 200, 100 cs, pseudo-header 192.0.2.1 > 224.0.0.18.
		name: "v3 ipv4 pseudo-header", hex: "310ac801006427fdcb007101", f: IPv4,
		src: "192.0.2.1", dst: "224.0.0.18", form: ChecksumPseudoHeader,
		want: Advert{Version: 3, VRID: 10, Priority: 200, Interval: time.Second, Addrs: addrs("203.0.113.1"), Checksum: 0x27fd},
	},
	{
		name: "v3 ipv4 message-only", hex: "310ac8010064ca8dcb007101", f: IPv4,
		src: "192.0.2.1", dst: "224.0.0.18", form: ChecksumMessageOnly,
		want: Advert{Version: 3, VRID: 10, Priority: 200, Interval: time.Second, Addrs: addrs("203.0.113.1"), Checksum: 0xca8d},
	},
	{
		name: "v3 ipv6", hex: "3107640200643f28fe80000000000000000000000000010020010db8000000000000000000000001", f: IPv6,
		src: "fe80::1", dst: "ff02::12", form: ChecksumPseudoHeader,
		want: Advert{Version: 3, VRID: 7, Priority: 100, Interval: time.Second, Addrs: addrs("fe80::100", "2001:db8::1"), Checksum: 0x3f28},
	},
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func TestAdvertVectors(t *testing.T) {
	for _, v := range advertVectors {
		t.Run(v.name, func(t *testing.T) {
			b := mustHex(t, v.hex)
			got, err := ParseAdvert(b, v.f, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(v.want, got, addrCmp); diff != "" {
				t.Errorf("ParseAdvert (-want +got):\n%s", diff)
			}
			src, dst := netip.MustParseAddr(v.src), netip.MustParseAddr(v.dst)
			mode := ChecksumModePseudoHeader
			if v.form == ChecksumMessageOnly {
				mode = ChecksumModeMessageOnly
			}
			if f := VerifyChecksum(b, src, dst, mode); f != v.form {
				t.Errorf("VerifyChecksum = %s, want %s", f, v.form)
			}
			if f := VerifyChecksum(b, src, dst, ChecksumModeEither); f != v.form {
				t.Errorf("VerifyChecksum(either) = %s, want %s", f, v.form)
			}
			out, err := AppendAdvert(nil, &got, src, dst, v.form)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(v.hex, hex.EncodeToString(out)); diff != "" {
				t.Errorf("AppendAdvert (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAdvertRejects(t *testing.T) {
	v2 := "21016401000" + "1b952c0a801010000000000000000"
	v3 := "310ac801006427fdcb007101"
	tests := []struct {
		name string
		hex  string
		f    Family
		want Reason
	}{
		{"empty", "", IPv4, ReasonShort},
		{"7 bytes", v3[:14], IPv4, ReasonShort},
		{"version 1", "11" + v3[2:], IPv4, ReasonBadVersion},
		{"version 4", "41" + v3[2:], IPv4, ReasonBadVersion},
		{"version 0", "01" + v3[2:], IPv4, ReasonBadVersion},
		{"type 0", "30" + v3[2:], IPv4, ReasonBadType},
		{"type 2", "32" + v3[2:], IPv4, ReasonBadType},
		{"v2 over ipv6", v2, IPv6, ReasonV2IPv6},
		{"bad family", v3, 5, ReasonBadAddress},
		{"count too high", v3[:6] + "02" + v3[8:], IPv4, ReasonLengthMismatch},
		{"count too low", v3[:6] + "00" + v3[8:], IPv4, ReasonLengthMismatch},
		{"trailing byte", v3 + "00", IPv4, ReasonLengthMismatch},
		{"v2 missing auth data", v2[:len(v2)-2], IPv4, ReasonLengthMismatch},
		{"v3 ipv4 read as ipv6", v3, IPv6, ReasonLengthMismatch},
		{"v2 auth type 3", v2[:8] + "03" + v2[10:], IPv4, ReasonBadAuthType},
		{"v2 interval 0", v2[:10] + "00" + v2[12:], IPv4, ReasonBadInterval},
		{"v3 interval 0", v3[:8] + "f000" + v3[12:], IPv4, ReasonBadInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAdvert(mustHex(t, tt.hex), tt.f, nil)
			if diff := cmp.Diff(tt.want, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s\nerr: %v", diff, err)
			}
			if diff := cmp.Diff(Advert{}, a, addrCmp); diff != "" {
				t.Errorf("advert not zero on error:\n%s", diff)
			}
		})
	}
}

func TestAppendAdvertRejects(t *testing.T) {
	src4, dst4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
	src6, dst6 := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")
	many := make([]netip.Addr, 256)
	for i := range many {
		many[i] = src4
	}
	tests := []struct {
		name     string
		a        Advert
		src, dst netip.Addr
		want     Reason
	}{
		{"version", Advert{Version: 4, Interval: time.Second}, src4, dst4, ReasonBadVersion},
		{"v2 ipv6", Advert{Version: 2, Interval: time.Second}, src6, dst6, ReasonV2IPv6},
		{"mixed src dst", Advert{Version: 3, Interval: time.Second}, src4, dst6, ReasonBadAddress},
		{"invalid src", Advert{Version: 3, Interval: time.Second}, netip.Addr{}, dst4, ReasonBadAddress},
		{"vip family", Advert{Version: 3, Interval: time.Second, Addrs: []netip.Addr{src6}}, src4, dst4, ReasonBadAddress},
		{"too many", Advert{Version: 3, Interval: time.Second, Addrs: many}, src4, dst4, ReasonUnsupportedAdvert},
		{"v2 fraction", Advert{Version: 2, Interval: 1500 * time.Millisecond}, src4, dst4, ReasonBadInterval},
		{"v2 zero", Advert{Version: 2}, src4, dst4, ReasonBadInterval},
		{"v2 256s", Advert{Version: 2, Interval: 256 * time.Second}, src4, dst4, ReasonBadInterval},
		{"v3 5ms", Advert{Version: 3, Interval: 5 * time.Millisecond}, src4, dst4, ReasonBadInterval},
		{"v3 40.96s", Advert{Version: 3, Interval: 40960 * time.Millisecond}, src4, dst4, ReasonBadInterval},
		{"v3 15ms", Advert{Version: 3, Interval: 15 * time.Millisecond}, src4, dst4, ReasonBadInterval},
		{"v2 auth type", Advert{Version: 2, Interval: time.Second, AuthType: 3}, src4, dst4, ReasonBadAuthType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := AppendAdvert([]byte{1, 2}, &tt.a, tt.src, tt.dst, ChecksumPseudoHeader)
			if diff := cmp.Diff(tt.want, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
			if len(out) != 2 {
				t.Errorf("buffer grew to %d on error", len(out))
			}
		})
	}
}

func TestErrorFormatting(t *testing.T) {
	_, err := ParseAdvert([]byte{0x51, 0, 0, 0, 0, 0, 0, 0}, IPv4, nil)
	if diff := cmp.Diff("vrrp: bad_version (got 5)", err.Error()); diff != "" {
		t.Error(diff)
	}
	if !errors.Is(err, &Error{Reason: ReasonBadVersion}) {
		t.Error("errors.Is on reason failed")
	}
	if ReasonOf(nil) != "" {
		t.Error("ReasonOf(nil) not empty")
	}
}

// genAdvert draws a valid advert of family f.
func genAdvert(t *rapid.T, f Family) Advert {
	v := uint8(3)
	if f == IPv4 {
		v = rapid.SampledFrom([]uint8{2, 3}).Draw(t, "version")
	}
	a := Advert{Version: v, VRID: rapid.Uint8().Draw(t, "vrid"), Priority: rapid.Uint8().Draw(t, "prio")}
	if v == 2 {
		a.Interval = time.Duration(rapid.IntRange(1, 255).Draw(t, "sec")) * time.Second
		a.AuthType = rapid.Uint8Range(0, 2).Draw(t, "authtype")
		if a.AuthType == AuthTypeSimple {
			a.AuthData = [8]byte(rapid.SliceOfN(rapid.Byte(), 8, 8).Draw(t, "pw"))
		}
	} else {
		a.Interval = time.Duration(rapid.IntRange(1, 4095).Draw(t, "cs")) * 10 * time.Millisecond
	}
	n := rapid.IntRange(0, 20).Draw(t, "n")
	for i := range n {
		raw := rapid.SliceOfN(rapid.Byte(), f.addrLen(), f.addrLen()).Draw(t, "addr"+string(rune('a'+i)))
		if f == IPv4 {
			a.Addrs = append(a.Addrs, netip.AddrFrom4([4]byte(raw)))
		} else {
			a.Addrs = append(a.Addrs, netip.AddrFrom16([16]byte(raw)))
		}
	}
	return a
}

func genSrcDst(t *rapid.T, f Family) (netip.Addr, netip.Addr) {
	raw := rapid.SliceOfN(rapid.Byte(), 2*f.addrLen(), 2*f.addrLen()).Draw(t, "srcdst")
	if f == IPv4 {
		return netip.AddrFrom4([4]byte(raw[:4])), netip.AddrFrom4([4]byte(raw[4:]))
	}
	return netip.AddrFrom16([16]byte(raw[:16])), netip.AddrFrom16([16]byte(raw[16:]))
}

// TestAdvertRoundTripProperty: Marshal then Parse returns the advert, the
// checksum verifies in the form used and (v3 over IPv4) not in the other
// unless the two coincide, and any single-bit flip breaks the checksum.
func TestAdvertRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := rapid.SampledFrom([]Family{IPv4, IPv6}).Draw(t, "family")
		a := genAdvert(t, f)
		src, dst := genSrcDst(t, f)
		form := rapid.SampledFrom([]ChecksumForm{ChecksumPseudoHeader, ChecksumMessageOnly}).Draw(t, "form")
		b, err := AppendAdvert(nil, &a, src, dst, form)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseAdvert(b, f, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.Checksum = got.Checksum
		if diff := cmp.Diff(a, got, addrCmp, cmp.Comparer(func(x, y []netip.Addr) bool {
			return len(x) == len(y) && (len(x) == 0 || cmp.Equal(x, y, addrCmp))
		})); diff != "" {
			t.Fatalf("round trip (-sent +parsed):\n%s", diff)
		}
		want := form
		if a.Version == 2 {
			want = ChecksumMessageOnly
		} else if f == IPv6 {
			want = ChecksumPseudoHeader
		}
		if got := VerifyChecksum(b, src, dst, ChecksumModeEither); got != want && !(want == ChecksumMessageOnly && got == ChecksumPseudoHeader) {
			t.Fatalf("VerifyChecksum = %s, want %s", got, want)
		}
		bit := rapid.IntRange(0, len(b)*8-1).Draw(t, "bit")
		b[bit/8] ^= 1 << (bit % 8)
		if VerifyChecksum(b, src, dst, ChecksumModeEither) == want {
			// One's complement only misses 0x0000 <-> 0xffff word swaps,
			// impossible with a single bit.
			t.Fatalf("bit %d flip still verifies", bit)
		}
	})
}
