package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/replpath"
	"github.com/muros/muros-had/internal/sched"
	"github.com/muros/muros-had/vrrp"
)

// dbReplica is what the daemon needs of the DB replication (package dbsync).
// Ready is closed once this node holds the master's content (or may preempt
// anyway): a returning node that preempted earlier would push its stale DB
// over the edits made on the peer while it was away. Rearm opens a new wait
// when the node returns to BACKUP without restarting.
type dbReplica interface {
	Run(ctx context.Context) error
	Serve(ctx context.Context, ln net.Listener) error
	SetRole(master bool)
	Ready() <-chan struct{}
	Rearm() <-chan struct{}
	Status() dbsync.Status
}

// replicatedPaths names each configured path by its base name
// (replpath.Name): the name is its identity on the wire, so the two nodes
// agree on it even where their local locations differ. A path that does not
// exist yet is a directory (the MurOS DB and Kea lease directories are).
// The list gets the check `muros-had check` makes before any is created.
func replicatedPaths(cfg *config.Config) ([]dbsync.Path, error) {
	if err := cfg.CheckReplicatedPaths(); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	out := make([]dbsync.Path, 0, len(cfg.DBSync.Paths))
	for _, p := range cfg.DBSync.Paths {
		name := replpath.Name(p)
		dir := true
		if fi, err := os.Stat(p); err == nil {
			dir = fi.IsDir()
		} else if errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(p, 0o750); err != nil {
				return nil, fmt.Errorf("daemon: dbsync path: %w", err)
			}
		} else {
			return nil, fmt.Errorf("daemon: dbsync path: %w", err)
		}
		out = append(out, dbsync.Path{Name: name, Local: p, Dir: dir})
	}
	return out, nil
}

// dbAuth reads the JWT key material of the configuration.
func dbAuth(cfg *config.Config) (dbsync.AuthConfig, error) {
	secret, err := os.ReadFile(cfg.DBSync.JWT.SecretFile)
	if err != nil {
		return dbsync.AuthConfig{}, fmt.Errorf("daemon: dbsync JWT secret: %w", err)
	}
	return dbsync.AuthConfig{
		Method:   cfg.DBSync.JWT.Algorithm,
		Secret:   []byte(strings.TrimSpace(string(secret))),
		TokenTTL: cfg.DBSync.JWT.TTL,
		Leeway:   cfg.DBSync.JWT.Leeway,
	}, nil
}

// newDBReplica builds the DB replication from the configuration.
func newDBReplica(cfg *config.Config, d *Daemon) (*dbsync.Node, error) {
	paths, err := replicatedPaths(cfg)
	if err != nil {
		return nil, err
	}
	auth, err := dbAuth(cfg)
	if err != nil {
		return nil, err
	}
	n, err := dbsync.New(dbsync.Config{
		// sqlite3 starts time-sharing: the daemon may run real-time.
		StartCommand:   sched.Start,
		NodeID:         cfg.DBSync.JWT.Issuer,
		PeerID:         cfg.DBSync.JWT.Audience,
		PeerURL:        "https://" + net.JoinHostPort(cfg.Peer.String(), strconv.Itoa(int(cfg.DBSync.PeerPort))),
		PeerCertSHA256: hex.EncodeToString(cfg.DBSync.TLS.PeerSHA256),
		StateDir:       filepath.Join(cfg.StateDir, "dbsync"),
		Paths:          paths,
		Auth:           auth,
		Limits: dbsync.ListenerLimits{
			MaxConns:          cfg.DBSync.Limits.Connections,
			MaxConnsPerSource: cfg.DBSync.Limits.ConnectionsPerSource,
			RatePerSource:     float64(cfg.DBSync.Limits.RatePerSource),
			BurstPerSource:    cfg.DBSync.Limits.BurstPerSource,
		},
		ClockSkewWarn: cfg.DBSync.ClockSkewWarn,
		// In BACKUP the peer's adverts are heard: it is alive, and a DB
		// sync that does not answer keeps the hold (dbsync ready.go).
		PeerAlive: func() bool { return d.status.Snapshot(time.Now()).State == vrrp.StateBackup.String() },
		Health:    d.healthExtras,
	}, d.log.With("component", "dbsync"))
	if err != nil {
		return nil, fmt.Errorf("daemon: dbsync: %w", err)
	}
	return n, nil
}

// healthExtras is the VRRP and conntrack part of GET /api/health.
func (d *Daemon) healthExtras() map[string]any {
	st := d.statusCore()
	m := map[string]any{
		"vrrp": map[string]any{
			"state":         st.State,
			"priority":      st.Priority,
			"vips":          st.VIPs,
			"last_failover": st.LastFailover,
			"peer":          st.Peer,
			"readiness":     st.Readiness,
			"split_brain":   st.SplitBrain,
		},
		// The peer compares this fingerprint with its own (package peerview).
		"ruleset": st.Ruleset.Local,
	}
	if st.Conntrack != nil {
		m["conntrack"] = st.Conntrack
	}
	return m
}

// MintOperatorToken returns a bearer token for the peer's /api/health, for
// `muros-had token`.
func MintOperatorToken(cfg *config.Config, ttl time.Duration) (string, error) {
	auth, err := dbAuth(cfg)
	if err != nil {
		return "", err
	}
	return dbsync.MintOperatorToken(auth, cfg.DBSync.JWT.Issuer, cfg.DBSync.JWT.Audience, ttl, time.Now())
}

// Fingerprint loads or creates this node's peer-listener TLS identity and
// returns its SHA-256 fingerprint: the value the peer's
// dbsync.tls.peer_sha256 must hold.
func Fingerprint(cfg *config.Config) (string, error) {
	id, err := dbsync.EnsureIdentity(filepath.Join(cfg.StateDir, "dbsync"), cfg.DBSync.JWT.Issuer)
	if err != nil {
		return "", fmt.Errorf("daemon: dbsync identity: %w", err)
	}
	return id.Fingerprint, nil
}
