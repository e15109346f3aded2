package dbsync

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
)

// FileState is one manifest line: what a node holds at a wire path. Its
// Owner fields appear in the JSON object as "uid", "gid", "user", "group".
type FileState struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lowercase hex
	Mode   uint32 `json:"mode"`   // permission bits
	// Rev is the version stamp of this copy (stamps.go); manifests only.
	Rev uint64 `json:"rev,omitempty"`
	// Adopted: the copy was not made through the pair (stamps.go).
	Adopted bool `json:"adopted,omitempty"`
	Owner
}

// sameState reports whether the peer holds what local describes: content
// and mode, and the owner when owners is set (the peer speaks batch
// version 2; an older peer reports no owner and cannot set one). Pure.
func sameState(local, peer FileState, owners bool) bool {
	if local.Path != peer.Path || local.Size != peer.Size || local.SHA256 != peer.SHA256 || local.Mode != peer.Mode {
		return false
	}
	return !owners || ownerMatches(local.Owner, peer.Owner)
}

// Manifest is the body of GET /api/sync/manifest.
type Manifest struct {
	Node     string `json:"node"`
	BootID   string `json:"boot_id"`
	Revision uint64 `json:"revision"`
	Role     string `json:"role"`
	// BatchVersion is the highest push body version the node reads;
	// absent (0) from a node that only reads version 1.
	BatchVersion uint8       `json:"batch_version,omitempty"`
	Files        []FileState `json:"files"`
	// Stamps: the files carry version stamps and Deleted lists the
	// deletions this node knows of (absent from an older release).
	Stamps  bool        `json:"stamps,omitempty"`
	Deleted []Tombstone `json:"deleted,omitempty"`
}

// peerBatchVersion is the version to push to a peer whose manifest
// announced v. Pure.
func peerBatchVersion(v uint8) uint8 {
	return max(batchVersion1, min(v, BatchVersion))
}

// Diff is what the master must send so the peer matches it.
type Diff struct {
	Changed []string // missing on the peer or different
	Deleted []string // on the peer but not local
}

// diffManifests compares the local state with the peer's (owners: also who
// owns each file, see sameState). Pure.
func diffManifests(local, remote map[string]FileState, owners bool) Diff {
	var d Diff
	for p, l := range local {
		r, ok := remote[p]
		if !ok || !sameState(l, r, owners) {
			d.Changed = append(d.Changed, p)
		}
	}
	for p := range remote {
		if _, ok := local[p]; !ok {
			d.Deleted = append(d.Deleted, p)
		}
	}
	slices.Sort(d.Changed)
	slices.Sort(d.Deleted)
	return d
}

func manifestMap(files []FileState) map[string]FileState {
	m := make(map[string]FileState, len(files))
	for _, f := range files {
		m[f.Path] = f
	}
	return m
}

// statKey identifies one version of a file cheaply; any write changes
// mtime/ctime, and a rename-over changes the inode.
type statKey struct {
	size, mtime, ctime int64
	ino, dev           uint64
}

func keyOf(fi fs.FileInfo) statKey {
	k := statKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ctime = st.Ctim.Nano()
		k.ino = st.Ino
		k.dev = st.Dev
	}
	return k
}

// hashCache remembers file hashes by stat key so manifests do not re-read
// unchanged files.
type hashCache struct {
	mu sync.Mutex
	m  map[string]cachedHash
}

type cachedHash struct {
	key  statKey
	wal  statKey // SQLite only: the -wal sidecar when the hash was taken
	sum  [32]byte
	size int64
}

func newHashCache() *hashCache { return &hashCache{m: map[string]cachedHash{}} }

func (c *hashCache) get(path string, k, wal statKey) (cachedHash, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[path]
	if !ok || h.key != k || h.wal != wal {
		return cachedHash{}, false
	}
	return h, true
}

func (c *hashCache) put(path string, h cachedHash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[path] = h
}

func (c *hashCache) drop(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, path)
}

// hashFile returns the SHA-256 of a regular file, from the cache when its
// stat key is unchanged.
func hashFile(c *hashCache, path string) ([32]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return [32]byte{}, 0, err
	}
	k := keyOf(fi)
	if h, ok := c.get(path, k, statKey{}); ok {
		return h.sum, h.size, nil
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return [32]byte{}, 0, fmt.Errorf("hash %s: %w", path, err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	// Only cache when the file did not change while we read it.
	if fi2, err := f.Stat(); err == nil && keyOf(fi2) == k {
		c.put(path, cachedHash{key: k, sum: sum, size: n})
	}
	return sum, n, nil
}

// walkRoots calls fn for every replicable regular file with its wire path.
// Symlinks, devices and excluded names are skipped: only regular files are
// replicated.
func walkRoots(roots []Path, exclude []string, fn func(root *Path, rel, local string, fi fs.FileInfo) error) error {
	for i := range roots {
		r := &roots[i]
		if !r.Dir {
			fi, err := os.Lstat(r.Local)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				if err := fn(r, "", r.Local, fi); err != nil {
					return err
				}
			}
			continue
		}
		err := filepath.WalkDir(r.Local, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // vanished while walking, or root absent
				}
				return err
			}
			if d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(r.Local, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if excluded(rel, exclude) {
				return nil
			}
			fi, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			return fn(r, rel, p, fi)
		})
		if err != nil {
			return fmt.Errorf("walk %s: %w", r.Local, err)
		}
	}
	return nil
}

// replicaManifest lists files as they are on disk (the backup's view: its
// SQLite files are already snapshots).
func replicaManifest(roots []Path, exclude []string, c *hashCache) ([]FileState, error) {
	var out []FileState
	ids := newAccounts()
	err := walkRoots(roots, exclude, func(root *Path, rel, local string, fi fs.FileInfo) error {
		sum, size, err := hashFile(c, local)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, FileState{Path: wirePath(root, rel), Size: size, SHA256: hex.EncodeToString(sum[:]), Mode: uint32(fi.Mode().Perm()), Owner: ids.owner(fi)})
		return nil
	})
	return out, err
}
