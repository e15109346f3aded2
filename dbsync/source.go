package dbsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
)

// source reads the master's replicated files and turns differences from the
// peer's known state into batch entries.
type source struct {
	roots   []Path
	exclude []string
	cache   *hashCache
	sqlite3 string
	start   func(*exec.Cmd) error // starts the sqlite3 CLI
	tmpDir  string
}

// localState is one file as the master would ship it now.
type localState struct {
	FileState
	mtime  int64 // nanoseconds since the Unix epoch
	sqlite bool
	data   []byte // nil when the state came from the cache
}

// read returns the shippable state of a local file: a consistent snapshot
// for an SQLite database, the bytes otherwise. withData=false may answer
// from the hash cache. ids names the owner.
func (s *source) read(ctx context.Context, wire, local string, withData bool, ids *accounts) (localState, error) {
	f, err := os.Open(local)
	if err != nil {
		return localState{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return localState{}, err
	}
	if !fi.Mode().IsRegular() {
		return localState{}, fs.ErrNotExist
	}
	mode := uint32(fi.Mode().Perm())
	owner := ids.owner(fi)
	mtime := fi.ModTime().UnixNano()
	if isSQLite(f) {
		k := keyOf(fi)
		var wal statKey
		if wfi, err := os.Stat(local + "-wal"); err == nil {
			wal = keyOf(wfi)
		}
		if h, ok := s.cache.get(local, k, wal); ok && !withData {
			return localState{FileState: FileState{Path: wire, Size: h.size, SHA256: hex.EncodeToString(h.sum[:]), Mode: mode, Owner: owner}, mtime: mtime, sqlite: true}, nil
		}
		data, err := sqliteSnapshot(ctx, s.start, s.sqlite3, local, s.tmpDir)
		if err != nil {
			return localState{}, err
		}
		sum := sha256.Sum256(data)
		s.cache.put(local, cachedHash{key: k, wal: wal, sum: sum, size: int64(len(data))})
		return localState{FileState: FileState{Path: wire, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Mode: mode, Owner: owner}, mtime: mtime, sqlite: true, data: data}, nil
	}
	if !withData {
		sum, size, err := hashFile(s.cache, local)
		if err != nil {
			return localState{}, err
		}
		return localState{FileState: FileState{Path: wire, Size: size, SHA256: hex.EncodeToString(sum[:]), Mode: mode, Owner: owner}, mtime: mtime}, nil
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return localState{}, fmt.Errorf("read %s: %w", local, err)
	}
	sum := sha256.Sum256(data)
	return localState{FileState: FileState{Path: wire, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Mode: mode, Owner: owner}, mtime: mtime, data: data}, nil
}

// manifest is the master's view for anti-entropy: SQLite files are
// represented by the hash of their snapshot.
func (s *source) manifest(ctx context.Context) (map[string]FileState, error) {
	out := map[string]FileState{}
	ids := newAccounts()
	err := walkRoots(s.roots, s.exclude, func(root *Path, rel, local string, fi fs.FileInfo) error {
		w := wirePath(root, rel)
		st, err := s.read(ctx, w, local, false, ids)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out[w] = st.FileState
		return nil
	})
	return out, err
}

// entry returns what to send for wire path w given the peer's state of it
// (nil: the peer does not have it). ok=false means the peer is up to date.
// next is the peer's state after the entry applies (nil after a delete).
// owners: the peer reads batch version 2, so a different owner is a
// difference too (sameState). ids names the owner.
func (s *source) entry(ctx context.Context, w string, peer *FileState, owners bool, ids *accounts) (e Entry, next *FileState, ok bool, err error) {
	rp, err := resolveWirePath(s.roots, w)
	if err != nil {
		return Entry{}, nil, false, err
	}
	local := rp.local()
	st, err := s.read(ctx, w, local, true, ids)
	if errors.Is(err, fs.ErrNotExist) {
		if peer == nil {
			return Entry{}, nil, false, nil
		}
		return Entry{Op: OpDelete, Path: w}, nil, true, nil
	}
	if err != nil {
		return Entry{}, nil, false, err
	}
	if peer != nil && sameState(st.FileState, *peer, owners) {
		return Entry{}, peer, false, nil
	}
	var sum [32]byte
	hex.Decode(sum[:], []byte(st.SHA256))
	e = Entry{Op: OpPut, Path: w, Mode: st.Mode, SHA256: sum, Owner: st.Owner, MTime: st.mtime, Data: st.data}
	if st.sqlite {
		e.Flags = FlagSQLite
	}
	// Prefix-unchanged growth (Kea's memfile lease CSV): ship only the tail,
	// after checking that the prefix the peer holds is still ours. An owner
	// that differs is no obstacle: the append is staged as a new file that
	// gets the entry's owner like a put.
	if !st.sqlite && peer != nil && peer.Mode == st.Mode && peer.Size > 0 && peer.Size < st.Size {
		prefix := sha256.Sum256(st.data[:peer.Size])
		if hex.EncodeToString(prefix[:]) == peer.SHA256 {
			e.Op = OpAppend
			e.Offset = uint64(peer.Size)
			e.PrefixSHA256 = prefix
			e.Data = st.data[peer.Size:]
		}
	}
	fs := st.FileState
	return e, &fs, true, nil
}
