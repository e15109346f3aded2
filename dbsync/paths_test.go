package dbsync

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolveWirePath(t *testing.T) {
	roots := []Path{
		{Name: "muros-db", Local: "/var/lib/muros", Dir: true},
		{Name: "leases", Local: "/var/lib/kea/leases.csv"},
	}
	tests := []struct {
		wire    string
		want    string // local path when accepted
		wantErr error
	}{
		{wire: "muros-db/config.db", want: "/var/lib/muros/config.db"},
		{wire: "muros-db/a/b/c", want: "/var/lib/muros/a/b/c"},
		{wire: "leases", want: "/var/lib/kea/leases.csv"},
		{wire: "/etc/passwd", wantErr: ErrPathAbsolute},
		{wire: "/muros-db/x", wantErr: ErrPathAbsolute},
		{wire: "muros-db/../../etc/shadow", wantErr: ErrPathDotDot},
		{wire: "muros-db/..", wantErr: ErrPathDotDot},
		{wire: "..", wantErr: ErrPathDotDot},
		{wire: "muros-db/./x", wantErr: ErrPathUnclean},
		{wire: "muros-db//x", wantErr: ErrPathUnclean},
		{wire: "muros-db/x/", wantErr: ErrPathUnclean},
		{wire: ".", wantErr: ErrPathUnclean},
		{wire: "muros-db/x\x00y", wantErr: ErrPathChars},
		{wire: "other/x", wantErr: ErrPathRoot},
		{wire: "muros-db", wantErr: ErrPathRoot},
		{wire: "leases/x", wantErr: ErrPathRoot},
		{wire: "muros-db/.muros-had-stage-1-0", wantErr: ErrPathInternal},
	}
	for _, tt := range tests {
		t.Run(tt.wire, func(t *testing.T) {
			r, err := resolveWirePath(roots, tt.wire)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.local(); got != tt.want {
				t.Fatalf("local = %q, want %q", got, tt.want)
			}
			if w, ok := localToWire(roots, r.local()); !ok || w != tt.wire {
				t.Fatalf("localToWire(%q) = %q, %v", r.local(), w, ok)
			}
		})
	}
}

func TestValidatePaths(t *testing.T) {
	tests := []struct {
		name  string
		paths []Path
		ok    bool
	}{
		{"defaults", DefaultPaths(), true},
		{"relative", []Path{{Name: "a", Local: "var/lib"}}, false},
		{"unclean", []Path{{Name: "a", Local: "/var/lib/../x"}}, false},
		{"root dir", []Path{{Name: "a", Local: "/"}}, false},
		{"bad name", []Path{{Name: "A/b", Local: "/x"}}, false},
		{"duplicate", []Path{{Name: "a", Local: "/x"}, {Name: "a", Local: "/y"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validatePaths(tt.paths, "/srv/ha/state"); (err == nil) != tt.ok {
				t.Fatalf("validatePaths = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestExcluded(t *testing.T) {
	for name, want := range map[string]bool{
		"config.db": false, "config.db-wal": true, "config.db-shm": true, "config.db-journal": true,
		".muros-had-stage-3-1": true, "kea.pid": true, "leases.csv": false,
	} {
		if got := excluded(name, []string{"*.pid"}); got != want {
			t.Errorf("excluded(%q) = %v, want %v", name, got, want)
		}
	}
}

// FuzzResolveWirePath: whatever the peer sends, an accepted path stays
// inside its root.
func FuzzResolveWirePath(f *testing.F) {
	roots := []Path{{Name: "db", Local: "/var/lib/muros", Dir: true}, {Name: "lease", Local: "/var/lib/kea/l.csv"}}
	for _, s := range []string{"db/a", "lease", "db/../x", "/db/a", "db/a/../../b", "db/.", "db//a", "db/a\x00", "x/y", "db/.muros-had-stage-1-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, wire string) {
		r, err := resolveWirePath(roots, wire)
		if err != nil {
			return
		}
		local := r.local()
		if filepath.Clean(local) != local {
			t.Fatalf("%q resolved to unclean %q", wire, local)
		}
		if r.root.Dir && !strings.HasPrefix(local, r.root.Local+"/") {
			t.Fatalf("%q escaped to %q", wire, local)
		}
		if !r.root.Dir && local != r.root.Local {
			t.Fatalf("%q resolved to %q, not the file root", wire, local)
		}
	})
}

// TestConfigValidatePaths: New refuses the replicated-path lists
// `muros-had check` refuses (package replpath's rules, one place for both),
// with the state directory guarded.
func TestConfigValidatePaths(t *testing.T) {
	tests := []struct {
		name  string
		paths []Path
		want  string // "" when accepted
	}{
		{"defaults", DefaultPaths(), ""},
		{"root", []Path{{Name: "all", Local: "/", Dir: true}}, "paths[0] (all): / would replicate the whole file system, the node's own keys and configuration with it"},
		{"nested", []Path{{Name: "lib", Local: "/var/lib", Dir: true}, {Name: "kea", Local: "/var/lib/kea", Dir: true}},
			"paths[1] (kea): /var/lib/kea is inside /var/lib, which is replicated too: its files would be sent twice and overwrite each other on the backup"},
		{"covers the state dir", []Path{{Name: "srv", Local: "/srv", Dir: true}},
			"paths[0] (srv): /srv covers /srv/ha/state (the dbsync state directory): the backup would receive the master's copy of it"},
		{"inside the state dir", []Path{{Name: "x", Local: "/srv/ha/state/x", Dir: true}},
			"paths[0] (x): /srv/ha/state/x is inside /srv/ha/state (the dbsync state directory), which the daemon writes itself"},
		{"one name twice", []Path{{Name: "a", Local: "/x"}, {Name: "a", Local: "/y"}},
			`paths[1] (a): /x and /y have the same wire name "a" (the daemon names a path by its last component): rename one`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{NodeID: "a", PeerID: "b", PeerURL: "https://192.0.2.2:7443", PeerCertSHA256: strings.Repeat("ab", 32),
				StateDir: "/srv/ha/state", Paths: tt.paths, Auth: hsAuth()}.withDefaults()
			got := ""
			if err := c.validate(); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
