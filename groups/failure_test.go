package groups_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// unavailable checks that err wraps both ErrUnavailable and chat's.
func unavailable(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, groups.ErrUnavailable) || !errors.Is(err, chat.ErrUnavailable) {
		t.Errorf("%s: error = %v, want ErrUnavailable", what, err)
	}
}

func TestPostgresUnreachable(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, deadPool(t))
	s := f.store(t, groups.Config{QueryTimeout: 3 * time.Second})
	c := ctx(t)
	start := time.Now()
	_, err := s.Create(c, "alice", "Team", []string{"bob"})
	unavailable(t, "Create", err)
	_, err = s.Get(c, "alice", "gSOME")
	unavailable(t, "Get", err)
	_, err = s.List(c, "alice")
	unavailable(t, "List", err)
	_, err = s.AddMembers(c, "alice", "gSOME", []string{"bob"})
	unavailable(t, "AddMembers", err)
	unavailable(t, "RemoveMember", s.RemoveMember(c, "alice", "gSOME", "bob"))
	_, err = s.IsMember(c, "gSOME", "bob")
	unavailable(t, "IsMember", err)
	_, err = s.Members(c, "gSOME")
	unavailable(t, "Members", err)
	_, err = s.MembersAt(c, "gSOME", 1)
	unavailable(t, "MembersAt", err)
	_, err = s.WasMember(c, "gSOME", "bob", 1)
	unavailable(t, "WasMember", err)
	_, err = s.Memberships(c, "bob", 0)
	unavailable(t, "Memberships", err)
	// Refusals that need no database still come first.
	if _, err := s.Create(c, "alice", "", nil); !errors.Is(err, groups.ErrBadName) {
		t.Errorf("Create without a name: %v, want ErrBadName", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("failing calls took %v", d)
	}
	// Nothing reached the log: a change starts in Postgres.
	if info, err := f.stream.Info(c); err != nil || info.State.Msgs != 0 {
		t.Errorf("message log holds %v records, %v; want none", info.State.Msgs, err)
	}
}

// TestSchemaNotMadeYet: a node serves before its migrations have run (they
// run in the background at start); group calls are then unavailable, to be
// retried, not internal errors.
func TestSchemaNotMadeYet(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(ctx(t), pgtest.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := newFixtureOn(t, pool)
	s := f.store(t, groups.Config{})
	c := ctx(t)
	_, err = s.Create(c, "alice", "Team", []string{"bob"})
	unavailable(t, "Create", err)
	_, err = s.List(c, "alice")
	unavailable(t, "List", err)
	_, err = s.IsMember(c, "gSOME", "bob")
	unavailable(t, "IsMember", err)
	_, err = s.Memberships(c, "bob", 0)
	unavailable(t, "Memberships", err)
}

func TestCacheAnswersWhilePostgresIsDown(t *testing.T) {
	t.Parallel()
	pool, proxy := proxiedPool(t)
	f := newFixtureOn(t, pool)
	// A short TTL: the entries are no longer trusted when Postgres goes away,
	// and are served anyway.
	s := f.store(t, groups.Config{QueryTimeout: 2 * time.Second, CacheTTL: 50 * time.Millisecond})
	c := ctx(t)
	g, err := s.Create(c, "alice", "Team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Create(c, "alice", "Other", []string{"carol"})
	if err != nil {
		t.Fatal(err)
	}
	if !isMember(t, s, g.ID, "bob") || isMember(t, s, g.ID, "carol") {
		t.Fatal("membership wrong before the outage")
	}
	proxy.cut()
	time.Sleep(100 * time.Millisecond) // past the TTL
	for _, tc := range []struct {
		user string
		want bool
	}{{"alice", true}, {"bob", true}, {"carol", false}} {
		got, err := s.IsMember(c, g.ID, tc.user)
		if err != nil || got != tc.want {
			t.Errorf("IsMember(%s) with Postgres down = %v, %v; want %v from the cache", tc.user, got, err, tc.want)
		}
	}
	if ms, err := s.Members(c, g.ID); err != nil || show(ms) != "alice:admin bob:member" {
		t.Errorf("Members with Postgres down = %v, %v; want the cached members", ms, err)
	}
	// Nothing cached for the other group.
	_, err = s.IsMember(c, other.ID, "carol")
	unavailable(t, "IsMember of an uncached group", err)
	// Changes fail, and change nothing.
	before := len(f.records(t, g.ID))
	unavailable(t, "RemoveMember", s.RemoveMember(c, "alice", g.ID, "bob"))
	_, err = s.AddMembers(c, "alice", g.ID, []string{"dave"})
	unavailable(t, "AddMembers", err)
	_, err = s.Create(c, "alice", "New", nil)
	unavailable(t, "Create", err)
	if len(f.records(t, g.ID)) != before {
		t.Error("a change that failed in Postgres appended a record")
	}
	if !isMember(t, s, g.ID, "bob") || isMember(t, s, g.ID, "dave") {
		t.Error("a failed change reached the cache")
	}
}

func TestLogUnavailableChangesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.store(t, groups.Config{PublishTimeout: time.Second})
	c := ctx(t)
	g, err := s.Create(c, "alice", "Team", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	if !isMember(t, s, g.ID, "bob") {
		t.Fatal("bob is not a member")
	}
	// The message log disappears: appends fail.
	if err := f.js.DeleteStream(c, natsx.StreamMsgs); err != nil {
		t.Fatal(err)
	}
	_, err = s.Create(c, "alice", "New", nil)
	unavailable(t, "Create", err)
	unavailable(t, "RemoveMember", s.RemoveMember(c, "alice", g.ID, "bob"))
	unavailable(t, "leave", s.RemoveMember(c, "bob", g.ID, "bob"))
	_, err = s.AddMembers(c, "alice", g.ID, []string{"carol"})
	unavailable(t, "AddMembers", err)
	// Adding an existing member records nothing, so it still works.
	if _, err := s.AddMembers(c, "alice", g.ID, []string{"bob"}); err != nil {
		t.Errorf("idempotent AddMembers without a log: %v", err)
	}
	if got := dbMembers(t, f.pool, g.ID); len(got) != 2 || got["alice"] != "admin" || got["bob"] != "member" {
		t.Errorf("members in Postgres = %v, want alice admin, bob member", got)
	}
	var n int
	if err := f.pool.QueryRow(c, `SELECT count(*) FROM groups`).Scan(&n); err != nil || n != 1 {
		t.Errorf("groups in Postgres = %d, %v; want 1", n, err)
	}
	if !isMember(t, s, g.ID, "bob") {
		t.Error("bob lost his membership to a failed removal")
	}
}

func TestRunStopsAndRestarts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s := f.idle(t, groups.Config{})
	for i := range 2 {
		rctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(rctx) }()
		eventually(t, "the cache is on", func() bool { return groups.CacheOn(s) })
		if err := s.Run(rctx); err == nil {
			t.Errorf("round %d: a second concurrent Run succeeded", i)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("round %d: Run = %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Run did not return", i)
		}
		if groups.CacheOn(s) {
			t.Errorf("round %d: the cache is on after Run returned", i)
		}
	}
}
