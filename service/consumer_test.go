package service_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/service"
	"github.com/jetchat/jetchat/svcapi"
)

// TestConsumerIsSharedByInstances runs two instances of one service (two
// connections with svc-audit's credentials) on one durable consumer: every
// message is processed exactly once, and both instances get work.
func TestConsumerIsSharedByInstances(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	n := startNode(t, s, service.Config{})
	ctx := testCtx(t)

	var mu sync.Mutex
	seen := map[string]int{}    // message id → times processed
	byInstance := map[int]int{} // instance → messages processed
	const total = 60
	done := make(chan struct{})
	for i := 0; i < 2; i++ {
		inst := connectService(t, s, "svc-audit")
		cons, err := inst.client.Consumer(ctx, "svc-audit", svcapi.ScopeInboxes, svcapi.ConsumerConfig{AckWait: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			ev, err := svcapi.DecodeMsg(m)
			if err != nil {
				t.Errorf("decode: %v", err)
				return
			}
			if ev.Kind == svcapi.KindMessage {
				time.Sleep(2 * time.Millisecond) // some work
				mu.Lock()
				seen[ev.Message.ID]++
				byInstance[i]++
				if len(seen) == total {
					close(done)
				}
				mu.Unlock()
			}
			m.Ack()
		}, jetstream.PullMaxMessages(4))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cc.Stop)
	}
	var ids []string
	for i := 0; i < total; i++ {
		sent, err := n.d.SendAs(ctx, "bot-a", chat.SendRequest{CID: fmt.Sprint(i), To: fmt.Sprint("user", i%7), Body: "x"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sent.ID)
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("processed %d of %d messages", len(seen), total)
	}
	// Every ack reached the server (the permission on $JS.ACK lets them
	// through): nothing is pending.
	for {
		c, err := n.js.Consumer(ctx, "JETCHAT_MSGS", "svc-audit")
		if err != nil {
			t.Fatal(err)
		}
		if c.CachedInfo().NumAckPending == 0 && c.CachedInfo().NumPending == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("consumer state %+v, want every record acked", c.CachedInfo())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("message %s processed %d times, want once", id, seen[id])
		}
	}
	if byInstance[0] == 0 || byInstance[1] == 0 {
		t.Errorf("work per instance = %v, want both instances to share it", byInstance)
	}
}

// TestConsumerRequests checks what the consumer API accepts: the scope in
// the subject becomes the filter, jetchat's own names are refused, an
// existing consumer keeps where it started.
func TestConsumerRequests(t *testing.T) {
	t.Parallel()
	s := natstest.RunAccounts(t)
	n := startNode(t, s, service.Config{})
	admin := connectService(t, s, "admin")
	ctx := testCtx(t)
	for _, tc := range []struct {
		name  string
		scope svcapi.Scope
		cfg   svcapi.ConsumerConfig
		code  string
		want  string // filter
	}{
		{"svc-a", svcapi.ScopeAll, svcapi.ConsumerConfig{Deliver: "all"}, "", "chat.>"},
		{"svc-b", svcapi.ScopeGroups, svcapi.ConsumerConfig{}, "", "chat.g.*"},
		{"svc-c", svcapi.UserScope("bot-x"), svcapi.ConsumerConfig{MaxAckPending: 10}, "", "chat.u.bot-x"},
		{"svc-c", svcapi.GroupScope("g1"), svcapi.ConsumerConfig{}, "", "chat.g.g1"}, // an update
		{"jetchat_push", svcapi.ScopeAll, svcapi.ConsumerConfig{}, "forbidden", ""},
		{"svc-d", svcapi.Scope("u.a.b"), svcapi.ConsumerConfig{}, "bad_request", ""},
		{"svc-d", svcapi.Scope("everything"), svcapi.ConsumerConfig{}, "bad_request", ""},
		{"svc-d", svcapi.ScopeAll, svcapi.ConsumerConfig{Deliver: "last"}, "bad_request", ""},
		{"svc-d", svcapi.ScopeAll, svcapi.ConsumerConfig{MaxAckPending: 1 << 20}, "bad_request", ""},
	} {
		c, err := admin.client.Consumer(ctx, tc.name, tc.scope, tc.cfg)
		if tc.code != "" {
			var e *svcapi.Error
			if !errors.As(err, &e) || e.Code != tc.code {
				t.Errorf("Consumer(%s, %s) = %v, want %s", tc.name, tc.scope, err, tc.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("Consumer(%s, %s): %v", tc.name, tc.scope, err)
			continue
		}
		got := c.CachedInfo().Config
		if got.FilterSubject != tc.want || got.DeliverSubject != "" || got.AckPolicy != jetstream.AckExplicitPolicy {
			t.Errorf("Consumer(%s, %s) config = filter %q, deliver subject %q, ack %v; want a pull consumer on %q",
				tc.name, tc.scope, got.FilterSubject, got.DeliverSubject, got.AckPolicy, tc.want)
		}
	}
	a, err := n.js.Consumer(context.Background(), "JETCHAT_MSGS", "svc-a")
	if err != nil || a.CachedInfo().Config.DeliverPolicy != jetstream.DeliverAllPolicy {
		t.Errorf("svc-a: %v, want deliver all", err)
	}
	c, err := n.js.Consumer(context.Background(), "JETCHAT_MSGS", "svc-c")
	if err != nil || c.CachedInfo().Config.DeliverPolicy != jetstream.DeliverNewPolicy {
		t.Errorf("svc-c: %v, want deliver new (the default), kept by the update", err)
	}
}
