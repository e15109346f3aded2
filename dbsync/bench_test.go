package dbsync

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Change-to-applied latency on the lab pair (two namespaces, veth, TLS 1.3,
// JWT): from the write on the master to the new content being visible on
// the backup. Includes the 20 ms debounce. Reported as p50/p99 in ms.
//
//	go test ./dbsync/ -run '^$' -bench 'ChangeToApplied|Throughput' -benchtime 200x
func BenchmarkChangeToApplied(b *testing.B) {
	b.Run("small-file", func(b *testing.B) {
		a, bk := newLabPair(b, pairOptions{})
		src := filepath.Join(a.dbDir(), "settings.json")
		dst := filepath.Join(bk.dbDir(), "settings.json")
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			content := []byte(fmt.Sprintf(`{"revision": %d, "hostname": "fw1"}`+"\n", i))
			start := time.Now()
			if err := os.WriteFile(src, content, 0o644); err != nil {
				b.Fatal(err)
			}
			waitContent(b, dst, func(got []byte) bool { return bytes.Equal(got, content) })
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	b.Run("lease-line", func(b *testing.B) {
		a, bk := newLabPair(b, pairOptions{})
		src := filepath.Join(a.keaDir(), "kea-leases4.csv")
		dst := filepath.Join(bk.keaDir(), "kea-leases4.csv")
		writeFile(b, src, "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n")
		waitFor(b, "header", sameFile(src, dst))
		f, err := os.OpenFile(src, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		size := fileSize(b, src)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			line := fmt.Sprintf("10.10.%d.%d,aa:bb:cc:dd:%02x:%02x,,3600,%d,1,0,0,host%d,0,,0\n", i/250, i%250, i/256%256, i%256, 1764050000+i, i)
			size += int64(len(line))
			start := time.Now()
			if _, err := f.WriteString(line); err != nil {
				b.Fatal(err)
			}
			want := size
			waitContent(b, dst, func(got []byte) bool { return int64(len(got)) == want })
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		st := a.node.Status().Stats
		b.ReportMetric(float64(st["entries_sent_append"])/float64(st["entries_sent_append"]+st["entries_sent_put"]), "append-fraction")
		reportLatency(b, lat)
	})
}

// BenchmarkDirectoryThroughput replicates a 100 MiB directory (100 files of
// 1 MiB of fresh content each iteration) and reports MB/s end to end.
func BenchmarkDirectoryThroughput(b *testing.B) {
	a, bk := newLabPair(b, pairOptions{})
	const files, size = 100, 1 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, size)
	var total time.Duration
	iters := 0
	for b.Loop() {
		b.StopTimer()
		before := bk.node.Status().Stats["bytes_applied"]
		contents := make([][]byte, files)
		for i := range contents {
			for j := range buf {
				buf[j] = byte(rng.Uint32())
			}
			contents[i] = bytes.Clone(buf)
		}
		b.StartTimer()
		start := time.Now()
		for i, c := range contents {
			writeFile(b, filepath.Join(a.dbDir(), "bulk", fmt.Sprintf("f%03d", i)), string(c))
		}
		waitFor(b, "100 MiB applied", func() error {
			if got := bk.node.Status().Stats["bytes_applied"] - before; got < files*size {
				return fmt.Errorf("%d bytes applied", got)
			}
			for i, c := range contents {
				got, err := os.ReadFile(filepath.Join(bk.dbDir(), "bulk", fmt.Sprintf("f%03d", i)))
				if err != nil || !bytes.Equal(got, c) {
					return fmt.Errorf("file %d not yet equal", i)
				}
			}
			return nil
		})
		total += time.Since(start)
		iters++
	}
	b.ReportMetric(float64(files*size*iters)/1e6/total.Seconds(), "MB/s")
}

func waitContent(b *testing.B, p string, ok func([]byte) bool) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got, err := os.ReadFile(p); err == nil && ok(got) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: change not applied within 20s", p)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func fileSize(b *testing.B, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
