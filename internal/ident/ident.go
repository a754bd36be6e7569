// Package ident validates the identifiers that clients hand to jetchat.
//
// Every id that can end up in a NATS subject, a key-value key, an SQL
// parameter or a URL path passes through here first. The grammar is strict on
// purpose: a user id may contain only ASCII letters, digits, '_' and '-', so
// it can never contain the subject separators '.', '*' or '>' or whitespace.
package ident

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxIDLen is the longest user or device id.
const MaxIDLen = 64

// MaxCIDLen is the longest client-chosen send id, in characters.
const MaxCIDLen = 64

// ErrInvalid is returned (wrapped) for every malformed identifier.
var ErrInvalid = errors.New("invalid id")

// tokenSafe reports whether b may appear in a user or device id.
func tokenSafe(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-'
}

// ValidToken reports whether s matches ^[A-Za-z0-9_-]{1,64}$.
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenSafe(s[i]) {
			return false
		}
	}
	return true
}

// User returns nil when s is a valid user id, and an error wrapping
// ErrInvalid that names the problem otherwise.
func User(s string) error {
	if !ValidToken(s) {
		return fmt.Errorf("user id %q must match ^[A-Za-z0-9_-]{1,64}$: %w", clip(s), ErrInvalid)
	}
	return nil
}

// Device returns nil when s is a valid device id (same grammar as user ids).
func Device(s string) error {
	if !ValidToken(s) {
		return fmt.Errorf("device id %q must match ^[A-Za-z0-9_-]{1,64}$: %w", clip(s), ErrInvalid)
	}
	return nil
}

// CID returns nil when s is a valid client send id: 1 to 64 characters of
// valid UTF-8 with no control characters (it travels in a NATS header).
func CID(s string) error {
	if s == "" {
		return fmt.Errorf("cid is required: %w", ErrInvalid)
	}
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > MaxCIDLen {
		return fmt.Errorf("cid must be 1 to %d characters: %w", MaxCIDLen, ErrInvalid)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("cid must not contain control characters: %w", ErrInvalid)
		}
	}
	return nil
}

// TokenFrom turns s (a host name, say) into a valid token: bytes that may
// not appear in one become '_', and it is cut to MaxIDLen; "" becomes "_".
func TokenFrom(s string) string {
	b := []byte(s[:min(len(s), MaxIDLen)])
	for i, c := range b {
		if !tokenSafe(c) {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// clip shortens s for use in an error message.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
