package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestReserveEpoch: the epoch a run starts from is persisted before it is
// used and lies above the last one persisted whatever the clock says; a
// file that cannot be read as an epoch refuses the start and is left as
// it is (the operator looks at it), never read as "no epoch".
func TestReserveEpoch(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name    string
		file    *string // nil: absent
		want    uint32  // 0: an error
		wantErr string
	}{
		{name: "first start: the clock", want: 1_800_000_000},
		{name: "clock behind the last epoch", file: ptr("1900000000\n"), want: 1_900_000_001},
		{name: "clock ahead", file: ptr("1700000000\n"), want: 1_800_000_000},
		{name: "corrupt", file: ptr("19000x0000\n"), wantErr: "corrupt"},
		{name: "empty", file: ptr(""), wantErr: "corrupt"},
		{name: "beyond 32 bits", file: ptr("99999999999\n"), wantErr: "corrupt"},
		{name: "negative", file: ptr("-5\n"), wantErr: "corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ah-epoch")
			if tt.file != nil {
				if err := os.WriteFile(path, []byte(*tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := reserveEpoch(epochFile(path), now)
			b, _ := os.ReadFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errEpochFile) {
					t.Fatalf("reserveEpoch = %d, %v; want an error saying %q", got, err, tt.wantErr)
				}
				if diff := cmp.Diff(*tt.file, string(b)); diff != "" {
					t.Errorf("a refused start changed the file (-was +now):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("epoch %d, want %d", got, tt.want)
			}
			if diff := cmp.Diff(strconv.FormatUint(uint64(tt.want), 10)+"\n", string(b)); diff != "" {
				t.Errorf("persisted (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// TestReserveEpochUnpersistable: a state directory or epoch file the
// daemon cannot write (read-only mount, immutable attribute; root ignores
// mode bits, so the test uses FS_IMMUTABLE_FL) refuses the start, as does
// an epoch file that is not a file. Before, the failure was a warning and
// the run went on with an epoch its next start could reuse.
func TestReserveEpochUnpersistable(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	t.Run("immutable state dir", func(t *testing.T) {
		dir := t.TempDir()
		immutable(t, dir)
		if e, err := reserveEpoch(epochFile(filepath.Join(dir, "ah-epoch")), now); err == nil || !errors.Is(err, errEpochFile) {
			t.Fatalf("reserveEpoch = %d, %v; want a refusal", e, err)
		}
	})
	t.Run("immutable epoch file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ah-epoch")
		if err := os.WriteFile(path, []byte("1700000000\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		immutable(t, path)
		if e, err := reserveEpoch(epochFile(path), now); err == nil || !errors.Is(err, errEpochFile) {
			t.Fatalf("reserveEpoch = %d, %v; want a refusal", e, err)
		}
	})
	t.Run("a directory in its place", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ah-epoch")
		if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		if e, err := reserveEpoch(epochFile(path), now); err == nil || !errors.Is(err, errEpochFile) {
			t.Fatalf("reserveEpoch = %d, %v; want a refusal", e, err)
		}
	})
}

// immutable sets FS_IMMUTABLE_FL on path (chattr +i) until the test ends.
func immutable(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatalf("FS_IOC_GETFLAGS on %s (the test needs root and a file system with the immutable attribute, e.g. ext4): %v", path, err)
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsImmutableFL)); err != nil {
		t.Fatalf("setting FS_IMMUTABLE_FL on %s (needs root and e.g. ext4): %v", path, err)
	}
	t.Cleanup(func() {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
			t.Errorf("clearing FS_IMMUTABLE_FL on %s: %v", path, err)
		}
	})
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (not in x/sys/unix).
const fsImmutableFL = 0x00000010
