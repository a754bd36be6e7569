package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/pgtest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// groupNode starts a node on ns whose groups live in pool, and returns its
// store too.
func groupNode(t *testing.T, ns *server.Server, pool *pgxpool.Pool, id string) (*testnode.Node, *groups.Store) {
	t.Helper()
	var store *groups.Store
	n := testnode.Start(t, ns, testnode.Options{
		Gateway: gateway.Config{ID: id},
		Groups:  testnode.PostgresGroups(pool, groups.Config{}, &store),
	})
	return n, store
}

func sendTo(t *testing.T, c *client.Conn, group, body string) client.Sent {
	t.Helper()
	s, err := c.SendMsg(ctx10(t), client.SendRequest{Group: group, Body: body})
	if err != nil {
		t.Fatalf("send to group %s: %v", group, err)
	}
	return s
}

// receipts reads n receipts from c (acking them) and returns them by
// "by/status".
func receipts(t *testing.T, c *client.Conn, n int) map[string]client.Receipt {
	t.Helper()
	out := map[string]client.Receipt{}
	for len(out) < n {
		r := nextReceipt(t, c)
		out[r.By+"/"+r.Status] = *r
		c.Ack(r.ID)
	}
	return out
}

func TestGroupMessaging(t *testing.T) {
	t.Parallel()
	n, store := groupNode(t, natstest.RunJetStream(t), pgtest.New(t), "gw-1")
	ctx := testCtx(t)
	g, err := store.Create(ctx, "alice", "Team", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	alicePhone := n.Dial(t, "alice", "phone")
	aliceLaptop := n.Dial(t, "alice", "laptop")
	bobPhone := n.Dial(t, "bob", "phone")
	bobLaptop := n.Dial(t, "bob", "laptop")
	carol := n.Dial(t, "carol", "phone")

	s := sendTo(t, alicePhone, g.ID, "hello team")
	// Every member but the sender, on every device; the sender's other
	// devices too; never back to the sending device.
	for _, c := range []*client.Conn{bobPhone, bobLaptop, carol, aliceLaptop} {
		m := nextMessage(t, c)
		if m.ID != s.ID || m.Group != g.ID || m.From != "alice" || m.Body != "hello team" || m.To != "" {
			t.Fatalf("%s/%s got %+v", c.Hello().User, c.Hello().Device, m)
		}
		c.Ack(m.ID)
	}
	carol.Read(s.ID)
	// One delivered receipt per member (bob acked on two devices), each
	// member's own, and carol's read.
	for _, c := range []*client.Conn{alicePhone, aliceLaptop} {
		got := receipts(t, c, 3)
		for _, want := range []string{"bob/delivered", "carol/delivered", "carol/read"} {
			if r, ok := got[want]; !ok || r.Msg != s.ID {
				t.Errorf("%s receipts %v lack %s", c.Hello().Device, got, want)
			}
		}
	}
	// Nothing else: not the sending device's own message, no second
	// delivered receipt from bob's second device.
	quiet(t, alicePhone, 300*time.Millisecond)

	// Status per member, for the sender only.
	st, err := n.API(t, "alice").Status(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	byUser := map[string]string{}
	for _, r := range st.Recipients {
		byUser[r.User] = r.Status
	}
	if st.Status != "delivered" || len(st.Recipients) != 2 || byUser["bob"] != "delivered" || byUser["carol"] != "read" {
		t.Errorf("status = %+v, want bob delivered, carol read, overall delivered", st)
	}
	for _, u := range []string{"bob", "eve"} {
		if _, err := n.API(t, u).Status(ctx, s.ID); !isHTTP(err, 404) {
			t.Errorf("status as %s: %v, want 404", u, err)
		}
	}

	// A member added later sees nothing from before, live or on reconnect;
	// history shows a member only what it may see.
	if _, err := store.AddMembers(ctx, "alice", g.ID, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	after := sendTo(t, alicePhone, g.ID, "welcome dave")
	for _, c := range []*client.Conn{bobPhone, bobLaptop, carol, aliceLaptop} {
		if m := nextMessage(t, c); m.ID != after.ID {
			t.Fatalf("%s/%s got %s, want %s", c.Hello().User, c.Hello().Device, m.ID, after.ID)
		}
		c.Ack(after.ID)
	}
	dave := n.Dial(t, "dave", "phone") // offline at the send, connects now
	if m := nextMessage(t, dave); m.ID != after.ID {
		t.Fatalf("dave got %s, want only %s", m.ID, after.ID)
	}
	dave.Ack(after.ID)
	hist, err := n.API(t, "dave").History(ctx, "", g.ID, "", 0)
	if err != nil || len(hist) != 1 || hist[0].ID != after.ID {
		t.Errorf("dave's group history = %+v, %v; want only %s", hist, err, after.ID)
	}
	hist, err = n.API(t, "bob").History(ctx, "", g.ID, "", 0)
	if err != nil || len(hist) != 2 || hist[0].ID != after.ID || hist[1].ID != s.ID {
		t.Errorf("bob's group history = %+v, %v", hist, err)
	}
	if _, err := n.API(t, "eve").History(ctx, "", g.ID, "", 0); !isHTTP(err, 404) {
		t.Errorf("eve's group history: %v, want 404", err)
	}

	// Non-members cannot send or type; the error answers the cid.
	eve := n.Dial(t, "eve", "phone")
	_, err = eve.SendMsg(ctx, client.SendRequest{CID: "x1", Group: g.ID, Body: "let me in"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "not_found" {
		t.Errorf("send by a non-member: %v, want not_found", err)
	}
	eve.TypingInGroup(g.ID)
	expectError(t, eve, "not_found")

	// Typing reaches the other members' devices, not the typist's.
	receipts(t, alicePhone, 3) // delivered of "welcome dave" by bob, carol and dave
	bobPhone.TypingInGroup(g.ID)
	for _, c := range []*client.Conn{alicePhone, carol, dave} {
		f := next(t, c)
		if f.Typing == nil || f.Typing.From != "bob" || f.Typing.Group != g.ID {
			t.Errorf("%s got %s, want bob typing in the group", c.Hello().User, f.Raw)
		}
	}
	for _, c := range []*client.Conn{bobPhone, bobLaptop} {
		quiet(t, c, 200*time.Millisecond)
	}

	// A removed member gets nothing sent after its removal.
	if err := store.RemoveMember(ctx, "alice", g.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	gone := sendTo(t, alicePhone, g.ID, "carol is gone")
	if m := nextMessage(t, bobPhone); m.ID != gone.ID {
		t.Fatalf("bob got %s", m.ID)
	}
	quiet(t, carol, 300*time.Millisecond)
	carol.Close()
	carol = n.Dial(t, "carol", "phone")
	quiet(t, carol, 300*time.Millisecond)
}

func isHTTP(err error, status int) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Status == status
}

func TestGroupOf1024OnTwoGateways(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	pool := pgtest.New(t)
	gw1, store := groupNode(t, ns, pool, "gw-1")
	gw2, _ := groupNode(t, ns, pool, "gw-2")
	members := make([]string, 1023)
	for i := range members {
		members[i] = fmt.Sprintf("m%04d", i)
	}
	g, err := store.Create(ctx10(t), "owner", "everyone", members)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*client.Conn, len(members))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, u := range members {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n := gw1
			if i%2 == 1 {
				n = gw2
			}
			conns[i] = n.Dial(t, u, "phone")
		}()
	}
	wg.Wait()
	owner := gw1.Dial(t, "owner", "phone")
	s := sendTo(t, owner, g.ID, "to all 1023")
	var missing sync.Map
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			f, err := c.Next(ctx)
			if err != nil || f.Message == nil || f.Message.ID != s.ID {
				missing.Store(members[i], fmt.Sprint(err))
			}
		}()
	}
	wg.Wait()
	count := 0
	missing.Range(func(k, v any) bool {
		count++
		if count <= 5 {
			t.Errorf("%s did not get the message: %v", k, v)
		}
		return true
	})
	if count > 0 {
		t.Fatalf("%d of 1023 members missed the message", count)
	}
}

// TestConcurrentMembershipChanges adds and removes members while messages
// flow; afterwards each member's devices hold exactly the messages sent
// while it was a member, as Postgres recorded the memberships.
func TestConcurrentMembershipChanges(t *testing.T) {
	t.Parallel()
	n, store := groupNode(t, natstest.RunJetStream(t), pgtest.New(t), "gw-1")
	ctx := context.Background()
	users := []string{"u1", "u2", "u3", "u4", "u5"}
	g, err := store.Create(ctx, "admin", "churn", users)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]bool{}
	var mu sync.Mutex
	for _, u := range users {
		got[u] = map[string]bool{}
		c := n.Dial(t, u, "phone")
		c.OnFrame(func(f *client.Frame) {
			if f.Message != nil {
				mu.Lock()
				got[u][f.Message.ID] = true
				mu.Unlock()
				c.Ack(f.Message.ID)
			}
		})
	}
	admin := n.Dial(t, "admin", "phone")
	var sent []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 40; i++ {
			u := users[r.IntN(len(users))]
			if r.IntN(2) == 0 {
				store.RemoveMember(ctx, "admin", g.ID, u)
			} else {
				store.AddMembers(ctx, "admin", g.ID, []string{u})
			}
		}
	}()
	for i := 0; i < 150; i++ {
		s, err := admin.SendMsg(ctx, client.SendRequest{Group: g.ID, Body: strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, s.ID)
	}
	<-done
	sent = append(sent, sendTo(t, admin, g.ID, "last").ID)
	time.Sleep(time.Second) // let the last deliveries land
	for _, u := range users {
		ivs, err := store.Memberships(ctx, u, 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, id := range sent {
			seq, _ := strconv.ParseUint(strings.TrimPrefix(id, "m"), 10, 64)
			for _, iv := range ivs {
				if iv.Group == g.ID && seq > iv.From && (iv.To == 0 || seq < iv.To) {
					want = append(want, id)
					break
				}
			}
		}
		mu.Lock()
		var have []string
		for id := range got[u] {
			have = append(have, id)
		}
		mu.Unlock()
		sort.Strings(want)
		sort.Strings(have)
		if strings.Join(want, ",") != strings.Join(have, ",") {
			t.Errorf("%s received %d messages, want %d (memberships %v)\n have %v\n want %v", u, len(have), len(want), ivs, have, want)
		}
	}
	_ = chat.Interval{}
}
