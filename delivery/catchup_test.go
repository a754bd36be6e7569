package delivery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natsx"
)

// checkInOrder fails unless ids are n distinct message ids in stream order.
func checkInOrder(t *testing.T, ids []string, n int) {
	t.Helper()
	if len(ids) != n {
		t.Fatalf("%d frames, want %d", len(ids), n)
	}
	var last uint64
	for i, id := range ids {
		seq := seqOf(t, id)
		if seq <= last {
			t.Fatalf("frame %d is %s after m%d: out of order or repeated", i, id, last)
		}
		last = seq
	}
}

// waitNoConsumers waits until the message log has no consumer left.
func waitNoConsumers(t *testing.T, s *Service) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := s.js.Stream(context.Background(), natsx.StreamMsgs)
		if err != nil {
			t.Fatal(err)
		}
		n := info.CachedInfo().State.Consumers
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers on the message log after the catch-up, want its reader removed", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLongBacklogIsReadThroughAReader: a device connecting to 700 waiting
// messages gets them all, in order and once, read past the first batch
// through a reader of its own, which is removed once the device is live;
// live delivery goes on from there.
func TestLongBacklogIsReadThroughAReader(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{})
	ctx := context.Background()
	const n = 700
	for i := 0; i < n; i++ {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i), To: "bob", Body: fmt.Sprint("hello ", i)}, false); err != nil {
			t.Fatal(err)
		}
	}
	sink := newSink(0)
	cd, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, sink.ids(t, n), n)
	waitLive(t, cd.(*Device))
	if got := testutil.ToFloat64(s.m.BacklogReaders); got != 1 {
		t.Errorf("%v backlog readers, want 1", got)
	}
	waitNoConsumers(t, s)
	if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: "live", To: "bob", Body: "live"}, false); err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, sink.ids(t, n+1), n+1)

	// A short backlog is read with direct gets alone.
	for i := 0; i < 100; i++ {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint("short", i), To: "carol", Body: "hi"}, false); err != nil {
			t.Fatal(err)
		}
	}
	sink = newSink(0)
	if _, err := s.Connect(ctx, "carol", "phone", sink); err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, sink.ids(t, 100), 100)
	if got := testutil.ToFloat64(s.m.BacklogReaders); got != 1 {
		t.Errorf("%v backlog readers after a short backlog, want still 1", got)
	}
}

// TestLongBacklogsOfSeveralSources: an inbox and a group, both with
// backlogs read through readers (every source counts as long here, and
// batches are small, so rounds stop short of a reader's end and replace
// it), merge into one sequence with nothing missing or repeated.
func TestLongBacklogsOfSeveralSources(t *testing.T) {
	t.Parallel()
	s, group, alice, bob, sink := groupService(t, Config{LongBacklog: 1, ReadBatch: 16})
	ctx := context.Background()
	bob.Close()
	const n = 150
	for i := 0; i < n; i++ {
		req := chat.SendRequest{CID: fmt.Sprint(i), To: "bob", Body: fmt.Sprint("1:1 ", i)}
		if i%3 == 0 {
			req = chat.SendRequest{CID: fmt.Sprint(i), Group: group, Body: fmt.Sprint("group ", i)}
		}
		mustSend(t, alice, req)
	}
	sink = newSink(0)
	cd, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	checkInOrder(t, sink.ids(t, n), n)
	waitLive(t, cd.(*Device))
	if got := testutil.ToFloat64(s.m.BacklogReaders); got < 2 {
		t.Errorf("%v backlog readers, want one per source at least", got)
	}
	waitNoConsumers(t, s)
}

// stalledSink has no room until released, then reports the session gone.
type stalledSink struct {
	*chanSink
	release chan struct{}
}

func (s *stalledSink) WaitRoom(ctx context.Context) error {
	select {
	case <-s.release:
		return chat.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestCatchUpEndingWhileItsReaderIsMade: a catch-up that ends (its session
// gone) while the reader for the rest of a long backlog is still being
// made, or made but not yet read, removes that reader too.
func TestCatchUpEndingWhileItsReaderIsMade(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{})
	ctx := context.Background()
	for i := 0; i < 700; i++ {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i), To: "bob", Body: "hi"}, false); err != nil {
			t.Fatal(err)
		}
	}
	sink := &stalledSink{chanSink: newSink(0), release: make(chan struct{})}
	d, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	// The first round read its batch, started the reader and waits for
	// room to deliver the batch.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(s.m.BacklogReaders) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no reader made for a backlog of 700")
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.Close()
	close(sink.release)
	waitNoConsumers(t, s)
}
