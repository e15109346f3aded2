package status

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/vrrp"
	"go.uber.org/goleak"
)

// fixedPeer is a PeerSource that reports the time it was asked about.
type fixedPeer struct{}

func (fixedPeer) Report(now time.Time) PeerReport {
	return PeerReport{Peer: PeerStatus{Management: "192.0.2.2", Role: "backup", LastHeard: now}, SplitBrain: Alarm{Active: true, Since: now}}
}

func testConfig() *config.Config {
	return &config.Config{
		Role: config.RoleMaster, AdvertInterval: 100 * time.Millisecond, Peer: netip.MustParseAddr("192.0.2.2"),
		VIPs: []config.VIP{{VRID: 10, Interface: "wan0", Address: netip.MustParsePrefix("203.0.113.1/24")}},
	}
}

// TestBookRecords: a start as BACKUP is no failover, entering MASTER is;
// the peer's part is asked for at the snapshot's time; a snapshot does not
// share the book's maps and slices.
func TestBookRecords(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	b := NewBook(testConfig(), fixedPeer{})
	b.Transition(10, vrrp.StateInitialize, vrrp.StateBackup, "start", at, vrrp.StateBackup)
	if s := b.Snapshot(at); s.LastFailover != nil || s.State != "BACKUP" || s.VIPs[0].State != "BACKUP" {
		t.Fatalf("after the start: state %s, VIPs %+v, failover %+v", s.State, s.VIPs, s.LastFailover)
	}
	b.Transition(10, vrrp.StateBackup, vrrp.StateMaster, "master down", at.Add(time.Second), vrrp.StateMaster)
	b.Link("wan0", true)
	b.VIPError("claim", io.ErrUnexpectedEOF)
	s := b.Snapshot(at.Add(2 * time.Second))
	want := &Failover{Time: at.Add(time.Second), From: "BACKUP", To: "MASTER", Reason: "master down"}
	if d := cmp.Diff(want, s.LastFailover); d != "" {
		t.Errorf("failover (-want +got):\n%s", d)
	}
	if !s.Peer.LastHeard.Equal(at.Add(2*time.Second)) || !s.SplitBrain.Active || s.Peer.Role != "backup" {
		t.Errorf("peer part: %+v %+v", s.Peer, s.SplitBrain)
	}
	if s.VIPError != "claim: unexpected EOF" || !s.Links["wan0"] {
		t.Errorf("VIP error %q, links %v", s.VIPError, s.Links)
	}
	s.Links["wan0"] = false
	s.VIPs[0].State = "changed"
	if s := b.Snapshot(at); !s.Links["wan0"] || s.VIPs[0].State != "MASTER" {
		t.Errorf("a snapshot's edits reached the book: %+v %v", s.VIPs, s.Links)
	}
}

// TestServeFetch: the document Fetch reads from the unix socket is the one
// served; /metrics is served on both listeners (a unix socket each here);
// the listeners stop.
func TestServeFetch(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "status.sock")
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	doc := NewBook(testConfig(), fixedPeer{}).Snapshot(at)
	m := NewMetrics()
	m.Reject("auth")
	doc.Adverts = m.Adverts()
	msock := filepath.Join(dir, "metrics.sock")
	stop, err := Serve(sock, msock, func() Status { return doc }, m.Registry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, raw, err := Fetch(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(doc, got); d != "" {
		t.Errorf("fetched document (-served +fetched):\n%s", d)
	}
	if !strings.Contains(string(raw), `"split_brain": {`) {
		t.Errorf("raw JSON: %s", raw)
	}
	for _, path := range []string{sock, msock} {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}}
		resp, err := c.Get("http://muros-had/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `muros_had_vrrp_adverts_rejected_total{reason="auth"} 1`) {
			t.Errorf("/metrics on %s:\n%s", path, body)
		}
	}
	if _, err := Serve(sock, "", func() Status { return doc }, m.Registry(), nil); err == nil || !strings.Contains(err.Error(), "in use by a running daemon") {
		t.Errorf("a second listener on a live socket: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{sock, msock} {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			t.Errorf("the stopped listener on %s still answers", path)
		}
	}
}
