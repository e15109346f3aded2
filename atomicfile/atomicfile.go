// Package atomicfile replaces a file so that a crash at any moment leaves
// the old content or the new, never a part: the data goes to a temporary
// file in the same directory, is synced, renamed over the target, and the
// directory is synced so the rename itself survives a power loss
// (rename(2), fsync(2)). The daemon's state files (AH and conntrack
// epochs, maintenance flag, DB sync journal and revision, TLS identity)
// and the rendered keepalived configuration are written with it.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode mode. The temporary file is created
// in path's directory from pattern (os.CreateTemp; its "*" becomes a random
// string): callers that clean up after a crash recognise their leftovers by
// it.
func Write(path string, data []byte, mode fs.FileMode, pattern string) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: ENOENT, ignored
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("atomicfile: %s: %w", path, err)
	}
	return nil
}

// SyncDir makes the entries of dir (a rename, a removal) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
