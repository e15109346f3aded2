package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Interface names in the pair topology.
const (
	IfLAN  = "lan0"  // firewall port on the LAN bridge
	IfWAN  = "wan0"  // firewall port on the WAN bridge
	IfSync = "sync0" // firewall end of the direct fw1-fw2 sync veth
	IfHost = "eth0"  // client's and server's only interface

	BridgeLAN = "brlan" // LAN bridge in the switch namespace
	BridgeWAN = "brwan" // WAN bridge in the switch namespace
)

// nftables objects of the firewall ruleset. Tests add their own rules to
// these chains with (*Pair).Nft, e.g.
//
//	add rule inet muros_lab forward_extra ip daddr 203.0.113.100 tcp dport 22 drop
const (
	NftTable        = "muros_lab"
	NftForward      = "forward"       // base chain, hook forward, policy drop
	NftForwardExtra = "forward_extra" // jumped to first from forward: test rules
	NftInput        = "input"         // base chain, hook input, policy accept
	NftInputExtra   = "input_extra"   // jumped to first from input
	NftOutputExtra  = "output_extra"  // jumped to first from output
	NftSyncLoss     = "sync_loss"     // hook output: SyncLoss's numgen drop rule
	NftPostrouting  = "postrouting"   // nat hook postrouting: SNAT option
)

// Named counters of the firewall ruleset, read with (*Pair).Counter.
const (
	CounterEstablished = "fwd_established" // forwarded, ct state established,related
	CounterInvalid     = "fwd_invalid"     // dropped, ct state invalid
	CounterNewLAN      = "fwd_new_lan"     // accepted, ct state new from lan0
	CounterDropped     = "fwd_dropped"     // dropped by the forward policy
	CounterSyncLoss    = "sync_loss"       // dropped by SyncLoss
	CounterVRRP        = "in_vrrp"         // VRRP adverts received (IPv4 and IPv6)
)

// Options choose the variant of the pair.
type Options struct {
	// IPv6 adds the 2001:db8: prefixes to LAN and WAN. Without it IPv6 is
	// disabled in every namespace (quieter captures).
	IPv6 bool
	// TCPLoose sets net.netfilter.nf_conntrack_tcp_loose to 1 on the
	// firewalls. Default 0: a firewall without the conntrack entry drops a
	// mid-stream TCP packet as invalid, which is what makes state sync
	// observable (the kernel default of 1 would pick the flow up).
	TCPLoose bool
	// SNAT masquerades LAN sources to the WAN VIP on the way out.
	SNAT bool
	// ExtraRules is an nft -f script loaded on both firewalls after the
	// base ruleset (use the Nft* chain names).
	ExtraRules string
}

// FirewallAddrs are one firewall's own interface addresses.
type FirewallAddrs struct {
	LAN, WAN, Sync netip.Prefix
	LAN6, WAN6     netip.Prefix // invalid unless Options.IPv6
}

// Pair is a two-firewall lab (diagram and addresses in the package
// documentation):
//
//	client eth0 -- brlan -- lan0 FW1 wan0 -- brwan -- eth0 server
//	                  \-- lan0 FW2 wan0 --/
//	                 FW1 sync0 ====== sync0 FW2
type Pair struct {
	Client, Server, FW1, FW2, Switch *Netns
	LANBridge, WANBridge             *Bridge
	Options                          Options

	LANPrefix, WANPrefix, SyncPrefix netip.Prefix
	LANPrefix6, WANPrefix6           netip.Prefix // invalid unless IPv6

	// VIPs with their prefix length, ready for AddAddr.
	LANVIP, WANVIP   netip.Prefix
	LANVIP6, WANVIP6 netip.Prefix

	ClientAddr, ServerAddr   netip.Prefix
	ClientAddr6, ServerAddr6 netip.Prefix

	FW1Addrs, FW2Addrs FirewallAddrs

	closeOnce sync.Once
	closeErr  error
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// newPairAddrs fills in the addressing plan.
func newPairAddrs(opts Options) *Pair {
	p := &Pair{
		Options:    opts,
		LANPrefix:  pfx("10.10.0.0/24"),
		WANPrefix:  pfx("203.0.113.0/24"),
		SyncPrefix: pfx("192.168.255.0/30"),
		LANVIP:     pfx("10.10.0.1/24"),
		WANVIP:     pfx("203.0.113.1/24"),
		ClientAddr: pfx("10.10.0.100/24"),
		ServerAddr: pfx("203.0.113.100/24"),
		FW1Addrs:   FirewallAddrs{LAN: pfx("10.10.0.2/24"), WAN: pfx("203.0.113.2/24"), Sync: pfx("192.168.255.1/30")},
		FW2Addrs:   FirewallAddrs{LAN: pfx("10.10.0.3/24"), WAN: pfx("203.0.113.3/24"), Sync: pfx("192.168.255.2/30")},
	}
	if opts.IPv6 {
		p.LANPrefix6, p.WANPrefix6 = pfx("2001:db8:10::/64"), pfx("2001:db8:203::/64")
		p.LANVIP6, p.WANVIP6 = pfx("2001:db8:10::1/64"), pfx("2001:db8:203::1/64")
		p.ClientAddr6, p.ServerAddr6 = pfx("2001:db8:10::100/64"), pfx("2001:db8:203::100/64")
		p.FW1Addrs.LAN6, p.FW1Addrs.WAN6 = pfx("2001:db8:10::2/64"), pfx("2001:db8:203::2/64")
		p.FW2Addrs.LAN6, p.FW2Addrs.WAN6 = pfx("2001:db8:10::3/64"), pfx("2001:db8:203::3/64")
	}
	return p
}

// NewPair reaps leftovers of dead lab processes, then builds the pair. On
// error everything already created is torn down.
func NewPair(opts Options) (*Pair, error) {
	Reap()
	p := newPairAddrs(opts)
	if err := p.build(); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// NewPairT is NewPair for tests: Require, fail on error, Close at cleanup
// (after logging process logs and firewall counters if the test failed).
func NewPairT(t testing.TB, opts Options) *Pair {
	t.Helper()
	Require(t)
	p, err := NewPair(opts)
	if err != nil {
		t.Fatalf("lab: pair: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range p.All() {
				n.logTails(t)
			}
			for _, fw := range p.Firewalls() {
				out, _ := fw.Run("nft", "list", "table", "inet", NftTable)
				t.Logf("lab: %s ruleset:\n%s", fw.Name, out)
			}
		}
		if err := p.Close(); err != nil {
			t.Errorf("lab: close pair: %v", err)
		}
	})
	return p
}

// All returns the pair's namespaces that exist (fewer while building).
func (p *Pair) All() []*Netns {
	var all []*Netns
	for _, n := range []*Netns{p.Client, p.Server, p.FW1, p.FW2, p.Switch} {
		if n != nil {
			all = append(all, n)
		}
	}
	return all
}

// Firewalls returns FW1 and FW2.
func (p *Pair) Firewalls() []*Netns { return []*Netns{p.FW1, p.FW2} }

// Addrs returns the own addresses of fw (FW1 or FW2).
func (p *Pair) Addrs(fw *Netns) (FirewallAddrs, error) {
	switch fw {
	case p.FW1:
		return p.FW1Addrs, nil
	case p.FW2:
		return p.FW2Addrs, nil
	}
	return FirewallAddrs{}, fmt.Errorf("lab: %v is not a firewall of this pair", fw)
}

// Peer returns the other firewall.
func (p *Pair) Peer(fw *Netns) *Netns {
	if fw == p.FW1 {
		return p.FW2
	}
	return p.FW1
}

func (p *Pair) build() error {
	var err error
	for _, step := range []struct {
		dst **Netns
		tag string
	}{{&p.Switch, "sw"}, {&p.Client, "cli"}, {&p.Server, "srv"}, {&p.FW1, "fw1"}, {&p.FW2, "fw2"}} {
		if *step.dst, err = NewNetns(step.tag); err != nil {
			return err
		}
	}
	// Before any interface exists, so "default" applies to all of them.
	for _, n := range p.All() {
		if !p.Options.IPv6 || n == p.Switch {
			err = n.SetSysctls("net.ipv6.conf.all.disable_ipv6", "1", "net.ipv6.conf.default.disable_ipv6", "1")
		} else {
			// No DAD: link-local and static addresses usable at once (VRRPv3
			// over IPv6 sends from the link-local). Keep addresses across
			// CrashNode/RestoreNode.
			err = n.SetSysctls(
				"net.ipv6.conf.all.accept_dad", "0", "net.ipv6.conf.default.accept_dad", "0",
				"net.ipv6.conf.all.keep_addr_on_down", "1", "net.ipv6.conf.default.keep_addr_on_down", "1")
		}
		if err != nil {
			return err
		}
	}
	if p.LANBridge, err = NewBridge(p.Switch, BridgeLAN); err != nil {
		return err
	}
	if p.WANBridge, err = NewBridge(p.Switch, BridgeWAN); err != nil {
		return err
	}
	for _, c := range []struct {
		br   *Bridge
		host *Netns
		ifn  string
		port string
	}{
		{p.WANBridge, p.Server, IfHost, "wsrv"},
		{p.LANBridge, p.Client, IfHost, "lcli"},
		{p.WANBridge, p.FW1, IfWAN, "wfw1"},
		{p.LANBridge, p.FW1, IfLAN, "lfw1"},
		{p.WANBridge, p.FW2, IfWAN, "wfw2"},
		{p.LANBridge, p.FW2, IfLAN, "lfw2"},
	} {
		if _, err := c.br.Connect(c.host, c.ifn, c.port); err != nil {
			return err
		}
	}
	if err := Veth(p.FW1, IfSync, p.FW2, IfSync); err != nil {
		return err
	}

	type addr struct {
		ns  *Netns
		ifn string
		a   netip.Prefix
	}
	addrs := []addr{
		{p.Client, IfHost, p.ClientAddr}, {p.Client, IfHost, p.ClientAddr6},
		{p.Server, IfHost, p.ServerAddr}, {p.Server, IfHost, p.ServerAddr6},
	}
	for _, fw := range p.Firewalls() {
		a, _ := p.Addrs(fw)
		addrs = append(addrs, addr{fw, IfLAN, a.LAN}, addr{fw, IfWAN, a.WAN}, addr{fw, IfSync, a.Sync},
			addr{fw, IfLAN, a.LAN6}, addr{fw, IfWAN, a.WAN6})
	}
	for _, a := range addrs {
		if !a.a.IsValid() {
			continue
		}
		if err := a.ns.AddAddr(a.ifn, a.a); err != nil {
			return err
		}
	}
	routes := []struct {
		ns *Netns
		gw netip.Prefix
	}{{p.Client, p.LANVIP}, {p.Client, p.LANVIP6}, {p.Server, p.WANVIP}, {p.Server, p.WANVIP6}}
	for _, r := range routes {
		if !r.gw.IsValid() {
			continue
		}
		if err := r.ns.AddRoute("default", r.gw.Addr()); err != nil {
			return err
		}
	}

	ruleset := FirewallRuleset(p.Options, p.LANPrefix, p.WANVIP.Addr())
	loose := "0"
	if p.Options.TCPLoose {
		loose = "1"
	}
	for _, fw := range p.Firewalls() {
		if _, err := fw.RunInput(ruleset, "nft", "-f", "-"); err != nil {
			return fmt.Errorf("lab: base ruleset: %w", err)
		}
		if p.Options.ExtraRules != "" {
			if _, err := fw.RunInput(p.Options.ExtraRules, "nft", "-f", "-"); err != nil {
				return fmt.Errorf("lab: Options.ExtraRules: %w", err)
			}
		}
		// The conntrack sysctls exist in a namespace once conntrack is in
		// use there, i.e. after the ruleset above is loaded.
		kv := []string{"net.ipv4.ip_forward", "1", "net.netfilter.nf_conntrack_tcp_loose", loose}
		if p.Options.IPv6 {
			kv = append(kv, "net.ipv6.conf.all.forwarding", "1")
		}
		if err := fw.SetSysctls(kv...); err != nil {
			return err
		}
	}
	return nil
}

// FirewallRuleset is the nft -f script loaded on both firewalls: a
// stateful forward policy (established,related accept; invalid drop; new
// from the LAN accept; everything else dropped and counted), empty *_extra
// chains for tests, the sync_loss chain and, with opts.SNAT, masquerading
// of lan to the WAN VIP.
func FirewallRuleset(opts Options, lan netip.Prefix, wanVIP netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", NftTable)
	for _, c := range []string{CounterEstablished, CounterInvalid, CounterNewLAN, CounterDropped, CounterSyncLoss, CounterVRRP} {
		fmt.Fprintf(&b, "\tcounter %s {}\n", c)
	}
	fmt.Fprintf(&b, "\tchain %s {}\n\tchain %s {}\n\tchain %s {}\n", NftForwardExtra, NftInputExtra, NftOutputExtra)
	fmt.Fprintf(&b, `	chain %s {
		type filter hook forward priority filter; policy drop;
		jump %s
		ct state established,related counter name %s accept
		ct state invalid counter name %s drop
		iifname %q ct state new counter name %s accept
		counter name %s
	}
`, NftForward, NftForwardExtra, CounterEstablished, CounterInvalid, IfLAN, CounterNewLAN, CounterDropped)
	fmt.Fprintf(&b, `	chain %s {
		type filter hook input priority filter; policy accept;
		jump %s
		meta l4proto 112 counter name %s
	}
	chain output {
		type filter hook output priority filter; policy accept;
		jump %s
	}
	chain %s {
		type filter hook output priority filter - 1; policy accept;
	}
	chain %s {
		type nat hook postrouting priority srcnat; policy accept;
`, NftInput, NftInputExtra, CounterVRRP, NftOutputExtra, NftSyncLoss, NftPostrouting)
	if opts.SNAT {
		fmt.Fprintf(&b, "\t\toifname %q ip saddr %s snat ip to %s\n", IfWAN, lan, wanVIP)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// ProbeUDP runs ProbeUDP from the client to the server's IPv4 address
// (or IPv6 with v6), through whichever firewall holds the VIPs.
func (p *Pair) ProbeUDP(ctx context.Context, v6 bool, opts UDPProbeOptions) (UDPProbeResult, error) {
	dst := p.ServerAddr.Addr()
	if v6 {
		if !p.ServerAddr6.IsValid() {
			return UDPProbeResult{}, errors.New("lab: ProbeUDP over IPv6 on a pair without Options.IPv6")
		}
		dst = p.ServerAddr6.Addr()
	}
	return ProbeUDP(ctx, p.Client, p.Server, dst, opts)
}

// StartTCPStream starts a TCP stream from the client to the server's IPv4
// address through whichever firewall holds the VIPs.
func (p *Pair) StartTCPStream(opts TCPStreamOptions) (*TCPStream, error) {
	return StartTCPStream(p.Client, p.Server, p.ServerAddr.Addr(), opts)
}

// Nft runs an nft -f script in a namespace (normally a firewall), e.g. to
// add rules to the *_extra chains.
func (p *Pair) Nft(fw *Netns, script string) error {
	_, err := fw.RunInput(script, "nft", "-f", "-")
	return err
}

var counterRe = regexp.MustCompile(`packets (\d+) bytes (\d+)`)

// Counter reads a named counter of the firewall ruleset.
func (p *Pair) Counter(fw *Netns, name string) (packets, bytes uint64, err error) {
	out, err := fw.Run("nft", "list", "counter", "inet", NftTable, name)
	if err != nil {
		return 0, 0, err
	}
	m := counterRe.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("lab: counter %s in %s: unexpected output %q", name, fw.Name, out)
	}
	packets, _ = strconv.ParseUint(m[1], 10, 64)
	bytes, _ = strconv.ParseUint(m[2], 10, 64)
	return packets, bytes, nil
}

// SyncLoss makes each firewall drop percent % of the packets it sends on
// the sync link (both directions, independently), with an nftables
// `numgen random mod 100 < percent` rule; 0 removes the loss.
func (p *Pair) SyncLoss(percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("lab: SyncLoss(%d): want 0..100", percent)
	}
	script := fmt.Sprintf("flush chain inet %s %s\n", NftTable, NftSyncLoss)
	switch {
	case percent == 100:
		script += fmt.Sprintf("add rule inet %s %s oifname %q counter name %s drop\n",
			NftTable, NftSyncLoss, IfSync, CounterSyncLoss)
	case percent > 0:
		script += fmt.Sprintf("add rule inet %s %s oifname %q numgen random mod 100 < %d counter name %s drop\n",
			NftTable, NftSyncLoss, IfSync, percent, CounterSyncLoss)
	}
	for _, fw := range p.Firewalls() {
		if err := p.Nft(fw, script); err != nil {
			return err
		}
	}
	return nil
}

// CrashNode takes all links of fw (lan0, wan0, sync0) down in one
// `ip -batch` run, so the node vanishes from both bridges and from the
// sync link at once; its peer's sync0 loses carrier as with a direct
// cable. Processes in fw keep running: stop them too to model a dead box.
func (p *Pair) CrashNode(fw *Netns) error { return p.setNodeLinks(fw, "down") }

// RestoreNode brings all of fw's links back up (addresses are kept).
func (p *Pair) RestoreNode(fw *Netns) error { return p.setNodeLinks(fw, "up") }

func (p *Pair) setNodeLinks(fw *Netns, state string) error {
	if _, err := p.Addrs(fw); err != nil {
		return err
	}
	var batch strings.Builder
	for _, ifn := range []string{IfLAN, IfWAN, IfSync} {
		fmt.Fprintf(&batch, "link set %s %s\n", ifn, state)
	}
	if _, err := fw.RunInput(batch.String(), "ip", "-batch", "-"); err != nil {
		return fmt.Errorf("lab: node %s links %s: %w", fw.Name, state, err)
	}
	return nil
}

// SetLinkDown sets one interface of a pair namespace down.
func (p *Pair) SetLinkDown(ns *Netns, ifName string) error { return ns.LinkDown(ifName) }

// SetLinkUp sets one interface of a pair namespace up.
func (p *Pair) SetLinkUp(ns *Netns, ifName string) error { return ns.LinkUp(ifName) }

// FlushNeighbours empties the client's and server's ARP/NDP caches, so a
// run does not inherit the previous run's idea of who owns a VIP.
func (p *Pair) FlushNeighbours() error {
	var errs []error
	for _, h := range []*Netns{p.Client, p.Server} {
		if err := h.FlushNeighbours(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close tears every namespace down (in parallel: each may wait for its
// processes' SIGTERM grace). Idempotent.
func (p *Pair) Close() error {
	p.closeOnce.Do(func() {
		all := p.All()
		errs := make([]error, len(all))
		var wg sync.WaitGroup
		for i, n := range all {
			wg.Go(func() { errs[i] = n.Close() })
		}
		wg.Wait()
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// CloseOnSignal closes c when the process receives SIGINT or SIGTERM and
// then re-raises the signal with its default action, so Ctrl-C on a demo
// or benchmark never leaves namespaces behind. stop undoes it and must be
// called (it ends the goroutine).
func CloseOnSignal(c interface{ Close() error }) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case sig := <-sigs:
			c.Close()
			signal.Reset(sig)
			syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		case <-done:
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			<-finished
		})
	}
}
