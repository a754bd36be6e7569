package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetchat/jetchat/gateway"
	"github.com/jetchat/jetchat/groups"
	"github.com/jetchat/jetchat/internal/natstest"
	"github.com/jetchat/jetchat/internal/pgtest"
	"github.com/jetchat/jetchat/internal/testnode"
	"github.com/jetchat/jetchat/objectstore"
	"github.com/jetchat/jetchat/presence"
)

// runTool runs the load tool with args and returns its stdout and stderr.
func runTool(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no scenario"},
		{[]string{"chat"}, `unknown scenario "chat"`},
		{[]string{"backlog", "--fill", "random", "--jwt-secret", string(testnode.Secret)}, `--fill "random": want interleaved or each`},
		{[]string{"backlog", "--gap", "-1s"}, "--gap -1s: want 0 or more"},
		{[]string{"backlog", "--users", "0"}, "--users 0: want at least 1"},
		{[]string{"backlog", "--messages", "-3"}, "--messages -3: want at least 1"},
		{[]string{"backlog", "--senders", "0"}, "--senders 0: want at least 1"},
		{[]string{"backlog", "--measure", "-1"}, "--measure -1: want at least 0"},
		{[]string{"backlog", "--inflight", "0"}, "--inflight 0: want at least 1"},
		{[]string{"connect", "--conns", "0"}, "--conns 0: want at least 1"},
		{[]string{"connect", "--hold", "-1s"}, "--hold -1s: want 0 or more"},
		{[]string{"connect", "--dial-rate", "0"}, "--dial-rate 0: want at least 1"},
		{[]string{"dm", "--rate", "-5"}, "--rate -5: want at least 0"},
		{[]string{"dm", "--inflight", "0"}, "--inflight 0: want at least 1"},
		{[]string{"dm", "--duration", "0s"}, "--duration 0s: want more than 0"},
		{[]string{"dm", "--warmup", "-1s"}, "--warmup -1s: want 0 or more"},
		{[]string{"dm", "--drain", "-1s"}, "--drain -1s: want 0 or more"},
		{[]string{"dm", "--body", "-1"}, "--body -1: want at least 0"},
		{[]string{"dm", "--ack-linger", "-20ms"}, "--ack-linger -20ms: want 0 or more"},
		{[]string{"dm", "--timeline", "-1s"}, "--timeline -1s: want 0 or more"},
		{[]string{"group", "--groups", "0"}, "--groups 0: want at least 1"},
		{[]string{"group", "--members", "1"}, "--members 1: want at least 2"},
		{[]string{"group", "--rate", "0"}, "--rate 0: want at least 1"},
		{[]string{"group", "--duration", "-1s"}, "--duration -1s: want more than 0"},
		{[]string{"group", "--warmup", "-1s"}, "--warmup -1s: want 0 or more"},
		{[]string{"group", "--drain", "-1s"}, "--drain -1s: want 0 or more"},
		{[]string{"group", "--ack-linger", "-1s"}, "--ack-linger -1s: want 0 or more"},
		{[]string{"group", "--body", "-2"}, "--body -2: want at least 0"},
		{[]string{"mixed", "--group-size", "0"}, "--group-size 0: want at least 2"},
		{[]string{"mixed", "--duration", "0s"}, "--duration 0s: want more than 0"},
		{[]string{"mixed", "--sample", "0s"}, "--sample 0s: want more than 0"},
		{[]string{"mixed", "--churn", "2"}, "--churn 2: want a fraction from 0 to 1"},
		{[]string{"mixed", "--churn", "NaN"}, "--churn NaN: want a fraction from 0 to 1"},
		{[]string{"mixed", "--drain", "-1s"}, "--drain -1s: want 0 or more"},
		{[]string{"dm", "--users", "many"}, "invalid value"},
		{[]string{"dm", "--read", "2"}, "--read 2: want a fraction from 0 to 1"},
		{[]string{"dm", "--read", "-0.5"}, "--read -0.5: want a fraction from 0 to 1"},
		{[]string{"dm", "--read", "NaN"}, "--read NaN: want a fraction from 0 to 1"},
		{[]string{"mixed", "--rate", "0"}, "--rate 0: want actions per second per user"},
		{[]string{"mixed", "--rate", "-1"}, "--rate -1: want actions per second per user"},
		{[]string{"mixed", "--rate", "NaN"}, "--rate NaN: want actions per second per user"},
		{[]string{"mixed", "--rate", "1e9"}, "--rate 1e+09: want actions per second per user"},
	} {
		_, _, err := runTool(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("jetchat-bench %q: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}

// TestScenariosAgainstANode runs the dm, backlog (both fill orders), group,
// mixed and connect scenarios, small, against a real node over WebSockets, and reads
// their JSON summaries: every message sent is delivered, none is lost.
func TestScenariosAgainstANode(t *testing.T) {
	var members *groups.Store
	n := testnode.Start(t, natstest.RunJetStream(t), testnode.Options{
		Groups:  testnode.PostgresGroups(pgtest.New(t), groups.Config{}, &members),
		Gateway: gateway.Config{ID: "gw-bench"},
		Wire: func(t testing.TB, w testnode.Wiring, deps *gateway.Deps) { // media and presence, for mixed
			testnode.WirePresence(t, w, deps, "gw-bench", presence.Defaults())
			testnode.WireMedia(t, w, deps, objectstore.Config{}, members)
		},
	})
	base := []string{"--url", n.URL, "--jwt-secret", string(testnode.Secret), "--json"}

	// Half the messages are marked read: both receipts come for those,
	// the delivered receipt alone for the others.
	out, stderr, err := runTool(t, append([]string{"dm", "--users", "10", "--rate", "200", "--duration", "2s", "--warmup", "0s", "--drain", "10s", "--read", "0.5"}, base...)...)
	if err != nil {
		t.Fatalf("dm: %v\n%s", err, stderr)
	}
	var dm dmResult
	if err := json.Unmarshal([]byte(out), &dm); err != nil {
		t.Fatalf("dm summary: %v\n%s", err, out)
	}
	if dm.Sent < 300 || dm.Delivered != dm.Sent || dm.Lost != 0 || dm.Errors != 0 || dm.Misdelivered != 0 || dm.SendToDeliv.N == 0 {
		t.Errorf("dm summary %+v: want ~400 sent, all delivered, nothing lost", dm)
	}
	if dm.Receipts != dm.Sent || int64(dm.SendToRcpt.N) != dm.Sent {
		t.Errorf("dm: %d delivered receipts, %d timed, want one per message sent (%d)", dm.Receipts, dm.SendToRcpt.N, dm.Sent)
	}
	if dm.ReadMarked < dm.Sent/4 || dm.ReadMarked > dm.Sent*3/4 || dm.ReadReceipts != dm.ReadMarked || int64(dm.SendToRead.N) != dm.ReadMarked {
		t.Errorf("dm: %d marked read of %d, %d read receipts, %d timed: want about half marked, a receipt timed for each", dm.ReadMarked, dm.Sent, dm.ReadReceipts, dm.SendToRead.N)
	}

	// The contiguous fill's users connect 200 ms apart (--gap).
	for _, fill := range []string{"interleaved", "each"} {
		gap := map[string]string{"interleaved": "0s", "each": "200ms"}[fill]
		out, stderr, err := runTool(t, append([]string{"backlog", "--users", "4", "--messages", "30", "--senders", "3", "--fill", fill, "--gap", gap}, base...)...)
		if err != nil {
			t.Fatalf("backlog --fill %s: %v\n%s", fill, err, stderr)
		}
		var bl backlogResult
		if err := json.Unmarshal([]byte(out), &bl); err != nil {
			t.Fatalf("backlog summary: %v\n%s", err, out)
		}
		if bl.Fill != fill || bl.Measured != 4 || bl.CatchUp.N != 4 || bl.Lost != 0 || bl.Misdelivered != 0 {
			t.Errorf("backlog --fill %s summary %+v: want 4 users caught up, nothing lost", fill, bl)
		}
		if fill == "each" && (bl.GapMS != 200 || bl.MeasureS < 0.6) {
			t.Errorf("backlog --gap 200ms: gap %v ms, the 4 users connected in %.3f s, want 200 ms and 3 gaps at least", bl.GapMS, bl.MeasureS)
		}
	}

	out, stderr, err = runTool(t, append([]string{"group", "--groups", "2", "--members", "5", "--rate", "50", "--duration", "2s", "--warmup", "0s", "--drain", "10s"}, base...)...)
	if err != nil {
		t.Fatalf("group: %v\n%s", err, stderr)
	}
	var gr groupResult
	if err := json.Unmarshal([]byte(out), &gr); err != nil {
		t.Fatalf("group summary: %v\n%s", err, out)
	}
	if gr.Sent < 50 || gr.Deliveries != gr.Sent*4 || gr.Lost != 0 || gr.Misdelivered != 0 || gr.Errors != 0 || int64(gr.FanOut.N) != gr.Sent {
		t.Errorf("group summary %+v: want ~100 sent, each to the 4 other members of its group, nothing lost", gr)
	}

	// The soak, small and short: its mix of 1:1, group and media sends,
	// receipts, typing, presence and reconnects, with nothing lost and every
	// first delivery timed.
	out, stderr, err = runTool(t, append([]string{"mixed", "--users", "20", "--group-size", "5", "--rate", "4", "--duration", "3s", "--sample", "1s", "--churn", "0.1", "--drain", "15s"}, base...)...)
	if err != nil {
		t.Fatalf("mixed: %v\n%s", err, stderr)
	}
	var mr mixedResult
	if err := json.Unmarshal([]byte(out), &mr); err != nil {
		t.Fatalf("mixed summary: %v\n%s", err, out)
	}
	if mr.Sent < 100 || mr.Deliveries < mr.Sent || mr.Lost != 0 || mr.Errors != 0 || int64(mr.SendToDeliv.N) != mr.Deliveries || len(mr.Samples) < 2 {
		t.Errorf("mixed summary %+v: want ~240 sent, each delivered and timed, nothing lost, the node sampled", mr)
	}

	out, stderr, err = runTool(t, append([]string{"connect", "--conns", "50", "--hold", "100ms"}, base...)...)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, stderr)
	}
	var cr connectResult
	if err := json.Unmarshal([]byte(out), &cr); err != nil {
		t.Fatalf("connect summary: %v\n%s", err, out)
	}
	if cr.Conns != 50 || cr.Connect.N != 50 {
		t.Errorf("connect summary %+v: want 50 sessions opened", cr)
	}
}

// TestGroupMessageAccounting: a member's second copy of a group message
// is a duplicate, not a delivery that could stand in for a missing one,
// and the fan-out completes with the last member's first copy.
func TestGroupMessageAccounting(t *testing.T) {
	gm := newGroupMsg(time.Now(), 0, 2, 70) // sender 2 of 70 members
	if first, complete := gm.deliver(65); !first || complete {
		t.Fatalf("member 65's first copy: first %v, complete %v", first, complete)
	}
	if first, complete := gm.deliver(65); first || complete {
		t.Fatalf("member 65's second copy: first %v, complete %v", first, complete)
	}
	for m := range 70 {
		if m == 2 || m == 65 {
			continue
		}
		first, complete := gm.deliver(m)
		if !first || complete != (m == 69) {
			t.Fatalf("member %d: first %v, complete %v", m, first, complete)
		}
	}
	if p := gm.pending.Load(); p != 0 {
		t.Errorf("%d pending after all 69 other members", p)
	}
}
