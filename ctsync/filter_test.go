package ctsync

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/ctsync/ctwire"
)

func TestFilter(t *testing.T) {
	fwLAN := netip.MustParseAddr("10.1.0.1")
	fwWAN := netip.MustParseAddr("203.0.113.1")
	mk := func(proto uint8, os, od, rs, rd string) ctwire.Flow {
		return ctwire.Flow{Proto: proto,
			Orig:  ctwire.Tuple{Src: netip.MustParseAddr(os), Dst: netip.MustParseAddr(od)},
			Reply: ctwire.Tuple{Src: netip.MustParseAddr(rs), Dst: netip.MustParseAddr(rd)}}
	}
	forwarded := mk(6, "10.1.0.5", "198.51.100.1", "198.51.100.1", "10.1.0.5")
	masqueraded := mk(6, "10.1.0.5", "198.51.100.1", "198.51.100.1", "203.0.113.1")
	portForward := mk(6, "198.51.100.9", "203.0.113.1", "10.1.0.80", "198.51.100.9")
	sshToFW := mk(6, "10.1.0.5", "10.1.0.1", "10.1.0.1", "10.1.0.5")
	fromFW := mk(17, "203.0.113.1", "198.51.100.53", "198.51.100.53", "203.0.113.1")
	udp := mk(17, "10.1.0.5", "198.51.100.53", "198.51.100.53", "10.1.0.5")
	dmz := mk(6, "10.9.0.5", "198.51.100.1", "198.51.100.1", "10.9.0.5")

	tests := []struct {
		name   string
		filter Filter
		flows  []ctwire.Flow
		want   []bool
	}{
		{"default: forwarded and NAT'd yes, firewall's own no", Filter{},
			[]ctwire.Flow{forwarded, masqueraded, portForward, sshToFW, fromFW},
			[]bool{true, true, true, false, false}},
		{"replicate local", Filter{ReplicateLocal: true},
			[]ctwire.Flow{sshToFW, fromFW}, []bool{true, true}},
		{"protocols", Filter{Protocols: []uint8{6}},
			[]ctwire.Flow{forwarded, udp}, []bool{true, false}},
		{"exclude", Filter{Exclude: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}},
			[]ctwire.Flow{forwarded, dmz}, []bool{true, false}},
		{"include", Filter{Include: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}},
			[]ctwire.Flow{forwarded, dmz}, []bool{false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Sync{cfg: Config{Filter: tt.filter}, local: map[netip.Addr]bool{fwLAN: true, fwWAN: true}}
			var got []bool
			for i := range tt.flows {
				got = append(got, s.replicate(&tt.flows[i]))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no interface", Config{Password: "x", StateDir: dir}},
		{"no password", Config{Interface: "lo", StateDir: dir}},
		{"no state directory", Config{Interface: "lo", Password: "x"}},
		{"unicast group", Config{Interface: "lo", Password: "x", StateDir: dir, Group: netip.MustParseAddr("10.0.0.1")}},
		{"no such interface", Config{Interface: "nonexistent0", Password: "x", StateDir: dir}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := New(tt.cfg, nil); err == nil {
				s.closeSockets()
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

// TestBackupFiltersReceivedRecords: the backup keeps only the records its
// own filter selects (a flow it excludes would never be purged), DESTROYs
// included (a record naming the backup's own SSH session must not end it).
func TestBackupFiltersReceivedRecords(t *testing.T) {
	ownSSH := ctwire.Flow{Op: ctwire.OpDestroy, Proto: 6,
		Orig:  ctwire.Tuple{Src: netip.MustParseAddr("10.1.0.5"), Dst: netip.MustParseAddr("10.1.0.2"), SrcPort: 50000, DstPort: 22},
		Reply: ctwire.Tuple{Src: netip.MustParseAddr("10.1.0.2"), Dst: netip.MustParseAddr("10.1.0.5"), SrcPort: 22, DstPort: 50000}}
	dmz := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Timeout: 60,
		Orig:  ctwire.Tuple{Src: netip.MustParseAddr("10.9.0.5"), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: 1000, DstPort: 443},
		Reply: ctwire.Tuple{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("10.9.0.5"), SrcPort: 443, DstPort: 1000}}
	kept := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Timeout: 60,
		Orig:  ctwire.Tuple{Src: netip.MustParseAddr("10.1.0.7"), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: 1000, DstPort: 443},
		Reply: ctwire.Tuple{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("10.1.0.7"), SrcPort: 443, DstPort: 1000}}
	s := &Sync{
		cfg:   Config{Filter: Filter{Exclude: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}},
		local: map[netip.Addr]bool{netip.MustParseAddr("10.1.0.2"): true},
		book:  &epochBook{},
	}
	s.recv = s.newReceiver()
	bindReceiver(t, s)
	h := ctwire.Header{Type: ctwire.TypeData, Epoch: testEpoch, Seq: 2}
	b := ctwire.AppendHeader(nil, &h)
	for _, f := range []ctwire.Flow{ownSSH, dmz, kept} {
		b = ctwire.AppendFlow(b, &f)
	}
	ctwire.SetPayload(b, 3)
	h, p, err := ctwire.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	s.onDatagram(&datagram{h: h, p: p})
	var got []ctwire.Key
	for _, f := range s.batch {
		got = append(got, f.Key())
	}
	if diff := cmp.Diff([]ctwire.Key{kept.Key()}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("records handed to the kernel (-want +got):\n%s", diff)
	}
	if n := s.counters.RecordsFiltered; n != 2 {
		t.Fatalf("filtered counter %d, want 2", n)
	}
}
