package dbsync

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/peerlink"
)

// testNode is one side of a two-node lab: its own network namespace, its
// own directories, a Node that can be stopped and started again.
type testNode struct {
	t       testing.TB
	name    string
	ns      *lab.Netns
	addr    netip.Addr
	dir     string // holds state/, db/, kea/
	cfg     Config
	node    *Node
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	runErrs chan error
	// wrap, when set, stands between the listener and the Node's handler
	// (a test's stand-in for another release of the peer).
	wrap func(http.Handler) http.Handler
}

func (tn *testNode) dbDir() string  { return filepath.Join(tn.dir, "db") }
func (tn *testNode) keaDir() string { return filepath.Join(tn.dir, "kea") }

type pairOptions struct {
	auth  func(a, b *peerlink.AuthConfig)
	cfg   func(a, b *Config)              // after testConfig, before start
	wrapB func(http.Handler) http.Handler // see testNode.wrap
}

// newLabPair builds nodes a (10.77.0.1) and b (10.77.0.2) joined by a veth,
// each listening inside its own namespace, a started as master.
func newLabPair(t testing.TB, opts pairOptions) (a, b *testNode) {
	t.Helper()
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Fatalf("sqlite3 CLI not on PATH (dbsync lab tests never skip): %v", err)
	}
	nsA := lab.NewNetnsT(t, "dbsa")
	nsB := lab.NewNetnsT(t, "dbsb")
	if err := lab.Veth(nsA, "dbs0", nsB, "dbs0"); err != nil {
		t.Fatal(err)
	}
	a = &testNode{t: t, name: "node-a", ns: nsA, addr: netip.MustParseAddr("10.77.0.1"), dir: t.TempDir()}
	b = &testNode{t: t, name: "node-b", ns: nsB, addr: netip.MustParseAddr("10.77.0.2"), dir: t.TempDir()}
	for _, n := range []*testNode{a, b} {
		if err := n.ns.AddAddr("dbs0", netip.PrefixFrom(n.addr, 24)); err != nil {
			t.Fatal(err)
		}
	}
	idA, err := EnsureIdentity(filepath.Join(a.dir, "state"), a.name)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := EnsureIdentity(filepath.Join(b.dir, "state"), b.name)
	if err != nil {
		t.Fatal(err)
	}
	authA := peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte("cluster-secret-cluster-secret-32")}
	authB := authA
	if opts.auth != nil {
		opts.auth(&authA, &authB)
	}
	a.cfg = testConfig(a, b, idB.Fingerprint, authA)
	b.cfg = testConfig(b, a, idA.Fingerprint, authB)
	b.wrap = opts.wrapB
	if opts.cfg != nil {
		opts.cfg(&a.cfg, &b.cfg)
	}
	t.Cleanup(func() { a.stop(); b.stop() })
	a.start(true)
	b.start(false)
	return a, b
}

func testConfig(self, peer *testNode, pin string, auth peerlink.AuthConfig) Config {
	ns := self.ns
	return Config{
		NodeID: self.name, PeerID: peer.name,
		PeerURL:        "https://" + netip.AddrPortFrom(peer.addr, 7443).String(),
		PeerCertSHA256: pin,
		StateDir:       filepath.Join(self.dir, "state"),
		Paths: []Path{
			{Name: "muros-db", Local: self.dbDir(), Dir: true},
			{Name: "kea-leases", Local: self.keaDir(), Dir: true},
		},
		Auth:                auth,
		AntiEntropyInterval: 3 * time.Second,
		ProbeInterval:       200 * time.Millisecond,
		RetryMax:            400 * time.Millisecond,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() error {
				var err error
				c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
}

func (tn *testNode) start(master bool) {
	t := tn.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t, tn.name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := New(tn.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	mountHealth(n)
	var ln net.Listener
	if err := tn.ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(tn.addr, 7443).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn.node, tn.cancel = n, cancel
	tn.runErrs = make(chan error, 2)
	n.SetRole(master)
	tn.wg.Add(2)
	serve := n.Serve
	if tn.wrap != nil {
		serve = func(ctx context.Context, ln net.Listener) error { return serveWrapped(ctx, n, ln, tn.wrap) }
	}
	go func() { defer tn.wg.Done(); tn.runErrs <- serve(ctx, ln) }()
	go func() { defer tn.wg.Done(); tn.runErrs <- n.Run(ctx) }()
}

func (tn *testNode) stop() {
	if tn.cancel == nil {
		return
	}
	tn.cancel()
	tn.wg.Wait()
	tn.cancel = nil
	close(tn.runErrs)
	for err := range tn.runErrs {
		if err != nil {
			tn.t.Errorf("%s: %v", tn.name, err)
		}
	}
}

// serveWrapped is Node.Serve with wrap around the handler.
func serveWrapped(ctx context.Context, n *Node, ln net.Listener, wrap func(http.Handler) http.Handler) error {
	srv := &http.Server{Handler: wrap(n.Handler()), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, n.TLSConfig())) }()
	<-ctx.Done()
	srv.Close()
	<-errc
	return nil
}

type testWriter struct {
	t    testing.TB
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s: %s", w.name, bytes.TrimSpace(p))
	return len(p), nil
}

// waitFor polls cond; the timeout is a liveness bound, not a speed check.
func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 20s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameFile(a, b string) func() error {
	return func() error {
		x, err := os.ReadFile(a)
		if err != nil {
			return err
		}
		y, err := os.ReadFile(b)
		if err != nil {
			return err
		}
		if !bytes.Equal(x, y) {
			return fmt.Errorf("%s (%d bytes) differs from %s (%d bytes)", b, len(y), a, len(x))
		}
		return nil
	}
}

func gone(p string) func() error {
	return func() error {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s still exists", p)
		}
		return nil
	}
}

func writeFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLabPairReplicates(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	// Whole files, a new subdirectory, a deletion.
	writeFile(t, filepath.Join(a.dbDir(), "nftables.conf"), "table inet filter {}\n")
	waitFor(t, "file on backup", sameFile(filepath.Join(a.dbDir(), "nftables.conf"), filepath.Join(b.dbDir(), "nftables.conf")))
	writeFile(t, filepath.Join(a.dbDir(), "zones", "lan", "hosts"), "h1\n")
	waitFor(t, "file in new subdirectory", sameFile(filepath.Join(a.dbDir(), "zones", "lan", "hosts"), filepath.Join(b.dbDir(), "zones", "lan", "hosts")))
	writeFile(t, filepath.Join(a.dbDir(), "nftables.conf"), "table inet filter { chain input {} }\n")
	waitFor(t, "changed file", sameFile(filepath.Join(a.dbDir(), "nftables.conf"), filepath.Join(b.dbDir(), "nftables.conf")))
	os.Remove(filepath.Join(a.dbDir(), "nftables.conf"))
	waitFor(t, "deletion", gone(filepath.Join(b.dbDir(), "nftables.conf")))
	os.RemoveAll(filepath.Join(a.dbDir(), "zones"))
	waitFor(t, "directory deletion", gone(filepath.Join(b.dbDir(), "zones", "lan", "hosts")))

	// The health endpoint answers an operator's curl (no client
	// certificate) over the same listener, with a token minted on a.
	tok, err := peerlink.MintOperatorToken(a.cfg.Auth, a.name, b.name, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	url := "https://10.77.0.2:7443/api/health"
	out, err := a.ns.Run("curl", "-sk", "--tlsv1.3", "-H", "Authorization: Bearer "+tok, url)
	if err != nil || !strings.Contains(out, `"role":"backup"`) || !strings.Contains(out, `"revision"`) {
		t.Fatalf("curl health: %v: %s", err, out)
	}
	out, _ = a.ns.Run("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", url)
	if out != "401" {
		t.Fatalf("curl health without token: %q, want 401", out)
	}
	if out, err := a.ns.Run("curl", "-sk", "--tls-max", "1.2", "-H", "Authorization: Bearer "+tok, url); err == nil {
		t.Fatalf("TLS 1.2 client got an answer: %s", out)
	}
	st := b.node.Status()
	if st.Revision == 0 || st.Role != "backup" {
		t.Fatalf("backup status %+v", st)
	}
	if a.node.Status().Rejected[peerlink.ReasonPeerCert]+b.node.Status().Rejected[peerlink.ReasonPeerCert] != 0 {
		t.Fatal("peer certificate rejected between correctly pinned nodes")
	}
}

// A replicated directory removed and made again while the master runs
// (a package reinstall) keeps replicating from the watch on its parent,
// not only at the next anti-entropy pass (here an hour away).
func TestLabPairRootRecreated(t *testing.T) {
	a, b := newLabPair(t, pairOptions{cfg: func(a, b *Config) {
		a.AntiEntropyInterval, b.AntiEntropyInterval = time.Hour, time.Hour
	}})
	lease := func(n *testNode) string { return filepath.Join(n.keaDir(), "kea-leases4.csv") }
	writeFile(t, lease(a), "address,hwaddr\n")
	waitFor(t, "lease file on backup", sameFile(lease(a), lease(b)))
	if err := os.RemoveAll(a.keaDir()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "removal on backup", gone(lease(b)))
	time.Sleep(100 * time.Millisecond) // the removal's events are handled
	writeFile(t, lease(a), "address,hwaddr\n10.10.0.50,aa:bb:cc:dd:ee:ff\n")
	waitFor(t, "lease file in the recreated directory", sameFile(lease(a), lease(b)))
	// And the recreated directory is watched again.
	writeFile(t, filepath.Join(a.keaDir(), "dhcp4.conf"), "{}\n")
	waitFor(t, "second file", sameFile(filepath.Join(a.keaDir(), "dhcp4.conf"), filepath.Join(b.keaDir(), "dhcp4.conf")))
}

// A Kea memfile lease CSV grows line by line: each line is shipped alone.
func TestLabPairLeaseAppend(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	src := filepath.Join(a.keaDir(), "kea-leases4.csv")
	dst := filepath.Join(b.keaDir(), "kea-leases4.csv")
	header := "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n"
	writeFile(t, src, header)
	waitFor(t, "lease file header", sameFile(src, dst))
	// Counters are updated just after the rename: let the header's settle.
	waitFor(t, "header counted", func() error {
		if got := b.node.Status().Stats["bytes_applied"]; got != uint64(len(header)) {
			return fmt.Errorf("%d bytes applied", got)
		}
		return nil
	})
	f, err := os.OpenFile(src, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < 30; i++ {
		before := b.node.Status().Stats
		line := fmt.Sprintf("10.10.0.%d,aa:bb:cc:dd:ee:%02x,,3600,%d,1,0,0,host%d,0,,0\n", 100+i, i, 1764050000+i, i)
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("lease line %d", i), func() error {
			if err := sameFile(src, dst)(); err != nil {
				return err
			}
			// The counter is updated just after the rename.
			if b.node.Status().Stats["bytes_applied"]-before["bytes_applied"] < uint64(len(line)) {
				return fmt.Errorf("apply not yet counted")
			}
			return nil
		})
		after := b.node.Status().Stats
		if got := after["bytes_applied"] - before["bytes_applied"]; got != uint64(len(line)) {
			t.Fatalf("line %d: backup received %d payload bytes, want only the %d appended", i, got, len(line))
		}
	}
	waitFor(t, "master counted 30 appends", func() error {
		if n := a.node.Status().Stats["entries_sent_append"]; n < 30 {
			return fmt.Errorf("master sent %d append entries, want >= 30", n)
		}
		return nil
	})
}

func sqlite(t *testing.T, db string, sql string, extra ...string) string {
	t.Helper()
	args := append(append([]string{}, extra...), db, sql)
	out, err := exec.Command("sqlite3", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %s %q: %v: %s", db, sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// A database written in a loop arrives as a database that opens and passes
// integrity_check, at every version the backup ever shows.
func TestLabPairSQLite(t *testing.T) {
	for _, mode := range []string{"wal", "delete"} {
		t.Run(mode, func(t *testing.T) {
			a, b := newLabPair(t, pairOptions{})
			src := filepath.Join(a.dbDir(), "muros.db")
			dst := filepath.Join(b.dbDir(), "muros.db")
			sqlite(t, src, "PRAGMA journal_mode="+mode+"; CREATE TABLE rules(id INTEGER PRIMARY KEY, body TEXT);")
			const rows = 60
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < rows; i++ {
					// Multi-statement transactions: a torn copy would show.
					sql := fmt.Sprintf(".timeout 5000\nBEGIN; INSERT INTO rules(body) VALUES ('%s'); UPDATE rules SET body = body || 'x' WHERE id %% 7 = %d; COMMIT;", strings.Repeat("r", 200+i), i%7)
					cmd := exec.Command("sqlite3", src)
					cmd.Stdin = strings.NewReader(sql)
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Errorf("writer: %v: %s", err, out)
						return
					}
				}
			}()
			checks := 0
			for running := true; running; {
				select {
				case <-done:
					running = false
				default:
				}
				if _, err := os.Stat(dst); err == nil {
					// Copy first: a reader must not leave sidecars that race the applier.
					cp := filepath.Join(t.TempDir(), "check.db")
					data, err := os.ReadFile(dst)
					if err != nil {
						t.Fatal(err)
					}
					os.WriteFile(cp, data, 0o644)
					if got := sqlite(t, cp, "PRAGMA integrity_check;"); got != "ok" {
						t.Fatalf("backup copy fails integrity_check: %s", got)
					}
					checks++
				}
				time.Sleep(10 * time.Millisecond)
			}
			want := sqlite(t, src, "SELECT count(*), sum(length(body)) FROM rules;")
			waitFor(t, "final database on backup", func() error {
				data, err := os.ReadFile(dst)
				if err != nil {
					return err
				}
				cp := filepath.Join(t.TempDir(), "final.db")
				os.WriteFile(cp, data, 0o644)
				if got := sqlite(t, cp, "PRAGMA integrity_check;"); got != "ok" {
					t.Fatalf("integrity_check: %s", got)
				}
				if got := sqlite(t, cp, "SELECT count(*), sum(length(body)) FROM rules;"); got != want {
					return fmt.Errorf("backup has %s, master %s", got, want)
				}
				return nil
			})
			if got := sqlite(t, dst, "PRAGMA integrity_check;", "-readonly"); got != "ok" {
				t.Fatalf("backup database in place: %s", got)
			}
			t.Logf("%d intermediate versions checked", checks)
		})
	}
}

// After a role swap the new master's changes flow the other way and the old
// master, now backup, is brought up to date (master's content wins).
func TestLabPairRoleSwap(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	writeFile(t, filepath.Join(a.dbDir(), "x"), "from a\n")
	waitFor(t, "a -> b", sameFile(filepath.Join(a.dbDir(), "x"), filepath.Join(b.dbDir(), "x")))
	a.node.SetRole(false)
	b.node.SetRole(true)
	writeFile(t, filepath.Join(b.dbDir(), "y"), "from b\n")
	writeFile(t, filepath.Join(b.dbDir(), "x"), "changed on b\n")
	waitFor(t, "b -> a new file", sameFile(filepath.Join(b.dbDir(), "y"), filepath.Join(a.dbDir(), "y")))
	waitFor(t, "b -> a changed file", sameFile(filepath.Join(b.dbDir(), "x"), filepath.Join(a.dbDir(), "x")))
	// A stray edit on the backup is overwritten by the next anti-entropy.
	writeFile(t, filepath.Join(a.dbDir(), "stray"), "edited by hand on the backup\n")
	waitFor(t, "stray file removed from backup", gone(filepath.Join(a.dbDir(), "stray")))
	if r := a.node.Status().Revision; r <= 1 {
		t.Fatalf("revision on a %d", r)
	}
}

// The master survives its peer being down and catches up when it returns;
// a restarted backup is repaired without operator action.
func TestLabPairPeerDownCatchUp(t *testing.T) {
	a, b := newLabPair(t, pairOptions{auth: func(x, y *peerlink.AuthConfig) {
		// Exercise the EdDSA key pairs here.
		ka, kb := mustEd25519(t), mustEd25519(t)
		*x = peerlink.AuthConfig{Method: peerlink.MethodEdDSA, PrivateKey: ka.priv, PeerPublicKey: kb.pub}
		*y = peerlink.AuthConfig{Method: peerlink.MethodEdDSA, PrivateKey: kb.priv, PeerPublicKey: ka.pub}
	}})
	writeFile(t, filepath.Join(a.dbDir(), "before"), "1\n")
	waitFor(t, "initial sync", sameFile(filepath.Join(a.dbDir(), "before"), filepath.Join(b.dbDir(), "before")))
	b.stop()
	writeFile(t, filepath.Join(a.dbDir(), "during"), "written while the peer was down\n")
	writeFile(t, filepath.Join(a.dbDir(), "before"), "2\n")
	os.WriteFile(filepath.Join(a.keaDir(), "kea-leases4.csv"), []byte("l1\n"), 0o644)
	waitFor(t, "master notices the peer is down", func() error {
		if a.node.Status().Peer.Reachable {
			return fmt.Errorf("peer still reachable")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // a few failed retries
	b.start(false)
	waitFor(t, "catch up new file", sameFile(filepath.Join(a.dbDir(), "during"), filepath.Join(b.dbDir(), "during")))
	waitFor(t, "catch up changed file", sameFile(filepath.Join(a.dbDir(), "before"), filepath.Join(b.dbDir(), "before")))
	waitFor(t, "catch up lease", sameFile(filepath.Join(a.keaDir(), "kea-leases4.csv"), filepath.Join(b.keaDir(), "kea-leases4.csv")))
	if a.node.Status().Stats["sync_errors"] == 0 {
		t.Fatal("no sync errors counted while the peer was down")
	}
}

// The backup fails in the middle of installing a batch (an error from the
// install step, as a full disk would cause), then restarts: nothing is lost
// and the master's retries complete the replica.
func TestLabPairBackupFailsMidApply(t *testing.T) {
	a, b := newLabPair(t, pairOptions{})
	writeFile(t, filepath.Join(a.dbDir(), "seed"), "seed\n")
	waitFor(t, "seed", sameFile(filepath.Join(a.dbDir(), "seed"), filepath.Join(b.dbDir(), "seed")))
	var once sync.Once
	failed := make(chan struct{})
	b.node.applier.mu.Lock()
	b.node.applier.crash = func(step string) error {
		if step != stepOp {
			return nil
		}
		var err error
		once.Do(func() { err = errCrash; close(failed) })
		return err
	}
	b.node.applier.mu.Unlock()
	names := []string{"r1", "r2", "r3", "r4", "r5"}
	for _, n := range names {
		writeFile(t, filepath.Join(a.dbDir(), "batch", n), strings.Repeat(n, 1000))
	}
	select {
	case <-failed:
	case <-time.After(20 * time.Second):
		t.Fatal("the injected install failure never happened")
	}
	for _, n := range names {
		waitFor(t, "after the failed install, "+n, sameFile(filepath.Join(a.dbDir(), "batch", n), filepath.Join(b.dbDir(), "batch", n)))
	}
	// And a restart of the backup finds a clean state.
	b.stop()
	b.start(false)
	writeFile(t, filepath.Join(a.dbDir(), "after-restart"), "x")
	waitFor(t, "after restart", sameFile(filepath.Join(a.dbDir(), "after-restart"), filepath.Join(b.dbDir(), "after-restart")))
	waitFor(t, "restarted backup counts its apply", func() error {
		if b.node.Status().Stats["pushes_applied"] == 0 {
			return fmt.Errorf("restarted backup counted no apply")
		}
		return nil
	})
}
