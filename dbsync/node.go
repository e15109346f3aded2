package dbsync

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muros/muros-had/peerlink"
)

// Config configures a Node. It is independent of package config; the daemon
// fills it from the YAML.
type Config struct {
	NodeID string // this node's identity (JWT iss of its tokens)
	PeerID string // the peer's identity (JWT aud of this node's tokens)
	// PeerURL is the peer's listener, e.g. "https://192.168.255.2:7443".
	PeerURL string
	// PeerCertSHA256 pins the peer's TLS certificate (hex, colons allowed).
	PeerCertSHA256 string
	// StateDir holds the revision and the apply journal.
	StateDir string
	// Identity says where this node's TLS identity lives (package
	// peerlink); zero: in StateDir under peerlink's legacy names,
	// generated there when absent.
	Identity peerlink.Files
	// Paths is the replicated set; empty means DefaultPaths().
	Paths []Path
	// Exclude lists globs of files never replicated (besides SQLite
	// sidecars and staging files, always excluded): without a slash a
	// glob matches a file's base name, with one its path relative to its
	// replicated directory or that of a directory above it (paths.go,
	// excluded). The backup's own list keeps its files out of its
	// manifest, so the master neither overwrites nor deletes them. nil
	// means DefaultExclude.
	Exclude []string
	Auth    peerlink.AuthConfig

	Debounce            time.Duration // quiet time after a change before pushing (default 20 ms)
	AntiEntropyInterval time.Duration // full manifest comparison period (default 60 s)
	ProbeInterval       time.Duration // peer liveness/restart probe period (default 2 s)
	RetryMin, RetryMax  time.Duration // push retry backoff (default 100 ms .. 30 s)
	RequestTimeout      time.Duration // per HTTP request (default 60 s)
	// ReadyPeerTimeout is how long a starting backup waits for an
	// unreachable peer before calling itself ready (default 10 s).
	ReadyPeerTimeout time.Duration
	// ClockSkewWarn: a measured clock offset from the peer above this is
	// warned about (default 1 s; skew.go).
	ClockSkewWarn time.Duration
	MaxBodyBytes  int64  // largest push accepted (default 64 MiB)
	MaxBatchBytes int    // a push is split above this (default 8 MiB)
	SQLite3       string // sqlite3 CLI for snapshots (default "sqlite3")
	// StartCommand starts the programs the node runs (the sqlite3 CLI);
	// default (*exec.Cmd).Start. The daemon, which may run real-time,
	// passes one that starts them time-sharing.
	StartCommand func(*exec.Cmd) error

	// Now, when set, is this node's wall clock (default time.Now): token
	// times and the clock reported to the peer. Tests give the two nodes
	// clocks that differ.
	Now func() time.Time
	// Limits bound what clients that are not the peer hold of the peer
	// listener (limit.go); zero fields take the defaults.
	Limits peerlink.ListenerLimits
	// Dial, when set, opens connections to the peer (tests dial inside a
	// network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// PeerAlive, when set, reports whether the peer is alive by other
	// means than DB sync (the daemon: VRRP hears its adverts). A live peer
	// whose DB sync is unreachable never makes a waiting backup ready
	// (ready.go).
	PeerAlive func() bool
}

// DefaultPaths is the replicated set when Config.Paths is empty: the MurOS
// DB directory and Kea's lease directory.
func DefaultPaths() []Path {
	return []Path{
		{Name: "muros-db", Local: "/var/lib/muros", Dir: true},
		{Name: "kea-leases", Local: "/var/lib/kea", Dir: true},
	}
}

// DefaultExclude keeps process-local files off the peer: a Kea LFC or
// daemon pid file from the master would mislead the backup's processes.
func DefaultExclude() []string { return []string{"*.pid"} }

func (c Config) withDefaults() Config {
	if len(c.Paths) == 0 {
		c.Paths = DefaultPaths()
	}
	if c.Exclude == nil {
		c.Exclude = DefaultExclude()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Debounce, 20*time.Millisecond)
	def(&c.AntiEntropyInterval, 60*time.Second)
	def(&c.ProbeInterval, 2*time.Second)
	def(&c.RetryMin, 100*time.Millisecond)
	def(&c.RetryMax, 30*time.Second)
	def(&c.RequestTimeout, 60*time.Second)
	def(&c.ReadyPeerTimeout, 10*time.Second)
	def(&c.ClockSkewWarn, time.Second)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 20
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 8 << 20
	}
	if c.StartCommand == nil {
		c.StartCommand = (*exec.Cmd).Start
	}
	if c.SQLite3 == "" {
		c.SQLite3 = "sqlite3"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Auth = c.Auth.WithDefaults()
	c.Limits = c.Limits.WithDefaults()
	return c
}

func (c Config) validate() error {
	var errs []error
	if err := c.link(peerlink.Identity{}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state dir %q is not absolute", c.StateDir))
	}
	if err := validatePaths(c.Paths, c.StateDir); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBatchBytes <= 0 || int64(c.MaxBatchBytes) > c.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("max batch %d must be in (0, max body %d]", c.MaxBatchBytes, c.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// link is the peer link's part of the configuration.
func (c Config) link(id peerlink.Identity) peerlink.Config {
	return peerlink.Config{
		NodeID: c.NodeID, PeerID: c.PeerID, PeerURL: c.PeerURL, PeerCertSHA256: c.PeerCertSHA256,
		Identity: id, Auth: c.Auth, Limits: c.Limits, RequestTimeout: c.RequestTimeout, Now: c.Now, Dial: c.Dial,
	}
}

// Node replicates the configured paths from whichever node is VRRP master
// to the other one.
type Node struct {
	cfg     Config
	log     *slog.Logger
	link    *peerlink.Link
	applier *applier
	cache   *hashCache
	src     *source
	stamps  *stampTable
	skew    skewMeter

	master  atomic.Bool
	roleCh  chan struct{} // signalled on SetRole
	started atomic.Bool

	rejected counters
	stats    counters
	// Paths the last batches could not apply (failpath.go), and those
	// failures counted by reason.
	failed       failedPaths
	pathFailures counters
	// limitClock, when set, is the listener limits' clock (tests).
	limitClock func() time.Time

	// armCh wakes the readiness watcher after Rearm (ready.go).
	armCh chan struct{}

	mu sync.Mutex
	st peerStatus
	// Readiness (ready.go), under mu: ready is closed once preemption is
	// safe; readyGen counts the arms, so a verdict reached for an earlier
	// arm cannot close a later one; bootID names this node's incarnation
	// as a receiver (a new one at every arm but the first).
	ready       chan struct{}
	readyGen    uint64
	readyReason string
	bootID      string
}

// peerStatus is the master loop's view of the peer, for Status and health.
type peerStatus struct {
	reachable    bool
	lastContact  time.Time
	role         string
	revision     uint64
	pending      int
	pendingSince time.Time
	lastSync     time.Time
	lastApply    time.Time
	lastError    string
	conflicts    []string // files both nodes changed independently (master)
	waiting      string   // why a backup is not ready yet (ready.go)
}

// New validates cfg, loads or creates the TLS identity, recovers an
// interrupted apply and returns a Node in the backup role.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	cfg = cfg.withDefaults()
	cfg.PeerURL = strings.TrimSuffix(cfg.PeerURL, "/")
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dbsync config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	files := cfg.Identity
	if files == (peerlink.Files{}) {
		files = peerlink.InDir(cfg.StateDir)
	}
	id, err := peerlink.LoadIdentity(files, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.Paths {
		dir := p.Local
		if !p.Dir {
			dir = filepath.Dir(p.Local)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("replicated path %s: %w", p.Name, err)
		}
	}
	cache := newHashCache()
	ap, err := newApplier(cfg.Paths, cfg.StateDir, cache)
	if err != nil {
		return nil, err
	}
	fwd, recovered, err := ap.recoverReport()
	if err != nil {
		return nil, fmt.Errorf("recover interrupted apply: %w", err)
	} else if fwd {
		log.Warn("dbsync: completed an apply interrupted by a crash", "revision", ap.revision().Revision, "failed_paths", len(recovered.Failed))
	}
	stamps, err := loadStamps(cfg.StateDir)
	if err != nil {
		if stamps == nil {
			return nil, err
		}
		log.Error("dbsync: version stamps unreadable; copies are adopted anew", "err", err)
	}
	var boot [8]byte
	rand.Read(boot[:])
	n := &Node{
		cfg:     cfg,
		log:     log,
		applier: ap,
		cache:   cache,
		stamps:  stamps,
		src:     &source{roots: cfg.Paths, exclude: cfg.Exclude, cache: cache, sqlite3: cfg.SQLite3, start: cfg.StartCommand, tmpDir: cfg.StateDir},
		bootID:  hex.EncodeToString(boot[:]),
		roleCh:  make(chan struct{}, 1),
		armCh:   make(chan struct{}, 1),
		ready:   make(chan struct{}),
	}
	if fwd {
		n.noteFailures(&recovered.batch, recovered.Failed)
	}
	if n.link, err = peerlink.New(cfg.link(id), log); err != nil {
		return nil, err
	}
	n.mountRoutes()
	return n, nil
}

// Fingerprint is the SHA-256 of this node's certificate: the value the
// peer's PeerCertSHA256 must hold.
func (n *Node) Fingerprint() string { return n.link.Fingerprint() }

// TLSConfig is the server configuration for the peer listener.
func (n *Node) TLSConfig() *tls.Config { return n.link.TLSConfig() }

// SetRole follows the VRRP role: a master watches and pushes, a backup
// accepts pushes. Safe to call from any goroutine.
func (n *Node) SetRole(master bool) {
	if n.master.Swap(master) == master {
		return
	}
	n.log.Info("dbsync: role", "master", master)
	if master {
		n.markReadyNow(ReadyMaster)
	}
	select {
	case n.roleCh <- struct{}{}:
	default:
	}
}

// Run replicates while ctx lives: as master it watches and pushes; as backup
// it waits (pushes arrive through Handler) and probes the peer until Ready.
func (n *Node) Run(ctx context.Context) error {
	if n.started.Swap(true) {
		return errors.New("dbsync: Run called twice")
	}
	rctx, stopReadiness := context.WithCancel(ctx)
	readinessDone := make(chan struct{})
	go func() {
		defer close(readinessDone)
		n.watchReadiness(rctx)
	}()
	defer func() {
		stopReadiness()
		<-readinessDone
		// Kept-alive connections to the peer would outlive the node.
		n.link.CloseIdleConnections()
	}()
	for {
		if n.master.Load() {
			sctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- n.runMaster(sctx) }()
			var err error
		wait:
			for {
				select {
				case <-n.roleCh:
					if !n.master.Load() {
						cancel()
						err = <-done
						break wait
					}
				case err = <-done:
					break wait
				}
			}
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-n.roleCh:
		}
	}
}

// Serve accepts peer connections on ln (TLS and the listener's limits
// are added by the peer link) until ctx ends.
func (n *Node) Serve(ctx context.Context, ln net.Listener) error {
	return n.link.Serve(ctx, ln, n.limitClock)
}

// Status is a snapshot for `muros-had status` and the health endpoint.
type Status struct {
	Node         string     `json:"node"`
	Role         string     `json:"role"`
	BootID       string     `json:"boot_id"`
	Fingerprint  string     `json:"fingerprint"`
	Revision     uint64     `json:"revision"`
	Peer         PeerStatus `json:"peer"`
	PendingPaths int        `json:"pending_paths"`
	LagMillis    int64      `json:"lag_ms"` // age of the oldest change not yet on the peer (master)
	LastSync     *time.Time `json:"last_sync,omitempty"`
	LastApply    *time.Time `json:"last_apply,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	// Conflicts are files both nodes changed independently since they last
	// agreed (master, from its last full comparison): neither copy is
	// pushed until one is changed on the master.
	Conflicts []string `json:"conflicts,omitempty"`
	// ClockSkew is the peer's clock minus this node's, measured from its
	// answers (nil until one carried its clock).
	ClockSkew *ClockSkew        `json:"clock_skew,omitempty"`
	Stats     map[string]uint64 `json:"stats"`
	Rejected  map[string]uint64 `json:"rejected"`
	// FailedPaths are replicated paths this node could not apply (backup);
	// PathFailures counts such failures by reason.
	FailedPaths  []FailedPath      `json:"failed_paths,omitempty"`
	PathFailures map[string]uint64 `json:"path_failures"`
	// Ready: this node holds the master's content or may preempt anyway
	// (ReadyReason says which, see Ready).
	Ready       bool   `json:"ready"`
	ReadyReason string `json:"ready_reason,omitempty"`
	// Waiting says why a node that is not ready waits (the peer's DB sync
	// unreachable, the master's round awaited, clock skew).
	Waiting string `json:"waiting,omitempty"`
}

// PeerStatus is what this node knows of its peer.
type PeerStatus struct {
	ID          string     `json:"id"`
	URL         string     `json:"url"`
	Reachable   bool       `json:"reachable"`
	Role        string     `json:"role,omitempty"`
	Revision    uint64     `json:"revision"`
	LastContact *time.Time `json:"last_contact,omitempty"`
}

func roleName(master bool) string {
	if master {
		return "master"
	}
	return "backup"
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Status returns the current replication state.
func (n *Node) Status() Status {
	n.mu.Lock()
	st, readyReason, bootID := n.st, n.readyReason, n.bootID
	n.mu.Unlock()
	s := Status{
		Node:        n.cfg.NodeID,
		Role:        roleName(n.master.Load()),
		BootID:      bootID,
		Fingerprint: n.link.Fingerprint(),
		Revision:    n.applier.revision().Revision,
		Peer: PeerStatus{
			ID: n.cfg.PeerID, URL: n.cfg.PeerURL, Reachable: st.reachable, Role: st.role,
			Revision: st.revision, LastContact: timePtr(st.lastContact),
		},
		PendingPaths: st.pending,
		LastSync:     timePtr(st.lastSync),
		LastApply:    timePtr(st.lastApply),
		LastError:    st.lastError,
		Conflicts:    st.conflicts,
		ClockSkew:    n.skew.status(),
		Stats:        n.stats.snapshot(),
		Rejected:     n.rejectedAll(),
		FailedPaths:  n.failed.snapshot(),
		PathFailures: n.pathFailures.snapshot(),
		Ready:        readyReason != "",
		ReadyReason:  readyReason,
		Waiting:      st.waiting,
	}
	if s.Ready {
		s.Waiting = "" // the last probe's reason, from before the verdict
	}
	if st.pending > 0 && !st.pendingSince.IsZero() {
		s.LagMillis = time.Since(st.pendingSince).Milliseconds()
	}
	return s
}

// counters is a set of named monotonic counters.
type counters struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *counters) add(name string, v uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[name] += v
}

// addAll adds several counters at once, so a snapshot never sees a
// partial update.
func (c *counters) addAll(deltas map[string]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	for k, v := range deltas {
		c.m[k] += v
	}
}

// rejectedAll is the replication's rejections and the peer link's
// (tokens, certificate, listener limits): the reasons do not overlap.
func (n *Node) rejectedAll() map[string]uint64 {
	out := n.rejected.snapshot()
	for k, v := range n.link.Rejected() {
		out[k] += v
	}
	return out
}

func (c *counters) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
