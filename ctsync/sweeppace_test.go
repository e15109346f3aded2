package ctsync

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/muros/muros-had/ctsync/ctnl"
	"github.com/muros/muros-had/ctsync/ctwire"
)

// fakeTable is a tableReader of n flows read in datagrams of per flows,
// recording when each read ran; Start drops a dump left unfinished, as
// ctnl.Dumper does.
type fakeTable struct {
	n, per, left     int
	starts, abandons int
	reads            []time.Time
}

func (f *fakeTable) Start() error { f.starts++; f.left = f.n; return nil }
func (f *fakeTable) Close() error { return nil }
func (f *fakeTable) Abandon() {
	if f.left > 0 {
		f.abandons++
		f.left = 0
	}
}
func (f *fakeTable) Next(fs []ctwire.Flow, _ *[ctnl.NumEventReasons]uint64) ([]ctwire.Flow, bool, error) {
	f.reads = append(f.reads, time.Now())
	k := min(f.per, f.left)
	f.left -= k
	for range k {
		fs = append(fs, ctwire.Flow{})
	}
	return fs, f.left == 0, nil
}

// runSweeper starts s.sweeper on table, and a stand-in for the loop that
// hands chunks back and reports the generation of each completed dump.
func runSweeper(t *testing.T, ctx context.Context, table *fakeTable) (*Sync, chan uint64) {
	t.Helper()
	s := &Sync{sweepReq: make(chan sweepRequest, 1), dumper: table, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	out, free, doneGen := make(chan *sweepChunk), make(chan *sweepChunk, sweepChunks), make(chan uint64, 16)
	for range sweepChunks {
		free <- &sweepChunk{}
	}
	go s.sweeper(ctx, out, free)
	go func() { // the loop's part: hand chunks back
		for {
			select {
			case c := <-out:
				if c.done {
					doneGen <- c.gen
				}
				free <- c
			case <-ctx.Done():
				return
			}
		}
	}()
	return s, doneGen
}

// TestPacedSweep: a refresh sweep at a rate reads its dump no faster than
// the rate (1,000 flows at 1,000 a second take a second), a request at
// rate 0 reads it at once, and a new request during a paced dump does not
// wait for the rest of it.
func TestPacedSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		table := &fakeTable{n: 1000, per: 100}
		s, doneGen := runSweeper(t, ctx, table)

		start := time.Now()
		s.sweepReq <- sweepRequest{gen: 1, rate: 1000}
		if g := <-doneGen; g != 1 {
			t.Fatalf("done gen %d", g)
		}
		if took := time.Since(start); took < 900*time.Millisecond || took > 1100*time.Millisecond {
			t.Errorf("1,000 flows at 1,000/s took %v, want about 0.9 s (the last datagram due at 900 read)", took)
		}

		start = time.Now()
		s.sweepReq <- sweepRequest{gen: 2}
		<-doneGen
		if took := time.Since(start); took != 0 {
			t.Errorf("an unpaced dump took %v of (virtual) time", took)
		}

		// A slow sweep (10 s), then a load request 1 s into it.
		s.sweepReq <- sweepRequest{gen: 3, rate: 100}
		time.Sleep(time.Second)
		start = time.Now()
		s.sweepReq <- sweepRequest{gen: 4}
		if g := <-doneGen; g != 4 {
			t.Fatalf("done gen %d, want the new request's 4 (the paced dump is dropped)", g)
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("the new request waited %v for the paced dump", took)
		}
		if table.starts != 4 || table.abandons != 1 {
			t.Errorf("%d dumps started and %d abandoned, want 4 and 1 (the paced one, unread)", table.starts, table.abandons)
		}
	})
}

// TestSweepRate: the pace, or faster when half the refresh interval would
// not hold the table at the pace.
func TestSweepRate(t *testing.T) {
	s := &Sync{cfg: Config{Refresh: 10 * time.Second}}
	for _, c := range []struct{ flows, want int }{
		{0, sweepPace},
		{100_000, sweepPace},
		{250_000, sweepPace},
		{500_000, 100_000},
	} {
		if got := s.sweepRate(c.flows); got != c.want {
			t.Errorf("sweepRate(%d) = %d, want %d", c.flows, got, c.want)
		}
	}
}
