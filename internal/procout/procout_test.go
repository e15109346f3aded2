package procout

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCaptureKeepsTheFirstN(t *testing.T) {
	c := &Capture{N: 5}
	for _, w := range []string{"ab", "cdef", "ghij"} {
		if n, err := fmt.Fprint(c, w); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want %d, nil (the rest is dropped, not refused)", w, n, err, len(w))
		}
	}
	if diff := cmp.Diff("abcde", string(c.Bytes())); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
	c.Clear()
	if len(c.Bytes()) != 0 {
		t.Errorf("after Clear: %q", c.Bytes())
	}
}

func TestFirstLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "",
		"one":                       "one",
		"one\ntwo":                  "one",
		"\n\n  panic: boom  \ngoro": "panic: boom",
		strings.Repeat("x", 3):      "xxx",
	} {
		if diff := cmp.Diff(want, FirstLine(in)); diff != "" {
			t.Errorf("FirstLine(%q) (-want +got):\n%s", in, diff)
		}
	}
	c := &Capture{N: 64}
	fmt.Fprint(c, "Error: could not process rule\n  detail")
	if got := c.FirstLine(); got != "Error: could not process rule" {
		t.Errorf("Capture.FirstLine = %q", got)
	}
}
