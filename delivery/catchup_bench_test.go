package delivery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/chat"
)

// BenchmarkCatchUp1000 is a device connecting to 1,000 waiting messages:
// one op is from Connect to the last of them handed to the session. The
// backlog is read with direct gets alone (LongBacklog -1) or, past the
// first read, through a reader of its own (the default).
//
//	go test ./delivery/ -run '^$' -bench CatchUp -benchtime 20x
func BenchmarkCatchUp1000(b *testing.B) {
	b.Run("reads=direct", func(b *testing.B) { benchmarkCatchUp(b, Config{LongBacklog: -1}, 1000, 0) })
	b.Run("reads=reader", func(b *testing.B) { benchmarkCatchUp(b, Config{}, 1000, 0) })
}

// BenchmarkCatchUpSizes is the same catch-up with the node's defaults for
// shorter backlogs: those one first read takes whole, those a second read
// finishes, and those long enough for a reader. Other users' messages
// follow the backlog in the log, as they do on a node: a read that starts
// inside the backlog then costs the server a count of what is pending
// from there.
func BenchmarkCatchUpSizes(b *testing.B) {
	for _, n := range []int{10, 50, 200, 400} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) { benchmarkCatchUp(b, Config{}, n, 2000) })
	}
}

// benchmarkCatchUp times catch-ups of n messages to bob, followed in the
// log by after messages to other users.
func benchmarkCatchUp(b *testing.B, cfg Config, n, after int) {
	s, _, _ := newService(b, cfg)
	ctx := context.Background()
	for i := 0; i < n+after; i++ {
		to := "bob"
		if i >= n {
			to = fmt.Sprint("carol", i%100)
		}
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i), To: to, Body: "hello, this is a chat message of typical length"}, false); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	var total time.Duration
	for b.Loop() {
		i++
		sink := newSink(0)
		start := time.Now()
		d, err := s.Connect(ctx, "bob", fmt.Sprintf("dev%d", i), sink)
		if err != nil {
			b.Fatal(err)
		}
		connected := time.Since(start)
		sink.wait(b, 1)
		first := time.Since(start)
		sink.wait(b, n)
		total += time.Since(start)
		if i <= 3 {
			b.Logf("connect %v, first frame %v, all %v", connected, first, time.Since(start))
		}
		d.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/catch-up")
}
