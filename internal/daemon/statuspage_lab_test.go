package daemon_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// screenshotTo, when set, is where TestStatusPageInBrowser copies its
// screenshot of the new master's page (the README's docs/status-page.png).
var screenshotTo = flag.String("screenshot", "", "copy the status page's screenshot to this `file`")

// statusPageAddr is the page's listener in each firewall namespace (each
// has its own loopback).
const statusPageAddr = "127.0.0.1:9733"

// chromium runs Debian's chromium headless inside ns, so it reaches the
// loopback listener of that namespace and no other network: with
// --dump-dom it returns the DOM as rendered, with --screenshot it writes
// a PNG into dir.
func chromium(t *testing.T, ns *lab.Netns, dir string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatalf("chromium (Debian package, scripts/install-deps.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"netns", "exec", ns.Name, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars", "--user-data-dir=" + filepath.Join(dir, "profile")}
	cmd := exec.CommandContext(ctx, "ip", append(base, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium in %s %v: %v\n%s", ns, args, err, stderr.String())
	}
	return stdout.String()
}

// pageDOM is the page of the node in ns as chromium rendered it.
func pageDOM(t *testing.T, ns *lab.Netns) string {
	t.Helper()
	return chromium(t, ns, t.TempDir(), "--dump-dom", "http://"+statusPageAddr+"/")
}

// TestStatusPageInBrowser loads the status page of a running pair (VRRP,
// conntrack and DB sync on) in a headless browser over the status.http
// listener, before and after the master crashes: the backup's page shows
// it MASTER with the takeover and its reason in the timeline. promtool
// check metrics passes on both nodes' /metrics.
func TestStatusPageInBrowser(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	o1 := hatest.NodeOptions{Role: "master", Extra: ctSyncOn, StatusHTTP: statusPageAddr}
	o2 := hatest.NodeOptions{Role: "backup", Extra: ctSyncOn, StatusHTTP: statusPageAddr}
	n1, n2, err := hatest.StartPairWithDBSync(binary, p, o1, o2)
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, n1, "MASTER", 15*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)
	// The backup's replications complete and each node has the other's
	// health answer: what a healthy pair shows.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s1, s2 := mustStatus(t, n1), mustStatus(t, n2)
		if r := s2.Readiness; r != nil && !r.Held && s1.Peer.Reachable && s2.Peer.Reachable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pair not settled: fw2's preemption %v, peer reachable %v/%v", s2.Readiness, s1.Peer.Reachable, s2.Peer.Reachable)
		}
	}

	for _, n := range []struct {
		node  *hatest.Node
		state string
		ct    string
	}{{n1, "MASTER", "sender"}, {n2, "BACKUP", "receiver"}} {
		dom := pageDOM(t, n.node.NS)
		for _, want := range []string{
			"<h1>Cluster status</h1>",
			`<td class="` + n.state + `">` + n.state + `</td>`,
			"<th>Peer</th>", "<th>Peer health</th><td>reachable",
			"<h2>Conntrack sync</h2>", "<th>Role</th><td>" + n.ct,
			"<h2>DB sync</h2>", "<th>Revision</th>",
			"<h2>Timeline</h2>",
		} {
			if !strings.Contains(dom, want) {
				t.Errorf("%s's page as chromium rendered it lacks %s:\n%s", n.node.NS, want, dom)
			}
		}
	}

	promtoolCheck(t, n1)
	promtoolCheck(t, n2)

	if err := n1.Crash(p); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 5*time.Second)
	dom := pageDOM(t, n2.NS)
	st := mustStatus(t, n2)
	last := st.LastFailover
	if last == nil || last.To != "MASTER" {
		t.Fatalf("fw2's last failover after the takeover: %+v", last)
	}
	row := fmt.Sprintf(`<td>%s</td><td class="MASTER">MASTER</td><td>%s</td>`, last.From, last.Reason)
	for _, want := range []string{`<th>Local state</th><td class="MASTER">MASTER</td>`, "<h2>Timeline</h2>", row} {
		if !strings.Contains(dom, want) {
			t.Errorf("the new master's page lacks %s:\n%s", want, dom)
		}
	}
	if got := st.TimelineNewestFirst(); len(got) == 0 || got[0] != *last {
		t.Errorf("fw2's timeline %+v does not start with the takeover %+v", got, last)
	}

	dir := t.TempDir()
	chromium(t, n2.NS, dir, "--screenshot="+filepath.Join(dir, "page.png"), "--window-size=1100,1500", "http://"+statusPageAddr+"/")
	png, err := os.ReadFile(filepath.Join(dir, "page.png"))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
		t.Fatalf("screenshot: %d bytes, %v", len(png), err)
	}
	if *screenshotTo != "" {
		if err := os.WriteFile(*screenshotTo, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// promtoolCheck runs promtool check metrics (Debian's prometheus) on the
// node's /metrics: the VRRP, conntrack and DB sync collectors of a running
// daemon.
func promtoolCheck(t *testing.T, n *hatest.Node) {
	t.Helper()
	body := httpGet(t, unixDial(n.StatusSock), "/metrics")
	for _, want := range []string{"muros_had_vrrp_group_state", "muros_had_conntrack_flows", "muros_had_dbsync_revision"} {
		if !strings.Contains(body, want) {
			t.Errorf("%s's /metrics lacks %s", n.NS, want)
		}
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on %s's /metrics: %v\n%s", n.NS, err, out)
	}
}
