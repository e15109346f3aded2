package vrrp

import (
	"net/netip"
	"testing"
	"time"
)

type benchCase struct {
	name     string
	f        Family
	src, dst netip.Addr
	a        Advert
}

func benchCases() []benchCase {
	v4 := []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("10.10.0.1")}
	v6 := []netip.Addr{netip.MustParseAddr("fe80::100"), netip.MustParseAddr("2001:db8::1")}
	s4, d4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
	s6, d6 := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")
	return []benchCase{
		{"v2", IPv4, s4, d4, Advert{Version: 2, VRID: 10, Priority: 150, Interval: time.Second, Addrs: v4}},
		{"v3-ipv4", IPv4, s4, d4, Advert{Version: 3, VRID: 10, Priority: 150, Interval: time.Second, Addrs: v4}},
		{"v3-ipv6", IPv6, s6, d6, Advert{Version: 3, VRID: 10, Priority: 150, Interval: time.Second, Addrs: v6}},
	}
}

func BenchmarkAdvertMarshal(b *testing.B) {
	for _, bc := range benchCases() {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = AppendAdvert(buf[:0], &bc.a, bc.src, bc.dst, ChecksumPseudoHeader); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkAdvertParse(b *testing.B) {
	for _, bc := range benchCases() {
		b.Run(bc.name, func(b *testing.B) {
			msg, err := AppendAdvert(nil, &bc.a, bc.src, bc.dst, ChecksumPseudoHeader)
			if err != nil {
				b.Fatal(err)
			}
			addrs := make([]netip.Addr, 0, 16)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				a, err := ParseAdvert(msg, bc.f, addrs)
				if err != nil || VerifyChecksum(msg, bc.src, bc.dst, ChecksumModePseudoHeader) == ChecksumNone {
					b.Fatal(err)
				}
				addrs = a.Addrs
			}
		})
	}
}

type ahBenchCase struct {
	name     string
	cfg      Config
	src, dst netip.Addr
	a        Advert
}

func ahBenchCases() []ahBenchCase {
	cs := benchCases()
	return []ahBenchCase{
		{"keepalived-md5", Config{Version: 2, Auth: AuthKeepalivedAH, Password: "secretpw"}, cs[0].src, cs[0].dst, cs[0].a},
		{"sha256-ipv4", Config{Version: 3, Auth: AuthAH, Password: "change-me"}, cs[1].src, cs[1].dst, cs[1].a},
		{"sha256-ipv6", Config{Version: 3, Auth: AuthAH, Password: "change-me"}, cs[2].src, cs[2].dst, cs[2].a},
	}
}

// BenchmarkAHSign measures building and signing a complete packet
// (AppendPacket: IP header, AH, advert, checksum, ICV).
func BenchmarkAHSign(b *testing.B) {
	for _, bc := range ahBenchCases() {
		b.Run(bc.name, func(b *testing.B) {
			c := mustCodec(b, bc.cfg)
			buf := make([]byte, 0, 256)
			ctr := AHCounter{Epoch: 1764046800}
			b.ReportAllocs()
			for b.Loop() {
				ctr.Seq++
				var err error
				if buf, err = c.AppendPacket(buf[:0], bc.src, bc.dst, &bc.a, ctr); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkAHVerify measures Decode of a complete signed packet: IP header,
// AH, advert, checksum and ICV checks, plus the replay check.
func BenchmarkAHVerify(b *testing.B) {
	for _, bc := range ahBenchCases() {
		b.Run(bc.name, func(b *testing.B) {
			c := mustCodec(b, bc.cfg)
			pkt, err := c.AppendPacket(nil, bc.src, bc.dst, &bc.a, AHCounter{Epoch: 1764046800, Seq: 2})
			if err != nil {
				b.Fatal(err)
			}
			addrs := make([]netip.Addr, 0, 16)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := c.Decode(pkt, addrs)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := (ReplayState{SPI: r.SPI, Seq: 1, Valid: true}).Accept(r.SPI, r.Seq); err != nil {
					b.Fatal(err)
				}
				addrs = r.Advert.Addrs
			}
		})
	}
}

// TestHotPathAllocs pins the zero-allocation property the benchmarks show,
// so a regression fails the normal test run (allocation counts are exact,
// unlike timings).
func TestHotPathAllocs(t *testing.T) {
	for _, bc := range benchCases() {
		buf := make([]byte, 0, 256)
		addrs := make([]netip.Addr, 0, 16)
		msg, err := AppendAdvert(nil, &bc.a, bc.src, bc.dst, ChecksumPseudoHeader)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() {
			buf, _ = AppendAdvert(buf[:0], &bc.a, bc.src, bc.dst, ChecksumPseudoHeader)
			a, _ := ParseAdvert(msg, bc.f, addrs)
			addrs = a.Addrs
			VerifyChecksum(msg, bc.src, bc.dst, ChecksumModeEither)
		}); n != 0 {
			t.Errorf("%s: advert marshal+parse: %v allocs/op", bc.name, n)
		}
	}
	for _, bc := range ahBenchCases() {
		c := mustCodec(t, bc.cfg)
		buf := make([]byte, 0, 256)
		addrs := make([]netip.Addr, 0, 16)
		ctr := AHCounter{Epoch: 1764046800}
		if n := testing.AllocsPerRun(100, func() {
			ctr = ctr.Next(time.Time{})
			buf, _ = c.AppendPacket(buf[:0], bc.src, bc.dst, &bc.a, ctr)
			r, err := c.Decode(buf, addrs)
			if err != nil {
				t.Fatal(err)
			}
			addrs = r.Advert.Addrs
		}); n != 0 {
			t.Errorf("%s: sign+verify: %v allocs/op", bc.name, n)
		}
	}
}
