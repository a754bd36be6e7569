package delivery_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jetchat/jetchat/delivery"
	"github.com/jetchat/jetchat/internal/chat"
)

// The benchmarks run real parts: an embedded nats-server with JetStream on
// file storage and, for groups, membership in a throwaway Postgres
// database. Run them with
//
//	go test ./delivery/ -run '^$' -bench . -benchmem

// countSink counts the message frames it is given and keeps the id of the
// last one.
type countSink struct {
	mu     sync.Mutex
	last   string
	n      atomic.Int64
	notify chan struct{}
}

var idKey = []byte(`"id":"`)

func (s *countSink) Deliver(f []byte) bool {
	if !bytes.Contains(f, []byte(`"type":"message"`)) {
		return true
	}
	if i := bytes.Index(f, idKey); i >= 0 {
		rest := f[i+len(idKey):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			s.mu.Lock()
			s.last = string(rest[:j])
			s.mu.Unlock()
		}
	}
	s.n.Add(1)
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return true
}
func (s *countSink) WaitRoom(context.Context) error { return nil }
func (s *countSink) Close(error)                    {}

// BenchmarkSend is the publish path of a 1:1 message: validate, store in
// JetStream (file storage), answer. The recipient is offline. One op is
// one message; the parallel variant keeps 64 sends in flight.
func BenchmarkSend(b *testing.B) {
	s, _ := delivery.NewTestNode(b, delivery.Config{}, false)
	ctx := context.Background()
	d, err := s.Connect(ctx, "alice", "phone", &countSink{notify: make(chan struct{}, 1)})
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.Send(ctx, chat.SendRequest{CID: fmt.Sprint(seq.Add(1)), To: "bob", Body: "hello, this is a chat message of typical length"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel64", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32) // 2 cores: 64 senders
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := d.Send(ctx, chat.SendRequest{CID: fmt.Sprint(seq.Add(1)), To: "bob", Body: "hello, this is a chat message of typical length"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkGroupFanOut is a group message from its store to every online
// member's device, every member acking it (which makes its delivered
// receipt). One op is one group message delivered to all members.
func BenchmarkGroupFanOut(b *testing.B) {
	for _, members := range []int{100, 1024} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s, gs := delivery.NewTestNode(b, delivery.Config{}, true)
			ctx := context.Background()
			names := make([]string, members-1)
			for i := range names {
				names[i] = fmt.Sprintf("m%04d", i)
			}
			g, err := gs.Create(ctx, "owner", "bench", names)
			if err != nil {
				b.Fatal(err)
			}
			sender, err := s.Connect(ctx, "owner", "phone", &countSink{notify: make(chan struct{}, 1)})
			if err != nil {
				b.Fatal(err)
			}
			devs := make([]chat.Device, len(names))
			sinks := make([]*countSink, len(names))
			for i, name := range names {
				sinks[i] = &countSink{notify: make(chan struct{}, 1)}
				if devs[i], err = s.Connect(ctx, name, "phone", sinks[i]); err != nil {
					b.Fatal(err)
				}
			}
			send := func(n int64) {
				if _, err := sender.Send(ctx, chat.SendRequest{CID: fmt.Sprint(n), Group: g.ID, Body: "hello, group"}); err != nil {
					b.Fatal(err)
				}
				for i, sk := range sinks {
					for sk.n.Load() < n {
						<-sk.notify
					}
					sk.mu.Lock()
					id := sk.last
					sk.mu.Unlock()
					devs[i].Ack([]string{id})
				}
			}
			send(1) // every member's device reads the group live from here
			var n int64 = 1
			b.ReportAllocs()
			for b.Loop() {
				n++
				send(n)
			}
			b.ReportMetric(float64(b.N*len(names))/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
