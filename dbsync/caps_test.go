package dbsync

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/muros/muros-had/dist"
)

// The packaged unit bounds the daemon's capabilities; these tests run the
// code that reads and writes replicated files in a child process holding
// exactly the unit's CapabilityBoundingSet (as root, like the unit), so a
// unit that lacks what dbsync needs fails here rather than on a firewall.

// capChildEnv makes the test binary run one capChild operation.
const capChildEnv = "DBSYNC_CAP_CHILD"

// unitFile is the packaged systemd unit.
const unitFile = "../dist/muros-had.service"

// unitCapabilities returns the unit's CapabilityBoundingSet, e.g.
// ["CAP_CHOWN", "CAP_NET_ADMIN"].
func unitCapabilities(t testing.TB) []string {
	t.Helper()
	u, err := dist.ReadUnit(unitFile)
	if err != nil {
		t.Fatalf("the packaged unit: %v", err)
	}
	var caps []string
	for _, v := range u["CapabilityBoundingSet"] {
		caps = append(caps, strings.Fields(v)...)
	}
	if len(caps) == 0 {
		t.Fatalf("%s: no CapabilityBoundingSet", unitFile)
	}
	return caps
}

// withCaps is the command prefix that runs a program as root with only
// caps in its bounding set (hence in its permitted and effective sets, as
// systemd's CapabilityBoundingSet does for a root service).
func withCaps(t testing.TB, caps []string) []string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) not on PATH: needed to run the daemon code with the unit's capabilities")
	}
	spec := "-all"
	for _, c := range caps {
		spec += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	return []string{setpriv, "--bounding-set", spec, "--inh-caps", "-all"}
}

func without(caps []string, drop string) []string {
	var out []string
	for _, c := range caps {
		if c != drop {
			out = append(out, c)
		}
	}
	return out
}

// capChildSpec is one operation for capChild.
type capChildSpec struct {
	Op    string // "apply" (backup side) or "read" (master side)
	Dir   string // the replicated directory ("kea")
	State string // the applier's state directory
}

// capChildResult is what capChild prints.
type capChildResult struct {
	Err         string
	OwnerErrors int
	Owner       Owner // read: the owner the master would send
}

// capChild applies, as a backup does, a put then an append of a lease
// file owned by 4242:4243 into Dir, or reads Dir/leases4.csv as a master
// does for a push; it prints a capChildResult.
func capChild(specJSON string) {
	var spec capChildSpec
	var res capChildResult
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		res.Err = err.Error()
	} else {
		res = runCapOp(spec)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

func runCapOp(spec capChildSpec) capChildResult {
	roots := []Path{{Name: "kea", Local: spec.Dir, Dir: true}}
	kea := Owner{UID: 4242, GID: 4243}
	switch spec.Op {
	case "apply":
		a, err := newApplier(roots, spec.State, newHashCache())
		if err != nil {
			return capChildResult{Err: err.Error()}
		}
		e := Entry{Op: OpPut, Mode: 0o640, Path: "kea/leases4.csv", SHA256: sha256.Sum256([]byte("h\n")), Data: []byte("h\n"), Owner: kea, MTime: 1}
		// A file in a new subdirectory: the backup makes the directory.
		sub := Entry{Op: OpPut, Mode: 0o640, Path: "kea/sub/hosts", SHA256: sha256.Sum256([]byte("x")), Data: []byte("x"), Owner: kea, MTime: 1}
		b := Batch{Version: 2, Revision: 1, Entries: []Entry{e, sub}}
		res, err := a.apply(b, BatchDigest(b))
		if err == nil && len(res.Failed) > 0 {
			// Charged to the paths (the rest of a batch would apply).
			err = fmt.Errorf("failed paths: %+v", res.Failed)
		}
		if err != nil {
			return capChildResult{Err: err.Error()}
		}
		ap := Entry{Op: OpAppend, Mode: 0o640, Path: "kea/leases4.csv", Offset: 2, PrefixSHA256: sha256.Sum256([]byte("h\n")),
			SHA256: sha256.Sum256([]byte("h\nl1\n")), Data: []byte("l1\n"), Owner: kea, MTime: 2}
		b = Batch{Version: 2, Revision: 2, Entries: []Entry{ap}}
		res2, err := a.apply(b, BatchDigest(b))
		if err == nil && len(res2.Failed) > 0 {
			err = fmt.Errorf("failed paths: %+v", res2.Failed)
		}
		if err != nil {
			return capChildResult{Err: err.Error(), OwnerErrors: res.OwnerErrors}
		}
		return capChildResult{OwnerErrors: res.OwnerErrors + res2.OwnerErrors}
	case "read":
		s := &source{roots: roots, cache: newHashCache(), sqlite3: "sqlite3", start: (*exec.Cmd).Start, tmpDir: spec.State}
		e, _, ok, err := s.entry(context.Background(), "kea/leases4.csv", nil, true, newAccounts())
		if err != nil {
			return capChildResult{Err: err.Error()}
		}
		if !ok || string(e.Data) != "h\nl1\n" {
			return capChildResult{Err: fmt.Sprintf("read ok=%v data %q", ok, e.Data)}
		}
		return capChildResult{Owner: e.Owner}
	}
	return capChildResult{Err: "unknown op " + spec.Op}
}

func runCapChild(t *testing.T, caps []string, spec capChildSpec) capChildResult {
	t.Helper()
	js, _ := json.Marshal(spec)
	args := append(withCaps(t, caps), os.Args[0], "-test.run=^$")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), capChildEnv+"="+string(js))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("capability child: %v\n%s", err, out)
	}
	var res capChildResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("capability child output %q: %v", out, err)
	}
	return res
}

// keaDir makes a directory like Debian's /var/lib/kea: owned by the
// service account (here the numeric 4242:4243, no account created), mode
// 0750, so root without CAP_DAC_OVERRIDE can neither list nor write it.
func keaDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "kea")
	if err := os.Mkdir(d, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, 4242, 4243); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestUnitCapabilitiesSuffice: with the unit's capabilities, a backup
// installs Kea's lease file (put, then append) into Kea's directory owned
// by Kea, and a master reads Kea's private lease file; each capability the
// unit adds for dbsync is needed (the control rows lose one and fail), and
// the unit's old set (network only) failed both.
func TestUnitCapabilitiesSuffice(t *testing.T) {
	mustRoot(t)
	unit := unitCapabilities(t)
	type outcome struct {
		ApplyOK     bool
		OwnerErrors int
		Attrs       attrs // of the installed lease file (zero when none)
		SubDir      attrs // of the directory made for kea/sub/hosts (mtime not compared)
		ReadOK      bool
	}
	good := outcome{ApplyOK: true, Attrs: attrs{4242, 4243, 0o640, 2}, SubDir: attrs{4242, 4243, 0o750, 0}, ReadOK: true}
	tests := []struct {
		name string
		caps []string
		want outcome
	}{
		{"the unit's set", unit, good},
		{"network only (the unit before)", []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}, outcome{}},
		{"unit without CAP_DAC_OVERRIDE", without(unit, "CAP_DAC_OVERRIDE"), outcome{}},
		// The content arrives; the owner does not (counted, not fatal).
		{"unit without CAP_CHOWN", without(unit, "CAP_CHOWN"), outcome{ApplyOK: true, OwnerErrors: 3, Attrs: attrs{0, 0, 0o640, 2}, SubDir: attrs{0, 0, 0o750, 0}, ReadOK: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Backup side.
			dir := keaDir(t)
			state := t.TempDir()
			res := runCapChild(t, tt.caps, capChildSpec{Op: "apply", Dir: dir, State: state})
			got := outcome{ApplyOK: res.Err == "", OwnerErrors: res.OwnerErrors}
			lease := filepath.Join(dir, "leases4.csv")
			if _, err := os.Stat(lease); err == nil {
				got.Attrs = attrsOf(t, lease)
				got.SubDir = attrsOf(t, filepath.Join(dir, "sub"))
				got.SubDir.MTime = 0
				if b, _ := os.ReadFile(lease); got.ApplyOK && string(b) != "h\nl1\n" {
					t.Errorf("lease content %q", b)
				}
			}
			// Master side: Kea's lease file, private to Kea in Kea's directory.
			src := keaDir(t)
			if err := os.Chmod(src, 0o700); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(src, "leases4.csv")
			if err := os.WriteFile(p, []byte("h\nl1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 4242, 4243); err != nil {
				t.Fatal(err)
			}
			rres := runCapChild(t, tt.caps, capChildSpec{Op: "read", Dir: src, State: t.TempDir()})
			got.ReadOK = rres.Err == ""
			if got.ReadOK && (rres.Owner.UID != 4242 || rres.Owner.GID != 4243) {
				t.Errorf("master read owner %+v, want 4242:4243", rres.Owner)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("with %v (-want +got):\n%s\napply error: %s\nread error: %s", tt.caps, d, res.Err, rres.Err)
			}
		})
	}
}
