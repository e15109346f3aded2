package dbsync

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// handshake runs a TLS handshake over an in-memory pipe.
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	// A buffered AF_UNIX socket pair (net.Pipe deadlocks when both ends
	// write an alert at once); no network involved.
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
	done := make(chan error, 1)
	go func() {
		s := tls.Server(c2, server)
		err := s.Handshake()
		if err != nil {
			c2.Close()
		}
		done <- err
	}()
	c := tls.Client(c1, client)
	clientErr = c.Handshake()
	if clientErr != nil {
		c1.Close()
	}
	return clientErr, <-done
}

func TestTLSPinning(t *testing.T) {
	dir := t.TempDir()
	srv, err := EnsureIdentity(filepath.Join(dir, "srv"), "srv")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := EnsureIdentity(filepath.Join(dir, "cli"), "cli")
	if err != nil {
		t.Fatal(err)
	}
	// A second load returns the same identity (generated once).
	again, err := EnsureIdentity(filepath.Join(dir, "srv"), "srv")
	if err != nil || again.Fingerprint != srv.Fingerprint {
		t.Fatalf("identity not stable: %v %s %s", err, again.Fingerprint, srv.Fingerprint)
	}
	if cerr, serr := handshake(t, clientTLS(cli, srv.Fingerprint), serverTLS(srv)); cerr != nil || serr != nil {
		t.Fatalf("pinned handshake: client %v, server %v", cerr, serr)
	}
	if cerr, _ := handshake(t, clientTLS(cli, cli.Fingerprint), serverTLS(srv)); cerr == nil || !strings.Contains(cerr.Error(), "pinned") {
		t.Fatalf("wrong pin accepted: %v", cerr)
	}
	old := clientTLS(cli, srv.Fingerprint)
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if cerr, _ := handshake(t, old, serverTLS(srv)); cerr == nil {
		t.Fatal("TLS 1.2 client accepted")
	}
	if _, err := NormalizeFingerprint(strings.ToUpper(srv.Fingerprint[:2]) + ":" + srv.Fingerprint[2:]); err != nil {
		t.Fatal(err)
	}
	if _, err := NormalizeFingerprint("abcd"); err == nil {
		t.Fatal("short fingerprint accepted")
	}
}
