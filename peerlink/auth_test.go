package peerlink

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testNow = time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)

func hsAuth() AuthConfig {
	return AuthConfig{Method: MethodHS256, Secret: []byte("0123456789abcdef0123456789abcdef")}.WithDefaults()
}

// verifierFor is node b's view: it accepts tokens issued by a for b.
func verifierFor(cfg AuthConfig) *authenticator {
	return &authenticator{cfg: cfg, self: "b", peer: "a", now: func() time.Time { return testNow }}
}

func signRaw(t *testing.T, method jwt.SigningMethod, key any, c Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claimsAt returns claims with a fresh jti.
func claimsAt(iss, aud string, iat time.Time, ttl time.Duration, scope string) Claims {
	return Claims{RegisteredClaims: jwt.RegisteredClaims{
		ID:     rand.Text(),
		Issuer: iss, Audience: jwt.ClaimStrings{aud},
		IssuedAt: jwt.NewNumericDate(iat), NotBefore: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(iat.Add(ttl)),
	}, Scope: scope}
}

func TestVerifyHS256(t *testing.T) {
	cfg := hsAuth()
	v := verifierFor(cfg)
	good := claimsAt("a", "b", testNow, time.Minute, ScopeSync)
	otherSecret := []byte("another-secret-another-secret-xx")
	noneTok, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name   string
		header string
		scope  string
		reason string
	}{
		{"valid", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, good), ScopeSync, ""},
		{"valid sync token on health", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("a", "b", testNow, time.Minute, ScopeSync)), ScopeHealth, ""},
		{"sync token replayed", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, good), ScopeSync, ReasonReplayed},
		{"sync token without jti", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: "a", Audience: jwt.ClaimStrings{"b"}, IssuedAt: jwt.NewNumericDate(testNow), ExpiresAt: jwt.NewNumericDate(testNow.Add(time.Minute))}, Scope: ScopeSync}), ScopeSync, ReasonClaims},
		{"missing header", "", ScopeSync, ReasonMissing},
		{"not bearer", "Basic Zm9vOmJhcg==", ScopeSync, ReasonMalformed},
		{"malformed", "Bearer not.a.jwt", ScopeSync, ReasonMalformed},
		{"garbage", "Bearer abc", ScopeSync, ReasonMalformed},
		{"expired", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("a", "b", testNow.Add(-2*time.Minute), time.Minute, ScopeSync)), ScopeSync, ReasonExpired},
		{"nbf in future", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("a", "b", testNow.Add(time.Minute), time.Minute, ScopeSync)), ScopeSync, ReasonNotYetValid},
		{"wrong aud", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("a", "c", testNow, time.Minute, ScopeSync)), ScopeSync, ReasonAudience},
		{"own token reflected", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("b", "a", testNow, time.Minute, ScopeSync)), ScopeSync, ReasonAudience},
		{"wrong iss", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("x", "b", testNow, time.Minute, ScopeSync)), ScopeSync, ReasonIssuer},
		{"wrong key", "Bearer " + signRaw(t, jwt.SigningMethodHS256, otherSecret, good), ScopeSync, ReasonSignature},
		{"alg none", "Bearer " + noneTok, ScopeSync, ReasonAlgorithm},
		{"alg mismatch HS512", "Bearer " + signRaw(t, jwt.SigningMethodHS512, cfg.Secret, good), ScopeSync, ReasonAlgorithm},
		{"alg mismatch EdDSA", "Bearer " + signRaw(t, jwt.SigningMethodEdDSA, edPriv, good), ScopeSync, ReasonAlgorithm},
		{"no exp", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: "a", Audience: jwt.ClaimStrings{"b"}, IssuedAt: jwt.NewNumericDate(testNow)}, Scope: ScopeSync}), ScopeSync, ReasonClaims},
		{"lifetime too long", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("a", "b", testNow, time.Hour, ScopeSync)), ScopeSync, ReasonLifetime},
		{"health token on sync", "Bearer " + signRaw(t, jwt.SigningMethodHS256, cfg.Secret, claimsAt("a", "b", testNow, time.Minute, ScopeHealth)), ScopeSync, ReasonScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, reason, err := v.verify(tt.header, tt.scope)
			if reason != tt.reason {
				t.Fatalf("reason = %q (err %v), want %q", reason, err, tt.reason)
			}
			if (err == nil) != (tt.reason == "") {
				t.Fatalf("err = %v with reason %q", err, reason)
			}
		})
	}
}

// A header claiming HS256 but signed with the EdDSA public key as HMAC
// secret (the classic key-confusion attack) must fail under EdDSA config.
func TestVerifyEdDSA(t *testing.T) {
	aPub, aPriv, _ := ed25519.GenerateKey(rand.Reader)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	bcfg := AuthConfig{Method: MethodEdDSA, PeerPublicKey: aPub}.WithDefaults()
	v := verifierFor(bcfg)
	acfg := AuthConfig{Method: MethodEdDSA, PrivateKey: aPriv}.WithDefaults()
	tok, err := mintToken(acfg, "a", "b", ScopeSync, time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, reason, err := v.verify("Bearer "+tok, ScopeSync); err != nil {
		t.Fatalf("valid EdDSA token rejected: %s %v", reason, err)
	}
	good := claimsAt("a", "b", testNow, time.Minute, ScopeSync)
	for name, tc := range map[string]struct {
		tok    string
		reason string
	}{
		"wrong key":     {signRaw(t, jwt.SigningMethodEdDSA, otherPriv, good), ReasonSignature},
		"key confusion": {signRaw(t, jwt.SigningMethodHS256, []byte(aPub), good), ReasonAlgorithm},
		"expired":       {signRaw(t, jwt.SigningMethodEdDSA, aPriv, claimsAt("a", "b", testNow.Add(-time.Hour), time.Minute, ScopeSync)), ReasonExpired},
	} {
		if _, reason, _ := v.verify("Bearer "+tc.tok, ScopeSync); reason != tc.reason {
			t.Errorf("%s: reason %q, want %q", name, reason, tc.reason)
		}
	}
}

func TestVerifyHS512(t *testing.T) {
	cfg := AuthConfig{Method: MethodHS512, Secret: []byte("0123456789abcdef0123456789abcdef")}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tok, err := mintToken(cfg, "a", "b", ScopeSync, time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, reason, err := verifierFor(cfg).verify("Bearer "+tok, ScopeSync); err != nil {
		t.Fatalf("HS512 token rejected: %s %v", reason, err)
	}
	// An HS256 token with the same secret is an algorithm mismatch.
	tok256, _ := mintToken(hsAuth(), "a", "b", ScopeSync, time.Minute, testNow)
	if _, reason, _ := verifierFor(cfg).verify("Bearer "+tok256, ScopeSync); reason != ReasonAlgorithm {
		t.Fatalf("HS256 token under HS512 config: reason %q", reason)
	}
}

func TestMintOperatorToken(t *testing.T) {
	cfg := hsAuth()
	tok, err := MintOperatorToken(cfg, "a", "b", 10*time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	v := verifierFor(cfg)
	if _, reason, err := v.verify("Bearer "+tok, ScopeHealth); err != nil {
		t.Fatalf("operator token rejected on health: %s %v", reason, err)
	}
	if _, reason, _ := v.verify("Bearer "+tok, ScopeSync); reason != ReasonScope {
		t.Fatalf("operator token on sync: reason %q, want %q", reason, ReasonScope)
	}
	if _, err := MintOperatorToken(cfg, "a", "b", 2*time.Hour, testNow); err == nil {
		t.Fatal("2h operator token minted")
	}
	// The claims are what the package doc says.
	parts := strings.Split(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var m map[string]any
	json.Unmarshal(raw, &m)
	for _, k := range []string{"iss", "aud", "iat", "nbf", "exp", "jti", "scope"} {
		if _, ok := m[k]; !ok {
			t.Errorf("claim %q missing: %s", k, raw)
		}
	}
}

// Token expiry as the clock really moves (synctest's fake clock). An
// operator token (scope health) may be used again and again until then.
func TestTokenExpiresWithClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hsAuth()
		minter := &authenticator{cfg: cfg, self: "a", peer: "b", now: time.Now}
		verifier := &authenticator{cfg: cfg, self: "b", peer: "a", now: time.Now}
		tok, err := minter.mint(ScopeHealth, cfg.TokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		if _, reason, err := verifier.verify("Bearer "+tok, ScopeHealth); err != nil {
			t.Fatalf("fresh token: %s %v", reason, err)
		}
		time.Sleep(cfg.TokenTTL) // within leeway still
		if _, reason, err := verifier.verify("Bearer "+tok, ScopeHealth); err != nil {
			t.Fatalf("token at exp (leeway %v): %s %v", cfg.Leeway, reason, err)
		}
		time.Sleep(cfg.Leeway + time.Second)
		if _, reason, _ := verifier.verify("Bearer "+tok, ScopeHealth); reason != ReasonExpired {
			t.Fatalf("token after exp+leeway: reason %q, want %q", reason, ReasonExpired)
		}
	})
}

// A sync token is single-use: the node mints one per request, so a second
// presentation is a captured request sent again. Each new token passes;
// the remembered IDs are forgotten once their tokens expired.
func TestSyncTokenReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hsAuth()
		minter := &authenticator{cfg: cfg, self: "a", peer: "b", now: time.Now}
		verifier := &authenticator{cfg: cfg, self: "b", peer: "a", now: time.Now}
		for i := range 50 {
			tok, err := minter.mint(ScopeSync, cfg.TokenTTL)
			if err != nil {
				t.Fatal(err)
			}
			if _, reason, err := verifier.verify("Bearer "+tok, ScopeSync); err != nil {
				t.Fatalf("token %d: %s %v", i, reason, err)
			}
			if _, reason, _ := verifier.verify("Bearer "+tok, ScopeHealth); reason != ReasonReplayed {
				t.Fatalf("token %d used again: reason %q, want %q", i, reason, ReasonReplayed)
			}
			time.Sleep(time.Second)
		}
		// The first tokens have expired by now; the next check prunes them.
		time.Sleep(cfg.TokenTTL + cfg.Leeway + 10*time.Second)
		tok, err := minter.mint(ScopeSync, cfg.TokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		if _, reason, err := verifier.verify("Bearer "+tok, ScopeSync); err != nil {
			t.Fatalf("after the pause: %s %v", reason, err)
		}
		if n := len(verifier.seen.exp); n != 1 {
			t.Errorf("%d token IDs remembered after all but one expired", n)
		}
	})
}
