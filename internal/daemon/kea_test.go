package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// The Kea case of "Services that follow the role" (README), end to end with
// the real programs: Kea (kea-dhcp4) serves the LAN from the master only,
// started by a master hook and stopped by before_release hooks, its lease
// file in a directory DB sync replicates; dhclient (isc-dhcp-client) runs in
// two client namespaces on the LAN bridge. Kea reads its lease file when it
// starts, so the new master's Kea, started after the takeover, knows the
// leases the old master gave.

// keaPool is the range Kea hands out. Kea's allocator walks a pool from its
// first address, so a Kea that does not know a lease offers the same first
// address again: the duplicate the replicated lease file prevents.
const keaPool = "10.10.0.50 - 10.10.0.59"

// keaRun is fw's directory for Kea's pid and lock files and its log:
// local to the node, outside the replicated directories.
func keaRun(fw *lab.Netns) string { return filepath.Join(fw.Dir, "kea-run") }

// keaLeaseFile is Kea's lease file on fw: in the replicated kea directory,
// or, for the control, in a local one.
func keaLeaseFile(fw *lab.Netns, replicated bool) string {
	if replicated {
		_, kea := hatest.DBPaths(fw)
		return filepath.Join(kea, "kea-leases4.csv")
	}
	return filepath.Join(fw.Dir, "kea-local", "kea-leases4.csv")
}

// writeKea writes fw's Kea configuration and the start and stop scripts the
// hooks run, and returns the hooks block of fw's muros-had configuration.
func writeKea(t *testing.T, p *lab.Pair, fw *lab.Netns, replicated bool) string {
	t.Helper()
	run, lease := keaRun(fw), keaLeaseFile(fw, replicated)
	for _, d := range []string{run, filepath.Dir(lease)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(run, "kea-dhcp4.json")
	// lfc-interval 0: no lease file cleanup process rewriting the file.
	kea := fmt.Sprintf(`{"Dhcp4": {
  "interfaces-config": {"interfaces": [%q]},
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "valid-lifetime": 3600, "renew-timer": 900, "rebind-timer": 1800,
  "subnet4": [{"id": 1, "subnet": %q, "pools": [{"pool": %q}],
    "option-data": [{"name": "routers", "data": %q}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout", "flush": true}], "severity": "INFO"}]
}}
`, lab.IfLAN, lease, p.LANPrefix.String(), keaPool, p.LANVIP.Addr().String())
	// Kea detached (a session of its own: the hook's process group is killed
	// when a later transition supersedes it), output to a file (a hook's
	// output is the daemon's: Kea must not hold it open).
	start := fmt.Sprintf(`#!/bin/sh
set -e
export KEA_PIDFILE_DIR=%[1]s KEA_LOCKFILE_DIR=%[1]s
setsid /usr/sbin/kea-dhcp4 -c %[2]s </dev/null >>%[1]s/kea.log 2>&1 &
echo $! >%[1]s/kea.pid
`, run, conf)
	// A process of a dead hook shell is reparented; where nobody reaps it
	// (a container's init) it stays a zombie: gone all the same.
	stop := fmt.Sprintf(`#!/bin/sh
pid=$(cat %[1]s/kea.pid 2>/dev/null) || exit 0
rm -f %[1]s/kea.pid
kill "$pid" 2>/dev/null || exit 0
while [ -d /proc/"$pid" ] && ! grep -q '^State:.*Z' /proc/"$pid"/status 2>/dev/null; do sleep 0.05; done
`, run)
	for name, content := range map[string]string{"kea-dhcp4.json": kea, "kea-start.sh": start, "kea-stop.sh": stop} {
		if err := os.WriteFile(filepath.Join(run, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	startHook := fmt.Sprintf("    - command: [/bin/sh, %s]\n      timeout: 10s\n", filepath.Join(run, "kea-start.sh"))
	stopHook := fmt.Sprintf("    - command: [/bin/sh, %s]\n      timeout: 10s\n      before_release: true\n", filepath.Join(run, "kea-stop.sh"))
	return "hooks:\n  master:\n" + startHook + "  backup:\n" + stopHook + "  fault:\n" + stopHook + "  stop:\n" + stopHook
}

// keaPid returns the pid of fw's Kea if it runs.
func keaPid(fw *lab.Netns) (int, bool) {
	b, err := os.ReadFile(filepath.Join(keaRun(fw), "kea.pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for l := range strings.Lines(string(st)) {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Name:" && f[1] != "kea-dhcp4" {
			return 0, false
		}
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "State:" && f[1] == "Z" {
			return 0, false
		}
	}
	return pid, true
}

// waitKeaReady waits until fw's Kea runs and has logged that it serves.
func waitKeaReady(t *testing.T, fw *lab.Netns, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, ok := keaPid(fw); ok {
			if b, _ := os.ReadFile(filepath.Join(keaRun(fw), "kea.log")); strings.Contains(string(b), "DHCP4_STARTED") {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(keaRun(fw), "kea.log"))
			t.Fatalf("Kea on %s not serving after %v; its log:\n%s", fw, timeout, tail(string(b), 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mustKeaOnlyOn fails unless Kea runs on fw and not on the other firewall.
func mustKeaOnlyOn(t *testing.T, p *lab.Pair, fw *lab.Netns) {
	t.Helper()
	if _, ok := keaPid(fw); !ok {
		t.Errorf("Kea does not run on %s", fw)
	}
	if pid, ok := keaPid(p.Peer(fw)); ok {
		t.Errorf("Kea still runs on %s (pid %d)", p.Peer(fw), pid)
	}
}

// keaClient is a DHCP client namespace on the LAN bridge with its own
// interface (its own MAC) and dhclient lease file.
type keaClient struct {
	ns   *lab.Netns
	dir  string
	name string
}

func newKeaClient(t *testing.T, p *lab.Pair, name string) *keaClient {
	t.Helper()
	ns := lab.NewNetnsT(t, name)
	if _, err := p.LANBridge.Connect(ns, lab.IfHost, "l"+name); err != nil {
		t.Fatal(err)
	}
	// Retransmit every second or so (dhclient's default starts at 10 s) and
	// give up after timeout; the script does nothing: the address is only
	// read, never configured.
	conf := "timeout 20;\nretry 1;\ninitial-interval 1;\nbackoff-cutoff 1;\n"
	if err := os.WriteFile(filepath.Join(ns.Dir, "dhclient.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return &keaClient{ns: ns, dir: ns.Dir, name: name}
}

var (
	boundRe = regexp.MustCompile(`bound to (\S+)`)
	ackRe   = regexp.MustCompile(`DHCPACK of (\S+) from (\S+)`)
)

// lease runs dhclient once (one attempt, foreground) in the client and
// returns the address it was bound to and the server that acknowledged it.
// The client keeps its lease file: a second call asks for the same address
// again (INIT-REBOOT).
func (c *keaClient) lease(timeout time.Duration) (addr, server netip.Addr, err error) {
	cmd := c.ns.Command("dhclient", "-d", "-v", "-1",
		"-cf", filepath.Join(c.dir, "dhclient.conf"),
		"-lf", filepath.Join(c.dir, "dhclient.leases"),
		"-pf", filepath.Join(c.dir, "dhclient.pid"),
		"-sf", "/bin/true", lab.IfHost)
	out, err := cmd.StderrPipe()
	if err != nil {
		return addr, server, err
	}
	if err := cmd.Start(); err != nil {
		return addr, server, err
	}
	// dhclient -d stays for the renewals once bound: it is killed then (no
	// release: the lease stays the client's), or at the timeout.
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var log strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := sc.Text()
		log.WriteString(l + "\n")
		if m := ackRe.FindStringSubmatch(l); m != nil {
			server, _ = netip.ParseAddr(m[2])
		}
		if m := boundRe.FindStringSubmatch(l); m != nil {
			addr, err = netip.ParseAddr(m[1])
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err == nil && !addr.IsValid() {
		err = fmt.Errorf("dhclient in %s: no lease within %v:\n%s", c.ns, timeout, log.String())
	}
	return addr, server, err
}

// mustLease is lease that fails the test on error or when the
// acknowledgement is not from want (the firewall's LAN address).
func (c *keaClient) mustLease(t *testing.T, want netip.Addr, timeout time.Duration) netip.Addr {
	t.Helper()
	addr, server, err := c.lease(timeout)
	if err != nil {
		t.Fatal(err)
	}
	if server != want {
		t.Fatalf("%s: %s acknowledged by %s, want %s", c.name, addr, server, want)
	}
	return addr
}

// waitLeaseReplicated waits until fw's lease file holds a lease of addr.
func waitLeaseReplicated(t *testing.T, fw *lab.Netns, addr netip.Addr, timeout time.Duration) {
	t.Helper()
	path := keaLeaseFile(fw, true)
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains("\n"+string(b), "\n"+addr.String()+",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no lease of %s after %v:\n%s", path, addr, timeout, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keaPair starts a pair with DB sync whose hooks run Kea on the master,
// waits for Kea on fw1, and returns the nodes and two DHCP clients.
func keaPair(t *testing.T, replicated bool) (*lab.Pair, *hatest.Node, *hatest.Node, *keaClient, *keaClient) {
	t.Helper()
	p := lab.NewPairT(t, lab.Options{})
	o1 := hatest.NodeOptions{Role: "master", NoPreempt: true, Extra: writeKea(t, p, p.FW1, replicated)}
	o2 := hatest.NodeOptions{Role: "backup", NoPreempt: true, Extra: writeKea(t, p, p.FW2, replicated)}
	n1, n2, err := hatest.StartPairWithDBSync(binary, p, o1, o2)
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 15*time.Second)
	mustSettledBackup(t, n2, 5*time.Second)
	waitKeaReady(t, p.FW1, 10*time.Second)
	mustKeaOnlyOn(t, p, p.FW1)
	return p, n1, n2, newKeaClient(t, p, "kc1"), newKeaClient(t, p, "kc2")
}

// mustPeerReady waits until n's last poll of the peer's health found a
// BACKUP ready to take over: what maintenance on asks.
func mustPeerReady(t *testing.T, n *hatest.Node, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := n.Status(context.Background())
		pr := st.Peer
		if err == nil && pr.Reachable && pr.RoleSource == "health" && pr.Role == "backup" &&
			(pr.Readiness == nil || !pr.Readiness.Held) && (pr.DBReady == nil || *pr.DBReady) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: peer not ready to take over after %v: %+v (err %v)", n.NS, timeout, pr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handover is how the master goes away in a scenario.
type handover struct {
	name string
	// ready, if set, waits until the handover can start (not timed).
	ready func(t *testing.T, n1 *hatest.Node)
	do    func(t *testing.T, p *lab.Pair, n1 *hatest.Node)
}

var keaHandovers = []handover{
	{"crash", nil, func(t *testing.T, p *lab.Pair, n1 *hatest.Node) {
		if err := n1.Crash(p); err != nil {
			t.Fatal(err)
		}
		// The machine is gone, its Kea with it (frozen, links down: it
		// could not answer anyway).
		if pid, ok := keaPid(p.FW1); ok {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}},
	{"graceful stop", nil, func(t *testing.T, p *lab.Pair, n1 *hatest.Node) {
		if err := n1.Stop(); err != nil {
			t.Fatal(err)
		}
	}},
	{"maintenance", func(t *testing.T, n1 *hatest.Node) {
		// Maintenance is refused until the master's poll of the peer's
		// health found it ready to take over (the first polls ran before
		// the peer listened).
		mustPeerReady(t, n1, 10*time.Second)
	}, func(t *testing.T, p *lab.Pair, n1 *hatest.Node) {
		if out, err := p.FW1.Run(binary, "maintenance", "--config", n1.ConfigPath, "on"); err != nil {
			t.Fatalf("maintenance on: %v\n%s", err, out)
		}
	}},
}

// TestKeaFollowsTheMaster: a client leases from the master's Kea; the
// master goes (crash, graceful stop, maintenance); Kea runs on the new
// master only; a second client gets a different address (the new master's
// Kea read the replicated lease of the first) and the first gets its own
// address back.
func TestKeaFollowsTheMaster(t *testing.T) {
	for _, h := range keaHandovers {
		t.Run(h.name, func(t *testing.T) {
			p, n1, n2, c1, c2 := keaPair(t, true)
			fw1, fw2 := p.FW1Addrs.LAN.Addr(), p.FW2Addrs.LAN.Addr()
			a1 := c1.mustLease(t, fw1, 15*time.Second)
			t0 := time.Now()
			waitLeaseReplicated(t, p.FW2, a1, 5*time.Second)
			t.Logf("%s: %s leased %s from fw1; on fw2's disk after %v", h.name, c1.name, a1, time.Since(t0).Round(time.Millisecond))

			if h.ready != nil {
				h.ready(t, n1)
			}
			start := time.Now()
			h.do(t, p, n1)
			mustState(t, n2, "MASTER", 5*time.Second)
			tMaster := time.Since(start)
			waitKeaReady(t, p.FW2, 10*time.Second)
			tKea := time.Since(start)
			a2 := c2.mustLease(t, fw2, 15*time.Second)
			tLease := time.Since(start)
			t.Logf("%s: fw2 MASTER after %v, its Kea serving after %v, first lease from it (%s to %s) after %v",
				h.name, tMaster.Round(time.Millisecond), tKea.Round(time.Millisecond), a2, c2.name, tLease.Round(time.Millisecond))
			mustKeaOnlyOn(t, p, p.FW2)
			if a2 == a1 {
				t.Errorf("%s: %s got %s, the address of %s: the new master's Kea did not know the lease", h.name, c2.name, a2, c1.name)
			}
			if again := c1.mustLease(t, fw2, 15*time.Second); again != a1 {
				t.Errorf("%s: %s got %s from the new master, want its own %s", h.name, c1.name, again, a1)
			}
		})
	}
}

// TestKeaWithoutReplicationDuplicates is the control: the lease file in a
// directory that is not replicated, the new master's Kea hands the first
// client's address to the second client. The duplicate is what the
// replicated lease file prevents.
func TestKeaWithoutReplicationDuplicates(t *testing.T) {
	p, n1, n2, c1, c2 := keaPair(t, false)
	fw1, fw2 := p.FW1Addrs.LAN.Addr(), p.FW2Addrs.LAN.Addr()
	a1 := c1.mustLease(t, fw1, 15*time.Second)
	keaHandovers[0].do(t, p, n1)
	mustState(t, n2, "MASTER", 5*time.Second)
	waitKeaReady(t, p.FW2, 10*time.Second)
	a2 := c2.mustLease(t, fw2, 15*time.Second)
	if a2 != a1 {
		t.Fatalf("without replication %s got %s, %s has %s: want the duplicate", c2.name, a2, c1.name, a1)
	}
	t.Logf("without replication: %s and %s both hold %s", c1.name, c2.name, a1)
}
