package lab

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// NamePrefix starts the name of every namespace the lab creates. Reap only
// ever touches namespaces with this prefix.
const NamePrefix = "mh-"

// netnsDir is where iproute2 keeps the bind mounts of named namespaces.
const netnsDir = "/run/netns"

// MaxIfName is the longest interface name Linux accepts (IFNAMSIZ - 1).
const MaxIfName = 15

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 3 * time.Second

// Netns is a named network namespace created by the lab. Name is
// "mh-<tag>-<owner pid>-<random>", so Reap can tell whether its owner is
// still alive.
type Netns struct {
	Name string
	// Dir is a private directory for this namespace: process logs and any
	// state a daemon running inside needs. Close removes it.
	Dir string

	mu     sync.Mutex
	procs  []*Process
	closed bool
	err    error
}

var tagClean = regexp.MustCompile(`[^a-z0-9]+`)

// NewNetns creates a namespace named after tag, with lo up.
func NewNetns(tag string) (*Netns, error) {
	tag = tagClean.ReplaceAllString(strings.ToLower(tag), "")
	if tag == "" {
		tag = "ns"
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("lab: random name suffix: %w", err)
	}
	name := fmt.Sprintf("%s%s-%d-%s", NamePrefix, tag, os.Getpid(), hex.EncodeToString(rnd[:]))
	dir, err := os.MkdirTemp("", name+".")
	if err != nil {
		return nil, fmt.Errorf("lab: state dir for %s: %w", name, err)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("lab: ip netns add %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	n := &Netns{Name: name, Dir: dir}
	if _, err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// NewNetnsT is NewNetns for tests: it checks the prerequisites, fails the
// test on error and closes the namespace at cleanup. When the test failed,
// the tail of every process log is written to the test log first.
func NewNetnsT(t testing.TB, tag string) *Netns {
	t.Helper()
	Require(t)
	n, err := NewNetns(tag)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			n.logTails(t)
		}
		if err := n.Close(); err != nil {
			t.Errorf("lab: close %s: %v", n.Name, err)
		}
	})
	return n
}

func (n *Netns) logTails(t testing.TB) {
	n.mu.Lock()
	procs := append([]*Process(nil), n.procs...)
	n.mu.Unlock()
	for _, p := range procs {
		t.Logf("lab: %s: last lines of %s (%s):\n%s", n.Name, p.Name, p.LogPath, tail(p.LogPath, 40))
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// String returns the namespace name.
func (n *Netns) String() string { return n.Name }

// Close stops the processes started with Start (SIGTERM, then SIGKILL after
// a grace period), kills anything else still running in the namespace,
// deletes it and removes Dir. It is idempotent: later calls return the
// first result.
func (n *Netns) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return n.err
	}
	n.closed = true
	procs := n.procs
	n.mu.Unlock()

	// In parallel: each may take the whole grace period.
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.Stop(stopGrace) })
	}
	wg.Wait()
	if err := deleteNetns(n.Name); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(n.Dir); err != nil {
		errs = append(errs, fmt.Errorf("lab: remove %s: %w", n.Dir, err))
	}
	err := errors.Join(errs...)
	n.mu.Lock()
	n.err = err
	n.mu.Unlock()
	return err
}

// deleteNetns kills every process left in the namespace (daemons that
// forked away from Start, `ip netns exec` children) and deletes it.
func deleteNetns(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for range 50 {
		pids := netnsPids(name)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(serr, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("lab: ip netns del %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

func netnsPids(name string) []int {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Do runs fn on an OS thread switched into the namespace and switches the
// thread back afterwards. Sockets opened inside fn stay in the namespace
// after Do returns. Goroutines started by fn do NOT run in the namespace.
// If switching back fails the thread stays locked, so the runtime discards
// it with the goroutine instead of reusing a thread in the wrong namespace.
func (n *Netns) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("lab: enter netns %s: %w", n.Name, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// Thread left locked on purpose: it dies with this goroutine.
		return errors.Join(fnErr, fmt.Errorf("lab: leave netns %s: %w", n.Name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Run runs a command inside the namespace (`ip netns exec NAME args...`)
// and returns its combined output; on failure the output is in the error.
func (n *Netns) Run(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("lab: Run: no command")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// RunInput is Run with stdin fed from input (e.g. `nft -f -`).
func (n *Netns) RunInput(input string, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("lab: RunInput: no command")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: %s: %s: %w: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Command returns an unstarted command that runs inside the namespace,
// for callers that need their own stdin, stdout or environment. The
// caller owns it: Close does not know about it, but kills it anyway as a
// process left in the namespace.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// MustRun is Run that fails the test on error.
func (n *Netns) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Process is a background process started in a namespace with Start.
type Process struct {
	Name    string
	LogPath string

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	err     error
}

// Start starts a background process in the namespace. Its stdout and
// stderr go to LogPath (in the namespace's Dir). Close stops it.
func (n *Netns) Start(name string, args ...string) (*Process, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("lab: start %s in %s: namespace closed", name, n.Name)
	}
	logPath := filepath.Join(n.Dir, fmt.Sprintf("%s.%d.log", tagClean.ReplaceAllString(strings.ToLower(name), "_"), len(n.procs)))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("lab: log for %s: %w", name, err)
	}
	// ip netns exec execs the program in place: the pid is the program's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: start %s in %s: %w", name, n.Name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	n.procs = append(n.procs, p)
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("lab: signal %s to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() error {
	p.cmd.Process.Kill()
	<-p.done
	return nil
}

// Wait waits for the process to exit and returns its exit error. It may be
// called any number of times, from any goroutine.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL. An exit caused by
// either signal is not an error.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	p.Kill()
	return nil
}

// Log returns what the process has written so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// CheckIfName returns an error unless name is a valid Linux interface name.
func CheckIfName(name string) error {
	if name == "" || len(name) > MaxIfName || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("lab: invalid interface name %q (1..%d chars, no '/', ':' or spaces)", name, MaxIfName)
	}
	return nil
}

// Veth creates a veth pair with end aIf in a and end bIf in b, both up.
func Veth(a *Netns, aIf string, b *Netns, bIf string) error {
	if err := CheckIfName(aIf); err != nil {
		return err
	}
	if err := CheckIfName(bIf); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "-n", a.Name, "link", "add", aIf, "type", "veth",
		"peer", "name", bIf, "netns", b.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("lab: veth %s/%s - %s/%s: %w: %s", a.Name, aIf, b.Name, bIf, err, bytes.TrimSpace(out))
	}
	if err := a.LinkUp(aIf); err != nil {
		return err
	}
	return b.LinkUp(bIf)
}

// ip runs `ip -n NAME args...` (netlink aimed at the namespace, no exec
// inside it).
func (n *Netns) ip(args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: %s: ip %s: %w: %s", n.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// LinkUp sets an interface of the namespace up.
func (n *Netns) LinkUp(ifName string) error { return n.ip("link", "set", ifName, "up") }

// LinkDown sets an interface of the namespace down.
func (n *Netns) LinkDown(ifName string) error { return n.ip("link", "set", ifName, "down") }

// AddAddr adds an address to an interface of the namespace. IPv6
// addresses are added with nodad so they are usable at once.
func (n *Netns) AddAddr(ifName string, addr netip.Prefix) error {
	args := []string{"addr", "add", addr.String(), "dev", ifName}
	if addr.Addr().Is6() {
		args = append(args, "nodad")
	}
	return n.ip(args...)
}

// DelAddr removes an address from an interface of the namespace.
func (n *Netns) DelAddr(ifName string, addr netip.Prefix) error {
	return n.ip("addr", "del", addr.String(), "dev", ifName)
}

// AddRoute adds a route in the namespace: dst ("default" or a prefix) via gw.
func (n *Netns) AddRoute(dst string, gw netip.Addr) error {
	if gw.Is6() {
		return n.ip("-6", "route", "add", dst, "via", gw.String())
	}
	return n.ip("route", "add", dst, "via", gw.String())
}

// FlushNeighbours empties the namespace's ARP and NDP caches (`ip neigh
// flush all` covers both families).
func (n *Netns) FlushNeighbours() error { return n.ip("neigh", "flush", "all") }

var sysctlKey = regexp.MustCompile(`^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$`)

// SetSysctl sets a sysctl inside the namespace (only per-namespace keys,
// such as net.*, can be set this way without touching the host).
func (n *Netns) SetSysctl(key, value string) error {
	if !sysctlKey.MatchString(key) || !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("lab: sysctl %q: only net.* keys are per namespace", key)
	}
	_, err := n.Run("sysctl", "-q", "-w", key+"="+value)
	return err
}

// SetSysctls sets several sysctls inside the namespace in one sysctl(8)
// run; kv alternates keys and values.
func (n *Netns) SetSysctls(kv ...string) error {
	if len(kv)%2 != 0 {
		return fmt.Errorf("lab: SetSysctls: odd number of arguments")
	}
	args := []string{"sysctl", "-q", "-w"}
	for i := 0; i < len(kv); i += 2 {
		if !sysctlKey.MatchString(kv[i]) || !strings.HasPrefix(kv[i], "net.") {
			return fmt.Errorf("lab: sysctl %q: only net.* keys are per namespace", kv[i])
		}
		args = append(args, kv[i]+"="+kv[i+1])
	}
	_, err := n.Run(args...)
	return err
}

// Sysctl reads a sysctl inside the namespace.
func (n *Netns) Sysctl(key string) (string, error) {
	if !sysctlKey.MatchString(key) {
		return "", fmt.Errorf("lab: sysctl %q: bad key", key)
	}
	out, err := n.Run("sysctl", "-n", key)
	return strings.TrimSpace(out), err
}

// RequiredCommands returns the programs lab tests need on PATH.
func RequiredCommands() []string {
	return []string{"ip", "nft", "conntrack", "tcpdump", "keepalived", "conntrackd", "sysctl"}
}

// Require fails the test (never skips) unless it runs as root with every
// program the lab uses on PATH.
func Require(t testing.TB) {
	t.Helper()
	if err := Check(); err != nil {
		t.Fatalf("lab test prerequisites missing (lab tests never skip): %v", err)
	}
}

// Check returns why lab tests cannot run here, or nil.
func Check() error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, fmt.Errorf("must run as root (euid %d)", os.Geteuid()))
	}
	for _, c := range RequiredCommands() {
		if _, err := exec.LookPath(c); err != nil {
			errs = append(errs, fmt.Errorf("%s not on PATH (%s)", c, os.Getenv("PATH")))
		}
	}
	return errors.Join(errs...)
}

// Reap deletes lab namespaces (and kills their processes) whose owner
// process is gone, e.g. left by a test binary that was killed. Namespaces
// of live lab processes, and anything not named by the lab, are left alone.
func Reap() {
	for _, name := range orphanNamespaces() {
		deleteNetns(name)
	}
	// State directories of dead owners ("<name>.<random>" in TempDir).
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), NamePrefix+"*"))
	for _, d := range dirs {
		name, _, _ := strings.Cut(filepath.Base(d), ".")
		if pid, ok := ownerPid(name); ok && pid != os.Getpid() && !processAlive(pid) {
			os.RemoveAll(d)
		}
	}
}

func orphanNamespaces() []string {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var orphans []string
	for _, e := range entries {
		pid, ok := ownerPid(e.Name())
		if !ok {
			continue
		}
		if pid == os.Getpid() || processAlive(pid) {
			continue
		}
		orphans = append(orphans, e.Name())
	}
	return orphans
}

// ownerPid extracts the owner pid from "mh-<tag>-<pid>-<hex>".
func ownerPid(name string) (int, bool) {
	if !strings.HasPrefix(name, NamePrefix) {
		return 0, false
	}
	f := strings.Split(name, "-")
	if len(f) < 4 {
		return 0, false
	}
	if _, err := hex.DecodeString(f[len(f)-1]); err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(f[len(f)-2])
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// processAlive reports whether pid is a running (not zombie) process.
func processAlive(pid int) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "State:"); ok {
			return !strings.HasPrefix(strings.TrimSpace(v), "Z")
		}
	}
	return true
}
