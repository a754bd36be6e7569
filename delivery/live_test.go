package delivery

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/chat"
)

// waitSubs waits until the service's NATS connection holds n subscriptions.
func waitSubs(t *testing.T, s *Service, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.nc.NumSubscriptions() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the node holds %d NATS subscriptions, want %d", s.nc.NumSubscriptions(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connectUsers connects the phones of user-0 … user-<n-1>, live.
func connectUsers(t *testing.T, s *Service, n int) ([]*Device, []*chanSink) {
	t.Helper()
	devs := make([]*Device, n)
	sinks := make([]*chanSink, n)
	for i := range devs {
		sinks[i] = newSink(0)
		cd, err := s.Connect(context.Background(), fmt.Sprint("user-", i), "phone", sinks[i])
		if err != nil {
			t.Fatal(err)
		}
		devs[i] = cd.(*Device)
		waitLive(t, devs[i])
	}
	return devs, sinks
}

func TestOneLiveSubscriptionForAllUsers(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{LiveSwitchGrace: 10 * time.Millisecond})
	ctx := context.Background()
	before := s.nc.NumSubscriptions()
	if err := s.SubscribeAll(ctx, true); err != nil {
		t.Fatal(err)
	}
	waitSubs(t, s, before+1)

	const n = 20
	devs, sinks := connectUsers(t, s, n)
	// No subscription of their own: the node's one covers them.
	waitSubs(t, s, before+1)
	for i := range devs {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint("a", i), To: fmt.Sprint("user-", i), Body: "hi"}, false); err != nil {
			t.Fatal(err)
		}
	}
	// A record for a user who is not online here is dropped quietly.
	if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: "away", To: "offline", Body: "later"}, false); err != nil {
		t.Fatal(err)
	}
	alice, err := s.Connect(ctx, "alice", "phone", newSink(0))
	if err != nil {
		t.Fatal(err)
	}
	waitLive(t, alice.(*Device))
	if err := alice.Typing(ctx, "user-0", ""); err != nil {
		t.Fatal(err)
	}
	for i := range sinks {
		want := 1
		if i == 0 {
			want = 2 // and the typing
		}
		sinks[i].wait(t, want)
	}

	// Several gateways: one subscription per online user (21 with alice),
	// and the one for all is gone.
	if err := s.SubscribeAll(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitSubs(t, s, before+n+1)
	for i := range devs {
		if _, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint("b", i), To: fmt.Sprint("user-", i), Body: "again"}, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range sinks {
		want := 2
		if i == 0 {
			want = 3
		}
		sinks[i].wait(t, want)
	}
	for _, d := range devs {
		d.Close()
	}
	alice.Close()
	waitSubs(t, s, before)
}

// TestSwitchingLiveSubscriptionsLosesNothing switches between the two ways
// of subscribing while messages flow: every device must get each of its
// messages once, in order, live — without a gap that would send it back
// to the log.
func TestSwitchingLiveSubscriptionsLosesNothing(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{LiveSwitchGrace: 20 * time.Millisecond})
	ctx := context.Background()
	const users, perUser = 4, 150
	devs, sinks := connectUsers(t, s, users)

	sent := make([][]string, users)
	var wg sync.WaitGroup
	var switches atomic.Int64
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for k := 0; k < perUser; k++ {
			// Keep pace with the switches (one per 10 rounds at least), so
			// that a busy machine cannot send everything between two.
			for deadline := time.Now().Add(10 * time.Second); switches.Load() < int64(k/10); {
				if time.Now().After(deadline) {
					t.Errorf("round %d: only %d switches after 10 s", k, switches.Load())
					return
				}
				time.Sleep(time.Millisecond)
			}
			for i := range users {
				res, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: fmt.Sprint(i, "-", k), To: fmt.Sprint("user-", i), Body: "m"}, false)
				if err != nil {
					t.Error(err)
					return
				}
				sent[i] = append(sent[i], res.ID)
			}
		}
	}()
	for all := true; ; all = !all {
		select {
		case <-done:
		default:
			if err := s.SubscribeAll(ctx, all); err != nil {
				t.Fatal(err)
			}
			switches.Add(1)
			continue
		}
		break
	}
	wg.Wait()
	if n := switches.Load(); n < 14 {
		t.Fatalf("only %d switches while the messages flowed", n)
	}
	for i, sink := range sinks {
		got := sink.ids(t, perUser)
		if len(got) != perUser {
			t.Fatalf("user-%d got %d frames, want %d", i, len(got), perUser)
		}
		for k := range got {
			if got[k] != sent[i][k] {
				t.Fatalf("user-%d frame %d is %s, want %s", i, k, got[k], sent[i][k])
			}
		}
		devs[i].mu.Lock()
		catchUps := devs[i].catchUps
		devs[i].mu.Unlock()
		if catchUps != 1 {
			t.Errorf("user-%d's device read the log %d times, want once (at connect): a switch left a gap", i, catchUps)
		}
	}
	// Nothing more arrives (no record twice).
	time.Sleep(100 * time.Millisecond)
	for i, sink := range sinks {
		sink.mu.Lock()
		n := len(sink.frames)
		sink.mu.Unlock()
		if n != perUser {
			t.Errorf("user-%d got %d frames, want %d", i, n, perUser)
		}
	}
}

func TestFollowGateways(t *testing.T) {
	t.Parallel()
	s, _, _ := newService(t, Config{LiveSwitchGrace: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	base := s.nc.NumSubscriptions()
	for i := range 3 {
		cd, err := s.Connect(ctx, fmt.Sprint("user-", i), "phone", newSink(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cd.Close)
	}
	waitSubs(t, s, base+3)

	var mu sync.Mutex
	alone, changed := true, make(chan struct{})
	set := func(a bool) {
		mu.Lock()
		defer mu.Unlock()
		alone = a
		close(changed)
		changed = make(chan struct{})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.FollowGateways(ctx,
			func() <-chan struct{} { mu.Lock(); defer mu.Unlock(); return changed },
			func() bool { mu.Lock(); defer mu.Unlock(); return alone })
	}()
	waitSubs(t, s, base+1) // alone: one for all
	set(false)
	waitSubs(t, s, base+3) // another gateway: one per user
	set(true)
	waitSubs(t, s, base+1)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("FollowGateways did not return when its context ended")
	}
}
