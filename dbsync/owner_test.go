package dbsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

// fakeIDs is a node's account database for mapOwner.
type fakeIDs struct{ users, groups map[string]uint32 }

func (f fakeIDs) userID(n string) (uint32, bool)  { id, ok := f.users[n]; return id, ok }
func (f fakeIDs) groupID(n string) (uint32, bool) { id, ok := f.groups[n]; return id, ok }

func TestMapOwner(t *testing.T) {
	backup := fakeIDs{
		users:  map[string]uint32{"root": 0, "_kea": 111},
		groups: map[string]uint32{"root": 0, "_kea": 118, "muros": 900},
	}
	type ids struct{ UID, GID uint32 }
	tests := []struct {
		name   string
		master Owner
		want   ids
	}{
		{"same ids, names known", Owner{UID: 0, GID: 0, User: "root", Group: "root"}, ids{0, 0}},
		{"name known with another id here", Owner{UID: 110, GID: 117, User: "_kea", Group: "_kea"}, ids{111, 118}},
		{"no names on the master: numeric", Owner{UID: 4242, GID: 4243}, ids{4242, 4243}},
		{"names unknown here: numeric", Owner{UID: 4242, GID: 4243, User: "ghost", Group: "ghosts"}, ids{4242, 4243}},
		{"user known, group numeric", Owner{UID: 110, GID: 4243, User: "_kea"}, ids{111, 4243}},
		{"group known, user numeric", Owner{UID: 4242, GID: 5, Group: "muros"}, ids{4242, 900}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, gid := mapOwner(tt.master, backup)
			if d := cmp.Diff(tt.want, ids{uid, gid}); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
		})
	}
}

// ownerMatches must agree with mapOwner: after the backup applied the
// master's owner, the owner it reports matches (no endless re-sending), and
// a file it holds under any other owner does not.
func TestOwnerMatches(t *testing.T) {
	tests := []struct {
		name        string
		local, peer Owner
		want        bool
	}{
		{"identical", Owner{0, 0, "root", "root"}, Owner{0, 0, "root", "root"}, true},
		{"same names, other ids (mapped)", Owner{110, 117, "_kea", "_kea"}, Owner{111, 118, "_kea", "_kea"}, true},
		{"numeric only, same ids", Owner{4242, 4243, "", ""}, Owner{4242, 4243, "", ""}, true},
		{"name unknown on the peer, numeric fallback", Owner{110, 117, "_kea", "_kea"}, Owner{110, 117, "", "other"}, true},
		{"peer file owned by root", Owner{4242, 4243, "", ""}, Owner{0, 4243, "root", ""}, false},
		{"peer group differs", Owner{4242, 4243, "", ""}, Owner{4242, 0, "", "root"}, false},
		{"peer owner by name differs", Owner{110, 117, "_kea", "_kea"}, Owner{0, 0, "root", "root"}, false},
		{"older peer reporting nothing: root", Owner{110, 117, "_kea", "_kea"}, Owner{}, false},
	}
	for _, tt := range tests {
		if got := ownerMatches(tt.local, tt.peer); got != tt.want {
			t.Errorf("%s: ownerMatches(%+v, %+v) = %v, want %v", tt.name, tt.local, tt.peer, got, tt.want)
		}
	}
}

func TestDiffManifestsOwners(t *testing.T) {
	f := func(p string, o Owner) FileState {
		return FileState{Path: p, Size: 1, SHA256: "aa", Mode: 0o640, Owner: o}
	}
	kea := Owner{110, 117, "_kea", "_kea"}
	local := manifestMap([]FileState{f("leases", kea), f("num", Owner{UID: 4242, GID: 4243}), f("same", kea)})
	remote := manifestMap([]FileState{f("leases", Owner{0, 0, "root", "root"}), f("num", Owner{UID: 4242, GID: 0, Group: "root"}), f("same", Owner{111, 118, "_kea", "_kea"})})
	tests := []struct {
		name   string
		owners bool
		want   Diff
	}{
		{"peer reads version 2", true, Diff{Changed: []string{"leases", "num"}}},
		{"older peer: content and mode only", false, Diff{}},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, diffManifests(local, remote, tt.owners)); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
	}
}

func TestPeerBatchVersion(t *testing.T) {
	got := []uint8{peerBatchVersion(0), peerBatchVersion(1), peerBatchVersion(2), peerBatchVersion(9)}
	if d := cmp.Diff([]uint8{1, 1, 2, 2}, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

func TestValidOwnerName(t *testing.T) {
	for name, want := range map[string]bool{
		"": true, "root": true, "_kea": true, "systemd-network": true, "user.name": true, "grüße": true,
		"a b": false, "a:b": false, "a\n": false, "\x00": false, "a\x7f": false,
	} {
		if got := validOwnerName(name); got != want {
			t.Errorf("validOwnerName(%q) = %v, want %v", name, got, want)
		}
	}
}

// attrs is what a test compares of an installed file.
type attrs struct {
	UID, GID uint32
	Mode     os.FileMode
	MTime    int64
}

func attrsOf(t *testing.T, p string) attrs {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return attrs{st.Uid, st.Gid, fi.Mode().Perm(), fi.ModTime().UnixNano()}
}

func mustRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test sets file owners: run it as root (dbsync tests never skip)")
	}
}

func owned(e Entry, o Owner, mtime int64) Entry {
	e.Owner, e.MTime = o, mtime
	return e
}

// A version 2 put installs the file with the master's owner (name mapped
// on this node when known), mode and mtime; a version 1 put leaves the
// owner to the daemon as before.
func TestApplyOwnerModeMTime(t *testing.T) {
	mustRoot(t)
	base, roots := testRoots(t)
	a := newTestApplier(t, roots)
	mt := time.Date(2026, 11, 25, 7, 0, 0, 123456789, time.UTC).UnixNano()
	e := owned(put("db/numeric", "n"), Owner{UID: 4242, GID: 4243}, mt)
	e.Mode = 0o640
	root := owned(put("db/named", "r"), Owner{UID: 4242, GID: 4243, User: "root", Group: "root"}, mt)
	ghost := owned(put("db/ghost", "g"), Owner{UID: 4242, GID: 4243, User: "muros-no-such-user", Group: "muros-no-such-group"}, 0)
	res := mustApply(t, a, Batch{Version: 2, Revision: 1, Entries: []Entry{e, root, ghost}})
	if res.OwnerErrors != 0 {
		t.Fatalf("owner errors: %s", res.OwnerError)
	}
	got := map[string]attrs{}
	for _, n := range []string{"numeric", "named", "ghost"} {
		got[n] = attrsOf(t, filepath.Join(base, "db", n))
	}
	ghostMTime := got["ghost"].MTime // not sent: whatever the write left
	want := map[string]attrs{
		"numeric": {4242, 4243, 0o640, mt},
		"named":   {0, 0, 0o644, mt}, // "root" exists here: its id wins over 4242
		"ghost":   {4242, 4243, 0o644, ghostMTime},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("installed attributes (-want +got):\n%s", d)
	}

	v1 := put("db/v1", "x")
	v1.Owner = Owner{UID: 4242, GID: 4243} // not on the wire in version 1
	mustApply(t, a, Batch{Version: 1, Revision: 2, Entries: []Entry{v1}})
	if at := attrsOf(t, filepath.Join(base, "db", "v1")); at.UID != 0 || at.GID != 0 {
		t.Fatalf("version 1 put owned by %d:%d, want the daemon's 0:0", at.UID, at.GID)
	}
}

// Kea's lease file belongs to _kea: lines appended on the master and
// shipped as appends keep that owner, and an append to a file the backup
// holds under a wrong owner repairs it.
func TestApplyAppendKeepsOwner(t *testing.T) {
	mustRoot(t)
	base, roots := testRoots(t)
	a := newTestApplier(t, roots)
	lease := filepath.Join(base, "kea", "leases4.csv")
	kea := Owner{UID: 4242, GID: 4243}
	mt := time.Unix(1764050000, 0).UnixNano()
	mustApply(t, a, Batch{Version: 2, Revision: 1, Entries: []Entry{owned(put("lease", "h\n"), kea, mt)}})
	mustApply(t, a, Batch{Version: 2, Revision: 2, Entries: []Entry{owned(appendEntry("lease", "h\n", "l1\n"), kea, mt+1)}})
	if d := cmp.Diff(attrs{4242, 4243, 0o644, mt + 1}, attrsOf(t, lease)); d != "" {
		t.Fatalf("after append (-want +got):\n%s", d)
	}
	// Someone on the backup chowned it to root; the next append fixes it.
	if err := os.Chown(lease, 0, 0); err != nil {
		t.Fatal(err)
	}
	mustApply(t, a, Batch{Version: 2, Revision: 3, Entries: []Entry{owned(appendEntry("lease", "h\nl1\n", "l2\n"), kea, mt+2)}})
	if d := cmp.Diff(attrs{4242, 4243, 0o644, mt + 2}, attrsOf(t, lease)); d != "" {
		t.Fatalf("append onto a root-owned copy (-want +got):\n%s", d)
	}
	if b, _ := os.ReadFile(lease); string(b) != "h\nl1\nl2\n" {
		t.Fatalf("content %q", b)
	}
}

// The master describes its files with owner and mtime; a chown alone is a
// difference for a version 2 peer (a whole put), none for an older one; an
// owner difference does not stop a lease file from being shipped as an
// append.
func TestSourceEntryOwner(t *testing.T) {
	mustRoot(t)
	base := t.TempDir()
	roots := []Path{{Name: "db", Local: filepath.Join(base, "db"), Dir: true}}
	s := &source{roots: roots, cache: newHashCache(), sqlite3: "sqlite3", start: (*exec.Cmd).Start, tmpDir: base}
	p := filepath.Join(base, "db", "leases.csv")
	writeFile(t, p, "h\nl1\n")
	mt := time.Unix(1764050000, 5).UTC()
	if err := os.Chown(p, 4242, 4243); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	e, next, ok, err := s.entry(context.Background(), "db/leases.csv", nil, true, newAccounts())
	if err != nil || !ok {
		t.Fatalf("entry: ok=%v err=%v", ok, err)
	}
	wantOwner := newAccounts().owner(mustStat(t, p)) // names as this machine has them (likely none)
	if wantOwner.UID != 4242 || wantOwner.GID != 4243 {
		t.Fatalf("accounts.owner = %+v", wantOwner)
	}
	if d := cmp.Diff(wantOwner, e.Owner); d != "" {
		t.Fatalf("entry owner (-want +got):\n%s", d)
	}
	if e.MTime != mt.UnixNano() || next.Owner != wantOwner {
		t.Fatalf("entry mtime %d want %d, next owner %+v", e.MTime, mt.UnixNano(), next.Owner)
	}
	peerRoot := *next
	peerRoot.Owner = Owner{UID: 0, GID: 0, User: "root", Group: "root"}
	tests := []struct {
		name   string
		peer   FileState
		owners bool
		wantOK bool
		wantOp Op
	}{
		{"peer up to date", *next, true, false, 0},
		{"chown only, version 2 peer: put", peerRoot, true, true, OpPut},
		{"chown only, version 1 peer: nothing", peerRoot, false, false, 0},
	}
	for _, tt := range tests {
		e, _, ok, err := s.entry(context.Background(), "db/leases.csv", &tt.peer, tt.owners, newAccounts())
		if err != nil || ok != tt.wantOK || e.Op != tt.wantOp {
			t.Errorf("%s: op %v ok %v err %v, want op %v ok %v", tt.name, e.Op, ok, err, tt.wantOp, tt.wantOK)
		}
		if ok && e.Owner != wantOwner {
			t.Errorf("%s: entry owner %+v", tt.name, e.Owner)
		}
	}
	// Growth while the peer holds the prefix under root: an append that
	// carries the owner.
	f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("l2\n")
	f.Close()
	e, _, ok, err = s.entry(context.Background(), "db/leases.csv", &peerRoot, true, newAccounts())
	if err != nil || !ok || e.Op != OpAppend || string(e.Data) != "l2\n" || e.Owner != wantOwner {
		t.Fatalf("growth: op %v data %q owner %+v ok %v err %v; want an append of l2 owned by %+v", e.Op, e.Data, e.Owner, ok, err, wantOwner)
	}
	h := sha256.Sum256([]byte("h\nl1\nl2\n"))
	if e.SHA256 != h {
		t.Fatal("append hash is not the whole file's")
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// The backup's manifest announces batch version 2 and reports each file's
// owner; a version 2 push through the handler sets the owner, and one an
// older master sends (version 1) is still applied.
func TestHandlerManifestOwners(t *testing.T) {
	mustRoot(t)
	n, peer, auth := handlerNode(t)
	h := n.Handler()
	tok := syncTokens(t, auth)
	push := func(b Batch) {
		t.Helper()
		body, err := AppendBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, peerRequest(t, peer, "POST", PathPush, body, tok()))
		if w.Code != 200 {
			t.Fatalf("push revision %d: %d %s", b.Revision, w.Code, w.Body)
		}
	}
	e := owned(put("db/kea/leases4.csv", "h\n"), Owner{UID: 4242, GID: 4243}, 1e9)
	e.Mode = 0o640
	push(Batch{Version: 2, Revision: 1, Entries: []Entry{e}})
	push(Batch{Version: 1, Revision: 2, Entries: []Entry{put("db/old-master", "x")}})

	w := httptest.NewRecorder()
	h.ServeHTTP(w, peerRequest(t, peer, "GET", PathManifest, nil, tok()))
	var m Manifest
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || w.Code != 200 {
		t.Fatalf("manifest: %d %v %s", w.Code, err, w.Body)
	}
	root := newAccounts().owner(mustStat(t, "/"))
	want := []FileState{
		{Path: "db/kea/leases4.csv", Size: 2, SHA256: hex.EncodeToString(sliceOf(sha256.Sum256([]byte("h\n")))), Mode: 0o640, Rev: 1, Owner: Owner{UID: 4242, GID: 4243}},
		{Path: "db/old-master", Size: 1, SHA256: hex.EncodeToString(sliceOf(sha256.Sum256([]byte("x")))), Mode: 0o644, Rev: 2, Owner: root},
	}
	if m.BatchVersion != BatchVersion {
		t.Errorf("manifest batch_version %d, want %d", m.BatchVersion, BatchVersion)
	}
	if d := cmp.Diff(want, m.Files); d != "" {
		t.Errorf("manifest files (-want +got):\n%s", d)
	}
	if !strings.Contains(w.Body.String(), `"uid":4242,"gid":4243`) || !strings.Contains(w.Body.String(), `"batch_version":2`) {
		t.Errorf("manifest JSON lacks the documented keys: %s", w.Body)
	}
}

// Property: whatever owner the master sends and whatever accounts the
// backup has (one id per name, one name per id), the owner the backup
// reports after applying it matches: anti-entropy never re-sends a file
// only for its owner once it was applied.
func TestOwnerMappingStable(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := []string{"root", "_kea", "muros", "nobody", "frr"}
		draw := func(label string) (map[string]uint32, map[uint32]string) {
			byName, byID := map[string]uint32{}, map[uint32]string{}
			for _, n := range names {
				if !rapid.Bool().Draw(t, label+" has "+n) {
					continue
				}
				id := rapid.Uint32Range(0, 20).Draw(t, label+" id of "+n)
				if _, taken := byID[id]; taken {
					continue
				}
				byName[n], byID[id] = id, n
			}
			return byName, byID
		}
		users, userNames := draw("backup users")
		groups, groupNames := draw("backup groups")
		master := Owner{
			UID: rapid.Uint32Range(0, 20).Draw(t, "uid"), GID: rapid.Uint32Range(0, 20).Draw(t, "gid"),
			User: rapid.SampledFrom(append(names, "")).Draw(t, "user"), Group: rapid.SampledFrom(append(names, "")).Draw(t, "group"),
		}
		uid, gid := mapOwner(master, fakeIDs{users, groups})
		reported := Owner{UID: uid, GID: gid, User: userNames[uid], Group: groupNames[gid]}
		if !ownerMatches(master, reported) {
			t.Fatalf("master %+v, backup installs %d:%d and reports %+v: no match", master, uid, gid, reported)
		}
	})
}

// A directory the backup creates for a file takes the owner, group and
// mode of the directory it is made in, whatever the umask (the unit sets
// 0077); not its setgid bit (the unit's RestrictSUIDSGID forbids setting it).
func TestApplyNewDirectoryInheritsParent(t *testing.T) {
	mustRoot(t)
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	base, roots := testRoots(t)
	db := filepath.Join(base, "db")
	if err := os.Mkdir(db, 0o750); err != nil {
		t.Fatal(err)
	}
	chownT(t, db, 4242, 4243)
	if err := os.Chmod(db, 0o750|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	a := newTestApplier(t, roots)
	mustApply(t, a, Batch{Version: 2, Revision: 1, Entries: []Entry{owned(put("db/sub/dir/f", "x"), Owner{UID: 4242, GID: 4243}, 0)}})
	type dirAttrs struct {
		UID, GID uint32
		Mode     os.FileMode
	}
	got := map[string]dirAttrs{}
	for _, d := range []string{"sub", "sub/dir"} {
		fi := mustStat(t, filepath.Join(db, d))
		st := fi.Sys().(*syscall.Stat_t)
		got[d] = dirAttrs{st.Uid, st.Gid, fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeDir)}
	}
	want := dirAttrs{4242, 4243, os.ModeDir | 0o750}
	if d := cmp.Diff(map[string]dirAttrs{"sub": want, "sub/dir": want}, got); d != "" {
		t.Fatalf("new directories (-want +got):\n%s", d)
	}
}
