package natsx_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natsx"
)

// readOnce reads once with r and returns the data and sequences it got.
func readOnce(t *testing.T, r *natsx.SubjectReader) ([]string, natsx.BatchResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	res, err := r.Read(ctx, func(m *nats.Msg, seq uint64) error {
		if m.Subject != natsx.Inbox("bob") || seq == 0 {
			t.Errorf("message %q has subject %q, sequence %d", m.Data, m.Subject, seq)
		}
		got = append(got, fmt.Sprintf("%s@%d", m.Data, seq))
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return got, res
}

func TestSubjectReaderReadsOneSubjectInOrder(t *testing.T) {
	t.Parallel()
	nc, js := ensured(t)
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		if _, err := js.Publish(ctx, natsx.Inbox([]string{"alice", "bob"}[i%2]), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	subs := nc.NumSubscriptions()
	r, err := natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 5, natsx.ReaderOptions{Batch: 5})
	if err != nil {
		t.Fatal(err)
	}
	got, res := readOnce(t, r)
	if strings.Join(got, ",") != "5@6,7@8,9@10,11@12,13@14" || res.Count != 5 || res.Pending != 8 || res.Last != 14 || r.Next() != 15 {
		t.Errorf("first read = %v %+v next %d, want bob's 5 from sequence 5 with 8 pending", got, res, r.Next())
	}
	got, res = readOnce(t, r) // read ahead
	if strings.Join(got, ",") != "15@16,17@18,19@20,21@22,23@24" || res.Pending != 3 {
		t.Errorf("second read = %v %+v, want the next 5 with 3 pending", got, res)
	}
	got, res = readOnce(t, r)
	if len(got) != 3 || got[2] != "29@30" || res.Pending != 0 || res.Last != 30 {
		t.Errorf("third read = %v %+v, want the other 3 and nothing pending", got, res)
	}
	got, res = readOnce(t, r) // at the end: answered at once
	if len(got) != 0 || res.Count != 0 || res.Pending != 0 {
		t.Errorf("read at the end = %v %+v, want nothing", got, res)
	}
	if _, err := js.Publish(ctx, natsx.Inbox("bob"), []byte("new")); err != nil {
		t.Fatal(err)
	}
	// The consumer learns of the new message a moment after its store is
	// acknowledged: a read before that finds nothing yet.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if got, _ = readOnce(t, r); len(got) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if strings.Join(got, ",") != "new@31" {
		t.Errorf("read after a new message = %v, want it", got)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// A consumer started before the reader's first sequence: what lies
	// before it is passed over, over more than one batch (bob's 5 before
	// sequence 11), and no read comes back empty while more is pending.
	r, err = natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 11, natsx.ReaderOptions{Batch: 3, Start: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, res = readOnce(t, r) // the rest of the second batch
	if strings.Join(got, ",") != "11@12" || res.Pending != 10 || r.Next() != 13 {
		t.Errorf("read of a reader started before its first sequence = %v %+v next %d, want bob's first from sequence 11", got, res, r.Next())
	}
	if got, _ = readOnce(t, r); strings.Join(got, ",") != "13@14,15@16,17@18" {
		t.Errorf("read after it = %v, want the next 3", got)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Closed with a read ahead on its way.
	r, err = natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 1, natsx.ReaderOptions{Batch: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, res = readOnce(t, r); res.Pending == 0 {
		t.Fatalf("read = %+v, want more pending", res)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, natsx.StreamMsgs)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Consumers; n != 0 {
		t.Errorf("%d consumers after Close, want its consumer removed", n)
	}
	if n := nc.NumSubscriptions(); n != subs {
		t.Errorf("%d subscriptions after Close, want %d as before: the read ahead's left", n, subs)
	}
}

// TestSubjectReaderBytesBound: a read ends when it has used its bytes up,
// also exactly (the server then ends the request without a status), and a
// message larger than the bound is read alone.
func TestSubjectReaderBytesBound(t *testing.T) {
	t.Parallel()
	nc, js := ensured(t)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := js.Publish(ctx, natsx.Inbox("bob"), []byte(fmt.Sprintf("message %02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, natsx.Inbox("bob"), []byte(strings.Repeat("x", 4096))); err != nil {
		t.Fatal(err)
	}
	// The bytes of messages 2 to 4 as the server counts them (their reply
	// subjects vary in length with the pending count): another reader
	// from 2 sees the same.
	r, err := natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 2, natsx.ReaderOptions{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	three, size := 0, 0
	if _, err := r.Read(ctx, func(m *nats.Msg, _ uint64) error { three += m.Size(); size = m.Size(); return nil }); err != nil || size == 0 {
		t.Fatalf("read 3: %v", err)
	}
	r.Close(ctx)
	r, err = natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 2, natsx.ReaderOptions{Batch: 100, MaxBytes: three})
	if err != nil {
		t.Fatal(err)
	}
	got, res := readOnce(t, r)
	if strings.Join(got, ",") != "message 01@2,message 02@3,message 03@4" || res.Pending != 7 {
		t.Errorf("read of exactly 3 messages' bytes = %v %+v, want 3 with 7 pending", got, res)
	}
	r.Close(ctx)
	// Messages 5 to 7 are as large as 2 to 4 were (the same number of
	// digits in their reply subjects), message 10 a byte larger.
	r, err = natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 5, natsx.ReaderOptions{Batch: 100, MaxBytes: 3*size + size/2})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = readOnce(t, r)
	if strings.Join(got, ",") != "message 04@5,message 05@6,message 06@7" {
		t.Errorf("read of 3.5 messages' bytes = %v, want 3", got)
	}
	got, _ = readOnce(t, r)
	if len(got) != 3 || got[2] != "message 09@10" {
		t.Errorf("read up to the large message = %v, want the 3 before it", got)
	}
	got, res = readOnce(t, r)
	if len(got) != 1 || !strings.HasSuffix(got[0], "@11") || res.Pending != 0 {
		t.Errorf("read of a message larger than the bound = %v %+v, want it alone", got, res)
	}
	r.Close(ctx)
}

func TestSubjectReaderOfAMissingStream(t *testing.T) {
	t.Parallel()
	nc, js := ensured(t)
	_, err := natsx.NewSubjectReader(context.Background(), nc, js, "NO_SUCH_STREAM", natsx.Inbox("bob"), 1, natsx.ReaderOptions{Batch: 10})
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("NewSubjectReader on a missing stream: %v, want stream not found", err)
	}
}
