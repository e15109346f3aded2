package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// keepalivedConf is a VRRPv3 pair config: one sync group with the LAN
// and WAN VIPs, adverts every 100 ms.
func keepalivedConf(p *Pair, name string, priority int) string {
	return fmt.Sprintf(`global_defs {
	router_id %[1]s
	vrrp_version 3
	vrrp_garp_master_delay 1
	vrrp_garp_master_repeat 3
}
vrrp_sync_group G {
	group {
		LAN
		WAN
	}
}
vrrp_instance LAN {
	state BACKUP
	interface %[3]s
	virtual_router_id 51
	priority %[2]d
	advert_int 0.1
	virtual_ipaddress {
		%[5]s dev %[3]s
	}
}
vrrp_instance WAN {
	state BACKUP
	interface %[4]s
	virtual_router_id 52
	priority %[2]d
	advert_int 0.1
	virtual_ipaddress {
		%[6]s dev %[4]s
	}
}
`, name, priority, IfLAN, IfWAN, p.LANVIP, p.WANVIP)
}

func startKeepalived(t *testing.T, fw *Netns, conf string) *Process {
	t.Helper()
	path := filepath.Join(fw.Dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	proc, err := fw.Start("keepalived", "-n", "-l", "-D", "-G", "-P", "-f", path,
		"-p", filepath.Join(fw.Dir, "keepalived.pid"),
		"-r", filepath.Join(fw.Dir, "vrrp.pid"),
		"-c", filepath.Join(fw.Dir, "checkers.pid"))
	if err != nil {
		t.Fatal(err)
	}
	return proc
}

func holdsVIP(fw *Netns, vip string) bool {
	out, err := fw.Run("ip", "-o", "addr", "show", "dev", IfLAN)
	return err == nil && strings.Contains(out, vip)
}

// TestPairWithKeepalived checks the pair does what it is for, with the
// reference implementation: VRRP adverts cross the LAN bridge, the VIPs
// land on fw1, the hosts learn the new owner from gratuitous ARP when fw1
// dies, and the prober sees the path come back through fw2.
func TestPairWithKeepalived(t *testing.T) {
	p := NewPairT(t, Options{})
	ka1 := startKeepalived(t, p.FW1, keepalivedConf(p, "fw1", 150))
	startKeepalived(t, p.FW2, keepalivedConf(p, "fw2", 100))
	lanVIP := p.LANVIP.String()
	waitFor(t, func() bool { return holdsVIP(p.FW1, lanVIP) }, "fw1 holds the LAN VIP")
	if holdsVIP(p.FW2, lanVIP) {
		t.Fatalf("both firewalls hold %s", lanVIP)
	}
	p.Client.MustPing(t, p.ServerAddr.Addr())
	if n := counter(t, p, p.FW2, CounterVRRP); n == 0 {
		t.Errorf("fw2 counted no VRRP adverts from fw1")
	}

	var crashed time.Time
	res, err := p.ProbeUDP(context.Background(), false, UDPProbeOptions{
		Duration: 4 * time.Second,
		During: func() {
			time.Sleep(500 * time.Millisecond)
			if err := p.CrashNode(p.FW1); err != nil {
				t.Error(err)
			}
			ka1.Signal(syscall.SIGKILL)
			crashed = time.Now()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover with keepalived (advert 0.1 s): %+v", res)
	end := res.Start.Add(res.Elapsed)
	if crashed.IsZero() || !crashed.Before(end) {
		t.Fatalf("crash (%v) not within the probe run (ended %v)", crashed, end)
	}
	if !holdsVIP(p.FW2, lanVIP) {
		t.Fatalf("fw2 did not take %s over", lanVIP)
	}
	if lastReply := end.Add(-res.LastReplyAge); !lastReply.After(crashed) {
		t.Errorf("no reply after the crash: the path never came back through fw2 (last reply %v, crash %v)", lastReply, crashed)
	}
	if res.MaxGap == 0 || res.Lost == 0 {
		t.Errorf("a crash without any gap or loss: probe is not measuring (%+v)", res)
	}
}
