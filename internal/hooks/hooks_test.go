package hooks

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/muros/muros-had/internal/sched"
)

// helperEnv makes the test binary a process that runs at a real-time
// policy and starts a hook (TestHookRunsTimeSharing): the policy is set
// on a process of its own, never on the test runner.
const helperEnv = "MUROS_HOOKS_HELPER"

func TestMain(m *testing.M) {
	if out := os.Getenv(helperEnv); out != "" {
		if err := realtimeHelper(out); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func sh(name, script string, timeout time.Duration, args ...string) Hook {
	return Hook{Name: name, Argv: append([]string{"/bin/sh", "-c", script, "sh"}, args...), Timeout: timeout}
}

func runner() *Runner { return &Runner{Start: sched.Start, Grace: 200 * time.Millisecond} }

var tr = Transition{State: "MASTER", Previous: "BACKUP", Reason: "master down", VRIDs: []uint8{10, 11},
	VIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.1/24"), netip.MustParsePrefix("10.0.0.1/24")}}

func TestRunOutcomes(t *testing.T) {
	tests := []struct {
		name   string
		hook   Hook
		want   Outcome
		status int
	}{
		{"ok", sh("master[0]", "exit 0", 5*time.Second), OK, 0},
		{"exit status", sh("master[0]", "exit 3", 5*time.Second), Failed, 3},
		{"not found", Hook{Name: "master[0]", Argv: []string{"/nonexistent/prog"}, Timeout: time.Second}, Failed, -1},
		{"timeout kills", sh("master[0]", "exec sleep 60", 300*time.Millisecond), TimedOut, -1},
		// SIGTERM ignored: SIGKILL after the grace.
		{"timeout ignores TERM", sh("master[0]", "trap '' TERM; sleep 60 & wait", 300*time.Millisecond), TimedOut, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := runner().Run(context.Background(), tr, tt.hook)
			if r.Outcome != tt.want || r.ExitStatus != tt.status {
				t.Fatalf("outcome %s status %d (%s), want %s %d", r.Outcome, r.ExitStatus, r.Error, tt.want, tt.status)
			}
			if r.Hook != "master[0]" || r.State != "MASTER" {
				t.Errorf("result names %q %q", r.Hook, r.State)
			}
			if tt.want == TimedOut && time.Since(start) > 30*time.Second {
				t.Errorf("a timed out hook was not killed (%s)", time.Since(start))
			}
		})
	}
}

// The whole process group goes: a program the hook left in the background
// does not outlive the kill.
func TestKillReachesTheGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	h := sh("backup[0]", `sleep 60 & echo $! > "$1"; wait`, 300*time.Millisecond, pidFile)
	r := runner().Run(context.Background(), tr, h)
	if r.Outcome != TimedOut {
		t.Fatalf("outcome %s", r.Outcome)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	// Killed, possibly not yet reaped by init: gone or a zombie.
	for i := 0; i < 100; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	t.Fatalf("background child %d of a killed hook still runs", pid)
}

func TestEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	// The daemon's own notification socket and a stale MUROS_HA_ variable
	// do not reach the hook.
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("MUROS_HA_STALE", "1")
	h := sh("master[1]", `env | grep -E '^(MUROS_HA_|NOTIFY_SOCKET)' | sort > "$1"`, 5*time.Second, out)
	if r := runner().Run(context.Background(), tr, h); r.Outcome != OK {
		t.Fatalf("%s", r)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "MUROS_HA_HOOK=master[1]\nMUROS_HA_PREVIOUS=BACKUP\nMUROS_HA_REASON=master down\nMUROS_HA_STATE=MASTER\n" +
		"MUROS_HA_VIPS=203.0.113.1/24 10.0.0.1/24\nMUROS_HA_VRIDS=10,11\n"
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Error(diff)
	}
}

// A sequence cut by its context: the running hook is killed and reported
// superseded, the next is skipped without starting.
func TestSequenceSuperseded(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	second := filepath.Join(dir, "second")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := []Hook{
		sh("backup[0]", `touch "$1"; exec sleep 60`, time.Minute, started),
		sh("backup[1]", `touch "$1"`, time.Minute, second),
	}
	go func() {
		for {
			if _, err := os.Stat(started); err == nil {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var got []string
	ok := Sequence(ctx, runner(), tr, hs, func(r Result) { got = append(got, r.Hook+" "+string(r.Outcome)) })
	if ok {
		t.Error("Sequence says complete after a cancel")
	}
	if diff := cmp.Diff([]string{"backup[0] superseded", "backup[1] skipped"}, got); diff != "" {
		t.Error(diff)
	}
	if _, err := os.Stat(second); err == nil {
		t.Error("the hook after a superseded one ran")
	}
}

func TestBookLogsOncePerStreak(t *testing.T) {
	b := NewBook()
	seq := []Outcome{Failed, Failed, TimedOut, Superseded, OK, OK, TimedOut}
	want := []Log{LogFailure, LogNone, LogNone, LogNone, LogRecovered, LogNone, LogFailure}
	var got []Log
	for _, o := range seq {
		got = append(got, b.Record(Result{Hook: "master[0]", Outcome: o}))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error(diff)
	}
	b.Record(Result{Hook: "backup[0]", Outcome: OK})
	if diff := cmp.Diff([]string{"backup[0]", "master[0]"}, names(b.Last())); diff != "" {
		t.Error(diff)
	}
	b.Keep([]string{"backup[0]"})
	if diff := cmp.Diff([]string{"backup[0]"}, names(b.Last())); diff != "" {
		t.Error(diff)
	}
}

func names(rs []Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Hook)
	}
	return out
}

// realtimeHelper runs at SCHED_RR and starts a hook that records its own
// policy (field 41 of /proc/self/stat; 0 is SCHED_OTHER).
func realtimeHelper(out string) error {
	if _, err := sched.Apply(sched.Policy{Kind: sched.RR, Priority: 10}); err != nil {
		return err
	}
	h := sh("master[0]", `cat /proc/self/stat > "$1"`, 5*time.Second, out)
	if r := runner().Run(context.Background(), tr, h); r.Outcome != OK {
		return fmt.Errorf("hook: %s", r)
	}
	return nil
}

func TestHookRunsTimeSharing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "stat")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper (needs CAP_SYS_NICE for SCHED_RR): %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	stat := string(b)
	if f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:]); f[38] != "0" {
		t.Fatalf("hook's policy %s, want 0 (SCHED_OTHER)", f[38])
	}
}
