package peerlink

import (
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// openssl makes a self-signed certificate and key with the openssl CLI
// (newkey: openssl req -newkey's argument) in dir, as an operator would.
func openssl(t *testing.T, dir, name string, newkey ...string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(dir, name+"-cert.pem"), filepath.Join(dir, name+"-key.pem")
	args := append([]string{"req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=" + name, "-keyout", key, "-out", cert}, newkey...)
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return cert, key
}

// opensslFingerprint is openssl's SHA-256 of the certificate, normalized.
func opensslFingerprint(t *testing.T, cert string) string {
	t.Helper()
	out, err := exec.Command("openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256").Output()
	if err != nil {
		t.Fatalf("openssl x509 -fingerprint: %v", err)
	}
	_, hexFP, ok := strings.Cut(strings.TrimSpace(string(out)), "=")
	if !ok {
		t.Fatalf("openssl fingerprint output %q", out)
	}
	fp, err := NormalizeFingerprint(hexFP)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// handshake runs a TLS handshake over a buffered AF_UNIX socket pair (no
// network; net.Pipe deadlocks when both ends write an alert at once) and
// returns the server side's view of it.
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error, srvState tls.ConnectionState) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1, c2 := conn(fds[0]), conn(fds[1])
	defer c1.Close()
	defer c2.Close()
	type result struct {
		err error
		st  tls.ConnectionState
	}
	done := make(chan result, 1)
	go func() {
		s := tls.Server(c2, server)
		err := s.Handshake()
		if err != nil {
			c2.Close()
		}
		done <- result{err, s.ConnectionState()}
	}()
	c := tls.Client(c1, client)
	clientErr = c.Handshake()
	if clientErr != nil {
		c1.Close()
	}
	r := <-done
	return clientErr, r.err, r.st
}

// TestOperatorCertificates: certificates made by openssl with the usual
// key types are served as they are, their fingerprint is openssl's, and a
// peer pinning it completes the handshake both ways (as server and as the
// client presenting it).
func TestOperatorCertificates(t *testing.T) {
	peer, err := LoadIdentity(InDir(t.TempDir()), "peer")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		newkey []string
	}{
		{"rsa3072", []string{"-newkey", "rsa:3072"}},
		{"ecdsa-p256", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}},
		{"ecdsa-p384", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"}},
		{"ed25519", []string{"-newkey", "ed25519"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cert, key := openssl(t, dir, tc.name, tc.newkey...)
			id, err := LoadIdentity(Files{Cert: cert, Key: key}, "node")
			if err != nil {
				t.Fatal(err)
			}
			if want := opensslFingerprint(t, cert); id.Fingerprint != want {
				t.Fatalf("fingerprint %s, openssl says %s", id.Fingerprint, want)
			}
			// The peer pins the operator's certificate as the server's.
			cerr, serr, st := handshake(t, ClientTLS(peer, id.Fingerprint), ServerTLS(id))
			if cerr != nil || serr != nil {
				t.Fatalf("peer pinning the operator's certificate: client %v, server %v", cerr, serr)
			}
			if len(st.PeerCertificates) == 0 || !FingerprintMatches(st.PeerCertificates[0].Raw, peer.Fingerprint) {
				t.Fatal("server did not receive the peer's certificate")
			}
			// The node presents it as a client; the peer's listener sees the pin.
			cerr, serr, st = handshake(t, ClientTLS(id, peer.Fingerprint), ServerTLS(peer))
			if cerr != nil || serr != nil {
				t.Fatalf("operator's certificate as client: client %v, server %v", cerr, serr)
			}
			if len(st.PeerCertificates) == 0 || !FingerprintMatches(st.PeerCertificates[0].Raw, id.Fingerprint) {
				t.Fatal("peer listener did not see the pinned operator certificate")
			}
			// Another pin is refused.
			if cerr, _, _ := handshake(t, ClientTLS(peer, peer.Fingerprint), ServerTLS(id)); cerr == nil || !strings.Contains(cerr.Error(), "pinned") {
				t.Fatalf("wrong pin accepted: %v", cerr)
			}
			// Loaded twice, the same identity; nothing generated over it.
			again, err := LoadIdentity(Files{Cert: cert, Key: key, Generate: true, Legacy: t.TempDir()}, "node")
			if err != nil || again.Fingerprint != id.Fingerprint {
				t.Fatalf("reload: %v, fingerprint %s, want %s", err, again.Fingerprint, id.Fingerprint)
			}
		})
	}
}

// TestOperatorCertificatesRefused: weak keys, a key of another
// certificate, a missing or half operator pair are errors, never served
// nor replaced by a generated identity.
func TestOperatorCertificatesRefused(t *testing.T) {
	dir := t.TempDir()
	weakCert, weakKey := openssl(t, dir, "rsa1024", "-newkey", "rsa:1024")
	aCert, _ := openssl(t, dir, "a", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
	_, bKey := openssl(t, dir, "b", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name  string
		files Files
		want  string
	}{
		{"RSA 1024", Files{Cert: weakCert, Key: weakKey}, "RSA key of 1024 bits: want at least 2048"},
		{"key of another certificate", Files{Cert: aCert, Key: bKey}, "private key does not match public key"},
		{"operator pair missing", Files{Cert: missing, Key: filepath.Join(dir, "missing-key.pem")}, "neither certificate"},
		{"certificate without key", Files{Cert: aCert, Key: missing, Generate: true}, "TLS key"},
		{"key without certificate", Files{Cert: missing, Key: bKey, Generate: true}, "TLS certificate"},
		{"relative path", Files{Cert: "cert.pem", Key: bKey}, "absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadIdentity(tc.files, "node")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(missing); err == nil {
				t.Fatal("a file was generated in place of the operator's")
			}
		})
	}
}

// TestGeneratedIdentity: without files at the default paths an identity
// is generated there once; a key left alone by a crash is reported.
func TestGeneratedIdentity(t *testing.T) {
	dir := t.TempDir()
	f := Files{Cert: filepath.Join(dir, "tls", "cert.pem"), Key: filepath.Join(dir, "tls", "key.pem"), Generate: true}
	id, err := LoadIdentity(f, "node")
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadIdentity(f, "node")
	if err != nil || again.Fingerprint != id.Fingerprint {
		t.Fatalf("identity not stable: %v %s %s", err, again.Fingerprint, id.Fingerprint)
	}
	if fi, err := os.Stat(f.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, mode %v, want 0600", err, fi.Mode())
	}
	if want := opensslFingerprint(t, f.Cert); id.Fingerprint != want {
		t.Fatalf("fingerprint %s, openssl says %s", id.Fingerprint, want)
	}
	if err := os.Remove(f.Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(f, "node"); err == nil {
		t.Fatal("key without certificate: a new identity replaced it")
	}
}

// TestLegacyIdentityKept: a node upgraded from a version that kept its
// identity under state_dir/dbsync keeps its fingerprint (the peer pinned
// it); the identity now lives at the configured paths.
func TestLegacyIdentityKept(t *testing.T) {
	state := t.TempDir()
	legacy := filepath.Join(state, "dbsync")
	old, err := LoadIdentity(InDir(legacy), "node")
	if err != nil {
		t.Fatal(err)
	}
	f := Files{Cert: filepath.Join(state, "tls", "cert.pem"), Key: filepath.Join(state, "tls", "key.pem"), Generate: true, Legacy: legacy}
	for i := range 2 {
		id, err := LoadIdentity(f, "node")
		if err != nil {
			t.Fatal(err)
		}
		if id.Fingerprint != old.Fingerprint {
			t.Fatalf("load %d: fingerprint %s, the old identity's is %s", i, id.Fingerprint, old.Fingerprint)
		}
	}
	if want := opensslFingerprint(t, f.Cert); want != old.Fingerprint {
		t.Fatalf("configured certificate's fingerprint %s, want %s", want, old.Fingerprint)
	}
	// A torn legacy pair is reported, not replaced by a new pin.
	state2 := t.TempDir()
	if _, err := LoadIdentity(InDir(filepath.Join(state2, "dbsync")), "node"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(state2, "dbsync", LegacyCertFile))
	f2 := Files{Cert: filepath.Join(state2, "tls", "cert.pem"), Key: filepath.Join(state2, "tls", "key.pem"), Generate: true, Legacy: filepath.Join(state2, "dbsync")}
	if _, err := LoadIdentity(f2, "node"); err == nil {
		t.Fatal("torn legacy identity: a new one generated")
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	const fp = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	got, err := NormalizeFingerprint(" 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff ")
	if err != nil || got != fp {
		t.Fatalf("%q, %v", got, err)
	}
	for _, bad := range []string{"abcd", fp + "00", "zz" + fp[2:], ""} {
		if _, err := NormalizeFingerprint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestTLS13Only: a TLS 1.2 client is refused.
func TestTLS13Only(t *testing.T) {
	srv, err := LoadIdentity(InDir(t.TempDir()), "srv")
	if err != nil {
		t.Fatal(err)
	}
	c := ClientTLS(srv, srv.Fingerprint)
	c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if cerr, _, _ := handshake(t, c, ServerTLS(srv)); cerr == nil {
		t.Fatal("TLS 1.2 client accepted")
	}
}
