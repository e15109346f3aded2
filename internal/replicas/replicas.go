// Package replicas builds muros-had's two replications from the
// configuration: the conntrack state (package ctsync) and the DB and files
// (package dbsync, whose replicated paths get the checks of `muros-had
// check` with their symlinks followed); and the DB sync's operator token
// and TLS fingerprint that `muros-had token` and `fingerprint` print.
package replicas

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/sched"
	"github.com/muros/muros-had/kdf"
	"github.com/muros/muros-had/peerlink"
	"github.com/muros/muros-had/replpath"
)

// NewConntrack builds the conntrack replication from the configuration,
// keyed from master (the password stretched once). It opens its sockets in
// the caller's network namespace.
func NewConntrack(cfg *config.Config, master kdf.Master, log *slog.Logger) (*ctsync.Sync, error) {
	f := ctsync.Filter{
		Include:        cfg.Conntrack.Filter.Include,
		Exclude:        cfg.Conntrack.Filter.Exclude,
		ReplicateLocal: !cfg.Conntrack.Filter.ExcludeLocal,
	}
	for _, p := range cfg.Conntrack.Filter.Protocols {
		n, ok := protocolNumber(p)
		if !ok {
			return nil, fmt.Errorf("conntrack filter: unknown protocol %q", p)
		}
		f.Protocols = append(f.Protocols, n)
	}
	s, err := ctsync.New(ctsync.Config{
		Interface: cfg.SyncInterface,
		Group:     cfg.Conntrack.Group,
		Port:      int(cfg.Conntrack.Port),
		Password:  cfg.Password,
		Master:    master,
		Filter:    f,
		// The sync epochs survive restarts here (replay protection).
		StateDir: filepath.Join(cfg.StateDir, "ctsync"),
	}, log)
	if err != nil {
		return nil, fmt.Errorf("conntrack sync: %w", err)
	}
	return s, nil
}

// protocolNumber maps the configuration's protocol names to IP protocol
// numbers.
func protocolNumber(name string) (uint8, bool) {
	switch name {
	case "tcp":
		return 6, true
	case "udp":
		return 17, true
	case "sctp":
		return 132, true
	case "dccp":
		return 33, true
	case "icmp":
		return 1, true
	case "icmpv6":
		return 58, true
	}
	return 0, false
}

// NewDB builds the DB replication from the configuration. peerAlive says
// whether the peer is known alive (its adverts are heard). The daemon
// mounts GET /api/health on its peer link (Node.Link).
func NewDB(cfg *config.Config, log *slog.Logger, peerAlive func() bool) (*dbsync.Node, error) {
	paths, err := replicatedPaths(cfg)
	if err != nil {
		return nil, err
	}
	auth, err := dbAuth(cfg)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: the nodes are not paired: run muros-had pair on both (README, \"Pairing the two nodes\")", err)
	}
	if err != nil {
		return nil, err
	}
	if cfg.DBSync.TLS.PeerSHA256 == nil {
		return nil, fmt.Errorf("dbsync: the peer's certificate is not pinned (no dbsync.tls.peer_sha256, no %s): run muros-had pair on both nodes", cfg.PeerPinFile())
	}
	n, err := dbsync.New(dbsync.Config{
		// sqlite3 starts time-sharing: the daemon may run real-time.
		StartCommand:   sched.Start,
		NodeID:         cfg.DBSync.JWT.Issuer,
		PeerID:         cfg.DBSync.JWT.Audience,
		PeerURL:        "https://" + net.JoinHostPort(cfg.Peer.String(), strconv.Itoa(int(cfg.DBSync.PeerPort))),
		PeerCertSHA256: hex.EncodeToString(cfg.DBSync.TLS.PeerSHA256),
		StateDir:       filepath.Join(cfg.StateDir, "dbsync"),
		Identity:       IdentityFiles(cfg),
		Paths:          paths,
		// The configured globs add to the default (*.pid): a node-local
		// file listed there stays out of both manifests.
		Exclude: append(dbsync.DefaultExclude(), cfg.DBSync.Exclude...),
		Auth:    auth,
		Limits: peerlink.ListenerLimits{
			MaxConns:          cfg.DBSync.Limits.Connections,
			MaxConnsPerSource: cfg.DBSync.Limits.ConnectionsPerSource,
			RatePerSource:     float64(cfg.DBSync.Limits.RatePerSource),
			BurstPerSource:    cfg.DBSync.Limits.BurstPerSource,
		},
		ClockSkewWarn: cfg.DBSync.ClockSkewWarn,
		PeerAlive:     peerAlive,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("dbsync: %w", err)
	}
	return n, nil
}

// replicatedPaths names each configured path by its base name
// (replpath.Name): the name is its identity on the wire, so the two nodes
// agree on it even where their local locations differ. A path that does not
// exist yet is a directory (the MurOS DB and Kea lease directories are).
// The list gets the check `muros-had check` makes before any is created.
func replicatedPaths(cfg *config.Config) ([]dbsync.Path, error) {
	if err := cfg.CheckReplicatedPaths(); err != nil {
		return nil, err
	}
	out := make([]dbsync.Path, 0, len(cfg.DBSync.Paths))
	for _, p := range cfg.DBSync.Paths {
		name := replpath.Name(p)
		dir := true
		if fi, err := os.Stat(p); err == nil {
			dir = fi.IsDir()
		} else if errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(p, 0o750); err != nil {
				return nil, fmt.Errorf("dbsync path: %w", err)
			}
		} else {
			return nil, fmt.Errorf("dbsync path: %w", err)
		}
		out = append(out, dbsync.Path{Name: name, Local: p, Dir: dir})
	}
	return out, nil
}

// dbAuth reads the JWT key material of the configuration.
func dbAuth(cfg *config.Config) (peerlink.AuthConfig, error) {
	secret, err := os.ReadFile(cfg.DBSync.JWT.SecretFile)
	if err != nil {
		return peerlink.AuthConfig{}, fmt.Errorf("dbsync JWT secret: %w", err)
	}
	return peerlink.AuthConfig{
		Method:   cfg.DBSync.JWT.Algorithm,
		Secret:   []byte(strings.TrimSpace(string(secret))),
		TokenTTL: cfg.DBSync.JWT.TTL,
		Leeway:   cfg.DBSync.JWT.Leeway,
	}, nil
}

// MintOperatorToken returns a bearer token for the peer's /api/health, for
// `muros-had token`.
func MintOperatorToken(cfg *config.Config, ttl time.Duration) (string, error) {
	auth, err := dbAuth(cfg)
	if err != nil {
		return "", err
	}
	return peerlink.MintOperatorToken(auth, cfg.DBSync.JWT.Issuer, cfg.DBSync.JWT.Audience, ttl, time.Now())
}

// Fingerprint loads (or creates, package peerlink) this node's
// peer-listener TLS identity and returns its SHA-256 fingerprint: the
// value the peer's dbsync.tls.peer_sha256 must hold.
func Fingerprint(cfg *config.Config) (string, error) {
	id, err := peerlink.LoadIdentity(IdentityFiles(cfg), cfg.DBSync.JWT.Issuer)
	if err != nil {
		return "", fmt.Errorf("dbsync identity: %w", err)
	}
	return id.Fingerprint, nil
}

// IdentityFiles is where the peer link's TLS identity lives:
// dbsync.tls.cert and dbsync.tls.key. At their defaults (under
// state_dir/tls) a missing identity is taken from state_dir/dbsync, where
// versions before these keys were honoured kept it (the peer pinned it),
// or generated; an operator's own paths must hold the pair.
func IdentityFiles(cfg *config.Config) peerlink.Files {
	defCert, defKey := filepath.Join(cfg.StateDir, "tls", "cert.pem"), filepath.Join(cfg.StateDir, "tls", "key.pem")
	return peerlink.Files{
		Cert:     cfg.DBSync.TLS.Cert,
		Key:      cfg.DBSync.TLS.Key,
		Generate: filepath.Clean(cfg.DBSync.TLS.Cert) == defCert && filepath.Clean(cfg.DBSync.TLS.Key) == defKey,
		Legacy:   filepath.Join(cfg.StateDir, "dbsync"),
	}
}
