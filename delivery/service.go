package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	msgs jetstream.Stream
	cids *cidFeed // the send index
	m    *metrics.Metrics
	log  *slog.Logger

	// ctx lives until Run returns; catch-up goroutines use it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // catch-up goroutines

	liveCh chan *nats.Msg
	// liveMu orders the changes of live subscriptions: liveAll, and every
	// userState.sub.
	liveMu sync.Mutex
	// liveAll, when set, is the one subscription to every user's live
	// subject, made while the node is the only gateway (SubscribeAll);
	// users then have no subscription of their own.
	liveAll  *nats.Subscription
	elected  *nats.Subscription // the message log's leader-elected advisories
	receipts *batcher
	groups   Groups // nil: no group messaging

	gmu   sync.Mutex
	gsubs map[string]*groupSub // live group subscriptions, by group id

	mu      sync.RWMutex
	users   map[string]*userState
	closing map[string]chan struct{}
	closed  bool
}

// Groups is what delivery needs of group membership. Membership positions
// are message-log sequences: those of the notices in the member's inbox.
type Groups interface {
	// IsMember reports whether user is a member of group now.
	IsMember(ctx context.Context, group, user string) (bool, error)
	// Memberships returns user's membership intervals that end after the
	// log position after (or have not ended).
	Memberships(ctx context.Context, user string, after uint64) ([]chat.Interval, error)
	// MembersAt returns the members of group at log position seq.
	MembersAt(ctx context.Context, group string, seq uint64) ([]string, error)
	// WasMember reports whether user was a member of group at seq.
	WasMember(ctx context.Context, group, user string, seq uint64) (bool, error)
}

// groupSub is a node's live subscription to a group and the devices here
// that read the group.
type groupSub struct {
	sub     *nats.Subscription
	devices map[*Device]struct{}
}

// New returns a Service that stores into the resources made by natsx.Ensure.
// groups may be nil: group messages are then refused as not found. nc (and
// js, made on it) should be a connection of the service's own, made with
// natsx.StoreConnOptions: one that keeps a reconnect buffer would store a
// message whose send had given up whenever it came back.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, res *natsx.Resources, groups Groups, m *metrics.Metrics, log *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil || res == nil || res.Devices == nil || res.Msgs == nil || res.Cids == nil || m == nil {
		return nil, errors.New("delivery: New needs a NATS connection, JetStream, its resources and metrics")
	}
	// The windows are the streams': the send index keeps what StreamCids
	// keeps, less its margin.
	window := res.Cids.CachedInfo().Config.MaxAge - natsx.CidsMargin
	store := res.Msgs.CachedInfo().Config.Duplicates
	if window <= 0 || store <= 0 {
		return nil, fmt.Errorf("delivery: streams %s and %s have no dedup window", natsx.StreamMsgs, natsx.StreamCids)
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.VerifyAfter == 0 {
		cfg.VerifyAfter = -1
		if nc.ConnectedClusterName() != "" {
			cfg.VerifyAfter = time.Second
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		kv:      res.Devices,
		msgs:    res.Msgs,
		m:       m,
		log:     log.With("component", "delivery"),
		ctx:     ctx,
		cancel:  cancel,
		liveCh:  make(chan *nats.Msg, 1<<16),
		users:   map[string]*userState{},
		closing: map[string]chan struct{}{},
		groups:  groups,
		gsubs:   map[string]*groupSub{},
	}
	s.receipts = newBatcher(s)
	s.cids = newCidFeed(s, res.Cids, cfg.GatewayID, window, store)
	// A new leader of the message log may not have republished the last
	// records the old one stored: every device checks the log.
	s.elected, err = nc.Subscribe(natsx.LeaderElected(natsx.StreamMsgs), func(*nats.Msg) {
		s.log.Info("message log has a new leader: resyncing devices from the log")
		s.Resync()
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("delivery: watch the message log's leader elections: %w", err)
	}
	return s, nil
}

// Run dispatches live records to devices, stores batched receipts and
// flushes cursors until ctx ends; then it stores what is pending and
// returns. Close the devices (end the sessions) before ending ctx.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(context.Background())
	wg.Add(3)
	go func() { defer wg.Done(); s.dispatch(loopCtx) }()
	go func() { defer wg.Done(); s.receipts.run(loopCtx) }()
	go func() { defer wg.Done(); s.cids.run(loopCtx) }()

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
	s.closed = true // no user is added from here on
	s.mu.Unlock()
	users := s.onlineUsers()
	for _, u := range users {
		for _, d := range u.devices() {
			d.closeWith(ErrShutdown)
		}
	}
	if s.elected != nil {
		s.elected.Unsubscribe()
	}
	s.cancel() // stop catch-ups
	s.wg.Wait()
	stopLoops()
	wg.Wait()
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.flushCursors(fctx)
	for _, u := range users {
		s.unsubscribeUser(u)
	}
	s.liveMu.Lock()
	if s.liveAll != nil {
		s.liveAll.Unsubscribe()
		s.liveAll = nil
	}
	s.liveMu.Unlock()
	if err != nil {
		return fmt.Errorf("delivery: final flush: %w", err)
	}
	return nil
}

// lastLogSeq is the message log's last sequence.
func (s *Service) lastLogSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := s.msgs.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("message log state: %w", err)
	}
	return info.State.LastSeq, nil
}

// Resync makes every live device check the message log for records it may
// have missed. Call it when NATS reports a slow consumer or a reconnect:
// core NATS may have dropped live records meanwhile.
func (s *Service) Resync() {
	for _, u := range s.onlineUsers() {
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
	if strings.HasPrefix(m.Subject, natsx.LiveGroupPrefix) {
		s.onLiveGroup(m)
		return
	}
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
	if m.Header.Get(hdrControl) == controlFrame {
		for _, d := range u.devices() {
			d.relay(m.Data)
		}
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

// onLiveGroup hands a group's live record to the devices here that read it.
func (s *Service) onLiveGroup(m *nats.Msg) {
	group := m.Subject[len(natsx.LiveGroupPrefix):]
	s.gmu.Lock()
	g := s.gsubs[group]
	var devs []*Device
	if g != nil {
		devs = make([]*Device, 0, len(g.devices))
		for d := range g.devices {
			devs = append(devs, d)
		}
	}
	s.gmu.Unlock()
	if len(devs) == 0 {
		return
	}
	if m.Header.Get(hdrControl) == controlFrame {
		from := m.Header.Get(HdrFrom)
		for _, d := range devs {
			if d.user.id != from {
				d.relay(m.Data)
			}
		}
		return
	}
	r, err := decodeRecord(m, true)
	if err != nil {
		s.log.Warn("undecodable live group record", "group", group, "err", err)
		return
	}
	if r.kind == KindMessage && r.ts > 0 {
		s.m.DeliveryLatency.Observe(float64(s.cfg.Now().UnixMilli()-r.ts) / 1000)
	}
	for _, d := range devs {
		d.onLive(r)
	}
}

// addGroupDevice makes the node receive a group's live records for d. The
// subscription is sent before any read of the group, so nothing falls
// between the two.
func (s *Service) addGroupDevice(group string, d *Device) {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	g := s.gsubs[group]
	if g == nil {
		sub, err := s.nc.ChanSubscribe(natsx.LiveGroup(group), s.liveCh)
		if err != nil {
			// The device still reads the group from the log; live records
			// come with the next catch-up.
			s.log.Warn("subscribe to group", "group", group, "err", err)
		}
		g = &groupSub{sub: sub, devices: map[*Device]struct{}{}}
		s.gsubs[group] = g
	}
	g.devices[d] = struct{}{}
}

// removeGroupDevice undoes addGroupDevice.
func (s *Service) removeGroupDevice(group string, d *Device) {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	g := s.gsubs[group]
	if g == nil {
		return
	}
	delete(g.devices, d)
	if len(g.devices) == 0 {
		if g.sub != nil {
			g.sub.Unsubscribe()
		}
		delete(s.gsubs, group)
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
	d := &Device{svc: s, user: u, id: device, sink: sink, inbox: &source{subject: natsx.Inbox(user)}}
	if b, ok := sink.(chat.ReceiptBatcher); ok {
		d.batch = b.ReceiptBatches()
	}
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
	floor := d.floor
	d.mu.Unlock()
	if s.groups != nil {
		ivs, err := s.groups.Memberships(ctx, user, floor)
		if err != nil {
			// Groups unknown for now (Postgres down): deliver the inbox,
			// keep the floor where it is, and add the groups when they
			// can be read.
			s.log.Warn("group memberships unavailable; retrying", "user_id", user, "err", err)
			d.mu.Lock()
			d.frozen = true
			d.mu.Unlock()
			s.wg.Add(1)
			go d.loadGroups(floor)
		} else {
			d.mu.Lock()
			for _, iv := range ivs {
				d.addGroupLocked(iv)
			}
			d.mu.Unlock()
		}
	}
	d.mu.Lock()
	d.startCatchUpLocked()
	d.mu.Unlock()
	return d, nil
}

// loadGroups retries reading the device's group memberships until it
// succeeds or the device closes, then reads the groups from floor.
func (d *Device) loadGroups(floor uint64) {
	defer d.svc.wg.Done()
	wait := time.Second
	for {
		select {
		case <-d.svc.ctx.Done():
			return
		case <-time.After(wait):
		}
		d.mu.Lock()
		closed := d.mode == modeClosed
		d.mu.Unlock()
		if closed {
			return
		}
		ctx, cancel := context.WithTimeout(d.svc.ctx, 5*time.Second)
		ivs, err := d.svc.groups.Memberships(ctx, d.user.id, floor)
		cancel()
		if err != nil {
			wait = min(2*wait, 30*time.Second)
			continue
		}
		d.mu.Lock()
		if d.mode == modeClosed {
			d.mu.Unlock()
			return
		}
		for _, iv := range ivs {
			if d.groups[iv.Group] == nil {
				iv.From = max(iv.From, floor)
				d.addGroupLocked(iv)
				d.groups[iv.Group].last = max(iv.From, floor)
			}
		}
		d.thaw = true
		if d.mode == modeLive || d.mode == modeIdle {
			d.mode = modeIdle
			d.startCatchUpLocked()
		}
		d.mu.Unlock()
		return
	}
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
	if err := u.flush(ctx); err != nil {
		s.log.Warn("store cursors", "user_id", u.id, "err", err)
	}
	cancel()
	s.unsubscribeUser(u)
	s.mu.Lock()
	delete(s.closing, u.id)
	close(ch)
	s.mu.Unlock()
}

// flushCursors stores the positions of every online user's devices that
// moved. The positions are taken first, then the receipts queued by then
// are stored, then the positions: a stored position never covers an ack
// whose receipt was lost.
func (s *Service) flushCursors(ctx context.Context) error {
	users := s.onlineUsers()
	type pending struct {
		u    *userState
		snap recordSnapshot
	}
	var todo []pending
	for _, u := range users {
		select {
		case <-u.ready:
		default:
			continue
		}
		if u.err != nil {
			continue
		}
		if snap, ok := u.snapshot(); ok {
			todo = append(todo, pending{u, snap})
		}
	}
	if err := s.receipts.flushAll(ctx); err != nil {
		return err
	}
	var errs []error
	for _, p := range todo {
		if err := p.u.store(ctx, p.snap); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
