// Command demo is the one-command tour of muros-had (`make demo`): it builds
// the daemon, brings up the lab pair of package lab (two firewalls, a LAN
// client and a WAN server in network namespaces of their own), runs
// muros-had on both firewalls as a real pair runs (fw1 master, fw2 backup;
// RFC 9568 VRRPv3 inside IPsec AH by default; conntrack sync and DB sync on,
// the DB sync certificates pinned with `muros-had fingerprint`), shows who
// owns the virtual IPs, opens a TCP session through the VIPs and writes a
// file into fw1's replicated DB, and then measures what a client sending a
// UDP datagram through the VIPs every millisecond sees in two failovers:
//
//  1. crash: fw1's links go down and its daemon gets SIGKILL; fw2 takes over
//     after Master_Down_Interval (RFC 9568 section 6.1: 3 x interval + skew),
//     and the TCP session goes on through fw2 (its conntrack entry was
//     replicated), as does the DB file (it was pushed);
//  2. graceful stop: fw1 (back as master once its replications caught up)
//     gets SIGTERM, sends priority 0 and releases the VIPs; fw2 takes over
//     after Skew_Time.
//
// It ends with a table of what moved and how long each took.
//
// Everything happens inside namespaces the demo creates and deletes, also on
// Ctrl-C (lab.CloseOnSignal). It exits 0 when both failovers moved the VIPs
// and traffic came back, non-zero with the reason otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/muros/muros-had/config"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the demo's flags.
type options struct {
	bin      string
	interval time.Duration
	auth     string
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "bin", "", "muros-had `binary` to run (default: build it into a temporary directory)")
	fs.DurationVar(&o.interval, "interval", 100*time.Millisecond, "VRRP advert `interval` (10ms .. 40.95s)")
	fs.StringVar(&o.auth, "auth", "ah", "VRRP authentication: ah | keepalived-ah | none")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.interval < 10*time.Millisecond || o.interval > 40950*time.Millisecond {
		fmt.Fprintf(stderr, "demo: --interval %v is outside 10ms .. 40.95s\n", o.interval)
		return 2
	}
	if o.interval > 2*time.Second {
		fmt.Fprintf(stderr, "demo: note: with --interval %v the crash round alone takes over %v\n", o.interval, 4*o.interval)
	}
	d := &demo{out: stdout, opts: o, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))}
	if err := d.run(); err != nil {
		fmt.Fprintf(stderr, "\ndemo FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "\ndemo OK: both failovers moved the VIPs to fw2 and the client's traffic came back; the TCP session and the DB change survived the crash.")
	return 0
}

type demo struct {
	out  io.Writer
	opts options
	rng  *rand.Rand
	bin  string
	pair *lab.Pair
}

func (d *demo) step(format string, a ...any) {
	fmt.Fprintf(d.out, "\n== "+format+"\n", a...)
}

func (d *demo) run() (err error) {
	if err := lab.Check(); err != nil {
		return fmt.Errorf("prerequisites: %w (run as root after scripts/install-deps.sh, e.g. `sudo make demo`)", err)
	}
	start := time.Now()

	d.bin = d.opts.bin
	if d.bin == "" {
		d.step("building muros-had")
		dir, err := os.MkdirTemp("", "muros-had-demo")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if d.bin, err = hatest.BuildBinary(dir); err != nil {
			return err
		}
	}

	d.step("building the lab: client -- LAN bridge -- fw1/fw2 -- WAN bridge -- server, fw1 <-sync link-> fw2")
	p, err := lab.NewPair(lab.Options{})
	if err != nil {
		return fmt.Errorf("lab pair: %w", err)
	}
	d.pair = p
	stopSignals := lab.CloseOnSignal(p)
	defer func() {
		stopSignals()
		if cerr := p.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("tearing the lab down: %w", cerr)
		}
		fmt.Fprintf(d.out, "\n== lab torn down (namespaces deleted) after %.1f s\n", time.Since(start).Seconds())
	}()
	fmt.Fprintf(d.out, "namespaces: %s %s %s %s %s\n", p.Client, p.FW1, p.FW2, p.Server, p.Switch)
	fmt.Fprintf(d.out, "LAN VIP %s, WAN VIP %s; client %s routes via the LAN VIP, server %s via the WAN VIP\n",
		p.LANVIP, p.WANVIP, p.ClientAddr.Addr(), p.ServerAddr.Addr())

	d.step("starting muros-had: fw1 role master (priority 150), fw2 role backup (priority 100), adverts every %v, auth %s, conntrack sync and DB sync on", d.opts.interval, d.opts.auth)
	nodeOpts := hatest.NodeOptions{Interval: d.opts.interval, Auth: d.opts.auth, Extra: "conntrack:\n  enabled: true\n", LivenessDetect: config.DefaultLivenessDetect}
	o1, o2 := nodeOpts, nodeOpts
	o1.Role, o2.Role = "master", "backup"
	n1, n2, err := hatest.StartPairWithDBSync(d.bin, p, o1, o2)
	if err != nil {
		return err
	}
	settle := settleTimeout(d.opts.interval)
	if err := d.waitStates(n1, n2, settle); err != nil {
		return err
	}
	if err := d.waitReady(n2, settle); err != nil {
		return err
	}
	if err := d.showOwnership(n1, n2); err != nil {
		return err
	}

	d.step("state that must survive a takeover: a TCP session through the VIPs, a file in fw1's replicated DB")
	stream, err := p.StartTCPStream(lab.TCPStreamOptions{Duration: 5 * time.Minute})
	if err != nil {
		return err
	}
	defer stream.Stop()
	ctTook, err := d.waitStreamEntry(p.FW2, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "client %s -> server %s:%d, 1 KiB every 1 ms; its conntrack entry reached fw2's kernel %.1f ms after the connect\n",
		p.ClientAddr.Addr(), p.ServerAddr.Addr(), lab.DefaultProbePort, ms(ctTook))
	db1, _ := hatest.DBPaths(p.FW1)
	db2, _ := hatest.DBPaths(p.FW2)
	content := "rule 42: accept tcp from lan to dmz port 22 (written on fw1 at " + time.Now().UTC().Format(time.RFC3339Nano) + ")\n"
	dbTook, err := d.replicateFile(filepath.Join(db1, "rules.conf"), filepath.Join(db2, "rules.conf"), content, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "[fw1]# echo ... > %s\n[fw2]# cat %s  (there %.1f ms later)\n    %s",
		filepath.Join(db1, "rules.conf"), filepath.Join(db2, "rules.conf"), ms(dbTook), content)

	b := lab.Targets(d.opts.interval, 100)
	d.step("round 1: crash of the master (fw1 frozen, links down, SIGKILL: no priority 0) while the client probes every 1 ms")
	fmt.Fprintf(d.out, "expected: fw2 takes over after Master_Down_Interval = 3 x %v + skew %v = %v after fw1's last advert\n",
		d.opts.interval, b.Skew.Round(time.Millisecond), b.MasterDown.Round(time.Millisecond))
	res, err := d.probeAround(b.MasterDown, func() error {
		// A dead box sends nothing: frozen first, or the daemon would see
		// its links go down and leave through FAULT with priority 0.
		return n1.Crash(p)
	})
	if err != nil {
		return err
	}
	if err := n2.WaitState("MASTER", settle); err != nil {
		return fmt.Errorf("after the crash: %w\nlog of fw2:\n%s", err, tail(n2.Proc.Log(), 30))
	}
	if err := d.report("crash", res, b.CrashTarget); err != nil {
		return err
	}
	crashGap := res.Gap
	time.Sleep(time.Second) // the session runs on through fw2
	tcp := stream.Stop()
	fmt.Fprintf(d.out, "TCP session: %d KiB sent, %d KiB echoed, longest stall %.1f ms, silent at the end for %.1f ms, reset %v, corrupt %v\n",
		tcp.Sent/1024, tcp.Echoed/1024, ms(tcp.MaxStall), ms(tcp.LastEchoAge), tcp.Reset, tcp.Corrupt)
	tcpSurvived := !tcp.Reset && !tcp.Corrupt && tcp.Err == nil && tcp.LastEchoAge < 500*time.Millisecond && tcp.Echoed > 0
	if !tcpSurvived {
		return fmt.Errorf("the TCP session did not survive the takeover (%+v)\nlog of fw2:\n%s", tcp, tail(n2.Proc.Log(), 30))
	}
	if got, err := os.ReadFile(filepath.Join(db2, "rules.conf")); err != nil || string(got) != content {
		return fmt.Errorf("fw2, now master, lost the replicated DB file: %q, %v", got, err)
	}
	fmt.Fprintln(d.out, "fw2 serves the session it never saw opened (the replicated entry) and holds fw1's DB change")
	if err := d.showStatus(n2); err != nil {
		return err
	}

	d.step("fw1 comes back (links up, daemon restarted, like a rebooted box) and preempts")
	// A rebooted box has none of the addresses SIGKILL left behind.
	for _, v := range []struct {
		ifName string
		vip    netip.Prefix
	}{{lab.IfLAN, p.LANVIP}, {lab.IfWAN, p.WANVIP}} {
		if has, _ := hatest.HasAddr(p.FW1, v.vip.Addr()); has {
			if err := p.FW1.DelAddr(v.ifName, v.vip); err != nil {
				return err
			}
		}
	}
	if err := p.RestoreNode(p.FW1); err != nil {
		return err
	}
	if err := n1.Start(d.bin); err != nil {
		return err
	}
	back := time.Now()
	// It takes the VIPs back only once it holds fw2's table and DB.
	if err := d.waitStates(n1, n2, settle+30*time.Second); err != nil {
		return err
	}
	preempted := time.Since(back)
	fmt.Fprintf(d.out, "fw1 preempted %.1f s after its restart, once its conntrack bulk and DB sync from fw2 were complete\n", preempted.Seconds())
	if err := p.FlushNeighbours(); err != nil {
		return err
	}
	fmt.Fprintln(d.out, "fw1 is MASTER again, fw2 BACKUP; client and server neighbour caches flushed")

	d.step("round 2: graceful stop of the master (SIGTERM: priority 0 advert, VIPs released), then fw1 powers off")
	fmt.Fprintf(d.out, "expected: fw2 takes over after Skew_Time = %v\n", b.Skew.Round(time.Millisecond))
	// Without the power-off the client would see nothing at all: fw1 keeps
	// forwarding frames sent to its MAC until the client and the server
	// learn fw2's from its gratuitous ARP.
	res, err = d.probeAround(b.Skew, func() error {
		if err := n1.Stop(); err != nil {
			return err
		}
		return p.CrashNode(p.FW1)
	})
	if err != nil {
		return err
	}
	if err := n2.WaitState("MASTER", settle); err != nil {
		return fmt.Errorf("after the graceful stop: %w\nlog of fw2:\n%s", err, tail(n2.Proc.Log(), 30))
	}
	if err := d.report("graceful stop", res, b.GracefulTarget); err != nil {
		return err
	}
	if err := d.showStatus(n2); err != nil {
		return err
	}
	if err := d.showAddrs(); err != nil {
		return err
	}
	d.step("what moved, and how long it took")
	fmt.Fprintf(d.out, "%-44s %s\n", "what", "time")
	for _, r := range []struct {
		what string
		took time.Duration
	}{
		{"TCP session's conntrack entry, fw1 -> fw2", ctTook},
		{"file in the replicated DB, fw1 -> fw2", dbTook},
		{"VIPs after fw1's crash (client's longest gap)", crashGap},
		{"TCP session across the crash (longest stall)", tcp.MaxStall},
		{"fw1 back as MASTER after its restart", preempted},
		{"VIPs at fw1's graceful stop (client's gap)", res.Gap},
	} {
		fmt.Fprintf(d.out, "%-44s %9.1f ms\n", r.what, ms(r.took))
	}
	return nil
}

// waitReady waits until the backup's replications are complete (its
// preemption is no longer held): only then is a takeover lossless.
func (d *demo) waitReady(n *hatest.Node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := n.Status(context.Background())
		var ct *status.ConntrackStatus
		if err == nil {
			ct, err = n.ConntrackStatus(context.Background())
		}
		if err == nil && st.Readiness != nil && !st.Readiness.Held && ct != nil && ct.BulkSynced {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fw2's replications not complete after %v (status %+v, err %v)\nlog of fw2:\n%s", timeout, st.Readiness, err, tail(n.Proc.Log(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStreamEntry waits until fw holds the TCP stream's established,
// assured conntrack entry and returns how long that took.
func (d *demo) waitStreamEntry(fw *lab.Netns, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		flows, err := hatest.ForwardedFlows(d.pair, fw)
		if err != nil {
			return 0, err
		}
		for _, f := range flows {
			if f.Proto == 6 && f.OrigDst.Port() == lab.DefaultProbePort && f.TCPState == hatest.TCPEstablished {
				return time.Since(start), nil
			}
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("the TCP session's entry did not reach %s within %v (its flows: %v)", fwName(d.pair, fw), timeout, flows)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// replicateFile writes content to from (on the master) and waits until to
// (on the backup) holds it; it returns how long that took.
func (d *demo) replicateFile(from, to, content string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := os.WriteFile(from, []byte(content), 0o644); err != nil {
		return 0, err
	}
	for {
		if got, err := os.ReadFile(to); err == nil && string(got) == content {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("%s did not reach %s within %v", from, to, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitStates waits for fw1 MASTER and fw2 BACKUP.
func (d *demo) waitStates(n1, n2 *hatest.Node, timeout time.Duration) error {
	if err := n1.WaitState("MASTER", timeout); err != nil {
		return fmt.Errorf("%w\nlog of fw1:\n%s", err, tail(n1.Proc.Log(), 30))
	}
	if err := n2.WaitState("BACKUP", timeout); err != nil {
		return fmt.Errorf("%w\nlog of fw2:\n%s", err, tail(n2.Proc.Log(), 30))
	}
	return nil
}

func (d *demo) showOwnership(nodes ...*hatest.Node) error {
	for _, n := range nodes {
		if err := d.showStatus(n); err != nil {
			return err
		}
	}
	return d.showAddrs()
}

// showStatus runs `muros-had status` inside the node's namespace, as an
// operator on that box would.
func (d *demo) showStatus(n *hatest.Node) error {
	fmt.Fprintf(d.out, "\n[%s]# muros-had status --config %s\n", fwName(d.pair, n.NS), n.ConfigPath)
	out, err := n.NS.Run(d.bin, "status", "--config", n.ConfigPath)
	if err != nil {
		return fmt.Errorf("muros-had status in %s: %w", n.NS, err)
	}
	fmt.Fprint(d.out, indent(out))
	return nil
}

// showAddrs prints `ip -br addr` of the VIP interfaces of both firewalls
// and checks that exactly one of them holds the VIPs.
func (d *demo) showAddrs() error {
	p := d.pair
	owners := 0
	for _, fw := range p.Firewalls() {
		fmt.Fprintf(d.out, "\n[%s]# ip -br addr show dev %s; ip -br addr show dev %s\n", fwName(p, fw), lab.IfLAN, lab.IfWAN)
		for _, ifName := range []string{lab.IfLAN, lab.IfWAN} {
			out, err := fw.Run("ip", "-br", "addr", "show", "dev", ifName)
			if err != nil {
				return err
			}
			fmt.Fprint(d.out, indent(out))
		}
		lan, err := hatest.HasAddr(fw, p.LANVIP.Addr())
		if err != nil {
			return err
		}
		wan, err := hatest.HasAddr(fw, p.WANVIP.Addr())
		if err != nil {
			return err
		}
		if lan != wan {
			return fmt.Errorf("%s holds only one of the two VIPs (LAN %v, WAN %v): the sync group split", fwName(p, fw), lan, wan)
		}
		if lan {
			owners++
		}
	}
	if owners != 1 {
		return fmt.Errorf("%d firewalls hold the VIPs, want exactly 1", owners)
	}
	return nil
}

// probeAround probes through the VIPs for long enough to see a takeover that
// should need about expect, and calls trigger one second into the run at a
// random phase of the advert timer (otherwise the gap would lock to the
// start-up timing). It returns what the client saw.
func (d *demo) probeAround(expect time.Duration, trigger func() error) (lab.FailoverOutcome, error) {
	lead := time.Second + time.Duration(d.rng.Int64N(int64(d.opts.interval)))
	dur := lead + 2*expect + time.Second
	var trigAt, trigDone time.Time
	var trigErr error
	ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Second)
	defer cancel()
	res, err := d.pair.ProbeUDP(ctx, false, lab.UDPProbeOptions{
		Duration: dur,
		Drain:    300 * time.Millisecond,
		During: func() {
			time.Sleep(lead)
			trigAt = time.Now()
			trigErr = trigger()
			trigDone = time.Now()
		},
	})
	if err != nil {
		return lab.FailoverOutcome{}, fmt.Errorf("prober: %w", err)
	}
	if trigErr != nil {
		return lab.FailoverOutcome{}, trigErr
	}
	return lab.Outcome(res, trigAt.Sub(res.Start), trigDone.Sub(res.Start)), nil
}

// report prints what the client saw and fails when the path did not come
// back. A gap above the target is reported, not fatal: the demo shows the
// behaviour, bench/ measures it.
func (d *demo) report(what string, o lab.FailoverOutcome, target time.Duration) error {
	fmt.Fprintf(d.out, "client: answered %d, lost %d; longest silence %.1f ms, starting %.1f ms after the %s began (%.1f ms to carry it out)\n",
		o.Received, o.Lost, ms(o.Gap), ms(o.GapFrom-o.Trigger), what, ms(o.TriggerDone-o.Trigger))
	if err := o.Err(); errors.Is(err, lab.ErrGapNotAtEvent) {
		// The takeover happened (the caller checks the new owner), but
		// this machine stalled for longer somewhere else in the run.
		fmt.Fprintf(d.out, "note: the failover gap was shorter than the longest stall elsewhere in the run, so it is below what this machine resolves now (%v)\n", err)
		return nil
	} else if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	verdict := "within"
	if o.Gap > target {
		verdict = "ABOVE"
	}
	fmt.Fprintf(d.out, "client-visible failover gap: %.1f ms (%s the target of %.1f ms; prober resolution ~1 ms, sender lag up to %.1f ms)\n",
		ms(o.Gap), verdict, ms(target), ms(o.SendLag))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fwName(p *lab.Pair, ns *lab.Netns) string {
	switch ns {
	case p.FW1:
		return "fw1"
	case p.FW2:
		return "fw2"
	}
	return ns.Name
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// settleTimeout bounds an election: Master_Down_Interval at the slowest is
// under 4 intervals, plus start-up.
func settleTimeout(interval time.Duration) time.Duration {
	return 5*time.Second + 4*interval
}
