package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/vip"
	"github.com/muros/muros-had/vrrp"
)

// TestRunRefusesUnpersistableEpoch: Run with auth ah fails before it
// touches the network when the state directory cannot hold the epoch, and
// when the epoch file is corrupt. Every adapter is a fake that fails the
// test if called: before, the run went on (the write failure and the
// corrupt file were warnings) and reached them.
func TestRunRefusesUnpersistableEpoch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, stateDir string)
	}{
		{"immutable state dir", func(t *testing.T, dir string) { immutable(t, dir) }},
		{"corrupt epoch file", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "ah-epoch"), []byte("\x00\x00\x00\x00"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			stateDir := filepath.Join(base, "state")
			if err := os.Mkdir(stateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(base, "ha.yaml")
			yaml := "role: master\npassword: pA7-kx2Q-9mZr-Lw4e-Tb6v\nsync_interface: eth2\npeer: 10.0.0.9\n" +
				"auth: ah\nvips:\n  - interface: eth0\n    address: 10.0.0.1/24\n" +
				"state_dir: " + stateDir + "\nrun_dir: " + filepath.Join(base, "run") + "\n" +
				"metrics:\n  enabled: false\nconntrack:\n  enabled: false\ndbsync:\n  enabled: false\n"
			if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(p)
			if err != nil {
				t.Fatal(err)
			}
			tc.prepare(t, stateDir)
			touched := func(what string) error {
				t.Errorf("Run reached the %s adapter", what)
				return errors.New("fake adapter")
			}
			d, err := New(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Adapters: Adapters{
				SyncLink: func(context.Context, string, vrrp.Family) (netip.Addr, int, error) {
					return netip.Addr{}, 0, touched("sync link")
				},
				OpenConn: func(string, netip.Addr) (advertConn, error) { return nil, touched("socket") },
				VIPs:     func(vip.Config) (vipManager, error) { return nil, touched("VIP") },
				Watch:    func(vip.MonitorConfig) (linkWatcher, error) { return nil, touched("link monitor") },
				Conntrack: func(*config.Config, *Daemon) (conntrackSync, error) {
					return nil, touched("conntrack")
				},
				DB:      func(*config.Config, *Daemon) (dbReplica, net.Listener, error) { return nil, nil, touched("DB") },
				Surface: func(*Daemon, context.Context) (closers, error) { return nil, touched("surface") },
			}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := d.Run(ctx); !errors.Is(err, errEpochFile) {
				t.Fatalf("Run = %v, want a refusal naming the AH epoch file", err)
			}
		})
	}
}
