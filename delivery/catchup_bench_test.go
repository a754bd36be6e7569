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
	b.Run("reads=direct", func(b *testing.B) { benchmarkCatchUp1000(b, Config{LongBacklog: -1}) })
	b.Run("reads=reader", func(b *testing.B) { benchmarkCatchUp1000(b, Config{}) })
}

func benchmarkCatchUp1000(b *testing.B, cfg Config) {
	s, _, _ := newService(b, cfg)
	ctx := context.Background()
	const n = 1000
	for i := 0; i < n; i++ {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i), To: "bob", Body: "hello, this is a chat message of typical length"}, false); err != nil {
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
