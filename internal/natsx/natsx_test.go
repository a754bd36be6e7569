package natsx_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
	if cfg.Description == "" || !cfg.AllowDirect || cfg.RePublish == nil || cfg.Duplicates != 15*time.Minute {
		t.Errorf("stream config = %+v, want description, direct gets, republish and a 15m duplicate window", cfg)
	}
}

func TestGetBatchReadsOneSubjectInOrder(t *testing.T) {
	t.Parallel()
	s := natstest.RunJetStream(t)
	nc, js := natstest.Connect(t, s)
	ctx := context.Background()
	if _, err := natsx.Ensure(ctx, js, natsx.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
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
