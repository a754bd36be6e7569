package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
	"github.com/jetchat/jetchat/presence"
)

// presenceNode gives a test node a registry and a presence tracker.
func presenceNode(id string, grace time.Duration) testnode.Options {
	return testnode.Options{
		Gateway: gateway.Config{ID: id},
		Wire: func(t testing.TB, w testnode.Wiring, deps *gateway.Deps) {
			cfg := presence.Defaults()
			cfg.Grace = grace
			cfg.MaxFollows = 300
			testnode.WirePresence(t, w, deps, id, cfg)
		},
	}
}

func nextPresence(t *testing.T, c *client.Conn) *client.Presence {
	t.Helper()
	f := next(t, c)
	if f.Presence == nil {
		t.Fatalf("got %s, want a presence frame", f.Raw)
	}
	return f.Presence
}

func TestPresenceOverWebSocket(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	gw1 := testnode.Start(t, ns, presenceNode("gw-1", 300*time.Millisecond))
	gw2 := testnode.Start(t, ns, presenceNode("gw-2", 300*time.Millisecond))
	alice := gw1.Dial(t, "alice", "phone")
	if err := alice.Subscribe("bob"); err != nil {
		t.Fatal(err)
	}
	if p := nextPresence(t, alice); p.User != "bob" || p.Online {
		t.Fatalf("initial presence %+v, want bob offline", p)
	}
	bob := gw2.Dial(t, "bob", "phone")
	if p := nextPresence(t, alice); p.User != "bob" || !p.Online || p.LastSeen != 0 {
		t.Fatalf("presence after connect %+v, want online without last_seen", p)
	}
	bob2 := gw1.Dial(t, "bob", "laptop")
	bob.Close()
	quiet(t, alice, 600*time.Millisecond) // still online through the laptop
	before := time.Now().UnixMilli()
	bob2.Close()
	p := nextPresence(t, alice)
	if p.Online || p.LastSeen < before-1000 || p.LastSeen > time.Now().UnixMilli() {
		t.Fatalf("presence after the last device left %+v, want offline with last_seen ≈ now", p)
	}
	// Over HTTP too.
	st, err := getPresence(t, gw2, "alice", "bob")
	if err != nil || st.Online || st.LastSeen != p.LastSeen {
		t.Errorf("GET /v1/presence/bob = %+v, %v", st, err)
	}
	// Unsubscribed: no more frames.
	alice.Unsubscribe("bob")
	time.Sleep(100 * time.Millisecond)
	gw2.Dial(t, "bob", "phone")
	quiet(t, alice, 400*time.Millisecond)
}

func TestPresenceBadInput(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), presenceNode("gw-1", time.Second))
	c := n.Dial(t, "alice", "phone")
	users := make([]string, 257)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	c.Subscribe(users...)
	expectError(t, c, "bad_request") // more than 256 in one frame
	c.Subscribe("a.b")
	expectError(t, c, "bad_request")
	// The per-session cap (300 here) across frames.
	first := make([]string, 200)
	second := make([]string, 200)
	for i := range first {
		first[i], second[i] = fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
	}
	c.Subscribe(first...)
	for range first {
		nextPresence(t, c)
	}
	c.Subscribe(second...)
	expectError(t, c, "too_large")
	quiet(t, c, 100*time.Millisecond) // the refused frame added nobody
}

func getPresence(t *testing.T, n *testnode.Node, viewer, user string) (client.Presence, error) {
	var p client.Presence
	err := n.API(t, viewer).Do(ctx10(t), "GET", "/v1/presence/"+user, nil, &p)
	return p, err
}
