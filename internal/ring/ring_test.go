package ring_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/jetchat/jetchat/internal/ring"
)

func members(ids ...string) []ring.Member {
	out := make([]ring.Member, len(ids))
	for i, id := range ids {
		out[i] = ring.Member{ID: id, URL: "ws://" + id + "/v1/ws"}
	}
	return out
}

func users(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("user-%d", i)
	}
	return out
}

// owners maps every user to its owner's id.
func owners(r *ring.Ring, us []string) map[string]string {
	out := make(map[string]string, len(us))
	for _, u := range us {
		m, ok := r.Owner(u)
		if !ok {
			panic("empty ring")
		}
		out[u] = m.ID
	}
	return out
}

// TestDistributionAndMovement is the ring test: 3 gateways, 30,000
// users: each owns 33% ± 5%; a 4th joins: about 25% move, at most 30%, all
// of them to the newcomer; one leaves: only its users move.
func TestDistributionAndMovement(t *testing.T) {
	t.Parallel()
	us := users(30000)
	three := ring.New(members("gw-1", "gw-2", "gw-3"))
	before := owners(three, us)
	count := map[string]int{}
	for _, o := range before {
		count[o]++
	}
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		share := float64(count[id]) / float64(len(us))
		if math.Abs(share-1.0/3) > 0.05 {
			t.Errorf("%s owns %.1f%% of the users, want 33%% ± 5%%", id, 100*share)
		}
		t.Logf("3 gateways: %s owns %.2f%%", id, 100*share)
	}

	four := ring.New(members("gw-1", "gw-2", "gw-3", "gw-4"))
	after := owners(four, us)
	moved := 0
	for _, u := range us {
		if before[u] != after[u] {
			moved++
			if after[u] != "gw-4" {
				t.Fatalf("%s moved from %s to %s when gw-4 joined, want only moves to gw-4", u, before[u], after[u])
			}
		}
	}
	share := float64(moved) / float64(len(us))
	t.Logf("gw-4 joins: %.2f%% of the users move", 100*share)
	if share < 0.20 || share > 0.30 {
		t.Errorf("gw-4 joining moved %.1f%% of the users, want about 25%%, at most 30%%", 100*share)
	}

	// gw-2 leaves the four: only its users move, spread over the others.
	left := ring.New(members("gw-1", "gw-3", "gw-4"))
	final := owners(left, us)
	spread := map[string]int{}
	for _, u := range us {
		switch {
		case after[u] == "gw-2":
			if final[u] == "gw-2" {
				t.Fatalf("%s still owned by gw-2 after it left", u)
			}
			spread[final[u]]++
		case final[u] != after[u]:
			t.Fatalf("%s moved from %s to %s when gw-2 left, want only gw-2's users to move", u, after[u], final[u])
		}
	}
	for _, id := range []string{"gw-1", "gw-3", "gw-4"} {
		if spread[id] == 0 {
			t.Errorf("none of gw-2's users went to %s: %v", id, spread)
		}
	}
	t.Logf("gw-2 leaves: its users go to %v", spread)
}

// TestIdenticalEverywhere: the ring depends only on the set of members, not
// on the order a gateway learned them in, and not on URLs.
func TestIdenticalEverywhere(t *testing.T) {
	t.Parallel()
	a := ring.New(members("gw-3", "gw-1", "gw-2"))
	b := ring.New(append(members("gw-2", "gw-3", "gw-1"), ring.Member{ID: "gw-2", URL: "ignored duplicate"}))
	c := ring.New([]ring.Member{{ID: "gw-1"}, {ID: "gw-2"}, {ID: "gw-3"}})
	for _, u := range users(2000) {
		ma, _ := a.Owner(u)
		mb, _ := b.Owner(u)
		mc, _ := c.Owner(u)
		if ma != mb || ma.ID != mc.ID {
			t.Fatalf("Owner(%q) = %v, %v, %v on rings of the same gateways", u, ma, mb, mc)
		}
	}
	if !a.Equal(b) {
		t.Errorf("%v and %v: want Equal", a, b)
	}
	if a.Equal(c) {
		t.Errorf("rings with different URLs are Equal; a URL change must count as a change")
	}
}

// TestFixedOwners pins the hash: gateways of different builds must agree,
// so a change of these answers is a breaking change (see score).
func TestFixedOwners(t *testing.T) {
	t.Parallel()
	r := ring.New(members("gw-1", "gw-2", "gw-3"))
	for _, tc := range []struct{ user, want string }{
		{"alice", "gw-2"},
		{"bob", "gw-3"},
		{"carol", "gw-3"},
		{"dave", "gw-2"},
		{"erin", "gw-1"},
	} {
		if got, _ := r.Owner(tc.user); got.ID != tc.want {
			t.Errorf("Owner(%q) = %s, want %s", tc.user, got.ID, tc.want)
		}
	}
}

func TestEmptyAndSingle(t *testing.T) {
	t.Parallel()
	var nilRing *ring.Ring
	for _, r := range []*ring.Ring{nilRing, ring.New(nil), ring.New([]ring.Member{{ID: ""}})} {
		if m, ok := r.Owner("alice"); ok {
			t.Errorf("empty ring %v: Owner = %v, want none", r, m)
		}
		if r.Len() != 0 {
			t.Errorf("empty ring: Len = %d", r.Len())
		}
		if r.Only("gw-1") {
			t.Errorf("empty ring %v: Only(gw-1) = true", r)
		}
	}
	one := ring.New(members("gw-1"))
	if m, ok := one.Owner("anyone"); !ok || m.ID != "gw-1" || m.URL != "ws://gw-1/v1/ws" {
		t.Errorf("single ring: Owner = %v, %v", m, ok)
	}
	if m, ok := one.Member("gw-1"); !ok || m.ID != "gw-1" {
		t.Errorf("Member(gw-1) = %v, %v", m, ok)
	}
	if _, ok := one.Member("gw-2"); ok {
		t.Errorf("Member(gw-2) found on a ring without it")
	}
	if !one.Only("gw-1") || one.Only("gw-2") {
		t.Errorf("single ring: Only(gw-1) = %v, Only(gw-2) = %v, want true, false", one.Only("gw-1"), one.Only("gw-2"))
	}
	if two := ring.New(members("gw-1", "gw-2")); two.Only("gw-1") || two.Only("gw-2") {
		t.Errorf("ring of two: a member is the only one")
	}
}

func BenchmarkOwner(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("gw-%d", i)
		}
		r := ring.New(members(ids...))
		b.Run(fmt.Sprint(n, "-gateways"), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				r.Owner("user-12345678")
			}
		})
	}
}
