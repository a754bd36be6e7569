package ring_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/await"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/internal/ring"
)

// fakeSource is a registry whose live set the test sets.
type fakeSource struct {
	ready chan struct{}
	mu    sync.Mutex
	live  []registry.Gateway
	subs  []chan registry.Event
}

func newFake() *fakeSource { return &fakeSource{ready: make(chan struct{})} }

func (f *fakeSource) Ready() <-chan struct{} { return f.ready }

func (f *fakeSource) Live() []registry.Gateway {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]registry.Gateway(nil), f.live...)
}

func (f *fakeSource) Subscribe() (<-chan registry.Event, func()) {
	ch := make(chan registry.Event, 16)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}
}

// set replaces the live set and announces one event.
func (f *fakeSource) set(ids ...string) {
	f.mu.Lock()
	f.live = nil
	for _, id := range ids {
		f.live = append(f.live, registry.Gateway{ID: id, URL: "ws://" + id})
	}
	subs := f.subs
	f.mu.Unlock()
	for _, ch := range subs {
		ch <- registry.Event{Kind: registry.Joined}
	}
}

func (f *fakeSource) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		close(ch)
	}
	f.subs = nil
}

func waitChanged(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no ring change after %s", what)
	}
}

func TestTrackerFollowsTheLiveSet(t *testing.T) {
	t.Parallel()
	src := newFake()
	tr := ring.NewTracker(src, slog.New(slog.DiscardHandler))
	if _, ok := tr.Owner("alice"); ok {
		t.Fatal("Owner answered before the registry was loaded")
	}
	done := make(chan error, 1)
	go func() { done <- tr.Run(context.Background()) }()

	ch := tr.Changed()
	src.mu.Lock()
	src.live = []registry.Gateway{{ID: "gw-1", URL: "ws://gw-1"}, {ID: "gw-2", URL: "ws://gw-2"}}
	src.mu.Unlock()
	close(src.ready)
	waitChanged(t, ch, "the first load")
	if got := tr.Ring().String(); got != "[gw-1 gw-2]" {
		t.Errorf("ring after load = %s, want [gw-1 gw-2]", got)
	}

	ch = tr.Changed()
	src.set("gw-1", "gw-2", "gw-3")
	waitChanged(t, ch, "gw-3 joined")
	if m, ok := tr.Ring().Member("gw-3"); !ok || m.URL != "ws://gw-3" {
		t.Errorf("gw-3 on the ring: %v, %v", m, ok)
	}
	want, _ := ring.New([]ring.Member{{ID: "gw-1", URL: "ws://gw-1"}, {ID: "gw-2", URL: "ws://gw-2"}, {ID: "gw-3", URL: "ws://gw-3"}}).Owner("alice")
	if got, _ := tr.Owner("alice"); got != want {
		t.Errorf("Owner(alice) = %v, want %v", got, want)
	}

	// An event that does not change the set is no change.
	ch = tr.Changed()
	src.set("gw-3", "gw-2", "gw-1")
	select {
	case <-ch:
		t.Error("the ring changed although the live set did not")
	case <-time.After(100 * time.Millisecond):
	}

	src.stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when the registry stopped")
	}
	if err := tr.Run(context.Background()); err == nil {
		t.Error("a second Run did not fail")
	}
}

// TestTrackersAgree runs three real registries on one NATS server, each
// with its tracker: all three rings hold all three gateways and agree on
// every owner; when one gateway stops, the other two drop it.
func TestTrackersAgree(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	type gw struct {
		reg  *registry.Registry
		tr   *ring.Tracker
		stop func()
	}
	var gws []gw
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		_, js := natstest.Connect(t, ns)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := natsx.Ensure(ctx, js, natsx.DefaultSettings())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		reg, err := registry.New(registry.Config{Interval: 100 * time.Millisecond, TTL: time.Second}, js, res.Gateways, registry.Gateway{ID: id, URL: "ws://" + id}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		tr := ring.NewTracker(reg, slog.New(slog.DiscardHandler))
		rctx, rcancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { reg.Run(rctx) })
		wg.Go(func() { tr.Run(rctx) })
		stop := sync.OnceFunc(func() { rcancel(); wg.Wait() })
		t.Cleanup(stop)
		gws = append(gws, gw{reg, tr, stop})
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		await.True(t, await.Step, what, ok)
	}
	waitFor("every tracker to see 3 gateways", func() bool {
		for _, g := range gws {
			if g.tr.Ring().Len() != 3 {
				return false
			}
		}
		return true
	})
	for _, u := range users(3000) {
		first, _ := gws[0].tr.Owner(u)
		for _, g := range gws[1:] {
			if m, _ := g.tr.Owner(u); m != first {
				t.Fatalf("Owner(%q) = %v on one gateway, %v on another", u, first, m)
			}
		}
	}
	gws[1].stop() // writes its stopped entry
	waitFor("gw-2 to leave both remaining rings", func() bool {
		_, a := gws[0].tr.Ring().Member("gw-2")
		_, b := gws[2].tr.Ring().Member("gw-2")
		return !a && !b && gws[0].tr.Ring().Len() == 2 && gws[2].tr.Ring().Len() == 2
	})
}
