package vrrp_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/muros/muros-had/lab"
	"github.com/muros/muros-had/vrrp"
)

// TestLabKeepalivedAcceptsOurAH sends keepalived-ah adverts built by Codec
// from one namespace to a real keepalived (Debian's 2.2.7, state BACKUP,
// lower priority) in another, over a veth pair, and reads keepalived's log:
// it must accept every advert, also after a simulated restart of our sender
// (fresh AHCounter, no persisted state: the time floor must carry it), and
// must reject a wrong password and keepalived-style sequence numbers that
// restart at 1 (the control that shows the replay check is live).
func TestLabKeepalivedAcceptsOurAH(t *testing.T) {
	// Registered first, so it runs after every other cleanup: the lab's
	// process waiters must be gone once keepalived is stopped.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	tx := lab.NewNetnsT(t, "vrrpahtx")
	rx := lab.NewNetnsT(t, "vrrpahrx")
	tx.MustRun(t, "ip", "link", "add", "vk0", "type", "veth", "peer", "name", "vk1", "netns", rx.Name)
	tx.MustRun(t, "ip", "addr", "add", "10.98.0.1/24", "dev", "vk0")
	rx.MustRun(t, "ip", "addr", "add", "10.98.0.2/24", "dev", "vk1")
	tx.MustRun(t, "ip", "link", "set", "vk0", "up")
	rx.MustRun(t, "ip", "link", "set", "vk1", "up")

	const password = "sharedpw"
	conf := filepath.Join(rx.Dir, "keepalived.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global_defs {
  router_id murosrx
}
vrrp_instance VI_1 {
  state BACKUP
  interface vk1
  virtual_router_id 51
  priority 100
  advert_int 1
  authentication {
    auth_type AH
    auth_pass %s
  }
  virtual_ipaddress {
    10.98.0.100/24
  }
}
`, password)), 0o600); err != nil {
		t.Fatal(err)
	}

	var fd int
	if err := tx.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		return unix.BindToDevice(fd, "vk0")
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })

	ka, err := rx.Start("keepalived", "-n", "-l", "-D", "-f", conf,
		"-p", filepath.Join(rx.Dir, "keepalived.pid"), "-r", filepath.Join(rx.Dir, "vrrp.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ka.Stop(3 * time.Second) })
	waitLog(t, ka, "Entering BACKUP STATE", 10*time.Second)

	src, group := netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("224.0.0.18")
	advert := vrrp.Advert{VRID: 51, Priority: 150, Interval: time.Second, Addrs: []netip.Addr{netip.MustParseAddr("10.98.0.100")}}
	send := func(c *vrrp.Codec, ctr vrrp.AHCounter) {
		t.Helper()
		pkt, err := c.AppendPacket(nil, src, group, &advert, ctr)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: group.As4()}); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	good, err := vrrp.NewCodec(vrrp.Config{Version: 2, Auth: vrrp.AuthKeepalivedAH, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	// Two adverts a second: well inside keepalived's 3.6 s master-down
	// interval, and the rate the sequence floor is designed for.
	const spacing = 500 * time.Millisecond

	var ctr vrrp.AHCounter
	for range 8 {
		ctr = ctr.NextKeepalived(time.Now())
		send(good, ctr)
		time.Sleep(spacing)
	}
	time.Sleep(time.Second) // a restart of our sender: state lost
	ctr = vrrp.AHCounter{}
	for range 8 {
		ctr = ctr.NextKeepalived(time.Now())
		send(good, ctr)
		time.Sleep(spacing)
	}
	if log := ka.Log(); strings.Contains(log, "Entering MASTER STATE") || strings.Contains(log, "IPSEC-AH") {
		t.Fatalf("keepalived did not accept our adverts:\n%s", log)
	}

	// Controls: the checks we passed are live.
	wrong, err := vrrp.NewCodec(vrrp.Config{Version: 2, Auth: vrrp.AuthKeepalivedAH, Password: "otherpw"})
	if err != nil {
		t.Fatal(err)
	}
	send(wrong, ctr.NextKeepalived(time.Now()))
	waitLog(t, ka, "invalid IPSEC HMAC-MD5", 5*time.Second)
	send(good, vrrp.AHCounter{Seq: 1}) // keepalived's own restart behaviour
	waitLog(t, ka, "sequence number 1 already processed", 5*time.Second)
}

// waitLog waits (generously: this is not a speed assertion) until the
// process has logged want.
func waitLog(t *testing.T, p *lab.Process, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(p.Log(), want) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("keepalived never logged %q:\n%s", want, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
