package lab

import (
	"bufio"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

// helperEnv makes the test binary act as a misbehaving lab user for the
// leftover tests (the os/exec TestHelperProcess pattern).
const helperEnv = "MUROS_LAB_HELPER"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return !errors.Is(err, fs.ErrNotExist)
}

// namespacesOf lists the lab namespaces owned by pid.
func namespacesOf(pid int) []string {
	entries, _ := os.ReadDir(netnsDir)
	var names []string
	for _, e := range entries {
		if p, ok := ownerPid(e.Name()); ok && p == pid {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestOwnerPid(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"mh-fw1-1234-a1b2c3", 1234, true},
		{"mh-x-1-00", 1, true},
		{"mh-fw1-1234-zz", 0, false},
		{"mh-fw1-abc-a1b2c3", 0, false},
		{"other-fw1-1234-a1b2c3", 0, false},
		{"mh-1234", 0, false},
		{"mh-fw1-0-a1", 0, false},
	}
	for _, tc := range tests {
		pid, ok := ownerPid(tc.name)
		if diff := cmp.Diff([2]any{tc.pid, tc.ok}, [2]any{pid, ok}); diff != "" {
			t.Errorf("ownerPid(%q) (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestNetnsLifecycle(t *testing.T) {
	Require(t)
	n, err := NewNetns("life")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if !netnsExists(n.Name) {
		t.Fatalf("%s not in %s after NewNetns", n.Name, netnsDir)
	}
	if pid, ok := ownerPid(n.Name); !ok || pid != os.Getpid() {
		t.Fatalf("name %q does not carry owner pid %d", n.Name, os.Getpid())
	}
	out := n.MustRun(t, "ip", "-o", "link", "show", "lo")
	if !strings.Contains(out, "UP") {
		t.Errorf("lo not up in %s: %s", n.Name, out)
	}
	// A fresh namespace has only lo.
	out = n.MustRun(t, "ip", "-o", "link", "show")
	if got := strings.Count(strings.TrimSpace(out), "\n") + 1; got != 1 {
		t.Errorf("fresh namespace has %d links, want 1:\n%s", got, out)
	}
	p, err := n.Start("sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if netnsExists(n.Name) {
		t.Errorf("%s still exists after Close", n.Name)
	}
	if !p.Exited() {
		t.Errorf("process %d still running after Close", p.Pid())
	}
	if _, err := os.Stat(n.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state dir %s left after Close: %v", n.Dir, err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := n.Start("sleep", "1"); err == nil {
		t.Errorf("Start after Close succeeded")
	}
}

func TestRunError(t *testing.T) {
	n := NewNetnsT(t, "run")
	_, err := n.Run("sh", "-c", "echo marker-output; exit 3")
	if err == nil || !strings.Contains(err.Error(), "marker-output") {
		t.Fatalf("Run error %v does not carry the output", err)
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Errorf("Run error %v does not wrap the exit status 3", err)
	}
}

func TestDoEntersNamespace(t *testing.T) {
	a := NewNetnsT(t, "doa")
	b := NewNetnsT(t, "dob")
	if err := Veth(a, "va", b, "vb"); err != nil {
		t.Fatal(err)
	}
	var links []string
	err := a.Do(func() error {
		ifs, err := netInterfaces()
		links = ifs
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"lo", "va"}, links); diff != "" {
		t.Errorf("interfaces seen inside Do (-want +got):\n%s", diff)
	}
	outside, err := netInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range outside {
		if l == "va" {
			t.Errorf("va visible outside Do: thread not switched back")
		}
	}
	wantErr := errors.New("from fn")
	if err := a.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("Do returned %v, want %v", err, wantErr)
	}
}

func TestVethAddrPing(t *testing.T) {
	a := NewNetnsT(t, "pa")
	b := NewNetnsT(t, "pb")
	if err := Veth(a, "a0", b, "b0"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		ns   *Netns
		addr string
	}{
		{a, "192.0.2.1/24"}, {b, "192.0.2.2/24"}, {a, "2001:db8:1::1/64"}, {b, "2001:db8:1::2/64"},
	} {
		if err := step.ns.AddAddr(step.ns.ifFor(a, "a0", "b0"), netip.MustParsePrefix(step.addr)); err != nil {
			t.Fatal(err)
		}
	}
	a.MustPing(t, netip.MustParseAddr("192.0.2.2"))
	a.MustPing(t, netip.MustParseAddr("2001:db8:1::2"))
	if err := Veth(a, "this-name-is-too-long", b, "b1"); err == nil {
		t.Errorf("Veth accepted a 21-char interface name")
	}
}

// ifFor picks the interface name for ns in a two-namespace test.
func (n *Netns) ifFor(a *Netns, aIf, bIf string) string {
	if n == a {
		return aIf
	}
	return bIf
}

func TestBridge(t *testing.T) {
	sw := NewNetnsT(t, "sw")
	h1 := NewNetnsT(t, "h1")
	h2 := NewNetnsT(t, "h2")
	br, err := NewBridge(sw, "br0")
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range []*Netns{h1, h2} {
		if _, err := br.Connect(h, "eth0", ""); err != nil {
			t.Fatal(err)
		}
		if err := h.AddAddr("eth0", netip.MustParsePrefix("198.51.100."+strconv.Itoa(i+1)+"/24")); err != nil {
			t.Fatal(err)
		}
	}
	h1.MustPing(t, netip.MustParseAddr("198.51.100.2"))
	out := sw.MustRun(t, "ip", "-o", "link", "show", "master", "br0")
	if got := strings.Count(out, "br0p"); got != 2 {
		t.Errorf("bridge has %d ports, want 2:\n%s", got, out)
	}
}

func TestSysctlInNamespace(t *testing.T) {
	n := NewNetnsT(t, "sysctl")
	if err := n.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	got, err := n.Sysctl("net.ipv4.ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	if got != "1" {
		t.Errorf("ip_forward in %s = %q, want 1", n.Name, got)
	}
	if err := n.SetSysctl("kernel.hostname", "x"); err == nil {
		t.Errorf("SetSysctl accepted a non-namespaced key")
	}
}

func TestProcessLogAndSignal(t *testing.T) {
	n := NewNetnsT(t, "proc")
	p, err := n.Start("sh", "-c", "echo started; trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(p.Log(), "started") }, "process log shows start")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = p.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 7 {
		t.Errorf("Wait = %v, want exit status 7", err)
	}
	if !strings.Contains(p.Log(), "got-term") {
		t.Errorf("log %s lacks got-term: %q", p.LogPath, p.Log())
	}
}

// waitFor polls cond for up to 10 s: a bound on a hang, not a timing
// assertion.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoLeftoversWhenTestFailsMidway runs this test binary as a test that
// creates namespaces with a process inside and then fails: t.Cleanup must
// still remove everything.
func TestNoLeftoversWhenTestFailsMidway(t *testing.T) {
	if os.Getenv(helperEnv) == "fail-midway" {
		n := NewNetnsT(t, "fail")
		m := NewNetnsT(t, "fail")
		if err := Veth(n, "x0", m, "x1"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Start("sleep", "1000"); err != nil {
			t.Fatal(err)
		}
		t.Fatal("deliberate failure midway")
	}
	Require(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoLeftoversWhenTestFailsMidway$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=fail-midway")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "deliberate failure midway") {
		t.Fatalf("helper did not fail as planned: %v\n%s", err, out)
	}
	if left := namespacesOf(cmd.Process.Pid); len(left) > 0 {
		t.Errorf("namespaces left by the failed test: %v\n%s", left, out)
		for _, name := range left {
			deleteNetns(name)
		}
	}
}

// TestReapAfterKill kills a lab user with SIGKILL (no cleanup can run) and
// checks Reap removes its namespaces and the processes inside them, while
// leaving this live process's namespaces alone.
func TestReapAfterKill(t *testing.T) {
	if os.Getenv(helperEnv) == "hang" {
		n, err := NewNetns("orphan")
		if err != nil {
			t.Fatal(err)
		}
		p, err := n.Start("sh", "-c", "echo ready; exec sleep 1000")
		if err != nil {
			t.Fatal(err)
		}
		// Only once the shell runs is it inside the namespace.
		waitFor(t, func() bool { return strings.Contains(p.Log(), "ready") }, "sleeper in the namespace")
		os.Stdout.WriteString("NETNS " + n.Name + "\n")
		time.Sleep(60 * time.Second) // killed long before
		n.Close()
		return
	}
	mine := NewNetnsT(t, "mine")
	cmd := exec.Command(os.Args[0], "-test.run=^TestReapAfterKill$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=hang")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var orphan string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "NETNS "); ok {
			orphan = name
			break
		}
	}
	cmd.Process.Kill()
	go func() {
		for sc.Scan() {
		}
	}()
	cmd.Wait()
	t.Cleanup(func() { deleteNetns(orphan) })
	if orphan == "" {
		t.Fatal("helper never reported its namespace")
	}
	if !netnsExists(orphan) {
		t.Fatalf("orphan %s vanished before Reap: test proves nothing", orphan)
	}
	pids := netnsPids(orphan)
	if len(pids) == 0 {
		t.Fatalf("orphan %s has no process inside: test proves nothing", orphan)
	}
	Reap()
	if netnsExists(orphan) {
		t.Errorf("Reap left orphan %s", orphan)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("Reap left process %d of %s alive", pid, orphan)
		}
	}
	if !netnsExists(mine.Name) {
		t.Errorf("Reap deleted %s of a live process", mine.Name)
	}
}

func TestCapture(t *testing.T) {
	a := NewNetnsT(t, "capa")
	b := NewNetnsT(t, "capb")
	if err := Veth(a, "c0", b, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("c0", netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := b.AddAddr("c1", netip.MustParsePrefix("192.0.2.2/24")); err != nil {
		t.Fatal(err)
	}
	c, err := b.StartCapture("c1")
	if err != nil {
		t.Fatal(err)
	}
	a.MustPing(t, netip.MustParseAddr("192.0.2.2"))
	path, n, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// tcpdump reads the file: it is a valid pcap, and Stop lost nothing.
	out := b.MustRun(t, "tcpdump", "-n", "-r", path)
	for _, want := range []string{"192.0.2.1 > 192.0.2.2: ICMP echo request", "192.0.2.2 > 192.0.2.1: ICMP echo reply"} {
		if !strings.Contains(out, want) {
			t.Errorf("capture lacks %q:\n%s", want, out)
		}
	}
	frames, err := ReadPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != n || n < 2 {
		t.Errorf("ReadPcap: %d frames, Stop said %d, want >= 2 (request, reply)", len(frames), n)
	}
}
