package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/lab"
)

// Interoperability with the real keepalived 2.2.7 (Debian 12 package) as
// the other firewall of the pair, both ways round, in the two modes the two
// implementations share:
//
//   - keepalived-ah: keepalived's VRRPv2 "auth_type AH" (HMAC-MD5-96 ICV over
//     the IPv4 header and VRRP message, SPI = source, sequence numbers that
//     must grow), whole-second adverts;
//   - none: unauthenticated VRRPv3 (RFC 9568, checksum over the IPv4
//     pseudo-header), 100 ms adverts.
//
// Each case elects one master, hands over on a graceful stop (priority 0)
// and back on the stopped master's return (preempt), then on a crash of the
// master (links down and SIGKILL: Master_Down_Interval) and back again.

// interopNode is one firewall of a mixed pair: muros-had or keepalived.
type interopNode struct {
	kind  string // "muros-had" | "keepalived"
	fw    *lab.Netns
	muros *hatest.Node
	ka    *hatest.Keepalived
}

func (n *interopNode) String() string { return fmt.Sprintf("%s on %s", n.kind, n.fw) }

func (n *interopNode) log() string {
	if n.muros != nil {
		return n.muros.Proc.Log()
	}
	return n.ka.Log()
}

func (n *interopNode) mustState(t *testing.T, state string, timeout time.Duration) {
	t.Helper()
	var err error
	if n.muros != nil {
		err = n.muros.WaitState(state, timeout)
	} else {
		err = n.ka.WaitState(state, timeout)
	}
	if err != nil {
		t.Fatalf("%s: %v\nlog:\n%s", n, err, tail(n.log(), 40))
	}
}

// stop is a graceful stop (SIGTERM: priority 0). It returns an error rather
// than failing the test: it may run in a probe's goroutine.
func (n *interopNode) stop() error {
	if n.muros != nil {
		return n.muros.Stop()
	}
	return n.ka.Stop()
}

// kill is a crash (SIGKILL: no priority 0, addresses left behind).
func (n *interopNode) kill() error {
	if n.muros != nil {
		return n.muros.Kill()
	}
	return n.ka.Kill()
}

func (n *interopNode) restart(t *testing.T) {
	t.Helper()
	var err error
	if n.muros != nil {
		err = n.muros.Start(binary)
	} else {
		err = n.ka.Start()
	}
	if err != nil {
		t.Fatalf("restarting %s: %v", n, err)
	}
}

func (n *interopNode) status(t *testing.T) status.Status {
	t.Helper()
	st, err := n.muros.Status(context.Background())
	if err != nil {
		t.Fatalf("status of %s: %v", n, err)
	}
	return st
}

// checkAccepted fails if this node rejected its peer's adverts: muros-had
// counts every rejected advert by reason, keepalived logs each one.
func (n *interopNode) checkAccepted(t *testing.T) {
	t.Helper()
	if n.muros != nil {
		if st := n.status(t); len(st.Adverts.Rejected) != 0 {
			t.Errorf("%s rejected keepalived's adverts: %v", n, st.Adverts.Rejected)
		}
		return
	}
	log := n.log()
	for _, bad := range keepalivedRejects() {
		if strings.Contains(log, bad) {
			t.Errorf("%s logged %q: it rejected muros-had's adverts:\n%s", n, bad, tail(log, 30))
			return
		}
	}
}

// keepalivedRejects are the log messages keepalived 2.2.7 writes when it
// drops an advert as malformed or unauthenticated (vrrp_check_packet and
// vrrp_in_chk_ipsecah in keepalived/vrrp/vrrp.c), as opposed to losing the
// election ("lower priority ... discarding") or "IPSEC-AH : Syncing seq_num",
// which a master logs for an accepted lower-priority advert.
func keepalivedRejects() []string {
	return []string{
		"invalid IPSEC", "already processed", "AH header", "vrrp packet too ",
		"invalid TTL", "wrong version", "Invalid auth type", "auth, expecting",
		"invalid passwd", "interval mismatch", "Invalid packet type",
		"unexpected ip number count", "ip_tot_len mismatch", "Invalid VRRPv3 checksum",
		"Invalid VRRPv2 checksum", "icast packet but received", "VIPs but received",
		"not present in MASTER advert", "not in range", "Checksum ERROR",
	}
}

// logLen is the length of keepalived's log now (0 for muros-had), so that
// checkTakeover reads only what was logged after an event.
func (n *interopNode) logLen() int {
	if n.ka == nil {
		return 0
	}
	return len(n.ka.Log())
}

// checkTakeover checks why node became master: a priority 0 advert
// (graceful stop of the peer: skew time) or the master's silence
// (Master_Down_Interval).
func (n *interopNode) checkTakeover(t *testing.T, graceful bool, logFrom int) {
	t.Helper()
	if n.muros != nil {
		f := n.status(t).LastFailover
		want := "down"
		if graceful {
			want = "priority 0"
		}
		if f == nil || f.To != "MASTER" || !strings.Contains(f.Reason, want) {
			t.Errorf("%s: last failover %+v, want to MASTER with a %q reason", n, f, want)
		}
		return
	}
	// After a priority 0 advert keepalived also logs "Receive advertisement
	// timeout" when its skew-time timer fires, so only the priority 0 line
	// tells the two apart.
	log := n.log()[logFrom:]
	const prio0 = "Backup received priority 0 advertisement"
	switch {
	case graceful && !strings.Contains(log, prio0):
		t.Errorf("%s took over without logging %q:\n%s", n, prio0, tail(log, 30))
	case !graceful && (strings.Contains(log, prio0) || !strings.Contains(log, "Receive advertisement timeout")):
		t.Errorf("%s did not take over on Master_Down_Interval alone:\n%s", n, tail(log, 30))
	}
}

// mustHold asserts fw holds both VIPs, whatever the other firewall holds (a
// crashed node keeps its addresses on its downed links).
func mustHold(t *testing.T, p *lab.Pair, fw *lab.Netns) {
	t.Helper()
	// Given a moment: the VIPs follow the state change within milliseconds.
	deadline := time.Now().Add(2 * time.Second)
	for {
		var missing []string
		for _, v := range []netip.Prefix{p.LANVIP, p.WANVIP} {
			has, err := hatest.HasAddr(fw, v.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if !has {
				missing = append(missing, v.Addr().String())
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s does not hold %v", fw, missing)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// interopMode is one way muros-had and keepalived can agree on VRRP.
type interopMode struct {
	name     string
	auth     string // the same word in NodeOptions.Auth and KeepalivedOptions.Auth
	interval time.Duration
}

func interopModes() []interopMode {
	return []interopMode{
		{"keepalived-ah", hatest.KeepalivedAuthAH, time.Second},
		{"none-v3", hatest.KeepalivedAuthNone, 100 * time.Millisecond},
	}
}

// startInterop starts the master on FW1 and the backup on FW2, one of them
// muros-had and the other keepalived, and waits for the election.
func startInterop(t *testing.T, p *lab.Pair, m interopMode, murosMaster bool, kaPassword string) (master, backup *interopNode) {
	t.Helper()
	mo := hatest.NodeOptions{Auth: m.auth, Interval: m.interval}
	ko := hatest.KeepalivedOptions{Auth: m.auth, Interval: m.interval, Password: kaPassword}
	start := func(fw *lab.Netns, role string, muros bool) *interopNode {
		n := &interopNode{fw: fw}
		var err error
		if muros {
			n.kind = "muros-had"
			mo.Role = role
			n.muros, err = hatest.StartNode(binary, p, fw, mo)
		} else {
			n.kind = "keepalived"
			ko.Role = role
			n.ka, err = hatest.StartKeepalived(p, fw, ko)
			if err == nil {
				t.Cleanup(func() { n.ka.Close() })
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The backup first: a keepalived backup then hears the master's AH
	// sequence number before it ever sends.
	backup = start(p.FW2, "backup", !murosMaster)
	master = start(p.FW1, "master", murosMaster)
	return master, backup
}

// electTimeout bounds an election or takeover: Master_Down_Interval (3
// intervals plus skew) of a node that starts in BACKUP, with slack.
func electTimeout(m interopMode) time.Duration { return 4*m.interval + 3*time.Second }

func TestInteropKeepalived(t *testing.T) {
	for _, m := range interopModes() {
		for _, murosMaster := range []bool{true, false} {
			name := m.name + "/keepalived-master"
			if murosMaster {
				name = m.name + "/muros-had-master"
			}
			t.Run(name, func(t *testing.T) {
				p := lab.NewPairT(t, lab.Options{})
				master, backup := startInterop(t, p, m, murosMaster, "")
				wait := electTimeout(m)

				// One master, the higher priority one.
				master.mustState(t, "MASTER", wait)
				backup.mustState(t, "BACKUP", wait)
				mustOwn(t, p, p.FW1)
				time.Sleep(3 * m.interval) // a few adverts each way
				master.mustState(t, "MASTER", time.Second)
				backup.mustState(t, "BACKUP", time.Second)
				backup.checkAccepted(t)
				master.checkAccepted(t)

				// Graceful stop: priority 0, the backup takes over at skew
				// time and the client's traffic follows it.
				from := backup.logLen()
				res := probe(t, p, m.interval+1300*time.Millisecond, func() {
					time.Sleep(300 * time.Millisecond)
					if err := master.stop(); err != nil {
						t.Errorf("stopping %s: %v", master, err)
					}
				})
				backup.mustState(t, "MASTER", wait)
				mustOwn(t, p, p.FW2)
				backup.checkTakeover(t, true, from)
				if res.LastReplyAge > 300*time.Millisecond {
					t.Errorf("client traffic did not resume through %s: %+v", backup, res)
				}
				t.Logf("graceful stop of %s: client-visible gap %v (%d lost of %d)", master, res.MaxGap, res.Lost, res.Sent)

				// The master returns and preempts.
				master.restart(t)
				master.mustState(t, "MASTER", wait)
				backup.mustState(t, "BACKUP", wait)
				mustOwn(t, p, p.FW1)
				time.Sleep(3 * m.interval)
				backup.checkAccepted(t)
				master.checkAccepted(t)

				// Crash: the daemon dies without a priority 0 and the box
				// vanishes (links down); the backup takes over when
				// Master_Down_Interval runs out. Killed first: with the links
				// going down first, a live daemon sees its tracked interfaces
				// fail and sends priority 0 before sync0 goes too.
				from = backup.logLen()
				res = probe(t, p, 4*m.interval+1300*time.Millisecond, func() {
					time.Sleep(300 * time.Millisecond)
					if err := master.kill(); err != nil {
						t.Errorf("killing %s: %v", master, err)
					}
					if err := p.CrashNode(p.FW1); err != nil {
						t.Error(err)
					}
				})
				backup.mustState(t, "MASTER", wait)
				mustHold(t, p, p.FW2)
				backup.checkTakeover(t, false, from)
				if res.LastReplyAge > 300*time.Millisecond {
					t.Errorf("client traffic did not resume through %s: %+v", backup, res)
				}
				t.Logf("crash of %s: client-visible gap %v (%d lost of %d)", master, res.MaxGap, res.Lost, res.Sent)

				// The box comes back; the restarted master preempts again.
				if err := p.RestoreNode(p.FW1); err != nil {
					t.Fatal(err)
				}
				master.restart(t)
				master.mustState(t, "MASTER", wait)
				backup.mustState(t, "BACKUP", wait)
				mustOwn(t, p, p.FW1)
				time.Sleep(3 * m.interval)
				backup.checkAccepted(t)
				master.checkAccepted(t)
				p.Client.MustPing(t, p.ServerAddr.Addr())
			})
		}
	}
}

// TestInteropKeepalivedWrongPassword pairs muros-had and keepalived with
// keepalived-ah and different passwords, both ways round: neither may
// accept the other's adverts, so both become master (the split that no
// authentication agreement must produce), muros-had counts the rejects as
// auth_failed and keepalived logs its HMAC failure.
func TestInteropKeepalivedWrongPassword(t *testing.T) {
	m := interopModes()[0]
	for _, murosMaster := range []bool{true, false} {
		t.Run(fmt.Sprintf("muros-had-master=%v", murosMaster), func(t *testing.T) {
			p := lab.NewPairT(t, lab.Options{})
			master, backup := startInterop(t, p, m, murosMaster, "otherpw")
			muros, ka := master, backup
			if !murosMaster {
				muros, ka = backup, master
			}
			wait := electTimeout(m)
			muros.mustState(t, "MASTER", wait)
			ka.mustState(t, "MASTER", wait)
			time.Sleep(3 * m.interval)
			muros.mustState(t, "MASTER", time.Second)
			ka.mustState(t, "MASTER", time.Second)
			mustHold(t, p, p.FW1)
			mustHold(t, p, p.FW2)
			rejected := muros.status(t).Adverts.Rejected
			if rejected["auth_failed"] < 2 {
				t.Errorf("muros-had rejected %v, want auth_failed >= 2", rejected)
			}
			for reason, n := range rejected {
				if reason != "auth_failed" {
					t.Errorf("muros-had rejected %d adverts as %s, want only auth_failed", n, reason)
				}
			}
			const kaReject = "IPSEC-AH : invalid IPSEC HMAC-MD5 value"
			if !strings.Contains(ka.log(), kaReject) {
				t.Errorf("keepalived never logged %q:\n%s", kaReject, tail(ka.log(), 30))
			}
		})
	}
}
