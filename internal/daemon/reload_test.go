package daemon_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
)

// hup sends SIGHUP to n and waits until its log holds one more line
// containing outcome than before: the reload's one-line verdict.
func hup(t *testing.T, n *hatest.Node, outcome string) {
	t.Helper()
	before := strings.Count(n.Proc.Log(), outcome)
	if err := n.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, n, outcome, before+1, 5*time.Second)
}

// waitLog waits until n's log holds want lines containing s.
func waitLog(t *testing.T, n *hatest.Node, s string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for strings.Count(n.Proc.Log(), s) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: log never held %d lines with %q:\n%s", n.NS, want, s, tail(n.Proc.Log(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeConfig(t *testing.T, n *hatest.Node, cfg string) {
	t.Helper()
	if err := os.WriteFile(n.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustStatus(t *testing.T, n *hatest.Node) status.Status {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", n.NS, err)
	}
	return st
}

// electionKept checks after a reload that fw1 (n1) is still MASTER and
// owns the VIPs, fw2 (n2) still BACKUP, and neither recorded a failover
// since the statuses taken before; it returns n1's status.
func electionKept(t *testing.T, p *lab.Pair, n1, n2 *hatest.Node, before1, before2 status.Status) status.Status {
	t.Helper()
	mustState(t, n1, "MASTER", time.Second)
	mustState(t, n2, "BACKUP", time.Second)
	mustOwn(t, p, p.FW1)
	after1, after2 := mustStatus(t, n1), mustStatus(t, n2)
	if d := cmp.Diff(before1.LastFailover, after1.LastFailover); d != "" {
		t.Errorf("master's last failover changed across the reload (-before +after):\n%s", d)
	}
	if d := cmp.Diff(before2.LastFailover, after2.LastFailover); d != "" {
		t.Errorf("backup's last failover changed across the reload (-before +after):\n%s", d)
	}
	return after1
}

// TestReloadWithoutRelevantChangeKeepsElection: a reload whose file differs
// only in what the election does not use keeps both nodes as they are: no
// state change, the same last failover, the VIPs never released, and the
// client through the VIPs sees no loss.
func TestReloadWithoutRelevantChangeKeepsElection(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{}, hatest.NodeOptions{})
	before1, before2 := mustStatus(t, n1), mustStatus(t, n2)
	res := probe(t, p, 1500*time.Millisecond, func() {
		time.Sleep(300 * time.Millisecond)
		for _, n := range []*hatest.Node{n1, n2} {
			cfg := "# reviewed by the operator; nothing to change\n" + hatest.Config(p, n.NS, n.Options)
			if err := os.WriteFile(n.ConfigPath, []byte(cfg), 0o600); err != nil {
				t.Error(err)
				return
			}
		}
		if err := n1.Proc.Signal(syscall.SIGHUP); err != nil {
			t.Error(err)
		}
		if err := n2.Proc.Signal(syscall.SIGHUP); err != nil {
			t.Error(err)
		}
	})
	const verdict = "reload: nothing relevant changed, no re-election"
	waitLog(t, n1, verdict, 1, 3*time.Second)
	waitLog(t, n2, verdict, 1, 3*time.Second)
	electionKept(t, p, n1, n2, before1, before2)
	if strings.Contains(n1.Proc.Log(), "VIPs released") {
		t.Errorf("master released its VIPs during the reload:\n%s", tail(n1.Proc.Log(), 20))
	}
	if res.Lost > 0 || res.Received == 0 {
		t.Errorf("client through the VIPs lost traffic across the reload: %+v", res)
	}
	t.Logf("reload without change: client-visible max gap %v (%d lost of %d)", res.MaxGap, res.Lost, res.Sent)
}

// TestReloadRoleSwapChangesPriorityInPlace swaps the roles by editing both
// files and reloading: the old master only lowers its priority (no restart,
// still master, no re-election), and once the peer's priority rises it
// preempts.
func TestReloadRoleSwapChangesPriorityInPlace(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{}, hatest.NodeOptions{})
	before := mustStatus(t, n1)

	const verdict = "reload: priority changes in place, no restart"
	writeConfig(t, n1, hatest.Config(p, p.FW1, hatest.NodeOptions{Role: "backup"}))
	hup(t, n1, verdict)
	st := mustStatus(t, n1)
	if st.Role != "backup" || st.Priority != 100 || st.State != "MASTER" {
		t.Errorf("old master after its reload: role %s priority %d state %s, want backup 100 MASTER", st.Role, st.Priority, st.State)
	}
	if diff := cmp.Diff(before.LastFailover, st.LastFailover); diff != "" {
		t.Errorf("lowering the priority re-elected (-before +after):\n%s", diff)
	}
	// Equal priorities: the peer keeps waiting (RFC 9568 6.4.2 preempts
	// only on a lower advertised priority).
	mustState(t, n2, "BACKUP", time.Second)

	writeConfig(t, n2, hatest.Config(p, p.FW2, hatest.NodeOptions{Role: "master"}))
	hup(t, n2, verdict)
	mustState(t, n2, "MASTER", 3*time.Second)
	mustState(t, n1, "BACKUP", 3*time.Second)
	mustOwn(t, p, p.FW2)
	st2 := mustStatus(t, n2)
	if st2.Role != "master" || st2.Priority != 150 {
		t.Errorf("new master: role %s priority %d, want master 150", st2.Role, st2.Priority)
	}
	if st1 := mustStatus(t, n1); st1.Peer.Priority == nil || *st1.Peer.Priority != 150 {
		t.Errorf("old master's view of the peer = %+v, want priority 150", st1.Peer)
	}
	for _, n := range []*hatest.Node{n1, n2} {
		if strings.Contains(n.Proc.Log(), "restarting the VRRP instances") || strings.Count(n.Proc.Log(), "msg=starting") != 1 {
			t.Errorf("%s restarted for a role change:\n%s", n.NS, tail(n.Proc.Log(), 20))
		}
	}
}

// TestReloadAddedVIPRestartsInstances adds a VIP on a new interface: each
// daemon restarts its VRRP instances in-process (graceful stop, new start,
// same pid) and the master ends up owning the new VIP too.
func TestReloadAddedVIPRestartsInstances(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	for _, fw := range p.Firewalls() {
		// A veth pair inside the firewall: carrier up, no dummy module needed.
		fw.MustRun(t, "ip", "link", "add", "dmz0", "type", "veth", "peer", "name", "dmz0p")
		fw.MustRun(t, "ip", "link", "set", "dmz0p", "up")
		fw.MustRun(t, "ip", "link", "set", "dmz0", "up")
	}
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{}, hatest.NodeOptions{})
	pid1, pid2 := n1.Proc.Pid(), n2.Proc.Pid()
	const dmzVIP = "192.0.2.1"
	withDMZ := func(n *hatest.Node) string {
		return strings.Replace(hatest.Config(p, n.NS, n.Options), "advert_interval:",
			"  - interface: dmz0\n    address: "+dmzVIP+"/24\nadvert_interval:", 1)
	}
	const verdict = "reload: restarting the VRRP instances gracefully"
	const started = `msg=starting role=master priority=150 vrids="[10 11 12]"`
	writeConfig(t, n1, withDMZ(n1))
	hup(t, n1, verdict)
	waitLog(t, n1, started, 1, 5*time.Second)
	mustState(t, n1, "MASTER", 5*time.Second)
	writeConfig(t, n2, withDMZ(n2))
	hup(t, n2, verdict)
	waitLog(t, n2, `msg=starting role=backup priority=100 vrids="[10 11 12]"`, 1, 5*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)
	mustState(t, n1, "MASTER", time.Second)
	mustOwn(t, p, p.FW1)
	for _, fw := range p.Firewalls() {
		has, err := hatest.HasAddr(fw, netipMust(dmzVIP))
		if err != nil {
			t.Fatal(err)
		}
		if want := fw == p.FW1; has != want {
			t.Errorf("%s holds the new VIP %s = %v, want %v", fw, dmzVIP, has, want)
		}
	}
	if n1.Proc.Pid() != pid1 || n2.Proc.Pid() != pid2 || n1.Proc.Exited() || n2.Proc.Exited() {
		t.Errorf("a daemon process exited on reload")
	}
	st1, st2 := mustStatus(t, n1), mustStatus(t, n2)
	if len(st1.VIPs) != 3 || len(st2.VIPs) != 3 {
		t.Errorf("VIPs after reload: fw1 %+v, fw2 %+v, want 3 each", st1.VIPs, st2.VIPs)
	}
	// The restarted senders' AH sequence numbers are accepted by the peer.
	for _, st := range []status.Status{st1, st2} {
		if n := st.Adverts.Rejected["replay"]; n != 0 {
			t.Errorf("%s rejected %d adverts as replays after the peer's restart", st.Node, n)
		}
	}
}

// TestReloadBrokenConfigKeepsRunning: a file that does not validate is
// reported in one line and the running configuration stays.
func TestReloadBrokenConfigKeepsRunning(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{}, hatest.NodeOptions{})
	before := mustStatus(t, n1)
	writeConfig(t, n1, strings.Replace(hatest.Config(p, p.FW1, n1.Options), "role: master", "role: primary", 1))
	hup(t, n1, "reload: failed, keeping the running configuration")
	line := ""
	for _, l := range strings.Split(n1.Proc.Log(), "\n") {
		if strings.Contains(l, "reload: failed") {
			line = l
		}
	}
	if !strings.Contains(line, "role") || !strings.Contains(line, "primary") {
		t.Errorf("reload failure line does not name the problem: %s", line)
	}
	time.Sleep(300 * time.Millisecond)
	mustState(t, n1, "MASTER", time.Second)
	mustState(t, n2, "BACKUP", time.Second)
	mustOwn(t, p, p.FW1)
	st := mustStatus(t, n1)
	if st.Role != "master" || st.Priority != 150 {
		t.Errorf("after a failed reload: role %s priority %d, want master 150", st.Role, st.Priority)
	}
	if diff := cmp.Diff(before.LastFailover, st.LastFailover); diff != "" {
		t.Errorf("failed reload changed the election (-before +after):\n%s", diff)
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }

// notifyListener is the service manager's end of sd_notify(3): a unixgram
// socket in the filesystem (shared with the daemon's network namespace)
// recording every state message.
type notifyListener struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	// onReady, if set, runs when READY=1 arrives, before it is recorded.
	onReady func()
	done    chan struct{}
}

func newNotifyListener(t *testing.T) *notifyListener {
	t.Helper()
	dir, err := os.MkdirTemp("", "mhn") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l := &notifyListener{path: filepath.Join(dir, "notify.sock"), done: make(chan struct{})}
	l.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: l.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(l.done)
		buf := make([]byte, 4096)
		for {
			n, err := l.conn.Read(buf)
			if err != nil {
				return
			}
			for _, m := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
				if m == "READY=1" && l.onReady != nil {
					l.onReady()
				}
				l.mu.Lock()
				l.msgs = append(l.msgs, m)
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { l.conn.Close(); <-l.done })
	return l
}

func (l *notifyListener) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// waitFor waits until msg has arrived count times after index from.
func (l *notifyListener) waitFor(t *testing.T, from int, msg string, count int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := 0
		m := l.messages()
		for _, s := range m[min(from, len(m)):] {
			if s == msg {
				got++
			}
		}
		if got >= count {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sd_notify: %d x %q after message %d, want %d; all: %q", got, msg, from, count, m)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSystemdNotify runs the master as systemd would with Type=notify and
// WatchdogSec: READY=1 once the election has started, WATCHDOG=1 at half
// the watchdog period, RELOADING=1 then READY=1 around a reload, no
// STOPPING=1 when a reload restarts the instances in-process (systemd would
// treat it as a stop and kill the service), STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	nl := newNotifyListener(t)
	// A file, not a pipe: what the daemon logged before sending READY=1 is
	// in it when READY=1 arrives.
	out, err := os.Create(filepath.Join(p.FW1.Dir, "notify-run.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	logText := func() string {
		b, _ := os.ReadFile(out.Name())
		return string(b)
	}
	readyLog := make(chan string, 4)
	nl.onReady = func() {
		select {
		case readyLog <- logText():
		default:
		}
	}
	n1 := &hatest.Node{NS: p.FW1, ConfigPath: filepath.Join(p.FW1.Dir, "muros-had.yaml"), StatusSock: filepath.Join(p.FW1.Dir, "run", "status.sock"),
		Options: hatest.NodeOptions{Role: "master"}}
	writeConfig(t, n1, hatest.Config(p, p.FW1, n1.Options))
	cmd := p.FW1.Command(binary, "run", "--config", n1.ConfigPath)
	// 200 ms: the daemon pings every 100 ms.
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+nl.path, "WATCHDOG_USEC=200000")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	var n2 *hatest.Node
	n2, err = hatest.StartNode(binary, p, p.FW2, hatest.NodeOptions{Role: "backup"})
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 5*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)

	nl.waitFor(t, 0, "READY=1", 1)
	// Watchdog pings may come first (the daemon pings around the
	// password's stretch); the first state is READY=1.
	if m := slices.DeleteFunc(nl.messages(), func(s string) bool { return s == "WATCHDOG=1" }); m[0] != "READY=1" {
		t.Errorf("first sd_notify state %q, want READY=1 (all: %q)", m[0], nl.messages())
	}
	if l := <-readyLog; !strings.Contains(l, "reason=startup") {
		t.Errorf("READY=1 came before the election started; log then:\n%s", l)
	}
	nl.waitFor(t, 1, "WATCHDOG=1", 5)

	// A reload that changes nothing relevant.
	mark := len(nl.messages())
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	nl.waitFor(t, mark, "READY=1", 1)
	checkReloadSequence(t, nl.messages()[mark:])

	// A reload that restarts the instances (preempt_delay is not adopted
	// in place).
	writeConfig(t, n1, hatest.Config(p, p.FW1, hatest.NodeOptions{Role: "master", PreemptDelay: time.Second}))
	mark = len(nl.messages())
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	nl.waitFor(t, mark, "READY=1", 1)
	checkReloadSequence(t, nl.messages()[mark:])
	if !strings.Contains(logText(), "reload: restarting the VRRP instances gracefully") {
		t.Errorf("second reload did not restart the instances:\n%s", tail(logText(), 20))
	}
	mustState(t, n1, "MASTER", 5*time.Second)
	mark = len(nl.messages())
	nl.waitFor(t, mark, "WATCHDOG=1", 2)
	// The restarted instance keeps the real-time policy: only a final stop
	// lowers it (cmd/muros-had, lowerForTeardown).
	if strings.Contains(logText(), "left the pair") {
		t.Errorf("the in-process restart lowered the priority:\n%s", tail(logText(), 20))
	}
	checkThreadsRealtime(t, cmd.Process.Pid, schedRR, 40)
	// The password was stretched once, in a child the kernel ran
	// time-sharing while the daemon was real-time (cmd/muros-had,
	// stretcher), and the restarted instance reused the secret.
	if l := logText(); strings.Count(l, "password stretched in a child process") != 1 ||
		!regexp.MustCompile(`password stretched in a child process[^\n]* policy="SCHED_OTHER nice`).MatchString(l) ||
		strings.Count(l, "keys ready") != 2 {
		t.Errorf("want the password stretched once in a SCHED_OTHER child and keys ready in both instances:\n%s", tail(l, 40))
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Errorf("daemon exit after SIGTERM: %v\n%s", exitErr, tail(logText(), 20))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("daemon did not exit after SIGTERM")
	}
	nl.waitFor(t, mark, "STOPPING=1", 1)
	// Lowered once, after the final stop's "stopped" (the in-process
	// restart logged one before it).
	l := logText()
	if i, j := strings.LastIndex(l, "msg=stopped"), strings.Index(l, "left the pair"); i < 0 || j < i || strings.Count(l, "left the pair") != 1 ||
		!strings.Contains(l[j:], "SCHED_OTHER nice 19") {
		t.Errorf("want one \"left the pair\" line at SCHED_OTHER nice 19 after \"stopped\":\n%s", tail(l, 20))
	}
}

// checkReloadSequence asserts RELOADING=1 ... READY=1 with no STOPPING=1
// (watchdog pings may interleave).
func checkReloadSequence(t *testing.T, msgs []string) {
	t.Helper()
	var states []string
	for _, m := range msgs {
		if m != "WATCHDOG=1" {
			states = append(states, m)
		}
	}
	if diff := cmp.Diff([]string{"RELOADING=1", "READY=1"}, states); diff != "" {
		t.Errorf("sd_notify around a reload (-want +got):\n%s", diff)
	}
}

// TestReloadListenersInPlace: a reload that moves the status socket,
// enables metrics, changes the peer checks, the GARP schedule and the CPU
// scheduling applies all of it without a re-election: same process, same
// states and last failovers, VIPs never released, no client loss. A
// listener that cannot be opened keeps the previous one serving.
func TestReloadListenersInPlace(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	n1, n2 := pairNodes(t, p, hatest.NodeOptions{}, hatest.NodeOptions{})
	before1, before2 := mustStatus(t, n1), mustStatus(t, n2)
	pid := n1.Proc.Pid()
	oldSock, newSock := n1.StatusSock, filepath.Join(n1.NS.Dir, "run", "status-moved.sock")
	const metricsAddr = "127.0.0.1:19733"
	edited := func(metricsListen string) string {
		cfg := hatest.Config(p, n1.NS, hatest.NodeOptions{Role: "master"})
		cfg = strings.Replace(cfg, "listen: "+oldSock, "listen: "+newSock, 1)
		cfg = replaceMetrics(cfg, "metrics:\n  enabled: true\n  listen: "+metricsListen+"\n")
		return cfg + "garp:\n  repeat: 3\npeer_check:\n  interval: 500ms\nscheduling:\n  policy: fifo\n  priority: 30\n"
	}
	res := probe(t, p, 1500*time.Millisecond, func() {
		time.Sleep(300 * time.Millisecond)
		writeConfig(t, n1, edited(metricsAddr))
		hup(t, n1, "reload: applied in place, no re-election")
	})
	if n1.Proc.Pid() != pid || n1.Proc.Exited() {
		t.Fatalf("the daemon restarted")
	}
	log := n1.Proc.Log()
	var line string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "reload: applied in place") {
			line = l
		}
	}
	for _, k := range []string{"status", "metrics", "peer_check", "garp", "scheduling"} {
		if !strings.Contains(line, k) {
			t.Errorf("the reload line does not name %s: %s", k, line)
		}
	}
	if _, err := net.Dial("unix", oldSock); err == nil {
		t.Errorf("the old status socket %s still answers", oldSock)
	}
	n1.StatusSock = newSock
	after1 := electionKept(t, p, n1, n2, before1, before2)
	if strings.Contains(log, "VIPs released") || strings.Contains(log, "restarting the VRRP instances") {
		t.Errorf("the reload touched the election:\n%s", tail(log, 20))
	}
	if res.Lost > 0 || res.Received == 0 {
		t.Errorf("client through the VIPs lost traffic across the reload: %+v", res)
	}
	if after1.Scheduling != "SCHED_FIFO priority 30" {
		t.Errorf("status scheduling = %q after the reload", after1.Scheduling)
	}
	checkThreadsRealtime(t, pid, schedFIFO, 30)
	if m := metricsOf(t, httpGet(t, nsDial(n1.NS, metricsAddr), "/metrics")); m[`muros_had_vrrp_group_state{state="MASTER"}`] != 1 {
		t.Errorf("metrics on the new listener: group MASTER = %v", m[`muros_had_vrrp_group_state{state="MASTER"}`])
	}

	// A metrics address the node does not have: the reload keeps the
	// listeners running as they were.
	writeConfig(t, n1, edited("192.0.2.99:9732"))
	hup(t, n1, "keeping the previous ones")
	mustStatus(t, n1)
	if m := metricsOf(t, httpGet(t, nsDial(n1.NS, metricsAddr), "/metrics")); m[`muros_had_vrrp_group_state{state="MASTER"}`] != 1 {
		t.Errorf("metrics listener lost after a failed reload")
	}
	mustState(t, n1, "MASTER", time.Second)
}
