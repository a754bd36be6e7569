package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/registry"
)

// Tracker is the presence service of one gateway: it records the online
// state of the users connected here and sends presence frames to the
// sessions here that follow users. Create it with New and run it with Run.
type Tracker struct {
	cfg  Config
	nc   *nats.Conn
	kv   jetstream.KeyValue
	reg  *registry.Registry
	self registry.Gateway
	log  *slog.Logger

	ctx     context.Context // ends when Run returns
	cancel  context.CancelFunc
	running atomic.Bool
	bg      sync.WaitGroup // Resync goroutines

	writes  atomic.Int64 // KV writes made
	dropped atomic.Int64 // frames a full session queue refused
	recheck atomic.Int64 // ms: re-evaluate followed users then (0: never)

	// Users online on this gateway.
	lmu      sync.RWMutex
	cond     *sync.Cond // on lmu: the write queue has work, or stopping
	local    map[string]*localUser
	idle     map[string]*localUser // no device here: online for the grace only
	retry    map[string]*localUser // last write failed
	queue    []string              // users whose stored state must catch up
	stopping bool
	selfLost bool // the registry saw this gateway's entry expire

	// Users followed by sessions on this gateway.
	ch      chan *nats.Msg // their live changes
	wmu     sync.Mutex
	watched map[string]*watched
	follows map[chat.Frames]*follower
	closed  bool
}

// localUser is a user online on this gateway.
type localUser struct {
	conns      int          // connected devices here
	lastActive atomic.Int64 // ms: last activity, connect or disconnect
	written    bool         // this gateway's entry is in the stored record
	queued     bool         // in Tracker.queue
	busy       bool         // a writer is storing it
	retryAt    time.Time    // when a failed write is tried again
	failures   int
}

// New returns a Tracker that stores presence in kv (the bucket made by
// natsx.Ensure, Resources.Presence), publishes changes on nc, and judges
// gateways with reg, whose own gateway is this one.
func New(cfg Config, nc *nats.Conn, kv jetstream.KeyValue, reg *registry.Registry, log *slog.Logger) (*Tracker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || kv == nil || reg == nil {
		return nil, errors.New("presence: New needs a NATS connection, the presence bucket and the gateway registry")
	}
	if log == nil {
		log = slog.Default()
	}
	self := reg.Self()
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tracker{
		cfg:     cfg,
		nc:      nc,
		kv:      kv,
		reg:     reg,
		self:    self,
		log:     log.With("component", "presence", "gateway", self.ID),
		ctx:     ctx,
		cancel:  cancel,
		local:   map[string]*localUser{},
		idle:    map[string]*localUser{},
		retry:   map[string]*localUser{},
		ch:      make(chan *nats.Msg, 1<<14),
		watched: map[string]*watched{},
		follows: map[chat.Frames]*follower{},
	}
	t.cond = sync.NewCond(&t.lmu)
	return t, nil
}

// Run writes presence changes, delivers live changes of followed users and
// follows gateway changes until ctx ends. It returns nil; it returns an
// error only when called twice.
func (t *Tracker) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("presence: Run called twice")
	}
	defer t.cancel()
	select {
	case <-t.reg.Ready():
	case <-ctx.Done():
		t.shutdown()
		return nil
	}
	events, stopEvents := t.reg.Subscribe()
	var wg sync.WaitGroup
	for range t.cfg.Writers {
		wg.Go(func() { t.writer(ctx) })
	}
	wg.Go(func() { t.dispatch(ctx) })
	wg.Go(func() {
		for ev := range events {
			t.onGateway(ev)
		}
	})
	tick := time.NewTicker(t.cfg.tick())
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case now := <-tick.C:
			t.sweep(now)
			if at := t.recheck.Load(); at != 0 && now.UnixMilli() >= at && t.recheck.CompareAndSwap(at, 0) {
				t.refreshAll()
			}
		}
	}
	t.lmu.Lock()
	t.stopping = true
	t.cond.Broadcast()
	t.lmu.Unlock()
	stopEvents()
	wg.Wait()
	t.shutdown()
	return nil
}

// shutdown drops every subscription and refuses new ones.
func (t *Tracker) shutdown() {
	t.cancel()
	t.lmu.Lock()
	t.stopping = true
	t.cond.Broadcast()
	t.lmu.Unlock()
	t.wmu.Lock()
	t.closed = true
	for _, w := range t.watched {
		w.sub.Unsubscribe()
	}
	t.watched = map[string]*watched{}
	t.follows = map[chat.Frames]*follower{}
	t.wmu.Unlock()
	t.bg.Wait()
}

// waitReady waits until the registry knows the live gateways.
func (t *Tracker) waitReady(ctx context.Context) error {
	select {
	case <-t.reg.Ready():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("presence: gateway registry not ready: %w: %v", chat.ErrUnavailable, ctx.Err())
	case <-t.ctx.Done():
		return fmt.Errorf("presence: %w", chat.ErrClosed)
	}
}

func badUser(user string) error {
	if err := ident.User(user); err != nil {
		return fmt.Errorf("presence: %w: %v", chat.ErrBadRequest, err)
	}
	return nil
}

// Connected records that a device of user connected to this gateway. It
// changes memory only and returns at once; the user's first device here
// makes it online for everyone within milliseconds. It returns an error
// wrapping chat.ErrBadRequest for an invalid id, chat.ErrClosed after Run.
func (t *Tracker) Connected(ctx context.Context, user, device string) error {
	if err := badUser(user); err != nil {
		return err
	}
	if err := ident.Device(device); err != nil {
		return fmt.Errorf("presence: %w: %v", chat.ErrBadRequest, err)
	}
	t.lmu.Lock()
	defer t.lmu.Unlock()
	if t.stopping {
		return fmt.Errorf("presence: %w", chat.ErrClosed)
	}
	lu := t.local[user]
	if lu == nil {
		lu = &localUser{}
		t.local[user] = lu
	}
	lu.conns++
	lu.lastActive.Store(time.Now().UnixMilli())
	delete(t.idle, user)
	if !lu.written {
		t.enqueueLocked(user, lu)
	}
	return nil
}

// Disconnected records that a device of user left this gateway. When it was
// the user's last device anywhere, the user turns offline Config.Grace later
// unless it comes back, with the time of this call as its last-seen. It
// returns an error only for an invalid id.
func (t *Tracker) Disconnected(ctx context.Context, user, device string) error {
	if err := badUser(user); err != nil {
		return err
	}
	t.lmu.Lock()
	defer t.lmu.Unlock()
	lu := t.local[user]
	if lu == nil || lu.conns == 0 {
		t.log.Debug("disconnect without connect", "user_id", user, "device", device)
		return nil
	}
	lu.conns--
	lu.lastActive.Store(time.Now().UnixMilli())
	if lu.conns == 0 {
		t.idle[user] = lu
	}
	return nil
}

// Activity records that user did something. It costs no storage write while
// the user is online here; a user with no connection here (activity over
// HTTP) becomes online for Config.Grace.
func (t *Tracker) Activity(user string) {
	if !ident.ValidToken(user) {
		return
	}
	now := time.Now().UnixMilli()
	t.lmu.RLock()
	lu := t.local[user]
	t.lmu.RUnlock()
	if lu != nil {
		lu.lastActive.Store(now)
		return
	}
	t.lmu.Lock()
	defer t.lmu.Unlock()
	if t.stopping {
		return
	}
	if lu = t.local[user]; lu == nil {
		lu = &localUser{}
		t.local[user] = lu
		t.idle[user] = lu
	}
	lu.lastActive.Store(now)
	if !lu.written {
		t.enqueueLocked(user, lu)
	}
}

// wantLocked reports whether user should be recorded online here.
func (t *Tracker) wantLocked(lu *localUser, now time.Time) bool {
	return lu.conns > 0 || now.UnixMilli() < lu.lastActive.Load()+t.cfg.Grace.Milliseconds()
}

func (t *Tracker) enqueueLocked(user string, lu *localUser) {
	if lu.queued || lu.busy {
		return // a busy writer checks again when done
	}
	lu.queued = true
	t.queue = append(t.queue, user)
	t.cond.Signal()
}

// dropLocked forgets a user that is offline here and stored so.
func (t *Tracker) dropLocked(user string, lu *localUser, now time.Time) {
	if !lu.written && !lu.queued && !lu.busy && !t.wantLocked(lu, now) && t.local[user] == lu {
		delete(t.local, user)
		delete(t.idle, user)
		delete(t.retry, user)
	}
}

// sweep ends the grace of idle users and retries failed writes.
func (t *Tracker) sweep(now time.Time) {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	for user, lu := range t.idle {
		switch {
		case lu.conns > 0:
			delete(t.idle, user)
		case t.wantLocked(lu, now):
		case lu.written:
			delete(t.idle, user)
			t.enqueueLocked(user, lu)
		default:
			t.dropLocked(user, lu, now)
		}
	}
	for user, lu := range t.retry {
		if !now.Before(lu.retryAt) {
			delete(t.retry, user)
			t.enqueueLocked(user, lu)
		}
	}
}

// writer stores the state of queued users until the Tracker stops.
func (t *Tracker) writer(ctx context.Context) {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	for {
		for len(t.queue) == 0 && !t.stopping {
			t.cond.Wait()
		}
		if t.stopping || ctx.Err() != nil {
			return
		}
		user := t.queue[0]
		t.queue[0] = ""
		t.queue = t.queue[1:]
		lu := t.local[user]
		if lu == nil {
			continue
		}
		lu.queued = false
		now := time.Now()
		want := t.wantLocked(lu, now)
		if lu.busy {
			continue
		}
		if want == lu.written {
			t.dropLocked(user, lu, now)
			continue
		}
		lu.busy = true
		last := lu.lastActive.Load()
		t.lmu.Unlock()
		err := t.store(ctx, user, want, last)
		t.lmu.Lock()
		lu.busy = false
		now = time.Now()
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			lu.failures++
			lu.retryAt = now.Add(min(100*time.Millisecond<<min(lu.failures, 6), 5*time.Second))
			t.retry[user] = lu
			t.log.Warn("store presence", "user_id", user, "online", want, "failures", lu.failures, "err", err)
			continue
		}
		lu.failures = 0
		lu.written = want
		if t.wantLocked(lu, now) != lu.written {
			t.enqueueLocked(user, lu)
		} else {
			t.dropLocked(user, lu, now)
		}
	}
}

// store records user online here (want) or offline, last seen at last (ms).
func (t *Tracker) store(ctx context.Context, user string, want bool, last int64) error {
	inc := t.self.Started.UnixNano()
	_, err := t.modify(ctx, user, func(r *record, now time.Time) bool {
		e, ok := r.On[t.self.ID]
		mine := ok && e.Started == inc
		if want {
			if mine {
				return false
			}
			if r.On == nil {
				r.On = map[string]onEntry{}
			}
			r.On[t.self.ID] = onEntry{Started: inc, Since: now.UnixMilli()}
			return true
		}
		changed := false
		if mine {
			delete(r.On, t.self.ID)
			changed = true
		}
		if last > r.LastSeen {
			r.LastSeen = last
			changed = true
		}
		return changed
	})
	return err
}

// onGateway follows a change of the live gateways.
func (t *Tracker) onGateway(ev registry.Event) {
	if ev.Gateway.Same(t.self) {
		t.lmu.Lock()
		switch {
		case ev.Kind == registry.Left:
			// Cut off from NATS for longer than the TTL: others may
			// have removed this gateway's entries meanwhile.
			t.selfLost = true
			t.log.Warn("this gateway's registry entry expired; presence is re-asserted when it is back")
		case t.selfLost:
			t.selfLost = false
			now := time.Now()
			for user, lu := range t.local {
				if t.wantLocked(lu, now) {
					lu.written = false
					t.enqueueLocked(user, lu)
				}
			}
		}
		t.lmu.Unlock()
	}
	t.refreshMentioning(ev.Gateway.ID)
}

// SetLastSeenPrivacy sets who may see user's last-seen: Everyone or Nobody.
// It returns an error wrapping chat.ErrBadRequest for another value or an
// invalid id, chat.ErrUnavailable when the store does not answer.
func (t *Tracker) SetLastSeenPrivacy(ctx context.Context, user, who string) error {
	if err := badUser(user); err != nil {
		return err
	}
	var p string
	switch who {
	case Everyone:
	case Nobody:
		p = Nobody
	default:
		return fmt.Errorf("presence: %w: last-seen privacy must be %q or %q", chat.ErrBadRequest, Everyone, Nobody)
	}
	if err := t.waitReady(ctx); err != nil {
		return err
	}
	_, err := t.modify(ctx, user, func(r *record, _ time.Time) bool {
		if r.Privacy == p {
			return false
		}
		r.Privacy = p
		return true
	})
	return err
}

// LastSeenPrivacy returns who may see user's last-seen: Everyone or Nobody.
// It returns an error wrapping chat.ErrBadRequest for an invalid id,
// chat.ErrUnavailable when the store does not answer.
func (t *Tracker) LastSeenPrivacy(ctx context.Context, user string) (string, error) {
	if err := badUser(user); err != nil {
		return "", err
	}
	r, _, err := t.load(ctx, user)
	if err != nil {
		return "", err
	}
	if r.Privacy == Nobody {
		return Nobody, nil
	}
	return Everyone, nil
}

// Get returns user's presence as viewer may see it: the last-seen is hidden
// from others when the user chose Nobody. A user never seen is offline with
// no last-seen. It returns an error wrapping chat.ErrBadRequest for an
// invalid id, chat.ErrUnavailable when the store does not answer.
func (t *Tracker) Get(ctx context.Context, viewer, user string) (chat.PresenceState, error) {
	if err := badUser(user); err != nil {
		return chat.PresenceState{}, err
	}
	if err := badUser(viewer); err != nil {
		return chat.PresenceState{}, err
	}
	if err := t.waitReady(ctx); err != nil {
		return chat.PresenceState{}, err
	}
	pick := func(r *record) chat.PresenceState {
		pub, own := t.views(r, time.Now())
		v := pub
		if viewer == user {
			v = own
		}
		return chat.PresenceState{User: user, Online: v.online, LastSeen: v.lastSeen}
	}
	t.wmu.Lock()
	if w := t.watched[user]; w != nil && w.loaded {
		st := pick(&w.rec)
		t.wmu.Unlock()
		return st, nil
	}
	t.wmu.Unlock()
	r, _, err := t.load(ctx, user)
	if err != nil {
		return chat.PresenceState{}, err
	}
	return pick(&r), nil
}
