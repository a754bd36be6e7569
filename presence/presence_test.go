package presence_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/registry"
	"github.com/jetchat/jetchat/presence"
)

func TestPresenceSubscribeSendsCurrentStateAtOnce(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	b := startNode(t, ns, "gw-b", testCfg, fastReg)
	ctx := ctx5(t)
	if err := b.Connected(ctx, "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	// dave was online and left: he has a last-seen.
	if err := b.Connected(ctx, "dave", "phone"); err != nil {
		t.Fatal(err)
	}
	settle(t, b.JS, 50*time.Millisecond)
	daveLeft := time.Now()
	if err := b.Disconnected(ctx, "dave", "phone"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(testCfg.Grace)
	settle(t, b.JS, 100*time.Millisecond)

	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob", "carol", "dave", "bob"}); err != nil {
		t.Fatal(err)
	}
	// Frames are queued before Subscribe returns, in the order asked.
	for _, want := range []struct {
		user   string
		online bool
	}{{"bob", true}, {"carol", false}, {"dave", false}} {
		p := alice.expect(t, want.user, want.online, 0)
		switch want.user {
		case "carol":
			if p.LastSeen != 0 {
				t.Errorf("a user never seen has last_seen %d", p.LastSeen)
			}
		case "dave":
			msNear(t, "dave's last_seen", p.LastSeen, daveLeft, 100*time.Millisecond)
		}
	}
	alice.quiet(t, 100*time.Millisecond) // bob once, though named twice
	// Get agrees, on either gateway.
	for _, n := range []*node{a, b} {
		st, err := n.Get(ctx, "alice", "bob")
		if err != nil || !st.Online || st.LastSeen != 0 || st.User != "bob" {
			t.Errorf("Get(bob) = %+v, %v; want online", st, err)
		}
		st, err = n.Get(ctx, "alice", "dave")
		if err != nil || st.Online {
			t.Errorf("Get(dave) = %+v, %v; want offline", st, err)
		}
		msNear(t, "Get(dave).LastSeen", st.LastSeen, daveLeft, 100*time.Millisecond)
	}
}

func TestPresenceChangesAcrossGateways(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	b := startNode(t, ns, "gw-b", testCfg, fastReg)
	ctx := ctx5(t)
	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", false, 0)

	start := time.Now()
	if err := b.Connected(ctx, "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", true, 2*time.Second)
	t.Logf("connect on gw-b → frame on gw-a: %v", time.Since(start))

	left := time.Now()
	if err := b.Disconnected(ctx, "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	p := alice.expect(t, "bob", false, testCfg.Grace+2*time.Second)
	if waited := time.Since(left); waited < testCfg.Grace {
		t.Errorf("offline after %v, before the grace of %v", waited, testCfg.Grace)
	}
	msNear(t, "last_seen", p.LastSeen, left, 100*time.Millisecond)
	alice.quiet(t, 200*time.Millisecond)
}

func TestPresenceSeveralDevices(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	b := startNode(t, ns, "gw-b", testCfg, fastReg)
	ctx := ctx5(t)
	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", false, 0)

	// Two devices on gw-b, one on gw-a: online once.
	for _, c := range []struct {
		n      *node
		device string
	}{{b, "phone"}, {b, "tablet"}, {a, "laptop"}} {
		if err := c.n.Connected(ctx, "bob", c.device); err != nil {
			t.Fatal(err)
		}
	}
	alice.expect(t, "bob", true, 2*time.Second)
	// Devices leave one by one: online while any is connected.
	for _, c := range []struct {
		n      *node
		device string
	}{{b, "phone"}, {a, "laptop"}} {
		if err := c.n.Disconnected(ctx, "bob", c.device); err != nil {
			t.Fatal(err)
		}
	}
	alice.quiet(t, testCfg.Grace+500*time.Millisecond)
	if st, err := a.Get(ctx, "alice", "bob"); err != nil || !st.Online {
		t.Fatalf("Get(bob) with one device left = %+v, %v; want online", st, err)
	}
	left := time.Now()
	if err := b.Disconnected(ctx, "bob", "tablet"); err != nil {
		t.Fatal(err)
	}
	p := alice.expect(t, "bob", false, testCfg.Grace+2*time.Second)
	msNear(t, "last_seen", p.LastSeen, left, 100*time.Millisecond)
	// An unmatched disconnect changes nothing.
	if err := b.Disconnected(ctx, "bob", "tablet"); err != nil {
		t.Fatal(err)
	}
	alice.quiet(t, testCfg.Grace+200*time.Millisecond)
}

func TestPresenceQuickReconnectDoesNotFlap(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	cfg := presence.Config{Grace: time.Second}
	a := startNode(t, ns, "gw-a", cfg, fastReg)
	b := startNode(t, ns, "gw-b", cfg, fastReg)
	ctx := ctx5(t)
	if err := b.Connected(ctx, "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	before := settle(t, b.JS, 50*time.Millisecond)
	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", true, 0)
	// Reconnect on the same gateway, then move to the other one.
	b.Disconnected(ctx, "bob", "phone")
	time.Sleep(200 * time.Millisecond)
	b.Connected(ctx, "bob", "phone")
	b.Disconnected(ctx, "bob", "phone")
	time.Sleep(200 * time.Millisecond)
	a.Connected(ctx, "bob", "phone")
	alice.quiet(t, cfg.Grace+500*time.Millisecond)
	// Moving gateways costs a write on each: gw-a's entry, then gw-b's
	// removal after its grace. The reconnect on gw-b cost none.
	if got := settle(t, b.JS, 100*time.Millisecond) - before; got != 2 {
		t.Errorf("a reconnect and a move cost %d presence writes, want 2", got)
	}
}

func TestPresenceLastSeenPrivacy(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	b := startNode(t, ns, "gw-b", testCfg, fastReg)
	ctx := ctx5(t)
	b.Connected(ctx, "bob", "phone")
	settle(t, b.JS, 50*time.Millisecond)
	left := time.Now()
	b.Disconnected(ctx, "bob", "phone")
	time.Sleep(testCfg.Grace)
	settle(t, b.JS, 100*time.Millisecond)

	alice := newRecorder()
	self := newRecorder() // bob following himself sees his own last-seen
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Subscribe(ctx, self, "bob", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	msNear(t, "last_seen", alice.expect(t, "bob", false, 0).LastSeen, left, 100*time.Millisecond)
	msNear(t, "own last_seen", self.expect(t, "bob", false, 0).LastSeen, left, 100*time.Millisecond)

	if who, err := a.LastSeenPrivacy(ctx, "bob"); err != nil || who != presence.Everyone {
		t.Errorf("LastSeenPrivacy(bob) = %q, %v; want everyone by default", who, err)
	}
	if err := b.SetLastSeenPrivacy(ctx, "bob", "nobody"); err != nil {
		t.Fatal(err)
	}
	if who, err := a.LastSeenPrivacy(ctx, "bob"); err != nil || who != presence.Nobody {
		t.Errorf("LastSeenPrivacy(bob) = %q, %v; want nobody", who, err)
	}
	if p := alice.expect(t, "bob", false, 2*time.Second); p.LastSeen != 0 {
		t.Errorf("with privacy nobody, others see last_seen %d", p.LastSeen)
	}
	self.quiet(t, 100*time.Millisecond) // his own view did not change
	if st, err := a.Get(ctx, "alice", "bob"); err != nil || st.LastSeen != 0 || st.Online {
		t.Errorf("Get by alice = %+v, %v; want offline with no last_seen", st, err)
	}
	if st, err := a.Get(ctx, "bob", "bob"); err != nil || st.LastSeen == 0 {
		t.Errorf("Get by bob himself = %+v, %v; want his last_seen", st, err)
	}
	// Online still shows; last-seen stays hidden when he leaves again.
	b.Connected(ctx, "bob", "phone")
	alice.expect(t, "bob", true, 2*time.Second)
	self.expect(t, "bob", true, 2*time.Second)
	b.Disconnected(ctx, "bob", "phone")
	if p := alice.expect(t, "bob", false, testCfg.Grace+2*time.Second); p.LastSeen != 0 {
		t.Errorf("with privacy nobody, others see last_seen %d", p.LastSeen)
	}
	if p := self.expect(t, "bob", false, 2*time.Second); p.LastSeen == 0 {
		t.Error("bob does not see his own last_seen")
	}
	// Back to everyone: the last-seen shows again.
	if err := b.SetLastSeenPrivacy(ctx, "bob", "everyone"); err != nil {
		t.Fatal(err)
	}
	if p := alice.expect(t, "bob", false, 2*time.Second); p.LastSeen == 0 {
		t.Error("with privacy everyone, last_seen is hidden")
	}
	// Setting the same value again changes nothing.
	before := revisions(t, b.JS)
	if err := b.SetLastSeenPrivacy(ctx, "bob", "everyone"); err != nil {
		t.Fatal(err)
	}
	if got := revisions(t, b.JS); got != before {
		t.Errorf("setting the same privacy wrote %d times", got-before)
	}
	for _, who := range []string{"", "contacts", "Nobody"} {
		if err := b.SetLastSeenPrivacy(ctx, "bob", who); !errors.Is(err, chat.ErrBadRequest) {
			t.Errorf("SetLastSeenPrivacy(%q) = %v, want ErrBadRequest", who, err)
		}
	}
}

func TestPresenceUnsubscribeAndForget(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	b := startNode(t, ns, "gw-b", testCfg, fastReg)
	ctx := ctx5(t)
	subsBefore := a.NC.NumSubscriptions()
	s1, s2 := newRecorder(), newRecorder()
	if err := a.Subscribe(ctx, s1, "alice", []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Subscribe(ctx, s2, "dave", []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	if got := a.NC.NumSubscriptions() - subsBefore; got != 2 {
		t.Errorf("two sessions following two users hold %d NATS subscriptions, want 2 (one per user)", got)
	}
	for _, s := range []*recorder{s1, s2} {
		s.expect(t, "bob", false, 0)
		s.expect(t, "carol", false, 0)
	}
	a.Unsubscribe(s1, []string{"bob"})
	a.Forget(s2)
	b.Connected(ctx, "bob", "phone")
	b.Connected(ctx, "carol", "phone")
	s1.expect(t, "carol", true, 2*time.Second)
	s1.quiet(t, 200*time.Millisecond)
	s2.quiet(t, 0)
	if got := a.NC.NumSubscriptions() - subsBefore; got != 1 {
		t.Errorf("one session following one user holds %d NATS subscriptions, want 1", got)
	}
	a.Forget(s1)
	a.Forget(s1) // twice is fine
	a.Unsubscribe(s1, []string{"carol"})
	if got := a.NC.NumSubscriptions() - subsBefore; got != 0 {
		t.Errorf("after Forget, %d NATS subscriptions remain", got)
	}
	b.Disconnected(ctx, "carol", "phone")
	s1.quiet(t, testCfg.Grace+300*time.Millisecond)
}

func TestPresenceFollowCap(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", presence.Config{MaxFollows: 10}, fastReg)
	ctx := ctx5(t)
	users := make([]string, 12)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	s := newRecorder()
	if err := a.Subscribe(ctx, s, "alice", users[:8]); err != nil {
		t.Fatal(err)
	}
	err := a.Subscribe(ctx, s, "alice", users[5:11]) // 3 known, 3 new: 11
	if !errors.Is(err, chat.ErrTooLarge) {
		t.Fatalf("following 11 of at most 10: %v, want ErrTooLarge", err)
	}
	t.Logf("cap error: %v", err)
	// Nothing of the refused call was followed: 2 more fit.
	if err := a.Subscribe(ctx, s, "alice", users[6:10]); err != nil {
		t.Fatalf("following 10 of at most 10: %v", err)
	}
	if err := a.Subscribe(ctx, s, "alice", users[:10]); err != nil {
		t.Errorf("following again users already followed: %v", err)
	}
	// The cap is per session.
	if err := a.Subscribe(ctx, newRecorder(), "alice", users[:10]); err != nil {
		t.Errorf("another session: %v", err)
	}
	a.Unsubscribe(s, users[:2])
	if err := a.Subscribe(ctx, s, "alice", users[10:12]); err != nil {
		t.Errorf("after unsubscribing 2, following 2 more: %v", err)
	}
}

func TestPresenceBigLists(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	ctx := ctx5(t)
	users := make([]string, 1001)
	for i := range users {
		users[i] = fmt.Sprintf("user-%04d", i)
	}
	for _, u := range users[:10] {
		a.Connected(ctx, u, "phone")
	}
	settle(t, a.JS, 50*time.Millisecond)
	s := newRecorder()
	if err := a.Subscribe(ctx, s, "alice", users); !errors.Is(err, chat.ErrTooLarge) {
		t.Errorf("following 1001 users: %v, want ErrTooLarge", err)
	}
	start := time.Now()
	if err := a.Subscribe(ctx, s, "alice", users[:1000]); err != nil {
		t.Fatal(err)
	}
	t.Logf("subscribe to 1000 users: %v", time.Since(start))
	for i, u := range users[:1000] {
		s.expect(t, u, i < 10, 0)
	}
}

func TestPresenceBadInput(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	ctx := ctx5(t)
	bad := []string{"", "a.b", "a*", "a>", "a b", "ü", string(make([]byte, 65))}
	for _, u := range bad {
		for name, err := range map[string]error{
			"Connected":          a.Connected(ctx, u, "phone"),
			"Disconnected":       a.Disconnected(ctx, u, "phone"),
			"Subscribe":          a.Subscribe(ctx, newRecorder(), "alice", []string{"bob", u}),
			"Subscribe(viewer)":  a.Subscribe(ctx, newRecorder(), u, []string{"bob"}),
			"SetLastSeenPrivacy": a.SetLastSeenPrivacy(ctx, u, "nobody"),
		} {
			if !errors.Is(err, chat.ErrBadRequest) {
				t.Errorf("%s(%q) = %v, want ErrBadRequest", name, u, err)
			}
		}
		if _, err := a.Get(ctx, "alice", u); !errors.Is(err, chat.ErrBadRequest) {
			t.Errorf("Get(%q) = %v, want ErrBadRequest", u, err)
		}
		a.Activity(u) // ignored
	}
	if err := a.Connected(ctx, "bob", "a.b"); !errors.Is(err, chat.ErrBadRequest) {
		t.Errorf("Connected with a bad device id = %v, want ErrBadRequest", err)
	}
	if err := a.Subscribe(ctx, nil, "alice", []string{"bob"}); !errors.Is(err, chat.ErrBadRequest) {
		t.Errorf("Subscribe without a session = %v, want ErrBadRequest", err)
	}
	if got := revisions(t, a.JS); got != 0 {
		t.Errorf("bad input caused %d presence writes", got)
	}
}

// TestPresenceGatewayCrash kills a gateway's heartbeats (as SIGKILL would)
// with the default registry timing: its users turn offline on the other
// gateway within 30 s, with its last heartbeat as last-seen, and come back
// when they reconnect elsewhere.
func TestPresenceGatewayCrash(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, registry.Config{})
	b := startNode(t, ns, "gw-b", testCfg, registry.Config{})
	ctx := ctx5(t)
	b.Connected(ctx, "bob", "phone")
	b.Connected(ctx, "carol", "phone")
	settle(t, b.JS, 50*time.Millisecond)
	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", true, 0)
	alice.expect(t, "carol", true, 0)

	killed := time.Now()
	b.Reg.StopHeartbeats() // gw-b is dead to the world; its tracker writes nothing more
	seen := map[string]bool{}
	for range 2 {
		p := alice.next(t, 30*time.Second)
		if p.Online || seen[p.User] {
			t.Fatalf("frame %+v, want bob and carol offline once each", p)
		}
		seen[p.User] = true
		// The last-seen is gw-b's last heartbeat: within an interval
		// (2 s) before the kill.
		msNear(t, p.User+"'s last_seen", p.LastSeen, killed.Add(-time.Second), time.Second+100*time.Millisecond)
	}
	t.Logf("offline on gw-a %v after gw-b stopped heartbeating", time.Since(killed))
	ctx = ctx5(t)
	if st, err := a.Get(ctx, "dave", "bob"); err != nil || st.Online || st.LastSeen == 0 {
		t.Errorf("Get(bob) = %+v, %v; want offline with a last-seen", st, err)
	}
	// A gateway started after the crash knows the same.
	c := startNode(t, ns, "gw-c", testCfg, registry.Config{})
	st, err := c.Get(ctx, "dave", "carol")
	if err != nil || st.Online {
		t.Errorf("a later gateway: Get(carol) = %+v, %v; want offline", st, err)
	}
	msNear(t, "a later gateway's last_seen of carol", st.LastSeen, killed.Add(-time.Second), 2*time.Second)

	// bob reconnects on gw-a: online again; his record drops gw-b.
	a.Connected(ctx, "bob", "phone")
	alice.expect(t, "bob", true, 2*time.Second)
	alice.quiet(t, 200*time.Millisecond)
	e, err := a.JS.KeyValue(ctx, "jetchat_presence")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.Get(ctx, "bob"); err != nil || string(v.Value()) == "" || contains(string(v.Value()), `"gw-b"`) {
		t.Errorf("bob's record after reconnecting = %s, %v; want gw-b's entry removed", v.Value(), err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestPresenceRestartUnderSameID(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	b := startNode(t, ns, "gw-b", testCfg, fastReg)
	ctx := ctx5(t)
	b.Connected(ctx, "bob", "phone")
	settle(t, b.JS, 50*time.Millisecond)
	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", true, 0)
	// gw-b crashes and comes back at once under the same id, before its
	// entry expired: bob, connected to the old process, is offline.
	b.Reg.StopHeartbeats()
	b.stop()
	startNode(t, ns, "gw-b", testCfg, fastReg)
	alice.expect(t, "bob", false, 5*time.Second)
}

func TestPresenceActivityIsCoalesced(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	cfg := presence.Config{Grace: time.Second}
	a := startNode(t, ns, "gw-a", cfg, fastReg)
	ctx := ctx5(t)
	a.Connected(ctx, "bob", "phone")
	before := settle(t, a.JS, 50*time.Millisecond)
	if before != 1 {
		t.Errorf("connecting cost %d writes, want 1", before)
	}
	// A chatty online user: no write at all.
	for i := range 2000 {
		a.Activity("bob")
		if i%100 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got := settle(t, a.JS, 100*time.Millisecond) - before; got != 0 {
		t.Errorf("2000 activities of an online user cost %d writes, want 0", got)
	}
	// Activity without a connection (HTTP only) makes a user online for
	// the grace: one write in, one out, however many calls.
	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"carol"}); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "carol", false, 0)
	before = revisions(t, a.JS)
	end := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(end) {
		a.Activity("carol")
		time.Sleep(time.Millisecond)
	}
	last := time.Now()
	alice.expect(t, "carol", true, time.Second)
	p := alice.expect(t, "carol", false, cfg.Grace+2*time.Second)
	msNear(t, "last_seen after activity", p.LastSeen, last, 100*time.Millisecond)
	if got := settle(t, a.JS, 100*time.Millisecond) - before; got != 2 {
		t.Errorf("1.5 s of activity without a connection cost %d writes, want 2", got)
	}
}

// TestPresencePartitionHeals: a gateway cut off from NATS longer than
// the registry TTL looks dead, and another gateway's write drops its entry
// from a user's record; when it is back, it records its users again.
func TestPresencePartitionHeals(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startNode(t, ns, "gw-a", testCfg, fastReg)
	b := startNode(t, ns, "gw-b", testCfg, fastReg)
	ctx := ctx5(t)
	b.Connected(ctx, "bob", "phone")
	settle(t, b.JS, 50*time.Millisecond)
	alice := newRecorder()
	if err := a.Subscribe(ctx, alice, "alice", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", true, 0)
	b.Reg.StopHeartbeats()
	alice.expect(t, "bob", false, fastReg.TTL+3*time.Second)
	// A write through gw-a prunes gw-b's entry from bob's record.
	if err := a.SetLastSeenPrivacy(ctx, "bob", "nobody"); err != nil {
		t.Fatal(err)
	}
	alice.expect(t, "bob", false, 2*time.Second) // last_seen now hidden
	kv, err := a.JS.KeyValue(ctx, "jetchat_presence")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "bob"); err != nil || contains(string(e.Value()), `"gw-b"`) {
		t.Fatalf("bob's record during the partition = %s, %v; want gw-b's entry pruned", e.Value(), err)
	}
	b.Reg.ResumeHeartbeats()
	alice.expect(t, "bob", true, 3*time.Second)
	if e, err := kv.Get(ctx, "bob"); err != nil || !contains(string(e.Value()), `"gw-b"`) {
		t.Errorf("bob's record after the partition = %s, %v; want gw-b's entry back", e.Value(), err)
	}
}

// TestPresenceConcurrentChurn follows and unfollows users from many
// sessions while the users connect and disconnect on two gateways; when all
// is quiet, the last frame each session got of each user it follows tells
// the user's final state.
func TestPresenceConcurrentChurn(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	cfg := presence.Config{Grace: 50 * time.Millisecond}
	gws := []*node{startNode(t, ns, "gw-a", cfg, fastReg), startNode(t, ns, "gw-b", cfg, fastReg)}
	ctx := ctx5(t)
	users := []string{"u0", "u1", "u2", "u3", "u4", "u5"}
	var wg sync.WaitGroup
	// Users flap; user i ends online when i is even.
	for i, u := range users {
		wg.Go(func() {
			for k := range 20 {
				g := gws[k%2]
				g.Connected(ctx, u, "phone")
				time.Sleep(time.Duration(k%3) * time.Millisecond)
				g.Disconnected(ctx, u, "phone")
			}
			if i%2 == 0 {
				gws[i%2].Connected(ctx, u, "phone")
			}
		})
	}
	// Sessions churn their subscriptions; each keeps all users at the end.
	type session struct {
		*recorder
		g *node
	}
	var sessions []session
	for i := range 8 {
		s := session{newRecorder(), gws[i%2]}
		sessions = append(sessions, s)
		wg.Go(func() {
			for k := range 15 {
				if err := s.g.Subscribe(ctx, s, "viewer", users[k%3:]); err != nil {
					t.Error(err)
					return
				}
				switch k % 3 {
				case 0:
					s.g.Unsubscribe(s, users[:2])
				case 1:
					s.g.Forget(s)
				}
			}
			if err := s.g.Subscribe(ctx, s, "viewer", users); err != nil {
				t.Error(err)
			}
		})
	}
	// Someone else keeps the users' records busy with privacy writes.
	wg.Go(func() {
		for k := range 30 {
			if err := gws[k%2].SetLastSeenPrivacy(ctx, users[k%len(users)], []string{"nobody", "everyone"}[k%2]); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	time.Sleep(cfg.Grace)
	settle(t, gws[0].JS, 100*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	for si, s := range sessions {
		last := map[string]bool{}
		for done := false; !done; {
			select {
			case p := <-s.ch:
				last[p.User] = p.Online
			default:
				done = true
			}
		}
		for i, u := range users {
			online, ok := last[u]
			if !ok || online != (i%2 == 0) {
				t.Errorf("session %d: last frame of %s: online=%v (got one: %v), want online=%v", si, u, online, ok, i%2 == 0)
			}
			st, err := s.g.Get(ctx, "viewer", u)
			if err != nil || st.Online != (i%2 == 0) {
				t.Errorf("Get(%s) = %+v, %v; want online=%v", u, st, err, i%2 == 0)
			}
		}
	}
}
