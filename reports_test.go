package main

import "testing"

func TestIsUserID(t *testing.T) {
	for _, tc := range []struct {
		v    any
		id   string
		want bool
	}{
		{"42", "42", true}, {int64(42), "42", true}, {int32(42), "42", true}, {42, "42", true}, {42.0, "42", true},
		{42.5, "42", false}, {"042", "42", false}, {int64(7), "42", false}, {"ann", "ann", true}, {nil, "42", false},
		{map[string]any{"id": "42"}, "42", false},
	} {
		if got := isUserID(tc.v, tc.id); got != tc.want {
			t.Errorf("isUserID(%#v, %q) = %v, want %v", tc.v, tc.id, got, tc.want)
		}
	}
}
