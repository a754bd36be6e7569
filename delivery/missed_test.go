package delivery

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/wire"
)

// groupService is a delivery service with group messaging (real Postgres)
// and a group of alice and bob, bob connected and live.
func groupService(t *testing.T, cfg Config) (s *Service, group string, alice chat.Device, bob *Device, sink *chanSink) {
	t.Helper()
	s, gs := newNode(t, cfg, true)
	ctx := context.Background()
	g, err := gs.Create(ctx, "alice", "pair", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	if alice, err = s.Connect(ctx, "alice", "phone", newSink(0)); err != nil {
		t.Fatal(err)
	}
	sink = newSink(0)
	cd, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	bob = cd.(*Device)
	waitLive(t, bob)
	return s, g.ID, alice, bob, sink
}

// loseLive makes the node miss the live copies of group's records stored
// until the returned function runs, as when the subscription has not
// reached the server that republishes yet.
func loseLive(t *testing.T, s *Service, group string) (restore func()) {
	t.Helper()
	s.gmu.Lock()
	g := s.gsubs[group]
	s.gmu.Unlock()
	if g == nil {
		t.Fatal("no live subscription to the group")
	}
	g.sub.Unsubscribe()
	s.nc.Flush()
	return func() {
		sub, err := s.nc.ChanSubscribe(natsx.LiveGroup(group), s.liveCh)
		if err != nil {
			t.Fatal(err)
		}
		s.gmu.Lock()
		g.sub = sub
		s.gmu.Unlock()
		s.nc.Flush()
	}
}

func mustSend(t *testing.T, d chat.Device, req chat.SendRequest) chat.Sent {
	t.Helper()
	sent, err := d.Send(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return sent
}

func seqOf(t *testing.T, id string) uint64 {
	t.Helper()
	p, ok := parseID(id)
	if !ok {
		t.Fatalf("bad id %q", id)
	}
	return p.seq
}

// waitDelivered waits until the status of id, as its sender alice sees
// it, says bob has it.
func waitDelivered(t *testing.T, s *Service, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.Status(context.Background(), "alice", id)
		if err == nil && len(st.Recipients) == 1 && st.Recipients[0].Status != "sent" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s = %+v, %v; want delivered to bob", id, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A group message whose live copy was lost, found only when the next one
// shows the gap, arrives after a 1:1 message that carried bob's floor past
// it. Its ack must still make a delivered receipt.
func TestLateRecordGetsItsReceipt(t *testing.T) {
	t.Parallel()
	s, group, alice, bob, sink := groupService(t, Config{VerifyAfter: -1})

	restore := loseLive(t, s, group)
	m1 := mustSend(t, alice, chat.SendRequest{CID: "g1", Group: group, Body: "live copy lost"})
	restore()
	dm := mustSend(t, alice, chat.SendRequest{CID: "d1", To: "bob", Body: "1:1"})
	if got := sink.ids(t, 1); got[0] != dm.ID {
		t.Fatalf("bob got %v, want %s", got, dm.ID)
	}
	bob.Ack([]string{dm.ID})
	if f := bob.currentFloor(); f < seqOf(t, m1.ID) {
		t.Fatalf("floor %d did not pass the lost record %s: the test shows nothing", f, m1.ID)
	}

	m2 := mustSend(t, alice, chat.SendRequest{CID: "g2", Group: group, Body: "shows the gap"})
	got := sink.ids(t, 3)
	if got[1] != m1.ID || got[2] != m2.ID {
		t.Fatalf("bob got %v, want %s then %s after %s", got, m1.ID, m2.ID, dm.ID)
	}
	bob.Ack([]string{m1.ID, m2.ID})
	waitDelivered(t, s, dm.ID)
	waitDelivered(t, s, m2.ID)
	waitDelivered(t, s, m1.ID)
}

// A catch-up's read misses a group record and so does live delivery (the
// subscription did not reach the republishing server in time); the group
// stays quiet, so no later record shows the gap. The check against the
// log's leader finds it, and bob's floor never passes it unacknowledged.
func TestVerifyFindsARecordTheCatchUpMissed(t *testing.T) {
	t.Parallel()
	const after = 500 * time.Millisecond
	s, group, alice, bob, sink := groupService(t, Config{VerifyAfter: after})

	restore := loseLive(t, s, group)
	defer restore()
	s.Resync() // a catch-up that reads the group before the record is stored
	waitLive(t, bob)
	m1 := mustSend(t, alice, chat.SendRequest{CID: "g1", Group: group, Body: "missed by read and live"})
	dm := mustSend(t, alice, chat.SendRequest{CID: "d1", To: "bob", Body: "1:1"})
	if got := sink.ids(t, 1); got[0] != dm.ID {
		t.Fatalf("bob got %v, want %s", got, dm.ID)
	}
	bob.Ack([]string{dm.ID})
	if f := bob.storableFloor(); f >= seqOf(t, m1.ID) {
		t.Fatalf("floor %d passed %s, which bob has not had", f, m1.ID)
	}

	got := sink.ids(t, 2)
	if got[1] != m1.ID {
		t.Fatalf("bob got %v, want %s after %s", got, m1.ID, dm.ID)
	}
	bob.Ack([]string{m1.ID})
	waitDelivered(t, s, m1.ID)
	// The second check passes and the floor moves past both.
	deadline := time.Now().Add(10 * time.Second)
	for bob.storableFloor() < seqOf(t, dm.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("floor stays at %d, want %d", bob.storableFloor(), seqOf(t, dm.ID))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Alice's device reads the group too (her own message is passed over).
	var missed dto.Metric
	if err := s.m.MissedRecords.Write(&missed); err != nil || missed.GetCounter().GetValue() != 2 {
		t.Errorf("missed records counted %v (%v), want 2: bob's and alice's devices", missed.GetCounter().GetValue(), err)
	}
}

// A new leader of the message log may not have republished the last
// records the old one stored: its advisory makes every device read the log.
func TestNewLeaderMakesDevicesReadTheLog(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{})
	sink, lost := bobMissesOne(t, s)
	// What the server publishes when the stream elects a leader.
	if err := s.nc.Publish(natsx.LeaderElected(natsx.StreamMsgs), []byte(`{"type":"io.nats.jetstream.advisory.v1.stream_leader_elected"}`)); err != nil {
		t.Fatal(err)
	}
	if got := sink.ids(t, 1); got[0] != lost.ID {
		t.Fatalf("after the advisory bob got %v, want %s", got, lost.ID)
	}
}

// A direct get may be answered by a replica that lags the leader. Here that
// replica is a mirror of the message log answering direct gets beside it
// (as a lagging replica does) without the messages: about half the direct
// reads of them miss. A message's status must still be found.
func TestStatusFindsAMessageALaggingReplicaLacks(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{})
	ctx := context.Background()
	sent, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: "1", To: "bob", Body: "just sent"}, false)
	if err != nil {
		t.Fatal(err)
	}
	seq := seqOf(t, sent.ID)
	natstest.LaggingReplica(t, s.js, natsx.StreamMsgs, natsx.Inbox("lagging-probe"), func() bool {
		_, err := natsx.Get(ctx, s.nc, natsx.StreamMsgs, seq)
		return errors.Is(err, natsx.ErrNoMessage)
	})
	for i := range 20 {
		if st, err := s.Status(ctx, "alice", sent.ID); err != nil || st.ID != sent.ID {
			t.Fatalf("status #%d of %s = %+v, %v", i, sent.ID, st, err)
		}
	}
}

// Devices connect while a replica that lags the leader answers about half
// of the catch-up reads (and finds nothing). Nothing more is sent, so no
// live record shows the gap: the check against the leader must find the
// messages, and every device must get them.
func TestCatchUpOnALaggingReplicaMissesNothing(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{VerifyAfter: 100 * time.Millisecond})
	ctx := context.Background()
	const users, each = 8, 3
	want := map[string][]string{}
	for u := range users {
		to := fmt.Sprint("user", u)
		for i := range each {
			sent, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(to, "-", i), To: to, Body: "waiting"}, false)
			if err != nil {
				t.Fatal(err)
			}
			want[to] = append(want[to], sent.ID)
		}
	}
	natstest.LaggingReplica(t, s.js, natsx.StreamMsgs, natsx.Inbox("lagging-probe"), func() bool {
		_, err := natsx.Get(ctx, s.nc, natsx.StreamMsgs, 1)
		return errors.Is(err, natsx.ErrNoMessage)
	})
	for to, ids := range want {
		sink := newSink(0)
		if _, err := s.Connect(ctx, to, "phone", sink); err != nil {
			t.Fatal(err)
		}
		if got := sink.ids(t, each); fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Errorf("%s got %v, want %v", to, got, ids)
		}
	}
}

// A late record acknowledged by two devices of its recipient still makes
// one delivered receipt: once per recipient user, however many of its
// devices ack (PROTOCOL.md, ack).
func TestLateRecordReceiptOncePerUser(t *testing.T) {
	t.Parallel()
	s, group, alice, phone, phoneSink := groupService(t, Config{VerifyAfter: -1, ReceiptDelay: time.Millisecond, ReceiptSpacing: time.Millisecond})
	laptopSink := newSink(0)
	cd, err := s.Connect(context.Background(), "bob", "laptop", laptopSink)
	if err != nil {
		t.Fatal(err)
	}
	laptop := cd.(*Device)
	waitLive(t, laptop)
	devices := []struct {
		d    *Device
		sink *chanSink
	}{{phone, phoneSink}, {laptop, laptopSink}}

	restore := loseLive(t, s, group)
	m1 := mustSend(t, alice, chat.SendRequest{CID: "g1", Group: group, Body: "live copy lost"})
	restore()
	dm := mustSend(t, alice, chat.SendRequest{CID: "d1", To: "bob", Body: "1:1"})
	for _, dev := range devices {
		waitForIDs(t, dev.sink, dm.ID)
		dev.d.Ack([]string{dm.ID})
	}
	m2 := mustSend(t, alice, chat.SendRequest{CID: "g2", Group: group, Body: "shows the gap"})
	for _, dev := range devices {
		waitForIDs(t, dev.sink, m1.ID, m2.ID)
		dev.d.Ack([]string{m1.ID, m2.ID})
	}
	waitDelivered(t, s, m1.ID)
	time.Sleep(200 * time.Millisecond) // a second receipt would be stored by now
	if n := deliveredReceipts(t, s, "alice", m1.ID, "bob"); n != 1 {
		t.Errorf("alice's inbox holds %d delivered receipts of %s by bob, want 1", n, m1.ID)
	}
}

// waitForIDs waits until sink holds frames with all of ids.
func waitForIDs(t *testing.T, sink *chanSink, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		have := map[string]bool{}
		sink.mu.Lock()
		n := len(sink.frames)
		sink.mu.Unlock()
		for _, id := range sink.ids(t, n) {
			have[id] = true
		}
		missing := false
		for _, id := range ids {
			missing = missing || !have[id]
		}
		if !missing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink lacks some of %v", ids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deliveredReceipts counts the delivered receipts of msg by "by" stored in
// user's inbox.
func deliveredReceipts(t *testing.T, s *Service, user, msg, by string) int {
	t.Helper()
	n := 0
	_, err := natsx.GetBatch(context.Background(), s.nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox(user), Seq: 1, Batch: 1000}, func(m *nats.Msg) error {
		if m.Header.Get(HdrKind) != KindReceipts {
			return nil
		}
		b, err := decodeReceiptsBody(m.Data)
		if err != nil {
			return err
		}
		for _, it := range b.Items {
			if it.Msg == msg && it.By == by && it.Status == wire.StatusDelivered {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
