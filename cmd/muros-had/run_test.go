package main

import "testing"

func TestSpareProcs(t *testing.T) {
	for _, tc := range []struct {
		env    string
		def    int
		want   int
		wantOK bool
	}{
		{"", 2, 3, true},
		{"", 1, 2, true},
		{"", 16, 17, true},
		{"2", 2, 0, false}, // the operator's choice stands
		{"1", 8, 0, false},
	} {
		got, ok := spareProcs(tc.env, tc.def)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("spareProcs(%q, %d) = %d, %v; want %d, %v", tc.env, tc.def, got, ok, tc.want, tc.wantOK)
		}
	}
}
