package kdf

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/crypto/argon2"
)

// TestDeriveIsArgon2idThenHKDFExpand pins the version-2 construction: a
// change of parameters or salt would split an upgraded pair.
func TestDeriveIsArgon2idThenHKDFExpand(t *testing.T) {
	m, err := Derive("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	secret := argon2.IDKey([]byte("correct horse battery staple"), []byte("muros-had kdf v2"), 3, 64*1024, 4, 32)
	want, err := hkdf.Expand(sha256.New, secret, "label", 32)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Key("label")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Key = %x, want %x", got, want)
	}
	other, _ := m.Key("other label")
	if bytes.Equal(got, other) {
		t.Fatal("two labels gave one key")
	}
}

func TestLegacyIsUnchanged(t *testing.T) {
	// The version-1 VRRP AH key as computed before this package existed.
	got, err := Legacy("secret", "muros-had vrrp ah hmac-sha256-128 v1")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hkdf.Key(sha256.New, []byte("secret"), []byte("muros-had"), "muros-had vrrp ah hmac-sha256-128 v1", 32)
	if hex.EncodeToString(got) != hex.EncodeToString(want) {
		t.Fatalf("Legacy = %x, want %x", got, want)
	}
}

func TestZeroMasterRefused(t *testing.T) {
	if _, err := (Master{}).Key("x"); err == nil {
		t.Fatal("a zero Master gave a key")
	}
	if _, err := Derive(""); err == nil {
		t.Fatal("an empty password was stretched")
	}
}

// BenchmarkDerive is the start-up cost of version 2 and the cost of one
// offline guess.
func BenchmarkDerive(b *testing.B) {
	for b.Loop() {
		if _, err := Derive("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMasterRedacted: the secret never reaches a log line or a %+v dump of
// a configuration that carries it.
func TestMasterRedacted(t *testing.T) {
	m, err := Derive("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	type cfg struct{ Master Master }
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "master", m, "cfg", cfg{m})
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", m, cfg{m}, cfg{m}, m), buf.String()} {
		if strings.Contains(s, fmt.Sprint(m.secret[:4])[1:8]) || strings.Contains(s, fmt.Sprintf("%x", m.secret[:4])) || strings.Contains(s, "secret") || !strings.Contains(s, "redacted") {
			t.Fatalf("secret shown or not redacted: %s", s)
		}
	}
}

// TestSecretHandOver: a Master read back from what WriteSecret wrote gives
// the same keys, and ReadSecret refuses what a failed hand-over carries.
func TestSecretHandOver(t *testing.T) {
	m, err := Derive("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteSecret(&buf, m); err != nil {
		t.Fatal(err)
	}
	wire := bytes.Clone(buf.Bytes())
	back, err := ReadSecret(&buf)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := m.Key("label")
	b, err := back.Key("label")
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("key from the handed-over secret %x (%v), want %x", b, err, a)
	}
	if err := WriteSecret(io.Discard, Master{}); err == nil {
		t.Error("WriteSecret of an unset Master: no error")
	}
	if _, err := ReadSecret(iotest.OneByteReader(bytes.NewReader(wire))); err != nil {
		t.Errorf("ReadSecret a byte at a time: %v", err)
	}
	// A pipe that fails after the secret has not said it ended.
	if m, err := ReadSecret(io.MultiReader(bytes.NewReader(wire), iotest.ErrReader(errors.New("cut")))); err == nil || m.Valid() {
		t.Error("ReadSecret with a read error after the secret: accepted")
	}
	for _, bad := range [][]byte{nil, wire[:31], append(bytes.Clone(wire), 0), make([]byte, KeyLen)} {
		if m, err := ReadSecret(bytes.NewReader(bad)); err == nil || m.Valid() {
			t.Errorf("ReadSecret(%d bytes): accepted", len(bad))
		}
	}
}
