package daemon_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// restartKeepingSocket starts n's daemon again without removing anything the
// previous run left (hatest's Start deletes the status socket first; a
// crashed service restarted by systemd gets no such help).
func restartKeepingSocket(t *testing.T, n *hatest.Node) {
	t.Helper()
	proc, err := n.NS.Start(binary, "run", "--config", n.ConfigPath, "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	n.Proc = proc
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := n.Status(ctx)
		cancel()
		if err == nil {
			return
		}
		if proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s: restarted daemon never answered on %s (%v):\n%s", n.NS, n.StatusSock, err, tail(proc.Log(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readEpoch(t *testing.T, n *hatest.Node) uint32 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.NS.Dir, "state", "ah-epoch"))
	if err != nil {
		t.Fatalf("%s: AH epoch file: %v", n.NS, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		t.Fatalf("%s: AH epoch file %q: %v", n.NS, b, err)
	}
	return uint32(v)
}

// TestRestartAfterCrashRecovers kills the master with SIGKILL while it holds
// the VIPs (on plain interfaces, or on virtual-MAC macvlans) and starts it
// again: the leftovers (VIPs, macvlans, status socket) are cleaned up before
// the election, the AH epoch continues from the persisted file, and the peer
// accepts the restarted node's adverts at once: it yields to it with no
// replay rejection.
func TestRestartAfterCrashRecovers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra string
	}{
		{"plain", ""},
		{"vmac", "vmac: true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := lab.NewPairT(t, lab.Options{ExtraRules: "add rule inet muros_lab forward_extra iifname \"vmac4.11\" ct state new accept\n"})
			o := hatest.NodeOptions{Extra: tc.extra}
			n1, n2 := pairNodes(t, p, o, o)
			mustOwn(t, p, p.FW1)
			if err := n1.Kill(); err != nil {
				t.Fatal(err)
			}
			mustState(t, n2, "MASTER", 3*time.Second)

			// What the dead master left behind.
			for _, v := range []string{p.LANVIP.Addr().String(), p.WANVIP.Addr().String()} {
				if has, _ := hatest.HasAddr(p.FW1, netipMust(v)); !has {
					t.Fatalf("SIGKILL did not leave %s on fw1: the test would prove nothing", v)
				}
			}
			if _, err := os.Stat(n1.StatusSock); err != nil {
				t.Fatalf("SIGKILL did not leave the status socket: %v", err)
			}
			if c, err := net.Dial("unix", n1.StatusSock); err == nil {
				c.Close()
				t.Fatal("stale status socket still accepts connections")
			}
			// An epoch far above the clock: only a restart that reads the
			// file starts above it.
			epoch := readEpoch(t, n1) + 1000
			if err := os.WriteFile(filepath.Join(n1.NS.Dir, "state", "ah-epoch"), []byte(strconv.FormatUint(uint64(epoch), 10)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}

			restartKeepingSocket(t, n1)
			mustState(t, n1, "MASTER", 3*time.Second)
			mustState(t, n2, "BACKUP", 3*time.Second)
			mustOwn(t, p, p.FW1)

			log := n1.Proc.Log()
			removed, started := strings.Index(log, "removed stale VIP left by a previous run"), strings.Index(log, "msg=starting")
			if removed < 0 || started < 0 || removed > started {
				t.Errorf("restart did not remove the stale VIPs before the election:\n%s", tail(log, 30))
			}
			for _, v := range []string{p.LANVIP.String(), p.WANVIP.String()} {
				if !strings.Contains(log, "prefix="+v) {
					t.Errorf("restart log does not name the stale VIP %s:\n%s", v, tail(log, 30))
				}
			}
			if tc.extra != "" {
				for _, ifn := range []string{"vmac4.10", "vmac4.11"} {
					if !strings.Contains(log, "interface="+ifn) {
						t.Errorf("restart log does not name the stale %s:\n%s", ifn, tail(log, 30))
					}
				}
				out := p.FW2.MustRun(t, "ip", "-o", "link", "show")
				if strings.Contains(out, "vmac4.") {
					t.Errorf("fw2 kept its virtual-MAC interfaces after yielding:\n%s", out)
				}
			}
			if got := readEpoch(t, n1); got != epoch+1 {
				t.Errorf("epoch after restart = %d, want the persisted %d + 1", got, epoch)
			}
			st2 := mustStatus(t, n2)
			if n := st2.Adverts.Rejected["replay"]; n != 0 {
				t.Errorf("peer rejected %d adverts of the restarted node as replays (all: %v)", n, st2.Adverts.Rejected)
			}
			if st2.Peer.Role != "master" || st2.Peer.Address != p.FW1Addrs.Sync.Addr().String() {
				t.Errorf("peer's view after the restart = %+v, want master at %s", st2.Peer, p.FW1Addrs.Sync.Addr())
			}
			res := probe(t, p, 300*time.Millisecond, nil)
			if res.Received == 0 {
				t.Errorf("client cannot reach the server through the recovered master: %+v", res)
			}
		})
	}
}
