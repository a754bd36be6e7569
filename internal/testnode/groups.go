package testnode

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetchat/jetchat/groups"
)

// PostgresGroups is an Options.Groups: the node's group membership is a
// groups.Store on pool, configured by cfg, running until the test ends.
// When store is not nil, it is set to the store.
func PostgresGroups(pool *pgxpool.Pool, cfg groups.Config, store **groups.Store) func(testing.TB, Wiring) Groups {
	return func(t testing.TB, w Wiring) Groups {
		s, err := groups.New(cfg, pool, w.NC, w.JS, w.Log)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		if store != nil {
			*store = s
		}
		return s
	}
}
