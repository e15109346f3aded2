package dbsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/peerlink"
)

// nodeChildEnv makes the test binary run a backup Node (see nodeChild):
// a real process in its own namespace that the test SIGKILLs mid-apply.
const nodeChildEnv = "DBSYNC_NODE_CHILD"

type nodeChildParams struct {
	NodeID, PeerID, PeerURL, PeerPin string
	StateDir, DBDir, KeaDir          string
	Secret                           string
	Listen                           string
	KillAtOp                         int  // SIGKILL itself at this install op (0: never)
	Master                           bool // run as master (default: backup)
}

func nodeChild(spec string) {
	var p nodeChildParams
	if err := json.Unmarshal([]byte(spec), &p); err != nil {
		fmt.Fprintln(os.Stderr, "node child:", err)
		os.Exit(3)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	n, err := New(Config{
		NodeID: p.NodeID, PeerID: p.PeerID, PeerURL: p.PeerURL, PeerCertSHA256: p.PeerPin,
		StateDir: p.StateDir,
		Paths: []Path{
			{Name: "muros-db", Local: p.DBDir, Dir: true},
			{Name: "kea-leases", Local: p.KeaDir, Dir: true},
		},
		Auth: peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte(p.Secret)},
	}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "node child:", err)
		os.Exit(3)
	}
	if p.KillAtOp > 0 {
		ops := 0
		n.applier.crash = func(step string) error {
			if step == stepOp {
				if ops++; ops == p.KillAtOp {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					time.Sleep(time.Hour)
				}
			}
			return nil
		}
	}
	ln, err := net.Listen("tcp", p.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "node child:", err)
		os.Exit(3)
	}
	ctx := context.Background()
	n.SetRole(p.Master)
	go n.Run(ctx)
	log.Info("node child serving", "addr", p.Listen)
	n.Serve(ctx, ln)
}

// A backup Node process is SIGKILLed in the middle of installing a batch,
// then restarted: it completes or rolls back the batch from its journal and
// the master brings it fully up to date.
func TestLabBackupProcessKilledMidApply(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Fatalf("sqlite3 CLI not on PATH (dbsync lab tests never skip): %v", err)
	}
	nsA := lab.NewNetnsT(t, "dbka")
	nsB := lab.NewNetnsT(t, "dbkb")
	if err := lab.Veth(nsA, "dbs0", nsB, "dbs0"); err != nil {
		t.Fatal(err)
	}
	a := &testNode{t: t, name: "node-a", ns: nsA, addr: netip.MustParseAddr("10.77.0.1"), dir: t.TempDir()}
	bAddr := netip.MustParseAddr("10.77.0.2")
	bDir := t.TempDir()
	for _, x := range []struct {
		ns   *lab.Netns
		addr netip.Addr
	}{{nsA, a.addr}, {nsB, bAddr}} {
		if err := x.ns.AddAddr("dbs0", netip.PrefixFrom(x.addr, 24)); err != nil {
			t.Fatal(err)
		}
	}
	idA, err := EnsureIdentity(filepath.Join(a.dir, "state"), a.name)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := EnsureIdentity(filepath.Join(bDir, "state"), "node-b")
	if err != nil {
		t.Fatal(err)
	}
	secret := "cluster-secret-cluster-secret-32"
	peerB := &testNode{name: "node-b", addr: bAddr}
	a.cfg = testConfig(a, peerB, idB.Fingerprint, peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte(secret)})
	params := nodeChildParams{
		NodeID: "node-b", PeerID: "node-a", PeerURL: "https://10.77.0.1:7443", PeerPin: idA.Fingerprint,
		StateDir: filepath.Join(bDir, "state"), DBDir: filepath.Join(bDir, "db"), KeaDir: filepath.Join(bDir, "kea"),
		Secret: secret, Listen: "10.77.0.2:7443",
	}
	startChild := func(killAt int) *lab.Process {
		p := params
		p.KillAtOp = killAt
		spec, _ := json.Marshal(p)
		proc, err := nsB.Start("env", nodeChildEnv+"="+string(spec), os.Args[0], "-test.run=^$")
		if err != nil {
			t.Fatal(err)
		}
		return proc
	}
	t.Cleanup(a.stop)
	a.start(true)

	child := startChild(4)
	var names []string
	for i := 0; i < 12; i++ {
		names = append(names, fmt.Sprintf("rules/r%02d.conf", i))
	}
	for _, n := range names {
		writeFile(t, filepath.Join(a.dbDir(), n), strings.Repeat(n+"\n", 4000))
	}
	select {
	case <-child.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("backup process was not killed by its install hook; log:\n%s", child.Log())
	}
	var ee *exec.ExitError
	if err := child.Wait(); !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("backup process ended with %v, want SIGKILL; log:\n%s", err, child.Log())
	}
	if _, err := os.Stat(filepath.Join(params.StateDir, "journal")); err != nil {
		t.Fatalf("no journal after a kill mid-install (the kill did not land mid-batch?): %v", err)
	}

	child = startChild(0)
	for _, n := range names {
		waitFor(t, n, sameFile(filepath.Join(a.dbDir(), n), filepath.Join(params.DBDir, n)))
	}
	// The journal goes after the last file is renamed into place and the
	// revision is durable: it may trail the content by an fsync.
	waitFor(t, "journal removed after restart", func() error {
		if _, err := os.Stat(filepath.Join(params.StateDir, "journal")); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal still present: %v", err)
		}
		return nil
	})
	filepath.WalkDir(params.DBDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			t.Errorf("staging file left: %s", p)
		}
		return nil
	})
	if err := child.Stop(5 * time.Second); err != nil {
		t.Logf("child stop: %v", err)
	}
}
