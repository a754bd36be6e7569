package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/await"
	"github.com/jetchat/jetchat/internal/chat"
	"github.com/jetchat/jetchat/internal/cidindex"
	"github.com/jetchat/jetchat/internal/metrics"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/natsx"
	"github.com/jetchat/jetchat/internal/pgtest"
)

// cidNode is a node (a delivery service with its own NATS connection) on
// ns, with the given windows. stop ends it as SIGTERM would; crash closes
// its connection first, so nothing pending reaches the log.
type cidNode struct {
	*Service
	stop, crash func()
}

func startCidNode(t testing.TB, ns *server.Server, set natsx.Settings, cfg Config) *cidNode {
	t.Helper()
	n, _ := startCidNodeWith(t, ns, set, cfg, false)
	return n
}

// startCidNodeWith is startCidNode, with group messaging on a throwaway
// Postgres database when withGroups is set.
func startCidNodeWith(t testing.TB, ns *server.Server, set natsx.Settings, cfg Config, withGroups bool) (*cidNode, *groups.Store) {
	t.Helper()
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	res, err := natsx.Ensure(ctx, js, set)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	var wg sync.WaitGroup
	var gs *groups.Store
	var dg Groups
	if withGroups {
		if gs, err = groups.New(groups.Config{}, pgtest.New(t), nc, js, log); err != nil {
			t.Fatal(err)
		}
		dg = gs
		wg.Add(1)
		go func() { defer wg.Done(); gs.Run(ctx) }()
	}
	s, err := New(cfg, nc, js, res, dg, metrics.New(), log)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	select {
	case <-s.SendIndexReady():
	case <-time.After(10 * time.Second):
		t.Fatal("the send index did not load")
	}
	return &cidNode{Service: s, stop: stop, crash: func() { nc.Close(); stop() }}, gs
}

// shortWindows keeps a send's cid for 20 s, the message log's own
// duplicate window only 300 ms: a repeat after that is the index's to
// recognise.
var shortWindows = natsx.Settings{Replicas: 1, Retention: time.Hour, DedupWindow: 20 * time.Second, StoreDedupWindow: 300 * time.Millisecond}

func storedOn(t *testing.T, s *Service, subject string) uint64 {
	t.Helper()
	st, err := s.js.Stream(context.Background(), natsx.StreamMsgs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func sendOn(t *testing.T, s *Service, cid, to string) chat.Sent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.send(ctx, "alice", "phone", chat.SendRequest{CID: cid, To: to, Body: "hello " + cid}, false)
	if err != nil {
		t.Fatalf("send %s: %v", cid, err)
	}
	return out
}

// sameSend checks that again answers the send first answered.
func sameSend(t *testing.T, first, again chat.Sent) {
	t.Helper()
	if again.ID != first.ID || again.TS != first.TS || again.Seq != first.Seq || !again.Duplicate {
		t.Errorf("repeat answered %+v, want the first answer %+v marked duplicate", again, first)
	}
}

// repeatOn repeats alice's send c1 to bob on s: it must get first's answer,
// and bob's inbox must still hold one record.
func repeatOn(t *testing.T, s *Service, first chat.Sent) {
	t.Helper()
	sameSend(t, first, sendOn(t, s, "c1", "bob"))
	if n := storedOn(t, s, natsx.Inbox("bob")); n != 1 {
		t.Errorf("bob's inbox holds %d records, want 1", n)
	}
}

// pastStoreWindow waits until the message log no longer recognises a send
// made before the call.
func pastStoreWindow() { time.Sleep(shortWindows.StoreDedupWindow + 400*time.Millisecond) }

func TestRepeatAfterTheStoreWindowIsTheFirstSend(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond})
	first := sendOn(t, a.Service, "c1", "bob")
	pastStoreWindow()
	repeatOn(t, a.Service, first)
	// Another cid is another message.
	if other := sendOn(t, a.Service, "c2", "bob"); other.ID == first.ID || other.Duplicate {
		t.Errorf("a new cid answered %+v", other)
	}
}

func TestRepeatOnAnotherNode(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond})
	b := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond})
	first := sendOn(t, a.Service, "c1", "bob")
	pastStoreWindow() // and long past a's flush and b's read of it
	repeatOn(t, b.Service, first)
}

// A node starting after another one stopped knows its sends: stored at its
// shutdown, or, after a crash that kept them from the send index's stream,
// read from the message log's last sends at start.
func TestRepeatOnANodeStartedAfterAnother(t *testing.T) {
	t.Parallel()
	for name, end := range map[string]func(*cidNode){"stop": func(n *cidNode) { n.stop() }, "crash": func(n *cidNode) { n.crash() }} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.RunJetStream(t)
			a := startCidNode(t, ns, shortWindows, Config{CidFlush: time.Hour}) // stored only at shutdown
			announced(t, a)
			first := sendOn(t, a.Service, "c1", "bob")
			end(a)
			pastStoreWindow()
			c := startCidNode(t, ns, shortWindows, Config{})
			repeatOn(t, c.Service, first)
		})
	}
}

func TestRepeatAfterTheWindowIsANewSend(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	set := shortWindows
	set.DedupWindow = time.Second
	a := startCidNode(t, ns, set, Config{CidFlush: 20 * time.Millisecond})
	first := sendOn(t, a.Service, "c1", "bob")
	time.Sleep(set.DedupWindow + 300*time.Millisecond)
	again := sendOn(t, a.Service, "c1", "bob")
	if again.ID == first.ID || again.Duplicate {
		t.Errorf("a repeat after the window answered %+v, want a new message (first %+v)", again, first)
	}
	if n := storedOn(t, a.Service, natsx.Inbox("bob")); n != 2 {
		t.Errorf("bob's inbox holds %d records, want 2", n)
	}
}

func TestCidEntriesRoundTrip(t *testing.T) {
	var b []byte
	for i := uint64(1); i <= 3; i++ {
		b = appendCidEntry(b, cidindex.Key{A: i, B: i + 100}, cidindex.Entry{Seq: i * 10, IDSeq: i * 10, TS: int64(i)})
	}
	var got []string
	err := decodeCidEntries(b, func(k cidindex.Key, e cidindex.Entry) {
		got = append(got, fmt.Sprint(k.A, k.B, e.Seq, e.IDSeq, e.TS))
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"1 101 10 10 1", "2 102 20 20 2", "3 103 30 30 3"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("decoded %v, want %v", got, want)
	}
	if err := decodeCidEntries(b[:len(b)-1], func(cidindex.Key, cidindex.Entry) {}); err == nil {
		t.Error("a record cut short decoded without an error")
	}
}

func TestRepeatOnARunningNodeAfterAnotherCrashed(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: time.Hour})
	b := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond})
	announced(t, a)
	first := sendOn(t, a.Service, "c1", "bob")
	a.crash()
	// What the gateway registry's expiry of a's entry sets off.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.IndexRecentSends(ctx); err != nil {
		t.Fatal(err)
	}
	pastStoreWindow()
	repeatOn(t, b.Service, first)
}

func TestSendsStopWhileTheSendIndexCannotBeStored(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.js.DeleteStream(ctx, natsx.StreamCids); err != nil {
		t.Fatal(err)
	}
	sendOn(t, a.Service, "c1", "bob") // its key cannot be stored now
	time.Sleep(shortWindows.StoreDedupWindow)
	_, err := a.send(ctx, "alice", "phone", chat.SendRequest{CID: "c2", To: "bob", Body: "hi"}, false)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("send while the send index cannot be stored: %v, want unavailable", err)
	}
	if n := storedOn(t, a.Service, natsx.Inbox("bob")); n != 1 {
		t.Errorf("bob's inbox holds %d records, want 1 (the refused send stored nothing)", n)
	}
	// Once the stream is back, the pending keys are stored and sends go on.
	if _, err := a.js.CreateStream(ctx, natsx.CidsStream(shortWindows)); err != nil {
		t.Fatal(err)
	}
	await.True(t, 5*time.Second, "sends go on after the stream came back", func() bool {
		_, err := a.send(ctx, "alice", "phone", chat.SendRequest{CID: "c3", To: "bob", Body: "hi"}, false)
		return err == nil
	})
}

// A group send is recognised by the same (sender, cid) key as a 1:1 one.
func TestRepeatedGroupSendAfterTheStoreWindow(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a, gs := startCidNodeWith(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := gs.Create(ctx, "alice", "pair", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	req := chat.SendRequest{CID: "g1", Group: g.ID, Body: "hello group"}
	first, err := a.sendGroup(ctx, "alice", "phone", req)
	if err != nil {
		t.Fatal(err)
	}
	pastStoreWindow()
	again, err := a.sendGroup(ctx, "alice", "phone", req)
	if err != nil {
		t.Fatal(err)
	}
	sameSend(t, first, again)
	// The group's subject holds the membership notice and one message.
	if n := storedOn(t, a.Service, natsx.Group(g.ID)); n != 2 {
		t.Errorf("the group's subject holds %d records, want 2 (its creation and one message)", n)
	}
}

// announced waits until n has read back its first send index record,
// which it writes once it is ready: a send made after that stays in n's
// index until its next flush, and a node with a long CidFlush keeps it.
func announced(t *testing.T, n *cidNode) {
	t.Helper()
	await.True(t, await.Step, "the node's first send index record is read", func() bool {
		n.cids.peersMu.Lock()
		defer n.cids.peersMu.Unlock()
		_, ok := n.cids.peers[n.cids.subject]
		return ok
	})
}

// knows reports whether s's send index holds from's cid.
func knows(s *Service, from, cid string) bool {
	_, ok := s.cids.idx.Get(cidindex.KeyOf(from, cid), s.cfg.Now())
	return ok
}

// A node killed before it stored its keys (its connection closed, nothing
// more sent) is read from the log by a running node, with no word from the
// gateway registry: a repeat there is still the first send.
func TestRepeatOnARunningNodeAfterAnotherWasKilled(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: time.Hour})
	b := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond, CidSilence: 300 * time.Millisecond})
	announced(t, a)
	first := sendOn(t, a.Service, "c1", "bob")
	a.crash()
	await.True(t, await.Step, "b reads a's send from the log", func() bool { return knows(b.Service, "alice", "c1") })
	pastStoreWindow()
	repeatOn(t, b.Service, first)
}

// A node whose send index records stop without a goodbye (here it writes
// one at start and then holds its keys for an hour, as a node that cannot
// store them would) has its sends read from the message log by the others,
// so a repeat on another node past the log's own window is still the first
// send — without waiting for the gateway registry.
func TestRepeatOnANodeAfterAnotherFellSilent(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: time.Hour})
	b := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond, CidSilence: 300 * time.Millisecond})
	announced(t, a)
	first := sendOn(t, a.Service, "c1", "bob") // stored after b's start read the log
	await.True(t, await.Step, "b reads a's send from the log", func() bool { return knows(b.Service, "alice", "c1") })
	// b reads on while a stays silent, from where its last read ended: a
	// send on another silent node (a itself refuses sends by now, its key
	// unstored for half the log's window) is found too.
	c := startCidNode(t, ns, shortWindows, Config{CidFlush: time.Hour})
	announced(t, c)
	sendOn(t, c.Service, "c2", "carol")
	await.True(t, await.Step, "b reads c's send from the log", func() bool { return knows(b.Service, "alice", "c2") })
	pastStoreWindow()
	repeatOn(t, b.Service, first)
}

// A node writes a record every flush, keys or none, and a goodbye when it
// stops: the others read the log again only when the records stop without
// one.
func TestOnlyASilenceWithoutGoodbyeIsReread(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	b := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond, CidSilence: time.Second})
	rereads := func() float64 { return testutil.ToFloat64(b.m.SendIndexRereads) }
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: 50 * time.Millisecond})
	time.Sleep(1500 * time.Millisecond) // a stores nothing, and is not silent
	a.stop()
	time.Sleep(2 * time.Second) // past b's silence after a's goodbye
	if n := rereads(); n != 0 {
		t.Fatalf("b read the log %v times while a was idle and after its goodbye, want 0", n)
	}
	c := startCidNode(t, ns, shortWindows, Config{CidFlush: 50 * time.Millisecond})
	announced(t, c) // the others know of c: its records can stop
	time.Sleep(300 * time.Millisecond)
	c.crash()
	await.True(t, await.Step, "b reads the log after c's records stopped", func() bool { return rereads() > 0 })
}

// A message store that failed may have been stored after all, its answers
// lost: the node reads the log from before it on, so a repeat past the
// log's own window is still the first send.
func TestRepeatAfterAFailedStoreIsTheFirstSend(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond, CidSilence: time.Hour})
	b := startCidNode(t, ns, shortWindows, Config{CidFlush: time.Hour, CidSilence: time.Hour}) // keeps its keys
	announced(t, b)
	start := time.Now()
	first := sendOn(t, b.Service, "c1", "bob") // as if a's store whose answers were lost
	pastStoreWindow()
	if knows(a.Service, "alice", "c1") {
		t.Fatal("a knows the send before any read of the log")
	}
	a.cids.storeFailed(start)
	await.True(t, await.Step, "a reads the log after the failed store", func() bool { return knows(a.Service, "alice", "c1") })
	await.True(t, await.Step, "sends go on", func() bool { return a.cids.unsure.Load() == 0 })
	repeatOn(t, a.Service, first)
}

// A store of a that failed but was stored after all, its answers lost, is
// in no node's index; a's read of the log after the failure finds it, and
// passes its key on: a repeat on another node past the log's own window is
// still the first send.
func TestAFailedStoreFoundInTheLogReachesTheOtherNodes(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond, CidSilence: time.Hour})
	c := startCidNode(t, ns, shortWindows, Config{CidFlush: 20 * time.Millisecond, CidSilence: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	// Stored, but not answered: the index is not told.
	first, err := a.store(ctx, "alice", "phone", chat.SendRequest{CID: "c1", To: "bob", Body: "hello c1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	first.Duplicate = true // as a repeat is answered
	a.cids.storeFailed(start)
	await.True(t, await.Step, "a reads the log after the failed store", func() bool { return a.cids.unsure.Load() == 0 })
	await.True(t, await.Step, "c learns the send from a's records", func() bool { return knows(c.Service, "alice", "c1") })
	pastStoreWindow()
	repeatOn(t, c.Service, first)
}

// A message store that fails makes the node refuse sends until it has read
// the log from before it on (here it never does: no flush tick comes).
func TestSendsWaitAfterAFailedStore(t *testing.T) {
	t.Parallel()
	ns := natstest.RunJetStream(t)
	a := startCidNode(t, ns, shortWindows, Config{CidFlush: time.Hour, PublishTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.js.DeleteStream(ctx, natsx.StreamMsgs); err != nil {
		t.Fatal(err)
	}
	if _, err := a.send(ctx, "alice", "phone", chat.SendRequest{CID: "c1", To: "bob", Body: "hi"}, false); err == nil {
		t.Fatal("a send without the message log succeeded")
	}
	if a.cids.unsure.Load() == 0 {
		t.Fatal("the failed store was not noted")
	}
	if _, err := natsx.Ensure(ctx, a.js, shortWindows); err != nil {
		t.Fatal(err)
	}
	_, err := a.send(ctx, "alice", "phone", chat.SendRequest{CID: "c2", To: "bob", Body: "hi"}, false)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a send after a failed store, before the log was read: %v, want unavailable", err)
	}
	if n := storedOn(t, a.Service, natsx.Inbox("bob")); n != 0 {
		t.Errorf("bob's inbox holds %d records, want none", n)
	}
}
