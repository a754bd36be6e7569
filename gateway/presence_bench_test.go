package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/testnode"
)

// BenchmarkPresenceOnConnect is the time from a user's WebSocket connect
// (dial start) on one gateway to the presence frame saying it is online at
// a subscriber on another gateway; then the user leaves and the subscriber
// sees it offline (not timed). Two gateways on one JetStream server.
//
//	go test ./gateway/ -run '^$' -bench PresenceOnConnect -benchtime 50x
func BenchmarkPresenceOnConnect(b *testing.B) {
	ns := natstest.RunJetStream(b)
	gw1 := testnode.Start(b, ns, presenceNode("gw-1", 10*time.Millisecond))
	gw2 := testnode.Start(b, ns, presenceNode("gw-2", 10*time.Millisecond))
	alice := gw1.Dial(b, "alice", "phone")
	if err := alice.Subscribe("bob"); err != nil {
		b.Fatal(err)
	}
	wait := func(online bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			f, err := alice.Next(ctx)
			if err != nil {
				b.Fatalf("waiting for bob's presence (online %v): %v", online, err)
			}
			if f.Presence != nil && f.Presence.User == "bob" && f.Presence.Online == online {
				return
			}
		}
	}
	wait(false) // the answer to the subscription
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		bob := gw2.Dial(b, "bob", "phone")
		wait(true)
		total += time.Since(start)
		b.StopTimer()
		bob.Close()
		wait(false)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/connect-to-presence")
}
