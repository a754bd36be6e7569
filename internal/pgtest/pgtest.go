// Package pgtest gives each test a throwaway Postgres database, migrated with
// jetchat's migrations and dropped when the test ends.
//
// The server is DATABASE_URL's (any database in it is replaced by a fresh one)
// or postgres://postgres@127.0.0.1:5432. When no server answers, tests skip
// with a clear message, except under CI=true where they fail.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetchat/jetchat/internal/pg"
)

// ServerURL is the URL of the test server's "postgres" database.
func ServerURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		if cfg, err := pgx.ParseConfig(u); err == nil {
			return fmt.Sprintf("postgres://%s@%s:%d/postgres?sslmode=disable", cfg.User, cfg.Host, cfg.Port)
		}
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// NewURL creates an empty database and returns its URL; it is dropped when
// the test ends.
func NewURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Postgres at %s does not answer (CI=true): %v", ServerURL(), err)
		}
		t.Skipf("skipping: Postgres at %s does not answer: %v", ServerURL(), err)
	}
	defer admin.Close(context.Background())
	b := make([]byte, 6)
	rand.Read(b)
	name := "jetchat_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			t.Logf("drop test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	cfg, _ := pgx.ParseConfig(ServerURL())
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
}

// New returns a pool on a fresh database with jetchat's migrations applied.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := NewURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pg.NewPool(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pg.Migrate(ctx, pool, pg.Migrations()); err != nil {
		t.Fatalf("migrate test database: %v", err)
	}
	return pool
}
