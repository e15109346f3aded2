package dbsync

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestExcludedRelative: globs without a slash match the base name at any
// depth; with a slash, the path relative to the replicated root or that
// of a directory above the file; "*" does not cross a slash.
func TestExcludedRelative(t *testing.T) {
	globs := []string{"*.pid", "kea-dhcp4-fw1.conf", "local/*.conf", "nodes/fw1"}
	tests := []struct {
		rel  string
		want bool
	}{
		{"kea-leases4.csv", false},
		{"kea-dhcp4.conf", false},
		{"kea-dhcp4-fw1.conf", true},
		{"etc/kea-dhcp4-fw1.conf", true}, // base name at any depth
		{"run/kea.pid", true},
		{"local/a.conf", true},
		{"local/a.csv", false},
		{"local/sub/a.conf", false}, // "*" does not cross a slash
		{"x/local/a.conf", false},   // anchored at the root
		{"nodes/fw1", true},
		{"nodes/fw1/keys/a", true}, // a directory above the file
		{"nodes/fw2/keys/a", false},
		{"nodes/fw10", false},
		{"sub/.muros-had-stage-1", true},
		{"db/config.db-wal", true},
	}
	for _, tt := range tests {
		if got := excluded(tt.rel, globs); got != tt.want {
			t.Errorf("excluded(%q) = %v, want %v", tt.rel, got, tt.want)
		}
	}
	for wire, want := range map[string]bool{"kea": false, "kea/local/a.conf": true, "kea/kea-dhcp4.conf": false} {
		if got := excludedWire(wire, globs); got != want {
			t.Errorf("excludedWire(%q) = %v, want %v", wire, got, want)
		}
	}
}

// TestLabPairExcludeRelative: node-local files stay local. The master
// does not push the files its globs exclude (a Kea config carrying its
// name, a file under local/), and the backup's own excluded files are
// neither overwritten nor deleted, while the lease file, the shared Kea
// config and a local/ directory deeper down (globs with a slash are
// anchored at the replicated directory) replicate.
func TestLabPairExcludeRelative(t *testing.T) {
	exclude := []string{"*.pid", "kea-dhcp4-node-*.conf", "local/*"}
	bOnly := map[string]string{}
	a, b := newLabPair(t, pairOptions{cfg: func(a, b *Config) {
		a.Exclude, b.Exclude = exclude, exclude
		a.AntiEntropyInterval, b.AntiEntropyInterval = 300*time.Millisecond, 300*time.Millisecond
		// The backup's own node-local files, there before it starts.
		for _, p := range []string{filepath.Join(b.Paths[1].Local, "kea-dhcp4-node-b.conf"), filepath.Join(b.Paths[0].Local, "local", "y.conf")} {
			bOnly[p] = "node b's own\n"
		}
		for p, c := range bOnly {
			writeFile(t, p, c)
		}
	}})
	for _, f := range []struct{ dir, rel string }{
		{a.keaDir(), "kea-dhcp4-node-a.conf"}, {a.dbDir(), "local/x.conf"},
	} {
		writeFile(t, filepath.Join(f.dir, f.rel), "node a's own\n")
	}
	shared := []string{
		filepath.Join("kea", "kea-leases4.csv"), filepath.Join("kea", "kea-dhcp4.conf"),
		filepath.Join("db", "zones", "local", "hosts"),
	}
	for _, rel := range shared {
		writeFile(t, filepath.Join(a.dir, rel), rel+"\n")
	}
	for _, rel := range shared {
		waitFor(t, rel+" on the backup", sameFile(filepath.Join(a.dir, rel), filepath.Join(b.dir, rel)))
	}
	time.Sleep(time.Second) // anti-entropy passes compare the whole trees
	for _, rel := range []string{filepath.Join("kea", "kea-dhcp4-node-a.conf"), filepath.Join("db", "local", "x.conf")} {
		if _, err := os.Stat(filepath.Join(b.dir, rel)); !os.IsNotExist(err) {
			t.Errorf("%s: excluded on the master, on the backup: %v", rel, err)
		}
	}
	for p, c := range bOnly {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != c {
			t.Errorf("%s: the backup's own excluded file: %q, %v", p, got, err)
		}
	}
}
