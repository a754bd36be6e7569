package natsx_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
)

func TestEnsureIsIdempotent(t *testing.T) {
	t.Parallel()
	s := natstest.RunJetStream(t)
	_, js := natstest.Connect(t, s)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := natsx.Ensure(ctx, js, natsx.DefaultSettings()); err != nil {
			t.Fatalf("Ensure #%d: %v", i, err)
		}
	}
	info, err := js.Stream(ctx, natsx.StreamMsgs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	if cfg.Description == "" || !cfg.AllowDirect || cfg.RePublish == nil || cfg.Duplicates != natsx.MinStoreDedupWindow {
		t.Errorf("stream config = %+v, want description, direct gets, republish and a 15s duplicate window", cfg)
	}
	cids, err := js.Stream(ctx, natsx.StreamCids)
	if err != nil {
		t.Fatal(err)
	}
	if c := cids.CachedInfo().Config; c.Description == "" || c.MaxAge != 16*time.Minute || len(c.Subjects) != 1 || c.Subjects[0] != "cids.*" {
		t.Errorf("send index stream config = %+v, want a description, cids.* kept 16m", c)
	}
}

// ensured is a connection to a new JetStream server with jetchat's streams
// and buckets made.
func ensured(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := natstest.Connect(t, natstest.RunJetStream(t))
	if _, err := natsx.Ensure(context.Background(), js, natsx.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestGetBatchReadsOneSubjectInOrder(t *testing.T) {
	t.Parallel()
	nc, js := ensured(t)
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		user := []string{"alice", "bob"}[i%2]
		if _, err := js.Publish(ctx, natsx.Inbox(user), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	res, err := natsx.GetBatch(ctx, nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox("bob"), Seq: 1, Batch: 10}, func(m *nats.Msg) error {
		got = append(got, string(m.Data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "1,3,5,7,9,11,13,15,17,19" || res.Pending != 5 || res.Count != 10 || res.Last != 20 {
		t.Errorf("GetBatch = %v %+v, want the first 10 of bob's with 5 pending", got, res)
	}
	res, err = natsx.GetBatch(ctx, nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox("bob"), Seq: 31, Batch: 10}, func(*nats.Msg) error { return nil })
	if err != nil || res.Count != 0 {
		t.Errorf("GetBatch past the end = %+v, %v; want nothing and no error", res, err)
	}
	m, err := natsx.Get(ctx, nc, natsx.StreamMsgs, 3)
	if err != nil || string(m.Data) != "2" || natsx.Seq(m) != 3 {
		t.Errorf("Get(3) = %v, %v", m, err)
	}
	if _, err := natsx.Get(ctx, nc, natsx.StreamMsgs, 999); !errors.Is(err, natsx.ErrNoMessage) {
		t.Errorf("Get(999) error = %v, want ErrNoMessage", err)
	}
}

// TestGetBatchEndsWhenTheConnectionCloses: a read waiting for its reply
// fails at once when its connection closes, not at its deadline.
func TestGetBatchEndsWhenTheConnectionCloses(t *testing.T) {
	t.Parallel()
	s := natstest.RunJetStream(t)
	nc, _ := natstest.Connect(t, s)
	other, _ := natstest.Connect(t, s)
	// A responder that never answers.
	if _, err := other.Subscribe("$JS.API.DIRECT.GET.SILENT", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := natsx.GetBatch(context.Background(), nc, "SILENT", natsx.BatchRequest{Subject: "x", Seq: 1, Batch: 10}, func(*nats.Msg) error { return nil })
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	nc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("GetBatch after the connection closed: %v, want ErrConnectionClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("GetBatch still waiting 5 s after its connection closed")
	}
}

// TestGetBatchAllocatesForItsReplyOnly: a batch read is made for every
// catch-up, so its cost must follow the size of the batch. Not parallel:
// the allocation count is the whole process's.
func TestGetBatchAllocatesForItsReplyOnly(t *testing.T) {
	nc, js := ensured(t)
	ctx := context.Background()
	if _, err := js.Publish(ctx, natsx.Inbox("bob"), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	read := func() {
		res, err := natsx.GetBatch(ctx, nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: natsx.Inbox("bob"), Seq: 1, Batch: 512}, func(*nats.Msg) error { return nil })
		if err != nil || res.Count != 1 {
			t.Fatalf("GetBatch = %+v, %v", res, err)
		}
	}
	read()
	const reads = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < reads; i++ {
		read()
	}
	runtime.ReadMemStats(&after)
	// A 512-message reply needs a 4 KiB queue; the rest (request, inbox,
	// one message, the server's side) is a few KiB more.
	if per := (after.TotalAlloc - before.TotalAlloc) / reads; per > 64<<10 {
		t.Errorf("one batch read of one message allocates %d KiB, want at most 64 KiB", per>>10)
	}
}

func TestNextSeqAsksTheLeader(t *testing.T) {
	t.Parallel()
	nc, js := ensured(t)
	ctx := context.Background()
	for i := 0; i < 6; i++ { // alice 1, 3, 5; bob 2, 4, 6
		if _, err := js.Publish(ctx, natsx.Inbox([]string{"alice", "bob"}[i%2]), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		user string
		from uint64
		want uint64
	}{{"bob", 1, 2}, {"bob", 3, 4}, {"bob", 4, 4}, {"alice", 6, 0}, {"carol", 1, 0}} {
		got, err := natsx.NextSeq(ctx, nc, natsx.StreamMsgs, natsx.Inbox(c.user), c.from)
		if err != nil || got != c.want {
			t.Errorf("NextSeq(%s, %d) = %d, %v; want %d", c.user, c.from, got, err, c.want)
		}
	}
	var apiErr *natsx.APIError
	if _, err := natsx.NextSeq(ctx, nc, "NO_SUCH_STREAM", natsx.Inbox("bob"), 1); !errors.As(err, &apiErr) {
		t.Errorf("NextSeq on a missing stream: %v, want a JetStream error", err)
	}
}

func TestLeaderLastReadsTheLastMessage(t *testing.T) {
	t.Parallel()
	nc, js := ensured(t)
	ctx := context.Background()
	m := nats.NewMsg(natsx.Inbox("bob"))
	m.Header.Set("Jetchat-Test", "second")
	m.Data = []byte("2")
	for _, msg := range []*nats.Msg{{Subject: natsx.Inbox("bob"), Data: []byte("1")}, m, {Subject: natsx.Inbox("alice"), Data: []byte("3")}} {
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	got, err := natsx.LeaderLast(ctx, nc, natsx.StreamMsgs, natsx.Inbox("bob"))
	if err != nil || got == nil || got.Seq != 2 || string(got.Data) != "2" || got.Header.Get("Jetchat-Test") != "second" {
		t.Errorf("LeaderLast(bob) = %+v, %v; want seq 2 with its header", got, err)
	}
	if got, err := natsx.LeaderLast(ctx, nc, natsx.StreamMsgs, natsx.Inbox("carol")); got != nil || err != nil {
		t.Errorf("LeaderLast(carol) = %+v, %v; want nothing", got, err)
	}
	if got, err := natsx.LeaderGet(ctx, nc, natsx.StreamMsgs, 3); err != nil || got == nil || got.Subject != natsx.Inbox("alice") || string(got.Data) != "3" {
		t.Errorf("LeaderGet(3) = %+v, %v; want alice's", got, err)
	}
	if got, err := natsx.LeaderGet(ctx, nc, natsx.StreamMsgs, 99); got != nil || err != nil {
		t.Errorf("LeaderGet(99) = %+v, %v; want nothing", got, err)
	}
}

func TestStartEmbeddedTakenPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = natsx.StartEmbedded(natsx.EmbeddedConfig{Listen: l.Addr().String(), StoreDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if !errors.Is(err, natsx.ErrListenTaken) {
		t.Errorf("StartEmbedded on a taken port: error = %v, want ErrListenTaken", err)
	}
}

func TestParsePubAck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    natsx.PubAck
		wantErr bool
	}{
		{`{"stream":"JETCHAT_MSGS","seq":42}`, natsx.PubAck{Stream: "JETCHAT_MSGS", Seq: 42}, false},
		{`{"stream":"S","seq":7,"duplicate":true}`, natsx.PubAck{Stream: "S", Seq: 7, Duplicate: true}, false},
		{`{"stream":"S","seq":7,"duplicate": true}`, natsx.PubAck{Stream: "S", Seq: 7, Duplicate: true}, false},
		{`{"stream":"S","seq": 9,"duplicate": false}`, natsx.PubAck{Stream: "S", Seq: 9}, false},
		{`{"stream":"S","domain":"d","seq":18446744073709551615}`, natsx.PubAck{Stream: "S", Seq: 18446744073709551615}, false},
		{`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`, natsx.PubAck{}, true},
		{`{"stream":"S"}`, natsx.PubAck{}, true},
		{`{"stream":"S","seq":0}`, natsx.PubAck{}, true},
		{`garbage`, natsx.PubAck{}, true},
	}
	for _, tt := range tests {
		got, err := natsx.ParsePubAckForTest([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parsePubAck(%s) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestPublishAgainstJetStream(t *testing.T) {
	t.Parallel()
	nc, _ := ensured(t)
	m := nats.NewMsg(natsx.Inbox("bob"))
	m.Data = []byte("x")
	m.Header.Set("Nats-Msg-Id", "once")
	a, err := natsx.Publish(nc, m, 5*time.Second)
	if err != nil || a.Seq == 0 || a.Duplicate || a.Stream != natsx.StreamMsgs {
		t.Fatalf("Publish = %+v, %v", a, err)
	}
	b, err := natsx.Publish(nc, m, 5*time.Second)
	if err != nil || b.Seq != a.Seq || !b.Duplicate {
		t.Fatalf("second Publish = %+v, %v; want a duplicate of %d", b, err, a.Seq)
	}
	m2 := nats.NewMsg("chat.u.too_big")
	m2.Data = make([]byte, natsx.MaxRecord+1)
	_, err = natsx.Publish(nc, m2, 5*time.Second)
	var api *natsx.APIError
	if !errors.As(err, &api) || natsx.Retryable(err) {
		t.Errorf("oversized Publish error = %v, want a non-retryable *APIError", err)
	}
	if _, err := natsx.Publish(nc, nats.NewMsg("nobody.listens"), time.Second); !errors.Is(err, nats.ErrNoResponders) || !natsx.Retryable(err) {
		t.Errorf("Publish without a stream: %v, want retryable ErrNoResponders", err)
	}
}

// TestEnsureWaitsForJetStream starts Ensure against a server whose JetStream
// is not answering yet (as in a cluster still electing its leader) and
// turns JetStream on a second later: Ensure must keep asking and succeed,
// not fail on the first unanswered request.
func TestEnsureWaitsForJetStream(t *testing.T) {
	t.Parallel()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := natsx.Ensure(ctx, js, natsx.DefaultSettings())
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Ensure returned before JetStream was on: %v", err)
	case <-time.After(time.Second):
	}
	if err := s.EnableJetStream(&server.JetStreamConfig{StoreDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Ensure after JetStream came up: %v", err)
	}
	if _, err := js.Stream(ctx, natsx.StreamMsgs); err != nil {
		t.Errorf("the message log: %v", err)
	}
}

// TestEnsureRefusesABadConfigAtOnce: an error no retry can fix is returned
// without waiting for ctx.
func TestEnsureRefusesABadConfigAtOnce(t *testing.T) {
	t.Parallel()
	s := natstest.RunJetStream(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := natsx.Ensure(ctx, js, natsx.Settings{Replicas: 3})
	if err == nil {
		t.Fatal("Ensure with 3 replicas on a single server succeeded")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Ensure took %s to refuse: %v", el, err)
	}
}
