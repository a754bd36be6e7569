package pg_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jetchat/jetchat/internal/pg"
	"github.com/jetchat/jetchat/internal/pgtest"
)

func TestEnsureDatabaseAndMigrate(t *testing.T) {
	t.Parallel()
	url := pgtest.NewURL(t)
	// NewURL made the database; drop the name to check creation of a new one.
	missing := strings.Replace(url, "jetchat_test_", "jetchat_test_new_", 1)
	t.Cleanup(func() {
		// dropped by hand: EnsureDatabase created it
		pool, err := pg.NewPool(context.Background(), pgtest.ServerURL())
		if err == nil {
			name := missing[strings.LastIndex(missing, "/")+1 : strings.Index(missing, "?")]
			pool.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			pool.Close()
		}
	})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := pg.EnsureDatabase(ctx, missing); err != nil {
			t.Fatalf("EnsureDatabase #%d: %v", i, err)
		}
	}
	pool, err := pg.NewPool(ctx, missing)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	fsys := fstest.MapFS{
		"0001_a.sql": {Data: []byte("CREATE TABLE a (x int)")},
		"0002_b.sql": {Data: []byte("INSERT INTO a VALUES (1)")},
	}
	// Several nodes migrating at once apply each migration once.
	var wg sync.WaitGroup
	counts := make([]int, 4)
	errs := make([]error, 4)
	for i := range counts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i], errs[i] = pg.Migrate(ctx, pool, fsys)
		}()
	}
	wg.Wait()
	total := 0
	for i := range counts {
		if errs[i] != nil {
			t.Fatalf("Migrate: %v", errs[i])
		}
		total += counts[i]
	}
	if total != 2 {
		t.Errorf("concurrent Migrate applied %d migrations in all, want 2", total)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM a").Scan(&rows); err != nil || rows != 1 {
		t.Errorf("rows in a = %d, %v; want 1 (the insert ran once)", rows, err)
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	fsys := fstest.MapFS{"0100_bad.sql": {Data: []byte("CREATE TABLE ok_then (x int); SELECT nonsense_column FROM nowhere")}}
	if _, err := pg.Migrate(ctx, pool, fsys); err == nil || !strings.Contains(err.Error(), "0100_bad") {
		t.Fatalf("Migrate of a bad file: error = %v, want one naming the file", err)
	}
	var exists bool
	pool.QueryRow(ctx, "SELECT to_regclass('ok_then') IS NOT NULL").Scan(&exists)
	if exists {
		t.Error("a failed migration left a table behind")
	}
}

func TestLoadRejectsBadNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"x.sql", "0001.sql", "00a1_x.sql"} {
		if _, err := pg.Load(fstest.MapFS{name: {Data: []byte("")}}); err == nil {
			t.Errorf("Load(%s) accepted a bad name", name)
		}
	}
	if _, err := pg.Load(fstest.MapFS{"0001_a.sql": {}, "1_b.sql": {}}); err == nil {
		t.Error("Load accepted two files with version 1")
	}
}
