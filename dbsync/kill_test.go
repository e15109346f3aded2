package dbsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The crash tests re-execute the test binary as a child that applies
// batches and is SIGKILLed: by itself at a chosen step, or by the parent at
// a random moment. The parent then restarts the applier on the same disk.
const (
	crashChildEnv = "DBSYNC_CRASH_CHILD"
	crashDirEnv   = "DBSYNC_CRASH_DIR"
	crashStepEnv  = "DBSYNC_CRASH_STEP" // "step:nth", or empty: loop until killed
)

func crashRoots(base string) []Path {
	return []Path{
		{Name: "db", Local: filepath.Join(base, "db"), Dir: true},
		{Name: "lease", Local: filepath.Join(base, "kea", "leases4.csv")},
	}
}

// crashSet is one of two full versions of the tree the child alternates.
func crashSet(which byte) []Entry {
	var es []Entry
	for i := 0; i < 16; i++ {
		es = append(es, put(fmt.Sprintf("db/d%d/f%02d", i%3, i), strings.Repeat(string(which), 128<<10)+strconv.Itoa(i)))
	}
	return append(es, put("lease", "lease-"+string(which)+"\n"))
}

// crashVersion is the version the tree holds at revision rev.
func crashVersion(rev uint64) byte {
	if rev%2 == 1 {
		return 'x'
	}
	return 'y'
}

// summarize makes tree diffs readable: path -> first byte and length.
func summarize(tr map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range tr {
		out[k] = fmt.Sprintf("%.1s*%d", v, len(v))
	}
	return out
}

func crashTree(which byte) map[string]string {
	out := map[string]string{}
	for _, e := range crashSet(which) {
		p := strings.TrimPrefix(e.Path, "db/")
		if e.Path == "lease" {
			p = "kea/leases4.csv"
		} else {
			p = "db/" + p
		}
		out[p] = string(e.Data)
	}
	return out
}

func crashChild() {
	base := os.Getenv(crashDirEnv)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	a, err := newApplier(crashRoots(base), filepath.Join(base, "state"), newHashCache())
	if err != nil {
		fail(err)
	}
	if spec := os.Getenv(crashStepEnv); spec != "" {
		step, nthS, _ := strings.Cut(spec, ":")
		nth, _ := strconv.Atoi(nthS)
		calls := 0
		a.crash = func(s string) error {
			if s == step {
				if calls++; calls == nth {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					time.Sleep(time.Hour)
				}
			}
			return nil
		}
	}
	for rev := a.revision().Revision + 1; ; rev++ {
		b := Batch{Revision: rev, Entries: crashSet(crashVersion(rev))}
		if _, err := a.apply(b, BatchDigest(b)); err != nil {
			fail(err)
		}
		if os.Getenv(crashStepEnv) != "" {
			fail(errors.New("crash step never reached"))
		}
	}
}

func startCrashChild(t *testing.T, base, step string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashDirEnv+"="+base, crashStepEnv+"="+step)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func requireKilled(t *testing.T, err error) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child ended with %v, want SIGKILL", err)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL", err)
	}
}

// seedCrashDir applies version x at revision 1 in base.
func seedCrashDir(t *testing.T) string {
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "state"), 0o700)
	a, err := newApplier(crashRoots(base), filepath.Join(base, "state"), newHashCache())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, a, Batch{Revision: 1, Entries: crashSet('x')})
	return base
}

func recoverCrashDir(t *testing.T, base string) (*applier, map[string]string) {
	t.Helper()
	a, err := newApplier(crashRoots(base), filepath.Join(base, "state"), newHashCache())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.recover(); err != nil {
		t.Fatal(err)
	}
	got := tree(t, base)
	delete(got, "state/revision")
	for k := range got {
		if strings.HasPrefix(k, "state/") {
			t.Fatalf("state file %s left after recovery", k)
		}
	}
	return a, got
}

// A process killed at each step of an apply restarts with the old or the
// new version of every file, never a mix.
func TestApplyKilledAtStep(t *testing.T) {
	for _, tt := range []struct {
		step string
		want byte
		rev  uint64
	}{
		{stepStaged + ":1", 'x', 1},
		{stepJournaled + ":1", 'y', 2},
		{stepOp + ":1", 'y', 2},
		{stepOp + ":9", 'y', 2},
		{stepRevision + ":1", 'y', 2},
	} {
		t.Run(tt.step, func(t *testing.T) {
			base := seedCrashDir(t)
			requireKilled(t, startCrashChild(t, base, tt.step).Wait())
			a, got := recoverCrashDir(t, base)
			if d := cmp.Diff(summarize(crashTree(tt.want)), summarize(got)); d != "" {
				t.Fatalf("after kill at %s (-want +got):\n%s", tt.step, d)
			}
			if a.revision().Revision != tt.rev {
				t.Fatalf("revision %d, want %d", a.revision().Revision, tt.rev)
			}
		})
	}
}

// The parent SIGKILLs a child applying batch after batch at random moments.
func TestApplyKilledAtRandom(t *testing.T) {
	base := seedCrashDir(t)
	lastRev := uint64(1)
	for i := 0; i < 8; i++ {
		cmd := startCrashChild(t, base, "")
		// Let the child complete one batch, then kill it at a random moment
		// of the following ones.
		waitFor(t, "child progress", func() error {
			var st revisionState
			b, _ := os.ReadFile(filepath.Join(base, "state", "revision"))
			if json.Unmarshal(b, &st) != nil || st.Revision <= lastRev {
				return fmt.Errorf("revision %d", st.Revision)
			}
			return nil
		})
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		cmd.Process.Kill()
		requireKilled(t, cmd.Wait())
		a, got := recoverCrashDir(t, base)
		rev := a.revision().Revision
		if rev < lastRev {
			t.Fatalf("revision went back from %d to %d", lastRev, rev)
		}
		lastRev = rev
		want := crashTree(crashVersion(rev))
		if d := cmp.Diff(summarize(want), summarize(got)); d != "" {
			t.Fatalf("kill %d at revision %d: tree is not exactly one version (-want +got):\n%s", i, rev, d)
		}
		t.Logf("kill %d: recovered at revision %d", i, rev)
	}
	if lastRev < 9 {
		t.Fatalf("children applied only up to revision %d: the kills did not land mid-stream", lastRev)
	}
}
