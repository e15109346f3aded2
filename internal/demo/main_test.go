package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestFlagsRejected covers the checks done before anything is built: a bad
// flag exits 2 with a message and never touches the network.
func TestFlagsRejected(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--interval", "5ms"}, "outside 10ms .. 40.95s"},
		{[]string{"--interval", "41s"}, "outside 10ms .. 40.95s"},
		{[]string{"--bogus"}, "flag provided but not defined"},
	} {
		var out, errOut bytes.Buffer
		if code := run(tc.args, &out, &errOut); code != 2 {
			t.Errorf("run(%q) = %d, want 2", tc.args, code)
		}
		if !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("run(%q) stderr = %q, want it to mention %q", tc.args, errOut.String(), tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("run(%q) wrote to stdout: %q", tc.args, out.String())
		}
	}
}

func TestIndentAndTail(t *testing.T) {
	for _, tc := range []struct {
		name, got, want string
	}{
		{"indent", indent("a\nb\n"), "    a\n    b\n"},
		{"indent empty", indent("\n"), ""},
		{"tail", tail("1\n2\n3\n", 2), "2\n3"},
		{"tail short", tail("1\n", 5), "1"},
	} {
		if diff := cmp.Diff(tc.want, tc.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestSettleTimeout(t *testing.T) {
	if got, want := settleTimeout(time.Second), 9*time.Second; got != want {
		t.Errorf("settleTimeout(1s) = %v, want %v", got, want)
	}
}
