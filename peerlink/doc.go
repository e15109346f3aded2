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
package peerlink
