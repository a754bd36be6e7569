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
func readOnce(t *testing.T, r *natsx.SubjectReader, batch, maxBytes int) ([]string, natsx.BatchResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	res, err := r.Read(ctx, batch, maxBytes, func(m *nats.Msg) error {
		if m.Header.Get(natsx.HdrSubject) != m.Subject || natsx.Seq(m) == 0 {
			t.Errorf("message %q has subject %q, sequence %q", m.Data, m.Header.Get(natsx.HdrSubject), m.Header.Get(natsx.HdrSequence))
		}
		got = append(got, fmt.Sprintf("%s@%d", m.Data, natsx.Seq(m)))
		return nil
	})
	if err != nil {
		t.Fatalf("Read(%d, %d): %v", batch, maxBytes, err)
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
	r, err := natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 5)
	if err != nil {
		t.Fatal(err)
	}
	got, res := readOnce(t, r, 5, 0)
	if strings.Join(got, ",") != "5@6,7@8,9@10,11@12,13@14" || res.Count != 5 || res.Pending != 8 || res.Last != 14 || r.Next() != 15 {
		t.Errorf("first read = %v %+v next %d, want bob's 5 from sequence 5 with 8 pending", got, res, r.Next())
	}
	got, res = readOnce(t, r, 100, 0)
	if len(got) != 8 || got[7] != "29@30" || res.Pending != 0 || res.Last != 30 {
		t.Errorf("second read = %v %+v, want the other 8 and nothing pending", got, res)
	}
	got, res = readOnce(t, r, 100, 0) // at the end: answered at once
	if len(got) != 0 || res.Count != 0 || res.Pending != 0 {
		t.Errorf("read at the end = %v %+v, want nothing", got, res)
	}
	if _, err := js.Publish(ctx, natsx.Inbox("bob"), []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ = readOnce(t, r, 100, 0); strings.Join(got, ",") != "new@31" {
		t.Errorf("read after a new message = %v, want it", got)
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
	r, err := natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 2)
	if err != nil {
		t.Fatal(err)
	}
	three, size := 0, 0
	if _, err := r.Read(ctx, 3, 0, func(m *nats.Msg) error { three += m.Size(); size = m.Size(); return nil }); err != nil || size == 0 {
		t.Fatalf("read 3: %v", err)
	}
	r.Close(ctx)
	r, err = natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, natsx.Inbox("bob"), 2)
	if err != nil {
		t.Fatal(err)
	}
	got, res := readOnce(t, r, 100, three)
	if strings.Join(got, ",") != "message 01@2,message 02@3,message 03@4" || res.Pending != 7 {
		t.Errorf("read of exactly 3 messages' bytes = %v %+v, want 3 with 7 pending", got, res)
	}
	got, _ = readOnce(t, r, 100, 3*size+size/2)
	if len(got) != 3 {
		t.Errorf("read of 3.5 messages' bytes = %v, want 3", got)
	}
	got, _ = readOnce(t, r, 100, 1024)
	if len(got) != 3 || got[2] != "message 09@10" {
		t.Errorf("read up to the large message = %v, want the 3 before it", got)
	}
	got, res = readOnce(t, r, 100, 1024)
	if len(got) != 1 || !strings.HasSuffix(got[0], "@11") || res.Pending != 0 {
		t.Errorf("read of a message larger than the bound = %v %+v, want it alone", got, res)
	}
	r.Close(ctx)
}

func TestSubjectReaderOfAMissingStream(t *testing.T) {
	t.Parallel()
	nc, js := ensured(t)
	_, err := natsx.NewSubjectReader(context.Background(), nc, js, "NO_SUCH_STREAM", natsx.Inbox("bob"), 1)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("NewSubjectReader on a missing stream: %v, want stream not found", err)
	}
}
