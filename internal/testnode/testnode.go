// Package testnode runs jetchat nodes inside a test: a real gateway on a
// loopback HTTP listener and a real delivery service on a real NATS server
// (natstest), so tests talk to them over real WebSockets with package client.
package testnode

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/metrics"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/objectstore"
	"github.com/jetchat/jetchat/presence"
)

// Secret is the HS256 secret every test node accepts.
var Secret = []byte("jetchat-test-secret-0123456789abcdef")

// Options change a node's configuration.
type Options struct {
	Gateway  gateway.Config
	Delivery delivery.Config
	// Groups, when set, builds the node's group membership component; it
	// is given to delivery and to the gateway.
	Groups func(t testing.TB, w Wiring) Groups
	// Wire, when set, adds components to the gateway's dependencies (it may
	// set deps.Presence, deps.Media). It runs after the delivery service
	// exists.
	Wire func(t testing.TB, w Wiring, deps *gateway.Deps)
}

// Groups is a membership component for both delivery and the gateway.
type Groups interface {
	delivery.Groups
	gateway.Groups
}

// Wiring is what a node's components are built from.
type Wiring struct {
	NC        *nats.Conn
	JS        jetstream.JetStream
	Resources *natsx.Resources
	Metrics   *metrics.Metrics
	Delivery  *delivery.Service
	Log       *slog.Logger
}

// Node is a running gateway and delivery service.
type Node struct {
	// URL is the HTTP base (http://127.0.0.1:port); WS the WebSocket URL.
	URL, WS  string
	Gateway  *gateway.Server
	Delivery *delivery.Service
	Metrics  *metrics.Metrics
	NC       *nats.Conn
	JS       jetstream.JetStream

	stop func()
}

// Start runs a node against ns. It stops when the test ends.
func Start(t testing.TB, ns *server.Server, opts Options) *Node {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := natsx.Ensure(ctx, js, natsx.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := metrics.New()
	dc := opts.Delivery
	if dc.ReceiptDelay == 0 {
		dc.ReceiptDelay = 10 * time.Millisecond
	}
	if dc.CursorFlush == 0 {
		dc.CursorFlush = 100 * time.Millisecond
	}
	// The delivery service has a connection of its own that buffers
	// nothing while it reconnects, as in `jetchat serve`.
	dnc, err := nats.Connect(ns.ClientURL(), append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, natsx.StoreConnOptions()...)...)
	if err != nil {
		t.Fatal(err)
	}
	djs, err := jetstream.New(dnc)
	if err != nil {
		t.Fatal(err)
	}
	var groups Groups
	var dgroups delivery.Groups
	if opts.Groups != nil {
		groups = opts.Groups(t, Wiring{NC: nc, JS: js, Resources: res, Metrics: m, Log: log})
		dgroups = groups
	}
	d, err := delivery.New(dc, dnc, djs, res, dgroups, m, log)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.NewKeys(Secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	gc := opts.Gateway
	if gc.SendRate == 0 {
		gc.SendRate = 10000
		gc.SendBurst = 10000
	}
	deps := gateway.Deps{Delivery: d, Keys: keys}
	if groups != nil {
		deps.Groups = groups
	}
	if opts.Wire != nil {
		opts.Wire(t, Wiring{NC: nc, JS: js, Resources: res, Metrics: m, Delivery: d, Log: log}, &deps)
	}
	gw, err := gateway.New(gc, deps, m, log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gw)
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(runCtx) }()
	n := &Node{
		URL: hs.URL, WS: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws",
		Gateway: gw, Delivery: d, Metrics: m, NC: nc, JS: js,
	}
	stopped := false
	n.stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hs.Config.SetKeepAlivesEnabled(false)
		gw.Shutdown(ctx)
		stopRun()
		if err := <-runDone; err != nil {
			t.Logf("delivery stopped with: %v", err)
		}
		hs.Close()
		dnc.Close()
		nc.Close()
	}
	t.Cleanup(n.stop)
	return n
}

// Stop shuts the node down (drain), as SIGTERM would.
func (n *Node) Stop() { n.stop() }

// Token mints a token for user and device.
func Token(t testing.TB, user, device string) string {
	t.Helper()
	tok, err := auth.Mint(Secret, user, device, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Dial connects user's device to the node; the connection closes when the
// test ends.
func (n *Node) Dial(t testing.TB, user, device string) *client.Conn {
	t.Helper()
	return n.DialWith(t, user, device, client.Options{})
}

// DialWith is Dial with the session's options.
func (n *Node) DialWith(t testing.TB, user, device string, o client.Options) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialWith(ctx, n.WS, Token(t, user, device), o)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, device, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// API is an HTTP client of the node acting as user.
func (n *Node) API(t testing.TB, user string) *client.API {
	return &client.API{BaseURL: n.URL, Token: Token(t, user, "")}
}

// WirePresence gives a node (from Options.Wire) a gateway registry entry
// under id and a presence tracker with cfg, both running until the test
// ends; it returns once the registry knows the live gateways.
func WirePresence(t testing.TB, w Wiring, deps *gateway.Deps, id string, cfg presence.Config) *presence.Tracker {
	t.Helper()
	reg, err := registry.New(registry.Config{}, w.JS, w.Resources.Gateways, registry.Gateway{ID: id}, w.Log)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := presence.New(cfg, w.NC, w.Resources.Presence, reg, w.Log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { reg.Run(ctx); done <- struct{}{} }()
	go func() { tr.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	<-reg.Ready()
	deps.Presence = tr
	return tr
}

// WireMedia gives a node (from Options.Wire) a media store with cfg, which
// asks members whether a group's recipients may read an object.
func WireMedia(t testing.TB, w Wiring, deps *gateway.Deps, cfg objectstore.Config, members objectstore.GroupMembership) *objectstore.Store {
	t.Helper()
	s, err := objectstore.New(cfg, w.NC, w.Resources.Media, w.Resources.MediaACL, members, w.Log)
	if err != nil {
		t.Fatal(err)
	}
	deps.Media = s
	return s
}
