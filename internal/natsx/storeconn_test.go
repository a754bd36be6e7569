package natsx_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/await"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
)

// A store made while the store connection reconnects fails at once and is
// never stored later, while a connection with nats.go's default buffer
// stores what it was given whenever it gets back.
func TestStoreConnBuffersNothingWhileReconnecting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := natstest.RunJetStreamAt(t, "127.0.0.1:0", dir)
	url, addr := s.ClientURL(), s.Addr().String()
	connect := func(opts ...nats.Option) *nats.Conn {
		nc, err := nats.Connect(url, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	buffered, store := connect(), connect(natsx.StoreConnOptions()...)
	js, err := jetstream.New(buffered)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}

	s.Shutdown()
	s.WaitForShutdown()
	await.True(t, await.Step, "both connections reconnecting", func() bool {
		return buffered.Status() == nats.RECONNECTING && store.Status() == nats.RECONNECTING
	})
	if err := buffered.Publish("t.buffered", []byte("x")); err != nil {
		t.Fatalf("the buffered connection refused a publish while reconnecting: %v", err)
	}
	if _, err := natsx.Publish(store, &nats.Msg{Subject: "t.store", Data: []byte("x")}, time.Second); err == nil {
		t.Fatal("a store while the store connection reconnects succeeded")
	}

	natstest.RunJetStreamAt(t, addr, dir) // the same address and store
	await.True(t, await.Step, "both connections back", func() bool { return buffered.IsConnected() && store.IsConnected() })
	for _, nc := range []*nats.Conn{buffered, store} {
		if err := nc.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("t.>"))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects["t.buffered"]; n != 1 {
		t.Errorf("the buffered connection's publish was stored %d times, want once (the contrast this test rests on)", n)
	}
	if n := info.State.Subjects["t.store"]; n != 0 {
		t.Errorf("the store made while reconnecting was stored %d times after the connection came back, want never", n)
	}
}

// A barrier returns once the stream has handled what was queued to it
// before, and stores nothing itself.
func TestBarrierComesAfterWhatWasQueued(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.*"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	body := make([]byte, 512)
	for range n {
		if err := nc.Publish("t.queued", body); err != nil {
			t.Fatal(err)
		}
	}
	if err := natsx.Barrier(nc, "t.barrier", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("t.*"))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects["t.queued"]; got != n {
		t.Errorf("when the barrier returned the stream held %d of the %d messages queued before it", got, n)
	}
	if got := info.State.Subjects["t.barrier"]; got != 0 {
		t.Errorf("the barrier stored %d messages, want none", got)
	}
	if err := natsx.Barrier(nc, "t.nostream.x", time.Second); err == nil {
		t.Error("a barrier on a subject no stream stores returned nil")
	}
}
