package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// TestReceiptsInBatchesOverWebSocket: a session opened with
// ?receipts=batch is told so in hello, gets the receipts stored together as
// one receipts frame, and acks them all with its id: they are not sent
// again when it reconnects. A session without the option gets one receipt
// frame each.
func TestReceiptsInBatchesOverWebSocket(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	batch := client.Options{BatchReceipts: true}
	alice := n.DialWith(t, "alice", "phone", batch)
	if h := alice.Hello(); h.Receipts != "batch" {
		t.Fatalf("hello = %+v, want receipts batch", h)
	}
	bob := n.Dial(t, "bob", "phone")
	if h := bob.Hello(); h.Receipts != "" {
		t.Fatalf("hello = %+v, want no receipts field", h)
	}
	const k = 3
	var sent []client.Sent
	var ids []string
	for range k {
		sent = append(sent, send(t, alice, "bob", "hi"))
		ids = append(ids, nextMessage(t, bob).ID)
	}
	if err := bob.Ack(ids...); err != nil { // one ack: the receipts share a record
		t.Fatal(err)
	}
	// The receipts made together come as one frame. (Receipts a moment
	// apart may land in two records when the user's next record falls due
	// between them, so the frames are read until all k items are in.)
	fs := nextReceipts(t, alice, k, "delivered", sent)
	if len(fs) != 1 {
		t.Errorf("the receipts of one ack came in %d frames, want 1", len(fs))
	}
	// Read receipts come the same way.
	if err := bob.Read(ids...); err != nil {
		t.Fatal(err)
	}
	gs := nextReceipts(t, alice, k, "read", sent)
	for _, f := range fs {
		if err := alice.Ack(f.ID()); err != nil {
			t.Fatal(err)
		}
	}
	quiet(t, alice, 150*time.Millisecond)
	alice.Close()

	// Back: the acked batches are done; the others are sent again, whole.
	alice = n.DialWith(t, "alice", "phone", batch)
	for _, g := range gs {
		again := next(t, alice)
		if again.Receipts == nil || again.ID() != g.ID() || len(again.Receipts.Items) != len(g.Receipts.Items) {
			t.Fatalf("after reconnecting alice got %s, want the unacked receipts frame %s again", again.Raw, g.Raw)
		}
		alice.Ack(again.ID())
	}
	quiet(t, alice, 150*time.Millisecond)
	alice.Close()
	alice = n.DialWith(t, "alice", "phone", batch)
	quiet(t, alice, 300*time.Millisecond)

	// Without the option, the same receipts come one frame each.
	laptop := n.Dial(t, "alice", "laptop")
	for i := range 2 * k {
		r := nextReceipt(t, laptop)
		if r.Msg != sent[i%k].ID {
			t.Fatalf("receipt %d = %+v, want one of %s", i, r, sent[i%k].ID)
		}
	}
}

// nextReceipts reads receipts frames of c until they carry n items, each
// of status by bob about sent[i], in order.
func nextReceipts(t *testing.T, c *client.Conn, n int, status string, sent []client.Sent) []*client.Frame {
	t.Helper()
	var fs []*client.Frame
	for got := 0; got < n; {
		f := next(t, c)
		if f.Receipts == nil || f.ID() == "" || f.ID() != f.Receipts.ID || len(f.Receipts.Items) == 0 {
			t.Fatalf("got %s, want a receipts frame", f.Raw)
		}
		for _, it := range f.Receipts.Items {
			if got == n || it.Msg != sent[got].ID || it.Status != status || it.By != "bob" || it.TS < sent[got].TS {
				t.Fatalf("receipts frame %s: item %d is not %s of %s by bob", f.Raw, got, status, sent[min(got, n-1)].ID)
			}
			got++
		}
		fs = append(fs, f)
	}
	return fs
}

// TestReceiptsOptionRefused: any other value of the receipts parameter is
// answered 400 before the upgrade, naming the values it takes.
func TestReceiptsOptionRefused(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{})
	for _, v := range []string{"all", "BATCH", "batch,single", "%00"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Dial(ctx, n.WS+"?receipts="+v, testnode.Token(t, "alice", "phone"))
		cancel()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || ce.Code != "bad_request" {
			t.Errorf("receipts=%s: %v, want 400 bad_request", v, err)
		}
	}
	// The default is named too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.WS+"?receipts=single", testnode.Token(t, "alice", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	resp, err := http.Get(n.URL + "/v1/ws?receipts=x&access_token=" + testnode.Token(t, "alice", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var eb struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(body, &eb) != nil || eb.Error.Message != `receipts must be "single" or "batch", not "x"` {
		t.Errorf("answer %d %s", resp.StatusCode, body)
	}
}
