package ident

import (
	"errors"
	"strings"
	"testing"
)

func TestUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"alice", true},
		{"Bob_2-x", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"a.b", false},
		{"x>", false},
		{"*", false},
		{"a b", false},
		{" ", false},
		{"tab\t", false},
		{"ünï", false},
		{"a/b", false},
		{"../x", false},
	}
	for _, tt := range tests {
		err := User(tt.in)
		if got := err == nil; got != tt.want {
			t.Errorf("User(%q) = %v, want valid=%v", tt.in, err, tt.want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("User(%q) error %v does not wrap ErrInvalid", tt.in, err)
		}
	}
}

func TestCID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"c1", true},
		{"with space and ünicode ✓", true},
		{strings.Repeat("é", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"new\nline", false},
		{"nul\x00", false},
		{string([]byte{0xff, 0xfe}), false},
	}
	for _, tt := range tests {
		if got := CID(tt.in) == nil; got != tt.want {
			t.Errorf("CID(%q) valid = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestTokenFrom(t *testing.T) {
	for in, want := range map[string]string{
		"gw-1":                  "gw-1",
		"host.example.com":      "host_example_com",
		"":                      "_",
		"a b*c>":                "a_b_c_",
		strings.Repeat("x", 70): strings.Repeat("x", 64),
	} {
		if got := TokenFrom(in); got != want || !ValidToken(got) {
			t.Errorf("TokenFrom(%q) = %q, want %q (a valid token)", in, got, want)
		}
	}
}
