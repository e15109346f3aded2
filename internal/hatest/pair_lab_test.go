package hatest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/peerlink"
)

// pairPort is muros-had pair's default port (cmd/muros-had).
const pairPort = 7444

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pairProc is `muros-had pair` running in a namespace.
type pairProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	err            error
}

func startPair(t *testing.T, ns *lab.Netns, bin, cfg, stdin string, args ...string) *pairProc {
	t.Helper()
	p := &pairProc{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = ns.Command(bin, append([]string{"pair", "--config", cfg}, args...)...)
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start muros-had pair in %s: %v", ns, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	return p
}

// wait waits for the exit (bounded: a hung pairing fails the test) and
// returns the exit code.
func (p *pairProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("muros-had pair did not exit:\n%s\n%s", p.stdout, p.stderr)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("muros-had pair: %v", p.err)
	return -1
}

var codeLine = regexp.MustCompile(`muros-had pair --code (\S+)`)

// code waits for the listener to show its code.
func (p *pairProc) code(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := codeLine.FindStringSubmatch(p.stdout.String()); m != nil && strings.Contains(p.stdout.String(), "Waiting on") {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("the listener exited before showing a code:\n%s\n%s", p.stdout, p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no code shown:\n%s", p.stdout)
	return ""
}

// runPairIn runs a joiner to its end and returns its exit code and output.
func runPairIn(t *testing.T, ns *lab.Netns, bin, cfg, stdin string, args ...string) (int, string) {
	t.Helper()
	p := startPair(t, ns, bin, cfg, stdin, args...)
	code := p.wait(t)
	return code, p.stdout.String() + p.stderr.String()
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return string(b)
}

// joinerPayload is the bytes the joiner sent to the listener's port in a
// capture, in sequence order: a recording of its side of the exchange.
func joinerPayload(t *testing.T, pcap string, port layers.TCPPort) []byte {
	t.Helper()
	frames, err := lab.ReadPcap(pcap)
	if err != nil {
		t.Fatal(err)
	}
	segs := map[uint32][]byte{}
	for _, f := range frames {
		pkt := gopacket.NewPacket(f.Data, layers.LayerTypeEthernet, gopacket.Default)
		tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || tcp.DstPort != port || len(tcp.Payload) == 0 {
			continue
		}
		segs[tcp.Seq] = append([]byte(nil), tcp.Payload...)
	}
	seqs := make([]uint32, 0, len(segs))
	for s := range segs {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	var out []byte
	for _, s := range seqs {
		out = append(out, segs[s]...)
	}
	return out
}

func dbsyncBlock(fw *lab.Netns) string {
	db, kea := hatest.DBPaths(fw)
	return fmt.Sprintf("dbsync:\n  enabled: true\n  listen: \":7443\"\n  peer_port: 7443\n  paths: [%s, %s]\n", db, kea)
}

// TestPairLab pairs two firewalls with `muros-had pair` run in each
// namespace as a real process, after refusing a wrong code and a wrong box
// answering at the peer address, then refuses a replay of the recorded
// exchange, the used code and an expired one, and finally runs the pair
// with DB sync on the written secret and pins (no pin in either YAML): a
// file written on the master arrives on the backup.
func TestPairLab(t *testing.T) {
	bin, err := hatest.BuildBinary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := lab.NewPairT(t, lab.Options{})
	type node struct {
		fw       *lab.Netns
		cfg      string
		fp       string
		pin, jwt string
		opts     hatest.NodeOptions
	}
	nodes := []*node{{fw: p.FW1}, {fw: p.FW2}}
	for i, n := range nodes {
		n.opts = hatest.NodeOptions{Role: []string{"master", "backup"}[i], Extra: dbsyncBlock(n.fw)}
		n.cfg = filepath.Join(n.fw.Dir, "muros-had.yaml")
		if err := os.WriteFile(n.cfg, []byte(hatest.Config(p, n.fw, n.opts)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := n.fw.Run(bin, "fingerprint", "--config", n.cfg)
		if err != nil {
			t.Fatal(err)
		}
		n.fp = strings.TrimSpace(out)
		n.pin = filepath.Join(n.fw.Dir, "state", "tls", "peer.sha256")
		n.jwt = filepath.Join(n.fw.Dir, "state", "jwt.secret")
	}
	fw1, fw2 := nodes[0], nodes[1]
	nothingWritten := func(t *testing.T) {
		t.Helper()
		for _, n := range nodes {
			if readFile(t, n.pin) != "" || readFile(t, n.jwt) != "" {
				t.Fatalf("%s: a refused pairing wrote files", n.fw)
			}
		}
	}

	listener := startPair(t, fw1.fw, bin, fw1.cfg, "yes\n")
	code := listener.code(t)

	t.Run("wrong code", func(t *testing.T) {
		wrong, _ := peerlink.NewPairCode(rand.Reader)
		rc, out := runPairIn(t, fw2.fw, bin, fw2.cfg, "yes\n", "--code", wrong.String())
		if rc != 1 || !strings.Contains(out, peerlink.PairWrongCode) {
			t.Fatalf("exit %d, want 1 with %s:\n%s", rc, peerlink.PairWrongCode, out)
		}
		nothingWritten(t)
	})

	t.Run("wrong box at the peer address", func(t *testing.T) {
		// A third box, on the LAN, answers at fw1's sync address for fw2
		// (a host route through fw2's LAN port), with its own certificate
		// and its own pairing under way.
		imp := lab.NewNetnsT(t, "impostor")
		if _, err := p.LANBridge.Connect(imp, "eth0", ""); err != nil {
			t.Fatal(err)
		}
		peerAddr, fw2Addr := p.FW1Addrs.Sync.Addr(), p.FW2Addrs.Sync.Addr()
		imp.MustRun(t, "ip", "addr", "add", peerAddr.String()+"/32", "dev", "eth0")
		imp.MustRun(t, "ip", "route", "add", fw2Addr.String()+"/32", "dev", "eth0")
		fw2.fw.MustRun(t, "ip", "route", "add", peerAddr.String()+"/32", "dev", lab.IfLAN, "src", fw2Addr.String())
		defer fw2.fw.MustRun(t, "ip", "route", "del", peerAddr.String()+"/32", "dev", lab.IfLAN)
		impCfg := filepath.Join(imp.Dir, "muros-had.yaml")
		if err := os.WriteFile(impCfg, []byte(hatest.Config(p, imp, hatest.NodeOptions{Role: "master", Extra: dbsyncBlock(imp)})), 0o600); err != nil {
			t.Fatal(err)
		}
		impListener := startPair(t, imp, bin, impCfg, "yes\n")
		impListener.code(t)

		// fw2's operator types fw1's code: the box it reaches does not know it.
		rc, out := runPairIn(t, fw2.fw, bin, fw2.cfg, "yes\n", "--code", code)
		if rc != 1 || !strings.Contains(out, peerlink.PairWrongCode) {
			t.Fatalf("exit %d, want 1 with %s:\n%s", rc, peerlink.PairWrongCode, out)
		}
		// Scripted with fw1's fingerprint: refused at the certificate,
		// before any proof leaves. (After the impostor's backoff.)
		time.Sleep(1100 * time.Millisecond)
		rc, out = runPairIn(t, fw2.fw, bin, fw2.cfg, "", "--code", code, "--yes", "--peer-fingerprint", fw1.fp)
		if rc != 1 || !strings.Contains(out, peerlink.PairFingerprint) {
			t.Fatalf("exit %d, want 1 with %s:\n%s", rc, peerlink.PairFingerprint, out)
		}
		nothingWritten(t)
	})

	// The listener waits a second after a failed attempt before it takes
	// the next one (PairAttempts.Backoff).
	time.Sleep(1100 * time.Millisecond)
	capture, err := fw1.fw.StartCapture(lab.IfSync)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("pairing", func(t *testing.T) {
		rc, out := runPairIn(t, fw2.fw, bin, fw2.cfg, "yes\n", "--code", code)
		if rc != 0 {
			t.Fatalf("joiner exit %d:\n%s", rc, out)
		}
		if rc := listener.wait(t); rc != 0 {
			t.Fatalf("listener exit %d:\n%s\n%s", rc, listener.stdout, listener.stderr)
		}
		// Both screens show both certificates.
		for _, screen := range []string{out, listener.stdout.String()} {
			for _, fp := range []string{fw1.fp, fw2.fp} {
				if !strings.Contains(screen, peerlink.FormatFingerprint(fp)) {
					t.Errorf("a screen does not show %s:\n%s", fp, screen)
				}
			}
		}
		if got := strings.TrimSpace(readFile(t, fw1.pin)); got != fw2.fp {
			t.Errorf("fw1 pins %q, want fw2's %s", got, fw2.fp)
		}
		if got := strings.TrimSpace(readFile(t, fw2.pin)); got != fw1.fp {
			t.Errorf("fw2 pins %q, want fw1's %s", got, fw1.fp)
		}
		s1, s2 := readFile(t, fw1.jwt), readFile(t, fw2.jwt)
		if len(strings.TrimSpace(s1)) != 64 || s1 != s2 {
			t.Errorf("JWT secrets %q and %q: want the same 64 hex digits", s1, s2)
		}
		for _, n := range nodes {
			if fi, err := os.Stat(n.jwt); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: JWT secret mode %v (%v), want 0600", n.fw, fi.Mode().Perm(), err)
			}
		}
	})
	pcap, _, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	secret := readFile(t, fw1.jwt)

	t.Run("replay and used code", func(t *testing.T) {
		recorded := joinerPayload(t, pcap, pairPort)
		if len(recorded) < 100 {
			t.Fatalf("recorded %d bytes of the joiner's side", len(recorded))
		}
		l2 := startPair(t, fw1.fw, bin, fw1.cfg, "yes\n", "--timeout", "30s")
		l2.code(t)
		// The recording, sent again from fw2's address to the new listener.
		var answer []byte
		err := fw2.fw.Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(p.FW1Addrs.Sync.Addr().String(), fmt.Sprint(pairPort)), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(recorded)
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				answer = append(answer, buf[:n]...)
				if err != nil {
					return nil
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // the listener's backoff after the failed attempt
		// The code of the pairing above, typed again.
		rc, out := runPairIn(t, fw2.fw, bin, fw2.cfg, "yes\n", "--code", code)
		if rc != 1 || !strings.Contains(out, peerlink.PairWrongCode) {
			t.Fatalf("used code: exit %d, want 1 with %s:\n%s", rc, peerlink.PairWrongCode, out)
		}
		l2.cmd.Process.Signal(os.Interrupt)
		l2.cmd.Process.Kill()
		<-l2.done
		if !strings.Contains(l2.stderr.String(), peerlink.PairHandshake) {
			t.Errorf("the listener did not refuse the replay at the TLS handshake:\n%s", l2.stderr)
		}
		if readFile(t, fw1.jwt) != secret || readFile(t, fw2.jwt) != secret {
			t.Error("the replay or the used code changed the secret")
		}
	})

	t.Run("expired code", func(t *testing.T) {
		l3 := startPair(t, fw1.fw, bin, fw1.cfg, "yes\n", "--timeout", "1s")
		c3 := l3.code(t)
		if rc := l3.wait(t); rc != 1 || !strings.Contains(l3.stderr.String(), peerlink.PairCodeExpired) {
			t.Fatalf("listener exit %d, want 1 with %s:\n%s", rc, peerlink.PairCodeExpired, l3.stderr)
		}
		rc, out := runPairIn(t, fw2.fw, bin, fw2.cfg, "yes\n", "--code", c3)
		if rc != 1 || !strings.Contains(out, "no pairing listener") {
			t.Fatalf("joiner with the expired code: exit %d:\n%s", rc, out)
		}
		if readFile(t, fw1.jwt) != secret || readFile(t, fw2.jwt) != secret {
			t.Error("the expired code changed the secret")
		}
	})

	t.Run("DB sync on the pairing", func(t *testing.T) {
		var daemons []*hatest.Node
		for _, n := range nodes {
			d := &hatest.Node{NS: n.fw, ConfigPath: n.cfg, StatusSock: filepath.Join(n.fw.Dir, "run", "status.sock"), Options: n.opts}
			if err := d.Start(bin); err != nil {
				t.Fatal(err)
			}
			defer d.Stop()
			daemons = append(daemons, d)
		}
		if err := daemons[0].WaitState("MASTER", 15*time.Second); err != nil {
			t.Fatal(err)
		}
		db1, _ := hatest.DBPaths(fw1.fw)
		db2, _ := hatest.DBPaths(fw2.fw)
		if err := os.WriteFile(filepath.Join(db1, "paired.txt"), []byte("written on fw1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for readFile(t, filepath.Join(db2, "paired.txt")) != "written on fw1\n" {
			select {
			case <-ctx.Done():
				st, _ := daemons[1].Status(context.Background())
				t.Fatalf("the file did not reach fw2 over DB sync; fw2's DB status: %+v", st.DB)
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}
