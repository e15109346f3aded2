package health

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/muros/muros-had/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCommand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		argv    []string
		timeout time.Duration
		want    string // "" passes; otherwise part of the error
	}{
		{"exit 0", []string{"/bin/sh", "-c", "exit 0"}, time.Second, ""},
		{"exit 3 with its message", []string{"/bin/sh", "-c", "echo upstream down >&2; exit 3"}, time.Second, "exit status 3: upstream down"},
		{"missing program", []string{"/nonexistent/check"}, time.Second, "start:"},
		{"timeout kills the group", []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}, 200 * time.Millisecond, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			err := Command{Argv: tc.argv}.Probe(ctx)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("failed: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			// Not a speed assertion: a probe held by its grandchild (the
			// backgrounded sleep keeping the pipe) would take 30 s.
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("took %s: the process group outlived the timeout", took)
			}
		})
	}
}

func TestProcess(t *testing.T) {
	proc := t.TempDir()
	for pid, comm := range map[string]string{"1": "systemd\n", "42": "unbound\n", "self": "x\n"} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "comm"), []byte(comm), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(proc, "uptime"), []byte("1 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, name := range []string{"unbound", "systemd", "kea-dhcp4", "x", "unboun"} {
		got[name] = Process{Name: name, Proc: proc}.Probe(context.Background()) == nil
	}
	want := map[string]bool{"unbound": true, "systemd": true, "kea-dhcp4": false, "x": false, "unboun": false}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	// The real /proc: this test's own process is there.
	self, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	if err := (Process{Name: strings.TrimSpace(string(self)), Proc: "/proc"}).Probe(context.Background()); err != nil {
		t.Errorf("own process not found in /proc: %v", err)
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "maintenance")
	if err := os.WriteFile(present, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "absent")
	got := map[string]bool{}
	for name, f := range map[string]File{
		"present, exists": {present, true}, "present, absent wanted": {present, false},
		"absent, exists": {absent, true}, "absent, absent wanted": {absent, false},
		// Under a file: ENOTDIR, not "does not exist": unknown, so failing.
		"unreadable, absent wanted": {filepath.Join(present, "x"), false},
	} {
		got[name] = f.Probe(context.Background()) == nil
	}
	want := map[string]bool{"present, exists": true, "present, absent wanted": false,
		"absent, exists": false, "absent, absent wanted": true, "unreadable, absent wanted": false}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// TestRun: the runner probes at once, then every interval, bounds each
// probe by the timeout and reports each result with its damped verdict.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// + success, - failure, t hangs until the timeout.
		script := "+-t--++-+"
		i := 0
		p := ProbeFunc(func(ctx context.Context) error {
			c := script[i%len(script)]
			i++
			switch c {
			case '+':
				return nil
			case 't':
				<-ctx.Done()
				return ctx.Err()
			}
			return errors.New("down")
		})
		ch := config.Check{Name: "c", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 2}
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan Result)
		done := make(chan struct{})
		go func() { Run(ctx, ch, p, out); close(done) }()
		start := time.Now()
		type row struct {
			At               time.Duration
			OK, Verdict, Chg bool
			Detail           string
		}
		var got []row
		for range len(script) {
			r := <-out
			got = append(got, row{r.At.Sub(start), r.OK, r.Verdict, r.Changed, r.Detail()})
		}
		cancel()
		<-done
		s := time.Second
		want := []row{
			{0, true, true, true, "ok"},
			{2 * s, false, true, false, "down"},
			{5 * s, false, false, true, "timed out"}, // fall 2: second failure in a row
			{6 * s, false, false, false, "down"},
			{8 * s, false, false, false, "down"},
			{10 * s, true, false, false, "ok"},
			{12 * s, true, true, true, "ok"}, // rise 2
			{14 * s, false, true, false, "down"},
			{16 * s, true, true, false, "ok"},
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("results (-want +got):\n%s", d)
		}
	})
}
