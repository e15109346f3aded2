package lab

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// addStandInVIPs puts the VIPs on fw by hand, standing in for a VRRP
// master, so traffic flows client -> fw -> server.
func addStandInVIPs(t *testing.T, p *Pair, fw *Netns) {
	t.Helper()
	steps := []struct {
		ifn string
		a   netip.Prefix
	}{{IfLAN, p.LANVIP}, {IfWAN, p.WANVIP}, {IfLAN, p.LANVIP6}, {IfWAN, p.WANVIP6}}
	for _, s := range steps {
		if !s.a.IsValid() {
			continue
		}
		if err := fw.AddAddr(s.ifn, s.a); err != nil {
			t.Fatal(err)
		}
	}
}

func counter(t *testing.T, p *Pair, fw *Netns, name string) uint64 {
	t.Helper()
	pk, _, err := p.Counter(fw, name)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

func TestPairComesUp(t *testing.T) {
	p := NewPairT(t, Options{IPv6: true})
	for _, fw := range p.Firewalls() {
		if got, err := fw.Sysctl("net.netfilter.nf_conntrack_tcp_loose"); err != nil || got != "0" {
			t.Errorf("%s nf_conntrack_tcp_loose = %q (%v), want 0", fw.Name, got, err)
		}
		if got, err := fw.Sysctl("net.ipv4.ip_forward"); err != nil || got != "1" {
			t.Errorf("%s ip_forward = %q (%v), want 1", fw.Name, got, err)
		}
		rules := fw.MustRun(t, "nft", "list", "table", "inet", NftTable)
		for _, want := range []string{
			"hook forward priority filter; policy drop;",
			"ct state established,related counter name \"" + CounterEstablished + "\" accept",
			"ct state invalid counter name \"" + CounterInvalid + "\" drop",
			"iifname \"lan0\" ct state new counter name \"" + CounterNewLAN + "\" accept",
			"chain " + NftForwardExtra, "chain " + NftSyncLoss,
		} {
			if !strings.Contains(rules, want) {
				t.Errorf("%s ruleset lacks %q:\n%s", fw.Name, want, rules)
			}
		}
	}
	// Hosts are not firewalls: the sysctl defaults there are untouched.
	if got, _ := p.Client.Sysctl("net.ipv4.ip_forward"); got != "0" {
		t.Errorf("client ip_forward = %q, want 0", got)
	}

	// The sync link and both firewalls' own addresses work with no VIP.
	p.FW1.MustPing(t, p.FW2Addrs.Sync.Addr())
	p.FW1.MustPing(t, p.FW2Addrs.LAN.Addr())
	p.Client.MustPing(t, p.FW2Addrs.LAN.Addr())
	p.Server.MustPing(t, p.FW1Addrs.WAN.Addr())
	p.Client.MustPing(t, p.FW1Addrs.LAN6.Addr())

	// Without a VIP owner the client has no way out.
	if err := p.Client.Ping(p.ServerAddr.Addr(), 300*time.Millisecond); err == nil {
		t.Fatalf("client reached server with no VIP anywhere")
	}

	addStandInVIPs(t, p, p.FW1)
	p.Client.MustPing(t, p.ServerAddr.Addr())
	p.Client.MustPing(t, p.ServerAddr6.Addr())
	if n := counter(t, p, p.FW1, CounterNewLAN); n < 2 {
		t.Errorf("fw1 %s = %d, want >= 2 (one v4, one v6 echo)", CounterNewLAN, n)
	}
	if n := counter(t, p, p.FW1, CounterEstablished); n < 2 {
		t.Errorf("fw1 %s = %d, want >= 2 (the replies)", CounterEstablished, n)
	}
	if n := counter(t, p, p.FW2, CounterNewLAN) + counter(t, p, p.FW2, CounterEstablished); n != 0 {
		t.Errorf("fw2 forwarded %d packets, want 0 (it holds no VIP)", n)
	}
	// New connections from the WAN are dropped and counted.
	if err := p.Server.Ping(p.ClientAddr.Addr(), 300*time.Millisecond); err == nil {
		t.Errorf("server reached client: forward policy lets new WAN traffic in")
	}
	if n := counter(t, p, p.FW1, CounterDropped); n < 1 {
		t.Errorf("fw1 %s = %d after a WAN-originated ping, want >= 1", CounterDropped, n)
	}
}

func TestPairOptions(t *testing.T) {
	p := NewPairT(t, Options{TCPLoose: true, SNAT: true,
		ExtraRules: "add rule inet " + NftTable + " " + NftForwardExtra + " udp dport 9999 counter drop\n"})
	for _, fw := range p.Firewalls() {
		if got, err := fw.Sysctl("net.netfilter.nf_conntrack_tcp_loose"); err != nil || got != "1" {
			t.Errorf("%s nf_conntrack_tcp_loose = %q (%v), want 1", fw.Name, got, err)
		}
		if got, _ := fw.Sysctl("net.ipv6.conf.all.disable_ipv6"); got != "1" {
			t.Errorf("%s: IPv6 not disabled without Options.IPv6", fw.Name)
		}
		rules := fw.MustRun(t, "nft", "list", "table", "inet", NftTable)
		if !strings.Contains(rules, "udp dport 9999") {
			t.Errorf("%s: ExtraRules not loaded:\n%s", fw.Name, rules)
		}
	}
	addStandInVIPs(t, p, p.FW1)

	// With SNAT the server sees the WAN VIP as the source.
	var ln net.Listener
	if err := p.Server.Do(func() (err error) { ln, err = net.Listen("tcp", ":7001"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conn net.Conn
	if err := p.Client.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", p.ServerAddr.Addr().String()+":7001", 3*time.Second)
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	from := sc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if from != p.WANVIP.Addr() {
		t.Errorf("server sees source %v, want WAN VIP %v (SNAT)", from, p.WANVIP.Addr())
	}
}

func TestCrashAndRestoreNode(t *testing.T) {
	p := NewPairT(t, Options{})
	addStandInVIPs(t, p, p.FW1)
	p.Client.MustPing(t, p.ServerAddr.Addr())
	if err := p.CrashNode(p.FW1); err != nil {
		t.Fatal(err)
	}
	for _, ifn := range []string{IfLAN, IfWAN, IfSync} {
		if out := p.FW1.MustRun(t, "ip", "-o", "link", "show", ifn); !strings.Contains(out, "state DOWN") {
			t.Errorf("fw1 %s not down after CrashNode: %s", ifn, out)
		}
	}
	if out := p.FW2.MustRun(t, "ip", "-o", "link", "show", IfSync); !strings.Contains(out, "NO-CARRIER") {
		t.Errorf("fw2 sync0 still has carrier with fw1 crashed: %s", out)
	}
	if err := p.Client.Ping(p.ServerAddr.Addr(), 300*time.Millisecond); err == nil {
		t.Errorf("client reached server through a crashed fw1")
	}
	if err := p.RestoreNode(p.FW1); err != nil {
		t.Fatal(err)
	}
	p.Client.MustPing(t, p.ServerAddr.Addr())
	p.FW2.MustPing(t, p.FW1Addrs.Sync.Addr())

	if err := p.SetLinkDown(p.FW1, IfWAN); err != nil {
		t.Fatal(err)
	}
	if err := p.Client.Ping(p.ServerAddr.Addr(), 300*time.Millisecond); err == nil {
		t.Errorf("client reached server with fw1 wan0 down")
	}
	if err := p.SetLinkUp(p.FW1, IfWAN); err != nil {
		t.Fatal(err)
	}
	p.Client.MustPing(t, p.ServerAddr.Addr())
	if err := p.CrashNode(p.Client); err == nil {
		t.Errorf("CrashNode accepted a host that is not a firewall")
	}
	if err := p.FlushNeighbours(); err != nil {
		t.Fatal(err)
	}
	if out := p.Client.MustRun(t, "ip", "neigh", "show"); strings.Contains(out, "REACHABLE") {
		t.Errorf("client neighbours not flushed:\n%s", out)
	}
}

func TestSyncLoss(t *testing.T) {
	p := NewPairT(t, Options{})
	p.FW1.MustPing(t, p.FW2Addrs.Sync.Addr())
	if err := p.SyncLoss(100); err != nil {
		t.Fatal(err)
	}
	if err := p.FW1.Ping(p.FW2Addrs.Sync.Addr(), 300*time.Millisecond); err == nil {
		t.Errorf("sync link still works at 100%% loss")
	}
	if n := counter(t, p, p.FW1, CounterSyncLoss); n < 1 {
		t.Errorf("fw1 %s = %d, want >= 1", CounterSyncLoss, n)
	}
	// LAN is not the sync link.
	p.FW1.MustPing(t, p.FW2Addrs.LAN.Addr())
	if err := p.SyncLoss(0); err != nil {
		t.Fatal(err)
	}
	p.FW1.MustPing(t, p.FW2Addrs.Sync.Addr())
	if err := p.SyncLoss(101); err == nil {
		t.Errorf("SyncLoss(101) accepted")
	}
}

func TestProbeSteadyPath(t *testing.T) {
	p := NewPairT(t, Options{IPv6: true})
	addStandInVIPs(t, p, p.FW1)
	for _, dst := range []netip.Addr{p.ServerAddr.Addr(), p.ServerAddr6.Addr()} {
		res, err := ProbeUDP(context.Background(), p.Client, p.Server, dst, UDPProbeOptions{Duration: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("udp probe to %v: %+v", dst, res)
		if res.Sent < 100 || res.Lost != 0 || res.Received != res.Sent {
			t.Errorf("steady path to %v: sent %d received %d lost %d, want no loss", dst, res.Sent, res.Received, res.Lost)
		}
		if res.Duplicates+res.RejectedShort+res.BadMagic+res.SendErrors+res.RecvErrors != 0 {
			t.Errorf("steady path to %v: unexpected anomalies %+v", dst, res)
		}
		if len(res.Arrivals) != res.Received {
			t.Errorf("steady path to %v: %d arrival times for %d replies", dst, len(res.Arrivals), res.Received)
		}
		if n := counter(t, p, p.FW1, CounterEstablished); n < uint64(res.Sent) {
			t.Errorf("fw1 forwarded %d established packets for %d probes: probes did not cross fw1", n, res.Sent)
		}
	}

	s, err := p.StartTCPStream(TCPStreamOptions{Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res := s.Wait()
	t.Logf("tcp stream: %+v", res)
	if res.Err != nil || res.Reset || res.Corrupt || res.Echoed == 0 {
		t.Errorf("steady tcp stream: %+v", res)
	}
	if res.Sent-res.Echoed > 64<<10 {
		t.Errorf("tcp stream: %d sent but only %d echoed", res.Sent, res.Echoed)
	}
}

// TestProbeSeesOutage checks the prober can fail: the path dies for good
// mid-run, so the loss and the silence at the end must show.
func TestProbeSeesOutage(t *testing.T) {
	p := NewPairT(t, Options{})
	addStandInVIPs(t, p, p.FW1)
	var crashed time.Time
	res, err := p.ProbeUDP(context.Background(), false, UDPProbeOptions{
		Duration: 1500 * time.Millisecond,
		During: func() {
			time.Sleep(200 * time.Millisecond)
			if err := p.CrashNode(p.FW1); err != nil {
				t.Error(err)
			}
			crashed = time.Now()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("udp probe with fw1 crashed mid-run: %+v", res)
	end := res.Start.Add(res.Elapsed)
	if !crashed.Before(end) {
		t.Fatalf("crash at %v came after the probe ended at %v (machine overloaded?): test proves nothing", crashed, end)
	}
	if res.Lost == 0 || res.Received == 0 || res.Lost != res.Sent-res.Received {
		t.Errorf("outage not seen: %+v", res)
	}
	// Causality, not timing: no reply can arrive after fw1 is gone, so the
	// silence at the end covers at least crash -> end of sending.
	if lastReply := end.Add(-res.LastReplyAge); lastReply.After(crashed.Add(20 * time.Millisecond)) {
		t.Errorf("last reply at %v, after the crash at %v", lastReply, crashed)
	}
	if res.MaxGap < res.LastReplyAge {
		t.Errorf("MaxGap %v < silence at end %v", res.MaxGap, res.LastReplyAge)
	}

	if err := p.RestoreNode(p.FW1); err != nil {
		t.Fatal(err)
	}
	s, err := StartTCPStream(p.Client, p.Server, p.ServerAddr.Addr(), TCPStreamOptions{Duration: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	// Drop the flow's packets both ways on fw1: no echo can arrive after
	// the rule is in, so the silence at the end covers the sleep below.
	if err := p.Nft(p.FW1, "add rule inet "+NftTable+" "+NftForwardExtra+" meta l4proto tcp th dport 9000 drop\n"+
		"add rule inet "+NftTable+" "+NftForwardExtra+" meta l4proto tcp th sport 9000 drop\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	r := s.Stop()
	t.Logf("tcp stream blocked mid-run: %+v", r)
	if r.LastEchoAge < 300*time.Millisecond || r.MaxStall < 300*time.Millisecond || r.Echoed == 0 {
		t.Errorf("stall not seen: %+v", r)
	}
}

// TestCloseOnSignal runs a helper that creates a namespace, arms
// CloseOnSignal and waits; SIGINT must delete the namespace without Reap.
func TestCloseOnSignal(t *testing.T) {
	if os.Getenv(helperEnv) == "signal" {
		n, err := NewNetns("sig")
		if err != nil {
			t.Fatal(err)
		}
		stop := CloseOnSignal(n)
		defer stop()
		os.Stdout.WriteString("NETNS " + n.Name + "\n")
		time.Sleep(30 * time.Second) // SIGINT arrives long before
		n.Close()
		return
	}
	Require(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCloseOnSignal$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=signal")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var name string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NETNS "); ok {
			name = v
			break
		}
	}
	t.Cleanup(func() { deleteNetns(name) })
	if name == "" || !netnsExists(name) {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not create a namespace (%q)", name)
	}
	cmd.Process.Signal(syscall.SIGINT)
	go func() {
		for sc.Scan() {
		}
	}()
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("helper did not die of the re-raised SIGINT: %v", err)
	}
	if netnsExists(name) {
		t.Errorf("namespace %s survived SIGINT", name)
	}
}
