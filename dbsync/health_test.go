package dbsync

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/peerlink"
)

// pipeListener is a net.Listener fed by in-memory connections: the client
// and the server talk over TLS without any socket.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case l.conns <- s:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// healthPair builds node a (the client) and node b (served on ln); b's
// token secret may differ from a's.
func healthPair(t *testing.T, ln *pipeListener, secretB string) (a, b *Node) {
	t.Helper()
	base := t.TempDir()
	idA, err := EnsureIdentity(filepath.Join(base, "a"), "a")
	if err != nil {
		t.Fatal(err)
	}
	idB, err := EnsureIdentity(filepath.Join(base, "b"), "b")
	if err != nil {
		t.Fatal(err)
	}
	const secretA = "cluster-secret-cluster-secret-32"
	a, err = New(Config{
		NodeID: "a", PeerID: "b", PeerURL: "https://192.0.2.2:7443", PeerCertSHA256: idB.Fingerprint,
		StateDir: filepath.Join(base, "a"), Auth: peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte(secretA)},
		Paths: []Path{{Name: "db", Local: filepath.Join(base, "dba"), Dir: true}}, Dial: ln.dial,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err = New(Config{
		NodeID: "b", PeerID: "a", PeerURL: "https://192.0.2.1:7443", PeerCertSHA256: idA.Fingerprint,
		StateDir: filepath.Join(base, "b"), Auth: peerlink.AuthConfig{Method: peerlink.MethodHS256, Secret: []byte(secretB)},
		Paths: []Path{{Name: "db", Local: filepath.Join(base, "dbb"), Dir: true}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mountHealth(b)
	return a, b
}

func TestPeerHealth(t *testing.T) {
	tests := []struct {
		name    string
		secretB string
		want    map[string]any // selected keys of the document
		wantErr string
	}{
		{name: "answered", secretB: "cluster-secret-cluster-secret-32",
			want: map[string]any{"node": "b", "role": "backup", "vrrp": map[string]any{"state": "MASTER"}}},
		{name: "token refused", secretB: "another-secret-another-secret-32", wantErr: "401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := newPipeListener()
			a, b := healthPair(t, ln, tt.secretB)
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- b.Serve(ctx, ln) }()
			defer func() {
				cancel()
				<-served
				a.link.CloseIdleConnections()
			}()
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			body, err := a.PeerHealth(rctx)
			if tt.wantErr != "" {
				var se *statusError
				if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("PeerHealth: %v, want a %s status error", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			got := map[string]any{}
			for k := range tt.want {
				got[k] = doc[k]
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("health document (-want +got):\n%s", d)
			}
			if st := a.Status(); st.Peer.LastContact != nil {
				t.Errorf("PeerHealth changed the replication's peer view: %+v", st.Peer)
			}
		})
	}
}
