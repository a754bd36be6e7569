package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/service"
	"github.com/jetchat/jetchat/svcapi"
)

// fakePresence says who is online; a user in failOnce fails its first
// look-up.
type fakePresence struct {
	mu       sync.Mutex
	online   map[string]bool
	failOnce map[string]bool
	calls    map[string]int
}

func (p *fakePresence) Get(_ context.Context, viewer, user string) (chat.PresenceState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls == nil {
		p.calls = map[string]int{}
	}
	p.calls[user]++
	if p.failOnce[user] {
		delete(p.failOnce, user)
		return chat.PresenceState{}, chat.ErrUnavailable
	}
	return chat.PresenceState{User: user, Online: p.online[user]}, nil
}

// fakeGroups is a fixed membership: every group has the same members, at
// every position.
type fakeGroups struct{ members []string }

func (g fakeGroups) IsMember(_ context.Context, group, user string) (bool, error) {
	return slices.Contains(g.members, user), nil
}
func (g fakeGroups) Memberships(context.Context, string, uint64) ([]chat.Interval, error) {
	return nil, nil
}
func (g fakeGroups) MembersAt(context.Context, string, uint64) ([]string, error) {
	return g.members, nil
}
func (g fakeGroups) WasMember(_ context.Context, group, user string, _ uint64) (bool, error) {
	return slices.Contains(g.members, user), nil
}

// pushListener is a push sender: svc-push's subscription to every event.
func pushListener(t *testing.T, s *svc) <-chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 256)
	if _, err := s.nc.ChanSubscribe(svcapi.PushPrefix+">", ch); err != nil {
		t.Fatal(err)
	}
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// collect reads events until none came for quiet.
func collect(t *testing.T, ch <-chan *nats.Msg, quiet time.Duration) []*nats.Msg {
	var out []*nats.Msg
	for {
		select {
		case m := <-ch:
			out = append(out, m)
		case <-time.After(quiet):
			return out
		}
	}
}

// TestPushNotifiesOfflineRecipients: one event per message and offline
// recipient — the recipient of a 1:1 message, each offline member of a
// group but the sender — with ids and no text; online users and the
// sender get none.
func TestPushNotifiesOfflineRecipients(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	n := startNodeWith(t, s, service.Config{}, fakeGroups{members: []string{"alice", "bob", "carol", "dave"}})
	pres := &fakePresence{online: map[string]bool{"carol": true}}
	// Two nodes' push workers share the consumer.
	for i := 0; i < 2; i++ {
		p, err := service.NewPusher(service.PushConfig{}, n.nc, n.js, pres, fakeGroups{members: []string{"alice", "bob", "carol", "dave"}}, testLog())
		if err != nil {
			t.Fatal(err)
		}
		run(t, p.Run)
	}
	waitConsumer(t, n)
	events := pushListener(t, connectService(t, s, "svc-push"))
	ctx := testCtx(t)
	send := func(req chat.SendRequest) string {
		sent, err := n.d.SendAs(ctx, "alice", req)
		if err != nil {
			t.Fatal(err)
		}
		return sent.ID
	}
	toBob := send(chat.SendRequest{CID: "1", To: "bob", Body: "secret text"})
	send(chat.SendRequest{CID: "2", To: "carol", Body: "carol is online"})
	send(chat.SendRequest{CID: "3", To: "alice", Body: "a note to self"})
	inGroup := send(chat.SendRequest{CID: "4", Group: "g1", Body: "group secret"})

	got := map[string]svcapi.PushEvent{}
	for _, m := range collect(t, events, time.Second) {
		var ev svcapi.PushEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		var fields map[string]any
		json.Unmarshal(m.Data, &fields)
		for _, k := range []string{"body", "preview"} {
			if _, ok := fields[k]; ok {
				t.Errorf("event %s carries %q: no text may leave by default", m.Data, k)
			}
		}
		if m.Subject != svcapi.PushPrefix+ev.User || m.Header.Get("Nats-Msg-Id") != "push:"+ev.User+":"+ev.Msg {
			t.Errorf("event on %s with Nats-Msg-Id %q: %s", m.Subject, m.Header.Get("Nats-Msg-Id"), m.Data)
		}
		key := ev.User + " " + ev.Msg
		if _, dup := got[key]; dup {
			t.Errorf("event %s repeated", key)
		}
		got[key] = ev
	}
	want := map[string]svcapi.PushEvent{
		"bob " + toBob:    {V: 1, Type: "push", User: "bob", From: "alice", Msg: toBob},
		"bob " + inGroup:  {V: 1, Type: "push", User: "bob", From: "alice", Msg: inGroup, Group: "g1"},
		"dave " + inGroup: {V: 1, Type: "push", User: "dave", From: "alice", Msg: inGroup, Group: "g1"},
	}
	if len(got) != len(want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	for k, w := range want {
		g, ok := got[k]
		if w.TS = g.TS; !ok || g != w || g.TS == 0 {
			t.Errorf("event %s = %+v, want %+v with a ts", k, g, w)
		}
	}
}

// TestPushRetriesAndPreviews: a failed presence look-up leaves the record
// to be handled again (the event is late, not lost); --push-preview puts
// the start of the body in the event.
func TestPushRetriesAndPreviews(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	n := startNode(t, s, service.Config{})
	pres := &fakePresence{failOnce: map[string]bool{"erin": true}}
	p, err := service.NewPusher(service.PushConfig{Preview: 5}, n.nc, n.js, pres, nil, testLog())
	if err != nil {
		t.Fatal(err)
	}
	run(t, p.Run)
	waitConsumer(t, n)
	events := pushListener(t, connectService(t, s, "svc-push"))
	sent, err := n.d.SendAs(ctx10(t), "alice", chat.SendRequest{CID: "1", To: "erin", Body: "héllo there"})
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, events, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("got %d events, want 1", len(got))
	}
	var ev svcapi.PushEvent
	json.Unmarshal(got[0].Data, &ev)
	if ev.User != "erin" || ev.Msg != sent.ID || ev.Preview != "héllo…" {
		t.Errorf("event = %+v, want erin, %s, preview %q", ev, sent.ID, "héllo…")
	}
	pres.mu.Lock()
	defer pres.mu.Unlock()
	if pres.calls["erin"] < 2 {
		t.Errorf("presence of erin looked up %d times, want a retry", pres.calls["erin"])
	}
}

// waitConsumer waits until the push consumer exists: it starts with the
// records stored after its creation.
func waitConsumer(t *testing.T, n *node) {
	t.Helper()
	ctx := ctx10(t)
	for {
		_, err := n.js.Consumer(ctx, "JETCHAT_MSGS", "jetchat_push")
		if err == nil {
			return
		}
		if ctx.Err() != nil || !errors.Is(err, jetstreamErrNotFound) {
			t.Fatalf("push consumer: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
