package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Serve starts the local status listener on statusAddr (GET /status: the
// document in JSON, GET /: the page, GET /metrics, GET /events: the feed's
// stream when feed is not nil) and, unless metricsAddr is empty, a
// Prometheus listener serving only /metrics. doc is called for each
// request; routes are further handlers of the status listener (POST
// /maintenance). The returned function closes the listeners (streams
// included).
func Serve(statusAddr, metricsAddr string, doc func() Status, reg prometheus.Gatherer, feed *Feed, routes ...Route) (stop func() error, err error) {
	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r.Pattern, r.Handler)
	}
	if feed != nil {
		mux.Handle("GET /events", feed)
	}
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusPage.Execute(w, doc())
	})
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	mux.Handle("GET /metrics", metrics)

	l, err := listen(statusAddr)
	if err != nil {
		return nil, fmt.Errorf("status listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	if metricsAddr == "" {
		return srv.Close, nil
	}
	ml, err := listen(metricsAddr)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mm := http.NewServeMux()
	mm.Handle("GET /metrics", metrics)
	ms := &http.Server{Handler: mm, ReadHeaderTimeout: 5 * time.Second}
	go ms.Serve(ml)
	return func() error { return errors.Join(srv.Close(), ms.Close()) }, nil
}

// ServePage starts the browser's TCP listener on addr (config
// status.http): the page, the document and /metrics, all read-only; the
// event stream stays on the status socket. The returned function closes it.
func ServePage(addr string, doc func() Status, reg prometheus.Gatherer) (stop func() error, err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusPage.Execute(w, doc())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status page listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
	go srv.Serve(l)
	return srv.Close, nil
}

// listen opens a unix socket (absolute path; a stale socket file from a
// crashed run is replaced) or a TCP listener.
func listen(addr string) (net.Listener, error) {
	if strings.HasPrefix(addr, "/") {
		if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
			return nil, err
		}
		// A socket file that still answers belongs to a running daemon: two
		// daemons on one run dir would fight over the same VIPs. One that
		// does not answer is left over from a crash and is replaced.
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by a running daemon", addr)
		}
		_ = os.Remove(addr)
		l, err := net.Listen("unix", addr)
		if err != nil {
			return nil, err
		}
		_ = os.Chmod(addr, 0o660)
		return l, nil
	}
	return net.Listen("tcp", addr)
}

// pageFuncs are the page's helpers: ages relative to the document's time,
// lags with their unit.
var pageFuncs = template.FuncMap{"ago": Ago, "ms": Millis}

var statusPage = template.Must(template.New("status").Funcs(pageFuncs).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>muros-had: {{.Node}}</title>
<meta http-equiv="refresh" content="2">
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .8em;text-align:left}
.MASTER{color:#070}.BACKUP{color:#555}.FAULT{color:#b00}</style></head><body>
<h1>Cluster status</h1>
<table>
<tr><th>Node</th><td>{{.Node}} ({{.Role}}, priority {{.Priority}})</td></tr>
<tr><th>Local state</th><td class="{{.State}}">{{.State}}</td></tr>
{{if .Maintenance}}<tr><th class="FAULT">Maintenance</th><td class="FAULT">on: this node handed over and stays BACKUP until <code>muros-had maintenance off</code></td></tr>{{end}}
{{with .Scheduling}}<tr><th>Scheduling</th><td>{{.}}</td></tr>{{end}}
<tr><th>Peer</th><td>{{.Peer.Management}}: {{.Peer.Role}}{{if eq .Peer.RoleSource "health"}} (from its health answer{{with .Peer.Address}}; last adverts from {{.}}{{end}}){{else}}{{with .Peer.Address}} (adverts from {{.}}){{end}}{{end}}{{with .Peer.RoleReason}}: {{.}}{{end}}</td></tr>
<tr><th>Peer health</th><td>{{if not .Peer.Polled}}not polled{{else if .Peer.Reachable}}reachable{{else}}<span class="FAULT">unreachable</span>{{with .Peer.Error}} ({{.}}){{end}}{{end}}{{if not .Peer.LastHeard.IsZero}}, last heard {{.Peer.LastHeard.Format "2006-01-02 15:04:05.000Z07:00"}}{{end}}{{with .Peer.Readiness}}; peer {{.}}{{end}}{{if .Peer.InMaintenance}}; <span class="FAULT">peer in MAINTENANCE</span> (it stays BACKUP){{end}}</td></tr>
{{with .Liveness}}<tr><th>Peer liveness</th><td>{{.}}</td></tr>
{{if .SyncLinkDown.Active}}<tr><th class="FAULT">SYNC LINK DOWN</th><td class="FAULT">since {{.SyncLinkDown.Since.Format "2006-01-02 15:04:05Z07:00"}}: the peer is alive on the second path, so this node does not take over; adverts and conntrack sync do not pass until the link is mended</td></tr>{{end}}
{{with .Shared}}<tr><th class="FAULT">Second path</th><td class="FAULT">{{.}}</td></tr>{{end}}{{end}}
{{if .SplitBrain.Active}}<tr><th class="FAULT">SPLIT BRAIN</th><td class="FAULT">this node and the peer are both MASTER since {{.SplitBrain.Since.Format "2006-01-02 15:04:05Z07:00"}}</td></tr>{{end}}
<tr><th>Ruleset</th><td>{{with .Ruleset}}{{if .Drift}}<span class="FAULT">DRIFT since {{.DriftSince.Format "2006-01-02 15:04:05Z07:00"}}</span>: {{end}}local {{or .Local.Fingerprint "none"}}{{with .Local.Error}} ({{.}}){{end}}, peer {{with .Peer}}{{or .Fingerprint "none"}}{{with .Error}} ({{.}}){{end}}{{else}}unknown{{end}}{{with .Off}}; {{.}}{{end}}{{end}}</td></tr>
{{with .Readiness}}<tr><th>Preemption</th><td>{{.}}</td></tr>{{end}}
<tr><th>Last failover</th><td>{{with .LastFailover}}{{.Time.Format "2006-01-02 15:04:05.000Z07:00"}}: {{.From}} &rarr; {{.To}} ({{.Reason}}){{else}}none{{end}}</td></tr>
</table>
<h2>VIPs</h2>
<table><tr><th>VRID</th><th>Interface</th><th>Address</th><th>State</th></tr>
{{range .VIPs}}<tr><td>{{.VRID}}</td><td>{{.Interface}}</td><td>{{.Address}}</td><td class="{{.State}}">{{.State}}</td></tr>{{end}}
</table>
<h2>Adverts</h2><p>sent {{.Adverts.Sent}}, rejected: {{range $k, $v := .Adverts.Rejected}}{{$k}}={{$v}} {{else}}none{{end}}</p>
{{with .ConntrackView}}<h2>Conntrack sync</h2><table>
<tr><th>Role</th><td>{{.Role}}{{if .BulkSynced}}, holds a complete copy{{else}}, <span class="FAULT">not bulk synced</span>{{end}}{{with .Handshake}}, handshake {{.}}{{end}}</td></tr>
<tr><th>Flows</th><td>{{.Flows}}</td></tr>
<tr><th>Lag</th><td>{{ms .LagMS}}</td></tr>
<tr><th>Datagrams</th><td>sent {{.DatagramsSent}}, received {{.DatagramsRecv}}; records applied {{.RecordsApplied}}</td></tr>
<tr><th>Lost / repaired</th><td>{{.Lost}} / {{.Repaired}}</td></tr>
<tr><th>Resyncs</th><td>{{.Resyncs}}</td></tr>
{{with .Waiting}}<tr><th>Waiting</th><td>{{.}}</td></tr>{{end}}
<tr><th>Rejected</th><td>{{range $k, $v := .Rejected}}{{$k}}={{$v}} {{else}}none{{end}}</td></tr>
</table>{{end}}
{{with .DBView}}<h2>DB sync</h2><table>
{{if .Error}}<tr><th>Error</th><td class="FAULT">{{.Error}}</td></tr>{{else}}<tr><th>Role</th><td>{{.Role}}, {{if .Ready}}ready{{with .ReadyReason}} ({{.}}){{end}}{{else}}<span class="FAULT">not ready</span>{{with .Waiting}}: {{.}}{{end}}{{end}}</td></tr>
<tr><th>Revision</th><td>{{.Revision}} (peer {{.Peer.Revision}})</td></tr>
<tr><th>Last push</th><td>{{ago .LastSync $.Time}}</td></tr>
<tr><th>Last apply</th><td>{{ago .LastApply $.Time}}</td></tr>
<tr><th>Pending</th><td>{{.PendingPaths}} paths{{if .PendingPaths}}, oldest {{ms .LagMillis}}{{end}}</td></tr>
<tr><th>Peer</th><td>{{if .Peer.Reachable}}reachable{{else}}<span class="FAULT">unreachable</span>{{end}}, last contact {{ago .Peer.LastContact $.Time}}</td></tr>
{{with .LastError}}<tr><th>Last error</th><td class="FAULT">{{.}}</td></tr>{{end}}
{{with .Conflicts}}<tr><th class="FAULT">Conflicts</th><td>{{range .}}{{.}} {{end}}</td></tr>{{end}}
{{with .ClockSkew}}<tr><th>Peer clock</th><td{{if .Warning}} class="FAULT"{{end}}>{{.OffsetMillis}} ms{{with .Warning}}: {{.}}{{end}}</td></tr>{{end}}
<tr><th>Rejected</th><td>{{range $k, $v := .Rejected}}{{$k}}={{$v}} {{else}}none{{end}}</td></tr>{{end}}
</table>{{end}}
<h2>Timeline</h2>
{{with .TimelineNewestFirst}}<table><tr><th>Time</th><th>Age</th><th>From</th><th>To</th><th>Reason</th></tr>
{{range .}}<tr><td>{{.Time.Format "2006-01-02 15:04:05.000Z07:00"}}</td><td>{{ago .Time $.Time}}</td><td>{{.From}}</td><td class="{{.To}}">{{.To}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>{{else}}<p>no failover since the start</p>{{end}}
{{with .Checks}}<h2>Health checks</h2><table><tr><th>Check</th><th>What</th><th>Effect</th><th>Verdict</th><th>Since</th><th>Last result</th><th>At</th></tr>
{{range .}}<tr><td>{{.Name}}</td><td>{{.Target}}</td><td>{{.Effect}}</td><td{{if eq .State "failing"}} class="FAULT"{{end}}>{{.State}}</td><td>{{if not .Since.IsZero}}{{.Since.Format "2006-01-02 15:04:05Z07:00"}}{{end}}</td><td>{{.Last}}</td><td>{{if not .LastAt.IsZero}}{{.LastAt.Format "2006-01-02 15:04:05Z07:00"}}{{end}}</td></tr>{{end}}
</table>{{end}}
{{with .Hooks}}<h2>Role hooks (last run)</h2><table><tr><th>Hook</th><th>State</th><th>Outcome</th><th>Started</th><th>Took</th></tr>
{{range .}}<tr><td>{{.Hook}}</td><td>{{.State}}</td><td{{if or (eq .Outcome "failed") (eq .Outcome "timed_out")}} class="FAULT"{{end}}>{{.Outcome}}{{if eq .Outcome "failed"}} (exit {{.ExitStatus}}{{with .Error}}: {{.}}{{end}}){{end}}</td><td>{{.Start.Format "2006-01-02 15:04:05Z07:00"}}</td><td>{{.Duration}}</td></tr>{{end}}
</table>{{end}}
{{with .Foreign}}<h2>Foreign routers on our VRIDs</h2><ul>{{range .}}<li>VRID {{.VRID}} from {{.Address}}, last seen {{.LastSeen}}</li>{{end}}</ul>{{end}}
</body></html>
`))
