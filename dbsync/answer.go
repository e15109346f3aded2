package dbsync

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Reasons an answer from the peer to the master's GET /api/sync/manifest
// or /api/sync/hello is refused (counted in Status.Rejected like the
// requests this node refuses). Each is something no node sends: the
// master stops that comparison instead of acting on it.
const (
	ReasonAnswerDecode = "answer_decode" // not the JSON document expected
	ReasonAnswerPath   = "answer_path"   // a path that is not a clean relative wire path, or listed twice
	ReasonAnswerFile   = "answer_file"   // a negative size, a sha256 that is not 64 lowercase hex digits, a mode beyond 0o777
	ReasonAnswerRole   = "answer_role"   // a role other than master or backup
)

// AnswerError is a refused answer and why.
type AnswerError struct {
	Reason string
	Err    error
}

func (e *AnswerError) Error() string {
	return "peer answer refused (" + e.Reason + "): " + e.Err.Error()
}
func (e *AnswerError) Unwrap() error { return e.Err }

// answerReason is the reason err (from ParseManifest or ParseHello) is
// counted under.
func answerReason(err error) string {
	if ae, ok := errors.AsType[*AnswerError](err); ok {
		return ae.Reason
	}
	return ReasonAnswerDecode
}

func refuse(reason string, format string, args ...any) error {
	return &AnswerError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ParseHello decodes the peer's answer to GET /api/sync/hello.
func ParseHello(b []byte) (Hello, error) {
	var h Hello
	if err := json.Unmarshal(b, &h); err != nil {
		return Hello{}, &AnswerError{Reason: ReasonAnswerDecode, Err: err}
	}
	if err := checkRole(h.Role); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// ParseManifest decodes the peer's answer to GET /api/sync/manifest and
// checks what the master acts on: every file and deletion names a clean
// relative wire path once, every file has a size, a hash and permission
// bits a node can report.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, &AnswerError{Reason: ReasonAnswerDecode, Err: err}
	}
	if err := checkRole(m.Role); err != nil {
		return Manifest{}, err
	}
	seen := make(map[string]bool, len(m.Files)+len(m.Deleted))
	path := func(kind string, i int, p string) error {
		if err := checkWireSyntax(p); err != nil {
			return refuse(ReasonAnswerPath, "%s %d %q: %w", kind, i, p, err)
		}
		if seen[p] {
			return refuse(ReasonAnswerPath, "%s %d %q: listed twice", kind, i, p)
		}
		seen[p] = true
		return nil
	}
	for i := range m.Files {
		f := &m.Files[i]
		if err := path("file", i, f.Path); err != nil {
			return Manifest{}, err
		}
		switch {
		case f.Size < 0:
			return Manifest{}, refuse(ReasonAnswerFile, "file %d %q: size %d", i, f.Path, f.Size)
		case !lowerHex(f.SHA256, 64):
			return Manifest{}, refuse(ReasonAnswerFile, "file %d %q: sha256 %q", i, f.Path, f.SHA256)
		case f.Mode > 0o777:
			return Manifest{}, refuse(ReasonAnswerFile, "file %d %q: mode %#o", i, f.Path, f.Mode)
		}
	}
	for i := range m.Deleted {
		if err := path("deletion", i, m.Deleted[i].Path); err != nil {
			return Manifest{}, err
		}
	}
	return m, nil
}

func checkRole(r string) error {
	if r != roleName(true) && r != roleName(false) {
		return refuse(ReasonAnswerRole, "role %q", r)
	}
	return nil
}

// lowerHex reports whether s is n lowercase hexadecimal digits.
func lowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
