// Package peerlink is the HTTPS link between the two nodes of a pair, on
// which the DB replication (package dbsync) mounts its sync routes and the
// daemon GET /api/health:
//
//   - the node's TLS identity (an operator's certificate and key, or a
//     self-signed ECDSA P-256 pair generated on first start) and TLS 1.3
//     (RFC 8446) with the peer's certificate pinned by the SHA-256 of its
//     DER instead of a chain, for the listener and for the client;
//   - JSON Web Tokens (RFC 7519, signed per RFC 7515/7518: HS256, HS384 or
//     HS512 with a shared cluster secret of at least 32 bytes, or
//     EdDSA/Ed25519 per RFC 8037): iss the sender, aud the receiver,
//     iat/nbf/exp within a leeway, a random jti. Sync-scope tokens live at
//     most twice the configured TTL and are single-use (their jti is
//     remembered until expiry); operator tokens (scope health, `muros-had
//     token`) live up to an hour and open only AnyToken routes;
//   - the listener's admission limits for clients that are not the peer
//     (limit.go);
//   - the router (Link.Handle: PeerOnly routes need the pinned certificate
//     and a sync token, AnyToken routes any valid token) and the client
//     (Link.Do: pinned TLS and a fresh token per request).
//
// Every refusal is counted by its reason (Link.Rejected; the token_*
// reasons, peer_cert, conn_limit, source_conn_limit, source_rate), which
// double as metric labels, and answered {"error":"<HTTP status text>"}.
//
// # Identity
//
// Files.Cert and Files.Key name the certificate (PEM, the leaf first) and
// its private key (PEM: PKCS #8, PKCS #1 or SEC 1). When both exist they
// are served as they are; the key must be RSA of at least 2048 bits, ECDSA
// on P-256, P-384 or P-521, or Ed25519, and match the certificate, or
// loading fails. The peer pins whatever certificate is served, so chain,
// names and validity dates are not checked. When neither exists and
// Files.Generate is set (the configured paths are the defaults), the
// identity of an older version under Files.Legacy is copied there, so an
// upgraded node keeps the fingerprint its peer pinned; without one a
// self-signed ECDSA P-256 pair is generated there (key first: a crash
// between the two writes leaves a key without a certificate, reported at
// the next start rather than overwritten). One file without the other is
// an error, and so is a missing operator pair (Generate unset): a typo
// must not silently change the pin.
//
// # Pairing
//
// Pairing (pair.go, pairconn.go, pairfiles.go; `muros-had pair`) makes the
// shared JWT secret and pins each node's certificate on the other without
// an operator copying either. One node, the listener, draws a one-time code
// of 100 random bits, shown as 24 symbols of Crockford's base32 in groups
// of four, the last four a checksum that catches every one-symbol typo and
// every swap of two symbols (a weighted sum modulo the prime 1048573). The
// other, the joiner, connects from the configured peer address to the
// listener's pairing port over TLS 1.3 (RFC 8446) in which each side
// presents its peer-link certificate (the listener requires one). Then,
// inside TLS, frames of
//
//	type (1 byte) | body length (2 bytes, big endian, at most 1024) | body
//
// where a string s is len(s) (1 byte) followed by s (printable ASCII, no
// spaces, 1..253 bytes for names, 1..16 for the algorithm, 1..64 for a
// reason):
//
//	1 listener hello  version (1, =1) | nonce (32) | node | peer | alg
//	2 joiner hello    version (1, =1) | nonce (32) | node | peer | alg | proof (32)
//	3 listener proof  proof (32)
//	4 confirm         share (32), sent once this side's operator said yes
//	5 refuse          reason
//	6 done            (empty), sent once this side wrote its files
//
// node, peer and alg are the sender's dbsync.jwt issuer, audience and
// algorithm; each side requires the other's to mirror its own. The
// transcript hash is SHA-256 over "muros-had pair v1\x00" | SHA-256 of the
// listener's certificate | of the joiner's | listener nonce | joiner nonce
// | node, peer, alg of the listener | of the joiner (as strings above).
// The proof key is HKDF-SHA-256 (RFC 5869) of the code's 20 data symbols
// with the transcript hash as salt and info "muros-had pair v1 proof"; a
// side's proof is HMAC-SHA-256 under it of "joiner" or "listener". The
// joiner proves first, so only the box at the configured peer address ever
// sees a proof, and a proof from one connection (other nonce, other
// certificate) does not verify in another; the listener's proof shows the
// joiner that the box it reached knows the code. Both operators then see
// both fingerprints and confirm; the shares are sent only after that, and
// the secret is HKDF-SHA-256 of listener share | joiner share with the
// transcript hash as salt and info "muros-had pair v1 jwt secret",
// written as 64 hex digits.
//
// The listener takes connections from the configured peer address only,
// one at a time, waits a second after a failed attempt, counts every
// refusal by reason (the Pair* reasons), voids the code after three wrong
// proofs, and stops after one exchange in which the joiner's proof
// verified, or when the code expires.
package peerlink
