package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// startCustomNode starts muros-had in fw with hatest's configuration for o
// passed through edit, for settings NodeOptions cannot express.
func startCustomNode(t *testing.T, p *lab.Pair, fw *lab.Netns, o hatest.NodeOptions, edit func(string) string) *hatest.Node {
	t.Helper()
	n := &hatest.Node{
		NS:         fw,
		ConfigPath: filepath.Join(fw.Dir, "muros-had.yaml"),
		StatusSock: filepath.Join(fw.Dir, "run", "status.sock"),
		Options:    o,
	}
	if err := os.WriteFile(n.ConfigPath, []byte(edit(hatest.Config(p, fw, o))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(binary); err != nil {
		t.Fatal(err)
	}
	return n
}

// replaceVIPs swaps the "vips:" block of a generated configuration for vips.
func replaceVIPs(cfg, vips string) string {
	start := strings.Index(cfg, "vips:\n")
	end := strings.Index(cfg, "advert_interval:")
	if start < 0 || end < start {
		panic("replaceVIPs: no vips block in generated configuration")
	}
	return cfg[:start] + vips + cfg[end:]
}

// replaceMetrics swaps the generated "metrics:" block for block.
func replaceMetrics(cfg, block string) string {
	return strings.Replace(cfg, "metrics:\n  enabled: false\n", block, 1)
}
