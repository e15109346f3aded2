package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/muros/muros-had/config"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

var (
	repsFlag = flag.Int("failover.reps", 5, "failovers measured per case (at least; -benchtime=Nx raises it)")
	cpuFlag  = flag.Duration("failover.cpu", 10*time.Second, "idle CPU sampling window")
	cutFlag  = flag.Duration("failover.cutwindow", 3*time.Second, "how long the sync link stays cut in the cut case (the split brain, gap and TCP stall are measured over it)")
	// keepalivedSourceFlag names a keepalived built from its source by
	// bench/keepalived-source.sh (2.4.3); without it those cases are left
	// out, the rest run.
	keepalivedSourceFlag = flag.String("keepalived.source", os.Getenv("KEEPALIVED_SOURCE_BIN"),
		"keepalived binary built from source (bench/keepalived-source.sh), run with vrrp_down_timer_adverts 1; empty (and KEEPALIVED_SOURCE_BIN unset): its cases are left out")
)

// errUnmeasured marks a failover run that says nothing about the failover
// (see lab.FailoverOutcome.Err): the backup did take over, but the prober's view
// was swamped by a stall of the machine.
var errUnmeasured = errors.New("run did not measure the failover")

// binary is muros-had, built once for the package by TestMain.
var binary string

func TestMain(m *testing.M) {
	if spec := os.Getenv(floorReceiverEnv); spec != "" {
		// BenchmarkIdleFloor's Go receiver, run in its namespace.
		os.Exit(runFloorReceiver(spec))
	}
	flag.Parse()
	os.Exit(hatest.MainWithBinary(m, &binary))
}

// node is what a failover needs of a VRRP daemon on a firewall: both
// *hatest.Node and *hatest.Keepalived are one.
type node interface {
	WaitState(state string, timeout time.Duration) error
	Stop() error
	Kill() error
}

// impl is a VRRP implementation with its settings.
type impl struct {
	name  string
	start func(p *lab.Pair, fw *lab.Netns, role string, interval time.Duration) (node, error)
}

func murosHad(auth string) impl {
	return impl{
		name: "muros-had-" + auth,
		start: func(p *lab.Pair, fw *lab.Netns, role string, interval time.Duration) (node, error) {
			return hatest.StartNode(binary, p, fw, hatest.NodeOptions{Role: role, Auth: auth, Interval: interval, LivenessDetect: config.DefaultLivenessDetect})
		},
	}
}

// keepalivedV3 is keepalived 2.2.7 with VRRPv3 and no authentication, the
// only keepalived mode with sub-second adverts.
var keepalivedV3 = impl{
	name: "keepalived-none",
	start: func(p *lab.Pair, fw *lab.Netns, role string, interval time.Duration) (node, error) {
		k, err := hatest.StartKeepalived(p, fw, hatest.KeepalivedOptions{Role: role, Auth: hatest.KeepalivedAuthNone, Interval: interval})
		if err != nil {
			return nil, err
		}
		return k, nil
	},
}

// bfdMultiplier is the BFD detection multiplier of keepalivedBFD: 3 missed
// packets at 1 ms, the usual multiplier at keepalived's fastest interval
// (1 would declare the peer down on one late packet).
const bfdMultiplier = 3

// bfdWeight is what keepalivedBFD adds to an instance's priority while the
// BFD session to the peer is down (a negative weight with reverse: added
// while down, removed while up; keepalived 2.2.7 vrrp_track.c). keepalived
// has no BFD verdict that makes a backup claim: an unweighted track_bfd
// puts the instance in FAULT when the session goes down (the backup would
// never take over from a dead master), a weighted one changes the
// priority, and a backup's Master_Down timer is recomputed with the new
// priority's Skew_Time (vrrp_set_effective_priority). Raising the
// backup's 100 to 253 cuts its skew from 6.1 to 0.1 ms at 10 ms adverts:
// the most BFD can take off a takeover here.
const bfdWeight = 153

// keepalivedBFD is keepalivedV3 with a BFD session to the peer over the
// sync link at keepalived's fastest timers (min_rx/min_tx 1 ms, the
// minimum its parser accepts: bfd.h BFD_MINRX_MIN/BFD_MINTX_MIN, in ms),
// tracked by both VRRP instances.
var keepalivedBFD = impl{
	name: "keepalived-bfd",
	start: func(p *lab.Pair, fw *lab.Netns, role string, interval time.Duration) (node, error) {
		own, peer := p.FW1Addrs.Sync.Addr(), p.FW2Addrs.Sync.Addr()
		if fw == p.FW2 {
			own, peer = peer, own
		}
		bfd := fmt.Sprintf("bfd_instance PEER {\n    neighbor_ip %s\n    source_ip %s\n    min_rx 1\n    min_tx 1\n    multiplier %d\n}\n\n",
			peer, own, bfdMultiplier)
		return hatest.StartKeepalived(p, fw, hatest.KeepalivedOptions{Role: role, Auth: hatest.KeepalivedAuthNone, Interval: interval,
			Instance:  []string{fmt.Sprintf("track_bfd {\n        PEER weight -%d reverse\n    }", bfdWeight)},
			SyncGroup: []string{"sync_group_tracking_weight"}, TopLevel: bfd})
	},
}

// keepalivedSource is the keepalived of -keepalived.source with its backup
// waiting one advert interval instead of three (vrrp_down_timer_adverts 1,
// keepalived 2.4), otherwise as keepalivedV3. ok is false without the
// flag; an unusable binary is an error.
func keepalivedSource() (im impl, ok bool, err error) {
	bin := *keepalivedSourceFlag
	if bin == "" {
		return impl{}, false, nil
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return impl{}, false, fmt.Errorf("-keepalived.source %s --version: %w\n%s", bin, err, out)
	}
	version, err := ParseKeepalivedVersion(string(out))
	if err != nil {
		return impl{}, false, fmt.Errorf("-keepalived.source %s: %w", bin, err)
	}
	return impl{
		name: "keepalived-" + version,
		start: func(p *lab.Pair, fw *lab.Netns, role string, interval time.Duration) (node, error) {
			return hatest.StartKeepalived(p, fw, hatest.KeepalivedOptions{Role: role, Auth: hatest.KeepalivedAuthNone, Interval: interval,
				Binary: bin, Global: []string{"vrrp_down_timer_adverts 1"}})
		},
	}, true, nil
}

// impls are compared side by side: keepalived 2.2.7 and muros-had with the
// same settings (VRRPv3, no authentication), keepalived with BFD,
// keepalived built from source when -keepalived.source names it, and
// muros-had with its default AH.
func impls(tb testing.TB) []impl {
	out := []impl{keepalivedV3, keepalivedBFD}
	src, ok, err := keepalivedSource()
	if err != nil {
		tb.Fatal(err)
	}
	if ok {
		out = append(out, src)
	}
	return append(out, murosHad("none"), murosHad("ah"))
}

// mode is how the master is taken away.
type mode struct {
	name string
	// expect is how long the takeover should take.
	expect func(lab.Bounds) time.Duration
	target func(lab.Bounds) time.Duration
	// stop runs at the trigger and ends fw1's forwarding (default
	// stopForwarding): the client-visible gap begins inside it.
	stop func(p *lab.Pair) error
	// take runs once fw1 has stopped forwarding.
	take func(p *lab.Pair, master node) error
	// since is the event the backup's timer runs from: the master's last
	// advert (crash) or its priority 0 advert (graceful).
	since func(Timeline) time.Duration
}

// Both modes start the same way: fw1 stops forwarding at the trigger (an
// nftables drop rule in its forward chain, a few milliseconds' work), so the
// client-visible gap begins at a known instant and lasts until the hosts have
// learnt fw2's MAC from its gratuitous ARP. Without that, the old master
// keeps forwarding frames sent to its MAC after a graceful stop, and a client
// sees no gap at all (measured: 0 lost with keepalived, whose SIGTERM exit
// takes about 1 s, so it hands over before it goes), which measures nothing.
var (
	crash = mode{
		name:   "crash",
		expect: func(b lab.Bounds) time.Duration { return b.MasterDown },
		target: func(b lab.Bounds) time.Duration { return b.CrashTarget },
		since:  func(tl Timeline) time.Duration { return tl.LastAdvert },
		// The box dies: no priority 0 advert, no reaction to its own links
		// going down (keepalived would send priority 0 on entering FAULT if
		// it were still alive when its tracked links drop). Forwarding
		// and every process stop in the same instant (crashNow).
		stop: crashNow,
		take: func(p *lab.Pair, master node) error {
			if err := master.Kill(); err != nil {
				return err
			}
			return powerOff(p)
		},
	}
	graceful = mode{
		name:   "graceful",
		expect: func(b lab.Bounds) time.Duration { return b.Skew },
		target: func(b lab.Bounds) time.Duration { return b.GracefulTarget },
		since:  func(tl Timeline) time.Duration { return tl.Priority0 },
		// An orderly shutdown: SIGTERM (priority 0, VIPs released), then
		// the box powers off.
		take: func(p *lab.Pair, master node) error {
			if err := master.Stop(); err != nil {
				return err
			}
			return powerOff(p)
		},
	}
	// hang is a box that stops without dying: every process of fw1 frozen
	// (SIGSTOP), all IP and ARP in and out of it dropped, its links and
	// their carrier up. Nothing it could say reaches the peer, and the
	// peer's sync0 keeps its carrier.
	hang = mode{
		name:   "hang",
		expect: func(b lab.Bounds) time.Duration { return b.MasterDown },
		target: func(b lab.Bounds) time.Duration { return b.CrashTarget },
		since:  func(tl Timeline) time.Duration { return tl.LastAdvert },
		stop:   isolate,
		take:   func(p *lab.Pair, _ node) error { return freezeAll(p.FW1) },
	}
)

// hangTable names the nftables tables of isolate.
const hangTable = "bench_hang"

// isolate drops every IPv4, IPv6 and ARP packet in and out of fw1.
func isolate(p *lab.Pair) error { return p.Nft(p.FW1, IsolateScript(hangTable)) }

// nsPids lists the processes in ns (this one excluded: a thread of ours
// may be inside it for a moment).
func nsPids(ns *lab.Netns) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", ns.Name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", ns.Name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("ip netns pids %s: %q is not a pid", ns.Name, f)
		}
		if pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// signalAll sends sig to every process in ns; one already gone is skipped.
func signalAll(ns *lab.Netns, sig syscall.Signal) error {
	pids, err := nsPids(ns)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("%v to %d in %s: %w", sig, pid, ns.Name, err)
		}
	}
	return nil
}

// freezeAll stops every process in ns.
func freezeAll(ns *lab.Netns) error { return signalAll(ns, syscall.SIGSTOP) }

// crashNow is the instant fw1 dies: its forwarding stops (a write of 0
// to net.ipv4.ip_forward and net.ipv6.conf.all.forwarding on descriptors
// opened in fw1's namespace beforehand) and every process in it gets SIGKILL (listed beforehand),
// with no exec between the two. stopForwarding's nft exec takes a few
// milliseconds after its rule is in force, during which a daemon killed
// after it would go on heartbeating from a box that no longer forwards:
// measured 3 to 6 ms of muros-had's crash gaps before 2026-12-07, 11:00
// UTC, and as much of every other daemon's.
func crashNow(p *lab.Pair) error {
	pids, err := nsPids(p.FW1)
	if err != nil {
		return err
	}
	var forward []*os.File
	if err := p.FW1.Do(func() error {
		// A net sysctl is the namespace of the task that opens it.
		for _, path := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if errors.Is(err, os.ErrNotExist) {
				continue // IPv6 disabled
			}
			if err != nil {
				return err
			}
			forward = append(forward, f)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("crash: %w", err)
	}
	for _, f := range forward {
		defer f.Close()
		if _, err := f.WriteString("0\n"); err != nil {
			return fmt.Errorf("crash: %s: %w", f.Name(), err)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("crash: SIGKILL to %d: %w", pid, err)
		}
	}
	return nil
}

// stopForwarding makes fw1 drop every forwarded packet.
func stopForwarding(p *lab.Pair) error {
	return p.Nft(p.FW1, fmt.Sprintf("add rule inet %s %s drop\n", lab.NftTable, lab.NftForwardExtra))
}

// powerOff takes fw1's LAN and WAN links down in one `ip -batch` run. Its
// sync link stays up, as if the sync link ran through a switch: with the
// direct veth of the lab, fw2's sync0 would lose carrier too, and keepalived
// (whose instances advertise on sync0 and track it, there being no
// dont_track_primary in its configuration) then goes to FAULT instead of
// taking over, so there would be nothing to compare. muros-had takes over
// in both cases (the demo crashes with lab.CrashNode).
func powerOff(p *lab.Pair) error {
	_, err := p.FW1.RunInput(fmt.Sprintf("link set %s down\nlink set %s down\n", lab.IfLAN, lab.IfWAN), "ip", "-batch", "-")
	return err
}

var intervals = []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second}

// BenchmarkFailover measures the client-visible failover gap of every
// implementation, mode and advert interval, side by side, and the false
// takeovers each had before the trigger; the cut case measures the split
// brain instead (benchCut).
func BenchmarkFailover(b *testing.B) {
	for _, m := range []mode{crash, hang, graceful} {
		for _, iv := range intervals {
			for _, im := range impls(b) {
				b.Run(fmt.Sprintf("%s/%s/%s", m.name, iv, im.name), func(b *testing.B) {
					benchFailover(b, im, m, iv)
				})
			}
		}
	}
	for _, iv := range intervals {
		for _, im := range impls(b) {
			b.Run(fmt.Sprintf("cut/%s/%s", iv, im.name), func(b *testing.B) {
				benchCut(b, im, iv)
			})
		}
	}
}

// settling is what a run saw of the backup before the trigger: its
// adverts while the pair was being elected and after (each episode is a
// false takeover: the master was alive all along).
type settling struct {
	All, Settled FalseTakeovers // from the backup's start / from the election to the trigger
}

func (s settling) String() string {
	return fmt.Sprintf("false takeovers %d (%d after settling)", s.All.Episodes, s.Settled.Episodes)
}

func reportSettling(b *testing.B, runs []settling) {
	var all, settled int
	for _, s := range runs {
		all += s.All.Episodes
		settled += s.Settled.Episodes
	}
	b.ReportMetric(float64(all), "false_takeovers")
	b.ReportMetric(float64(settled), "false_takeovers_settled")
	b.ReportMetric(float64(len(runs)), "runs")
}

func benchFailover(b *testing.B, im impl, m mode, interval time.Duration) {
	lab.Require(b)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	n := max(*repsFlag, b.N)
	bounds := lab.Targets(interval, BackupPriority)
	var gaps, takeovers, resumes []time.Duration
	var settles []settling
	var sendLag, elsewhere time.Duration
	retried, untimed := 0, 0
	for len(gaps) < n {
		o, tl, st, err := failoverOnce(im, m, interval, rng)
		if err == nil || errors.Is(err, errUnmeasured) {
			// The backup's behaviour before the trigger is measured
			// either way.
			settles = append(settles, st)
		}
		if errors.Is(err, errUnmeasured) && retried < 3*n {
			// A stall of this machine hid the failover (a longer gap
			// elsewhere) or outlasted the run: measure again rather than
			// record the stall. The count is reported ("repeated").
			b.Logf("repeating: %v", err)
			retried++
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		gaps = append(gaps, o.Gap)
		if o.Backup != "" {
			b.Logf("run %d: gap %v; backup: %s", len(gaps), o.Gap.Round(10*time.Microsecond), o.Backup)
		}
		sendLag = max(sendLag, o.SendLag)
		if o.RunMaxGap > o.Gap {
			elsewhere = max(elsewhere, o.RunMaxGap)
		}
		if from := m.since(tl); from > 0 && tl.Announce > from {
			takeovers = append(takeovers, tl.Announce-from)
			resumes = append(resumes, o.GapFrom+o.Gap-tl.Announce)
		} else {
			untimed++
		}
	}
	s := Summarize(gaps)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(Millis(s.P50), "gap_p50_ms")
	b.ReportMetric(Millis(s.Max), "gap_max_ms")
	b.ReportMetric(Millis(s.Min), "gap_min_ms")
	b.ReportMetric(Millis(m.target(bounds)), "target_ms")
	b.ReportMetric(Millis(sendLag), "sendlag_max_ms")
	// The longest silence elsewhere in a run, when longer than the
	// failover's: the machine's noise at the time.
	b.ReportMetric(Millis(elsewhere), "other_gap_max_ms")
	b.ReportMetric(float64(retried), "repeated")
	// Where the gap is spent: the backup's timer up to its first
	// gratuitous ARP (RFC: Master_Down_Interval or Skew_Time), then the
	// hosts' switch to the new MAC up to the first reply.
	b.ReportMetric(Millis(m.expect(bounds)), "timer_ms")
	b.ReportMetric(Millis(Summarize(takeovers).P50), "garp_after_timer_start_p50_ms")
	b.ReportMetric(Millis(Summarize(resumes).P50), "reply_after_garp_p50_ms")
	b.ReportMetric(float64(untimed), "untimed")
	reportSettling(b, settles)
	b.Logf("%s %s %v: gaps %v (target %v); GARP after timer start %v; first reply after GARP %v; false takeovers per run %v",
		im.name, m.name, interval, gaps, m.target(bounds), takeovers, resumes, episodes(settles))
}

// episodes lists each run's false takeovers as "all/after settling".
func episodes(runs []settling) []string {
	out := make([]string, len(runs))
	for i, s := range runs {
		out[i] = fmt.Sprintf("%d/%d", s.All.Episodes, s.Settled.Episodes)
	}
	return out
}

// electWatched elects the pair with fw2's sync link captured from before
// the daemons start, so that every advert the backup sent while the pair
// settled is seen; with warm non-nil, it then waits for a muros-had
// backup's detection floor and says in *warm how that went. The caller
// stops the capture (settlingOf).
func electWatched(p *lab.Pair, im impl, interval time.Duration, warm *string) (n1, n2 node, capSync *lab.Capture, started, settled time.Time, err error) {
	capSync, err = p.FW2.StartCapture(lab.IfSync)
	if err != nil {
		return nil, nil, nil, started, settled, err
	}
	started = time.Now()
	n1, n2, err = electPair(p, im, interval)
	if err != nil {
		capSync.Stop()
		return nil, nil, nil, started, settled, err
	}
	settled = time.Now()
	if h, ok := n2.(*hatest.Node); ok && warm != nil {
		// A muros-had backup's liveness detection starts at four times
		// its floor and comes down to it within 20 s (package liveness,
		// the cold start): measure the steady state. The wait counts as
		// settled time, watched for false takeovers.
		*warm = waitDetectFloor(h, 30*time.Second)
	}
	return n1, n2, capSync, started, settled, nil
}

// settlingOf counts the backup's false takeovers in its sync link's frames
// before the trigger.
func settlingOf(p *lab.Pair, frames []lab.Frame, interval time.Duration, started, settled, trigger time.Time) settling {
	backup := p.FW2Addrs.Sync.Addr()
	return settling{
		All:     CountFalseTakeovers(frames, backup, interval, started, trigger),
		Settled: CountFalseTakeovers(frames, backup, interval, settled, trigger),
	}
}

// failoverOnce builds a fresh pair (so no run inherits another's neighbour
// caches, addresses or daemons), elects fw1, and takes it away at a random
// phase of the advert timer while the client probes through the VIPs.
// runOutcome is a failover as the client saw it, with the run's longest
// gap wherever it was (a stall of the machine, when longer than the
// failover's).
type runOutcome struct {
	lab.FailoverOutcome
	RunMaxGap time.Duration
	// Backup is what a muros-had backup said: its liveness detection
	// after the warm-up, and its first liveness verdict after the
	// trigger (the takeover's).
	Backup string
}

func failoverOnce(im impl, m mode, interval time.Duration, rng *rand.Rand) (runOutcome, Timeline, settling, error) {
	var tl Timeline
	var st settling
	p, err := lab.NewPair(lab.Options{})
	if err != nil {
		return runOutcome{}, tl, st, err
	}
	stop := lab.CloseOnSignal(p)
	defer func() {
		stop()
		// A hung fw1's frozen processes would sit out Close's SIGTERM
		// grace: they die now.
		_ = signalAll(p.FW1, syscall.SIGKILL)
		p.Close()
	}()
	// The master's adverts as the backup receives them (and the backup's
	// own, from before the daemons start), and the new owner's
	// gratuitous ARP as the client receives it.
	var warm string
	n1, n2, capSync, started, settled, err := electWatched(p, im, interval, &warm)
	if err != nil {
		return runOutcome{}, tl, st, err
	}
	defer capSync.Stop()
	if err := p.FlushNeighbours(); err != nil {
		return runOutcome{}, tl, st, err
	}
	capLAN, err := p.Client.StartCapture(lab.IfHost)
	if err != nil {
		return runOutcome{}, tl, st, err
	}
	defer capLAN.Stop()
	bounds := lab.Targets(interval, BackupPriority)
	// The lead covers ARP resolution of the VIPs by the client and server;
	// the random part puts the trigger at a uniform phase of the master's
	// advert timer (the daemons started at an arbitrary instant before).
	// One interval more makes sure the sync capture holds an advert of
	// fw1 from before the trigger.
	lead := 300*time.Millisecond + interval + time.Duration(rng.Int64N(int64(interval)))
	// Generous after the expected takeover: on a loaded machine taking
	// the master away (nft, SIGTERM and its exit) can itself take seconds.
	window := m.expect(bounds) + 1500*time.Millisecond
	stopFw := m.stop
	if stopFw == nil {
		stopFw = stopForwarding
	}
	var trigAt, trigDone time.Time
	var trigErr error
	ctx, cancel := context.WithTimeout(context.Background(), lead+window+30*time.Second)
	defer cancel()
	res, err := p.ProbeUDP(ctx, false, lab.UDPProbeOptions{
		Duration: lead + window,
		During: func() {
			time.Sleep(lead)
			trigAt = time.Now()
			if trigErr = stopFw(p); trigErr != nil {
				return
			}
			// The client-visible gap has begun by now: the failover's
			// gap is the one that starts between trigAt and here.
			trigDone = time.Now()
			trigErr = m.take(p, n1)
		},
	})
	if err != nil {
		return runOutcome{}, tl, st, fmt.Errorf("prober: %w", err)
	}
	if trigErr != nil {
		return runOutcome{}, tl, st, trigErr
	}
	syncFrames, err := stopCapture(capSync)
	if err != nil {
		return runOutcome{}, tl, st, err
	}
	st = settlingOf(p, syncFrames, interval, started, settled, trigAt)
	if err := n2.WaitState("MASTER", 5*time.Second+4*interval); err != nil {
		return runOutcome{}, tl, st, fmt.Errorf("%s %s: backup did not take over: %w", im.name, m.name, err)
	}
	o := runOutcome{FailoverOutcome: lab.Outcome(res, trigAt.Sub(res.Start), trigDone.Sub(res.Start)), RunMaxGap: res.MaxGap}
	if h, ok := n2.(*hatest.Node); ok {
		o.Backup = warm + "; " + verdictAfter(h.Proc.Log(), trigAt)
	}
	err = o.Err()
	if errors.Is(err, lab.ErrGapNotAtEvent) {
		// A failover of a few milliseconds is shorter than this machine's
		// stalls: the run's longest gap is elsewhere. The failover's is
		// the one around the trigger.
		if gap, from, ok := EventGap(res.Arrivals, o.Trigger, o.TriggerDone, res.Elapsed); ok {
			o.Gap, o.GapFrom, err = gap, from, nil
		}
	}
	if err != nil {
		if errors.Is(err, lab.ErrNoReplies) {
			return o, tl, st, fmt.Errorf("%s %s %v: %w (probe %+v)", im.name, m.name, interval, err, res)
		}
		return o, tl, st, fmt.Errorf("%w: %s %s %v: %w (probe %+v)", errUnmeasured, im.name, m.name, interval, err, res)
	}
	lanFrames, err := stopCapture(capLAN)
	if err != nil {
		return o, tl, st, err
	}
	tl = BuildTimeline(syncFrames, lanFrames, res.Start, p.FW1Addrs.Sync.Addr(), p.LANVIP.Addr(), o.Trigger, FrameRejects{})
	return o, tl, st, nil
}

// cutOutcome is one cut of the sync link as the nodes and the client saw it.
type cutOutcome struct {
	Split    SplitBrain          // both nodes holding a VIP, within the window
	Gap      time.Duration       // longest time without a UDP reply in the run
	Stream   lab.TCPStreamResult // the long-lived TCP connection
	Settling settling            // false takeovers before the cut
	Probe    lab.UDPProbeResult  // for the log
}

// benchCut cuts the sync link while both nodes live (fw1's sync0 down:
// carrier lost at both ends) and measures over -failover.cutwindow how
// long both held the VIPs, the longest UDP gap and the stall of a TCP
// connection opened through the VIPs before the cut.
func benchCut(b *testing.B, im impl, interval time.Duration) {
	lab.Require(b)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	n := max(*repsFlag, b.N)
	var splits, firsts, gaps, stalls []time.Duration
	var settles []settling
	resets, retried := 0, 0
	for len(splits) < n {
		o, err := cutOnce(im, interval, *cutFlag, rng)
		if errors.Is(err, errUnmeasured) && retried < 3*n {
			b.Logf("repeating: %v", err)
			retried++
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		splits = append(splits, o.Split.Total)
		if o.Split.Total > 0 {
			firsts = append(firsts, o.Split.First)
		}
		gaps = append(gaps, o.Gap)
		stalls = append(stalls, o.Stream.MaxStall)
		settles = append(settles, o.Settling)
		if o.Stream.Reset || o.Stream.Err != nil {
			resets++
		}
		b.Logf("%s cut %v: split brain %v (from %v after the cut), UDP gap %v (lost %d), TCP stall %v (reset %v, err %v), %v",
			im.name, interval, o.Split.Total, o.Split.First, o.Gap, o.Probe.Lost, o.Stream.MaxStall, o.Stream.Reset, o.Stream.Err, o.Settling)
	}
	sp, g, t := Summarize(splits), Summarize(gaps), Summarize(stalls)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(Millis(sp.P50), "split_p50_ms")
	b.ReportMetric(Millis(sp.Max), "split_max_ms")
	b.ReportMetric(Millis(Summarize(firsts).P50), "split_start_p50_ms")
	b.ReportMetric(Millis(*cutFlag), "window_ms")
	b.ReportMetric(Millis(g.P50), "gap_p50_ms")
	b.ReportMetric(Millis(g.Max), "gap_max_ms")
	b.ReportMetric(Millis(t.P50), "tcp_stall_p50_ms")
	b.ReportMetric(Millis(t.Max), "tcp_stall_max_ms")
	b.ReportMetric(float64(resets), "tcp_broken")
	b.ReportMetric(float64(retried), "repeated")
	reportSettling(b, settles)
	b.Logf("%s cut %v: gaps %v; split %v; stalls %v; false takeovers per run %v", im.name, interval, gaps, splits, stalls, episodes(settles))
}

func cutOnce(im impl, interval, window time.Duration, rng *rand.Rand) (cutOutcome, error) {
	var o cutOutcome
	p, err := lab.NewPair(lab.Options{})
	if err != nil {
		return o, err
	}
	stop := lab.CloseOnSignal(p)
	defer func() {
		stop()
		p.Close()
	}()
	_, _, capSync, started, settled, err := electWatched(p, im, interval, new(string))
	if err != nil {
		return o, err
	}
	defer capSync.Stop()
	if err := p.FlushNeighbours(); err != nil {
		return o, err
	}
	// Each node's VIPs as the kernel reports them: `ip -ts monitor`
	// stamps every change when it reads it.
	var mons [2]*lab.Process
	for i, fw := range p.Firewalls() {
		if mons[i], err = fw.Start("ip", "-ts", "monitor", "address"); err != nil {
			return o, err
		}
	}
	// The monitors subscribe within a few ms of their start; the state
	// they start from is read after that.
	time.Sleep(100 * time.Millisecond)
	var initially [2]bool
	for i, fw := range p.Firewalls() {
		if initially[i], err = hatest.HasAddr(fw, p.LANVIP.Addr()); err != nil {
			return o, err
		}
	}
	if !initially[0] || initially[1] {
		// The backup has (falsely) taken over at this moment: a split
		// before the cut says nothing about the cut. Counted by the
		// caller as a repeated run; its false takeover is in the log.
		return o, fmt.Errorf("%w: %s: before the cut fw1 holds the LAN VIP: %v, fw2: %v", errUnmeasured, im.name, initially[0], initially[1])
	}
	lead := 300*time.Millisecond + interval + time.Duration(rng.Int64N(int64(interval)))
	stream, err := p.StartTCPStream(lab.TCPStreamOptions{Duration: lead + window + 10*time.Second})
	if err != nil {
		return o, fmt.Errorf("%s: TCP stream before the cut: %w", im.name, err)
	}
	var trigAt time.Time
	var trigErr error
	ctx, cancel := context.WithTimeout(context.Background(), lead+window+30*time.Second)
	defer cancel()
	res, err := p.ProbeUDP(ctx, false, lab.UDPProbeOptions{
		Duration: lead + window,
		During: func() {
			time.Sleep(lead)
			trigAt = time.Now()
			trigErr = p.FW1.LinkDown(lab.IfSync)
		},
	})
	o.Stream = stream.Stop()
	if err != nil {
		return o, fmt.Errorf("prober: %w", err)
	}
	if trigErr != nil {
		return o, trigErr
	}
	end := trigAt.Add(window)
	// The longest silence from the cut to the end of the run, not one
	// the machine caused during the lead.
	o.Probe, o.Gap = res, res.MaxGap
	if gap, _, ok := EventGap(res.Arrivals, trigAt.Sub(res.Start), res.Elapsed, res.Elapsed); ok {
		o.Gap = gap
	}
	if res.Received == 0 || res.LastReplyAge > 200*time.Millisecond {
		return o, fmt.Errorf("%s cut: the path through the VIPs is down at the end (%+v)", im.name, res)
	}
	frames, err := stopCapture(capSync)
	if err != nil {
		return o, err
	}
	o.Settling = settlingOf(p, frames, interval, started, settled, trigAt)
	var holds [2]Holding
	for i, m := range mons {
		_ = m.Kill()
		ev, err := ParseIPMonitor(m.Log(), time.Local)
		if err != nil {
			return o, err
		}
		holds[i] = Holding{Initially: initially[i], Events: ev}
	}
	o.Split = MeasureSplitBrain(holds[0], holds[1], []netip.Addr{p.LANVIP.Addr(), p.WANVIP.Addr()}, trigAt, end)
	return o, nil
}

func stopCapture(c *lab.Capture) ([]lab.Frame, error) {
	path, _, err := c.Stop()
	if err != nil {
		return nil, err
	}
	return lab.ReadPcap(path)
}

// electPair starts im on both firewalls (fw1 master, fw2 backup) and waits
// until fw1 holds the VIPs and fw2 has heard it.
func electPair(p *lab.Pair, im impl, interval time.Duration) (node, node, error) {
	n1, err := im.start(p, p.FW1, "master", interval)
	if err != nil {
		return nil, nil, err
	}
	n2, err := im.start(p, p.FW2, "backup", interval)
	if err != nil {
		return nil, nil, err
	}
	settle := 5*time.Second + 4*interval
	if err := n1.WaitState("MASTER", settle); err != nil {
		return nil, nil, err
	}
	if err := n2.WaitState("BACKUP", settle); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(settle)
	for {
		has, err := hatest.HasAddr(p.FW1, p.LANVIP.Addr())
		if err != nil {
			return nil, nil, err
		}
		if has {
			break
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("%s: fw1 is MASTER but holds no LAN VIP after %v", im.name, settle)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the backup hear a few adverts of the elected master.
	time.Sleep(max(3*interval, 50*time.Millisecond))
	return n1, n2, nil
}

// BenchmarkIdleCPU reports the CPU each daemon uses, master and backup,
// with nothing happening but 10 ms adverts, as % of one core, and the
// resident memory of each firewall's processes at the end.
func BenchmarkIdleCPU(b *testing.B) {
	for _, im := range impls(b) {
		b.Run("10ms/"+im.name, func(b *testing.B) {
			lab.Require(b)
			p, err := lab.NewPair(lab.Options{})
			if err != nil {
				b.Fatal(err)
			}
			stop := lab.CloseOnSignal(p)
			defer func() {
				stop()
				p.Close()
			}()
			if _, _, err := electPair(p, im, 10*time.Millisecond); err != nil {
				b.Fatal(err)
			}
			var master, backup float64
			for range max(1, b.N) {
				m, bk, err := idleCPU(p, *cpuFlag)
				if err != nil {
					b.Fatal(err)
				}
				master, backup = max(master, m), max(backup, bk)
			}
			rssMaster, err := nsRSS(p.FW1)
			if err != nil {
				b.Fatal(err)
			}
			rssBackup, err := nsRSS(p.FW2)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(master, "cpu_master_pct")
			b.ReportMetric(backup, "cpu_backup_pct")
			b.ReportMetric(float64(rssMaster)/1024, "rss_master_MiB")
			b.ReportMetric(float64(rssBackup)/1024, "rss_backup_MiB")
		})
	}
}

// idleCPU samples the CPU time of every process in each firewall namespace
// (the daemon, and keepalived's VRRP child) over window.
func idleCPU(p *lab.Pair, window time.Duration) (master, backup float64, err error) {
	m0, err := nsTicks(p.FW1)
	if err != nil {
		return 0, 0, err
	}
	b0, err := nsTicks(p.FW2)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	time.Sleep(window)
	m1, err := nsTicks(p.FW1)
	if err != nil {
		return 0, 0, err
	}
	b1, err := nsTicks(p.FW2)
	if err != nil {
		return 0, 0, err
	}
	wall := time.Since(start)
	return CPUPercent(m1-m0, wall), CPUPercent(b1-b0, wall), nil
}

// nsTicks sums utime + stime of the processes in ns (`ip netns pids`).
func nsTicks(ns *lab.Netns) (uint64, error) { return nsSum(ns, "stat", ParseStatCPU) }

// nsRSS sums the resident memory (KiB) of the processes in ns. Pages two
// processes share (keepalived's parent and VRRP child after fork) count
// twice, as in ps.
func nsRSS(ns *lab.Netns) (uint64, error) { return nsSum(ns, "status", ParseVmRSS) }

// nsSum sums parse(/proc/<pid>/<file>) over the processes in ns; one that
// exits meanwhile counts 0.
func nsSum(ns *lab.Netns, file string, parse func([]byte) (uint64, error)) (uint64, error) {
	out, err := exec.Command("ip", "netns", "pids", ns.Name).Output()
	if err != nil {
		return 0, fmt.Errorf("ip netns pids %s: %w", ns.Name, err)
	}
	var sum uint64
	pids := strings.Fields(string(out))
	if len(pids) == 0 {
		return 0, fmt.Errorf("no process in %s", ns.Name)
	}
	for _, pid := range pids {
		if _, err := strconv.Atoi(pid); err != nil {
			return 0, fmt.Errorf("ip netns pids %s: %q is not a pid", ns.Name, pid)
		}
		b, err := os.ReadFile(filepath.Join("/proc", pid, file))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		t, err := parse(b)
		if err != nil {
			return 0, fmt.Errorf("pid %s: %w", pid, err)
		}
		sum += t
	}
	return sum, nil
}

// BenchmarkProbeNoiseFloor is the prober's resolution with muros-had
// holding the VIPs at 10 ms adverts and no failover: the largest gap a
// steady path shows on this machine. Failover gaps below it are noise.
func BenchmarkProbeNoiseFloor(b *testing.B) {
	lab.Require(b)
	p, err := lab.NewPair(lab.Options{})
	if err != nil {
		b.Fatal(err)
	}
	stop := lab.CloseOnSignal(p)
	defer func() {
		stop()
		p.Close()
	}()
	if _, _, err := electPair(p, murosHad("ah"), 10*time.Millisecond); err != nil {
		b.Fatal(err)
	}
	var gaps []time.Duration
	var sendLag time.Duration
	lost := 0
	for range max(*repsFlag, b.N) {
		res, err := p.ProbeUDP(context.Background(), false, lab.UDPProbeOptions{Duration: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		gaps = append(gaps, res.MaxGap)
		sendLag = max(sendLag, res.MaxSendLag)
		lost += res.Lost
	}
	s := Summarize(gaps)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(Millis(s.P50), "gap_p50_ms")
	b.ReportMetric(Millis(s.Max), "gap_max_ms")
	b.ReportMetric(Millis(sendLag), "sendlag_max_ms")
	b.ReportMetric(float64(lost), "lost")
}

// verdictAfter is the first liveness verdict a muros-had log has at or
// after since (the takeover's), or "" if none.
func verdictAfter(log string, since time.Time) string {
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `msg="peer liveness"`) {
			continue
		}
		stamp, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if at, err := time.Parse(time.RFC3339Nano, stamp); err == nil && !at.Before(since) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}
