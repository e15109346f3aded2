package dbsync

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var answerReasons = map[string]bool{ReasonAnswerDecode: true, ReasonAnswerPath: true, ReasonAnswerFile: true, ReasonAnswerRole: true}

// encodeAnswer is what the peer's handler writes (writeJSON).
func encodeAnswer(t testing.TB, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkRefusal holds a refused answer to a typed reason.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	var ae *AnswerError
	if !errors.As(err, &ae) || !answerReasons[ae.Reason] || answerReason(err) != ae.Reason {
		t.Fatalf("refused without an answer reason: %v", err)
	}
}

func fuzzManifestSeed(t testing.TB) Manifest {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	return Manifest{
		Node: "fw2", BootID: "9c1b7e0d4f2a6b35", Revision: 41, Role: "backup", BatchVersion: BatchVersion, Stamps: true,
		Files: []FileState{
			{Path: "muros-db/muros.db", Size: 16, SHA256: sum("SQLite format 3\x00"), Mode: 0o640, Rev: 40, Owner: Owner{UID: 0, GID: 107, User: "root", Group: "muros"}},
			{Path: "kea-leases/kea-leases4.csv", Size: 6, SHA256: sum("hello\n"), Mode: 0o644, Rev: 41, Adopted: true, Owner: Owner{UID: 108, GID: 113, User: "_kea", Group: "_kea"}},
		},
		Deleted: []Tombstone{{Path: "muros-db/old.conf", Rev: 39}},
	}
}

// FuzzParseManifest holds the decoder of the peer's manifest to its
// contract: a refusal carries one of the answer reasons; what it accepts
// has a node's role, each path a clean relative wire path listed once,
// each file a size, a lowercase SHA-256 and permission bits a node can
// report; and parse(marshal(m)) = m.
func FuzzParseManifest(f *testing.F) {
	m := fuzzManifestSeed(f)
	f.Add(encodeAnswer(f, m))
	old := m // an older release: no stamps, no batch version, no owners
	old.Stamps, old.BatchVersion, old.Deleted = false, 0, nil
	old.Files = []FileState{{Path: "muros-db/a", Size: 1, SHA256: m.Files[0].SHA256, Mode: 0o600}}
	f.Add(encodeAnswer(f, old))
	f.Add(encodeAnswer(f, Manifest{Node: "fw1", BootID: "00", Role: "master", Files: []FileState{}}))
	f.Add([]byte(`{"role":"backup","files":[{"path":"../../etc/shadow","size":1,"sha256":"` + m.Files[0].SHA256 + `","mode":420}]}`))
	f.Add([]byte(`{"role":"backup","files":[{"path":"db/a","size":-1,"sha256":"AB","mode":4095}]}`))
	f.Add([]byte(`{"role":"backup","files":[],"deleted":[{"path":"db/a","rev":1},{"path":"db/a","rev":2}]}`))
	f.Add([]byte(`{"role":"leader"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseManifest(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if m.Role != "master" && m.Role != "backup" {
			t.Fatalf("accepted role %q", m.Role)
		}
		seen := map[string]bool{}
		for _, p := range append(pathsOf(m.Files), tombPaths(m.Deleted)...) {
			if err := checkWireSyntax(p); err != nil || seen[p] {
				t.Fatalf("accepted path %q (twice: %v): %v", p, seen[p], err)
			}
			seen[p] = true
		}
		for _, f := range m.Files {
			if _, err := hex.DecodeString(f.SHA256); err != nil || len(f.SHA256) != 64 || f.SHA256 != hexLower(f.SHA256) || f.Size < 0 || f.Mode > 0o777 {
				t.Fatalf("accepted file %+v", f)
			}
		}
		again, err := ParseManifest(encodeAnswer(t, m))
		if err != nil {
			t.Fatalf("its own encoding refused: %v", err)
		}
		if d := cmp.Diff(m, again, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("parse(marshal(m)) differs (-first +second):\n%s", d)
		}
	})
}

func pathsOf(fs []FileState) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Path)
	}
	return out
}

func tombPaths(ts []Tombstone) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Path)
	}
	return out
}

func hexLower(s string) string {
	b, _ := hex.DecodeString(s)
	return hex.EncodeToString(b)
}

// FuzzParseHello: a refusal carries one of the answer reasons; what is
// accepted has a node's role and survives parse(marshal(h)).
func FuzzParseHello(f *testing.F) {
	f.Add(encodeAnswer(f, Hello{Node: "fw2", BootID: "9c1b7e0d4f2a6b35", Revision: 41, Role: "backup", Time: time.Date(2026, 12, 7, 5, 0, 0, 123456789, time.UTC)}))
	f.Add(encodeAnswer(f, Hello{Node: "fw1", BootID: "00", Revision: 1<<64 - 1, Role: "master"}))
	f.Add([]byte(`{"node":"fw2","boot_id":"x","revision":1,"role":"backup","time":"2026-12-07T06:00:00+01:00"}`))
	f.Add([]byte(`{"role":"MASTER"}`))
	f.Add([]byte(`{"role":"backup","revision":-1}`))
	f.Add([]byte(`{"role":"backup","time":"yesterday"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := ParseHello(body)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if h.Role != "master" && h.Role != "backup" {
			t.Fatalf("accepted role %q", h.Role)
		}
		b, err := json.Marshal(h)
		if err != nil {
			// A time the decoder took but cannot write back (a year
			// beyond 9999) would be no round trip.
			t.Fatalf("marshal %+v: %v", h, err)
		}
		again, err := ParseHello(b)
		if err != nil {
			t.Fatalf("its own encoding %s refused: %v", b, err)
		}
		if d := cmp.Diff(h, again); d != "" {
			t.Fatalf("parse(marshal(h)) differs (-first +second):\n%s", d)
		}
	})
}
