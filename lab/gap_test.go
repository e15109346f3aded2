package lab

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"pgregory.net/rapid"
)

const ms = time.Millisecond

func TestGapMeter(t *testing.T) {
	type want struct{ Gap, From time.Duration }
	tests := []struct {
		name string
		obs  []time.Duration
		end  time.Duration
		want want
	}{
		{"no reply at all", nil, 100 * ms, want{100 * ms, 0}},
		{"late first reply", []time.Duration{30 * ms, 31 * ms}, 32 * ms, want{30 * ms, 0}},
		{"gap in the middle", []time.Duration{1 * ms, 2 * ms, 50 * ms, 51 * ms}, 52 * ms, want{48 * ms, 2 * ms}},
		{"silent at the end", []time.Duration{1 * ms, 2 * ms}, 90 * ms, want{88 * ms, 2 * ms}},
		{"backwards ignored", []time.Duration{10 * ms, 5 * ms, 12 * ms}, 12 * ms, want{10 * ms, 0}},
		{"end before last", []time.Duration{1 * ms, 3 * ms}, 2 * ms, want{2 * ms, 1 * ms}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g GapMeter
			for _, at := range tc.obs {
				g.Observe(at)
			}
			g.Finish(tc.end)
			gap, from := g.Max()
			if diff := cmp.Diff(tc.want, want{gap, from}); diff != "" {
				t.Errorf("Max (-want +got):\n%s", diff)
			}
		})
	}
}

// The largest gap is exactly the largest difference between consecutive
// sorted instants, with 0 and end as bounds.
func TestGapMeterProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		steps := rapid.SliceOf(rapid.Int64Range(0, int64(time.Second))).Draw(t, "steps")
		tailGap := time.Duration(rapid.Int64Range(0, int64(time.Second)).Draw(t, "tail"))
		var g GapMeter
		var at, want, wantFrom time.Duration
		for _, s := range steps {
			next := at + time.Duration(s)
			if next-at > want {
				want, wantFrom = next-at, at
			}
			at = next
			g.Observe(at)
		}
		end := at + tailGap
		if end-at > want {
			want, wantFrom = end-at, at
		}
		g.Finish(end)
		gap, from := g.Max()
		if gap != want || from != wantFrom {
			t.Fatalf("Max = %v from %v, want %v from %v", gap, from, want, wantFrom)
		}
		if g.Count() != len(steps) {
			t.Fatalf("Count = %d, want %d", g.Count(), len(steps))
		}
	})
}

func TestSeqTracker(t *testing.T) {
	s := NewSeqTracker(5)
	for _, seq := range []uint64{0, 2, 1, 2, 7, 4, 3} {
		s.Add(seq)
	}
	got := [4]int{s.Unique, s.Duplicates, s.Reordered, s.Bogus}
	if diff := cmp.Diff([4]int{5, 1, 2, 1}, got); diff != "" {
		t.Errorf("unique, duplicates, reordered, bogus (-want +got):\n%s", diff)
	}
}

func TestProbeCodec(t *testing.T) {
	b := AppendProbe(nil, 0x0102030405060708, 1500*time.Microsecond)
	want := []byte{'M', 'H', 'P', 'R', 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0x16, 0xe3, 0x60}
	if diff := cmp.Diff(want, b); diff != "" {
		t.Fatalf("AppendProbe bytes (-want +got):\n%s", diff)
	}
	seq, sent, err := ParseProbe(b)
	if err != nil || seq != 0x0102030405060708 || sent != 1500*time.Microsecond {
		t.Fatalf("ParseProbe = %x, %v, %v", seq, sent, err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrProbeShort},
		{"short", b[:19], ErrProbeShort},
		{"long", append(append([]byte(nil), b...), 0), ErrProbeShort},
		{"magic", append([]byte("XHPR"), b[4:]...), ErrProbeMagic},
	} {
		if _, _, err := ParseProbe(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		b = AppendProbe(b[:0], 7, time.Second)
		ParseProbe(b)
	}); n != 0 {
		t.Errorf("probe codec allocates %v times per round trip", n)
	}
}

func FuzzParseProbe(f *testing.F) {
	f.Add(AppendProbe(nil, 0, 0))
	f.Add(AppendProbe(nil, 1<<63, time.Hour))
	f.Add([]byte("MHPR"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, sent, err := ParseProbe(b)
		if err != nil {
			return
		}
		if got := AppendProbe(nil, seq, sent); string(got) != string(b) {
			t.Fatalf("round trip %x -> %x", b, got)
		}
	})
}

func BenchmarkProbeCodec(b *testing.B) {
	buf := make([]byte, 0, ProbeLen)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = AppendProbe(buf[:0], uint64(i), time.Duration(i))
		if _, _, err := ParseProbe(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func timestampCmsg(sec, nsec int64) []byte {
	b := make([]byte, unix.CmsgSpace(16))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS
	h.SetLen(unix.CmsgLen(16))
	binary.NativeEndian.PutUint64(b[unix.CmsgLen(0):], uint64(sec))
	binary.NativeEndian.PutUint64(b[unix.CmsgLen(0)+8:], uint64(nsec))
	return b
}

func TestArrival(t *testing.T) {
	start := time.Unix(1000, 0)
	other := make([]byte, unix.CmsgSpace(4))
	oh := (*unix.Cmsghdr)(unsafe.Pointer(&other[0]))
	oh.Level, oh.Type = unix.SOL_IP, unix.IP_TTL
	oh.SetLen(unix.CmsgLen(4))
	tests := []struct {
		name string
		oob  []byte
		want time.Duration
	}{
		{"timestamp", timestampCmsg(1001, 500), time.Second + 500},
		{"after another cmsg", append(append([]byte(nil), other...), timestampCmsg(1000, 7)...), 7},
	}
	for _, tc := range tests {
		if got := arrival(tc.oob, start); got != tc.want {
			t.Errorf("%s: arrival = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Without a timestamp it falls back to the clock: far from 1970+1000s.
	if got := arrival(other, start); got < time.Hour {
		t.Errorf("no timestamp: arrival = %v, want the time since start by the clock", got)
	}
}

func FuzzArrival(f *testing.F) {
	f.Add(timestampCmsg(1, 2))
	f.Add([]byte{})
	f.Add(make([]byte, unix.SizeofCmsghdr))
	f.Fuzz(func(t *testing.T, oob []byte) {
		arrival(oob, time.Unix(0, 0)) // must not panic on any input
	})
}
