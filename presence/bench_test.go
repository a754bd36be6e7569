package presence_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/presence"
)

// benchUsers is the number of online users of BenchmarkPresenceActivity.
const benchUsers = 10000

// BenchmarkPresenceActivity measures the KV writes caused by 10,000 online
// users who keep calling Activity (one call per frame they send), the figure
// issue 4 asks for:
//
//	go test ./presence/ -run '^$' -bench PresenceActivity -benchtime 5s
//
// "connected": the users have a session on the gateway (the writes of their
// connects are not counted). "unconnected": the users are active without a
// session (HTTP only), so each becomes online on its first activity and
// offline a grace after its last; the writes of both transitions are
// counted, per user.
func BenchmarkPresenceActivity(b *testing.B) {
	users := make([]string, benchUsers)
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
	}
	b.Run("connected", func(b *testing.B) {
		ns := natstest.RunJetStream(b)
		n := startNode(b, ns, "gw-a", presence.Config{}, registry.Config{})
		ctx := ctx5(b)
		start := time.Now()
		for _, u := range users {
			if err := n.Connected(ctx, u, "phone"); err != nil {
				b.Fatal(err)
			}
		}
		connectWrites := settle(b, n.JS, 200*time.Millisecond)
		b.Logf("%d connects: %d KV writes, stored in %v", benchUsers, connectWrites, time.Since(start))
		before := revisions(b, n.JS)
		b.ResetTimer()
		start = time.Now()
		i := 0
		for b.Loop() {
			n.Activity(users[i%benchUsers])
			i++
		}
		elapsed := time.Since(start)
		b.StopTimer()
		writes := settle(b, n.JS, 200*time.Millisecond) - before
		b.ReportMetric(float64(writes)/elapsed.Seconds(), "kv-writes/s")
		b.ReportMetric(float64(i)/elapsed.Seconds(), "activities/s")
		b.Logf("%d activities of %d online users in %v: %d KV writes", i, benchUsers, elapsed, writes)
	})
	b.Run("unconnected", func(b *testing.B) {
		ns := natstest.RunJetStream(b)
		grace := time.Second
		n := startNode(b, ns, "gw-a", presence.Config{Grace: grace}, registry.Config{})
		before := revisions(b, n.JS)
		b.ResetTimer()
		start := time.Now()
		i := 0
		for b.Loop() {
			n.Activity(users[i%benchUsers])
			i++
		}
		elapsed := time.Since(start)
		b.StopTimer()
		time.Sleep(grace)
		writes := settle(b, n.JS, 500*time.Millisecond) - before
		active := min(i, benchUsers)
		b.ReportMetric(float64(writes)/float64(active), "kv-writes/user")
		b.ReportMetric(float64(i)/elapsed.Seconds(), "activities/s")
		b.Logf("%d activities of %d users without a session in %v: %d KV writes (online and offline transitions)", i, active, elapsed, writes)
	})
}
