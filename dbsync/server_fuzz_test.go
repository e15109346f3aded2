package dbsync

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/peerlink"
)

// fuzzPushFiles are on the backup before each fuzzed push (wire path ->
// content): a directory root "db" and a file root "conf".
var fuzzPushFiles = map[string]string{
	"db/a":          "hello\n",
	"db/sub/b":      "bbb",
	"db/sub/deep/c": "c",
	"conf":          "key=value\n",
}

// fuzzPushNode is a fresh backup "b" (peer "a") in its own directory, with
// fuzzPushFiles on disk. The identities are made once and copied in.
type fuzzPushEnv struct {
	peer    Identity
	leaf    *x509.Certificate
	stateID string // a state directory holding b's identity, copied per node
	auth    peerlink.AuthConfig
}

func newFuzzPushEnv(f *testing.F) *fuzzPushEnv {
	base := f.TempDir()
	peer, err := EnsureIdentity(filepath.Join(base, "peer"), "a")
	if err != nil {
		f.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(peer.Cert.Certificate[0])
	if err != nil {
		f.Fatal(err)
	}
	stateID := filepath.Join(base, "b")
	if _, err := EnsureIdentity(stateID, "b"); err != nil {
		f.Fatal(err)
	}
	return &fuzzPushEnv{peer: peer, leaf: leaf, stateID: stateID,
		auth: peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte("cluster-secret-cluster-secret-32")}}
}

// fuzzDir is a fresh directory for one input, on tmpfs when there is one:
// an apply fsyncs every file and directory it touches, which on a disk
// costs tens of milliseconds per input and stalls the fuzzer's minimizing.
func fuzzDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "muros-had-fuzz-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

func (e *fuzzPushEnv) node(t *testing.T) (n *Node, base string) {
	t.Helper()
	base = fuzzDir(t)
	state := filepath.Join(base, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{peerlink.LegacyCertFile, peerlink.LegacyKeyFile} {
		b, err := os.ReadFile(filepath.Join(e.stateID, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	paths := []Path{
		{Name: "db", Local: filepath.Join(base, "db"), Dir: true},
		{Name: "conf", Local: filepath.Join(base, "etc", "conf")},
	}
	for wire, content := range fuzzPushFiles {
		rp, err := resolveWirePath(paths, wire)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(rp.local()), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(rp.local(), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	n, err := New(Config{
		NodeID: "b", PeerID: "a", PeerURL: "https://192.0.2.1:7443", PeerCertSHA256: e.peer.Fingerprint,
		StateDir: state, Auth: e.auth, MaxBodyBytes: 1 << 16, MaxBatchBytes: 1 << 15, Paths: paths,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n, base
}

// fileState is one path of a snapshot.
type fileState struct {
	Dir  bool
	Mode fs.FileMode
	Sum  [32]byte
}

// snapshotTree lists everything under dir (relative slash paths).
func snapshotTree(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{Dir: d.IsDir(), Mode: fi.Mode()}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.Sum = sha256.Sum256(b)
		}
		out[filepath.ToSlash(rel)] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// localOf maps a wire path to the path in a snapshot of the node's base.
func localOf(wire string) string {
	if wire == "conf" {
		return "etc/conf"
	}
	return wire
}

// FuzzPushHandler sends arbitrary bodies to POST /api/sync/push through the
// real handler of a backup, with the pinned peer certificate and a fresh
// sync token, onto a tree with files in it. A refused push changes nothing
// on disk (content, modes, directories, state files) nor the revision, and
// is counted under one rejection reason. An accepted one is a batch that
// ParseBatch reads, whose revision is now the node's; each put or append
// left exactly its SHA-256 and mode, each delete left nothing unless the
// batch puts files below it, no file outside the batch (or of an entry the
// answer lists as failed) changed, and no staged file or journal is left.
func FuzzPushHandler(f *testing.F) {
	env := newFuzzPushEnv(f)
	sum := func(s string) [32]byte { return sha256.Sum256([]byte(s)) }
	seed := func(b Batch) {
		body, err := AppendBatch(nil, b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	seed(Batch{Revision: 1, Entries: []Entry{put("db/new", "new")}})
	seed(Batch{Revision: 2, Entries: []Entry{put("db/x/y/z", "deep")}})
	seed(Batch{Version: 2, Revision: 3, Entries: []Entry{{Op: OpPut, Mode: 0o600, Path: "conf", SHA256: sum("k=v\n"), Data: []byte("k=v\n"),
		Owner: Owner{UID: 0, GID: 0, User: "root", Group: "root"}, MTime: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()}}})
	seed(Batch{Revision: 4, Entries: []Entry{appendEntry("db/a", "hello\n", "world\n")}})
	seed(Batch{Revision: 5, Entries: []Entry{{Op: OpDelete, Path: "db/sub/b"}, put("db/sub/b/now-a-dir", "swap")}})
	seed(Batch{Revision: 6, Entries: []Entry{{Op: OpDelete, Path: "db/a"}, {Op: OpDelete, Path: "db/sub/deep/c"}}})
	seed(Batch{Revision: 7, Entries: []Entry{{Op: OpPut, Flags: FlagSQLite, Mode: 0o644, Path: "db/sub/app.db", SHA256: sum("SQLite format 3\x00"), Data: []byte("SQLite format 3\x00")}}})
	seed(Batch{Revision: 0, Entries: []Entry{put("db/stale", "s")}})
	seed(Batch{Revision: 8, Entries: []Entry{put("db/ok", "ok"), put("db/ok", "twice")}})
	f.Fuzz(func(t *testing.T, body []byte) {
		n, base := env.node(t)
		before := snapshotTree(t, base)
		rejectedBefore := n.Status().Rejected
		tok, err := peerlink.MintToken(env.auth, "a", "b", peerlink.ScopeSync, time.Minute, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodPost, PathPush, bytes.NewReader(body))
		r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{env.leaf}}
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		n.Handler().ServeHTTP(w, r)
		after := snapshotTree(t, base)

		if w.Code != http.StatusOK {
			if d := cmp.Diff(before, after); d != "" {
				t.Fatalf("push refused with %d changed the disk (-before +after):\n%s", w.Code, d)
			}
			if rev := n.Status().Revision; rev != 0 {
				t.Fatalf("push refused with %d, revision now %d", w.Code, rev)
			}
			added := 0
			for reason, c := range n.Status().Rejected {
				added += int(c - rejectedBefore[reason])
			}
			if added != 1 {
				t.Fatalf("push refused with %d counted %d times: %v", w.Code, added, n.Status().Rejected)
			}
			return
		}
		b, err := ParseBatch(body, nil)
		if err != nil {
			t.Fatalf("accepted a body ParseBatch refuses: %v", err)
		}
		if rev := n.Status().Revision; rev != b.Revision {
			t.Fatalf("accepted revision %d, node at %d", b.Revision, rev)
		}
		var res ApplyResult
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
			t.Fatalf("answer %q: %v", w.Body, err)
		}
		// Entries charged to their own path (apply.go: not a directory, a
		// mount point, ...) are skipped: they must change nothing either.
		failed := map[string]bool{}
		for _, pf := range res.Failed {
			failed[pf.Path] = true
		}
		touched := map[string]bool{} // snapshot paths the batch may change
		var deleted []string
		var putDirs []string
		for _, e := range b.Entries {
			if failed[e.Path] {
				continue
			}
			l := localOf(e.Path)
			touched[l] = true
			if e.Flags&FlagSQLite != 0 {
				for _, s := range []string{"-wal", "-shm", "-journal"} {
					touched[l+s] = true
				}
			}
			if e.Op == OpDelete {
				deleted = append(deleted, l)
				continue
			}
			for d := path.Dir(l); d != "."; d = path.Dir(d) {
				putDirs = append(putDirs, d)
			}
			got, ok := after[l]
			if !ok || got.Dir || got.Sum != e.SHA256 || got.Mode.Perm() != fs.FileMode(e.Mode&0o777) {
				t.Fatalf("entry %s %s: on disk %+v (present %v), want sha256 %x mode %o", e.Op, e.Path, got, ok, e.SHA256, e.Mode&0o777)
			}
		}
		under := func(p string, dirs []string) bool {
			for _, d := range dirs {
				if p == d || strings.HasPrefix(p, d+"/") {
					return true
				}
			}
			return false
		}
		for _, l := range deleted {
			if st, ok := after[l]; ok && !(st.Dir && under(l, putDirs)) {
				t.Fatalf("deleted %s still there: %+v", l, st)
			}
		}
		for p, st := range before {
			if st.Dir || touched[p] || under(p, deleted) {
				continue
			}
			if after[p] != st {
				t.Fatalf("%s, not in the batch, changed: %+v -> %+v", p, st, after[p])
			}
		}
		for p, st := range after {
			if strings.Contains(path.Base(p), tempPrefix) {
				t.Fatalf("left behind: %s", p)
			}
			if !st.Dir && !touched[p] {
				if _, ok := before[p]; !ok && !strings.HasPrefix(p, "state/") {
					t.Fatalf("%s appeared, not in the batch", p)
				}
			}
		}
		if _, ok := after["state/journal"]; ok {
			t.Fatal("journal left after an accepted push")
		}
	})
}
