package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pgtest"
	"github.com/jetchat/jetchat/objectstore"
	"github.com/jetchat/jetchat/svcapi"
)

// TestServeWithAccountsPushes runs serve against a NATS server with
// nats.conf's accounts, as user jetchat, with --push: a push sender
// connected as svc-push gets an event for a message to an offline user,
// none for an online one. A wrong password stops serve at start.
func TestServeWithAccountsPushes(t *testing.T) {
	t.Parallel()
	ns := natstest.RunAccounts(t)
	data := t.TempDir()
	getenv := env("DATABASE_URL", pgtest.NewURL(t), "JETCHAT_DATA", data,
		"JETCHAT_NATS_USER", "jetchat", "JETCHAT_NATS_PASSWORD", natstest.Password("jetchat"))
	addr := startServe(t, getenv, "--nats-url", ns.ClientURL(), "--push")

	pusher, _ := natstest.ConnectUser(t, ns, "svc-push", natstest.Password("svc-push"), svcapi.Inbox("svc-push"))
	events := make(chan *nats.Msg, 16)
	if _, err := pusher.ChanSubscribe(svcapi.PushPrefix+">", events); err != nil {
		t.Fatal(err)
	}
	pusher.Flush()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, admin := natstest.ConnectUser(t, ns, "admin", natstest.Password("admin"))
	for {
		if _, err := admin.Consumer(ctx, natsx.StreamMsgs, natsx.ConsumerPush); err == nil {
			break
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) || ctx.Err() != nil {
			t.Fatalf("push consumer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dial := func(user string) *client.Conn {
		c, err := client.Dial(ctx, "ws://"+addr+"/v1/ws", mintToken(t, getenv, "--user", user))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice := dial("alice")
	dial("carol")
	// Presence records a connection asynchronously: wait until it knows
	// carol is online, the state the push worker consults.
	api := &client.API{BaseURL: "http://" + addr, Token: mintToken(t, getenv, "--user", "alice")}
	for {
		var p struct{ Online bool }
		if err := api.Do(ctx, "GET", "/v1/presence/carol", nil, &p); err == nil && p.Online {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("carol never shows online")
		}
		time.Sleep(20 * time.Millisecond)
	}
	toBob, err := alice.Send(ctx, "bob", "bob is offline")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, "carol", "carol is online"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-events:
		var ev svcapi.PushEvent
		json.Unmarshal(m.Data, &ev)
		if ev.User != "bob" || ev.Msg != toBob.ID || ev.From != "alice" || strings.Contains(string(m.Data), "offline") {
			t.Errorf("push event %s, want one for bob about %s without the text", m.Data, toBob.ID)
		}
	case <-ctx.Done():
		t.Fatal("no push event for bob")
	}
	select {
	case m := <-events:
		t.Errorf("unexpected push event %s", m.Data)
	case <-time.After(time.Second):
	}

	err = run(ctx, []string{"serve", "--http", "127.0.0.1:0", "--nats-url", ns.ClientURL()},
		env("DATABASE_URL", pgtest.NewURL(t), "JETCHAT_DATA", t.TempDir(), "JETCHAT_NATS_USER", "jetchat", "JETCHAT_NATS_PASSWORD", "wrong"), &syncWriter{}, &syncWriter{})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("serve with a wrong NATS password: %v, want an authorization error", err)
	}
}

// TestRetentionExpiresMessagesAndReceipts runs serve with --retention 2s:
// a message and its receipt leave the log when their time is up.
func TestRetentionExpiresMessagesAndReceipts(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	natsAddr := freePort(t)
	getenv := env("DATABASE_URL", pgtest.NewURL(t), "JETCHAT_DATA", data)
	addr := startServe(t, getenv, "--nats-listen", natsAddr, "--retention", "2s", "--dedup-window", "1s", "--receipt-delay", "10ms")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, err := client.Dial(ctx, "ws://"+addr+"/v1/ws", mintToken(t, getenv, "--user", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Dial(ctx, "ws://"+addr+"/v1/ws", mintToken(t, getenv, "--user", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	sent, err := alice.Send(ctx, "bob", "short-lived")
	if err != nil {
		t.Fatal(err)
	}
	if f, err := bob.Next(ctx); err != nil || f.Message == nil {
		t.Fatalf("bob: %v, %v", f, err)
	}
	bob.Ack(sent.ID)
	if f, err := alice.Next(ctx); err != nil || f.Receipt == nil {
		t.Fatalf("alice: %v, %v; want the receipt", f, err)
	}
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	count := func() uint64 {
		st, err := js.Stream(ctx, natsx.StreamMsgs)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Msgs
	}
	if n := count(); n != 2 {
		t.Fatalf("the log holds %d records, want the message and the receipt", n)
	}
	start := time.Now()
	for count() != 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("after %v the log still holds %d records", time.Since(start), count())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And the history no longer has it.
	var h struct{ Messages []json.RawMessage }
	api := &client.API{BaseURL: "http://" + addr, Token: mintToken(t, getenv, "--user", "alice")}
	if err := api.Do(ctx, "GET", "/v1/messages?with=bob", nil, &h); err != nil || len(h.Messages) != 0 {
		t.Errorf("history after expiry = %d messages, %v; want none", len(h.Messages), err)
	}
}

// TestMediaRetention runs the media store as serve builds it for
// --media-retention, with a short retention and sweep: media a message
// carried is removed from the object store bucket once its time is up.
func TestMediaRetention(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := natsx.Ensure(ctx, js, natsx.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	store, err := objectstore.New(objectstore.Config{Retention: time.Second, GracePeriod: time.Second, SweepInterval: 100 * time.Millisecond},
		nc, res.Media, res.MediaACL, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.Run(rctx) }()
	defer func() { stop(); <-done }()
	info, err := store.Put(ctx, "alice", "text/plain", strings.NewReader("a photo, honestly"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Attach(ctx, "alice", info.ID, chat.MediaGrant{Users: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		// A listing that meets the sweeper's delete may wait for an entry
		// that is gone: each try gets its own short time.
		lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
		objs, err := res.Media.List(lctx)
		lcancel()
		if errors.Is(err, jetstream.ErrNoObjectsFound) {
			break
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("after %v the media bucket still holds %d objects (%v)", time.Since(start), len(objs), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := store.Open(ctx, "bob", info.ID); !errors.Is(err, chat.ErrNotFound) {
		t.Errorf("Open after expiry: %v, want not found", err)
	}
}
