package bench

// The reference conntrack replication: conntrackd 1.4.7 in FTFW mode over
// multicast on the sync link, and keepalived 2.2.7 calling conntrackd's
// documented primary-backup.sh on every sync group transition. These
// helpers write their configuration into a firewall namespace's private
// directory and run them inside it; the benchmarks are in ctsync_test.go.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// ConntrackdOptions choose one node's conntrackd.conf.
type ConntrackdOptions struct {
	// SyncAddr is this node's address on the sync link (IPv4_interface:
	// conntrackd joins the group and sends from it).
	SyncAddr netip.Addr
	// Ignore are addresses whose flows are not replicated (the sync link's
	// own traffic), as in the documented example.
	Ignore []netip.Addr
	// DisableExternalCache injects received flows straight into the kernel
	// table instead of keeping them until `conntrackd -c`.
	DisableExternalCache bool
	// NetlinkBuffer, if not 0, is the kernel event socket's buffer from
	// the start (NetlinkBufferSize and NetlinkBufferSizeMaxGrowth both).
	// conntrackd 1.4.7 passes half of it to SO_RCVBUFFORCE (through
	// libnfnetlink's nfnl_rcvbufsiz), which the kernel doubles: the
	// socket holds NetlinkBuffer bytes of skbs. 0: an 8 MiB start that
	// conntrackd doubles after each overrun up to 64 MiB.
	NetlinkBuffer int
}

// Sizes given to conntrackd: socket buffers and hash limits that a
// 100k-flow storm does not exhaust, so that conntrackd is measured at its
// best rather than at its defaults. The event buffer ceiling, 64 MiB, is
// half of muros-had's: conntrackd's NetlinkBufferSize is what the socket
// holds (it passes half to SO_RCVBUFFORCE, which the kernel doubles), while
// ctsync passes its DefaultReadBuffer of 64 MiB itself (128 MiB held). The
// drain storm, which fills the buffer, gives both the same (NetlinkBuffer);
// the storms that do not fill it keep these values.
const (
	conntrackdHashSize       = 131072
	conntrackdHashLimit      = 524288
	conntrackdNetlinkBuf     = 8 << 20
	conntrackdNetlinkBufMax  = 64 << 20
	conntrackdMcastSocketBuf = 16 << 20
)

// ConntrackdConfig returns conntrackd.conf for a node whose private
// directory is dir: FTFW over multicast 225.0.0.50, port (Group) 3780 on
// sync0, TCP and UDP flows, lock file and control socket under dir, logs to
// dir/conntrackd.log.
func ConntrackdConfig(dir string, o ConntrackdOptions) string {
	var b strings.Builder
	b.WriteString("Sync {\n    Mode FTFW {\n")
	if o.DisableExternalCache {
		b.WriteString("        DisableExternalCache on\n")
	}
	b.WriteString("    }\n    Multicast {\n        IPv4_address 225.0.0.50\n        Group 3780\n")
	fmt.Fprintf(&b, "        IPv4_interface %s\n        Interface %s\n", o.SyncAddr, lab.IfSync)
	fmt.Fprintf(&b, "        SndSocketBuffer %d\n        RcvSocketBuffer %d\n", conntrackdMcastSocketBuf, conntrackdMcastSocketBuf)
	b.WriteString("        Checksum on\n    }\n}\n\n")
	b.WriteString("General {\n")
	fmt.Fprintf(&b, "    HashSize %d\n    HashLimit %d\n", conntrackdHashSize, conntrackdHashLimit)
	b.WriteString("    Syslog off\n")
	fmt.Fprintf(&b, "    LogFile %s\n", filepath.Join(dir, "conntrackd.log"))
	fmt.Fprintf(&b, "    LockFile %s\n", filepath.Join(dir, "conntrackd.lock"))
	fmt.Fprintf(&b, "    UNIX {\n        Path %s\n    }\n", filepath.Join(dir, "conntrackd.ctl"))
	nlBuf, nlBufMax := conntrackdNetlinkBuf, conntrackdNetlinkBufMax
	if o.NetlinkBuffer > 0 {
		nlBuf, nlBufMax = o.NetlinkBuffer, o.NetlinkBuffer
	}
	fmt.Fprintf(&b, "    NetlinkBufferSize %d\n    NetlinkBufferSizeMaxGrowth %d\n", nlBuf, nlBufMax)
	b.WriteString("    Filter From Userspace {\n        Protocol Accept {\n            TCP\n            UDP\n        }\n")
	b.WriteString("        Address Ignore {\n            IPv4_address 127.0.0.1\n")
	for _, a := range o.Ignore {
		fmt.Fprintf(&b, "            IPv4_address %s\n", a)
	}
	b.WriteString("        }\n    }\n}\n")
	return b.String()
}

// Conntrackd is conntrackd running in the foreground in a firewall
// namespace.
type Conntrackd struct {
	NS         *lab.Netns
	Proc       *lab.Process
	ConfigPath string
}

// StartConntrackd writes ns's conntrackd.conf and starts conntrackd inside
// ns, then waits until its control socket answers.
func StartConntrackd(ns *lab.Netns, o ConntrackdOptions) (*Conntrackd, error) {
	c := &Conntrackd{NS: ns, ConfigPath: filepath.Join(ns.Dir, "conntrackd.conf")}
	if err := os.WriteFile(c.ConfigPath, []byte(ConntrackdConfig(ns.Dir, o)), 0o600); err != nil {
		return nil, fmt.Errorf("bench: writing conntrackd.conf: %w", err)
	}
	_ = os.Remove(filepath.Join(ns.Dir, "conntrackd.lock"))
	proc, err := ns.Start("conntrackd", "-C", c.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("bench: starting conntrackd in %s: %w", ns, err)
	}
	c.Proc = proc
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Ctl("-s", "runtime"); err == nil {
			return c, nil
		}
		if proc.Exited() {
			return nil, fmt.Errorf("bench: conntrackd in %s exited at start:\n%s\n%s", ns, proc.Log(), c.logTail())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: conntrackd in %s never answered on its control socket:\n%s", ns, c.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ctl runs conntrackd's command-line client inside the node's namespace
// (it reaches the daemon through the UNIX socket named in the config).
func (c *Conntrackd) Ctl(args ...string) (string, error) {
	return c.NS.Run(append([]string{"conntrackd", "-C", c.ConfigPath}, args...)...)
}

// ExternalCacheSize returns the number of flows in conntrackd's external
// cache (what it received from the peer and has not committed), from
// `conntrackd -s cache`.
// A busy conntrackd can refuse a control connection now and then; a dead
// one is reported with its log.
func (c *Conntrackd) ExternalCacheSize() (int, error) {
	var err error
	for range 10 {
		var out string
		out, err = c.Ctl("-s", "cache")
		if err == nil {
			return ParseExternalCacheSize(out)
		}
		if c.Proc.Exited() {
			return 0, fmt.Errorf("bench: conntrackd in %s exited (%v):\n%s\n%s", c.NS, c.Proc.Wait(), c.Proc.Log(), c.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("%w\n%s", err, c.logTail())
}

// ParseExternalCacheSize reads the "current active connections" count of
// the external cache block of `conntrackd -s cache`, which prints one block
// per cache, each opened by a line `cache:<name> active objects: N` in
// conntrackd 1.4.7.
func ParseExternalCacheSize(out string) (int, error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "cache:external" && f[1] == "active" && f[2] == "objects:" {
			n, err := strconv.Atoi(f[3])
			if err != nil {
				return 0, fmt.Errorf("bench: conntrackd -s cache: %q: %w", line, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("bench: conntrackd -s cache: no external cache line in %q", out)
}

// ConntrackdRuntime is the netlink part of `conntrackd -s runtime`.
type ConntrackdRuntime struct {
	EventsReceived uint64
	Overruns       uint64 // ENOBUFS on the event socket: events lost
	KernelResyncs  uint64 // dumps of the kernel table (after an overrun)
	BufferSize     uint64 // the event socket's buffer as conntrackd set it
}

// ParseConntrackdRuntime reads `conntrackd -s runtime` of conntrackd 1.4.7,
// whose "netlink stats:" block has one "<name>:<tabs><number>" line per
// counter (dump_stats_runtime in src/run.c).
func ParseConntrackdRuntime(out string) (ConntrackdRuntime, error) {
	var r ConntrackdRuntime
	fields := map[string]*uint64{
		"events received":                &r.EventsReceived,
		"netlink overrun":                &r.Overruns,
		"resync with kernel table":       &r.KernelResyncs,
		"current buffer size (in bytes)": &r.BufferSize,
	}
	found := 0
	for _, line := range strings.Split(out, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		dst, ok := fields[strings.TrimSpace(name)]
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return r, fmt.Errorf("bench: conntrackd -s runtime: %q: %w", line, err)
		}
		*dst = v
		found++
	}
	if found != len(fields) {
		return r, fmt.Errorf("bench: conntrackd -s runtime: %d of the %d netlink counters in %q", found, len(fields), out)
	}
	return r, nil
}

// Runtime returns the node's netlink counters (`conntrackd -s runtime`).
func (c *Conntrackd) Runtime() (ConntrackdRuntime, error) {
	out, err := c.Ctl("-s", "runtime")
	if err != nil {
		return ConntrackdRuntime{}, err
	}
	return ParseConntrackdRuntime(out)
}

func (c *Conntrackd) logTail() string {
	b, err := os.ReadFile(filepath.Join(c.NS.Dir, "conntrackd.log"))
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// PrimaryBackupScript is conntrackd's documented failover script
// (primary-backup.sh in the conntrackd examples) for a node whose
// conntrackd uses conf and lock: on "primary" commit the external cache,
// flush both caches, resync the internal cache with the kernel and send a
// bulk; on "backup" start conntrackd if it is not answering, shorten the
// kernel timers and ask the peer for a resync; on "fault" shorten the
// timers. It also appends "<state> <start> <commit end> <end>" (Unix
// nanoseconds; commit end is the start for other states) to log, so the
// benchmark can tell when the commit and the whole script finished.
func PrimaryBackupScript(conf, lock, log string) string {
	return fmt.Sprintf(`#!/bin/sh
CONNTRACKD="conntrackd -C %[1]s"
start=$(date +%%s%%N)
case "$1" in
primary)
    $CONNTRACKD -c || logger "ERROR: failed to invoke conntrackd -c"
    commit=$(date +%%s%%N)
    $CONNTRACKD -f || logger "ERROR: failed to invoke conntrackd -f"
    $CONNTRACKD -R || logger "ERROR: failed to invoke conntrackd -R"
    $CONNTRACKD -B || logger "ERROR: failed to invoke conntrackd -B"
    ;;
backup)
    commit=$start
    if ! $CONNTRACKD -s >/dev/null; then
        rm -f %[2]s
        $CONNTRACKD -d || exit 1
    fi
    $CONNTRACKD -t || logger "ERROR: failed to invoke conntrackd -t"
    $CONNTRACKD -n || logger "ERROR: failed to invoke conntrackd -n"
    ;;
fault)
    commit=$start
    $CONNTRACKD -t || logger "ERROR: failed to invoke conntrackd -t"
    ;;
*)
    echo "Usage: $0 {primary|backup|fault}" >&2
    exit 1
    ;;
esac
echo "$1 $start $commit $(date +%%s%%N)" >> %[3]s
exit 0
`, conf, lock, log)
}

// KeepalivedConntrackd is keepalived whose sync group calls
// PrimaryBackupScript on every transition, beside a running conntrackd:
// the keepalived + conntrackd pair muros-had replaces.
type KeepalivedConntrackd struct {
	NS         *lab.Netns
	Keepalived *lab.Process
	Conntrackd *Conntrackd
	ScriptLog  string // the script's "<state> <start> <commit end> <end>" lines
}

// StartKeepalivedConntrackd starts conntrackd (external cache, as the
// script expects) and then keepalived (hatest.KeepalivedConfig, the same
// VIP layout as a muros-had node, with notify_master/backup/fault calling
// the script) in fw.
func StartKeepalivedConntrackd(p *lab.Pair, fw *lab.Netns, ko hatest.KeepalivedOptions, co ConntrackdOptions) (*KeepalivedConntrackd, error) {
	ct, err := StartConntrackd(fw, co)
	if err != nil {
		return nil, err
	}
	k := &KeepalivedConntrackd{NS: fw, Conntrackd: ct, ScriptLog: filepath.Join(fw.Dir, "primary-backup.log")}
	script := filepath.Join(fw.Dir, "primary-backup.sh")
	if err := os.WriteFile(script, []byte(PrimaryBackupScript(ct.ConfigPath, filepath.Join(fw.Dir, "conntrackd.lock"), k.ScriptLog)), 0o700); err != nil {
		return nil, fmt.Errorf("bench: writing primary-backup.sh: %w", err)
	}
	conf, err := KeepalivedWithScript(hatest.KeepalivedConfig(p, fw, ko, filepath.Join(fw.Dir, "keepalived.fifo")), script)
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(fw.Dir, "keepalived.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("bench: writing keepalived.conf: %w", err)
	}
	if out, err := fw.Run("keepalived", "-t", "-l", "-f", confPath); err != nil {
		return nil, fmt.Errorf("bench: keepalived rejects %s: %w\n%s", confPath, err, out)
	}
	// The same flags as hatest: foreground, console log, VRRP only, no
	// respawn of a killed child, private pid files.
	k.Keepalived, err = fw.Start("keepalived", "-n", "-l", "-D", "-G", "-P", "-R", "-f", confPath,
		"-p", filepath.Join(fw.Dir, "keepalived.pid"),
		"-r", filepath.Join(fw.Dir, "vrrp.pid"),
		"-c", filepath.Join(fw.Dir, "checkers.pid"))
	if err != nil {
		return nil, fmt.Errorf("bench: starting keepalived in %s: %w", fw, err)
	}
	return k, nil
}

// KeepalivedWithScript adds notify_master, notify_backup and notify_fault
// lines calling script to the sync group of a hatest.KeepalivedConfig, and
// to global_defs the script security keepalived 2.2.7 insists on before it
// runs scripts as root (its config test exits 6 without it).
func KeepalivedWithScript(conf, script string) (string, error) {
	const globals = "global_defs {\n"
	if !strings.HasPrefix(conf, globals) {
		return "", fmt.Errorf("bench: the keepalived config does not start with %q", strings.TrimSpace(globals))
	}
	conf = globals + "    enable_script_security\n    script_user root\n" + conf[len(globals):]
	head := "vrrp_sync_group " + hatest.KeepalivedGroup + " {\n"
	i := strings.Index(conf, head)
	if i < 0 {
		return "", fmt.Errorf("bench: no %q in the keepalived config", strings.TrimSpace(head))
	}
	i += len(head)
	notify := fmt.Sprintf("    notify_master \"%[1]s primary\"\n    notify_backup \"%[1]s backup\"\n    notify_fault \"%[1]s fault\"\n", script)
	return conf[:i] + notify + conf[i:], nil
}

// ScriptRun is one run of PrimaryBackupScript as it logged it.
type ScriptRun struct {
	State                 string
	Start, CommitEnd, End time.Time
}

// ParseScriptLog reads PrimaryBackupScript's log lines; malformed lines
// (a run cut short) are skipped.
func ParseScriptLog(b []byte) []ScriptRun {
	var runs []ScriptRun
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		var ns [3]int64
		ok := true
		for i := range ns {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			ok = ok && err == nil
			ns[i] = v
		}
		if ok {
			runs = append(runs, ScriptRun{State: f[0], Start: time.Unix(0, ns[0]), CommitEnd: time.Unix(0, ns[1]), End: time.Unix(0, ns[2])})
		}
	}
	return runs
}

// PrimaryDone returns the first "primary" run of the script that started
// at or after since.
func (k *KeepalivedConntrackd) PrimaryDone(since time.Time) (ScriptRun, bool) {
	b, err := os.ReadFile(k.ScriptLog)
	if err != nil {
		return ScriptRun{}, false
	}
	for _, r := range ParseScriptLog(b) {
		if r.State == "primary" && !r.Start.Before(since) {
			return r, true
		}
	}
	return ScriptRun{}, false
}

// Kill crashes the node's daemons: SIGKILL to keepalived's VRRP child and
// parent (no priority 0 advert) and to conntrackd.
func (k *KeepalivedConntrackd) Kill() error {
	if b, err := os.ReadFile(filepath.Join(k.NS.Dir, "vrrp.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	err := k.Keepalived.Kill()
	if err2 := k.Conntrackd.Proc.Kill(); err == nil {
		err = err2
	}
	return err
}

// WaitVIP waits until addr is configured in ns (the node claimed the VIP).
func WaitVIP(ctx context.Context, ns *lab.Netns, addr netip.Addr) error {
	for {
		if ok, err := hatest.HasAddr(ns, addr); err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: %s never held %s: %w", ns, addr, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
