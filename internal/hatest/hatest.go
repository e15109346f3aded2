// Package hatest runs muros-had (and keepalived, as a reference peer) on the
// firewalls of a lab.Pair: it builds the binary, writes each node's
// configuration into its namespace's private directory, starts the daemon
// inside the namespace and reads its status. Integration tests, the demo and
// the benchmarks share it.
package hatest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
	"go.uber.org/goleak"
)

// BuildBinary builds cmd/muros-had into dir and returns its path.
func BuildBinary(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "muros-had")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/muros-had")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, b)
	}
	return out, nil
}

func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the muros-had module")
	}
	return filepath.Dir(mod), nil
}

// DefaultPassword is the cluster password of lab nodes, muros-had and
// keepalived alike: strong enough for config's checks (12+ characters,
// 16+ advised), and its first 8 bytes, all keepalived-ah uses, are
// keepalived's auth_pass.
const DefaultPassword = "lab-secret-Qz4m-Xv8k-Rw2p"

// NodeOptions choose a node's configuration.
type NodeOptions struct {
	Role     string        // master | backup
	Password string        // default DefaultPassword
	Auth     string        // ah (default) | keepalived-ah | none
	Interval time.Duration // default 100ms
	// NoPreempt sets preempt: false.
	NoPreempt    bool
	PreemptDelay time.Duration
	// IPv6 adds the IPv6 VIPs of the pair (needs lab.Options.IPv6).
	IPv6 bool
	// Extra is YAML appended to the generated file (top-level keys).
	Extra string
	// StatusHTTP sets status.http, the page's TCP listener (IP:port in
	// the node's namespace).
	StatusHTTP string
	// LivenessDetect is liveness.detect; 0 means LabLivenessDetect.
	// Benchmarks and the demo set config.DefaultLivenessDetect.
	LivenessDetect time.Duration
}

// LabLivenessDetect is the peer-liveness detection time of the lab tests:
// they run dozens of real-time daemons side by side on two cores, where a
// live peer can go unscheduled for more than the product's 3 ms and the
// tests about something else would see it declared dead. The verdicts'
// logic is the same at any detection time; the benchmarks measure the
// default's speed and its false takeovers.
const LabLivenessDetect = 25 * time.Millisecond

// Node is a muros-had daemon running in a firewall namespace.
type Node struct {
	NS         *lab.Netns
	Proc       *lab.Process
	ConfigPath string
	StatusSock string
	Options    NodeOptions
}

// Config returns the YAML configuration of fw in p.
func Config(p *lab.Pair, fw *lab.Netns, o NodeOptions) string {
	if o.Password == "" {
		o.Password = DefaultPassword
	}
	if o.Auth == "" {
		o.Auth = "ah"
	}
	if o.Interval == 0 {
		o.Interval = 100 * time.Millisecond
	}
	peer := p.FW2Addrs.Sync.Addr()
	if fw == p.FW2 {
		peer = p.FW1Addrs.Sync.Addr()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "role: %s\npassword: %q\nsync_interface: %s\npeer: %s\n", o.Role, o.Password, lab.IfSync, peer)
	fmt.Fprintf(&b, "vips:\n  - interface: %s\n    address: %s\n  - interface: %s\n    address: %s\n", lab.IfWAN, p.WANVIP, lab.IfLAN, p.LANVIP)
	if o.IPv6 {
		fmt.Fprintf(&b, "  - interface: %s\n    address: %s\n  - interface: %s\n    address: %s\n", lab.IfWAN, p.WANVIP6, lab.IfLAN, p.LANVIP6)
	}
	fmt.Fprintf(&b, "advert_interval: %s\nauth: %s\n", durationYAML(o.Interval), o.Auth)
	if o.NoPreempt {
		b.WriteString("preempt: false\n")
	}
	if o.PreemptDelay > 0 {
		fmt.Fprintf(&b, "preempt_delay: %s\n", durationYAML(o.PreemptDelay))
	}
	fmt.Fprintf(&b, "state_dir: %s\nrun_dir: %s\n", filepath.Join(fw.Dir, "state"), filepath.Join(fw.Dir, "run"))
	fmt.Fprintf(&b, "status:\n  listen: %s\n", statusSock(fw))
	if o.StatusHTTP != "" {
		fmt.Fprintf(&b, "  http: %s\n", o.StatusHTTP)
	}
	b.WriteString("metrics:\n  enabled: false\n")
	if !strings.Contains(o.Extra, "conntrack:") {
		b.WriteString("conntrack:\n  enabled: false\n")
	}
	if !strings.Contains(o.Extra, "dbsync:") {
		b.WriteString("dbsync:\n  enabled: false\n")
	}
	if !strings.Contains(o.Extra, "liveness:") && p.FW1Addrs.LAN.IsValid() {
		// The second path: the other firewall's LAN address, off the
		// sync cable (peer is its sync address).
		other := p.FW2Addrs.LAN.Addr()
		if fw == p.FW2 {
			other = p.FW1Addrs.LAN.Addr()
		}
		detect := o.LivenessDetect
		if detect == 0 {
			detect = LabLivenessDetect
		}
		fmt.Fprintf(&b, "liveness:\n  peer_address: %s\n  detect: %s\n", other, durationYAML(detect))
	}
	b.WriteString(o.Extra)
	return b.String()
}

func durationYAML(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

func statusSock(fw *lab.Netns) string { return filepath.Join(fw.Dir, "run", "status.sock") }

// StartNode writes fw's configuration and starts muros-had in fw.
func StartNode(bin string, p *lab.Pair, fw *lab.Netns, o NodeOptions) (*Node, error) {
	n := &Node{NS: fw, ConfigPath: filepath.Join(fw.Dir, "muros-had.yaml"), StatusSock: statusSock(fw), Options: o}
	if err := os.WriteFile(n.ConfigPath, []byte(Config(p, fw, o)), 0o600); err != nil {
		return nil, fmt.Errorf("hatest: writing config: %w", err)
	}
	if err := n.Start(bin); err != nil {
		return nil, err
	}
	return n, nil
}

// Start (re)starts the daemon with the node's configuration file.
func (n *Node) Start(bin string) error {
	_ = os.Remove(n.StatusSock)
	proc, err := n.NS.Start(bin, "run", "--config", n.ConfigPath, "--log-level", "debug")
	if err != nil {
		return fmt.Errorf("hatest: starting muros-had in %s: %w", n.NS, err)
	}
	n.Proc = proc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, err := n.Status(ctx); err == nil {
			return nil
		}
		if proc.Exited() {
			return fmt.Errorf("hatest: muros-had in %s exited at start:\n%s", n.NS, proc.Log())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hatest: muros-had in %s never answered on %s:\n%s", n.NS, n.StatusSock, proc.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Status reads the node's status over its status socket.
func (n *Node) Status(ctx context.Context) (status.Status, error) {
	st, _, err := status.Fetch(ctx, n.StatusSock)
	return st, err
}

// WaitState waits until the node's group state is state (MASTER, BACKUP,
// FAULT) or timeout passes.
func (n *Node) WaitState(state string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := "unknown"
	for {
		st, err := n.Status(ctx)
		if err == nil {
			last = st.State
			if st.State == state {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hatest: %s stayed %s, want %s after %s", n.NS, last, state, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// HasAddr reports whether addr is configured on an interface of ns.
func HasAddr(ns *lab.Netns, addr netip.Addr) (bool, error) {
	out, err := ns.Run("ip", "-o", "addr", "show")
	if err != nil {
		return false, err
	}
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr() == addr {
			return true, nil
		}
	}
	return false, nil
}

// Stop sends SIGTERM (graceful stop) and waits for the exit.
func (n *Node) Stop() error { return n.Proc.Stop(5 * time.Second) }

// Kill ends the daemon with SIGKILL: no priority 0, VIPs left behind.
func (n *Node) Kill() error { return n.Proc.Kill() }

// Crash models a node that is gone: the daemon is frozen first (SIGSTOP), so
// it cannot see its own links go down and leave gracefully through FAULT with
// priority 0; then all of its links go down at once and it is killed.
func (n *Node) Crash(p *lab.Pair) error {
	if err := n.Proc.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("hatest: freezing %s: %w", n.NS, err)
	}
	if err := p.CrashNode(n.NS); err != nil {
		return err
	}
	return n.Kill()
}

// MainWithBinary is the TestMain of a package whose lab tests run the
// daemon: it builds muros-had once into a temporary directory, stores the
// path in *bin, runs the tests, and fails the run on leaked goroutines.
// It returns the exit code.
func MainWithBinary(m *testing.M, bin *string) int {
	if os.Geteuid() != 0 {
		// Lab tests need root and fail without it; the package's tests
		// that need neither (the daemon's loop tests) run as any user.
		return leakCheck(m.Run())
	}
	dir, err := os.MkdirTemp("", "muros-had-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return leakCheck(m.Run())
}

// leakCheck fails a passing run that left goroutines behind.
func leakCheck(code int) int {
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
