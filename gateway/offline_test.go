package gateway_test

import (
	"context"
	"fmt"

	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// sendN sends n numbered messages and returns their ids in order.
func sendN(t *testing.T, c *client.Conn, to string, n int, prefix string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = send(t, c, to, fmt.Sprintf("%s %d", prefix, i)).ID
	}
	return ids
}

// receiveN reads n messages, checks they are ids in order, and acks them
// when ack is set.
func receiveN(t *testing.T, c *client.Conn, ids []string, ack bool) {
	t.Helper()
	for i, want := range ids {
		m := nextMessage(t, c)
		if m.ID != want {
			t.Fatalf("message %d: got %s (%q), want %s", i, m.ID, m.Body, want)
		}
		if ack {
			c.Ack(m.ID)
		}
	}
}

func TestOfflineCatchUpOf1000InOrder(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	ids := sendN(t, alice, "bob", 1000, "offline")
	bob := n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids, true)
	quiet(t, bob, 200*time.Millisecond)
	// Receipts reached alice: one per message.
	got := map[string]bool{}
	for len(got) < len(ids) {
		r := nextReceipt(t, alice)
		got[r.Msg] = true
		alice.Ack(r.ID)
	}
}

func TestUnackedRedeliveredAckedNot(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	ids := sendN(t, alice, "bob", 10, "m")

	bob := n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids[:4], true) // ack the first four
	receiveN(t, bob, ids[4:], false)
	bob.Close()

	// Reconnect: redelivery starts again from the oldest unacked.
	bob = n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids[4:], true)
	quiet(t, bob, 200*time.Millisecond)
	bob.Close()

	// All acked: nothing comes back.
	bob = n.Dial(t, "bob", "phone")
	quiet(t, bob, 300*time.Millisecond)
}

func TestAckedOutOfOrder(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	ids := sendN(t, alice, "bob", 3, "m")
	bob := n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids, false)
	bob.Ack(ids[0], ids[2]) // not the middle one
	bob.Close()
	bob = n.Dial(t, "bob", "phone")
	// The oldest unacked is redelivered, and what follows it (a device may
	// get an acked message again after a gap; ids let it drop the repeat).
	if m := nextMessage(t, bob); m.ID != ids[1] {
		t.Fatalf("first redelivery %s, want %s", m.ID, ids[1])
	}
}

func TestReceiptsSurviveSenderOffline(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	s := send(t, alice, "bob", "are you there?")
	alice.Close()

	bob := n.Dial(t, "bob", "phone")
	m := nextMessage(t, bob)
	bob.Ack(m.ID)
	bob.Read(m.ID)
	time.Sleep(100 * time.Millisecond) // let the receipts be stored

	alice = n.Dial(t, "alice", "phone")
	want := []string{"delivered", "read"}
	for _, st := range want {
		r := nextReceipt(t, alice)
		if r.Msg != s.ID || r.Status != st || r.By != "bob" {
			t.Fatalf("receipt %+v, want %s of %s", r, st, s.ID)
		}
		alice.Ack(r.ID)
	}
	alice.Close()
	// Acked receipts are not delivered again.
	alice = n.Dial(t, "alice", "phone")
	quiet(t, alice, 300*time.Millisecond)
	// A new device of alice gets the whole inbox, receipts included.
	tablet := n.Dial(t, "alice", "tablet")
	for _, st := range want {
		if r := nextReceipt(t, tablet); r.Status != st {
			t.Fatalf("new device got %+v, want %s", r, st)
		}
	}
}

func TestReconnectDuringLiveTraffic(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	const total = 600
	sent := make(chan string, total)
	go func() {
		defer close(sent)
		for i := 0; i < total; i++ {
			s, err := alice.Send(context.Background(), "bob", fmt.Sprint(i))
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			sent <- s.ID
		}
	}()
	var order []string
	seen := map[string]int{}
	bob := n.Dial(t, "bob", "phone")
	for round := 0; len(seen) < total; round++ {
		// Take a few messages, then reconnect (graceful close after acks:
		// acked messages must not come back).
		for k := 0; k < 50 && len(seen) < total; k++ {
			m := nextMessage(t, bob)
			seen[m.ID]++
			if seen[m.ID] > 1 {
				t.Fatalf("message %s delivered again after it was acked", m.ID)
			}
			order = append(order, m.ID)
			bob.Ack(m.ID)
		}
		bob.Close()
		bob = n.Dial(t, "bob", "phone")
	}
	var want []string
	for id := range sent {
		want = append(want, id)
	}
	if len(want) != total {
		t.Fatalf("sent %d", len(want))
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("message %d: got %s, want %s (order of sent answers)", i, order[i], want[i])
		}
	}
	quiet(t, bob, 200*time.Millisecond)
}

func TestAbortedConnectionRedeliversUnacked(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	ids := sendN(t, alice, "bob", 5, "m")
	bob := n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids, false)
	bob.Abort() // no close frame, no acks: like a phone losing its network
	bob = n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids, true)
}

func TestWindowPausesAndResumes(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{Delivery: delivery.Config{Window: 16, ReadBatch: 8}})
	alice := n.Dial(t, "alice", "phone")
	ids := sendN(t, alice, "bob", 100, "w")
	bob := n.Dial(t, "bob", "phone")
	// Without acks, only a window's worth arrives.
	receiveN(t, bob, ids[:16], false)
	quiet(t, bob, 300*time.Millisecond)
	// Acking makes room; everything else follows in order, live included.
	bob.Ack(ids[:16]...)
	receiveN(t, bob, ids[16:], true)
	more := send(t, alice, "bob", "live again")
	if m := nextMessage(t, bob); m.ID != more.ID {
		t.Fatalf("got %s, want live %s", m.ID, more.ID)
	}
}

func TestReplacedDeviceIsClosed(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	old := n.Dial(t, "bob", "phone")
	_ = n.Dial(t, "bob", "phone")
	select {
	case <-old.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the older session of the same device stayed open")
	}
	if code := old.CloseCode(); code != 4001 {
		t.Errorf("close code = %d, want 4001", code)
	}
}

// TestCatchUpFramesShareWrites: a catch-up's frames leave in few writes,
// not one each, and jetchat_session_writes_total counts the writes.
func TestCatchUpFramesShareWrites(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	alice := n.Dial(t, "alice", "phone")
	ids := sendN(t, alice, "bob", 300, "offline")
	frames0, writes0 := testutil.ToFloat64(n.Metrics.FramesOut), testutil.ToFloat64(n.Metrics.SessionWrites)
	if writes0 == 0 || writes0 > frames0 {
		t.Fatalf("after alice's sends: %v writes of %v frames", writes0, frames0)
	}
	bob := n.Dial(t, "bob", "phone")
	receiveN(t, bob, ids, false) // no acks: no receipts for alice meanwhile
	frames := testutil.ToFloat64(n.Metrics.FramesOut) - frames0
	writes := testutil.ToFloat64(n.Metrics.SessionWrites) - writes0
	if frames < 301 || writes < 1 || writes > frames/4 {
		t.Errorf("bob's hello and catch-up: %v frames in %v writes, want at least 301 frames in at most a quarter as many writes", frames, writes)
	}
}
