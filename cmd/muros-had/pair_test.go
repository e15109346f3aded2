package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/muros/muros-had/peerlink"
)

// TestPairUsage: what the command refuses before it reads anything: --yes
// without the peer's fingerprint (no person compares them), a mistyped
// code (caught by its checksum, no attempt of the listener spent), bad
// flags.
func TestPairUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--yes"}, "give the peer's with --peer-fingerprint"},
		{[]string{"--code", "6Q2E-VEGQ-DR65-2P4B-N06J-VZCX"}, "mistyped"}, // README's code, last symbol mistyped
		{[]string{"--peer-fingerprint", "abc"}, "want 64 hex digits"},
		{[]string{"--port", "0"}, "--port 1..65535"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		var out, errb bytes.Buffer
		if _, err := peerlink.ParsePairCode("6Q2E-VEGQ-DR65-2P4B-N06J-VZCY"); err != nil {
			t.Fatalf("README's example code: %v", err)
		}
		rc := runPair(context.Background(), c.args, strings.NewReader(""), &out, &errb)
		if rc != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 with %q", c.args, rc, errb.String(), c.want)
		}
	}
}
