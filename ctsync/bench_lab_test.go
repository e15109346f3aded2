package ctsync

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// BenchmarkReplicationStorm creates b.N new flows in the master namespace
// through ctnetlink as fast as one writer can, and measures how fast they
// reach the backup's kernel table (flows/s) and the lag from the master's
// create returning to the backup's inject returning (p50/p99). Both nodes
// run in lab namespaces joined by a veth. Run with e.g.
// go test -run x -bench ReplicationStorm -benchtime 20000x ./ctsync/
func BenchmarkReplicationStorm(b *testing.B) {
	a, bk := syncPair(b)
	var mu sync.Mutex
	created := make(map[ctwire.Key]time.Time, b.N)
	lags := make([]time.Duration, 0, b.N)
	done := make(chan struct{})
	applied := 0
	backup := startNode(b, bk, false, func(c *Config) {
		c.OnApplied = func(f *ctwire.Flow, _ time.Time) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			t0, ok := created[f.Key()]
			if !ok || f.Op != ctwire.OpUpdate {
				return
			}
			delete(created, f.Key())
			lags = append(lags, now.Sub(t0))
			applied++
			if applied == b.N {
				close(done)
			}
		}
	})
	master := startNode(b, a, true, nil)
	waitReady(b, backup, 10*time.Second)

	var c *conntrack.Conn
	must(b, a.Do(func() (err error) { c, err = conntrack.Dial(nil); return err }))
	defer c.Close()
	flows := make([]conntrack.Flow, b.N)
	keys := make([]ctwire.Key, b.N)
	for i := range flows {
		flows[i] = stormFlow(i)
		keys[i] = ctwire.Key{Proto: 6, Orig: ctwire.Tuple{
			Src: flows[i].TupleOrig.IP.SourceAddress, Dst: flows[i].TupleOrig.IP.DestinationAddress,
			SrcPort: flows[i].TupleOrig.Proto.SourcePort, DstPort: flows[i].TupleOrig.Proto.DestinationPort}}
	}
	b.ResetTimer()
	start := time.Now()
	for i := range flows {
		// Record before creating: the event may be replicated before
		// Create returns.
		mu.Lock()
		created[keys[i]] = time.Now()
		mu.Unlock()
		if err := c.Create(flows[i]); err != nil {
			b.Fatalf("create %d: %v", i, err)
		}
	}
	createdIn := time.Since(start)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		mu.Lock()
		n := applied
		mu.Unlock()
		b.Fatalf("only %d of %d flows reached the backup; backup %+v", n, b.N, backup.s.Status())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lags)
	b.Logf("create phase %v; master %+v; backup %+v", createdIn, master.s.Status(), backup.s.Status())
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "flows/s")
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag-p50-ms")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag-p99-ms")
}

func stormFlow(i int) conntrack.Flow {
	f := labFlow(0)
	f.TupleOrig.IP.SourceAddress = ipFrom(0x0a400000 + uint32(i)) // 10.64.0.0 + i
	f.TupleReply.IP.DestinationAddress = f.TupleOrig.IP.SourceAddress
	return f
}

func ipFrom(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// BenchmarkBulkResync50k measures how long a freshly started backup with
// an empty table takes to become Ready (bulk received, injected, purge
// done) against a master holding 50,000 flows: the window in which a
// restarted backup must not preempt. Run with
// go test -run x -bench BulkResync -benchtime 3x ./ctsync/
func BenchmarkBulkResync50k(b *testing.B) {
	const flows = 50000
	a, bk := syncPair(b)
	must(b, a.Do(func() error { return createFlows(0, flows) }))
	production := func(c *Config) { c.Refresh = DefaultRefresh }
	startNode(b, a, true, production)
	var c *conntrack.Conn
	must(b, bk.Do(func() (err error) { c, err = conntrack.Dial(nil); return err }))
	defer c.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := c.Flush(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n := startNode(b, bk, false, production)
		waitReady(b, n, 60*time.Second)
		b.StopTimer()
		if got := n.s.Status().Flows; got < flows {
			b.Fatalf("backup injected %d flows, want %d", got, flows)
		}
		n.stop(b)
	}
	b.ReportMetric(float64(flows)*float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}
