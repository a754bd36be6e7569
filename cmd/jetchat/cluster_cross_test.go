package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/pgtest"
	"github.com/jetchat/jetchat/internal/ring"
)

// TestClusterCrossGateway runs 3 NATS servers as a JetStream cluster and 3
// gateways with ownership enforced, each a process, and checks with users
// owned by different gateways: every gateway routes every user alike; a
// WebSocket at the wrong gateway gets 421 naming the owner; 1:1 messages
// with receipts, group messages with per-member receipts, presence and media
// cross gateways; a 4th gateway joining takes over its users (their
// sessions elsewhere are closed with 4002) and nobody else's.
func TestClusterCrossGateway(t *testing.T) {
	t.Parallel()
	nc := startNATSCluster(t)
	dbURL := pgtest.NewURL(t)
	gw1 := startGateway(t, nc, dbURL, "gw-1", "", "", "--enforce-ownership")
	gw2 := startGateway(t, nc, dbURL, "gw-2", "", "", "--enforce-ownership")
	gw3 := startGateway(t, nc, dbURL, "gw-3", "", "", "--enforce-ownership")
	gws := []*gatewayProc{gw1, gw2, gw3}
	r3 := ringOf(gws...)
	// The owners after gw-4 joins depend only on the ids.
	r4 := ring.New(append(r3.Members(), ring.Member{ID: "gw-4"}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Every gateway sees all three and routes every user alike.
	waitRoutes(t, r3, "probe", gws...)
	for i := 0; i < 100; i++ {
		u := "user" + strconv.Itoa(i)
		want, _ := r3.Owner(u)
		for _, g := range gws {
			rt, err := (&client.API{BaseURL: g.base(), Token: clusterToken(t, u, "")}).Route(ctx)
			if err != nil || rt.Gateway != want.ID || rt.URL != want.URL {
				t.Fatalf("route of %s at %s = %+v, %v; want %+v", u, g.id, rt, err, want)
			}
		}
	}

	// Users on different gateways, who stay there when gw-4 joins; dave
	// moves to gw-4.
	stays := func(id, prefix string) string {
		for i := 0; ; i++ {
			u := userOn(t, r3, id, prefix+strconv.Itoa(i)+"x")
			if m, _ := r4.Owner(u); m.ID == id {
				return u
			}
		}
	}
	alice, bob, carol := stays("gw-1", "alice"), stays("gw-2", "bob"), stays("gw-3", "carol")
	dave := userOn(t, r4, "gw-4", "dave")
	daveOwner, _ := r3.Owner(dave)

	// 421 at the wrong gateway, naming the owner.
	_, err := client.Dial(ctx, gw2.ws(), clusterToken(t, alice, "phone"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusMisdirectedRequest || ce.Code != "wrong_gateway" || ce.Gateway != "gw-1" || ce.URL != gw1.ws() {
		t.Fatalf("dial of %s at gw-2 = %v, want 421 wrong_gateway naming gw-1 at %s", alice, err, gw1.ws())
	}

	dial := func(user, want string) *client.Conn {
		t.Helper()
		c, err := client.DialRoute(ctx, gw3.base(), clusterToken(t, user, "phone"))
		if err != nil {
			t.Fatalf("DialRoute %s: %v", user, err)
		}
		if c.Hello().Gateway != want {
			t.Fatalf("%s landed on %s, want %s", user, c.Hello().Gateway, want)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ca, cb, cc := dial(alice, "gw-1"), dial(bob, "gw-2"), dial(carol, "gw-3")
	cd := dial(dave, daveOwner.ID)

	// 1:1 across gateways, with delivered and read receipts.
	s, err := ca.Send(ctx, bob, "hi from gw-1")
	if err != nil {
		t.Fatal(err)
	}
	m := waitFrame(t, ctx, cb, "bob's message", func(f *client.Frame) bool { return f.Message != nil && f.Message.ID == s.ID })
	cb.Ack(m.ID())
	cb.Read(m.ID())
	for _, status := range []string{"delivered", "read"} {
		f := waitFrame(t, ctx, ca, status+" receipt", func(f *client.Frame) bool {
			return f.Receipt != nil && f.Receipt.Msg == s.ID && f.Receipt.Status == status && f.Receipt.By == bob
		})
		ca.Ack(f.ID())
	}

	// Three gateways: each holds one live subscription per online user, and
	// none the one for all users (gw-1 may have held it while alone).
	for deadline := time.Now().Add(15 * time.Second); ; {
		subs, err := nc.userLiveSubs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(subs, "live.u.*") && slices.Contains(subs, "live.u."+alice) && slices.Contains(subs, "live.u."+bob) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live subscriptions of the gateways: %v; want one per online user (%s, %s, …) and no live.u.*", subs, alice, bob)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A group across the three gateways: created at gw-1 (Postgres may
	// still be migrating), a message from gw-3 reaches gw-1 and gw-2, each
	// member's receipt comes back.
	var grp struct{ ID string }
	for {
		err := (&client.API{BaseURL: gw1.base(), Token: clusterToken(t, alice, "")}).Do(ctx, "POST", "/v1/groups", map[string]any{"name": "across", "members": []string{bob, carol}}, &grp)
		if err == nil {
			break
		}
		if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable || ctx.Err() != nil {
			t.Fatalf("create group: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	gs, err := cc.SendMsg(ctx, client.SendRequest{Group: grp.ID, Body: "hello group"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{ca, cb} {
		f := waitFrame(t, ctx, c, "the group message", func(f *client.Frame) bool { return f.Message != nil && f.Message.ID == gs.ID })
		if f.Message.Group != grp.ID || f.Message.From != carol {
			t.Errorf("group message %+v", f.Message)
		}
		c.Ack(f.ID())
	}
	by := map[string]bool{}
	for len(by) < 2 {
		f := waitFrame(t, ctx, cc, "group receipts", func(f *client.Frame) bool {
			return f.Receipt != nil && f.Receipt.Msg == gs.ID && f.Receipt.Status == "delivered"
		})
		by[f.Receipt.By] = true
		cc.Ack(f.ID())
	}
	if !by[alice] || !by[bob] {
		t.Errorf("group receipts by %v, want %s and %s", by, alice, bob)
	}

	// Presence across gateways: alice (gw-1) follows bob (gw-2).
	ca.Subscribe(bob)
	waitFrame(t, ctx, ca, "bob online", func(f *client.Frame) bool { return f.Presence != nil && f.Presence.User == bob && f.Presence.Online })
	cb.Close()
	waitFrame(t, ctx, ca, "bob offline", func(f *client.Frame) bool { return f.Presence != nil && f.Presence.User == bob && !f.Presence.Online })
	cb = dial(bob, "gw-2")
	waitFrame(t, ctx, ca, "bob online again", func(f *client.Frame) bool { return f.Presence != nil && f.Presence.User == bob && f.Presence.Online })

	// Media uploaded at gw-1, sent to bob, downloaded at gw-2; carol (gw-3)
	// is not a recipient.
	data := bytes.Repeat([]byte("jetchat media "), 30000)
	req, _ := http.NewRequestWithContext(ctx, "POST", gw1.base()+"/v1/media", bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	var info struct{ ID string }
	if err := (&client.API{Token: clusterToken(t, alice, "")}).DoRequest(req, &info); err != nil {
		t.Fatalf("upload: %v", err)
	}
	ms, err := ca.SendMsg(ctx, client.SendRequest{To: bob, Body: "a file", Media: info.ID})
	if err != nil {
		t.Fatal(err)
	}
	f := waitFrame(t, ctx, cb, "the media message", func(f *client.Frame) bool { return f.Message != nil && f.Message.ID == ms.ID })
	if f.Message.Media != info.ID {
		t.Errorf("media message %+v, want media %s", f.Message, info.ID)
	}
	cb.Ack(f.ID())
	download := func(g *gatewayProc, user string) (int, []byte) {
		req, _ := http.NewRequestWithContext(ctx, "GET", g.base()+"/v1/media/"+info.ID, nil)
		req.Header.Set("Authorization", "Bearer "+clusterToken(t, user, ""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if st, b := download(gw2, bob); st != 200 || !bytes.Equal(b, data) {
		t.Errorf("bob's download at gw-2 = %d (%d bytes), want 200 with the %d bytes", st, len(b), len(data))
	}
	if st, _ := download(gw3, carol); st != 404 {
		t.Errorf("carol's download at gw-3 = %d, want 404", st)
	}

	// gw-4 joins: dave's session is closed with 4002 and he reconnects to
	// gw-4; nobody else moves.
	gw4 := startGateway(t, nc, dbURL, "gw-4", "", "", "--enforce-ownership")
	select {
	case <-cd.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s's session on %s was not closed when gw-4 joined", dave, daveOwner.ID)
	}
	if code := cd.CloseCode(); code != client.CloseMoved {
		t.Fatalf("%s's close code = %d (%v), want %d", dave, code, cd.Err(), client.CloseMoved)
	}
	waitRoutes(t, ringOf(gw1, gw2, gw3, gw4), dave, gw1, gw2, gw3, gw4)
	cd = dial(dave, "gw-4")
	s, err = ca.Send(ctx, dave, "welcome to gw-4")
	if err != nil {
		t.Fatal(err)
	}
	waitFrame(t, ctx, cd, "dave's message on gw-4", func(f *client.Frame) bool { return f.Message != nil && f.Message.ID == s.ID })
	for name, c := range map[string]*client.Conn{alice: ca, bob: cb, carol: cc} {
		select {
		case <-c.Done():
			t.Errorf("%s's session closed (%v) although its owner did not change", name, c.Err())
		default:
		}
	}
}

// waitFrame returns the first frame of c that matches, acking and skipping
// the others.
func waitFrame(t *testing.T, ctx context.Context, c *client.Conn, what string, match func(*client.Frame) bool) *client.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		f, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
		if id := f.ID(); id != "" {
			c.Ack(id)
		}
	}
}
