package natstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RunConfig starts a nats-server from configuration text, as nats-server -c
// would read it (accounts, users, permissions): on a random loopback port,
// with JetStream storing in the test's temporary folder. conf must not set
// listen or jetstream; RunConfig adds them.
func RunConfig(t testing.TB, conf string) *server.Server {
	t.Helper()
	dir := t.TempDir()
	full := fmt.Sprintf("listen: 127.0.0.1:-1\nserver_name: test\njetstream {\n  store_dir: %q\n  sync_interval: 1m\n}\n\n%s\n", filepath.Join(dir, "js"), conf)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server configuration: %v\n%s", err, numbered(full))
	}
	opts.NoSigs = true
	opts.NoLog = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// ConnectUser opens a client connection to s as user with password, closed
// when the test ends; opts are added to the connection's options.
func ConnectUser(t testing.TB, s *server.Server, user, password string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), append([]nats.Option{nats.UserInfo(user, password), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		t.Fatalf("connect to nats-server as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(s, "\n") {
		fmt.Fprintf(&b, "%4d  %s\n", i+1, l)
	}
	return b.String()
}
