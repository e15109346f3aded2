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
	"github.com/muros/muros-had/peerlink"
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
	auth := peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte("cluster-secret-cluster-secret-32")}
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
	lim := peerlink.ListenerLimits{MaxConns: 8, MaxConnsPerSource: 4, RatePerSource: 1, BurstPerSource: 6}
	b, err := New(Config{
		NodeID: "b", PeerID: "a", PeerURL: "https://192.0.2.1:7443", PeerCertSHA256: idA.Fingerprint,
		StateDir: filepath.Join(base, "b"), Auth: auth, Limits: lim,
		Paths: []Path{{Name: "db", Local: filepath.Join(base, "dbb"), Dir: true}},
	}, testLogger(t, "b"))
	if err != nil {
		t.Fatal(err)
	}
	mountHealth(b)
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
		a.link.CloseIdleConnections()
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
	for _, reason := range []string{peerlink.ReasonSourceConns, peerlink.ReasonConnLimit, peerlink.ReasonSourceRate} {
		if rej[reason] == 0 {
			t.Errorf("no %s counted (rejected: %v)", reason, rej)
		}
	}
	if rej[peerlink.ReasonSourceRate] != 10-(uint64(lim.BurstPerSource)-1) {
		t.Errorf("%s counted %d times, want %d", peerlink.ReasonSourceRate, rej[peerlink.ReasonSourceRate], 10-(lim.BurstPerSource-1))
	}
}

func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t, name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
