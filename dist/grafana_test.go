package dist

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/muros/muros-had/ctsync"
	"github.com/muros/muros-had/dbsync"
	"github.com/muros/muros-had/internal/status"
	"github.com/prometheus/client_golang/prometheus"
)

// registryNames are the metric names the daemon's registry can export:
// package status's, the conntrack and the DB sync collectors'.
func registryNames(t *testing.T) []string {
	t.Helper()
	descs := make(chan *prometheus.Desc, 256)
	status.NewMetrics().Registry().Describe(descs)
	status.ConntrackCollector(func() ctsync.Status { return ctsync.Status{} }).Describe(descs)
	(*dbsync.Node)(nil).Collector().Describe(descs)
	close(descs)
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for d := range descs {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		names = append(names, m[1])
	}
	return names
}

var metricName = regexp.MustCompile(`\bmuros_had_[a-z0-9_]+`)

// unknownMetrics lists the muros_had_ names in exprs that are not in names.
func unknownMetrics(exprs, names []string) []string {
	var out []string
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			if !slices.Contains(names, n) {
				out = append(out, fmt.Sprintf("%s in %s", n, e))
			}
		}
	}
	return out
}

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Query any `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// TestGrafanaDashboard: dist/grafana-dashboard.json is valid JSON whose
// panels cover the state, takeovers, sync lag and rejections, every
// expression names only metrics the daemon exports, and Prometheus parses
// every expression (promtool check rules on them as recording rules).
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var exprs, titles []string
	for _, p := range d.Panels {
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok && strings.Contains(q, "muros_had_") {
			exprs = append(exprs, q)
		}
	}
	for _, want := range []string{"Group state", "Takeovers", "Sync lag", "Rejections"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q among %q", want, titles)
		}
	}
	if bad := unknownMetrics(exprs, registryNames(t)); len(bad) > 0 {
		t.Errorf("the dashboard queries metrics the daemon does not export:\n%s", strings.Join(bad, "\n"))
	}

	// Grafana's variables replaced by what they stand for.
	grafana := strings.NewReplacer("$__range", "1h", "$__rate_interval", "1m", "$instance", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n- name: dashboard\n  rules:\n")
	n := 0
	for _, e := range exprs {
		if strings.HasPrefix(e, "label_values(") {
			continue // a Grafana function, not PromQL
		}
		n++
		q, _ := json.Marshal(grafana.Replace(e))
		fmt.Fprintf(&rules, "  - record: dashboard:expr%d\n    expr: %s\n", n, q)
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (Debian package prometheus, scripts/install-deps.sh): %v", err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the dashboard's expressions: %v\n%s\n%s", err, out, rules.String())
	}
}

// TestUnknownMetrics: a misspelt metric is reported (the check above can
// fail).
func TestUnknownMetrics(t *testing.T) {
	got := unknownMetrics([]string{`rate(muros_had_vrrp_adverts_sent_total[5m])`, `muros_had_conntrack_lag_second{x="y"}`},
		[]string{"muros_had_vrrp_adverts_sent_total", "muros_had_conntrack_lag_seconds"})
	want := []string{`muros_had_conntrack_lag_second in muros_had_conntrack_lag_second{x="y"}`}
	if !slices.Equal(got, want) {
		t.Errorf("unknownMetrics = %q, want %q", got, want)
	}
}
