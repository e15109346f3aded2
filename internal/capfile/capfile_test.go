package capfile

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"pgregory.net/rapid"
)

// pkt is a packet as a reader returns it.
type pkt struct {
	Link uint16
	Data []byte
}

// readAll reads the file b to its end.
func readAll(b []byte) ([]pkt, error) {
	rd, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var out []pkt
	for {
		d, l, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, pkt{l, bytes.Clone(d)})
	}
}

// pcapgoAll reads b with gopacket's pcapgo: the reference.
func pcapgoAll(t *testing.T, b []byte) []pkt {
	t.Helper()
	var next func() ([]byte, uint16, error)
	if binary.BigEndian.Uint32(b) == ngSHB {
		r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions)
		if err != nil {
			t.Fatal(err)
		}
		next = func() ([]byte, uint16, error) {
			d, ci, err := r.ReadPacketData()
			if err != nil {
				return nil, 0, err
			}
			ifc, err := r.Interface(ci.InterfaceIndex)
			return d, uint16(ifc.LinkType), err
		}
	} else {
		r, err := pcapgo.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		next = func() ([]byte, uint16, error) {
			d, _, err := r.ReadPacketData()
			return d, uint16(r.LinkType()), err
		}
	}
	var out []pkt
	for {
		d, link, err := next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pkt{link, d})
	}
}

// The captures in testdata (tcpdump's, Ethernet and Linux cooked) read as
// pcapgo reads them.
func TestRepositoryCaptures(t *testing.T) {
	files, err := filepath.Glob("../../testdata/pcaps/*.pcap")
	if err != nil || len(files) < 10 {
		t.Fatalf("captures: %v, %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readAll(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(got) == 0 {
			t.Fatalf("%s: no packets", f)
		}
		if d := cmp.Diff(pcapgoAll(t, b), got); d != "" {
			t.Errorf("%s (-pcapgo +capfile):\n%s", f, d)
		}
	}
}

// Files written by pcapgo's writers, µs and ns classic pcap and pcapng
// with several interfaces, read back packet for packet.
func TestWrittenByPcapgo(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		links := []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeRaw, layers.LinkTypeLinuxSLL2, layers.LinkTypeNull}
		packets := rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), 0, 1600), 0, 20).Draw(t, "packets")
		link := rapid.SampledFrom(links).Draw(t, "link")
		var want []pkt
		for _, p := range packets {
			want = append(want, pkt{uint16(link), p})
		}
		for _, nanos := range []bool{false, true} {
			var buf bytes.Buffer
			w := pcapgo.NewWriter(&buf)
			if nanos {
				w = pcapgo.NewWriterNanos(&buf)
			}
			if err := w.WriteFileHeader(65536, link); err != nil {
				t.Fatal(err)
			}
			for i, p := range packets {
				if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(int64(i), 7), CaptureLength: len(p), Length: len(p) + i}, p); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readAll(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, got, cmp.Comparer(bytes.Equal)); d != "" {
				t.Fatalf("classic pcap, ns %v (-want +got):\n%s", nanos, d)
			}
		}

		// pcapng: packets spread over interfaces of different link types.
		var buf bytes.Buffer
		w, err := pcapgo.NewNgWriterInterface(&buf, pcapgo.NgInterface{LinkType: links[0], SnapLength: 65536}, pcapgo.DefaultNgWriterOptions)
		if err != nil {
			t.Fatal(err)
		}
		n := rapid.IntRange(1, len(links)).Draw(t, "interfaces")
		for _, l := range links[1:n] {
			if _, err := w.AddInterface(pcapgo.NgInterface{LinkType: l, SnapLength: 65536}); err != nil {
				t.Fatal(err)
			}
		}
		want = want[:0]
		for i, p := range packets {
			ifc := rapid.IntRange(0, n-1).Draw(t, "interface")
			ci := gopacket.CaptureInfo{Timestamp: time.Unix(int64(i), 0), CaptureLength: len(p), Length: len(p), InterfaceIndex: ifc}
			if err := w.WritePacket(ci, p); err != nil {
				t.Fatal(err)
			}
			want = append(want, pkt{uint16(links[ifc]), p})
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		got, err := readAll(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got, cmp.Comparer(bytes.Equal)); d != "" {
			t.Fatalf("pcapng (-want +got):\n%s", d)
		}
	})
}

// ngFile builds pcapng blocks by hand, in either byte order.
type ngFile struct {
	buf   []byte
	order binary.AppendByteOrder
}

func (f *ngFile) block(typ uint32, body []byte) {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	total := uint32(12 + len(body))
	f.buf = f.order.AppendUint32(f.buf, typ)
	f.buf = f.order.AppendUint32(f.buf, total)
	f.buf = append(f.buf, body...)
	f.buf = f.order.AppendUint32(f.buf, total)
}

func (f *ngFile) section(order binary.AppendByteOrder) {
	f.order = order
	var b []byte
	b = order.AppendUint32(b, ngBOM)
	b = order.AppendUint16(b, 1)
	b = order.AppendUint16(b, 0)
	b = order.AppendUint64(b, ^uint64(0)) // section length unknown
	f.block(ngSHB, b)
}

func (f *ngFile) iface(link uint16, snaplen uint32) {
	var b []byte
	b = f.order.AppendUint16(b, link)
	b = f.order.AppendUint16(b, 0)
	b = f.order.AppendUint32(b, snaplen)
	f.block(ngIDB, b)
}

func (f *ngFile) enhanced(ifc uint32, data []byte) {
	var b []byte
	b = f.order.AppendUint32(b, ifc)
	b = f.order.AppendUint64(b, 12345)
	b = f.order.AppendUint32(b, uint32(len(data)))
	b = f.order.AppendUint32(b, uint32(len(data)))
	f.block(ngEPB, append(b, data...))
}

func (f *ngFile) obsolete(ifc uint16, data []byte) {
	var b []byte
	b = f.order.AppendUint16(b, ifc)
	b = f.order.AppendUint16(b, 0)
	b = f.order.AppendUint64(b, 12345)
	b = f.order.AppendUint32(b, uint32(len(data)))
	b = f.order.AppendUint32(b, uint32(len(data)))
	f.block(ngPB, append(b, data...))
}

func (f *ngFile) simple(orig uint32, data []byte) {
	f.block(ngSPB, append(f.order.AppendUint32(nil, orig), data...))
}

// A big-endian section, then a little-endian one: every packet block
// kind, the interfaces forgotten at the new section, a block of a kind
// this package skips, and a packet on an interface never described.
func TestPcapngSectionsAndBlocks(t *testing.T) {
	f := &ngFile{}
	f.section(binary.BigEndian)
	f.iface(LinkEthernet, 0)
	f.iface(LinkLinuxSLL, 0)
	f.enhanced(1, []byte{1, 2, 3})
	f.block(5, []byte{0, 0, 0, 0}) // interface statistics: skipped
	f.obsolete(0, []byte{4, 5, 6, 7, 8})
	f.simple(6, []byte{9, 10, 11, 12, 13, 14})
	f.section(binary.LittleEndian)
	f.enhanced(1, []byte{15}) // no interface in this section yet
	f.iface(LinkRaw, 4)
	f.simple(6, []byte{16, 17, 18, 19, 20, 21, 22, 23}) // cut to the snaplen
	f.enhanced(0, nil)
	got, err := readAll(f.buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []pkt{
		{LinkLinuxSLL, []byte{1, 2, 3}},
		{LinkEthernet, []byte{4, 5, 6, 7, 8}},
		{LinkEthernet, []byte{9, 10, 11, 12, 13, 14}},
		{LinkUnknown, []byte{15}},
		{LinkRaw, []byte{16, 17, 18, 19}},
		{LinkRaw, []byte{}},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(bytes.Equal)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// A gzip-compressed file (tcpdump -z gzip, pcapgo read those too) reads as
// the file itself; a damaged or cut stream is the file's error.
func TestGzip(t *testing.T) {
	f := &ngFile{}
	f.section(binary.BigEndian)
	f.iface(LinkRaw, 0)
	f.enhanced(0, []byte{0x45, 1, 2, 3})
	classic, err := os.ReadFile("../../testdata/pcaps/v3-ipv4.pcap")
	if err != nil {
		t.Fatal(err)
	}
	for name, plain := range map[string][]byte{"pcap": classic, "pcapng": f.buf} {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		if _, err := zw.Write(plain); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		want, err := readAll(plain)
		if err != nil || len(want) == 0 {
			t.Fatalf("%s: %d packets, %v", name, len(want), err)
		}
		got, err := readAll(z.Bytes())
		if err != nil {
			t.Fatalf("%s, gzip: %v", name, err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s, gzip (-plain +gzip):\n%s", name, d)
		}
		damaged := bytes.Clone(z.Bytes())
		damaged[len(damaged)-6] ^= 0xff // the CRC-32 of the data
		if _, err := readAll(damaged); !errors.Is(err, ErrFormat) {
			t.Errorf("%s, gzip with a wrong checksum: %v, want an error wrapping ErrFormat", name, err)
		}
		if _, err := readAll(z.Bytes()[:len(z.Bytes())/2]); !errors.Is(err, ErrFormat) {
			t.Errorf("%s, gzip cut in half: %v, want an error wrapping ErrFormat", name, err)
		}
	}
}

// A big-endian classic file (what a SPARC or a PowerPC wrote).
func TestClassicBigEndian(t *testing.T) {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, pcapNano)
	b = binary.BigEndian.AppendUint16(b, 2)
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 12)...)
	b = binary.BigEndian.AppendUint32(b, 0x0400_0000|uint32(LinkLinuxSLL)) // FCS bits set
	for _, p := range [][]byte{{1}, {2, 3}} {
		b = append(b, make([]byte, 8)...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = binary.BigEndian.AppendUint32(b, 9000)
		b = append(b, p...)
	}
	got, err := readAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]pkt{{LinkLinuxSLL, []byte{1}}, {LinkLinuxSLL, []byte{2, 3}}}, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// Every damage is an error wrapping ErrFormat, never a panic, and a
// truncated file gives the packets before the cut: io.EOF only where a
// packet ends.
func TestDamagedFiles(t *testing.T) {
	f := &ngFile{}
	f.section(binary.LittleEndian)
	f.iface(LinkEthernet, 0)
	f.enhanced(0, bytes.Repeat([]byte{0xaa}, 61))
	f.simple(10, bytes.Repeat([]byte{0xbb}, 10))
	var classic bytes.Buffer
	w := pcapgo.NewWriter(&classic)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{bytes.Repeat([]byte{1}, 33), bytes.Repeat([]byte{2}, 7)} {
		if err := w.WritePacket(gopacket.CaptureInfo{CaptureLength: len(p), Length: len(p)}, p); err != nil {
			t.Fatal(err)
		}
	}
	for name, whole := range map[string][]byte{"pcapng": f.buf, "pcap": classic.Bytes()} {
		all, err := readAll(whole)
		if err != nil || len(all) != 2 {
			t.Fatalf("%s: %d packets, %v", name, len(all), err)
		}
		ends := map[int]bool{}
		for i := 0; i <= len(whole); i++ {
			got, err := readAll(whole[:i])
			if d := cmp.Diff(all[:len(got)], got, cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("%s cut at %d: packets differ (-whole +cut):\n%s", name, i, d)
			}
			if err == nil {
				ends[i] = true
			} else if !errors.Is(err, ErrFormat) {
				t.Fatalf("%s cut at %d: %v, want an error wrapping ErrFormat", name, i, err)
			}
		}
		// Clean ends: at every block's end (pcapng: the section header,
		// the interface, two packets), after the header and each packet
		// (classic).
		if want := map[string]int{"pcapng": 4, "pcap": 3}[name]; !ends[len(whole)] || len(ends) != want {
			t.Errorf("%s: clean ends at %v, want %d", name, ends, want)
		}
	}

	for name, b := range map[string][]byte{
		"empty":             nil,
		"unknown magic":     []byte("GIF89a, not a capture file at all"),
		"pcap version 3":    append(binary.LittleEndian.AppendUint32(nil, pcapMicro), append([]byte{3, 0, 4, 0}, make([]byte, 16)...)...),
		"huge pcap record":  append(bytes.Clone(classic.Bytes()[:24]), append(make([]byte, 8), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)...),
		"block length 13":   append(bytes.Clone(f.buf[:28]), 6, 0, 0, 0, 13, 0, 0, 0),
		"trailing mismatch": mismatched(f.buf),
		"no section":        binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, ngSHB), 5),
	} {
		if _, err := readAll(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want an error wrapping ErrFormat", name, err)
		}
	}

	// Every block type with an empty or short body (12 and 16 bytes in
	// all), after a section and an interface.
	for _, typ := range []uint32{ngIDB, ngPB, ngSPB, 4, 5, ngEPB, 7, 0x80000001} {
		for _, body := range [][]byte{nil, {1, 2, 3, 4}} {
			b := &ngFile{}
			b.section(binary.LittleEndian)
			b.iface(LinkEthernet, 0)
			b.block(typ, body)
			got, err := readAll(b.buf)
			switch typ {
			case 4, 5, 7, 0x80000001: // skipped: the file ends cleanly
				if err != nil || len(got) != 0 {
					t.Errorf("block type %d of %d bytes: %v, %v; want no packet and no error", typ, 12+len(body), got, err)
				}
			default:
				if !errors.Is(err, ErrFormat) {
					t.Errorf("block type %d of %d bytes: %v, %v; want an error wrapping ErrFormat", typ, 12+len(body), got, err)
				}
			}
		}
	}
}

// mismatched is b with its last block's trailing length changed.
func mismatched(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-1] ^= 0x10
	return b
}

// The reader is given files from anywhere.
func FuzzReader(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/pcaps/*.pcap")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	ng := &ngFile{}
	ng.section(binary.BigEndian)
	ng.iface(LinkEthernet, 8)
	ng.enhanced(0, []byte{1, 2, 3})
	ng.simple(20, bytes.Repeat([]byte{1}, 8))
	ng.obsolete(3, nil)
	f.Add(ng.buf)
	for _, typ := range []uint32{ngIDB, ngPB, ngSPB, ngEPB} {
		for _, body := range [][]byte{nil, {1, 2, 3, 4}} {
			b := &ngFile{}
			b.section(binary.BigEndian)
			b.block(typ, body)
			f.Add(b.buf)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("NewReader: %v, want an error wrapping ErrFormat", err)
			}
			return
		}
		for range len(b) + 1 {
			d, _, err := rd.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("Next: %v, want io.EOF or an error wrapping ErrFormat", err)
				}
				return
			}
			if len(d) > len(b) {
				t.Fatalf("a packet of %d bytes from a file of %d", len(d), len(b))
			}
		}
		t.Fatal("more packets than the file has bytes")
	})
}

// Reading a packet allocates nothing once the buffer has grown, in
// either format: the headers are read into the Reader's own array (a
// local one escaped through io.Reader, one allocation per packet).
func TestReaderAllocatesNothing(t *testing.T) {
	f := &ngFile{}
	f.section(binary.LittleEndian)
	f.iface(LinkEthernet, 0)
	for range 1000 {
		f.enhanced(0, make([]byte, 100))
	}
	var classic bytes.Buffer
	w := pcapgo.NewWriter(&classic)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if err := w.WritePacket(gopacket.CaptureInfo{CaptureLength: 100, Length: 100}, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range map[string][]byte{"pcapng": f.buf, "pcap": classic.Bytes()} {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := rd.Next(); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(200, func() { _, _, _ = rd.Next() }); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", name, n)
		}
	}
}
