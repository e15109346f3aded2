package dbsync

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/peerlink"
	"pgregory.net/rapid"
)

func TestPeerProbe(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type probe struct {
		at        time.Duration // since t0
		reachable bool
		role      string
		alive     bool // known alive by other means (VRRP)
	}
	type verdict struct {
		Ready  bool
		Reason string
	}
	tests := []struct {
		name   string
		probes []probe
		want   []verdict
	}{
		{"peer is backup", []probe{{0, true, "backup", false}}, []verdict{{true, ReadyPeerBackup}}},
		{"peer is master: wait for its round", []probe{{0, true, "master", false}, {time.Hour, true, "master", false}},
			[]verdict{{false, ""}, {false, ""}}},
		{"unreachable from the start", []probe{{time.Second, false, "", false}, {9 * time.Second, false, "", false}, {10 * time.Second, false, "", false}},
			[]verdict{{false, ""}, {false, ""}, {true, ReadyPeerDown}}},
		{"an answering master resets the streak", []probe{{9 * time.Second, false, "", false}, {9500 * time.Millisecond, true, "master", false},
			{12 * time.Second, false, "", false}, {21 * time.Second, false, "", false}, {22 * time.Second, false, "", false}},
			[]verdict{{false, ""}, {false, ""}, {false, ""}, {false, ""}, {true, ReadyPeerDown}}},
		{"master steps down", []probe{{0, true, "master", false}, {time.Second, true, "backup", false}},
			[]verdict{{false, ""}, {true, ReadyPeerBackup}}},
		{"alive peer, DB sync unreachable: never ready", []probe{{time.Second, false, "", true}, {time.Hour, false, "", true}},
			[]verdict{{false, ""}, {false, ""}}},
		{"the peer dies: its streak counts from then", []probe{{time.Hour, false, "", true}, {time.Hour + time.Second, false, "", false},
			{time.Hour + 10*time.Second, false, "", false}, {time.Hour + 11*time.Second, false, "", false}},
			[]verdict{{false, ""}, {false, ""}, {false, ""}, {true, ReadyPeerDown}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := peerProbe{bound: 10 * time.Second, downSince: t0}
			var got []verdict
			for _, pr := range tt.probes {
				ok, reason := p.observe(t0.Add(pr.at), pr.reachable, pr.alive, pr.role)
				got = append(got, verdict{ok, reason})
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("verdicts (-want +got):\n%s", d)
			}
		})
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestReadyWhenMaster(t *testing.T) {
	n, _, _ := handlerNode(t)
	if isClosed(n.Ready()) || n.Status().Ready {
		t.Fatal("a new backup is ready before anything happened")
	}
	n.SetRole(true)
	if !isClosed(n.Ready()) {
		t.Fatal("not ready after becoming master")
	}
	n.SetRole(false) // readiness gates the first preemption only
	if s := n.Status(); !isClosed(n.Ready()) || !s.Ready || s.ReadyReason != ReadyMaster {
		t.Fatalf("after stepping down: ready %v, reason %q", s.Ready, s.ReadyReason)
	}
}

func TestHandlerSynced(t *testing.T) {
	n, peer, auth := handlerNode(t)
	h := n.Handler()
	tok := syncTokens(t, auth)
	health, _ := peerlink.MintToken(auth, "a", "b", peerlink.ScopeHealth, time.Minute, time.Now())
	body := func(boot string) []byte {
		b, _ := json.Marshal(Synced{BootID: boot, Revision: 7})
		return b
	}
	rejects := []struct {
		name   string
		req    *http.Request
		status int
		reason string
	}{
		{"no token", peerRequest(t, peer, "POST", PathSynced, body(n.bootID), ""), 401, peerlink.ReasonMissing},
		{"health scope", peerRequest(t, peer, "POST", PathSynced, body(n.bootID), health), 401, peerlink.ReasonScope},
		{"earlier boot", peerRequest(t, peer, "POST", PathSynced, body("0123456789abcdef"), tok()), 409, ReasonStaleBoot},
		{"garbage", peerRequest(t, peer, "POST", PathSynced, []byte("{boot"), tok()), 400, ReasonDecode},
		{"too large", peerRequest(t, peer, "POST", PathSynced, make([]byte, 2*maxSyncedBody), tok()), 413, ReasonTooLarge},
	}
	for _, tt := range rejects {
		t.Run(tt.name, func(t *testing.T) {
			before := n.Status().Rejected[tt.reason]
			w := httptest.NewRecorder()
			h.ServeHTTP(w, tt.req)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if got := n.Status().Rejected[tt.reason] - before; got != 1 {
				t.Fatalf("reason %q counted %d times, want 1 (all: %v)", tt.reason, got, n.Status().Rejected)
			}
			if isClosed(n.Ready()) {
				t.Fatal("ready after a rejected notice")
			}
		})
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, peerRequest(t, peer, "POST", PathSynced, body(n.bootID), tok()))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d; body %s", w.Code, w.Body)
	}
	if s := n.Status(); !isClosed(n.Ready()) || s.ReadyReason != ReadySynced || s.Stats["synced_notices_received"] != 1 {
		t.Fatalf("after the notice: ready %v, reason %q, stats %v", isClosed(n.Ready()), s.ReadyReason, s.Stats)
	}
}

func TestHandlerSyncedRefusedByMaster(t *testing.T) {
	n, peer, auth := handlerNode(t)
	n.SetRole(true)
	tok := syncTokens(t, auth)
	b, _ := json.Marshal(Synced{BootID: n.bootID})
	w := httptest.NewRecorder()
	n.Handler().ServeHTTP(w, peerRequest(t, peer, "POST", PathSynced, b, tok()))
	if w.Code != http.StatusConflict || n.Status().Rejected[ReasonNotBackup] != 1 {
		t.Fatalf("status %d, rejected %v", w.Code, n.Status().Rejected)
	}
}

// waitReady waits for n's Ready; the bound is a liveness check, not a speed
// check.
func waitReady(t *testing.T, tn *testNode) {
	t.Helper()
	select {
	case <-tn.node.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready after 20s: %+v", tn.name, tn.node.Status())
	}
}

// A backup that returns with stale content is ready only once the master's
// anti-entropy round has brought it up to date.
func TestLabReadyAfterMasterRound(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	if !isClosed(a.node.Ready()) {
		t.Fatal("the master is not ready")
	}
	writeFile(t, filepath.Join(a.dbDir(), "rules"), "v1\n")
	waitFor(t, "initial sync", sameFile(filepath.Join(a.dbDir(), "rules"), filepath.Join(b.dbDir(), "rules")))
	waitReady(t, b)
	b.stop()
	// Edits the stopped node misses, several files so the round takes a
	// few pushes' worth of work.
	writeFile(t, filepath.Join(a.dbDir(), "rules"), "v2, edited while b was down\n")
	for i := range 50 {
		writeFile(t, filepath.Join(a.dbDir(), "objects", fmt.Sprintf("o%02d", i)), fmt.Sprintf("object %d\n", i))
	}
	waitFor(t, "master notices the peer is down", func() error {
		if a.node.Status().Peer.Reachable {
			return fmt.Errorf("peer still reachable")
		}
		return nil
	})
	b.start(false)
	if isClosed(b.node.Ready()) {
		t.Fatal("a restarted backup is ready at once")
	}
	waitReady(t, b)
	// At the moment of readiness the content is already there.
	for _, p := range []string{"rules", "objects/o00", "objects/o49"} {
		if err := sameFile(filepath.Join(a.dbDir(), p), filepath.Join(b.dbDir(), p))(); err != nil {
			t.Fatalf("ready before %s arrived: %v", p, err)
		}
	}
	if s := b.node.Status(); s.ReadyReason != ReadySynced {
		t.Fatalf("ready reason %q, want %q", s.ReadyReason, ReadySynced)
	}
	// The master counts its notice once the answer is back: it may trail.
	waitFor(t, "one notice per peer boot", func() error {
		if n := a.node.Status().Stats["synced_notices_sent"]; n != 2 {
			return fmt.Errorf("master sent %d synced notices, want 2", n)
		}
		return nil
	})
}

// Neither node master: nobody holds newer content, both are ready at once.
func TestLabReadyPeerNotMaster(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	a.stop()
	b.stop()
	b.start(false)
	a.start(false)
	waitReady(t, a)
	if r := a.node.Status().ReadyReason; r != ReadyPeerBackup {
		t.Fatalf("ready reason %q, want %q", r, ReadyPeerBackup)
	}
}

// A node alone does not wait for its peer forever.
func TestLabReadyPeerUnreachable(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	a.stop()
	b.stop()
	a.cfg.ReadyPeerTimeout = 600 * time.Millisecond
	a.start(false)
	waitReady(t, a)
	if s := a.node.Status(); s.ReadyReason != ReadyPeerDown || s.Peer.Reachable {
		t.Fatalf("ready reason %q (peer reachable %v), want %q", s.ReadyReason, s.Peer.Reachable, ReadyPeerDown)
	}
}

// Property: a reachable master never makes the node ready; an unreachable
// streak makes it ready exactly when the streak reaches the bound.
func TestPeerProbeProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		bound := time.Duration(rapid.Int64Range(1, int64(time.Minute)).Draw(t, "bound"))
		start := time.Unix(1_700_000_000, 0)
		p := peerProbe{bound: bound, downSince: start}
		now, streak := start, start // streak: start of the current unreachable run
		for i := range rapid.IntRange(1, 50).Draw(t, "probes") {
			now = now.Add(time.Duration(rapid.Int64Range(0, int64(bound)).Draw(t, fmt.Sprint("step", i))))
			reachable := rapid.Bool().Draw(t, fmt.Sprint("reachable", i))
			ready, reason := p.observe(now, reachable, false, "master")
			if reachable {
				if ready {
					t.Fatalf("probe %d: ready (%s) while a live master answers", i, reason)
				}
				streak = time.Time{}
				continue
			}
			if streak.IsZero() {
				streak = now
			}
			if want := now.Sub(streak) >= bound; ready != want || (ready && reason != ReadyPeerDown) {
				t.Fatalf("probe %d: ready %v (%s) after %v unreachable, bound %v", i, ready, reason, now.Sub(streak), bound)
			}
			if ready {
				return
			}
		}
	})
}

// The probe loop in virtual time: a peer that refuses every connection
// makes the node ready after ReadyPeerTimeout, not before.
func TestWatchReadinessPeerDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := t.TempDir()
		peer, err := EnsureIdentity(filepath.Join(base, "peer"), "a")
		if err != nil {
			t.Fatal(err)
		}
		n, err := New(Config{
			NodeID: "b", PeerID: "a", PeerURL: "https://192.0.2.1:7443", PeerCertSHA256: peer.Fingerprint,
			StateDir: filepath.Join(base, "state"), Auth: hsAuth(),
			Paths:         []Path{{Name: "db", Local: filepath.Join(base, "db"), Dir: true}},
			ProbeInterval: 2 * time.Second, ReadyPeerTimeout: 10 * time.Second,
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return nil, syscall.ECONNREFUSED
			},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- n.Run(ctx) }()
		time.Sleep(10*time.Second - time.Millisecond)
		synctest.Wait()
		if isClosed(n.Ready()) {
			t.Fatalf("ready before ReadyPeerTimeout: %+v", n.Status())
		}
		time.Sleep(2 * time.Second) // the next probe after the bound
		synctest.Wait()
		if s := n.Status(); !isClosed(n.Ready()) || s.ReadyReason != ReadyPeerDown {
			t.Fatalf("not ready after ReadyPeerTimeout: ready %v, reason %q", isClosed(n.Ready()), s.ReadyReason)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		n.link.CloseIdleConnections()
	})
}

// FuzzCheckSynced: any body either is refused with a reason and a 4xx
// status, or names this node's boot ID; never a panic.
func FuzzCheckSynced(f *testing.F) {
	const boot = "00112233aabbccdd"
	f.Add([]byte(`{"boot_id":"00112233aabbccdd","revision":3}`))
	f.Add([]byte(`{"boot_id":"0123456789abcdef"}`))
	f.Add([]byte(`{"boot_id":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte(`{"boot_id":"00112233aabbccdd","revision":-1}`))
	f.Add(bytes.Repeat([]byte(" "), maxSyncedBody+1))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, status, reason, err := checkSynced(body, boot)
		if err == nil {
			if s.BootID != boot || status != http.StatusOK || reason != "" || len(body) > maxSyncedBody {
				t.Fatalf("body %q accepted as %+v (status %d, reason %q)", body, s, status, reason)
			}
			return
		}
		if status < 400 || status > 499 || reason == "" {
			t.Fatalf("body %q refused with status %d, reason %q", body, status, reason)
		}
	})
}
