package gateway_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/client"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// BenchmarkRoundTrip is a 1:1 message through the whole node over real
// WebSockets on loopback: send → `sent` → the recipient's message frame,
// which it acks at once (so a delivered receipt flows back to the sender,
// who acks it too). One op is one message.
//
//   - serial: one pair, one message at a time — the cost of a message that
//     arrives alone (the open-loop case, where nothing batches);
//
//   - pairs=50: 50 pairs sending one at a time each, in parallel.
//
//     go test ./gateway/ -run '^$' -bench RoundTrip -benchtime 2000x -count 8
func BenchmarkRoundTrip(b *testing.B) {
	for _, pairs := range []int{1, 50} {
		name := "serial"
		if pairs > 1 {
			name = fmt.Sprintf("pairs=%d", pairs)
		}
		b.Run(name, func(b *testing.B) {
			n := testnode.Start(b, natstest.RunJetStream(b), testnode.Options{})
			type pair struct {
				from *client.Conn
				to   string
				got  chan string
			}
			ps := make([]*pair, pairs)
			for i := range ps {
				from, to := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
				p := &pair{from: n.Dial(b, from, "phone"), to: to, got: make(chan string, 1)}
				bob := n.Dial(b, to, "phone")
				bob.OnFrame(func(f *client.Frame) {
					if f.Message != nil {
						bob.Ack(f.Message.ID)
						p.got <- f.Message.ID
					}
				})
				p.from.OnFrame(func(f *client.Frame) {
					if f.Receipt != nil {
						p.from.Ack(f.Receipt.ID)
					}
				})
				ps[i] = p
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var next sync.Mutex
			left := 0
			take := func() bool {
				next.Lock()
				defer next.Unlock()
				if left == 0 {
					return false
				}
				left--
				return true
			}
			b.ResetTimer()
			left = b.N
			var wg sync.WaitGroup
			for _, p := range ps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for take() {
						s, err := p.from.Send(ctx, p.to, "hello, this is a chat message of typical length")
						if err != nil {
							b.Error(err)
							return
						}
						if id := <-p.got; id != s.ID {
							b.Errorf("got %s, sent %s", id, s.ID)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
