package sched

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/dist"
)

func TestPolicyAttr(t *testing.T) {
	tests := []struct {
		p       Policy
		wantErr string
		str     string
	}{
		{Policy{Kind: RR, Priority: 40}, "", "SCHED_RR priority 40"},
		{Policy{Kind: FIFO, Priority: 99}, "", "SCHED_FIFO priority 99"},
		{Policy{Kind: Other, Nice: -5}, "", "SCHED_OTHER nice -5"},
		{Policy{Kind: RR, Priority: 0}, "out of 1..99", ""},
		{Policy{Kind: Other, Nice: 20}, "out of -20..19", ""},
		{Policy{Kind: "batch"}, "unknown policy", ""},
	}
	for _, tt := range tests {
		_, err := tt.p.attr()
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%+v: err %v, want %q", tt.p, err, tt.wantErr)
		}
		if tt.str != "" && tt.p.String() != tt.str {
			t.Errorf("%+v: String %q, want %q", tt.p, tt.p.String(), tt.str)
		}
	}
}

// helperEnv makes the test binary run schedHelper instead of the tests: the
// policy is set on a process of its own, never on the test runner.
const helperEnv = "MUROS_SCHED_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		run := schedHelper
		if mode == "unit" {
			run = unitHelper
		}
		if err := run(); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		fmt.Println("OK")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// policies returns the policy of every thread of the process.
func policies() (map[int]Policy, error) {
	tids, err := threads()
	if err != nil {
		return nil, err
	}
	out := map[int]Policy{}
	for _, tid := range tids {
		p, err := Of(tid)
		if err != nil {
			continue // ended meanwhile
		}
		out[tid] = p
	}
	return out, nil
}

// allAre checks that every thread has want. The main thread may not: if
// Start's locked goroutine ran on it, the runtime parked it for good
// (the main thread cannot exit), and it never runs again.
func allAre(want Policy) error {
	ps, err := policies()
	if err != nil {
		return err
	}
	for tid, p := range ps {
		if p != want && !(tid == os.Getpid() && p == Policy{Kind: Other}) {
			return fmt.Errorf("thread %d has %s, want %s (of %d threads)", tid, p, want, len(ps))
		}
	}
	return nil
}

// schedHelper: every thread gets the policy, threads created afterwards
// inherit it, a started program runs time-sharing, and starting it leaves
// the daemon's threads as they were.
func schedHelper() error {
	want := Policy{Kind: RR, Priority: 10}
	n, err := Apply(want)
	if err != nil {
		return err
	}
	if n < 2 {
		return fmt.Errorf("Apply set %d threads; a Go process has several", n)
	}
	if err := allAre(want); err != nil {
		return fmt.Errorf("after Apply: %w", err)
	}
	// Force new threads: goroutines locked to threads, all at once.
	before, _ := threads()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	start := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-start
			p, err := Of(0)
			if err != nil || p != want {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%v %v", p, err))
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	after, _ := threads()
	if len(after) <= len(before) {
		return fmt.Errorf("no new thread was created (%d, then %d)", len(before), len(after))
	}
	if bad != nil {
		return fmt.Errorf("threads created after Apply: %v", bad)
	}
	if err := childIsTimeSharing(); err != nil {
		return err
	}
	// The forking thread ends with Start's goroutine, a moment later.
	for i := 0; ; i++ {
		err := allAre(want)
		if err == nil {
			break
		}
		if i == 100 {
			return fmt.Errorf("after Start: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Setting the policy a thread already has is not a call at all.
	if n, err := Apply(want); err != nil || n < 2 {
		return fmt.Errorf("second Apply: %d, %v", n, err)
	}
	return nil
}

func TestApplyAndStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (CAP_SYS_NICE) for a real-time policy; run the suite as root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if d := cmp.Diff("OK\n", string(out)); err != nil || d != "" {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

// Time-sharing with nice 0 needs no privilege and changes nothing visible.
func TestApplyOtherInProcess(t *testing.T) {
	cur, err := Of(0)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Kind != Other {
		t.Fatalf("test process runs %s", cur)
	}
	if _, err := Apply(cur); err != nil {
		t.Fatal(err)
	}
	if err := allAre(cur); err != nil {
		t.Fatal(err)
	}
}

// unitDirectives returns the packaged unit's keys, each with its last value.
func unitDirectives(t *testing.T) map[string]string {
	t.Helper()
	u, err := dist.ReadUnit("../../dist/muros-had.service")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, vs := range u {
		out[k] = vs[len(vs)-1]
	}
	return out
}

// TestUnitScheduling runs the helper as the unit starts the daemon: root
// with only the unit's bounding set (no CAP_SYS_NICE) and the unit's
// CPUSchedulingPolicy= already set (chrt stands in for systemd). The
// configured policy, the unit's, is accepted (Apply makes no call for a
// thread that has it: under systemd, RestrictRealtime= would refuse one);
// another is refused with a message that names the fix; programs still
// start time-sharing. systemd's seccomp filter itself is not here.
func TestUnitScheduling(t *testing.T) {
	u := unitDirectives(t)
	if u["CPUSchedulingPolicy"] != "rr" {
		t.Fatalf("unit CPUSchedulingPolicy=%q, this test expects rr", u["CPUSchedulingPolicy"])
	}
	prio := u["CPUSchedulingPriority"]
	spec := "-all"
	for _, c := range strings.Fields(u["CapabilityBoundingSet"]) {
		if c == "CAP_SYS_NICE" {
			t.Fatal("the unit grants CAP_SYS_NICE: this test's premise is that it does not need to")
		}
		spec += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	cmd := exec.Command("chrt", "--rr", prio, "setpriv", "--bounding-set", spec, "--inh-caps", "-all", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=unit", "MUROS_SCHED_PRIO="+prio)
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "OK\n" {
		t.Fatalf("helper under the unit's settings: %v\n%s", err, out)
	}
}

func unitHelper() error {
	prio, err := strconv.Atoi(os.Getenv("MUROS_SCHED_PRIO"))
	if err != nil {
		return err
	}
	want := Policy{Kind: RR, Priority: prio}
	if err := allAre(want); err != nil {
		return fmt.Errorf("chrt did not set every thread: %w", err)
	}
	if _, err := Apply(want); err != nil {
		return fmt.Errorf("the unit's own policy: %w", err)
	}
	_, err = Apply(Policy{Kind: FIFO, Priority: 30})
	if err == nil || !strings.Contains(err.Error(), "CAP_SYS_NICE") {
		return fmt.Errorf("another policy without CAP_SYS_NICE: %v, want a refusal naming CAP_SYS_NICE", err)
	}
	if err := childIsTimeSharing(); err != nil {
		return err
	}
	// A final stop's teardown (cmd/muros-had): down to Lowest, which the
	// unit's settings allow, and no way back up.
	if _, err := Apply(Lowest()); err != nil {
		return fmt.Errorf("lowering to %s under the unit's settings: %w", Lowest(), err)
	}
	if err := allAre(Lowest()); err != nil {
		return fmt.Errorf("after lowering: %w", err)
	}
	if _, err := Apply(want); err == nil {
		return fmt.Errorf("back to %s after lowering without CAP_SYS_NICE: allowed, want refused", want)
	}
	return nil
}

// childIsTimeSharing starts a program with Start and checks its policy:
// field 41 of its /proc/self/stat, 0 for SCHED_OTHER.
func childIsTimeSharing() error {
	var out bytes.Buffer
	cmd := exec.Command("cat", "/proc/self/stat")
	cmd.Stdout = &out
	if err := Start(cmd); err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return err
	}
	stat := out.String()
	if f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:]); f[38] != "0" {
		return fmt.Errorf("child's policy %s, want 0 (SCHED_OTHER)", f[38])
	}
	return nil
}
