package vip

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestVirtualMAC(t *testing.T) {
	tests := []struct {
		vrid uint8
		ipv6 bool
		want string
	}{
		{1, false, "00:00:5e:00:01:01"},
		{10, false, "00:00:5e:00:01:0a"},
		{255, false, "00:00:5e:00:01:ff"},
		{10, true, "00:00:5e:00:02:0a"},
		{255, true, "00:00:5e:00:02:ff"},
	}
	for _, tt := range tests {
		got := VirtualMAC(tt.vrid, tt.ipv6)
		if diff := cmp.Diff(tt.want, got.String()); diff != "" {
			t.Errorf("VirtualMAC(%d, %v) (-want +got):\n%s", tt.vrid, tt.ipv6, diff)
		}
		if !isVirtualMAC(got) {
			t.Errorf("isVirtualMAC(%s) = false", got)
		}
	}
	if isVirtualMAC(net.HardwareAddr{2, 0, 0, 0, 1, 1}) || isVirtualMAC(net.HardwareAddr{0, 0, 0x5e, 0, 3, 1}) {
		t.Error("isVirtualMAC accepts a MAC outside the RFC 9568 range")
	}
}

var testMAC = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}

func TestAppendGratuitousARP(t *testing.T) {
	vip := netip.MustParseAddr("203.0.113.1")
	tests := []struct {
		name string
		op   ARPOp
		want arpView
	}{
		{"request", ARPRequest, arpView{
			EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: "02:11:22:33:44:55", Op: 1,
			SenderMAC: "02:11:22:33:44:55", SenderIP: vip,
			TargetMAC: "00:00:00:00:00:00", TargetIP: vip,
		}},
		{"reply", ARPReply, arpView{
			EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: "02:11:22:33:44:55", Op: 2,
			SenderMAC: "02:11:22:33:44:55", SenderIP: vip,
			TargetMAC: "ff:ff:ff:ff:ff:ff", TargetIP: vip,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte{0xaa}
			b, err := AppendGratuitousARP(prefix, tt.op, testMAC, vip)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != 1+ARPFrameLen || b[0] != 0xaa {
				t.Fatalf("appended %d bytes (prefix %#x), want %d after the prefix", len(b)-1, b[0], ARPFrameLen)
			}
			for i, c := range b[1+42:] {
				if c != 0 {
					t.Fatalf("padding byte %d = %#x", 42+i, c)
				}
			}
			got, err := decodeARPFrame(b[1:])
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("frame (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendGratuitousARPErrors(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		name string
		op   ARPOp
		mac  net.HardwareAddr
		ip   netip.Addr
		want error
	}{
		{"short MAC", ARPRequest, testMAC[:5], v4, ErrBadMAC},
		{"IPv6", ARPRequest, testMAC, netip.MustParseAddr("2001:db8::1"), ErrNotIPv4},
		{"mapped", ARPRequest, testMAC, netip.MustParseAddr("::ffff:192.0.2.1"), ErrNotIPv4},
		{"zero addr", ARPRequest, testMAC, netip.Addr{}, ErrNotIPv4},
		{"op 3", 3, testMAC, v4, ErrBadARPOp},
	}
	for _, tt := range tests {
		b, err := AppendGratuitousARP(nil, tt.op, tt.mac, tt.ip)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
		if len(b) != 0 {
			t.Errorf("%s: appended %d bytes on error", tt.name, len(b))
		}
	}
}

func TestAppendUnsolicitedNA(t *testing.T) {
	vip := netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		name   string
		router bool
		want   naView
	}{
		{"host", false, naView{Target: vip, Override: true, TargetLL: "02:11:22:33:44:55", Options: 1}},
		{"router", true, naView{Target: vip, Router: true, Override: true, TargetLL: "02:11:22:33:44:55", Options: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendUnsolicitedNA(nil, vip, testMAC, tt.router)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != NALen {
				t.Fatalf("length %d, want %d", len(b), NALen)
			}
			got, err := decodeNAMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("NA (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendUnsolicitedNAErrors(t *testing.T) {
	tests := []struct {
		name string
		mac  net.HardwareAddr
		ip   string
		want error
	}{
		{"short MAC", testMAC[:4], "2001:db8::1", ErrBadMAC},
		{"IPv4", testMAC, "192.0.2.1", ErrNotIPv6},
		{"mapped", testMAC, "::ffff:192.0.2.1", ErrNotIPv6},
		{"multicast", testMAC, "ff02::1", ErrBadNATarget},
		{"unspecified", testMAC, "::", ErrBadNATarget},
	}
	for _, tt := range tests {
		b, err := AppendUnsolicitedNA(nil, netip.MustParseAddr(tt.ip), tt.mac, false)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
		if len(b) != 0 {
			t.Errorf("%s: appended %d bytes on error", tt.name, len(b))
		}
	}
}

// Any valid MAC and IPv4 address gives a frame gopacket reads back as a
// gratuitous ARP for exactly that pair.
func TestGratuitousARPProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		mac := net.HardwareAddr(rapid.SliceOfN(rapid.Byte(), 6, 6).Draw(t, "mac"))
		ip := netip.AddrFrom4([4]byte(rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(t, "ip")))
		op := rapid.SampledFrom([]ARPOp{ARPRequest, ARPReply}).Draw(t, "op")
		b, err := AppendGratuitousARP(nil, op, mac, ip)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeARPFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.SenderIP != ip || got.TargetIP != ip || got.SenderMAC != mac.String() ||
			got.EthSrc != mac.String() || got.Op != uint16(op) {
			t.Fatalf("decoded %+v for %s at %s op %d", got, ip, mac, op)
		}
	})
}

func TestUnsolicitedNAProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		mac := net.HardwareAddr(rapid.SliceOfN(rapid.Byte(), 6, 6).Draw(t, "mac"))
		ip := netip.AddrFrom16([16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "ip")))
		router := rapid.Bool().Draw(t, "router")
		b, err := AppendUnsolicitedNA(nil, ip, mac, router)
		if ip.IsMulticast() || ip.IsUnspecified() || ip.Is4In6() {
			if err == nil {
				t.Fatalf("accepted target %s", ip)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeNAMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		want := naView{Target: ip, Router: router, Override: true, TargetLL: mac.String(), Options: 1}
		if got != want {
			t.Fatalf("decoded %+v, want %+v", got, want)
		}
	})
}

// The builders never panic and either fail or produce a frame gopacket
// decodes back to their input.
func FuzzAppendGratuitousARP(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 0, 1}, []byte{192, 0, 2, 1}, uint16(1))
	f.Add([]byte{0, 0, 0x5e, 0, 1, 10}, []byte{10, 0, 0, 1}, uint16(2))
	f.Add([]byte{1}, []byte{1, 2, 3}, uint16(9))
	f.Fuzz(func(t *testing.T, mac, ip []byte, op uint16) {
		addr, _ := netip.AddrFromSlice(ip)
		b, err := AppendGratuitousARP(nil, ARPOp(op), mac, addr)
		if err != nil {
			return
		}
		got, err := decodeARPFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.SenderIP != addr || got.SenderMAC != net.HardwareAddr(mac).String() {
			t.Fatalf("decoded %+v", got)
		}
	})
}

func FuzzAppendUnsolicitedNA(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("2001:db8::1").AsSlice(), true)
	f.Add([]byte{0, 0, 0x5e, 0, 2, 10}, netip.MustParseAddr("fe80::1").AsSlice(), false)
	f.Add([]byte{}, []byte{0xff, 2}, false)
	f.Fuzz(func(t *testing.T, mac, ip []byte, router bool) {
		addr, _ := netip.AddrFromSlice(ip)
		b, err := AppendUnsolicitedNA(nil, addr, mac, router)
		if err != nil {
			return
		}
		got, err := decodeNAMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Target != addr || got.Router != router || !got.Override || got.Solicited {
			t.Fatalf("decoded %+v", got)
		}
	})
}

func TestBuildersDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, ARPFrameLen)
	v4 := netip.MustParseAddr("192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8::1")
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendGratuitousARP(buf[:0], ARPRequest, testMAC, v4) }); n != 0 {
		t.Errorf("AppendGratuitousARP: %v allocs", n)
	}
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendUnsolicitedNA(buf[:0], v6, testMAC, true) }); n != 0 {
		t.Errorf("AppendUnsolicitedNA: %v allocs", n)
	}
}

func BenchmarkAppendGratuitousARP(b *testing.B) {
	buf := make([]byte, 0, ARPFrameLen)
	ip := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendGratuitousARP(buf[:0], ARPReply, testMAC, ip)
	}
}

func BenchmarkAppendUnsolicitedNA(b *testing.B) {
	buf := make([]byte, 0, NALen)
	ip := netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendUnsolicitedNA(buf[:0], ip, testMAC, true)
	}
}
