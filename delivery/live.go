package delivery

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jetchat/jetchat/internal/natsx"
)

// A node receives its online users' live records in one of two ways:
//
//   - one core NATS subscription per online user (live.u.<user>), the
//     default: with several gateways each gets only its own users' records;
//   - one subscription to live.u.* for all of them, while the node is the
//     only gateway and would receive every user's records anyway. It saves
//     the per-user subscription (about 0.8 KiB per online user, in nats.go
//     and in the server) and its setup on every connect; a record for a
//     user who is not online here is dropped by the dispatcher.
//
// A change from one to the other subscribes the new way, flushes it to
// the server and keeps the old one a moment longer
// (Config.LiveSwitchGrace), so every record comes by at least one of
// them. A record that comes by both is dropped by the device as one it
// already has (its sequence is not past the source's last).

// SubscribeAll switches the node to one live subscription for all users
// (all set) or to one per online user, as above. It returns once the old
// subscriptions are gone, Config.LiveSwitchGrace after the new ones are in
// place (sooner only when the service stops: ctx bounds the switch, not
// the grace); on an error the node keeps the way it had. Loads of users
// do not wait for the grace.
func (s *Service) SubscribeAll(ctx context.Context, all bool) error {
	old, err := s.switchLive(ctx, all)
	if err != nil || len(old) == 0 {
		return err
	}
	// The flush proves the server has the new subscriptions, not that it
	// has handed over every record it matched against the old ones just
	// before: keep those a moment longer.
	t := time.NewTimer(s.cfg.LiveSwitchGrace)
	select {
	case <-s.ctx.Done():
	case <-t.C:
	}
	t.Stop()
	for _, sub := range old {
		sub.Unsubscribe()
	}
	return nil
}

// switchLive makes the new subscriptions, flushes them to the server and
// returns the old ones, for the caller to drop.
func (s *Service) switchLive(ctx context.Context, all bool) ([]interface{ Unsubscribe() error }, error) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if all == (s.liveAll != nil) {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	users := s.onlineUsers()
	var old []interface{ Unsubscribe() error }
	if all {
		sub, err := s.nc.ChanSubscribe(natsx.LivePrefix+"*", s.liveCh)
		if err != nil {
			return nil, fmt.Errorf("delivery: subscribe to every user's live records: %w", err)
		}
		if err := s.nc.FlushWithContext(ctx); err != nil {
			sub.Unsubscribe()
			return nil, fmt.Errorf("delivery: subscribe to every user's live records: %w", err)
		}
		s.liveAll = sub
		for _, u := range users {
			if u.sub != nil {
				old = append(old, u.sub)
				u.sub = nil
			}
		}
		s.log.Info("live records: one subscription for all users (the only gateway)", "users", len(users))
		return old, nil
	}
	var made []*userState
	undo := func() {
		for _, u := range made {
			u.sub.Unsubscribe()
			u.sub = nil
		}
	}
	for _, u := range users {
		if u.sub != nil {
			continue
		}
		sub, err := s.nc.ChanSubscribe(natsx.Live(u.id), s.liveCh)
		if err != nil {
			undo()
			return nil, fmt.Errorf("delivery: subscribe to %s's live records: %w", u.id, err)
		}
		u.sub = sub
		made = append(made, u)
	}
	if err := s.nc.FlushWithContext(ctx); err != nil {
		undo()
		return nil, fmt.Errorf("delivery: subscribe to online users' live records: %w", err)
	}
	old = append(old, s.liveAll)
	s.liveAll = nil
	s.log.Info("live records: one subscription per online user", "users", len(users))
	return old, nil
}

// FollowGateways keeps the node on one live subscription for all users
// while alone reports that it is the only gateway, and on one per online
// user otherwise. It checks again whenever the channel from changed is
// closed (take it before calling alone, as ring.Tracker's Changed asks),
// and every few seconds after a failed switch, until ctx ends.
func (s *Service) FollowGateways(ctx context.Context, changed func() <-chan struct{}, alone func() bool) {
	for {
		ch := changed()
		var retry <-chan time.Time
		if err := s.SubscribeAll(ctx, alone()); err != nil && ctx.Err() == nil {
			s.log.Warn("switch live subscriptions; retrying", "err", err)
			retry = time.After(retryLiveSwitch)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-retry:
		}
	}
}

// retryLiveSwitch is how long FollowGateways waits after a failed switch.
const retryLiveSwitch = 2 * time.Second

// subscribeUser gives u a live subscription of its own, unless the node
// has one for all users. It reports whether it made one: the caller must
// then flush the connection before reading the log.
func (s *Service) subscribeUser(u *userState) (bool, error) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.liveAll != nil || u.sub != nil {
		return false, nil
	}
	sub, err := s.nc.ChanSubscribe(natsx.Live(u.id), s.liveCh)
	if err != nil {
		return false, err
	}
	u.sub = sub
	return true, nil
}

// unsubscribeUser drops u's own live subscription, if it has one.
func (s *Service) unsubscribeUser(u *userState) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if u.sub != nil {
		u.sub.Unsubscribe()
		u.sub = nil
	}
}

// onlineUsers returns the users online here, those still loading included.
func (s *Service) onlineUsers() []*userState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Collect(maps.Values(s.users))
}
