package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/wire"
)

// batchSink is a chanSink whose client takes receipts in batches.
type batchSink struct{ *chanSink }

func (batchSink) ReceiptBatches() bool { return true }

// TestReceiptsInBatches: a device that takes receipts in batches gets each
// stored batch of receipts as one receipts frame, and acking its one id
// acknowledges them all; the same user's device that takes them one by one
// gets a receipt frame each from the same record.
func TestReceiptsInBatches(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{ReceiptDelay: 50 * time.Millisecond, CursorFlush: time.Hour})
	ctx := context.Background()
	phoneSink, laptopSink := batchSink{newSink(0)}, newSink(0)
	phone, err := s.Connect(ctx, "alice", "phone", phoneSink)
	if err != nil {
		t.Fatal(err)
	}
	laptop, err := s.Connect(ctx, "alice", "laptop", laptopSink)
	if err != nil {
		t.Fatal(err)
	}
	bobSink := newSink(0)
	bob, err := s.Connect(ctx, "bob", "phone", bobSink)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []chat.Device{phone, laptop, bob} {
		waitLive(t, d.(*Device))
	}
	const n = 3
	for i := range n {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i), To: "bob", Body: "x"}, true); err != nil {
			t.Fatal(err)
		}
	}
	msgs := bobSink.ids(t, n)
	laptopSink.wait(t, n) // the copies of alice's sends
	bob.Ack(msgs)

	// The phone: one receipts frame with the n receipts.
	phoneSink.wait(t, 1)
	time.Sleep(100 * time.Millisecond) // nothing more may come
	phoneSink.mu.Lock()
	frames := append([][]byte(nil), phoneSink.frames...)
	phoneSink.mu.Unlock()
	if len(frames) != 1 {
		t.Fatalf("the batching device got %d frames, want 1 receipts frame: %s", len(frames), frames)
	}
	var batch wire.Receipts
	if err := json.Unmarshal(frames[0], &batch); err != nil {
		t.Fatal(err)
	}
	p, ok := parseID(batch.ID)
	if batch.Type != wire.TypeReceipts || !ok || !p.receipt || p.part != -1 || len(batch.Items) != n {
		t.Fatalf("receipts frame %s", frames[0])
	}
	for i, it := range batch.Items {
		if it.Msg != msgs[i] || it.Status != wire.StatusDelivered || it.By != "bob" || it.TS == 0 {
			t.Errorf("item %d = %+v, want a delivered receipt of %s by bob", i, it, msgs[i])
		}
	}

	// The laptop: a receipt frame each, from the same record.
	laptopSink.wait(t, 2*n)
	laptopSink.mu.Lock()
	for i, f := range laptopSink.frames[n:] {
		var r wire.Receipt
		json.Unmarshal(f, &r)
		if r.Type != wire.TypeReceipt || r.ID != receiptID(p.seq, i) || r.Msg != msgs[i] {
			t.Errorf("laptop frame %d = %s, want receipt %s of %s", n+i, f, receiptID(p.seq, i), msgs[i])
		}
	}
	laptopSink.mu.Unlock()

	// One id acks the whole batch.
	pd := phone.(*Device)
	if f := pd.currentFloor(); f >= p.seq {
		t.Fatalf("floor %d before the ack already covers the receipts record %d", f, p.seq)
	}
	phone.Ack([]string{batch.ID})
	if f := pd.currentFloor(); f < p.seq {
		t.Fatalf("floor %d after acking %s, want at least %d", f, batch.ID, p.seq)
	}
	// A part's id still acks that part alone, on a device of either kind.
	ld := laptop.(*Device)
	laptop.Ack(laptopSink.ids(t, 2*n)[:n+1])
	if f := ld.currentFloor(); f >= p.seq {
		t.Fatalf("laptop floor %d covers the receipts record %d with one of its %d parts acked", f, p.seq, n)
	}
	laptop.Ack([]string{batch.ID})
	if f := ld.currentFloor(); f < p.seq {
		t.Fatalf("laptop floor %d after acking %s, want at least %d", f, batch.ID, p.seq)
	}
}
