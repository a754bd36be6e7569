package registry_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/registry"
)

// fast is a registry configuration for tests: the shortest TTL the server
// supports (per-message TTLs have a resolution of one second).
var fast = registry.Config{Interval: 100 * time.Millisecond, TTL: time.Second}

// node is a running registry.
type node struct {
	*registry.Registry
	stop func() // cancels Run and waits for it
}

func bucket(t *testing.T, ns *server.Server) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	_, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := natsx.Ensure(ctx, js, natsx.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	return js, res.Gateways
}

// start runs a registry for gateway id (and started, when not zero) on its
// own connection to ns, and waits until it is ready.
func start(t *testing.T, ns *server.Server, id string, started time.Time) *node {
	t.Helper()
	js, kv := bucket(t, ns)
	r, err := registry.New(fast, js, kv, registry.Gateway{ID: id, URL: "ws://" + id + "/v1/ws", Started: started}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	n := &node{Registry: r, stop: func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run of %s: %v", id, err)
		}
	}}
	t.Cleanup(n.stop)
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("Run of %s ended before ready: %v", id, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("registry %s not ready after 10s", id)
	}
	return n
}

// nextEvent waits for an event about id, skipping others.
func nextEvent(t *testing.T, ch <-chan registry.Event, id string, within time.Duration) registry.Event {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event channel closed while waiting for an event of %s", id)
			}
			if ev.Gateway.ID == id {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event of %s within %v", id, within)
		}
	}
}

// waitAlive waits until n sees other alive.
func waitAlive(t *testing.T, n, other *node) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if st, _ := n.State(other.Self().ID, other.Self().Started); st == registry.Alive {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not see %s alive", n.Self().ID, other.Self().ID)
		}
	}
}

func ids(gs []registry.Gateway) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.ID)
	}
	return out
}

func TestRegistryJoinAndHeartbeat(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := start(t, ns, "gw-a", time.Time{})
	if got := ids(a.Live()); len(got) != 1 || got[0] != "gw-a" {
		t.Fatalf("Live() of a lone gateway = %v, want [gw-a]", got)
	}
	events, cancel := a.Subscribe()
	defer cancel()
	b := start(t, ns, "gw-b", time.Time{})
	ev := nextEvent(t, events, "gw-b", 5*time.Second)
	if ev.Kind != registry.Joined || !ev.Gateway.Same(b.Self()) || ev.Gateway.URL != "ws://gw-b/v1/ws" {
		t.Fatalf("event = %+v, want gw-b joined with its URL and start time", ev)
	}
	if got := ids(a.Live()); len(got) != 2 || got[0] != "gw-a" || got[1] != "gw-b" {
		t.Fatalf("Live() = %v, want [gw-a gw-b]", got)
	}
	if got := ids(b.Live()); len(got) != 2 {
		t.Fatalf("b's Live() = %v, want both", got)
	}
	if st, _ := a.State("gw-b", b.Self().Started); st != registry.Alive {
		t.Errorf("State(gw-b) = %v, want alive", st)
	}
	if st, _ := a.State("gw-b", b.Self().Started.Add(-time.Hour)); st != registry.Gone {
		t.Errorf("State of an older incarnation of a live gateway = %v, want gone", st)
	}
	if st, _ := a.State("gw-c", time.Now()); st != registry.Unknown {
		t.Errorf("State(gw-c) = %v, want unknown", st)
	}
	// Heartbeats refresh the entry without events.
	first := a.Live()[1].Heartbeat
	time.Sleep(5 * fast.Interval)
	if hb := a.Live()[1].Heartbeat; !hb.After(first) {
		t.Errorf("gw-b's heartbeat did not advance: %v then %v", first, hb)
	}
	select {
	case ev := <-events:
		t.Errorf("heartbeats caused event %+v", ev)
	default:
	}
}

func TestRegistryCleanLeave(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := start(t, ns, "gw-a", time.Time{})
	b := start(t, ns, "gw-b", time.Time{})
	waitAlive(t, a, b)
	events, cancel := a.Subscribe()
	defer cancel()
	stoppedAt := time.Now()
	b.stop()
	ev := nextEvent(t, events, "gw-b", fast.TTL/2) // well before any expiry
	if ev.Kind != registry.Left || ev.Expired || !ev.Gateway.Same(b.Self()) {
		t.Fatalf("event = %+v, want gw-b left cleanly", ev)
	}
	if d := ev.Gateway.Heartbeat.Sub(stoppedAt); d < 0 || d > time.Second {
		t.Errorf("left at %v, %v after the stop", ev.Gateway.Heartbeat, d)
	}
	if got := ids(a.Live()); len(got) != 1 || got[0] != "gw-a" {
		t.Errorf("Live() = %v, want [gw-a]", got)
	}
	st, hb := a.State("gw-b", b.Self().Started)
	if st != registry.Gone || !hb.Equal(ev.Gateway.Heartbeat) {
		t.Errorf("State(gw-b) = %v %v, want gone at %v", st, hb, ev.Gateway.Heartbeat)
	}
	// A registry that starts later learns of the stop from the stopped entry.
	c := start(t, ns, "gw-c", time.Time{})
	if st, hb := c.State("gw-b", b.Self().Started); st != registry.Gone || !hb.Equal(ev.Gateway.Heartbeat) {
		t.Errorf("a later registry: State(gw-b) = %v %v, want gone at %v", st, hb, ev.Gateway.Heartbeat)
	}
}

func TestRegistryExpiryAfterHeartbeatsStop(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := start(t, ns, "gw-a", time.Time{})
	b := start(t, ns, "gw-b", time.Time{})
	waitAlive(t, a, b)
	events, cancel := a.Subscribe()
	defer cancel()
	killedAt := time.Now()
	b.StopHeartbeats()
	// The entry expires TTL after the last heartbeat; the server's expiry
	// scan and the watcher add a little.
	ev := nextEvent(t, events, "gw-b", fast.TTL+3*time.Second)
	took := time.Since(killedAt)
	if ev.Kind != registry.Left || !ev.Expired || !ev.Gateway.Same(b.Self()) {
		t.Fatalf("event = %+v, want gw-b expired", ev)
	}
	if took < fast.TTL-fast.Interval {
		t.Errorf("gw-b expired %v after its heartbeats stopped, before the TTL of %v", took, fast.TTL)
	}
	if d := killedAt.Sub(ev.Gateway.Heartbeat); d < 0 || d > 3*fast.Interval {
		t.Errorf("last heartbeat %v is %v before the heartbeats stopped, want within a heartbeat interval", ev.Gateway.Heartbeat, d)
	}
	if got := ids(a.Live()); len(got) != 1 {
		t.Errorf("Live() = %v, want [gw-a]", got)
	}
	// A registry that starts later learns of the death from the expiry
	// marker: the last heartbeat is about the marker's time minus the TTL.
	c := start(t, ns, "gw-c", time.Time{})
	st, hb := c.State("gw-b", b.Self().Started)
	if st != registry.Gone {
		t.Fatalf("a later registry: State(gw-b) = %v, want gone", st)
	}
	if d := hb.Sub(ev.Gateway.Heartbeat); d < -time.Second || d > 2*time.Second {
		t.Errorf("a later registry estimates the last heartbeat at %v, %v from the real %v", hb, d, ev.Gateway.Heartbeat)
	}
	if got := ids(c.Live()); len(got) != 2 || got[0] != "gw-a" || got[1] != "gw-c" {
		t.Errorf("a later registry's Live() = %v, want [gw-a gw-c]", got)
	}
	// The test hook also skips the stopped entry: Run ends quietly.
	b.stop()
	timeout := time.After(300 * time.Millisecond)
	for {
		select {
		case ev := <-events:
			if ev.Gateway.ID == "gw-b" {
				t.Errorf("stopping a dead registry caused event %+v", ev)
			}
			continue
		case <-timeout:
		}
		break
	}
}

func TestRegistryRestartUnderSameID(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := start(t, ns, "gw-a", time.Time{})
	old := start(t, ns, "gw-b", time.Now().Add(-time.Minute))
	waitAlive(t, a, old)
	events, cancel := a.Subscribe()
	defer cancel()
	old.StopHeartbeats()                   // crashed...
	b := start(t, ns, "gw-b", time.Time{}) // ...and restarted before its entry expired
	left := nextEvent(t, events, "gw-b", 5*time.Second)
	joined := nextEvent(t, events, "gw-b", 5*time.Second)
	if left.Kind != registry.Left || !left.Expired || !left.Gateway.Same(old.Self()) {
		t.Errorf("first event = %+v, want the old incarnation left", left)
	}
	if joined.Kind != registry.Joined || !joined.Gateway.Same(b.Self()) {
		t.Errorf("second event = %+v, want the new incarnation joined", joined)
	}
	if st, _ := a.State("gw-b", old.Self().Started); st != registry.Gone {
		t.Errorf("State(old gw-b) = %v, want gone", st)
	}
	if st, _ := a.State("gw-b", b.Self().Started); st != registry.Alive {
		t.Errorf("State(new gw-b) = %v, want alive", st)
	}
}

func TestRegistrySubscribeCancelAndClose(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := start(t, ns, "gw-a", time.Time{})
	ch, cancel := a.Subscribe()
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		t.Error("a cancelled subscription's channel is open")
	}
	ch2, _ := a.Subscribe()
	a.stop()
	if _, ok := <-ch2; ok {
		t.Error("the channel is open after Run returned")
	}
	ch3, _ := a.Subscribe()
	if _, ok := <-ch3; ok {
		t.Error("Subscribe after Run returned gives an open channel")
	}
}

func TestRegistryNewRejectsBadInput(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	js, kv := bucket(t, ns)
	for _, tc := range []struct {
		name string
		cfg  registry.Config
		id   string
	}{
		{"bad id", registry.Config{}, "gw.1"},
		{"empty id", registry.Config{}, ""},
		{"ttl below a second", registry.Config{TTL: 500 * time.Millisecond, Interval: 100 * time.Millisecond}, "gw-1"},
		{"ttl below two intervals", registry.Config{TTL: 2 * time.Second, Interval: 1500 * time.Millisecond}, "gw-1"},
	} {
		if _, err := registry.New(tc.cfg, js, kv, registry.Gateway{ID: tc.id}, nil); err == nil {
			t.Errorf("New with %s: no error", tc.name)
		}
	}
	if _, err := registry.New(registry.Config{}, js, nil, registry.Gateway{ID: "gw-1"}, nil); err == nil {
		t.Error("New without a bucket: no error")
	}
}

func TestRegistryBackAfterAPartition(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := start(t, ns, "gw-a", time.Time{})
	b := start(t, ns, "gw-b", time.Time{})
	// Both must have seen b's registration: one handled after Subscribe
	// would come first, as a join.
	waitAlive(t, a, b)
	waitAlive(t, b, b)
	fromA, cancelA := a.Subscribe()
	defer cancelA()
	fromB, cancelB := b.Subscribe() // b sees its own entry expire too
	defer cancelB()
	b.StopHeartbeats()
	for _, ch := range []<-chan registry.Event{fromA, fromB} {
		if ev := nextEvent(t, ch, "gw-b", fast.TTL+3*time.Second); ev.Kind != registry.Left || !ev.Expired {
			t.Fatalf("event = %+v, want gw-b expired", ev)
		}
	}
	b.ResumeHeartbeats()
	for _, ch := range []<-chan registry.Event{fromA, fromB} {
		if ev := nextEvent(t, ch, "gw-b", 2*time.Second); ev.Kind != registry.Joined || !ev.Gateway.Same(b.Self()) {
			t.Fatalf("event = %+v, want the same gw-b joined again", ev)
		}
	}
	if st, _ := a.State("gw-b", b.Self().Started); st != registry.Alive {
		t.Errorf("State(gw-b) = %v, want alive", st)
	}
}

// TestRegistryStartWaitsForTheBucket starts a registry whose bucket does not
// answer yet (as a just-made bucket of a fresh cluster may not): Run keeps
// trying to register and becomes ready once the bucket is back, instead of
// failing the gateway.
func TestRegistryStartWaitsForTheBucket(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	js, kv := bucket(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	if err := js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}
	r, err := registry.New(fast, js, kv, registry.Gateway{ID: "gw-late", URL: "ws://gw-late/v1/ws"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	ended := false // Run's result was taken
	defer func() {
		stop()
		if ended {
			return
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case err := <-done:
		ended = true
		t.Fatalf("Run ended while the bucket was missing: %v", err)
	case <-r.Ready():
		t.Fatal("ready without a bucket")
	case <-time.After(700 * time.Millisecond):
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Ready():
	case err := <-done:
		ended = true
		t.Fatalf("Run ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready 10 s after the bucket came back")
	}
	if live := r.Live(); len(live) != 1 || live[0].ID != "gw-late" {
		t.Fatalf("live set %v, want gw-late", ids(live))
	}
}
