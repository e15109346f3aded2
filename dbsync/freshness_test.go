package dbsync

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/muros/muros-had/peerlink"
)

// pipeNode is one side of an in-memory pair: the two Nodes talk TLS over
// net.Pipe connections (no sockets, no namespaces), and either side can be
// stopped and started again on the same directories, with its own clock.
type pipeNode struct {
	t    *testing.T
	name string
	dir  string
	cfg  Config
	node *Node

	// cut refuses dials to this node (a partition) while it runs.
	cut atomic.Bool

	mu     sync.Mutex
	ln     *pipeListener // nil while stopped: dials are refused
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

func (pn *pipeNode) db(rel string) string { return filepath.Join(pn.dir, "db", rel) }

func (pn *pipeNode) listener() *pipeListener {
	pn.mu.Lock()
	defer pn.mu.Unlock()
	return pn.ln
}

// dial reaches this node's listener, or is refused while it is stopped.
func (pn *pipeNode) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ln := pn.listener()
	if ln == nil || pn.cut.Load() {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	c, err := ln.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return cutConn{c, &pn.cut}, nil
}

// cutConn fails once its target is cut off: kept-alive connections do not
// outlive a partition.
type cutConn struct {
	net.Conn
	cut *atomic.Bool
}

func (c cutConn) Read(b []byte) (int, error) {
	if c.cut.Load() {
		c.Conn.Close()
		return 0, syscall.ECONNRESET
	}
	return c.Conn.Read(b)
}

func (c cutConn) Write(b []byte) (int, error) {
	if c.cut.Load() {
		c.Conn.Close()
		return 0, syscall.ECONNRESET
	}
	return c.Conn.Write(b)
}

// newPipePair builds nodes a and b (not started); cfg may adjust both
// configurations.
func newPipePair(t *testing.T, cfg func(a, b *Config)) (a, b *pipeNode) {
	t.Helper()
	base := t.TempDir()
	a = &pipeNode{t: t, name: "a", dir: filepath.Join(base, "a")}
	b = &pipeNode{t: t, name: "b", dir: filepath.Join(base, "b")}
	ids := map[string]Identity{}
	for _, n := range []*pipeNode{a, b} {
		id, err := EnsureIdentity(filepath.Join(n.dir, "state"), n.name)
		if err != nil {
			t.Fatal(err)
		}
		ids[n.name] = id
	}
	mk := func(self, peer *pipeNode) Config {
		return Config{
			NodeID: self.name, PeerID: peer.name, PeerURL: "https://" + peer.name + ".test:7443",
			PeerCertSHA256: ids[peer.name].Fingerprint,
			StateDir:       filepath.Join(self.dir, "state"),
			Paths:          []Path{{Name: "db", Local: filepath.Join(self.dir, "db"), Dir: true}},
			Auth:           peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte("cluster-secret-cluster-secret-32")},
			ProbeInterval:  50 * time.Millisecond, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
			AntiEntropyInterval: 2 * time.Second, ReadyPeerTimeout: time.Second, RequestTimeout: 5 * time.Second,
			Dial: peer.dial,
		}
	}
	a.cfg, b.cfg = mk(a, b), mk(b, a)
	if cfg != nil {
		cfg(&a.cfg, &b.cfg)
	}
	t.Cleanup(func() { a.stop(); b.stop() })
	return a, b
}

func (pn *pipeNode) start(master bool) {
	t := pn.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t, pn.name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := New(pn.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	ctx, cancel := context.WithCancel(context.Background())
	pn.mu.Lock()
	pn.node, pn.ln, pn.cancel = n, ln, cancel
	pn.mu.Unlock()
	pn.errs = make(chan error, 2)
	n.SetRole(master)
	pn.wg.Add(2)
	go func() { defer pn.wg.Done(); pn.errs <- n.Serve(ctx, ln) }()
	go func() { defer pn.wg.Done(); pn.errs <- n.Run(ctx) }()
}

// stop ends the node as a crash would for its peer: its listener refuses
// connections from now on.
func (pn *pipeNode) stop() {
	pn.mu.Lock()
	cancel := pn.cancel
	pn.ln, pn.cancel = nil, nil
	pn.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	pn.wg.Wait()
	close(pn.errs)
	for err := range pn.errs {
		if err != nil {
			pn.t.Errorf("%s: %v", pn.name, err)
		}
	}
}

func fileIs(p, want string) func() error {
	return func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if string(b) != want {
			return fmt.Errorf("%s holds %q, want %q", p, b, want)
		}
		return nil
	}
}

func statAtLeast(n *Node, name string, min uint64) func() error {
	return func() error {
		if got := n.Status().Stats[name]; got < min {
			return fmt.Errorf("stat %s = %d, want >= %d", name, got, min)
		}
		return nil
	}
}

// editWhileAlone makes b master with a stopped, has the operator edit
// db/conf on b, and waits until b's master loop has stamped the edit and
// tried (and failed) to push it. (A node that dies between an edit and its
// stamp, within the debounce, finds the edit adopted at its restart.)
func editWhileAlone(t *testing.T, a, b *pipeNode, content string) {
	t.Helper()
	a.stop()
	errs := b.node.Status().Stats["sync_errors"]
	b.node.SetRole(true)
	// Its first attempt (which lists and adopts what it holds) failed:
	// what the operator changes from now on is an edit.
	waitFor(t, "b running as master", statAtLeast(b.node, "sync_errors", errs+1))
	stamped := b.node.Status().Stats["edits_stamped"]
	writeFile(t, b.db("conf"), content)
	waitFor(t, "b stamped its edit", statAtLeast(b.node, "edits_stamped", stamped+1))
	errs = b.node.Status().Stats["sync_errors"]
	waitFor(t, "b tried to push its edit", statAtLeast(b.node, "sync_errors", errs+1))
}

// The data-loss sequence: a stops, b takes over and the operator
// edits a replicated file on b; a returns with its clock 10 s behind, so
// b's tokens are refused by a (b cannot bring a up to date) while a's are
// valid on b; a preempts anyway (its readiness hold timed out). a must not
// push its stale copy over b's edit: it takes b's edit first.
func TestPairReturningNodeBehindKeepsPeerEdit(t *testing.T) {
	a, b := newPipePair(t, nil)
	a.start(true)
	b.start(false)
	writeFile(t, a.db("conf"), "v1")
	waitFor(t, "v1 on b", fileIs(b.db("conf"), "v1"))
	editWhileAlone(t, a, b, "v2 edited on b")

	a.cfg.Now = func() time.Time { return time.Now().Add(-10 * time.Second) }
	a.start(false)
	waitFor(t, "a refuses b's tokens", func() error {
		if a.node.Status().Rejected[peerlink.ReasonNotYetValid] == 0 {
			return fmt.Errorf("rejected %v", a.node.Status().Rejected)
		}
		return nil
	})
	waitFor(t, "a says why it waits", func() error {
		if w := a.node.Status().Waiting; !strings.Contains(w, "token leeway") {
			return fmt.Errorf("waiting %q", w)
		}
		return nil
	})
	// The hold timed out: a preempts, b steps down.
	b.node.SetRole(false)
	a.node.SetRole(true)
	waitFor(t, "b's edit on a", fileIs(a.db("conf"), "v2 edited on b"))
	if err := fileIs(b.db("conf"), "v2 edited on b")(); err != nil {
		t.Fatalf("b's edit lost: %v", err)
	}
	// a is master now and in charge: its next edit reaches b.
	writeFile(t, a.db("conf"), "v3 edited on a")
	waitFor(t, "a's later edit on b", fileIs(b.db("conf"), "v3 edited on a"))
}

// The peer is dead: a takes over and keeps its content without pushing;
// when b returns (as backup, holding a newer edit) the two are reconciled
// and b's edit wins.
func TestPairTakeoverFromDeadPeerReconcilesOnReturn(t *testing.T) {
	a, b := newPipePair(t, nil)
	a.start(true)
	b.start(false)
	writeFile(t, a.db("conf"), "v1")
	writeFile(t, a.db("other"), "o1")
	waitFor(t, "v1 on b", fileIs(b.db("conf"), "v1"))
	waitFor(t, "o1 on b", fileIs(b.db("other"), "o1"))
	editWhileAlone(t, a, b, "v2 edited on b")
	b.stop() // b dies too

	a.start(false)
	a.node.SetRole(true) // the master is gone: a takes over
	waitFor(t, "a tried to reach b", statAtLeast(a.node, "sync_errors", 2))
	if err := fileIs(a.db("conf"), "v1")(); err != nil {
		t.Fatalf("a's own content changed while alone: %v", err)
	}
	b.start(false)
	waitFor(t, "b's edit on a", fileIs(a.db("conf"), "v2 edited on b"))
	if err := fileIs(b.db("conf"), "v2 edited on b")(); err != nil {
		t.Fatalf("b's edit lost: %v", err)
	}
	if err := fileIs(b.db("other"), "o1")(); err != nil {
		t.Fatal(err)
	}
}

// Both nodes master and cut off from each other (a split brain) edit: a
// file each changed alone is taken from the one that changed it, a file
// both changed is left alone on both and reported, until the operator
// changes it on the master.
func TestPairSplitBrainReconciles(t *testing.T) {
	a, b := newPipePair(t, nil)
	a.start(true)
	b.start(false)
	writeFile(t, a.db("conf"), "v1")
	waitFor(t, "v1 on b", fileIs(b.db("conf"), "v1"))
	a.cut.Store(true)
	b.cut.Store(true)
	b.node.SetRole(true)
	edit := func(n *pipeNode, file, content string) {
		t.Helper()
		before := n.node.Status().Stats["edits_stamped"]
		writeFile(t, n.db(file), content)
		waitFor(t, n.name+" stamped its edit of "+file, statAtLeast(n.node, "edits_stamped", before+1))
	}
	edit(a, "z", "z from a")
	edit(b, "z", "z from b")
	edit(a, "x", "x from a")
	edit(b, "y", "y from b")
	b.node.SetRole(false)
	a.cut.Store(false)
	b.cut.Store(false)
	waitFor(t, "x on b", fileIs(b.db("x"), "x from a"))
	waitFor(t, "y on a", fileIs(a.db("y"), "y from b"))
	waitFor(t, "conflict reported", func() error {
		if c := a.node.Status().Conflicts; len(c) != 1 || c[0] != "db/z" {
			return fmt.Errorf("conflicts %v", c)
		}
		return nil
	})
	for _, n := range []*pipeNode{a, b} {
		if err := fileIs(n.db("z"), "z from "+n.name)(); err != nil {
			t.Fatalf("a conflicting copy was overwritten: %v", err)
		}
	}
	// b, back to backup, is not held by the conflict: neither node
	// overwrites it whoever is master.
	ready := b.node.Rearm()
	waitFor(t, "b ready despite the conflict", func() error {
		if !isClosed(ready) {
			return fmt.Errorf("waiting: %q", b.node.Status().Waiting)
		}
		return nil
	})
	// The operator chooses: a change on the master wins.
	writeFile(t, a.db("z"), "z chosen on a")
	waitFor(t, "chosen z on b", fileIs(b.db("z"), "z chosen on a"))
	waitFor(t, "conflict cleared", func() error {
		if c := a.node.Status().Conflicts; len(c) != 0 {
			return fmt.Errorf("conflicts %v", c)
		}
		return nil
	})
}

// A peer reporting revision 2^64-1: the next revision would wrap to 0,
// below what the peer holds, and every push would be refused as stale.
// The master sends no such push and says why.
func TestPairPeerRevisionAtMaximum(t *testing.T) {
	a, b := newPipePair(t, nil)
	if err := os.MkdirAll(b.cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeJSONAtomic(b.cfg.StateDir, "revision", revisionState{Revision: math.MaxUint64}); err != nil {
		t.Fatal(err)
	}
	b.start(false)
	a.start(true)
	writeFile(t, a.db("conf"), "v1")
	waitFor(t, "a reports the exhausted revision", func() error {
		if e := a.node.Status().LastError; !strings.Contains(e, ErrRevisionExhausted.Error()) {
			return fmt.Errorf("last error %q", e)
		}
		return nil
	})
	if n := b.node.Status().Rejected[ReasonStale]; n != 0 {
		t.Fatalf("a sent %d pushes with a wrapped revision", n)
	}
}

// The peer's clock is measured from its answers and shown; above the
// warning threshold the status says so.
func TestPairClockSkewMeasured(t *testing.T) {
	a, b := newPipePair(t, func(a, b *Config) {
		b.Now = func() time.Time { return time.Now().Add(3 * time.Second) }
	})
	a.start(true)
	b.start(false)
	waitFor(t, "skew measured", func() error {
		s := a.node.Status().ClockSkew
		if s == nil {
			return fmt.Errorf("no measurement")
		}
		if d := time.Duration(s.OffsetMillis)*time.Millisecond - 3*time.Second; d.Abs() > time.Duration(s.RTTMillis+50)*time.Millisecond {
			return fmt.Errorf("offset %d ms, want 3000 within the round trip %d ms", s.OffsetMillis, s.RTTMillis)
		}
		if !strings.Contains(s.Warning, "check NTP") {
			return fmt.Errorf("warning %q", s.Warning)
		}
		return nil
	})
	if a.node.Status().Stats["clock_skew_warnings"] != 1 {
		t.Fatalf("warnings %v, want one (logged once per crossing)", a.node.Status().Stats)
	}
}

// With a leeway above the skew the tokens of both sides are accepted:
// the returning node, 10 s behind, receives the master's edit by push.
func TestPairLeewayToleratesSkew(t *testing.T) {
	a, b := newPipePair(t, func(a, b *Config) {
		a.Auth.Leeway, b.Auth.Leeway = 15*time.Second, 15*time.Second
	})
	a.start(true)
	b.start(false)
	writeFile(t, a.db("conf"), "v1")
	waitFor(t, "v1 on b", fileIs(b.db("conf"), "v1"))
	editWhileAlone(t, a, b, "v2 edited on b")
	a.cfg.Now = func() time.Time { return time.Now().Add(-10 * time.Second) }
	a.start(false)
	waitFor(t, "b's edit pushed to a", fileIs(a.db("conf"), "v2 edited on b"))
	waitFor(t, "a ready: b's round completed", func() error {
		if s := a.node.Status(); s.ReadyReason != ReadySynced {
			return fmt.Errorf("ready reason %q", s.ReadyReason)
		}
		return nil
	})
	s := a.node.Status()
	if s.Rejected[peerlink.ReasonNotYetValid] != 0 || s.ClockSkew == nil || s.ClockSkew.OffsetMillis < 9000 {
		t.Fatalf("rejected %v, skew %+v", s.Rejected, s.ClockSkew)
	}
}

// A backup whose peer is alive (PeerAlive: VRRP hears it) but whose DB
// sync does not answer stays unready past ReadyPeerTimeout and says why;
// once the peer's DB sync answers, the master's round makes it ready.
func TestPairPeerAliveDBUnreachableStaysUnready(t *testing.T) {
	a, b := newPipePair(t, func(a, b *Config) {
		b.PeerAlive = func() bool { return true }
	})
	writeFile(t, a.db("conf"), "v1")
	a.cut.Store(true)
	b.cut.Store(true)
	a.start(true)
	b.start(false)
	waitFor(t, "b says why it waits", func() error {
		if w := b.node.Status().Waiting; !strings.Contains(w, "alive but its DB sync does not answer") {
			return fmt.Errorf("waiting %q", w)
		}
		return nil
	})
	attempts := b.node.Status().Peer
	time.Sleep(3 * b.cfg.ReadyPeerTimeout)
	if s := b.node.Status(); s.Ready {
		t.Fatalf("ready (%s) while the live peer's DB sync is unreachable (peer %+v)", s.ReadyReason, attempts)
	}
	if err := fileIs(b.db("conf"), "v1")(); err == nil {
		t.Fatal("v1 on b through a cut link")
	}
	a.cut.Store(false)
	b.cut.Store(false)
	waitFor(t, "v1 on b", fileIs(b.db("conf"), "v1"))
	waitFor(t, "b ready after the master's round", func() error {
		if s := b.node.Status(); s.ReadyReason != ReadySynced || s.Waiting != "" {
			return fmt.Errorf("ready reason %q, waiting %q", s.ReadyReason, s.Waiting)
		}
		return nil
	})
}
