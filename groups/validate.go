package groups

import (
	"crypto/rand"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jetchat/jetchat/internal/ident"
)

// maxIDLen is the longest group id accepted.
const maxIDLen = 64

// newID returns a fresh group id: "g" and 26 characters of [A-Z2-7] carrying
// 128 random bits.
func newID() string { return "g" + rand.Text() }

// ValidID reports whether id has the shape of a group id: "g" followed by
// 1 to 63 ASCII letters or digits. Only such ids reach SQL and subjects.
func ValidID(id string) bool {
	if len(id) < 2 || len(id) > maxIDLen || id[0] != 'g' {
		return false
	}
	for i := 1; i < len(id); i++ {
		b := id[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9') {
			return false
		}
	}
	return true
}

// checkName returns name without surrounding white space, or an error
// wrapping ErrBadName.
func (s *Store) checkName(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: the name is not valid UTF-8", ErrBadName)
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return "", fmt.Errorf("%w: a name is required", ErrBadName)
	}
	if n := utf8.RuneCountInString(name); n > s.cfg.MaxNameLen {
		return "", fmt.Errorf("%w: %d characters, at most %d allowed", ErrBadName, n, s.cfg.MaxNameLen)
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", fmt.Errorf("%w: control characters are not allowed", ErrBadName)
	}
	return name, nil
}

// checkUsers validates a list of users to add: no more than a whole group
// (ErrTooMany), each a valid user id, none twice (ErrBadUsers). It returns
// the list without skip (a creator may name itself).
func (s *Store) checkUsers(users []string, skip string) ([]string, error) {
	if len(users) > s.cfg.MaxMembers {
		return nil, fmt.Errorf("%w: a group has at most %d members, %d users were given", ErrTooMany, s.cfg.MaxMembers, len(users))
	}
	out := make([]string, 0, len(users))
	seen := make(map[string]struct{}, len(users))
	for _, u := range users {
		if err := ident.User(u); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrBadUsers, strings.TrimSuffix(err.Error(), ": "+ident.ErrInvalid.Error()))
		}
		if _, dup := seen[u]; dup {
			return nil, fmt.Errorf("%w: user %q is listed more than once", ErrBadUsers, u)
		}
		seen[u] = struct{}{}
		if u != skip {
			out = append(out, u)
		}
	}
	return out, nil
}

// checkSize refuses a group that would have n members.
func (s *Store) checkSize(n int) error {
	if n > s.cfg.MaxMembers {
		return fmt.Errorf("%w: a group has at most %d members, this one would have %d", ErrTooMany, s.cfg.MaxMembers, n)
	}
	return nil
}
