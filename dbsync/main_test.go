package dbsync

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild() // never returns
	}
	if spec := os.Getenv(capChildEnv); spec != "" {
		capChild(spec) // never returns
	}
	if spec := os.Getenv(nodeChildEnv); spec != "" {
		nodeChild(spec) // runs until killed
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

type edKeys struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func mustEd25519(t *testing.T) edKeys {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return edKeys{pub, priv}
}
