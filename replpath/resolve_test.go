package replpath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tree makes dirs and symlinks (name -> target) under a temporary
// directory, which it returns with its own symlinks resolved.
func tree(t *testing.T, dirs []string, links map[string]string) string {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(base, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range links {
		if rest, ok := strings.CutPrefix(target, "@"); ok {
			target = filepath.Join(base, rest)
		}
		if err := os.Symlink(target, filepath.Join(base, name)); err != nil {
			t.Fatal(err)
		}
	}
	return base
}

func TestResolve(t *testing.T) {
	// "@x" links to base/x; other targets are relative.
	base := tree(t, []string{"etc/muros-had", "var/state", "ok"}, map[string]string{
		"conf":     "@etc/muros-had",
		"rel":      "var",
		"dangling": "@var/state/new",
		"chain":    "conf",
		"loop1":    "loop2",
		"loop2":    "loop1",
	})
	tests := []struct {
		path, want string
		fails      bool
	}{
		{path: "ok", want: "ok"},
		{path: "ok/not/yet", want: "ok/not/yet"},
		{path: "missing/a/b", want: "missing/a/b"},
		{path: "conf", want: "etc/muros-had"},
		{path: "conf/x/y", want: "etc/muros-had/x/y"},
		{path: "rel/state", want: "var/state"},
		{path: "dangling", want: "var/state/new"},
		{path: "dangling/sub", want: "var/state/new/sub"},
		{path: "chain/z", want: "etc/muros-had/z"},
		{path: "loop1", fails: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := Resolve(filepath.Join(base, tt.path))
			if tt.fails {
				if err == nil {
					t.Fatalf("Resolve = %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(base, tt.want); got != want {
				t.Errorf("Resolve = %q, want %q", got, want)
			}
		})
	}
}

// TestCheckResolved: the daemon's start follows symlinks before it applies
// the rules, so a path that only names a guarded one through a link is
// refused there, saying which link.
func TestCheckResolved(t *testing.T) {
	base := tree(t, []string{"etc/muros-had", "var/state", "ok/db", "srv"}, map[string]string{
		"lconf":     "@etc/muros-had",
		"lstate":    "@var/state",
		"lvar":      "var",
		"ldang":     "@var/state/new",
		"lok":       "@ok/db",
		"lok2":      "@ok/db",
		"lfile":     "@etc/muros-had/muros-had.yaml",
		"srv/lroot": "/",
	})
	j := func(p string) string { return filepath.Join(base, p) }
	guarded := []Guarded{
		{Path: j("var/state"), What: "state_dir", Inside: true},
		{Path: j("etc/muros-had"), What: "the packaged configuration directory", Inside: true, InsideWhy: "which holds this node's own configuration"},
		{Path: j("etc/muros-had/muros-had.yaml"), What: "this configuration file"},
	}
	e := func(locals ...string) []Entry {
		out := make([]Entry, len(locals))
		for i, l := range locals {
			out[i] = Entry{Name: Name(l), Local: j(l)}
		}
		return out
	}
	covers := ": the backup would receive the master's copy of it"
	tests := []struct {
		name    string
		entries []Entry
		want    []Problem
	}{
		{"plain", e("ok/db", "srv"), nil},
		{"a link to a plain directory", e("lok"), nil},
		{"a link to the configuration directory", e("lconf"), []Problem{
			{0, j("lconf") + " resolves to " + j("etc/muros-had") + " (symlinks followed): " + j("etc/muros-had") + " covers " + j("etc/muros-had") + " (the packaged configuration directory)" + covers},
			{0, j("lconf") + " resolves to " + j("etc/muros-had") + " (symlinks followed): " + j("etc/muros-had") + " covers " + j("etc/muros-had/muros-had.yaml") + " (this configuration file)" + covers},
		}},
		{"a link to the configuration file", e("lfile"), []Problem{
			{0, j("lfile") + " resolves to " + j("etc/muros-had/muros-had.yaml") + " (symlinks followed): " + j("etc/muros-had/muros-had.yaml") + " is inside " + j("etc/muros-had") + " (the packaged configuration directory), which holds this node's own configuration"},
			{0, j("lfile") + " resolves to " + j("etc/muros-had/muros-had.yaml") + " (symlinks followed): " + j("etc/muros-had/muros-had.yaml") + " covers " + j("etc/muros-had/muros-had.yaml") + " (this configuration file)" + covers},
		}},
		{"inside state_dir through a link, not there yet", e("lstate/x"), []Problem{
			{0, j("lstate/x") + " resolves to " + j("var/state/x") + " (symlinks followed): " + j("var/state/x") + " is inside " + j("var/state") + " (state_dir), which the daemon writes itself"},
		}},
		{"a relative link covering state_dir", e("lvar"), []Problem{
			{0, j("lvar") + " resolves to " + j("var") + " (symlinks followed): " + j("var") + " covers " + j("var/state") + " (state_dir)" + covers},
		}},
		{"a dangling link into state_dir", e("ldang"), []Problem{
			{0, j("ldang") + " resolves to " + j("var/state/new") + " (symlinks followed): " + j("var/state/new") + " is inside " + j("var/state") + " (state_dir), which the daemon writes itself"},
		}},
		{"two names of one directory", e("ok/db", "lok2"), []Problem{
			{1, j("lok2") + " resolves to " + j("ok/db") + " (symlinks followed): " + j("ok/db") + " is listed twice"},
		}},
		{"a link to /", e("srv/lroot"), []Problem{
			{0, j("srv/lroot") + " resolves to / (symlinks followed): / would replicate the whole file system, the node's own keys and configuration with it"},
		}},
		{"textual problems first, links not followed", e("var/state/a", "lconf"), []Problem{
			{0, j("var/state/a") + " is inside " + j("var/state") + " (state_dir), which the daemon writes itself"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, CheckResolved(tt.entries, guarded)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("a guarded path behind a link", func(t *testing.T) {
		g := []Guarded{{Path: j("lstate"), What: "state_dir", Inside: true}}
		want := []Problem{{0, j("var") + " covers " + j("var/state") + " (state_dir, " + j("lstate") + " resolved)" + covers}}
		if diff := cmp.Diff(want, CheckResolved(e("var"), g)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}
