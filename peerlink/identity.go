package peerlink

import (
	"github.com/muros/muros-had/atomicfile"

	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
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
	"time"
)

// Identity is this node's TLS key pair and the SHA-256 fingerprint of its
// certificate (what the peer pins).
type Identity struct {
	Cert        tls.Certificate
	Fingerprint string // lowercase hex of SHA-256 over the certificate DER
}

// Files says where the identity lives.
type Files struct {
	Cert, Key string
	// Generate: when neither file exists, take the identity under Legacy
	// or generate one at Cert and Key (the configured paths are the
	// defaults). Unset, a missing pair is an error.
	Generate bool
	// Legacy is the directory where versions before the configurable
	// paths kept the identity (LegacyCertFile, LegacyKeyFile); empty: none.
	Legacy string
}

// Names of the identity files of older versions, in Files.Legacy.
const (
	LegacyCertFile = "dbsync-cert.pem"
	LegacyKeyFile  = "dbsync-key.pem"
)

// InDir is the identity kept in dir under the legacy names, generated
// there when absent (tests, and a node without configured paths).
func InDir(dir string) Files {
	return Files{Cert: filepath.Join(dir, LegacyCertFile), Key: filepath.Join(dir, LegacyKeyFile), Generate: true}
}

// minRSABits is the smallest RSA modulus served (NIST SP 800-57: 112-bit
// security).
const minRSABits = 2048

// LoadIdentity loads the identity at f, first taking the legacy one or
// generating one when f allows it (package doc). nodeID names a generated
// certificate.
func LoadIdentity(f Files, nodeID string) (Identity, error) {
	if f.Cert == "" || f.Key == "" || !filepath.IsAbs(f.Cert) || !filepath.IsAbs(f.Key) {
		return Identity{}, fmt.Errorf("TLS identity: certificate %q and key %q must be absolute paths", f.Cert, f.Key)
	}
	haveC, err := exists(f.Cert)
	if err != nil {
		return Identity{}, fmt.Errorf("TLS certificate: %w", err)
	}
	haveK, err := exists(f.Key)
	if err != nil {
		return Identity{}, fmt.Errorf("TLS key: %w", err)
	}
	if !haveC && !haveK {
		if !f.Generate {
			return Identity{}, fmt.Errorf("TLS identity: neither certificate %s nor key %s exists (only the default paths are generated)", f.Cert, f.Key)
		}
		if err := provide(f, nodeID); err != nil {
			return Identity{}, err
		}
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return Identity{}, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return Identity{}, fmt.Errorf("TLS key: %w", err)
	}
	id, err := ParseIdentity(certPEM, keyPEM)
	if err != nil {
		return Identity{}, fmt.Errorf("TLS identity %s, %s: %w", f.Cert, f.Key, err)
	}
	return id, nil
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// provide puts an identity at f's paths: the legacy one when it exists
// whole, else a new one.
func provide(f Files, nodeID string) error {
	var certPEM, keyPEM []byte
	if f.Legacy != "" {
		c, errC := os.ReadFile(filepath.Join(f.Legacy, LegacyCertFile))
		k, errK := os.ReadFile(filepath.Join(f.Legacy, LegacyKeyFile))
		switch {
		case errC == nil && errK == nil:
			certPEM, keyPEM = c, k
		case errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist):
		default:
			// A torn legacy pair: a new identity would change the pin.
			return fmt.Errorf("TLS identity of an older version in %s: %w", f.Legacy, errors.Join(errC, errK))
		}
	}
	if certPEM == nil {
		var err error
		if certPEM, keyPEM, err = selfSigned(nodeID, time.Now()); err != nil {
			return err
		}
	}
	for _, p := range []string{f.Key, f.Cert} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("TLS identity directory: %w", err)
		}
	}
	// Key first: a crash between the two leaves a key without a
	// certificate, which the next start reports instead of overwriting.
	if err := atomicfile.Write(f.Key, keyPEM, 0o600, ".muros-had-"+filepath.Base(f.Key)+"-*"); err != nil {
		return fmt.Errorf("write TLS key: %w", err)
	}
	if err := atomicfile.Write(f.Cert, certPEM, 0o644, ".muros-had-"+filepath.Base(f.Cert)+"-*"); err != nil {
		return fmt.Errorf("write TLS certificate: %w", err)
	}
	return nil
}

// ParseIdentity parses a PEM certificate (leaf first) and private key,
// refusing weak keys and a key that is not the certificate's.
func ParseIdentity(certPEM, keyPEM []byte) (Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return Identity{}, fmt.Errorf("certificate and key: %w", err)
	}
	if err := checkKey(cert.PrivateKey); err != nil {
		return Identity{}, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return Identity{}, fmt.Errorf("certificate: %w", err)
		}
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return Identity{Cert: cert, Fingerprint: hex.EncodeToString(sum[:])}, nil
}

// checkKey refuses the key types and sizes below 112-bit security.
func checkKey(k any) error {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < minRSABits {
			return fmt.Errorf("RSA key of %d bits: want at least %d", n, minRSABits)
		}
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fmt.Errorf("ECDSA key on %s: want P-256, P-384 or P-521", k.Curve.Params().Name)
		}
	case ed25519.PrivateKey:
	default:
		return fmt.Errorf("private key of type %T: want RSA, ECDSA or Ed25519", k)
	}
	return nil
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
