package lab

import (
	"context"
	"testing"
	"time"
)

// BenchmarkNewPair measures building and tearing down the whole pair.
func BenchmarkNewPair(b *testing.B) {
	Require(b)
	for b.Loop() {
		p, err := NewPair(Options{IPv6: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProbeNoiseFloor reports the largest reply gap ProbeUDP sees on
// a steady path (a stand-in VIP on fw1, no failover): the resolution of
// every failover figure measured with it on this machine.
func BenchmarkProbeNoiseFloor(b *testing.B) {
	Require(b)
	p, err := NewPair(Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	if err := p.FW1.AddAddr(IfLAN, p.LANVIP); err != nil {
		b.Fatal(err)
	}
	if err := p.FW1.AddAddr(IfWAN, p.WANVIP); err != nil {
		b.Fatal(err)
	}
	var worst, sum, lag time.Duration
	var lost, runs int
	for b.Loop() {
		res, err := ProbeUDP(context.Background(), p.Client, p.Server, p.ServerAddr.Addr(), UDPProbeOptions{Duration: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		worst = max(worst, res.MaxGap)
		sum += res.MaxGap
		lost += res.Lost
		lag = max(lag, res.MaxSendLag)
		runs++
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(runs)/1000, "maxgap-ms/run")
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-maxgap-ms")
	b.ReportMetric(float64(lost)/float64(runs), "lost/run")
	b.ReportMetric(float64(lag.Microseconds())/1000, "worst-sendlag-ms")
}
