package svcapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
	"github.com/jetchat/jetchat/svcapi"
)

// TestEnvelopeMatchesClientFrames runs a real node: the records a service
// reads (durable consumer and live.>) decode to the ids, bodies and
// receipts the clients got over WebSocket.
func TestEnvelopeMatchesClientFrames(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	n := testnode.Start(t, ns, testnode.Options{})
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	live := make(chan *nats.Msg, 64)
	if _, err := nc.ChanSubscribe("live.>", live); err != nil {
		t.Fatal(err)
	}
	nc.Flush()

	alice := n.Dial(t, "alice", "phone")
	alice2 := n.Dial(t, "alice", "laptop") // so the send makes a copy too
	bob := n.Dial(t, "bob", "phone")
	sent, err := alice.Send(ctx, "bob", "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	f, err := bob.Next(ctx)
	if err != nil || f.Message == nil {
		t.Fatalf("bob: %v, %v", f, err)
	}
	bob.Ack(sent.ID)
	var rcpt *svcapi.Receipt
	for rcpt == nil {
		f, err := alice.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f.Receipt != nil {
			r := f.Receipt
			rcpt = &svcapi.Receipt{ID: r.ID, Msg: r.Msg, Status: r.Status, By: r.By, To: "alice", TS: r.TS}
		}
	}
	if f, err := alice2.Next(ctx); err != nil || f.Message == nil || f.Message.ID != sent.ID {
		t.Fatalf("alice's laptop: %v, %v; want the copy of %s", f, err, sent.ID)
	}

	cons, err := js.CreateOrUpdateConsumer(ctx, svcapi.Stream, jetstream.ConsumerConfig{Durable: "test", FilterSubject: "chat.>", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := svcapi.Message{ID: sent.ID, From: "alice", To: "bob", Body: "hi bob", TS: sent.TS, Device: "phone"}
	kinds := map[string]int{}
	for m := range batch.Messages() {
		ev, err := svcapi.DecodeMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		kinds[ev.Kind]++
		checkEvent(t, "consumer", ev, want, *rcpt)
		m.Ack()
	}
	if kinds[svcapi.KindMessage] != 1 || kinds[svcapi.KindCopy] != 1 || kinds[svcapi.KindReceipts] != 1 {
		t.Errorf("record kinds = %v, want one message, one copy, one receipts record", kinds)
	}
	for i := 0; i < 3; i++ {
		select {
		case m := <-live:
			ev, err := svcapi.DecodeLive(m)
			if err != nil {
				t.Fatal(err)
			}
			if ev != nil { // nil: a gateway notice
				checkEvent(t, "live", ev, want, *rcpt)
			} else {
				i--
			}
		case <-ctx.Done():
			t.Fatal("live records missing")
		}
	}
}

func checkEvent(t *testing.T, via string, ev *svcapi.Event, msg svcapi.Message, rcpt svcapi.Receipt) {
	t.Helper()
	if ev.Version != 1 || ev.Seq == 0 {
		t.Errorf("%s: event %+v, want version 1 and a sequence", via, ev)
	}
	switch ev.Kind {
	case svcapi.KindMessage, svcapi.KindCopy:
		if ev.Message == nil || *ev.Message != msg {
			t.Errorf("%s: %s record = %+v, want %+v", via, ev.Kind, ev.Message, msg)
		}
	case svcapi.KindReceipts:
		if len(ev.Receipts) != 1 || ev.Receipts[0] != rcpt || ev.Subject != "chat.u.alice" {
			t.Errorf("%s: receipts on %s = %+v, want [%+v]", via, ev.Subject, ev.Receipts, rcpt)
		}
	default:
		t.Errorf("%s: unexpected kind %q", via, ev.Kind)
	}
}

func TestDecodeRefusesNewerVersions(t *testing.T) {
	t.Parallel()
	h := nats.Header{}
	h.Set(svcapi.HdrVersion, "2")
	h.Set(svcapi.HdrKind, svcapi.KindMessage)
	if _, err := svcapi.Decode("chat.u.bob", 5, h, []byte(`{}`)); err == nil {
		t.Error("Decode of a version 2 record succeeded")
	}
	h.Set(svcapi.HdrVersion, "1")
	if _, err := svcapi.Decode("chat.u.bob", 5, h, []byte(`not json`)); err == nil {
		t.Error("Decode of a malformed message succeeded")
	}
	h.Del(svcapi.HdrVersion) // stored before versions: version 1
	h.Set(svcapi.HdrKind, "member")
	ev, err := svcapi.Decode("chat.g.g1", 5, h, []byte(`{}`))
	if err != nil || ev.Kind != "member" || ev.Message != nil {
		t.Errorf("Decode of an internal record = %+v, %v; want its kind and nothing else", ev, err)
	}
}
