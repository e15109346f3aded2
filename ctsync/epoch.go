package ctsync

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/muros/muros-had/atomicfile"
	"github.com/muros/muros-had/ctsync/ctrel"
)

// Files of the epoch book in Config.StateDir.
const (
	ownEpochFile  = "epoch"      // the highest epoch this node used or must exceed
	peerEpochFile = "peer-epoch" // the highest epoch accepted from the peer
)

// epochBook keeps the two epochs that must survive restarts, each in a
// file of its own written crash-safely (temp file, fsync, rename, fsync of
// the directory: a crash leaves the old or the new value, never a torn
// one). own: the highest epoch this node used, or learned that its peer
// accepted from it; the next incarnation starts above it (ctrel.NextEpoch).
// peer: the highest epoch this node accepted from its peer; the receiver
// and the master's control peer start from it, so a replay of an older
// incarnation is stale after a role switch or a restart too.
type epochBook struct {
	dir       string
	own, peer uint64
}

// openEpochBook reads the book in dir (created if missing, its creation
// made durable), removes the temporary files a crash left behind, and
// proves the book can be written. The node refuses to start when it
// cannot persist its epoch, and when a file is unreadable or corrupt (the
// policy of the daemon's VRRP epoch file): the files are only ever
// replaced atomically, so a bad one is damage the operator must look at;
// it is kept as it is.
func openEpochBook(dir string, log *slog.Logger) (*epochBook, error) {
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("ctsync: state directory: %w", err)
	}
	if err := removeTemporaries(dir, log); err != nil {
		return nil, fmt.Errorf("ctsync: state directory: %w", err)
	}
	b := &epochBook{dir: dir}
	for _, v := range []struct {
		name string
		to   *uint64
	}{{ownEpochFile, &b.own}, {peerEpochFile, &b.peer}} {
		n, err := readEpoch(filepath.Join(dir, v.name))
		if err != nil {
			return nil, fmt.Errorf("ctsync: refusing to start: %w; remove it to start afresh (the peer then makes this node prove itself with its nonce handshake)", err)
		}
		*v.to = n
	}
	if err := b.store(ownEpochFile, b.own); err != nil {
		return nil, fmt.Errorf("ctsync: state directory not writable: %w", err)
	}
	return b, nil
}

// mkdirDurable creates dir and its missing parents, and syncs the
// directory above each one created, so that a crash cannot lose the
// directory holding the epochs written next.
func mkdirDurable(dir string) error {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range missing { // deepest first: each entry, then its parent's
		if err := atomicfile.SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// removeTemporaries deletes the temporary files of store that a crash
// between their creation and the rename left in dir.
func removeTemporaries(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		for _, name := range []string{ownEpochFile, peerEpochFile} {
			if strings.HasPrefix(e.Name(), "."+name+".tmp") {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
				log.Info("ctsync: removed a temporary epoch file left by a crash", "file", e.Name())
			}
		}
	}
	return nil
}

func readEpoch(path string) (uint64, error) {
	d, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(d)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("epoch file %s is corrupt: %w", path, err)
	}
	return n, nil
}

// next starts a new incarnation: its epoch is persisted before it is
// returned (and before any datagram carries it). On a write error the
// epoch is still returned, with the error: replication goes on, and only
// a restart before the next successful write could reuse a lower epoch.
// At the largest epoch it returns that epoch again with
// ctrel.ErrEpochExhausted (never a smaller one).
func (b *epochBook) next(now time.Time) (uint64, error) {
	e, err := ctrel.NextEpoch(b.own, now.UnixNano())
	if err != nil {
		return b.own, fmt.Errorf("ctsync: %w", err)
	}
	b.own = e
	return b.own, b.store(ownEpochFile, b.own)
}

// raiseOwn records that this node's epochs must exceed e (an epoch used
// by a wrapping sender, or one the peer says it accepted from us). It
// reports whether the book changed.
func (b *epochBook) raiseOwn(e uint64) (bool, error) {
	if e <= b.own {
		return false, nil
	}
	b.own = e
	return true, b.store(ownEpochFile, e)
}

// raisePeer records the highest epoch accepted from the peer.
func (b *epochBook) raisePeer(e uint64) error {
	if e <= b.peer {
		return nil
	}
	b.peer = e
	return b.store(peerEpochFile, e)
}

func (b *epochBook) store(name string, v uint64) error {
	if err := atomicfile.Write(filepath.Join(b.dir, name), []byte(strconv.FormatUint(v, 10)+"\n"), 0o600, "."+name+".tmp*"); err != nil {
		return fmt.Errorf("ctsync: write %s: %w", name, err)
	}
	return nil
}
