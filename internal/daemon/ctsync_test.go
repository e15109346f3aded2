package daemon_test

// Lab tests of conntrack replication through the live daemon (issue 4,
// item 7): established flows cross a takeover because the backup's kernel
// already holds their conntrack entries. The firewalls run with
// nf_conntrack_tcp_loose = 0, so a TCP segment the new master has no entry
// for is dropped as invalid (counted in fwd_invalid): the control test shows
// the lab tells a lost flow from a kept one.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/ctsync/ctwire"
	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const ctSyncOn = "conntrack:\n  enabled: true\n"

// labPassword is hatest's default cluster password.
const labPassword = hatest.DefaultPassword

// Conntrack status bits (IPS_*, include/uapi/linux/netfilter/nf_conntrack_common.h).
const (
	ipsSeenReply = 1 << 1
	ipsAssured   = 1 << 2
	ipsConfirmed = 1 << 3
)

// Advert intervals. Takeover tests use a short one so a crash is detected
// quickly; tests without a takeover use a long one, so a daemon starved of
// CPU on a loaded 2-core machine (several Master_Down_Intervals have been
// seen at load 30) does not hand the VIPs over in the middle of the test.
const (
	takeoverInterval = 200 * time.Millisecond
	steadyInterval   = time.Second
)

// Upper bounds for what the tests wait for. They are generous on purpose:
// a conntrack dump walks the kernel's global hash table, which other
// namespaces on the machine may fill, and takes over a second on a loaded
// machine. They bound correctness checks; speed is measured in bench/.
const (
	entryWait = 15 * time.Second // a flow's entry or its replica
	bulkWait  = 20 * time.Second // a backup's bulk sync
	stateWait = 5 * time.Second  // VRRP state after a takeover
)

// ctPair starts muros-had on both firewalls with conntrack sync on or off.
// With sync, it returns once the backup's initial bulk is complete.
func ctPair(t *testing.T, opts lab.Options, sync bool, interval time.Duration) (*lab.Pair, *hatest.Node, *hatest.Node) {
	t.Helper()
	p := lab.NewPairT(t, opts)
	o := hatest.NodeOptions{Interval: interval}
	if sync {
		o.Extra = ctSyncOn
	}
	n1, n2 := pairNodes(t, p, o, o)
	if !sync {
		if st := ctStatus(t, n2); st != nil {
			t.Fatalf("conntrack sync off, yet the status has %+v", st)
		}
		return p, n1, n2
	}
	waitCT(t, n2, "the backup's initial bulk sync", bulkWait, func(c *status.ConntrackStatus) bool {
		return c.BulkSynced && c.Role == "receiver"
	})
	becameSender(t, n1)
	return p, n1, n2
}

// flapped reports an error if the backup n has been MASTER since it
// started: the test's own takeover must be the first, or what it measures
// is a spurious one (a daemon starved of CPU for a Master_Down_Interval).
// It does not touch t (probe goroutines call it).
func flapped(n *hatest.Node) error {
	st, err := n.Status(context.Background())
	if err != nil {
		return err
	}
	if f := st.LastFailover; st.State != "BACKUP" || f != nil && (f.From == "MASTER" || f.To == "MASTER") {
		return fmt.Errorf("%s is %s, last failover %+v: a takeover the test did not cause (machine overloaded?); the result would say nothing\nlog:\n%s",
			n.NS, st.State, f, tail(n.Proc.Log(), 20))
	}
	return nil
}

func mustNotHaveFlapped(t *testing.T, n *hatest.Node) {
	t.Helper()
	if err := flapped(n); err != nil {
		t.Fatal(err)
	}
}

func ctStatus(t *testing.T, n *hatest.Node) *status.ConntrackStatus {
	t.Helper()
	st, err := n.ConntrackStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitCT polls n's conntrack status until ok holds.
func waitCT(t *testing.T, n *hatest.Node, what string, timeout time.Duration, ok func(*status.ConntrackStatus) bool) *status.ConntrackStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := ctStatus(t, n)
		if st != nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v; conntrack status of %s: %+v\nlog:\n%s", what, timeout, n.NS, st, tail(n.Proc.Log(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// becameSender checks that a node that just became MASTER reports the
// conntrack sender role. The status is a snapshot the sync loop publishes
// after each step, so it may trail the VRRP state by one step (the new
// master's first table dump): allow a few seconds.
func becameSender(t *testing.T, n *hatest.Node) {
	t.Helper()
	st := ctStatus(t, n)
	if st == nil {
		t.Fatalf("%s has no conntrack status", n.NS)
	}
	if st.Role == "sender" {
		return
	}
	start := time.Now()
	waitCT(t, n, "the sender role on the new master", 3*time.Second, func(c *status.ConntrackStatus) bool { return c.Role == "sender" })
	t.Logf("%s: MASTER, conntrack status still %q; sender %v later", n.NS, st.Role, time.Since(start).Round(time.Millisecond))
}

// replicatedStream starts a long TCP stream client -> server through fw1 and
// returns once fw2 holds the replica of its entry (which it returns).
func replicatedStream(t *testing.T, p *lab.Pair) (*lab.TCPStream, hatest.CTFlow) {
	t.Helper()
	s, err := p.StartTCPStream(lab.TCPStreamOptions{Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	m := mustFlow(t, p, p.FW1, "the stream's entry on fw1", entryWait, tcpStreamFlow)
	if m, _, err = replicaOf(p, p.FW2, m, entryWait); err != nil {
		t.Fatalf("the stream's replica on fw2: %v", err)
	}
	return s, m
}

// pollFlow polls fw's forwarded flows until one matches; it does not touch
// t, so it may run in a probe's During goroutine.
func pollFlow(p *lab.Pair, fw *lab.Netns, timeout time.Duration, match func(hatest.CTFlow) bool) (hatest.CTFlow, error) {
	deadline := time.Now().Add(timeout)
	for {
		flows, err := hatest.ForwardedFlows(p, fw)
		if err != nil {
			return hatest.CTFlow{}, err
		}
		if i := slices.IndexFunc(flows, match); i >= 0 {
			return flows[i], nil
		}
		if time.Now().After(deadline) {
			return hatest.CTFlow{}, fmt.Errorf("no matching flow in %s after %v; forwarded flows: %v", fw, timeout, flows)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustFlow(t *testing.T, p *lab.Pair, fw *lab.Netns, what string, timeout time.Duration, match func(hatest.CTFlow) bool) hatest.CTFlow {
	t.Helper()
	f, err := pollFlow(p, fw, timeout, match)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return f
}

func hasFlow(t *testing.T, p *lab.Pair, fw *lab.Netns, match func(hatest.CTFlow) bool) bool {
	t.Helper()
	flows, err := hatest.ForwardedFlows(p, fw)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(flows, match)
}

// replicaOf waits until fw's copy of the flow m has exactly the master's
// current entry (tuples, NAT, status bits, TCP state; the master is fw's
// peer and its entry is read again each round, since it may still be
// moving, e.g. to ASSURED). It returns both entries as last seen.
func replicaOf(p *lab.Pair, fw *lab.Netns, m hatest.CTFlow, timeout time.Duration) (master, replica hatest.CTFlow, err error) {
	deadline := time.Now().Add(timeout)
	find := func(ns *lab.Netns) (hatest.CTFlow, bool, error) {
		flows, err := hatest.ForwardedFlows(p, ns)
		if err != nil {
			return hatest.CTFlow{}, false, err
		}
		i := slices.IndexFunc(flows, func(f hatest.CTFlow) bool { return sameKey(f, m) })
		if i < 0 {
			return hatest.CTFlow{}, false, nil
		}
		return flows[i], true, nil
	}
	for {
		var okM, okR bool
		if master, okM, err = find(p.Peer(fw)); err != nil {
			return master, replica, err
		}
		if replica, okR, err = find(fw); err != nil {
			return master, replica, err
		}
		switch {
		case okM && okR && master == replica:
			return master, replica, nil
		case time.Now().Before(deadline):
			time.Sleep(20 * time.Millisecond)
		case !okM:
			return master, replica, fmt.Errorf("the master %s no longer has %v", p.Peer(fw), m)
		case !okR:
			return master, replica, fmt.Errorf("no replica of %v in %s after %v", m, fw, timeout)
		default:
			return master, replica, fmt.Errorf("replica in %s differs after %v (-master +replica):\n%s", fw, timeout, cmp.Diff(master, replica, ctFlowCmp))
		}
	}
}

// ctFlowCmp lets cmp.Diff look into netip.AddrPort fields.
var ctFlowCmp = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

func sameKey(a, b hatest.CTFlow) bool {
	return a.Proto == b.Proto && a.OrigSrc == b.OrigSrc && a.OrigDst == b.OrigDst && a.Zone == b.Zone
}

// tcpStreamFlow matches the established, assured entry of lab's TCP stream.
func tcpStreamFlow(f hatest.CTFlow) bool {
	return f.Proto == 6 && f.OrigDst.Port() == lab.DefaultProbePort && f.TCPState == hatest.TCPEstablished && f.Status&ipsAssured != 0
}

// udpProbeFlow matches the entry of lab's UDP probe once a reply was seen.
func udpProbeFlow(f hatest.CTFlow) bool {
	return f.Proto == 17 && f.OrigDst.Port() == lab.DefaultProbePort && f.Status&ipsSeenReply != 0
}

func fwCounter(t *testing.T, p *lab.Pair, fw *lab.Netns, name string) uint64 {
	t.Helper()
	n, _, err := p.Counter(fw, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type takeoverKind int

const (
	crashTakeover    takeoverKind = iota // links down and SIGKILL: Master_Down_Interval
	gracefulTakeover                     // SIGTERM: priority 0, Skew_Time
)

func (k takeoverKind) String() string { return [...]string{"crash", "graceful"}[k] }

// takeOver ends the master fw1 at a random phase of its advert timer, so
// the measured gap does not lock to the start-up timing. It does not touch
// t: it may run in a probe's During goroutine.
func takeOver(p *lab.Pair, n1 *hatest.Node, kind takeoverKind) error {
	time.Sleep(mrand.N(takeoverInterval))
	if kind == gracefulTakeover {
		return n1.Stop()
	}
	// A dead box: frozen before its links go down, so it cannot leave
	// through FAULT with priority 0 (that would be a graceful takeover).
	return n1.Crash(p)
}

// TestCTSyncTCPTakeover: a paced TCP echo stream client -> server through
// the VIPs, then a takeover. Without sync (control) fw2 drops the stream's
// segments as invalid and the stream dies; with sync the stream's entry is
// on fw2 (identical to fw1's, NAT binding included) before the takeover and
// echoes continue after it, with no reset and no corruption.
func TestCTSyncTCPTakeover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sync    bool
		snat    bool
		kind    takeoverKind
		survive bool
	}{
		{"control without sync, crash", false, false, crashTakeover, false},
		{"sync, crash", true, false, crashTakeover, true},
		{"sync, graceful", true, false, gracefulTakeover, true},
		{"sync, SNAT, crash", true, true, crashTakeover, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, n1, n2 := ctPair(t, lab.Options{SNAT: tc.snat}, tc.sync, takeoverInterval)
			start := time.Now() // the stream's offsets count from about here
			s, err := p.StartTCPStream(lab.TCPStreamOptions{Duration: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Stop() })
			m := mustFlow(t, p, p.FW1, "the stream's entry on fw1", entryWait, tcpStreamFlow)
			if tc.snat && (!m.SrcNATed() || m.ReplyDst.Addr() != p.WANVIP.Addr()) {
				t.Fatalf("SNAT on, yet fw1's entry is not source-NATed to the WAN VIP: %v", m)
			}
			if tc.sync {
				_, b, err := replicaOf(p, p.FW2, m, entryWait)
				if err != nil {
					t.Fatalf("the stream's replica on fw2: %v", err)
				}
				t.Logf("fw2 holds the replica before the takeover: %v", b)
			} else {
				time.Sleep(500 * time.Millisecond)
				if hasFlow(t, p, p.FW2, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
					t.Fatalf("sync off, yet fw2 has the stream's entry")
				}
			}
			time.Sleep(500 * time.Millisecond) // echoes flow through fw1 first
			mustNotHaveFlapped(t, n2)
			invalid0 := fwCounter(t, p, p.FW2, lab.CounterInvalid)
			at := time.Since(start)
			if err := takeOver(p, n1, tc.kind); err != nil {
				t.Fatal(err)
			}
			mustState(t, n2, "MASTER", stateWait)
			if tc.sync {
				becameSender(t, n2)
			}
			// Long enough for TCP's retransmission backoff to retry more
			// than once after the new master owns the VIPs.
			time.Sleep(3 * time.Second)
			// Read before Stop: closing the stream's socket sends an RST
			// the firewall may count as invalid.
			invalid := fwCounter(t, p, p.FW2, lab.CounterInvalid) - invalid0
			res := s.Stop()
			t.Logf("%s takeover at %v: max stall %v from %v, last echo age %v, echoed %d of %d bytes, reset %v, corrupt %v, err %v; fw2 dropped %d invalid",
				tc.kind, at.Round(time.Millisecond), res.MaxStall, res.MaxStallFrom.Round(time.Millisecond), res.LastEchoAge,
				res.Echoed, res.Sent, res.Reset, res.Corrupt, res.Err, invalid)
			if !tc.survive {
				if !res.Reset && res.LastEchoAge < 2*time.Second {
					t.Errorf("control: the stream survived a takeover without sync (last echo %v ago): the lab cannot tell", res.LastEchoAge)
				}
				if invalid == 0 {
					t.Errorf("control: fw2 dropped nothing as invalid")
				}
				return
			}
			if res.Reset || res.Corrupt || res.Err != nil {
				t.Errorf("stream broken by the takeover: reset %v corrupt %v err %v", res.Reset, res.Corrupt, res.Err)
			}
			if res.LastEchoAge > time.Second {
				t.Errorf("no echo for the last %v: the stream did not resume after the takeover", res.LastEchoAge)
			}
			if invalid != 0 {
				t.Errorf("fw2 dropped %d packets as invalid after the takeover: its replica did not match the flow", invalid)
			}
			// fw2 kept the replica's tuples: the NAT binding did not change.
			after := mustFlow(t, p, p.FW2, "the stream's entry on fw2 after the takeover", entryWait, func(f hatest.CTFlow) bool { return sameKey(f, m) })
			if after.ReplySrc != m.ReplySrc || after.ReplyDst != m.ReplyDst {
				t.Errorf("fw2's entry after the takeover %v, want fw1's reply tuple %v -> %v", after, m.ReplySrc, m.ReplyDst)
			}
		})
	}
}

// TestCTSyncUDPTakeover: a UDP probe through the VIPs (one source port for
// the whole run). fw2 holds the flow's entry, identical to fw1's, before
// the crash; after it replies keep coming and fw2 forwards the flow on the
// replica: no new flow is accepted from the LAN (fwd_new_lan unchanged)
// and the NAT mapping (reply tuple) is the one fw1 chose.
func TestCTSyncUDPTakeover(t *testing.T) {
	// Long enough for slow conntrack dumps before the crash and seconds of
	// replies after it.
	const udpProbeTime = 8 * time.Second
	for _, snat := range []bool{false, true} {
		t.Run(fmt.Sprintf("snat=%v", snat), func(t *testing.T) {
			p, n1, n2 := ctPair(t, lab.Options{SNAT: snat}, true, takeoverInterval)
			var m, b hatest.CTFlow
			var newLAN0 uint64
			var at time.Duration
			res := probe(t, p, udpProbeTime, func() {
				start := time.Now()
				var err error
				if m, err = pollFlow(p, p.FW1, entryWait, udpProbeFlow); err != nil {
					t.Errorf("the probe's entry on fw1: %v", err)
					return
				}
				if m, b, err = replicaOf(p, p.FW2, m, entryWait); err != nil {
					t.Errorf("the probe's replica on fw2: %v", err)
					return
				}
				time.Sleep(300 * time.Millisecond) // replies flow through fw1 first
				if newLAN0, _, err = p.Counter(p.FW2, lab.CounterNewLAN); err != nil {
					t.Error(err)
					return
				}
				if err := flapped(n2); err != nil {
					t.Error(err)
					return
				}
				at = time.Since(start)
				if err := takeOver(p, n1, crashTakeover); err != nil {
					t.Error(err)
				}
			})
			if t.Failed() {
				return
			}
			mustState(t, n2, "MASTER", stateWait)
			t.Logf("crash about %v after the flow appeared: client-visible gap %v at %v (%d lost of %d), last reply age %v; replica %v",
				at.Round(time.Millisecond), res.MaxGap, res.MaxGapFrom.Round(time.Millisecond), res.Lost, res.Sent, res.LastReplyAge, b)
			if snat && (!m.SrcNATed() || m.ReplyDst.Addr() != p.WANVIP.Addr()) {
				t.Errorf("SNAT on, yet fw1's entry is not source-NATed to the WAN VIP: %v", m)
			}
			if at > udpProbeTime-2*time.Second {
				t.Errorf("the crash came %v into a %v probe: too late to see the flow resume (machine overloaded?)", at, udpProbeTime)
			}
			if res.LastReplyAge > 500*time.Millisecond || res.Received == 0 {
				t.Errorf("replies did not resume after the takeover: %+v", res)
			}
			if got := fwCounter(t, p, p.FW2, lab.CounterNewLAN) - newLAN0; got != 0 {
				t.Errorf("fw2 accepted %d packets as new flows from the LAN after the takeover: the replica was not used", got)
			}
			after := mustFlow(t, p, p.FW2, "the probe's entry on fw2 after the takeover", entryWait, func(f hatest.CTFlow) bool { return sameKey(f, m) })
			if after.ReplySrc != m.ReplySrc || after.ReplyDst != m.ReplyDst {
				t.Errorf("fw2's entry after the takeover %v, want fw1's reply tuple %v -> %v", after, m.ReplySrc, m.ReplyDst)
			}
		})
	}
}

// syncDatagram builds a ctwire DATA datagram carrying f, sealed with the
// key of password.
func syncDatagram(password string, epoch uint64, seq uint32, f *ctwire.Flow) []byte {
	h := ctwire.Header{Type: ctwire.TypeData, Epoch: epoch, Seq: seq, Sent: time.Now().UnixNano()}
	b := ctwire.AppendHeader(nil, &h)
	b = ctwire.AppendFlow(b, f)
	ctwire.SetPayload(b, 1)
	return ctwire.NewAuth(ctwire.DeriveKey([]byte(password))).Seal(b)
}

// newSyncListener joins the conntrack sync group on fw1's sync link, beside
// fw1's daemon (SO_REUSEADDR), to read what fw2 sends.
func newSyncListener(t *testing.T, p *lab.Pair) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := p.FW1.Do(func() error {
		ifi, err := net.InterfaceByName(lab.IfSync)
		if err != nil {
			return err
		}
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			})
			return errors.Join(err, serr)
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(ctwireGroup, fmt.Sprint(ctwirePort)))
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		if err := ipv4.NewPacketConn(c).JoinGroup(ifi, &net.UDPAddr{IP: net.ParseIP(ctwireGroup)}); err != nil {
			c.Close()
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("opening the sync listener in fw1: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// awaitResyncNonce returns the nonce of the next RESYNC sealed with
// password read from c.
func awaitResyncNonce(t *testing.T, c *net.UDPConn, password string, within time.Duration) [16]byte {
	t.Helper()
	auth := ctwire.NewAuth(ctwire.DeriveKey([]byte(password)))
	buf := make([]byte, 65536)
	if err := c.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no RESYNC from fw2 within %v: %v", within, err)
		}
		body, err := auth.Open(buf[:n])
		if err != nil {
			continue
		}
		h, pl, err := ctwire.ParseHeader(body)
		if err != nil || h.Type != ctwire.TypeResync {
			continue
		}
		hs, err := ctwire.ParseHandshake(pl)
		if err != nil {
			t.Fatal(err)
		}
		return hs.Nonce
	}
}

// syncSender sends UDP datagrams to the conntrack sync group out of fw1's
// sync link, as a forger on the link (or a compromised peer) would.
type syncSender struct {
	conn *net.UDPConn
	dst  *net.UDPAddr
}

func newSyncSender(t *testing.T, p *lab.Pair) *syncSender {
	t.Helper()
	s := &syncSender{dst: &net.UDPAddr{IP: net.ParseIP(ctwireGroup), Port: ctwirePort}}
	err := p.FW1.Do(func() error {
		ifi, err := net.InterfaceByName(lab.IfSync)
		if err != nil {
			return err
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: p.FW1Addrs.Sync.Addr().AsSlice()})
		if err != nil {
			return err
		}
		pc := ipv4.NewPacketConn(c)
		if err := errors.Join(pc.SetMulticastInterface(ifi), pc.SetMulticastTTL(1)); err != nil {
			c.Close()
			return err
		}
		s.conn = c
		return nil
	})
	if err != nil {
		t.Fatalf("opening the sync sender in fw1: %v", err)
	}
	t.Cleanup(func() { s.conn.Close() })
	return s
}

const (
	ctwireGroup = "225.0.0.50"
	ctwirePort  = 3780
)

func (s *syncSender) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := s.conn.WriteToUDP(b, s.dst); err != nil {
		t.Fatal(err)
	}
}

// TestCTSyncForgedDatagramInsertsNothing: datagrams on the sync link that
// do not carry the cluster key (random bytes, too short to hold a MAC, and
// a well-formed DATA datagram for a fake established flow sealed with
// another password, from a larger epoch than the master's) insert nothing
// into fw2's kernel and are counted. Control: the same datagram sealed
// with the cluster password is applied, so the check of fw2's table can
// fail.
func TestCTSyncForgedDatagramInsertsNothing(t *testing.T) {
	p, _, n2 := ctPair(t, lab.Options{}, true, steadyInterval)
	before := ctStatus(t, n2)
	fake := ctwire.Flow{
		Op: ctwire.OpUpdate, Proto: 6, Status: ipsSeenReply | ipsAssured | ipsConfirmed, Timeout: 600,
		Orig:   ctwire.Tuple{Src: p.ClientAddr.Addr(), Dst: p.ServerAddr.Addr(), SrcPort: 40000, DstPort: 5555},
		HasTCP: true, TCP: ctwire.TCPInfo{State: hatest.TCPEstablished},
	}
	fake.Reply = fake.Orig.Invert()
	isFake := func(f hatest.CTFlow) bool { return f.Proto == 6 && f.OrigDst.Port() == 5555 }

	s := newSyncSender(t, p)
	epoch := uint64(time.Now().UnixNano())
	const each = 3
	for i := range each {
		short := make([]byte, ctwire.MACLen-1)
		random := make([]byte, 200)
		rand.Read(short)
		rand.Read(random)
		s.send(t, short)
		s.send(t, random)
		s.send(t, syncDatagram("not-the-secret", epoch, uint32(i+1), &fake))
	}
	shortReason := ctwire.ReasonShort.String()
	st := waitCT(t, n2, "forged datagrams counted", 10*time.Second, func(c *status.ConntrackStatus) bool {
		return c.Forged-before.Forged >= 2*each && c.Rejected[shortReason]-before.Rejected[shortReason] >= each
	})
	// Give an (erroneous) injection time to reach the kernel.
	time.Sleep(500 * time.Millisecond)
	if hasFlow(t, p, p.FW2, isFake) {
		t.Fatalf("a forged datagram inserted a flow into fw2")
	}
	t.Logf("fw2 counted forged_dropped +%d, rejected %v (before %v)", st.Forged-before.Forged, st.Rejected, before.Rejected)

	mustNotHaveFlapped(t, n2) // a master ignores DATA: the check above needs a receiver

	// Control: the cluster key makes the same record land in fw2's table,
	// once its sender answered fw2's nonce as a live master does (a new
	// incarnation is followed only then). fw1's daemon, which sends from
	// the sync port, is muted meanwhile: it would answer the nonce first.
	mute := fmt.Sprintf("add rule inet %s %s oifname %q udp sport %d drop\n", lab.NftTable, lab.NftOutputExtra, lab.IfSync, ctwirePort)
	if err := p.Nft(p.FW1, mute); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Nft(p.FW1, fmt.Sprintf("flush chain inet %s %s\n", lab.NftTable, lab.NftOutputExtra)) })
	l := newSyncListener(t, p)
	s.send(t, syncDatagram(labPassword, epoch+1, 1, &fake)) // unverified: fw2 asks
	nonce := awaitResyncNonce(t, l, labPassword, 10*time.Second)
	echo := ctwire.Header{Type: ctwire.TypeEcho, Epoch: epoch + 1, Seq: 2}
	eb := ctwire.AppendHandshake(ctwire.AppendHeader(nil, &echo), &ctwire.Handshake{Nonce: nonce})
	ctwire.SetPayload(eb, 0)
	s.send(t, ctwire.NewAuth(ctwire.DeriveKey([]byte(labPassword))).Seal(eb))
	s.send(t, syncDatagram(labPassword, epoch+1, 3, &fake))
	if _, err := pollFlow(p, p.FW2, entryWait, isFake); err != nil {
		mustNotHaveFlapped(t, n2)
		t.Fatalf("control: a datagram sealed with the cluster password was not applied either, so the check above proves nothing: %v", err)
	}
}

// TestCTSyncBackupRestartResyncs: the backup is killed (SIGKILL) while a
// TCP stream crosses the master, its kernel table flushed as on a fresh
// box, and restarted: it reports bulk_synced only with the stream's entry in
// its kernel, and then survives the master's crash.
func TestCTSyncBackupRestartResyncs(t *testing.T) {
	p, n1, n2 := ctPair(t, lab.Options{}, true, takeoverInterval)
	start := time.Now()
	s, m := replicatedStream(t, p)
	replicated := time.Since(start)
	if err := n2.Kill(); err != nil {
		t.Fatal(err)
	}
	flushStart := time.Now()
	if err := hatest.FlushConntrack(p.FW2); err != nil {
		t.Fatal(err)
	}
	flushTook := time.Since(flushStart)
	if hasFlow(t, p, p.FW2, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
		t.Fatal("conntrack -F left the stream's entry on fw2")
	}
	restarted := time.Now()
	if err := n2.Start(binary); err != nil {
		t.Fatal(err)
	}
	st := waitCT(t, n2, "the restarted backup's bulk sync", bulkWait, func(c *status.ConntrackStatus) bool { return c.BulkSynced })
	synced := time.Since(restarted)
	// bulk_synced promises the table is in the kernel: look at once.
	if !hasFlow(t, p, p.FW2, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
		flows, _ := hatest.ForwardedFlows(p, p.FW2)
		t.Fatalf("fw2 reports bulk_synced, yet its kernel lacks the stream's entry %v; it has %v", m, flows)
	}
	if _, _, err := replicaOf(p, p.FW2, m, entryWait); err != nil {
		t.Fatalf("after the bulk: %v", err)
	}
	if st.Resyncs < 1 {
		t.Errorf("restarted backup status %+v: want resyncs >= 1", st)
	}
	mustState(t, n2, "BACKUP", 3*time.Second)
	time.Sleep(500 * time.Millisecond) // echoes flow with the restarted backup listening
	t.Logf("stream replicated at %v, conntrack -F took %v, backup restarted at %v, bulk-synced %v after its start (flows %d, resyncs %d, records applied %d)",
		replicated.Round(time.Millisecond), flushTook.Round(time.Millisecond), restarted.Sub(start).Round(time.Millisecond),
		synced.Round(time.Millisecond), st.Flows, st.Resyncs, st.RecordsApplied)

	mustNotHaveFlapped(t, n2)
	at := time.Since(start)
	if err := takeOver(p, n1, crashTakeover); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", stateWait)
	time.Sleep(3 * time.Second)
	res := s.Stop()
	t.Logf("crash at %v: max stall %v from %v, last echo age %v, echoed %d of %d bytes",
		at.Round(time.Millisecond), res.MaxStall, res.MaxStallFrom.Round(time.Millisecond), res.LastEchoAge, res.Echoed, res.Sent)
	if res.Reset || res.Corrupt || res.Err != nil {
		t.Errorf("stream broken by the takeover: reset %v corrupt %v err %v", res.Reset, res.Corrupt, res.Err)
	}
	if res.LastEchoAge > time.Second {
		t.Errorf("no echo for the last %v: the stream did not resume after the takeover", res.LastEchoAge)
	}
}

// TestCTSyncBurstConvergesUnderLoss: with 20 % of the conntrack sync
// datagrams dropped in both directions, 200 TCP connections opened at once
// through the master (and kept open) reach the backup's kernel: its table
// of forwarded flows converges to the master's.
func TestCTSyncBurstConvergesUnderLoss(t *testing.T) {
	p, _, n2 := ctPair(t, lab.Options{}, true, steadyInterval)
	// Like lab's SyncLoss, but only the conntrack sync datagrams: VRRP
	// adverts losing 20 % would now and then elect fw2.
	loss := fmt.Sprintf("add rule inet %s %s oifname %q udp dport %d numgen random mod 100 < 20 counter name %s drop\n",
		lab.NftTable, lab.NftSyncLoss, lab.IfSync, ctwirePort, lab.CounterSyncLoss)
	for _, fw := range p.Firewalls() {
		if err := p.Nft(fw, loss); err != nil {
			t.Fatal(err)
		}
	}
	const port, flows = 9100, 200
	echo, err := lab.StartTCPEcho(p.Server, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	before := ctStatus(t, n2)
	dst := netip.AddrPortFrom(p.ServerAddr.Addr(), port).String()
	conns := make([]net.Conn, 0, flows)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	err = p.Client.Do(func() error {
		for range flows {
			c, err := net.DialTimeout("tcp4", dst, 5*time.Second)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("opening %d connections: %v", flows, err)
	}
	// One round trip each: every entry ends ESTABLISHED and ASSURED.
	buf := make([]byte, 1)
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	burstEnd := time.Now()
	isBurst := func(f hatest.CTFlow) bool { return f.Proto == 6 && f.OrigDst.Port() == port }
	table := func(fw *lab.Netns) []hatest.CTFlow {
		all, err := hatest.ForwardedFlows(p, fw)
		if err != nil {
			t.Fatal(err)
		}
		return slices.DeleteFunc(all, func(f hatest.CTFlow) bool { return !isBurst(f) })
	}
	const within = 20 * time.Second
	var diff string
	for {
		m, b := table(p.FW1), table(p.FW2)
		if len(m) != flows {
			t.Fatalf("fw1 holds %d burst flows, want %d", len(m), flows)
		}
		if diff = cmp.Diff(m, b, ctFlowCmp); diff == "" {
			break
		}
		if time.Since(burstEnd) > within {
			mustNotHaveFlapped(t, n2)
			if len(diff) > 3000 {
				diff = diff[:3000] + "..."
			}
			t.Fatalf("fw2 did not converge within %v of the burst: fw1 %d flows, fw2 %d (-fw1 +fw2):\n%s", within, len(m), len(b), diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(burstEnd)
	mustNotHaveFlapped(t, n2)
	dropped := fwCounter(t, p, p.FW1, lab.CounterSyncLoss) + fwCounter(t, p, p.FW2, lab.CounterSyncLoss)
	st := ctStatus(t, n2)
	t.Logf("%d flows converged on fw2 %v after the burst; sync datagrams dropped %d; backup lost %d repaired %d resyncs %d",
		flows, took.Round(time.Millisecond), dropped, st.Lost-before.Lost, st.Repaired-before.Repaired, st.Resyncs-before.Resyncs)
	if dropped == 0 {
		t.Errorf("the loss rule dropped no sync datagram: the test did not test loss")
	}
}

// TestCTSyncReturningMasterWaitsForBulk: the master crashes and the stream
// moves to fw2; fw1 comes back as a fresh box (VIPs gone, conntrack table
// empty). While fw2's sync datagrams cannot reach it, fw1 holds its
// preemption: it stays BACKUP although its priority is higher. Once they
// can, it completes its bulk, only then preempts, and the stream survives
// the fail-back too.
func TestCTSyncReturningMasterWaitsForBulk(t *testing.T) {
	p, n1, n2 := ctPair(t, lab.Options{}, true, takeoverInterval)
	start := time.Now()
	s, m := replicatedStream(t, p)
	time.Sleep(500 * time.Millisecond) // echoes flow through fw1 first
	mustNotHaveFlapped(t, n2)
	crashAt := time.Since(start)
	if err := takeOver(p, n1, crashTakeover); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", stateWait)
	becameSender(t, n2)

	// fw1 reboots: the SIGKILLed daemon left its VIPs behind, a reboot
	// would not have them, nor any conntrack entry.
	for _, a := range []struct {
		ifName string
		vip    netip.Prefix
	}{{lab.IfLAN, p.LANVIP}, {lab.IfWAN, p.WANVIP}} {
		if has, _ := hatest.HasAddr(p.FW1, a.vip.Addr()); has {
			if err := p.FW1.DelAddr(a.ifName, a.vip); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := hatest.FlushConntrack(p.FW1); err != nil {
		t.Fatal(err)
	}
	block := fmt.Sprintf("add rule inet %s %s oifname %q udp dport %d drop\n", lab.NftTable, lab.NftOutputExtra, lab.IfSync, ctwirePort)
	if err := p.Nft(p.FW2, block); err != nil {
		t.Fatal(err)
	}
	if err := p.RestoreNode(p.FW1); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(binary); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "BACKUP", 3*time.Second)
	// 2 s is many Master_Down_Intervals (about 0.3 s) of adverts from a
	// lower-priority master that fw1 would preempt if it were allowed to.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		st, err := n1.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "BACKUP" {
			if f := st.LastFailover; f != nil && (strings.Contains(f.Reason, "down") || strings.Contains(f.Reason, "peer dead")) {
				t.Fatalf("fw1 took over because fw2 fell silent (%+v): a CPU-starved daemon (machine overloaded?), not a preemption; the hold was not tested", f)
			}
			t.Fatalf("fw1 went %s without its bulk sync (fw2's sync datagrams are blocked): %+v", st.State, st.LastFailover)
		}
	}
	if st := ctStatus(t, n1); st.BulkSynced || st.Role != "receiver" {
		t.Fatalf("fw1 conntrack status %+v while blocked: want an incomplete receiver", st)
	}
	if hasFlow(t, p, p.FW1, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
		t.Fatal("fw1 holds the stream's entry although no sync datagram reached it")
	}

	unblocked := time.Now()
	if err := p.Nft(p.FW2, fmt.Sprintf("flush chain inet %s %s\n", lab.NftTable, lab.NftOutputExtra)); err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", bulkWait)
	preempted := time.Since(unblocked)
	mustState(t, n2, "BACKUP", 3*time.Second)
	if !hasFlow(t, p, p.FW1, func(f hatest.CTFlow) bool { return sameKey(f, m) }) {
		flows, _ := hatest.ForwardedFlows(p, p.FW1)
		t.Fatalf("fw1 preempted without the stream's entry %v in its kernel; it has %v", m, flows)
	}
	if log := n1.Proc.Log(); !strings.Contains(log, "conntrack bulk sync complete") {
		t.Errorf("fw1 did not log the end of its bulk sync:\n%s", tail(log, 30))
	}
	time.Sleep(2 * time.Second)
	res := s.Stop()
	t.Logf("crash at %v, fw1 preempted %v after its sync was unblocked: max stall %v from %v, last echo age %v, echoed %d of %d bytes",
		crashAt.Round(time.Millisecond), preempted.Round(time.Millisecond), res.MaxStall, res.MaxStallFrom.Round(time.Millisecond), res.LastEchoAge, res.Echoed, res.Sent)
	if res.Reset || res.Corrupt || res.Err != nil {
		t.Errorf("stream broken: reset %v corrupt %v err %v", res.Reset, res.Corrupt, res.Err)
	}
	if res.LastEchoAge > time.Second {
		t.Errorf("no echo for the last %v: the stream did not survive the fail-back", res.LastEchoAge)
	}
}
