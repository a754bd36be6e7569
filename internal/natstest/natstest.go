// Package natstest runs real, JetStream-enabled nats-servers for tests: each
// on a random loopback port with its store in the test's temporary folder,
// shut down when the test ends.
package natstest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natsx"
)

// RunJetStream starts a nats-server with JetStream on file storage. Writes are
// synced on an interval (tests do not measure durability against power loss).
func RunJetStream(t testing.TB) *server.Server {
	t.Helper()
	return RunJetStreamAt(t, "127.0.0.1:0", t.TempDir())
}

// RunJetStreamAt is RunJetStream listening on listen with its store in
// dir, so a test can restart a server at the address and on the data of
// one it shut down.
func RunJetStreamAt(t testing.TB, listen, dir string) *server.Server {
	t.Helper()
	s, err := natsx.StartEmbedded(natsx.EmbeddedConfig{
		Name:         "test",
		Listen:       listen,
		StoreDir:     dir,
		SyncInterval: time.Minute,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection to s, closed when the test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// LaggingReplica stands a mirror of stream beside it that answers the
// stream's direct gets as one of its replicas would, but holds only the
// records of probe (a subject of stream): a replica that lags behind
// everything else, so that about half the direct gets of other records
// miss them. It stores one record on probe, after which the mirror starts
// answering, and returns once missed (a read of a record the mirror lacks)
// reports a miss; the test fails if none comes, as it would show nothing.
func LaggingReplica(t testing.TB, js jetstream.JetStream, stream, probe string, missed func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:         "LAGGING_" + stream,
		Storage:      jetstream.FileStorage,
		Mirror:       &jetstream.StreamSource{Name: stream, FilterSubject: probe},
		AllowDirect:  true,
		MirrorDirect: true,
	}); err != nil {
		t.Fatalf("lagging replica of %s: %v", stream, err)
	}
	if _, err := js.Publish(ctx, probe, []byte("probe")); err != nil {
		t.Fatalf("lagging replica of %s: %v", stream, err)
	}
	for range 200 {
		if missed() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the lagging replica of %s answered no read", stream)
}
