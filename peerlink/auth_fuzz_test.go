package peerlink

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

// tokenReasons is every reason verify may give.
var tokenReasons = map[string]bool{
	ReasonMissing: true, ReasonMalformed: true, ReasonExpired: true, ReasonNotYetValid: true,
	ReasonAudience: true, ReasonIssuer: true, ReasonSignature: true, ReasonAlgorithm: true,
	ReasonLifetime: true, ReasonScope: true, ReasonClaims: true, ReasonReplayed: true,
}

// fuzzAuth is the verifier configuration a fuzz input selects: HS256,
// HS512 or EdDSA, with fixed keys so the checked-in corpus keeps verifying.
func fuzzAuth(sel uint8) AuthConfig {
	secret := []byte("0123456789abcdef0123456789abcdef")
	switch sel % 3 {
	case 1:
		return AuthConfig{Method: MethodHS512, Secret: secret}.WithDefaults()
	case 2:
		priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
		return AuthConfig{Method: MethodEdDSA, PrivateKey: priv, PeerPublicKey: priv.Public().(ed25519.PublicKey)}.WithDefaults()
	}
	return AuthConfig{Method: MethodHS256, Secret: secret}.WithDefaults()
}

// signFuzz signs c the way node "a" does under cfg.
func signFuzz(t testing.TB, cfg AuthConfig, c Claims) string {
	t.Helper()
	var key any = cfg.Secret
	if cfg.Method == MethodEdDSA {
		key = cfg.PrivateKey
	}
	s, err := jwt.NewWithClaims(signingMethod(cfg.Method), c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signatureValid checks a compact JWS against cfg's key without the JWT
// library: the oracle that an accepted token really is the peer's.
func signatureValid(cfg AuthConfig, tok string) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	input := []byte(parts[0] + "." + parts[1])
	var h func() hash.Hash
	switch cfg.Method {
	case MethodEdDSA:
		return ed25519.Verify(cfg.PeerPublicKey, input, sig)
	case MethodHS384:
		h = sha512.New384
	case MethodHS512:
		h = sha512.New
	default:
		h = sha256.New
	}
	m := hmac.New(h, cfg.Secret)
	m.Write(input)
	return hmac.Equal(m.Sum(nil), sig)
}

// FuzzVerifyToken feeds arbitrary Authorization headers to the verifier
// of node "b" (peer "a", clock at testNow). A rejection carries one of the
// typed reasons; an accepted token is checked rule by rule without the JWT
// library (alg, signature, iss, aud, times, lifetime, scope, jti), and a
// sync token is refused as a replay when presented again.
func FuzzVerifyToken(f *testing.F) {
	for sel := range uint8(3) {
		cfg := fuzzAuth(sel)
		good := claimsAt("a", "b", testNow, time.Minute, ScopeSync)
		good.ID = "0123456789abcdef01234567"
		health := claimsAt("a", "b", testNow.Add(-10*time.Minute), 30*time.Minute, ScopeHealth)
		health.ID = "health-token"
		for _, c := range []Claims{
			good, health,
			claimsAt("a", "b", testNow.Add(-2*time.Minute), time.Minute, ScopeSync), // expired
			claimsAt("a", "c", testNow, time.Minute, ScopeSync),                     // audience
			claimsAt("a", "b", testNow, time.Hour, ScopeSync),                       // lifetime
		} {
			f.Add("Bearer "+signFuzz(f, cfg, c), sel, false)
			f.Add("Bearer "+signFuzz(f, cfg, c), sel, true)
		}
		none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
		f.Add("Bearer "+none, sel, false)
	}
	f.Add("", uint8(0), false)
	f.Add("Bearer ", uint8(0), false)
	f.Add("Bearer a.b.c", uint8(0), false)
	f.Fuzz(func(t *testing.T, header string, sel uint8, health bool) {
		cfg := fuzzAuth(sel)
		v := verifierFor(cfg)
		need := ScopeSync
		if health {
			need = ScopeHealth
		}
		c, reason, err := v.verify(header, need)
		if (err == nil) != (reason == "") {
			t.Fatalf("reason %q with error %v", reason, err)
		}
		if err != nil {
			if !tokenReasons[reason] {
				t.Fatalf("rejected with reason %q, not one of the token reasons (err %v)", reason, err)
			}
			return
		}
		tok, ok := strings.CutPrefix(header, "Bearer ")
		if !ok || !signatureValid(cfg, tok) {
			t.Fatalf("accepted a token whose %s signature does not verify: %q", cfg.Method, header)
		}
		parts := strings.Split(tok, ".")
		var hdr struct {
			Alg string `json:"alg"`
		}
		if raw, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(raw, &hdr) != nil || hdr.Alg != cfg.Method {
			t.Fatalf("accepted a token whose header is not alg %s: %q", cfg.Method, parts[0])
		}
		checkAcceptedClaims(t, cfg, c, need)
		if c.Scope == ScopeSync {
			if _, reason, _ := v.verify(header, need); reason != ReasonReplayed {
				t.Fatalf("sync token presented twice: reason %q, want %q", reason, ReasonReplayed)
			}
		}
	})
}

// checkAcceptedClaims holds an accepted token's claims to every rule of
// verify, at verifierFor's clock.
func checkAcceptedClaims(t *testing.T, cfg AuthConfig, c Claims, need string) {
	t.Helper()
	now, lw := testNow, cfg.Leeway
	switch {
	case c.Issuer != "a":
		t.Fatalf("accepted iss %q", c.Issuer)
	case !slices.Contains(c.Audience, "b"):
		t.Fatalf("accepted aud %q", c.Audience)
	case c.ExpiresAt == nil || c.IssuedAt == nil:
		t.Fatalf("accepted without exp or iat: %+v", c)
	case !now.Before(c.ExpiresAt.Add(lw)): // valid until exp+leeway, exclusive
		t.Fatalf("accepted exp %v at %v", c.ExpiresAt, now)
	case c.IssuedAt.After(now.Add(lw)):
		t.Fatalf("accepted iat %v at %v", c.IssuedAt, now)
	case c.NotBefore != nil && c.NotBefore.After(now.Add(lw)):
		t.Fatalf("accepted nbf %v at %v", c.NotBefore, now)
	case c.Scope != ScopeSync && c.Scope != ScopeHealth:
		t.Fatalf("accepted scope %q", c.Scope)
	case need == ScopeSync && c.Scope != ScopeSync:
		t.Fatalf("accepted scope %q for %q", c.Scope, need)
	case c.Scope == ScopeSync && c.ID == "":
		t.Fatalf("accepted a sync token without jti")
	}
	maxLife := 2 * cfg.TokenTTL
	if c.Scope == ScopeHealth {
		maxLife = MaxOperatorTokenTTL
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt.Time); life > maxLife {
		t.Fatalf("accepted a %s token living %v (max %v)", c.Scope, life, maxLife)
	}
}

// FuzzTokenClaims signs claims built from the input with the right key:
// verify accepts exactly the tokens that break no rule and returns their
// claims unchanged (parse(mint(x)) = x); a token that breaks rules is
// refused with the reason of one of them.
func FuzzTokenClaims(f *testing.F) {
	f.Add("a", "b", ScopeSync, "jti-1", int64(0), int64(0), int64(60), uint8(0), false)
	f.Add("a", "b", ScopeHealth, "", int64(-600), int64(-600), int64(1800), uint8(2), true)
	f.Add("a", "b", ScopeSync, "jti-2", int64(-120), int64(-120), int64(60), uint8(1), false)
	f.Add("a", "b", ScopeSync, "jti-3", int64(30), int64(0), int64(60), uint8(0), false)
	f.Add("x", "c", "admin", "", int64(3), int64(9), int64(7200), uint8(1), false)
	f.Fuzz(func(t *testing.T, iss, aud, scope, jti string, iatOff, nbfOff, ttl int64, sel uint8, health bool) {
		if !utf8.ValidString(iss + aud + scope + jti) {
			return // JSON would carry U+FFFD instead: not the claims signed
		}
		cfg := fuzzAuth(sel)
		// Whole seconds within ±2^31 s of now: NumericDate's precision.
		const span = 1 << 31
		iat := testNow.Add(time.Duration(iatOff%span) * time.Second)
		nbf := testNow.Add(time.Duration(nbfOff%span) * time.Second)
		exp := iat.Add(time.Duration(ttl%span) * time.Second)
		c := Claims{RegisteredClaims: jwt.RegisteredClaims{
			Issuer: iss, Audience: jwt.ClaimStrings{aud}, ID: jti,
			IssuedAt: jwt.NewNumericDate(iat), NotBefore: jwt.NewNumericDate(nbf), ExpiresAt: jwt.NewNumericDate(exp),
		}, Scope: scope}
		need := ScopeSync
		if health {
			need = ScopeHealth
		}
		now, lw := testNow, cfg.Leeway
		maxLife := 2 * cfg.TokenTTL
		if scope == ScopeHealth {
			maxLife = MaxOperatorTokenTTL
		}
		broken := map[string]bool{}
		if iss != "a" {
			broken[ReasonIssuer] = true
		}
		if aud != "b" {
			broken[ReasonAudience] = true
		}
		if aud == "" {
			broken[ReasonClaims] = true // no audience at all: a required claim missing
		}
		if !now.Before(exp.Add(lw)) { // valid until exp+leeway, exclusive
			broken[ReasonExpired] = true
		}
		if iat.After(now.Add(lw)) || nbf.After(now.Add(lw)) {
			broken[ReasonNotYetValid] = true
		}
		if exp.Sub(iat) > maxLife {
			broken[ReasonLifetime] = true
		}
		if scope != need && !(need == ScopeHealth && scope == ScopeSync) {
			broken[ReasonScope] = true
		}
		if scope == ScopeSync && jti == "" {
			broken[ReasonClaims] = true
		}
		v := verifierFor(cfg)
		got, reason, err := v.verify("Bearer "+signFuzz(t, cfg, c), need)
		if len(broken) == 0 {
			if err != nil {
				t.Fatalf("a token breaking no rule refused: %s %v", reason, err)
			}
			if d := cmp.Diff(c, got); d != "" {
				t.Fatalf("claims changed through sign and verify (-signed +verified):\n%s", d)
			}
			return
		}
		if !broken[reason] {
			t.Fatalf("refused with reason %q (err %v), want one of %v", reason, err, broken)
		}
	})
}
