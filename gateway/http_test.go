package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

func TestHistoryPagination(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Delivery: delivery.Config{ScanLimit: 100000}})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	carol := n.Dial(t, "carol", "phone")
	var want []string // oldest first, both directions
	for i := 0; i < 30; i++ {
		from, to := alice, "bob"
		if i%3 == 2 {
			from, to = bob, "alice"
		}
		want = append(want, send(t, from, to, fmt.Sprint(i)).ID)
		send(t, carol, "alice", "noise") // other conversations in alice's inbox
	}
	ctx := testCtx(t)
	api := n.API(t, "alice")
	var got []string
	before := ""
	for {
		page, err := api.History(ctx, "bob", "", before, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page {
			if (m.From != "alice" || m.To != "bob") && (m.From != "bob" || m.To != "alice") {
				t.Fatalf("history with bob holds %+v", m)
			}
			got = append(got, m.ID)
		}
		if len(page) < 7 {
			break
		}
		before = page[len(page)-1].ID
	}
	if len(got) != len(want) {
		t.Fatalf("history has %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[len(want)-1-i] {
			t.Fatalf("history[%d] = %s, want %s (newest first)", i, got[i], want[len(want)-1-i])
		}
	}
	// bob sees the same conversation.
	page, err := n.API(t, "bob").History(ctx, "alice", "", "", 200)
	if err != nil || len(page) != 30 {
		t.Errorf("bob's history = %d messages, %v; want 30", len(page), err)
	}
	// Bad queries.
	for _, q := range []string{"", "with=a.b", "with=bob&group=g", "with=bob&limit=0", "with=bob&limit=201", "with=bob&limit=x", "with=bob&before=r1-0", "with=bob&before=../x"} {
		err := api.Do(ctx, "GET", "/v1/messages?"+q, nil, nil)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 400 || ce.Code != "bad_request" {
			t.Errorf("GET /v1/messages?%s: %v, want 400 bad_request", q, err)
		}
	}
}

func TestStatusOnlyForTheSender(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	s := send(t, alice, "bob", "x")
	ctx := testCtx(t)
	st, err := n.API(t, "alice").Status(ctx, s.ID)
	if err != nil || st.Status != "sent" || len(st.Recipients) != 1 || st.Recipients[0].Status != "sent" || st.Recipients[0].TS != s.TS {
		t.Fatalf("status before delivery = %+v, %v", st, err)
	}
	// The recipient, a stranger, an unknown id and a malformed one all get
	// the same 404.
	for _, tc := range []struct{ user, id string }{{"bob", s.ID}, {"eve", s.ID}, {"alice", "m424242"}, {"alice", "r1-0"}, {"alice", "nonsense"}} {
		_, err := n.API(t, tc.user).Status(ctx, tc.id)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 404 || ce.Code != "not_found" {
			t.Errorf("status of %s as %s: %v, want 404 not_found", tc.id, tc.user, err)
		}
	}
	// Delivered after bob's ack.
	bob := n.Dial(t, "bob", "phone")
	m := nextMessage(t, bob)
	bob.Ack(m.ID)
	nextReceipt(t, alice)
	st, err = n.API(t, "alice").Status(ctx, s.ID)
	if err != nil || st.Status != "delivered" || st.Recipients[0].Status != "delivered" || st.Recipients[0].TS == 0 {
		t.Errorf("status after ack = %+v, %v", st, err)
	}
}

func TestRouteHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Gateway: gateway.Config{ID: "gw-7"}})
	r, err := n.API(t, "alice").Route(ctx10(t))
	if err != nil || r.Gateway != "gw-7" || !strings.HasPrefix(r.URL, "ws://127.0.0.1:") || !strings.HasSuffix(r.URL, "/v1/ws") {
		t.Errorf("route = %+v, %v", r, err)
	}
	alice := n.Dial(t, "alice", "phone")
	send(t, alice, "bob", "count me")
	for path, want := range map[string]string{
		"/healthz": `"ok"`,
		"/readyz":  `{`,
		"/metrics": "jetchat_messages_sent_total 1",
	} {
		resp, err := http.Get(n.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %s, want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}
	for _, metric := range []string{"jetchat_connections 1", "jetchat_jetstream_publish_latency_seconds_count", "process_resident_memory_bytes", "jetchat_frames_in_total{type=\"send\"} 1"} {
		resp, _ := http.Get(n.URL + "/metrics")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), metric) {
			t.Errorf("/metrics lacks %q", metric)
		}
	}
	// Unknown endpoints answer the JSON error body.
	err = n.API(t, "alice").Do(ctx10(t), "GET", "/v1/nope", nil, nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 404 || ce.Code != "not_found" {
		t.Errorf("GET /v1/nope: %v", err)
	}
}

func TestReadyzReportsAFailingCheck(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	_ = n
	// A gateway built with a failing check answers 503 naming it.
	gw, err := gateway.New(gateway.Config{}, gateway.Deps{Delivery: n.Delivery}, n.Metrics, nil)
	if err == nil || gw != nil {
		t.Fatal("gateway.New without a verifier succeeded")
	}
	resp, err := http.Get(n.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("readyz = %d %v", resp.StatusCode, body)
	}
}

func TestTwoGatewaysShareOneNATS(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	gw1 := testnode.Start(t, ns, testnode.Options{Gateway: gateway.Config{ID: "gw-1"}})
	gw2 := testnode.Start(t, ns, testnode.Options{Gateway: gateway.Config{ID: "gw-2"}})
	alice := gw1.Dial(t, "alice", "phone")
	bob := gw2.Dial(t, "bob", "phone")
	bob2 := gw1.Dial(t, "bob", "laptop") // the same user's other device, on the other gateway
	if alice.Hello().Gateway != "gw-1" || bob.Hello().Gateway != "gw-2" {
		t.Fatalf("gateways %s %s", alice.Hello().Gateway, bob.Hello().Gateway)
	}
	a2b := send(t, alice, "bob", "across")
	for _, c := range []*client.Conn{bob, bob2} {
		if m := nextMessage(t, c); m.ID != a2b.ID {
			t.Fatalf("bob/%s got %s", c.Hello().Device, m.ID)
		}
		c.Ack(a2b.ID)
	}
	if r := nextReceipt(t, alice); r.Msg != a2b.ID || r.Status != "delivered" {
		t.Fatalf("receipt %+v", r)
	}
	b2a := send(t, bob, "alice", "and back")
	// bob's devices sit on two gateways, each of which saw an ack: the
	// delivered receipt may come twice (same msg, status and author). With
	// a user's devices on one gateway (routing) it comes once.
	f := next(t, alice)
	if f.Receipt != nil {
		if f.Receipt.Msg != a2b.ID || f.Receipt.Status != "delivered" || f.Receipt.By != "bob" {
			t.Fatalf("unexpected receipt %+v", f.Receipt)
		}
		f = next(t, alice)
	}
	if f.Message == nil || f.Message.ID != b2a.ID {
		t.Fatalf("alice got %s, want message %s", f.Raw, b2a.ID)
	}
	alice.Ack(b2a.ID)
	if m := nextMessage(t, bob2); m.ID != b2a.ID { // copy of bob's own send
		t.Fatalf("bob/laptop got %s, want the copy of %s", m.ID, b2a.ID)
	}
	bob2.Ack(b2a.ID)
	for _, c := range []*client.Conn{bob, bob2} {
		r := nextReceipt(t, c)
		if r.Msg != b2a.ID || r.By != "alice" {
			t.Fatalf("bob/%s receipt %+v", c.Hello().Device, r)
		}
		c.Ack(r.ID)
	}
	// A user's devices on both gateways each get everything.
	s := send(t, alice, "bob", "both devices")
	if m := nextMessage(t, bob); m.ID != s.ID {
		t.Errorf("bob/phone on gw-2 got %s", m.ID)
	}
	if m := nextMessage(t, bob2); m.ID != s.ID {
		t.Errorf("bob/laptop on gw-1 got %s", m.ID)
	}
	// Offline on one gateway, back on the other: what it acked stays acked.
	bob.Close()
	off := send(t, alice, "bob", "while away")
	bob = gw1.Dial(t, "bob", "phone")
	if m := nextMessage(t, bob); m.ID != s.ID { // unacked, redelivered first
		t.Errorf("redelivery got %s, want %s", m.ID, s.ID)
	}
	if m := nextMessage(t, bob); m.ID != off.ID {
		t.Errorf("catch-up got %s, want %s", m.ID, off.ID)
	}
}

func TestStoreFailureIsAnErrorToTheSender(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	n := testnode.Start(t, ns, testnode.Options{
		Delivery: delivery.Config{PublishTimeout: 500 * time.Millisecond},
		Gateway:  gateway.Config{RequestTimeout: 2 * time.Second},
	})
	alice := n.Dial(t, "alice", "phone")
	send(t, alice, "bob", "before")
	ns.Shutdown()
	ns.WaitForShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := alice.SendMsg(ctx, client.SendRequest{CID: "during", To: "bob", Body: "lost?"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "unavailable" {
		t.Fatalf("send while JetStream is down: %v, want an unavailable error", err)
	}
}

func TestShutdownDrainsWithGoingAway(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	s := send(t, alice, "bob", "before shutdown")
	n.Stop()
	select {
	case <-alice.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session not closed by shutdown")
	}
	if code := alice.CloseCode(); code != 1001 {
		t.Errorf("close code = %d (%v), want 1001", code, alice.Err())
	}
	// The message survives for a node started on the same NATS.
	_ = s
}
