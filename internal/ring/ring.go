package ring

import (
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Member is one gateway on the ring.
type Member struct {
	// ID is the gateway's id (--gateway-id): the only input to the hash,
	// so a gateway that restarts under the same id gets the same users.
	ID string
	// URL is the WebSocket URL clients use to reach it (--public-url).
	URL string
}

// Ring is an immutable set of gateways that assigns each user to one of
// them by rendezvous hashing. The zero value and nil are empty rings.
type Ring struct {
	members []Member // sorted by ID, unique
}

// New returns the ring of members. Members with an empty ID are ignored;
// when an ID appears twice, the first one counts. The order of members does
// not matter: two gateways that know the same set build the same ring.
func New(members []Member) *Ring {
	ms := make([]Member, 0, len(members))
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		if m.ID == "" || seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return &Ring{members: ms}
}

// Len is the number of gateways on the ring.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.members)
}

// Members returns the gateways on the ring, sorted by ID.
func (r *Ring) Members() []Member {
	if r == nil {
		return nil
	}
	return slices.Clone(r.members)
}

// Member returns the gateway with id, if it is on the ring.
func (r *Ring) Member(id string) (Member, bool) {
	if r == nil {
		return Member{}, false
	}
	i, ok := slices.BinarySearchFunc(r.members, id, func(m Member, id string) int { return strings.Compare(m.ID, id) })
	if !ok {
		return Member{}, false
	}
	return r.members[i], true
}

// Only reports whether the gateway with id is the ring's one member: it
// owns every user.
func (r *Ring) Only(id string) bool {
	return r.Len() == 1 && r.members[0].ID == id
}

// Owner returns the gateway that owns key (a user id): the member with the
// highest score(member, key). ok is false on an empty ring.
//
// Adding a member moves only the keys it now wins (about 1/N of them), and
// removing one moves only the keys it owned, each to its runner-up.
func (r *Ring) Owner(key string) (m Member, ok bool) {
	if r.Len() == 0 {
		return Member{}, false
	}
	best, bestScore := 0, uint64(0)
	for i := range r.members {
		s := score(r.members[i].ID, key)
		// Ties (practically never) go to the smaller ID: members are sorted.
		if i == 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return r.members[best], true
}

// Equal reports whether r and o hold the same members with the same URLs.
func (r *Ring) Equal(o *Ring) bool {
	if r.Len() != o.Len() {
		return false
	}
	for i := range r.Len() {
		if r.members[i] != o.members[i] {
			return false
		}
	}
	return true
}

// String lists the members' IDs, for logs.
func (r *Ring) String() string {
	ids := make([]string, r.Len())
	for i := range ids {
		ids[i] = r.members[i].ID
	}
	return "[" + strings.Join(ids, " ") + "]"
}

// score is the rendezvous weight of key on member id: XXH64 of
// id, a zero byte, key. Every gateway must compute the same function, so
// changing it is a breaking change for a cluster upgraded gateway by gateway.
func score(id, key string) uint64 {
	// Ids and user ids are at most 64 bytes: the buffer stays on the stack.
	var buf [160]byte
	b := append(buf[:0], id...)
	b = append(b, 0)
	b = append(b, key...)
	return xxhash.Sum64(b)
}
