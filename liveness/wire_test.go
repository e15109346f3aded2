package liveness

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeyLen) }

func testCodec(t testing.TB, b byte) *Codec {
	t.Helper()
	c, err := NewCodec(testKey(b))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sampleMessage() Message {
	return Message{
		Type: TypeHeartbeat, Path: PathSync, Role: RoleMaster, Priority: 150, Flags: FlagSyncCarrier,
		Epoch: 0x0102030405060708, Seq: 42, EchoEpoch: 0x1112131415161718, EchoSeq: 7,
		Interval: time.Millisecond, VRIDs: func() (v VRIDSet) { v.Add(10); v.Add(11); v.Add(255); return }(),
	}
}

func TestRoundTrip(t *testing.T) {
	c := testCodec(t, 1)
	for _, m := range []Message{
		sampleMessage(),
		{Type: TypeProbe, Path: PathPeer, Role: RoleBackup, Priority: 100, Epoch: 1, Seq: 1, Interval: 100 * time.Millisecond},
		{Type: TypeReply, Path: PathPeer, Role: RoleFault, Epoch: ^uint64(0), Seq: ^uint64(0), EchoEpoch: 9, EchoSeq: 9},
		{Type: TypeLeaving, Path: PathSync, Role: RoleInit, Epoch: 5, Seq: 6},
	} {
		b := c.Append(nil, m)
		if len(b) != Size {
			t.Fatalf("%v: %d bytes", m.Type, len(b))
		}
		got, err := c.Parse(b)
		if err != nil {
			t.Fatalf("%v: %v", m.Type, err)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

// TestWireLayout pins the byte layout the package doc draws.
func TestWireLayout(t *testing.T) {
	c := testCodec(t, 1)
	b := c.Append(nil, sampleMessage())
	want := []byte{
		1, 1, 1, 3, 150, 1, 0, 0,
		1, 2, 3, 4, 5, 6, 7, 8,
		0, 0, 0, 0, 0, 0, 0, 42,
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
		0, 0, 0, 0, 0, 0, 0, 7,
		0, 0, 0x03, 0xe8, 0, 0, 0, 0,
		0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
	}
	if diff := cmp.Diff(want, b[:macOffset]); diff != "" {
		t.Errorf("layout (-want +got):\n%s", diff)
	}
}

func TestParseRefuses(t *testing.T) {
	c := testCodec(t, 1)
	good := c.Append(nil, sampleMessage())
	resign := func(edit func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		edit(b)
		return append(b[:macOffset], c.tag(b[:macOffset])...)
	}
	tests := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"empty", nil, ReasonShort},
		{"short", good[:Size-1], ReasonShort},
		{"long", append(append([]byte(nil), good...), 0), ReasonShort},
		{"version", resign(func(b []byte) { b[0] = 2 }), ReasonVersion},
		{"other key", testCodec(t, 2).Append(nil, sampleMessage()), ReasonMAC},
		{"flipped bit", func() []byte { b := append([]byte(nil), good...); b[20] ^= 1; return b }(), ReasonMAC},
		{"flipped mac", func() []byte { b := append([]byte(nil), good...); b[Size-1] ^= 1; return b }(), ReasonMAC},
		{"type 0", resign(func(b []byte) { b[1] = 0 }), ReasonMalformed},
		{"type 5", resign(func(b []byte) { b[1] = 5 }), ReasonMalformed},
		{"path 3", resign(func(b []byte) { b[2] = 3 }), ReasonMalformed},
		{"role 0", resign(func(b []byte) { b[3] = 0 }), ReasonMalformed},
		{"role 5", resign(func(b []byte) { b[3] = 5 }), ReasonMalformed},
		{"reserved 6", resign(func(b []byte) { b[6] = 1 }), ReasonMalformed},
		{"reserved 44", resign(func(b []byte) { b[47] = 1 }), ReasonMalformed},
		{"flipped vrid", func() []byte { b := append([]byte(nil), good...); b[60] ^= 1; return b }(), ReasonMAC},
		{"zero epoch", resign(func(b []byte) { clear(b[8:16]) }), ReasonMalformed},
		{"zero seq", resign(func(b []byte) { clear(b[16:24]) }), ReasonMalformed},
		{"half echo", resign(func(b []byte) { clear(b[32:40]) }), ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Parse(tt.b)
			if got := ReasonOf(err); got != tt.want {
				t.Errorf("reason %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

// TestParseAcceptsUnknownFlags: a flag of a later release is not a
// reason to refuse an authentic message (it would break a rolling
// upgrade); the flags this release knows read as sent.
func TestParseAcceptsUnknownFlags(t *testing.T) {
	c := testCodec(t, 1)
	m := sampleMessage()
	m.Flags = FlagSyncCarrier | 0x80 | 0x02
	got, err := c.Parse(c.Append(nil, m))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got.Flags&FlagSyncCarrier == 0 || got.Flags != m.Flags {
		t.Errorf("flags %#x, want %#x as sent", got.Flags, m.Flags)
	}
}

func TestNewCodecRefusesShortKey(t *testing.T) {
	if _, err := NewCodec(make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}
}

func TestCodecDoesNotAllocate(t *testing.T) {
	c := testCodec(t, 1)
	buf := make([]byte, 0, Size)
	m := sampleMessage()
	if n := testing.AllocsPerRun(100, func() {
		b := c.Append(buf[:0], m)
		if _, err := c.Parse(b); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per append+parse", n)
	}
}

// FuzzParse: Parse never panics, accepts only what Append can produce, and
// what it accepts re-encodes to the same bytes.
func FuzzParse(f *testing.F) {
	c := testCodec(f, 1)
	f.Add(c.Append(nil, sampleMessage()))
	f.Add([]byte{1})
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Unauthenticated input first: it must be refused.
		m, err := c.Parse(b)
		if err == nil {
			if !bytes.Equal(c.Append(nil, m), b) {
				t.Fatalf("accepted %x but re-encodes differently", b)
			}
		} else if ReasonOf(err) == "" {
			t.Fatalf("untyped error %v", err)
		}
		// The same bytes signed: only the field checks remain.
		if len(b) >= macOffset {
			s := append([]byte(nil), b[:macOffset]...)
			s[0] = Version
			s = append(s, c.tag(s)...)
			m, err := c.Parse(s)
			if err != nil {
				if ReasonOf(err) != ReasonMalformed {
					t.Fatalf("signed input refused for %v", err)
				}
				return
			}
			if !bytes.Equal(c.Append(nil, m), s) {
				t.Fatalf("accepted %x but re-encodes differently", s)
			}
		}
	})
}
