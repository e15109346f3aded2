package config

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDBSyncExclude: dbsync.exclude is parsed as given; malformed globs
// are refused, one problem per glob, naming it.
func TestDBSyncExclude(t *testing.T) {
	c := mustParse(t, minimal+"dbsync:\n  exclude: ['kea-dhcp4-fw1.conf', 'local/*.conf', 'nodes/fw1']\n")
	if diff := cmp.Diff([]string{"kea-dhcp4-fw1.conf", "local/*.conf", "nodes/fw1"}, c.DBSync.Exclude); diff != "" {
		t.Errorf("exclude (-want +got):\n%s", diff)
	}
	if c := mustParse(t, minimal); c.DBSync.Exclude != nil {
		t.Errorf("exclude without the key: %q, want nil (the default *.pid only)", c.DBSync.Exclude)
	}
	src := minimal + "dbsync:\n  exclude:\n    - '/etc/kea/x.conf'\n    - 'local/[a'\n    - 'a//b'\n    - '../x'\n    - ''\n    - ok/*.conf\n    - {a: 1}\n"
	_, err := Parse("config.yaml", []byte(src))
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse: %v, want problems", err)
	}
	want := []string{
		`config.yaml:12: dbsync.exclude[0]: "/etc/kea/x.conf": absolute: globs match paths relative to the replicated directory (e.g. local/*.conf)`,
		`config.yaml:13: dbsync.exclude[1]: "local/[a": not a valid glob (path.Match syntax: *, ?, [class], \ escapes)`,
		`config.yaml:14: dbsync.exclude[2]: "a//b": has an empty path element (a trailing or doubled slash)`,
		`config.yaml:15: dbsync.exclude[3]: "../x": has a . or .. element: globs match clean paths below the replicated directory`,
		`config.yaml:16: dbsync.exclude[4]: "": empty glob`,
		`config.yaml:18: dbsync.exclude[6]: must be a single value, not a mapping`,
	}
	if diff := cmp.Diff(want, ps.Strings()); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}
