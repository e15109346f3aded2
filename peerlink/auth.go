package peerlink

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWT methods supported by AuthConfig.Method.
const (
	MethodHS256 = "HS256" // shared cluster secret (also HS384, HS512)
	MethodHS384 = "HS384"
	MethodHS512 = "HS512"
	MethodEdDSA = "EdDSA" // per-node Ed25519 key pairs
)

// Token scopes. Peer-to-peer sync calls need ScopeSync; GET /api/health
// accepts either.
const (
	ScopeSync   = "sync"
	ScopeHealth = "health"
)

// Limits on token lifetimes (exp - iat).
const (
	DefaultTokenTTL     = 60 * time.Second
	MaxOperatorTokenTTL = time.Hour
	defaultLeeway       = 5 * time.Second
)

// AuthConfig holds the JWT keys. It is separate from the VRRP password and
// from the operator's UI login.
type AuthConfig struct {
	Method string // MethodHS256 or MethodEdDSA
	// Secret is the shared cluster secret for HS256 (at least 32 bytes).
	Secret []byte
	// PrivateKey signs this node's tokens (EdDSA).
	PrivateKey ed25519.PrivateKey
	// PeerPublicKey verifies the peer's tokens (EdDSA).
	PeerPublicKey ed25519.PublicKey
	// TokenTTL is the lifetime of tokens minted for sync requests
	// (default 60 s). Received sync tokens may not live longer than twice this.
	TokenTTL time.Duration
	// Leeway absorbs clock skew between the nodes (default 5 s).
	Leeway time.Duration
}

// WithDefaults fills the zero fields with the defaults.
func (c AuthConfig) WithDefaults() AuthConfig {
	d := c
	if d.TokenTTL == 0 {
		d.TokenTTL = DefaultTokenTTL
	}
	if d.Leeway == 0 {
		d.Leeway = defaultLeeway
	}
	return d
}

// Validate refuses weak or incomplete key material and lifetimes out of
// range.
func (c AuthConfig) Validate() error {
	switch c.Method {
	case MethodHS256, MethodHS384, MethodHS512:
		if len(c.Secret) < 32 {
			return fmt.Errorf("auth: %s secret must be at least 32 bytes, have %d", c.Method, len(c.Secret))
		}
	case MethodEdDSA:
		if len(c.PrivateKey) != ed25519.PrivateKeySize {
			return errors.New("auth: EdDSA needs this node's Ed25519 private key")
		}
		if len(c.PeerPublicKey) != ed25519.PublicKeySize {
			return errors.New("auth: EdDSA needs the peer's Ed25519 public key")
		}
	default:
		return fmt.Errorf("auth: method %q: want %s, %s, %s or %s", c.Method, MethodHS256, MethodHS384, MethodHS512, MethodEdDSA)
	}
	if c.TokenTTL < 0 || c.TokenTTL > MaxOperatorTokenTTL {
		return fmt.Errorf("auth: token TTL %v out of range", c.TokenTTL)
	}
	if c.Leeway < 0 || c.Leeway > time.Minute {
		return fmt.Errorf("auth: leeway %v out of range (0..1m)", c.Leeway)
	}
	return nil
}

// Claims are the JWT claims: iss = sender's node ID, aud = [receiver's node
// ID], iat/nbf/exp, a random jti, and scope.
type Claims struct {
	jwt.RegisteredClaims
	Scope string `json:"scope"`
}

// Rejection reasons for tokens (counted and logged, never sent).
const (
	ReasonMissing     = "token_missing"
	ReasonMalformed   = "token_malformed"
	ReasonExpired     = "token_expired"
	ReasonNotYetValid = "token_not_yet_valid"
	ReasonAudience    = "token_audience"
	ReasonIssuer      = "token_issuer"
	ReasonSignature   = "token_signature"
	ReasonAlgorithm   = "token_algorithm"
	ReasonLifetime    = "token_lifetime"
	ReasonScope       = "token_scope"
	ReasonClaims      = "token_claims"
	ReasonReplayed    = "token_replayed"
)

// authenticator mints tokens for the peer and verifies the peer's tokens.
type authenticator struct {
	cfg        AuthConfig
	self, peer string
	now        func() time.Time
	// seen holds the jti of every sync-scope token accepted and not yet
	// expired: a node mints one per request, so a second use is a replay
	// (a captured request sent again). Operator tokens (scope health) are
	// meant to be reused for their lifetime and open only GET /api/health.
	seen jtiCache
}

// jtiCache remembers token IDs until their expiry. Its size is bounded by
// the request rate times the token lifetime (about a hundred entries at
// the daemon's rates); maxSeenTokens bounds it against a peer minting
// without end, which refuses further tokens rather than forgetting one.
type jtiCache struct {
	mu        sync.Mutex
	exp       map[string]time.Time
	nextPrune time.Time
}

const maxSeenTokens = 1 << 16

// use records id until exp; false if id was already used or the cache is
// full.
func (c *jtiCache) use(id string, exp, now time.Time) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exp == nil {
		c.exp = make(map[string]time.Time)
	}
	if !now.Before(c.nextPrune) || len(c.exp) >= maxSeenTokens {
		for k, e := range c.exp {
			if now.After(e) {
				delete(c.exp, k)
			}
		}
		c.nextPrune = now.Add(10 * time.Second)
	}
	if _, ok := c.exp[id]; ok {
		return false, fmt.Errorf("token %s already used", id)
	}
	if len(c.exp) >= maxSeenTokens {
		return false, fmt.Errorf("%d unexpired tokens remembered: refusing more", len(c.exp))
	}
	c.exp[id] = exp
	return true, nil
}

func (a *authenticator) verifyKey() any {
	if a.cfg.Method == MethodEdDSA {
		return a.cfg.PeerPublicKey
	}
	return a.cfg.Secret
}

func signingMethod(m string) jwt.SigningMethod {
	switch m {
	case MethodEdDSA:
		return jwt.SigningMethodEdDSA
	case MethodHS384:
		return jwt.SigningMethodHS384
	case MethodHS512:
		return jwt.SigningMethodHS512
	}
	return jwt.SigningMethodHS256
}

// mint returns a signed token from this node to the peer.
func (a *authenticator) mint(scope string, ttl time.Duration) (string, error) {
	return mintToken(a.cfg, a.self, a.peer, scope, ttl, a.now())
}

func mintToken(cfg AuthConfig, iss, aud, scope string, ttl time.Duration, now time.Time) (string, error) {
	var jti [12]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	now = now.Truncate(time.Second)
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    iss,
			Audience:  jwt.ClaimStrings{aud},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        hex.EncodeToString(jti[:]),
		},
		Scope: scope,
	}
	var k any = cfg.Secret
	if cfg.Method == MethodEdDSA {
		k = cfg.PrivateKey
	}
	s, err := jwt.NewWithClaims(signingMethod(cfg.Method), c).SignedString(k)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// MintOperatorToken returns a token an operator passes as
// "Authorization: Bearer" to GET /api/health on the peer (node peerID),
// signed with this node's (nodeID) key. ttl is capped at MaxOperatorTokenTTL.
func MintOperatorToken(auth AuthConfig, nodeID, peerID string, ttl time.Duration, now time.Time) (string, error) {
	auth = auth.WithDefaults()
	if err := auth.Validate(); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxOperatorTokenTTL {
		return "", fmt.Errorf("operator token TTL %v: want (0, %v]", ttl, MaxOperatorTokenTTL)
	}
	return mintToken(auth, nodeID, peerID, ScopeHealth, ttl, now)
}

// MintToken returns a token from iss to aud with cfg's key (defaults
// applied): tests, and tools speaking for a node.
func MintToken(cfg AuthConfig, iss, aud, scope string, ttl time.Duration, now time.Time) (string, error) {
	return mintToken(cfg.WithDefaults(), iss, aud, scope, ttl, now)
}

// verify checks an Authorization header value. On failure it returns the
// rejection reason and the detailed error (for the log only).
func (a *authenticator) verify(header string, needScope string) (Claims, string, error) {
	var c Claims
	if header == "" {
		return c, ReasonMissing, errors.New("no Authorization header")
	}
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || tok == "" {
		return c, ReasonMalformed, errors.New("authorization is not a Bearer token")
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{a.cfg.Method}),
		jwt.WithAudience(a.self),
		jwt.WithIssuer(a.peer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(a.cfg.Leeway),
		jwt.WithTimeFunc(a.now),
	)
	t, err := p.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) { return a.verifyKey(), nil })
	if err != nil {
		return c, tokenReason(err, t, a.cfg.Method), err
	}
	if c.IssuedAt == nil || c.ExpiresAt == nil {
		return c, ReasonClaims, errors.New("iat and exp are required")
	}
	life := c.ExpiresAt.Sub(c.IssuedAt.Time)
	maxLife := 2 * a.cfg.TokenTTL
	if c.Scope == ScopeHealth {
		maxLife = MaxOperatorTokenTTL
	}
	if life > maxLife {
		return c, ReasonLifetime, fmt.Errorf("token lifetime %v exceeds %v", life, maxLife)
	}
	if c.Scope != needScope && !(needScope == ScopeHealth && c.Scope == ScopeSync) {
		return c, ReasonScope, fmt.Errorf("scope %q, need %q", c.Scope, needScope)
	}
	if c.Scope == ScopeSync {
		if c.ID == "" {
			return c, ReasonClaims, errors.New("a sync token needs a jti")
		}
		// Remembered past exp by the leeway, during which it still verifies.
		if ok, err := a.seen.use(c.ID, c.ExpiresAt.Add(a.cfg.Leeway), a.now()); !ok {
			return c, ReasonReplayed, err
		}
	}
	return c, "", nil
}

func tokenReason(err error, t *jwt.Token, method string) string {
	switch {
	case t != nil && t.Method != nil && t.Method.Alg() != method:
		return ReasonAlgorithm
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ReasonMalformed
	case errors.Is(err, jwt.ErrTokenExpired):
		return ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ReasonNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ReasonAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ReasonIssuer
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ReasonSignature
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return ReasonAlgorithm
	}
	return ReasonClaims
}
