package dbsync

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func sampleBatch() Batch {
	data := []byte("lease line\n")
	return Batch{Revision: 42, Entries: []Entry{
		{Op: OpPut, Flags: FlagSQLite, Mode: 0o640, Path: "muros-db/config.db", SHA256: sha256.Sum256([]byte("db")), Data: []byte("db")},
		{Op: OpAppend, Mode: 0o644, Path: "kea-leases/kea-leases4.csv", Offset: 100, PrefixSHA256: [32]byte{1}, SHA256: [32]byte{2}, Data: data},
		{Op: OpDelete, Path: "muros-db/old/file"},
		{Op: OpPut, Mode: 0o600, Path: "muros-db/empty", SHA256: sha256.Sum256(nil), Data: []byte{}},
	}}
}

func TestBatchRoundTrip(t *testing.T) {
	in := sampleBatch()
	b, err := AppendBatch([]byte("prefix"), in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("prefix")) {
		t.Fatal("AppendBatch did not append")
	}
	out, err := ParseBatch(b[len("prefix"):], nil)
	if err != nil {
		t.Fatal(err)
	}
	// nil and empty Data are the same on the wire.
	in.Entries[2].Data = nil
	out.Entries[2].Data = nil
	if d := cmp.Diff(in, out); d != "" {
		t.Fatalf("round trip (-in +out):\n%s", d)
	}
}

// The header and the first entry's fixed part, byte by byte as documented.
func TestBatchLayout(t *testing.T) {
	b, err := AppendBatch(nil, Batch{Revision: 0x0102030405060708, Entries: []Entry{{Op: OpDelete, Mode: 0o644, Path: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'M', 'H', 'S', 'B', 1, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8,
		3, 0, 0, 0, 0x01, 0xa4, 0, 1, 'a'}
	if d := cmp.Diff(want, b); d != "" {
		t.Fatalf("layout (-want +got):\n%s", d)
	}
}

func TestParseBatchErrors(t *testing.T) {
	good, _ := AppendBatch(nil, sampleBatch())
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only short", good[:10], ErrShort},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		{"version", mut(func(b []byte) []byte { b[4] = 2; return b }), ErrVersion},
		{"batch flags", mut(func(b []byte) []byte { b[5] = 1; return b }), ErrFlags},
		{"no entries", mut(func(b []byte) []byte { b[6], b[7] = 0, 0; return b[:16] }), ErrEmptyBatch},
		{"truncated entry", good[:len(good)-1], ErrShort},
		{"trailing", append(bytes.Clone(good), 0), ErrTrailing},
		{"op", mut(func(b []byte) []byte { b[16] = 9; return b }), ErrOp},
		{"entry flags", mut(func(b []byte) []byte { b[17] = 0x80; return b }), ErrFlags},
		{"mode", mut(func(b []byte) []byte { b[18] = 1; return b }), ErrMode},
		{"path len 0", mut(func(b []byte) []byte { b[22], b[23] = 0, 0; return b }), ErrPathLen},
		{"path len huge", mut(func(b []byte) []byte { b[22], b[23] = 0xff, 0xff; return b }), ErrPathLen},
		{"bad op, nothing after", append(bytes.Clone(good[:16]), 9, 0, 0, 0, 0, 0, 0, 1), ErrOp},
		{"more entries than sent", mut(func(b []byte) []byte { b[7] = 5; return b }), ErrShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBatch(tt.in, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseBatch = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBatchDigest(t *testing.T) {
	base := sampleBatch()
	d0 := BatchDigest(base)
	if BatchDigest(sampleBatch()) != d0 {
		t.Fatal("digest not deterministic")
	}
	mutations := map[string]func(b *Batch){
		"revision": func(b *Batch) { b.Revision++ },
		"op":       func(b *Batch) { b.Entries[2].Op = OpPut },
		"flags":    func(b *Batch) { b.Entries[0].Flags = 0 },
		"mode":     func(b *Batch) { b.Entries[0].Mode = 0o600 },
		"path":     func(b *Batch) { b.Entries[0].Path = "muros-db/other.db" },
		"content":  func(b *Batch) { b.Entries[0].SHA256[0] ^= 1 },
		"offset":   func(b *Batch) { b.Entries[1].Offset++ },
		"prefix":   func(b *Batch) { b.Entries[1].PrefixSHA256[0] ^= 1 },
		"length":   func(b *Batch) { b.Entries[1].Data = b.Entries[1].Data[:3] },
		"entries":  func(b *Batch) { b.Entries = b.Entries[:3] },
	}
	for name, m := range mutations {
		b := sampleBatch()
		m(&b)
		if BatchDigest(b) == d0 {
			t.Errorf("changing %s keeps the digest", name)
		}
	}
}

func TestBatchRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 5).Draw(t, "n")
		b := Batch{Revision: rapid.Uint64().Draw(t, "rev")}
		for i := 0; i < n; i++ {
			e := Entry{
				Op:   Op(rapid.IntRange(1, 3).Draw(t, "op")),
				Mode: uint32(rapid.IntRange(0, 0o7777).Draw(t, "mode")),
				Path: rapid.StringMatching(`[a-z]{1,8}(/[a-z0-9.]{1,8}){0,3}`).Draw(t, "path"),
			}
			if e.Op != OpDelete {
				e.Data = rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "data")
				e.SHA256 = sha256.Sum256(e.Data)
			}
			if e.Op == OpAppend {
				e.Offset = rapid.Uint64Range(0, 1<<30).Draw(t, "off")
			}
			if e.Op == OpPut {
				e.Flags = uint8(rapid.IntRange(0, 1).Draw(t, "flags"))
			}
			if e.Data == nil && e.Op != OpDelete {
				e.Data = []byte{}
			}
			b.Entries = append(b.Entries, e)
		}
		w, err := AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseBatch(w, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(b, got); d != "" {
			t.Fatalf("(-want +got):\n%s", d)
		}
		size := batchHeaderLen
		for i := range b.Entries {
			size += encodedEntryLen(&b.Entries[i])
		}
		if size != len(w) {
			t.Fatalf("encodedEntryLen sum %d, wire %d", size, len(w))
		}
	})
}

// FuzzParseBatch: the push body is network input. Malformed input must be an
// error, never a panic, and anything accepted must re-encode identically.
func FuzzParseBatch(f *testing.F) {
	good, _ := AppendBatch(nil, sampleBatch())
	f.Add(good)
	f.Add(good[:20])
	f.Add([]byte("MHSB\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x03\x00\x00\x00\x00\x00\x00\x05../.."))
	f.Add([]byte{})
	f.Add(append(bytes.Clone(good[:16]), 9, 0, 0, 0, 0, 0, 0, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		batch, err := ParseBatch(b, nil)
		if err != nil {
			return
		}
		out, err := AppendBatch(nil, batch)
		if err != nil {
			t.Fatalf("accepted batch does not re-encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestParseBatchAllocs(t *testing.T) {
	w, _ := AppendBatch(nil, sampleBatch())
	entries := make([]Entry, 0, 8)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ParseBatch(w, entries); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("ParseBatch allocates %v times per call, want 0", n)
	}
}

func BenchmarkParseBatch(b *testing.B) {
	w, _ := AppendBatch(nil, sampleBatch())
	entries := make([]Entry, 0, 8)
	b.ReportAllocs()
	b.SetBytes(int64(len(w)))
	for b.Loop() {
		if _, err := ParseBatch(w, entries); err != nil {
			b.Fatal(err)
		}
	}
}
