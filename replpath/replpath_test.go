package replpath

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestName(t *testing.T) {
	tests := []struct{ local, want string }{
		{"/var/lib/kea", "kea"},
		{"/var/lib/muros/db", "db"},
		{"/srv/Kea Leases", "kea-leases"},
		{"/srv/a--b", "a--b"},
		{"/srv/é-x", "x"},
		{"/srv/_x.", "_x."},
		{"/srv/ééé", ""},
		{"/", ""},
		{"/srv/.?", ""},
	}
	for _, tt := range tests {
		if got := Name(tt.local); got != tt.want {
			t.Errorf("Name(%q) = %q, want %q", tt.local, got, tt.want)
		}
	}
}

func TestCheck(t *testing.T) {
	guarded := []Guarded{
		{Path: "/var/lib/muros-had", What: "state_dir", Inside: true},
		{Path: "/etc/muros-had", What: "the configuration directory"},
		{Path: "/etc/ssl/private/ha.key", What: "dbsync.tls.key"},
	}
	e := func(locals ...string) []Entry {
		out := make([]Entry, len(locals))
		for i, l := range locals {
			out[i] = Entry{Name: Name(l), Local: l}
		}
		return out
	}
	tests := []struct {
		name    string
		entries []Entry
		want    []Problem
	}{
		{"defaults", e("/var/lib/muros/db", "/var/lib/kea"), nil},
		{"inside a guarded path without Inside is fine", e("/etc/muros-had/extra"), nil},
		{"root", e("/"), []Problem{{0, "/ would replicate the whole file system, the node's own keys and configuration with it"}}},
		{"relative", e("var/lib"), []Problem{{0, `"var/lib" is not an absolute path in clean form`}}},
		{"unclean", []Entry{{Name: "x", Local: "/var/lib/../x"}}, []Problem{{0, `"/var/lib/../x" is not an absolute path in clean form`}}},
		{"no name", e("/srv/ééé"), []Problem{{0, `/srv/ééé has no usable wire name (""): its last component needs a letter or digit`}}},
		{"same last component", e("/var/lib/kea", "/srv/KEA"), []Problem{{1, `/var/lib/kea and /srv/KEA have the same wire name "kea" (the daemon names a path by its last component): rename one`}}},
		{"nested, inner second", e("/srv/a", "/srv/a/kea"), []Problem{{1, "/srv/a/kea is inside /srv/a, which is replicated too: its files would be sent twice and overwrite each other on the backup"}}},
		{"nested, outer second", e("/srv/a/kea", "/srv/a"), []Problem{{1, "/srv/a contains /srv/a/kea, which is replicated too: its files would be sent twice and overwrite each other on the backup"}}},
		{"twice", []Entry{{"a", "/srv/a"}, {"b", "/srv/a"}}, []Problem{{1, "/srv/a is listed twice"}}},
		{"covers state_dir", e("/var/lib"), []Problem{{0, "/var/lib covers /var/lib/muros-had (state_dir): the backup would receive the master's copy of it"}}},
		{"is state_dir", e("/var/lib/muros-had"), []Problem{{0, "/var/lib/muros-had covers /var/lib/muros-had (state_dir): the backup would receive the master's copy of it"}}},
		{"inside state_dir", e("/var/lib/muros-had/tls"), []Problem{{0, "/var/lib/muros-had/tls is inside /var/lib/muros-had (state_dir), which the daemon writes itself"}}},
		{"covers config dir and a key", e("/etc"), []Problem{
			{0, "/etc covers /etc/muros-had (the configuration directory): the backup would receive the master's copy of it"},
			{0, "/etc covers /etc/ssl/private/ha.key (dbsync.tls.key): the backup would receive the master's copy of it"},
		}},
		{"covers a key file", e("/etc/ssl"), []Problem{{0, "/etc/ssl covers /etc/ssl/private/ha.key (dbsync.tls.key): the backup would receive the master's copy of it"}}},
		{"is the key file", e("/etc/ssl/private/ha.key"), []Problem{{0, "/etc/ssl/private/ha.key covers /etc/ssl/private/ha.key (dbsync.tls.key): the backup would receive the master's copy of it"}}},
		{"prefix is not a parent", e("/var/lib/muros-had2", "/etc/muros-hadx"), nil},
		{"a bad path is not compared", e("/", "/var/lib/kea"), []Problem{{0, "/ would replicate the whole file system, the node's own keys and configuration with it"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Check(tt.entries, guarded)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckProperties: a list Check accepts has distinct valid names and
// no path inside another; Name yields a valid name or "".
func TestCheckProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		locals := rapid.SliceOfN(rapid.Map(rapid.SliceOfN(rapid.SampledFrom([]string{"a", "b", "A", "c d", "é"}), 1, 3), func(els []string) string {
			return filepath.Join(append([]string{"/"}, els...)...)
		}), 1, 4).Draw(rt, "locals")
		entries := make([]Entry, len(locals))
		for i, l := range locals {
			entries[i] = Entry{Name: Name(l), Local: l}
			if n := Name(l); n != "" && !ValidName(n) {
				rt.Fatalf("Name(%q) = %q is not valid", l, n)
			}
		}
		if len(Check(entries, nil)) > 0 {
			return
		}
		for i, a := range entries {
			if !ValidName(a.Name) {
				rt.Fatalf("accepted %q without a valid name", a.Local)
			}
			for _, b := range entries[:i] {
				if a.Name == b.Name || within(a.Local, b.Local) || within(b.Local, a.Local) {
					rt.Fatalf("accepted %q beside %q", a.Local, b.Local)
				}
			}
		}
	})
}
