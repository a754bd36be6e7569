package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/metrics"
	"github.com/jetchat/jetchat/internal/natsx"
)

// Service is the delivery side of one node: it stores messages, keeps the
// online users' devices fed from the message log, tracks acks, and produces
// receipts. Create it with New and run it with Run.
type Service struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	m   *metrics.Metrics
	log *slog.Logger

	// ctx lives until Run returns; catch-up goroutines use it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // catch-up goroutines

	liveCh   chan *nats.Msg
	receipts *batcher

	mu      sync.RWMutex
	users   map[string]*userState
	closing map[string]chan struct{}
	closed  bool
}

// New returns a Service that stores into the resources made by natsx.Ensure.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, res *natsx.Resources, m *metrics.Metrics, log *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil || res == nil || res.Devices == nil || m == nil {
		return nil, errors.New("delivery: New needs a NATS connection, JetStream, its resources and metrics")
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		kv:      res.Devices,
		m:       m,
		log:     log.With("component", "delivery"),
		ctx:     ctx,
		cancel:  cancel,
		liveCh:  make(chan *nats.Msg, 1<<16),
		users:   map[string]*userState{},
		closing: map[string]chan struct{}{},
	}
	s.receipts = newBatcher(s)
	return s, nil
}

// Run dispatches live records to devices, stores batched receipts and
// flushes cursors until ctx ends; then it stores what is pending and
// returns. Close the devices (end the sessions) before ending ctx.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(context.Background())
	wg.Add(2)
	go func() { defer wg.Done(); s.dispatch(loopCtx) }()
	go func() { defer wg.Done(); s.receipts.run(loopCtx) }()

	tick := time.NewTicker(s.cfg.CursorFlush)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			fctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			if err := s.flushCursors(fctx); err != nil {
				s.log.Warn("flush cursors", "err", err)
			}
			cancel()
		}
	}

	s.mu.Lock()
	s.closed = true
	users := make([]*userState, 0, len(s.users))
	for _, u := range s.users {
		users = append(users, u)
	}
	s.mu.Unlock()
	for _, u := range users {
		for _, d := range u.devices() {
			d.closeWith(ErrShutdown)
		}
	}
	s.cancel() // stop catch-ups
	s.wg.Wait()
	stopLoops()
	wg.Wait()
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.flushCursors(fctx)
	for _, u := range users {
		if u.sub != nil {
			u.sub.Unsubscribe()
		}
	}
	if err != nil {
		return fmt.Errorf("delivery: final flush: %w", err)
	}
	return nil
}

// Resync makes every live device check the message log for records it may
// have missed. Call it when NATS reports a slow consumer or a reconnect:
// core NATS may have dropped live records meanwhile.
func (s *Service) Resync() {
	s.mu.RLock()
	users := make([]*userState, 0, len(s.users))
	for _, u := range s.users {
		users = append(users, u)
	}
	s.mu.RUnlock()
	for _, u := range users {
		for _, d := range u.devices() {
			d.resync()
		}
	}
}

// dispatch hands every live record to the devices of its user.
func (s *Service) dispatch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.liveCh:
			s.onLive(m)
		}
	}
}

func (s *Service) onLive(m *nats.Msg) {
	if len(m.Subject) <= len(natsx.LivePrefix) {
		return
	}
	user := m.Subject[len(natsx.LivePrefix):]
	s.mu.RLock()
	u := s.users[user]
	s.mu.RUnlock()
	if u == nil {
		return
	}
	if m.Header.Get(hdrControl) == controlDevices {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := u.refresh(s.ctx); err != nil {
				s.log.Warn("refresh devices", "user_id", user, "err", err)
			}
		}()
		return
	}
	r, err := decodeRecord(m, true)
	if err != nil {
		s.log.Warn("undecodable live record", "user_id", user, "err", err)
		return
	}
	if r.kind != KindReceipts && r.ts > 0 {
		s.m.DeliveryLatency.Observe(float64(s.cfg.Now().UnixMilli()-r.ts) / 1000)
	}
	for _, d := range u.devices() {
		d.onLive(r)
	}
}

// Connect attaches a device of user to sink: it replays what the device has
// not acknowledged from the message log, then keeps it fed live. A device
// already connected is closed with ErrReplaced. The returned Device must be
// closed when the session ends.
func (s *Service) Connect(ctx context.Context, user, device string, sink chat.Sink) (chat.Device, error) {
	u, fresh, err := s.acquireUser(ctx, user)
	if err != nil {
		return nil, err
	}
	if !fresh {
		if err := u.refresh(ctx); err != nil {
			s.releaseUser(u)
			return nil, fmt.Errorf("load devices of %s: %w: %v", user, ErrUnavailable, err)
		}
	}
	d := &Device{svc: s, user: u, id: device, sink: sink}
	old, isNew := u.attach(d)
	if old != nil {
		old.closeWith(ErrReplaced)
	}
	if isNew {
		// Store the new device now and tell the user's other gateways, so
		// that its sends from anywhere copy to it from now on.
		if err := u.flush(ctx); err != nil {
			s.log.Warn("store new device", "user_id", user, "device", device, "err", err)
		} else {
			m := nats.NewMsg(natsx.Live(user))
			m.Header.Set(hdrControl, controlDevices)
			s.nc.PublishMsg(m)
		}
	}
	d.mu.Lock()
	d.startCatchUpLocked()
	d.mu.Unlock()
	return d, nil
}

// acquireUser returns the loaded state of an online user, loading it and
// subscribing to its live subject when it is the user's first device here
// (fresh is then set).
func (s *Service) acquireUser(ctx context.Context, id string) (u *userState, fresh bool, err error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, false, ErrClosed
		}
		if ch := s.closing[id]; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		if u := s.users[id]; u != nil {
			u.refs++
			s.mu.Unlock()
			select {
			case <-u.ready:
			case <-ctx.Done():
				s.releaseUser(u)
				return nil, false, ctx.Err()
			}
			if u.err != nil {
				return nil, false, u.err
			}
			return u, false, nil
		}
		u := newUserState(s, id)
		u.refs = 1
		s.users[id] = u
		s.mu.Unlock()
		if err := u.load(ctx); err != nil {
			u.err = fmt.Errorf("load devices of %s: %w: %v", id, ErrUnavailable, err)
			s.mu.Lock()
			delete(s.users, id)
			s.mu.Unlock()
			close(u.ready)
			return nil, false, u.err
		}
		close(u.ready)
		return u, true, nil
	}
}

// releaseUser drops one reference; the last one stores the user's cursors
// and unsubscribes.
func (s *Service) releaseUser(u *userState) {
	s.mu.Lock()
	u.refs--
	if u.refs > 0 || s.users[u.id] != u {
		s.mu.Unlock()
		return
	}
	delete(s.users, u.id)
	ch := make(chan struct{})
	s.closing[u.id] = ch
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := s.receipts.flushAll(ctx); err != nil {
		s.log.Warn("store receipts", "user_id", u.id, "err", err)
	} else if err := u.flush(ctx); err != nil {
		s.log.Warn("store cursors", "user_id", u.id, "err", err)
	}
	cancel()
	if u.sub != nil {
		u.sub.Unsubscribe()
	}
	s.mu.Lock()
	delete(s.closing, u.id)
	close(ch)
	s.mu.Unlock()
}

// flushCursors stores pending receipts, then the positions of every online
// user's devices that moved. Receipts go first so that a stored position
// never covers an ack whose receipt was lost.
func (s *Service) flushCursors(ctx context.Context) error {
	if err := s.receipts.flushAll(ctx); err != nil {
		return err
	}
	s.mu.RLock()
	users := make([]*userState, 0, len(s.users))
	for _, u := range s.users {
		users = append(users, u)
	}
	s.mu.RUnlock()
	var errs []error
	for _, u := range users {
		select {
		case <-u.ready:
		default:
			continue
		}
		if u.err == nil && u.isDirty() {
			if err := u.flush(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
