package hatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/lab"
)

// Keepalived auth modes of KeepalivedOptions.Auth. They are the two modes
// muros-had speaks with keepalived: "keepalived-ah" is keepalived's VRRPv2
// "auth_type AH" (muros-had auth: keepalived-ah), "none" is unauthenticated
// VRRPv3 (muros-had auth: none).
const (
	KeepalivedAuthAH   = "keepalived-ah"
	KeepalivedAuthNone = "none"
)

// keepalivedKeyLen is how much of the password keepalived's AH uses; its
// config test rejects a longer auth_pass, so the helper cuts it exactly as
// muros-had does (config.KeepalivedAHKeyLen).
const keepalivedKeyLen = 8

// KeepalivedOptions choose the configuration of a keepalived node. Zero
// values take the defaults noted; they mirror NodeOptions so a keepalived
// node and a muros-had node built from the same values pair up.
type KeepalivedOptions struct {
	Role     string // master | backup: priority 150 | 100, as muros-had
	Priority int    // overrides the role's priority when non-zero (1..254)
	Password string // default DefaultPassword; keepalived uses the first 8 bytes
	// Auth is KeepalivedAuthAH (default: VRRPv2, whole seconds) or
	// KeepalivedAuthNone (VRRPv3, no authentication).
	Auth string
	// Interval is the advert interval: default 1s with keepalived-ah
	// (VRRPv2 carries whole seconds only), 100ms with none.
	Interval time.Duration
	// NoPreempt sets nopreempt on every instance.
	NoPreempt bool
	// Binary is the keepalived executable: default "keepalived" (Debian's
	// 2.2.7); the benchmarks name a build from source here.
	Binary string
	// Global are extra global_defs lines (vrrp_down_timer_adverts 1),
	// Instance extra lines of every vrrp_instance (track_bfd), TopLevel
	// blocks written before the sync group and the instances, which may
	// refer to them (bfd_instance).
	// SyncGroup are extra lines of the sync group
	// (sync_group_tracking_weight, without which keepalived ignores a
	// weighted track in a group's instance).
	Global, Instance, SyncGroup []string
	TopLevel                    string
}

func (o KeepalivedOptions) withDefaults() KeepalivedOptions {
	if o.Password == "" {
		o.Password = DefaultPassword
	}
	if o.Auth == "" {
		o.Auth = KeepalivedAuthAH
	}
	if o.Interval == 0 {
		o.Interval = 100 * time.Millisecond
		if o.Auth == KeepalivedAuthAH {
			o.Interval = time.Second
		}
	}
	if o.Binary == "" {
		o.Binary = "keepalived"
	}
	if o.Priority == 0 {
		o.Priority = 100
		if o.Role == "master" {
			o.Priority = 150
		}
	}
	return o
}

func (o KeepalivedOptions) check() error {
	switch o.Role {
	case "master", "backup":
	default:
		return fmt.Errorf("hatest: keepalived role %q, want master or backup", o.Role)
	}
	if o.Priority < 1 || o.Priority > 254 {
		return fmt.Errorf("hatest: keepalived priority %d outside 1..254", o.Priority)
	}
	switch o.Auth {
	case KeepalivedAuthAH:
		if o.Interval%time.Second != 0 || o.Interval < time.Second || o.Interval > 255*time.Second {
			return fmt.Errorf("hatest: keepalived-ah (VRRPv2) needs a whole-second interval 1s..255s, not %s", o.Interval)
		}
		if strings.ContainsAny(o.Password, "#!\"'\\ \t\n") {
			return fmt.Errorf("hatest: password %q cannot be written into keepalived.conf", o.Password)
		}
	case KeepalivedAuthNone:
		// keepalived silently falls back to 1 s below 10 ms.
		if o.Interval%(10*time.Millisecond) != 0 || o.Interval < 10*time.Millisecond || o.Interval > 40950*time.Millisecond {
			return fmt.Errorf("hatest: VRRPv3 interval %s must be a multiple of 10ms in 10ms..40.95s", o.Interval)
		}
	default:
		return fmt.Errorf("hatest: keepalived auth %q, want %q or %q", o.Auth, KeepalivedAuthAH, KeepalivedAuthNone)
	}
	return nil
}

// KeepalivedGroup is the vrrp_sync_group name in KeepalivedConfig.
const KeepalivedGroup = "MUROS"

// KeepalivedConfig returns the keepalived.conf of fw in p for o (after
// defaults): the VIP layout of Config, as an operator would write it for a
// keepalived node paired with muros-had. One vrrp_instance per VIP, VRID 10
// for the WAN VIP on wan0 and 11 for the LAN VIP on lan0 (muros-had's
// default VRIDs in list order), adverts on sync0 (not tracked: see
// dont_track_primary below), every VIP interface tracked, both instances in the sync group KeepalivedGroup, initial state
// BACKUP (the priority decides the election, as for muros-had, and a
// starting keepalived hears the peer's AH sequence number before it sends
// its own), and state changes written to notifyFIFO.
func KeepalivedConfig(p *lab.Pair, fw *lab.Netns, o KeepalivedOptions, notifyFIFO string) string {
	o = o.withDefaults()
	version := 3
	if o.Auth == KeepalivedAuthAH {
		version = 2
	}
	var b strings.Builder
	fmt.Fprintf(&b, "global_defs {\n    router_id %s\n", strings.ReplaceAll(fw.Name, "-", "_"))
	fmt.Fprintf(&b, "    vrrp_version %d\n", version)
	// Announce the VIPs three times at once and never again after a delay:
	// the same burst shape as muros-had's default GARP schedule.
	b.WriteString("    vrrp_garp_master_delay 0\n    vrrp_garp_master_repeat 3\n    vrrp_garp_interval 0.01\n")
	for _, l := range o.Global {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	fmt.Fprintf(&b, "    vrrp_notify_fifo %s\n}\n\n", notifyFIFO)
	b.WriteString(o.TopLevel)
	fmt.Fprintf(&b, "vrrp_sync_group %s {\n    group {\n        WAN\n        LAN\n    }\n", KeepalivedGroup)
	for _, l := range o.SyncGroup {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	b.WriteString("}\n")
	for _, inst := range []struct {
		name, ifName string
		vrid         int
		vip          string
	}{
		{"WAN", lab.IfWAN, 10, p.WANVIP.String()},
		{"LAN", lab.IfLAN, 11, p.LANVIP.String()},
	} {
		fmt.Fprintf(&b, "\nvrrp_instance %s {\n    state BACKUP\n    interface %s\n", inst.name, lab.IfSync)
		fmt.Fprintf(&b, "    virtual_router_id %d\n    version %d\n    priority %d\n", inst.vrid, version, o.Priority)
		fmt.Fprintf(&b, "    advert_int %s\n", strconv.FormatFloat(o.Interval.Seconds(), 'f', -1, 64))
		if o.NoPreempt {
			b.WriteString("    nopreempt\n")
		}
		// dont_track_primary: the adverts' interface is the direct sync
		// veth, whose carrier drops when the peer box dies; keepalived
		// would go FAULT on it and never take over. muros-had tracks only
		// the VIP interfaces, and so does this configuration.
		b.WriteString("    dont_track_primary\n")
		fmt.Fprintf(&b, "    track_interface {\n        %s\n        %s\n    }\n", lab.IfWAN, lab.IfLAN)
		for _, l := range o.Instance {
			fmt.Fprintf(&b, "    %s\n", l)
		}
		if o.Auth == KeepalivedAuthAH {
			pass := o.Password
			if len(pass) > keepalivedKeyLen {
				pass = pass[:keepalivedKeyLen]
			}
			fmt.Fprintf(&b, "    authentication {\n        auth_type AH\n        auth_pass \"%s\"\n    }\n", pass)
		}
		fmt.Fprintf(&b, "    virtual_ipaddress {\n        %s dev %s\n    }\n}\n", inst.vip, inst.ifName)
	}
	return b.String()
}

// Keepalived is keepalived 2.2.7 (VRRP subsystem only) running as one
// firewall of a lab.Pair. Its state is what keepalived itself reports on
// its notify FIFO (lines such as `GROUP "MUROS" MASTER 0`), read without a
// goroutine: keepalived opens the FIFO O_RDWR|O_NONBLOCK (lib/notify.c) and
// our read end stays open across its restarts, so the lines wait in the
// pipe until State drains them. The helper creates the FIFO itself, so
// keepalived never unlinks it on exit.
type Keepalived struct {
	NS         *lab.Netns
	Proc       *lab.Process
	ConfigPath string
	FIFOPath   string
	Options    KeepalivedOptions // after defaults

	mu      sync.Mutex
	fifo    int      // read end, non-blocking raw fd (os.File would park on the poller); -1 once closed
	partial []byte   // an incomplete last line
	state   string   // last group state reported
	history []string // every group state reported, in order
}

// StartKeepalived writes fw's keepalived.conf (KeepalivedConfig) into
// fw.Dir, validates it with `keepalived -t` and starts keepalived inside
// fw. The caller stops it with Stop or Kill; closing the namespace kills it
// too.
func StartKeepalived(p *lab.Pair, fw *lab.Netns, o KeepalivedOptions) (*Keepalived, error) {
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return nil, err
	}
	if fw != p.FW1 && fw != p.FW2 {
		return nil, fmt.Errorf("hatest: %s is not a firewall of the pair", fw)
	}
	k := &Keepalived{
		fifo:       -1,
		NS:         fw,
		ConfigPath: filepath.Join(fw.Dir, "keepalived.conf"),
		FIFOPath:   filepath.Join(fw.Dir, "keepalived.fifo"),
		Options:    o,
	}
	if err := os.WriteFile(k.ConfigPath, []byte(KeepalivedConfig(p, fw, o, k.FIFOPath)), 0o600); err != nil {
		return nil, fmt.Errorf("hatest: writing keepalived.conf: %w", err)
	}
	if out, err := fw.Run(o.Binary, "-t", "-l", "-f", k.ConfigPath); err != nil {
		return nil, fmt.Errorf("hatest: keepalived rejects %s: %w\n%s", k.ConfigPath, err, out)
	}
	if err := unix.Mkfifo(k.FIFOPath, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("hatest: mkfifo %s: %w", k.FIFOPath, err)
	}
	// Non-blocking: the open does not wait for a writer and a read of an
	// empty pipe returns EAGAIN instead of waiting.
	fd, err := unix.Open(k.FIFOPath, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hatest: opening %s: %w", k.FIFOPath, err)
	}
	k.fifo = fd
	if err := k.Start(); err != nil {
		k.closeFIFO()
		return nil, err
	}
	return k, nil
}

// Start (re)starts keepalived with the node's configuration. The state
// reads "" until the new process reports one.
func (k *Keepalived) Start() error {
	k.mu.Lock()
	k.drainLocked()
	k.state = ""
	k.mu.Unlock()
	for _, f := range []string{"keepalived.pid", "vrrp.pid", "checkers.pid", "bfd.pid"} {
		_ = os.Remove(filepath.Join(k.NS.Dir, f))
	}
	// -n foreground, -l -D detailed log to the console (the process log),
	// -G no syslog, -P VRRP only, -R no respawn of a killed VRRP child
	// (Kill is a crash, not a restart); private pid files so several keepalived
	// processes on one host never collide (-b: the BFD child's, which -P
	// leaves running when the configuration has a bfd_instance).
	proc, err := k.NS.Start(k.Options.Binary, "-n", "-l", "-D", "-G", "-P", "-R", "-f", k.ConfigPath,
		"-p", filepath.Join(k.NS.Dir, "keepalived.pid"),
		"-r", filepath.Join(k.NS.Dir, "vrrp.pid"),
		"-c", filepath.Join(k.NS.Dir, "checkers.pid"),
		"-b", filepath.Join(k.NS.Dir, "bfd.pid"))
	if err != nil {
		return fmt.Errorf("hatest: starting keepalived in %s: %w", k.NS, err)
	}
	k.Proc = proc
	return nil
}

// State returns the sync group's state as keepalived last reported it:
// MASTER, BACKUP, FAULT, STOP, or "" before its first report.
func (k *Keepalived) State() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drainLocked()
	return k.state
}

// History returns every group state keepalived reported since
// StartKeepalived, in order (restarts included).
func (k *Keepalived) History() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drainLocked()
	return append([]string(nil), k.history...)
}

func (k *Keepalived) drainLocked() {
	if k.fifo < 0 {
		return
	}
	var buf [4096]byte
	for {
		n, err := unix.Read(k.fifo, buf[:])
		if err == unix.EINTR {
			continue
		}
		if n <= 0 || err != nil {
			break // EAGAIN: drained; 0: no writer (keepalived not running)
		}
		k.partial = append(k.partial, buf[:n]...)
	}
	for {
		i := bytes.IndexByte(k.partial, '\n')
		if i < 0 {
			break
		}
		if st, ok := ParseKeepalivedNotify(string(k.partial[:i])); ok {
			k.state = st
			k.history = append(k.history, st)
		}
		k.partial = k.partial[i+1:]
	}
}

// ParseKeepalivedNotify returns the state of a notify FIFO line about the
// sync group KeepalivedGroup: `GROUP "MUROS" MASTER 0` gives MASTER. Lines
// about instances (`INSTANCE "LAN" MASTER 150`) or anything else give false.
func ParseKeepalivedNotify(line string) (state string, ok bool) {
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "GROUP" || f[1] != strconv.Quote(KeepalivedGroup) {
		return "", false
	}
	return f[2], true
}

// WaitState waits until keepalived reports the group in state (MASTER,
// BACKUP, FAULT) or timeout passes; it fails at once if keepalived exits.
func (k *Keepalived) WaitState(state string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		last := k.State()
		if last == state {
			return nil
		}
		if k.Proc.Exited() {
			return fmt.Errorf("hatest: keepalived in %s exited (state %q), want %s:\n%s", k.NS, last, state, k.Proc.Log())
		}
		select {
		case <-ctx.Done():
			if last == "" {
				last = "unreported"
			}
			return fmt.Errorf("hatest: keepalived in %s stayed %s, want %s after %s", k.NS, last, state, timeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Log returns what keepalived has logged so far (its console log).
func (k *Keepalived) Log() string { return k.Proc.Log() }

// Stop sends SIGTERM and waits for keepalived to exit: it sends priority 0
// adverts and removes its VIPs, so the peer takes over at skew time.
func (k *Keepalived) Stop() error {
	err := k.Proc.Stop(5 * time.Second)
	k.drain()
	return err
}

// Kill ends keepalived with SIGKILL on its VRRP child and then the parent:
// no priority 0 advert, VIPs left behind (a crashed box, with lab
// CrashNode). The child goes first because keepalived sets
// PR_SET_PDEATHSIG to SIGTERM in it: killing only the parent would make
// the child shut down gracefully, and -R keeps the parent from respawning
// it in between.
func (k *Keepalived) Kill() error {
	pid := k.Proc.Pid()
	children := vrrpChildren(k.NS.Dir, pid)
	if len(children) == 0 && !k.Proc.Exited() {
		return fmt.Errorf("hatest: keepalived %d in %s has no VRRP child to kill", pid, k.NS)
	}
	for _, c := range children {
		if err := unix.Kill(c, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("hatest: killing keepalived's VRRP child %d: %w", c, err)
		}
	}
	err := k.Proc.Kill()
	k.drain()
	return err
}

// vrrpChildren returns the pids of keepalived's children: from
// /proc/PID/task/PID/children, else from the VRRP pid file.
func vrrpChildren(dir string, pid int) []int {
	var pids []int
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		b, _ = os.ReadFile(filepath.Join(dir, "vrrp.pid"))
	}
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil && c > 0 {
			pids = append(pids, c)
		}
	}
	return pids
}

func (k *Keepalived) drain() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.drainLocked()
}

// Close releases the FIFO reader. It does not stop keepalived.
func (k *Keepalived) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.closeFIFOLocked()
}

func (k *Keepalived) closeFIFO() {
	k.mu.Lock()
	defer k.mu.Unlock()
	_ = k.closeFIFOLocked()
}

func (k *Keepalived) closeFIFOLocked() error {
	if k.fifo < 0 {
		return nil
	}
	k.drainLocked()
	err := unix.Close(k.fifo)
	k.fifo = -1
	if err != nil {
		return fmt.Errorf("hatest: closing %s: %w", k.FIFOPath, err)
	}
	return nil
}
