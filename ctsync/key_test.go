package ctsync

import (
	"bytes"
	"testing"

	"github.com/muros/muros-had/ctsync/ctwire"
	"github.com/muros/muros-had/kdf"
)

// TestSyncKey: a Sync keys its datagrams with the version-2 key whether
// the caller hands it the stretched password (the daemon: one Argon2id run
// for every key) or only the password, so two nodes configured either way
// interoperate; the version-1 key is not it.
func TestSyncKey(t *testing.T) {
	const password = "pA7-kx2Q-9mZr-Lw4e-Tb6v"
	m, err := kdf.Derive(password)
	if err != nil {
		t.Fatal(err)
	}
	fromMaster, err := syncKey(Config{Password: password, Master: m})
	if err != nil {
		t.Fatal(err)
	}
	fromPassword, err := syncKey(Config{Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromMaster, fromPassword) || !bytes.Equal(fromMaster, ctwire.DeriveKey([]byte(password))) {
		t.Fatal("the key depends on how it was derived")
	}
	if bytes.Equal(fromMaster, ctwire.LegacyKey([]byte(password))) {
		t.Fatal("the sync key is the unstretched version-1 key")
	}
	if _, err := syncKey(Config{}); err == nil {
		t.Fatal("an empty password gave a key")
	}
}
