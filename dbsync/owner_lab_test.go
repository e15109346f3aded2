package dbsync

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// sameAttrs waits for b to hold a's content, owner, mode and mtime.
func sameAttrs(t *testing.T, a, b string) func() error {
	return func() error {
		if err := sameFile(a, b)(); err != nil {
			return err
		}
		fa, err := os.Stat(a)
		if err != nil {
			return err
		}
		fb, err := os.Stat(b)
		if err != nil {
			return err
		}
		if want, got := attrsOfInfo(fa), attrsOfInfo(fb); want != got {
			return fmt.Errorf("%s has %+v, master %+v", b, got, want)
		}
		return nil
	}
}

func attrsOfInfo(fi os.FileInfo) attrs {
	o := newAccounts().owner(fi)
	return attrs{o.UID, o.GID, fi.Mode().Perm(), fi.ModTime().UnixNano()}
}

func chownT(t *testing.T, p string, uid, gid int) {
	t.Helper()
	if err := os.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// A file owned by uid 4242 gid 4243 (numeric: no account is created) with
// mode 0640 arrives on the backup with that owner, mode and mtime; a chown
// and a chmod on the master are replicated; Kea's lease file keeps its
// owner while lines are appended and shipped as appends.
func TestLabPairOwnership(t *testing.T) {
	mustRoot(t)
	a, b := newLabPair(t, pairOptions{})
	src := filepath.Join(a.dbDir(), "objects", "hosts.conf")
	dst := filepath.Join(b.dbDir(), "objects", "hosts.conf")
	writeFile(t, src, "host fw1 { }\n")
	chownT(t, src, 4242, 4243)
	if err := os.Chmod(src, 0o640); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "owner 4242:4243 mode 0640 on the backup", sameAttrs(t, src, dst))
	if at := attrsOf(t, dst); at.UID != 4242 || at.GID != 4243 || at.Mode != 0o640 {
		t.Fatalf("backup file %+v", at)
	}

	// A chown alone (an attribute change, fsnotify Chmod) is replicated.
	chownT(t, src, 4244, 4245)
	waitFor(t, "chown replicated", sameAttrs(t, src, dst))
	if at := attrsOf(t, dst); at.UID != 4244 || at.GID != 4245 {
		t.Fatalf("after chown the backup file is %+v", at)
	}
	// And so is a chmod, and a change of the group only.
	if err := os.Chmod(src, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "chmod replicated", sameAttrs(t, src, dst))
	chownT(t, src, 4244, 4243)
	waitFor(t, "chgrp replicated", sameAttrs(t, src, dst))

	// Kea's lease file: owned by Kea's (here numeric) account, appended to.
	lsrc := filepath.Join(a.keaDir(), "kea-leases4.csv")
	ldst := filepath.Join(b.keaDir(), "kea-leases4.csv")
	writeFile(t, lsrc, "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n")
	chownT(t, lsrc, 4242, 4243)
	waitFor(t, "lease file with Kea's owner", sameAttrs(t, lsrc, ldst))
	appendsBefore := a.node.Status().Stats["entries_sent_append"]
	f, err := os.OpenFile(lsrc, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < 5; i++ {
		fmt.Fprintf(f, "10.10.0.%d,aa:bb:cc:dd:ee:%02x,,3600,%d,1,0,0,host%d,0,,0\n", 100+i, i, 1764050000+i, i)
		waitFor(t, fmt.Sprintf("lease line %d with the owner kept", i), sameAttrs(t, lsrc, ldst))
	}
	if at := attrsOf(t, ldst); at.UID != 4242 || at.GID != 4243 {
		t.Fatalf("lease file on the backup owned by %d:%d after appends, want 4242:4243", at.UID, at.GID)
	}
	waitFor(t, "lines shipped as appends", func() error {
		if n := a.node.Status().Stats["entries_sent_append"] - appendsBefore; n == 0 {
			return fmt.Errorf("no append entries sent: the owner check made every line a whole put")
		}
		return nil
	})
	if n := b.node.Status().Stats["owner_errors"]; n != 0 {
		t.Fatalf("backup counted %d owner errors", n)
	}
	// Nothing left to repair: a full comparison finds no difference (the
	// owner comparison does not flap). The second pass to start proves the
	// first one finished counting.
	repairs := a.node.Status().Stats["anti_entropy_repairs"]
	runs := a.node.Status().Stats["anti_entropy_runs"]
	waitFor(t, "two anti-entropy passes", func() error {
		if n := a.node.Status().Stats["anti_entropy_runs"]; n < runs+2 {
			return fmt.Errorf("%d anti-entropy passes so far", n-runs)
		}
		return nil
	})
	if got := a.node.Status().Stats["anti_entropy_repairs"]; got != repairs {
		t.Fatalf("anti-entropy repaired %d files of an in-sync pair", got-repairs)
	}
}
