package ctsync

import (
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/muros/muros-had/ctsync/ctwire"
)

// TestReplayToFreshBackupInsertsNothing: authentic datagrams (right key)
// of an older incarnation and of one that never answered the backup's
// nonce, sent to a backup that just started (its state directory
// remembers the peer's epoch 5000), insert nothing; both are counted.
func TestReplayToFreshBackupInsertsNothing(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	state := filepath.Join(os.TempDir(), "ctsync-lab-"+b.Name)
	must(t, os.MkdirAll(state, 0o700))
	must(t, os.WriteFile(filepath.Join(state, peerEpochFile), []byte(strconv.Itoa(5000)+"\n"), 0o600))
	backup := startNode(t, b, false, nil)
	var conn net.PacketConn
	must(t, a.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", "10.99.0.1:0")
		return err
	}))
	defer conn.Close()
	f := ctwire.Flow{Op: ctwire.OpUpdate, Proto: 6, Status: 6, Timeout: 600,
		Orig:   ctwire.Tuple{Src: netip.MustParseAddr("10.66.0.1"), Dst: netip.MustParseAddr("198.51.100.66"), SrcPort: 6666, DstPort: 443},
		Reply:  ctwire.Tuple{Src: netip.MustParseAddr("198.51.100.66"), Dst: netip.MustParseAddr("10.66.0.1"), SrcPort: 443, DstPort: 6666},
		HasTCP: true, TCP: ctwire.TCPInfo{State: 3}}
	auth := ctwire.NewAuth(ctwire.DeriveKey([]byte(labPassword)))
	for _, ep := range []uint64{4000, 6000} { // stale, unverified
		for i, flags := range []uint16{ctwire.FlagBulkBegin | ctwire.FlagBulkEnd | ctwire.FlagBulk, 0} {
			h := ctwire.Header{Type: ctwire.TypeData, Flags: flags, Epoch: ep, Seq: uint32(1 + i)}
			d := ctwire.AppendFlow(ctwire.AppendHeader(nil, &h), &f)
			ctwire.SetPayload(d, 1)
			if _, err := conn.WriteTo(auth.Seal(d), &net.UDPAddr{IP: net.IPv4(225, 0, 0, 50), Port: DefaultPort}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string]uint64{"epoch_stale": 2, "epoch_unverified": 2}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := maps.Clone(backup.s.Status().Rejected)
		maps.DeleteFunc(got, func(k string, _ uint64) bool { _, ok := want[k]; return !ok })
		if cmp.Diff(want, got) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejections (-want +got):\n%s", cmp.Diff(want, got))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(table(t, b)); n != 0 {
		t.Fatalf("replayed datagrams inserted %d flows", n)
	}
	if st := backup.s.Status(); st.BulkSynced || st.RecordsApplied != 0 {
		t.Fatalf("replayed bulk applied: %+v", st)
	}
}

// TestBackupFilterOnReceive: the master replicates everything, the backup
// excludes 10.2.1.0/24: those flows never reach the backup's kernel (they
// would never be purged there) and are counted; the rest converges.
func TestBackupFilterOnReceive(t *testing.T) {
	leakCheck(t)
	a, b := syncPair(t)
	must(t, a.Do(func() error { return createFlows(0, 300) })) // 256..299: 10.2.1.x
	excluded := netip.MustParsePrefix("10.2.1.0/24")
	backup := startNode(t, b, false, func(c *Config) { c.Filter.Exclude = []netip.Prefix{excluded} })
	startNode(t, a, true, nil)
	waitReady(t, backup, 60*time.Second)
	must(t, a.Do(func() error { return createFlows(300, 320) })) // events, all excluded
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, bk := table(t, a), table(t, b)
		maps.DeleteFunc(m, func(k ctwire.Key, _ view) bool { return excluded.Contains(k.Orig.Src) })
		st := backup.s.Status()
		diff := cmp.Diff(m, bk, addrCmp)
		if diff == "" && len(m) == 256 && st.RecordsFiltered >= 64 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup (filtered %d) differs from the master's selected flows (%d) (-master +backup):\n%.3000s", st.RecordsFiltered, len(m), diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
