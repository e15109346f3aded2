package daemon_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// waitFile waits until path holds want.
func waitFile(t *testing.T, path string, want []byte, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := os.ReadFile(path)
		if err == nil && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %q (err %v), want %q after %v", path, truncate(got), err, truncate(want), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// healthGet calls GET /api/health on the peer listener of `to` from inside
// the namespace `from`, with the given Authorization header value.
func healthGet(t *testing.T, from *lab.Netns, to string, auth string) (int, map[string]any) {
	t.Helper()
	tr := &http.Transport{
		// The operator's curl -k: the token authenticates, not the CA.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := from.Do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(to, "7443")+"/api/health", nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return resp.StatusCode, m
}

func TestDBSyncThroughTheDaemon(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	// No preemption, so that this test sees the plain replication both ways;
	// preemption held until the returning node has the master's DB is
	// dbready_test.go's subject.
	n1, n2 := dbSyncPair(t, p, hatest.NodeOptions{NoPreempt: true})
	db1, kea1 := hatest.DBPaths(p.FW1)
	db2, kea2 := hatest.DBPaths(p.FW2)

	// A change on the master appears on the backup.
	cfg := []byte("zone lan { iface lan0 }\n")
	if err := os.WriteFile(filepath.Join(db1, "rules.conf"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(db2, "rules.conf"), cfg, 5*time.Second)

	// Kea's lease file grows line by line and arrives line by line.
	lease := filepath.Join(kea1, "kea-leases4.csv")
	var content []byte
	for i := range 5 {
		line := fmt.Sprintf("10.10.0.%d,00:11:22:33:44:%02x,,3600,%d,1,0,0,host%d\n", 50+i, i, 1700000000+i, i)
		content = append(content, line...)
		f, err := os.OpenFile(lease, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(line)
		f.Close()
		waitFile(t, filepath.Join(kea2, "kea-leases4.csv"), content, 5*time.Second)
	}

	// The health endpoint: 401 without a token, the cluster view with one.
	if code, _ := healthGet(t, p.FW1, p.FW2Addrs.Sync.Addr().String(), ""); code != http.StatusUnauthorized {
		t.Errorf("health without token: %d, want 401", code)
	}
	if code, _ := healthGet(t, p.FW1, p.FW2Addrs.Sync.Addr().String(), "Bearer not.a.token"); code != http.StatusUnauthorized {
		t.Errorf("health with a bad token: %d, want 401", code)
	}
	tok, err := exec.Command(binary, "token", "--config", n1.ConfigPath).Output()
	if err != nil {
		t.Fatalf("muros-had token: %v", err)
	}
	code, h := healthGet(t, p.FW1, p.FW2Addrs.Sync.Addr().String(), "Bearer "+strings.TrimSpace(string(tok)))
	if code != http.StatusOK {
		t.Fatalf("health with token: %d", code)
	}
	if vr, ok := h["vrrp"].(map[string]any); !ok || vr["state"] != "BACKUP" {
		t.Errorf("health of the backup: vrrp = %v", h["vrrp"])
	}
	if _, ok := h["db"]; !ok {
		t.Errorf("health has no db part: %v", h)
	}

	// Crash the master: the new master's changes flow the other way once the
	// old one is back (as a backup).
	if err := n1.Crash(p); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 3*time.Second)
	cfg2 := []byte("zone lan { iface lan0 } # edited on fw2\n")
	if err := os.WriteFile(filepath.Join(db2, "rules.conf"), cfg2, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.RestoreNode(p.FW1); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(binary); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "BACKUP", 5*time.Second)
	waitFile(t, filepath.Join(db1, "rules.conf"), cfg2, 10*time.Second)
	st, err := n2.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new master's db status: %v", st.DB)
}
