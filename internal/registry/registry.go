package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/ident"
	"github.com/jetchat/jetchat/internal/natsx"
)

// Gateway is one incarnation of a gateway process.
type Gateway struct {
	// ID names the gateway (configured; stable across restarts).
	ID string `json:"id"`
	// URL is the WebSocket URL clients use to reach it.
	URL string `json:"url,omitempty"`
	// Started is when this incarnation started; with ID it names the
	// incarnation.
	Started time.Time `json:"started"`
	// Heartbeat is the time of its latest heartbeat; for a gateway that
	// left, its last one (or its clean stop).
	Heartbeat time.Time `json:"heartbeat"`
}

// Same reports whether g and o are the same incarnation.
func (g Gateway) Same(o Gateway) bool { return g.ID == o.ID && g.Started.Equal(o.Started) }

// entry is the value stored under a gateway's key.
type entry struct {
	Gateway
	// Stopped marks the final entry of a gateway that stopped cleanly.
	Stopped bool `json:"stopped,omitempty"`
}

// Config tunes a Registry. Zero fields take the defaults.
type Config struct {
	// Interval is how often the gateway refreshes its entry (default 2s).
	Interval time.Duration
	// TTL is how long an entry outlives its last heartbeat (default
	// natsx.GatewayTTL). It must be at least twice Interval.
	TTL time.Duration
	// Retain is how long a gateway that left is remembered, so that state
	// recorded against it can be judged (default natsx.GatewayGoneTTL).
	Retain time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.TTL == 0 {
		c.TTL = natsx.GatewayTTL
	}
	if c.Retain == 0 {
		c.Retain = natsx.GatewayGoneTTL
	}
	if c.Interval < 10*time.Millisecond || c.TTL < time.Second || c.TTL < 2*c.Interval || c.Retain < c.TTL {
		return c, fmt.Errorf("registry: invalid config %+v: TTL must be at least 1s and twice Interval, Retain at least TTL", c)
	}
	return c, nil
}

// Registry registers one gateway and tracks the live set. Create it with New
// and run it with Run.
type Registry struct {
	cfg     Config
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	subject string // the KV subject of self's entry
	log     *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	killed    atomic.Bool // StopHeartbeats was called
	running   atomic.Bool
	wg        sync.WaitGroup // subscription pumps

	mu     sync.RWMutex
	self   Gateway
	live   map[string]Gateway // by id: the newest live incarnation
	gone   map[incarnation]Gateway
	subs   map[*subscription]struct{}
	closed bool
}

// incarnation names one run of a gateway: its id and start time.
type incarnation struct {
	id      string
	started int64 // ns since the epoch
}

func incOf(g Gateway) incarnation { return incarnation{g.ID, g.Started.UnixNano()} }

// Key is the registry key of an incarnation: <id>.<start time in ns>.
func Key(g Gateway) string { return g.ID + "." + strconv.FormatInt(g.Started.UnixNano(), 10) }

// parseKey splits a registry key.
func parseKey(key string) (incarnation, bool) {
	id, ns, ok := strings.Cut(key, ".")
	if !ok || !ident.ValidToken(id) {
		return incarnation{}, false
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil || n <= 0 {
		return incarnation{}, false
	}
	return incarnation{id, n}, true
}

// New returns a Registry that will register self (ID and URL; Started is set
// to now when zero) in kv, the bucket made by natsx.Ensure (Resources.Gateways).
// js writes the heartbeats: the KV API cannot give an update a TTL.
func New(cfg Config, js jetstream.JetStream, kv jetstream.KeyValue, self Gateway, log *slog.Logger) (*Registry, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if js == nil || kv == nil {
		return nil, errors.New("registry: New needs JetStream and the gateways bucket")
	}
	if !ident.ValidToken(self.ID) {
		return nil, fmt.Errorf("registry: gateway id %q must match ^[A-Za-z0-9_-]{1,64}$", self.ID)
	}
	if self.Started.IsZero() {
		self.Started = time.Now()
	}
	self.Started = self.Started.Round(0).UTC() // compared after JSON round trips
	self.Heartbeat = time.Time{}
	if log == nil {
		log = slog.Default()
	}
	return &Registry{
		cfg:     cfg,
		js:      js,
		kv:      kv,
		subject: "$KV." + kv.Bucket() + "." + Key(self),
		log:     log.With("component", "registry", "gateway", self.ID),
		ready:   make(chan struct{}),
		self:    self,
		live:    map[string]Gateway{},
		gone:    map[incarnation]Gateway{},
		subs:    map[*subscription]struct{}{},
	}, nil
}

// Self returns this gateway's incarnation.
func (r *Registry) Self() Gateway {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.self
}

// Ready is closed once this gateway is registered and the live set is loaded.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

// Live returns the live gateways, sorted by ID.
func (r *Registry) Live() []Gateway {
	r.mu.RLock()
	out := make([]Gateway, 0, len(r.live))
	for _, g := range r.live {
		out = append(out, g)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Gateway) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// State is what the registry knows of one incarnation.
type State int

const (
	// Unknown: the registry has not seen this incarnation. It may have
	// registered a moment ago (not yet seen here) or have left long ago.
	Unknown State = iota
	// Alive: the incarnation is in the live set.
	Alive
	// Gone: the incarnation left (stopped, expired or replaced by a newer
	// incarnation of the same id).
	Gone
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Gone:
		return "gone"
	}
	return "unknown"
}

// State reports whether the incarnation (id, started) is alive. For a gone
// incarnation it also returns its last heartbeat (or its clean stop), or the
// zero time when only its replacement by a newer incarnation was seen.
// Incarnations that left more than Retain ago are Unknown.
func (r *Registry) State(id string, started time.Time) (State, time.Time) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	g, live := r.live[id]
	if live && g.Started.Equal(started) {
		return Alive, g.Heartbeat
	}
	if d, ok := r.gone[incarnation{id, started.UnixNano()}]; ok {
		return Gone, d.Heartbeat
	}
	if live && g.Started.After(started) {
		return Gone, time.Time{}
	}
	return Unknown, time.Time{}
}

// StopHeartbeats is a test hook that simulates a crash (SIGKILL): the
// gateway stops refreshing its entry, so it expires, and Run will not write a
// stopped entry when it returns.
func (r *Registry) StopHeartbeats() { r.killed.Store(true) }

// ResumeHeartbeats is a test hook that undoes StopHeartbeats, as when a
// gateway cut off from NATS for longer than the TTL gets through again: the
// others see it leave, then join again.
func (r *Registry) ResumeHeartbeats() { r.killed.Store(false) }

// Run registers the gateway, then heartbeats and watches the registry until
// ctx ends; then it writes the gateway's stopped entry (unless
// StopHeartbeats was called) and returns nil. It returns an error when the
// first registration or the first watch still fails after 30 s of retries.
// Run may be called once.
func (r *Registry) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("registry: Run called twice")
	}
	defer r.closeSubs()
	// A bucket just made on a fresh cluster may not answer until its
	// replicas have elected a leader: the first registration and watch are
	// retried for a while before the gateway gives up.
	if err := r.retryStart(ctx, "register gateway", func() error { return r.beat(ctx, false) }); err != nil {
		return fmt.Errorf("registry: register gateway %s: %w", r.self.ID, err)
	}
	var w jetstream.KeyWatcher
	var stopWatch func()
	err := r.retryStart(ctx, "watch the registry", func() (err error) {
		w, stopWatch, err = r.watch(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("registry: watch bucket %s: %w", r.kv.Bucket(), err)
	}
	defer func() { stopWatch() }()

	// Heartbeats run apart so that a slow write never delays the watcher;
	// they end before the stopped entry is written, which they must not
	// overtake.
	hbCtx, stopBeats := context.WithCancel(ctx)
	var hb sync.WaitGroup
	hb.Go(func() { r.heartbeats(hbCtx) })
	defer func() { stopBeats(); hb.Wait() }()

	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	seen := map[string]bool{} // keys seen during a (re)load; nil once loaded
	for {
		select {
		case <-ctx.Done():
			stopWatch()
			stopBeats()
			hb.Wait()
			r.deregister()
			return nil
		case <-prune.C:
			r.prune()
		case e, ok := <-w.Updates():
			if !ok {
				// The watcher ended (connection closed or consumer lost):
				// watch again and reconcile.
				stopWatch()
				if w, stopWatch, err = r.rewatch(ctx); err != nil {
					stopWatch = func() {}
					stopBeats()
					hb.Wait()
					r.deregister() // ctx ended
					return nil
				}
				seen = map[string]bool{}
				continue
			}
			if e == nil {
				if seen != nil {
					r.loaded(seen)
					seen = nil
				}
				continue
			}
			if seen != nil {
				seen[e.Key()] = true
			}
			r.apply(e)
		}
	}
}

// heartbeats refreshes self's entry every Interval until ctx ends.
func (r *Registry) heartbeats(ctx context.Context) {
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if r.killed.Load() {
			continue
		}
		bctx, cancel := context.WithTimeout(ctx, r.cfg.TTL/2)
		if err := r.beat(bctx, false); err != nil && ctx.Err() == nil {
			r.log.Warn("heartbeat", "err", err)
		}
		cancel()
	}
}

// deregister writes the stopped entry, unless the gateway plays dead.
func (r *Registry) deregister() {
	if r.killed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.beat(ctx, true); err != nil {
		r.log.Warn("deregister", "err", err)
	}
}

// watch starts a watcher of the whole bucket; stop ends it.
func (r *Registry) watch(ctx context.Context) (jetstream.KeyWatcher, func(), error) {
	wctx, cancel := context.WithCancel(ctx)
	w, err := r.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	var once sync.Once
	return w, func() { once.Do(func() { w.Stop(); cancel() }) }, nil
}

// startTimeout bounds the retries of Run's first registration and watch.
const startTimeout = 30 * time.Second

// retryStart calls f until it succeeds, ctx ends or startTimeout has
// passed; it returns f's last error.
func (r *Registry) retryStart(ctx context.Context, what string, f func() error) error {
	return natsx.Retry{Within: startTimeout, OnRetry: func(err error, pause time.Duration) {
		r.log.Warn("registry not answering yet, retrying", "action", what, "err", err, "retry_in", pause)
	}}.Do(ctx, func(context.Context) error { return f() })
}

// rewatch retries watch every second until it works or ctx ends.
func (r *Registry) rewatch(ctx context.Context) (jetstream.KeyWatcher, func(), error) {
	for {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(time.Second):
		}
		w, stop, err := r.watch(ctx)
		if err == nil {
			return w, stop, nil
		}
		r.log.Warn("watch gateways again", "err", err)
	}
}

// beat writes self's entry with a TTL: a heartbeat, or the final stopped
// entry (kept for Retain).
func (r *Registry) beat(ctx context.Context, stopped bool) error {
	r.mu.RLock()
	e := entry{Gateway: r.self, Stopped: stopped}
	r.mu.RUnlock()
	e.Heartbeat = time.Now().Round(0).UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ttl := r.cfg.TTL
	if stopped {
		ttl = r.cfg.Retain
	}
	_, err = r.js.PublishMsg(ctx, &nats.Msg{Subject: r.subject, Data: b}, jetstream.WithMsgTTL(ttl))
	return err
}

// apply updates the live set with one watched entry and queues the
// resulting events for the subscribers.
func (r *Registry) apply(e jetstream.KeyValueEntry) {
	inc, ok := parseKey(e.Key())
	if !ok {
		r.log.Warn("ignoring a registry key that names no gateway incarnation", "key", e.Key())
		return
	}
	r.mu.Lock()
	evs := r.applyLocked(e, inc)
	// Queued under the lock that changed the live set: a subscriber gets
	// the events of exactly the changes made after it subscribed.
	r.pushLocked(evs)
	r.mu.Unlock()
	r.logEvents(evs)
}

// applyLocked is apply's change of the live set, with r.mu held.
func (r *Registry) applyLocked(e jetstream.KeyValueEntry, inc incarnation) []Event {
	cur, live := r.live[inc.id]
	isCur := live && incOf(cur) == inc
	if e.Operation() != jetstream.KeyValuePut {
		// An expiry marker (or an operator's delete): the incarnation
		// stopped heartbeating about TTL before the marker.
		if isCur {
			delete(r.live, inc.id)
			r.gone[inc] = cur
			return []Event{{Kind: Left, Gateway: cur, Expired: true}}
		}
		if _, ok := r.gone[inc]; !ok {
			r.gone[inc] = Gateway{ID: inc.id, Started: time.Unix(0, inc.started).UTC(), Heartbeat: e.Created().Add(-r.cfg.TTL)}
		}
		return nil
	}
	var en entry
	if err := json.Unmarshal(e.Value(), &en); err != nil || incOf(en.Gateway) != inc {
		r.log.Warn("ignoring malformed gateway entry", "key", e.Key(), "err", err)
		return nil
	}
	g := en.Gateway
	if en.Stopped {
		r.gone[inc] = g
		if isCur {
			delete(r.live, inc.id)
			return []Event{{Kind: Left, Gateway: g}}
		}
		return nil
	}
	if isCur {
		r.live[inc.id] = g
		return nil
	}
	if live && cur.Started.After(g.Started) {
		// An older incarnation heartbeats while a newer one is live: two
		// processes share an id. The newest wins.
		if _, known := r.gone[inc]; !known {
			r.log.Warn("two gateways heartbeat under one id; the newest counts", "id", inc.id, "started", g.Started, "newer_started", cur.Started)
		}
		r.gone[inc] = g
		return nil
	}
	var evs []Event
	if live {
		// A newer incarnation replaces the live one, which died without a
		// goodbye (its entry has not expired yet).
		r.gone[incOf(cur)] = cur
		evs = append(evs, Event{Kind: Left, Gateway: cur, Expired: true})
	}
	delete(r.gone, inc) // back after its entry expired (a partition healed)
	r.live[inc.id] = g
	return append(evs, Event{Kind: Joined, Gateway: g})
}

// loaded ends a (re)load of the bucket: live incarnations whose keys were
// not seen are gone (their entries and markers expired meanwhile).
func (r *Registry) loaded(seen map[string]bool) {
	var evs []Event
	r.mu.Lock()
	for id, g := range r.live {
		if !seen[Key(g)] {
			delete(r.live, id)
			r.gone[incOf(g)] = g
			evs = append(evs, Event{Kind: Left, Gateway: g, Expired: true})
		}
	}
	r.pushLocked(evs)
	r.mu.Unlock()
	r.logEvents(evs)
	r.readyOnce.Do(func() { close(r.ready) })
}

// prune forgets incarnations that left more than Retain ago.
func (r *Registry) prune() {
	limit := time.Now().Add(-r.cfg.Retain)
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, g := range r.gone {
		if g.Heartbeat.Before(limit) {
			delete(r.gone, k)
		}
	}
}
