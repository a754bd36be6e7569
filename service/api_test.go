package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/service"
	"github.com/jetchat/jetchat/svcapi"
)

// TestBotSendIsStoredLikeAClientSend sends as bot-echo with the example
// bot's nats.conf credentials: the message is in bob's inbox in the v1
// envelope, a repeated cid answers the same id, and bad requests get the
// client protocol's error codes.
func TestBotSendIsStoredLikeAClientSend(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	n := startNode(t, s, service.Config{})
	bot := connectService(t, s, "svc-echo")
	ctx := testCtx(t)

	sent, err := bot.client.Send(ctx, svcapi.SendRequest{From: "bot-echo", CID: "c1", To: "bob", Body: "hello from a bot"})
	if err != nil {
		t.Fatal(err)
	}
	if sent.Type != "sent" || sent.CID != "c1" || !strings.HasPrefix(sent.ID, "m") || sent.TS == 0 {
		t.Fatalf("Send = %+v, want a sent answer", sent)
	}
	again, err := bot.client.Send(ctx, svcapi.SendRequest{From: "bot-echo", CID: "c1", To: "bob", Body: "hello from a bot"})
	if err != nil || again.ID != sent.ID || again.TS != sent.TS {
		t.Fatalf("repeated cid: %+v, %v; want %+v", again, err, sent)
	}

	// The record in bob's inbox, as a service consumer reads it.
	st, err := n.js.Stream(ctx, natsx.StreamMsgs)
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedInfo().State.Msgs != 1 {
		t.Errorf("stream holds %d records, want 1 (the repeat is deduplicated)", st.CachedInfo().State.Msgs)
	}
	raw, err := st.GetLastMsgForSubject(ctx, "chat.u.bob")
	if err != nil {
		t.Fatal(err)
	}
	if v := raw.Header.Get(svcapi.HdrVersion); v != "1" {
		t.Errorf("record header %s = %q, want 1", svcapi.HdrVersion, v)
	}
	ev, err := svcapi.Decode(raw.Subject, raw.Sequence, raw.Header, raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := svcapi.Message{ID: sent.ID, From: "bot-echo", To: "bob", Body: "hello from a bot", TS: sent.TS}
	if ev.Kind != svcapi.KindMessage || ev.Message == nil || *ev.Message != want {
		t.Errorf("decoded record = %+v (message %+v), want kind msg and %+v", ev, ev.Message, want)
	}

	for _, tc := range []struct {
		name string
		req  svcapi.SendRequest
		code string
	}{
		{"bad recipient", svcapi.SendRequest{From: "bot-echo", CID: "c2", To: "a.b", Body: "x"}, "bad_request"},
		{"no target", svcapi.SendRequest{From: "bot-echo", CID: "c3", Body: "x"}, "bad_request"},
		{"empty body", svcapi.SendRequest{From: "bot-echo", CID: "c4", To: "bob"}, "bad_request"},
		{"body too large", svcapi.SendRequest{From: "bot-echo", CID: "c5", To: "bob", Body: strings.Repeat("x", 64<<10+1)}, "too_large"},
		{"no such group", svcapi.SendRequest{From: "bot-echo", CID: "c6", Group: "g1", Body: "x"}, "not_found"},
		{"media never uploaded", svcapi.SendRequest{From: "bot-echo", CID: "c7", To: "bob", Body: "x", Media: "abc"}, "not_found"},
	} {
		_, err := bot.client.Send(ctx, tc.req)
		var e *svcapi.Error
		if !errors.As(err, &e) || e.Code != tc.code || e.CID != tc.req.CID {
			t.Errorf("%s: Send = %v, want a %s error with cid %q", tc.name, err, tc.code, tc.req.CID)
		}
	}

	// Raw requests: "from" must name the subject's bot; the type, when
	// given, must be send.
	for _, tc := range []struct{ body, code string }{
		{`{"from":"bot-other","cid":"c8","to":"bob","body":"x"}`, "bad_request"},
		{`{"type":"ack","ids":["m1"]}`, "bad_request"},
		{`{"cid":"c10","to":"bob","body":"x","ack":["m1"]}`, "bad_request"},
		{`not json`, "bad_request"},
		{`{"type":"send","from":"bot-echo","cid":"c9","to":"bob","body":"typed"}`, ""},
	} {
		m, err := bot.nc.RequestWithContext(ctx, natsx.SvcSend("bot-echo"), []byte(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var r struct{ Type, Code string }
		json.Unmarshal(m.Data, &r)
		if (tc.code == "" && r.Type != "sent") || (tc.code != "" && r.Code != tc.code) {
			t.Errorf("request %s answered %s, want code %q", tc.body, m.Data, tc.code)
		}
	}
}

// TestBotsAreLimitedByTheNode: an operator (unrestricted NATS user) still
// cannot send as a user outside --service-bots.
func TestBotsAreLimitedByTheNode(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	startNode(t, s, service.Config{Bots: []string{"bot-*", "helpdesk"}})
	admin := connectService(t, s, "admin")
	ctx := testCtx(t)
	for _, tc := range []struct {
		from string
		ok   bool
	}{{"bot-x", true}, {"helpdesk", true}, {"alice", false}, {"helpdesk2", false}} {
		_, err := admin.client.Send(ctx, svcapi.SendRequest{From: tc.from, CID: "c", To: "bob", Body: "hi"})
		var e *svcapi.Error
		if tc.ok && err != nil || !tc.ok && (!errors.As(err, &e) || e.Code != "forbidden") {
			t.Errorf("send as %s: %v, want ok=%v (else forbidden)", tc.from, err, tc.ok)
		}
	}
	if _, err := service.NewAPI(service.Config{Bots: []string{"*"}}, admin.nc, admin.js, nil, nil, nil); err == nil {
		t.Error(`NewAPI with bot pattern "*" succeeded, want an error`)
	}
}

// TestServiceCannotForge connects with the example bot's credentials and
// tries what nats.conf forbids: the server refuses each.
func TestServiceCannotForge(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	n := startNode(t, s, service.Config{})
	bot := connectService(t, s, "svc-echo")

	// Core publishes to the subjects every gateway trusts.
	for _, subj := range []string{"chat.u.bob", "live.u.bob", "presence.bob", "cids.gw1", "jetchat.groups.changed.g1", "$KV.jetchat_devices.bob"} {
		m := nats.NewMsg(subj)
		m.Header.Set("Jc-Kind", "msg")
		m.Header.Set("Jc-From", "alice")
		m.Data = []byte(`{"type":"message","from":"alice","to":"bob","body":"forged","ts":1}`)
		if err := bot.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		bot.nc.Flush()
		err := bot.permissionError(t, "publish to "+subj)
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subj) {
			t.Errorf("publish to %s: server said %v, want a permissions violation", subj, err)
		}
	}
	// Requests to subjects the service may not publish to: the server
	// refuses them (reported asynchronously; the request gets no answer).
	for _, tc := range []struct {
		what, subject string
		call          func(context.Context) error
	}{
		{"JetStream publish to an inbox", "chat.u.bob", func(ctx context.Context) error {
			_, err := bot.js.Publish(ctx, "chat.u.bob", []byte(`{"type":"message"}`))
			return err
		}},
		{"send as another bot", natsx.SvcSend("bot-other"), func(ctx context.Context) error {
			_, err := bot.client.Send(ctx, svcapi.SendRequest{From: "bot-other", CID: "c", To: "bob", Body: "x"})
			return err
		}},
		{"a consumer on alice's inbox", natsx.SvcConsumerPrefix + "svc-echo.u.alice", func(ctx context.Context) error {
			_, err := bot.client.Consumer(ctx, "svc-echo", svcapi.UserScope("alice"), svcapi.ConsumerConfig{})
			return err
		}},
		// A consumer made directly could push records to any subject.
		{"a consumer through the JetStream API", "$JS.API.CONSUMER.CREATE.JETCHAT_MSGS.svc-echo", func(ctx context.Context) error {
			_, err := bot.js.CreateOrUpdateConsumer(ctx, natsx.StreamMsgs, jetstreamPush("svc-echo", "live.u.bob"))
			return err
		}},
	} {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := tc.call(rctx)
		cancel()
		if err == nil {
			t.Errorf("%s succeeded", tc.what)
			continue
		}
		if perr := bot.permissionError(t, tc.what); !errors.Is(perr, nats.ErrPermissionViolation) || !strings.Contains(perr.Error(), tc.subject) {
			t.Errorf("%s: server said %v, want a permissions violation on %s", tc.what, perr, tc.subject)
		}
	}
	// Subscribing to the live traffic.
	if _, err := bot.nc.SubscribeSync("live.>"); err != nil {
		t.Fatal(err)
	}
	bot.nc.Flush()
	if err := bot.permissionError(t, "subscribe to live.>"); !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("subscribe to live.>: %v, want a permissions violation", err)
	}

	info, err := n.res.Msgs.Info(ctx10(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("the log holds %d records after the forgery attempts, want 0", info.State.Msgs)
	}
}
