package dbsync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muros/muros-had/lab"
)

// sameAttrs waits for b to hold a's content, owner, mode and mtime.
func sameAttrs(t *testing.T, a, b string) func() error {
	return func() error {
		if err := sameFile(a, b)(); err != nil {
			return err
		}
		fa, err := os.Stat(a)
		if err != nil {
			return err
		}
		fb, err := os.Stat(b)
		if err != nil {
			return err
		}
		if want, got := attrsOfInfo(fa), attrsOfInfo(fb); want != got {
			return fmt.Errorf("%s has %+v, master %+v", b, got, want)
		}
		return nil
	}
}

func attrsOfInfo(fi os.FileInfo) attrs {
	o := newAccounts().owner(fi)
	return attrs{o.UID, o.GID, fi.Mode().Perm(), fi.ModTime().UnixNano()}
}

func chownT(t *testing.T, p string, uid, gid int) {
	t.Helper()
	if err := os.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// A file owned by uid 4242 gid 4243 (numeric: no account is created) with
// mode 0640 arrives on the backup with that owner, mode and mtime; a chown
// and a chmod on the master are replicated; Kea's lease file keeps its
// owner while lines are appended and shipped as appends.
func TestLabPairOwnership(t *testing.T) {
	mustRoot(t)
	a, b := newLabPair(t, pairOptions{})
	src := filepath.Join(a.dbDir(), "objects", "hosts.conf")
	dst := filepath.Join(b.dbDir(), "objects", "hosts.conf")
	writeFile(t, src, "host fw1 { }\n")
	chownT(t, src, 4242, 4243)
	if err := os.Chmod(src, 0o640); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "owner 4242:4243 mode 0640 on the backup", sameAttrs(t, src, dst))
	if at := attrsOf(t, dst); at.UID != 4242 || at.GID != 4243 || at.Mode != 0o640 {
		t.Fatalf("backup file %+v", at)
	}

	// A chown alone (an attribute change, fsnotify Chmod) is replicated.
	chownT(t, src, 4244, 4245)
	waitFor(t, "chown replicated", sameAttrs(t, src, dst))
	if at := attrsOf(t, dst); at.UID != 4244 || at.GID != 4245 {
		t.Fatalf("after chown the backup file is %+v", at)
	}
	// And so is a chmod, and a change of the group only.
	if err := os.Chmod(src, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "chmod replicated", sameAttrs(t, src, dst))
	chownT(t, src, 4244, 4243)
	waitFor(t, "chgrp replicated", sameAttrs(t, src, dst))

	// Kea's lease file: owned by Kea's (here numeric) account, appended to.
	lsrc := filepath.Join(a.keaDir(), "kea-leases4.csv")
	ldst := filepath.Join(b.keaDir(), "kea-leases4.csv")
	writeFile(t, lsrc, "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n")
	chownT(t, lsrc, 4242, 4243)
	waitFor(t, "lease file with Kea's owner", sameAttrs(t, lsrc, ldst))
	appendsBefore := a.node.Status().Stats["entries_sent_append"]
	f, err := os.OpenFile(lsrc, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < 5; i++ {
		fmt.Fprintf(f, "10.10.0.%d,aa:bb:cc:dd:ee:%02x,,3600,%d,1,0,0,host%d,0,,0\n", 100+i, i, 1764050000+i, i)
		waitFor(t, fmt.Sprintf("lease line %d with the owner kept", i), sameAttrs(t, lsrc, ldst))
	}
	if at := attrsOf(t, ldst); at.UID != 4242 || at.GID != 4243 {
		t.Fatalf("lease file on the backup owned by %d:%d after appends, want 4242:4243", at.UID, at.GID)
	}
	waitFor(t, "lines shipped as appends", func() error {
		if n := a.node.Status().Stats["entries_sent_append"] - appendsBefore; n == 0 {
			return fmt.Errorf("no append entries sent: the owner check made every line a whole put")
		}
		return nil
	})
	if n := b.node.Status().Stats["owner_errors"]; n != 0 {
		t.Fatalf("backup counted %d owner errors", n)
	}
	// Nothing left to repair: a full comparison finds no difference (the
	// owner comparison does not flap). The second pass to start proves the
	// first one finished counting.
	repairs := a.node.Status().Stats["anti_entropy_repairs"]
	runs := a.node.Status().Stats["anti_entropy_runs"]
	waitFor(t, "two anti-entropy passes", func() error {
		if n := a.node.Status().Stats["anti_entropy_runs"]; n < runs+2 {
			return fmt.Errorf("%d anti-entropy passes so far", n-runs)
		}
		return nil
	})
	if got := a.node.Status().Stats["anti_entropy_repairs"]; got != repairs {
		t.Fatalf("anti-entropy repaired %d files of an in-sync pair", got-repairs)
	}
}

// capNode is one node of TestLabUnitCapabilitiesPair: a child process in
// its own namespace holding only the given capabilities.
type capNode struct {
	name string
	ns   *lab.Netns
	addr netip.Addr
	dir  string
	id   Identity
}

func (c *capNode) state() string { return filepath.Join(c.dir, "state") }
func (c *capNode) db() string    { return filepath.Join(c.dir, "db") }
func (c *capNode) kea() string   { return filepath.Join(c.dir, "kea") }

// Both nodes run as processes restricted to the packaged unit's
// capabilities, with Kea's directory and lease file owned by Kea's account
// (numeric 4242:4243) and private to it, as on a MurOS firewall: the master
// reads them, the backup writes them with Kea's owner. With the unit's
// old, network-only set the backup cannot install them (control).
func TestLabUnitCapabilitiesPair(t *testing.T) {
	mustRoot(t)
	unit := unitCapabilities(t)
	for _, tc := range []struct {
		name       string
		backupCaps []string
		works      bool
	}{
		{"unit capabilities", unit, true},
		{"backup with network capabilities only", []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := capPair(t)
			// Kea's files on the master, private to Kea.
			lease := "kea-leases4.csv"
			writeFile(t, filepath.Join(a.kea(), lease), "address,hwaddr\n")
			os.Chmod(filepath.Join(a.kea(), lease), 0o600)
			chownT(t, filepath.Join(a.kea(), lease), 4242, 4243)
			for _, n := range []*capNode{a, b} {
				os.Chmod(n.kea(), 0o700)
				chownT(t, n.kea(), 4242, 4243)
			}
			bproc := startCapNode(t, b, a, false, tc.backupCaps)
			aproc := startCapNode(t, a, b, true, unit)
			src, dst := filepath.Join(a.kea(), lease), filepath.Join(b.kea(), lease)
			if !tc.works {
				// The backup cannot even list Kea's directory for its manifest.
				waitFor(t, "the master's sync fails", func() error {
					if !strings.Contains(aproc.Log(), "sync failed") {
						return fmt.Errorf("no sync failure logged yet")
					}
					return nil
				})
				if _, err := os.Stat(dst); err == nil {
					t.Fatalf("%s exists on a backup without the capabilities to write it", dst)
				}
				return
			}
			waitFor(t, "lease file with Kea's owner on the backup", sameAttrs(t, src, dst))
			f, err := os.OpenFile(src, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for i := 0; i < 3; i++ {
				fmt.Fprintf(f, "10.10.0.%d,aa:bb:cc:dd:ee:%02x\n", 100+i, i)
				waitFor(t, fmt.Sprintf("lease line %d", i), sameAttrs(t, src, dst))
			}
			if at := attrsOf(t, dst); at.UID != 4242 || at.GID != 4243 || at.Mode != 0o600 {
				t.Fatalf("backup lease file %+v", at)
			}
			for _, l := range []string{aproc.Log(), bproc.Log()} {
				if strings.Contains(l, "without the master's owner") || strings.Contains(l, "permission denied") {
					t.Fatalf("a node logged a permission problem:\n%s", l)
				}
			}
		})
	}
}

// capPair makes two namespaces joined by a veth and each node's
// directories and TLS identity.
func capPair(t *testing.T) (a, b *capNode) {
	t.Helper()
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Fatalf("sqlite3 CLI not on PATH (dbsync lab tests never skip): %v", err)
	}
	a = &capNode{name: "node-a", ns: lab.NewNetnsT(t, "dbca"), addr: netip.MustParseAddr("10.77.0.1"), dir: t.TempDir()}
	b = &capNode{name: "node-b", ns: lab.NewNetnsT(t, "dbcb"), addr: netip.MustParseAddr("10.77.0.2"), dir: t.TempDir()}
	if err := lab.Veth(a.ns, "dbs0", b.ns, "dbs0"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*capNode{a, b} {
		if err := n.ns.AddAddr("dbs0", netip.PrefixFrom(n.addr, 24)); err != nil {
			t.Fatal(err)
		}
		id, err := EnsureIdentity(n.state(), n.name)
		if err != nil {
			t.Fatal(err)
		}
		n.id = id
		for _, d := range []string{n.db(), n.kea()} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return a, b
}

// startCapNode runs self as a node child process with only caps; the
// namespace's cleanup stops it.
func startCapNode(t *testing.T, self, peer *capNode, master bool, caps []string) *lab.Process {
	t.Helper()
	spec, _ := json.Marshal(nodeChildParams{
		NodeID: self.name, PeerID: peer.name,
		PeerURL: "https://" + netip.AddrPortFrom(peer.addr, 7443).String(), PeerPin: peer.id.Fingerprint,
		StateDir: self.state(), DBDir: self.db(), KeaDir: self.kea(),
		Secret: "cluster-secret-cluster-secret-32", Listen: netip.AddrPortFrom(self.addr, 7443).String(),
		Master: master,
	})
	args := append(withCaps(t, caps)[1:], "env", nodeChildEnv+"="+string(spec), os.Args[0], "-test.run=^$")
	p, err := self.ns.Start(withCaps(t, caps)[0], args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	waitFor(t, self.name+" serving", func() error {
		if p.Exited() {
			t.Fatalf("%s exited: %v\n%s", self.name, p.Wait(), p.Log())
		}
		if !strings.Contains(p.Log(), "node child serving") {
			return fmt.Errorf("not serving yet")
		}
		return nil
	})
	return p
}

// olderPeer makes a Node's listener answer like a release before batch
// version 2: its manifest has no batch_version and no owners, and it
// refuses any push body that is not version 1 (as ParseBatch did, with
// 400). It counts the push versions it was sent.
type olderPeer struct {
	mu       sync.Mutex
	versions map[byte]int
}

func (o *olderPeer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case PathPush:
			body, err := io.ReadAll(r.Body)
			if err != nil || len(body) < 5 {
				http.Error(w, `{"error":"Bad Request"}`, http.StatusBadRequest)
				return
			}
			o.mu.Lock()
			o.versions[body[4]]++
			o.mu.Unlock()
			if body[4] != 1 {
				http.Error(w, `{"error":"Bad Request"}`, http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		case PathManifest:
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			var m map[string]any
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &m) != nil {
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes())
				return
			}
			delete(m, "batch_version")
			for _, f := range m["files"].([]any) {
				for _, k := range []string{"uid", "gid", "user", "group"} {
					delete(f.(map[string]any), k)
				}
			}
			writeJSON(w, http.StatusOK, m)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (o *olderPeer) sent() map[byte]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.versions)
}

// A master replicating to a peer of the previous release sends it version
// 1 batches (content and mode; no owners), and a chown on the master does
// not make it re-send files the older peer cannot chown anyway.
func TestLabPairOlderPeer(t *testing.T) {
	mustRoot(t)
	old := &olderPeer{versions: map[byte]int{}}
	a, b := newLabPair(t, pairOptions{wrapB: old.wrap})
	src := filepath.Join(a.dbDir(), "rules.conf")
	dst := filepath.Join(b.dbDir(), "rules.conf")
	writeFile(t, src, "table inet filter {}\n")
	waitFor(t, "file on the older peer", sameFile(src, dst))
	lsrc := filepath.Join(a.keaDir(), "kea-leases4.csv")
	writeFile(t, lsrc, "h\n")
	waitFor(t, "lease file", sameFile(lsrc, filepath.Join(b.keaDir(), "kea-leases4.csv")))
	f, err := os.OpenFile(lsrc, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("l1\n")
	f.Close()
	waitFor(t, "appended lease line", sameFile(lsrc, filepath.Join(b.keaDir(), "kea-leases4.csv")))
	pushes := b.node.Status().Stats["pushes_applied"]
	chownT(t, src, 4242, 4243)
	// Two full comparisons later nothing was pushed for the chown.
	runs := a.node.Status().Stats["anti_entropy_runs"]
	waitFor(t, "two anti-entropy passes", func() error {
		if n := a.node.Status().Stats["anti_entropy_runs"]; n < runs+2 {
			return fmt.Errorf("%d passes so far", n-runs)
		}
		return nil
	})
	if got := b.node.Status().Stats["pushes_applied"]; got != pushes {
		t.Fatalf("%d pushes to the older peer after a chown it cannot replicate", got-pushes)
	}
	sent := old.sent()
	if sent[1] == 0 || len(sent) != 1 {
		t.Fatalf("push versions sent to the older peer: %v, want only version 1", sent)
	}
	if at := attrsOf(t, dst); at.UID != 0 {
		t.Fatalf("older peer's file owned by %d", at.UID)
	}
}
