package gateway_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

func TestSendDeliverReceipts(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	if h := alice.Hello(); h.User != "alice" || h.Device != "phone" || h.Gateway == "" || h.TS == 0 {
		t.Errorf("hello = %+v", h)
	}

	s := send(t, alice, "bob", "hi bob")
	if s.ID == "" || s.TS == 0 {
		t.Fatalf("sent = %+v", s)
	}
	m := nextMessage(t, bob)
	if m.ID != s.ID || m.From != "alice" || m.To != "bob" || m.Body != "hi bob" || m.TS != s.TS {
		t.Fatalf("bob got %+v, want id %s from alice", m, s.ID)
	}
	if err := bob.Ack(m.ID); err != nil {
		t.Fatal(err)
	}
	r := nextReceipt(t, alice)
	if r.Msg != s.ID || r.Status != "delivered" || r.By != "bob" || r.ID == "" {
		t.Fatalf("alice got receipt %+v, want delivered of %s by bob", r, s.ID)
	}
	alice.Ack(r.ID)
	if err := bob.Read(m.ID); err != nil {
		t.Fatal(err)
	}
	r = nextReceipt(t, alice)
	if r.Msg != s.ID || r.Status != "read" || r.By != "bob" {
		t.Fatalf("alice got receipt %+v, want read", r)
	}
	alice.Ack(r.ID)

	st, err := n.API(t, "alice").Status(ctx10(t), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "read" || len(st.Recipients) != 1 || st.Recipients[0].User != "bob" || st.Recipients[0].Status != "read" {
		t.Errorf("status = %+v, want read by bob", st)
	}
	hist, err := n.API(t, "bob").History(ctx10(t), "alice", "", "", 0)
	if err != nil || len(hist) != 1 || hist[0].ID != s.ID || hist[0].Body != "hi bob" {
		t.Errorf("history = %+v, %v", hist, err)
	}
	quiet(t, bob, 200*time.Millisecond)
}

func TestSameCIDIsStoredAndDeliveredOnce(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	req := client.SendRequest{CID: "retry-me", To: "bob", Body: "once"}
	first, err := alice.SendMsg(ctx10(t), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := alice.SendMsg(ctx10(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || again.TS != first.TS {
		t.Errorf("resend answered %+v, want the original %+v", again, first)
	}
	// Also after reconnecting on another device of the same user.
	alice2 := n.Dial(t, "alice", "laptop")
	third, err := alice2.SendMsg(ctx10(t), req)
	if err != nil || third.ID != first.ID {
		t.Errorf("resend from another device = %+v, %v; want id %s", third, err, first.ID)
	}
	m := nextMessage(t, bob)
	if m.ID != first.ID {
		t.Fatalf("bob got %s, want %s", m.ID, first.ID)
	}
	bob.Ack(m.ID)
	quiet(t, bob, 300*time.Millisecond)
}

func TestMultiDevice(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alicePhone := n.Dial(t, "alice", "phone")
	aliceLaptop := n.Dial(t, "alice", "laptop")
	bobPhone := n.Dial(t, "bob", "phone")
	bobLaptop := n.Dial(t, "bob", "laptop")

	s := send(t, alicePhone, "bob", "to every device")
	// Both of bob's devices get it; alice's other device gets a copy with the
	// same id; the sending device does not get its own message back.
	for _, c := range []*client.Conn{bobPhone, bobLaptop, aliceLaptop} {
		m := nextMessage(t, c)
		if m.ID != s.ID || m.From != "alice" || m.To != "bob" || m.Body != "to every device" {
			t.Errorf("%s/%s got %+v, want %s", c.Hello().User, c.Hello().Device, m, s.ID)
		}
		c.Ack(m.ID)
	}
	// Both of bob's devices acked: alice's devices each get one delivered
	// receipt, not two.
	for _, c := range []*client.Conn{alicePhone, aliceLaptop} {
		r := nextReceipt(t, c)
		if r.Msg != s.ID || r.Status != "delivered" || r.By != "bob" {
			t.Errorf("%s got %+v", c.Hello().Device, r)
		}
		c.Ack(r.ID)
	}
	for _, c := range []*client.Conn{alicePhone, aliceLaptop, bobPhone, bobLaptop} {
		quiet(t, c, 300*time.Millisecond)
	}

	// A reply from bob's laptop reaches bob's phone (copy) and both of alice's.
	reply := send(t, bobLaptop, "alice", "reply")
	for _, c := range []*client.Conn{alicePhone, aliceLaptop, bobPhone} {
		if m := nextMessage(t, c); m.ID != reply.ID {
			t.Errorf("%s/%s got %s, want %s", c.Hello().User, c.Hello().Device, m.ID, reply.ID)
		}
	}
	quiet(t, bobLaptop, 200*time.Millisecond)
}

func TestReadImpliesDelivered(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	s := send(t, alice, "bob", "read me")
	m := nextMessage(t, bob)
	bob.Read(m.ID) // read without ack
	if r := nextReceipt(t, alice); r.Status != "read" || r.Msg != s.ID {
		t.Fatalf("receipt = %+v, want read", r)
	}
	bob.Ack(m.ID) // a later ack adds no delivered receipt
	quiet(t, alice, 300*time.Millisecond)
	st, err := n.API(t, "alice").Status(ctx10(t), s.ID)
	if err != nil || st.Status != "read" {
		t.Errorf("status = %+v, %v; want read", st, err)
	}
	// Reading again sends nothing new.
	bob.Read(m.ID)
	quiet(t, alice, 300*time.Millisecond)
}

func TestNoteToSelf(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	phone := n.Dial(t, "alice", "phone")
	laptop := n.Dial(t, "alice", "laptop")
	s := send(t, phone, "alice", "remember the milk")
	if m := nextMessage(t, laptop); m.ID != s.ID {
		t.Fatalf("laptop got %s, want %s", m.ID, s.ID)
	}
	quiet(t, phone, 200*time.Millisecond)
	hist, err := n.API(t, "alice").History(ctx10(t), "alice", "", "", 0)
	if err != nil || len(hist) != 1 || hist[0].ID != s.ID {
		t.Errorf("history with self = %+v, %v", hist, err)
	}
}

func TestTypingRelay(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	gw1 := testnode.Start(t, ns, testnode.Options{})
	gw2 := testnode.Start(t, ns, testnode.Options{})
	alice := gw1.Dial(t, "alice", "phone")
	bob := gw2.Dial(t, "bob", "phone")
	bob2 := gw1.Dial(t, "bob", "laptop")
	if err := alice.TypingTo("bob"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{bob, bob2} {
		f := next(t, c)
		if f.Typing == nil || f.Typing.From != "alice" || f.Typing.To != "bob" {
			t.Fatalf("%s got %s, want typing from alice", c.Hello().Device, f.Raw)
		}
	}
	quiet(t, alice, 200*time.Millisecond) // not echoed, not stored
	bob.Close()
	bob = gw2.Dial(t, "bob", "phone")
	quiet(t, bob, 200*time.Millisecond) // nothing stored for later
	// Bad input and the per-session limit.
	alice.WriteRaw([]byte(`{"type":"typing","to":"a.b"}`))
	expectError(t, alice, "bad_request")
	alice.TypingInGroup("nogroup")
	expectError(t, alice, "not_found")
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		alice.TypingTo("carol")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if f, err := alice.Next(ctx); err == nil && f.Error != nil && f.Error.Code == "rate_limited" {
			limited = true
		}
		cancel()
	}
	if !limited {
		t.Error("20 typing frames at once were not rate limited")
	}
}

// TestBodiesNeedingEscapesArriveIntact sends bodies the server must escape
// in JSON (quotes, backslashes, control characters, HTML characters) and
// plain ones: the client reads the first kind through encoding/json and the
// second through its fast path, and both must come out as sent.
func TestBodiesNeedingEscapesArriveIntact(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	for _, body := range []string{
		`say "hi"`, `C:\path`, "two\nlines\ttab", "<b>&amp;</b>", "ünïcødé ✓ 😀", "plain", "\u2028 sep",
	} {
		s := send(t, alice, "bob", body)
		m := nextMessage(t, bob)
		if m.ID != s.ID || m.Body != body || m.From != "alice" || m.TS != s.TS {
			t.Errorf("sent %q, bob got %+v", body, m)
		}
	}
}

// TestAcksRideOnSends: a send's ack field acks as an ack frame just before
// it would, whatever becomes of the send; a send whose ack list is bad is
// refused whole.
func TestAcksRideOnSends(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	bob := n.Dial(t, "bob", "phone")
	ids := sendN(t, alice, "bob", 4, "m")
	receiveN(t, bob, ids[:3], false)

	// Acks on a send that is stored.
	s, err := bob.SendMsg(ctx10(t), client.SendRequest{To: "alice", Body: "reply", Ack: ids[:2]})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, alice); m.ID != s.ID || m.Body != "reply" {
		t.Fatalf("alice got %+v, want the reply %s", m, s.ID)
	}
	// Acks on a send that is refused after decoding (unknown media): the
	// acks still count.
	_, err = bob.SendMsg(ctx10(t), client.SendRequest{To: "alice", Body: "x", Media: "nope", Ack: ids[2:3]})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "not_found" {
		t.Fatalf("send with unknown media: %v, want not_found", err)
	}
	delivered := map[string]bool{}
	for len(delivered) < 3 {
		r := nextReceipt(t, alice)
		if r.Status != "delivered" || r.By != "bob" {
			t.Fatalf("alice got receipt %+v, want delivered by bob", r)
		}
		delivered[r.Msg] = true
		alice.Ack(r.ID)
	}
	for _, id := range ids[:3] {
		if !delivered[id] {
			t.Errorf("no delivered receipt for %s (got %v)", id, delivered)
		}
	}

	// A bad id in the list: bad_request with the cid, nothing stored, and
	// the good id in it is not acked either.
	m := nextMessage(t, bob)
	if m.ID != ids[3] {
		t.Fatalf("bob got %s, want %s", m.ID, ids[3])
	}
	bob.WriteRaw([]byte(`{"type":"send","cid":"bad-ack","to":"alice","body":"lost?","ack":["` + m.ID + `","a.b"]}`))
	if e := expectError(t, bob, "bad_request"); e.CID != "bad-ack" || !strings.Contains(e.Message, "ack") {
		t.Errorf("error = %+v, want bad_request about the ack list, cid bad-ack", e)
	}
	quiet(t, alice, 300*time.Millisecond)

	// Reconnected, bob gets exactly the message he did not ack.
	bob.Close()
	bob = n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids[3:], true)
	quiet(t, bob, 200*time.Millisecond)
}
