package liveness

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCounter(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0\n", 0, true},
		{"22338\n", 22338, true},
		{"18446744073709551615\n", 1<<64 - 1, true},
		{"18446744073709551616\n", 0, false},
		{"\n", 0, false},
		{"", 0, false},
		{"12a\n", 0, false},
		{"-1\n", 0, false},
	} {
		got, err := parseCounter([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseCounter(%q) = %d, %v; want %d, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

const netDevSample = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  lan0: 98765432  654321    0    3    0     0          0        17  1234567    8910    0    0    0     0       0          0
averyveryverylongname0:5 7 0 0 0 0 0 0 1 1 0 0 0 0 0 0
`

func TestParseNetDev(t *testing.T) {
	vals := make([]uint64, 3)
	if err := parseNetDev([]byte(netDevSample), []string{"lan0", "lo", "averyveryverylongname0"}, vals); err != nil {
		t.Fatal(err)
	}
	if vals[0] != 654321 || vals[1] != 12 || vals[2] != 7 {
		t.Errorf("vals %v, want [654321 12 7]", vals)
	}
	for name, names := range map[string][]string{
		"missing":   {"wan0"},
		"duplicate": {"lo", "lo"},
	} {
		if err := parseNetDev([]byte(netDevSample), names, make([]uint64, len(names))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := parseNetDev([]byte("x: 1\n"), []string{"x"}, make([]uint64, 1)); err == nil {
		t.Error("one field: accepted")
	}
}

func FuzzParseNetDev(f *testing.F) {
	f.Add([]byte(netDevSample))
	f.Add([]byte("lo: 1 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		vals := make([]uint64, 2)
		parseNetDev(b, []string{"lo", "lan0"}, vals) // must not panic
	})
}

// TestRxCounterBothSources reads the loopback's received packets from
// sysfs and from /proc/net/dev in this namespace: the two agree (give or
// take packets received between the reads).
func TestRxCounterBothSources(t *testing.T) {
	c, err := OpenRxCounter([]string{"lo"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.procFD >= 0 {
		t.Fatal("sysfs not used in the namespace it was mounted for") // the tests run in the root namespace
	}
	a, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open("/proc/thread-self/net/dev", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &RxCounter{names: []string{"lo"}, procFD: fd, buf: make([]byte, 64), vals: make([]uint64, 1)} // a small buffer: the read grows it
	defer p.Close()
	b, err := p.Read()
	if err != nil {
		t.Fatal(err)
	}
	if b < a || b-a > 1000 {
		t.Errorf("lo: sysfs %d, /proc/net/dev %d", a, b)
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
