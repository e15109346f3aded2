package bench

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

var (
	settlePairs = flag.Int("settle.pairs", 40, "fresh pairs elected per daemon in BenchmarkFalseTakeoverSettling")
	settleLogs  = flag.String("settle.logs", "", "directory: BenchmarkFalseTakeoverSettling keeps both daemons' logs of every pair with a false takeover in it")
)

// settleWatch is how long BenchmarkFalseTakeoverSettling watches a pair
// after its election: about the failover benchmark's lead before its
// trigger.
const settleWatch = 700 * time.Millisecond

// BenchmarkFalseTakeoverSettling elects fresh pairs at 10 ms adverts, one
// after the other, as the failover benchmark does, and counts the backup's
// false takeovers (its adverts: the master was alive all along) from its
// start to settleWatch after the election, and in that last window alone
// ("settled"). A pair's first seconds are when a daemon knows least of
// its peer: muros-had's liveness detection had learnt nothing yet and
// stood at its floor (a 3.3 ms stall of the master's vCPU half a second
// after the election was a death; package liveness, the cold start), and
// keepalived 2.4.3's one-advert Master_Down flapped while settling.
//
//	sudo go test -run '^$' -bench FalseTakeoverSettling -benchtime 1x ./bench/ -args -settle.pairs=40
func BenchmarkFalseTakeoverSettling(b *testing.B) {
	const interval = 10 * time.Millisecond
	for _, im := range impls(b) {
		b.Run("10ms/"+im.name, func(b *testing.B) {
			lab.Require(b)
			var all, settled, pairs int
			for i := range *settlePairs {
				st, logs, err := settleOnce(im, interval)
				if err != nil {
					b.Fatalf("pair %d: %v", i, err)
				}
				pairs++
				all += st.All.Episodes
				settled += st.Settled.Episodes
				if st.All.Episodes > 0 {
					b.Logf("pair %d: %s", i, st)
					if *settleLogs != "" {
						if err := keepLogs(filepath.Join(*settleLogs, fmt.Sprintf("%s-%d", im.name, i)), logs); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.Logf("%s: false takeovers in %d pairs: %d, %d of them in the %v after the election (load average %s)", im.name, pairs, all, settled, settleWatch, loadAverage())
			b.ReportMetric(float64(all), "false_takeovers")
			b.ReportMetric(float64(settled), "false_takeovers_settled")
			b.ReportMetric(float64(pairs), "pairs")
		})
	}
}

// settleOnce elects one fresh pair and watches it settleWatch after the
// election; logs are both daemons' logs (fw1, fw2).
func settleOnce(im impl, interval time.Duration) (settling, [2]string, error) {
	var logs [2]string
	p, err := lab.NewPair(lab.Options{})
	if err != nil {
		return settling{}, logs, err
	}
	stop := lab.CloseOnSignal(p)
	defer func() {
		stop()
		p.Close()
	}()
	// Not warm: the cold start is what this benchmark watches.
	n1, n2, capSync, started, settled, err := electWatched(p, im, interval, nil)
	if err != nil {
		return settling{}, logs, err
	}
	defer capSync.Stop()
	// As the failover benchmark does after its election.
	if err := p.FlushNeighbours(); err != nil {
		return settling{}, logs, err
	}
	time.Sleep(settleWatch)
	end := time.Now()
	frames, err := stopCapture(capSync)
	if err != nil {
		return settling{}, logs, err
	}
	logs = [2]string{logOf(n1), logOf(n2)}
	return settlingOf(p, frames, interval, started, settled, end), logs, nil
}

// logOf is what a node has logged so far.
func logOf(n node) string {
	switch n := n.(type) {
	case *hatest.Node:
		return n.Proc.Log()
	case *hatest.Keepalived:
		return n.Log()
	}
	return fmt.Sprintf("(no log for %T)", n)
}

func keepLogs(dir string, logs [2]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, l := range logs {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("fw%d.log", i+1)), []byte(l), 0o644); err != nil {
			return err
		}
	}
	return nil
}
