package ctsync

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"

	"github.com/muros/muros-had/lab"
)

// fwPair is client - lan - {fwA, fwB} - wan - server, with fwA and fwB
// holding the same LAN/WAN addresses (as VIPs would) and only one of them
// with its LAN/WAN links up. Both firewalls run a stateful ruleset (policy
// drop, established accepted, new only from the LAN), source NAT to the WAN
// address, and nf_conntrack_tcp_loose=0 so a flow unknown to the firewall
// is not picked up mid-stream.
type fwPair struct {
	sw, client, server, fwA, fwB *lab.Netns
}

const fwRuleset = `table inet fw {
  chain forward_filter {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state new iifname "lan0" accept
  }
  chain postrouting_nat {
    type nat hook postrouting priority 100;
    oifname "wan0" snat ip to 10.2.0.1
  }
}`

func newFWPair(t *testing.T) *fwPair {
	t.Helper()
	p := &fwPair{
		sw: lab.NewNetnsT(t, "ctsw"), client: lab.NewNetnsT(t, "ctcl"), server: lab.NewNetnsT(t, "ctsv"),
		fwA: lab.NewNetnsT(t, "ctfwa"), fwB: lab.NewNetnsT(t, "ctfwb"),
	}
	lan, err := lab.NewBridge(p.sw, "lan")
	must(t, err)
	wan, err := lab.NewBridge(p.sw, "wan")
	must(t, err)
	_, err = lan.Connect(p.client, "eth0", "")
	must(t, err)
	_, err = wan.Connect(p.server, "eth0", "")
	must(t, err)
	must(t, p.client.AddAddr("eth0", netip.MustParsePrefix("10.1.0.2/24")))
	must(t, p.client.AddRoute("default", netip.MustParseAddr("10.1.0.1")))
	must(t, p.server.AddAddr("eth0", netip.MustParsePrefix("10.2.0.2/24")))
	for _, fw := range []*lab.Netns{p.fwA, p.fwB} {
		_, err = lan.Connect(fw, "lan0", "")
		must(t, err)
		_, err = wan.Connect(fw, "wan0", "")
		must(t, err)
		must(t, fw.AddAddr("lan0", netip.MustParsePrefix("10.1.0.1/24")))
		must(t, fw.AddAddr("wan0", netip.MustParsePrefix("10.2.0.1/24")))
		must(t, fw.SetSysctl("net.ipv4.ip_forward", "1"))
		must(t, fw.SetSysctl("net.netfilter.nf_conntrack_tcp_loose", "0"))
		rules := filepath.Join(fw.Dir, "fw.nft")
		must(t, os.WriteFile(rules, []byte(fwRuleset), 0o600))
		run(t, fw, "nft", "-f", rules)
	}
	must(t, lab.Veth(p.fwA, "sync0", p.fwB, "sync0"))
	must(t, p.fwA.AddAddr("sync0", netip.MustParsePrefix("10.99.0.1/24")))
	must(t, p.fwB.AddAddr("sync0", netip.MustParsePrefix("10.99.0.2/24")))
	// fwB is the standby: its copies of the shared addresses are down.
	must(t, p.fwB.LinkDown("lan0"))
	must(t, p.fwB.LinkDown("wan0"))
	return p
}

// takeover moves the LAN/WAN addresses from fwA to fwB, as a crash of fwA
// followed by the backup claiming the VIPs would.
func (p *fwPair) takeover(t *testing.T) {
	t.Helper()
	must(t, p.fwA.LinkDown("lan0"))
	must(t, p.fwA.LinkDown("wan0"))
	must(t, p.fwB.LinkUp("lan0"))
	must(t, p.fwB.LinkUp("wan0"))
	must(t, p.client.FlushNeighbours())
	must(t, p.server.FlushNeighbours())
}

// echoServer accepts TCP connections in ns and echoes them.
func echoServer(t *testing.T, ns *lab.Netns, addr string) {
	t.Helper()
	var ln net.Listener
	must(t, ns.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

func dialIn(t *testing.T, ns *lab.Netns, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	must(t, ns.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, 5*time.Second); return err }))
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and expects it echoed before the deadline.
func roundTrip(c net.Conn, msg string, within time.Duration) error {
	c.SetDeadline(time.Now().Add(within))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, []byte(msg)) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// TestTCPSurvivesTakeover: an established, source-NAT'd TCP stream through
// fwA continues through fwB after the addresses move, because its conntrack
// entry (with the NAT binding and be-liberal window tracking) was injected
// into fwB. Control: a stream established after replication stopped is
// dropped by fwB (tcp_loose=0), so the test can fail.
func TestTCPSurvivesTakeover(t *testing.T) {
	leakCheck(t)
	p := newFWPair(t)
	echoServer(t, p.server, "10.2.0.2:5001")
	backup := startNode(t, p.fwB, false, nil)
	master := startNode(t, p.fwA, true, nil)
	waitReady(t, backup, 60*time.Second, master)

	replicated := dialIn(t, p.client, "10.2.0.2:5001")
	for i := 0; i < 20; i++ {
		must(t, roundTrip(replicated, fmt.Sprintf("before-%d;", i), 5*time.Second))
	}
	// Wait for the stream's ESTABLISHED/ASSURED entry on the backup.
	deadline := time.Now().Add(10 * time.Second)
	for !hasAssuredNAT(t, p.fwB) {
		if time.Now().After(deadline) {
			t.Fatalf("fwB never got the stream's entry; fwA table %v, fwB table %v", table(t, p.fwA), table(t, p.fwB))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// fwA "crashes": replication stops first, then a control stream is
	// opened that fwB never hears of.
	master.stop(t)
	control := dialIn(t, p.client, "10.2.0.2:5001")
	must(t, roundTrip(control, "control-before;", 5*time.Second))

	p.takeover(t)
	for i := 0; i < 20; i++ {
		if err := roundTrip(replicated, fmt.Sprintf("after-%d;", i), 15*time.Second); err != nil {
			t.Fatalf("replicated stream broke after takeover (round trip %d): %v\nfwB table: %v", i, err, table(t, p.fwB))
		}
	}
	err := roundTrip(control, "control-after;", 3*time.Second)
	var ne net.Error
	if err == nil || !(errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("control stream unknown to fwB should stall (tcp_loose=0), got %v", err)
	}
	if st := backup.s.Status(); st.Forged != 0 || st.InjectErrors != 0 {
		t.Fatalf("backup status %+v", st)
	}
}

func hasAssuredNAT(t *testing.T, ns *lab.Netns) bool {
	for _, v := range table(t, ns) {
		if v.Proto == 6 && v.Orig.DstPort == 5001 && v.Status&(1<<2) != 0 && v.Status&(1<<4) != 0 && v.TCPState == 3 {
			return true
		}
	}
	return false
}

// TestUDPTimeoutRefreshed: a UDP flow kept alive by traffic on the master
// produces no conntrack event after it is assured, yet its backup copy
// never expires: the refresh sweep re-announces it. The conntrack UDP
// timeouts are cut to 8s in both firewalls and the sweep runs every 2s, so
// without re-announcements the backup copy (8s + 3 x 2s padding) would
// vanish after about 14s of the test's 30s.
func TestUDPTimeoutRefreshed(t *testing.T) {
	leakCheck(t)
	p := newFWPair(t)
	for _, fw := range []*lab.Netns{p.fwA, p.fwB} {
		must(t, fw.SetSysctl("net.netfilter.nf_conntrack_udp_timeout", "8"))
		must(t, fw.SetSysctl("net.netfilter.nf_conntrack_udp_timeout_stream", "8"))
	}
	var srv net.PacketConn
	must(t, p.server.Do(func() (err error) { srv, err = net.ListenPacket("udp4", "10.2.0.2:5353"); return err }))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	defer func() { srv.Close(); wg.Wait() }()
	backup := startNode(t, p.fwB, false, func(c *Config) { c.Refresh = 2 * time.Second })
	master := startNode(t, p.fwA, true, func(c *Config) { c.Refresh = 2 * time.Second })
	waitReady(t, backup, 60*time.Second, master)
	var cl net.Conn
	must(t, p.client.Do(func() (err error) { cl, err = net.Dial("udp4", "10.2.0.2:5353"); return err }))
	defer cl.Close()
	// Traffic every 200ms from its own goroutine, so slow checks below do
	// not let the flow expire on the master.
	stop := make(chan struct{})
	trafficErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			select {
			case <-stop:
				trafficErr <- nil
				return
			case <-time.After(200 * time.Millisecond):
			}
			cl.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := cl.Write([]byte("ping")); err != nil {
				trafficErr <- err
				return
			}
			if _, err := cl.Read(buf); err != nil {
				trafficErr <- fmt.Errorf("UDP echo through fwA: %w", err)
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-trafficErr; err != nil {
			t.Error(err)
		}
	}()
	seen := false
	var masterID uint32
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		id, ok := udpFlowID(t, p.fwA)
		if masterID != 0 && (!ok || id != masterID) {
			t.Fatalf("the flow expired on the master itself after %v (no packet for 8s: machine overloaded); test invalid", time.Since(start))
		}
		masterID = id
		has := false
		for k := range table(t, p.fwB) {
			if k.Proto == 17 && k.Orig.DstPort == 5353 {
				has = true
			}
		}
		if seen && !has {
			t.Fatalf("backup lost the live UDP flow after %v (refresh failed); master status %+v", time.Since(start), master.s.Status())
		}
		seen = seen || has
		time.Sleep(500 * time.Millisecond)
	}
	if !seen {
		t.Fatal("UDP flow never reached the backup")
	}
	if ms := master.s.Status(); ms.Refreshed == 0 {
		t.Fatalf("no refresh counted: %+v", ms)
	}
}

// udpFlowID returns the conntrack ID of the test's UDP flow in ns.
func udpFlowID(t *testing.T, ns *lab.Netns) (uint32, bool) {
	var id uint32
	var found bool
	must(t, ns.Do(func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		for _, f := range flows {
			if f.TupleOrig.Proto.Protocol == 17 && f.TupleOrig.Proto.DestinationPort == 5353 {
				id, found = f.ID, true
			}
		}
		return err
	}))
	return id, found
}

// TestRoleSwap: the backup becomes master (dump + bulk), the old master
// becomes backup, requests a resync and then mirrors the new master.
func TestRoleSwap(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	nb := startNode(t, b, false, nil)
	na := startNode(t, a, true, nil)
	waitReady(t, nb, 60*time.Second)
	must(t, a.Do(func() error { return createFlows(0, 100) }))
	converge(t, a, b, 10*time.Second)

	na.s.SetRole(false)
	nb.s.SetRole(true)
	must(t, b.Do(func() error { return createFlows(100, 150) }))
	must(t, b.Do(func() error { return deleteFlows(0, 20) }))
	m := converge(t, b, a, 15*time.Second)
	if len(m) != 130 {
		t.Fatalf("new master has %d flows, want 130", len(m))
	}
	deadline := time.Now().Add(10 * time.Second)
	for !na.s.BulkSynced() {
		if time.Now().After(deadline) {
			t.Fatalf("old master, now backup, never bulk-synced: %+v", na.s.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := nb.s.Status(); !st.Master || st.Flows != 130 {
		t.Fatalf("new master status %+v", st)
	}
}
