package groups

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
)

// IsMember reports whether user is now a member of group, from the cache
// when it can be trusted (see the package doc). An unknown group, or a
// malformed id, is not an error: the answer is false. Errors wrap
// ErrUnavailable (Postgres does not answer and nothing is cached).
func (s *Store) IsMember(ctx context.Context, group, user string) (bool, error) {
	if !ValidID(group) || !ident.ValidToken(user) {
		return false, nil
	}
	e, err := s.current(ctx, group)
	if err != nil {
		return false, err
	}
	return e.has(user), nil
}

// Members returns the current members of group in join order, from the
// cache like IsMember. The slice is the caller's. Errors wrap ErrNoGroup (no
// such group, or no members left) or ErrUnavailable.
func (s *Store) Members(ctx context.Context, group string) ([]chat.Member, error) {
	if !ValidID(group) {
		return nil, ErrNoGroup
	}
	e, err := s.current(ctx, group)
	if err != nil {
		return nil, err
	}
	if len(e.members) == 0 {
		return nil, ErrNoGroup
	}
	return slices.Clone(e.members), nil
}

// current returns group's current membership: the cached entry when it can
// be trusted, else one loaded from Postgres (shared with concurrent callers),
// else, while Postgres fails, the cached entry however old.
func (s *Store) current(ctx context.Context, group string) (*entry, error) {
	epoch, live := s.epoch()
	cached, fresh := s.cache.get(group, epoch, live, now())
	if fresh {
		return cached, nil
	}
	var err error
	select {
	case r := <-s.flights.DoChan(group, func() (any, error) { return s.load(group) }):
		if r.Err == nil {
			return r.Val.(*entry), nil
		}
		err = r.Err
	case <-ctx.Done():
		err = fmt.Errorf("groups: load members of %s: %w: %w", group, ErrUnavailable, ctx.Err())
	}
	if cached != nil && errors.Is(err, chat.ErrUnavailable) {
		s.log.Debug("membership served from the cache while postgres fails", "group_id", group, "err", err)
		return cached, nil
	}
	return nil, err
}

// load reads group's membership from Postgres and caches it. A load that
// overlaps an invalidation of the group reads again, so that its answer
// never predates a change that was committed before a caller asked. It is
// bounded by QueryTimeout, not by any one caller's context (callers share
// it).
func (s *Store) load(group string) (*entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.QueryTimeout)
	defer cancel()
	for {
		epoch, _ := s.epoch()
		gen := s.cache.stamp(group)
		at := now()
		ms, err := readMembers(ctx, s.pool, group)
		if err != nil {
			return nil, storeErr("load members of "+group, err)
		}
		e := newEntry(group, chatMembers(ms), epoch, at)
		if s.cache.put(e, gen) {
			return e, nil
		}
	}
}
