package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"pgregory.net/rapid"

	"github.com/muros/muros-had/vrrp"
)

var updateGolden = flag.Bool("update", false, "rewrite cmd/muros-had/testdata/inspect/*.jsonl from the current output")

const pcapDir = "../../testdata/pcaps"

// TestInspectGolden runs the command on real keepalived captures and compares
// the exact output with the reviewed golden files.
func TestInspectGolden(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"v2-ah-unicast.jsonl", []string{"--password", "ahUnicst", "v2-ah-unicast.pcap"}},
		{"v2-ah-wrong-password.jsonl", []string{"--password", "wrong", "v2-ah.pcap"}},
		{"v2-pass.jsonl", []string{"--password", "Pa55v2ok", "v2-pass.pcap"}},
		{"v2-none-sll.jsonl", []string{"v2-none-sll.pcap"}},
		{"v3-ipv4-multivip-sll2.jsonl", []string{"v3-ipv4-multivip.pcap"}},
		{"v3-ipv4-msgsum.jsonl", []string{"v3-ipv4-msgsum.pcap"}},
		{"v3-ipv6.jsonl", []string{"--password", "unused", "v3-ipv6.pcap"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			args := slices.Clone(tt.args)
			args[len(args)-1] = filepath.Join(pcapDir, args[len(args)-1])
			var stdout, stderr bytes.Buffer
			if code := cmdInspect(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, stderr.String())
			}
			path := filepath.Join("testdata", "inspect", tt.golden)
			if *updateGolden {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, stdout.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("golden file: %v (run go test ./cmd/muros-had -run TestInspectGolden -update)", err)
			}
			if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(stdout.String(), "\n")); diff != "" {
				t.Errorf("output differs from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

// TestInspectFields checks every line of every capture has exactly the SPEC
// fields, and that the known password authenticates every authenticated
// advert.
func TestInspectFields(t *testing.T) {
	specKeys := []string{"addresses", "advert_interval_ms", "auth", "checksum_ok", "dst", "priority", "src", "ttl", "version", "vrid"}
	withAuthOK := append(slices.Clone(specKeys), "auth_ok")
	slices.Sort(withAuthOK)
	captures := map[string]struct {
		password string
		auth     string
		lines    int
	}{
		"v2-none.pcap":                 {"", "none", 10},
		"v2-pass.pcap":                 {"Pa55v2ok", "pass", 9},
		"v2-pass-multivip.pcap":        {"mvPass15", "pass", 9},
		"v2-ah.pcap":                   {"ahMcast1", "ah", 9},
		"v2-ah-multivip.pcap":          {"m0reVips", "ah", 9},
		"v3-ipv4.pcap":                 {"", "none", 15},
		"v3-ipv4-multivip-msgsum.pcap": {"", "none", 27},
	}
	for file, c := range captures {
		t.Run(file, func(t *testing.T) {
			args := []string{filepath.Join(pcapDir, file)}
			if c.password != "" {
				args = append([]string{"--password", c.password}, args...)
			}
			var stdout, stderr bytes.Buffer
			if code := cmdInspect(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, stderr.String())
			}
			lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			if len(lines) != c.lines {
				t.Fatalf("%d lines, want %d", len(lines), c.lines)
			}
			for i, l := range lines {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("line %d: %v", i+1, err)
				}
				want := specKeys
				if c.password != "" {
					want = withAuthOK
				}
				got := slices.Sorted(func(yield func(string) bool) {
					for k := range m {
						if !yield(k) {
							return
						}
					}
				})
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("line %d keys (-want +got):\n%s", i+1, diff)
				}
				if m["auth"] != c.auth || m["checksum_ok"] != true || m["ttl"] != 255.0 {
					t.Errorf("line %d: %s", i+1, l)
				}
				if c.password != "" && m["auth_ok"] != true {
					t.Errorf("line %d: auth_ok not true with the capture's password: %s", i+1, l)
				}
			}
		})
	}
}

// Synthetic packets for what real captures do not contain.
var (
	synSrc  = netip.MustParseAddr("192.0.2.1")
	synDst  = netip.MustParseAddr("224.0.0.18")
	synVIP  = netip.MustParseAddr("192.0.2.100")
	synSrc6 = netip.MustParseAddr("fe80::1")
	synDst6 = netip.MustParseAddr("ff02::12")
)

func synPacket(t *testing.T, cfg vrrp.Config, src, dst netip.Addr, vip netip.Addr) []byte {
	t.Helper()
	c, err := vrrp.NewCodec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := vrrp.Advert{VRID: 7, Priority: 200, Interval: time.Second, Addrs: []netip.Addr{vip}}
	pkt, err := c.AppendPacket(nil, src, dst, &a, vrrp.AHCounter{Epoch: 1 << 20, Seq: 3})
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

func ethernet(ethertype uint16, payload []byte) []byte {
	f := []byte{1, 0, 0x5e, 0, 0, 0x12, 0x02, 0, 0, 0, 0, 1, byte(ethertype >> 8), byte(ethertype)}
	return append(f, payload...)
}

// writePcap writes frames as a classic pcap of link type lt.
func writePcap(t *testing.T, lt layers.LinkType, frames ...[]byte) string {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(int64(i), 0), CaptureLength: len(f), Length: len(f)}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "syn.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func runInspect(t *testing.T, args ...string) []string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := cmdInspect(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr.String())
	}
	out := strings.TrimSuffix(stdout.String(), "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

func TestInspectSynthetic(t *testing.T) {
	v2 := vrrp.Config{Version: 2, Auth: vrrp.AuthNone}
	good := synPacket(t, v2, synSrc, synDst, synVIP)

	badChecksum := slices.Clone(good)
	badChecksum[vrrp.IPv4HeaderLen+6] ^= 0xff

	truncated := slices.Clone(good[:len(good)-4]) // VRRP cut short, IP length fixed up
	binary.BigEndian.PutUint16(truncated[2:4], uint16(len(truncated)))
	truncated[10], truncated[11] = 0, 0
	binary.BigEndian.PutUint16(truncated[10:12], ipv4HeaderChecksum(truncated[:20]))

	badVersion := slices.Clone(good)
	badVersion[vrrp.IPv4HeaderLen] = 0x41 // VRRP version 4

	ahCfg := vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: "s3cret"}
	ah := synPacket(t, ahCfg, synSrc, synDst, synVIP)
	ahBadNext := slices.Clone(ah)
	ahBadNext[vrrp.IPv4HeaderLen] = 17 // AH protects UDP, not VRRP

	udp := slices.Clone(good)
	udp[9] = 17 // a non-VRRP protocol: ignored
	binary.BigEndian.PutUint16(udp[10:12], 0)
	binary.BigEndian.PutUint16(udp[10:12], ipv4HeaderChecksum(udp[:20]))

	v6 := synPacket(t, vrrp.Config{Version: 3, Auth: vrrp.AuthNone}, synSrc6, synDst6, netip.MustParseAddr("2001:db8::1"))
	v6ah := synPacket(t, ahCfg, synSrc6, synDst6, netip.MustParseAddr("2001:db8::1"))
	snapped := good[:30] // cut by a small snap length: IP total length says 40

	path := writePcap(t, layers.LinkTypeEthernet,
		ethernet(0x0800, good),
		ethernet(0x0806, make([]byte, 28)), // ARP: ignored
		ethernet(0x0800, udp),
		ethernet(0x0800, badChecksum),
		ethernet(0x0800, truncated),
		ethernet(0x0800, badVersion),
		// 802.1Q-tagged frame carrying the AH advert.
		append([]byte{1, 0, 0x5e, 0, 0, 0x12, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00}, ah...),
		ethernet(0x0800, ahBadNext),
		ethernet(0x86dd, v6),
		ethernet(0x86dd, v6ah),
		ethernet(0x0800, snapped),
	)
	var stdout, stderr bytes.Buffer
	if code := cmdInspect([]string{"--password", "s3cret", path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr.String())
	}
	wantSummary := "muros-had inspect: " + path + ": 5 VRRP/AH packets decoded, 4 undecodable (ah_bad_next_header 1, bad_version 1, ip_bad_total_len 1, length_mismatch 1)\n"
	if diff := cmp.Diff(wantSummary, stderr.String()); diff != "" {
		t.Errorf("stderr summary (-want +got):\n%s", diff)
	}
	got := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	want := []string{
		`{"src":"192.0.2.1","dst":"224.0.0.18","ttl":255,"version":2,"vrid":7,"priority":200,"advert_interval_ms":1000,"addresses":["192.0.2.100"],"auth":"none","checksum_ok":true,"auth_ok":false}`,
		`{"src":"192.0.2.1","dst":"224.0.0.18","ttl":255,"version":2,"vrid":7,"priority":200,"advert_interval_ms":1000,"addresses":["192.0.2.100"],"auth":"none","checksum_ok":false,"auth_ok":false}`,
		`{"src":"192.0.2.1","dst":"224.0.0.18","error":"vrrp: length_mismatch (got 16, want 20)"}`,
		`{"src":"192.0.2.1","dst":"224.0.0.18","error":"vrrp: bad_version (got 4)"}`,
		`{"src":"192.0.2.1","dst":"224.0.0.18","ttl":255,"version":3,"vrid":7,"priority":200,"advert_interval_ms":1000,"addresses":["192.0.2.100"],"auth":"ah","checksum_ok":true,"auth_ok":true}`,
		`{"src":"192.0.2.1","dst":"224.0.0.18","error":"vrrp: ah_bad_next_header (got 17, want 112)"}`,
		`{"src":"fe80::1","dst":"ff02::12","ttl":255,"version":3,"vrid":7,"priority":200,"advert_interval_ms":1000,"addresses":["2001:db8::1"],"auth":"none","checksum_ok":true,"auth_ok":false}`,
		`{"src":"fe80::1","dst":"ff02::12","ttl":255,"version":3,"vrid":7,"priority":200,"advert_interval_ms":1000,"addresses":["2001:db8::1"],"auth":"ah","checksum_ok":true,"auth_ok":true}`,
		`{"src":"192.0.2.1","dst":"224.0.0.18","error":"vrrp: ip_bad_total_len (got 40, want 30)"}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// Without a password there is no auth_ok, and the AH ICV is not judged.
	got = runInspect(t, path)
	if strings.Contains(strings.Join(got, "\n"), "auth_ok") {
		t.Errorf("auth_ok without --password:\n%s", strings.Join(got, "\n"))
	}
	if len(got) != len(want) {
		t.Errorf("%d lines without password, want %d", len(got), len(want))
	}
}

// TestInspectLinkTypes feeds one packet through every supported link type
// and a pcapng file.
func TestInspectLinkTypes(t *testing.T) {
	pkt := synPacket(t, vrrp.Config{Version: 2, Auth: vrrp.AuthNone}, synSrc, synDst, synVIP)
	want := []string{`{"src":"192.0.2.1","dst":"224.0.0.18","ttl":255,"version":2,"vrid":7,"priority":200,"advert_interval_ms":1000,"addresses":["192.0.2.100"],"auth":"none","checksum_ok":true}`}
	sll := append([]byte{0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00}, pkt...)
	sll2 := append([]byte{0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0}, pkt...)
	loop := append([]byte{2, 0, 0, 0}, pkt...)
	tests := []struct {
		name  string
		lt    layers.LinkType
		frame []byte
	}{
		{"ethernet", layers.LinkTypeEthernet, ethernet(0x0800, pkt)},
		{"sll", layers.LinkTypeLinuxSLL, sll},
		{"sll2", layers.LinkTypeLinuxSLL2, sll2},
		{"raw", layers.LinkTypeRaw, pkt},
		{"ipv4", layers.LinkTypeIPv4, pkt},
		{"null", layers.LinkTypeNull, loop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runInspect(t, writePcap(t, tt.lt, tt.frame))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("pcapng", func(t *testing.T) {
		var buf bytes.Buffer
		w, err := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		f := ethernet(0x0800, pkt)
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(f), Length: len(f)}, f); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "syn.pcapng")
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, runInspect(t, path)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestInspectUsage(t *testing.T) {
	notPcap := filepath.Join(t.TempDir(), "x.pcap")
	if err := os.WriteFile(notPcap, []byte("definitely not a capture file"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		inStderr string
	}{
		{"no file", nil, 2, "usage: muros-had inspect"},
		{"two files", []string{"a", "b"}, 2, "usage: muros-had inspect"},
		{"unknown flag", []string{"--bogus", "x"}, 2, "flag provided but not defined"},
		{"missing file", []string{filepath.Join(t.TempDir(), "none.pcap")}, 1, "no such file"},
		{"not a capture", []string{notPcap}, 1, "pcap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := cmdInspect(tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.inStderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), tt.code, tt.inStderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout not empty: %q", stdout.String())
			}
		})
	}
}

// FuzzInspectCapture feeds arbitrary capture files: errors are fine, panics
// are not, and every output line is one JSON object. Go's minimizer spends up
// to a minute on each new capture-sized input; fuzz with
// -fuzzminimizetime 2s for throughput (over 1,000 execs/s on this 2-core machine).
func FuzzInspectCapture(f *testing.F) {
	for _, name := range []string{"v2-ah.pcap", "v3-ipv6.pcap", "v3-ipv4-multivip.pcap", "v2-none-sll.pcap"} {
		b, err := os.ReadFile(filepath.Join(pcapDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(firstRecords(b, 2)) // small seeds keep minimization fast
	}
	f.Fuzz(func(t *testing.T, capture []byte) {
		in, err := newInspector("pw")
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_ = in.run(bytes.NewReader(capture), &out)
		for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if l == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("bad JSON line %q: %v", l, err)
			}
		}
	})
}

// FuzzInspectIP feeds arbitrary IP packets to the per-packet decoder.
func FuzzInspectIP(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0, 0, 255, 112, 0, 0, 192, 0, 2, 1, 224, 0, 0, 18})
	f.Add([]byte{0x60})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		in, err := newInspector("pw")
		if err != nil {
			t.Fatal(err)
		}
		rec, ok := in.inspectIP(pkt)
		if ok {
			if _, err := json.Marshal(rec); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// firstRecords cuts a little-endian classic pcap after n packet records.
func firstRecords(capture []byte, n int) []byte {
	off := 24
	for range n {
		if off+16 > len(capture) {
			break
		}
		off += 16 + int(binary.LittleEndian.Uint32(capture[off+8:]))
	}
	return capture[:min(off, len(capture))]
}

func ipv4HeaderChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// TestInspectProperty: whatever advert the codec builds, inspect reports its
// fields back, authenticates it with the sender's password and not with
// another one.
func TestInspectProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		auth := rapid.SampledFrom([]vrrp.AuthMode{vrrp.AuthNone, vrrp.AuthPass, vrrp.AuthKeepalivedAH, vrrp.AuthAH}).Draw(rt, "auth")
		version := uint8(3)
		if auth == vrrp.AuthPass || auth == vrrp.AuthKeepalivedAH || (auth == vrrp.AuthNone && rapid.Bool().Draw(rt, "v2")) {
			version = 2
		}
		ipv6 := version == 3 && rapid.Bool().Draw(rt, "ipv6")
		password := rapid.StringMatching(`[a-zA-Z0-9]{1,8}`).Draw(rt, "password")
		interval := time.Duration(rapid.IntRange(1, 255).Draw(rt, "seconds")) * time.Second
		if version == 3 {
			interval = time.Duration(rapid.IntRange(1, 4095).Draw(rt, "centiseconds")) * 10 * time.Millisecond
		}
		n := rapid.IntRange(0, 20).Draw(rt, "addresses")
		src, dst := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("224.0.0.18")
		if ipv6 {
			src, dst = netip.MustParseAddr("fe80::7"), netip.MustParseAddr("ff02::12")
		}
		a := vrrp.Advert{
			VRID:     rapid.Uint8Range(1, 255).Draw(rt, "vrid"),
			Priority: rapid.Byte().Draw(rt, "priority"),
			Interval: interval,
		}
		wantAddrs := []string{}
		for i := range n {
			ad := netip.AddrFrom4([4]byte{10, 0, byte(i), 1})
			if ipv6 {
				ad = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
			}
			a.Addrs = append(a.Addrs, ad)
			wantAddrs = append(wantAddrs, ad.String())
		}
		c, err := vrrp.NewCodec(vrrp.Config{Version: version, Auth: auth, Password: password})
		if err != nil {
			rt.Fatal(err)
		}
		pkt, err := c.AppendPacket(nil, src, dst, &a, vrrp.AHCounter{Epoch: 1 << 24, Seq: rapid.Uint32().Draw(rt, "seq")})
		if err != nil {
			rt.Fatal(err)
		}
		wantAuth := map[vrrp.AuthMode]string{vrrp.AuthNone: "none", vrrp.AuthPass: "pass", vrrp.AuthKeepalivedAH: "ah", vrrp.AuthAH: "ah"}[auth]
		for _, try := range []struct {
			password string
			ok       bool
		}{{password, auth != vrrp.AuthNone}, {password + "x", false}} {
			in, err := newInspector(try.password)
			if err != nil {
				rt.Fatal(err)
			}
			rec, ok := in.inspectIP(pkt)
			if !ok {
				rt.Fatal("packet not recognised as VRRP")
			}
			authOK := try.ok
			if len(try.password) > 8 && (auth == vrrp.AuthPass || auth == vrrp.AuthKeepalivedAH) {
				authOK = true // keepalived keys use the first 8 bytes only
			}
			want := advertRecord{
				Src: src.String(), Dst: dst.String(), TTL: 255, Version: int(version),
				VRID: int(a.VRID), Priority: int(a.Priority), AdvertIntervalMS: interval.Milliseconds(),
				Addresses: wantAddrs, Auth: wantAuth, ChecksumOK: true, AuthOK: &authOK,
			}
			if diff := cmp.Diff(any(want), rec); diff != "" {
				rt.Fatalf("password %q (-want +got):\n%s", try.password, diff)
			}
		}
	})
}
