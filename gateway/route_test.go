package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/ring"
	"github.com/jetchat/jetchat/internal/testnode"
)

// fakeRouter is a ring the test sets by hand.
type fakeRouter struct {
	mu      sync.Mutex
	r       *ring.Ring
	changed chan struct{}
}

func newFakeRouter() *fakeRouter { return &fakeRouter{r: ring.New(nil), changed: make(chan struct{})} }

func (f *fakeRouter) Owner(user string) (ring.Member, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r.Owner(user)
}

func (f *fakeRouter) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeRouter) set(ms ...ring.Member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.r = ring.New(ms)
	close(f.changed)
	f.changed = make(chan struct{})
}

// routedPair runs gw-1 and gw-2 on one NATS server, sharing router, with
// ownership enforced when enforce is set.
func routedPair(t *testing.T, router gateway.Router, enforce bool) (gw1, gw2 *testnode.Node) {
	ns := natstest.RunJetStream(t)
	start := func(id string) *testnode.Node {
		return testnode.Start(t, ns, testnode.Options{
			Gateway: gateway.Config{ID: id, EnforceOwnership: enforce},
			Wire:    func(_ testing.TB, _ testnode.Wiring, d *gateway.Deps) { d.Router = router },
		})
	}
	return start("gw-1"), start("gw-2")
}

// userOwnedBy finds a user that r assigns to id.
func userOwnedBy(t *testing.T, r *ring.Ring, id string) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		u := fmt.Sprint("u", i)
		if m, _ := r.Owner(u); m.ID == id {
			return u
		}
	}
	t.Fatalf("no user owned by %s on %v", id, r)
	return ""
}

// TestRouteAnswersTheOwner: GET /v1/route at either gateway names the
// owner on the ring with its registered URL; with an empty ring, itself.
func TestRouteAnswersTheOwner(t *testing.T) {
	t.Parallel()
	router := newFakeRouter()
	gw1, gw2 := routedPair(t, router, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	rt, err := gw1.API(t, "alice").Route(ctx)
	if err != nil || rt.Gateway != "gw-1" || rt.URL != gw1.WS {
		t.Errorf("route with an empty ring = %+v, %v; want gw-1 at %s", rt, err, gw1.WS)
	}
	m1, m2 := ring.Member{ID: "gw-1", URL: gw1.WS}, ring.Member{ID: "gw-2", URL: gw2.WS}
	router.set(m1, m2)
	r := ring.New([]ring.Member{m1, m2})
	for _, owner := range []ring.Member{m1, m2} {
		u := userOwnedBy(t, r, owner.ID)
		for _, at := range []*testnode.Node{gw1, gw2} {
			rt, err := at.API(t, u).Route(ctx)
			if err != nil || rt.Gateway != owner.ID || rt.URL != owner.URL {
				t.Errorf("route of %s at %s = %+v, %v; want %+v", u, at.URL, rt, err, owner)
			}
		}
	}
	// Without enforcement, any gateway accepts any user.
	u2 := userOwnedBy(t, r, "gw-2")
	if c, err := client.Dial(ctx, gw1.WS, testnode.Token(t, u2, "phone")); err != nil {
		t.Errorf("dial of %s (owned by gw-2) at gw-1 without enforcement: %v", u2, err)
	} else {
		c.Close()
	}
}

// TestEnforcedOwnership: a WebSocket at the wrong gateway gets 421 naming
// the owner, before any upgrade; DialRoute follows it; when the ring
// changes, the sessions of users that moved are closed with 4002 and the
// client resumes at the new owner without losing a message.
func TestEnforcedOwnership(t *testing.T) {
	t.Parallel()
	router := newFakeRouter()
	gw1, gw2 := routedPair(t, router, true)
	m1, m2 := ring.Member{ID: "gw-1", URL: gw1.WS}, ring.Member{ID: "gw-2", URL: gw2.WS}
	router.set(m1, m2)
	r := ring.New([]ring.Member{m1, m2})
	u1, u2 := userOwnedBy(t, r, "gw-1"), userOwnedBy(t, r, "gw-2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	_, err := client.Dial(ctx, gw1.WS, testnode.Token(t, u2, "phone"))
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusMisdirectedRequest || e.Code != gateway.CodeWrongGateway || e.Gateway != "gw-2" || e.URL != gw2.WS {
		t.Fatalf("dial of %s at gw-1 = %v (%+v), want 421 wrong_gateway naming gw-2 at %s", u2, err, e, gw2.WS)
	}
	// DialRoute asks any gateway and lands on the owner, even when asked
	// at the wrong one.
	c2, err := client.DialRoute(ctx, gw1.URL, testnode.Token(t, u2, "phone"))
	if err != nil || c2.Hello().Gateway != "gw-2" {
		t.Fatalf("DialRoute of %s via gw-1: %v, hello %+v", u2, err, c2)
	}
	defer c2.Close()
	c1, err := client.DialRoute(ctx, gw2.URL, testnode.Token(t, u1, "phone"))
	if err != nil || c1.Hello().Gateway != "gw-1" {
		t.Fatalf("DialRoute of %s via gw-2: %v", u1, err)
	}

	// gw-1 leaves the ring: u1 moves to gw-2.
	router.set(m2)
	select {
	case <-c1.Done():
	case <-ctx.Done():
		t.Fatal("the session of a user that moved was not closed")
	}
	if code := c1.CloseCode(); code != gateway.CloseMoved {
		t.Fatalf("close code of a moved user = %d (%v), want %d", code, c1.Err(), gateway.CloseMoved)
	}
	select {
	case <-c2.Done():
		t.Fatalf("the session of a user that did not move was closed: %v", c2.Err())
	default:
	}
	s, err := c2.Send(ctx, u1, "while you moved")
	if err != nil {
		t.Fatal(err)
	}
	c1, err = client.DialRoute(ctx, gw1.URL, testnode.Token(t, u1, "phone"))
	if err != nil || c1.Hello().Gateway != "gw-2" {
		t.Fatalf("reconnect of the moved user: %v", err)
	}
	defer c1.Close()
	if m := nextMessage(t, c1); m.ID != s.ID {
		t.Errorf("after moving, got %s, want %s", m.ID, s.ID)
	}
}
