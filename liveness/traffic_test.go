package liveness

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// statsReply builds an RTM_NEWSTATS answer carrying rx as rx_packets.
func statsReply(seq uint32, rx uint64) []byte {
	ne := binary.NativeEndian
	var b []byte
	b = ne.AppendUint32(b, nlHdrLen+ifStatsMsgLen+4+8*4)
	b = ne.AppendUint16(b, rtmNewStats)
	b = ne.AppendUint16(b, 0)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = append(b, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0)
	b = ne.AppendUint16(b, 4+8*4)
	b = ne.AppendUint16(b, iflaStatsLink64)
	b = ne.AppendUint64(b, rx)
	return append(b, make([]byte, 24)...)
}

func TestParseStatsReply(t *testing.T) {
	ne := binary.NativeEndian
	errReply := func(seq uint32, errno int32) []byte {
		var b []byte
		b = ne.AppendUint32(b, nlHdrLen+4)
		b = ne.AppendUint16(b, unix.NLMSG_ERROR)
		b = ne.AppendUint16(b, 0)
		b = ne.AppendUint32(b, seq)
		b = ne.AppendUint32(b, 0)
		return ne.AppendUint32(b, uint32(errno))
	}
	if v, err := parseStatsReply(statsReply(7, 123456), 7); err != nil || v != 123456 {
		t.Errorf("reply: %d, %v; want 123456", v, err)
	}
	if _, err := parseStatsReply(statsReply(6, 1), 7); !errors.Is(err, errStaleReply) {
		t.Errorf("stale reply: %v", err)
	}
	if _, err := parseStatsReply(errReply(7, -int32(unix.ENODEV)), 7); !errors.Is(err, unix.ENODEV) {
		t.Errorf("error reply: %v, want ENODEV", err)
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"short":      statsReply(7, 1)[:20],
		"truncated":  statsReply(7, 1)[:nlHdrLen+ifStatsMsgLen+4+4],
		"error ack":  errReply(7, 0),
		"no attr":    statsReply(7, 1)[:nlHdrLen+ifStatsMsgLen],
		"wrong type": append(append([]byte{}, statsReply(7, 1)[:4]...), append([]byte{16, 0}, statsReply(7, 1)[6:]...)...),
	} {
		if name == "no attr" || name == "truncated" {
			ne.PutUint32(b, uint32(len(b)))
		}
		if v, err := parseStatsReply(b, 7); err == nil {
			t.Errorf("%s: accepted (%d)", name, v)
		}
	}
}

func FuzzParseStatsReply(f *testing.F) {
	f.Add(statsReply(1, 42))
	f.Add(statsReply(1, 42)[:30])
	f.Fuzz(func(t *testing.T, b []byte) {
		parseStatsReply(b, 1) // must not panic or read out of bounds
	})
}

// TestRequestLayout: the request is what the kernel's rtnl_stats_get
// reads.
func TestRequestLayout(t *testing.T) {
	b := appendStatsRequest(nil, 9, 5)
	ne := binary.NativeEndian
	if len(b) != nlHdrLen+ifStatsMsgLen || ne.Uint32(b) != uint32(len(b)) || ne.Uint16(b[4:]) != rtmGetStats ||
		ne.Uint16(b[6:]) != unix.NLM_F_REQUEST || ne.Uint32(b[8:]) != 9 || ne.Uint32(b[20:]) != 5 || ne.Uint32(b[24:]) != 1 {
		t.Errorf("request % x", b)
	}
}

func TestTrafficSince(t *testing.T) {
	for _, c := range []struct {
		prev, now, ours uint64
		want            uint64
	}{
		{100, 100, 0, 0},
		{100, 102, 2, 0}, // the peer's own messages
		{100, 103, 2, 1},
		{100, 101, 5, 0},                   // more of ours than counted: an unwatched interface
		{100, 50, 0, trafficThreshold + 1}, // the counter went back: an interface replaced
	} {
		if got := trafficSince(c.prev, c.now, c.ours); got != c.want {
			t.Errorf("trafficSince(%d, %d, %d) = %d, want %d", c.prev, c.now, c.ours, got, c.want)
		}
	}
}
