// Package dist holds what a package installs besides the binary: the systemd
// unit (systemd.service(5), systemd.exec(5); Type=notify per sd_notify(3))
// and an example configuration. The tests check that the two agree with
// each other and with the daemon's defaults, and that systemd accepts the
// unit.
package dist

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/config"
)

// unitDirectives reads a unit file into key -> values (a key may repeat).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	u, err := ReadUnit(path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestUnitDirectives(t *testing.T) {
	u := unitDirectives(t, "muros-had.service")
	want := map[string]string{
		"Type":                   "notify",
		"Restart":                "on-failure",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"ExecStart":              "/usr/sbin/muros-had run --config /etc/muros-had/muros-had.yaml",
		"CapabilityBoundingSet":  "CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN CAP_DAC_OVERRIDE",
		"AmbientCapabilities":    "CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN CAP_DAC_OVERRIDE",
		"NoNewPrivileges":        "yes",
		"ProtectSystem":          "strict",
		"StateDirectory":         "muros-had",
		"RuntimeDirectory":       "muros-had",
		"ProtectKernelTunables":  "no",
		"WatchdogSec":            "10s",
		"ConfigurationDirectory": "muros-had",
		"CPUSchedulingPolicy":    "rr",
		"CPUSchedulingPriority":  "40",
	}
	got := map[string]string{}
	for k := range want {
		if v := u[k]; len(v) == 1 {
			got[k] = v[0]
		} else {
			got[k] = strings.Join(v, " | ")
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unit directives (-want +got):\n%s", diff)
	}
	for _, k := range []string{"PrivateNetwork", "ProcSubset", "User", "DynamicUser"} {
		if _, ok := u[k]; ok {
			t.Errorf("%s is set: the daemon needs the host network, /proc/sys/net and root-owned files", k)
		}
	}
}

// TestExampleConfigMatchesUnit: the example is refused for its placeholder
// password alone, with a message that says how to make one; with a password
// set it validates, and its directories and replicated paths are the ones
// the unit makes writable.
func TestExampleConfigMatchesUnit(t *testing.T) {
	const placeholder = `"GENERATE ME: openssl rand -base64 24"`
	example, err := os.ReadFile("muros-had.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.Parse("muros-had.yaml", example)
	var got []string
	if ps, ok := err.(config.Problems); ok {
		got = ps.Strings()
	}
	want := []string{`muros-had.yaml:17: password: is a placeholder (it contains "generate me"): generate a shared secret, e.g. with openssl rand -base64 24, the same on both nodes; to change it on a running pair without a split brain see README.md, "Changing the password"`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("example as shipped (-want +got):\n%s", diff)
	}
	set := strings.Replace(string(example), placeholder, `"Vb4kQ9zL2mX7pR1sT6wY8nC3"`, 1)
	if set == string(example) {
		t.Fatalf("the example's password is not %s", placeholder)
	}
	cfg, err := config.Parse("/etc/muros-had/muros-had.yaml", []byte(set))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("example has warnings: %v", cfg.Warnings)
	}
	u := unitDirectives(t, "muros-had.service")
	// The unit sets the scheduling the example asks for (the daemon has no
	// CAP_SYS_NICE to set it itself).
	if got, want := u["CPUSchedulingPolicy"][0]+" "+u["CPUSchedulingPriority"][0], fmt.Sprintf("%s %d", cfg.Scheduling.Policy, cfg.Scheduling.Priority); got != want {
		t.Errorf("unit scheduling %q, example's %q", got, want)
	}
	if want := filepath.Join("/var/lib", u["StateDirectory"][0]); cfg.StateDir != want || cfg.StateDir != config.DefaultStateDir {
		t.Errorf("state_dir %s, unit StateDirectory gives %s, default %s", cfg.StateDir, want, config.DefaultStateDir)
	}
	if want := filepath.Join("/run", u["RuntimeDirectory"][0]); cfg.RunDir != want || cfg.RunDir != config.DefaultRunDir {
		t.Errorf("run_dir %s, unit RuntimeDirectory gives %s, default %s", cfg.RunDir, want, config.DefaultRunDir)
	}
	if !strings.HasPrefix(cfg.Status.Listen, cfg.RunDir+"/") {
		t.Errorf("status socket %s is outside the run dir %s", cfg.Status.Listen, cfg.RunDir)
	}
	var rw []string
	for _, v := range u["ReadWritePaths"] {
		for _, p := range strings.Fields(v) {
			rw = append(rw, strings.TrimPrefix(p, "-"))
		}
	}
	for _, p := range cfg.DBSync.Paths {
		if !slices.Contains(rw, p) {
			t.Errorf("replicated path %s is not in the unit's ReadWritePaths %v (ProtectSystem=strict makes it read-only)", p, rw)
		}
	}
	if diff := cmp.Diff(config.DefaultPaths(), cfg.DBSync.Paths); diff != "" {
		t.Errorf("example replicated paths differ from the defaults (-default +example):\n%s", diff)
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit with ExecStart
// pointing at a freshly built binary (verify checks that it exists).
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install the systemd package to verify the unit")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "muros-had")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/muros-had").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("muros-had.service")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "muros-had.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/sbin/muros-had", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
