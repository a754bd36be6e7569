package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/wire"
)

// watched is a user that sessions here follow.
type watched struct {
	user string
	sub  *nats.Subscription // natsx.Presence(user), into Tracker.ch
	refs int                // sessions following, including those still loading
	// subs are the sessions that got their first frame; true marks the
	// user's own sessions, which see its last-seen even when hidden.
	subs map[chat.Frames]bool

	rev     uint64
	rec     record
	loaded  bool
	loading chan struct{} // closed when the running load ends
	loadErr error

	pub, own           view // what was last sent
	pubFrame, ownFrame []byte
}

// follower is a session that follows users.
type follower struct {
	users map[string]struct{}
}

// loadParallel bounds the concurrent reads of one Subscribe.
const loadParallel = 16

// Subscribe sends sub a presence frame for each of users now, then one on
// every change of what viewer may see of them, until Unsubscribe or Forget.
// It returns an error wrapping chat.ErrTooLarge when sub would follow more
// than Config.MaxFollows users (nothing is subscribed then),
// chat.ErrBadRequest for an invalid id, chat.ErrUnavailable when the store
// does not answer.
func (t *Tracker) Subscribe(ctx context.Context, sub chat.Frames, viewer string, users []string) error {
	if sub == nil {
		return fmt.Errorf("presence: %w: no session", chat.ErrBadRequest)
	}
	if err := badUser(viewer); err != nil {
		return err
	}
	seen := make(map[string]struct{}, len(users))
	uniq := users[:0:0]
	for _, u := range users {
		if err := badUser(u); err != nil {
			return err
		}
		if _, dup := seen[u]; !dup {
			seen[u] = struct{}{}
			uniq = append(uniq, u)
		}
	}
	if len(uniq) == 0 {
		return nil
	}
	if err := t.waitReady(ctx); err != nil {
		return err
	}

	// Follow the new users, and find those whose record must be read.
	t.wmu.Lock()
	if t.closed {
		t.wmu.Unlock()
		return fmt.Errorf("presence: %w", chat.ErrClosed)
	}
	f := t.follows[sub]
	fresh := 0
	for _, u := range uniq {
		if f == nil {
			fresh = len(uniq)
			break
		}
		if _, ok := f.users[u]; !ok {
			fresh++
		}
	}
	have := 0
	if f != nil {
		have = len(f.users)
	}
	if have+fresh > t.cfg.MaxFollows {
		t.wmu.Unlock()
		return fmt.Errorf("presence: a session may follow at most %d users; it follows %d and asked for %d more: %w",
			t.cfg.MaxFollows, have, fresh, chat.ErrTooLarge)
	}
	if f == nil {
		f = &follower{users: make(map[string]struct{}, len(uniq))}
		t.follows[sub] = f
	}
	var added []string
	var loads []*watched
	var waits []chan struct{}
	for _, u := range uniq {
		w := t.watched[u]
		if _, ok := f.users[u]; !ok {
			if w == nil {
				w = &watched{user: u, subs: map[chat.Frames]bool{}}
				s, err := t.nc.ChanSubscribe(natsx.Presence(u), t.ch)
				if err != nil {
					t.unfollowLocked(sub, f, added)
					t.wmu.Unlock()
					return fmt.Errorf("presence: follow %s: %w: %v", u, chat.ErrUnavailable, err)
				}
				w.sub = s
				t.watched[u] = w
			}
			w.refs++
			f.users[u] = struct{}{}
			added = append(added, u)
		}
		if !w.loaded {
			if w.loading == nil {
				w.loading = make(chan struct{})
				loads = append(loads, w)
			}
			waits = append(waits, w.loading)
		}
	}
	t.wmu.Unlock()

	// Read the records nobody here followed yet, then wait for them (and
	// for those that another call is reading).
	if len(loads) > 0 {
		var wg sync.WaitGroup
		sem := make(chan struct{}, loadParallel)
		for _, w := range loads {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				t.loadWatched(w)
			})
		}
		wg.Wait()
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			t.unfollow(sub, added)
			return fmt.Errorf("presence: %w: %v", chat.ErrUnavailable, ctx.Err())
		}
	}

	// Send the current state; later changes follow from the dispatcher.
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.follows[sub] != f {
		return nil // Forget ran meanwhile: the session ended
	}
	for _, u := range uniq {
		if w := t.watched[u]; w == nil || !w.loaded {
			var err error
			if w != nil {
				err = w.loadErr
			}
			t.unfollowLocked(sub, f, added)
			return fmt.Errorf("presence: read %s: %w", u, orUnavailable(err))
		}
	}
	for _, u := range uniq {
		w := t.watched[u]
		own := viewer == u
		w.subs[sub] = own
		if own {
			t.deliver(sub, w.ownFrame)
		} else {
			t.deliver(sub, w.pubFrame)
		}
	}
	return nil
}

func orUnavailable(err error) error {
	if err == nil {
		return chat.ErrUnavailable
	}
	return err
}

// loadWatched reads w's record and makes it current unless a newer change
// arrived meanwhile.
func (t *Tracker) loadWatched(w *watched) {
	r, rev, err := t.load(t.ctx, w.user)
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if err != nil {
		w.loadErr = err
	} else {
		if rev > w.rev || w.rev == 0 {
			w.rev, w.rec = rev, r
		}
		w.loaded, w.loadErr = true, nil
		t.refreshLocked(w, time.Now())
	}
	close(w.loading)
	w.loading = nil
}

// Unsubscribe stops the presence frames of users to sub.
func (t *Tracker) Unsubscribe(sub chat.Frames, users []string) {
	t.unfollow(sub, users)
}

// Forget drops all of sub's subscriptions: call it when the session ends.
func (t *Tracker) Forget(sub chat.Frames) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	f := t.follows[sub]
	if f == nil {
		return
	}
	for u := range f.users {
		t.releaseLocked(sub, u)
	}
	delete(t.follows, sub)
}

func (t *Tracker) unfollow(sub chat.Frames, users []string) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if f := t.follows[sub]; f != nil {
		t.unfollowLocked(sub, f, users)
	}
}

func (t *Tracker) unfollowLocked(sub chat.Frames, f *follower, users []string) {
	for _, u := range users {
		if _, ok := f.users[u]; ok {
			delete(f.users, u)
			t.releaseLocked(sub, u)
		}
	}
	if len(f.users) == 0 {
		delete(t.follows, sub)
	}
}

// releaseLocked drops one session's following of u; the last one
// unsubscribes from u's changes.
func (t *Tracker) releaseLocked(sub chat.Frames, u string) {
	w := t.watched[u]
	if w == nil {
		return
	}
	delete(w.subs, sub)
	if w.refs--; w.refs <= 0 {
		w.sub.Unsubscribe()
		delete(t.watched, u)
	}
}

// dispatch applies the live changes of followed users until ctx ends.
func (t *Tracker) dispatch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-t.ch:
			t.onChange(m)
		}
	}
}

func (t *Tracker) onChange(m *nats.Msg) {
	user, ok := strings.CutPrefix(m.Subject, natsx.PresencePrefix)
	if !ok {
		return
	}
	var u update
	if err := json.Unmarshal(m.Data, &u); err != nil {
		t.log.Warn("undecodable presence change", "user_id", user, "err", err)
		return
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	w := t.watched[user]
	if w == nil || u.Rev <= w.rev {
		return // not followed, or older than what we have
	}
	w.rev, w.rec = u.Rev, u.Rec
	if w.loaded {
		t.refreshLocked(w, time.Now())
	}
}

// refreshLocked re-evaluates w and sends a frame to its followers whose
// view changed. Each frame is encoded once for all its recipients.
func (t *Tracker) refreshLocked(w *watched, now time.Time) {
	pub, own := t.views(&w.rec, now)
	pubChanged := w.pubFrame == nil || pub != w.pub
	ownChanged := w.ownFrame == nil || own != w.own
	if pubChanged {
		w.pub, w.pubFrame = pub, frame(w.user, pub)
	}
	if ownChanged {
		w.own, w.ownFrame = own, frame(w.user, own)
	}
	for s, isOwn := range w.subs {
		switch {
		case isOwn && ownChanged:
			t.deliver(s, w.ownFrame)
		case !isOwn && pubChanged:
			t.deliver(s, w.pubFrame)
		}
	}
}

// refreshMentioning re-evaluates the followed users whose record names
// gateway gw.
func (t *Tracker) refreshMentioning(gw string) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	now := time.Now()
	for _, w := range t.watched {
		if w.loaded && w.rec.mentions(gw) {
			t.refreshLocked(w, now)
		}
	}
}

// refreshAll re-evaluates every followed user.
func (t *Tracker) refreshAll() {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	now := time.Now()
	for _, w := range t.watched {
		if w.loaded {
			t.refreshLocked(w, now)
		}
	}
}

func (t *Tracker) deliver(s chat.Frames, b []byte) {
	if !s.Deliver(b) {
		t.dropped.Add(1)
		t.log.Debug("presence frame dropped: session queue full")
	}
}

func frame(user string, v view) []byte {
	b, _ := json.Marshal(wire.Presence{Type: wire.TypePresence, User: user, Online: v.online, LastSeen: v.lastSeen})
	return b
}

// Resync reads again the records of every followed user, in the background.
// Call it when NATS reports a reconnect or a slow consumer: live changes may
// have been lost meanwhile.
func (t *Tracker) Resync() {
	t.wmu.Lock()
	if t.closed {
		t.wmu.Unlock()
		return
	}
	users := make([]string, 0, len(t.watched))
	for u, w := range t.watched {
		if w.loaded {
			users = append(users, u)
		}
	}
	t.bg.Add(1)
	t.wmu.Unlock()
	go func() {
		defer t.bg.Done()
		for _, u := range users {
			if t.ctx.Err() != nil {
				return
			}
			r, rev, err := t.load(t.ctx, u)
			if err != nil {
				t.log.Warn("resync presence", "user_id", u, "err", err)
				continue
			}
			t.wmu.Lock()
			if w := t.watched[u]; w != nil && w.loaded && rev > w.rev {
				w.rev, w.rec = rev, r
				t.refreshLocked(w, time.Now())
			}
			t.wmu.Unlock()
		}
	}()
}
