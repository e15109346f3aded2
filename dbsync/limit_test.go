package dbsync

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

// sourceListener is an in-memory listener whose connections come from
// chosen source addresses.
type sourceListener struct{ *pipeListener }

type sourcedConn struct {
	net.Conn
	remote net.Addr
}

func (c sourcedConn) RemoteAddr() net.Addr { return c.remote }

func (l sourceListener) dialFrom(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	remote := net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 40000))
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, s := net.Pipe()
		select {
		case l.conns <- sourcedConn{s, remote}:
			return c, nil
		case <-l.done:
			return nil, net.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// handshakeFrom opens n connections from ip at once and completes a TLS
// handshake on each without a client certificate; it returns the ones the
// listener kept (still open) and how many it closed.
func handshakeFrom(t *testing.T, ln sourceListener, ip string, n int) (kept []net.Conn, refused int) {
	t.Helper()
	dial := ln.dialFrom(ip)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := dial(ctx, "", "")
			if err != nil {
				t.Error(err)
				return
			}
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			err = tc.HandshakeContext(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused++
				tc.Close()
				return
			}
			kept = append(kept, tc)
		})
	}
	wg.Wait()
	return kept, refused
}

// An unauthenticated flood is held to the listener's limits while the
// real peer keeps replicating, including over a new connection opened in
// the middle of the flood.
func TestListenerFlood(t *testing.T) {
	ln := sourceListener{newPipeListener()}
	base := t.TempDir()
	idA, err := EnsureIdentity(filepath.Join(base, "a"), "a")
	if err != nil {
		t.Fatal(err)
	}
	idB, err := EnsureIdentity(filepath.Join(base, "b"), "b")
	if err != nil {
		t.Fatal(err)
	}
	auth := AuthConfig{Method: MethodHS256, Secret: []byte("cluster-secret-cluster-secret-32")}
	var peerDials atomic.Int64
	peerDial := ln.dialFrom("192.0.2.1")
	a, err := New(Config{
		NodeID: "a", PeerID: "b", PeerURL: "https://192.0.2.2:7443", PeerCertSHA256: idB.Fingerprint,
		StateDir: filepath.Join(base, "a"), Auth: auth, Debounce: time.Millisecond,
		Paths: []Path{{Name: "db", Local: filepath.Join(base, "dba"), Dir: true}}, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			peerDials.Add(1)
			return peerDial(ctx, network, addr)
		},
	}, testLogger(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	lim := ListenerLimits{MaxConns: 8, MaxConnsPerSource: 4, RatePerSource: 1, BurstPerSource: 6}
	b, err := New(Config{
		NodeID: "b", PeerID: "a", PeerURL: "https://192.0.2.1:7443", PeerCertSHA256: idA.Fingerprint,
		StateDir: filepath.Join(base, "b"), Auth: auth, Limits: lim,
		Paths: []Path{{Name: "db", Local: filepath.Join(base, "dbb"), Dir: true}},
	}, testLogger(t, "b"))
	if err != nil {
		t.Fatal(err)
	}
	// A stopped clock: no bucket refills, so the counts below are exact.
	frozen := time.Now()
	b.limitClock = func() time.Time { return frozen }

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Serve(ctx, ln) })
	a.SetRole(true)
	wg.Go(func() { a.Run(ctx) })
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
		cancel()
		wg.Wait()
	})
	replicated := func(name string) {
		t.Helper()
		writeFile(t, filepath.Join(base, "dba", name), name)
		waitFor(t, name+" on the backup", sameFile(filepath.Join(base, "dba", name), filepath.Join(base, "dbb", name)))
	}
	replicated("before")

	// One source: no more than MaxConnsPerSource open together.
	kept, refused := handshakeFrom(t, ln, "198.51.100.7", 12)
	flood = append(flood, kept...)
	if len(kept) != lim.MaxConnsPerSource || refused != 12-lim.MaxConnsPerSource {
		t.Fatalf("one source opened %d connections (%d refused), want %d", len(kept), refused, lim.MaxConnsPerSource)
	}
	// More sources: no more than MaxConns open together.
	total := len(kept)
	for _, ip := range []string{"198.51.100.8", "198.51.100.9", "2001:db8::1"} {
		kept, _ := handshakeFrom(t, ln, ip, lim.MaxConnsPerSource)
		flood = append(flood, kept...)
		total += len(kept)
	}
	if total > lim.MaxConns {
		t.Fatalf("%d unauthenticated connections open together, want at most %d", total, lim.MaxConns)
	}
	// The peer gets through the full listener, on a new connection too.
	dials := peerDials.Load()
	waitFor(t, "the peer dialling anew", func() error {
		a.client.CloseIdleConnections()
		if peerDials.Load() == dials {
			return fmt.Errorf("no new connection yet")
		}
		return nil
	})
	replicated("during")

	// Requests without the peer's certificate take tokens of their
	// source's bucket: BurstPerSource, one of them spent on the connection.
	for _, c := range flood {
		c.Close()
	}
	flood = flood[:0]
	// The listener sees the closes a moment later; until then a new
	// source meets conn_limit, which spends none of its tokens.
	waitFor(t, "a fresh source admitted", func() error {
		kept, _ = handshakeFrom(t, ln, "203.0.113.5", 1)
		if len(kept) != 1 {
			return fmt.Errorf("refused")
		}
		return nil
	})
	flood = append(flood, kept...)
	br := bufio.NewReader(kept[0])
	codes := map[int]int{}
	for range 10 {
		fmt.Fprintf(kept[0], "GET %s HTTP/1.1\r\nHost: b\r\n\r\n", PathHealth)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		codes[res.StatusCode]++
	}
	if d := cmp.Diff(map[int]int{401: lim.BurstPerSource - 1, 429: 10 - (lim.BurstPerSource - 1)}, codes); d != "" {
		t.Fatalf("answers to an unauthenticated source (-want +got):\n%s", d)
	}
	replicated("after")

	rej := b.Status().Rejected
	for _, reason := range []string{ReasonSourceConns, ReasonConnLimit, ReasonSourceRate} {
		if rej[reason] == 0 {
			t.Errorf("no %s counted (rejected: %v)", reason, rej)
		}
	}
	if rej[ReasonSourceRate] != 10-(uint64(lim.BurstPerSource)-1) {
		t.Errorf("%s counted %d times, want %d", ReasonSourceRate, rej[ReasonSourceRate], 10-(lim.BurstPerSource-1))
	}
}

func TestAdmission(t *testing.T) {
	t0 := time.Unix(1000, 0)
	lim := ListenerLimits{MaxConns: 5, MaxConnsPerSource: 2, RatePerSource: 2, BurstPerSource: 3}
	peer := netip.MustParseAddr("192.0.2.1")
	a := newAdmission(lim, peer)
	type step struct {
		addr string
		at   time.Duration
		want string // reason, "" = admitted
	}
	ip := netip.MustParseAddr
	var tickets []ticket
	for i, s := range []step{
		{"198.51.100.1", 0, ""},
		{"198.51.100.1", 0, ""},
		{"198.51.100.1", 0, ReasonSourceConns},
		{"2001:db8::1", 0, ""},
		{"2001:db8::2", 0, ""},
		{"2001:db8::3", 0, ReasonSourceConns},         // same /64
		{"::ffff:198.51.100.1", 0, ReasonSourceConns}, // same IPv4 address
		{"198.51.100.2", 0, ""},
		{"198.51.100.3", 0, ReasonConnLimit},
		{"192.0.2.1", 0, ""}, // the peer's address: not held to MaxConns
		{"192.0.2.1", 0, ""},
		{"192.0.2.1", 0, ReasonSourceConns},
	} {
		tk, got := a.admit(ip(s.addr), t0.Add(s.at))
		if got != s.want {
			t.Fatalf("step %d %s: %q, want %q", i, s.addr, got, s.want)
		}
		if got == "" {
			tickets = append(tickets, tk)
		}
	}
	// The peer's connections prove themselves; one flood connection ends:
	// one new connection fits again.
	a.authenticated(&tickets[5])
	a.authenticated(&tickets[6])
	a.release(&tickets[0])
	a.release(&tickets[0]) // twice: counted once
	if _, got := a.admit(ip("198.51.100.4"), t0); got != "" {
		t.Fatalf("after a release: %q", got)
	}
	if _, got := a.admit(ip("198.51.100.5"), t0); got != ReasonConnLimit {
		t.Fatalf("over the cap again: %q", got)
	}
	// Rate: source .1 spent 2 of 3 tokens; one request left, then none
	// until 0.5 s later (2/s).
	src := ip("198.51.100.1")
	if !a.request(src, t0) || a.request(src, t0) {
		t.Fatal("burst not enforced")
	}
	if !a.request(src, t0.Add(500*time.Millisecond)) || a.request(src, t0.Add(500*time.Millisecond)) {
		t.Fatal("refill not 2/s")
	}
}

func TestListenerLimitsValidate(t *testing.T) {
	def := ListenerLimits{}.withDefaults()
	if err := def.validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, weak := range []ListenerLimits{
		{MaxConns: 100000, MaxConnsPerSource: 8, RatePerSource: 10, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 65, RatePerSource: 10, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 1, RatePerSource: 10, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 8, RatePerSource: -1, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 8, RatePerSource: 1e6, BurstPerSource: 20},
		{MaxConns: 64, MaxConnsPerSource: 8, RatePerSource: 10, BurstPerSource: 1e6},
	} {
		if weak.validate() == nil {
			t.Errorf("%+v accepted", weak)
		}
	}
}

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t, name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Whatever the order of connections, proofs, closes and requests, the
// accounting holds: no source above its limit, no more unauthenticated
// connections than MaxConns except the peer address's own, counts never
// negative, and every refusal names the limit that was reached.
func TestAdmissionProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		lim := ListenerLimits{
			MaxConns:          rapid.IntRange(2, 6).Draw(t, "max"),
			RatePerSource:     float64(rapid.IntRange(1, 5).Draw(t, "rate")),
			BurstPerSource:    rapid.IntRange(1, 6).Draw(t, "burst"),
			MaxConnsPerSource: 2,
		}
		lim.MaxConnsPerSource = rapid.IntRange(2, lim.MaxConns).Draw(t, "per source")
		addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1"),
			netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")}
		peer := addrs[0]
		a := newAdmission(lim, peer)
		type open struct {
			t    ticket
			addr netip.Addr
		}
		var conns []*open
		now := time.Unix(0, 0)
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			now = now.Add(time.Duration(rapid.IntRange(0, 700).Draw(t, "ms")) * time.Millisecond)
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0:
				addr := rapid.SampledFrom(addrs).Draw(t, "addr")
				before := *a.source(sourceKey(addr), now)
				unauth := a.unauth
				tk, reason := a.admit(addr, now)
				switch reason {
				case "":
					conns = append(conns, &open{tk, addr})
				case ReasonConnLimit:
					if addr == peer || unauth < lim.MaxConns {
						t.Fatalf("conn_limit for %s with %d unauthenticated open", addr, unauth)
					}
				case ReasonSourceConns:
					if before.conns < lim.MaxConnsPerSource {
						t.Fatalf("source_conn_limit with %d open", before.conns)
					}
				case ReasonSourceRate:
					if before.tokens >= 1 {
						t.Fatalf("source_rate with %v tokens", before.tokens)
					}
				default:
					t.Fatalf("reason %q", reason)
				}
			case 1:
				if len(conns) > 0 {
					a.authenticated(&conns[rapid.IntRange(0, len(conns)-1).Draw(t, "proved")].t)
				}
			case 2:
				if len(conns) > 0 {
					i := rapid.IntRange(0, len(conns)-1).Draw(t, "closed")
					a.release(&conns[i].t)
					conns = append(conns[:i], conns[i+1:]...)
				}
			case 3:
				a.request(rapid.SampledFrom(addrs).Draw(t, "requester"), now)
			}
			perSource := map[netip.Prefix]int{}
			unauth, peerUnauth := 0, 0
			for _, c := range conns {
				perSource[sourceKey(c.addr)]++
				if c.t.unauth {
					unauth++
					if c.addr == peer {
						peerUnauth++
					}
				}
			}
			if unauth != a.unauth {
				t.Fatalf("unauthenticated count %d, %d such connections open", a.unauth, unauth)
			}
			if unauth-peerUnauth > lim.MaxConns {
				t.Fatalf("%d unauthenticated connections from other addresses, max %d", unauth-peerUnauth, lim.MaxConns)
			}
			for src, s := range a.sources {
				if s.conns != perSource[src] || s.conns > lim.MaxConnsPerSource || s.tokens < 0 || s.tokens > float64(lim.BurstPerSource) {
					t.Fatalf("source %s: %+v, %d open", src, *s, perSource[src])
				}
			}
		}
	})
}

func TestSourceKeys(t *testing.T) {
	key := func(s string) string {
		if p := sourceKey(remoteAddr(s)); p.IsValid() {
			return p.String()
		}
		return "none"
	}
	got := map[string]string{}
	for _, s := range []string{"192.0.2.1:7443", "[::ffff:192.0.2.1]:40000", "[2001:db8:0:1:2::9]:1", "[fe80::1%eth0]:1", "pipe", ""} {
		got[s] = key(s)
	}
	want := map[string]string{
		"192.0.2.1:7443": "192.0.2.1/32", "[::ffff:192.0.2.1]:40000": "192.0.2.1/32",
		"[2001:db8:0:1:2::9]:1": "2001:db8:0:1::/64", "[fe80::1%eth0]:1": "fe80::/64", "pipe": "none", "": "none",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("source keys (-want +got):\n%s", d)
	}
	for u, want := range map[string]string{"https://192.0.2.1:7443": "192.0.2.1", "https://[2001:db8::1]:7443": "2001:db8::1", "https://peer.example:7443": "invalid IP"} {
		if got := peerAddr(u).String(); got != want {
			t.Errorf("peerAddr(%s) = %s, want %s", u, got, want)
		}
	}
}
