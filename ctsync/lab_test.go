package ctsync

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/ti-mo/conntrack"
	"go.uber.org/goleak"

	"github.com/muros/muros-had/ctsync/ctnl"
	"github.com/muros/muros-had/ctsync/ctwire"
	"github.com/muros/muros-had/lab"
)

const labPassword = "lab-secret"

// node is one Sync running in a lab namespace.
type node struct {
	ns     *lab.Netns
	s      *Sync
	cancel context.CancelFunc
	done   chan error
}

func (n *node) stop(t testing.TB) {
	t.Helper()
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	n.cancel = nil
}

func leakCheck(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func startNode(t testing.TB, ns *lab.Netns, master bool, mod func(*Config)) *node {
	t.Helper()
	return startNodeWith(t, ns, master, mod, nil)
}

// startNodeWith is startNode with a hook that sees the Sync before Run.
func startNodeWith(t testing.TB, ns *lab.Netns, master bool, mod func(*Config), before func(*Sync)) *node {
	t.Helper()
	// One state directory per namespace: a node started again in it is a
	// restart that kept its epochs.
	state := filepath.Join(os.TempDir(), "ctsync-lab-"+ns.Name)
	t.Cleanup(func() { os.RemoveAll(state) })
	cfg := Config{Interface: "sync0", Password: labPassword, Refresh: 2 * time.Second, StateDir: state}
	if mod != nil {
		mod(&cfg)
	}
	lvl := slog.LevelWarn
	if os.Getenv("CTSYNC_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("node", ns.Name)
	var s *Sync
	if err := ns.Do(func() (err error) { s, err = New(cfg, log); return err }); err != nil {
		t.Fatalf("ctsync.New in %s: %v", ns, err)
	}
	if before != nil {
		before(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{ns: ns, s: s, cancel: cancel, done: make(chan error, 1)}
	s.SetRole(master)
	go func() { n.done <- s.Run(ctx) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// syncPair makes two namespaces joined by a veth sync link.
func syncPair(t testing.TB) (a, b *lab.Netns) {
	t.Helper()
	a = lab.NewNetnsT(t, "cta")
	b = lab.NewNetnsT(t, "ctb")
	if err := lab.Veth(a, "sync0", b, "sync0"); err != nil {
		t.Fatal(err)
	}
	must(t, a.AddAddr("sync0", netip.MustParsePrefix("10.99.0.1/24")))
	must(t, b.AddAddr("sync0", netip.MustParsePrefix("10.99.0.2/24")))
	return a, b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, ns *lab.Netns, args ...string) string {
	t.Helper()
	out, err := ns.Run(args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// view is the comparable part of a flow: tuples (NAT), mark, zone, the
// status bits that matter, TCP state. Timeouts and TCP flags (the backup
// adds be-liberal) are ignored.
type view struct {
	Orig, Reply ctwire.Tuple
	Proto       uint8
	Zone        uint16
	Mark        uint32
	Status      uint32
	TCPState    uint8
}

const statusCompared = 1<<1 | 1<<2 | 1<<4 | 1<<5 // SEEN_REPLY ASSURED SRC_NAT DST_NAT

func table(t testing.TB, ns *lab.Netns) map[ctwire.Key]view {
	t.Helper()
	var kf []conntrack.Flow
	err := ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		kf, err = c.Dump(nil)
		return err
	})
	if err != nil {
		t.Fatalf("dump %s: %v", ns, err)
	}
	out := map[ctwire.Key]view{}
	for i := range kf {
		f, ok := ctnl.FromKernel(&kf[i])
		if !ok || f.Orig.Dst.String() == DefaultGroup || f.Orig.Src.String() == "10.99.0.1" || f.Orig.Src.String() == "10.99.0.2" {
			continue // the sync traffic itself
		}
		out[f.Key()] = view{Orig: f.Orig, Reply: f.Reply, Proto: f.Proto, Zone: f.Zone, Mark: f.Mark, Status: f.Status & statusCompared, TCPState: f.TCP.State}
	}
	return out
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// converge waits until the backup's table equals the master's (an upper
// bound for correctness, not a speed assertion).
func converge(t testing.TB, master, backup *lab.Netns, within time.Duration) map[ctwire.Key]view {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		m, b := table(t, master), table(t, backup)
		diff := cmp.Diff(m, b, addrCmp)
		if diff == "" {
			return m
		}
		if time.Now().After(deadline) {
			keys := []string{}
			for k := range m {
				if _, ok := b[k]; !ok {
					keys = append(keys, fmt.Sprint(k.Orig))
				}
			}
			sort.Strings(keys)
			if len(keys) > 10 {
				keys = keys[:10]
			}
			if len(diff) > 4000 {
				diff = diff[:4000] + "..."
			}
			t.Fatalf("backup did not converge within %v: master %d flows, backup %d; first missing %v\n(-master +backup):\n%s",
				within, len(m), len(b), keys, diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitReady(t testing.TB, n *node, within time.Duration, peers ...*node) {
	t.Helper()
	select {
	case <-n.s.Ready():
	case <-time.After(within):
		var ps []string
		for _, p := range peers {
			ps = append(ps, fmt.Sprintf("%s: %+v", p.ns, p.s.Status()))
		}
		t.Fatalf("%s: not bulk-synced within %v: %+v; peers %v", n.ns, within, n.s.Status(), ps)
	}
}

func ctInsert(t testing.TB, ns *lab.Netns, i int, extra ...string) {
	t.Helper()
	args := []string{"conntrack", "-I", "-p", "tcp", "-s", fmt.Sprintf("10.1.%d.%d", i/250, 1+i%250), "-d", "198.51.100.7",
		"--sport", fmt.Sprint(20000 + i), "--dport", "443", "--state", "ESTABLISHED", "-u", "SEEN_REPLY,ASSURED", "-t", "3600"}
	run(t, ns, append(args, extra...)...)
}

// TestReplicateNewUpdateDestroy: flows that predate the master (dump), new
// ones, updates (mark, state) and destroys reach the backup, NAT'd flows
// with their mappings; the backup reports bulk-synced.
func TestReplicateNewUpdateDestroy(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	for i := 0; i < 5; i++ {
		ctInsert(t, a, i)
	}
	ctInsert(t, a, 5, "--src-nat", "203.0.113.1")
	ctInsert(t, a, 6, "--dst-nat", "192.168.1.10")
	run(t, a, "conntrack", "-I", "-p", "udp", "-s", "10.1.0.100", "-d", "198.51.100.53", "--sport", "5353", "--dport", "53",
		"-t", "120", "--src-nat", "203.0.113.1:40000")

	backup := startNode(t, b, false, nil)
	master := startNode(t, a, true, nil)
	waitReady(t, backup, 60*time.Second)
	if !backup.s.BulkSynced() {
		t.Fatal("Ready closed but BulkSynced false")
	}
	m := converge(t, a, b, 10*time.Second)
	if len(m) != 8 {
		t.Fatalf("master has %d flows, want 8", len(m))
	}
	// NEW after start, with NAT both ways.
	ctInsert(t, a, 7, "--src-nat", "203.0.113.1", "--dst-nat", "192.168.1.11")
	ctInsert(t, a, 8)
	converge(t, a, b, 10*time.Second)
	// UPDATE: mark and TCP state.
	updateFlow(t, a, 20000, func(f *conntrack.Flow) { f.Mark = 77 })
	updateFlow(t, a, 20001, func(f *conntrack.Flow) { f.ProtoInfo.TCP.State = 7; f.Timeout = 100 }) // TIME_WAIT
	m = converge(t, a, b, 10*time.Second)
	for k, v := range m {
		if k.Orig.SrcPort == 20000 && v.Mark != 77 {
			t.Fatalf("update of mark not seen on master view: %+v", v)
		}
	}
	// DESTROY.
	run(t, a, "conntrack", "-D", "-p", "tcp", "--sport", "20002")
	run(t, a, "conntrack", "-D", "-p", "udp")
	m = converge(t, a, b, 10*time.Second)
	if len(m) != 8 {
		t.Fatalf("master has %d flows after deletes, want 8", len(m))
	}
	st := backup.s.Status()
	if st.RecordsApplied == 0 || st.Forged != 0 || !st.BulkSynced {
		t.Fatalf("backup status %+v", st)
	}
	if ms := master.s.Status(); !ms.Master || ms.Flows != 8 {
		t.Fatalf("master status %+v", ms)
	}
}

// TestLossConverges: 20% random loss of sync datagrams into the backup
// (nftables numgen) still converges, through NACK repair.
func TestLossConverges(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	run(t, b, "nft", "add table inet loss; add chain inet loss in { type filter hook input priority 0; }; "+
		"add rule inet loss in udp dport 3780 numgen random mod 100 < 20 counter drop")
	backup := startNode(t, b, false, nil)
	startNode(t, a, true, nil)
	waitReady(t, backup, 60*time.Second)
	flows := 400
	if err := a.Do(func() error { return createFlows(0, flows) }); err != nil {
		t.Fatal(err)
	}
	converge(t, a, b, 30*time.Second)
	if err := a.Do(func() error { return deleteFlows(0, flows/2) }); err != nil {
		t.Fatal(err)
	}
	converge(t, a, b, 30*time.Second)
	st := backup.s.Status()
	out := run(t, b, "nft", "list", "table", "inet", "loss")
	if st.Lost == 0 || st.Repaired+st.Resyncs == 0 {
		t.Fatalf("no loss seen or repaired under 20%% drop: %+v\n%s", st, out)
	}
	t.Logf("backup: lost %d, repaired %d, NACKs %d, resyncs %d", st.Lost, st.Repaired, st.NACKsSent, st.Resyncs)
}

// TestReplicateOverIPv6Group: the same replication over an IPv6 link-local
// group (a sync link without IPv4 would use it). IPv4 datagrams are
// dropped on the backup, so only the IPv6 transport can deliver, and the
// nft counter proves the datagrams were IPv6.
func TestReplicateOverIPv6Group(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	for i, ns := range []*lab.Netns{a, b} {
		// nodad: usable at once, not after duplicate address detection.
		run(t, ns, "ip", "addr", "add", fmt.Sprintf("fe80::%d/64", i+1), "dev", "sync0", "nodad")
	}
	run(t, b, "nft", "add table inet v6only; add chain inet v6only in { type filter hook input priority 0; }; "+
		"add rule inet v6only in meta nfproto ipv4 udp dport 3780 drop; "+
		"add rule inet v6only in meta nfproto ipv6 udp dport 3780 counter")
	group := func(c *Config) { c.Group = netip.MustParseAddr("ff02::3780") }
	backup := startNode(t, b, false, group)
	startNode(t, a, true, group)
	waitReady(t, backup, 60*time.Second)
	for i := 0; i < 20; i++ {
		ctInsert(t, a, i)
	}
	ctInsert(t, a, 20, "--src-nat", "203.0.113.1")
	m := converge(t, a, b, 10*time.Second)
	if len(m) != 21 {
		t.Fatalf("master has %d flows, want 21", len(m))
	}
	out := run(t, b, "nft", "list", "table", "inet", "v6only")
	if !strings.Contains(out, "counter packets") || strings.Contains(out, "counter packets 0 ") {
		t.Fatalf("no IPv6 sync datagram counted on the backup:\n%s", out)
	}
	if st := backup.s.Status(); st.DatagramsReceived == 0 || st.Forged != 0 {
		t.Fatalf("backup status %+v", st)
	}
}

// updateFlow changes the TCP flow with original source port sport.
func updateFlow(t testing.TB, ns *lab.Netns, sport uint16, mutate func(*conntrack.Flow)) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		if err != nil {
			return err
		}
		for _, f := range flows {
			if f.TupleOrig.Proto.SourcePort != sport {
				continue
			}
			u := conntrack.Flow{TupleOrig: f.TupleOrig, Timeout: f.Timeout, Mark: f.Mark,
				ProtoInfo: conntrack.ProtoInfo{TCP: &conntrack.ProtoInfoTCP{State: f.ProtoInfo.TCP.State}}}
			mutate(&u)
			return c.Update(u)
		}
		return fmt.Errorf("no flow with sport %d", sport)
	})
	if err != nil {
		t.Fatalf("update flow %d: %v", sport, err)
	}
}

func labFlow(i int) conntrack.Flow {
	src := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
	f := conntrack.NewFlow(6, conntrack.StatusSeenReply|conntrack.StatusAssured|conntrack.StatusConfirmed, src, netip.MustParseAddr("198.51.100.80"),
		uint16(1024+i%60000), 80, 3600, 0)
	f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: 3}
	return f
}

func createFlows(from, to int) error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := from; i < to; i++ {
		if err := c.Create(labFlow(i)); err != nil {
			return fmt.Errorf("create flow %d: %w", i, err)
		}
	}
	return nil
}

func deleteFlows(from, to int) error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := from; i < to; i++ {
		if err := c.Delete(labFlow(i)); err != nil {
			return fmt.Errorf("delete flow %d: %w", i, err)
		}
	}
	return nil
}

// TestForgedDatagramDropped: a datagram signed with the wrong key inserts
// nothing and is counted.
func TestForgedDatagramDropped(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	backup := startNode(t, b, false, nil)
	var conn net.PacketConn
	if err := a.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", "10.99.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: 6, Timeout: 600,
		Orig:   ctwire.Tuple{Src: netip.MustParseAddr("10.66.0.1"), Dst: netip.MustParseAddr("198.51.100.66"), SrcPort: 6666, DstPort: 22},
		Reply:  ctwire.Tuple{Src: netip.MustParseAddr("198.51.100.66"), Dst: netip.MustParseAddr("10.66.0.1"), SrcPort: 22, DstPort: 6666},
		HasTCP: true, TCP: ctwire.TCPInfo{State: 3}}
	for i, bulk := range []uint16{ctwire.FlagBulkBegin | ctwire.FlagBulkEnd | ctwire.FlagBulk, 0} {
		h := ctwire.Header{Type: ctwire.TypeData, Flags: bulk, Epoch: uint64(time.Now().UnixNano()), Seq: uint32(1 + i)}
		d := ctwire.AppendFlow(ctwire.AppendHeader(nil, &h), &f)
		ctwire.SetPayload(d, 1)
		d = ctwire.NewAuth(ctwire.DeriveKey([]byte("not-the-password"))).Seal(d)
		if _, err := conn.WriteTo(d, &net.UDPAddr{IP: net.IPv4(225, 0, 0, 50), Port: DefaultPort}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for backup.s.Status().Forged < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("forged datagrams not counted: %+v", backup.s.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(table(t, b)); n != 0 {
		t.Fatalf("forged datagram inserted %d flows", n)
	}
	if backup.s.BulkSynced() {
		t.Fatal("forged bulk marked the backup synced")
	}
	if got := backup.s.Status().Rejected["mac"]; got != 2 {
		t.Fatalf("rejected by mac = %d, want 2", got)
	}
}

// TestBackupRestartResyncs: a backup stopped mid-stream misses creates and
// deletes; restarted, it bulk-resyncs: missing flows appear, stale ones are
// purged.
func TestBackupRestartResyncs(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	backup := startNode(t, b, false, nil)
	master := startNode(t, a, true, nil)
	waitReady(t, backup, 60*time.Second)
	must(t, a.Do(func() error { return createFlows(0, 300) }))
	converge(t, a, b, 20*time.Second)
	backup.stop(t)
	must(t, a.Do(func() error { return createFlows(300, 500) }))
	must(t, a.Do(func() error { return deleteFlows(0, 100) }))
	// Let the master send the destroys to nobody, so only the bulk's purge
	// can remove the stale flows.
	deadline := time.Now().Add(30 * time.Second)
	for st := master.s.Status(); st.Flows != 400 || st.Queued != 0; st = master.s.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("master never settled at 400 flows: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	backup2 := startNode(t, b, false, nil)
	waitReady(t, backup2, 60*time.Second)
	m := converge(t, a, b, 20*time.Second)
	if len(m) != 400 {
		t.Fatalf("master has %d flows, want 400", len(m))
	}
	st := backup2.s.Status()
	if st.Purged != 100 || st.Resyncs == 0 {
		t.Fatalf("want 100 stale flows purged by the bulk, status %+v", st)
	}
}

// TestListenerOverrunRecovers: with a tiny event socket buffer a storm of
// new flows overruns the netlink socket (ENOBUFS); the listener is
// restarted and the peer resynced, and the backup converges.
func TestListenerOverrunRecovers(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	backup := startNode(t, b, false, nil)
	master := startNode(t, a, true, func(c *Config) { c.ReadBuffer = 4096 })
	waitReady(t, backup, 60*time.Second)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if err := a.Do(func() error { return createFlows(w*1500, (w+1)*1500) }); err != nil {
				t.Error(err)
			}
		}(w)
	}
	wg.Wait()
	converge(t, a, b, 90*time.Second)
	ms := master.s.Status()
	if ms.Overruns == 0 || ms.ListenerRestarts == 0 {
		t.Fatalf("storm did not overrun the 4 KiB event buffer (test proves nothing): %+v", ms)
	}
	t.Logf("master: %d overruns, %d listener restarts, %d bulks", ms.Overruns, ms.ListenerRestarts, ms.Resyncs)
}

// TestSweepBesideStorm: refresh sweeps every 300 ms run while 10,000 flows
// are created: the dump is merged between event batches, the backup
// converges, and the sweeps do not send the storm twice.
func TestSweepBesideStorm(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	backup := startNode(t, b, false, nil)
	master := startNode(t, a, true, func(c *Config) { c.Refresh = 300 * time.Millisecond })
	waitReady(t, backup, 60*time.Second)
	const n = 10000
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if err := a.Do(func() error { return createFlows(w*n/2, (w+1)*n/2) }); err != nil {
				t.Error(err)
			}
		}(w)
	}
	wg.Wait()
	converge(t, a, b, 90*time.Second)
	before := master.s.Status().Sweeps
	deadline := time.Now().Add(30 * time.Second)
	for master.s.Status().Sweeps < before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two sweeps completed in 30 s after the storm: %+v", master.s.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ms := master.s.Status()
	if ms.RecordsSent > n*12/10 {
		t.Fatalf("%d records sent for %d flows: the sweeps re-sent the storm (%+v)", ms.RecordsSent, n, ms)
	}
	t.Logf("master: %d sweeps, %d records sent for %d flows, %d refreshed", ms.Sweeps, ms.RecordsSent, n, ms.Refreshed)
	converge(t, a, b, 30*time.Second)
}
