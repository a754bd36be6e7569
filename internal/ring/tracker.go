package ring

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/jetchat/jetchat/internal/registry"
)

// Source is the registry of live gateways that a Tracker follows
// (*registry.Registry).
type Source interface {
	// Ready is closed once the live set is loaded.
	Ready() <-chan struct{}
	// Live returns the live gateways.
	Live() []registry.Gateway
	// Subscribe returns every change of the live set from now on; the
	// channel is closed when the registry stops.
	Subscribe() (<-chan registry.Event, func())
}

var _ Source = (*registry.Registry)(nil)

// Tracker keeps the ring of a registry's live gateways: every gateway runs
// one over its own registry, and since they all see the same live set they
// all compute the same owners (give or take the moment a change takes to
// reach each of them).
type Tracker struct {
	src Source
	log *slog.Logger

	cur atomic.Pointer[Ring]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	running atomic.Bool
}

// NewTracker returns a Tracker of src's live gateways. Its ring is empty
// until Run has loaded the live set.
func NewTracker(src Source, log *slog.Logger) *Tracker {
	if log == nil {
		log = slog.Default()
	}
	t := &Tracker{src: src, log: log.With("component", "ring"), changed: make(chan struct{})}
	t.cur.Store(New(nil))
	return t
}

// Ring returns the current ring (never nil; empty before the live set is
// loaded).
func (t *Tracker) Ring() *Ring { return t.cur.Load() }

// Owner returns the gateway that owns user on the current ring; ok is false
// while the ring is empty.
func (t *Tracker) Owner(user string) (Member, bool) { return t.cur.Load().Owner(user) }

// Changed returns a channel that is closed at the next change of the ring.
// Take it before reading the ring, so that no change goes unseen.
func (t *Tracker) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Run follows the registry until ctx ends or the registry stops, and
// returns nil. It may be called once; a second call returns an error.
func (t *Tracker) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("ring: Tracker.Run called twice")
	}
	events, cancel := t.src.Subscribe() // before reading Live: no change is missed
	defer cancel()
	select {
	case <-ctx.Done():
		return nil
	case <-t.src.Ready():
	case _, ok := <-events:
		if !ok {
			return nil // the registry stopped before it was ready
		}
		// Events before Ready are changes during the first load: wait for
		// the load itself.
		select {
		case <-ctx.Done():
			return nil
		case <-t.src.Ready():
		}
	}
	t.update()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				return nil
			}
		}
		// Coalesce a burst of events into one rebuild.
	drain:
		for {
			select {
			case _, ok := <-events:
				if !ok {
					t.update()
					return nil
				}
			default:
				break drain
			}
		}
		t.update()
	}
}

// update rebuilds the ring from the live set and announces a change.
func (t *Tracker) update() {
	live := t.src.Live()
	ms := make([]Member, len(live))
	for i, g := range live {
		ms[i] = Member{ID: g.ID, URL: g.URL}
	}
	next := New(ms)
	old := t.cur.Load()
	if next.Equal(old) {
		return
	}
	t.mu.Lock()
	t.cur.Store(next)
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
	t.log.Info("ring changed", "gateways", next.String(), "before", old.String())
}
