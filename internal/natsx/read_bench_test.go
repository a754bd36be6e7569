package natsx_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetchat/jetchat/internal/natsx"
)

// BenchmarkRead1000 reads one inbox's 1,000 records from the log in batches
// of 512, as a catch-up does, with batch direct gets and with a
// SubjectReader (its consumer made and removed in each op). The inbox's
// records come every `spread` records of the log: 2 is a backlog stored
// in one go (each message also stores its sender's copy), 200 the load
// tool's interleaved backlog scenario (100 inboxes filled round robin).
// The records carry a message record's headers.
//
//	go test ./internal/natsx/ -run '^$' -bench Read1000 -benchtime 20x
func BenchmarkRead1000(b *testing.B) {
	for _, spread := range []int{2, 200} {
		nc, js := ensured(b)
		fillLog(b, js, spread, []byte(strings.Repeat("x", 200)))
		ctx := context.Background()
		subject := natsx.Inbox("u0")
		b.Run(fmt.Sprintf("direct/spread=%d", spread), func(b *testing.B) {
			for b.Loop() {
				for n, seq := 0, uint64(1); n < 1000; {
					res, err := natsx.GetBatch(ctx, nc, natsx.StreamMsgs, natsx.BatchRequest{Subject: subject, Seq: seq, Batch: 512, MaxBytes: 4 << 20}, func(*nats.Msg) error { return nil })
					if err != nil || res.Count == 0 {
						b.Fatalf("read %d: %+v %v", n, res, err)
					}
					n += res.Count
					seq = res.Last + 1
				}
			}
		})
		b.Run(fmt.Sprintf("reader/spread=%d", spread), func(b *testing.B) {
			for b.Loop() {
				r, err := natsx.NewSubjectReader(ctx, nc, js, natsx.StreamMsgs, subject, 1, natsx.ReaderOptions{Batch: 512, MaxBytes: 4 << 20})
				if err != nil {
					b.Fatal(err)
				}
				for n := 0; n < 1000; {
					res, err := r.Read(ctx, func(*nats.Msg, uint64) error { return nil })
					if err != nil || res.Count == 0 {
						b.Fatalf("read %d: %+v %v", n, res, err)
					}
					n += res.Count
				}
				if err := r.Close(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fillLog stores 1,000 records for each of spread inboxes, round robin,
// with headers like a message record's.
func fillLog(b *testing.B, js jetstream.JetStream, spread int, body []byte) {
	for i := 0; i < 1000*spread; i++ {
		m := nats.NewMsg(natsx.Inbox(fmt.Sprint("u", i%spread)))
		m.Data = body
		for _, h := range [][2]string{{"Nats-Msg-Id", fmt.Sprint("d:sender:", i)}, {"Jc-Kind", "msg"}, {"Jc-From", "sender"}, {"Jc-To", fmt.Sprint("u", i%spread)}, {"Jc-Device", "phone"}, {"Jc-Ts", "1764300000000"}, {"Jc-V", "1"}} {
			m.Header.Set(h[0], h[1])
		}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
		if i%4096 == 4095 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
}
