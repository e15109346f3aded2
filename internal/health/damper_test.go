package health

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"
)

func TestDamper(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rise, fall int
		in         string // '+' success, '-' failure
		verdicts   string // verdict after each result: 'u' unknown, 'o' OK, 'f' failing
		changes    int
	}{
		{"first result sets it: ok", 2, 2, "+", "o", 1},
		{"first result sets it: failing", 2, 2, "-", "f", 1},
		{"fall 2", 2, 2, "+--", "oof", 2},
		{"fall 3 one short", 2, 3, "+--+--", "oooooo", 1},
		{"rise 3 one short", 3, 1, "-++", "fff", 1},
		{"rise 3 completes", 3, 1, "-+++", "fffo", 2},
		{"a success resets the fall run", 2, 2, "+-+-+-", "oooooo", 1},
		{"a failure resets the rise run", 2, 2, "-+-+-+", "ffffff", 1},
		{"rise 1 fall 1 follows", 1, 1, "+-+-", "ofof", 4},
		{"recover after rise", 2, 2, "+--++", "ooffo", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Damper{Rise: tc.rise, Fall: tc.fall}
			var got []byte
			changes := 0
			for _, c := range tc.in {
				var ch bool
				d, ch = d.Observe(c == '+')
				if ch {
					changes++
				}
				v := byte('f')
				if d.OK() {
					v = 'o'
				}
				got = append(got, v)
			}
			if diff := cmp.Diff(tc.verdicts, string(got)); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
			if changes != tc.changes {
				t.Errorf("changes = %d, want %d", changes, tc.changes)
			}
		})
	}
}

// TestDamperFlapping: once a verdict is set, input whose runs are each
// shorter than what would change it (rise for successes against a failing
// verdict, fall for failures against an OK one) never changes it.
func TestDamperFlapping(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rise := rapid.IntRange(2, 10).Draw(t, "rise")
		fall := rapid.IntRange(2, 10).Draw(t, "fall")
		first := rapid.Bool().Draw(t, "first")
		d, _ := Damper{Rise: rise, Fall: fall}.Observe(first)
		// The runs alternate, starting against the verdict; a run against
		// it is one short of what would turn it.
		result := !first
		for i, n := range rapid.SliceOfN(rapid.IntRange(1, 10), 1, 50).Draw(t, "runs") {
			if result != first {
				limit := fall
				if result {
					limit = rise
				}
				n = min(n, limit-1)
			}
			for range n {
				var changed bool
				d, changed = d.Observe(result)
				if changed {
					t.Fatalf("run %d (%d of %v, rise %d fall %d) changed the verdict", i, n, result, rise, fall)
				}
			}
			result = !result
		}
		if d.OK() != first {
			t.Fatalf("verdict %v, want %v", d.OK(), first)
		}
	})
}

// TestDamperChangesAfterFullRun: a run of exactly rise (fall) results
// against the verdict changes it, on the last one.
func TestDamperChangesAfterFullRun(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rise := rapid.IntRange(1, 10).Draw(t, "rise")
		fall := rapid.IntRange(1, 10).Draw(t, "fall")
		first := rapid.Bool().Draw(t, "first")
		d, _ := Damper{Rise: rise, Fall: fall}.Observe(first)
		n := fall
		if !first {
			n = rise
		}
		for i := 1; i <= n; i++ {
			var changed bool
			d, changed = d.Observe(!first)
			if changed != (i == n) {
				t.Fatalf("result %d of %d: changed=%v", i, n, changed)
			}
		}
		if d.OK() == first {
			t.Fatal("verdict did not turn")
		}
	})
}
