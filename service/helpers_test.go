package service_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/internal/await"
	"github.com/jetchat/jetchat/internal/metrics"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/service"
	"github.com/jetchat/jetchat/svcapi"
)

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// node is the part of a jetchat node that backend services talk to: the
// delivery service and the service API, connected as nats.conf's jetchat
// user.
type node struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	res *natsx.Resources
	d   *delivery.Service
}

// startNode runs delivery and the service API on s until the test ends.
func startNode(t *testing.T, s *server.Server, cfg service.Config) *node {
	t.Helper()
	return startNodeWith(t, s, cfg, nil)
}

// startNodeWith is startNode with group membership.
func startNodeWith(t *testing.T, s *server.Server, cfg service.Config, groups delivery.Groups) *node {
	t.Helper()
	nc, js := natstest.ConnectUser(t, s, "jetchat", natstest.Password("jetchat"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := natsx.Ensure(ctx, js, natsx.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	d, err := delivery.New(delivery.Config{ReceiptDelay: 10 * time.Millisecond, CursorFlush: 100 * time.Millisecond}, nc, js, res, groups, metrics.New(), testLog())
	if err != nil {
		t.Fatal(err)
	}
	api, err := service.NewAPI(cfg, nc, js, d, nil, testLog())
	if err != nil {
		t.Fatal(err)
	}
	run(t, d.Run, api.Run)
	<-api.Ready()
	return &node{nc: nc, js: js, res: res, d: d}
}

// run runs each fn until the test ends, and fails the test when one returns
// an error.
func run(t *testing.T, fns ...func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil {
				t.Errorf("run: %v", err)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// svc is a backend service connected with its nats.conf credentials.
type svc struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	client *svcapi.Client
	errs   chan error // asynchronous errors the server sent (permission violations)
}

func connectService(t *testing.T, s *server.Server, user string) *svc {
	t.Helper()
	errs := make(chan error, 64)
	nc, js := natstest.ConnectUser(t, s, user, natstest.Password(user), svcapi.Inbox(user),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	c, err := svcapi.NewClient(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &svc{nc: nc, js: js, client: c, errs: errs}
}

// permissionError waits for the server's permission violation.
func (s *svc) permissionError(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no error from the server", what)
		return nil
	}
}

// ctx10 bounds one step of a test (await.Step); testCtx a whole test's
// steps (await.Whole).
func ctx10(t *testing.T) context.Context   { return await.Context(t, await.Step) }
func testCtx(t *testing.T) context.Context { return await.Context(t, await.Whole) }

// jetstreamPush is a push consumer configuration delivering to subject.
func jetstreamPush(name, subject string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Durable: name, DeliverSubject: subject, AckPolicy: jetstream.AckExplicitPolicy}
}

var jetstreamErrNotFound = jetstream.ErrConsumerNotFound
