package groups

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/chat"
)

func members(users ...string) []chat.Member {
	out := make([]chat.Member, len(users))
	for i, u := range users {
		out[i] = chat.Member{User: u, Role: chat.RoleMember}
	}
	return out
}

func TestCacheIsBoundedByMembers(t *testing.T) {
	t.Parallel()
	c := newCache(10, time.Minute)
	c.setOn(true)
	at := time.Now()
	put := func(group string, users ...string) {
		t.Helper()
		if !c.put(newEntry(group, members(users...), 0, at), c.stamp(group)) {
			t.Fatalf("put(%s) refused without an invalidation", group)
		}
	}
	put("ga", "u1", "u2", "u3", "u4")
	put("gb", "u1", "u2", "u3", "u4")
	put("gc") // no members: counts one
	if g, w := c.size(); g != 3 || w != 9 {
		t.Fatalf("size = %d groups, weight %d; want 3, 9", g, w)
	}
	c.get("ga", 0, true, at) // ga is now the most recently used
	put("gd", "u1", "u2", "u3")
	// gb, the least recently used, goes first; then the weight fits.
	for _, tc := range []struct {
		group string
		want  bool
	}{{"ga", true}, {"gb", false}, {"gc", true}, {"gd", true}} {
		if e, _ := c.get(tc.group, 0, true, at); (e != nil) != tc.want {
			t.Errorf("after eviction, cached(%s) = %v, want %v", tc.group, e != nil, tc.want)
		}
	}
	if _, w := c.size(); w > 10 {
		t.Errorf("weight %d over the bound 10", w)
	}
	// Many groups nobody asks about again: memory stays bounded.
	for i := range 1000 {
		put(fmt.Sprintf("g%d", i), "u1", "u2")
	}
	if g, w := c.size(); g != 5 || w != 10 {
		t.Errorf("after 1000 groups, size = %d groups, weight %d; want 5, 10", g, w)
	}
	// A group larger than the whole cache is not kept.
	put("gbig", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11")
	if e, _ := c.get("gbig", 0, true, at); e != nil {
		t.Error("a group over the bound was cached")
	}
	if _, w := c.size(); w > 10 {
		t.Errorf("weight %d over the bound 10", w)
	}
}

func TestCacheRefusesALoadThatRacedAnInvalidation(t *testing.T) {
	t.Parallel()
	c := newCache(100, time.Minute)
	c.setOn(true)
	gen := c.stamp("ga") // a load begins
	c.drop("ga")         // a change commits meanwhile
	if c.put(newEntry("ga", members("bob"), 0, time.Now()), gen) {
		t.Fatal("put accepted a load that began before an invalidation")
	}
	if e, _ := c.get("ga", 0, true, time.Now()); e != nil {
		t.Fatal("a stale load was installed")
	}
	// Loads of other stripes are unaffected (unless they share one).
	if c.stripe("gb") != c.stripe("ga") {
		gen := c.stamp("gb")
		c.drop("ga")
		if !c.put(newEntry("gb", members("bob"), 0, time.Now()), gen) {
			t.Error("an invalidation of ga refused a load of gb")
		}
	}
	// Turning the cache off invalidates every load in progress.
	gen = c.stamp("gc")
	c.setOn(false)
	c.setOn(true)
	if c.put(newEntry("gc", nil, 0, time.Now()), gen) {
		t.Error("put accepted a load that began before the cache was reset")
	}
}

func TestCacheTrust(t *testing.T) {
	t.Parallel()
	c := newCache(100, time.Minute)
	at := time.Now()
	if c.put(newEntry("ga", members("bob"), 7, at), c.stamp("ga")); c.lru.Len() != 0 {
		t.Fatal("an entry was installed while the cache is off")
	}
	c.setOn(true)
	c.put(newEntry("ga", members("bob"), 7, at), c.stamp("ga"))
	for _, tc := range []struct {
		name  string
		epoch uint64
		live  bool
		now   time.Time
		fresh bool
	}{
		{"same epoch, live, young", 7, true, at.Add(time.Second), true},
		{"after a reconnect or a drop", 8, true, at.Add(time.Second), false},
		{"not subscribed or disconnected", 7, false, at.Add(time.Second), false},
		{"older than the TTL", 7, true, at.Add(time.Minute), false},
	} {
		e, fresh := c.get("ga", tc.epoch, tc.live, tc.now)
		if e == nil || fresh != tc.fresh {
			t.Errorf("%s: get = %v, fresh %v; want the entry, fresh %v", tc.name, e != nil, fresh, tc.fresh)
		}
	}
	e, _ := c.get("ga", 7, true, at)
	if !e.has("bob") || e.has("bo") || e.has("carol") {
		t.Errorf("has: bob %v, bo %v, carol %v; want true, false, false", e.has("bob"), e.has("bo"), e.has("carol"))
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for i := 0; i < 100; i++ {
		if id := newID(); !ValidID(id) {
			t.Fatalf("newID() = %q is not a ValidID", id)
		}
	}
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"gABC234", true},
		{"gabc", true},
		{"g", false},
		{"", false},
		{"xABC", false},
		{"gA.B", false},
		{"gA*", false},
		{"gA>", false},
		{"gA-B", false},
		{"gA_B", false},
		{"g" + string(make([]byte, 63)), false},
		{"g" + "A123456789012345678901234567890123456789012345678901234567890AB", true},
		{"g" + "A123456789012345678901234567890123456789012345678901234567890ABC", false},
	} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}
