package hatest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/muros/muros-had/lab"
)

// DBPaths are the replicated directories of a node started with DB sync:
// the stand-ins for the MurOS DB and Kea's lease directory.
func DBPaths(fw *lab.Netns) (db, kea string) {
	return filepath.Join(fw.Dir, "muros-db"), filepath.Join(fw.Dir, "kea")
}

// dbsyncYAML is the dbsync block of a node; pin is the peer's certificate
// fingerprint (empty while the fingerprints are being learnt).
func dbsyncYAML(fw *lab.Netns, pin string) string {
	db, kea := DBPaths(fw)
	var b strings.Builder
	fmt.Fprintf(&b, "dbsync:\n  enabled: true\n  listen: \":7443\"\n  peer_port: 7443\n  paths: [%s, %s]\n", db, kea)
	fmt.Fprintf(&b, "  jwt:\n    secret_file: %s\n", filepath.Join(fw.Dir, "jwt.secret"))
	if pin != "" {
		fmt.Fprintf(&b, "  tls:\n    peer_sha256: %s\n", pin)
	}
	return b.String()
}

// StartPairWithDBSync starts muros-had on both firewalls with DB sync on: a
// shared JWT secret, each node's certificate pinned by the other (learnt
// with `muros-had fingerprint`, as an operator would).
func StartPairWithDBSync(bin string, p *lab.Pair, o1, o2 NodeOptions) (*Node, *Node, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, err
	}
	fws := []*lab.Netns{p.FW1, p.FW2}
	opts := []*NodeOptions{&o1, &o2}
	pins := make([]string, 2)
	for i, fw := range fws {
		if err := os.WriteFile(filepath.Join(fw.Dir, "jwt.secret"), []byte(hex.EncodeToString(secret)), 0o600); err != nil {
			return nil, nil, err
		}
		o := *opts[i]
		o.Extra += dbsyncYAML(fw, "")
		cfgPath := filepath.Join(fw.Dir, "muros-had.yaml")
		if err := os.WriteFile(cfgPath, []byte(Config(p, fw, o)), 0o600); err != nil {
			return nil, nil, err
		}
		out, err := exec.Command(bin, "fingerprint", "--config", cfgPath).CombinedOutput()
		if err != nil {
			return nil, nil, fmt.Errorf("hatest: muros-had fingerprint: %w\n%s", err, out)
		}
		pins[i] = strings.TrimSpace(string(out))
	}
	o1.Extra += dbsyncYAML(p.FW1, pins[1])
	o2.Extra += dbsyncYAML(p.FW2, pins[0])
	n1, err := StartNode(bin, p, p.FW1, o1)
	if err != nil {
		return nil, nil, err
	}
	n2, err := StartNode(bin, p, p.FW2, o2)
	if err != nil {
		return nil, nil, err
	}
	return n1, n2, nil
}
