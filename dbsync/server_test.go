package dbsync

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/peerlink"
	"github.com/prometheus/client_golang/prometheus"
)

// handlerNode is a backup Node "b" whose peer is "a", served without a
// network: requests carry a fake TLS state with a's certificate.
func handlerNode(t *testing.T) (n *Node, peer Identity, auth peerlink.AuthConfig) {
	t.Helper()
	base := t.TempDir()
	peer, err := EnsureIdentity(filepath.Join(base, "peer"), "a")
	if err != nil {
		t.Fatal(err)
	}
	auth = peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte("cluster-secret-cluster-secret-32")}
	n, err = New(Config{
		NodeID: "b", PeerID: "a", PeerURL: "https://192.0.2.1:7443", PeerCertSHA256: peer.Fingerprint,
		StateDir: filepath.Join(base, "state"), Auth: auth, MaxBodyBytes: 4096, MaxBatchBytes: 2048,
		Paths: []Path{{Name: "db", Local: filepath.Join(base, "db"), Dir: true}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mountHealth(n)
	return n, peer, auth
}

func peerRequest(t *testing.T, peer Identity, method, path string, body []byte, token string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	leaf, err := x509.ParseCertificate(peer.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{leaf}}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

func TestHandlerRejects(t *testing.T) {
	n, peer, auth := handlerNode(t)
	h := n.Handler()
	tok := syncTokens(t, auth)
	wrongAud, _ := peerlink.MintToken(auth, "a", "c", peerlink.ScopeSync, time.Minute, time.Now())
	good, _ := AppendBatch(nil, Batch{Revision: 1, Entries: []Entry{put("db/ok", "ok")}})
	escape, _ := AppendBatch(nil, Batch{Revision: 1, Entries: []Entry{put("db/../../etc/passwd", "x")}})
	absolute, _ := AppendBatch(nil, Batch{Revision: 1, Entries: []Entry{put("/etc/passwd", "x")}})
	notRoot, _ := AppendBatch(nil, Batch{Revision: 1, Entries: []Entry{put("etc/passwd", "x")}})
	huge, _ := AppendBatch(nil, Batch{Revision: 1, Entries: []Entry{put("db/big", strings.Repeat("x", 5000))}})
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		reason string
	}{
		{"no token", func() *http.Request { return peerRequest(t, peer, "POST", PathPush, good, "") }, 401, peerlink.ReasonMissing},
		{"wrong audience", func() *http.Request { return peerRequest(t, peer, "POST", PathPush, good, wrongAud) }, 401, peerlink.ReasonAudience},
		{"no client certificate", func() *http.Request {
			r := peerRequest(t, peer, "POST", PathPush, good, tok())
			r.TLS.PeerCertificates = nil
			return r
		}, 401, peerlink.ReasonPeerCert},
		{"health without token", func() *http.Request { return peerRequest(t, peer, "GET", PathHealth, nil, "") }, 401, peerlink.ReasonMissing},
		{"too large", func() *http.Request { return peerRequest(t, peer, "POST", PathPush, huge, tok()) }, 413, ReasonTooLarge},
		{"truncated", func() *http.Request { return peerRequest(t, peer, "POST", PathPush, good[:len(good)-3], tok()) }, 400, ReasonTruncated},
		{"garbage", func() *http.Request {
			return peerRequest(t, peer, "POST", PathPush, []byte("hello world, not a batch"), tok())
		}, 400, ReasonDecode},
		{"dot dot", func() *http.Request { return peerRequest(t, peer, "POST", PathPush, escape, tok()) }, 400, ReasonPath},
		{"absolute", func() *http.Request { return peerRequest(t, peer, "POST", PathPush, absolute, tok()) }, 400, ReasonPath},
		{"not under a root", func() *http.Request { return peerRequest(t, peer, "POST", PathPush, notRoot, tok()) }, 400, ReasonPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := n.Status().Rejected[tt.reason]
			w := httptest.NewRecorder()
			h.ServeHTTP(w, tt.req())
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if got := n.Status().Rejected[tt.reason] - before; got != 1 {
				t.Fatalf("reason %q counted %d times, want 1 (all: %v)", tt.reason, got, n.Status().Rejected)
			}
			// Nothing beyond a generic message.
			var eb map[string]any
			json.Unmarshal(w.Body.Bytes(), &eb)
			if d := cmp.Diff(map[string]any{"error": http.StatusText(tt.status)}, eb); d != "" {
				t.Fatalf("body (-want +got):\n%s", d)
			}
		})
	}
	if n.Status().Revision != 0 {
		t.Fatal("a rejected push changed the revision")
	}
}

func TestHandlerPushAndHealth(t *testing.T) {
	n, peer, auth := handlerNode(t)
	h := n.Handler()
	tok := syncTokens(t, auth)
	body, _ := AppendBatch(nil, Batch{Revision: 7, Entries: []Entry{put("db/ok", "ok")}})
	for i, want := range []ApplyResult{{Revision: 7, Applied: 1, Bytes: 2}, {Revision: 7, Noop: true}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, peerRequest(t, peer, "POST", PathPush, body, tok()))
		var got ApplyResult
		json.Unmarshal(w.Body.Bytes(), &got)
		if w.Code != 200 {
			t.Fatalf("push %d: status %d %s", i, w.Code, w.Body)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("push %d (-want +got):\n%s", i, d)
		}
	}
	// A master refuses pushes (split brain must not overwrite).
	n.SetRole(true)
	w := httptest.NewRecorder()
	body2, _ := AppendBatch(nil, Batch{Revision: 8, Entries: []Entry{put("db/ok", "no")}})
	h.ServeHTTP(w, peerRequest(t, peer, "POST", PathPush, body2, tok()))
	if w.Code != http.StatusConflict {
		t.Fatalf("push to master: %d", w.Code)
	}
	n.SetRole(false)

	// Health with an operator token, no client certificate needed.
	op, err := peerlink.MintOperatorToken(auth, "a", "b", 5*time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := peerRequest(t, peer, "GET", PathHealth, nil, op)
	r.TLS.PeerCertificates = nil
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("health: %d %s", w.Code, w.Body)
	}
	var doc map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["role"] != "backup" || doc["node"] != "b" || doc["vrrp"] == nil {
		t.Fatalf("health document: %s", w.Body)
	}
	db := doc["db"].(map[string]any)
	if db["revision"].(float64) != 7 {
		t.Fatalf("health db: %v", db)
	}
	// Operator tokens do not open the sync endpoints.
	w = httptest.NewRecorder()
	h.ServeHTTP(w, peerRequest(t, peer, "GET", PathManifest, nil, op))
	if w.Code != 401 {
		t.Fatalf("manifest with operator token: %d", w.Code)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, peerRequest(t, peer, "GET", PathManifest, nil, tok()))
	var m Manifest
	json.Unmarshal(w.Body.Bytes(), &m)
	if w.Code != 200 || len(m.Files) != 1 || m.Files[0].Path != "db/ok" || m.Revision != 7 {
		t.Fatalf("manifest: %d %s", w.Code, w.Body)
	}
}

func TestCollector(t *testing.T) {
	n, peer, _ := handlerNode(t)
	w := httptest.NewRecorder()
	n.Handler().ServeHTTP(w, peerRequest(t, peer, "POST", PathPush, []byte("x"), ""))
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(n.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetValue() + "}"
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"muros_had_dbsync_rejected_total{token_missing}": 1,
		"muros_had_dbsync_revision":                      0,
		"muros_had_dbsync_lag_seconds":                   0,
		"muros_had_dbsync_pending_paths":                 0,
		"muros_had_dbsync_peer_reachable":                0,
		"muros_had_dbsync_master":                        0,
		"muros_had_dbsync_ready":                         0,
		"muros_had_dbsync_failed_paths":                  0,
		"muros_had_dbsync_conflicts":                     0,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("metrics (-want +got):\n%s", d)
	}
}

// syncTokens returns a minter of fresh sync-scope tokens from a to b: the
// server accepts each only once, as the node mints one per request.
func syncTokens(t *testing.T, auth peerlink.AuthConfig) func() string {
	return func() string {
		tok, err := peerlink.MintToken(auth, "a", "b", peerlink.ScopeSync, time.Minute, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
}
