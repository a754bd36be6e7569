package gateway_test

import (
	"testing"
	"time"

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
