package groups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/jetchat/jetchat/internal/natsx"
)

// Store is group membership in Postgres, with a cache of current
// memberships kept fresh by change announcements on NATS.
type Store struct {
	cfg     Config
	pool    *pgxpool.Pool
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	cache   *cache
	flights singleflight.Group // cache loads, by group

	mu  sync.Mutex
	sub *nats.Subscription // while Run runs

	// afterAppend, set by tests, runs between the log append of a change
	// and its commit.
	afterAppend func(group string, seq uint64)
}

// New returns a Store on pool (a database migrated with package pg), nc and
// js (where the message log, stream natsx.StreamMsgs, exists). It connects to
// nothing; it returns an error only for a bad configuration.
func New(cfg Config, pool *pgxpool.Pool, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) (*Store, error) {
	if pool == nil || nc == nil || js == nil {
		return nil, errors.New("groups: New needs a Postgres pool, a NATS connection and JetStream")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Store{
		cfg:   cfg,
		pool:  pool,
		nc:    nc,
		js:    js,
		log:   log.With("component", "groups"),
		cache: newCache(cfg.CacheMembers, cfg.CacheTTL),
	}, nil
}

// Run subscribes to the change announcements of all groups and serves
// lookups from the cache until ctx ends; then it unsubscribes, empties the
// cache and returns nil. It returns an error when it cannot subscribe, or
// when it is already running.
func (s *Store) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.sub != nil {
		s.mu.Unlock()
		return errors.New("groups: Run is already running")
	}
	sub, err := s.nc.Subscribe(natsx.GroupsChangedPrefix+"*", s.onChanged)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("groups: subscribe to membership changes: %w", err)
	}
	// A burst of changes must not be dropped; should it be, the epoch moves
	// and every entry is reloaded.
	if err := sub.SetPendingLimits(1<<20, 64<<20); err != nil {
		s.log.Warn("set pending limits of the change subscription", "err", err)
	}
	s.sub = sub
	s.mu.Unlock()

	// Entries are trusted only once the server knows the subscription. If
	// the flush fails the connection is down or reconnecting, and the epoch
	// (which counts reconnects) keeps earlier entries untrusted.
	fctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	if err := s.nc.FlushWithContext(fctx); err != nil && ctx.Err() == nil {
		s.log.Warn("flush the change subscription", "err", err)
	}
	cancel()
	s.cache.setOn(true)
	s.log.Debug("membership cache on")

	<-ctx.Done()

	s.cache.setOn(false)
	s.mu.Lock()
	s.sub = nil
	s.mu.Unlock()
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		s.log.Warn("unsubscribe from membership changes", "err", err)
	}
	return nil
}

// epoch identifies a period during which no announcement can have been
// missed: it moves with every NATS reconnect and every dropped
// announcement. live is false when announcements are not flowing at all.
func (s *Store) epoch() (epoch uint64, live bool) {
	s.mu.Lock()
	sub := s.sub
	s.mu.Unlock()
	if sub == nil || !s.nc.IsConnected() {
		return 0, false
	}
	dropped, err := sub.Dropped()
	if err != nil {
		return 0, false
	}
	return s.nc.Stats().Reconnects + uint64(dropped), true
}

// Statements taking a group's change lock: exclusive by changes, shared by
// the readers of log positions. Its keys are 0x67727073 ("grps") and the
// hash of the group id; a hash collision only makes two groups' changes wait
// for each other.
const (
	sqlLockChange = `SELECT pg_advisory_xact_lock(1735553139, hashtext($1))`
	sqlLockRead   = `SELECT pg_advisory_xact_lock_shared(1735553139, hashtext($1))`
)

// beginChange starts the transaction of a change of group, holding the
// group's change lock until it ends.
func (s *Store) beginChange(ctx context.Context, group string) (pgx.Tx, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, sqlLockChange, group); err != nil {
		tx.Rollback(ctx)
		return nil, err
	}
	return tx, nil
}

// now is the server clock, truncated to what Postgres keeps.
func now() time.Time { return time.Now().Truncate(time.Microsecond) }
