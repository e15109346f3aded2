package dbsync

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Identity is this node's TLS key pair and the SHA-256 fingerprint of its
// certificate (what the peer pins).
type Identity struct {
	Cert        tls.Certificate
	Fingerprint string // lowercase hex of SHA-256 over the certificate DER
}

const (
	certFile = "dbsync-cert.pem"
	keyFile  = "dbsync-key.pem"
)

// EnsureIdentity loads the node's certificate and key from stateDir, first
// generating a self-signed ECDSA P-256 pair there if absent.
func EnsureIdentity(stateDir, nodeID string) (Identity, error) {
	cp, kp := filepath.Join(stateDir, certFile), filepath.Join(stateDir, keyFile)
	_, errC := os.Stat(cp)
	_, errK := os.Stat(kp)
	if errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist) {
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return Identity{}, fmt.Errorf("state dir: %w", err)
		}
		certPEM, keyPEM, err := selfSigned(nodeID, time.Now())
		if err != nil {
			return Identity{}, err
		}
		// Key first: a crash between the two leaves a key without a
		// certificate, which the next start reports instead of overwriting.
		if err := writeFileAtomic(stateDir, keyFile, keyPEM, 0o600); err != nil {
			return Identity{}, fmt.Errorf("write key: %w", err)
		}
		if err := writeFileAtomic(stateDir, certFile, certPEM, 0o644); err != nil {
			return Identity{}, fmt.Errorf("write certificate: %w", err)
		}
	}
	cert, err := tls.LoadX509KeyPair(cp, kp)
	if err != nil {
		return Identity{}, fmt.Errorf("load TLS identity from %s: %w", stateDir, err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return Identity{Cert: cert, Fingerprint: hex.EncodeToString(sum[:])}, nil
}

func selfSigned(nodeID string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "muros-had " + nodeID},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(30, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// NormalizeFingerprint accepts hex with or without colons, any case.
func NormalizeFingerprint(s string) (string, error) {
	s = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("fingerprint %q: want 64 hex digits (SHA-256)", s)
	}
	return s, nil
}

func fingerprintMatches(der []byte, pin string) bool {
	sum := sha256.Sum256(der)
	want, err := hex.DecodeString(pin)
	return err == nil && subtle.ConstantTimeCompare(sum[:], want) == 1
}

var errPin = errors.New("peer certificate does not match the pinned fingerprint")

// clientTLS trusts exactly the pinned certificate; chain and name checks are
// replaced by the pin (the peer's certificate is self-signed).
func clientTLS(id Identity, pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.Cert},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate's pin check
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !fingerprintMatches(raw[0], pin) {
				return errPin
			}
			return nil
		},
	}
}

// ServerTLS is the configuration of the peer-facing listener: TLS 1.3 only,
// this node's certificate, and a client certificate requested (not required,
// so an operator's curl can reach /api/health; the sync endpoints require
// the pinned peer certificate).
func serverTLS(id Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequestClientCert,
	}
}
