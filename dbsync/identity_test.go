package dbsync

import (
	"net/http"

	"github.com/muros/muros-had/peerlink"
)

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

// mountHealth mounts a GET /api/health on n's link as the daemon does
// (any valid token), with the replication's part of the document.
func mountHealth(n *Node) {
	n.Link().Handle("GET "+PathHealth, peerlink.AnyToken, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := n.Status()
		peerlink.WriteJSON(w, http.StatusOK, map[string]any{
			"node": s.Node, "role": s.Role, "time": n.cfg.Now().UTC(),
			"db":   map[string]any{"revision": s.Revision, "ready": s.Ready},
			"vrrp": map[string]any{"state": "MASTER"},
		})
	}))
}
