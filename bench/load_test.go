package bench

import (
	"context"
	"flag"
	"fmt"
	"github.com/muros/muros-had/config"
	"net/netip"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

var (
	loadHogs   = flag.Int("load.hogs", 64, "CPU-bound processes started beside the pair")
	loadWindow = flag.Duration("load.window", 10*time.Second, "how long the hogs run")
	loadReps   = flag.Int("load.reps", 3, "windows per case (a fresh pair each)")
	idleWindow = flag.Duration("idle.window", 10*time.Minute, "how long BenchmarkFalseTakeoverIdle watches the idle pairs")
	idleSerial = flag.Bool("idle.serial", false, "BenchmarkFalseTakeoverIdle: one pair at a time (each for -idle.window) instead of all side by side")
)

// FalseTakeovers summarises a backup's adverts on the sync link: a backup
// whose master is alive sends none, so each advert it sent is part of a
// false takeover (it stopped hearing the master in time). Episodes are runs
// of its adverts separated by more than three intervals.
type FalseTakeovers struct {
	Adverts  int
	Episodes int
}

// CountFalseTakeovers counts the adverts from backup in frames (captured on
// the sync link) between from and to.
func CountFalseTakeovers(frames []lab.Frame, backup netip.Addr, interval time.Duration, from, to time.Time) FalseTakeovers {
	var sent []time.Time
	for _, f := range frames {
		src, _, err := ParseAdvertFrame(f.Data)
		if err == nil && src == backup {
			sent = append(sent, f.At)
		}
	}
	return CountEpisodes(sent, interval, from, to)
}

// CountEpisodes counts the adverts a backup sent (their instants, in
// order, e.g. from an AdvertWatch) between from and to, and the episodes
// they form: runs separated by more than three intervals.
func CountEpisodes(sent []time.Time, interval time.Duration, from, to time.Time) FalseTakeovers {
	var out FalseTakeovers
	var last time.Time
	for _, at := range sent {
		if at.Before(from) || at.After(to) {
			continue
		}
		out.Adverts++
		if last.IsZero() || at.Sub(last) > 3*interval {
			out.Episodes++
		}
		last = at
	}
	return out
}

// murosHadTimeSharing is muros-had without its real-time default: the
// control that shows what the scheduling buys.
func murosHadTimeSharing() impl {
	return impl{
		name: "muros-had-none-timesharing",
		start: func(p *lab.Pair, fw *lab.Netns, role string, interval time.Duration) (node, error) {
			return hatest.StartNode(binary, p, fw, hatest.NodeOptions{Role: role, Auth: "none", Interval: interval, LivenessDetect: config.DefaultLivenessDetect,
				Extra: "scheduling:\n  policy: other\n"})
		},
	}
}

// BenchmarkFalseTakeoverUnderLoad elects a pair at 10 ms adverts
// (Master_Down_Interval about 36 ms), then starts -load.hogs CPU-bound
// processes (sh busy loops, time-sharing, nice 0) in fw1's namespace for
// -load.window while a UDP stream (a datagram a millisecond) crosses the
// VIPs, and counts the false takeovers: adverts fw2 sent while fw1 was
// alive, from a capture of fw2's sync link. Every daemon of the
// failover benchmarks (keepalived 2.2.7 as Debian runs it, no
// vrrp_rt_priority; with BFD; from source when named; muros-had with its
// default SCHED_RR 40) and muros-had time-sharing.
func BenchmarkFalseTakeoverUnderLoad(b *testing.B) {
	const interval = 10 * time.Millisecond
	for _, im := range append(impls(b), murosHadTimeSharing()) {
		b.Run("10ms/"+im.name, func(b *testing.B) {
			lab.Require(b)
			var adverts, episodes []float64
			for rep := range max(*loadReps, b.N) {
				ft, err := falseTakeoversOnce(im, interval)
				if err != nil {
					b.Fatal(err)
				}
				b.Logf("%s rep %d (load average %s): %d hogs for %v: fw2 sent %d adverts in %d false takeovers",
					im.name, rep, loadAverage(), *loadHogs, *loadWindow, ft.Adverts, ft.Episodes)
				adverts = append(adverts, float64(ft.Adverts))
				episodes = append(episodes, float64(ft.Episodes))
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(median(adverts), "backup_adverts")
			b.ReportMetric(median(episodes), "false_takeovers")
		})
	}
}

func falseTakeoversOnce(im impl, interval time.Duration) (FalseTakeovers, error) {
	p, err := lab.NewPair(lab.Options{})
	if err != nil {
		return FalseTakeovers{}, err
	}
	stop := lab.CloseOnSignal(p)
	defer func() {
		stop()
		p.Close()
	}()
	_, n2, err := electPair(p, im, interval)
	if err != nil {
		return FalseTakeovers{}, err
	}
	if h, ok := n2.(*hatest.Node); ok {
		// The load meets muros-had's liveness detection at its floor, past
		// the cold start (package liveness), as it would a pair that has
		// run for a while.
		waitDetectFloor(h, 30*time.Second)
	}
	capt, err := p.FW2.StartCapture(lab.IfSync)
	if err != nil {
		return FalseTakeovers{}, err
	}
	defer capt.Stop()
	from := time.Now()
	var hogs []*lab.Process
	defer func() {
		for _, h := range hogs {
			h.Kill()
		}
	}()
	for range *loadHogs {
		h, err := p.FW1.Start("sh", "-c", "while :; do :; done")
		if err != nil {
			return FalseTakeovers{}, fmt.Errorf("hog: %w", err)
		}
		hogs = append(hogs, h)
	}
	// A stream through the VIPs for the window: a loaded firewall
	// forwards traffic, so muros-had's master heartbeats fast (an idle one
	// goes quiet, BenchmarkFalseTakeoverIdle).
	ctx, cancel := context.WithTimeout(context.Background(), *loadWindow+time.Minute)
	defer cancel()
	if _, err := p.ProbeUDP(ctx, false, lab.UDPProbeOptions{Duration: *loadWindow}); err != nil {
		return FalseTakeovers{}, fmt.Errorf("stream: %w", err)
	}
	for _, h := range hogs {
		h.Kill()
	}
	hogs = nil
	to := time.Now()
	// Let a takeover that began at the end finish and yield.
	time.Sleep(200 * time.Millisecond)
	path, _, err := capt.Stop()
	if err != nil {
		return FalseTakeovers{}, err
	}
	frames, err := lab.ReadPcap(path)
	if err != nil {
		return FalseTakeovers{}, err
	}
	return CountFalseTakeovers(frames, p.FW2Addrs.Sync.Addr(), interval, from, to.Add(200*time.Millisecond)), nil
}

// BenchmarkFalseTakeoverIdle elects one pair per daemon at 10 ms adverts,
// leaves it idle for -idle.window (default 10 minutes) and counts the
// backup's false takeovers: its adverts on the sync link (AdvertWatch: a
// BPF-filtered socket, since a capture of minutes of heartbeats would be
// large), in episodes more than three intervals apart. By default the
// pairs run side by side so that the whole set takes one window; then
// muros-had's real-time threads compete with keepalived's time-sharing
// ones for the same cores, which a pair alone would not see:
// -idle.serial runs one pair after the other.
func BenchmarkFalseTakeoverIdle(b *testing.B) {
	lab.Require(b)
	ims := impls(b)
	if !*idleSerial {
		runIdle(b, ims)
		return
	}
	for _, im := range ims {
		runIdle(b, []impl{im})
	}
}

// runIdle watches one idle pair per implementation, all at once.
func runIdle(b *testing.B, ims []impl) {
	const interval = 10 * time.Millisecond
	type watched struct {
		im    impl
		n2    node
		watch *AdvertWatch
		from  time.Time
		ft    FalseTakeovers
		err   error
	}
	var all []*watched
	var pairs []*lab.Pair
	defer func() {
		for _, p := range pairs {
			p.Close()
		}
	}()
	for _, im := range ims {
		p, err := lab.NewPair(lab.Options{})
		if err != nil {
			b.Fatal(err)
		}
		pairs = append(pairs, p)
		stop := lab.CloseOnSignal(p)
		defer stop()
		_, n2, err := electPair(p, im, interval)
		if err != nil {
			b.Fatal(err)
		}
		w, err := WatchAdverts(p.FW2, lab.IfSync, p.FW2Addrs.Sync.Addr())
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, &watched{im: im, n2: n2, watch: w, from: time.Now()})
	}
	b.Logf("%d idle pairs for %v (load average %s)", len(all), *idleWindow, loadAverage())
	time.Sleep(*idleWindow)
	to := time.Now()
	for _, w := range all {
		sent, err := w.watch.Stop()
		w.ft, w.err = CountEpisodes(sent, interval, w.from, to), err
	}
	for _, w := range all {
		b.Run("10ms/"+w.im.name, func(b *testing.B) {
			if w.err != nil {
				b.Fatal(w.err)
			}
			b.Logf("%s idle %v (load average %s): fw2 sent %d adverts in %d false takeovers%s",
				w.im.name, to.Sub(w.from).Round(time.Second), loadAverage(), w.ft.Adverts, w.ft.Episodes, history(w.n2))
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(w.ft.Episodes), "false_takeovers")
			b.ReportMetric(float64(w.ft.Adverts), "backup_adverts")
			b.ReportMetric(to.Sub(w.from).Minutes(), "minutes")
		})
	}
}

// history is what a keepalived node itself reported (its notify FIFO's
// group states), beside the count from its adverts.
func history(n node) string {
	if k, ok := n.(*hatest.Keepalived); ok {
		return fmt.Sprintf("; keepalived reported %v", k.History())
	}
	return ""
}
