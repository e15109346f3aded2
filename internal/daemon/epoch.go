package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/muros/muros-had/atomicfile"
	"github.com/muros/muros-had/vrrp"
)

// epochFile is where the AH sender epoch (vrrp.AHCounter, the SPI of every
// advert) is persisted under the state directory: one decimal number and a
// newline, replaced atomically (atomicfile.Write), so a crash leaves the old
// or the new value.
type epochFile string

// errEpochFile marks a start refused because of the epoch file.
var errEpochFile = errors.New("AH epoch file")

// load returns the persisted epoch, 0 when the file does not exist (the
// first start). Anything else that prevents reading the number is an
// error: the daemon must not silently start below an epoch its peer
// remembers. The peer would then refuse our adverts as replays until our
// silence reached its Master_Down_Interval (vrrp.ReplayState.AcceptAt),
// and the file is only ever written atomically, so a bad one is damage
// the operator has to look at.
func (f epochFile) load() (uint32, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w %s unreadable: %w", errEpochFile, f, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w %s is corrupt (%q): %w; remove it to start with the clock's epoch (the peer accepts a lower epoch only after a Master_Down_Interval of silence)",
			errEpochFile, f, clip(b, 32), err)
	}
	return uint32(v), nil
}

func (f epochFile) save(e uint32) error {
	if err := atomicfile.Write(string(f), []byte(strconv.FormatUint(uint64(e), 10)+"\n"), 0o600, "."+filepath.Base(string(f))+".tmp*"); err != nil {
		return fmt.Errorf("%w %s cannot be written: %w", errEpochFile, f, err)
	}
	return nil
}

// reserveEpoch is the AH start-up step: it reads the last epoch, persists
// the one this run starts from (above it, and at least the clock's Unix
// seconds) and returns it; the run sends under it (or under the clock if
// that has passed it, persisted before use). A node that cannot persist
// its epoch refuses to
// start: it would send under an epoch its next start could reuse, and a
// peer refuses a reused epoch's adverts as replays.
func reserveEpoch(f epochFile, now time.Time) (uint32, error) {
	last, err := f.load()
	if err != nil {
		return 0, fmt.Errorf("daemon: %w", err)
	}
	e := vrrp.NewAHCounter(last, now).Epoch
	if err := f.save(e); err != nil {
		return 0, fmt.Errorf("daemon: refusing to start: %w", err)
	}
	return e, nil
}

func clip(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}
