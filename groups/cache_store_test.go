package groups_test

import (
	"errors"
	"testing"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
)

// isMember asks s and fails the test on an error.
func isMember(t *testing.T, s *groups.Store, group, user string) bool {
	t.Helper()
	ok, err := s.IsMember(ctx(t), group, user)
	if err != nil {
		t.Fatalf("IsMember(%s, %s): %v", group, user, err)
	}
	return ok
}

func TestCacheInvalidationAcrossStores(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.store(t, groups.Config{}) // two nodes on one NATS and one Postgres
	b := f.store(t, groups.Config{})
	before := groups.Invalidations(b, "gANY")
	g, err := a.Create(ctx(t), "alice", "Team", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	// The creation's announcement reaches b when it does: handled after
	// b's reads below, it would empty b's cache before the check that b
	// answers from it.
	eventually(t, "b handles the creation's announcement", func() bool { return groups.Invalidations(b, g.ID) > before })
	for _, s := range []*groups.Store{a, b} {
		for _, tc := range []struct {
			user string
			want bool
		}{{"alice", true}, {"bob", true}, {"carol", true}, {"dave", false}, {"a.b", false}} {
			if got := isMember(t, s, g.ID, tc.user); got != tc.want {
				t.Errorf("IsMember(%s) = %v, want %v", tc.user, got, tc.want)
			}
		}
	}
	if ok, err := b.IsMember(ctx(t), "gNOSUCH", "bob"); ok || err != nil {
		t.Errorf("IsMember of an unknown group = %v, %v; want false, nil", ok, err)
	}
	// b answers from its cache: a change made behind the Stores' back (no
	// announcement) is not seen.
	if _, err := f.pool.Exec(ctx(t), `DELETE FROM group_members WHERE group_id = $1 AND user_id = 'carol'`, g.ID); err != nil {
		t.Fatal(err)
	}
	if !isMember(t, b, g.ID, "carol") {
		t.Fatal("b did not answer from its cache")
	}
	ms, err := b.Members(ctx(t), g.ID)
	if err != nil || show(ms) != "alice:admin bob:member carol:member" {
		t.Fatalf("cached Members = %v, %v", ms, err)
	}
	ms[0].Role = "mangled" // the caller's copy
	if ms, _ := b.Members(ctx(t), g.ID); ms[0].Role != chat.RoleAdmin {
		t.Error("changing the slice Members returned changed the cache")
	}

	// A removal on a is seen by a at once and by b shortly after.
	if err := a.RemoveMember(ctx(t), "alice", g.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	if isMember(t, a, g.ID, "bob") {
		t.Error("the removing Store still counts bob as a member")
	}
	eventually(t, "b sees bob's removal", func() bool { return !isMember(t, b, g.ID, "bob") })
	// b reloaded from Postgres: the change made behind its back shows too.
	if isMember(t, b, g.ID, "carol") {
		t.Error("b's reload missed carol's removal")
	}
	// An addition on b is seen by a (whose entry is warm again).
	if isMember(t, a, g.ID, "dave") {
		t.Fatal("dave is a member before being added")
	}
	if _, err := b.AddMembers(ctx(t), "alice", g.ID, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	if !isMember(t, b, g.ID, "dave") {
		t.Error("the adding Store does not count dave")
	}
	eventually(t, "a sees dave's addition", func() bool { return isMember(t, a, g.ID, "dave") })
	if ms, err := a.Members(ctx(t), g.ID); err != nil || show(ms) != "alice:admin dave:member" {
		t.Errorf("Members on a = %v, %v; want alice:admin dave:member", ms, err)
	}
	// A group created on a and looked up on b before it existed.
	if _, err := b.Members(ctx(t), "gNOTYET"); !errors.Is(err, groups.ErrNoGroup) {
		t.Errorf("Members of an unknown group: %v, want ErrNoGroup", err)
	}
}

func TestCacheIsBoundedOnAStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{CacheMembers: 20})
	var ids []string
	for range 30 {
		g, err := s.Create(ctx(t), "alice", "g", []string{"bob", "carol"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, g.ID)
	}
	for _, id := range ids {
		if !isMember(t, s, id, "bob") {
			t.Fatalf("bob is not a member of %s", id)
		}
	}
	// Unknown groups that strangers ask about are bounded too.
	for i := range 50 {
		if isMember(t, s, "gUNKNOWN"+string(rune('A'+i%26))+string(rune('A'+i/26)), "mallory") {
			t.Fatal("a stranger is a member of an unknown group")
		}
	}
	if n, w := groups.CacheSize(s); w > 20 || n == 0 {
		t.Errorf("cache holds %d groups of weight %d; want some, at most 20", n, w)
	}
}

func TestWithoutRunLookupsGoToPostgres(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.idle(t, groups.Config{})
	g, err := s.Create(ctx(t), "alice", "Team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	if !isMember(t, s, g.ID, "bob") {
		t.Fatal("bob is not a member")
	}
	if _, err := f.pool.Exec(ctx(t), `DELETE FROM group_members WHERE group_id = $1 AND user_id = 'bob'`, g.ID); err != nil {
		t.Fatal(err)
	}
	if isMember(t, s, g.ID, "bob") {
		t.Error("a Store that is not running answered from a cache it cannot keep fresh")
	}
	if n, _ := groups.CacheSize(s); n != 0 {
		t.Errorf("a Store that is not running caches %d groups", n)
	}
}
