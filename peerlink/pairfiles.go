package peerlink

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/muros/muros-had/atomicfile"
)

// PairFiles are where a pairing is stored: the peer's pin (its certificate's
// SHA-256 in hex and a newline) and the shared JWT secret
// (SecretFileContent).
type PairFiles struct {
	Pin, Secret string
}

// Write stores res: the pin first, then the secret, each replaced
// atomically (package atomicfile), the secret readable by root only. A
// crash between the two leaves the new pin beside the old secret: the
// pair's DB sync refuses its tokens until the pairing is run again, which
// the new pin allows without --force (it pins that same box).
func (f PairFiles) Write(res PairResult) error {
	for _, p := range []string{f.Pin, f.Secret} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("pairing: %q is not an absolute path", p)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("pairing: %w", err)
		}
	}
	if err := atomicfile.Write(f.Pin, []byte(res.PeerFingerprint+"\n"), 0o644, ".muros-had-"+filepath.Base(f.Pin)+"-*"); err != nil {
		return fmt.Errorf("pairing: write pin %s: %w", f.Pin, err)
	}
	if err := atomicfile.Write(f.Secret, SecretFileContent(res.Secret), 0o600, ".muros-had-"+filepath.Base(f.Secret)+"-*"); err != nil {
		return fmt.Errorf("pairing: write JWT secret %s: %w", f.Secret, err)
	}
	return nil
}
