package dbsync

import (
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestNextRevision(t *testing.T) {
	tests := []struct {
		name    string
		own     uint64
		seen    []uint64
		want    uint64
		wantErr error
	}{
		{"first", 0, nil, 1, nil},
		{"own is highest", 7, []uint64{3}, 8, nil},
		{"peer is highest", 7, []uint64{9, 2}, 10, nil},
		{"one below the top", math.MaxUint64 - 1, nil, math.MaxUint64, nil},
		{"own at the top", math.MaxUint64, nil, 0, ErrRevisionExhausted},
		{"peer at the top would wrap to 0", 5, []uint64{math.MaxUint64}, 0, ErrRevisionExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nextRevision(tt.own, tt.seen...)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("nextRevision(%d, %v) = %d, %v; want %d, %v", tt.own, tt.seen, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func fs1(path, sha string) FileState { return FileState{Path: path, Size: 1, SHA256: sha, Mode: 0o644} }

func TestStampFiles(t *testing.T) {
	table := map[string]stamp{
		"db/same":    {SHA: "aa", Rev: 3},
		"db/changed": {SHA: "bb", Rev: 4},
		"db/gone":    {SHA: "cc", Rev: 5},
		"db/dead":    {SHA: "", Rev: 6},
	}
	files := map[string]FileState{
		"db/same":    fs1("db/same", "aa"),
		"db/changed": fs1("db/changed", "b2"),
		"db/new":     fs1("db/new", "dd"),
	}
	vers, changes := stampFiles(table, files, true, 9)
	want := map[string]version{"db/same": {3, false}, "db/changed": {9, true}, "db/new": {9, true}, "db/gone": {9, true}, "db/dead": {6, false}}
	if d := cmp.Diff(want, vers); d != "" {
		t.Errorf("versions (-want +got):\n%s", d)
	}
	wantChanges := map[string]stamp{"db/changed": {SHA: "b2", Rev: 9, Adopted: true}, "db/new": {SHA: "dd", Rev: 9, Adopted: true}, "db/gone": {Rev: 9, Adopted: true}}
	if d := cmp.Diff(wantChanges, changes); d != "" {
		t.Errorf("changes (-want +got):\n%s", d)
	}
	// A partial listing says nothing of the files it does not name.
	vers, changes = stampFiles(table, map[string]FileState{"db/same": fs1("db/same", "aa")}, false, 9)
	if d := cmp.Diff(map[string]version{"db/same": {3, false}, "db/dead": {6, false}}, vers); d != "" || len(changes) != 0 {
		t.Errorf("partial listing: versions (-want +got):\n%s\nchanges %v", d, changes)
	}
}

func TestPlanReconcile(t *testing.T) {
	type side struct {
		sha string // "" absent
		v   *version
	}
	v := func(rev uint64) *version { return &version{Rev: rev} }
	adopted := func(rev uint64) *version { return &version{Rev: rev, Adopted: true} }
	tests := []struct {
		name          string
		local, remote side
		want          string // push, pull, conflict, or "" (nothing)
	}{
		{"equal", side{"e", v(1)}, side{"e", v(5)}, ""},
		{"ours newer", side{"l", v(9)}, side{"r", v(4)}, "push"},
		{"theirs newer", side{"l", v(3)}, side{"r", v(8)}, "pull"},
		{"both changed it (equal stamps)", side{"l", v(7)}, side{"r", v(7)}, "conflict"},
		{"only ours, peer never knew it", side{"l", v(2)}, side{"", nil}, "push"},
		{"only theirs, we never knew it", side{"", nil}, side{"r", v(6)}, "pull"},
		{"our deletion is newer", side{"", v(8)}, side{"r", v(5)}, "push"},
		{"their deletion is newer", side{"l", v(2)}, side{"", v(3)}, "pull"},
		{"hand edit on the peer loses", side{"l", v(2)}, side{"r", adopted(9)}, "push"},
		{"stray file on the peer is deleted", side{"", nil}, side{"r", adopted(9)}, "push"},
		{"stray deletion on the peer is undone", side{"l", v(2)}, side{"", adopted(9)}, "push"},
		{"ours adopted, theirs made later", side{"l", adopted(4)}, side{"r", v(5)}, "pull"},
		{"ours adopted, theirs not later", side{"l", adopted(4)}, side{"r", v(4)}, "push"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, remote := map[string]FileState{}, map[string]FileState{}
			lv, rv := map[string]version{}, map[string]version{}
			for _, x := range []struct {
				s     side
				files map[string]FileState
				vers  map[string]version
			}{{tt.local, local, lv}, {tt.remote, remote, rv}} {
				if x.s.sha != "" {
					x.files["db/f"] = fs1("db/f", x.s.sha)
				}
				if x.s.v != nil {
					x.vers["db/f"] = *x.s.v
				}
			}
			plan := planReconcile(local, remote, lv, rv, true, true)
			got := ""
			switch {
			case len(plan.Push) > 0:
				got = "push"
			case len(plan.Pull) > 0:
				got = "pull"
			case len(plan.Conflicts) > 0:
				got = "conflict"
			}
			if got != tt.want {
				t.Fatalf("got %q (%+v), want %q", got, plan, tt.want)
			}
			// An older peer keeps no stamps: every difference is pushed, as before.
			if old := planReconcile(local, remote, lv, nil, false, true); tt.want != "" && (len(old.Push) != 1 || old.Pull != nil || old.Conflicts != nil) {
				t.Fatalf("older peer: %+v, want a push", old)
			}
		})
	}
	mode := fs1("db/f", "m")
	mode.Mode = 0o600
	plan := planReconcile(map[string]FileState{"db/f": fs1("db/f", "m")}, map[string]FileState{"db/f": mode},
		map[string]version{"db/f": {Rev: 1}}, map[string]version{"db/f": {Rev: 9}}, true, true)
	if d := cmp.Diff(reconcilePlan{Push: []string{"db/f"}}, plan); d != "" {
		t.Fatalf("same content, other mode: the master's attributes (-want +got):\n%s", d)
	}
}

// Whatever the versions, each differing file gets exactly one fate, equal
// files none, a peer's adopted copy never wins, and a copy is pulled only
// when its stamp is higher or this node never knew of the file.
func TestPlanReconcileProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		paths := []string{"db/a", "db/b", "db/c", "db/d"}
		local, remote := map[string]FileState{}, map[string]FileState{}
		lv, rv := map[string]version{}, map[string]version{}
		side := func(files map[string]FileState, vers map[string]version, p, label string) {
			kind := rapid.IntRange(0, 2).Draw(t, label) // present, deleted (known), never known
			if kind == 0 {
				files[p] = fs1(p, rapid.SampledFrom([]string{"x", "y"}).Draw(t, label+"sha"))
			}
			if kind < 2 {
				vers[p] = version{rapid.Uint64Range(0, 5).Draw(t, label+"rev"), rapid.Bool().Draw(t, label+"adopted")}
			}
		}
		for _, p := range paths {
			side(local, lv, p, "l"+p)
			side(remote, rv, p, "r"+p)
		}
		plan := planReconcile(local, remote, lv, rv, true, true)
		all := slices.Concat(plan.Push, plan.Pull, plan.Conflicts)
		for _, p := range paths {
			l, lok := local[p]
			r, rok := remote[p]
			differ := lok != rok || (lok && l.SHA256 != r.SHA256)
			n := 0
			for _, q := range all {
				if q == p {
					n++
				}
			}
			if (differ && n != 1) || (!differ && n != 0) {
				t.Fatalf("%s: differ %v, in %d lists: %+v", p, differ, n, plan)
			}
			if !slices.Contains(plan.Pull, p) {
				continue
			}
			ls, lknown := lv[p]
			rs, rknown := rv[p]
			if !rknown || rs.Adopted {
				t.Fatalf("%s pulled from an adopted or unknown copy %+v", p, rs)
			}
			if lknown && rs.Rev <= ls.Rev {
				t.Fatalf("%s pulled with local stamp %d >= remote %d", p, ls.Rev, rs.Rev)
			}
		}
	})
}

func TestClockOffset(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name               string
		sent, recv, peer   time.Duration // since t0
		wantOffset, wantRT time.Duration
	}{
		{"same clock", 0, 20 * time.Millisecond, 10 * time.Millisecond, 0, 20 * time.Millisecond},
		{"peer 10 s ahead", 0, 20 * time.Millisecond, 10*time.Second + 10*time.Millisecond, 10 * time.Second, 20 * time.Millisecond},
		{"peer 10 s behind", 0, 4 * time.Millisecond, -10*time.Second + 2*time.Millisecond, -10 * time.Second, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, rtt := clockOffset(t0.Add(tt.sent), t0.Add(tt.recv), t0.Add(tt.peer))
			if off != tt.wantOffset || rtt != tt.wantRT {
				t.Fatalf("offset %v rtt %v, want %v %v", off, rtt, tt.wantOffset, tt.wantRT)
			}
		})
	}
}

func TestSkewLevel(t *testing.T) {
	tests := []struct {
		offset time.Duration
		want   int
	}{
		{0, skewOK}, {time.Second, skewOK}, {-1001 * time.Millisecond, skewWarn}, {4 * time.Second, skewWarn},
		{5 * time.Second, skewWarn}, {5001 * time.Millisecond, skewTokensFail}, {-10 * time.Second, skewTokensFail},
	}
	for _, tt := range tests {
		if got := skewLevel(tt.offset, time.Second, 5*time.Second); got != tt.want {
			t.Errorf("skewLevel(%v) = %d, want %d", tt.offset, got, tt.want)
		}
	}
}

func TestSelectPulled(t *testing.T) {
	putOf := func(path, content string) Entry { return put(path, content) }
	shaOf := func(content string) string { e := put("x", content); return hex.EncodeToString(e.SHA256[:]) }
	remote := map[string]FileState{
		"db/a": {Path: "db/a", SHA256: shaOf("a2")},
		"db/b": {Path: "db/b", SHA256: shaOf("b2")},
	}
	entries := []Entry{
		putOf("db/a", "a2"),             // asked, as announced
		putOf("db/a", "a2"),             // twice
		putOf("db/b", "b3"),             // changed since the manifest
		{Op: OpDelete, Path: "db/gone"}, // asked, the peer does not hold it
		{Op: OpDelete, Path: "db/b"},    // the peer announced it
		putOf("db/not-asked", "x"),      // not asked for
		{Op: OpAppend, Path: "db/b"},    // never in a pull answer
		putOf("db/gone", "resurrected"), // the peer announced no such file
	}
	kept, refused := selectPulled(entries, []string{"db/a", "db/b", "db/gone"}, remote)
	var got []string
	for _, e := range kept {
		got = append(got, e.Op.String()+" "+e.Path)
	}
	if d := cmp.Diff([]string{"put db/a", "delete db/gone"}, got); d != "" || refused != 6 {
		t.Fatalf("kept (-want +got):\n%s\nrefused %d, want 6", d, refused)
	}
}
