package bench

// A cheap watch of one node's VRRP adverts, for runs too long for a full
// capture (BenchmarkFalseTakeoverIdle: minutes of a sync link that also
// carries muros-had's millisecond heartbeats): an AF_PACKET socket whose
// BPF filter passes only IPv4 frames from the node's address carrying VRRP
// (112) or AH (51), and the instants they were read.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"

	"github.com/muros/muros-had/lab"
)

// AdvertFilter is the classic BPF program that accepts an Ethernet frame
// holding an IPv4 packet from src with protocol 112 (VRRP) or 51 (AH, the
// wrapping of muros-had's and keepalived's authenticated adverts), and
// keeps its first 64 bytes; it rejects everything else. Offsets as in
// ParseAdvertFrame: EtherType at 12, IPv4 protocol at 14+9, source at
// 14+12.
func AdvertFilter(src netip.Addr) ([]bpf.RawInstruction, error) {
	if !src.Is4() {
		return nil, fmt.Errorf("bench: advert filter for %v: IPv4 only", src)
	}
	a := src.As4()
	ip := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipFalse: 6},
		bpf.LoadAbsolute{Off: 14 + 12, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: ip, SkipFalse: 4},
		bpf.LoadAbsolute{Off: 14 + 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 112, SkipTrue: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 51, SkipFalse: 1},
		bpf.RetConstant{Val: 64},
		bpf.RetConstant{Val: 0},
	})
}

// AdvertWatch records the instants at which one node's adverts crossed an
// interface (either direction).
type AdvertWatch struct {
	conn  *packet.Conn
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	times []time.Time
	err   error
}

// WatchAdverts starts watching ifName in ns for adverts from src. Stop it.
func WatchAdverts(ns *lab.Netns, ifName string, src netip.Addr) (*AdvertWatch, error) {
	filter, err := AdvertFilter(src)
	if err != nil {
		return nil, err
	}
	var conn *packet.Conn
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, 0x0003 /* ETH_P_ALL */, &packet.Config{Filter: filter})
		return err
	}); err != nil {
		return nil, fmt.Errorf("bench: advert watch on %s/%s: %w", ns, ifName, err)
	}
	w := &AdvertWatch{conn: conn, stop: make(chan struct{})}
	w.wg.Go(w.loop)
	return w, nil
}

func (w *AdvertWatch) loop() {
	buf := make([]byte, 128)
	for {
		_, _, err := w.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				select {
				case <-w.stop:
					return
				default:
					continue
				}
			}
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		now := time.Now()
		w.mu.Lock()
		w.times = append(w.times, now)
		w.mu.Unlock()
	}
}

// Stop drains what was already delivered and returns the instants seen.
func (w *AdvertWatch) Stop() ([]time.Time, error) {
	close(w.stop)
	w.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	w.wg.Wait()
	err := w.conn.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.times, errors.Join(w.err, err)
}
