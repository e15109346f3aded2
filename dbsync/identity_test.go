package dbsync

import "github.com/muros/muros-had/peerlink"

// EnsureIdentity is the identity a Node with Config.StateDir dir uses
// (Config.Identity zero), generated there when absent: tests pin it.
func EnsureIdentity(dir, nodeID string) (peerlink.Identity, error) {
	return peerlink.LoadIdentity(peerlink.InDir(dir), nodeID)
}

// Identity is a node's TLS identity in the tests.
type Identity = peerlink.Identity

// hsAuth is an HS256 configuration with a test secret.
func hsAuth() peerlink.AuthConfig {
	return peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte("0123456789abcdef0123456789abcdef")}.WithDefaults()
}
