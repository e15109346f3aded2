package peerlink

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/muros/muros-had/rawio"
)

// Config configures a Link.
type Config struct {
	NodeID string // this node's identity (JWT iss of its tokens)
	PeerID string // the peer's identity (JWT aud of this node's tokens)
	// PeerURL is the peer's listener, e.g. "https://192.168.255.2:7443".
	PeerURL string
	// PeerCertSHA256 pins the peer's TLS certificate (hex, colons allowed).
	PeerCertSHA256 string
	Identity       Identity
	Auth           AuthConfig
	// Limits bound what clients that are not the peer hold of the
	// listener (limit.go); zero fields take the defaults.
	Limits ListenerLimits
	// RequestTimeout bounds a request of the client and the reading of
	// one by the server (default 60 s).
	RequestTimeout time.Duration
	// Now is this node's wall clock for token times (default time.Now).
	Now func() time.Time
	// Dial, when set, opens connections to the peer (tests dial inside a
	// network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// WithDefaults fills the zero fields with the defaults.
func (c Config) WithDefaults() Config {
	c.PeerURL = strings.TrimSuffix(c.PeerURL, "/")
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 60 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Auth = c.Auth.WithDefaults()
	c.Limits = c.Limits.WithDefaults()
	return c
}

// Validate refuses what the link cannot run with, all problems at once.
func (c Config) Validate() error {
	var errs []error
	if !validNodeID(c.NodeID) || !validNodeID(c.PeerID) || c.NodeID == c.PeerID {
		errs = append(errs, fmt.Errorf("node and peer IDs %q, %q: want two distinct printable names", c.NodeID, c.PeerID))
	}
	if u, err := url.Parse(c.PeerURL); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		errs = append(errs, fmt.Errorf("peer URL %q: want https://host:port", c.PeerURL))
	}
	if _, err := NormalizeFingerprint(c.PeerCertSHA256); err != nil {
		errs = append(errs, fmt.Errorf("peer certificate pin: %w", err))
	}
	if err := c.Auth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validNodeID(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// Access is what a route asks of a request.
type Access int

const (
	// PeerOnly: the pinned peer certificate and a single-use sync-scope
	// token (ReasonPeerCert, the token reasons).
	PeerOnly Access = iota
	// AnyToken: a valid token of either scope, whatever the client
	// certificate (an operator's curl with `muros-had token`'s token).
	AnyToken
)

// Rejection reason of a PeerOnly route without the pinned certificate.
const ReasonPeerCert = "peer_cert"

// Link is one node's end of the peer link: the router its listener
// serves (routes mounted with the access they require, behind the
// listener's limits) and the client that calls the peer.
type Link struct {
	cfg    Config
	log    *slog.Logger
	pin    string
	auth   *authenticator
	mux    *http.ServeMux
	client *http.Client

	rejected   counters
	refusedLog listenerLog
}

// New validates cfg and returns a Link with no route mounted.
func New(cfg Config, log *slog.Logger) (*Link, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("peer link: %w", err)
	}
	if len(cfg.Identity.Cert.Certificate) == 0 {
		return nil, errors.New("peer link: no TLS identity")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pin, _ := NormalizeFingerprint(cfg.PeerCertSHA256)
	l := &Link{
		cfg:  cfg,
		log:  log,
		pin:  pin,
		auth: &authenticator{cfg: cfg.Auth, self: cfg.NodeID, peer: cfg.PeerID, now: cfg.Now},
		mux:  http.NewServeMux(),
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	}
	l.client = &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				// Raw reads and writes: see package rawio.
				return rawio.NewStream(c), nil
			},
			TLSClientConfig:     ClientTLS(cfg.Identity, pin),
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
		},
		Timeout: cfg.RequestTimeout,
	}
	return l, nil
}

// Fingerprint is the SHA-256 of this node's certificate: the value the
// peer's PeerCertSHA256 must hold.
func (l *Link) Fingerprint() string { return l.cfg.Identity.Fingerprint }

// TLSConfig is the server configuration of the listener.
func (l *Link) TLSConfig() *tls.Config { return ServerTLS(l.cfg.Identity) }

// Handle mounts h at pattern (http.ServeMux syntax, e.g. "GET /api/health")
// behind access.
func (l *Link) Handle(pattern string, access Access, h http.Handler) {
	switch access {
	case PeerOnly:
		h = l.peerOnly(h)
	default:
		h = l.withToken(ScopeHealth, h)
	}
	l.mux.Handle(pattern, h)
}

// Handler is the router without the listener's limits (tests, and
// servers that bring their own listener).
func (l *Link) Handler() http.Handler { return l.mux }

// Rejected counts the requests and connections the link refused, by
// reason (the token reasons, ReasonPeerCert, the listener's).
func (l *Link) Rejected() map[string]uint64 { return l.rejected.snapshot() }

func (l *Link) reject(w http.ResponseWriter, r *http.Request, status int, reason string, err error) {
	l.rejected.add(reason, 1)
	l.log.Warn("peer link: request rejected", "reason", reason, "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
	WriteJSON(w, status, ErrorBody{Error: http.StatusText(status)})
}

func (l *Link) withToken(scope string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, reason, err := l.auth.verify(r.Header.Get("Authorization"), scope); err != nil {
			l.reject(w, r, http.StatusUnauthorized, reason, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fromPeer: the request's client presented the pinned certificate.
func (l *Link) fromPeer(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && FingerprintMatches(r.TLS.PeerCertificates[0].Raw, l.pin)
}

// peerOnly requires the pinned peer certificate and a sync-scope token.
func (l *Link) peerOnly(h http.Handler) http.Handler {
	inner := l.withToken(ScopeSync, h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.fromPeer(r) {
			l.reject(w, r, http.StatusUnauthorized, ReasonPeerCert, ErrPin)
			return
		}
		inner.ServeHTTP(w, r)
	})
}

// ErrorBody is every error answer: a generic message, nothing more (and
// the receiver's revision on a refused push).
type ErrorBody struct {
	Error    string `json:"error"`
	Revision uint64 `json:"revision,omitempty"`
}

// WriteJSON answers v as JSON with status, never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Serve accepts connections on ln (TLS and the limits are added here)
// until ctx ends. limitClock is the limits' clock (nil: time.Now).
func (l *Link) Serve(ctx context.Context, ln net.Listener, limitClock func() time.Time) error {
	tl, handler, connState := l.limited(ln, limitClock)
	srv := &http.Server{
		Handler:           handler,
		ConnState:         connState,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       l.cfg.RequestTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tl) }()
	select {
	case err := <-errc:
		// The listener failed or was closed under us: connections
		// already accepted would outlive Serve.
		srv.Close()
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			// Requests still running after the grace: cut them.
			srv.Close()
		}
		<-errc
		return nil
	}
}

// URL is path on the peer's listener.
func (l *Link) URL(path string) string { return l.cfg.PeerURL + path }

// Do sends req to the peer over the pinned connection with a fresh
// single-use sync-scope token.
func (l *Link) Do(req *http.Request) (*http.Response, error) {
	tok, err := l.auth.mint(ScopeSync, l.cfg.Auth.TokenTTL)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return l.client.Do(req)
}

// CloseIdleConnections closes the client's kept-alive connections (a
// stopping node's would outlive it).
func (l *Link) CloseIdleConnections() { l.client.CloseIdleConnections() }

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

func (c *counters) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
