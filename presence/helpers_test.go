package presence_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/await"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/internal/wire"
	"github.com/jetchat/jetchat/presence"
)

var _ gateway.Presence = (*presence.Tracker)(nil)

// testCfg is the presence configuration of most tests: a short grace.
var testCfg = presence.Config{Grace: 300 * time.Millisecond}

// fastReg expires a silent gateway after about a second.
var fastReg = registry.Config{Interval: 100 * time.Millisecond, TTL: time.Second}

// node is one gateway's registry and tracker on their own connection.
type node struct {
	*presence.Tracker
	Reg  *registry.Registry
	NC   *nats.Conn
	JS   jetstream.JetStream
	stop func()
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startNode runs gateway id's registry and tracker against ns until the test
// ends, and waits until they are ready.
func startNode(t testing.TB, ns *server.Server, id string, cfg presence.Config, rcfg registry.Config) *node {
	t.Helper()
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := natsx.Ensure(ctx, js, natsx.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(rcfg, js, res.Gateways, registry.Gateway{ID: id}, logger())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := presence.New(cfg, nc, res.Presence, reg, logger())
	if err != nil {
		t.Fatal(err)
	}
	regCtx, stopReg := context.WithCancel(context.Background())
	trCtx, stopTr := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := reg.Run(regCtx); err != nil {
			t.Errorf("registry of %s: %v", id, err)
		}
	})
	wg.Go(func() {
		if err := tr.Run(trCtx); err != nil {
			t.Errorf("tracker of %s: %v", id, err)
		}
	})
	var once sync.Once
	n := &node{Tracker: tr, Reg: reg, NC: nc, JS: js, stop: func() {
		once.Do(func() {
			stopTr()
			stopReg()
			wg.Wait()
		})
	}}
	t.Cleanup(n.stop)
	select {
	case <-reg.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("registry of %s not ready", id)
	}
	return n
}

// recorder is a session that records presence frames.
type recorder struct {
	ch chan wire.Presence
}

func newRecorder() *recorder { return &recorder{ch: make(chan wire.Presence, 4096)} }

func (r *recorder) Deliver(b []byte) bool {
	var p wire.Presence
	if err := json.Unmarshal(b, &p); err != nil || p.Type != wire.TypePresence {
		panic("not a presence frame: " + string(b))
	}
	select {
	case r.ch <- p:
		return true
	default:
		return false
	}
}

// next waits for the next frame.
func (r *recorder) next(t testing.TB, within time.Duration) wire.Presence {
	t.Helper()
	select {
	case p := <-r.ch:
		return p
	default:
	}
	select {
	case p := <-r.ch:
		return p
	case <-time.After(within):
		t.Fatalf("no presence frame within %v", within)
		return wire.Presence{}
	}
}

// expect waits for the next frame and checks its user and online state;
// it returns the frame.
func (r *recorder) expect(t testing.TB, user string, online bool, within time.Duration) wire.Presence {
	t.Helper()
	p := r.next(t, within)
	if p.User != user || p.Online != online {
		t.Fatalf("frame = %+v, want user %s online=%v", p, user, online)
	}
	if online && p.LastSeen != 0 {
		t.Errorf("frame %+v: an online user has a last_seen", p)
	}
	return p
}

// quiet checks that no frame arrives for d.
func (r *recorder) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case p := <-r.ch:
		t.Fatalf("unexpected frame %+v", p)
	case <-time.After(d):
	}
}

// revisions is the number of writes the presence bucket has taken.
func revisions(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "KV_"+natsx.BucketPresence)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// settle waits until the presence bucket has taken no write for quiet.
func settle(t testing.TB, js jetstream.JetStream, quiet time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := revisions(t, js)
	for time.Now().Before(deadline) {
		time.Sleep(quiet)
		cur := revisions(t, js)
		if cur == last {
			return cur
		}
		last = cur
	}
	t.Fatal("the presence bucket keeps being written")
	return 0
}

func ctx5(t testing.TB) context.Context { return await.Context(t, 5*time.Second) }

func msNear(t testing.TB, what string, got int64, want time.Time, tol time.Duration) {
	t.Helper()
	d := time.Duration(got-want.UnixMilli()) * time.Millisecond
	if d < -tol || d > tol {
		t.Errorf("%s = %v, %v from the expected %v", what, time.UnixMilli(got), d, want)
	}
}
