package dbsync

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// FuzzParsePull: any body is refused with a counted reason and a 4xx, or
// accepted as 1..65535 distinct paths that each resolve under the roots.
func FuzzParsePull(f *testing.F) {
	roots := []Path{{Name: "db", Local: "/var/lib/muros/db", Dir: true}, {Name: "lease", Local: "/var/lib/kea/leases4.csv"}}
	for _, s := range []string{
		`{"paths":["db/conf"]}`, `{"paths":["db/a","db/b/c","lease"]}`, `{"paths":[]}`, `{"paths":["db/a","db/a"]}`,
		`{"paths":["../etc/passwd"]}`, `{"paths":["db/.muros-had-stage-1-0"]}`, `{"paths":["db//x"]}`, `{"paths":["lease/x"]}`,
		`{"paths":null}`, `{}`, `[]`, `{"paths":["db/conf"],"x":1}`, "", `{"paths":["db/a\u0000"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, status, reason, err := parsePull(body, roots)
		if err != nil {
			if reason == "" || status < 400 || status > 499 {
				t.Fatalf("refused with reason %q status %d: %v", reason, status, err)
			}
			return
		}
		if status != http.StatusOK || len(req.Paths) == 0 || len(req.Paths) > maxEntries {
			t.Fatalf("accepted %d paths with status %d", len(req.Paths), status)
		}
		seen := map[string]bool{}
		for _, p := range req.Paths {
			if seen[p] {
				t.Fatalf("accepted %q twice", p)
			}
			seen[p] = true
			if _, err := resolveWirePath(roots, p); err != nil || hasDotDot(p) {
				t.Fatalf("accepted unsafe path %q: %v", p, err)
			}
		}
		// What was accepted encodes back to the same request.
		b, _ := json.Marshal(req)
		if again, _, _, err := parsePull(b, roots); err != nil || len(again.Paths) != len(req.Paths) {
			t.Fatalf("re-encoded request refused: %v", err)
		}
	})
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}
