package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/internal/status"
	"github.com/muros/muros-had/internal/vrrpconn"
	"github.com/muros/muros-had/vrrp"

	"github.com/muros/muros-had/internal/hatest"
	"github.com/muros/muros-had/lab"
)

// startCustomNode starts muros-had in fw with hatest's configuration for o
// passed through edit, for settings NodeOptions cannot express.
func startCustomNode(t *testing.T, p *lab.Pair, fw *lab.Netns, o hatest.NodeOptions, edit func(string) string) *hatest.Node {
	t.Helper()
	n := &hatest.Node{
		NS:         fw,
		ConfigPath: filepath.Join(fw.Dir, "muros-had.yaml"),
		StatusSock: filepath.Join(fw.Dir, "run", "status.sock"),
		Options:    o,
	}
	if err := os.WriteFile(n.ConfigPath, []byte(edit(hatest.Config(p, fw, o))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(binary); err != nil {
		t.Fatal(err)
	}
	return n
}

// replaceVIPs swaps the "vips:" block of a generated configuration for vips.
func replaceVIPs(cfg, vips string) string {
	start := strings.Index(cfg, "vips:\n")
	end := strings.Index(cfg, "advert_interval:")
	if start < 0 || end < start {
		panic("replaceVIPs: no vips block in generated configuration")
	}
	return cfg[:start] + vips + cfg[end:]
}

// replaceMetrics swaps the generated "metrics:" block for block.
func replaceMetrics(cfg, block string) string {
	return strings.Replace(cfg, "metrics:\n  enabled: false\n", block, 1)
}

// metricsOf parses the Prometheus text exposition into "name{labels}" ->
// value (labels as printed: sorted by name).
func metricsOf(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			t.Fatalf("bad metrics line %q", l)
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// httpGet fetches url through dial (a unix socket or a TCP connection
// opened inside a namespace).
func httpGet(t *testing.T, dial func() (net.Conn, error), path string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(context.Context, string, string) (net.Conn, error) { return dial() },
	}}
	resp, err := c.Get("http://muros-had" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", path, resp.Status, err)
	}
	return string(b)
}

func unixDial(path string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.Dial("unix", path) }
}

// nsDial connects to addr from inside ns: the socket is created on a
// thread switched into the namespace, so 127.0.0.1 is ns's own loopback.
func nsDial(ns *lab.Netns, addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		})
		return c, err
	}
}

// TestStatusSurface checks what an operator sees on both nodes: `muros-had
// status` and `status --json` run inside the namespace against the daemon's
// socket, the HTML page, and Prometheus metrics both on the status socket
// and on the metrics listener on each namespace's own 127.0.0.1 (same port
// on both nodes), before and after a graceful handover.
func TestStatusSurface(t *testing.T) {
	p := lab.NewPairT(t, lab.Options{})
	const metricsAddr = "127.0.0.1:19732"
	withMetrics := func(cfg string) string {
		return replaceMetrics(cfg, "metrics:\n  enabled: true\n  listen: "+metricsAddr+"\n")
	}
	n1 := startCustomNode(t, p, p.FW1, hatest.NodeOptions{Role: "master"}, withMetrics)
	n2 := startCustomNode(t, p, p.FW2, hatest.NodeOptions{Role: "backup"}, withMetrics)
	mustState(t, n1, "MASTER", 5*time.Second)
	mustState(t, n2, "BACKUP", 5*time.Second)

	// A forged advert so the rejection counter has a reason to show.
	inj := newInjector(t, p)
	inj.send(t, vrrpconn.ProtoAH, inj.packet(t, p, vrrp.Config{Version: 3, Auth: vrrp.AuthAH, Password: "not-the-secret"}, 1))
	deadline := time.Now().Add(2 * time.Second)
	for mustStatus(t, n1).Adverts.Rejected["auth_failed"] == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}

	// Real-time scheduling (the default): in the status, and on every
	// thread of the daemon.
	if st := mustStatus(t, n1); st.Scheduling != "SCHED_RR priority 40" {
		t.Errorf("status scheduling = %q, want SCHED_RR priority 40", st.Scheduling)
	}
	checkThreadsRealtime(t, n1.Proc.Pid(), schedRR, 40)

	// Text status, run inside fw2's namespace, once fw2 has heard fw1's
	// adverts: fw2 opens its sockets about a key derivation after fw1
	// claims, and the adverts are 100 ms apart.
	waitStatus(t, n2, "fw2 hears fw1's adverts", 2*time.Second, func(s status.Status) bool { return s.Peer.Role == "master" })
	text := p.FW2.MustRun(t, binary, "status", "--listen", n2.StatusSock)
	for _, want := range []string{
		"(backup, priority 100)",
		"local state:   BACKUP",
		"peer:          " + p.FW1Addrs.Sync.Addr().String() + ": master (adverts from " + p.FW1Addrs.Sync.Addr().String() + ")",
		"last failover: none", // starting as backup is not a failover
		"adverts:       sent 0, rejected none",
		"vip:           vrid 10  wan0     " + p.WANVIP.String(),
		"vip:           vrid 11  lan0     " + p.LANVIP.String(),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status on fw2 lacks %q:\n%s", want, text)
		}
	}

	// JSON status, run inside fw1's namespace: SPEC fields present, the sync
	// sections omitted until ctsync/dbsync fill them.
	js := p.FW1.MustRun(t, binary, "status", "--json", "--listen", n1.StatusSock)
	var raw map[string]any
	if err := json.Unmarshal([]byte(js), &raw); err != nil {
		t.Fatalf("status --json: %v\n%s", err, js)
	}
	for _, k := range []string{"conntrack", "db"} {
		if _, ok := raw[k]; ok {
			t.Errorf("status --json carries %q before anything fills it:\n%s", k, js)
		}
	}
	var st status.Status
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatal(err)
	}
	if st.Role != "master" || st.State != "MASTER" || st.Peer.Role == "" || st.LastFailover == nil ||
		st.LastFailover.To != "MASTER" || st.LastFailover.Time.IsZero() || !strings.Contains(st.LastFailover.Reason, "no master heard") {
		t.Errorf("fw1 status --json: %+v (last failover %+v)", st, st.LastFailover)
	}
	wantVIPs := []status.VIPStatus{
		{VRID: 10, Interface: lab.IfWAN, Address: p.WANVIP.String(), State: "MASTER"},
		{VRID: 11, Interface: lab.IfLAN, Address: p.LANVIP.String(), State: "MASTER"},
	}
	if diff := cmp.Diff(wantVIPs, st.VIPs); diff != "" {
		t.Errorf("fw1 VIPs (-want +got):\n%s", diff)
	}

	// The HTML page.
	page := httpGet(t, unixDial(n1.StatusSock), "/")
	for _, want := range []string{"<h1>Cluster status</h1>", `<td class="MASTER">MASTER</td>`, "<td>10</td>", p.LANVIP.String(), "no master heard", "auth_failed=1"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q:\n%s", want, page)
		}
	}

	// Metrics: the status socket and the metrics listener serve the same
	// registry.
	// The group state changes with its first member, the others follow
	// within a moment, and the first advert after that: poll a while.
	checkMetrics := func(n *hatest.Node, want map[string]float64, positive ...string) {
		t.Helper()
		var problems []string
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			problems = problems[:0]
			for _, src := range []struct {
				name string
				dial func() (net.Conn, error)
			}{{"status socket", unixDial(n.StatusSock)}, {"metrics listener", nsDial(n.NS, metricsAddr)}} {
				m := metricsOf(t, httpGet(t, src.dial, "/metrics"))
				for k, v := range want {
					if got, ok := m[k]; !ok || got != v {
						problems = append(problems, fmt.Sprintf("%s %s: %s = %v (present %v), want %v", n.NS, src.name, k, got, ok, v))
					}
				}
				for _, k := range positive {
					if m[k] <= 0 {
						problems = append(problems, fmt.Sprintf("%s %s: %s = %v, want > 0", n.NS, src.name, k, m[k]))
					}
				}
			}
			if len(problems) == 0 || time.Now().After(deadline) {
				break
			}
		}
		for _, p := range problems {
			t.Error(p)
		}
	}
	checkMetrics(n1, map[string]float64{
		`muros_had_vrrp_group_state{state="MASTER"}`:                  1,
		`muros_had_vrrp_group_state{state="BACKUP"}`:                  0,
		`muros_had_vrrp_instance_state{state="MASTER",vrid="10"}`:     1,
		`muros_had_vrrp_instance_state{state="MASTER",vrid="11"}`:     1,
		`muros_had_vrrp_instance_state{state="INIT",vrid="11"}`:       0,
		`muros_had_vrrp_transitions_total{to="MASTER",vrid="10"}`:     1,
		`muros_had_vrrp_transitions_total{to="BACKUP",vrid="10"}`:     1,
		`muros_had_vrrp_adverts_rejected_total{reason="auth_failed"}`: 1,
	}, "muros_had_vrrp_adverts_sent_total")

	// A graceful handover shows on the new master.
	if err := n1.Stop(); err != nil {
		t.Fatal(err)
	}
	mustState(t, n2, "MASTER", 3*time.Second)
	checkMetrics(n2, map[string]float64{
		`muros_had_vrrp_group_state{state="MASTER"}`:              1,
		`muros_had_vrrp_group_state{state="BACKUP"}`:              0,
		`muros_had_vrrp_instance_state{state="MASTER",vrid="11"}`: 1,
		`muros_had_vrrp_transitions_total{to="MASTER",vrid="11"}`: 1,
	}, "muros_had_vrrp_adverts_sent_total")
	text = p.FW2.MustRun(t, binary, "status", "--listen", n2.StatusSock)
	if !strings.Contains(text, "BACKUP -> MASTER") || !strings.Contains(text, "peer left") {
		t.Errorf("status on the new master does not show the handover:\n%s", text)
	}
}

// Kernel policy numbers (sched(7)).
const (
	schedFIFO = 1
	schedRR   = 2
)

// checkThreadsRealtime: every thread of pid runs policy at prio, except a
// main thread the Go runtime parked for good (sched.Start).
func checkThreadsRealtime(t *testing.T, pid, policy, prio int) {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	rt := 0
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, e.Name()))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		// Fields 40 and 41 of stat: rt_priority, policy.
		got := f[37] + " " + f[38]
		switch {
		case got == fmt.Sprintf("%d %d", prio, policy):
			rt++
		case e.Name() == strconv.Itoa(pid) && got == "0 0":
		default:
			t.Errorf("thread %s of %d: rt_priority/policy %s, want %d %d", e.Name(), pid, got, prio, policy)
		}
	}
	if rt < 2 {
		t.Errorf("%d real-time threads in %d", rt, pid)
	}
}
