package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
)

// chanSink is a chat.Sink that collects frames.
type chanSink struct {
	mu     sync.Mutex
	frames [][]byte
	limit  int
	closed error
	notify chan struct{}
}

func newSink(limit int) *chanSink { return &chanSink{limit: limit, notify: make(chan struct{}, 1)} }

func (s *chanSink) Deliver(f []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit > 0 && len(s.frames) >= s.limit {
		return false
	}
	s.frames = append(s.frames, f)
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return true
}

func (s *chanSink) WaitRoom(ctx context.Context) error { return nil }

func (s *chanSink) Close(reason error) {
	s.mu.Lock()
	s.closed = reason
	s.mu.Unlock()
}

// ids waits until the sink holds n frames and returns their ids.
func (s *chanSink) ids(t testing.TB, n int) []string {
	t.Helper()
	s.wait(t, n)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, f := range s.frames {
		var v struct{ ID string }
		json.Unmarshal(f, &v)
		out = append(out, v.ID)
	}
	return out
}

// wait returns once the sink holds n frames.
func (s *chanSink) wait(t testing.TB, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.frames)
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("sink holds %d frames, want %d", got, n)
		}
	}
}

func newService(t testing.TB, cfg Config) (*Service, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s, _ := newNode(t, cfg, false)
	return s, s.nc, s.js
}

// newNode is a running delivery service on its own JetStream server, with
// group messaging on a throwaway Postgres database when withGroups is set.
// It returns once its send index is loaded (its subscription in place:
// tests count them).
func newNode(t testing.TB, cfg Config, withGroups bool) (*Service, *groups.Store) {
	t.Helper()
	n, gs := startCidNodeWith(t, natstest.RunJetStream(t), natsx.DefaultSettings(), cfg, withGroups)
	return n.Service, gs
}

func waitLive(t *testing.T, d *Device) {
	t.Helper()
	for i := 0; i < 500; i++ {
		d.mu.Lock()
		m := d.mode
		d.mu.Unlock()
		if m == modeLive {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("device never went live")
}

func TestLiveGapIsReadFromTheLog(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{})
	ctx := context.Background()
	sink := newSink(0)
	cd, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	d := cd.(*Device)
	waitLive(t, d)
	u := d.user

	// Lose the live copy of the first message: no subscription while it is
	// stored. The second one arrives live and reveals the gap.
	u.sub.Unsubscribe()
	s.nc.Flush()
	first, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: "1", To: "bob", Body: "lost live"}, false)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := s.nc.ChanSubscribe(natsx.Live("bob"), s.liveCh)
	if err != nil {
		t.Fatal(err)
	}
	u.sub = sub
	s.nc.Flush()
	second, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: "2", To: "bob", Body: "live"}, false)
	if err != nil {
		t.Fatal(err)
	}
	got := sink.ids(t, 2)
	if got[0] != first.ID || got[1] != second.ID {
		t.Fatalf("device got %v, want [%s %s] in order", got, first.ID, second.ID)
	}
}

// bobMissesOne connects bob's phone, live, and stores a message to bob
// whose live copy the node misses, as when core NATS drops it or a stream
// leader dies before republishing it.
func bobMissesOne(t *testing.T, s *Service) (*chanSink, chat.Sent) {
	t.Helper()
	ctx := context.Background()
	sink := newSink(0)
	cd, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	d := cd.(*Device)
	waitLive(t, d)
	d.user.sub.Unsubscribe()
	s.nc.Flush()
	lost, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: "1", To: "bob", Body: "dropped"}, false)
	if err != nil {
		t.Fatal(err)
	}
	return sink, lost
}

func TestResyncFindsMissedRecords(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{})
	sink, lost := bobMissesOne(t, s)
	// What a slow-consumer or reconnect notice triggers:
	s.Resync()
	if got := sink.ids(t, 1); got[0] != lost.ID {
		t.Fatalf("after resync device got %v, want %s", got, lost.ID)
	}
}

func TestSlowSinkClosesLiveDevice(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{})
	ctx := context.Background()
	sink := newSink(2)
	cd, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	waitLive(t, cd.(*Device))
	for i := 0; i < 3; i++ {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: string(rune('a' + i)), To: "bob", Body: "x"}, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		sink.mu.Lock()
		closed := sink.closed
		sink.mu.Unlock()
		if closed == ErrSlowClient {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("a device whose queue overflowed was not closed as slow")
}

func TestParseID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want parsedID
		ok   bool
	}{
		{"m1", parsedID{seq: 1}, true},
		{"m18446744073709551615", parsedID{seq: 18446744073709551615}, true},
		{"r12-0", parsedID{receipt: true, seq: 12, part: 0}, true},
		{"r12-63", parsedID{receipt: true, seq: 12, part: 63}, true},
		{"r12-64", parsedID{}, false},
		{"m0", parsedID{}, false},
		{"m01", parsedID{}, false},
		{"m+1", parsedID{}, false},
		{"m-1", parsedID{}, false},
		{"r1-01", parsedID{}, false},
		{"r1", parsedID{receipt: true, seq: 1, part: -1}, true},
		{"r0", parsedID{}, false},
		{"r01", parsedID{}, false},
		{"r+1", parsedID{}, false},
		{"r", parsedID{}, false},
		{"r1-", parsedID{}, false},
		{"r-1", parsedID{}, false},
		{"x5", parsedID{}, false},
		{"m", parsedID{}, false},
		{"m18446744073709551616", parsedID{}, false},
	}
	for _, tt := range tests {
		got, ok := parseID(tt.in)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseID(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
		if ok {
			back := MessageID(got.seq)
			if got.receipt {
				back = receiptID(got.seq, got.part)
				if got.part < 0 {
					back = batchID(got.seq)
				}
			}
			if back != tt.in {
				t.Errorf("id %q does not round-trip: %q", tt.in, back)
			}
		}
	}
}

// TestConcurrentAcksByTwoDevicesMakeOneReceipt acks every message from two
// devices of one user at the same time: each message gets exactly one
// delivered receipt (neither device may count on the other).
func TestConcurrentAcksByTwoDevicesMakeOneReceipt(t *testing.T) {
	t.Parallel()
	s, nc, _ := newService(t, Config{ReceiptDelay: time.Millisecond})
	ctx := context.Background()
	sinkA, sinkB := newSink(0), newSink(0)
	a, err := s.Connect(ctx, "bob", "phone", sinkA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Connect(ctx, "bob", "laptop", sinkB)
	if err != nil {
		t.Fatal(err)
	}
	waitLive(t, a.(*Device))
	waitLive(t, b.(*Device))
	const n = 300
	for i := 0; i < n; i++ {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i), To: "bob", Body: "x"}, false); err != nil {
			t.Fatal(err)
		}
	}
	idsA, idsB := sinkA.ids(t, n), sinkB.ids(t, n)
	var wg sync.WaitGroup
	for _, job := range []struct {
		d   chat.Device
		ids []string
	}{{a, idsA}, {b, idsB}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, id := range job.ids {
				job.d.Ack([]string{id})
			}
		}()
	}
	wg.Wait()
	if err := s.receipts.flushAll(ctx); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	_, err = natsx.GetBatch(ctx, nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox("alice"), Seq: 1, Batch: 10000, MaxBytes: 64 << 20}, func(m *nats.Msg) error {
		var body receiptsBody
		if json.Unmarshal(m.Data, &body) == nil {
			for _, it := range body.Items {
				count[it.Msg]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range idsA {
		if count[id] != 1 {
			t.Errorf("message %s has %d delivered receipts, want 1", id, count[id])
		}
	}
}

// TestStoredFloorNeverCoversALostReceipt stores cursors while a device
// acks: at every moment, each message the stored floor covers already has
// its delivered receipt stored. (Were it otherwise, a node killed just
// after a cursor flush would lose receipts for good: the device, back on
// another node, would not be sent those messages again.) Receipts are
// stored only by the cursor flushes here, so what the test reads after a
// flush is what that flush left.
func TestStoredFloorNeverCoversALostReceipt(t *testing.T) {
	t.Parallel()
	s, nc, _ := newService(t, Config{ReceiptDelay: time.Hour, CursorFlush: time.Hour})
	ctx := context.Background()
	const n = 400
	d, sink := connectBobWithMessages(t, s, n)
	ids := sink.ids(t, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, id := range ids {
			d.Ack([]string{id})
		}
	}()
	check := func() (floor uint64) {
		e, err := s.kv.Get(ctx, "bob")
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return 0
			}
			t.Fatal(err)
		}
		var rec deviceRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		floor = rec.Devices.get("phone").Floor
		stored := map[string]bool{}
		_, err = natsx.GetBatch(ctx, nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox("alice"), Seq: 1, Batch: 10000, MaxBytes: 64 << 20}, func(m *nats.Msg) error {
			var body receiptsBody
			if json.Unmarshal(m.Data, &body) == nil {
				for _, it := range body.Items {
					stored[it.Msg] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if p, _ := parseID(id); p.seq <= floor && !stored[id] {
				t.Fatalf("stored floor %d covers %s, whose delivered receipt is not stored", floor, id)
			}
		}
		return floor
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if err := s.flushCursors(ctx); err != nil {
			t.Fatal(err)
		}
		check()
	}
	if err := s.flushCursors(ctx); err != nil {
		t.Fatal(err)
	}
	if p, _ := parseID(ids[n-1]); check() < p.seq {
		t.Fatalf("after the last ack the stored floor is %d, want at least %d", check(), p.seq)
	}
}

// TestReceiptSpacingHoldsABusyTargetsReceipts checks the receipt batcher's
// spacing: the first receipt to a user is stored after the short delay;
// the ones that follow within the spacing wait and share one record; a
// receipt to another user is not held by that.
func TestReceiptSpacingHoldsABusyTargetsReceipts(t *testing.T) {
	t.Parallel()
	s, nc, _ := newService(t, Config{ReceiptDelay: time.Millisecond, ReceiptSpacing: time.Hour})
	ctx := context.Background()
	const n = 10
	d, sink := connectBobWithMessages(t, s, n)
	if _, err := s.send(ctx, "carol", "phone", chat.SendRequest{CID: "c", To: "bob", Body: "x"}, false); err != nil {
		t.Fatal(err)
	}
	ids := sink.ids(t, n+1)
	records := func(user string) (recs [][]string) {
		_, err := natsx.GetBatch(ctx, nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox(user), Seq: 1, Batch: 1000, MaxBytes: 1 << 20}, func(m *nats.Msg) error {
			var body receiptsBody
			if m.Header.Get(HdrKind) == KindReceipts && json.Unmarshal(m.Data, &body) == nil {
				var msgs []string
				for _, it := range body.Items {
					msgs = append(msgs, it.Msg)
				}
				recs = append(recs, msgs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	waitRecords := func(user string, want int) [][]string {
		t.Helper()
		for range 1000 {
			if r := records(user); len(r) >= want {
				return r
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("no %d receipt records for %s", want, user)
		return nil
	}
	d.Ack(ids[:1])
	if r := waitRecords("alice", 1); len(r) != 1 || len(r[0]) != 1 || r[0][0] != ids[0] {
		t.Fatalf("first receipt records for alice: %v, want [[%s]]", r, ids[0])
	}
	d.Ack(ids[1:n])
	d.Ack(ids[n:])
	if r := waitRecords("carol", 1); len(r) != 1 || r[0][0] != ids[n] {
		t.Fatalf("receipt records for carol: %v, want [[%s]] (not held by alice's spacing)", r, ids[n])
	}
	if r := records("alice"); len(r) != 1 {
		t.Fatalf("alice got %d receipt records within the spacing, want the first only: %v", len(r), r)
	}
	if err := s.receipts.flushAll(ctx); err != nil {
		t.Fatal(err)
	}
	r := records("alice")
	if len(r) != 2 || len(r[1]) != n-1 {
		t.Fatalf("after the flush alice has receipt records %v, want the first and one with the other %d", r, n-1)
	}
}

// connectBobWithMessages connects bob's phone, live, and sends it n
// messages from alice.
func connectBobWithMessages(t *testing.T, s *Service, n int) (*Device, *chanSink) {
	t.Helper()
	ctx := context.Background()
	sink := newSink(0)
	d, err := s.Connect(ctx, "bob", "phone", sink)
	if err != nil {
		t.Fatal(err)
	}
	waitLive(t, d.(*Device))
	for i := 0; i < n; i++ {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i), To: "bob", Body: "x"}, false); err != nil {
			t.Fatal(err)
		}
	}
	return d.(*Device), sink
}

// TestSpreadShiftsReceiptStoresBothWays: the offset that spreads users'
// receipts records over time stays within a quarter of the spacing either
// way and averages out, so the spacing holds on average.
func TestSpreadShiftsReceiptStoresBothWays(t *testing.T) {
	t.Parallel()
	const spacing = time.Second
	var sum time.Duration
	lo, hi := spacing, -spacing
	const n = 20000
	for range n {
		d := spread(spacing)
		if d < -spacing/4 || d > spacing/4 {
			t.Fatalf("spread(%v) = %v, beyond a quarter", spacing, d)
		}
		sum += d
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo > -spacing/5 || hi < spacing/5 {
		t.Errorf("offsets span only %v..%v", lo, hi)
	}
	if mean := sum / n; mean < -spacing/50 || mean > spacing/50 {
		t.Errorf("mean offset %v, want about 0", mean)
	}
	if spread(0) != 0 || spread(3) != 0 {
		t.Error("a spacing too small to spread was shifted")
	}
}
