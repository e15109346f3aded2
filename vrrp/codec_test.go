package vrrp

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Packets captured from keepalived 2.2.7 (Debian 12) in a namespace, IPv4
// header onwards: `ip netns exec NS keepalived -n -l -D -f ka.conf` with
// tcpdump on the veth peer. Source 10.99.0.1, VIPs 10.99.0.100/.101.
const (
	// auth_type AH, auth_pass secretpw1234 (keepalived keeps "secretpw"),
	// vrid 51, prio 150, advert_int 1; sequence 1, IP ID 1.
	kaAHSeq1 = "45c0004400010000ff33d04f0a630001e0000012700400000a63000100000001a8298e6fb189b53be0ec5b14213396020201313a0a6300640a6300650000000000000000"
	// The same instance stopping: priority 0, sequence 3, IP ID 3.
	kaAHSeq3Prio0 = "45c0004400030000ff33d04d0a630001e0000012700400000a630001000000030dece144230242cd592449f3213300020201c73a0a6300640a6300650000000000000000"
	// auth_type PASS, same password, vrid 52.
	kaPass = "45c0002c00010000ff70d02a0a630001e000001221349602010185750a6300640a6300657365637265747077"
	// version 3, vrid 53, advert_int 0.5, one VIP, no auth.
	kaV3 = "45c0002000010000ff70d0360a630001e000001231359601003242dd0a630064"
)

var (
	kaSrc   = netip.MustParseAddr("10.99.0.1")
	kaGroup = netip.MustParseAddr("224.0.0.18")
	kaVIPs  = []netip.Addr{netip.MustParseAddr("10.99.0.100"), netip.MustParseAddr("10.99.0.101")}
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCodec(t testing.TB, cfg Config) *Codec {
	t.Helper()
	c, err := NewCodec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeepalivedCaptures decodes real keepalived packets and re-encodes
// them byte for byte.
func TestKeepalivedCaptures(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		pkt  string
		seq  uint32
		want Received
	}{
		{
			name: "ah", cfg: Config{Version: 2, Auth: AuthKeepalivedAH, Password: "secretpw1234"}, pkt: kaAHSeq1, seq: 1,
			want: Received{
				Advert: Advert{Version: 2, VRID: 51, Priority: 150, Interval: time.Second, Addrs: kaVIPs, AuthType: AuthTypeAH, Checksum: 0x313a},
				Src:    kaSrc, Dst: kaGroup, TTL: 255, Auth: AuthKeepalivedAH, SPI: 0x0a630001, Seq: 1,
				Checksum: ChecksumMessageOnly, AuthChecked: true, AuthOK: true,
			},
		},
		{
			name: "ah prio 0", cfg: Config{Version: 2, Auth: AuthKeepalivedAH, Password: "secretpw"}, pkt: kaAHSeq3Prio0, seq: 3,
			want: Received{
				Advert: Advert{Version: 2, VRID: 51, Priority: 0, Interval: time.Second, Addrs: kaVIPs, AuthType: AuthTypeAH, Checksum: 0xc73a},
				Src:    kaSrc, Dst: kaGroup, TTL: 255, Auth: AuthKeepalivedAH, SPI: 0x0a630001, Seq: 3,
				Checksum: ChecksumMessageOnly, AuthChecked: true, AuthOK: true,
			},
		},
		{
			name: "pass", cfg: Config{Version: 2, Auth: AuthPass, Password: "secretpw1234"}, pkt: kaPass, seq: 1,
			want: Received{
				Advert: Advert{Version: 2, VRID: 52, Priority: 150, Interval: time.Second, Addrs: kaVIPs, AuthType: AuthTypeSimple,
					AuthData: [8]byte([]byte("secretpw")), Checksum: 0x8575},
				Src: kaSrc, Dst: kaGroup, TTL: 255, Auth: AuthPass,
				Checksum: ChecksumMessageOnly, AuthChecked: true, AuthOK: true,
			},
		},
		{
			name: "v3", cfg: Config{Version: 3}, pkt: kaV3, seq: 1,
			want: Received{
				Advert: Advert{Version: 3, VRID: 53, Priority: 150, Interval: 500 * time.Millisecond, Addrs: kaVIPs[:1], Checksum: 0x42dd},
				Src:    kaSrc, Dst: kaGroup, TTL: 255, Auth: AuthNone, Checksum: ChecksumPseudoHeader,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCodec(t, tt.cfg)
			pkt := mustHex(t, tt.pkt)
			got, err := c.Decode(pkt, nil)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", diff)
			}
			out, err := c.AppendPacket(nil, got.Src, got.Dst, &got.Advert, AHCounter{Seq: tt.seq})
			if err != nil {
				t.Fatalf("AppendPacket: %v", err)
			}
			if diff := cmp.Diff(tt.pkt, hex.EncodeToString(out)); diff != "" {
				t.Errorf("re-encoded packet differs from keepalived's (-keepalived +ours):\n%s", diff)
			}
		})
	}
}

// TestKeepalivedAHRejects checks that a wrong password, a changed byte in
// every position and a wrong SPI all fail keepalived-ah verification.
func TestKeepalivedAHRejects(t *testing.T) {
	pkt := mustHex(t, kaAHSeq1)
	if _, err := mustCodec(t, Config{Version: 2, Auth: AuthKeepalivedAH, Password: "secretpX"}).Decode(pkt, nil); ReasonOf(err) != ReasonAuthFailed {
		t.Errorf("wrong password: got %v, want %s", err, ReasonAuthFailed)
	}
	c := mustCodec(t, Config{Version: 2, Auth: AuthKeepalivedAH, Password: "secretpw"})
	// Mutable fields (TOS 1, flags/offset 6-7, checksum 10-11) are outside
	// the ICV; a flip there is caught by the IP checksum or ignored.
	mutable := map[int]bool{1: true, 6: true, 7: true, 10: true, 11: true}
	for i := range pkt {
		if mutable[i] {
			continue
		}
		p := append([]byte(nil), pkt...)
		p[i] ^= 0x01
		if i >= 12 && i < 20 || i == 8 || i == 9 || i < 4 || i == 4 || i == 5 {
			// Fix the IP header checksum so the ICV is what rejects it.
			fixIPv4Checksum(p)
		}
		if _, err := c.Decode(p, nil); err == nil {
			t.Errorf("flip of byte %d accepted", i)
		}
	}
}

func fixIPv4Checksum(p []byte) {
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || ihl > len(p) {
		return
	}
	p[10], p[11] = 0, 0
	s := ^fold(sumWords(0, p[:ihl]))
	p[10], p[11] = byte(s>>8), byte(s)
}

func TestCodecRoundTrip(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
	v6a, v6b := netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12")
	vip4 := []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	vip6 := []netip.Addr{netip.MustParseAddr("fe80::100"), netip.MustParseAddr("2001:db8::1")}
	now := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		cfg      Config
		src, dst netip.Addr
		addrs    []netip.Addr
		interval time.Duration
		ctr      AHCounter
		form     ChecksumForm
	}{
		{"v2 none", Config{Version: 2}, v4a, v4b, vip4, 3 * time.Second, AHCounter{}, ChecksumMessageOnly},
		{"v2 pass", Config{Version: 2, Auth: AuthPass, Password: "pw"}, v4a, v4b, vip4, time.Second, AHCounter{}, ChecksumMessageOnly},
		{"v2 keepalived-ah", Config{Version: 2, Auth: AuthKeepalivedAH, Password: "pw"}, v4a, v4b, vip4, time.Second, AHCounter{}.NextKeepalived(now), ChecksumMessageOnly},
		{"v2 keepalived-ah unicast", Config{Version: 2, Auth: AuthKeepalivedAH, Password: "pw", Unicast: true}, v4a, netip.MustParseAddr("192.0.2.2"), vip4, time.Second, AHCounter{Seq: 7}, ChecksumMessageOnly},
		{"v3 none v4", Config{Version: 3}, v4a, v4b, vip4, 10 * time.Millisecond, AHCounter{}, ChecksumPseudoHeader},
		{"v3 none v4 message-only", Config{Version: 3, Checksum: ChecksumModeMessageOnly}, v4a, v4b, vip4, 40950 * time.Millisecond, AHCounter{}, ChecksumMessageOnly},
		{"v3 none v6", Config{Version: 3}, v6a, v6b, vip6, time.Second, AHCounter{}, ChecksumPseudoHeader},
		{"v3 ah v4", Config{Version: 3, Auth: AuthAH, Password: "change-me"}, v4a, v4b, vip4, time.Second, NewAHCounter(0, now).Next(now), ChecksumPseudoHeader},
		{"v3 ah v6", Config{Version: 3, Auth: AuthAH, Password: "change-me"}, v6a, v6b, vip6, 20 * time.Millisecond, NewAHCounter(0, now).Next(now), ChecksumPseudoHeader},
		{"v3 ah v4 zero addrs", Config{Version: 3, Auth: AuthAH, Password: "x"}, v4a, v4b, nil, time.Second, NewAHCounter(0, now).Next(now), ChecksumPseudoHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCodec(t, tt.cfg)
			a := Advert{VRID: 10, Priority: 150, Interval: tt.interval, Addrs: tt.addrs}
			pkt, err := c.AppendPacket([]byte("prefix"), tt.src, tt.dst, &a, tt.ctr)
			if err != nil {
				t.Fatal(err)
			}
			if string(pkt[:6]) != "prefix" {
				t.Fatal("AppendPacket overwrote the prefix")
			}
			got, err := c.Decode(pkt[6:], nil)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := Received{
				Advert: Advert{Version: tt.cfg.Version, VRID: 10, Priority: 150, Interval: tt.interval, Addrs: tt.addrs,
					Checksum: got.Advert.Checksum},
				Src: tt.src, Dst: tt.dst, TTL: 255, Auth: tt.cfg.Auth, Checksum: tt.form,
				AuthChecked: tt.cfg.Password != "", AuthOK: tt.cfg.Password != "",
			}
			switch tt.cfg.Auth {
			case AuthPass:
				want.Advert.AuthType, want.Advert.AuthData = AuthTypeSimple, KeepalivedKey(tt.cfg.Password)
			case AuthKeepalivedAH:
				want.Advert.AuthType, want.SPI, want.Seq = AuthTypeAH, addr4Uint32(tt.src), tt.ctr.Seq
			case AuthAH:
				want.SPI, want.Seq, want.KeyVersion = tt.ctr.Epoch, tt.ctr.Seq, KeyV1 // no Master: version 1 only
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
			if tt.src.Is6() {
				// The raw-socket path sees only the payload.
				h, payload, err := ParseIPv6(pkt[6:])
				if err != nil {
					t.Fatal(err)
				}
				got6, err := c.DecodeIPv6Payload(payload, h.NextHeader, h.Src, h.Dst, h.HopLimit, nil)
				if err != nil {
					t.Fatalf("DecodeIPv6Payload: %v", err)
				}
				if diff := cmp.Diff(got, got6, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
					t.Errorf("payload path differs (-full +payload):\n%s", diff)
				}
			}
		})
	}
}

// TestDecodeRejects covers each enforced check of Decode.
func TestDecodeRejects(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
	vip := []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	now := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)
	build := func(cfg Config, mutate func([]byte)) []byte {
		c := mustCodec(t, cfg)
		p, err := c.AppendPacket(nil, src, dst, &Advert{VRID: 1, Priority: 100, Interval: time.Second, Addrs: vip}, NewAHCounter(0, now).Next(now))
		if err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	ah := Config{Version: 3, Auth: AuthAH, Password: "pw"}
	tests := []struct {
		name string
		cfg  Config // receiver
		pkt  []byte
		want Reason
	}{
		{"ttl", Config{Version: 3}, build(Config{Version: 3}, func(p []byte) { p[8] = 254; fixIPv4Checksum(p) }), ReasonBadTTL},
		{"version", Config{Version: 2}, build(Config{Version: 3}, nil), ReasonBadVersion},
		{"auth none vs ah", ah, build(Config{Version: 3}, nil), ReasonAuthMismatch},
		{"auth ah vs none", Config{Version: 3}, build(ah, nil), ReasonAuthMismatch},
		{"auth ah vs keepalived", Config{Version: 2, Auth: AuthKeepalivedAH, Password: "pw"}, build(ah, nil), ReasonBadVersion},
		{"pass vs none", Config{Version: 2}, build(Config{Version: 2, Auth: AuthPass, Password: "pw"}, nil), ReasonAuthMismatch},
		{"wrong password ah", Config{Version: 3, Auth: AuthAH, Password: "pW"}, build(ah, nil), ReasonAuthFailed},
		{"wrong password pass", Config{Version: 2, Auth: AuthPass, Password: "pW"}, build(Config{Version: 2, Auth: AuthPass, Password: "pw"}, nil), ReasonAuthFailed},
		{"ah icv padding", ah, build(ah, func(p []byte) { p[20+31] = 1 }), ReasonAuthFailed},
		{"ah spi tampered", ah, build(ah, func(p []byte) { p[20+7]++ }), ReasonAuthFailed},
		{"ah priority tampered", ah, build(ah, func(p []byte) { p[20+32+2]++ }), ReasonAuthFailed},
		{"checksum", Config{Version: 3}, build(Config{Version: 3}, func(p []byte) { p[20+6]++ }), ReasonBadChecksum},
		{"pseudo vs message-only", Config{Version: 3, Checksum: ChecksumModeMessageOnly}, build(Config{Version: 3}, nil), ReasonBadChecksum},
		{"message-only vs pseudo", Config{Version: 3}, build(Config{Version: 3, Checksum: ChecksumModeMessageOnly}, nil), ReasonBadChecksum},
		{"ip checksum", Config{Version: 3}, build(Config{Version: 3}, func(p []byte) { p[10]++ }), ReasonIPBadChecksum},
		{"protocol", Config{Version: 3}, build(Config{Version: 3}, func(p []byte) { p[9] = 17; fixIPv4Checksum(p) }), ReasonIPBadProtocol},
		{"fragment", Config{Version: 3}, build(Config{Version: 3}, func(p []byte) { p[6] = 0x20; fixIPv4Checksum(p) }), ReasonIPFragment},
		{"ip version", Config{Version: 3}, build(Config{Version: 3}, func(p []byte) { p[0] = 0x55 }), ReasonIPBadVersion},
		{"empty", Config{Version: 3}, []byte{}, ReasonIPShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mustCodec(t, tt.cfg).Decode(tt.pkt, nil)
			if diff := cmp.Diff(tt.want, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s\nerr: %v", diff, err)
			}
		})
	}
}

func TestChecksumEither(t *testing.T) {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("224.0.0.18")
	a := Advert{VRID: 1, Priority: 100, Interval: time.Second, Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.1")}}
	rx := mustCodec(t, Config{Version: 3, Checksum: ChecksumModeEither})
	for _, mode := range []ChecksumMode{ChecksumModePseudoHeader, ChecksumModeMessageOnly} {
		p, err := mustCodec(t, Config{Version: 3, Checksum: mode}).AppendPacket(nil, src, dst, &a, AHCounter{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := rx.Decode(p, nil)
		if err != nil {
			t.Fatalf("mode %d: %v", mode, err)
		}
		if r.Checksum != mode.sendForm() {
			t.Errorf("mode %d: matched %s, want %s", mode, r.Checksum, mode.sendForm())
		}
	}
}

func TestNewCodecRejects(t *testing.T) {
	for _, cfg := range []Config{
		{Version: 1},
		{Version: 3, Auth: AuthKeepalivedAH, Password: "x"},
		{Version: 3, Auth: AuthPass, Password: "x"},
		{Version: 2, Auth: AuthAH, Password: "x"},
		{Version: 3, Auth: AuthAH},
		{Version: 3, Auth: 9, Password: "x"},
		{Version: 3, Checksum: 7},
	} {
		if _, err := NewCodec(cfg); err == nil {
			t.Errorf("NewCodec(%+v) accepted", cfg)
		}
	}
}

func TestParseAuthMode(t *testing.T) {
	for _, m := range []AuthMode{AuthNone, AuthPass, AuthKeepalivedAH, AuthAH} {
		got, err := ParseAuthMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseAuthMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseAuthMode("md5"); err == nil {
		t.Error("ParseAuthMode(md5) accepted")
	}
}

// ExampleCodec shows a sender and a receiver of the default scheme (VRRPv3 in
// AH with HMAC-SHA-256-128) with the anti-replay state both sides keep.
func ExampleCodec() {
	cfg := Config{Version: 3, Auth: AuthAH, Password: "change-me"}
	tx, _ := NewCodec(cfg)
	rx, _ := NewCodec(cfg)
	now := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)

	ctr := NewAHCounter(0, now) // persist ctr.Epoch before sending
	var replay ReplayState      // one per peer
	buf := make([]byte, 0, 128)
	addrs := make([]netip.Addr, 0, 4)
	src, group := netip.MustParseAddr("192.168.255.1"), netip.MustParseAddr("224.0.0.18")
	for range 2 {
		ctr = ctr.Next(now)
		buf, _ = tx.AppendPacket(buf[:0], src, group, &Advert{VRID: 10, Priority: 150, Interval: time.Second,
			Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.1")}}, ctr)
		r, err := rx.Decode(buf, addrs)
		if err != nil {
			fmt.Println("drop:", ReasonOf(err))
			continue
		}
		if replay, err = replay.Accept(r.SPI, r.Seq); err != nil {
			fmt.Println("drop:", ReasonOf(err))
			continue
		}
		fmt.Println(r.Src, r.Advert.VRID, r.Advert.Priority, r.Advert.Interval, r.Advert.Addrs, r.Auth, r.Seq)
	}
	// A replayed packet (the last one again) is dropped.
	r, _ := rx.Decode(buf, addrs)
	_, err := replay.Accept(r.SPI, r.Seq)
	fmt.Println("replay:", ReasonOf(err))
	// Output:
	// 192.168.255.1 10 150 1s [203.0.113.1] ah 1
	// 192.168.255.1 10 150 1s [203.0.113.1] ah 2
	// replay: replay
}
