package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/auth"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// expectError waits for an error frame with code (and cid, if given).
func expectError(t *testing.T, c *client.Conn, code string) *client.ErrorFrame {
	t.Helper()
	f := next(t, c)
	if f.Error == nil || f.Error.Code != code || f.Error.Message == "" {
		t.Fatalf("got %s, want an error frame with code %s", f.Raw, code)
	}
	return f.Error
}

func TestBadFramesKeepTheConnection(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	c := n.Dial(t, "alice", "phone")
	tests := []struct {
		name, frame, code string
	}{
		{"not json", `hello there`, "bad_request"},
		{"json array", `[1,2,3]`, "bad_request"},
		{"unknown type", `{"type":"dance"}`, "bad_request"},
		{"no type", `{"to":"bob"}`, "bad_request"},
		{"ack without ids", `{"type":"ack"}`, "bad_request"},
		{"read without ids", `{"type":"read"}`, "bad_request"},
		{"read of malformed id", `{"type":"read","ids":["a.b"]}`, "bad_request"},
		{"presence without users", `{"type":"presence_subscribe"}`, "bad_request"},
	}
	for _, tt := range tests {
		if err := c.WriteRaw([]byte(tt.frame)); err != nil {
			t.Fatal(err)
		}
		expectError(t, c, tt.code)
	}
	// Still usable.
	send(t, c, "bob", "still here")
}

func TestBadSends(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	c := n.Dial(t, "alice", "phone")
	big := strings.Repeat("x", 64<<10+1)
	tests := []struct {
		name string
		req  client.SendRequest
		code string
	}{
		{"no recipient", client.SendRequest{CID: "1", Body: "x"}, "bad_request"},
		{"empty body", client.SendRequest{CID: "2", To: "bob"}, "bad_request"},
		{"a.b", client.SendRequest{CID: "3", To: "a.b", Body: "x"}, "bad_request"},
		{"x>", client.SendRequest{CID: "4", To: "x>", Body: "x"}, "bad_request"},
		{"star", client.SendRequest{CID: "5", To: "*", Body: "x"}, "bad_request"},
		{"65 chars", client.SendRequest{CID: "6", To: strings.Repeat("a", 65), Body: "x"}, "bad_request"},
		{"spaces", client.SendRequest{CID: "7", To: "bob smith", Body: "x"}, "bad_request"},
		{"body over 64 KiB", client.SendRequest{CID: "8", To: "bob", Body: big}, "too_large"},
		{"cid over 64", client.SendRequest{CID: strings.Repeat("c", 65), To: "bob", Body: "x"}, "bad_request"},
		{"unknown media", client.SendRequest{CID: "9", To: "bob", Body: "x", Media: "nope"}, "not_found"},
	}
	for _, tt := range tests {
		if tt.req.CID == strings.Repeat("c", 65) {
			// The server cannot echo an invalid cid: the error arrives
			// without one.
			c.WriteRaw([]byte(`{"type":"send","cid":"` + tt.req.CID + `","to":"bob","body":"x"}`))
			expectError(t, c, tt.code)
			continue
		}
		_, err := c.SendMsg(ctx10(t), tt.req)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != tt.code {
			t.Errorf("%s: error = %v, want code %s", tt.name, err, tt.code)
		}
	}
	// Empty recipient is also refused; the connection survives everything.
	c.WriteRaw([]byte(`{"type":"send","cid":"e","to":"","body":"x"}`))
	if e := expectError(t, c, "bad_request"); e.CID != "e" {
		t.Errorf("error cid = %q, want e", e.CID)
	}
	send(t, c, "bob", "fine")
}

func TestOversizedFrameCloses1009(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	c := n.Dial(t, "alice", "phone")
	c.WriteRaw([]byte(`{"type":"send","cid":"x","to":"bob","body":"` + strings.Repeat("y", 128<<10) + `"}`))
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection stayed open after a frame over 128 KiB")
	}
	if code := c.CloseCode(); code != 1009 {
		t.Errorf("close code = %d (%v), want 1009", code, c.Err())
	}
	// Other users are unaffected.
	other := n.Dial(t, "carol", "phone")
	send(t, other, "dave", "unaffected")
}

func TestAckAndReadOfStrangersIdsProduceNoReceipt(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	eve := n.Dial(t, "eve", "phone")
	s := send(t, alice, "bob", "for bob only")
	m := nextMessage(t, bob)

	// eve never received it: acking or reading it sends nothing to anyone.
	eve.Ack(s.ID, "m999999", "r1-0")
	eve.Read(s.ID)
	expectError(t, eve, "not_found")
	eve.Read("m999999")
	expectError(t, eve, "not_found")
	quiet(t, alice, 300*time.Millisecond)

	// bob reading an id of his that is not a message (a receipt id) fails.
	bob.Read("r1-0")
	expectError(t, bob, "not_found")
	bob.Ack(m.ID)
	if r := nextReceipt(t, alice); r.By != "bob" || r.Status != "delivered" {
		t.Fatalf("receipt %+v", r)
	}
	quiet(t, alice, 200*time.Millisecond)
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Gateway: gateway.Config{SendRate: 1, SendBurst: 3}})
	c := n.Dial(t, "alice", "phone")
	limited := 0
	for i := 0; i < 10; i++ {
		_, err := c.Send(ctx10(t), "bob", "flood")
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == "rate_limited" {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited < 6 {
		t.Errorf("%d of 10 quick sends were rate limited, want at least 6 (burst 3)", limited)
	}
	// The limit is per user: a second device shares it.
	c2 := n.Dial(t, "alice", "laptop")
	if _, err := c2.Send(ctx10(t), "bob", "x"); err == nil {
		t.Error("second device of a rate-limited user was not limited")
	}
	// A flood far past the limit closes the connection with 1008.
	for i := 0; i < 200; i++ {
		if err := c.WriteRaw([]byte(`{"type":"send","cid":"f` + string(rune('a'+i%26)) + `","to":"bob","body":"x"}`)); err != nil {
			break
		}
	}
	select {
	case <-c.Done():
		if code := c.CloseCode(); code != 1008 {
			t.Errorf("close code = %d, want 1008", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a flood past the rate limit did not close the connection")
	}
}

func TestTokensAreChecked(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	now := time.Now()
	expired, _ := auth.Mint(testnode.Secret, "alice", "", time.Second, now.Add(-time.Hour))
	wrongKey, _ := auth.Mint([]byte("another-secret-another-secret-0123"), "alice", "", time.Hour, now)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice"}).SignedString(testnode.Secret)
	badUser, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a.b", "exp": now.Add(time.Hour).Unix()}).SignedString(testnode.Secret)
	for name, tok := range map[string]string{"missing": "", "malformed": "abc", "expired": expired, "bad signature": wrongKey, "no exp": noExp, "bad sub": badUser} {
		_, err := client.Dial(context.Background(), n.WS, tok)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || ce.Code != "unauthorized" {
			t.Errorf("websocket with %s token: %v, want 401 unauthorized", name, err)
		}
		api := &client.API{BaseURL: n.URL, Token: tok}
		if _, err := api.Route(context.Background()); !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
			t.Errorf("HTTP with %s token: %v, want 401", name, err)
		}
	}
	// The query parameter works for browsers.
	ctx := context.Background()
	c, err := client.Dial(ctx, n.WS+"?access_token="+testnode.Token(t, "alice", "web"), "")
	if err != nil {
		t.Fatalf("dial with access_token: %v", err)
	}
	if c.Hello().Device != "web" {
		t.Errorf("hello %+v", c.Hello())
	}
	c.Close()
}
