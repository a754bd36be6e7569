package groups

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// The Store that makes a change drops its own cache entry before returning,
// whether or not the announcement ever reaches it.
func TestWriterDropsItsOwnEntry(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ns := natstest.RunJetStream(t)
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, natsx.MsgsStream(natsx.DefaultSettings())); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{}, pool, nc, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Live, but deaf: subscribed to a subject no announcement uses.
	sub, err := nc.Subscribe("nothing.here", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	s.sub = sub
	s.cache.setOn(true)

	g, err := s.Create(ctx, "alice", "Team", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if ok, err := s.IsMember(ctx, g.ID, u); !ok || err != nil {
			t.Fatalf("IsMember(%s) = %v, %v", u, ok, err)
		}
	}
	// The entry is cached: a change behind the Store's back is not seen...
	if _, err := pool.Exec(ctx, `DELETE FROM group_members WHERE group_id = $1 AND user_id = 'carol'`, g.ID); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.IsMember(ctx, g.ID, "carol"); !ok {
		t.Fatal("the entry was not cached")
	}
	// ...but its own change is, at once.
	if err := s.RemoveMember(ctx, "alice", g.ID, "bob"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if ok, err := s.IsMember(ctx, g.ID, u); ok || err != nil {
			t.Errorf("IsMember(%s) right after the removal = %v, %v; want false", u, ok, err)
		}
	}
	if _, err := s.AddMembers(ctx, "alice", g.ID, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.IsMember(ctx, g.ID, "dave"); !ok || err != nil {
		t.Errorf("IsMember(dave) right after the addition = %v, %v; want true", ok, err)
	}
}
